"""What a workbook may cost before calamine is allowed to read it.

calamine holds a sheet as one rectangle from its first to its last cell that
holds a value: a single value at ``XFD1048576`` below a register asks for
16,384 × 1,048,576 cells (512 GB) and the process aborts (SIGABRT, which no
``try`` catches).  A zip part may also inflate a thousandfold (a 1 MB file
holding a 1 GB cell).  So, before calamine opens a workbook, this module
reads what it can cheaply and refuses, with one Chinese line, what cannot be
read in bounded memory:

* every zip part (``.xlsx/.xlsm/.xlsb/.ods``) is inflated here, as a stream,
  counting what comes out: the sizes the zip directory declares are checked
  but not trusted.  A part larger than :data:`MAX_PART_BYTES`, or inflating
  more than :data:`MAX_RATIO` times its compressed size, is refused;
* while an ``.xlsx`` sheet streams past, the row numbers and column letters
  it holds give an upper bound of the rectangle calamine will build; when that
  bound exceeds :data:`MAX_SHEET_CELLS`, the sheet is parsed again, exactly,
  counting only cells that hold a value, and refused only if those still
  span too many cells.  A rectangle above :data:`SPARSE_CELLS` that is
  nearly empty (a stray value at ``AN1048576`` below forty rows: 2 GB for a
  5 KB file) is refused the same way, naming the far cell;
* a shared-strings part claiming far more strings than it has room for is
  refused: calamine reserves room for the claim before reading any (2^31 of
  them, in a 2 KB file, aborted the process);
* an ``.ods`` sheet is bounded by its repeated rows and columns the same way,
  and refused as well when nearly empty;
* an ``.xlsb`` sheet is bounded the same way, from its cell records, walked
  once (about 3 s for 300,000 rows): calamine holds it as one rectangle too;
* an ``.xls`` (BIFF, at most 65,536 × 256 cells by format) is bounded by its size.

The same pass over an ``.xlsx`` sheet notes what calamine does not tell
(:class:`SheetFacts`): its error cells (``#N/A`` where a lookup found nothing,
``#REF!``), which calamine reads as empty, so that they fail their checks as
the clerk sees them rather than pass as blanks; the numbers its formats pad
with zeros (``000123``), which calamine gives bare; its formulas saved without
a result (by a program that does not calculate), which calamine reads as
empty; and its hidden rows, which are read all the same and named in a warning.  The pass over an ``.ods``
sheet notes its error cells and padded numbers too, from the text each cell
shows, and its hidden rows; the walk of an ``.xlsb`` sheet, its error cells.

Ordinary workbooks pay one streaming inflate of their parts and two regular
expression scans of each sheet (about 3 s for a 300,000-row sheet, a small part of reading it).
"""

from __future__ import annotations

import html
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import InputError
from pipeline.progress import read_bytes

#: Largest inflated zip part: a 1,000,000-row sheet is about 1 GB of XML.
MAX_PART_BYTES = 2 << 30

#: Largest sum of inflated zip parts.
MAX_TOTAL_BYTES = 4 << 30

#: Largest inflated/compressed ratio of a part above :data:`RATIO_FLOOR_BYTES` (sheets: 5-20).
MAX_RATIO = 100

#: Parts smaller than this may inflate any amount (an empty styles part compresses very well).
RATIO_FLOOR_BYTES = 1 << 20

#: Largest rectangle of cells a sheet may span (1,048,576 rows × 40 columns): about 1.3 GB in calamine.
MAX_SHEET_CELLS = 40 * (1 << 20)

#: A rectangle above this many cells (about 220 MB in calamine) must be filled enough to be a register:
#: one stray value far below or right of a small one makes calamine hold the whole empty rectangle.
SPARSE_CELLS = 4 * (1 << 20)

#: Of a rectangle above :data:`SPARSE_CELLS`, at least one cell in this many must hold a value
#: (a register, even of mostly optional columns, fills a third or more).
SPARSE_RATIO = 100

#: Most entries in a zip: a workbook has tens.
MAX_ZIP_ENTRIES = 10_000

#: Most strings a shared-strings part may claim beyond the ``<si/>`` it has room for.  calamine reserves
#: room for the claim before reading a string (24 bytes each): a 2 KB file claiming 2^31 of them aborted
#: the process.  A writer that puts the count of references there claims a few million at most.
MAX_CLAIMED_STRINGS = 10_000_000

#: Largest .xls (BIFF) file; the format itself bounds a sheet to 65,536 × 256 cells.
MAX_XLS_BYTES = 512 << 20

_CHUNK = 1 << 22
_FIX_RESAVE = "用 Excel 或 WPS 打开后另存为 .xlsx 再处理"
#: The last row an Excel sheet has: a row numbered beyond it is damage, and no copy could hold it.
EXCEL_LAST_ROW = 1_048_576

_FIX_STRAY = "在 Excel 中删除表格右方和下方多余的单元格（选中整列/整行后“删除”），保存后再处理"

_ZIP_SUFFIXES = (".xlsx", ".xlsm", ".xlsb", ".ods")
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")

