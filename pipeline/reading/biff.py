"""What calamine does not tell of an .xls (BIFF8, and Excel 95's BIFF5) sheet: error cells, padded
numbers, hidden rows; an Excel 95 workbook's text in a Chinese, Japanese or Korean code page; and
whether a stray value far from a small register makes calamine hold a huge empty rectangle.

calamine reads an error cell (``#N/A`` where a lookup found nothing) as
empty and a number whose format pads it with zeros (``000123``,
``0757-83001234``) bare, and does not say which rows Excel hides, as in an
.xlsx; :mod:`pipeline.reading.bounds`
notes those of an .xlsx while its sheets stream past, and this module those
of an .xls, from its records: the compound file's workbook stream is found
and walked once, record by record.  Anything unexpected (a damaged or
encrypted file, a record cut short) ends the walk with what was noted so
far: calamine then reads or refuses the file as before.

An Excel 5.0/95 workbook keeps its text in the code page it names, and
calamine reads a code page of two bytes a character (GBK, Big5, Shift-JIS)
one byte a character: "张三" comes out as replacement characters, each
followed by a NUL, and so do sheet names.  Such a workbook's sheet names and
text cells are noted here, decoded in its code page
(:attr:`SheetFacts.texts`), in place of calamine's.

The same walk bounds each sheet by its cells holding a value: calamine holds
a sheet as one rectangle, and one number at IV65536 below five rows (65,536 ×
256 cells, the most the format has) held the reading at 1.75 GB for 19 s.  A
rectangle that large and nearly empty is refused as an .xlsx's is
(:data:`~pipeline.reading.bounds.SPARSE_CELLS`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import InputError
from pipeline.reading.bounds import (
    ERROR_TEXTS,
    MAX_ERROR_CELLS,
    MAX_HIDDEN_ROWS,
    MAX_PADDED_CELLS,
    MAX_XLS_BYTES,
    Extent,
    SheetFacts,
    padded_text,
    padding_format,
    too_large,
)

_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_END_OF_CHAIN = 0xFFFFFFFE
_FREE = 0xFFFFFFFF

# The records looked at (BIFF8 numbers; BIFF5 uses the same).
_BOF, _EOF, _FILEPASS, _CODEPAGE = 0x0809, 0x000A, 0x002F, 0x0042
_BOUNDSHEET, _FORMAT, _XF = 0x0085, 0x041E, 0x00E0
_NUMBER, _RK, _MULRK, _FORMULA, _BOOLERR, _ROW = 0x0203, 0x027E, 0x00BD, 0x0006, 0x0205, 0x0208
# BIFF5's text cells (BIFF8 keeps text in a shared table, which calamine reads right, 0x00FD) and a
# formula's text result, in the record after the formula.
_LABEL, _RSTRING, _STRING, _LABELSST = 0x0204, 0x00D6, 0x0207, 0x00FD
_CELLS = frozenset({_NUMBER, _RK, _MULRK, _FORMULA, _BOOLERR, _ROW, _LABEL, _RSTRING, _LABELSST})
#: Code pages of two bytes a character (Japanese, Chinese GBK, Korean, Big5, Johab): calamine reads an
#: Excel 95 workbook's text in them one byte a character.
DOUBLE_BYTE_PAGES = frozenset({932, 936, 949, 950, 1361})
#: Text cells of an Excel 95 workbook noted in all: a sheet of that format holds at most 16,384 × 256
#: cells; a file of more text cells is no workbook Excel 95 wrote, and is refused.
MAX_TEXT_CELLS = 4 << 20
#: A ROW record's flag of a row hidden (by hand or by a filter).
_ROW_HIDDEN = 0x20



class _Damaged(Exception):
    """The compound file or a record is not as the format says: what was noted so far stands."""


class _TooManyTexts(Exception):
    """An Excel 95 workbook holding more text cells than the format allows: no workbook Excel wrote."""


def _u32s(data: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(data) // 4}I", data[: len(data) // 4 * 4])


class _Compound:
    """The streams of an OLE compound file (the container of an .xls) held in ``data``."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 512 or not data.startswith(_MAGIC):
            raise _Damaged
        self.data = data
        self.shift = struct.unpack_from("<H", data, 0x1E)[0]
        mini_shift = struct.unpack_from("<H", data, 0x20)[0]
        if self.shift not in (9, 12) or mini_shift != 6:
            raise _Damaged
        self.size = 1 << self.shift
        self.sectors = max(0, (len(data) >> self.shift) - 1)
        fat_count, first_directory = struct.unpack_from("<II", data, 0x2C)
        self.cutoff, first_mini_fat, _, first_difat, difat_count = struct.unpack_from("<IIIII", data, 0x38)
        listed = [s for s in _u32s(data[0x4C:0x200]) if s < self.sectors]
        sector = first_difat
        for _ in range(min(difat_count, self.sectors)):  # more FAT sectors listed in DIFAT sectors
            if sector >= self.sectors:
                break
            entries = _u32s(self._sector(sector))
            listed += [s for s in entries[:-1] if s < self.sectors]
            sector = entries[-1]
        self.fat = _u32s(b"".join(self._sector(s) for s in listed[:fat_count]))
        self.directory = self._chain(first_directory)
        self.mini_fat = _u32s(self._chain(first_mini_fat)) if first_mini_fat < self.sectors else ()

    def _sector(self, number: int) -> bytes:
        start = (number + 1) << self.shift
        return self.data[start : start + self.size]

    def _chain(self, start: int) -> bytes:
        pieces, sector = [], start
        for _ in range(self.sectors):  # a chain longer than the file has sectors loops
            if sector in (_END_OF_CHAIN, _FREE) or sector >= min(self.sectors, len(self.fat)):
                break
            pieces.append(self._sector(sector))
            sector = self.fat[sector]
        return b"".join(pieces)

    def names(self) -> set[str]:
        """The names of the streams it holds, in lower case."""
        entries = [self.directory[i : i + 128] for i in range(0, len(self.directory) - 127, 128)]
        found = set()
        for entry in entries:
            length = min(struct.unpack_from("<H", entry, 0x40)[0], 64)
            if entry[0x42] == 2:
                found.add(entry[: max(0, length - 2)].decode("utf-16-le", "replace").lower())
        return found

    def stream(self, names: tuple[str, ...]) -> bytes:
        """The first stream named one of ``names`` (case-blind), as long as its entry says."""
        entries = [self.directory[i : i + 128] for i in range(0, len(self.directory) - 127, 128)]
        if not entries:
            raise _Damaged
        root_start = struct.unpack_from("<I", entries[0], 0x74)[0]
        for entry in entries:
            length = min(struct.unpack_from("<H", entry, 0x40)[0], 64)
            name = entry[: max(0, length - 2)].decode("utf-16-le", "replace").lower()
            if entry[0x42] != 2 or name not in names:
                continue
            start, size = struct.unpack_from("<II", entry, 0x74)
            if size >= self.cutoff:
                return self._chain(start)[:size]
            return self._mini_chain(self._chain(root_start), start)[:size]
        raise _Damaged

    def _mini_chain(self, mini: bytes, start: int) -> bytes:
        pieces, sector = [], start
        for _ in range(len(self.mini_fat)):
            if sector >= len(self.mini_fat) or (sector + 1) * 64 > len(mini):
                break
            pieces.append(mini[sector * 64 : (sector + 1) * 64])
            sector = self.mini_fat[sector]
        return b"".join(pieces)


