"""Workbooks (.xlsx/.xlsm/.xlsb/.xls/.ods) through python-calamine, every cell as text.

Cells become the text a clerk would type: integral numbers without ".0"
(a 民族 typed as text stays "01", typed as a number it is "1"); numbers of 15
digits or more in Excel's scientific form ("4.20123196205184E+17": an ID number
stored as a number has lost its last digits, and validation says so rather than
guessing them); dates as YYYY-MM-DD; booleans as TRUE/FALSE.  A cell longer
than Excel's 32,767 characters is cut to one character more, so it stays
bounded and is still seen to be too long.  Before calamine opens a workbook,
:mod:`pipeline.reading.bounds` refuses what it could not read in bounded
memory (stray far cells, decompression bombs).  Conversion is
column-wise: a text column goes to Arrow in one call, numeric and date columns
are converted in numpy/Arrow, and only mixed columns are walked cell by cell.
"""

from __future__ import annotations

import datetime as dt
import gc
import math
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from loguru import logger
from python_calamine import (
    CalamineError,
    CalamineSheet,
    CalamineWorkbook,
    PasswordError,
    SheetTypeEnum,
    SheetVisibleEnum,
)

from pipeline.errors import InputError
from pipeline.model import FIELD_ONLY, MAX_CELL_CHARS, NOTE_COLUMNS, QUOTED_CHARS, RawTable
from pipeline.progress import first_pass_done, read_share
from pipeline.reading import bounds
from pipeline.reading.biff import compound_streams, is_compound_file, xls_facts
from pipeline.reading.bounds import SheetFacts, check_workbook
from pipeline.reading.headers import count_known_headers
from pipeline.reading.html import is_html_file, is_spreadsheet_ml, looks_like_html, read_html_register
from pipeline.reading.table import (
    MIN_KNOWN_HEADERS,
    NOTE_CODE,
    TEXT_ARROW,
    build_table,
    column_letter,
    header_or_first_row,
    refuse_resident_as_header,
    warn_of_residents_above,
)
from pipeline.text.arrow import INVISIBLE_MARKS

#: Excel shows at most 15 significant digits; from here on integers lose digits.
_EXACT_LIMIT = 1e15

_FIX_RESAVE = "用 Excel 或 WPS 打开后另存为 .xlsx 再处理"
_INVISIBLE = re.compile(INVISIBLE_MARKS)


def number_text(value: float) -> str:
    """A number cell as Excel shows it: 123, 1.5, 4.20123196205184E+17 (#NUM! beyond its range)."""
    if not math.isfinite(value):  # a written "inf" or 1e400: no number Excel can hold
        return "#NUM!"
    if abs(value) >= _EXACT_LIMIT:
        mantissa, exponent = f"{value:.14E}".split("E")
        return f"{mantissa.rstrip('0').rstrip('.')}E{exponent}"
    if value.is_integer():
        return str(int(value))
    return format(value, ".15g")


