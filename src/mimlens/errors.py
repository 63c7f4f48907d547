"""The one exception type the command line turns into a clean message instead of a traceback."""


class MimlensError(Exception):
    """A user-facing error: the message names the file, key or value and what was expected."""
