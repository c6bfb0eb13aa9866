"""Fast xlsx writing: xlsxwriter lays out the workbook, Arrow writes the cells.

Writing cells one by one through xlsxwriter costs about 5 µs each, which makes a
100,000-row report take tens of seconds.  Here xlsxwriter still produces every
part of the package that carries formatting (styles, frozen panes, autofilters,
column widths, merged ranges, comments), but each worksheet's ``<sheetData>`` is
generated column-wise with vectorised Arrow string kernels and streamed into
the zip in chunks, so memory stays bounded and no Python code runs per cell.

Cells are written as strings (inline, or shared where a column repeats its
texts: :mod:`~pipeline.reports.xlsx.shared`), numbers or booleans only: a text
such as ``=SUM(A1)`` is always a string cell, never a formula.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xlsxwriter
from xlsxwriter.utility import xl_col_to_name, xl_rowcol_to_cell
from xlsxwriter.worksheet import Worksheet

from pipeline.prefetch import Prefetched
from pipeline.reports.xlsx.comments import Comments, blocks_needed, comment_parts, comments_xml, vml_xml
from pipeline.reports.xlsx.deflate import new_package, open_part
from pipeline.reports.xlsx.shared import PART as SHARED_PART
from pipeline.reports.xlsx.shared import SharedStrings
from pipeline.reports.xlsx.xml import (
    EMPTY,
    NEEDS_PRESERVE,
    contiguous_bytes,
    escaped,
    lit,
    needs_care,
)
from pipeline.text.arrow import text_array

#: The last row an xlsx sheet can hold (1-based), header included.
MAX_SHEET_ROWS = 1_048_576

#: Rows per generated chunk: bounds memory, large enough to amortise kernel calls.
CHUNK_ROWS = 50_000

_WORKBOOK_OPTIONS = {
    "in_memory": True,
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "strings_to_numbers": False,
}
_SHEET_DATA = re.compile(rb"<sheetData/>|<sheetData>.*?</sheetData>", re.S)
_DIMENSION = re.compile(rb'<dimension ref="[^"]*"/>')


@dataclass
class MixedColumn:
    """A column holding both text and numbers: ``number`` where not null, else ``text``."""

    text: pa.Array
    number: pa.Array

    def __len__(self) -> int:
        return len(self.text)

    def __getitem__(self, rows: slice) -> MixedColumn:
        return MixedColumn(self.text[rows], self.number[rows])


Column: TypeAlias = pa.Array | MixedColumn


@dataclass
class Block:
    """A rectangle of cells whose top-left cell is (``first_row``, ``first_col``), 0-based.

    ``columns`` are equal-length Arrow arrays: strings become text cells,
    integers and floats number cells, booleans boolean cells; ``""`` and nulls
    are empty.  A :class:`MixedColumn` holds both kinds.

    Styles are indices into the workbook's ``formats`` plus one (0 = no
    format): ``style`` for every non-empty cell, ``row_style`` per row (it also
    fills the row's empty cells), ``cell_styles`` per row of one column (index
    into ``columns``), which wins over the other two.
    """

    columns: Sequence[Column]
    first_row: int = 0
    first_col: int = 0
    style: int = 0
    row_style: np.ndarray | None = None
    cell_styles: Mapping[int, np.ndarray] = field(default_factory=dict)

    @property
    def height(self) -> int:
        """Number of rows in the block."""
        return len(self.columns[0]) if self.columns else 0


def text_block(rows: Sequence[Sequence[str]], first_row: int = 0, style: int = 0) -> Block:
    """A small block from Python rows of text (headers, totals, notes)."""
    width = max((len(row) for row in rows), default=0)
    columns = [text_array([row[c] if c < len(row) else "" for row in rows]) for c in range(width)]
    return Block(columns, first_row=first_row, style=style)


def _widest_text(column: pa.Array) -> float:
    """The widest value of a text column in Excel character units: (bytes + characters) / 2."""
    if not len(column):
        return 0.0
    if pc.all(pc.string_is_ascii(column)).as_py() is not False:  # a character is a byte
        return float(pc.max(pc.binary_length(column)).as_py() or 0)
    both = pc.add(pc.binary_length(column), pc.utf8_length(column))
    return (pc.max(both).as_py() or 0) / 2


def display_widths(columns: Sequence[Column], headers: Sequence[str], cap: float = 50.0) -> list[float]:
    """Column widths (Excel character units) fitting the widest value, CJK counted double.

    For UTF-8 text, (bytes + characters) / 2 is 1 per ASCII character and 2 per
    CJK character, which is how Excel renders them.
    """
    widths = []
    for column, header in zip(columns, headers, strict=True):
        widest = len(header.encode()) / 2 + len(header) / 2
        if isinstance(column, MixedColumn):
            column = column.text
        if len(column) and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            widest = max(widest, _widest_text(column))
        elif len(column):
            widest = max(widest, 12)
        widths.append(min(cap, widest + 2))
    return widths


def _joined(*pieces: pa.Array | pa.Scalar) -> pa.Array:
    """Each row's pieces joined into one text, consecutive fixed pieces made one first (fewer inputs for
    Arrow to copy from row by row: ``"`` + the style + `` t="inlineStr"><is><t>`` is one)."""
    merged: list[pa.Array | pa.Scalar] = []
    for piece in pieces:
        if isinstance(piece, pa.Scalar) and merged and isinstance(merged[-1], pa.Scalar):
            merged[-1] = lit(merged[-1].as_py() + piece.as_py())
        else:
            merged.append(piece)
    return pc.binary_join_element_wise(*merged, EMPTY)


