"""annotated_<name>.xlsx: the clerk's own register with every faulty cell marked.

An xlsx or xlsm register is marked up in place (:mod:`pipeline.reports.xlsx.markup`):
everything the clerk put into it stays as it was, and only the marks are
added — a red fill and a comment on each cell with an error, a yellow fill
and a comment on each cell with a hint only (an upgraded 15-digit ID
number), a 问题说明 column right of the clerk's last column with one line per
faulty row, and a legend sheet (说明) after the clerk's sheets.

Other registers cannot be marked in place and get a regenerated copy with
the same marks, column and legend: .xls, .xlsb and .ods are read again with
python-calamine (values only: the legend says their formatting could not be
kept); a CSV becomes one sheet of text cells (an ID number stays text), each
row on the row number of its line in the CSV.

A fault on a field the sheet has no column for (a birth date derived from
the ID number, a row-level platform rejection) is put on the row's ID-number
cell; the address parts on the full-address column they were split from.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import re
import zipfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import python_calamine
from loguru import logger
from xlsxwriter.exceptions import OverlappingRange
from xlsxwriter.utility import xl_rowcol_to_cell

from pipeline.errors import InputError
from pipeline.files import fitting_name, numbered
from pipeline.messages import fault_fix
from pipeline.model import MappedTable, RawTable
from pipeline.reading.excel import Sheet, is_workbook_package, open_workbook, shown_texts
from pipeline.reading.html import is_html_file
from pipeline.reading.register import TEXT_SUFFIXES, WORKBOOK_SUFFIXES
from pipeline.reports.data import WARNING, ReportData, fault_texts, source_column
from pipeline.reports.xlsx.comments import Comments
from pipeline.reports.xlsx.markup import (
    MARK_ERROR,
    MARK_HINT,
    CannotMarkUp,
    MarkupResult,
    SheetMarks,
    mark_up,
)
from pipeline.reports.xlsx.writer import (
    CHUNK_ROWS,
    MAX_SHEET_ROWS,
    Block,
    Column,
    FastWorkbook,
    MixedColumn,
    display_widths,
    text_block,
)
from pipeline.text.arrow import replace_masked, spread, text_array
from pipeline.text.joins import join_texts_by_key

#: Sheets taller than this are read back row by row (bounded memory) rather than in one go.
STREAM_ABOVE_ROWS = 200_000

#: Workbooks marked up in place; other workbook formats get a regenerated copy.
MARKABLE_SUFFIXES: tuple[str, ...] = (".xlsx", ".xlsm")

#: A CSV longer than this gets no annotated workbook (errors.xlsx lists its faults): it would be
#: as big as the register and slow to open, and past 1,048,576 rows no sheet can hold it.
CSV_ROW_LIMIT = 200_000

#: Nor does a CSV holding more text than this: its rows are held until the copy is written, and a
#: register of wide rows (long remarks) would otherwise hold hundreds of megabytes for it.
CSV_TEXT_LIMIT = 128 << 20

#: Nor does a register with more faulty cells than this: each is held (about 250 bytes with its
#: message) until the copy is written, and a copy noting millions of cells takes minutes to open.
MARK_LIMIT = 1_000_000

#: Header of the column of reasons added right of the clerk's last column; a register holding it is
#: an annotated copy checked again (the column aliases leave it out of the clerk's data).
NOTE_HEADER = "问题说明"

#: Name of the legend sheet added after the clerk's sheets.
LEGEND_SHEET = "说明"

# Formats of the regenerated copies (block style i is FORMATS[i - 1]).
_RED, _YELLOW = "#FF7C80", "#FFEB9C"
FORMATS: tuple[dict[str, object], ...] = (
    {"bg_color": _RED},  # 1 cell with an error
    {"bg_color": _YELLOW},  # 2 cell with a hint only
    {"font_color": "#9C0006", "text_wrap": True, "valign": "top"},  # 3 a 问题说明 cell
    {"bold": True},  # 4 the 问题说明 header
    {"num_format": "@"},  # 5 a CSV cell: text
    {"bg_color": _RED, "num_format": "@"},  # 6 a CSV cell with an error
    {"bg_color": _YELLOW, "num_format": "@"},  # 7 a CSV cell with a hint only
    {"text_wrap": True, "valign": "top"},  # 8 a legend line
    {"bold": True, "font_size": 12},  # 9 the legend's title
)
ERROR_STYLE, WARNING_STYLE, NOTE_STYLE, NOTE_HEADER_STYLE = 1, 2, 3, 4
TEXT_STYLE, TEXT_ERROR_STYLE, TEXT_WARNING_STYLE, LEGEND_STYLE, LEGEND_TITLE_STYLE = 5, 6, 7, 8, 9
_MARK_KINDS = {ERROR_STYLE: MARK_ERROR, WARNING_STYLE: MARK_HINT}

#: Edits of a clerk's cells: (sheet name, row number as Excel shows it, 0-based column) -> new text.
Edits = Mapping[tuple[str, int, int], str]


class SourceUnreadable(Exception):
    """The register read at the start of the run cannot be read again (moved, deleted, changed)."""


class TooLarge(Exception):
    """The register is too large for an annotated copy (the message says why, in Chinese)."""


_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def annotated_name(path: str, taken: set[str]) -> str:
    """``annotated_<stem>.xlsx``, with a number added when two inputs share a stem."""
    stem = _CONTROL_CHARS.sub("_", Path(path).stem)  # a line break in a name would make one in every listing
    base = fitting_name(f"annotated_{stem}.xlsx", room=4)  # a long name's copy: still a name
    name = numbered(base.removesuffix(".xlsx"), taken, suffix=".xlsx")
    taken.add(name)
    return name


def register_inputs(data: ReportData) -> dict[str, list[int]]:
    """Registers of the run that get an annotated copy: path -> indices of its tables in ``batch.tables``."""
    grouped: dict[str, list[int]] = {}
    for i, table in enumerate(data.batch.tables):
        if Path(table.raw.path).suffix.lower() in (*WORKBOOK_SUFFIXES, *TEXT_SUFFIXES):
            grouped.setdefault(table.raw.path, []).append(i)
    return grouped


#: The older name of :func:`register_inputs`, from when only workbooks were annotated.
workbook_inputs = register_inputs


def _mark_column(table: MappedTable, field: str) -> int:
    """Sheet column (0-based) for a fault on ``field``: its own column, else the ID number's."""
    raw = table.raw
    position = dict(zip(raw.headers, raw.column_positions, strict=False))
    for candidate in (field, "sfzhm"):
        header, _ = source_column(table.field_headers, candidate) if candidate else ("", "")
        if header in position:
            return position[header]
    return raw.column_positions[0] if raw.column_positions else 0