# Fast scans of an .xlsx sheet (literal prefixes let the regex engine skip ahead).
_ROW_NUMBER = re.compile(rb'<row r="(\d+)"')
_WIDE_REF = re.compile(rb'r="([A-Z]{2,3})\d')
# The exact scan: every start or end tag of a row, a cell or a cell's value.
_TAG = re.compile(rb"<(/?)(?:[A-Za-z_][\w.-]*:)?(row|c|v|is|f)\b([^>]*)>")
_R_ATTR = re.compile(rb'\sr="([A-Z]{0,3})(\d*)"')
# A cell holding an error value (#N/A from a lookup that found nothing): its attributes and content.
_ERROR_CELL = re.compile(rb'<c\b([^>]*\bt="e"[^>]*)>(.{0,512}?)</c>', re.DOTALL)
_ERROR_VALUE = re.compile(rb"<v>([^<]{1,16})</v>")
#: Error cells remembered per sheet (each a few hundred bytes); more are read as empty cells.
MAX_ERROR_CELLS = 100_000
# A formula's start tag: where one may be, a chunk is looked at for formulas saved without a result.
_FORMULA_TAG = re.compile(rb"<(?:\w+:)?f[\s>/]")
# A cell holding a formula and no result (or an empty one): its attributes, the formula (none for a
# shared formula's later cells), and its empty value.  A formula's text holds no "<" (XML escapes it).
_UNCALCULATED_CELL = re.compile(
    rb"<(?:\w+:)?c\b([^>]*)>\s*<(?:\w+:)?f\b[^>]*?(?:/>|>([^<]{0,8192})</(?:\w+:)?f>)\s*"
    rb"(<(?:\w+:)?v\s*/>|<(?:\w+:)?v>\s*</(?:\w+:)?v>)?\s*</(?:\w+:)?c>"
)
#: Formulas without a result noted per sheet; a sheet of more is refused (the rest would pass as blanks).
MAX_UNCALCULATED_CELLS = 500_000
#: Of those, the formulas kept to quote in messages (the rest are noted by place alone).
_QUOTED_FORMULAS = 1_000
# A row hidden in Excel (by a filter, or hidden by hand): its number, whichever attribute comes first.
_HIDDEN_ROW = re.compile(
    rb'<(?:\w+:)?row\b[^>]*?\sr="(\d+)"[^>]*?\shidden="(?:1|true)"'
    rb'|<(?:\w+:)?row\b[^>]*?\shidden="(?:1|true)"[^>]*?\sr="(\d+)"'
)
#: Hidden rows remembered per sheet, for the warning that they are read all the same.
MAX_HIDDEN_ROWS = 200_000
# ODS: a row or a cell start tag, with its repeat count and whether it holds a value; or the start of a
# cell's shown text, with the text up to the next tag.
_ODS_TAG = re.compile(
    rb"<table:(table-row|table-cell|covered-table-cell|table(?=[\s>]))\b([^>]*)>|</table:table-row>"
    rb"|<text:p>([^<]{0,64})"
)
_ODS_ERROR = re.compile(rb'value-type="error"')
_ODS_HIDDEN = re.compile(rb'table:visibility="(?:collapse|filter)"')
_ODS_ROWS_SPANNED = re.compile(rb'table:number-rows-spanned="(\d{1,7})"')
_ODS_COLUMNS_SPANNED = re.compile(rb'table:number-columns-spanned="(\d{1,5})"')
#: Merged cells remembered per .ods sheet.
MAX_MERGED_CELLS = 100_000
_ODS_NUMBER = re.compile(rb'office:value-type="float"[^>]*?office:value="(-?[0-9]{1,15})(?:\.0*)?"')
# What a padding format shows of a whole number: a leading zero (after a literal such as NO.), then
# digits and separators only.
_ODS_PADDED = re.compile(r"[^0-9]{0,16}0[0-9\-\s/()]*")
_ODS_NAME = re.compile(rb'table:name="([^"]*)"')
_SST_TAG = re.compile(rb"<(?:\w+:)?sst\b[^>]*>")
_UNIQUE_COUNT = re.compile(rb'\suniqueCount="\s*(\d{1,30})\s*"')
_ODS_REPEAT = re.compile(rb'number-(?:rows|columns)-repeated="(\d+)"')


#: An error cell's code (in .xls and .xlsb records) and the text Excel shows for it.
ERROR_TEXTS = {0x00: "#NULL!", 0x07: "#DIV/0!", 0x0F: "#VALUE!", 0x17: "#REF!", 0x1D: "#NAME?", 0x24: "#NUM!",
               0x2A: "#N/A", 0x2B: "#GETTING_DATA"}  # fmt: skip


@dataclass(frozen=True)
class Extent:
    """The rectangle of a sheet: rows × columns calamine would allocate (an upper bound when not exact).

    ``last_row`` and ``last_column`` (1-based) name its far corner, for the message.
    """

    rows: int
    columns: int
    last_row: int = 0
    last_column: int = 0
    values: int = -1  # cells holding a value (-1: not counted)

    @property
    def cells(self) -> int:
        """How many cells the rectangle holds."""
        return self.rows * self.columns

    @property
    def sparse(self) -> bool:
        """Whether the rectangle is large and nearly empty (a stray value far from the register)."""
        return self.values >= 0 and self.cells > SPARSE_CELLS and self.values * SPARSE_RATIO < self.cells


def column_number(letters: bytes) -> int:
    """``A`` -> 1, ``Z`` -> 26, ``AA`` -> 27, ``XFD`` -> 16384."""
    number = 0
    for letter in letters:
        number = number * 26 + letter - 64
    return number


def column_letters(number: int) -> str:
    """1 -> ``A``, 16384 -> ``XFD``."""
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _refuse(label: str, what: str, fix: str = _FIX_RESAVE) -> InputError:
    return InputError(what, file=label, fix=fix)