#: How a text cell holds its text: inline, or as the number of a shared string.
_INLINE = (' t="inlineStr"><is>', "</t></is></c>")
_SHARED = (' t="s"><v>', "</v></c>")


def _cells(
    values: Column,
    letter: str,
    numbers: pa.Array,
    style_attr: pa.Array | pa.Scalar,
    shared: SharedStrings | None = None,
    numbered: pa.Array | None = None,
) -> pa.Array:
    """The ``<c>`` elements of one column ("" for an unstyled empty cell); ``numbers`` are the row numbers.

    Given ``shared``, a text column that repeats its values refers to the workbook's shared strings.
    ``numbered`` is each row's number, a quote and ``style_attr`` already joined (rows styled one by
    one share it across columns): fewer pieces for each cell's join.
    """
    if numbered is None:
        numbered_cells: list[pa.Array | pa.Scalar] = [numbers, lit('"'), style_attr]
    else:
        numbered_cells = [numbered]
    if isinstance(values, MixedColumn):
        as_numbers = _cells(values.number, letter, numbers, style_attr)
        as_text = _cells(values.text, letter, numbers, style_attr)  # inline: the table counts its cells
        return pc.if_else(pc.is_valid(values.number), as_numbers, as_text)
    opening = lit(f'<c r="{letter}')
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = text_array(values).fill_null("")
        start_text: pa.Array | pa.Scalar = EMPTY
        tags = _SHARED
        # Text needing care (escaped, spaces kept, characters XML forbids dropped) stays inline, as ever.
        careful = needs_care(text)
        held = shared.numbers(text) if shared is not None and not careful else None
        if held is not None:
            empty, text = pc.equal(held, ""), held
        else:
            tags, start_text = _INLINE, lit("<t>")
            if careful:
                preserve = pc.match_substring_regex(text, NEEDS_PRESERVE)
                start_text = pc.if_else(preserve, lit('<t xml:space="preserve">'), start_text)
                text = escaped(text)
            empty = pc.equal(text, "")
        if pc.any(empty).as_py():
            return _text_cells_with_blanks(
                text, letter, numbers, style_attr, start_text, empty, tags, numbered
            )
        return _joined(opening, *numbered_cells, lit(tags[0]), start_text, text, lit(tags[1]))
    else:
        if pa.types.is_floating(kind):
            values = pc.if_else(pc.is_nan(values), None, values)
        empty = pc.is_null(values)
        if pa.types.is_boolean(kind):
            number, type_attr = pc.if_else(values, lit("1"), lit("0")), lit(' t="b"><v>')
        else:
            number, type_attr = values.cast(pa.large_string()), lit("><v>")
        full = _joined(opening, *numbered_cells, type_attr, number.fill_null(""), lit("</v></c>"))
    if not pc.any(empty).as_py():
        return full
    if isinstance(style_attr, pa.Scalar):
        blank = EMPTY
    else:
        styled_blank = pc.binary_join_element_wise(opening, numbers, lit('"'), style_attr, lit("/>"), EMPTY)
        blank = pc.if_else(pc.equal(style_attr, ""), EMPTY, styled_blank)
    return pc.if_else(empty, blank, full)


