"""Running ``mimlens`` in the test process with its standard output captured."""

import contextlib
import io

from mimlens.cli import main


def run_cli(*argv) -> tuple[int, str]:
    """``main(argv)`` (arguments turned into strings): its exit status and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main([str(a) for a in argv])
    return status, printed.getvalue()
