"""Web pages saved as workbooks: the "导出Excel" of many web systems is an HTML table named .xls.

Excel and WPS open such a file as a sheet, so a clerk takes it for a
workbook.  Its first table whose header names known columns (or else its
first table with rows) is read as a sheet would be: every cell as the text it
shows (entities decoded, ``<br>`` a line break), a cell spanning columns
followed by empty cells, a cell spanning rows leaving its column empty in the
rows below (so their cells stay in their columns, as Excel places them), its
value repeated down them below the header as a merged cell of a sheet's is,
the header found below any title rows.  A later
table as wide as it continues it (an export split into pages; a first row
repeating the header is dropped): none of its residents is left behind,
while tables of other shapes (a title, a footer) are not rows.  The page is
decoded by its BOM or its declared charset, else as UTF-8, else GB18030; it
is refused above :data:`MAX_HTML_BYTES` and a table wider than a sheet is
refused as a sheet would be.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from html import unescape
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.errors import InputError
from pipeline.model import MAX_CELL_CHARS, RawTable
from pipeline.reading.headers import count_known_headers
from pipeline.reading.table import (
    HEADER_SEARCH_ROWS,
    MAX_SHEET_COLUMNS,
    MIN_KNOWN_HEADERS,
    TEXT_ARROW,
    build_table,
    header_or_first_row,
    refuse_resident_as_header,
    too_wide,
)

#: Largest page read (some 60,000 rows of a register, in about two seconds and under 1 GB even when
#: every cell is empty): larger exports are saved as .xlsx first.
MAX_HTML_BYTES = 32 << 20

#: Most cells a page's tables are read as, cells spanning columns and rows spelled out: what a page of
#: the largest size holds as plain cells.  A few bytes of colspan or rowspan cannot ask for more.
MAX_HTML_CELLS = MAX_HTML_BYTES // 8

#: How a page starts (after a BOM and white space), lower-cased.
_PAGE_STARTS = (b"<html", b"<!doctype", b"<table", b"<meta", b"<head", b"<body", b"<style")

_CHARSET = re.compile(rb"""charset\s*=\s*["']?\s*([A-Za-z0-9_-]+)""", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\r\n\f\u00a0]+")
_FIX = "用 Excel 或 WPS 打开后另存为 .xlsx 再处理"
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


#: The first element of an XML document, past its declaration, processing instructions (SpreadsheetML's
#: ``<?mso-application?>``), comments and doctype; lower-cased bytes.
_XML_ROOT = re.compile(
    rb"<\?xml.*?\?>(?:\s|<\?.*?\?>|<!--.*?-->|<!doctype[^>]*>)*<([a-z][\w:.-]*)", re.DOTALL
)


def is_spreadsheet_ml(head: bytes) -> bool:
    """Whether a file's first bytes are those of an "XML 电子表格 2003" (SpreadsheetML) workbook."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    root = _XML_ROOT.match(start)
    return root is not None and root[1] in (b"workbook", b"ss:workbook")


def looks_like_html(head: bytes) -> bool:
    """Whether a file's first bytes are those of a web page (not of a workbook or other text).

    An XHTML page may open with an XML declaration; a SpreadsheetML workbook,
    which also does (and holds ``<Table>`` elements), is not a page: an XML
    document is a page when its first element is ``<html>`` or ``<table>``.
    """
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith(b"<?xml"):
        root = _XML_ROOT.match(start)
        if root is not None:
            return root[1] in (b"html", b"table")
        return b"<html" in start[:1024] or b"<table" in start[:1024]
    return start.startswith(_PAGE_STARTS)


def is_html_file(path: Path) -> bool:
    """Whether the file at ``path`` is a web page (False when it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return looks_like_html(handle.read(1024))
    except OSError:
        return False


#: A tag; those that shape a table are read, any other inside a cell is left out, its text kept.  No
#: pattern here reaches past the next "<" or gives back what it took (possessive repeats): however a
#: hostile page is cut, reading it stays linear.
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*+)([^<>]*+)>")
_TABLE_TAGS = frozenset({"table", "tr", "td", "th", "br"})
_OTHER_TAG = re.compile(r"<[^<>]*+>")
#: At most nine digits: beyond any sheet's width, and within what ``int`` takes from text.
_COLSPAN = re.compile(r"""colspan\s*=\s*["']?\s*([0-9]{1,9})""", re.IGNORECASE)
_ROWSPAN = re.compile(r"""rowspan\s*=\s*["']?\s*([0-9]{1,9})""", re.IGNORECASE)
#: As many rows as a cell spans at most (as in a browser), beyond any sheet's length.
_MAX_ROWSPAN = 65534
#: What a browser does not show: comments, scripts and styles (an unclosed one hides the rest).
_HIDDEN_START = re.compile(r"<!--|<(script|style)\b", re.IGNORECASE)
_HIDDEN_END = {
    "": re.compile("-->"),
    "script": re.compile(r"</script\s*>", re.IGNORECASE),
    "style": re.compile(r"</style\s*>", re.IGNORECASE),
}


