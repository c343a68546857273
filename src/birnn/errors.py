"""The project's own error types.

Errors a user can fix (a bad option, a missing or malformed file) are raised as `BirnnError`
subclasses; the command-line entry points print their message on one line and exit with
status 2, without a traceback. Anything else is a bug and keeps its traceback.
"""


class BirnnError(Exception):
    """A problem the user can fix; its message says what and where."""


class ConfigError(BirnnError, ValueError):
    """An invalid configuration value (names the key)."""


class DataError(BirnnError, ValueError):
    """Unreadable or malformed data (names the file and, where there is one, the line)."""

    def __init__(self, message: str, path=None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class CheckpointError(DataError):
    """A checkpoint that is missing, unreadable, or not one of birnn's (names the file)."""