def _inflated(handle: BinaryIO, info: zipfile.ZipInfo, label: str) -> Iterator[bytes]:
    """The part's bytes as they inflate, refused as soon as they outgrow the caps."""
    handle.seek(info.header_offset)
    header = handle.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise _refuse(label, "Excel 文件已损坏（压缩包结构错误）")
    fields = _LOCAL_HEADER.unpack(header)
    handle.seek(info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10])
    left = info.compress_size
    limit = min(MAX_PART_BYTES, max(RATIO_FLOOR_BYTES, MAX_RATIO * max(1, info.compress_size)))
    if info.compress_type == zipfile.ZIP_STORED:
        while left:
            chunk = handle.read(min(left, _CHUNK))
            if not chunk:
                return
            left -= len(chunk)
            read_bytes(len(chunk))
            yield chunk
        return
    if info.compress_type != zipfile.ZIP_DEFLATED:
        raise _refuse(label, "Excel 文件使用了不支持的压缩方式")
    inflater = zlib.decompressobj(-15)
    produced = 0
    while left and not inflater.eof:
        raw = handle.read(min(left, 1 << 20))
        if not raw:
            break
        left -= len(raw)
        read_bytes(len(raw))
        while raw:
            try:
                chunk = inflater.decompress(raw, _CHUNK)
            except zlib.error:
                raise _refuse(label, "Excel 文件已损坏或不完整（压缩数据错误）") from None
            raw = inflater.unconsumed_tail
            produced += len(chunk)
            if produced > limit:
                raise _bomb(label, info, produced)
            if chunk:
                yield chunk


def _bomb(label: str, info: zipfile.ZipInfo, size: int) -> InputError:
    megabytes = max(1, size >> 20)
    return _refuse(
        label,
        f"文件中的 {info.filename} 解压后超过 {megabytes} MB"
        "（压缩比异常，可能是“压缩炸弹”），为安全起见不予读取",
        "请确认文件来源；如是正常的登记表，用 Excel 打开后另存为 .xlsx 再处理",
    )


def _check_directory(archive: zipfile.ZipFile, label: str) -> list[zipfile.ZipInfo]:
    """The parts, after the directory's own claims are checked against the caps."""
    parts = archive.infolist()
    if len(parts) > MAX_ZIP_ENTRIES:
        raise _refuse(label, f"文件中有 {len(parts)} 个部件，不像是 Excel 工作簿")
    total = 0
    for info in parts:
        declared = info.file_size
        total += declared
        too_dense = declared > RATIO_FLOOR_BYTES and declared > MAX_RATIO * max(1, info.compress_size)
        if declared > MAX_PART_BYTES or too_dense or total > MAX_TOTAL_BYTES:
            raise _bomb(label, info, declared)
    return parts


class _TagBoundary:
    """Cuts a stream of XML chunks where a tag starts, so that no tag is split between two pieces."""

    def __init__(self) -> None:
        self.carry = b""

    def cut(self, chunk: bytes) -> bytes:
        """The part of what has come so far that ends before the last ``<``; the rest waits for more."""
        data = self.carry + chunk
        cut = data.rfind(b"<")
        body, self.carry = (data[:cut], data[cut:]) if cut > 0 else (data, b"")
        if len(self.carry) > 4096:  # a giant text node: nothing to carry but where it ends
            self.carry = b""
        return body


def _bodies(chunks: Iterator[bytes]) -> Iterator[bytes]:
    boundary = _TagBoundary()
    for chunk in chunks:
        yield boundary.cut(chunk)


# A number cell: its attributes and its value.
_NUMBER_CELL = re.compile(rb"<(?:\w+:)?c\b([^>]*)>\s*<(?:\w+:)?v>([^<]{1,32})</(?:\w+:)?v>\s*</(?:\w+:)?c>")
_S_ATTR = re.compile(rb'\ss="(\d+)"')
_T_ATTR = re.compile(rb'\st="(\w*)"')
#: Padded numbers remembered per sheet; more are read as the numbers calamine gives.
MAX_PADDED_CELLS = 200_000
#: Largest styles part read for its number formats (a workbook's is tens of kilobytes).
MAX_STYLES_BYTES = 16 << 20
# A format's pieces: a quoted or escaped literal, a run of zeros, a separator; anything else (#, ?, ., E,
# @, ;, [colour]) makes it a format this reading does not imitate.
_FORMAT_PIECE = re.compile(r'"([^"]*)"|\\(.)|(0+)|([-\s/()])')


def padding_format(code: str) -> list[str | int] | None:
    """A number format that pads a whole number with zeros (``000000``, ``0000-00000000``,
    ``"NO."00000000``) as its pieces: literal texts and runs of zeros (their width); None for any other.
    """
    pieces: list[str | int] = []
    position = 0
    for found in _FORMAT_PIECE.finditer(code):
        if found.start() != position:
            return None
        quoted, escaped, zeros, separator = found.groups()
        pieces.append(len(zeros) if zeros else (quoted if quoted is not None else escaped or separator))
        position = found.end()
    widths = [piece for piece in pieces if isinstance(piece, int)]
    if position != len(code) or sum(widths) < 2:
        return None
    return pieces


def padded_text(pieces: list[str | int], number: int) -> str:
    """``number`` as the padding format ``pieces`` shows it: digits fill the zeros from the right, the
    first run of zeros takes any digits beyond them (as Excel does)."""
    width = sum(piece for piece in pieces if isinstance(piece, int))
    digits = str(abs(number)).zfill(width)
    extra = len(digits) - width
    out, taken, first = ["-"] if number < 0 else [], 0, True
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        size = piece + (extra if first else 0)
        out.append(digits[taken : taken + size])
        taken += size
        first = False
    return "".join(out)