def cell_text(value: Any) -> str:
    """Any calamine cell value as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if value is None:
        return ""
    return str(value)


def column_text(cells: np.ndarray) -> pa.Array:
    """One column of cell values (object array) as an Arrow string array."""
    try:
        return pa.array(cells, type=TEXT_ARROW)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass  # not all text: look at what it holds
    kinds = set(map(type, cells))
    if kinds == {float}:
        numbers = cells.astype(np.float64)
        if ((np.floor(numbers) == numbers) & (np.abs(numbers) < _EXACT_LIMIT)).all():
            return pa.array(numbers.astype(np.int64)).cast(TEXT_ARROW)
    elif kinds == {dt.date}:
        return pa.array(cells, type=pa.date32()).cast(TEXT_ARROW)
    elif kinds == {dt.datetime}:
        return pa.array(cells, type=pa.timestamp("us")).cast(pa.date32()).cast(TEXT_ARROW)
    return pa.array([v if v.__class__ is str else cell_text(v) for v in cells], type=TEXT_ARROW)


def capped(column: pa.Array) -> pa.Array:
    """``column`` with every cell cut to ``MAX_CELL_CHARS + 1`` characters (over the limit, and bounded)."""
    longest = pc.max(pc.utf8_length(column)).as_py()
    if longest is None or longest <= MAX_CELL_CHARS:
        return column
    return pc.utf8_slice_codeunits(column, 0, MAX_CELL_CHARS + 1)


@contextmanager
def _collector_paused() -> Iterator[None]:
    # calamine builds millions of small objects; the cyclic collector would scan
    # them again and again (about a tenth of the read time) and find nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def is_workbook_package(path: Path) -> bool:
    """Whether ``path`` is a sound Office Open XML workbook (xlsx or xlsm), whatever its extension."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "xl/workbook.xml" in set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def _broken_zip(path: Path) -> bool:
    """True when ``path`` is a damaged zip (a cut-off download), False when it is a sound one."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return True
    # A sound archive holding a workbook that calamine still refused is damaged inside.
    return "xl/workbook.xml" in names or "xl/workbook.bin" in names or "content.xml" in names


def _holds_macro_sheets(path: Path) -> bool:
    """Whether the package holds Excel 4.0 macro sheets, which calamine does not read (nor the workbook)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.startswith("xl/macrosheets/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def _password(label: str) -> InputError:
    return InputError("工作簿设有打开密码，无法读取", file=label, fix="在 Excel 中取消密码后另存，再处理")


def _not_a_workbook_container(path: Path) -> InputError | None:
    """Why a compound file calamine refused is no workbook it can read, when its streams tell."""
    streams = compound_streams(path)
    if streams & {"encryptioninfo", "encryptedpackage"}:  # an .xlsx encrypted with a password
        return _password(path.name)
    for stream, kind in (("worddocument", "Word 文档"), ("powerpoint document", "PowerPoint 演示文稿")):
        if stream in streams:
            return InputError(
                f"文件是 {kind}，不是 Excel 工作簿",
                file=path.name,
                fix="请确认选对了文件；登记表请用 Excel 或 WPS 另存为 .xlsx 再处理",
            )
    return None


def _unreadable(path: Path, error: BaseException) -> InputError:
    """Why calamine could not open ``path``, judged from the file's first bytes."""
    label = path.name
    if isinstance(error, PasswordError):
        return _password(label)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        head = b""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"PK") and _holds_macro_sheets(path):
        return InputError(
            "工作簿含有 Excel 4.0 宏表（写在单元格里的旧式宏），程序不能读取这种工作簿",
            file=label,
            fix="在 Excel 中右键登记表的工作表标签，选“移动或复制”→“新工作簿”（勾选“建立副本”），"
            "把新工作簿另存为 .xlsx 后再处理",
        )
    if head.startswith(b"PK") and not _broken_zip(path):
        return InputError(
            "文件不是 Excel 工作簿（可能是压缩包或 Word 等其他文档）", file=label, fix=_FIX_RESAVE
        )
    if head.startswith(b"PK"):
        return InputError(
            "Excel 文件已损坏或不完整（可能没有复制完整）",
            file=label,
            fix="从原处重新复制或导出该文件；或用 Excel 打开修复后另存为 .xlsx",
        )
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return _not_a_workbook_container(path) or InputError(
            "文件已加密、设有密码或已损坏，无法读取", file=label, fix=_FIX_RESAVE
        )
    if is_spreadsheet_ml(head):
        return InputError(
            "文件是“XML 电子表格 2003”格式（一些系统导出的 .xls 就是这种），程序不能直接读取",
            file=label,
            fix=_FIX_RESAVE,
        )
    if looks_like_html(head) or stripped.startswith(b"<?xml"):  # a page is read before; SpreadsheetML
        return InputError(
            "文件实际是网页（HTML/XML）格式，不是真正的 Excel 工作簿", file=label, fix=_FIX_RESAVE
        )
    if head and b"\x00" not in head:
        return InputError(
            "文件内容是纯文本（可能是 CSV），不是 Excel 工作簿",
            file=label,
            fix="把扩展名改为 .csv，或用 Excel 打开后另存为 .xlsx",
        )
    return InputError("不是有效的 Excel 文件", file=label, fix=_FIX_RESAVE)


