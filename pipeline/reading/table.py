"""What the workbook and CSV readers share: finding the header row and assembling a RawTable.

Both readers hand over the rows they found as text; this module decides which
row is the header, names the columns, drops blank rows and builds the frame of
pandas ``str`` (Arrow-backed) columns every later stage works on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from loguru import logger

from pipeline.errors import InputError
from pipeline.files import numbered
from pipeline.model import MAX_CELL_CHARS, NOTE_COLUMNS, QUOTED_CHARS, RawTable
from pipeline.reading.headers import IGNORE, builtin_aliases, count_known_headers, header_key, is_known_header
from pipeline.text.arrow import INVISIBLE_MARKS, contiguous, value_offsets

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

#: Most columns a spreadsheet holds (XFD): a wider text file was not saved by Excel or WPS.
MAX_SHEET_COLUMNS = 16_384

#: Most columns with a header or a value a register may have.  Every later stage pays for each
#: column in each chunk (16,384 of them took a one-row register 30 s); a register needs a few dozen.
MAX_COLUMNS = 1_000

_FIX_TOO_WIDE = "确认选对了文件；用 Excel 或 WPS 打开后删除多余的列，另存为 CSV 再处理"
_FIX_TOO_MANY = "删除表格右方多余的列（选中整列后“删除”），只保留要办理的各列，保存后再处理"


def too_wide(label: str, width: int, *, row: int | None = None) -> InputError:
    """The error for a register (or its line ``row``) of ``width`` columns, more than a spreadsheet has."""
    where = "这一行" if row is not None else "表格"
    return InputError(
        f"{where}有 {width} 列，超过电子表格最多的 {MAX_SHEET_COLUMNS} 列，不是 Excel 或 WPS 保存的登记表",
        file=label,
        row=row,
        fix=_FIX_TOO_WIDE,
    )


def column_letter(position: int) -> str:
    """Excel's letter for a 0-based column position: 0 -> A, 25 -> Z, 26 -> AA."""
    letters = ""
    position += 1
    while position:
        position, remainder = divmod(position - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def _looks_like_header(cells: Sequence[str]) -> bool:
    """Fallback for unknown headers: three or more text cells, most of them not numbers, no ID number."""
    filled = [c.strip() for c in cells if c.strip()]
    if len(filled) < 3 or _holds_id_number(filled):
        return False
    numeric = sum(1 for c in filled if c.replace(".", "", 1).replace("-", "", 1).isdigit())
    return numeric * 2 < len(filled)


def detect_header(rows: Sequence[Sequence[str]]) -> tuple[int, list[str]] | None:
    """The header among the first rows: (index of its last row, header cells), or None.

    The first row naming at least two known fields wins; a row of sub-headers
    right below it (:func:`_sub_headers`: under a merged "地址" cell, a row of
    pinyin codes under the Chinese names) is merged into it, the lower text
    winning.  Failing that, the first row that looks like a header by shape.
    """
    search = rows[:HEADER_SEARCH_ROWS]
    for index, row in enumerate(search):
        if count_known_headers(row) >= MIN_KNOWN_HEADERS:
            cells = list(row)
            if index + 1 < len(rows) and _sub_headers(cells, rows[index + 1]):
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


def _sub_headers(header: Sequence[str], below: Sequence[str]) -> bool:
    """Whether the row ``below`` the header row is a second row of its headers.

    It is when it names two known fields or more (省 市 区县 under a merged
    地址; pinyin codes under the Chinese names); or when it names one and each
    of its other filled cells sits under a header cell naming no field, as
    sub-headers under a group title do (手机号码 under 联系方式, the header cells
    beside it merged down over both rows).  A resident's row names no field, or
    fills the columns that the header row names.
    """
    known = count_known_headers(below)
    if known >= MIN_KNOWN_HEADERS:
        return True
    if known == 0 or _holds_id_number(below):
        return False
    return all(
        is_known_header(cell) or j >= len(header) or not is_known_header(header[j])
        for j, cell in enumerate(below)
        if cell.strip()
    )


#: A cell holding an ID number and nothing else (18 characters, or the old 15 digits).
_ID_LIKE = re.compile(r"[1-9][0-9]{16}[0-9Xx]|[1-9][0-9]{14}")


def _holds_id_number(cells: Sequence[str]) -> bool:
    return any(_ID_LIKE.fullmatch(cell.strip()) for cell in cells)


def refuse_resident_as_header(cells: Sequence[str], label: str, row: int, sheet: str = "") -> None:
    """Refuse a table whose header row (``cells``, numbered ``row``) holds an ID number: InputError.

    That row is a resident, and the table has no header.  Taken for the
    header, the resident would be in no report, and mapping its columns
    would store the resident's name and ID number as column names.
    """
    if _holds_id_number(cells):
        raise InputError(
            "这一行有身份证号码，是居民而不是表头：表格没有表头行，这一行会被漏掉",
            file=label, sheet=sheet, row=row,
            fix="在第一位居民上方插入一行表头（如 姓名、性别、身份证号码、联系电话），保存后重新处理",
        )  # fmt: skip


def warn_of_residents_above(
    label: str, rows: Sequence[Sequence[str]], numbers: Sequence[int], header: int
) -> None:
    """Warn of rows above the header (``rows``, numbered ``numbers``) that hold an ID number.

    Such a row is a resident, not a title: a clerk who pasted residents above
    the header would otherwise lose them without a word.
    """
    found = [
        number for number, row in zip(numbers, rows, strict=False)
        if _holds_id_number(row)
    ]  # fmt: skip
    if found:
        shown = "、".join(map(str, found[:10])) + ("等" if len(found) > 10 else "")
        logger.warning(
            "{}：表头（第 {} 行）上方的第 {} 行有身份证号码，像是居民，没有读取。"
            "请把这些行移到表头下方后再处理",
            label, header, shown,
        )  # fmt: skip


def first_filled_row(rows: Sequence[Sequence[str]]) -> int | None:
    """Index of the first row with any non-blank cell."""
    for index, row in enumerate(rows):
        if any(cell.strip() for cell in row):
            return index
    return None


def header_or_first_row(rows: Sequence[Sequence[str]]) -> tuple[int, list[str]] | None:
    """:func:`detect_header`, else the first row with anything in it, as the header; None for no rows.

    A sheet or page whose columns nothing names is still a table: mapping then
    says which columns it lacks.
    """
    found = detect_header(rows)
    if found is not None:
        return found
    first = first_filled_row(rows)
    return None if first is None else (first, list(rows[first]))


#: Bytes a cell showing nothing can start with: ASCII white space, and the lead bytes of the UTF-8 of
#: U+0085/U+00A0/U+00AD (C2), U+1680/U+180E (E1), U+2000–U+206F (E2), U+3000 (E3) and U+FEFF (EF).
_BLANK_LEADS = np.zeros(256, dtype=bool)
_BLANK_LEADS[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1A, 0x20, 0xC2, 0xE1, 0xE2, 0xE3, 0xEF]] = True
_BLANK_LEADS.setflags(write=False)
#: What such a cell may hold and still show nothing: the marks, and the Ctrl-Z (SUB) that DOS-era tools
#: still write after a text file's last line as its end; read as a row, it was a resident of no fields.
_SHOWING_NOTHING = f"{INVISIBLE_MARKS}|\x1a"


