"""Mark up a clerk's own xlsx/xlsm workbook in place: zip in, zip out, only the marks added.

Regenerating a clerk's workbook loses what they put into it (number formats
such as ``@`` on the ID column, date cells, styles, widths, frozen panes,
drop-downs, hidden columns, print setup, their comments and formulas, other
sheets); openpyxl, which could rewrite it, also drops data-validation
extensions, images and more, and takes minutes on a big register.  So the
package is copied part by part and only these parts change:

* ``xl/styles.xml`` gains fills, fonts and, for each style a marked cell had,
  a copy of that style (``cellXfs`` entry) with the mark's fill: a marked cell
  keeps its font, border, alignment and number format;
* each marked sheet is streamed through: only the ``<c>`` elements of marked
  cells (their ``s`` attribute), of edited cells, and the new 问题说明 cells
  are rewritten, every other byte is copied; ``<dimension>`` and ``<cols>``
  make room for the 问题说明 column;
* comments are added to the sheet's comments part and VML drawing (created
  when the sheet has none); a cell that already has the clerk's comment keeps
  it, unchanged, and gets no second one;
* a legend sheet is appended after the clerk's sheets.

Cell values are never re-typed: a text stays a text, a number a number.  No
cell of the copy is a live formula, as in every report: each worksheet is
streamed through, and a formula cell keeps the value the workbook saved for
it (a text result becomes a text cell; one saved without a result is left
empty, its fault noted by the checks), its formula dropped with the
calculation chain.  A register is also input from outside: a
``=HYPERLINK(…)`` or a DDE formula in it would otherwise come back live in a
file ``ehc`` wrote.  An edit (:func:`mark_up`'s ``edits``) is written as a
text cell, never as a formula.  A package this module cannot follow raises
:class:`CannotMarkUp`; the caller then regenerates the copy and says so.
"""

from __future__ import annotations

import html
import itertools
import posixpath
import re
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from xlsxwriter.utility import xl_cell_to_rowcol, xl_col_to_name

from pipeline.reports.xlsx.comments import (
    NOTE_SHAPETYPE,
    SHAPES_PER_BLOCK,
    VML_NAMESPACES,
    Comments,
    SheetGeometry,
    blocks_needed,
    comment_entries,
    comments_xml,
    note_shapes,
    vml_xml,
)
from pipeline.reports.xlsx.deflate import new_package, open_part
from pipeline.text.arrow import text_array

#: What a marked cell means: an error (the row cannot be sent) or a hint (nothing to fix).
MARK_ERROR, MARK_HINT = 1, 2

#: Fill colours (ARGB) of the marks: red for an error, yellow for a hint.
MARK_FILLS: dict[int, str] = {MARK_ERROR: "FFFF7C80", MARK_HINT: "FFFFEB9C"}

#: Font colour of the 问题说明 cells (dark red, readable on white and in grey print).
NOTE_FONT_COLOUR = "FF9C0006"

#: Width (characters) of the 问题说明 column.
NOTE_COLUMN_WIDTH = 60

#: Points per line of the 问题说明 text (11-point type), and the padding of its cell.
NOTE_LINE_POINTS = 15
_NOTE_PADDING_POINTS = 3


