"""results.csv: every row of the run, with stable English column names, for machines.

UTF-8 with a BOM (so Excel opens the Chinese text correctly), written by
Arrow's CSV writer batch by batch as the run goes: a million rows take about
a second, where pandas ``to_csv`` takes many times that, and no more than a
batch is ever held.

No text value ever becomes a live formula when the file is opened in a
spreadsheet: every text cell that starts with ``=``, ``+``, ``-``, ``@``, a
tab, a carriage return (OWASP's advice against CSV injection), a line feed or
a NUL (which a spreadsheet may drop before reading the rest as a formula:
LibreOffice Calc runs ``\x00=HYPERLINK(…)``) is written with a leading
apostrophe, so ``=HYPERLINK(…)`` is shown as the text it is.  The machine
columns (``source_row``, ``status``, ``result_code``, ``ehealthCardId``,
``virtualCardNum``) hold only digits, codes and letters and are written as
they are; a program reading the text columns back removes one
leading apostrophe from a value that starts with ``'`` followed by one of
those characters.
"""

from __future__ import annotations

import errno
import os
import queue
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.model import FIELDS, SOURCE_COLUMNS
from pipeline.reports.data import ReportData, column_of
from pipeline.text.arrow import text_array

#: Columns before the normalised fields.
LEAD_COLUMNS: tuple[str, ...] = (*SOURCE_COLUMNS, "status", "result_code", "message")

#: Card identifiers returned by the platform (empty in a dry run).
CARD_ID_COLUMNS: tuple[str, ...] = ("ehealthCardId", "virtualCardNum")

#: Columns written as they are: numbers and codes a program reads back.
MACHINE_COLUMNS: frozenset[str] = frozenset({"source_row", "status", "result_code", *CARD_ID_COLUMNS})

#: First characters that make a spreadsheet read a cell as a formula (or start a DDE command);
#: a NUL is dropped by LibreOffice's CSV import, which then reads what follows it as a formula.
FORMULA_STARTS: bytes = b"=+-@\t\r\n\x00"

_BOM = b"\xef\xbb\xbf"
_RISKY_BYTE = np.zeros(256, dtype=bool)
_RISKY_BYTE[np.frombuffer(FORMULA_STARTS, dtype=np.uint8)] = True
_APOSTROPHE = pa.scalar("'", pa.large_string())
_EMPTY = pa.scalar("", pa.large_string())


def _distinct_extra_names(extras: Sequence[str], taken: set[str]) -> list[str]:
    """The clerk's headers, prefixed ``extra_`` where one repeats a stable column (a pinyin ``brdh``)."""
    distinct = []
    for name in extras:
        candidate = name
        while candidate in taken:
            candidate = f"extra_{candidate}"
        taken.add(candidate)
        distinct.append(candidate)
    return distinct


def formula_like(values: pa.Array) -> np.ndarray:
    """Whether each text value starts with a character a spreadsheet takes as the start of a formula.

    Reads the first byte of each value straight from the Arrow buffers: one
    gather per column, no regular expression.
    """
    values = text_array(values)
    n = len(values)
    if not n or values.buffers()[2] is None:
        return np.zeros(n, dtype=bool)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset : values.offset + n + 1]
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8)
    if not len(data):
        return np.zeros(n, dtype=bool)
    starts = offsets[:-1]
    # An empty value's start may be the end of the data: clipped, and its byte is not its own.
    risky = np.take(_RISKY_BYTE, data.take(starts, mode="clip"))  # a take: half the time of indexing
    if risky.any():  # seldom: the emptiness of each value is read only then
        risky &= offsets[1:] > starts
    return risky


def neutralised(values: pa.Array) -> pa.Array:
    """Text that no spreadsheet runs: a value starting like a formula gets a leading apostrophe."""
    values = text_array(values)
    risky = formula_like(values)
    if not risky.any():
        return values
    prefixed = pc.binary_join_element_wise(_APOSTROPHE, values, _EMPTY)
    return pc.if_else(pa.array(risky), prefixed, values)


_WRITE_OPTIONS = pacsv.WriteOptions(quoting_style="needed", include_header=False)

#: Bytes copied at once from a batch's file into results.csv.
_COPY_BYTES = 1 << 26