class _SheetMeta(NamedTuple):
    name: str
    typ: SheetTypeEnum
    visible: SheetVisibleEnum


class Excel95Sheet:
    """A sheet of an Excel 95 workbook whose text calamine garbles: its name and text cells as Excel shows
    them (from :attr:`SheetFacts.texts`), the rest as calamine reads it."""

    def __init__(self, sheet: CalamineSheet, name: str, texts: dict[tuple[int, int], str]) -> None:
        self._sheet = sheet
        self.name = name
        self._texts = texts

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._sheet, attribute)  # start, end, height, merged_cell_ranges: as calamine has them

    def to_python(self) -> list[list[Any]]:
        """The sheet's rows, each text cell as Excel shows it."""
        rows = self._sheet.to_python()
        _put_texts(rows, self._sheet.start or (0, 0), self._texts, lambda value: True)
        return rows

    def iter_rows(self) -> Iterator[list[Any]]:
        """The rows of :meth:`to_python` (an Excel 95 sheet holds at most 16,384 of them)."""
        return iter(self.to_python())


class Excel95Workbook:
    """An Excel 95 workbook in a code page calamine garbles (GBK, Big5), its sheets under the names Excel
    shows (see :mod:`pipeline.reading.biff`)."""

    def __init__(self, workbook: CalamineWorkbook, facts: dict[str, SheetFacts]) -> None:
        self._workbook = workbook
        self._facts = facts
        self.sheet_names = list(facts)
        self.sheets_metadata = [
            _SheetMeta(name, meta.typ, meta.visible)
            for name, meta in zip(self.sheet_names, workbook.sheets_metadata, strict=True)
        ]

    def get_sheet_by_name(self, name: str) -> Excel95Sheet:
        """The sheet Excel names ``name``; CalamineError when there is none."""
        if name not in self._facts:
            raise CalamineError(f"no sheet {name!r}")
        index = self.sheet_names.index(name)
        return Excel95Sheet(self._workbook.get_sheet_by_index(index), name, self._facts[name].texts or {})

    def close(self) -> None:
        """Close the workbook calamine holds open."""
        self._workbook.close()


#: A workbook as read: calamine's, or an Excel 95 one with its text decoded here.
Workbook: TypeAlias = "CalamineWorkbook | Excel95Workbook"
Sheet: TypeAlias = "CalamineSheet | Excel95Sheet"


def open_workbook(path: Path, facts: dict[str, SheetFacts] | None = None) -> Workbook:
    """``path`` opened by calamine, by its content where its extension lies; InputError when unreadable.

    An Excel 95 workbook in a code page calamine garbles comes with its text
    decoded here (:class:`Excel95Workbook`); ``facts``: its
    :func:`~pipeline.reading.biff.xls_facts`, when already known.
    """
    workbook = _calamine_workbook(path)
    if not is_compound_file(path):
        return workbook
    facts = xls_facts(path) if facts is None else facts
    garbled = bool(facts) and all(sheet.texts is not None for sheet in facts.values())
    if not garbled or len(facts) != len(workbook.sheet_names):
        return workbook
    return Excel95Workbook(workbook, facts)


def _calamine_workbook(path: Path) -> CalamineWorkbook:
    try:
        return CalamineWorkbook.from_path(str(path))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # calamine also raises pyo3 panics, which are BaseException
        first = error
    # The extension may lie (an .xls saved as .xlsx): let calamine judge by content.
    try:
        with open(path, "rb") as handle:
            return CalamineWorkbook.from_filelike(handle)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        raise _unreadable(path, first) from None