def _text_cells_with_blanks(
    text: pa.Array,
    letter: str,
    numbers: pa.Array,
    style_attr: pa.Array | pa.Scalar,
    start_text: pa.Array | pa.Scalar,
    empty: pa.Array,
    tags: tuple[str, str] = _INLINE,
    numbered: pa.Array | None = None,
) -> pa.Array:
    """:func:`_cells` of a text column holding empty values, in one join: each row's pieces are taken
    by its kind (a cell, an empty styled cell ``<c r="B2" s="2"/>``, or nothing for an empty unstyled
    one) rather than every row laid out both ways and one picked (``numbered``: see :func:`_cells`)."""
    blank = empty.to_numpy(zero_copy_only=False)
    if isinstance(style_attr, pa.Scalar):  # one style for the whole column: its empty cells are not written
        unstyled = np.ones(len(text), dtype=bool)
    else:
        unstyled = pc.equal(style_attr, "").to_numpy(zero_copy_only=False)
    # 0: a cell with its text; 1: an empty styled cell; 2: nothing (empty and unstyled).
    kind = pa.array(np.where(blank, np.where(unstyled, 2, 1), 0).astype(np.int8))

    def by_kind(cell: str, styled_blank: str, nothing: str = "") -> pa.Array:
        return pc.take(pa.array([cell, styled_blank, nothing], pa.large_string()), kind)

    nothing = bool((blank & unstyled).any())
    opening: pa.Array | pa.Scalar = lit(f'<c r="{letter}')
    if nothing:
        opening = by_kind(f'<c r="{letter}', f'<c r="{letter}')
    where: list[pa.Array | pa.Scalar]
    if numbered is not None:
        where = [pc.if_else(pc.equal(kind, 2), EMPTY, numbered) if nothing else numbered]
    else:
        quote = by_kind('"', '"') if nothing else lit('"')
        row_numbers = pc.if_else(pc.equal(kind, 2), EMPTY, numbers) if nothing else numbers
        style = style_attr
        if isinstance(style_attr, pa.Scalar):
            style = by_kind(style_attr.as_py(), style_attr.as_py())
        where = [row_numbers, quote, style]
    start: pa.Array | pa.Scalar = EMPTY
    if isinstance(start_text, pa.Scalar):
        if start_text.as_py():
            start = by_kind(start_text.as_py(), "")
    else:
        start = pc.if_else(empty, EMPTY, start_text)
    return _joined(opening, *where, by_kind(tags[0], "/>"), start, text, by_kind(tags[1], ""))


def _style_attrs(block: Block, col: int, rows: slice, lut: np.ndarray) -> pa.Array | pa.Scalar:
    ids: np.ndarray | None = None
    if block.row_style is not None:
        ids = block.row_style[rows]
    if col in block.cell_styles:
        own = block.cell_styles[col][rows]
        ids = own if ids is None else np.where(own > 0, own, ids)
    if ids is None:
        return lit(lut[block.style])
    if block.style:
        ids = np.where(ids > 0, ids, block.style)
    # Taken by Arrow from the few distinct attributes: no Python string per cell.
    return pc.take(pa.array(lut.tolist(), pa.large_string()), pa.array(ids.astype(np.int32, copy=False)))