def _table_faults(data: ReportData, table_index: int) -> pd.DataFrame:
    tables = data.table_of_row
    if tables is None or not len(data.faults):
        return data.faults.iloc[:0]
    return data.faults[tables[data.faults["pos"].to_numpy()] == table_index]


def cell_marks(data: ReportData, table_index: int) -> pd.DataFrame:
    """Faulty cells of one table: sheet ``row``/``col`` (0-based), ``style`` and ``comment`` text.

    A comment holds each fault of the cell (``[code] message``) and, for an
    error, how to fix it for that field.
    """
    empty = pd.DataFrame({"row": [], "col": [], "style": [], "comment": []})
    faults = _table_faults(data, table_index)
    if not len(faults):
        return empty
    table = data.batch.tables[table_index]
    row_ids = data.rows.index.to_numpy()[faults["pos"].to_numpy()]
    local = row_ids - data.batch.table_rows[table_index].start
    columns = {f: _mark_column(table, f) for f in faults["field"].unique()}
    texts = fault_texts(faults)
    warning = faults["severity"].to_numpy() == WARNING
    fixes = {
        (int(c), str(f)): fault_fix(int(c), str(f))
        for c, f in faults.loc[~warning, ["code", "field"]].drop_duplicates().itertuples(index=False)
    }
    fix_texts = np.array(
        [
            fixes.get((int(c), str(f)), "") if not w else ""
            for c, f, w in zip(faults["code"], faults["field"], warning, strict=True)
        ],
        dtype=object,
    )
    with_fix = fix_texts != ""
    texts[with_fix] = texts[with_fix] + "\n处理办法：" + fix_texts[with_fix]
    marks = pd.DataFrame(
        {
            "row": np.asarray(table.raw.source_row)[local].astype(np.int64) - 1,
            "col": faults["field"].map(columns).to_numpy(dtype=np.int64),
            "warning": warning,
            "code": faults["code"].to_numpy(),
            "text": texts,
        }
    ).sort_values(["row", "col", "warning", "code"], kind="stable")
    key = marks["row"].to_numpy() * (1 << 20) + marks["col"].to_numpy()
    keys, joined = join_texts_by_key(key, text_array(marks["text"]), "\n")
    comments = np.asarray(joined.to_numpy(zero_copy_only=False), dtype=object)
    only_warnings = marks.groupby(key, sort=True)["warning"].all().to_numpy()
    return pd.DataFrame(
        {
            "row": keys >> 20,
            "col": keys & ((1 << 20) - 1),
            "style": np.where(only_warnings, WARNING_STYLE, ERROR_STYLE),
            "comment": comments,
        }
    )