def _shown(page: str) -> str:
    """``page`` without its comments, scripts and styles."""
    kept: list[str] = []
    position = 0
    while (start := _HIDDEN_START.search(page, position)) is not None:
        kept.append(page[position : start.start()])
        end = _HIDDEN_END[(start.group(1) or "").lower()].search(page, start.end())
        if end is None:
            return "".join(kept)
        position = end.end()
    kept.append(page[position:])
    return "".join(kept)


#: A cell spanning rows in one column: its row and column in its table, and how many rows it spans.
Merge = tuple[int, int, int]


class _Open:
    """A table being read: its rows, the columns the cells above still cover, its cells spanning rows."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.below: dict[int, int] = {}  # column -> the last row a cell spanning rows covers it in
        self.merges: list[Merge] = []

    def covered(self, column: int) -> bool:
        """Whether a cell of a row above covers ``column`` of the current row."""
        return self.below.get(column, -1) >= len(self.rows) - 1


def _too_many_cells(label: str) -> InputError:
    return InputError(
        f"网页格式的表格过大（超过 {MAX_HTML_CELLS:,} 个单元格，合并单元格按所占的格数计）",
        file=label,
        fix=_FIX,
    )


class _Tables:
    """The text of every cell of every table of a page, table by table, row by row.

    The page is cut at its table tags by one regular expression (the standard
    library's HTML parser took 5 s for a 10 MB export of 60,000 rows; this,
    well under one): an export's tables are plain, and anything outside a
    cell is not the register's.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.tables: list[list[list[str]]] = []
        self.merges: list[list[Merge]] = []  # each table's cells spanning rows in one column
        self._open: list[_Open] = []  # tables being read (a table may hold another)
        self._cell: list[str] | None = None
        self._span = 1
        self._rows = 1
        self.cells = 0  # cells read so far, spans spelled out

    def read(self, page: str) -> None:
        """Read every table of ``page``."""
        page = _shown(page)
        position = 0
        for tag in _TAG.finditer(page):
            name = tag.group(2).lower()
            if name not in _TABLE_TAGS:
                continue
            if self._cell is not None:
                self._cell.append(page[position : tag.start()])
            position = tag.end()
            if tag.group(1):
                self._end(name)
            else:
                self._start(name, tag.group(3))
        self._close_cell()

    def _start(self, tag: str, attributes: str) -> None:
        if tag == "table":
            self._close_cell()
            self._open.append(_Open())
        elif tag == "tr" and self._open:
            self._close_cell()
            self._open[-1].rows.append([])
        elif tag in ("td", "th") and self._open:
            self._close_cell()
            if not self._open[-1].rows:
                self._open[-1].rows.append([])
            self._cell = []
            span = _COLSPAN.search(attributes)
            self._span = min(int(span.group(1)), MAX_SHEET_COLUMNS + 1) if span else 1
            rows = _ROWSPAN.search(attributes)
            self._rows = min(max(int(rows.group(1)), 1), _MAX_ROWSPAN) if rows else 1
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def _end(self, tag: str) -> None:
        if tag in ("td", "th", "tr"):
            self._close_cell()
        elif tag == "table" and self._open:
            self._close_cell()
            table = self._open.pop()
            self.tables.append(table.rows)
            self.merges.append(table.merges)

    def _close_cell(self) -> None:
        if self._cell is None or not self._open:
            self._cell = None
            return
        text = unescape(_OTHER_TAG.sub("", "".join(self._cell)))
        if not text.isprintable() or "  " in text:
            text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
        table = self._open[-1]
        row = table.rows[-1]
        before = len(row)
        while table.covered(len(row)) and len(row) <= MAX_SHEET_COLUMNS:  # under a cell above
            row.append("")
        first = len(row)
        row.append(text.strip()[: MAX_CELL_CHARS + 1])
        if self._span > 1:
            row.extend([""] * (self._span - 1))
        if len(row) > MAX_SHEET_COLUMNS:
            raise too_wide(self.label, len(row), row=len(table.rows))
        self.cells += len(row) - before
        if self.cells > MAX_HTML_CELLS:
            raise _too_many_cells(self.label)
        if self._rows > 1:
            table.below.update(dict.fromkeys(range(first, len(row)), len(table.rows) - 2 + self._rows))
            if self._span == 1:
                table.merges.append((len(table.rows) - 1, first, self._rows))
        self._cell, self._span, self._rows = None, 1, 1


