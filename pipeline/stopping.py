"""Stopping a run on Ctrl-C or SIGTERM (the one place that installs signal handlers).

Two behaviours, for two kinds of work:

* :func:`stop_on_signals` — for a submission: the first signal sets a
  :class:`threading.Event`, so no new call is started while the calls in
  flight finish and are recorded; a second signal raises
  :class:`KeyboardInterrupt` in the main thread, for an operator who will not
  wait (calls still in flight then stay ``sending`` in the journal and are
  sent again by the next run).
* :func:`interrupt_on_signals` — for work with nothing in flight (a dry run,
  an inbox run between files): SIGTERM (systemd's stop) raises
  :class:`KeyboardInterrupt` just as Ctrl-C does, so the same cleanup runs.

Handlers can only be installed from the main thread; elsewhere both do
nothing.  The previous handlers are restored on exit.

Windows sends no SIGTERM: Ctrl-C and Ctrl-Break arrive as SIGINT/SIGBREAK,
and closing the console window, logging off or shutting down arrive as
console control events.  :func:`_console_close_handler` (Windows only, through
``SetConsoleCtrlHandler``) turns those into the same first signal, then holds
the process a few seconds so that the reports are written before Windows
ends it, and exit 130 still means they were.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from loguru import logger

#: Ctrl-C, a service manager's stop, and Windows' Ctrl-Break.
_SIGNALS: tuple[signal.Signals, ...] = tuple(
    signal.Signals(number)
    for number in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGBREAK", None))
    if number is not None
)

Handler = Callable[[int, FrameType | None], Any]


#: Windows console control events: close window, log off, shut down (Ctrl-C/Ctrl-Break are signals).
CONSOLE_CLOSE_EVENTS = (2, 5, 6)

#: How long a console-close handler holds the process for the reports (Windows allows about 5 s).
CONSOLE_GRACE_SECONDS = 4.5


def _console_close_handler(handler: Handler, done: threading.Event) -> Any:
    """A ``SetConsoleCtrlHandler`` routine that stops like SIGTERM, or None off Windows."""
    if sys.platform != "win32":
        return None
    import ctypes
    from ctypes import wintypes

    routine_type = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)

    def on_event(event: int) -> bool:
        if event not in CONSOLE_CLOSE_EVENTS:
            return False  # Ctrl-C / Ctrl-Break: Python's own signal handlers take them
        signal.raise_signal(signal.SIGBREAK)
        done.wait(CONSOLE_GRACE_SECONDS)
        return True

    routine = routine_type(on_event)
    if not ctypes.windll.kernel32.SetConsoleCtrlHandler(routine, True):
        return None
    return routine


def _remove_console_handler(routine: Any) -> None:
    if routine is not None:
        import ctypes

        ctypes.windll.kernel32.SetConsoleCtrlHandler(routine, False)  # type: ignore[attr-defined]


@contextmanager
def _handling(handler: Handler) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, Any] = {}
    for signum in _SIGNALS:
        previous[signum] = signal.signal(signum, handler)
    done = threading.Event()
    routine = _console_close_handler(handler, done)
    try:
        yield
    finally:
        done.set()  # the block has ended: a console-close handler waiting for it may return
        _remove_console_handler(routine)
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Within the block, SIGINT/SIGTERM set ``stop`` (the second one raises KeyboardInterrupt)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        logger.warning(
            "收到{}信号：不再发送新的请求，等待进行中的请求完成后写出报告（再按一次 Ctrl-C 立即停止）",
            "中断" if signum == signal.SIGINT else "终止",
        )

    with _handling(on_signal):
        yield stop


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM (and Ctrl-Break) raise KeyboardInterrupt like Ctrl-C."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    with _handling(on_signal):
        yield