def _records(stream: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Each record of a workbook stream: its offset, number and body."""
    position = 0
    while position + 4 <= len(stream):
        number, length = struct.unpack_from("<HH", stream, position)
        yield position, number, stream[position + 4 : position + 4 + length]
        position += 4 + length


def _rk(value: int) -> float:
    """A number packed as an RK value."""
    if value & 2:
        number = float(value >> 2 if value < 1 << 31 else (value >> 2) - (1 << 30))
    else:
        number = struct.unpack("<d", struct.pack("<Q", (value & 0xFFFFFFFC) << 32))[0]
    return number / 100 if value & 1 else number


def _text(body: bytes, offset: int, count: int, biff8: bool, codec: str) -> str:
    """``count`` characters at ``offset``: BIFF8's flagged UTF-16 or Latin-1, BIFF5's code page."""
    if not biff8:
        return body[offset : offset + count].decode(codec, "replace")
    wide = body[offset] & 1
    start = offset + 1
    raw = body[start : start + count * (2 if wide else 1)]
    return raw.decode("utf-16-le" if wide else "latin-1", "replace")


class _Walk:
    """The walk of one workbook stream, noting per sheet what calamine does not tell."""

    def __init__(self) -> None:
        self.biff8 = True
        self.codec = "cp1252"
        self.formats: dict[int, str] = {}
        self.padding_xf: dict[int, list[str | int]] = {}
        self.xf_count = 0
        self.sheets: dict[int, str] = {}  # stream offset of a sheet's BOF -> its name
        self.facts: dict[str, SheetFacts] = {}
        self.current: SheetFacts | None = None
        # Per sheet name: its cells holding a value span [first row, last row, first column, last column],
        # 0-based, and how many there are.
        self.spans: dict[str, list[int]] = {}
        self.span: list[int] = []
        self.own_texts = False  # an Excel 95 workbook in a code page calamine garbles: its texts noted here
        self.text_cells = 0
        self.formula_text: tuple[int, int] | None = None  # the formula whose text result comes next

    def globals_record(self, number: int, body: bytes) -> None:
        if number == _CODEPAGE and len(body) >= 2:
            page = struct.unpack_from("<H", body)[0]
            self.codec = "utf-16-le" if page == 1200 else f"cp{page}"
            self.own_texts = not self.biff8 and page in DOUBLE_BYTE_PAGES
            try:
                "".encode(self.codec)
            except LookupError:
                self.codec = "gb18030" if page == 936 else "cp1252"
        elif number == _BOUNDSHEET and len(body) >= 8:
            offset = struct.unpack_from("<I", body)[0]
            self.sheets[offset] = _text(body, 7, body[6], self.biff8, self.codec)
            if self.own_texts:  # every sheet, in the workbook's order: its name stands for calamine's
                self.facts.setdefault(self.sheets[offset], SheetFacts(texts={}))
        elif number == _FORMAT and len(body) >= 3:
            index = struct.unpack_from("<H", body)[0]
            if self.biff8 and len(body) >= 5:
                count = struct.unpack_from("<H", body, 2)[0]
                self.formats[index] = _text(body, 4, count, True, self.codec)
            elif not self.biff8:
                self.formats[index] = _text(body, 3, body[2], False, self.codec)
        elif number == _XF and len(body) >= 4:
            code = self.formats.get(struct.unpack_from("<H", body, 2)[0])
            pieces = padding_format(code) if code else None
            if pieces is not None:
                self.padding_xf[self.xf_count] = pieces
            self.xf_count += 1

    def cell_record(self, number: int, body: bytes) -> None:
        facts = self.current
        if number == _STRING:
            if facts is not None and self.formula_text is not None and len(body) >= 2:
                self._note_text(facts, *self.formula_text, body[2 : 2 + struct.unpack_from("<H", body)[0]])
            self.formula_text = None
            return
        if facts is None or len(body) < 6:
            return
        if number == _ROW:
            if len(body) >= 14 and body[12] & _ROW_HIDDEN and len(facts.hidden_rows) < MAX_HIDDEN_ROWS:
                facts.hidden_rows.add(struct.unpack_from("<H", body)[0] + 1)
            return
        row, column, xf = struct.unpack_from("<HHH", body)
        span = self.span
        last = column + (len(body) - 8) // 6 - 1 if number == _MULRK else column
        span[4] += last - column + 1
        if row < span[0]:
            span[0] = row
        if row > span[1]:
            span[1] = row
        if column < span[2]:
            span[2] = column
        if last > span[3]:
            span[3] = last
        if number == _LABELSST:
            return
        if number in (_LABEL, _RSTRING) and len(body) >= 8:
            self._note_text(facts, row, column, body[8 : 8 + struct.unpack_from("<H", body, 6)[0]])
        elif number == _NUMBER and len(body) >= 14:
            self._number(facts, row, column, xf, struct.unpack_from("<d", body, 6)[0])
        elif number == _RK and len(body) >= 10:
            self._number(facts, row, column, xf, _rk(struct.unpack_from("<I", body, 6)[0]))
        elif number == _MULRK:
            for index in range((len(body) - 6) // 6):
                xf, value = struct.unpack_from("<HI", body, 4 + 6 * index)
                self._number(facts, row, column + index, xf, _rk(value))
        elif number == _FORMULA and len(body) >= 14:
            result = body[6:14]
            if result[6:8] == b"\xff\xff" and result[0] == 2:
                self._error(facts, row, column, result[2])
            elif result[6:8] == b"\xff\xff" and result[0] == 0 and facts.texts is not None:
                self.formula_text = (row, column)
            elif result[6:8] != b"\xff\xff":
                self._number(facts, row, column, xf, struct.unpack("<d", result)[0])
        elif number == _BOOLERR and len(body) >= 8 and body[7] == 1:
            self._error(facts, row, column, body[6])

    def _number(self, facts: SheetFacts, row: int, column: int, xf: int, number: float) -> None:
        pieces = self.padding_xf.get(xf)
        if pieces is None or len(facts.padded) >= MAX_PADDED_CELLS:
            return
        if number.is_integer() and abs(number) < 1e15:  # beyond, Excel itself kept no more than 15 digits
            facts.padded[(row + 1, column)] = padded_text(pieces, int(number))

    def _note_text(self, facts: SheetFacts, row: int, column: int, raw: bytes) -> None:
        if facts.texts is None:
            return
        self.text_cells += 1
        if self.text_cells > MAX_TEXT_CELLS:
            raise _TooManyTexts
        facts.texts[(row + 1, column)] = raw.decode(self.codec, "replace")

    @staticmethod
    def _error(facts: SheetFacts, row: int, column: int, code: int) -> None:
        if code in ERROR_TEXTS and len(facts.errors) < MAX_ERROR_CELLS:
            facts.errors[(row + 1, column)] = ERROR_TEXTS[code]

    def run(self, stream: bytes) -> dict[str, SheetFacts]:
        in_globals = True
        for offset, number, body in _records(stream):
            if number == _FILEPASS:  # encrypted: calamine says so
                break
            if number in _CELLS or (number == _STRING and self.own_texts):
                if not in_globals:
                    self.cell_record(number, body)
            elif number == _BOF and len(body) >= 4:
                version, kind = struct.unpack_from("<HH", body)
                if in_globals and kind == 0x0005:
                    self.biff8 = version == 0x0600
                elif kind == 0x0010 and offset in self.sheets:
                    self.current = self.facts.setdefault(self.sheets[offset], SheetFacts())
                    self.span = self.spans.setdefault(self.sheets[offset], [1 << 20, -1, 1 << 20, -1, 0])
                    in_globals = False
                else:
                    self.current, in_globals = None, False
            elif number == _EOF:
                self.current, in_globals = None, False
            elif in_globals:
                self.globals_record(number, body)
        return self.facts


def is_compound_file(path: Path) -> bool:
    """Whether ``path`` starts as an OLE compound file (an .xls, whatever its name says)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == _MAGIC
    except OSError:
        return False


def compound_streams(path: Path) -> set[str]:
    """The names (lower case) of the streams in the compound file at ``path``: ``workbook`` in an .xls,
    ``worddocument`` in a Word file, ``encryptedpackage`` in an encrypted .xlsx; empty when unreadable."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_XLS_BYTES + 1)
        return _Compound(data).names() if len(data) <= MAX_XLS_BYTES else set()
    except (_Damaged, struct.error, IndexError, ValueError, OSError):
        return set()


def xls_facts(path: Path) -> dict[str, SheetFacts]:
    """Per sheet name, the error cells, padded numbers and hidden rows of the .xls at ``path``; {} when
    unreadable.

    For an Excel 95 workbook in a code page of two bytes a character, every
    sheet in the workbook's order, each with its text cells
    (:attr:`SheetFacts.texts`); InputError when it holds more of them than
    that format allows, or when a sheet's cells holding a value span a large
    and nearly empty rectangle (a stray value far from the register).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_XLS_BYTES + 1)
        if len(data) > MAX_XLS_BYTES:
            return {}
        stream = _Compound(data).stream(("workbook", "book"))
        del data
        walk = _Walk()
        facts = walk.run(stream)
    except _TooManyTexts:
        raise InputError(
            f"文件是 Excel 5.0/95 格式，文字单元格超过 {MAX_TEXT_CELLS:,} 个，不是 Excel 保存的工作簿",
            file=path.name,
            fix="用 Excel 或 WPS 打开后另存为 .xlsx 再处理",
        ) from None
    except (_Damaged, struct.error, IndexError, ValueError, OSError):
        return {}
    for name, (first_row, last_row, first_column, last_column, values) in walk.spans.items():
        if values:
            rows, columns = last_row - first_row + 1, last_column - first_column + 1
            extent = Extent(rows, columns, last_row + 1, last_column + 1, values)
            if extent.sparse:
                raise too_large(path.name, name, extent)
    return facts