def _decode(data: bytes, label: str) -> str:
    """The page's text: by its BOM, else its declared charset, else UTF-8, else GB18030."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    declared = _CHARSET.search(data[:4096])
    candidates = [declared.group(1).decode("ascii").lower()] if declared else []
    for codec in (*candidates, "utf-8", "gb18030"):
        try:
            return data.decode("gb18030" if codec in ("gbk", "gb2312") else codec)
        except (UnicodeDecodeError, LookupError):
            continue
    raise InputError("网页格式的表格编码无法识别", file=label, fix=_FIX)


def _fill_down(
    rows: list[list[str]], merges: Sequence[Merge], below: int, room: list[int], label: str
) -> None:
    """Repeat the value of each cell spanning rows of one column, starting below row ``below``, down them.

    As a sheet's vertically merged data cells are read (a family's shared
    address): the rows under such a cell hold an empty cell in its column.
    ``room``: how many more cells the page may be read as (taken from).
    """
    for top, column, count in merges:
        if top <= below:
            continue
        value = rows[top][column]
        for row in rows[top + 1 : top + count]:
            room[0] -= max(column + 1 - len(row), 0)
            if room[0] < 0:
                raise _too_many_cells(label)
            if len(row) <= column:
                row.extend([""] * (column + 1 - len(row)))
            row[column] = value


def _table(
    path: Path,
    rows: list[list[str]],
    more: Sequence[list[list[str]]] = (),
    merges: Sequence[Merge] = (),
    more_merges: Sequence[Sequence[Merge]] = (),
    room: int = MAX_HTML_CELLS,
) -> RawTable | None:
    """One page table as a register table (None when it has no data rows).

    ``more`` are the page's later tables: each as wide as this one continues
    it (a web system's export split into pages), its first row dropped when
    it repeats the header; its rows are numbered on from this table's, as
    the tables stand one below the other.  ``merges`` (and ``more_merges``,
    one list per later table) are the tables' cells spanning rows; ``room``,
    how many more cells repeating their values may add.
    """
    left = [room]
    found = header_or_first_row(rows[:HEADER_SEARCH_ROWS])
    if found is None:
        return None
    header_index, header_cells = found
    _fill_down(rows, merges, header_index, left, path.name)
    refuse_resident_as_header(header_cells, path.name, header_index + 1)
    body = rows[header_index + 1 :]
    numbers = list(range(header_index + 2, len(rows) + 1))
    width = max(len(header_cells), *(len(row) for row in body)) if body else len(header_cells)
    next_row = len(rows) + 1
    for index, page in enumerate(more):
        _fill_down(page, more_merges[index] if index < len(more_merges) else (), -1, left, path.name)
        if max(len(row) for row in page) != width:
            continue  # a table of another shape: a title, a footer, a layout
        for offset, row in enumerate(page):
            if offset or [cell.strip() for cell in row] != [cell.strip() for cell in header_cells]:
                body.append(row)
                numbers.append(next_row + offset)
        next_row += len(page)
    if not body:
        return None
    columns = [
        pa.array([row[j] if j < len(row) else "" for row in body], type=TEXT_ARROW) for j in range(width)
    ]
    return build_table(
        path=str(path),
        sheet="",
        header_row=header_index + 1,
        header_cells=[*header_cells, *[""] * (width - len(header_cells))],
        first_column=0,
        columns=columns,
        source_row=np.asarray(numbers, dtype=np.int64),
    )


def read_html_register(path: Path, size: int) -> list[RawTable]:
    """The register of a page saved as a workbook: its first table naming known columns (or with rows),
    continued by the later tables as wide as it."""
    label = path.name
    if size > MAX_HTML_BYTES:
        raise InputError(
            f"网页格式的表格过大（{size >> 20} MB，上限 {MAX_HTML_BYTES >> 20} MB）", file=label, fix=_FIX
        )
    with open(path, "rb") as handle:  # at most the bound, should the file have grown since
        data = handle.read(MAX_HTML_BYTES + 1)
    if len(data) > MAX_HTML_BYTES:
        raise InputError(f"网页格式的表格过大（上限 {MAX_HTML_BYTES >> 20} MB）", file=label, fix=_FIX)
    parser = _Tables(label)
    parser.read(_decode(data, label))
    kept = [i for i, rows in enumerate(parser.tables) if rows]
    pages = [parser.tables[i] for i in kept]
    merges = [parser.merges[i] for i in kept]
    # Each table with rows below its header, and how many of its headers are known columns.
    known = {
        i: count_known_headers(found[1])
        for i, rows in enumerate(pages)
        if (found := header_or_first_row(rows[:HEADER_SEARCH_ROWS])) is not None and len(rows) > found[0] + 1
    }
    chosen = next((i for i, count in known.items() if count >= MIN_KNOWN_HEADERS), next(iter(known), None))
    if chosen is not None:
        room = MAX_HTML_CELLS - parser.cells
        whole = _table(path, pages[chosen], pages[chosen + 1 :], merges[chosen], merges[chosen + 1 :], room)
        if whole is not None:  # None: every row below the header is empty
            return [whole]
    raise InputError("网页格式的表格中没有数据行", file=label, fix="请确认选对了文件，并已导出数据")
