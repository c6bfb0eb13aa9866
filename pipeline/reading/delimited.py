"""Delimited text registers (.csv/.tsv/.txt): encoding, delimiter, header line, then Arrow.

The first megabyte decides the encoding (UTF-8 with or without BOM, else
GB18030, which covers GBK) and, with the known column names, the delimiter and
the header line below any title lines.  The body is then parsed by Arrow's
multi-threaded CSV reader.  ``source_row`` is the line number a clerk sees in a
text editor: blank lines are counted but yield no row.  Files Arrow cannot
take as a rectangle (rows of uneven width, values spanning lines that the line
count cannot follow) are read again by the ``csv`` module, slower but exact.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.errors import InputError
from pipeline.model import RawTable
from pipeline.reading.headers import count_known_headers
from pipeline.reading.table import HEADER_SEARCH_ROWS, TEXT_ARROW, TextColumn, build_table, detect_header

SAMPLE_BYTES = 1 << 20
DELIMITERS = (",", "\t", ";", "|")

#: More blank lines than this and counting them one by one costs more than the csv module.
_MAX_BLANK_LINES = 100_000

#: Rows of the wrong width put back by hand; more and the csv module reads the whole file.
_MAX_UNEVEN_ROWS = 10_000

#: Rows the csv module reads before they are handed to Arrow.
_CSV_BATCH_ROWS = 100_000

#: Largest block Arrow parses as one piece (its block size is a 32-bit int).
_MAX_BLOCK_BYTES = (1 << 31) - 1

_NOT_SPACE = re.compile(rb"\S")
_SAVE_AS = "用 Excel“另存为”“CSV UTF-8（逗号分隔）”，或用记事本另存为 UTF-8（或 GBK/ANSI）编码后再处理"
_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


@dataclass(frozen=True)
class _Layout:
    encoding: str  # Python codec: "utf-8" or "gb18030"
    start: int  # first byte after a BOM
    delimiter: str
    header_index: int  # 0-based line of the (last) header line
    header_cells: list[str]
    body: int  # first byte after the header line


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


def detect_encoding(data: bytes, label: str) -> tuple[str, int]:
    """(Python codec, BOM length) for UTF-8 (with or without BOM) or GB18030; else InputError."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise _encoding_error(label, name)
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8", len(codecs.BOM_UTF8)
    sample = data[:SAMPLE_BYTES]
    if b"\x00" in sample:  # UTF-16/32 without a BOM, or not text at all
        raise _encoding_error(label, _guess_encoding(sample))
    for codec in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(codec)().decode(sample, final=len(data) <= SAMPLE_BYTES)
        except UnicodeDecodeError:
            continue
        return codec, 0
    raise _encoding_error(label, _guess_encoding(sample))


def _whole_file_encoding(data: bytes, label: str) -> str:
    for codec in ("utf-8", "gb18030"):
        try:
            data.decode(codec)
        except UnicodeDecodeError:
            continue
        return codec
    raise _encoding_error(label, _guess_encoding(data[:SAMPLE_BYTES]))


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


def _layout(data: bytes, encoding: str, start: int, suffix: str, label: str) -> _Layout:
    whole = len(data) - start <= SAMPLE_BYTES
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
        layouts.append((score, delimiter, filled[index][0], cells))
    if not layouts:
        fix = "用 Excel 打开后另存为 CSV 再处理"
        raise InputError("文件开头的引号不成对，找不到表头", file=label, fix=fix)
    _, delimiter, header_index, cells = max(layouts, key=lambda layout: layout[0])
    body = start
    for _ in range(header_index + 1):
        newline = data.find(b"\n", body)
        body = len(data) if newline == -1 else newline + 1
    return _Layout(encoding, start, delimiter, header_index, cells, body)


def _line_numbers(data: bytes, body: int, lines_before: int, rows: int) -> np.ndarray | None:
    """1-based line numbers of the ``rows`` non-blank lines from byte ``body`` on.

    None when they cannot be told apart cheaply (too many blank lines) or the
    count does not add up (a quoted value spanning lines).
    """
    total = data.count(b"\n", body) + (0 if data.endswith(b"\n") else 1)
    if total == rows:  # the usual file: no blank line, one line per row
        return np.arange(total, dtype=np.int64) + lines_before + 1
    blank_starts: list[int] = []
    for pattern in (b"\n\n", b"\n\r\n"):
        position = data.find(pattern, body - 1)
        while position != -1:
            blank_starts.append(position + 1)
            if len(blank_starts) > _MAX_BLANK_LINES:
                return None
            position = data.find(pattern, position + 1)
    blank_lines = []
    counted, previous = 0, body
    for position in sorted(blank_starts):
        counted += data.count(b"\n", previous, position)
        previous = position
        blank_lines.append(counted)  # 0-based line within the body
    numbers = np.delete(np.arange(total, dtype=np.int64), blank_lines)
    return numbers + lines_before + 1 if len(numbers) == rows else None


