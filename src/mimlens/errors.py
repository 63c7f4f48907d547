"""The one exception type the command line turns into a clean message instead of a traceback."""


class MimlensError(Exception):
    """A user-facing error: the message names the file, key or value and what was expected."""


class Interrupted(MimlensError):
    """A stop signal ended the work cleanly (what was done is saved); ``status`` is the exit status, 128 + the
    signal's number as a shell reports it: "rerun the same command to resume"."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status