def padding_styles(styles: bytes) -> dict[int, list[str | int]]:
    """Cell style index -> padding format (see :func:`padding_format`), from a styles part."""
    codes: dict[str, str] = {}
    for tag in re.findall(rb"<(?:\w+:)?numFmt\b[^>]*>", styles):
        attributes = dict(_ATTRIBUTE.findall(tag))
        code = html.unescape(attributes.get(b"formatCode", b"").decode("utf-8", "replace"))
        codes[attributes.get(b"numFmtId", b"").decode("ascii", "replace")] = code
    section = re.search(rb"<(?:\w+:)?cellXfs\b[^>]*>(.*?)</(?:\w+:)?cellXfs>", styles, re.DOTALL)
    padded: dict[int, list[str | int]] = {}
    if section is None:
        return padded
    for index, tag in enumerate(re.findall(rb"<(?:\w+:)?xf\b[^>]*>", section[1])):
        number_format = dict(_ATTRIBUTE.findall(tag)).get(b"numFmtId", b"0").decode("ascii", "replace")
        pieces = padding_format(codes[number_format]) if number_format in codes else None
        if pieces is not None:
            padded[index] = pieces
    return padded


@dataclass
class _SheetScan:
    """The fast upper bound of an .xlsx sheet's rectangle, gathered chunk by chunk."""

    last_row: int = 0
    last_column: int = 26  # single-letter columns are not looked at: Z at most
    wide: bool = False
    irregular: bool = False  # rows or cells without ``r``, or prefixed tags: only the exact scan knows
    boundary: _TagBoundary = field(default_factory=_TagBoundary)
    cell_tags: int = 0  # cells written, with or without a value: at least those holding one
    errors: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, 0-based column) -> "#N/A"
    hidden_rows: set[int] = field(default_factory=set)
    padding: dict[int, list[str | int]] = field(default_factory=dict)  # style index -> padding format
    padded: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, 0-based column) -> "000123"
    uncalculated: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, 0-based column) -> formula
    _cell_carry: bytes = b""  # a cell cut by the chunk's end, held for the next

    def feed(self, chunk: bytes) -> None:
        body = self.boundary.cut(chunk)
        carried = bool(self._cell_carry)
        errors = len(self.errors) < MAX_ERROR_CELLS and (carried or b't="e"' in body)
        padded = bool(self.padding) and len(self.padded) < MAX_PADDED_CELLS
        padded = padded and (carried or self._padded_in(body))
        formulas = len(self.uncalculated) < MAX_UNCALCULATED_CELLS
        formulas = formulas and (carried or _FORMULA_TAG.search(body) is not None)
        if errors or padded or formulas:
            whole = self._whole_cells(body)
            if errors:
                self._find_errors(whole)
            if padded:
                self._find_padded(whole)
            if formulas:
                self._find_uncalculated(whole)
        else:
            self._cell_carry = b""
        if b'hidden="' in body and len(self.hidden_rows) < MAX_HIDDEN_ROWS:
            self.hidden_rows.update(int(m[1] or m[2]) for m in _HIDDEN_ROW.finditer(body))
        rows = _ROW_NUMBER.findall(body)
        if rows:
            self.last_row = max(self.last_row, max(map(int, rows)))
        wide = _WIDE_REF.findall(body)
        if wide:
            self.wide = True
            self.last_column = max(self.last_column, max(map(column_number, wide)))
        cells = body.count(b"<c ") + body.count(b"<c>")
        self.cell_tags += cells
        if not self.irregular:
            tags = body.count(b"<row") + cells
            self.irregular = (
                tags != body.count(b' r="') or b"<c>" in body or b":c " in body or b":row" in body
            )

    def _whole_cells(self, body: bytes) -> bytes:
        """``body`` after the cell carried from the last chunk, up to its last cell's end: the cell cut by
        its end is carried to the next (a tag is never cut: :class:`_TagBoundary`)."""
        text = self._cell_carry + body
        end = max(text.rfind(b"</c>") + len(b"</c>"), text.rfind(b":c>") + len(b":c>"), 0)
        rest = text[end:]
        self._cell_carry = rest if len(rest) < 4096 else b""  # a giant cell is neither error nor number
        return text[:end]

    def _padded_in(self, body: bytes) -> bool:
        """Whether ``body`` may hold a cell of a padding style (with many such styles, always)."""
        return len(self.padding) > 16 or any(f' s="{i}"'.encode() in body for i in self.padding)

    def _find_padded(self, cells: bytes) -> None:
        """Remember the number cells among ``cells`` that a format pads with zeros, as Excel shows them."""
        for attributes, value in _NUMBER_CELL.findall(cells):
            style, kind = _S_ATTR.search(attributes), _T_ATTR.search(attributes)
            if style is None or int(style[1]) not in self.padding or (kind is not None and kind[1] != b"n"):
                continue
            place = _R_ATTR.search(attributes)
            try:
                number = float(value)
            except ValueError:
                continue
            if place is None or not place[1] or not place[2] or not number.is_integer():
                continue
            if abs(number) < 1e15:  # beyond, Excel itself kept no more than 15 digits
                text = padded_text(self.padding[int(style[1])], int(number))
                self.padded[(int(place[2]), column_number(place[1]) - 1)] = text

    def _find_errors(self, cells: bytes) -> None:
        """Remember the cells among ``cells`` holding an error value; calamine reads them as empty."""
        for attributes, content in _ERROR_CELL.findall(cells):
            if len(self.errors) >= MAX_ERROR_CELLS:
                return
            place, value = _R_ATTR.search(attributes), _ERROR_VALUE.search(content)
            if attributes.endswith(b"/") or place is None or value is None or not place[1] or not place[2]:
                continue
            text_value = value[1].decode("ascii", "replace")
            if text_value.startswith("#"):
                self.errors[(int(place[2]), column_number(place[1]) - 1)] = text_value

    def _find_uncalculated(self, cells: bytes) -> None:
        """Remember the cells among ``cells`` holding a formula saved without its result.

        A program other than Excel or WPS (openpyxl, many a system's export)
        writes ``=MID(D2,7,8)`` and no result; calamine reads the cell as
        empty.  An empty text result Excel keeps (``t="str"``, ``<v></v>``) is a
        result, not a missing one.
        """
        for attributes, formula, value in _UNCALCULATED_CELL.findall(cells):
            if len(self.uncalculated) >= MAX_UNCALCULATED_CELLS:
                return
            place, kind = _R_ATTR.search(attributes), _T_ATTR.search(attributes)
            if attributes.endswith(b"/") or place is None or not place[1] or not place[2]:
                continue
            if value and kind is not None and kind[1] == b"str":
                continue
            quoted = formula and len(self.uncalculated) < _QUOTED_FORMULAS
            text = html.unescape(formula.decode("utf-8", "replace")) if quoted else ""
            self.uncalculated[(int(place[2]), column_number(place[1]) - 1)] = text

    @property
    def extent(self) -> Extent:
        """The upper bound of the rectangle; the cells written bound those holding a value."""
        return Extent(self.last_row, self.last_column, self.last_row, self.last_column, self.cell_tags)