def _fill_vertical_merges(
    sheet: Sheet, rows: list[list[Any]], origin: tuple[int, int], below: int, facts: SheetFacts
) -> None:
    """Copy each vertically merged data cell's value down its merged range, as the clerk sees it.

    Only single-column ranges below the header: a family's shared address, say.  An .ods's merged
    cells calamine does not give: ``facts`` has them.
    Ranges across columns in the data are footers ("合计", "填表人") and stay as they are.
    """
    top, left = origin
    for (first_row, first_col), (last_row, last_col) in sheet.merged_cell_ranges or facts.merged:
        if first_col != last_col or first_row <= below or last_row == first_row:
            continue
        column = first_col - left
        start = first_row - top
        if start < 0 or start >= len(rows) or not 0 <= column < len(rows[start]):
            continue
        value = rows[start][column]
        for index in range(start + 1, min(last_row - top + 1, len(rows))):
            rows[index][column] = value


#: Why a sheet yields no table: nothing in it; a header naming known fields but no rows
#: below it; some other rows of text but none below them.
_Unusable = Literal["empty", "header only", "no data"]


def _put_texts(
    rows: list[list[Any]],
    origin: tuple[int, int],
    texts: dict[tuple[int, int], str],
    replaces: Callable[[Any], bool],
) -> None:
    """Write ``texts`` ((row, 0-based column) -> text) into the cells of ``rows`` whose value ``replaces``."""
    top, left = origin
    for (row, column), text in texts.items():
        index, position = row - 1 - top, column - left
        if 0 <= index < len(rows) and 0 <= position < len(rows[index]) and replaces(rows[index][position]):
            rows[index][position] = text


def _put_what_excel_shows(rows: list[list[Any]], origin: tuple[int, int], facts: SheetFacts) -> None:
    """The cells calamine reads other than Excel shows them, written as Excel shows them.

    An error cell (``#N/A``) calamine leaves empty: a lookup that found nothing passed for a field
    left blank (an optional one silently, a required one as "为空" beside a cell showing #N/A); as
    text it fails its check with the value the clerk sees.  A number formatted with zeros calamine
    gives bare (123 for 000123): a health record number or landline would lose its leading zeros.
    """
    _put_texts(rows, origin, facts.errors, lambda value: value in ("", None))
    # An .xls gives a whole number stored as one (an RK integer) as an int.
    _put_texts(rows, origin, facts.padded, lambda value: type(value) in (float, int))


_FIX_UNCALCULATED = "请用 Excel 或 WPS 打开该文件，保存一次后再处理（保存时会算出并存下公式的结果）"
_UNCALCULATED = (
    "单元格是公式{formula}，但文件中没有保存它的计算结果（生成该文件的程序没有计算公式），读不到它的值："
    + _FIX_UNCALCULATED
)


def _shown_formula(formula: str) -> str:
    if not formula:
        return ""
    text = formula if len(formula) <= QUOTED_CHARS else formula[:QUOTED_CHARS] + "…"
    return f"“={text}”"


def _warn_of_uncalculated(
    label: str, uncalculated: dict[tuple[int, int], str], header: Sequence[str], left: int
) -> None:
    """Say that formulas saved without their results are read as empty, naming their columns.

    ``header``: the header cells, the first in sheet column ``left``.
    """
    if not uncalculated:
        return
    row, column = min(uncalculated)  # the formula is not quoted: it may hold a name or an ID number
    columns = sorted({c for _, c in uncalculated})
    named = {left + j: cell.strip() for j, cell in enumerate(header) if cell.strip()}
    names = [named.get(c) or column_letter(c) for c in columns[:10]]
    logger.warning(
        "{}：有 {} 个单元格是公式，但文件中没有保存计算结果（如 {}{}），读不到它们的值，在列：{}{}。{}",
        label, len(uncalculated), column_letter(column), row,
        "、".join(names), "等" if len(columns) > 10 else "", _FIX_UNCALCULATED,
    )  # fmt: skip


