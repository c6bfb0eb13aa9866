"""Report lines kept on disk until a run ends, so memory stays flat whatever the run's length.

results.xlsx and errors.xlsx can only be laid out once the whole run is known
(whether 明细 holds every row or only the bad ones; the faults by code, then
row).  Their lines are built batch by batch, as the rows are checked, and
appended to Arrow IPC files in a work folder inside the output folder; at the
end they are read back part by part, straight into the sheets.  Only what a
sheet can show is kept: every row while the run is short enough for 明细,
the bad rows up to the sheet's limit, and per result code up to the sheet's
limit of fault lines.  The lines of every row stay in memory rather than on
disk: there are at most :data:`~pipeline.reports.workbooks.DETAIL_ROW_LIMIT`
of them, and a longer run drops them unread once it passes that many rows.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.reports import workbooks
from pipeline.reports.data import ReportData
from pipeline.reports.workbooks import (
    FAULT_HEADERS,
    Lines,
    SheetFeed,
    detail_columns,
    detail_style,
    fault_columns,
    header_widths,
    truncated_note,
    widths_of,
)

_STYLE = "style"

#: Lines a part read back from a spool holds at least (unless it is the last).
PART_LINES = 10_000


def _lines_of(batch: pa.RecordBatch) -> Lines:
    """The lines of one record batch of a spool."""
    columns = list(batch.columns)
    style = None
    if batch.schema.names[-1] == _STYLE:
        style = columns.pop().to_numpy(zero_copy_only=False)
    return columns, style


def _in_parts(lines: Iterable[Lines], stop: threading.Event | None = None) -> Iterator[Lines]:
    """Consecutive parts of one sheet's lines joined into parts of at least :data:`PART_LINES` lines
    (the last may be shorter): the small parts of many batches (a code's few faults in each slice of a
    submission) would each be laid out as XML at a cost of its own, whatever its length."""
    waiting: list[Lines] = []
    waiting_lines = 0
    for part in lines:
        if stop is not None and stop.is_set():
            raise Cancelled
        waiting.append(part)
        waiting_lines += len(part[0][0]) if part[0] else 0
        if waiting_lines >= PART_LINES:
            yield _one_part(waiting)
            waiting, waiting_lines = [], 0
    if waiting:
        yield _one_part(waiting)


def _one_part(parts: list[Lines]) -> Lines:
    """Consecutive parts of one sheet's lines as one."""
    if len(parts) == 1:
        return parts[0]
    columns = [pa.concat_arrays([part[0][i] for part in parts]) for i in range(len(parts[0][0]))]
    styles = [style for _, style in parts if style is not None]
    return columns, np.concatenate(styles) if len(styles) == len(parts) else None


@dataclass
class DetailLines:
    """明细 lines of one batch of ``rows`` rows: every row's (while kept) and the bad rows', with styles."""

    rows: int
    headers: list[str]
    every: tuple[list[pa.Array], np.ndarray] | None
    bad: tuple[list[pa.Array], np.ndarray] | None


@dataclass
class FaultLines:
    """Fault sheet lines of one batch (sorted by code, then row) and the code of each."""

    columns: list[pa.Array]
    codes: np.ndarray


class Cancelled(Exception):
    """The run stopped while its reports were being written."""