def _exact_extent(chunks: Iterator[bytes]) -> Extent:
    """The rectangle of the cells holding a value, numbered as calamine does (rows, cells without ``r``)."""
    row = column = 0
    first_row = first_column = 1 << 40
    last_row = last_column = values = 0
    in_cell = valued = False
    for body in _bodies(chunks):
        for match in _TAG.finditer(body):
            closing, name, attributes = match.groups()
            if name == b"row":
                if closing:
                    continue
                ref = _R_ATTR.search(attributes)
                row = int(ref.group(2)) if ref and ref.group(2) else row + 1
                column = 0
            elif name == b"c":
                if closing:
                    if in_cell and valued:
                        values += 1
                        first_row, last_row = min(first_row, row), max(last_row, row)
                        first_column, last_column = min(first_column, column), max(last_column, column)
                    in_cell = False
                    continue
                ref = _R_ATTR.search(attributes)
                if ref and ref.group(1):
                    column = column_number(ref.group(1))
                    row = int(ref.group(2)) if ref.group(2) else row
                else:
                    column += 1
                in_cell, valued = not attributes.rstrip().endswith(b"/"), False
            elif in_cell and not closing:
                valued = True
    if not last_row:
        return Extent(0, 0, values=0)
    return Extent(last_row - first_row + 1, last_column - first_column + 1, last_row, last_column, values)


def _ods_shown(facts: SheetFacts, pending: tuple[int, int, bytes, int], text: str) -> None:
    """Note a cell's shown ``text`` where calamine reads it otherwise: an error (read as empty) or a
    number shown padded with zeros (read bare); ``pending``: its row, first column, kind, repeats."""
    row, column, kind, columns = pending
    if kind == b"error":
        if not text.startswith("#") or len(facts.errors) >= MAX_ERROR_CELLS:
            return
        found = facts.errors
    else:
        if not _ODS_PADDED.fullmatch(text) or "".join(filter(str.isdigit, text)).lstrip("0") != kind.decode():
            return
        if len(facts.padded) >= MAX_PADDED_CELLS:
            return
        found = facts.padded
    for offset in range(min(columns, MAX_ERROR_CELLS)):
        found[(row, column + offset)] = text