def _uncalculated_notes(table: RawTable, uncalculated: dict[tuple[int, int], str]) -> None:
    """Add to ``table.notes`` a note for each of its cells holding a formula saved without its result.

    calamine reads such a cell as empty: a 姓名 or 出生日期 written as a formula
    would be checked, and an optional field sent, as if the clerk left it blank.
    The note faults its row only where the column is read as a field
    (:data:`~pipeline.model.FIELD_ONLY`): a 序号 of ``=ROW()-3`` loses nothing.
    """
    if not uncalculated:
        return
    places = np.array(list(uncalculated), dtype=np.int64)
    at = np.searchsorted(table.source_row, places[:, 0])
    inside = at < len(table.source_row)
    inside[inside] = table.source_row[at[inside]] == places[inside, 0]
    header_of = dict(zip(table.column_positions, table.headers, strict=True))
    formulas = list(uncalculated.values())
    notes = [
        (int(at[k]), header_of[int(places[k, 1])], NOTE_CODE, FIELD_ONLY,
         _UNCALCULATED.format(formula=_shown_formula(formulas[k])))
        for k in np.flatnonzero(inside)
        if int(places[k, 1]) in header_of
    ]  # fmt: skip
    if notes:
        found = pd.DataFrame(notes, columns=list(NOTE_COLUMNS))
        frames = [frame for frame in (table.notes, found) if len(frame)]
        joined = pd.concat(frames, ignore_index=True) if len(frames) > 1 else found
        table.notes = joined.sort_values("row", kind="stable").reset_index(drop=True)


def _read_sheet(path: Path, workbook: Workbook, name: str, facts: SheetFacts) -> RawTable | _Unusable:
    """The sheet as a table, or why it holds none; ``facts``: what calamine does not tell of it."""
    try:
        sheet = workbook.get_sheet_by_name(name)
        rows = sheet.to_python()
        origin = sheet.start or (0, 0)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        raise InputError("工作表内容已损坏，无法读取", file=path.name, sheet=name, fix=_FIX_RESAVE) from None
    read_share(1.0)  # outside the calamine call's guard: the bar's fault is not the sheet's
    _put_what_excel_shows(rows, origin, facts)
    head = [[cell_text(v)[: MAX_CELL_CHARS + 1] for v in row] for row in rows[:40]]
    found = header_or_first_row(head)
    if found is None:
        return "empty"
    header_index, header_cells = found
    top, left = origin
    if len(facts.uncalculated) >= (most := bounds.MAX_UNCALCULATED_CELLS):
        raise InputError(
            f"有 {most:,} 个以上的单元格是公式，但文件中没有保存计算结果，读不到它们的值",
            file=path.name,
            sheet=name,
            fix=_FIX_UNCALCULATED,
        )
    _warn_of_uncalculated(f"{path.name}[{name}]", facts.uncalculated, header_cells, left)
    refuse_resident_as_header(header_cells, path.name, top + header_index + 1, sheet=name)
    numbers = range(top + 1, top + header_index + 1)
    warn_of_residents_above(f"{path.name}[{name}]", head[:header_index], numbers, top + header_index + 1)
    _fill_vertical_merges(sheet, rows, origin, top + header_index, facts)
    no_rows: _Unusable = (
        "header only" if count_known_headers(header_cells) >= MIN_KNOWN_HEADERS else "no data"
    )
    body = rows[header_index + 1 :]
    if not body:
        return no_rows
    cells = np.empty((len(body), len(body[0])), dtype=object)
    cells[:] = body
    del body, rows
    columns = []
    for j in range(cells.shape[1]):
        columns.append(capped(column_text(cells[:, j])))
        read_share(1 / cells.shape[1])
    table = build_table(
        path=str(path),
        sheet=name,
        header_row=top + header_index + 1,
        header_cells=header_cells,
        first_column=left,
        columns=columns,
        source_row=np.arange(len(cells), dtype=np.int64) + top + header_index + 2,
    )
    if table is None:
        return no_rows
    _uncalculated_notes(table, facts.uncalculated)
    return table


def shown_texts(path: Path) -> dict[str, dict[tuple[int, int], str]]:
    """Per sheet name, the cells calamine reads otherwise than Excel shows them (error cells, numbers
    padded with zeros): (row, column), both 0-based -> the text shown; {} when the file cannot tell."""
    try:
        facts = check_workbook(path, path.name, path.stat().st_size)
        if is_compound_file(path):
            facts = xls_facts(path)
    except (InputError, OSError):
        return {}
    return {
        name: {
            (row - 1, column): text for (row, column), text in (*sheet.errors.items(), *sheet.padded.items())
        }
        for name, sheet in facts.items()
    }