class ResultsCsv:
    """results.csv written batch by batch: the header first, then every batch's rows in order.

    Arrow's CSV writer runs on a thread of its own (it releases the GIL), so
    the next batch is checked while this one is written; a fault it meets
    (a full disk) is raised by the next :meth:`write_part` or by :meth:`close`.
    A batch may also come as a file of its lines already written as CSV
    (:meth:`encode`, by a worker process): the file is copied in its place.
    """

    def __init__(self, path: Path, extra_names: Sequence[str]) -> None:
        self.names = self.column_names(extra_names)
        self.schema = pa.schema([(name, pa.large_string()) for name in self.names])
        self.path = path
        self.rows = 0
        # Unbuffered: Arrow's lines and copied files go straight to the file, in the order written.
        self._sink: BinaryIO | None = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        self._sink.write(_BOM)
        header = pa.BufferOutputStream()
        pacsv.write_csv(self.schema.empty_table(), header, pacsv.WriteOptions(quoting_style="needed"))
        self._sink.write(header.getvalue().to_pybytes())
        self._closed = False
        self._pending: queue.Queue[pa.Table | Path | None] = queue.Queue()
        self._fault: BaseException | None = None
        self._ended = False
        self._thread = threading.Thread(target=self._drain, name="ehc-results-csv", daemon=True)
        self._thread.start()

    @staticmethod
    def column_names(extra_names: Sequence[str]) -> list[str]:
        """The columns of results.csv: the stable ones, then the clerk's unrecognised ones."""
        names = [*LEAD_COLUMNS, *FIELDS, *CARD_ID_COLUMNS]
        # The clerk's own headers are text from the register like any cell: no formula in them either.
        safe = neutralised(pa.array(list(extra_names), pa.large_string()))
        extras = [str(name) for name in safe.to_pylist()]
        return names + _distinct_extra_names(extras, set(names))

    def _drain(self) -> None:
        while True:
            item = self._pending.get()
            try:
                if item is None:  # the end: marked done like any item, or a batch handed over waits forever
                    self._ended = True
                    return
                if self._fault is None and self._sink is not None:
                    if isinstance(item, Path):
                        _append_file(self._sink, item)
                    else:
                        pacsv.write_csv(item, self._sink, _WRITE_OPTIONS)
            except BaseException as error:  # raised again in the caller's thread
                self._fault = error
            finally:
                if isinstance(item, Path):
                    item.unlink(missing_ok=True)
                del item
                self._pending.task_done()

    @staticmethod
    def lay_out(data: ReportData, names: Sequence[str]) -> pa.Table:
        """The rows of one batch as results.csv holds them (see :func:`write_results_csv`)."""
        rows, n = data.rows, data.n
        arrays = [
            data.source_row_text if name == "source_row" else column_of(rows, name, n)
            for name in SOURCE_COLUMNS
        ]
        arrays += [data.status_text, data.result_code_text, data.message_text]
        arrays += [column_of(rows, name, n) for name in FIELDS]
        arrays += [column_of(data.outcome, name, n) for name in CARD_ID_COLUMNS]
        arrays += [values for _, values in data.extras]
        texts = [
            values if name in MACHINE_COLUMNS else neutralised(values)
            for name, values in zip(names, arrays, strict=True)
        ]
        return pa.Table.from_arrays(texts, schema=pa.schema([(name, pa.large_string()) for name in names]))

    @staticmethod
    def encode(table: pa.Table, path: Path) -> Path:
        """Write the lines of ``table`` (from :meth:`lay_out`) to ``path`` as results.csv holds them."""
        pacsv.write_csv(table, str(path), _WRITE_OPTIONS)
        return path

    def columns(self, data: ReportData) -> pa.Table:
        """The rows of one batch as results.csv holds them (see :func:`write_results_csv`)."""
        return self.lay_out(data, self.names)

    def write(self, data: ReportData) -> None:
        """Append one batch's rows."""
        self.write_part(self.columns(data))

    def write_table(self, table: pa.Table) -> None:
        """Append rows already laid out by :meth:`columns`."""
        self.write_part(table)

    def write_part(self, part: pa.Table | Path) -> None:
        """Append rows laid out by :meth:`columns`, or a file written by :meth:`encode` (then removed)."""
        if self._closed:
            raise ValueError("results.csv is closed")
        # One batch at a time in the writer's hands: the next waits here, so memory holds one batch more.
        if self._thread.is_alive():
            self._pending.join()
        if self._fault is not None:
            raise self._fault
        if self._ended:  # closed by another thread (a run stopped) while this waited
            raise ValueError("results.csv is closed")
        self._pending.put(part)
        if isinstance(part, pa.Table):
            self.rows += part.num_rows

    def close(self) -> None:
        """Finish the file; raises what writing it met."""
        if self._thread.is_alive():
            self._pending.put(None)
            self._thread.join()
        self._closed = True
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.close()
        if self._fault is not None:
            fault, self._fault = self._fault, None
            raise fault


def _append_file(sink: BinaryIO, path: Path) -> None:
    """Copy the file at ``path`` to the end of ``sink`` (in the kernel where it can)."""
    with open(path, "rb", buffering=0) as source:
        copy_range = getattr(os, "copy_file_range", None)
        if copy_range is not None:
            try:
                while copy_range(source.fileno(), sink.fileno(), _COPY_BYTES):
                    pass
                return
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                source.seek(0)
        shutil.copyfileobj(source, sink, _COPY_BYTES)


def write_results_csv(path: Path, data: ReportData) -> Path:
    """Write every row of ``data`` to ``path`` in input order; returns ``path``.

    Columns: source_file, source_sheet, source_row, status, result_code,
    message, the normalised fields, ehealthCardId, virtualCardNum (empty in a
    dry run), then the clerk's unrecognised columns under their own headers.
    """
    writer = ResultsCsv(path, [name for name, _ in data.extras])
    try:
        writer.write(data)
    finally:
        writer.close()
    return path