def _ods_extents(chunks: Iterator[bytes]) -> Iterator[tuple[str, Extent, SheetFacts]]:
    """Each .ods sheet's name, the rectangle of its cells holding values, repeats counted, and what
    calamine does not tell of it (:class:`SheetFacts`: its error cells, numbers shown padded, hidden rows,
    merged cells).

    A row is as wide as its last cell with a value: LibreOffice ends every
    row with the empty rest of the sheet's 16,384 columns as one repeated
    cell, which the reader never fills in, and the sheet with the empty rest
    of its rows.  Empty rows between values count: calamine holds them.
    """
    name = ""
    position = first = last = widest = values = 0
    row_repeat = 1
    row_width = row_end = row_values = 0
    facts = SheetFacts()
    pending: tuple[int, int, bytes, int] | None = None  # a cell whose shown text is to be looked at

    def extent() -> Extent:
        rows = last - first + 1 if last else 0
        return Extent(rows, widest, last, widest, values)

    for body in _bodies(chunks):
        for match in _ODS_TAG.finditer(body):
            tag, attributes, shown = match.groups()
            if shown is not None:
                if pending is not None:
                    _ods_shown(facts, pending, shown.decode("utf-8", "replace").strip())
                pending = None
                continue
            pending = None
            if tag is None:  # </table:table-row>
                if row_values:
                    first = first or position + 1
                    last = position + row_repeat
                    widest = max(widest, row_end)
                    values += row_values * row_repeat
                position += row_repeat
                continue
            if tag == b"table":
                if last:
                    yield name, extent(), facts
                found = _ODS_NAME.search(attributes or b"")
                name = found[1].decode("utf-8", "replace") if found else ""
                position = first = last = widest = values = 0
                facts = SheetFacts()
                continue
            repeat_match = _ODS_REPEAT.search(attributes or b"")
            repeat = int(repeat_match.group(1)) if repeat_match else 1
            if tag == b"table-row":
                row_repeat, row_width, row_end, row_values = repeat, 0, 0, 0
                if _ODS_HIDDEN.search(attributes) and len(facts.hidden_rows) < MAX_HIDDEN_ROWS:
                    facts.hidden_rows.update(range(position + 1, position + 1 + min(repeat, MAX_HIDDEN_ROWS)))
            else:
                if b"rows-spanned" in attributes and len(facts.merged) < MAX_MERGED_CELLS:
                    down, across = (
                        _ODS_ROWS_SPANNED.search(attributes),
                        _ODS_COLUMNS_SPANNED.search(attributes),
                    )
                    if down is not None and int(down[1]) > 1:
                        corner = (
                            position + int(down[1]) - 1,
                            row_width + (int(across[1]) if across else 1) - 1,
                        )
                        facts.merged.append(((position, row_width), corner))
                if b"value-type" in attributes and tag == b"table-cell":
                    number = _ODS_NUMBER.search(attributes)
                    kind = b"error" if _ODS_ERROR.search(attributes) else number[1] if number else None
                    if kind is not None:
                        pending = (position + 1, row_width, kind, repeat)
                row_width += repeat
                if b"value-type" in attributes:
                    row_values += repeat
                    row_end = row_width
    if last:
        yield name, extent(), facts


def too_large(label: str, sheet: str, extent: Extent) -> InputError:
    """The error for a sheet whose cells span ``extent``: too many cells, or a stray value far away."""
    if extent.sparse:
        share = f"共 {extent.cells:,} 个单元格，其中只有 {extent.values:,} 个有内容，多半是误填在远处的单元格"
    else:
        share = f"共 {extent.cells:,} 个单元格，上限 {MAX_SHEET_CELLS:,}"
    return InputError(
        "工作表的数据范围过大：有内容的单元格一直延伸到"
        f" {column_letters(extent.last_column)}{extent.last_row}（{share}），无法安全读取",
        file=label,
        sheet=sheet,
        fix=_FIX_STRAY,
    )


_SHEET_ENTRY = re.compile(rb"<(?:\w+:)?sheet\b[^>]*>")
_ATTRIBUTE = re.compile(rb'([\w:]+)="([^"]*)"')


def _relation_targets(relations: bytes) -> dict[bytes, str]:
    """Relation id -> the part it names (``xl/worksheets/sheet1.xml``), from a workbook's relations."""
    targets = {}
    for tag in re.findall(rb"<(?:\w+:)?Relationship\b[^>]*>", relations):
        attributes = dict(_ATTRIBUTE.findall(tag))
        target = attributes.get(b"Target", b"").decode("utf-8", "replace").lstrip("/")
        targets[attributes.get(b"Id", b"")] = target if target.startswith("xl/") else f"xl/{target}"
    return targets


def _sheet_names(archive: zipfile.ZipFile) -> dict[str, str]:
    """Part name (``xl/worksheets/sheet1.xml``) -> the sheet's name as the clerk sees it; {} if unknown."""
    try:
        workbook = archive.read("xl/workbook.xml")
        relations = archive.read("xl/_rels/workbook.xml.rels")
    except (KeyError, zipfile.BadZipFile, OSError, ValueError, EOFError):
        return {}
    targets = _relation_targets(relations)
    names = {}
    for tag in _SHEET_ENTRY.findall(workbook):
        attributes = dict(_ATTRIBUTE.findall(tag))
        relation = next((v for k, v in attributes.items() if k.endswith(b":id")), b"")
        if relation in targets:
            names[targets[relation]] = attributes.get(b"name", b"").decode("utf-8", "replace")
    return names


def _is_sheet(name: str) -> bool:
    return name.startswith("xl/worksheets/") and name.endswith(".xml")


def _is_binary_sheet(name: str) -> bool:
    return name.startswith("xl/worksheets/") and name.endswith(".bin")


# .xlsb records: a row's header (its number), the cells calamine reads a value from (a number, an error,
# a boolean, a text, a shared text, a formula's result; not an empty styled cell, 0x01; the error cells
# are 0x03, a value, and 0x0B, a formula's result), the end of the cells, and a sheet's entry in the
# workbook part.
_XLSB_ROW, _XLSB_FIRST_VALUE, _XLSB_LAST_VALUE, _XLSB_END_OF_CELLS = 0x0000, 0x0002, 0x000B, 0x0092
_XLSB_SHEET_ENTRY = 0x009C
#: calamine reads no row of an .xlsb beyond this (0-based) one.
_XLSB_LAST_ROW = 0x100000


