"""annotated_<name>.xlsx: the clerk's own sheets with every faulty cell marked.

Each sheet read from a workbook is read again with python-calamine, every cell
(title rows included) written back at the same position, and every cell a fault
points at is filled (red for an error, yellow for a warning) and given a Chinese
comment naming the result code and how to fix it.  A fault on a field the sheet
has no column for (a birth date derived from the ID number, a row-level
platform rejection) is put on the row's ID-number cell; the address parts on
the full-address column they were split from.

Values come back as they were stored: text as text, numbers as numbers
(an ID number Excel turned into a number stays one, so the comment makes
sense), dates as ``YYYY-MM-DD`` text; formulas only as their last value.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import python_calamine
from xlsxwriter.exceptions import OverlappingRange
from xlsxwriter.utility import xl_rowcol_to_cell

from pipeline.files import numbered
from pipeline.model import MappedTable
from pipeline.reading.register import WORKBOOK_SUFFIXES
from pipeline.reports.data import WARNING, ReportData, fault_texts, join_by_key, source_column
from pipeline.reports.xlsx.comments import Comments
from pipeline.reports.xlsx.writer import (
    CHUNK_ROWS,
    Block,
    Column,
    FastWorkbook,
    MixedColumn,
    display_widths,
)
from pipeline.text.arrow import text_array
from schemas.result_codes import hint

#: Sheets taller than this are read back row by row (bounded memory) rather than in one go.
STREAM_ABOVE_ROWS = 200_000

FORMATS: tuple[dict[str, object], ...] = (
    {"bg_color": "#FF0000", "font_color": "#FFFFFF", "bold": True},  # 1 cell with an error
    {"bg_color": "#FFEB9C", "font_color": "#9C5700"},  # 2 cell with a warning only
)
ERROR_STYLE, WARNING_STYLE = 1, 2


class SourceUnreadable(Exception):
    """The workbook read at the start of the run cannot be read again (moved, deleted, changed)."""


_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")


def annotated_name(path: str, taken: set[str]) -> str:
    """``annotated_<stem>.xlsx``, with a number added when two inputs share a stem."""
    name = numbered(f"annotated_{Path(path).stem}", taken, suffix=".xlsx")
    taken.add(name)
    return name


def workbook_inputs(data: ReportData) -> dict[str, list[int]]:
    """Workbook inputs of the run: path -> indices of its tables in ``batch.tables``."""
    grouped: dict[str, list[int]] = {}
    for i, table in enumerate(data.batch.tables):
        if Path(table.raw.path).suffix.lower() in WORKBOOK_SUFFIXES:
            grouped.setdefault(table.raw.path, []).append(i)
    return grouped


def _mark_column(table: MappedTable, field: str) -> int:
    """Sheet column (0-based) for a fault on ``field``: its own column, else the ID number's."""
    raw = table.raw
    position = dict(zip(raw.headers, raw.column_positions, strict=False))
    for candidate in (field, "sfzhm"):
        header, _ = source_column(table.field_headers, candidate) if candidate else ("", "")
        if header in position:
            return position[header]
    return raw.column_positions[0] if raw.column_positions else 0


def cell_marks(data: ReportData, table_index: int) -> pd.DataFrame:
    """Faulty cells of one table: sheet ``row``/``col`` (0-based), ``style`` and ``comment`` text."""
    empty = pd.DataFrame({"row": [], "col": [], "style": [], "comment": []})
    tables = data.table_of_row
    if tables is None or not len(data.faults):
        return empty
    table = data.batch.tables[table_index]
    faults = data.faults[tables[data.faults["pos"].to_numpy()] == table_index]
    if not len(faults):
        return empty
    row_ids = data.rows.index.to_numpy()[faults["pos"].to_numpy()]
    local = row_ids - data.batch.table_rows[table_index].start
    columns = {f: _mark_column(table, f) for f in faults["field"].unique()}
    texts = fault_texts(faults)
    hints = np.array([hint(int(c)) for c in faults["code"]], dtype=object)
    with_hint = (hints != "") & (faults["severity"].to_numpy() != WARNING)
    texts[with_hint] = texts[with_hint] + "\n处理办法：" + hints[with_hint]
    marks = pd.DataFrame(
        {
            "row": np.asarray(table.raw.source_row)[local].astype(np.int64) - 1,
            "col": faults["field"].map(columns).to_numpy(dtype=np.int64),
            "warning": faults["severity"].to_numpy() == WARNING,
            "code": faults["code"].to_numpy(),
            "text": texts,
        }
    ).sort_values(["row", "col", "warning", "code"], kind="stable")
    key = marks["row"].to_numpy() * (1 << 20) + marks["col"].to_numpy()
    keys, comments = join_by_key(key, marks["text"].to_numpy(dtype=object), "\n")
    only_warnings = marks.groupby(key, sort=True)["warning"].all().to_numpy()
    return pd.DataFrame(
        {
            "row": keys >> 20,
            "col": keys & ((1 << 20) - 1),
            "style": np.where(only_warnings, WARNING_STYLE, ERROR_STYLE),
            "comment": comments,
        }
    )


