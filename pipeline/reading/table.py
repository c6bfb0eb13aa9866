"""What the workbook and CSV readers share: finding the header row and assembling a RawTable.

Both readers hand over the rows they found as text; this module decides which
row is the header, names the columns, drops blank rows and builds the frame of
pandas ``str`` (Arrow-backed) columns every later stage works on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.files import numbered
from pipeline.model import RawTable
from pipeline.reading.headers import IGNORE, builtin_aliases, count_known_headers, header_key
from pipeline.text.arrow import contiguous

#: The dtype of every text column: pandas' default ``str``, stored in Arrow.
TEXT_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)

#: The Arrow type behind :data:`TEXT_DTYPE`; columns built as this need no cast.
TEXT_ARROW = pa.large_string()

#: How far down a sheet the header row is looked for (title and note rows above it).
HEADER_SEARCH_ROWS = 30

#: A row naming at least this many known fields is a header row.
MIN_KNOWN_HEADERS = 2

#: One column of text as Arrow holds it (a CSV comes back chunked).
TextColumn: TypeAlias = "pa.Array | pa.ChunkedArray"


def column_letter(position: int) -> str:
    """Excel's letter for a 0-based column position: 0 -> A, 25 -> Z, 26 -> AA."""
    letters = ""
    position += 1
    while position:
        position, remainder = divmod(position - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def _looks_like_header(cells: Sequence[str]) -> bool:
    """Fallback for unknown headers: three or more text cells, most of them not numbers."""
    filled = [c.strip() for c in cells if c.strip()]
    if len(filled) < 3:
        return False
    numeric = sum(1 for c in filled if c.replace(".", "", 1).replace("-", "", 1).isdigit())
    return numeric * 2 < len(filled)


def detect_header(rows: Sequence[Sequence[str]]) -> tuple[int, list[str]] | None:
    """The header among the first rows: (index of its last row, header cells), or None.

    The first row naming at least two known fields wins; a second such row
    right below it (sub-headers under a merged "地址" cell, or a row of pinyin
    codes under the Chinese names) is merged into it, the lower text winning.
    Failing that, the first row that looks like a header by shape.
    """
    search = rows[:HEADER_SEARCH_ROWS]
    for index, row in enumerate(search):
        if count_known_headers(row) >= MIN_KNOWN_HEADERS:
            cells = list(row)
            if index + 1 < len(rows) and count_known_headers(rows[index + 1]) >= MIN_KNOWN_HEADERS:
                below = rows[index + 1]
                width = max(len(cells), len(below))
                cells = [
                    below[j] if j < len(below) and below[j].strip() else (cells[j] if j < len(cells) else "")
                    for j in range(width)
                ]
                index += 1
            return index, cells
    for index, row in enumerate(search):
        if _looks_like_header(row):
            return index, list(row)
    return None


def first_filled_row(rows: Sequence[Sequence[str]]) -> int | None:
    """Index of the first row with any non-blank cell."""
    for index, row in enumerate(rows):
        if any(cell.strip() for cell in row):
            return index
    return None


def _blank(column: TextColumn) -> np.ndarray:
    return np.asarray(pc.or_(pc.equal(column, ""), pc.utf8_is_space(column)), dtype=bool)


def blank_rows(columns: Sequence[TextColumn], length: int) -> np.ndarray:
    """Boolean mask of rows whose every cell is empty or whitespace.

    Narrows the candidates column by column, so a register whose first column
    is always filled costs one pass over one column.
    """
    candidates = np.arange(length)
    for column in columns:
        if not len(candidates):
            break
        subset = column if len(candidates) == length else column.take(pa.array(candidates))
        candidates = candidates[_blank(subset)]
    mask = np.zeros(length, dtype=bool)
    mask[candidates] = True
    return mask


#: First words of the lines under a register's last resident: totals and signatures.
FOOTER_WORDS: tuple[str, ...] = (
    "合计",
    "总计",
    "小计",
    "共计",
    "填表人",
    "制表人",
    "填报人",
    "审核人",
    "负责人",
    "制表日期",
    "填表日期",
)


def _footer_rows(columns: Sequence[TextColumn], keep: np.ndarray) -> np.ndarray:
    """Mask of the trailing kept rows whose first filled cell starts with a footer word (合计, 填表人 …)."""
    footer = np.zeros(len(keep), dtype=bool)
    for row in np.flatnonzero(keep)[::-1]:
        cells = (str(column[int(row)].as_py() or "").strip() for column in columns)
        first = next((cell for cell in cells if cell), "")
        if not first.startswith(FOOTER_WORDS):
            break
        footer[row] = True
    return footer


def _unique(names: list[str]) -> list[str]:
    seen: set[str] = set()
    unique = []
    for name in names:
        candidate = numbered(name, seen)
        seen.add(candidate)
        unique.append(candidate)
    return unique


def build_table(
    *,
    path: str,
    sheet: str,
    header_row: int,
    header_cells: Sequence[str],
    first_column: int,
    columns: Sequence[TextColumn],
    source_row: np.ndarray,
) -> RawTable | None:
    """Assemble a RawTable from text columns; None when no row below the header has data.

    ``header_row`` and ``source_row`` are the clerk's 1-based row numbers;
    ``first_column`` is the sheet position of ``columns[0]``.  Blank rows are
    dropped; a column without a header is kept as "列F" when it holds data;
    duplicate headers get "_2", "_3".
    """
    length = len(source_row)
    # A 序号 column alone does not make a row: templates come pre-numbered far below the last resident.
    aliases = builtin_aliases()
    counted = [
        column for offset, column in enumerate(columns)
        if offset >= len(header_cells) or aliases.get(header_key(header_cells[offset])) != IGNORE
    ]  # fmt: skip
    blank = blank_rows(counted, length)
    blank |= _footer_rows(columns, ~blank)
    if blank.all():
        return None
    if blank.any():
        keep = pa.array(~blank)
        columns = [column.filter(keep) for column in columns]
        source_row = source_row[~blank]

    names: list[str] = []
    positions: list[int] = []
    kept: list[TextColumn] = []
    for offset, column in enumerate(columns):
        name = header_cells[offset].strip() if offset < len(header_cells) else ""
        if not name:
            if _blank(column).all():
                continue
            name = f"列{column_letter(first_column + offset)}"
        names.append(name)
        positions.append(first_column + offset)
        kept.append(column)
    names = _unique(names)
    # One contiguous array per column: every later stage hands columns to Arrow
    # kernels, and a chunked column would be copied together again each time.
    kept = [contiguous(column) for column in kept]
    data = pd.DataFrame(
        {name: pd.Series(column, dtype=TEXT_DTYPE) for name, column in zip(names, kept, strict=True)},
        index=pd.RangeIndex(len(source_row)),
    )
    return RawTable(
        path=path,
        sheet=sheet,
        header_row=header_row,
        headers=names,
        column_positions=positions,
        data=data,
        source_row=np.asarray(source_row, dtype=np.int64),
    )
