from birnn.callbacks.averaging import WeightEMA
from birnn.callbacks.report import TrainingReport
from birnn.callbacks.safety import AtomicCheckpointIO, NonFiniteLossError, RunSafety

__all__ = ["AtomicCheckpointIO", "NonFiniteLossError", "RunSafety", "TrainingReport", "WeightEMA"]