def _blank(column: TextColumn) -> np.ndarray:
    """Which cells show nothing: empty, white space, or only marks that take no room (a zero-width
    space or a BOM pasted from a web page or a chat, which normalising drops anyway; a DOS end-of-file
    Ctrl-Z)."""
    array = contiguous(column)
    if not array.null_count and len(array):
        offsets = value_offsets(array)
        if offsets[-1] == offsets[0]:  # every cell empty (a far column's): no kernel needed
            return np.ones(len(array), dtype=bool)
    blank = np.asarray(pc.or_(pc.equal(array, ""), pc.utf8_is_space(array)), dtype=bool)
    if array.null_count or not len(array) or array.buffers()[2] is None:
        return blank
    # Only the few cells starting as such a mark may be nothing but marks: they alone are matched.
    offsets = value_offsets(array)
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
    starts = offsets[:-1][~blank]
    looked = np.flatnonzero(~blank)[_BLANK_LEADS[data[starts]]]
    if len(looked):
        rest = pc.replace_substring_regex(array.take(pa.array(looked)), _SHOWING_NOTHING, "")
        blank[looked] = np.asarray(pc.or_(pc.equal(rest, ""), pc.utf8_is_space(rest)), dtype=bool)
    return blank


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


def _run_of_rows(
    columns: Sequence[TextColumn], rows: np.ndarray, length: int, says: Callable[[str], bool]
) -> np.ndarray:
    """Mask of the run of ``rows`` (in the order given) whose first filled cell ``says`` so."""
    found = np.zeros(length, dtype=bool)
    for row in rows:
        cells = (str(column[int(row)].as_py() or "").strip() for column in columns)
        if not says(next((cell for cell in cells if cell), "")):
            break
        found[row] = True
    return found