def _xlsb_records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Each record of a small .xlsb part (the workbook's): its type and body."""
    position = 0
    while position < len(data):
        kind, position = _xlsb_number(data, position, 2)
        size, position = _xlsb_number(data, position, 4)
        yield kind, data[position : position + size]
        position += size


def _xlsb_number(data: bytes, position: int, most: int) -> tuple[int, int]:
    """A record's type or size (7 bits a byte, at most ``most`` bytes) at ``position``; where it ends."""
    number = 0
    for shift in range(0, 7 * most, 7):
        byte = data[position]
        position += 1
        number |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    return number, position


def _wide_text(data: bytes, position: int) -> tuple[str, int]:
    """An .xlsb text (a count of UTF-16 units, then them) at ``position``; where it ends."""
    count = struct.unpack_from("<I", data, position)[0]
    if count == 0xFFFFFFFF:  # a text that may be absent, and is
        return "", position + 4
    end = position + 4 + 2 * count
    return data[position + 4 : end].decode("utf-16-le", "replace"), end


def _binary_sheet_names(archive: zipfile.ZipFile) -> dict[str, str]:
    """Part name (``xl/worksheets/sheet1.bin``) -> an .xlsb sheet's name as the clerk sees it; {} if
    unknown."""
    try:
        info = archive.getinfo("xl/workbook.bin")
        if info.file_size > MAX_STYLES_BYTES:
            return {}
        workbook = archive.read(info)
        relations = archive.read("xl/_rels/workbook.bin.rels")
    except (KeyError, zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error):
        return {}
    targets = _relation_targets(relations)
    names = {}
    try:
        for kind, body in _xlsb_records(workbook):
            if kind == _XLSB_SHEET_ENTRY:
                relation, end = _wide_text(body, 8)
                name, _ = _wide_text(body, end)
                if relation.encode() in targets:
                    names[targets[relation.encode()]] = name
    except (IndexError, struct.error):
        pass
    return names


def _binary_sheet_scan(chunks: Iterator[bytes]) -> tuple[Extent, dict[tuple[int, int], str]]:
    """The rectangle of an .xlsb sheet's cells holding a value, as calamine numbers them, and its error
    cells ((1-based row, 0-based column) -> ``#N/A``), from one walk of its records.

    A record of no interest is stepped over, across pieces if long; the
    walk stops at the end of the cells or where calamine stops reading rows.
    """
    data, skip, row, done = b"", 0, 0, False
    first_row = first_column = 1 << 40
    last_row = last_column = values = 0
    errors: dict[tuple[int, int], str] = {}
    from_bytes = int.from_bytes
    for chunk in chunks:
        if skip:  # the rest of a long record of no interest
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            chunk, skip = chunk[skip:], 0
        data = data + chunk if data else chunk
        position, available = 0, len(data)
        limit = available - 6  # a record's type and size take at most 6 bytes
        while position < limit:
            kind, size = data[position], data[position + 1]
            if kind < 0x80 and size < 0x80:  # most records: one byte each
                start = position + 2
            else:
                kind, start = _xlsb_number(data, position, 2)
                size, start = _xlsb_number(data, start, 4)
            end = start + size
            if kind <= _XLSB_LAST_VALUE:
                if end > available:
                    break
                if kind == _XLSB_ROW:
                    row = from_bytes(data[start : start + 4], "little")
                    done = row > _XLSB_LAST_ROW  # calamine reads no further
                elif kind >= _XLSB_FIRST_VALUE and size >= 4:
                    column = from_bytes(data[start : start + 4], "little")
                    values += 1
                    # Comparisons, not min() and max(): this runs for every cell.
                    if row > last_row:
                        last_row = row
                    if row < first_row:
                        first_row = row
                    if column > last_column:
                        last_column = column
                    if column < first_column:
                        first_column = column
                    if (kind == 0x0003 or kind == 0x000B) and size > 8 and len(errors) < MAX_ERROR_CELLS:
                        shown = ERROR_TEXTS.get(data[start + 8])
                        if shown is not None:
                            errors[(row + 1, column)] = shown
            elif kind == _XLSB_END_OF_CELLS:
                done = True
            elif end > available:
                skip, position = end - available, available
                break
            if done:
                break
            position = end
        if done:
            break
        data = data[position:]
    if not values:
        return Extent(0, 0, 0, 0, 0), errors
    rows, columns = last_row - first_row + 1, last_column - first_column + 1
    return Extent(rows, columns, last_row + 1, last_column + 1, values), errors


@dataclass
class SheetFacts:
    """What calamine does not tell of an .xlsx (or .ods) sheet, noted while it streamed past.

    ``errors``: the cells holding an error value, (row, 0-based column) ->
    its text (``#N/A``): calamine reads them as empty, and a formula that
    found nothing is not a blank the clerk left.  ``hidden_rows``: the rows
    hidden in Excel (a filter, or hidden by hand), which are read all the same.
    ``padded``: number cells whose format pads them with zeros, as Excel shows
    them (``000123``); calamine gives the number (123).  ``merged``: an .ods
    sheet's merged cells, ((first row, first column), (last row, last column)),
    0-based, as calamine gives an .xlsx's (and none of an .ods's).
    ``uncalculated``: an .xlsx's cells holding a formula saved without its
    result (by a program that does not calculate), (row, 0-based column) ->
    the formula (``""`` when shared, and past the first 1,000): calamine reads
    them as empty.
    ``texts``: for an Excel 95 workbook in a code page calamine garbles (GBK),
    every text cell of the sheet, (row, 0-based column) -> its text; None
    where calamine reads the text right.
    """

    errors: dict[tuple[int, int], str] = field(default_factory=dict)
    hidden_rows: set[int] = field(default_factory=set)
    padded: dict[tuple[int, int], str] = field(default_factory=dict)
    merged: list[tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    uncalculated: dict[tuple[int, int], str] = field(default_factory=dict)
    texts: dict[tuple[int, int], str] | None = None


def _padding_of(archive: zipfile.ZipFile, handle: BinaryIO, label: str) -> dict[int, list[str | int]]:
    """The padding formats of the workbook's cell styles (``xl/styles.xml``), {} when it has none."""
    try:
        info = archive.getinfo("xl/styles.xml")
    except KeyError:
        return {}
    if info.file_size > MAX_STYLES_BYTES:
        return {}
    return padding_styles(b"".join(_inflated(handle, info, label)))


def check_zip_workbook(path: Path, label: str) -> dict[str, SheetFacts]:
    """Refuse (InputError) a zip workbook whose parts inflate too far or whose sheets span too many cells.

    Returns, per sheet name, what calamine does not tell of an .xlsx sheet
    (:class:`SheetFacts`).  A file that is not a sound zip is left for
    calamine to judge (and word).
    """
    facts: dict[str, SheetFacts] = {}
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return facts
    with archive, open(path, "rb") as handle:
        parts = _check_directory(archive, label)
        sheet_names = {**_sheet_names(archive), **_binary_sheet_names(archive)}
        padding = _padding_of(archive, handle, label)
        for info in parts:
            if info.is_dir() or (info.file_size == 0 and info.compress_size == 0):
                continue
            stream = _inflated(handle, info, label)
            if _is_sheet(info.filename):
                sheet = sheet_names.get(info.filename, info.filename.rsplit("/", 1)[-1])
                facts[sheet] = _check_xlsx_sheet(handle, info, label, sheet, stream, padding)
            elif _is_binary_sheet(info.filename):
                sheet = sheet_names.get(info.filename, info.filename.rsplit("/", 1)[-1])
                extent, errors = _binary_sheet_scan(stream)
                if extent.cells > MAX_SHEET_CELLS or extent.sparse:
                    raise too_large(label, sheet, extent)
                facts[sheet] = SheetFacts(errors=errors)
                for _ in stream:  # the records after the cells
                    pass
            elif info.filename.lower() == "xl/sharedstrings.xml":
                _check_shared_strings(stream, label)
            elif info.filename == "content.xml" and path.suffix.lower() == ".ods":
                for sheet, extent, shown in _ods_extents(stream):
                    if extent.cells > MAX_SHEET_CELLS or extent.sparse:
                        raise too_large(label, sheet, extent)
                    facts[sheet] = shown
            else:
                for _ in stream:
                    pass
    return facts


def _check_shared_strings(stream: Iterator[bytes], label: str) -> None:
    """Refuse a shared-strings part claiming (``uniqueCount``) far more strings than it has room for."""
    head, size = b"", 0
    for chunk in stream:
        if len(head) < 4096:
            head += chunk[:4096]
        size += len(chunk)
    tag = _SST_TAG.search(head)
    found = _UNIQUE_COUNT.search(tag[0]) if tag else None
    if found is None:
        return
    claimed, room = int(found[1]), size // len(b"<si/>")
    if claimed > max(room, MAX_CLAIMED_STRINGS):
        raise _refuse(
            label,
            f"Excel 文件已损坏：共享字符串表声称有 {claimed:,} 个字符串，而它的内容最多只能容纳 {room:,} 个，"
            "无法安全读取",
        )


def _check_xlsx_sheet(
    handle: BinaryIO,
    info: zipfile.ZipInfo,
    label: str,
    sheet: str,
    stream: Iterator[bytes],
    padding: dict[int, list[str | int]],
) -> SheetFacts:
    """Refuse a sheet too large to read; return what calamine does not tell of it."""
    scan = _SheetScan(padding=padding)
    for chunk in stream:
        scan.feed(chunk)
    if scan.last_row > EXCEL_LAST_ROW:
        raise _beyond_last_row(label, sheet, scan.last_row)
    if scan.extent.cells <= MAX_SHEET_CELLS and not scan.irregular and not scan.extent.sparse:
        return SheetFacts(scan.errors, scan.hidden_rows, scan.padded, uncalculated=scan.uncalculated)
    exact = _exact_extent(_inflated(handle, info, label))
    if exact.last_row > EXCEL_LAST_ROW:
        raise _beyond_last_row(label, sheet, exact.last_row)
    if exact.cells > MAX_SHEET_CELLS or exact.sparse:
        raise too_large(label, sheet, exact)
    return SheetFacts(scan.errors, scan.hidden_rows, scan.padded, uncalculated=scan.uncalculated)


def _beyond_last_row(label: str, sheet: str, row: int) -> InputError:
    return InputError(
        f"工作表内容已损坏：有第 {row:,} 行，超出 Excel 的最大行数 {EXCEL_LAST_ROW:,}",
        file=label,
        sheet=sheet,
        fix=_FIX_RESAVE,
    )


def check_workbook(path: Path, label: str, size: int) -> dict[str, SheetFacts]:
    """Refuse a workbook that cannot be read in bounded memory; else return its sheets' facts.

    Facts are gathered here for an .xlsx and an .ods; an .xls's come from :mod:`pipeline.reading.biff`.
    """
    suffix = path.suffix.lower()
    if suffix == ".xls" and size > MAX_XLS_BYTES:
        raise _refuse(label, f"文件过大（{size >> 20} MB，.xls 上限 {MAX_XLS_BYTES >> 20} MB）")
    check: Callable[[Path, str], dict[str, SheetFacts]] = check_zip_workbook
    if suffix in _ZIP_SUFFIXES or _starts_like_zip(path):
        return check(path, label)
    return {}


def _starts_like_zip(path: Path) -> bool:
    # The extension may lie (an .xlsx saved as .xls): the first bytes tell.
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False
