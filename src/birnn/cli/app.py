"""What every command-line entry point shares: user errors as one line and exit status 2."""

from __future__ import annotations

import functools
import logging
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from birnn.errors import BirnnError

log = logging.getLogger("birnn")

EXIT_USER_ERROR = 2


def user_errors_exit(func: Callable) -> Callable:
    """Turn the project's own errors (and a missing `???` config value) into a one-line
    message on stderr and `sys.exit(2)`; other exceptions keep their traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except MissingMandatoryValue as e:
            key = getattr(e, "full_key", None) or "a value"
            _fail(f"{key} is required: pass {key}=...")
        except BirnnError as e:
            _fail(str(e))
        except OmegaConfBaseException as e:
            _fail(f"configuration: {e}")

    return wrapper


def _fail(message: str) -> None:
    log.error(message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def sweep_job(func: Callable) -> Callable:
    """In a Hydra multirun, one failing job must not stop the others: record the failure in
    the job's folder (`error.txt`), log it, and return NaN (a failed trial to sweepers).
    In a single run, errors propagate as usual. W&B is closed after every job either way."""

    @functools.wraps(func)
    def wrapper(cfg, *args, **kwargs):
        from birnn.cli.loggers import finish_wandb

        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            return func(cfg, *args, **kwargs)
        except (Exception, SystemExit) as e:
            if not multirun or (isinstance(e, SystemExit) and e.code in (0, None)):
                raise
            out = Path(HydraConfig.get().runtime.output_dir)
            if isinstance(e, SystemExit):
                text = f"exited with status {e.code}"
            else:
                text = str(e) if isinstance(e, BirnnError) else traceback.format_exc()
            (out / "error.txt").write_text(text if text.endswith("\n") else text + "\n")
            log.error("job %s failed (%s); see %s; the sweep goes on",
                      HydraConfig.get().job.num, type(e).__name__, out / "error.txt")
            return math.nan
        finally:
            finish_wandb()

    return wrapper