def _mixed_encoding(data: bytes, layout: _Layout, label: str) -> InputError:
    try:
        data[layout.start :].decode(layout.encoding)
    except UnicodeDecodeError as error:
        position = layout.start + error.start
        name = "UTF-8" if layout.encoding == "utf-8" else "GBK"
        return _encoding_error(label, name, row=data.count(b"\n", 0, position) + 1)
    return _encoding_error(label, "")


def _parse(data: bytes, layout: _Layout, label: str, **options: Any) -> pa.Table:
    """Arrow's parse of the body, every column text; encoding faults -> InputError."""
    names = [f"c{j}" for j in range(len(layout.header_cells))]
    encoding = "utf8" if layout.encoding == "utf-8" else layout.encoding
    threads = options.pop("use_threads", True)
    # The whole body as one block: each column then comes back as one array.
    # Many small blocks parse on more threads, but gluing their chunks together
    # afterwards copies every column into fresh memory, which costs more.
    block_size = max(1, min(len(data) - layout.body + 1, _MAX_BLOCK_BYTES))
    try:
        return pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(data).slice(layout.body)),
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
    except UnicodeDecodeError:
        raise _mixed_encoding(data, layout, label) from None
    except pa.ArrowInvalid as error:
        if "UTF8" in str(error):
            raise _mixed_encoding(data, layout, label) from None
        raise


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


def _read_with_arrow(data: bytes, layout: _Layout, label: str) -> tuple[list[TextColumn], np.ndarray] | None:
    """The body through Arrow; None when only the csv module can read it exactly.

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
        table = _parse(data, layout, label)
    except pa.ArrowInvalid:
        try:
            table = _parse(data, layout, label, use_threads=False, invalid_row_handler=set_aside)
        except pa.ArrowInvalid:
            return None
    source_row = _line_numbers(data, layout.body, layout.header_index + 1, table.num_rows + len(uneven))
    if source_row is None:
        return None
    columns: list[TextColumn] = list(table.columns)
    return (_splice(columns, uneven, layout.delimiter) if uneven else columns), source_row


def _read_with_csv(data: bytes, layout: _Layout, label: str) -> tuple[list[TextColumn], np.ndarray]:
    """The body through the csv module, in batches so a large file never lives as Python lists."""
    try:
        text = data[layout.body :].decode(layout.encoding)
    except UnicodeDecodeError:
        raise _mixed_encoding(data, layout, label) from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=layout.delimiter)
    batches: list[tuple[int, list[pa.Array]]] = []
    records: list[list[str]] = []
    starts: list[int] = []
    before = 0

    def flush() -> None:
        columns = [pa.array(column, type=TEXT_ARROW) for column in zip_longest(*records, fillvalue="")]
        batches.append((len(records), columns))
        records.clear()

    try:
        for record in reader:
            if record:
                records.append(record)
                starts.append(before + 1)
                if len(records) == _CSV_BATCH_ROWS:
                    flush()
            before = reader.line_num
    except csv.Error as error:
        raise InputError(
            f"CSV 格式错误（{error}）",
            file=label,
            row=layout.header_index + 2 + before,
            fix="检查该行的引号是否成对，或用 Excel 打开后重新另存为 CSV",
        ) from None
    flush()
    # Rows may be shorter than the header or than each other: pad every batch to the widest.
    width = max(len(layout.header_cells), *(len(columns) for _, columns in batches))
    padded: list[TextColumn] = [
        pa.chunked_array(
            [
                columns[j] if j < len(columns) else pa.array([""] * length, type=TEXT_ARROW)
                for length, columns in batches
            ],
            type=TEXT_ARROW,
        )
        for j in range(width)
    ]
    return padded, np.asarray(starts, dtype=np.int64) + layout.header_index + 1


def read_delimited(path: Path, data: bytes) -> RawTable:
    """Read a CSV/TSV/TXT register whose bytes are ``data`` (see :mod:`pipeline.reading.register`)."""
    label = path.name
    encoding, start = detect_encoding(data, label)
    if b"\n" not in data[: SAMPLE_BYTES + start] and b"\r" in data:
        data = data.replace(b"\r", b"\n")  # classic Mac line ends
    if not _has_text(data, start):
        raise InputError("文件是空的", file=label, fix="请确认选对了文件，并已保存数据")
    if encoding == "utf-8" and len(data) > SAMPLE_BYTES and data[:SAMPLE_BYTES].isascii():
        encoding = _whole_file_encoding(data, label)  # the first megabyte cannot tell UTF-8 from GBK
    layout = _layout(data, encoding, start, path.suffix.lower(), label)
    header_only = InputError("只有表头，没有数据行", file=label, fix="在表头下面填入要办理的居民后再处理")
    if not _has_text(data, layout.body):
        raise header_only
    read = _read_with_arrow(data, layout, label)
    if read is None:
        read = _read_with_csv(data, layout, label)
    columns, source_row = read
    table = build_table(
        path=str(path),
        sheet="",
        header_row=layout.header_index + 1,
        header_cells=layout.header_cells,
        first_column=0,
        columns=columns,
        source_row=source_row,
    )
    if table is None:
        raise header_only
    return table