def _footer_rows(columns: Sequence[TextColumn], keep: np.ndarray) -> np.ndarray:
    """Mask of the trailing kept rows whose first filled cell starts with a footer word (合计, 填表人 …)."""
    last_rows_first = np.flatnonzero(keep)[::-1]
    return _run_of_rows(columns, last_rows_first, len(keep), lambda cell: cell.startswith(FOOTER_WORDS))


#: What a template's example or instruction row (just under the header) starts with: no resident.
_EXAMPLE_ROW = re.compile(
    r"(示例|样例|范例|例子|举例|填写示例|填表示例|填写说明|填表说明|说明|例)(\s*[:：（(].*)?"
)
#: Rows under the header looked at for a template's example or instructions.
_EXAMPLE_ROWS = 3


def _example_rows(columns: Sequence[TextColumn], keep: np.ndarray) -> np.ndarray:
    """Mask of the first kept rows whose first filled cell says they are an example or instructions."""
    first_rows = np.flatnonzero(keep)[:_EXAMPLE_ROWS]
    return _run_of_rows(columns, first_rows, len(keep), lambda cell: bool(_EXAMPLE_ROW.fullmatch(cell)))


def _filled_cells(columns: Sequence[TextColumn], row: int) -> int:
    """How many cells of ``row`` hold anything but spaces."""
    return sum(1 for column in columns if str(column[row].as_py() or "").strip())


def _unique(names: list[str]) -> list[str]:
    seen: set[str] = set()
    unique = []
    for name in names:
        candidate = numbered(name, seen)
        seen.add(candidate)
        unique.append(candidate)
    return unique


#: Result code of a reading note (the platform's "parameter error").
NOTE_CODE = 10110

_TOO_LONG = "单元格内容超过电子表格单元格的上限 {limit} 个字符：只读取了前 {limit} 个字符，请核对"
_SURPLUS = "表头以外的列还有内容“{values}”，这些内容没有读取：请把它们放到有表头的列中"
_SURPLUS_TOO_LONG = "表头以外的列有超过电子表格单元格上限 {limit} 个字符的内容，没有读取：“{values}”"


def _quote(values: list[str]) -> str:
    text = "、".join(values)
    return text if len(text) <= QUOTED_CHARS else text[:QUOTED_CHARS] + "…"


def _empty_column(length: int) -> pa.Array:
    return pa.repeat(pa.scalar("", TEXT_ARROW), length)


def _pieces(column: TextColumn) -> list[pa.Array]:
    """The arrays a column is made of (Arrow parses a block in pieces)."""
    return column.chunks if isinstance(column, pa.ChunkedArray) else [column]


def _concatenated(pieces: list[pa.Array]) -> pa.Array:
    """One array of ``pieces`` (a single one as it is: concatenating copies even one)."""
    return pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)


def glue_blocks(
    blocks: Sequence[tuple[Sequence[TextColumn], np.ndarray]],
) -> tuple[list[TextColumn], np.ndarray]:
    """Blocks of rows read one after another (text columns, row numbers) as one block.

    A block narrower than the widest (rows with fewer values) is padded with
    empty text; each column is one array (its pieces copied together once).
    """
    if len(blocks) == 1 and all(len(_pieces(column)) == 1 for column in blocks[0][0]):
        columns, rows = blocks[0]
        return [contiguous(column) for column in columns], rows
    width = max(len(columns) for columns, _ in blocks)
    glued = [
        _concatenated(
            [
                piece
                for columns, rows in blocks
                for piece in (_pieces(columns[j]) if j < len(columns) else [_empty_column(len(rows))])
            ]
        )
        for j in range(width)
    ]
    return glued, np.concatenate([np.asarray(rows, dtype=np.int64) for _, rows in blocks])