def row_notes(data: ReportData, table_index: int) -> tuple[np.ndarray, np.ndarray]:
    """The 问题说明 of one table: sheet rows (0-based) of the rows with a fault or a bad status, and texts.

    A text is the row's faults, errors first (``[10111] …；[提示 10111] …``),
    plus the platform's answer for a row sent and refused.
    """
    span = data.batch.table_rows[table_index]
    ids = data.rows.index.to_numpy()
    here = (ids >= span.start) & (ids < span.stop)
    faulty = np.zeros(data.n, dtype=bool)
    faulty[data.faults["pos"].to_numpy()] = True
    pick = here & (faulty | data.bad) & (data.messages != "")
    local = ids[pick] - span.start
    rows = np.asarray(data.batch.tables[table_index].raw.source_row)[local].astype(np.int64) - 1
    return rows, data.messages[pick].astype(object)


def _sheet_marks(data: ReportData, table_index: int, name: str) -> SheetMarks:
    table = data.batch.tables[table_index]
    marks = cell_marks(data, table_index)
    note_rows, note_texts = row_notes(data, table_index)
    raw = table.raw
    return SheetMarks(
        name=name,
        rows=marks["row"].to_numpy(dtype=np.int64),
        cols=marks["col"].to_numpy(dtype=np.int64),
        kinds=np.array([_MARK_KINDS[int(s)] for s in marks["style"]], dtype=np.int8),
        comments=marks["comment"].to_numpy(dtype=object),
        note_rows=note_rows,
        note_texts=note_texts,
        header_row=raw.header_row - 1 if raw.header_row else None,
        last_column=max(raw.column_positions, default=0),
        note_header=NOTE_HEADER,
    )


# -- the legend -----------------------------------------------------------------------------------


def legend_lines(source: str, added: MarkupResult, *, regenerated: str = "") -> list[str]:
    """The legend sheet: what the marks mean, what was added, and what could not be kept."""
    name = Path(source).name
    lines = [f"标注说明：{name}"]
    if regenerated:
        lines.append(regenerated)
    else:
        lines.append(
            f"本文件是您的登记表“{name}”的副本：您原有的内容、格式、公式、批注和其他工作表都保持原样，只加了下面这些标记。"
        )
    commented = "每个红色单元格都有批注"
    if added.clerk_comments_kept:
        commented = "红色单元格都有批注（原来就有您的批注的除外，见下）"
    lines += [
        f"红色单元格：该格有错误，这一行不能提交。{commented}（鼠标移到单元格上即可看到），写明错误原因和处理办法。",
        "黄色单元格：提示，不影响提交（例如15位身份证号码已按国家标准升级为18位），请核对。",
        f"“{NOTE_HEADER}”列：在表格原有内容的右侧，每个有问题的行一条，列出结果代码和原因，"
        "不用看批注、打印出来也能看到。",
        f"本次共标出 {added.errors} 个错误单元格、{added.hints} 个提示单元格，"
        f"{added.noted_rows} 行有问题说明。"
        "每条问题的位置和处理办法也列在 errors.xlsx 中。",
    ]
    if added.clerk_comments_kept:
        lines.append(
            f"有 {added.clerk_comments_kept} 个标出的单元格原来就有您的批注：批注保持原样，"
            f"问题见该行的“{NOTE_HEADER}”。"
        )
    if added.edits_applied:
        lines.append(f"已按您在网页中的修改改写了 {added.edits_applied} 个单元格（均为文本）。")
    if added.not_kept:
        lines.append("未能保留或未能改写的内容：" + "；".join(added.not_kept))
    lines.append(
        "请在原登记表中改正，改好后再检查原登记表。直接检查本文件也可以：那时本文件的标记都会清除，"
        "新的标注副本只标出新的结果，但本文件的格式不会保留。"
    )
    return lines