def _nothing_in(values: Column) -> bool:
    """Whether every value of a column is empty ("" or null): with one style, it writes no cell."""
    if isinstance(values, MixedColumn):
        return False
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values.null_count == len(values) or not pc.max(pc.binary_length(values)).as_py()
    return values.null_count == len(values)


def _block_xml(block: Block, lut: np.ndarray, shared: SharedStrings | None = None) -> Iterator[memoryview]:
    for start in range(0, block.height, CHUNK_ROWS):
        rows = slice(start, min(start + CHUNK_ROWS, block.height))
        first = block.first_row + start + 1
        numbers = pa.array(np.arange(first, first + rows.stop - start)).cast(pa.large_string())
        cells = []
        # Each distinct styling of columns (the rows' alone, or one array of cell styles several columns
        # share: a copy's unmarked columns), and the rows' numbers joined with it: made once for the chunk.
        styled: dict[int, tuple[pa.Array | pa.Scalar, pa.Array | None]] = {}
        for col, values in enumerate(block.columns):
            key = id(block.cell_styles.get(col))
            if key not in styled:
                attr = _style_attrs(block, col, rows, lut)
                joined = None
                if not isinstance(attr, pa.Scalar):
                    joined = pc.binary_join_element_wise(numbers, lit('"'), attr, EMPTY)
                styled[key] = (attr, joined)
            style_attr, own_numbered = styled[key]
            if isinstance(style_attr, pa.Scalar) and _nothing_in(values[rows]):
                continue  # no cell of it would be written: a wide sheet's empty columns cost nothing
            letter = xl_col_to_name(block.first_col + col)
            cells.append(_cells(values[rows], letter, numbers, style_attr, shared, own_numbered))
        row_xml = pc.binary_join_element_wise(
            lit('<row r="'), numbers, lit('">'), *cells, lit("</row>"), EMPTY
        )
        yield contiguous_bytes(row_xml)


def _dimension(blocks: Sequence[Block]) -> str:
    filled = [b for b in blocks if b.height and b.columns]
    if not filled:
        return "A1"
    top = min(b.first_row for b in filled)
    bottom = max(b.first_row + b.height - 1 for b in filled)
    left = min(b.first_col for b in filled)
    right = max(b.first_col + len(b.columns) - 1 for b in filled)
    return f"{xl_rowcol_to_cell(top, left)}:{xl_rowcol_to_cell(bottom, right)}"


@dataclass
class _PendingSheet:
    worksheet: Worksheet
    blocks: Iterable[Block]
    dimension: str | None
    comments: Comments | None


