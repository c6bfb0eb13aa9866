"""Cell comments (notes) written column-wise, for sheets with tens of thousands of them.

xlsxwriter spends about 150 µs of Python per comment (the comment, its VML
shape and its position); a register where every row has a fault would spend
15 s on that alone.  Here xlsxwriter writes one placeholder comment per sheet,
so the package gets its relationships, content types and ``<legacyDrawing>``,
and the two parts it created (``xl/commentsN.xml`` and
``xl/drawings/vmlDrawingN.vml``) are replaced by ones generated with Arrow
string kernels, in the same layout xlsxwriter writes.
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

_TARGET = re.compile(rb'Type="[^"]*/(vmlDrawing|comments)" Target="([^"]+)"')
_FONT = '<rPr><sz val="8"/><color indexed="81"/><rFont val="Tahoma"/><family val="2"/></rPr>'
_VML_HEAD = (
    '<xml xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office" '
    'xmlns:x="urn:schemas-microsoft-com:office:excel"><o:shapelayout v:ext="edit">'
    '<o:idmap v:ext="edit" data="{blocks}"/></o:shapelayout>'
    '<v:shapetype id="_x0000_t202" coordsize="21600,21600" o:spt="202" path="m,l,21600r21600,l21600,xe">'
    '<v:stroke joinstyle="miter"/><v:path gradientshapeok="t" o:connecttype="rect"/></v:shapetype>'
)
_SHAPE_STYLE = '" type="#_x0000_t202" style="position:absolute;margin-left:'
_SHAPE_BODY = (
    ';visibility:hidden" fillcolor="#ffffe1" o:insetmode="auto"><v:fill color2="#ffffe1"/>'
    '<v:shadow on="t" color="black" obscured="t"/><v:path o:connecttype="none"/>'
    '<v:textbox style="mso-direction-alt:auto"><div style="text-align:left"></div></v:textbox>'
    '<x:ClientData ObjectType="Note"><x:MoveWithCells/><x:SizeWithCells/><x:Anchor>'
)
# Default geometry, as Excel lays out a sheet it has not measured: 64 px columns, 20 px rows.
_COLUMN_PX, _ROW_PX = 64, 20


@dataclass
class Comments:
    """Comments of one sheet: 0-based ``rows`` and ``cols``, ``texts``; boxes ``width`` px wide."""

    rows: np.ndarray
    cols: np.ndarray
    texts: pa.Array
    author: str = ""
    width: int = 360

    def __len__(self) -> int:
        return len(self.rows)


def comment_parts(rels_xml: bytes, rels_name: str) -> tuple[str, str]:
    """(comments part, VML part) named in a sheet's relationships file."""
    targets = {kind.decode(): target.decode() for kind, target in _TARGET.findall(rels_xml)}
    base = posixpath.dirname(posixpath.dirname(rels_name))  # xl/worksheets/_rels -> xl/worksheets
    resolve = lambda target: posixpath.normpath(posixpath.join(base, target))  # noqa: E731
    return resolve(targets["comments"]), resolve(targets["vmlDrawing"])


def blocks_needed(comments: Comments) -> int:
    """How many 1024-id blocks the VML shapes of ``comments`` take."""
    return max(1, -(-len(comments) // SHAPES_PER_BLOCK))


def _numbers(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values)).cast(pa.large_string())


def comments_xml(comments: Comments) -> Iterator[bytes]:
    """The ``xl/commentsN.xml`` part."""
    yield (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<comments xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    )
    yield f"<authors><author>{comments.author}</author></authors><commentList>".encode()
    if len(comments):
        letters = pa.array(
            np.array([xl_col_to_name(c) for c in range(int(comments.cols.max()) + 1)])[comments.cols]
        )
        entries = pc.binary_join_element_wise(
            lit('<comment ref="'), letters.cast(pa.large_string()), _numbers(comments.rows + 1),
            lit(f'" authorId="0"><text><r>{_FONT}<t xml:space="preserve">'),
            escaped(text_array(comments.texts).fill_null("")), lit("</t></r></text></comment>"), EMPTY,
        )  # fmt: skip
        yield bytes(contiguous_bytes(entries))
    yield b"</commentList></comments>"


def vml_xml(comments: Comments, first_block: int) -> Iterator[bytes]:
    """The ``xl/drawings/vmlDrawingN.vml`` part; shape ids start in block ``first_block``."""
    blocks = ",".join(str(b) for b in range(first_block, first_block + blocks_needed(comments)))
    yield _VML_HEAD.format(blocks=blocks).encode()
    if len(comments):
        rows, cols = comments.rows.astype(np.int64), comments.cols.astype(np.int64)
        texts = text_array(comments.texts).fill_null("")
        lines = pc.add(pc.count_substring(texts, "\n"), pc.divide(pc.utf8_length(texts), 30)).to_numpy()
        height_px = 20 * (lines + 2)
        top_row = np.maximum(rows - 1, 0)
        span_cols, span_rows = -(-comments.width // _COLUMN_PX), -(-height_px // _ROW_PX)
        shape_ids = SHAPES_PER_BLOCK * first_block + 1 + np.arange(len(rows))
        # Whole points: Arrow would print large floats in exponent form, which VML does not read.
        geometry = [
            (cols + 1) * _COLUMN_PX * 3 // 4 + 11, "pt;margin-top:",
            top_row * _ROW_PX * 3 // 4 + 7, f"pt;width:{comments.width * 3 // 4}pt;height:",
            height_px * 3 // 4, "pt;z-index:", np.arange(len(rows)) + 1,
        ]  # fmt: skip
        anchor = [
            cols + 1, ", 15, ", top_row, ", 10, ",
            cols + 1 + span_cols, ", 15, ", top_row + span_rows,
            ", 4</x:Anchor><x:AutoFill>False</x:AutoFill><x:Row>", rows,
            "</x:Row><x:Column>", cols, "</x:Column></x:ClientData></v:shape>",
        ]  # fmt: skip
        parts = [lit('<v:shape id="_x0000_s'), _numbers(shape_ids), lit(_SHAPE_STYLE)]
        parts += [lit(p) if isinstance(p, str) else _numbers(p) for p in geometry]
        parts.append(lit(_SHAPE_BODY))
        parts += [lit(p) if isinstance(p, str) else _numbers(p) for p in anchor]
        yield bytes(contiguous_bytes(pc.binary_join_element_wise(*parts, EMPTY)))
    yield b"</xml>"