def _warn_of_hidden_rows(table: RawTable, hidden: set[int]) -> None:
    """Say that rows hidden in Excel (filtered out, or hidden by hand) are read all the same."""
    if not hidden:
        return
    rows = table.source_row[np.isin(table.source_row, np.fromiter(hidden, dtype=np.int64))]
    if len(rows):
        shown = "、".join(map(str, rows[:10].tolist())) + ("等" if len(rows) > 10 else "")
        logger.warning(
            "{}：第 {} 行（共 {} 行）在 Excel 中被隐藏或被筛选掉了，同样读取和处理。"
            "不要办理的居民请从登记表中删除",
            table.label, shown, len(rows),
        )  # fmt: skip


def _header_only(path: Path, sheet: str) -> InputError:
    return InputError(
        "只有表头，没有数据行", file=path.name, sheet=sheet, fix="在表头下面填入要办理的居民后再处理"
    )


def read_workbook(path: Path, *, sheet: str | None, all_sheets: bool, size: int = 0) -> list[RawTable]:
    """Read the chosen sheet(s) of a workbook; see :func:`pipeline.reading.register.read_register`.

    A web page saved under a workbook's name (a web system's "导出Excel") is
    read as the one sheet Excel shows (:mod:`pipeline.reading.html`).
    """
    if is_html_file(path):
        return read_html_register(path, size or path.stat().st_size)
    facts = check_workbook(path, path.name, size or path.stat().st_size)
    first_pass_done()
    if is_compound_file(path):  # an .xls, whatever its name: its records tell what calamine does not
        facts = xls_facts(path)
    with _collector_paused():
        workbook = open_workbook(path, facts)
        try:
            tables = _read_sheets(path, workbook, sheet=sheet, all_sheets=all_sheets, facts=facts)
        finally:
            workbook.close()
    for table in tables:  # the sheets read, not those looked at and left
        _warn_of_hidden_rows(table, facts.get(table.sheet, SheetFacts()).hidden_rows)
    return tables


#: Most sheets with rows ``--all-sheets`` reads of one workbook (a sheet a day for a year is 366).  Each
#: is checked as a table of its own, about a quarter of a second however few its rows: 200 sheets of
#: four residents took 54 s, so a workbook of 10,000 one-row sheets (2 MB) would hold a run for three
#: quarters of an hour.
MAX_SHEETS_READ = 500

#: Later sheets looked at for looking like registers too, and named one by one in warnings.
_SHEETS_LOOKED_AT = 20
_SHEETS_NAMED = 5


def _registers_among(workbook: Workbook, names: Sequence[str]) -> list[tuple[str, int]]:
    """Those of the first sheets ``names`` whose first rows hold a header naming known fields, each
    with its rows below the header (damaged sheets are left out: reading them says so)."""
    found = []
    for name in names[:_SHEETS_LOOKED_AT]:
        try:
            sheet = workbook.get_sheet_by_name(name)
            head = [[cell_text(v)[:MAX_CELL_CHARS] for v in row] for row in islice(sheet.iter_rows(), 40)]
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            continue
        header = header_or_first_row(head)
        if header is not None and count_known_headers(header[1]) >= MIN_KNOWN_HEADERS:
            found.append((name, max(0, sheet.height - header[0] - 1)))
    return found


def _tell_registers_left(path: Path, workbook: Workbook, read: str, later: Sequence[str]) -> None:
    """Warn of the later sheets that look like registers too: only the first is read without --all-sheets.

    A few are named one by one; a workbook of a sheet per village or per day
    gets one line for the rest, not a line per sheet.
    """
    found = _registers_among(workbook, later)
    for name, rows in found[:_SHEETS_NAMED]:
        logger.warning(
            "{}：工作表“{}”也像登记表（约 {} 行），没有读取，只读取了“{}”。"
            "如需一并检查或提交，请加 --all-sheets，或把它另存为单独的文件",
            path.name, name, rows, read,
        )  # fmt: skip
    unnamed = len(found) - _SHEETS_NAMED + max(0, len(later) - _SHEETS_LOOKED_AT)
    if found and unnamed > 0:
        logger.warning(
            "{}：另有 {} 个工作表也可能是登记表，没有读取。如需一并检查或提交，请加 --all-sheets",
            path.name, unnamed,
        )  # fmt: skip


