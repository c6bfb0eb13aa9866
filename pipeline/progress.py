"""Progress on stderr, only when a person is watching a terminal.

A :class:`RowBar` counts the rows of one stage (checking, writing reports,
sending) with rows per second and the time left; it appears only once the
stage has taken a couple of seconds, and never when stderr is not a terminal
(a nightly run's log stays clean).

A workbook is read whole before its rows are checked (a 100,000-row .xlsx
takes some 4 s, a sheet of a million rows about ten times that), and its rows are not
known until it has been read: :func:`reading_shown` shows that stage as the
share of the reading done and the time left.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
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
    """Rows done of a stage, out of an estimated ``total`` (corrected as the stage learns it).

    ``share``: shown as the share done and the time left, for a stage counted
    in units a clerk does not count (the bytes of a workbook read).
    """

    def __init__(
        self, label: str, total: int, *, enabled: bool, unit: str = "行", share: bool = False
    ) -> None:
        self._lock = threading.Lock()
        self._bar: tqdm | None = None
        if not enabled:
            return
        counted = "{n_fmt}/{total_fmt} " + unit + " [{elapsed}<{remaining}, {rate_fmt}]"
        self._bar = terminal_bar(
            total=max(total, 0),
            file=sys.stderr,
            leave=False,
            delay=SHOW_AFTER_SECONDS,
            unit=unit,
            unit_scale=True,
            desc=label,
            dynamic_ncols=True,
            bar_format="{desc} {bar} " + ("{percentage:3.0f}% [{elapsed}<{remaining}]" if share else counted),
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


#: Passes of about equal cost in reading a workbook: its parts inflated and bounded
#: (:mod:`pipeline.reading.bounds`), its sheet parsed by calamine, the sheet's columns made text.
READING_PASSES = 3


class _Reading:
    """The bar of a workbook being read, the bytes that make one pass, those of the first pass counted."""

    def __init__(self, bar: RowBar, size: int) -> None:
        self.bar, self.size, self.first = bar, size, 0

    def first_pass(self, count: int) -> None:
        count = max(0, min(count, self.size - self.first))  # parts may inflate past the file's size
        self.first += count
        self.bar.advance(count)


#: The workbook being read, while a bar shows it.
_reading: _Reading | None = None


@contextlib.contextmanager
def reading_shown(label: str, size: int, *, enabled: bool) -> Iterator[None]:
    """Show the reading of one workbook of ``size`` bytes as a bar while the block runs.

    The readers advance it, without being handed it, through :func:`read_bytes`,
    :func:`first_pass_done` and :func:`read_share`; outside this block (or with
    ``enabled`` false) those do nothing.
    """
    global _reading
    if not enabled or size <= 0:
        yield
        return
    bar = RowBar(label, READING_PASSES * size, enabled=True, share=True)
    _reading = _Reading(bar, size)
    try:
        yield
    finally:
        _reading = None
        bar.close()


def read_bytes(count: int) -> None:
    """``count`` more bytes of the workbook's file gone through in the first pass."""
    if (reading := _reading) is not None:
        reading.first_pass(count)


def first_pass_done() -> None:
    """The first pass over the workbook ended (parts it did not inflate count as gone through)."""
    if (reading := _reading) is not None:
        reading.first_pass(reading.size)


def read_share(share: float) -> None:
    """``share`` (0 to 1) of one of the later passes over the workbook done."""
    if (reading := _reading) is not None:
        reading.bar.advance(int(share * reading.size))