# -- in place -------------------------------------------------------------------------------------


def _sheet_names(data: ReportData, source: str, table_indices: Sequence[int]) -> dict[str, int]:
    """Sheet name -> the first table read from it (a sheet read twice is marked once)."""
    chosen: dict[str, int] = {}
    for index in table_indices:
        name = data.batch.tables[index].raw.sheet
        chosen.setdefault(name, index)
    return chosen


def _mark_in_place(
    path: Path, source: str, data: ReportData, table_indices: Sequence[int], edits: Edits
) -> Path:
    sheets = [
        _sheet_marks(data, index, name) for name, index in _sheet_names(data, source, table_indices).items()
    ]
    added = mark_up(
        Path(source),
        path,
        sheets,
        legend=lambda result: legend_lines(source, result),
        legend_name=LEGEND_SHEET,
        edits=edits,
    )
    for item in added.not_kept:
        logger.warning("{}：{}", Path(source).name, item)
    return path


# -- regenerated copies ---------------------------------------------------------------------------


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


def _row_chunks(sheet: Sheet) -> Iterator[tuple[int, list[list[Any]]]]:
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


def _batch_edits(data: ReportData, table_indices: Sequence[int]) -> dict[tuple[str, int, int], str]:
    """The batch's cell edits (:func:`cell_edits`) of the given tables, keyed as ``write_annotated``'s."""
    return {
        (data.batch.tables[index].raw.sheet, row + 1, col): value
        for index in table_indices
        for (row, col), value in cell_edits(data, index).items()
    }


def _mark_styles(
    marks: SheetMarks, first: int, count: int, left: int, width: int, *, text: bool
) -> dict[int, np.ndarray]:
    rows, cols = marks.rows, marks.cols - left
    here = (rows >= first) & (rows < first + count) & (cols >= 0) & (cols < width)
    styles: dict[int, np.ndarray] = {}
    for row, col, kind in zip(rows[here] - first, cols[here], marks.kinds[here], strict=True):
        style = (
            (TEXT_ERROR_STYLE if kind == MARK_ERROR else TEXT_WARNING_STYLE)
            if text
            else (ERROR_STYLE if kind == MARK_ERROR else WARNING_STYLE)
        )
        styles.setdefault(int(col), np.zeros(count, dtype=np.int8))[row] = style
    return styles


def _note_column(marks: SheetMarks, first: int, count: int) -> tuple[pa.Array, np.ndarray]:
    texts = np.full(count, "", dtype=object)
    styles = np.zeros(count, dtype=np.int8)
    here = (marks.note_rows >= first) & (marks.note_rows < first + count)
    texts[marks.note_rows[here] - first] = marks.note_texts[here]
    styles[marks.note_rows[here] - first] = NOTE_STYLE
    if len(marks.note_rows) and marks.header_row is not None and first <= marks.header_row < first + count:
        texts[marks.header_row - first] = NOTE_HEADER
        styles[marks.header_row - first] = NOTE_HEADER_STYLE
    return text_array(texts), styles


def _apply_edits(rows: list[list[Any]], first: int, left: int, edits: Mapping[tuple[int, int], str]) -> None:
    for (row, col), text in edits.items():
        index, position = row - first, col - left
        if 0 <= index < len(rows) and position >= 0:
            cells = rows[index]
            cells.extend([""] * (position + 1 - len(cells)))
            cells[position] = text


def _blocks(
    sheet: Sheet,
    marks: SheetMarks,
    note_col: int,
    edits: Mapping[tuple[int, int], str],
    *,
    blank: Collection[int] = (),
) -> Iterator[Block]:
    """The sheet's rows as blocks of cells, the marks' styles and the 问题说明 column at ``note_col``;
    columns in ``blank`` (an earlier check's 问题说明) are left empty."""
    top, left = sheet.start or (0, 0)
    width = note_col - left
    cleared = sorted(position - left for position in blank if 0 <= position - left < width)
    for offset, rows in _row_chunks(sheet):
        first = top + offset
        _apply_edits(rows, first, left, edits)
        padded = [list(r[:width]) + [""] * (width - len(r)) for r in rows]
        for row in padded:
            for position in cleared:
                row[position] = ""
        columns: list[Column] = [_column(col) for col in zip(*padded, strict=True)] if padded else []
        notes, note_styles = _note_column(marks, first, len(rows))
        styles = _mark_styles(marks, first, len(rows), left, width, text=False)
        styles[len(columns)] = note_styles
        yield Block([*columns, notes], first_row=first, first_col=left, cell_styles=styles)


