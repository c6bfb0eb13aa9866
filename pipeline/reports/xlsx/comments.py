"""Cell comments (notes) written column-wise, for sheets with tens of thousands of them.

xlsxwriter spends about 150 µs of Python per comment (the comment, its VML
shape and its position); a register where every row has a fault would spend
15 s on that alone.  Here the comment entries (``xl/commentsN.xml``) and their
VML shapes (``xl/drawings/vmlDrawingN.vml``) are generated with Arrow string
kernels, in the layout Excel writes.  :class:`~pipeline.reports.xlsx.writer.FastWorkbook`
lets xlsxwriter create the two parts with one placeholder and replaces them;
:mod:`pipeline.reports.xlsx.markup` adds entries and shapes to a clerk's own parts.

Each box is sized to its text: as wide as its longest line (within bounds),
as tall as its lines once wrapped, and anchored over the sheet's real column
widths, so Excel and WPS show the whole comment without resizing.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from xlsxwriter.utility import xl_col_to_name

from pipeline.reports.xlsx.xml import EMPTY, contiguous_bytes, escaped, lit
from pipeline.text.arrow import text_array

#: VML shape ids come in blocks of 1024 per ``o:idmap`` entry.
SHAPES_PER_BLOCK = 1024

#: Comments whose XML is made at a time (about 500 bytes each).
COMMENTS_PER_SLICE = 50_000

#: Default geometry, as Excel lays out a sheet it has not measured: 64 px columns, 20 px rows.
DEFAULT_COLUMN_PX, DEFAULT_ROW_PX = 64, 20

#: Box bounds in pixels, and the text metrics of the comment font (9 pt): a CJK character is
#: 12 px wide, a Latin one about half; a line is 15 px tall; the box has a margin inside.
MIN_BOX_PX, MAX_BOX_PX = 140, 420
HALF_WIDTH_PX, LINE_PX, BOX_MARGIN_PX = 6.2, 15, 14

_TARGET = re.compile(rb'Type="[^"]*/(vmlDrawing|comments)" Target="([^"]+)"')
#: The run properties of a comment's text: 宋体 9 pt, which Chinese Excel and WPS use for notes.
COMMENT_FONT = '<rPr><sz val="9"/><color indexed="81"/><rFont val="宋体"/><charset val="134"/></rPr>'
VML_NAMESPACES = (
    'xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office" '
    'xmlns:x="urn:schemas-microsoft-com:office:excel"'
)
NOTE_SHAPETYPE = (
    '<v:shapetype id="_x0000_t202" coordsize="21600,21600" o:spt="202" path="m,l,21600r21600,l21600,xe">'
    '<v:stroke joinstyle="miter"/><v:path gradientshapeok="t" o:connecttype="rect"/></v:shapetype>'
)
_VML_HEAD = (
    "<xml " + VML_NAMESPACES + '><o:shapelayout v:ext="edit">'
    '<o:idmap v:ext="edit" data="{blocks}"/></o:shapelayout>' + NOTE_SHAPETYPE
)
_SHAPE_STYLE = '" type="#_x0000_t202" style="position:absolute;margin-left:'
_SHAPE_BODY = (
    ';visibility:hidden" fillcolor="#ffffe1" o:insetmode="auto"><v:fill color2="#ffffe1"/>'
    '<v:shadow on="t" color="black" obscured="t"/><v:path o:connecttype="none"/>'
    '<v:textbox style="mso-direction-alt:auto"><div style="text-align:left"></div></v:textbox>'
    '<x:ClientData ObjectType="Note"><x:MoveWithCells/><x:SizeWithCells/><x:Anchor>'
)


@dataclass
class Comments:
    """Comments of one sheet: 0-based ``rows`` and ``cols``, ``texts``, written by ``author``."""

    rows: np.ndarray
    cols: np.ndarray
    texts: pa.Array
    author: str = ""

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class SheetGeometry:
    """What the boxes are laid over: each column's width in pixels (0 when hidden), the row height."""

    column_px: np.ndarray
    default_column_px: float = DEFAULT_COLUMN_PX
    row_px: float = DEFAULT_ROW_PX

    def column_edges(self, last_column: int) -> np.ndarray:
        """Left edge in pixels of columns 0..``last_column`` + 1."""
        widths = np.full(last_column + 2, self.default_column_px, dtype=np.float64)
        known = min(len(self.column_px), len(widths))
        widths[:known] = self.column_px[:known]
        return np.concatenate([[0.0], np.cumsum(widths)])


def comment_parts(rels_xml: bytes, rels_name: str) -> tuple[str, str]:
    """(comments part, VML part) named in a sheet's relationships file."""
    targets = {kind.decode(): target.decode() for kind, target in _TARGET.findall(rels_xml)}
    base = posixpath.dirname(posixpath.dirname(rels_name))  # xl/worksheets/_rels -> xl/worksheets
    resolve = lambda target: posixpath.normpath(posixpath.join(base, target))  # noqa: E731
    return resolve(targets["comments"]), resolve(targets["vmlDrawing"])