def _sheet_key(name: str) -> str:
    """A sheet's name as ``--sheet`` matches it: as Excel does, whatever its case (Sheet1 is sheet1);
    and whatever spaces around it or full-width forms an input method gave (二组（东） is 二组(东)), or
    invisible marks a name pasted from a web page kept (a zero-width space)."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", name)).strip().casefold()


def _read_sheets(
    path: Path,
    workbook: Workbook,
    *,
    sheet: str | None,
    all_sheets: bool,
    facts: dict[str, SheetFacts],
) -> list[RawTable]:
    names = list(workbook.sheet_names)
    if sheet is not None:
        wanted = _sheet_key(sheet)
        chosen = sheet if sheet in names else next((n for n in names if _sheet_key(n) == wanted), None)
        if chosen is None:
            raise InputError(
                f"找不到工作表“{sheet}”",
                file=path.name,
                fix=f"工作簿中的工作表有：{'、'.join(names)}；请用 --sheet 指定其中之一",
            )
        table = _read_sheet(path, workbook, chosen, facts.get(chosen, SheetFacts()))
        if isinstance(table, RawTable):
            return [table]
        if table == "empty":
            raise InputError("工作表是空的", file=path.name, sheet=chosen, fix="请指定有数据的工作表")
        raise _header_only(path, chosen)

    # Hidden sheets are lookup lists for drop-downs, not registers; chart sheets hold no cells.
    visible = [
        meta.name
        for meta in workbook.sheets_metadata
        if meta.visible == SheetVisibleEnum.Visible and meta.typ == SheetTypeEnum.WorkSheet
    ]
    registers: list[RawTable] = []
    others: list[RawTable] = []
    header_only: dict[_Unusable, str] = {}
    for position, name in enumerate(visible):
        table = _read_sheet(path, workbook, name, facts.get(name, SheetFacts()))
        if not isinstance(table, RawTable):
            header_only.setdefault(table, name)
        elif count_known_headers(table.headers) >= MIN_KNOWN_HEADERS:
            registers.append(table)
            if not all_sheets:
                _tell_registers_left(path, workbook, name, visible[position + 1 :])
                break
        else:
            others.append(table)
        if all_sheets and len(registers) + len(others) > MAX_SHEETS_READ:
            raise InputError(
                f"工作簿中有数据的工作表超过 {MAX_SHEETS_READ:,} 个，一次检查不了这么多",
                file=path.name,
                fix=f"把工作表分到几个文件中（每个文件不超过 {MAX_SHEETS_READ:,} 个）后分别处理",
            )
    # A sheet of instructions ("填表说明") before the register is not the register.
    if registers:
        for table in others:
            logger.info("{}：没有可识别的表头（如 姓名、身份证号码），该工作表已跳过", table.label)
        return registers
    hidden = [
        meta.name
        for meta in workbook.sheets_metadata
        if meta.visible != SheetVisibleEnum.Visible and meta.typ == SheetTypeEnum.WorkSheet
    ]
    if hidden_registers := _registers_among(workbook, hidden):
        first = hidden_registers[0][0]
        raise InputError(
            f"登记表在隐藏的工作表“{first}”中（隐藏的工作表不读取）",
            file=path.name,
            fix=f"在 Excel 或 WPS 中右键工作表标签“取消隐藏”后保存，或加 --sheet {first} 指定读取它",
        )
    if "header only" in header_only:
        raise _header_only(path, header_only["header only"])
    if others:
        return others if all_sheets else others[:1]
    if "no data" in header_only:
        raise _header_only(path, header_only["no data"])
    raise InputError(
        "文件是空的：没有任何有数据的工作表", file=path.name, fix="请确认选对了文件，并已保存数据"
    )
