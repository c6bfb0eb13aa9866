"""Delimited text registers (.csv/.tsv/.txt): encoding, delimiter, header line, then Arrow, block by block.

The first megabyte decides the encoding (UTF-8 with or without BOM, else
GB18030, which covers GBK) and, with the known column names, the delimiter and
the header line below any title lines.  The body is then read in blocks of
whole lines, each parsed by Arrow's CSV reader, so a file of any size is read
with bounded memory.  ``source_row`` is the row Excel or WPS shows when it
opens the file: blank lines are counted but yield no row, and a quoted value
spanning lines is one row, as a spreadsheet shows it (a text editor's line
numbers would drift from there on); a first line ``sep=;``, Excel's hint of
the delimiter, is no row, as Excel shows none for it.  From a block Arrow cannot
take as a rectangle (values spanning lines that the line count cannot follow,
too many rows of uneven width) to the end of the file, the ``csv`` module
reads instead, slower but exact.

When the first megabyte is plain ASCII it cannot tell UTF-8 from GBK: the
first block that is not decides.  A file of both is refused naming the line
where the second begins: UTF-8 text with GBK lines breaks UTF-8 decoding, but
GBK text with UTF-8 lines (two exports joined) decodes as GB18030 without an
error, garbled, so each GBK block is scanned for a run of UTF-8 Chinese.  A
value written as Excel's text formula (``="440123…"``) is read as Excel shows
it.  A line longer than :data:`MAX_LINE_BYTES`
(no line break for 64 MB) is refused; a cell longer than a spreadsheet holds
is read, cut and noted (:mod:`pipeline.reading.table`).

A UTF-16 file (Excel's and WPS's "Unicode text", some systems' exports) is
first rewritten as UTF-8 into an unnamed temporary file, which the rest reads
as any other: Arrow parses UTF-8 alone without a copy, and the line numbers do
not change.  UTF-32 is refused with a message saying how to save the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import tempfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from itertools import zip_longest
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.errors import InputError
from pipeline.files import os_errors
from pipeline.model import RawTable, TableSource
from pipeline.reading.headers import count_known_headers
from pipeline.reading.table import (
    HEADER_SEARCH_ROWS,
    MAX_SHEET_COLUMNS,
    TEXT_ARROW,
    TableShaper,
    TextColumn,
    detect_header,
    glue_blocks,
    refuse_resident_as_header,
    too_wide,
    warn_of_residents_above,
)
from pipeline.text.arrow import replace_masked

SAMPLE_BYTES = 1 << 20
DELIMITERS = (",", "\t", ";", "|")

#: A line longer than this (no line break for 64 MB) is not a register row: the file is refused.
MAX_LINE_BYTES = 64 << 20

#: More blank lines than this in a block and counting them one by one costs more than the csv module.
_MAX_BLANK_LINES = 100_000

#: Rows of the wrong width put back by hand per block; more and the csv module reads on.
_MAX_UNEVEN_ROWS = 10_000

#: Rows Arrow parses at once; blocks are glued into the chunk asked for.  Smaller blocks parse
#: faster (the text stays in cache): a 1,000,000-row CSV took 0.80 s of parsing in blocks of
#: 100,000 rows and 1.04 s in blocks of 400,000; gluing them copies the text once (~0.1 s).
PARSE_ROWS = 100_000

#: Most text a chunk holds, whatever its rows: a register of wide rows (a 30,000-character 备注 in
#: each) is checked in chunks of fewer rows, so memory stays that of an ordinary chunk (every stage
#: holds a few copies of a chunk's text: 10,000 such rows in one chunk peaked at 7.8 GB).  A
#: 400,000-row chunk of an ordinary register holds about 85 MB.
CHUNK_BYTES = 96 << 20

#: Most cells a block or a chunk holds, whatever its rows: a line of few characters may still hold
#: many cells (a CSV saved from a sheet with one stray value in column XFD runs every line to it with
#: 16,000 commas), and each cell costs its offsets and more at every stage: 11,764 such lines in one
#: chunk peaked at 5.4 GB while reading.  A 400,000-row chunk of a register of up to 60 columns fits.
CHUNK_CELLS = 24_000_000

#: Rows the csv module reads before they are handed to Arrow.
_CSV_BATCH_ROWS = 100_000

#: Largest block Arrow parses as one piece (its block size is a 32-bit int).
_MAX_BLOCK_BYTES = (1 << 31) - 1

#: Bytes of a block Arrow parses as one piece (see :func:`_parse`).
_PARSE_PIECE_BYTES = 4 << 20

#: Blocks are at least this large, whatever the chunk size asked for (tests ask for a few rows).
_MIN_BLOCK_BYTES = 1

_NOT_SPACE = re.compile(rb"\S")
_QUOTED = re.compile(r'"[^"]*"')
_SAVE_AS = "用 Excel“另存为”“CSV UTF-8（逗号分隔）”，或用记事本另存为 UTF-8（或 GBK/ANSI）编码后再处理"
# A workbook (zip: .xlsx/.xlsm/.ods; OLE2: .xls) renamed to .csv was otherwise "text in no known encoding".
#: The first bytes of a workbook: a zip container (xlsx, xlsm, ods) or an OLE2 compound file (xls,
#: and a password-protected xlsx).
WORKBOOK_SIGNATURES = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
_RENAME_WORKBOOK = "把扩展名改为 .xlsx（Excel 97-2003 格式的改为 .xls）后再处理，或用 Excel 打开后另存为 CSV"
_RECOPY = "从原处重新复制或导出该文件；或用 Excel 打开后另存为 CSV 再处理"
#: BOMs of encodings refused (UTF-16 is rewritten as UTF-8 before: :func:`utf16_codec`).
_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
)

#: Bytes of a UTF-16 register decoded at once while it is rewritten as UTF-8.
_TRANSCODE_BYTES = 1 << 20

#: Without a BOM, UTF-16 is told by its NUL bytes: at least this share of the high bytes (those of
#: ASCII characters: digits, delimiters, line ends), and none of the low ones.
_UTF16_NUL_SHARE = 0.2

#: Control characters no register's text holds: a sample decoded as UTF-16 with one of them is not UTF-16.
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")

# The csv module refuses fields above 128 KB by default; a long cell is a fault of its row, not of the file.
csv.field_size_limit(MAX_LINE_BYTES)


@dataclass(frozen=True)
class _Layout:
    encoding: str  # Python codec: "utf-8" or "gb18030"
    start: int  # first byte after a BOM
    delimiter: str
    header_index: int  # 0-based line of the (last) header line
    header_cells: list[str]
    body: int  # first byte after the header line
    settled: bool = True  # False while only ASCII has been seen (UTF-8 or GBK, not known yet)
    mac: bool = False  # classic Mac line ends (CR only)


def _guess_encoding(sample: bytes) -> str:
    """The encoding charset-normalizer sees in ``sample``, for the message ("" if none)."""
    from charset_normalizer import from_bytes

    best = from_bytes(sample[:65536]).best()
    name = best.encoding.replace("_", "-").upper() if best else ""
    return "UTF-16" if name.startswith("UTF-16") else name


def _encoding_error(label: str, name: str, row: int | None = None) -> InputError:
    if row is not None:
        return InputError(
            f"此处起有不是 {name} 编码的文字（文件可能混用了多种编码）", file=label, row=row, fix=_SAVE_AS
        )
    if not name:
        return InputError("文件编码无法识别（既不是 UTF-8 也不是 GBK）", file=label, fix=_SAVE_AS)
    return InputError(f"文件编码为 {name}，无法读取", file=label, fix=_SAVE_AS)


#: Characters beyond ASCII that must have decoded as UTF-8 before bytes that do not make a file one of
#: mixed encodings rather than GBK: GBK text seldom forms even one UTF-8 sequence, eight practically never.
_UTF8_EVIDENCE = 8


def _mostly_utf8(data: bytes | memoryview, error: UnicodeDecodeError) -> bool:
    """Whether the UTF-8 decoding of ``data`` that failed with ``error`` had read UTF-8 text before it.

    Then the bytes that broke it are another encoding mixed in, and reading it all as GBK would garble
    the rest.
    """
    lead_bytes = np.frombuffer(data, dtype=np.uint8, count=error.start) >= 0xC2
    return int(np.count_nonzero(lead_bytes)) >= _UTF8_EVIDENCE


#: Chinese characters in a row, as UTF-8, that make GBK text one of mixed encodings: GBK text forms
#: five (each a lead byte E4-E9 and two continuation bytes) about once in 10^11 bytes, and a line of
#: UTF-8 (an address, a title) nearly always holds them.
_UTF8_RUN = 5
#: Bytes scanned at once for such a run.
_UTF8_SLICE = 8 << 20


def _utf8_in_gbk(data: bytes | memoryview, lines_before: int, label: str) -> None:
    """Refuse GBK text holding a run of UTF-8 Chinese (files of both encodings joined), naming its line.

    GB18030 decodes UTF-8's bytes without an error, as other characters: without this, the rows
    after the join would be read, checked and sent with garbled names and addresses.  numpy does
    the scan without holding the GIL: lead bytes three apart first, then their continuations.
    """
    octets = np.frombuffer(data, dtype=np.uint8)
    span = 3 * _UTF8_RUN
    # A slice at a time, overlapping by a run: the masks of a 100 MB block would take 300 MB at once.
    for start in range(0, max(1, len(octets) - span + 1), _UTF8_SLICE):
        piece = octets[start : start + _UTF8_SLICE + span - 1]
        if len(piece) < span:
            return
        lead = (piece - np.uint8(0xE4)) < 6  # E4-E9: wraps below E4
        starts = lead[: len(piece) - span + 1].copy()
        for char in range(1, _UTF8_RUN):
            starts &= lead[3 * char : len(piece) - span + 1 + 3 * char]
        candidates = np.flatnonzero(starts)
        for offset in (o for o in range(1, span) if o % 3):
            candidates = candidates[(piece[candidates + offset] & 0xC0) == 0x80]
        if len(candidates):
            line = lines_before + int(np.count_nonzero(octets[: start + candidates[0]] == 0x0A)) + 1
            raise _encoding_error(label, "GBK", row=line)


def _utf8_in_gbk_rest(handle: BinaryIO, offset: int, lines_before: int, layout: _Layout, label: str) -> None:
    """:func:`_utf8_in_gbk` over the file from byte ``offset`` on, a piece at a time (before a csv-module
    read, which takes no blocks)."""
    handle.seek(offset)
    line_end = b"\r" if layout.mac else b"\n"
    overlap = 3 * _UTF8_RUN - 1  # a run cut by a piece's end is found in the next
    carry, lines = b"", lines_before
    while chunk := handle.read(1 << 24):
        data = carry + chunk
        _utf8_in_gbk(data.replace(b"\r", b"\n") if layout.mac else data, lines, label)
        lines += data.count(line_end, 0, max(0, len(data) - overlap))
        carry = data[-overlap:]


#: A value written as Excel's text formula, ``="440123…"``: exports write numbers so that Excel keeps
#: every digit, some write every value so.  Excel opening the file shows what is inside the quotes.
_TEXT_FORMULA = r'^\s*="(.*)"\s*$'


def _excel_text_formulas(
    columns: list[TextColumn], data: bytes | memoryview | None = None
) -> list[TextColumn]:
    """``columns`` with each ``="…"`` value as Excel shows it (``data``: the block's bytes, to skip most)."""
    if data is not None:
        whole = data.obj if isinstance(data, memoryview) else data
        if not isinstance(whole, bytes) or not _holds_text_formula(whole, len(data)):
            return columns
    return [_shown_text(column) for column in columns]


def _holds_text_formula(data: bytes, end: int) -> bool:
    """Whether ``data[:end]`` holds ``="``: a search for ``=`` (memchr, twenty times faster than
    for the pair) first, the pair's own search once a few ``=`` are not followed by ``"``."""
    at = data.find(b"=", 0, end)
    for _ in range(64):
        if at == -1 or data.startswith(b'"', at + 1):
            return at != -1 and at + 1 < end
        at = data.find(b"=", at + 1, end)
    return data.find(b'="', at, end) != -1


def _shown_text(column: TextColumn) -> TextColumn:
    """One column with each ``="…"`` value as Excel shows it: the regex runs on those values alone
    (over a whole column of a few such values, it cost more than parsing the column)."""
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([_shown_text(piece) for piece in column.chunks], type=column.type)
    found = pc.match_substring(column, '="')
    if not pc.any(found).as_py():
        return column
    flags = pc.fill_null(found, False).to_numpy(zero_copy_only=False)
    shown = pc.replace_substring_regex(column.filter(found), _TEXT_FORMULA, r"\1")
    return replace_masked(column, flags, shown)


def _text_but_nul(sample: bytes) -> bool:
    """Whether ``sample`` is UTF-8 or GB18030 text once its NUL bytes are left out (a copy cut short)."""
    rest = sample.replace(b"\x00", b"")
    for codec in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(codec)().decode(rest, final=False)
        except UnicodeDecodeError:
            continue
        return bool(rest.strip())
    return False


def detect_encoding(data: bytes, label: str, *, whole: bool | None = None) -> tuple[str, int]:
    """(Python codec, BOM length) for UTF-8 (with or without BOM) or GB18030; else InputError.

    ``data`` is the file or its first bytes; ``whole`` says which (default: its length tells).
    """
    if data.startswith(WORKBOOK_SIGNATURES):
        raise InputError("文件内容是 Excel 工作簿，不是文本（CSV）文件", file=label, fix=_RENAME_WORKBOOK)
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise _encoding_error(label, name)
    final = len(data) <= SAMPLE_BYTES if whole is None else whole
    if data.startswith(codecs.BOM_UTF8):
        body = data[len(codecs.BOM_UTF8) : SAMPLE_BYTES]
        try:
            codecs.getincrementaldecoder("utf-8")().decode(body, final=final)
        except UnicodeDecodeError as error:
            if _mostly_utf8(body, error):  # UTF-8 text with lines of another encoding pasted in
                raise _mixed_encoding(data[: SAMPLE_BYTES], "utf-8", 0, label) from None
            # A UTF-8 BOM put before GBK text (a tool that "saves as UTF-8" by adding one): GBK it is.
            try:
                codecs.getincrementaldecoder("gb18030")().decode(body, final=final)
            except UnicodeDecodeError:
                return "utf-8", len(codecs.BOM_UTF8)  # reading says where the text breaks
            return "gb18030", len(codecs.BOM_UTF8)
        return "utf-8", len(codecs.BOM_UTF8)
    sample = data[:SAMPLE_BYTES]
    if b"\x00" in sample:  # UTF-16/32 without a BOM, text with NUL bytes, or not text at all
        name = _guess_encoding(sample)
        if not name.startswith(("UTF-16", "UTF-32")) and _text_but_nul(sample):
            row = sample.count(b"\n", 0, sample.index(b"\x00")) + 1
            problem = "此处有空字符（NUL），文件可能没有复制完整或已损坏"
            raise InputError(problem, file=label, row=row, fix=_RECOPY)
        raise _encoding_error(label, name)
    for codec in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(codec)().decode(sample, final=final)
        except UnicodeDecodeError as error:
            if codec == "utf-8" and _mostly_utf8(sample, error):  # GB18030 would read it all, garbled
                raise _mixed_encoding(sample, "utf-8", 0, label) from None
            continue
        return codec, 0
    _utf8_in_gbk(sample, 0, label)  # GBK, then UTF-8 that GB18030 cannot decode either
    raise _encoding_error(label, _guess_encoding(sample))


def utf16_codec(head: bytes) -> str | None:
    """The Python codec of a UTF-16 text file from its first bytes, or None when it is not UTF-16.

    A BOM tells; without one, where the NUL bytes fall does (the high byte of
    every ASCII character: a register's digits, delimiters and line ends),
    provided the sample then decodes to text.
    """
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return None
    if head.startswith(codecs.BOM_UTF16_LE):
        return "utf-16-le"
    if head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16-be"
    sample = head[: min(len(head), SAMPLE_BYTES) & ~1]
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    for codec, high, low in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
        if low.count(0) or high.count(0) < len(high) * _UTF16_NUL_SHARE:
            continue
        try:
            text = codecs.getincrementaldecoder(codec)().decode(sample, final=False)
        except UnicodeDecodeError:
            continue
        return None if _NOT_TEXT.search(text) else codec
    return None


def _transcode(opener: Callable[[], BinaryIO], codec: str, copy: BinaryIO, label: str) -> None:
    """Write the register ``opener`` gives, in ``codec``, to ``copy`` as UTF-8 (without a BOM)."""
    decoder = codecs.getincrementaldecoder(codec)()
    lines = 0
    with opener() as handle:
        handle.seek(0)  # a duplicated descriptor is where the last reader left it
        while True:
            piece = handle.read(_TRANSCODE_BYTES)
            try:
                text = decoder.decode(piece, final=not piece)
            except UnicodeDecodeError as error:
                # The error's text is what the decoder held over from the last piece, then this one.
                good = bytes(error.object[: error.start & ~1]).decode(codec, "replace")
                raise _encoding_error(label, "UTF-16", lines + good.count("\n") + 1) from None
            if not copy.tell():
                text = text.removeprefix("\ufeff")  # the BOM: UTF-8 text goes without one
            copy.write(text.encode("utf-8"))
            lines += text.count("\n")
            if not piece:
                break
    copy.flush()


def _as_utf8(opener: Callable[[], BinaryIO], codec: str, label: str) -> tuple[Callable[[], BinaryIO], int]:
    """A UTF-16 register rewritten as UTF-8 in an unnamed temporary file: (its opener, its size).

    The copy has no name on disk (it goes when the last handle on it is
    closed, whatever ends the run) and takes at most half as much room again
    as the register (a character of two UTF-16 bytes takes at most three).
    """
    copy = tempfile.TemporaryFile()  # noqa: SIM115 - kept open by the opener below, closed with it
    try:
        _transcode(opener, codec, copy, label)
    except BaseException:
        copy.close()
        raise
    size = copy.tell()

    def reopen() -> BinaryIO:
        handle = os.fdopen(os.dup(copy.fileno()), "rb")
        handle.seek(0)  # the duplicate shares its position with the others: each reader starts at the top
        return handle

    return reopen, size


def _has_text(data: bytes, start: int) -> bool:
    """Whether anything but whitespace follows byte ``start`` (without copying a large file)."""
    return _NOT_SPACE.search(data, start) is not None


def _split(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter), [])


