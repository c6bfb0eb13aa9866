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
"""

from __future__ import annotations

import signal
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


@contextmanager
def _handling(handler: Handler) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, Any] = {}
    for signum in _SIGNALS:
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
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