class LineSpool:
    """Lines appended part by part to one Arrow IPC file and read back part by part, in order."""

    def __init__(self, path: Path, headers: Sequence[str]) -> None:
        self.path = path
        self.headers = list(headers)
        self.count = 0
        self.widths: list[float] = header_widths(self.headers)
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._sink: pa.OSFile | None = None

    def append(self, columns: Sequence[pa.Array], style: np.ndarray | None = None) -> None:
        """Add lines (``columns`` of equal length; ``style`` per line, optional)."""
        if not columns or not len(columns[0]):
            return
        widths = widths_of(columns, self.headers)
        self.widths = [max(a, b) for a, b in zip(self.widths, widths, strict=True)]
        names = [f"c{i}" for i in range(len(columns))]
        arrays = list(columns)
        if style is not None:
            names.append(_STYLE)
            arrays.append(pa.array(style, pa.int8()))
        batch = pa.RecordBatch.from_arrays(arrays, names=names)
        if self._writer is None:
            self._sink = pa.OSFile(str(self.path), "wb")
            self._writer = pa.ipc.new_stream(self._sink, batch.schema)
        self._writer.write_batch(batch)
        self.count += len(columns[0])

    def close(self) -> None:
        """Finish the file (lines can then be read back)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def parts(self, limit: int | None = None, stop: threading.Event | None = None) -> Iterator[Lines]:
        """The lines in order, part by part (at most ``limit`` of them): see :func:`_in_parts`."""
        self.close()
        if not self.count:
            return
        left = self.count if limit is None else min(limit, self.count)

        def batches(source: pa.MemoryMappedFile) -> Iterator[Lines]:
            nonlocal left
            for batch in pa.ipc.open_stream(source):
                if left <= 0:
                    return
                if batch.num_rows > left:
                    batch = batch.slice(0, left)
                left -= batch.num_rows
                yield _lines_of(batch)

        with pa.memory_map(str(self.path)) as source:
            yield from _in_parts(batches(source), stop)


class DetailSpool:
    """明细 of results.xlsx: every row while the run is at most ``limit`` rows; bad rows up to ``cap``.

    The lines of every row are held in memory (``limit`` rows at most): a run
    that goes past ``limit`` drops them without their ever being written, and
    a shorter one lays its sheet out from them directly.  The bad rows' lines
    go to disk as they come, for a run of any length.
    """

    def __init__(self, folder: Path, limit: int | None = None, cap: int | None = None) -> None:
        self.folder = folder
        self.limit = workbooks.DETAIL_ROW_LIMIT if limit is None else limit
        self.cap = workbooks.SHEET_LINES if cap is None else cap
        self.rows = 0
        self.headers: list[str] = []
        self._every: list[Lines] = []
        self._bad: LineSpool | None = None
        self._every_dropped = False

    def add(self, data: ReportData) -> None:
        """The 明细 lines of one batch."""
        self.append(self.lines(data, self.rows))

    def lines(self, data: ReportData, rows_before: int) -> DetailLines:
        """The 明细 lines of one batch, the run having had ``rows_before`` rows before it.

        Built from the batch alone (a worker process can build them): every
        row's lines while the run is short enough to keep them, and the lines
        of every bad row; :meth:`append` keeps what the sheet has room for.
        """
        keep_every = rows_before + data.n <= self.limit
        bad = np.flatnonzero(data.bad)
        if keep_every:
            headers, columns = detail_columns(data)
            style = detail_style(data)
            picked = pa.array(bad)
            bad_lines = ([c.take(picked) for c in columns], style[bad]) if len(bad) else None
            return DetailLines(data.n, headers, (columns, style), bad_lines)
        if len(bad):
            headers, columns = detail_columns(data, bad)
            return DetailLines(data.n, headers, None, (columns, detail_style(data)[bad]))
        return DetailLines(data.n, detail_columns(data, bad)[0] if not self.headers else [], None, None)

    def append(self, lines: DetailLines) -> None:
        """Keep one batch's lines (from :meth:`lines`), in input order."""
        self.rows += lines.rows
        keep_every = not self._every_dropped and lines.every is not None
        if not keep_every:
            self._every = []
        self._every_dropped = not keep_every
        if lines.headers:
            self.headers = lines.headers
        if keep_every and lines.every is not None and len(lines.every[1]):
            self._every.append(lines.every)
        if lines.bad is not None:
            room = max(self.cap - (self._bad.count if self._bad is not None else 0), 0)
            columns, style = lines.bad
            if room < len(style):
                columns, style = [c.slice(0, room) for c in columns], style[:room]
            if len(style):
                if self._bad is None:
                    self._bad = LineSpool(self.folder / "detail-bad.arrow", lines.headers)
                self._bad.append(columns, style)

    def feed(self, headers: list[str], stop: threading.Event | None = None) -> SheetFeed:
        """The lines of 明细 (``headers``: used when no batch came, for an empty run)."""
        names = self.headers or headers
        if not self._every_dropped:
            return _held_feed(names, self._every, stop)
        spool = self._bad
        if spool is None:
            return SheetFeed(names, 0, header_widths(names), lambda: iter(()))
        return SheetFeed(names, spool.count, spool.widths, lambda: spool.parts(stop=stop))

    def close(self) -> None:
        """Close the files (before the folder is removed) and let go of the lines held."""
        self._every = []
        if self._bad is not None:
            self._bad.close()


