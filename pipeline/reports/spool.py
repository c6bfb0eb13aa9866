"""Report lines kept on disk until a run ends, so memory stays flat whatever the run's length.

results.xlsx and errors.xlsx can only be laid out once the whole run is known
(whether 明细 holds every row or only the bad ones; the faults by code, then
row).  Their lines are built batch by batch, as the rows are checked, and
appended to Arrow IPC files in a work folder inside the output folder; at the
end they are read back part by part, straight into the sheets.  Only what a
sheet can show is kept: every row while the run is short enough for 明细,
the bad rows up to the sheet's limit, and per result code up to the sheet's
limit of fault lines.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator, Sequence
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
        """The lines in order, part by part (at most ``limit`` of them)."""
        self.close()
        if not self.count:
            return
        left = self.count if limit is None else min(limit, self.count)
        with pa.memory_map(str(self.path)) as source:
            reader = pa.ipc.open_stream(source)
            for batch in reader:
                if left <= 0:
                    break
                if stop is not None and stop.is_set():
                    raise Cancelled
                if batch.num_rows > left:
                    batch = batch.slice(0, left)
                left -= batch.num_rows
                columns = [batch.column(i) for i in range(batch.num_columns)]
                style = None
                if batch.schema.names[-1] == _STYLE:
                    style = columns.pop().to_numpy(zero_copy_only=False)
                yield columns, style


class DetailSpool:
    """明细 of results.xlsx: every row while the run is at most ``limit`` rows; bad rows up to ``cap``."""

    def __init__(self, folder: Path, limit: int | None = None, cap: int | None = None) -> None:
        self.folder = folder
        self.limit = workbooks.DETAIL_ROW_LIMIT if limit is None else limit
        self.cap = workbooks.SHEET_LINES if cap is None else cap
        self.rows = 0
        self.headers: list[str] = []
        self._every: LineSpool | None = None
        self._bad: LineSpool | None = None
        self._every_dropped = False

    def add(self, data: ReportData) -> None:
        """The 明细 lines of one batch."""
        self.rows += data.n
        keep_every = not self._every_dropped and self.rows <= self.limit
        if not keep_every and self._every is not None:
            self._every.close()
            self._every.path.unlink(missing_ok=True)
            self._every = None
        self._every_dropped = not keep_every
        bad = np.flatnonzero(data.bad)
        room = self.cap - (self._bad.count if self._bad is not None else 0)
        bad = bad[: max(room, 0)]
        if keep_every:
            headers, columns = detail_columns(data)
            self.headers = headers
            style = detail_style(data)
            self._spool("every", headers).append(columns, style)
            if len(bad):
                picked = pa.array(bad)
                self._spool("bad", headers).append([c.take(picked) for c in columns], style[bad])
        elif len(bad):
            headers, columns = detail_columns(data, bad)
            self.headers = headers
            self._spool("bad", headers).append(columns, detail_style(data)[bad])
        elif not self.headers:
            self.headers = detail_columns(data, bad)[0]

    def _spool(self, which: str, headers: list[str]) -> LineSpool:
        if which == "every":
            if self._every is None:
                self._every = LineSpool(self.folder / "detail-every.arrow", headers)
            return self._every
        if self._bad is None:
            self._bad = LineSpool(self.folder / "detail-bad.arrow", headers)
        return self._bad

    def feed(self, headers: list[str], stop: threading.Event | None = None) -> SheetFeed:
        """The lines of 明细 (``headers``: used when no batch came, for an empty run)."""
        spool = self._every if not self._every_dropped else self._bad
        names = self.headers or headers
        if spool is None:
            return SheetFeed(names, 0, header_widths(names), lambda: iter(()))
        return SheetFeed(names, spool.count, spool.widths, lambda: spool.parts(stop=stop))

    def close(self) -> None:
        """Close the files (before the folder is removed)."""
        for spool in (self._every, self._bad):
            if spool is not None:
                spool.close()


class FaultSpool:
    """The lines of a fault sheet of errors.xlsx (明细 or 提示): by code, then row; up to ``cap`` per code."""

    def __init__(self, folder: Path, name: str, cap: int | None = None) -> None:
        self.folder, self.name = folder, name
        self.cap = workbooks.SHEET_LINES if cap is None else cap
        self.total = 0
        self._codes: dict[int, LineSpool] = {}

    def add(self, data: ReportData, faults: pd.DataFrame) -> None:
        """The lines of one batch's faults (cleaned by ``data``: sorted by code, then row)."""
        if not len(faults):
            return
        self.total += len(faults)
        codes = faults["code"].to_numpy()
        full = [code for code, spool in self._codes.items() if spool.count >= self.cap]
        if full:
            faults = faults[~np.isin(codes, full)]
            codes = faults["code"].to_numpy()
        if not len(faults):
            return
        columns = fault_columns(data, faults)
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        for start, stop in zip(starts, [*starts[1:], len(codes)], strict=True):
            code = int(codes[start])
            spool = self._codes.get(code)
            if spool is None:
                spool = self._codes[code] = LineSpool(
                    self.folder / f"{self.name}-{code}.arrow", FAULT_HEADERS
                )
            stop = min(stop, start + self.cap - spool.count)
            spool.append([c.slice(start, stop - start) for c in columns])

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