class FastWorkbook:
    """An xlsx workbook whose sheets are filled with :class:`Block` values.

    Use :meth:`add_sheet` for each sheet, format it through the returned
    xlsxwriter worksheet (freeze panes, autofilter, widths, merged ranges —
    but not cell values, which come only from blocks, nor comments, which come
    only from :class:`~pipeline.reports.xlsx.comments.Comments`), then :meth:`close`.
    ``formats`` are xlsxwriter format properties; a block's style ``i`` means
    ``formats[i - 1]``.
    """

    def __init__(self, path: Path, formats: Sequence[Mapping[str, Any]] = ()) -> None:
        self.path = path
        self._buffer = io.BytesIO()
        self.book = xlsxwriter.Workbook(self._buffer, _WORKBOOK_OPTIONS)
        self._formats = [self.book.add_format(dict(props)) for props in formats]
        self._sheets: list[_PendingSheet] = []

    def add_sheet(
        self,
        name: str,
        blocks: Iterable[Block],
        dimension: str | None = None,
        comments: Comments | None = None,
    ) -> Worksheet:
        """Add a sheet holding ``blocks`` (top to bottom, rows not overlapping) and ``comments``.

        ``blocks`` may be a lazy iterable, consumed once while writing; then
        pass ``dimension`` (e.g. ``"A1:K2000"``), otherwise it is computed.
        """
        worksheet = self.book.add_worksheet(name)
        if dimension is None:
            blocks = list(blocks)
            dimension = _dimension(blocks)
        self._sheets.append(_PendingSheet(worksheet, blocks, dimension, comments or None))
        return worksheet

    def close(self) -> Path:
        """Write the file; returns its path."""
        if not self._sheets:
            self.add_sheet("Sheet1", [])
        # Formats get their xf index when first used; these cells are replaced with the real data below.
        for col, fmt in enumerate(self._formats):
            self._sheets[0].worksheet.write_blank(0, col, None, fmt)
        # Makes xlsxwriter create the shared strings part (and list it), replaced with the table below.
        self._sheets[0].worksheet.write_string(0, len(self._formats), "-")
        for sheet in self._sheets:
            if sheet.comments:  # makes xlsxwriter create the parts that are then replaced
                sheet.worksheet.write_comment(int(sheet.comments.rows[0]), int(sheet.comments.cols[0]), "-")
        self.book.close()
        lut = np.array(["", *(f' s="{fmt.xf_index}"' for fmt in self._formats)], dtype=object)
        self._write_package(lut)
        return self.path

    def _comment_parts(self, skeleton: zipfile.ZipFile) -> dict[str, Iterable[bytes]]:
        """Replacement content of each comments and VML part, by part name."""
        parts: dict[str, Iterable[bytes]] = {}
        block = 1
        for i, sheet in enumerate(self._sheets):
            if not sheet.comments:
                continue
            rels = f"xl/worksheets/_rels/sheet{i + 1}.xml.rels"
            comments_part, vml_part = comment_parts(skeleton.read(rels), rels)
            parts[comments_part] = comments_xml(sheet.comments)
            parts[vml_part] = vml_xml(sheet.comments, block)
            block += blocks_needed(len(sheet.comments))
        return parts

    def _write_package(self, lut: np.ndarray) -> None:
        sheet_parts = {f"xl/worksheets/sheet{i + 1}.xml": s for i, s in enumerate(self._sheets)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (
            zipfile.ZipFile(self._buffer) as skeleton,
            new_package(self.path) as package,
        ):
            generated = self._comment_parts(skeleton)
            shared = SharedStrings()
            for info in skeleton.infolist():
                pending = sheet_parts.get(info.filename)
                replacement = generated.get(info.filename)
                if info.filename == SHARED_PART:
                    continue  # written last: the sheets fill it
                if pending is None and replacement is None:
                    package.writestr(info.filename, skeleton.read(info.filename))
                    continue
                with open_part(package, info.filename) as part:
                    if pending is not None:
                        _stream_sheet(part, skeleton.read(info.filename), pending, lut, shared)
                    else:
                        for chunk in replacement or ():
                            part.write(chunk)
            with open_part(package, SHARED_PART) as part:
                for chunk in shared.xml():
                    part.write(chunk)


def _stream_sheet(
    part: Any, skeleton_xml: bytes, pending: _PendingSheet, lut: np.ndarray, shared: SharedStrings
) -> None:
    found = _SHEET_DATA.search(skeleton_xml)
    if found is None:
        raise ValueError("xlsxwriter sheet without <sheetData>")
    head = _DIMENSION.sub(
        f'<dimension ref="{pending.dimension}"/>'.encode(), skeleton_xml[: found.start()], 1
    )
    part.write(head)
    part.write(b"<sheetData>")
    # The next rows are laid out while these are compressed: both release the GIL.
    chunks = Prefetched(
        (chunk for block in pending.blocks for chunk in _block_xml(block, lut, shared)),
        depth=2,
        name="ehc-sheet-xml",
    )
    try:
        for chunk in chunks:
            part.write(chunk)
    finally:
        chunks.close()
    part.write(b"</sheetData>")
    part.write(skeleton_xml[found.end() :])
