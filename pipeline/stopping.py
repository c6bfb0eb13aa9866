"""Stopping a submission politely on Ctrl-C or SIGTERM.

The first signal sets a :class:`threading.Event`: no new call is started,
calls in flight are allowed to finish and be recorded.  A second signal
raises :class:`KeyboardInterrupt` in the main thread, for an operator who will
not wait; calls still in flight then stay ``sending`` in the journal (outcome
unknown) and are sent again by the next run.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from loguru import logger

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Within the block, SIGINT/SIGTERM set ``stop`` (the second one raises KeyboardInterrupt).

    Handlers can only be installed from the main thread; elsewhere this does
    nothing and the caller's own ``stop`` event is the only way to stop.  The
    previous handlers are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        logger.warning(
            "收到{}信号：不再发送新的请求，等待进行中的请求完成后写出报告（再按一次 Ctrl-C 立即停止）",
            "中断" if signum == signal.SIGINT else "终止",
        )

    previous: dict[signal.Signals, Any] = {}
    for signum in _SIGNALS:
        previous[signum] = signal.signal(signum, on_signal)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