def _held_feed(headers: list[str], held: list[Lines], stop: threading.Event | None) -> SheetFeed:
    """A sheet of the lines ``held`` in memory, fitted as :class:`LineSpool` fits the lines it keeps."""
    widths = header_widths(headers)
    for columns, _ in held:
        widths = [max(a, b) for a, b in zip(widths, widths_of(columns, headers), strict=True)]

    return SheetFeed(
        headers, sum(len(columns[0]) for columns, _ in held), widths, lambda: _in_parts(held, stop)
    )


class FaultSpool:
    """The lines of a fault sheet of errors.xlsx (明细 or 提示): by code, then row; up to ``cap`` per code."""

    def __init__(self, folder: Path, name: str, cap: int | None = None) -> None:
        self.folder, self.name = folder, name
        self.cap = workbooks.SHEET_LINES if cap is None else cap
        self.total = 0
        self._codes: dict[int, LineSpool] = {}

    def add(self, data: ReportData, faults: pd.DataFrame) -> None:
        """The lines of one batch's faults (cleaned by ``data``: sorted by code, then row)."""
        self.append(self.lines(data, faults))

    @staticmethod
    def lines(data: ReportData, faults: pd.DataFrame) -> FaultLines:
        """The lines of one batch's faults, built from the batch alone (see :meth:`append`)."""
        if not len(faults):
            return FaultLines([], np.zeros(0, dtype=np.int64))
        return FaultLines(fault_columns(data, faults), faults["code"].to_numpy(dtype=np.int64))

    def append(self, lines: FaultLines) -> None:
        """Keep one batch's lines (from :meth:`lines`), up to the sheet's limit per code."""
        codes = lines.codes
        if not len(codes):
            return
        self.total += len(codes)
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        for start, stop in zip(starts, [*starts[1:], len(codes)], strict=True):
            code = int(codes[start])
            spool = self._codes.get(code)
            if spool is not None and spool.count >= self.cap:
                continue
            if spool is None:
                spool = self._codes[code] = LineSpool(
                    self.folder / f"{self.name}-{code}.arrow", FAULT_HEADERS
                )
            stop = min(stop, start + self.cap - spool.count)
            spool.append([c.slice(start, stop - start) for c in lines.columns])

    def feed(self, stop: threading.Event | None = None) -> SheetFeed:
        """The sheet's lines, code by code, as many as it holds, with a note when some are left out."""
        shown = min(self.total, self.cap)
        spools = [self._codes[code] for code in sorted(self._codes)]
        widths = header_widths(FAULT_HEADERS)
        for spool in spools:
            widths = [max(a, b) for a, b in zip(widths, spool.widths, strict=True)]

        def parts() -> Iterator[Lines]:
            left = shown
            for spool in spools:
                if left <= 0:
                    return
                for columns, style in spool.parts(left, stop):
                    left -= len(columns[0])
                    yield columns, style

        feed = SheetFeed(list(FAULT_HEADERS), shown, widths, parts)
        feed.notes = truncated_note(shown, self.total)
        return feed

    def close(self) -> None:
        """Close the files (before the folder is removed)."""
        for spool in self._codes.values():
            spool.close()


def remove_folder(folder: Path) -> None:
    """Remove a work folder and everything in it (never raises)."""
    shutil.rmtree(folder, ignore_errors=True)