def _records(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """The first non-blank records of ``text``: (0-based line where each ends, cells).

    Parsed as CSV, not split at line ends: a header cell typed with Alt+Enter
    in Excel is saved as a quoted value spanning two lines.  Blank lines
    neither count towards the search window nor hide the header.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                records.append((reader.line_num - 1, cells))
                if len(records) > HEADER_SEARCH_ROWS:
                    break
    except csv.Error:  # an unbalanced quote in the sample: what was read so far decides
        pass
    return records


#: Excel's first line naming the delimiter to split on: a directive, not a row (but behind a BOM, where
#: Excel shows it as one).
_SEPARATOR_HINT = re.compile(rb'"?sep=[^\n"]"?\r?\n')


def _layout(data: bytes, encoding: str, start: int, suffix: str, label: str, whole: bool) -> _Layout:
    """Delimiter and header line from the first bytes of the file (``data``; ``whole``: all of it).

    Lines are counted as Excel numbers its rows: a first line ``sep=;``
    (Excel's hint of the delimiter) is none of them.
    """
    hint = _SEPARATOR_HINT.match(data) if start == 0 else None
    if hint is not None:
        start = hint.end()
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(
        data[start : start + SAMPLE_BYTES], final=whole
    )
    if not whole and "\n" in text:
        text = text[: text.rindex("\n") + 1]  # cut mid-line
    if not text.strip():
        raise InputError("文件开头全是空行，找不到表头", file=label, fix="删去表头上方的空行后再处理")
    order = ("\t", *(d for d in DELIMITERS if d != "\t")) if suffix == ".tsv" else DELIMITERS

    layouts = []
    for preference, delimiter in enumerate(order):
        filled = _records(text, delimiter)
        rows = [cells for _, cells in filled]
        if not rows:
            continue
        found = detect_header(rows)
        index, cells = found or (0, rows[0])
        # Known column names first, then more columns; ties go to the usual delimiter.
        score = (count_known_headers(cells) if found else -1, len(cells), -preference)
        layouts.append((score, delimiter, filled[index][0], cells, filled[:index]))
    if not layouts:
        fix = "用 Excel 打开后另存为 CSV 再处理"
        raise InputError("文件开头的引号不成对，找不到表头", file=label, fix=fix)
    _, delimiter, header_index, cells, above = max(layouts, key=lambda layout: layout[0])
    refuse_resident_as_header(cells, label, header_index + 1)
    warn_of_residents_above(label, [r for _, r in above], [line + 1 for line, _ in above], header_index + 1)
    body = start
    for _ in range(header_index + 1):
        newline = data.find(b"\n", body)
        body = len(data) if newline == -1 else newline + 1
    return _Layout(encoding, start, delimiter, header_index, cells, body)


def _line_numbers(data: bytes | memoryview, lines_before: int, rows: int, ends: int) -> np.ndarray | None:
    """1-based line numbers of the ``rows`` non-blank lines of ``data`` (whose first is ``lines_before + 1``).

    None when they cannot be told apart cheaply (too many blank lines) or the
    count does not add up (a quoted value spanning lines).
    """
    total = ends + (0 if not len(data) or data[-1:] == b"\n" else 1)
    if total == rows:  # the usual block: no blank line, one line per row
        return np.arange(total, dtype=np.int64) + lines_before + 1
    data = bytes(data)
    blank_starts: list[int] = []
    if data.startswith((b"\n", b"\r\n")):
        blank_starts.append(0)
    for pattern in (b"\n\n", b"\n\r\n"):
        position = data.find(pattern)
        while position != -1:
            blank_starts.append(position + 1)
            if len(blank_starts) > _MAX_BLANK_LINES:
                return None
            position = data.find(pattern, position + 1)
    blank_lines = []
    counted, previous = 0, 0
    for position in sorted(blank_starts):
        counted += data.count(b"\n", previous, position)
        previous = position
        blank_lines.append(counted)  # 0-based line within the block
    numbers = np.delete(np.arange(total, dtype=np.int64), blank_lines)
    # A last line of only spaces is skipped by neither Arrow nor this count: it is a row, blank.
    return numbers + lines_before + 1 if len(numbers) == rows else None


def _codec_name(encoding: str) -> str:
    return "UTF-8" if encoding == "utf-8" else "GBK"


def _mixed_encoding(data: bytes | memoryview, encoding: str, lines_before: int, label: str) -> InputError:
    """The error for a block that does not decode: it names the first line that does not."""
    data = bytes(data)
    try:
        data.decode(encoding)
    except UnicodeDecodeError as error:
        return _encoding_error(
            label, _codec_name(encoding), row=lines_before + data.count(b"\n", 0, error.start) + 1
        )
    return _encoding_error(label, "")


class _NotRectangular(Exception):
    """Arrow cannot read this block exactly: the csv module reads from here on."""


class _TooWide(Exception):
    """A line of the body has more values than a spreadsheet has columns."""

    def __init__(self, line: int, width: int) -> None:
        super().__init__(line, width)
        self.line, self.width = line, width


def _width(text: str, delimiter: str) -> int:
    """How many values a line holds, without splitting it (a line may be 64 MB of delimiters)."""
    return _QUOTED.sub("", text).count(delimiter) + 1


def _parse(data: bytes | memoryview, layout: _Layout, **options: Any) -> pa.Table:
    """Arrow's parse of ``data`` (whole lines), every column text."""
    names = [f"c{j}" for j in range(len(layout.header_cells))]
    encoding = "utf8" if layout.encoding == "utf-8" else layout.encoding
    threads = options.pop("use_threads", True)
    # Parsed in pieces on Arrow's threads: a piece's text stays in cache, which halves the CPU
    # of a large block; the pieces are copied together once, when the chunk is glued.  Read on one
    # thread (rows set aside, numbered), the block is one piece.
    block_size = max(1, min(len(data) + 1, _PARSE_PIECE_BYTES if threads else _MAX_BLOCK_BYTES))
    return pacsv.read_csv(
        pa.BufferReader(pa.py_buffer(data)),
        read_options=pacsv.ReadOptions(
            column_names=names, encoding=encoding, use_threads=threads, block_size=block_size
        ),
        parse_options=pacsv.ParseOptions(delimiter=layout.delimiter, ignore_empty_lines=True, **options),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, TEXT_ARROW),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _splice(columns: list[TextColumn], uneven: list[tuple[int, str]], delimiter: str) -> list[TextColumn]:
    """Put rows Arrow set aside (too few or too many values) back in their places, padded."""
    values = [_split(text, delimiter) for _, text in uneven]
    positions = np.asarray([number - 1 for number, _ in uneven], dtype=np.int64)
    kept = len(columns[0]) if columns else 0
    order = np.empty(kept + len(uneven), dtype=np.int64)
    set_aside = np.zeros(len(order), dtype=bool)
    set_aside[positions] = True
    order[~set_aside] = np.arange(kept)
    order[positions] = kept + np.arange(len(uneven))
    width = max(len(columns), *map(len, values))
    spliced: list[TextColumn] = []
    for j in range(width):
        column = columns[j] if j < len(columns) else pa.array([""] * kept, type=TEXT_ARROW)
        extra = pa.array([row[j] if j < len(row) else "" for row in values], type=TEXT_ARROW)
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        spliced.append(pa.chunked_array([*chunks, extra], type=TEXT_ARROW).take(pa.array(order)))
    return spliced


def _is_encoding_fault(error: Exception) -> bool:
    return isinstance(error, UnicodeDecodeError) or "UTF8" in str(error) or "UTF-8" in str(error)


def _arrow_block(
    data: bytes | memoryview, layout: _Layout, lines_before: int, ends: int
) -> tuple[list[TextColumn], np.ndarray]:
    """One block of whole lines through Arrow; raises _NotRectangular or an encoding fault.

    Rows of the wrong width make Arrow stop; it then reads again on one thread,
    which numbers the rows it sets aside, and they are put back in place.
    """
    uneven: list[tuple[int, str]] = []

    def set_aside(row: Any) -> str:
        if len(uneven) >= _MAX_UNEVEN_ROWS:
            return "error"
        uneven.append((row.number, row.text))
        return "skip"

    try:
        table = _parse(data, layout)
    except pa.ArrowInvalid as error:
        if _is_encoding_fault(error):
            raise
        try:
            table = _parse(data, layout, use_threads=False, invalid_row_handler=set_aside)
        except pa.ArrowInvalid as again:
            if _is_encoding_fault(again):
                raise
            raise _NotRectangular from None
    source_row = _line_numbers(data, lines_before, table.num_rows + len(uneven), ends)
    if source_row is None:
        raise _NotRectangular
    for number, text in uneven:
        if len(text) > MAX_SHEET_COLUMNS and (width := _width(text, layout.delimiter)) > MAX_SHEET_COLUMNS:
            raise _TooWide(int(source_row[number - 1]), width)
    columns: list[TextColumn] = list(table.columns)
    return (_splice(columns, uneven, layout.delimiter) if uneven else columns), source_row


@dataclass
class _Block:
    data: bytes | memoryview
    offset: int  # byte offset of the block in the file
    lines_before: int  # lines of the file before the block
    lines: int  # line ends in the block
    final: bool = False  # the block ends where the file does


def _ends_inside_quotes(block: _Block) -> bool:
    """Whether a block that is not the file's last may end inside a quoted value (odd count of quotes).

    Arrow reads a line end as the end of a row even inside quotes; a value
    spanning lines is found by the line count not adding up, but one split
    by the block's end adds up in both halves.  A stray quote inside a value
    also makes the count odd: the rest is then read by the csv module, exact.
    """
    if block.final:
        return False
    data = block.data
    whole = data.obj if isinstance(data, memoryview) else data
    assert isinstance(whole, bytes)
    # Most registers quote nothing: one memchr finds that, where counting reads every byte.
    return whole.find(b'"', 0, len(data)) != -1 and _count_byte(data, b'"') % 2 == 1


#: Bytes compared at once by :func:`_count_byte`: the comparison's result stays in the cache.
_COUNT_SLICE = 1 << 20


def _count_byte(data: bytes | memoryview, byte: bytes) -> int:
    """How often ``byte`` occurs in ``data`` (numpy counts without the GIL, ``bytes.count`` holds it).

    Counted a slice at a time: comparing a 20 MB block at once wrote a 20 MB
    array of results, fresh memory the kernel had to hand over page by page
    (72 ms for the 1M-row bench register; 25 ms in slices of 1 MB).
    """
    bytes_ = np.frombuffer(data, dtype=np.uint8)
    value = ord(byte)
    return sum(
        int(np.count_nonzero(bytes_[start : start + _COUNT_SLICE] == value))
        for start in range(0, len(bytes_), _COUNT_SLICE)
    )


def _too_long(label: str, line: int) -> InputError:
    return InputError(
        f"一行超过 {MAX_LINE_BYTES >> 20} MB 且没有换行，不是登记表的一行",
        file=label,
        row=line,
        fix="确认选对了文件；登记表每行是一位居民，用 Excel 打开后另存为 CSV 再处理",
    )


def _blocks(handle: BinaryIO, layout: _Layout, size: int, label: str) -> Generator[_Block, None, None]:
    """The body in blocks of about ``size`` bytes, each ending at a line end (the last one: at the end).

    A block is cut after its last line end and the next read starts there
    (the file is read again from that point, not copied): no byte is copied
    on the way to Arrow.
    """
    offset, lines = layout.body, layout.header_index + 1
    while True:
        handle.seek(offset)
        want = size
        while True:
            data = handle.read(want)
            if layout.mac:
                data = data.replace(b"\r", b"\n")
            if not data:
                return
            cut = data.rfind(b"\n")
            if cut != -1 or len(data) < want:
                break
            if want > MAX_LINE_BYTES:
                raise _too_long(label, lines + 1)
            want *= 2
            handle.seek(offset)
        if cut == -1:  # the last line, without a line end
            if len(data) > MAX_LINE_BYTES:
                raise _too_long(label, lines + 1)
            yield _Block(data, offset, lines, 0, final=True)
            return
        block = memoryview(data)[: cut + 1] if cut + 1 < len(data) else data
        count = _count_byte(data, b"\n")
        yield _Block(block, offset, lines, count, final=len(data) < want and cut + 1 == len(data))
        offset += cut + 1
        lines += count


def _settle(block: _Block, layout: _Layout, label: str) -> _Layout:
    """The layout with its encoding known, once a block that is not plain ASCII shows it."""
    # A block is a view of the bytes read; those hold at most one line more, which may say "not ASCII" early.
    whole = block.data.obj if isinstance(block.data, memoryview) else block.data
    if layout.settled or (isinstance(whole, bytes) and whole.isascii()):
        return layout
    data = bytes(block.data)
    for codec in ("utf-8", "gb18030"):
        try:
            data.decode(codec)
        except UnicodeDecodeError as error:
            if codec == "utf-8" and _mostly_utf8(data, error):
                raise _mixed_encoding(data, "utf-8", block.lines_before, label) from None
            continue
        return replace(layout, encoding=codec, settled=True)
    _utf8_in_gbk(data, block.lines_before, label)
    raise _encoding_error(label, _guess_encoding(data[:SAMPLE_BYTES]))


def _csv_batches(
    handle: BinaryIO, layout: _Layout, offset: int, lines_before: int, label: str
) -> Iterator[tuple[list[TextColumn], np.ndarray]]:
    """From byte ``offset`` to the end through the csv module, in batches of whole records."""
    if not layout.settled:
        layout = _settle_rest(handle, layout, offset, label, lines_before)
    if layout.encoding == "gb18030":
        _utf8_in_gbk_rest(handle, offset, lines_before, layout, label)
    handle.seek(offset)
    text = io.TextIOWrapper(handle, encoding=layout.encoding, newline="")
    reader = csv.reader(text, delimiter=layout.delimiter)
    records: list[list[str]] = []
    starts: list[int] = []
    before = 0  # lines read, for the messages about the text itself
    # A spreadsheet shows a value spanning lines, and each blank line, as one row: rows are counted
    # in records, so a row's number is the one Excel or WPS shows when it opens the file.
    counted = 0

    def batch() -> tuple[list[TextColumn], np.ndarray]:
        width = max(len(layout.header_cells), *(len(r) for r in records))
        columns: list[TextColumn] = [
            pa.array(column, type=TEXT_ARROW) for column in zip_longest(*records, fillvalue="")
        ]
        columns += [pa.array([""] * len(records), type=TEXT_ARROW)] * (width - len(columns))
        rows = np.asarray(starts, dtype=np.int64) + lines_before
        records.clear()
        starts.clear()
        return _excel_text_formulas(columns), rows

    # A record of several lines, one of them as wide as a row: a quote left open swallowed rows.
    row_commas = len(layout.header_cells) - 1
    try:
        for record in reader:
            if len(record) > MAX_SHEET_COLUMNS:
                raise too_wide(label, len(record), row=lines_before + counted + 1)
            several_lines = reader.line_num - before > 1
            if several_lines and row_commas >= 2 and _swallows_rows(record, layout, row_commas):
                raise _unclosed_quote(label, lines_before + before + 1, lines_before + reader.line_num)
            counted += 1
            if record:
                records.append(record)
                starts.append(counted)
                if len(records) >= _CSV_BATCH_ROWS:
                    yield batch()
            before = reader.line_num
    except UnicodeDecodeError:
        raise _encoding_error(label, _codec_name(layout.encoding), row=lines_before + before + 1) from None
    except csv.Error as error:
        raise InputError(
            f"CSV 格式错误（{_csv_reason(error)}）",
            file=label,
            row=lines_before + before + 1,
            fix="检查该行的引号是否成对，或用 Excel 打开后重新另存为 CSV",
        ) from None
    finally:
        text.detach()
    if records:
        yield batch()


def _swallows_rows(record: list[str], layout: _Layout, delimiters: int) -> bool:
    """Whether a value of ``record`` spans lines one of which holds a row's worth of delimiters."""
    return any(
        line.count(layout.delimiter) >= delimiters for value in record for line in value.splitlines()[1:]
    )


def _unclosed_quote(label: str, first: int, last: int) -> InputError:
    return InputError(
        f"引号不成对：从这一行起到第 {last} 行，共 {last - first + 1} 行被读成了同一个单元格，"
        "其中的居民会被漏掉",
        file=label,
        row=first,
        fix="在 Excel 或记事本中删去这一行多余的引号（或补上另一半），保存后重新处理",
    )


def _settle_rest(handle: BinaryIO, layout: _Layout, offset: int, label: str, lines_before: int) -> _Layout:
    """Decide UTF-8 or GBK by reading the rest of the file (only before a csv-module read); UTF-8 text
    with other bytes mixed in raises the error naming the line (``lines_before``: lines before ``offset``)."""
    handle.seek(offset)
    decoder = codecs.getincrementaldecoder("utf-8")()
    evidence = 0  # UTF-8 characters beyond ASCII read so far
    try:
        while chunk := handle.read(1 << 24):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                evidence += int(np.count_nonzero(np.frombuffer(chunk, np.uint8, count=error.start) >= 0xC2))
                if evidence >= _UTF8_EVIDENCE:
                    raise _mixed_encoding(chunk, "utf-8", lines_before, label) from None
                raise
            evidence += int(np.count_nonzero(np.frombuffer(chunk, np.uint8) >= 0xC2))
            lines_before += chunk.count(b"\n")
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return replace(layout, encoding="gb18030", settled=True)
    return replace(layout, encoding="utf-8", settled=True)


class _UpTo(io.RawIOBase):
    """A binary file read no further than ``end``: a register still being written (appended to
    by another program) is read as it was when it was opened, not for as long as it grows."""

    def __init__(self, raw: BinaryIO, end: int) -> None:
        super().__init__()
        self._raw, self._end = raw, end

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def read(self, size: int | None = -1) -> bytes:
        room = max(0, self._end - self._raw.tell())
        return self._raw.read(room if size is None or size < 0 else min(size, room))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


def _read_body(
    opener: Callable[[], BinaryIO], layout: _Layout, block_bytes: int, label: str, end: int
) -> Iterator[tuple[list[TextColumn], np.ndarray]]:
    """The body's rows up to byte ``end``, block by block: (text columns, line numbers)."""
    with cast(BinaryIO, _UpTo(opener(), end)) as handle:
        blocks = _blocks(
            handle, layout, block_bytes, label
        )  # a generator: closed when the csv module takes over
        for block in blocks:
            layout = _settle(block, layout, label)
            if layout.encoding == "gb18030":
                _utf8_in_gbk(block.data, block.lines_before, label)
            try:
                if _ends_inside_quotes(block):
                    raise _NotRectangular
                columns, source_row = _arrow_block(block.data, layout, block.lines_before, block.lines)
                yield _excel_text_formulas(columns, block.data), source_row
            except _NotRectangular:
                blocks.close()
                yield from _csv_batches(handle, layout, block.offset, block.lines_before, label)
                return
            except _TooWide as wide:
                raise too_wide(label, wide.width, row=wide.line) from None
            except (pa.ArrowInvalid, UnicodeDecodeError):
                raise _mixed_encoding(block.data, layout.encoding, block.lines_before, label) from None


def _text_bytes(column: TextColumn) -> int:
    """Bytes of text in ``column`` (its values, not their offsets), read from the offsets alone."""
    total = 0
    for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
        if len(chunk):
            offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)
            total += int(offsets[chunk.offset + len(chunk)] - offsets[chunk.offset])
    return total


def _gathered(
    blocks: Iterator[tuple[list[TextColumn], np.ndarray]], rows: int
) -> Iterator[tuple[list[TextColumn], np.ndarray]]:
    """``blocks`` glued together, at most ``rows`` rows, :data:`CHUNK_BYTES` and :data:`CHUNK_CELLS` at
    once (a larger block alone, as it is).

    The first block is handed on alone, as soon as it is parsed, then two
    glued together, then four, and so on up to ``rows``: whoever takes them
    starts at once and never waits long for the next while the rest is read.
    """
    pending: list[tuple[list[TextColumn], np.ndarray]] = []
    count = size = cells = 0
    wanted = 1  # blocks
    for columns, source_row in blocks:
        text, held = sum(map(_text_bytes, columns)), len(source_row) * len(columns)
        full = count + len(source_row) > rows or size + text > CHUNK_BYTES or cells + held > CHUNK_CELLS
        if pending and full:
            yield glue_blocks(pending)
            pending, count, size, cells = [], 0, 0, 0
        pending.append((columns, source_row))
        count += len(source_row)
        size += text
        cells += held
        if len(pending) >= wanted:
            yield glue_blocks(pending)
            wanted *= 2
            pending, count, size, cells = [], 0, 0, 0
    if pending:
        yield glue_blocks(pending)


def _csv_reason(error: csv.Error) -> str:
    """What the csv module found wrong with a line, in Chinese (its own text is English)."""
    text = str(error)
    if text.startswith("field larger than field limit"):
        return f"一个单元格超过 {MAX_LINE_BYTES >> 20} MB"
    if "NUL" in text:
        return "行中有空字符（NUL）"
    if "new-line character" in text:
        return "没有加引号的单元格中有换行符"
    if "expected after" in text:
        return "引号后面紧跟了别的字符，引号不成对"
    return "无法按 CSV 拆分这一行"


def _sample_columns(head: bytes, layout: _Layout, label: str) -> list[TextColumn]:
    """The columns of the rows in the first bytes (blank rows included), to decide the table's columns."""
    sample = head[layout.body :]
    if layout.mac:
        sample = sample.replace(b"\r", b"\n")
    cut = sample.rfind(b"\n")
    sample = sample[: cut + 1] if cut != -1 and len(head) > SAMPLE_BYTES else sample
    if not _has_text(sample, 0):
        return []
    encoding = layout.encoding
    reader = csv.reader(
        io.StringIO(sample.decode(encoding, errors="replace"), newline=""), delimiter=layout.delimiter
    )
    records = []
    for record in reader:
        if len(record) > MAX_SHEET_COLUMNS:
            raise too_wide(label, len(record), row=layout.header_index + 1 + reader.line_num)
        records.append(record)
    width = max((len(r) for r in records), default=0)
    return [pa.array([r[j] if j < len(r) else "" for r in records], type=TEXT_ARROW) for j in range(width)]


def open_delimited(path: Path, size: int, opener: Callable[[], BinaryIO] | None = None) -> TableSource:
    """Open a CSV/TSV/TXT register of ``size`` bytes: its header found, its rows read on demand.

    ``opener`` gives a fresh binary file object of the register each time it
    is called (default: opening ``path``).

    Everything that can be judged from the first megabyte (encoding, empty
    file, header, no data rows) raises :class:`InputError` here; what only
    the rest of the file shows (a later line in another encoding, an
    unbalanced quote) raises it while the rows are read.

    ``read(chunk_rows)`` parses blocks of :data:`PARSE_ROWS` rows and hands
    them on glued together: the first alone, then two, four and so on, never
    more than ``chunk_rows`` rows at once.
    """
    label = path.name
    opener = opener or (lambda: open(path, "rb"))  # noqa: SIM115 - each caller closes what it opens
    with os_errors("读取文件", path, kind=InputError), opener() as handle:
        head = handle.read(SAMPLE_BYTES + 4)
    codec = utf16_codec(head)
    if codec is not None:
        with os_errors("读取文件", path, kind=InputError):
            opener, size = _as_utf8(opener, codec, label)
            with opener() as handle:
                head = handle.read(SAMPLE_BYTES + 4)
    whole = len(head) >= size
    encoding, start = detect_encoding(head, label, whole=whole)
    mac = b"\n" not in head and b"\r" in head
    if mac:
        head = head.replace(b"\r", b"\n")  # classic Mac line ends
    if not _has_text(head, start) and whole:
        raise InputError("文件是空的", file=label, fix="请确认选对了文件，并已保存数据")
    layout = _layout(head, encoding, start, path.suffix.lower(), label, whole)
    layout = replace(layout, mac=mac, settled=whole or not head.isascii())
    header_only = InputError("只有表头，没有数据行", file=label, fix="在表头下面填入要办理的居民后再处理")
    if whole and not _has_text(head, layout.body):
        raise header_only
    header_cells = layout.header_cells
    if len(header_cells) > MAX_SHEET_COLUMNS:
        raise too_wide(label, len(header_cells), row=layout.header_index + 1)
    shaper = TableShaper(
        path=str(path),
        sheet="",
        header_row=layout.header_index + 1,
        header_cells=header_cells,
        first_column=0,
    )
    shaper.decide(_sample_columns(head, layout, label) or [pa.array([], type=TEXT_ARROW)] * len(header_cells))
    body_bytes = max(1, size - layout.body)
    sample_lines = max(1, head.count(b"\n", layout.body))
    line_bytes = max(1.0, (min(len(head), size) - layout.body) / sample_lines)
    line_cells = 1 + head.count(layout.delimiter.encode("ascii"), layout.body) / sample_lines  # about

    def read(chunk_rows: int) -> Iterator[RawTable]:
        parse_rows = min(chunk_rows, PARSE_ROWS, max(1, int(CHUNK_CELLS / line_cells)))
        block_bytes = int(min(_MAX_BLOCK_BYTES, CHUNK_BYTES, max(_MIN_BLOCK_BYTES, parse_rows * line_bytes)))
        produced = False
        with os_errors("读取文件", path, kind=InputError):
            body = _read_body(opener, layout, block_bytes, label, size)
            for columns, source_row in _gathered(body, chunk_rows):
                table = shaper.push(columns, source_row)
                if table is not None:
                    produced = True
                    yield table
        shaper.finish()
        if not produced:
            raise header_only

    return TableSource(
        path=str(path),
        sheet="",
        header_row=layout.header_index + 1,
        headers=shaper.headers,
        column_positions=shaper.positions,
        read=read,
        estimated_rows=int(body_bytes / line_bytes),
    )
