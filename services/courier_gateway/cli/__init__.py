"""The ``courier-gateway`` command: one entry point for every role the image runs.

A wrong command line ends with one ``usage error`` line, a missing or bad setting with one
``configuration error`` line naming the variable; both exit with code 2, never a traceback.
Ctrl-C ends any command quietly at any moment, even while its modules are still loading: this
module imports nothing until it can catch it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

#: The shell's exit code for a command ended by Ctrl-C (128 + SIGINT).
INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the chosen role and return its exit code."""
    try:
        from courier_gateway.cli.commands import run

        return run(argv)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`courier-gateway events list | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
