"""What every command-line entry point shares: user errors as one line and exit status 2."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

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