class _Lowercase:
    """Sheet names taken, compared as Excel does: ignoring case."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.taken


def _within_utf16(text: str, units: int) -> str:
    """The longest start of ``text`` of at most ``units`` UTF-16 code units (Excel counts those)."""
    used = 0
    for end, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > units:
            return text[:end]
    return text


def _sheet_name(name: str, taken: set[str]) -> str:
    """A sheet name Excel takes, from a register's file or sheet name, not among ``taken`` (which gets it).

    Excel refuses []:*?/\\, an apostrophe at either end and more than 31
    UTF-16 units (an emoji is two); a control character would break the XML.
    """
    cleaned = _CONTROL_CHARS.sub("_", _BAD_SHEET_CHARS.sub("_", name))
    base = _within_utf16(cleaned, 31).strip("'") or "Sheet"
    candidate = numbered(base, _Lowercase(taken), stem=_within_utf16(base, 28).rstrip("'"))
    taken.add(candidate.lower())
    return candidate


def _comments(marks: SheetMarks) -> Comments:
    return Comments(marks.rows, marks.cols, text_array(marks.comments), author="ehc")


def _add_legend(book: FastWorkbook, names: set[str], lines: Sequence[str]) -> None:
    block = text_block([[line] for line in lines])
    block.row_style = np.array([LEGEND_TITLE_STYLE] + [LEGEND_STYLE] * (len(lines) - 1), dtype=np.int8)
    sheet = book.add_sheet(_sheet_name(LEGEND_SHEET, names), [block])
    sheet.set_column(0, 0, 100)


def _counted(marks: Sequence[SheetMarks]) -> MarkupResult:
    return MarkupResult(
        errors=sum(int((m.kinds == MARK_ERROR).sum()) for m in marks),
        hints=sum(int((m.kinds == MARK_HINT).sum()) for m in marks),
        noted_rows=sum(len(m.note_rows) for m in marks),
    )


def _split_edits(edits: Edits) -> dict[str, dict[tuple[int, int], str]]:
    per_sheet: dict[str, dict[tuple[int, int], str]] = {}
    for (sheet, row, col), text in edits.items():
        per_sheet.setdefault(sheet, {})[(row - 1, col)] = text
    return per_sheet


def old_note_positions(raw: RawTable) -> set[int]:
    """Sheet columns (0-based) of the 问题说明 column an earlier check added: the register is an annotated
    copy of ours."""
    return {
        position
        for header, position in zip(raw.headers, raw.column_positions, strict=False)
        if header.strip() == NOTE_HEADER
    }


def _regenerate_workbook(
    path: Path, source: str, data: ReportData, table_indices: Sequence[int], edits: Edits, why: str
) -> Path:
    """A copy rebuilt from the cell values (.xls, .xlsb, .ods, or an xlsx that cannot be marked in place)."""
    try:
        workbook = open_workbook(Path(source))  # as the register was read: by content, should its name lie
    except InputError as error:
        raise SourceUnreadable(source) from error
    book = FastWorkbook(path, FORMATS)
    names: set[str] = set()
    per_sheet = _split_edits(edits)
    shown = shown_texts(Path(source))  # errors and padded numbers as the clerk sees them, not as read bare
    all_marks = []
    try:
        for name, index in _sheet_names(data, source, table_indices).items():
            table = data.batch.tables[index]
            try:
                sheet = workbook.get_sheet_by_name(name or workbook.sheet_names[0])
            except (python_calamine.CalamineError, IndexError) as error:
                raise SourceUnreadable(source) from error
            marks = _sheet_marks(data, index, sheet.name)
            all_marks.append(marks)
            start, end = sheet.start, sheet.end
            left = start[1] if start else 0
            old_notes = old_note_positions(table.raw)
            right = max(((end[1] + 1) if end else 0), marks.last_column + 1)
            while right - 1 in old_notes:  # an earlier check's 问题说明 at the right: this check's goes there
                right -= 1
            note_col = max(right, left)
            bottom = end[0] if end else 0
            dimension = f"{xl_rowcol_to_cell(*(start or (0, 0)))}:{xl_rowcol_to_cell(bottom, note_col)}"
            worksheet = book.add_sheet(
                _sheet_name(sheet.name, names),
                _blocks(
                    sheet,
                    marks,
                    note_col,
                    {**shown.get(sheet.name, {}), **per_sheet.get(sheet.name, {})},
                    blank=old_notes,
                ),
                dimension,
                _comments(marks),
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
            worksheet.set_column(note_col, note_col, 60)
        _add_legend(book, names, legend_lines(source, _counted(all_marks), regenerated=why))
        return book.close()
    finally:
        workbook.close()


def _regenerate_text(
    path: Path, source: str, data: ReportData, table_indices: Sequence[int], edits: Edits
) -> Path:
    """A CSV (or other delimited text) register, or a web page's table, as one sheet of text cells, each
    row on the row a spreadsheet shows it on."""
    index = table_indices[0]
    raw = data.batch.tables[index].raw
    rows = np.asarray(raw.source_row, dtype=np.int64)
    if len(rows) > CSV_ROW_LIMIT or (len(rows) and int(rows.max()) > MAX_SHEET_ROWS):
        raise TooLarge(f"超过 {CSV_ROW_LIMIT:,} 行")
    marks = _sheet_marks(data, index, raw.sheet)
    header = raw.header_row - 1 if raw.header_row else 0
    height = (int(rows.max()) if len(rows) else header + 1) - header
    positions = rows - 1 - header
    width = max(raw.column_positions, default=-1) + 1
    columns: list[Column] = []
    by_position = dict(zip(raw.column_positions, range(len(raw.headers)), strict=False))
    sheet_edits = next(iter(_split_edits(edits).values()), {})
    marked = _mark_styles(marks, header, height, 0, width, text=True)
    held = {*by_position, *marked, *(col for _, col in sheet_edits)}
    # The columns between the register's and a stray value far to its right (a CSV saved from a sheet
    # with one: every line runs to it) hold nothing: one shared empty column, no cell written for it
    # (a column only the clerk's edits or the marks hold starts from it too).
    empty = spread(height, np.zeros(0, dtype=np.int64), [])
    edited: dict[int, list[tuple[int, str]]] = {}
    for (row, col), text in sorted(sheet_edits.items()):
        if 0 < row - header < height:
            edited.setdefault(col, []).append((row - header, text))
    for position in range(width):
        if position not in held:
            columns.append(empty)
            continue
        if position in by_position:
            column = by_position[position]
            texts = pa.concat_arrays(
                [text_array([raw.headers[column]]), text_array(raw.data.iloc[:, column]).fill_null("")]
            )
            values = spread(height, np.r_[0, positions], texts)
        else:
            values = empty
        if position in edited:  # a few cells the clerk changed, in row order
            rows_edited = np.array([row for row, _ in edited[position]], dtype=np.int64)
            mask = np.zeros(height, dtype=bool)
            mask[rows_edited] = True
            values = replace_masked(values, mask, text_array([text for _, text in edited[position]]))
        columns.append(values)
    notes, note_styles = _note_column(marks, header, height)
    # A held column's cells are text even where empty (what a clerk types there stays text), its header
    # bold; a mark wins.  Empty columns get no style, so none of their cells is written.
    plain = np.full(height, TEXT_STYLE, dtype=np.int8)
    plain[0] = NOTE_HEADER_STYLE
    styles = {position: plain for position in held}
    styles |= {position: np.where(own > 0, own, plain) for position, own in marked.items()}
    styles[width] = np.where(note_styles > 0, note_styles, plain)
    block = Block([*columns, notes], first_row=header, style=TEXT_STYLE, cell_styles=styles)
    book = FastWorkbook(path, FORMATS)
    names: set[str] = set()
    sheet = book.add_sheet(_sheet_name(Path(source).stem, names), [block], comments=_comments(marks))
    sheet.freeze_panes(header + 1, 0)
    for position, column_width in zip(
        raw.column_positions,
        display_widths([text_array(raw.data.iloc[:, i]) for i in range(raw.data.shape[1])], raw.headers),
        strict=False,
    ):
        sheet.set_column(position, position, column_width)
    sheet.set_column(width, width, 60)
    kind = "文本文件（CSV）" if Path(source).suffix.lower() in TEXT_SUFFIXES else "网页格式的表格（系统导出）"
    note = (
        f"原文件“{Path(source).name}”是{kind}，没有格式可保留：本文件把它的内容放进一个工作表，"
        "各列都是文本格式（身份证号码不会变成科学计数法），行号与原文件的行号一致。"
    )
    _add_legend(book, names, legend_lines(source, _counted([marks]), regenerated=note))
    return book.close()


def write_annotated(
    path: Path, source: str, data: ReportData, table_indices: Sequence[int], edits: Edits | None = None
) -> Path:
    """Write the annotated copy of register ``source`` (the given tables' sheets) to ``path``.

    xlsx and xlsm registers are marked up in place; .xls, .xlsb and .ods ones
    are regenerated from their values (the legend sheet says so); a CSV, or a
    web page saved as .xls, becomes a sheet of text cells.  ``edits`` maps (sheet name, row number as
    Excel shows it, 0-based column — ``RawTable.column_positions``) to a new
    text for that cell, written in the same pass as the marks: a text cell in
    the cell's own style, never a formula (the sheet name is ``""`` for a
    CSV).  The batch's own ``cell_edits`` (the web workspace's) are applied
    the same way; ``edits`` wins where both name a cell.  Raises
    :class:`SourceUnreadable` when the register cannot be read again,
    :class:`TooLarge` for a CSV too long for a copy.
    """
    edits = {**_batch_edits(data, table_indices), **(edits or {})}
    suffix = Path(source).suffix.lower()
    if suffix in TEXT_SUFFIXES or is_html_file(Path(source)):
        return _regenerate_text(path, source, data, table_indices, edits)
    if any(old_note_positions(data.batch.tables[index].raw) for index in table_indices):
        # Marked in place, its old marks would stay beside the new: red cells the clerk has mended,
        # comments and reasons that no longer hold, a second 问题说明 column and legend.
        logger.warning(
            "{} 像是上次检查生成的标注副本：新的标注副本按内容重新生成，只标出这次的结果"
            "（上次的标记已清除，原有格式没有保留）；请尽量在原登记表中改正后检查原登记表",
            Path(source).name,
        )
        why = (
            f"原文件“{Path(source).name}”是上次检查生成的标注副本：本文件按它的内容重新生成，"
            f"上次的红黄标记、批注和“{NOTE_HEADER}”列都已清除，只标出这次检查的结果；"
            "原有的字体、颜色、列宽、数字格式、公式和其他工作表没有保留。"
        )
        return _regenerate_workbook(path, source, data, table_indices, edits, why)
    # An xlsx saved under another workbook's name (.xls) is read by its content, and marked up as one.
    if suffix in MARKABLE_SUFFIXES or (suffix in WORKBOOK_SUFFIXES and is_workbook_package(Path(source))):
        try:
            return _mark_in_place(path, source, data, table_indices, edits)
        except FileNotFoundError as error:
            raise SourceUnreadable(source) from error
        except (CannotMarkUp, KeyError, ValueError, IndexError, EOFError, zipfile.BadZipFile) as error:
            logger.warning(
                "{}：文件的结构无法在原文件上直接标注，标注副本按内容重新生成，原有格式未保留",
                Path(source).name,
            )
            logger.debug("{}：{}（{}）", Path(source).name, type(error).__name__, error)
            why = (
                f"原文件“{Path(source).name}”的结构无法在原文件上直接标注：本文件是按原表内容重新生成的副本，"
                "原有的字体、颜色、列宽、数字格式、公式、批注和其他工作表没有保留；请在原文件中改正。"
            )
            return _regenerate_workbook(path, source, data, table_indices, edits, why)
    why = (
        f"原文件“{Path(source).name}”是 {suffix} 格式，无法在原文件上直接标注："
        "本文件是按原表内容重新生成的副本，"
        "原有的字体、颜色、列宽、数字格式、公式、批注和其他工作表没有保留；"
        "请在原文件中改正，或把原文件另存为 .xlsx 后再检查。"
    )
    logger.info("{}：{} 格式无法在原文件上标注，标注副本按内容重新生成", Path(source).name, suffix)
    return _regenerate_workbook(path, source, data, table_indices, edits, why)
