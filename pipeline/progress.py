"""Progress on stderr, only when a person is watching a terminal.

A :class:`RowBar` counts the rows of one stage (checking, writing reports,
sending) with rows per second and the time left; it appears only once the
stage has taken a couple of seconds, and never when stderr is not a terminal
(a nightly run's log stays clean).
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

#: Seconds a stage runs before its bar appears: short stages show nothing.
SHOW_AFTER_SECONDS = 2.0


def wanted() -> bool:
    """Whether progress can be shown: stderr is a terminal."""
    return sys.stderr.isatty()


def terminal_bar(**options: Any) -> tqdm:
    """A tqdm bar with ``options``, tqdm imported only now.

    Runs without a terminal (a nightly import, the bench) never import it
    (0.02 s).  No monitor thread: bars are advanced often enough, and a run
    forks its worker processes only while it has no thread (see
    :mod:`pipeline.workers`).
    """
    from tqdm import tqdm

    tqdm.monitor_interval = 0
    return tqdm(**options)


class RowBar:
    """Rows done of a stage, out of an estimated ``total`` (corrected as the stage learns it)."""

    def __init__(self, label: str, total: int, *, enabled: bool, unit: str = "行") -> None:
        self._lock = threading.Lock()
        self._bar: tqdm | None = None
        if not enabled:
            return
        self._bar = terminal_bar(
            total=max(total, 0),
            file=sys.stderr,
            leave=False,
            delay=SHOW_AFTER_SECONDS,
            unit=unit,
            unit_scale=True,
            desc=label,
            dynamic_ncols=True,
            bar_format="{desc} {bar} {n_fmt}/{total_fmt} " + unit + " [{elapsed}<{remaining}, {rate_fmt}]",
        )

    def advance(self, rows: int) -> None:
        """``rows`` more done (callable from any thread)."""
        if self._bar is None:
            return
        with self._lock:
            if self._bar.total is not None and self._bar.n + rows > self._bar.total:
                self._bar.total = self._bar.n + rows  # the estimate was short
            self._bar.update(rows)

    def total(self, rows: int) -> None:
        """The stage's real total, once known."""
        if self._bar is None:
            return
        with self._lock:
            self._bar.total = rows
            self._bar.refresh()

    def close(self) -> None:
        """Remove the bar from the terminal."""
        if self._bar is None:
            return
        with self._lock:
            self._bar.close()