def blocks_needed(count: int) -> int:
    """How many 1024-id blocks the VML shapes of ``count`` comments take."""
    return max(1, -(-count // SHAPES_PER_BLOCK))


def _numbers(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values)).cast(pa.large_string())


def box_sizes(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(width, height) in pixels of a box showing each text whole, lines wrapped at the width.

    A line's width counts a CJK character as two half-widths (its UTF-8 bytes
    plus characters, halved), as :func:`~pipeline.reports.xlsx.writer.display_widths` does.
    """
    texts = text_array(texts).fill_null("")
    if not len(texts):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lines = pc.split_pattern(texts, "\n")
    flat = pc.list_flatten(lines)
    owner = pc.list_parent_indices(lines).to_numpy()
    halves = (pc.add(pc.binary_length(flat), pc.utf8_length(flat)).to_numpy() / 2).astype(np.float64)
    line_px = halves * HALF_WIDTH_PX
    widest = np.zeros(len(texts), dtype=np.float64)
    np.maximum.at(widest, owner, line_px)
    width = np.clip(widest + BOX_MARGIN_PX, MIN_BOX_PX, MAX_BOX_PX)
    inner = width[owner] - BOX_MARGIN_PX
    wrapped = np.maximum(1, np.ceil(line_px / inner))
    line_count = np.bincount(owner, weights=wrapped, minlength=len(texts))
    height = line_count * LINE_PX + BOX_MARGIN_PX
    return np.ceil(width).astype(np.int64), np.ceil(height).astype(np.int64)


def comment_entries(comments: Comments, author_id: int = 0) -> Iterator[bytes]:
    """The ``<comment>`` elements of ``comments`` (text escaped, in the comment font), a slice at a time."""
    if not len(comments):
        return
    names = np.array([xl_col_to_name(c) for c in range(int(comments.cols.max()) + 1)])
    texts = text_array(comments.texts)
    for part in _slices(len(comments)):
        entries = pc.binary_join_element_wise(
            lit('<comment ref="'), pa.array(names[comments.cols[part]]).cast(pa.large_string()),
            _numbers(comments.rows[part] + 1),
            lit(f'" authorId="{author_id}"><text><r>{COMMENT_FONT}<t xml:space="preserve">'),
            escaped(texts[part]), lit("</t></r></text></comment>"), EMPTY,
        )  # fmt: skip
        yield bytes(contiguous_bytes(entries))


def comments_xml(comments: Comments) -> Iterator[bytes]:
    """A whole ``xl/commentsN.xml`` part."""
    yield (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<comments xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    )
    yield f"<authors><author>{comments.author}</author></authors><commentList>".encode()
    yield from comment_entries(comments)
    yield b"</commentList></comments>"


def _slices(count: int) -> Iterator[slice]:
    # A register with a fault in every cell has millions of comments: their XML at once took
    # gigabytes (several copies of it while joined), a slice at a time it takes megabytes.
    for start in range(0, count, COMMENTS_PER_SLICE):
        yield slice(start, min(start + COMMENTS_PER_SLICE, count))


def note_shapes(
    comments: Comments, first_shape_id: int, geometry: SheetGeometry | None = None
) -> Iterator[bytes]:
    """The VML ``<v:shape>`` of each comment, ids from ``first_shape_id``, boxes sized to their text.

    Given a slice of comments at a time, in order.
    """
    if not len(comments):
        return
    geometry = geometry or SheetGeometry(np.zeros(0))
    all_rows, all_cols = comments.rows.astype(np.int64), comments.cols.astype(np.int64)
    all_texts = text_array(comments.texts)
    # The box starts one column right of its cell, a row above it (as Excel places a new note).
    edges = geometry.column_edges(int(all_cols.max()) + 2 + MAX_BOX_PX // 8)
    row_px = geometry.row_px
    for part in _slices(len(comments)):
        rows, cols = all_rows[part], all_cols[part]
        width_px, height_px = box_sizes(all_texts[part])
        left_px = edges[cols + 1] + 15
        right_px = left_px + width_px
        right_col = np.searchsorted(edges, right_px, side="right") - 1
        right_offset = right_px - edges[right_col]
        top_row = np.maximum(rows - 1, 0)
        bottom_px = top_row * row_px + 10 + height_px
        bottom_row = (bottom_px // row_px).astype(np.int64)
        bottom_offset = bottom_px - bottom_row * row_px
        place = np.arange(part.start, part.stop)
        # Whole points: Arrow would print large floats in exponent form, which VML does not read.
        geometry_parts = [
            (left_px * 3 // 4).astype(np.int64), "pt;margin-top:",
            (top_row * row_px * 3 // 4 + 7).astype(np.int64), "pt;width:", width_px * 3 // 4, "pt;height:",
            height_px * 3 // 4, "pt;z-index:", place + 1,
        ]  # fmt: skip
        anchor = [
            cols + 1, ", 15, ", top_row, ", 10, ", right_col, ", ", right_offset.astype(np.int64), ", ",
            bottom_row, ", ", bottom_offset.astype(np.int64),
            "</x:Anchor><x:AutoFill>False</x:AutoFill><x:Row>", rows,
            "</x:Row><x:Column>", cols, "</x:Column></x:ClientData></v:shape>",
        ]  # fmt: skip
        parts = [lit('<v:shape id="_x0000_s'), _numbers(first_shape_id + place), lit(_SHAPE_STYLE)]
        parts += [lit(p) if isinstance(p, str) else _numbers(np.asarray(p)) for p in geometry_parts]
        parts.append(lit(_SHAPE_BODY))
        parts += [lit(p) if isinstance(p, str) else _numbers(np.asarray(p)) for p in anchor]
        yield bytes(contiguous_bytes(pc.binary_join_element_wise(*parts, EMPTY)))


def vml_xml(comments: Comments, first_block: int, geometry: SheetGeometry | None = None) -> Iterator[bytes]:
    """A whole ``xl/drawings/vmlDrawingN.vml`` part; shape ids start in block ``first_block``."""
    blocks = ",".join(str(b) for b in range(first_block, first_block + blocks_needed(len(comments))))
    yield _VML_HEAD.format(blocks=blocks).encode()
    yield from note_shapes(comments, SHAPES_PER_BLOCK * first_block + 1, geometry)
    yield b"</xml>"
