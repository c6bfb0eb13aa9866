"""``python -m pipeline`` and the ``ehc`` command: the command line, with no traceback on an early Ctrl-C.

Importing the command line (pandas, pyarrow, pandera) takes about a second,
and the interpreter's teardown after a run about half of one.  In neither is a
run's own signal handling in place: Ctrl-C printed a ``KeyboardInterrupt``
traceback and SIGTERM ended the process with no documented exit code.  So
here a signal during the imports ends the command with the one line
``已中断。`` and exit 130 (nothing has been done yet), and once the command
has returned its exit code, signals are ignored for the moments the
interpreter needs to exit with that code (the run is over, its reports are
written).
"""

import signal
import sys
from types import FrameType

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run() -> int:
    """Run ``ehc`` with the process's arguments; the exit code."""
    try:  # first thing: every import of the package happens inside
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            from pipeline.cli import main
        finally:
            signal.signal(signal.SIGTERM, previous)
        code = main()
    except KeyboardInterrupt:
        from pipeline.errors import EXIT_INTERRUPTED

        sys.stderr.write("已中断。\n")
        code = EXIT_INTERRUPTED
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(run())