def note_height(text: str) -> float:
    """Points a 问题说明 cell needs to show ``text`` whole in its column (a CJK character is two units)."""
    lines = 0
    for line in text.splitlines() or [""]:
        units = sum(2 if ord(ch) > 0x2E7F else 1 for ch in line)
        lines += max(1, -(-units // NOTE_COLUMN_WIDTH))
    return float(lines * NOTE_LINE_POINTS + _NOTE_PADDING_POINTS)


#: Bytes read from a sheet part at a time: bounds memory on registers of any height.
READ_BYTES = 8 << 20

#: The last column a sheet can have (0-based).
LAST_COLUMN = 16383

_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_COMMENTS_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.comments+xml"
_SHEET_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
_VML_TYPE = "application/vnd.openxmlformats-officedocument.vmlDrawing"
#: The workbook part's content type in an .xlsx: a copy is always one, whatever the register was.
_WORKBOOK_TYPE = b"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
#: The workbook types an .xlsx may not carry (macro-enabled workbook, templates): Excel refuses to
#: open an .xlsx whose workbook part says it holds macros.
_OTHER_WORKBOOK_TYPES = re.compile(
    rb"application/vnd\.ms-excel\.(?:sheet|template)\.macroEnabled\.main\+xml"
    rb"|application/vnd\.openxmlformats-officedocument\.spreadsheetml\.template\.main\+xml"
)
_ATTR = re.compile(rb"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_CELL_REF = re.compile(rb"""\br\s*=\s*["']([A-Za-z]{1,3})([0-9]+)["']""")
_ROW_NUMBER = re.compile(rb"""\br\s*=\s*["']([0-9]+)["']""")
_STYLE_ATTR = re.compile(rb"""\bs\s*=\s*["']([0-9]+)["']""")
_SHAPE_ID = re.compile(rb"_x0000_s([0-9]+)")
_IDMAP = re.compile(rb"""(<o:idmap\b[^>]*?\bdata\s*=\s*["'])([^"']*)(["'])""")
# Elements a <legacyDrawing> must come before in a worksheet (CT_Worksheet's sequence).
_AFTER_LEGACY_DRAWING = (
    b"legacyDrawingHF", b"drawingHF", b"picture", b"oleObjects", b"controls", b"webPublishItems",
    b"tableParts", b"extLst",
)  # fmt: skip


class CannotMarkUp(Exception):
    """The package is not one this module can mark up in place (the message says why, in English)."""


@dataclass
class SheetMarks:
    """What to add to one sheet, named as in the workbook.

    ``rows``/``cols`` (0-based) are the marked cells, ``kinds`` their mark
    (:data:`MARK_ERROR` or :data:`MARK_HINT`) and ``comments`` their comment
    texts; ``note_rows`` (0-based) and ``note_texts`` the 问题说明 cells;
    ``header_row`` (0-based) is where the 问题说明 header goes; the column is
    the one right of both the sheet's used range and ``last_column``.
    """

    name: str
    rows: np.ndarray
    cols: np.ndarray
    kinds: np.ndarray
    comments: np.ndarray
    note_rows: np.ndarray
    note_texts: np.ndarray
    header_row: int | None
    last_column: int
    note_header: str = "问题说明"


@dataclass
class MarkupResult:
    """What was added: marked cells by kind, rows with a 问题说明, comments kept, and anything not kept."""

    errors: int = 0
    hints: int = 0
    noted_rows: int = 0
    clerk_comments_kept: int = 0
    edits_applied: int = 0
    not_kept: list[str] = field(default_factory=list)


# -- small XML helpers ----------------------------------------------------------------------------


def attributes(tag: bytes) -> dict[str, str]:
    """The attributes of one start tag, values unescaped, names as written (with any prefix)."""
    return {
        name.decode(): html.unescape((double if double is not None else single or b"").decode())
        for name, double, single in _ATTR.findall(tag)
    }


def _set_attribute(element: bytes, name: str, value: str | int) -> bytes:
    """``element`` with attribute ``name`` set on its start tag (replaced or added)."""
    end = element.index(b">")
    start_tag, rest = element[:end], element[end:]
    pattern = re.compile(rb"(\s)" + re.escape(name.encode()) + rb"""\s*=\s*(?:"[^"]*"|'[^']*')""")
    new = f'{name}="{value}"'.encode()
    if pattern.search(start_tag):
        start_tag = pattern.sub(lambda m: m.group(1) + new, start_tag, count=1)
    elif start_tag.endswith(b"/"):
        start_tag = start_tag[:-1].rstrip() + b" " + new + b"/"
    else:
        start_tag = start_tag + b" " + new
    return start_tag + rest


def _without_attribute(start_tag: bytes, name: bytes) -> bytes:
    return re.sub(rb"\s" + re.escape(name) + rb"""\s*=\s*(?:"[^"]*"|'[^']*')""", b"", start_tag)


_XML_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def xml_text(text: str) -> bytes:
    """``text`` as XML character data: escaped, with Excel's ``_xHHHH_`` for characters XML forbids."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"_(x[0-9A-Fa-f]{4}_)", r"_x005F_\1", text)
    text = _XML_CONTROL.sub(lambda m: f"_x{ord(m.group()):04X}_", text)
    return text.replace("\ufffe", "").replace("\uffff", "").encode("utf-8")


def _escape_attribute(text: str) -> str:
    return html.escape(text, quote=True)


def _column_index(letters: bytes) -> int:
    number = 0
    for char in letters.upper():
        number = number * 26 + (char - 64)
    return number - 1


def _prefix_of(xml: bytes, root: bytes) -> bytes:
    """The namespace prefix (``b"x:"`` or ``b""``) of the root element ``root``."""
    found = re.search(rb"<(\w+:)?" + root + rb"\b", xml[:4096])
    if found is None:
        raise CannotMarkUp(f"no <{root.decode()}> element")
    return found.group(1) or b""


def _rels_part(part: str) -> str:
    folder, name = posixpath.split(part)
    return posixpath.join(folder, "_rels", name + ".rels")


def _resolve(source_part: str, target: str) -> str:
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(source_part), target))


def _relationships(xml: bytes) -> list[dict[str, str]]:
    return [attributes(tag) for tag in re.findall(rb"<(?:\w+:)?Relationship\b[^>]*>", xml)]


def _free_id(taken: Iterable[str]) -> Callable[[], str]:
    """A function handing out relationship ids ``rIdN`` not in ``taken``."""
    used = set(taken)
    counter = [max([int(i[3:]) for i in used if i.startswith("rId") and i[3:].isdigit()] or [0])]

    def next_id() -> str:
        counter[0] += 1
        while f"rId{counter[0]}" in used:
            counter[0] += 1
        used.add(f"rId{counter[0]}")
        return f"rId{counter[0]}"

    return next_id


def _free_name(pattern: str, taken: set[str]) -> str:
    number = 1
    while pattern.format(number) in taken:
        number += 1
    taken.add(pattern.format(number))
    return pattern.format(number)


def _add_relationships(rels_xml: bytes | None, entries: Sequence[tuple[str, str, str]]) -> bytes:
    """A relationships part with ``entries`` (id, type, target) added; created when ``rels_xml`` is None."""
    added = b"".join(
        f'<Relationship Id="{i}" Type="{t}" Target="{_escape_attribute(target)}"/>'.encode()
        for i, t, target in entries
    )
    if rels_xml is None:
        return (
            b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            + added
            + b"</Relationships>"
        )
    end = rels_xml.rfind(b"</")
    if end < 0:  # <Relationships/>
        return re.sub(rb"<((?:\w+:)?Relationships\b[^>]*?)\s*/>", rb"<\1>" + added + rb"</\1>", rels_xml)
    return rels_xml[:end] + added + rels_xml[end:]


# -- styles ---------------------------------------------------------------------------------------


class Styles:
    """``xl/styles.xml`` with derived cell formats appended; existing indices never move."""

    def __init__(self, xml: bytes) -> None:
        self.xml = xml
        self.prefix = _prefix_of(xml, b"styleSheet")
        self.xfs = self._elements(b"cellXfs", b"xf")
        self.fonts = self._elements(b"fonts", b"font")
        self.fills = self._elements(b"fills", b"fill")
        if not self.xfs or not self.fonts or not self.fills:
            raise CannotMarkUp("styles.xml without cell formats, fonts or fills")
        self.new_xfs: list[bytes] = []
        self.new_fonts: list[bytes] = []
        self.new_fills: list[bytes] = []
        self._cache: dict[tuple[object, ...], int] = {}

    def _section(self, name: bytes) -> re.Match[bytes]:
        p = re.escape(self.prefix)
        found = re.search(rb"<" + p + name + rb"\b[^>]*>(.*?)</" + p + name + rb">", self.xml, re.S)
        if found is None:
            raise CannotMarkUp(f"styles.xml without <{name.decode()}>")
        return found

    def _elements(self, section: bytes, name: bytes) -> list[bytes]:
        p = re.escape(self.prefix)
        body = self._section(section).group(1)
        return re.findall(rb"<" + p + name + rb"\b(?:[^>]*?/>|[^>]*>.*?</" + p + name + rb">)", body, re.S)

    def _fill(self, argb: str) -> int:
        key = ("fill", argb)
        if key not in self._cache:
            p = self.prefix.decode()
            self.new_fills.append(
                f'<{p}fill><{p}patternFill patternType="solid"><{p}fgColor rgb="{argb}"/>'
                f'<{p}bgColor indexed="64"/></{p}patternFill></{p}fill>'.encode()
            )
            self._cache[key] = len(self.fills) + len(self.new_fills) - 1
        return self._cache[key]

    def _font(self, colour: str | None, bold: bool) -> int:
        key = ("font", colour, bold)
        if key not in self._cache:
            p = self.prefix.decode().encode()
            font = self.fonts[0]
            if font.rstrip().endswith(b"/>"):  # <font/>
                font = b"<" + p + b"font></" + p + b"font>"
            opening = font.index(b">") + 1
            extra = b""
            if colour:
                font = re.sub(rb"<" + re.escape(p) + rb"color\b[^>]*?/>", b"", font)
                extra += b"<" + p + f'color rgb="{colour}"/>'.encode()
            if bold and not re.search(rb"<" + re.escape(p) + rb"b\b", font):
                extra = b"<" + p + b"b/>" + extra
            self.new_fonts.append(font[:opening] + extra + font[opening:])
            self._cache[key] = len(self.fonts) + len(self.new_fonts) - 1
        return self._cache[key]

    def _derive(self, base: int, key: tuple[object, ...], change: Callable[[bytes], bytes]) -> int:
        base = base if 0 <= base < len(self.xfs) else 0
        full = (*key, base)
        if full not in self._cache:
            self.new_xfs.append(change(self.xfs[base]))
            self._cache[full] = len(self.xfs) + len(self.new_xfs) - 1
        return self._cache[full]

    def marked(self, base: int, kind: int) -> int:
        """The index of style ``base`` with the fill of mark ``kind``."""
        fill = self._fill(MARK_FILLS[kind])

        def change(xf: bytes) -> bytes:
            return _set_attribute(_set_attribute(xf, "fillId", fill), "applyFill", 1)

        return self._derive(base, ("mark", kind), change)

    def note(self, *, bold: bool = False, wrap: bool = False, colour: str | None = NOTE_FONT_COLOUR) -> int:
        """A style for text the tool adds: the workbook's default font, coloured or bold, wrapped or not."""
        font = self._font(colour, bold)
        p = self.prefix

        def change(xf: bytes) -> bytes:
            xf = _set_attribute(_set_attribute(xf, "fontId", font), "applyFont", 1)
            xf = _set_attribute(_set_attribute(xf, "numFmtId", 49), "applyNumberFormat", 1)  # @ text
            xf = _set_attribute(_set_attribute(xf, "fillId", 0), "borderId", 0)
            if not wrap:
                return xf
            alignment = b"<" + p + b'alignment wrapText="1" vertical="top"/>'
            xf = re.sub(rb"<" + re.escape(p) + rb"alignment\b[^>]*?/>", b"", xf)
            if xf.rstrip().endswith(b"/>"):
                xf = xf.rstrip()[:-2] + b">" + alignment + b"</" + p + b"xf>"
            else:
                xf = xf.replace(b">", b">" + alignment, 1)
            return _set_attribute(xf, "applyAlignment", 1)

        return self._derive(0, ("note", bold, wrap, colour), change)

    def render(self) -> bytes:
        """The styles part with everything added."""
        xml = self.xml
        for section, existing, new in (
            (b"cellXfs", self.xfs, self.new_xfs),
            (b"fonts", self.fonts, self.new_fonts),
            (b"fills", self.fills, self.new_fills),
        ):
            if not new:
                continue
            p = re.escape(self.prefix)
            found = re.search(rb"(<" + p + section + rb"\b[^>]*>)(.*?)(</" + p + section + rb">)", xml, re.S)
            assert found is not None  # checked in __init__
            opening = _set_attribute(found.group(1), "count", len(existing) + len(new))
            xml = (
                xml[: found.start()]
                + opening
                + found.group(2)
                + b"".join(new)
                + found.group(3)
                + xml[found.end() :]
            )
        return xml


# -- one sheet ------------------------------------------------------------------------------------


@dataclass
class _Change:
    kind: int = 0
    text: str | None = None


@dataclass
class _SheetPlan:
    marks: SheetMarks | None
    part: str
    edits: dict[tuple[int, int], str]
    comments_part: str | None = None
    vml_part: str | None = None
    new_comments: bool = False
    new_vml: bool = False
    legacy_rel_id: str | None = None
    geometry: SheetGeometry | None = None
    existing_refs: set[str] = field(default_factory=set)
    note_col: int | None = None
    index: int = 0


def _without_formulas(rows_xml: bytes, prefix: bytes) -> bytes:
    """``rows_xml`` (whole ``<row>`` elements) with every formula dropped, each cell keeping its saved value.

    A text result (``t="str"``) becomes an inline text cell; a cell saved
    without a result is left empty (no type, no value); the dynamic-array
    mark (``cm``) goes with the formula.
    """
    p = re.escape(prefix)
    formula = re.compile(rb"<" + p + rb"f\b[^>]*?(?:/>|>.*?</" + p + rb"f>)", re.S)
    if formula.search(rows_xml) is None:
        return rows_xml
    value = re.compile(rb"<" + p + rb"v\b[^>]*?(?:/>|>(.*?)</" + p + rb"v>)", re.S)

    def plain(cell: re.Match[bytes]) -> bytes:
        inner = cell.group(2)
        if inner is None or formula.search(inner) is None:
            return cell.group()
        inner = formula.sub(b"", inner)
        start = _without_attribute(b"<" + prefix + b"c" + cell.group(1) + b">", b"cm")
        kind = attributes(start).get("t", "n")
        saved = value.search(inner)
        if saved is None and b"<" + prefix + b"is" not in inner:
            start = _without_attribute(start, b"t")
            return start[:-1] + b"/>" if not inner.strip() else start + inner + b"</" + prefix + b"c>"
        if kind == "str" and saved is not None:
            text = b"<" + prefix + b'is><' + prefix + b't xml:space="preserve">' + (saved.group(1) or b"")
            text += b"</" + prefix + b"t></" + prefix + b"is>"
            inner = inner[: saved.start()] + text + inner[saved.end() :]
            start = _set_attribute(start, "t", "inlineStr")
        return start + inner + b"</" + prefix + b"c>"

    cells = re.compile(rb"<" + p + rb"c\b([^>]*?)(?:/>|>(.*?)</" + p + rb"c>)", re.S)
    return cells.sub(plain, rows_xml)


class _SheetRewriter:
    """Streams one worksheet part, rewriting the rows that change and dropping every formula."""

    def __init__(self, plan: _SheetPlan, styles: Styles, result: MarkupResult) -> None:
        self.plan = plan
        self.styles = styles
        self.result = result
        marks = plan.marks
        self.changes: dict[int, dict[int, _Change]] = {}
        self.notes: dict[int, str] = {}
        if marks is not None:
            for row, col, kind in zip(
                marks.rows.tolist(), marks.cols.tolist(), marks.kinds.tolist(), strict=True
            ):
                self.changes.setdefault(row, {})[col] = _Change(kind=int(kind))
            self.notes = dict(zip(marks.note_rows.tolist(), marks.note_texts.tolist(), strict=True))
            if marks.header_row is not None and self.notes:
                self.notes[marks.header_row] = marks.note_header
        for (row, col), text in plan.edits.items():
            self.changes.setdefault(row, {}).setdefault(col, _Change()).text = text
        self.targets = sorted(set(self.changes) | set(self.notes))
        self.note_col: int | None = None
        self.column_styles: dict[int, int] = {}
        self.prefix = b""

    # head: dimension, column widths and styles, room for the 问题说明 column
    def _head(self, head: bytes) -> bytes:
        p = re.escape(self.prefix)
        marks = self.plan.marks
        right = marks.last_column if marks is not None else 0
        dimension = re.search(rb"<" + p + rb"dimension\b[^>]*>", head)
        if dimension is not None:
            ref = attributes(dimension.group()).get("ref", "")
            last_cell = ref.split(":")[-1]
            if re.fullmatch(r"[A-Za-z]{1,3}[0-9]+", last_cell):
                right = max(right, xl_cell_to_rowcol(last_cell.upper())[1])
        geometry_px: dict[int, float] = {}
        cols = list(re.finditer(rb"<" + p + rb"col\b[^>]*>", head))
        for tag in cols:
            found = attributes(tag.group())
            try:
                low, high = int(found["min"]) - 1, min(int(found["max"]) - 1, LAST_COLUMN)
            except (KeyError, ValueError):
                continue
            hidden = found.get("hidden") in ("1", "true")
            width = float(found.get("width", "8.43") or 8.43)
            style = int(found["style"]) if found.get("style", "").isdigit() else 0
            for col in range(low, min(high, low + 512) + 1):  # a range over every column: keep the first few
                geometry_px[col] = 0.0 if hidden else round(width * 7)
                if style:
                    self.column_styles[col] = style
            if style and high > low + 512:
                self.column_styles.update({c: style for c in range(low + 513, min(high, right + 2) + 1)})
        default_px, row_px = 64.0, 20.0
        sheet_format = re.search(rb"<" + p + rb"sheetFormatPr\b[^>]*>", head)
        if sheet_format is not None:
            found = attributes(sheet_format.group())
            try:
                if "defaultColWidth" in found:
                    default_px = round(float(found["defaultColWidth"]) * 7)
                if "defaultRowHeight" in found:
                    row_px = float(found["defaultRowHeight"]) * 4 / 3
            except ValueError:
                pass
        column_px = np.full(max(geometry_px, default=-1) + 1, default_px)
        for col, px in geometry_px.items():
            column_px[col] = px
        self.plan.geometry = SheetGeometry(column_px, default_px, row_px)
        if not self.notes or right >= LAST_COLUMN:
            self.notes = {}
            self.targets = sorted(self.changes)
            return head
        self.note_col = right + 1
        self.plan.note_col = self.note_col
        letter = xl_col_to_name(self.note_col).encode()
        if dimension is not None:
            ref = attributes(dimension.group()).get("ref", "A1")
            first, _, last = ref.partition(":")
            last = last or first
            match = re.fullmatch(r"([A-Za-z]{1,3})([0-9]+)", last)
            if match:
                new_ref = f"{first}:{letter.decode()}{match.group(2)}"
                head = head.replace(dimension.group(), _set_attribute(dimension.group(), "ref", new_ref), 1)
        new_col = (
            b"<"
            + self.prefix
            + f'col min="{self.note_col + 1}" max="{self.note_col + 1}" '.encode()
            + f'width="{NOTE_COLUMN_WIDTH}" customWidth="1"/>'.encode()
        )
        number = self.note_col + 1
        for tag in cols:
            found = attributes(tag.group())
            low, high = int(found.get("min", "0") or 0), int(found.get("max", "0") or 0)
            if low <= number <= high:
                # The clerk's setting for a run of columns (all hidden, or all 9 wide) would hide or squeeze
                # 问题说明: the run is cut around it, the rest of it kept as it was.
                element = tag.group()
                pieces = (
                    [_set_attribute(_set_attribute(element, "min", low), "max", number - 1)]
                    if low < number
                    else []
                )
                pieces.append(new_col)
                if number < high:
                    pieces.append(_set_attribute(_set_attribute(element, "min", number + 1), "max", high))
                return head[: tag.start()] + b"".join(pieces) + head[tag.end() :]
        if cols:
            after = [t for t in cols if int(attributes(t.group()).get("min", "0") or 0) > self.note_col + 1]
            at = after[0].start() if after else head.index(b"</" + self.prefix + b"cols>")
            return head[:at] + new_col + head[at:]
        # The head ends where <sheetData> starts, which is where <cols> belongs.
        return head + b"<" + self.prefix + b"cols>" + new_col + b"</" + self.prefix + b"cols>"

    # rows
    def _cell(self, ref: str, style: int, text: str | None) -> bytes:
        p = self.prefix
        if text is None:
            return b"<" + p + f'c r="{ref}" s="{style}"/>'.encode()
        return (
            b"<" + p + f'c r="{ref}" s="{style}" t="inlineStr"><'.encode() + p + b"is><" + p
            + b't xml:space="preserve">' + xml_text(text) + b"</" + p + b"t></" + p + b"is></" + p + b"c>"
        )  # fmt: skip

    def _rewrite_row(self, number: int, row_xml: bytes, open_end: int, self_closing: bool) -> bytes:
        p = self.prefix
        row0 = number - 1
        start_tag = row_xml[:open_end]
        content = b"" if self_closing else row_xml[open_end : len(row_xml) - len(b"</" + p + b"row>")]
        row_attrs = attributes(start_tag)
        row_style = (
            int(row_attrs.get("s", "0") or 0) if row_attrs.get("customFormat") in ("1", "true") else None
        )
        cells: list[tuple[int, bytes]] = []
        column = -1
        rest: list[bytes] = []  # anything in the row besides cells (an <extLst>) is kept after them
        position = 0
        for cell in re.finditer(
            rb"<" + re.escape(p) + rb"c\b([^>]*?)(?:/>|>(.*?)</" + re.escape(p) + rb"c>)", content, re.S
        ):
            ref = _CELL_REF.search(cell.group(1))
            column = _column_index(ref.group(1)) if ref else column + 1
            cells.append((column, cell.group()))
            rest.append(content[position : cell.start()])
            position = cell.end()
        rest.append(content[position:])
        changes = self.changes.get(row0, {})
        seen = {col for col, _ in cells}
        rebuilt: list[tuple[int, bytes]] = []
        for col, xml in cells:
            change = changes.get(col)
            if change is not None:
                xml = self._change_cell(xml, col, number, change)
            rebuilt.append((col, xml))
        for col, change in changes.items():
            if col in seen:
                continue
            base = row_style if row_style is not None else self.column_styles.get(col, 0)
            style = self.styles.marked(base, change.kind) if change.kind else base
            self._count(change.kind)
            if change.text is not None:
                self.result.edits_applied += 1
            rebuilt.append((col, self._cell(f"{xl_col_to_name(col)}{number}", style, change.text)))
        if row0 in self.notes and self.note_col is not None and self.note_col not in seen:
            marks = self.plan.marks
            header = marks is not None and row0 == marks.header_row
            # The header looks like the clerk's other headers: the style of their last one.
            last = _STYLE_ATTR.search(cells[-1][1].split(b">", 1)[0]) if header and cells else None
            if last is not None:
                style = int(last.group(1))
            elif header:
                style = self.styles.note(bold=True, colour=None)
            else:
                style = self.styles.note(wrap=True)
            note_ref = f"{xl_col_to_name(self.note_col)}{number}"
            rebuilt.append((self.note_col, self._cell(note_ref, style, self.notes[row0])))
            if not header:
                self.result.noted_rows += 1
        rebuilt.sort(key=lambda pair: pair[0])
        opening = _without_attribute(start_tag.rstrip(b">").rstrip(b"/"), b"spans")
        if (
            row0 in self.notes
            and self.note_col is not None
            and row_attrs.get("customHeight") in ("1", "true")
        ):
            # A row of fixed height (WPS and Excel save one once heights are set) would show one line of
            # the reason: it is made as tall as the reason's lines need, never lower.
            needed = note_height(self.notes[row0])
            try:
                height = float(row_attrs.get("ht", "0") or 0)
            except ValueError:
                height = 0.0
            if needed > height:
                opening = _set_attribute(opening + b">", "ht", f"{needed:g}")[:-1]
        kept = b"".join(part for part in rest if part.strip())
        return opening + b">" + b"".join(xml for _, xml in rebuilt) + kept + b"</" + p + b"row>"

    def _count(self, kind: int) -> None:
        if kind == MARK_ERROR:
            self.result.errors += 1
        elif kind == MARK_HINT:
            self.result.hints += 1

    def _change_cell(self, xml: bytes, col: int, number: int, change: _Change) -> bytes:
        start_end = xml.index(b">")
        start_tag = xml[: start_end + 1]
        found = _STYLE_ATTR.search(start_tag)
        style = int(found.group(1)) if found else 0
        if change.kind:
            style = self.styles.marked(style, change.kind)
            self._count(change.kind)
        if change.text is not None:
            if re.search(rb"<(?:\w+:)?f\b[^>]*\bt\s*=\s*[\"']shared[\"'][^>]*\bref\s*=", xml):
                sheet = self.plan.marks.name if self.plan.marks else ""
                where = f"{sheet}!{xl_col_to_name(col)}{number}"
                self.result.not_kept.append(f"{where} 是共享公式的首格，未改写")
            else:
                self.result.edits_applied += 1
                return self._cell(f"{xl_col_to_name(col)}{number}", style, change.text)
        if not change.kind:
            return xml
        return _set_attribute(xml, "s", style)

    def rows(self, body: bytes, state: dict[str, int], out: IO[bytes]) -> None:
        """Copy ``body`` (whole ``<row>`` elements) to ``out`` without formulas, rewriting the target rows."""
        body = _without_formulas(body, self.prefix)
        p = re.escape(self.prefix)
        pending = state["next"]
        if pending >= len(self.targets):
            out.write(body)
            return
        target = self.targets[pending] + 1
        # Rows numbered in order: skip a stretch that ends before the next target without looking at it.
        if state.get("numbered", 1):
            last_row = body.rfind(b"<" + self.prefix + b"row")
            if last_row >= 0:
                last_number = _ROW_NUMBER.search(body, last_row, body.find(b">", last_row))
                if last_number is not None and int(last_number.group(1)) < target:
                    state["row"] = int(last_number.group(1))
                    out.write(body)
                    return
        written = 0
        close = b"</" + self.prefix + b"row>"
        for tag in re.finditer(rb"<" + p + rb"row\b([^>]*?)(/?)>", body):
            found = _ROW_NUMBER.search(tag.group(1))
            if found is None:
                state["numbered"] = 0
            number = int(found.group(1)) if found else state["row"] + 1
            if number <= state["row"]:
                # Rows out of order, or a row tag inside a comment or a text: the marks would go astray.
                raise CannotMarkUp(f"row {number} after row {state['row']}")
            state["row"] = number
            if pending < len(self.targets) and self.targets[pending] + 1 < number:
                raise CannotMarkUp(f"row {self.targets[pending] + 1} to mark is not in the sheet")
            if pending >= len(self.targets):
                break
            if number != self.targets[pending] + 1:
                continue
            end = tag.end() if tag.group(2) else body.index(close, tag.end()) + len(close)
            out.write(body[written : tag.start()])
            out.write(
                self._rewrite_row(
                    number, body[tag.start() : end], tag.end() - tag.start(), bool(tag.group(2))
                )
            )
            written = end
            pending += 1
        state["next"] = pending
        out.write(body[written:])

    def _tail(self, tail: bytes) -> bytes:
        if self.plan.legacy_rel_id is None:
            return tail
        element = (
            b"<"
            + self.prefix
            + f'legacyDrawing xmlns:r="{_REL_NS}" r:id="{self.plan.legacy_rel_id}"/>'.encode()
        )
        positions = [
            m.start()
            for name in _AFTER_LEGACY_DRAWING
            if (m := re.search(rb"<" + re.escape(self.prefix) + name + rb"\b", tail)) is not None
        ]
        at = min(positions) if positions else tail.rindex(b"</" + self.prefix + b"worksheet")
        return tail[:at] + element + tail[at:]

    def run(self, source: IO[bytes], out: IO[bytes]) -> None:
        """Read the part from ``source``, write the marked-up part to ``out``."""
        buffer = source.read(READ_BYTES)
        if buffer.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise CannotMarkUp("worksheet part in UTF-16")
        self.prefix = _prefix_of(buffer, b"worksheet")
        p = re.escape(self.prefix)
        opening = re.compile(rb"<" + p + rb"sheetData\b[^>]*?(/?)>")
        while (found := opening.search(buffer)) is None:
            more = source.read(READ_BYTES)
            if not more:
                raise CannotMarkUp("worksheet without <sheetData>")
            buffer += more
        out.write(self._head(buffer[: found.start()]))
        out.write(found.group())
        pending = buffer[found.end() :]
        state = {"next": 0, "row": 0, "numbered": 1}
        if not found.group(1):
            closing = b"</" + self.prefix + b"sheetData>"
            row_start = b"<" + self.prefix + b"row"
            while True:
                end = pending.find(closing)
                if end >= 0:
                    self.rows(pending[:end], state, out)
                    pending = pending[end:]
                    break
                cut = pending.rfind(row_start)
                if cut > 0:
                    self.rows(pending[:cut], state, out)
                    pending = pending[cut:]
                more = source.read(READ_BYTES)
                if not more:
                    raise CannotMarkUp("worksheet without </sheetData>")
                pending += more
        if state["next"] < len(self.targets):
            raise CannotMarkUp(f"row {self.targets[state['next']] + 1} to mark was never reached")
        while more := source.read(READ_BYTES):
            pending += more
        out.write(self._tail(pending))


# -- the package ----------------------------------------------------------------------------------


def _existing_comment_refs(xml: bytes) -> set[str]:
    return {
        ref.decode().upper()
        for ref in re.findall(rb"""<(?:\w+:)?comment\b[^>]*?\bref\s*=\s*["']([A-Za-z]+[0-9]+)["']""", xml)
    }


def _extend_comments(xml: bytes, entries: Iterable[bytes], author: str) -> Iterator[bytes]:
    prefix = _prefix_of(xml, b"comments")
    p = re.escape(prefix)
    authors = re.search(rb"(<" + p + rb"authors\b[^>]*>)(.*?)(</" + p + rb"authors>)", xml, re.S)
    author_xml = b"<" + prefix + b"author>" + xml_text(author) + b"</" + prefix + b"author>"
    if authors is None:
        raise CannotMarkUp("comments part without <authors>")
    author_id = len(re.findall(rb"<" + p + rb"author\b", authors.group(2)))
    xml = xml[: authors.end(2)] + author_xml + xml[authors.end(2) :]
    closing = xml.rfind(b"</" + prefix + b"commentList>")
    if closing < 0:
        raise CannotMarkUp("comments part without <commentList>")

    def written(chunk: bytes) -> bytes:
        chunk = chunk.replace(b'authorId="0"', f'authorId="{author_id}"'.encode())
        if prefix:
            chunk = re.sub(
                rb"<(/?)(comment|text|r|rPr|sz|color|rFont|charset|t)\b", rb"<\1" + prefix + rb"\2", chunk
            )
        return chunk

    # Checked above, before the part is opened; the entries follow a slice at a time.
    return itertools.chain((xml[:closing],), map(written, entries), (xml[closing:],))


def _extend_vml(xml: bytes, shapes: Iterable[bytes], blocks: Sequence[int]) -> Iterator[bytes]:
    root = re.search(rb"<xml\b[^>]*>", xml)
    if root is None:
        raise CannotMarkUp("VML drawing without <xml>")
    tag = root.group()
    for declaration in VML_NAMESPACES.split(" "):
        name = declaration.split("=")[0].encode()
        if name not in tag:
            tag = tag[:-1] + b" " + declaration.encode() + b">"
    xml = xml[: root.start()] + tag + xml[root.end() :]
    data = ",".join(str(b) for b in blocks)
    if _IDMAP.search(xml):
        xml = _IDMAP.sub(
            lambda m: m.group(1) + (m.group(2) + b"," if m.group(2) else b"") + data.encode() + m.group(3),
            xml,
            count=1,
        )
    else:
        layout = f'<o:shapelayout v:ext="edit"><o:idmap v:ext="edit" data="{data}"/></o:shapelayout>'.encode()
        at = xml.index(b">", root.start()) + 1
        xml = xml[:at] + layout + xml[at:]
    if b'id="_x0000_t202"' not in xml:
        at = xml.rindex(b"</xml>")
        xml = xml[:at] + NOTE_SHAPETYPE.encode() + xml[at:]
    at = xml.rindex(b"</xml>")
    return itertools.chain((xml[:at],), shapes, (xml[at:],))


def _used_shape_blocks(archive: zipfile.ZipFile) -> set[int]:
    used: set[int] = set()
    for name in archive.namelist():
        if not name.lower().endswith(".vml"):
            continue
        xml = archive.read(name)
        for found in _IDMAP.finditer(xml):
            used |= {int(b) for b in re.findall(rb"[0-9]+", found.group(2))}
        used |= {int(i) // SHAPES_PER_BLOCK for i in _SHAPE_ID.findall(xml)}
    return used


def _write_part(out: zipfile.ZipFile, name: str, chunks: Iterable[bytes]) -> None:
    """Write a part given a piece at a time (comments and their shapes: up to gigabytes at once)."""
    with open_part(out, name) as part:
        for chunk in chunks:
            part.write(chunk)


def _copy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: zipfile.ZipFile) -> None:
    with archive.open(info) as source, open_part(out, info.filename) as target:
        shutil.copyfileobj(source, target, 1 << 20)


def legend_sheet(lines: Sequence[str], title_style: int, text_style: int) -> bytes:
    """A worksheet part holding ``lines`` in column A, the first as a title (inline strings)."""
    rows = []
    for number, line in enumerate(lines, start=1):
        style = title_style if number == 1 else text_style
        rows.append(
            f'<row r="{number}"><c r="A{number}" s="{style}" t="inlineStr">'.encode()
            + b'<is><t xml:space="preserve">'
            + xml_text(line)
            + b"</t></is></c></row>"
        )
    return (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        + f'<worksheet xmlns="{_MAIN_NS}" xmlns:r="{_REL_NS}">'.encode()
        + b'<dimension ref="A1:A'
        + str(max(len(lines), 1)).encode()
        + b'"/>'
        + b'<sheetViews><sheetView workbookViewId="0"/></sheetViews><sheetFormatPr defaultRowHeight="15"/>'
        + b'<cols><col min="1" max="1" width="100" customWidth="1"/></cols><sheetData>'
        + b"".join(rows)
        + b"</sheetData>"
        + b'<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/>'
        + b'<pageSetup paperSize="9" orientation="landscape" fitToWidth="1" fitToHeight="0"/></worksheet>'
    )


def mark_up(
    source: Path,
    target: Path,
    sheets: Sequence[SheetMarks],
    *,
    legend: Callable[[MarkupResult], Sequence[str]],
    legend_name: str = "说明",
    author: str = "ehc",
    edits: Mapping[tuple[str, int, int], str] | None = None,
) -> MarkupResult:
    """Copy workbook ``source`` to ``target`` with ``sheets``' marks, ``edits`` applied and a legend sheet.

    ``edits`` maps (sheet name, row number as Excel shows it, 0-based column)
    to the cell's new text, written as a text cell in the cell's own style.
    ``legend`` is called with what was added and gives the legend's lines
    (the first is its title).  Raises :class:`CannotMarkUp` for a package
    this module cannot follow, ``OSError`` for file problems.
    """
    result = MarkupResult()
    with zipfile.ZipFile(source) as archive:
        names = set(archive.namelist())
        plans, extra, styles_part, styles = _plan(archive, names, sheets, edits or {}, legend_name)
        if extra.macros:
            result.not_kept.append("宏（VBA 代码）：标注副本是 .xlsx，不含原文件中的宏，原文件中的宏不受影响")
        with new_package(target) as out:
            deferred = {styles_part, extra.workbook_part, *extra.dropped}
            deferred |= {p for plan in plans.values() for p in (plan.comments_part, plan.vml_part) if p}
            replaced = extra.replacements
            for info in archive.infolist():
                name = info.filename
                if name in plans:
                    rewriter = _SheetRewriter(plans[name], styles, result)
                    with archive.open(info) as part_in, open_part(out, name) as part_out:
                        rewriter.run(part_in, part_out)
                elif name in deferred:
                    continue
                elif name in replaced:
                    out.writestr(name, replaced[name])
                elif not info.is_dir():
                    _copy(archive, info, out)
            _write_comments(archive, out, plans, author, extra.first_block, result)
            title_style, text_style = styles.note(bold=True, colour=None), styles.note(wrap=True, colour=None)
            out.writestr(extra.legend_part, legend_sheet(list(legend(result)), title_style, text_style))
            replaced[extra.workbook_part] = with_print_areas(replaced[extra.workbook_part], plans.values())
            for name, data in replaced.items():
                if name not in names or name == extra.workbook_part:
                    out.writestr(name, data)
            out.writestr(styles_part, styles.render())
    return result


@dataclass
class _Extra:
    replacements: dict[str, bytes]
    legend_part: str
    first_block: int
    workbook_part: str
    dropped: set[str]  # parts left out of the copy: macros, a stale calcChain, links to other workbooks
    macros: bool = False


_DEFINED_NAME = re.compile(rb"(<(?:\w+:)?definedName\b[^>]*>)(.*?)(</(?:\w+:)?definedName>)", re.S)
_AREA_END = re.compile(r"(:\$?)([A-Za-z]{1,3})(\$?[0-9]*)$")


def with_print_areas(workbook: bytes, plans: Iterable[_SheetPlan]) -> bytes:
    """``workbook`` with each marked sheet's print area widened to its 问题说明 column.

    Only an area that reaches the clerk's last column is widened: one that
    prints part of the table on purpose is left as it is.
    """
    widen = {
        plan.index: (plan.marks.last_column, plan.note_col)
        for plan in plans
        if plan.marks is not None and plan.note_col is not None
    }
    if not widen:
        return workbook

    def area(text: str, last: int, note: int) -> str:
        found = _AREA_END.search(text)
        if found is None:
            return text
        right = _column_index(found.group(2).encode())
        if not last <= right < note:
            return text
        return text[: found.start()] + found.group(1) + xl_col_to_name(note) + found.group(3)

    def widened(match: re.Match[bytes]) -> bytes:
        found = attributes(match.group(1))
        sheet = found.get("localSheetId", "")
        if found.get("name") != "_xlnm.Print_Area" or not sheet.isdigit() or int(sheet) not in widen:
            return match.group()
        last, note = widen[int(sheet)]
        areas = html.unescape(match.group(2).decode()).split(",")
        text = ",".join(area(a, last, note) for a in areas)
        return match.group(1) + html.escape(text, quote=False).encode() + match.group(3)

    return _DEFINED_NAME.sub(widened, workbook)


def _plan(
    archive: zipfile.ZipFile,
    names: set[str],
    sheets: Sequence[SheetMarks],
    edits: Mapping[tuple[str, int, int], str],
    legend_name: str,
) -> tuple[dict[str, _SheetPlan], _Extra, str, Styles]:
    """Which parts change and how: the sheet plans, new and replaced parts, the styles."""
    if "[Content_Types].xml" not in names or "_rels/.rels" not in names:
        raise CannotMarkUp("not an OOXML package")
    main = next(
        (_resolve("", r["Target"]) for r in _relationships(archive.read("_rels/.rels"))
         if r.get("Type", "").endswith("/officeDocument")),
        None,
    )  # fmt: skip
    if main is None or main not in names:
        raise CannotMarkUp("no workbook part")
    workbook = archive.read(main)
    workbook_rels_part = _rels_part(main)
    workbook_rels = archive.read(workbook_rels_part)
    relations = {r.get("Id", ""): r for r in _relationships(workbook_rels)}
    styles_part = next(
        (_resolve(main, r["Target"]) for r in relations.values() if r.get("Type", "").endswith("/styles")),
        None,
    )
    if styles_part is None or styles_part not in names:
        raise CannotMarkUp("no styles part")
    styles = Styles(archive.read(styles_part))
    sheet_tags = re.findall(rb"<(?:\w+:)?sheet\b[^>]*>", workbook)
    by_name: dict[str, str] = {}
    worksheets: dict[str, str] = {}  # of by_name, the sheets holding cells
    positions: dict[str, int] = {}  # a sheet's place in <sheets>: its localSheetId
    sheet_ids: list[int] = []
    id_prefix = "r:"
    for position, tag in enumerate(sheet_tags):
        found = attributes(tag)
        positions[found.get("name", "")] = position
        rel_key = next((k for k in found if k.endswith(":id")), None)
        if rel_key is None or found.get(rel_key) not in relations:
            continue
        id_prefix = rel_key[:-2]
        by_name[found.get("name", "")] = _resolve(main, relations[found[rel_key]]["Target"])
        if relations[found[rel_key]].get("Type", "").endswith("/worksheet"):  # not a chart sheet
            worksheets[found.get("name", "")] = by_name[found.get("name", "")]
        if found.get("sheetId", "").isdigit():
            sheet_ids.append(int(found["sheetId"]))
    per_sheet_edits: dict[str, dict[tuple[int, int], str]] = {}
    for (sheet, row, col), text in edits.items():
        per_sheet_edits.setdefault(sheet, {})[(row - 1, col)] = text
    wanted = {s.name for s in sheets} | set(per_sheet_edits)
    missing = wanted - set(by_name)
    if missing:
        raise CannotMarkUp(f"sheets not in the workbook: {sorted(missing)}")
    replacements: dict[str, bytes] = {}
    content_types = archive.read("[Content_Types].xml")
    macros = _macro_parts(archive, names, main, relations)
    if macros:
        workbook_rels = _without_relationships(workbook_rels, "/vbaProject")
        content_types = _without_overrides(content_types, macros)
    chain = {
        _resolve(main, r["Target"]) for r in relations.values() if r.get("Type", "").endswith("/calcChain")
    }
    if chain:
        # The copy has no formulas left for the calculation chain to list: Excel would open it only after
        # "Removed Records: Formula from /xl/calcChain.xml".  Without it, Excel builds a chain of its own.
        workbook_rels = _without_relationships(workbook_rels, "/calcChain")
        content_types = _without_overrides(content_types, chain)
    else:
        chain = set()
    links = _external_link_parts(archive, names, main, relations)
    if links:
        # A link to another workbook is asked to be brought up to date when the copy is opened (from
        # a file path or an address the register named): the copy holds the values as they were.
        workbook_rels = _without_relationships(workbook_rels, "/externalLink")
        content_types = _without_overrides(content_types, links)
        workbook = _without_external_references(workbook)
    content_types = _OTHER_WORKBOOK_TYPES.sub(_WORKBOOK_TYPE, content_types)
    overrides: list[bytes] = []
    taken = set(names)
    used_blocks = _used_shape_blocks(archive)
    first_block = max(used_blocks, default=0) + 1
    plans: dict[str, _SheetPlan] = {}
    rel_base = next(
        (r["Type"].rsplit("/", 1)[0] for r in relations.values() if r.get("Type", "").endswith("/worksheet")),
        _REL_NS,
    )
    for marks in sheets:
        part = by_name[marks.name]
        plans[part] = _SheetPlan(
            marks, part, per_sheet_edits.pop(marks.name, {}), index=positions[marks.name]
        )
    for name, sheet_edits in per_sheet_edits.items():
        plans[by_name[name]] = _SheetPlan(None, by_name[name], sheet_edits)
    for part in worksheets.values():  # the others are streamed too: their formulas dropped
        if part not in plans and part in names:
            plans[part] = _SheetPlan(None, part, {})
    for part, plan in plans.items():
        if plan.marks is None or not len(plan.marks.rows):
            continue
        rels_part = _rels_part(part)
        rels = archive.read(rels_part) if rels_part in names else None
        found_rels = _relationships(rels) if rels is not None else []
        for r in found_rels:
            kind = r.get("Type", "")
            if kind.endswith("/comments"):
                plan.comments_part = _resolve(part, r["Target"])
            elif kind.endswith("/vmlDrawing"):
                plan.vml_part = _resolve(part, r["Target"])
        if plan.comments_part and plan.comments_part in names:
            plan.existing_refs = _existing_comment_refs(archive.read(plan.comments_part))
        next_id = _free_id(r.get("Id", "") for r in found_rels)
        added: list[tuple[str, str, str]] = []
        if plan.comments_part is None or plan.comments_part not in names:
            plan.comments_part = _free_name("xl/comments{}.xml", taken)
            plan.new_comments = True
            relative = posixpath.relpath(plan.comments_part, posixpath.dirname(part))
            added.append((next_id(), f"{rel_base}/comments", relative))
            overrides.append(
                f'<Override PartName="/{plan.comments_part}" ContentType="{_COMMENTS_TYPE}"/>'.encode()
            )
        if plan.vml_part is None or plan.vml_part not in names:
            plan.vml_part = _free_name("xl/drawings/vmlDrawing{}.vml", taken)
            plan.new_vml = True
            plan.legacy_rel_id = next_id()
            relative = posixpath.relpath(plan.vml_part, posixpath.dirname(part))
            added.append((plan.legacy_rel_id, f"{rel_base}/vmlDrawing", relative))
        if added:
            replacements[rels_part] = _add_relationships(rels, added)
    legend_part = _free_name("xl/worksheets/sheet{}.xml", taken)
    legend_rel = _free_id(relations)()
    replacements[workbook_rels_part] = _add_relationships(
        workbook_rels,
        [(legend_rel, f"{rel_base}/worksheet", posixpath.relpath(legend_part, posixpath.dirname(main)))],
    )
    taken_names = {n.lower() for n in by_name}
    name = legend_name
    number = 2
    while name.lower() in taken_names:
        name = f"{legend_name}{number}"
        number += 1
    sheet_id = max(sheet_ids, default=0) + 1
    sheet_xml = f'<sheet name="{_escape_attribute(name)}" sheetId="{sheet_id}" {id_prefix}id="{legend_rel}"/>'
    prefix_match = re.search(rb"<(\w+:)?sheets\b", workbook)
    prefix = prefix_match.group(1) or b"" if prefix_match else b""
    closing = workbook.find(b"</" + prefix + b"sheets>")
    if closing < 0:
        raise CannotMarkUp("workbook without </sheets>")
    replacements[main] = workbook[:closing] + b"<" + prefix + sheet_xml[1:].encode() + workbook[closing:]
    overrides.append(f'<Override PartName="/{legend_part}" ContentType="{_SHEET_TYPE}"/>'.encode())
    if any(plan.new_vml for plan in plans.values()) and not re.search(
        rb"""<Default\b[^>]*Extension\s*=\s*["']vml["']""", content_types, re.I
    ):
        overrides.append(f'<Default Extension="vml" ContentType="{_VML_TYPE}"/>'.encode())
    at = content_types.rfind(b"</")
    replacements["[Content_Types].xml"] = content_types[:at] + b"".join(overrides) + content_types[at:]
    dropped = macros | (chain & names) | links
    extra = _Extra(replacements, legend_part, first_block, main, dropped, bool(macros))
    return plans, extra, styles_part, styles


def _macro_parts(
    archive: zipfile.ZipFile, names: set[str], main: str, relations: Mapping[str, dict[str, str]]
) -> set[str]:
    """The parts of a workbook's macros (VBA project, its signatures, their relationships)."""
    parts = {
        _resolve(main, r["Target"]) for r in relations.values() if r.get("Type", "").endswith("/vbaProject")
    }
    for project in list(parts):
        rels = _rels_part(project)
        if rels in names:
            parts.add(rels)
            parts |= {_resolve(project, r["Target"]) for r in _relationships(archive.read(rels))}
    return parts & names


def _external_link_parts(
    archive: zipfile.ZipFile, names: set[str], main: str, relations: Mapping[str, dict[str, str]]
) -> set[str]:
    """The parts of a workbook's links to other workbooks (each link and its relationships)."""
    parts = {
        _resolve(main, r["Target"]) for r in relations.values() if r.get("Type", "").endswith("/externalLink")
    }
    parts |= {_rels_part(part) for part in parts}
    return parts & names


_EXTERNAL_REFERENCES = re.compile(
    rb"<(\w+:)?externalReferences\b[^>]*?(?:/>|>.*?</(?:\w+:)?externalReferences>)", re.S
)
#: A reference to another workbook in a defined name: ``[1]Sheet1!$A$1``, ``'[2]名单'!$B:$B``.
_EXTERNAL_IN_NAME = re.compile(rb"\[[0-9]+\]")


def _without_external_references(workbook: bytes) -> bytes:
    """The workbook part without its list of linked workbooks, and without the defined names that
    point into one (they would point at nothing)."""
    workbook = _EXTERNAL_REFERENCES.sub(b"", workbook)

    def kept(match: re.Match[bytes]) -> bytes:
        return b"" if _EXTERNAL_IN_NAME.search(match.group(2)) else match.group(0)

    return _DEFINED_NAME.sub(kept, workbook)


def _without_relationships(rels_xml: bytes, type_ending: str) -> bytes:
    """A relationships part without the relationships whose type ends with ``type_ending``."""

    def dropped(match: re.Match[bytes]) -> bytes:
        return b"" if attributes(match.group(0)).get("Type", "").endswith(type_ending) else match.group(0)

    return re.sub(rb"<(?:\w+:)?Relationship\b[^>]*?(?:/>|>\s*</(?:\w+:)?Relationship>)", dropped, rels_xml)


def _without_overrides(content_types: bytes, parts: set[str]) -> bytes:
    """``[Content_Types].xml`` without the Override elements of ``parts``."""

    def dropped(match: re.Match[bytes]) -> bytes:
        return b"" if attributes(match.group(0)).get("PartName", "").lstrip("/") in parts else match.group(0)

    return re.sub(rb"<(?:\w+:)?Override\b[^>]*?(?:/>|>\s*</(?:\w+:)?Override>)", dropped, content_types)


def _write_comments(
    archive: zipfile.ZipFile,
    out: zipfile.ZipFile,
    plans: Mapping[str, _SheetPlan],
    author: str,
    first_block: int,
    result: MarkupResult,
) -> None:
    """Write each marked sheet's comments part and VML drawing (extended or new)."""
    block = first_block
    written: set[str] = set()
    for plan in plans.values():
        marks = plan.marks
        if marks is None or not len(marks.rows) or plan.comments_part is None or plan.vml_part is None:
            continue
        refs = np.array(
            [f"{xl_col_to_name(int(c))}{int(r) + 1}" for r, c in zip(marks.rows, marks.cols, strict=True)]
        )
        keep = (
            ~np.isin(refs, list(plan.existing_refs)) if plan.existing_refs else np.ones(len(refs), dtype=bool)
        )
        result.clerk_comments_kept += int((~keep).sum())
        comments = Comments(marks.rows[keep], marks.cols[keep], text_array(marks.comments[keep]), author)
        blocks = list(range(block, block + blocks_needed(len(comments))))
        block += len(blocks)
        if plan.new_comments:
            _write_part(out, plan.comments_part, comments_xml(comments))
        else:
            extended = _extend_comments(archive.read(plan.comments_part), comment_entries(comments), author)
            _write_part(out, plan.comments_part, extended)
        if plan.new_vml:
            _write_part(out, plan.vml_part, vml_xml(comments, blocks[0], plan.geometry))
        else:
            shapes = note_shapes(comments, blocks[0] * SHAPES_PER_BLOCK + 1, plan.geometry)
            _write_part(out, plan.vml_part, _extend_vml(archive.read(plan.vml_part), shapes, blocks))
        written |= {plan.comments_part, plan.vml_part}
    # Parts deferred for sheets that, in the end, had nothing to add are copied as they were.
    for plan in plans.values():
        for part in (plan.comments_part, plan.vml_part):
            if part and part not in written and part in archive.namelist() and part not in out.namelist():
                _copy(archive, archive.getinfo(part), out)
