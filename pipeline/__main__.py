"""``python -m pipeline`` and the ``ehc`` command: the command line, with no traceback on an early Ctrl-C.

Importing the command line (pandas, pyarrow, pandera) takes about a second,
and the interpreter's teardown after a run about half of one.  In neither is a
run's own signal handling in place: Ctrl-C printed a ``KeyboardInterrupt``
traceback and SIGTERM ended the process with no documented exit code.  So
here SIGTERM is Ctrl-C from the first import on: a signal during the imports,
or before the command has set up its own handling (reading the settings,
taking the run lock), ends the command with the one line ``已中断。`` and
exit 130 (nothing has been done yet); a command's own handling takes over
within it and gives it back.  Once the command has returned its exit code,
signals are ignored for the moments the interpreter needs to exit with that
code (the run is over, its reports are written).
"""

import _thread
import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import NoReturn

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: How long after a Ctrl-C lost in a callback it is raised again, out of the callback.
_INTERRUPT_AGAIN_SECONDS = 0.01


def _interrupt_again(unraisable: "sys.UnraisableHookArgs") -> None:
    """A ``sys.unraisablehook`` that gives back a Ctrl-C which struck inside a callback.

    Python runs a signal's handler wherever the main thread is; inside a
    weakref callback or a ``__del__`` (importlib's module locks have one) the
    ``KeyboardInterrupt`` it raises is printed as "Exception ignored" and lost,
    and the run went on to its end as if never stopped.  A moment later the
    main thread is sent SIGINT again, outside the callback: a real signal, so
    that a wait it is in (a sleep, a lock) is cut short as by the first.
    """
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        again = threading.Timer(_INTERRUPT_AGAIN_SECONDS, _interrupt_main_thread)
        again.daemon = True
        again.start()
        return
    sys.__unraisablehook__(unraisable)


def _interrupt_main_thread() -> None:
    send = getattr(signal, "pthread_kill", None)
    if send is None:  # Windows: the interrupt waits for the main thread's next Python step
        _thread.interrupt_main()
    else:
        send(threading.main_thread().ident, signal.SIGINT)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run() -> int:
    """Run ``ehc`` with the process's arguments; the exit code."""
    try:  # first thing: every import of the package happens inside
        sys.unraisablehook = _interrupt_again
        signal.signal(signal.SIGTERM, _raise_interrupt)
        from pipeline.cli import main

        code = main()
    except BaseException as error:
        from pipeline.errors import EXIT_INTERRUPTED, caused_by_interrupt

        if not caused_by_interrupt(error):
            raise
        sys.stderr.write("已中断。\n")
        code = EXIT_INTERRUPTED
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    return code


def _leave(code: int) -> NoReturn:
    """End ``python -m pipeline`` with ``code``, also after a Ctrl-C handled in code run from a string.

    CPython remembers a Ctrl-C that interrupted code run from a string (a
    dataclass's generated ``__init__`` while a module is imported) and, under
    ``-m``, ends the process by SIGINT at exit instead of with the exit code,
    although the interrupt was handled.  After an interrupt nothing is left to
    do: the logs and the console are flushed and the process leaves with 130.
    """
    from pipeline.errors import EXIT_INTERRUPTED

    if code == EXIT_INTERRUPTED:
        # Only a logger that was set up holds lines to write out.  Importing it here could fail: a
        # Ctrl-C that cut an import short (asyncio's, which loguru needs) leaves the half-imported
        # package's submodules behind, and importing it again raises NameError.
        loguru = sys.modules.get("loguru")
        if loguru is not None:
            loguru.logger.remove()  # closes the log sinks, writing out what they hold
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a console already gone
                stream.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _leave(run())
