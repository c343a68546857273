"""The `trainer`, `callbacks` and `logger` groups: Lightning objects Hydra instantiates."""

from __future__ import annotations

import typing
from typing import ClassVar

from lightning.fabric.connector import _PRECISION_INPUT
from pydantic import model_validator

from birnn.config.base import KeyedError
from birnn.config.calls import CallSchema
from birnn.config.types import Choice, Int, Number

# Lightning's own list: 64, 32, 16, "bf16-mixed", "32-true", ...
PRECISIONS = tuple(v for part in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(part))


class TrainerSchema(CallSchema):
    """`lightning.pytorch.Trainer`; the options birnn's defaults set are typed, any other
    Trainer argument is allowed (`+trainer.val_check_interval=0.25`)."""

    kind: ClassVar[str] = "lightning.pytorch.Trainer"
    supplied: ClassVar[tuple[str, ...]] = ("callbacks", "logger", "plugins")

    max_epochs: Int(1, also=(-1,), optional=True) = None
    max_steps: Int(1, also=(-1,)) = -1
    gradient_clip_val: Number(0, optional=True) = None
    precision: Choice(*PRECISIONS, optional=True) = None
    log_every_n_steps: Int(1, optional=True) = None
    num_sanity_val_steps: Int(0, also=(-1,), optional=True) = None

    def check_target(self, target):
        from lightning.pytorch import Trainer

        self.subclass_of(target, Trainer)

    @model_validator(mode="after")
    def _bf16_runs_here(self):
        import torch

        from birnn.hardware import CPU_BF16_MISSING, cpu_supports_bf16

        accelerator = (self.model_extra or {}).get("accelerator", "auto")
        on_cpu = accelerator == "cpu" or (accelerator == "auto"
                                          and not torch.cuda.is_available())
        if "bf16" in str(self.precision) and on_cpu and not cpu_supports_bf16():
            raise KeyedError("precision", f"{self.precision} on CPU: {CPU_BF16_MISSING}; "
                                          "use 32-true")
        return self


class CallbackSchema(CallSchema):
    """Any callback: its arguments must be the class's."""

    kind: ClassVar[str] = "callback class"


class EMASchema(CallbackSchema):
    """`birnn.callbacks.WeightEMA`."""

    decay: Number(0, 1, open_low=True) = 0.999
    start_step: Int(0) = 0


class RunSafetySchema(CallbackSchema):
    """`birnn.callbacks.RunSafety`."""

    every_n_train_steps: Int(1, optional=True) = None


class EarlyStoppingSchema(CallbackSchema):
    """`lightning.pytorch.callbacks.EarlyStopping`."""

    patience: Int(0) = 3


class LoggerSchema(CallSchema):
    """Any experiment logger: its arguments must be the class's."""

    kind: ClassVar[str] = "logger class"


def callback_schema(target: type) -> type[CallbackSchema]:
    """The schema of a callback of class `target` (the generic one for classes without
    their own)."""
    from lightning.pytorch.callbacks import EarlyStopping

    from birnn.callbacks import RunSafety, WeightEMA

    for cls, schema in ((WeightEMA, EMASchema), (RunSafety, RunSafetySchema),
                        (EarlyStopping, EarlyStoppingSchema)):
        if isinstance(target, type) and issubclass(target, cls):
            return schema
    return CallbackSchema