def _cell_text(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return str(value)


def _column(values: Sequence[object]) -> Column:
    """One column of calamine values as Arrow: plain text when it is, else text and numbers side by side."""
    try:
        return pa.array(values, pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    numbers = [v if type(v) in (int, float) else None for v in values]
    texts = ["" if n is not None else _cell_text(v) for v, n in zip(values, numbers, strict=True)]
    return MixedColumn(pa.array(texts, pa.large_string()), pa.array(numbers, pa.float64()))


def _row_chunks(sheet: python_calamine.CalamineSheet) -> Iterator[tuple[int, list[list[Any]]]]:
    if sheet.height <= STREAM_ABOVE_ROWS:
        rows = sheet.to_python()
        for start in range(0, len(rows), CHUNK_ROWS):
            yield start, rows[start : start + CHUNK_ROWS]
        return
    iterator, start = sheet.iter_rows(), 0
    while chunk := list(itertools.islice(iterator, CHUNK_ROWS)):
        yield start, chunk
        start += len(chunk)


def cell_edits(data: ReportData, table_index: int) -> dict[tuple[int, int], str]:
    """Cells of one table a clerk changed after reading (``Batch.cell_edits``): (row, col), 0-based -> value.

    An edit of a field the sheet has no column for has no cell to show it in.
    """
    edits = data.batch.cell_edits
    if edits is None or not len(edits):
        return {}
    table = data.batch.tables[table_index]
    rows = data.batch.table_rows[table_index]
    position = dict(zip(table.raw.headers, table.raw.column_positions, strict=False))
    changed: dict[tuple[int, int], str] = {}
    for row_id, field, value in zip(edits["row_id"], edits["field"], edits["value"], strict=True):
        header = table.field_headers.get(str(field), "")
        if int(row_id) in rows and header in position:
            sheet_row = int(table.raw.source_row[int(row_id) - rows.start]) - 1
            changed[(sheet_row, position[header])] = str(value)
    return changed


def _apply_edits(rows: list[list[Any]], first: int, left: int, edits: dict[tuple[int, int], str]) -> None:
    for (row, col), value in edits.items():
        if first <= row < first + len(rows) and col >= left:
            cells = rows[row - first]
            cells.extend([""] * (col - left + 1 - len(cells)))
            cells[col - left] = value


def _blocks(
    sheet: python_calamine.CalamineSheet, marks: pd.DataFrame, edits: dict[tuple[int, int], str] | None = None
) -> Iterator[Block]:
    top, left = sheet.start or (0, 0)
    mark_rows, mark_cols = marks["row"].to_numpy(), marks["col"].to_numpy() - left
    mark_styles = marks["style"].to_numpy()
    for offset, rows in _row_chunks(sheet):
        if edits:
            _apply_edits(rows, top + offset, left, edits)
        lengths = {len(r) for r in rows}
        width = max(lengths)
        transposed = (
            zip(*rows, strict=True) if len(lengths) == 1 else itertools.zip_longest(*rows, fillvalue="")
        )
        columns = [_column(col) for col in transposed]
        first = top + offset
        here = (mark_rows >= first) & (mark_rows < first + len(rows)) & (mark_cols >= 0) & (mark_cols < width)
        styles: dict[int, np.ndarray] = {}
        for row, col, style in zip(mark_rows[here] - first, mark_cols[here], mark_styles[here], strict=True):
            styles.setdefault(int(col), np.zeros(len(rows), dtype=np.int8))[row] = style
        yield Block(columns, first_row=first, first_col=left, cell_styles=styles)


class _Lowercase:
    """Sheet names taken, compared as Excel does: ignoring case."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.taken


def _sheet_name(name: str, taken: set[str]) -> str:
    base = _BAD_SHEET_CHARS.sub("_", name)[:31] or "Sheet"
    candidate = numbered(base, _Lowercase(taken), stem=base[:28])
    taken.add(candidate.lower())
    return candidate


def write_annotated(path: Path, source: str, data: ReportData, table_indices: Sequence[int]) -> Path:
    """Write the annotated copy of workbook ``source`` (the given tables' sheets) to ``path``."""
    try:
        workbook = python_calamine.CalamineWorkbook.from_path(source)
    except (python_calamine.CalamineError, OSError, ValueError) as error:
        raise SourceUnreadable(source) from error
    book = FastWorkbook(path, FORMATS)
    names: set[str] = set()
    try:
        for index in table_indices:
            table = data.batch.tables[index]
            try:
                sheet = workbook.get_sheet_by_name(table.raw.sheet or workbook.sheet_names[0])
            except (python_calamine.CalamineError, IndexError) as error:
                raise SourceUnreadable(source) from error
            if sheet.name.lower() in names:
                continue
            marks = cell_marks(data, index)
            start, end = sheet.start, sheet.end
            dimension = f"{xl_rowcol_to_cell(*start)}:{xl_rowcol_to_cell(*end)}" if start and end else "A1"
            comments = Comments(
                marks["row"].to_numpy(), marks["col"].to_numpy(), text_array(marks["comment"]), author="ehc"
            )
            worksheet = book.add_sheet(
                _sheet_name(sheet.name, names),
                _blocks(sheet, marks, cell_edits(data, index)),
                dimension,
                comments,
            )
            for (r1, c1), (r2, c2) in sheet.merged_cell_ranges or []:
                if (r1, c1) != (r2, c2):
                    with contextlib.suppress(OverlappingRange):
                        worksheet.merge_range(r1, c1, r2, c2, "")
            raw = table.raw
            columns = [text_array(raw.data.iloc[:, i]) for i in range(raw.data.shape[1])]
            for position, width in zip(
                raw.column_positions, display_widths(columns, raw.headers), strict=False
            ):
                worksheet.set_column(position, position, width)
        return book.close()
    finally:
        workbook.close()