class TableShaper:
    """Text columns read from a register, batch after batch, shaped into the RawTables of one table.

    Which columns the table has is decided once (:meth:`decide`), from the
    first rows read: every column with a header, and a column without one
    (named "列F") when it holds data there; duplicate headers get "_2", "_3".
    Every batch then loses its blank rows; values in a column the table does
    not have, and cells longer than :data:`MAX_CELL_CHARS`, become reading
    notes (see :class:`~pipeline.model.RawTable`).  Rows at the end of a batch
    that look like a footer (合计, 填表人 …) are held back: they are data if
    rows follow them, and dropped by :meth:`finish` if none do.
    """

    def __init__(
        self, *, path: str, sheet: str, header_row: int, header_cells: Sequence[str], first_column: int
    ) -> None:
        self.path, self.sheet, self.header_row = path, sheet, header_row
        self.header_cells = list(header_cells)
        self.first_column = first_column
        self.headers: list[str] = []
        self.positions: list[int] = []
        self._kept: list[int] = []  # offset, in the columns read, of each kept column
        self._decided = False
        self._examples_looked_for = False  # a template's example rows follow the header: the first batch
        self._tail: tuple[list[TextColumn], np.ndarray] | None = None
        aliases = builtin_aliases()
        self._row_number_columns = {
            offset for offset, cell in enumerate(self.header_cells) if aliases.get(header_key(cell)) == IGNORE
        }

    def decide(self, columns: Sequence[TextColumn]) -> None:
        """Fix the table's columns from the first rows read (``columns``, blank rows included).

        Too many columns (see :data:`MAX_COLUMNS`) -> InputError.
        """
        label = Path(self.path).name
        if len(columns) > MAX_SHEET_COLUMNS:
            raise too_wide(label, len(columns))
        names: list[str] = []
        # A header cell past the widest row read still names a column: rows may leave out empty last fields.
        for offset in range(max(len(columns), len(self.header_cells))):
            name = self.header_cells[offset].strip() if offset < len(self.header_cells) else ""
            if not name:
                if offset >= len(columns) or _blank(columns[offset]).all():
                    continue
                name = f"列{column_letter(self.first_column + offset)}"
            names.append(name)
            self.positions.append(self.first_column + offset)
            self._kept.append(offset)
        if len(names) > MAX_COLUMNS:
            raise InputError(
                f"有 {len(names)} 列有表头或内容，超过 {MAX_COLUMNS} 列的上限（登记表只需要几十列）",
                file=label,
                sheet=self.sheet,
                fix=_FIX_TOO_MANY,
            )
        self.headers = _unique(names)
        self._decided = True

    def _counted(self, columns: Sequence[TextColumn]) -> list[TextColumn]:
        # A 序号 column alone does not make a row: templates come pre-numbered far below the last resident.
        return [c for offset, c in enumerate(columns) if offset not in self._row_number_columns]

    def push(self, columns: Sequence[TextColumn], source_row: np.ndarray) -> RawTable | None:
        """The table's next rows: ``columns`` as read, ``source_row`` the clerk's number of each row."""
        if not self._decided:
            self.decide(columns)
        if len(columns) > MAX_SHEET_COLUMNS:
            raise too_wide(Path(self.path).name, len(columns))
        columns, source_row = list(columns), np.asarray(source_row, dtype=np.int64)
        if self._tail is not None:
            held, held_rows = self._tail
            self._tail = None
            columns, source_row = glue_blocks([(held, held_rows), (columns, source_row)])
        length = len(source_row)
        blank = blank_rows(self._counted(columns), length)
        blank |= self._repeated_header_rows(columns, ~blank, source_row)
        if not self._examples_looked_for:
            self._examples_looked_for = True
            example = _example_rows(columns, ~blank)
            if example.any():
                rows = "、".join(str(int(r)) for r in source_row[example])
                name = Path(self.path).name
                logger.warning(
                    "{}：第 {} 行是模板的示例或填写说明，不是居民，没有读取"
                    "（如确是居民，请删去第一格的“示例”等字样）",
                    f"{name}[{self.sheet}]" if self.sheet else name, rows,
                )  # fmt: skip
                blank |= example
        footer = _footer_rows(columns, ~blank)
        if footer.any():
            first = int(np.flatnonzero(footer)[0])
            keep_tail = pa.array(~blank[first:])
            self._tail = (
                [contiguous(c)[first:].filter(keep_tail) for c in columns],
                source_row[first:][~blank[first:]],
            )
            blank[first:] = True
        if blank.all():
            return None
        if blank.any():
            keep = pa.array(~blank)
            columns = [column.filter(keep) for column in columns]
            source_row = source_row[~blank]
        return self._shape(columns, source_row)

    def finish(self) -> None:
        """The end of the table: rows still held back were its footer."""
        self._tail = None

    def _repeated_header_rows(
        self, columns: Sequence[TextColumn], kept: np.ndarray, source_row: np.ndarray
    ) -> np.ndarray:
        """Mask of rows that repeat the header (a register printed with it on every page): not residents.

        A row naming most columns by their own header is the header again; a row
        naming most of them by another column's header starts a second table laid
        out differently, whose residents would be read into the wrong fields:
        :class:`InputError`.  Only rows whose first named cells are header names are
        looked at closely, so an ordinary chunk costs two comparisons.
        """
        repeated = np.zeros(len(kept), dtype=bool)
        cells = [cell.strip() for cell in self.header_cells]
        named = [
            (o, cells[o]) for o in self._kept
            if o < len(columns) and o < len(cells) and cells[o] and o not in self._row_number_columns
        ]  # fmt: skip
        if len(named) < MIN_KNOWN_HEADERS:
            return repeated
        names = pa.array(sorted({name for _, name in named}), TEXT_ARROW)
        candidates = np.zeros(len(kept), dtype=bool)
        for offset, _ in named[:2]:
            candidates |= np.asarray(pc.fill_null(pc.is_in(columns[offset], names), False), dtype=bool)
        rows = np.flatnonzero(candidates & kept)
        if not len(rows):
            return repeated
        picked = pa.array(rows)
        same = np.zeros(len(rows), dtype=np.int64)
        other = np.zeros(len(rows), dtype=np.int64)
        for offset, name in named:
            values = pc.utf8_trim_whitespace(contiguous(columns[offset]).take(picked))
            own = np.asarray(pc.fill_null(pc.equal(values, name), False), dtype=bool)
            same += own
            other += np.asarray(pc.fill_null(pc.is_in(values, names), False), dtype=bool) & ~own
        needed = max(MIN_KNOWN_HEADERS, (len(named) + 1) // 2)
        header = same + other >= needed
        moved = header & (other >= MIN_KNOWN_HEADERS)
        if moved.any():
            row = int(source_row[rows[np.flatnonzero(moved)[0]]])
            raise InputError(
                f"这一行又是一个表头，但列的顺序与第 {self.header_row} 行的表头不同，"
                "它下面的居民会被读到错误的列中",
                file=Path(self.path).name,
                sheet=self.sheet,
                row=row,
                fix="把第二个表格移到单独的工作表（或另存为单独的文件），或按第一个表头的列顺序排好后再处理",
            )
        repeated[rows[header]] = True
        # The page's title above a repeated header ("XX社区登记表（续）": one cell filled) goes with it.
        for row in rows[header]:
            above = row - 1
            while above >= 0 and not repeated[above] and kept[above] and _filled_cells(columns, above) == 1:
                repeated[above] = True
                above -= 1
        return repeated

    def _shape(self, columns: list[TextColumn], source_row: np.ndarray) -> RawTable:
        length = len(source_row)
        notes: list[tuple[int, str, int, str, str]] = []
        kept = set(self._kept)
        surplus = [offset for offset in range(len(columns)) if offset not in kept]
        if surplus:
            notes += _surplus_notes([columns[offset] for offset in surplus])
        data: dict[str, pa.Array] = {}
        for name, offset in zip(self.headers, self._kept, strict=True):
            # One contiguous array per column: every later stage hands columns to Arrow
            # kernels, and a chunked column would be copied together again each time.
            column = contiguous(columns[offset]) if offset < len(columns) else _empty_column(length)
            column, long_notes = _cut_long_cells(column, name)
            notes += long_notes
            data[name] = column
        frame = pd.DataFrame(
            {name: pd.Series(column, dtype=TEXT_DTYPE) for name, column in data.items()},
            index=pd.RangeIndex(length),
        )
        table = RawTable(
            path=self.path,
            sheet=self.sheet,
            header_row=self.header_row,
            headers=list(self.headers),
            column_positions=list(self.positions),
            data=frame,
            source_row=np.asarray(source_row, dtype=np.int64),
        )
        if notes:
            table.notes = pd.DataFrame(notes, columns=list(NOTE_COLUMNS)).sort_values("row", kind="stable")
            table.notes = table.notes.reset_index(drop=True)
        return table


#: Characters beyond U+FFFF (emoji and the rarest CJK): two UTF-16 units each.
_ASTRAL = r"[\x{10000}-\x{10FFFF}]"


def _excel_lengths(column: pa.Array) -> pa.Array:
    """The length of each cell as Excel counts it against :data:`MAX_CELL_CHARS`: in UTF-16 units.

    An emoji is two: a cell of 20,000 emoji is longer than a cell holds, and a
    report quoting it opened in Excel only after a repair.
    """
    return pc.add(pc.utf8_length(column), pc.count_substring_regex(column, _ASTRAL))


def _excel_cut(values: pa.Array) -> pa.Array:
    """``values`` (the few cells too long) cut to :data:`MAX_CELL_CHARS` UTF-16 units, not inside an emoji."""
    head = pc.utf8_slice_codeunits(values, 0, MAX_CELL_CHARS)
    if not pc.any(pc.match_substring_regex(head, _ASTRAL)).as_py():
        return head
    units = 2 * MAX_CELL_CHARS
    return pa.array(
        [text.encode("utf-16-le")[:units].decode("utf-16-le", "ignore") for text in head.to_pylist()],
        values.type,
    )


def _cut_long_cells(column: pa.Array, header: str) -> tuple[pa.Array, list[tuple[int, str, int, str, str]]]:
    """Cells longer than :data:`MAX_CELL_CHARS` cut there, and a note for each (one pass when none is)."""
    if not len(column) or (pc.max(pc.binary_length(column)).as_py() or 0) <= MAX_CELL_CHARS:
        return column, []
    lengths = _excel_lengths(column)
    long = pc.fill_null(pc.greater(lengths, MAX_CELL_CHARS), False)
    if not pc.any(long).as_py():
        return column, []
    rows = np.flatnonzero(long.to_numpy(zero_copy_only=False))
    cut = pc.replace_with_mask(column, long, _excel_cut(pc.filter(column, long)))
    notes = [(int(row), header, NOTE_CODE, "error", _TOO_LONG.format(limit=MAX_CELL_CHARS)) for row in rows]
    return cut, notes


def _surplus_notes(columns: list[TextColumn]) -> list[tuple[int, str, int, str, str]]:
    """A note for each row with values in columns the table does not have, quoting them.

    A warning (the values are none of the fields the platform needs), but an
    error when one of them is longer than a cell holds.
    """
    filled = [~_blank(column) for column in columns]
    rows = np.flatnonzero(np.logical_or.reduce(filled))
    if not len(rows):
        return []
    picked = pa.array(rows)
    taken = [contiguous(column).take(picked) for column in columns]
    lengths = np.max([_excel_lengths(column).to_numpy(zero_copy_only=False) for column in taken], axis=0)
    values = [pc.utf8_slice_codeunits(column, 0, QUOTED_CHARS + 1).to_pylist() for column in taken]
    notes = []
    for k, row in enumerate(rows):
        found = [str(v).strip() for column in values if (v := column[k]) and str(v).strip()]
        if lengths[k] > MAX_CELL_CHARS:
            message = _SURPLUS_TOO_LONG.format(
                length=int(lengths[k]), limit=MAX_CELL_CHARS, values=_quote(found)
            )
            notes.append((int(row), "", NOTE_CODE, "error", message))
        else:
            notes.append((int(row), "", NOTE_CODE, "warning", _SURPLUS.format(values=_quote(found))))
    return notes


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
    """Assemble a RawTable from a whole table's text columns; None when no row below the header has data.

    ``header_row`` and ``source_row`` are the clerk's 1-based row numbers;
    ``first_column`` is the sheet position of ``columns[0]``.  See
    :class:`TableShaper` for what is kept.
    """
    shaper = TableShaper(
        path=path, sheet=sheet, header_row=header_row, header_cells=header_cells, first_column=first_column
    )
    table = shaper.push(columns, source_row)
    shaper.finish()
    return table
