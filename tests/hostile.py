"""Hostile registers, generated on the fly (never committed): workbooks that blow up a reader, bombs, FIFOs.

Each builder writes one file and returns its path.  The big ones are streamed
(a compressor fed by a generator), so a 1 GB bomb costs a second, not a gigabyte.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    'Target="worksheets/sheet1.xml"/></Relationships>'
)
_SHEET_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
)

HEADERS = ("姓名", "性别", "民族", "身份证号码", "联系电话", "医疗费用支付方式")


def column_letters(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _cell(ref: str, text: str) -> str:
    return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'


def sheet_rows(rows: Iterable[Iterable[str]], first_row: int = 1) -> str:
    """``<row>`` elements for ``rows`` of text cells, from ``first_row`` (1-based)."""
    out = []
    for offset, cells in enumerate(rows):
        number = first_row + offset
        inner = "".join(_cell(f"{column_letters(j)}{number}", text) for j, text in enumerate(cells))
        out.append(f'<row r="{number}">{inner}</row>')
    return "".join(out)


def write_raw_xlsx(path: Path, sheet_xml: str | Iterator[bytes], *, dimension: str | None = None) -> Path:
    """A minimal xlsx whose one worksheet is ``sheet_xml`` (the part between <sheetData> tags, or chunks)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("_rels/.rels", _ROOT_RELS)
        archive.writestr("xl/workbook.xml", _WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        head = _SHEET_HEAD + (f'<dimension ref="{dimension}"/>' if dimension else "") + "<sheetData>"
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as part:
            part.write(head.encode())
            if isinstance(sheet_xml, str):
                part.write(sheet_xml.encode())
            else:
                for chunk in sheet_xml:
                    part.write(chunk)
            part.write(b"</sheetData></worksheet>")
    return path


def register_rows(count: int) -> list[tuple[str, ...]]:
    """A header and ``count`` plausible residents (checksums need not hold: only reading is tested)."""
    rows: list[tuple[str, ...]] = [HEADERS]
    for serial in range(count):
        rows.append((f"居民{serial}", "男", "汉族", f"44060419800101{serial:03d}X", f"139{serial:08d}", "城镇职工"))
    return rows


def far_cell_xlsx(path: Path, ref: str = "XFD1048576", *, with_register: bool = False) -> Path:
    """One valued cell at ``ref`` (alone, or below a small register): calamine allocates the rectangle."""
    rows = sheet_rows(register_rows(5)) if with_register else ""
    number = int("".join(ch for ch in ref if ch.isdigit()))
    return write_raw_xlsx(path, rows + f'<row r="{number}">{_cell(ref, "x")}</row>')


def bomb_xlsx(path: Path, inflated: int = 1 << 30) -> Path:
    """A register whose one cell inflates to ``inflated`` bytes (1 GB by default; about 1 MB on disk)."""
    block = b"A" * (1 << 20)

    def chunks() -> Iterator[bytes]:
        yield sheet_rows(register_rows(1)).encode()
        yield b'<row r="3"><c r="A3" t="inlineStr"><is><t>'
        for _ in range(inflated // len(block)):
            yield block
        yield b"</t></is></c></row>"

    return write_raw_xlsx(path, chunks())


def lying_bomb_xlsx(path: Path, inflated: int = 64 << 20) -> Path:
    """A bomb whose zip directory claims the sheet is small: only inflating it tells the truth."""
    bomb_xlsx(path, inflated)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("xl/worksheets/sheet1.xml")
    # Rewrite the sizes the zip64 extra fields hold (local header and central directory) to 1 KB.
    real = info.file_size.to_bytes(8, "little")
    start = 0
    while (found := data.find(real, start)) != -1:
        data[found : found + 8] = (1024).to_bytes(8, "little")
        start = found + 8
    path.write_bytes(bytes(data))
    return path


def uneven_csv(path: Path, cell_bytes: int = 140 * 1024) -> Path:
    """A CSV with one row longer than the header holding a ``cell_bytes`` cell."""
    lines = [",".join(HEADERS)]
    lines += [",".join(row) for row in register_rows(3)[1:]]
    lines.append(",".join(register_rows(4)[4]) + ",extra," + "y" * cell_bytes)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def endless_line_csv(path: Path, size: int = 200 << 20) -> Path:
    """One line of ``size`` bytes and no newline."""
    block = b"z" * (1 << 20)
    with open(path, "wb") as handle:
        for _ in range(size // len(block)):
            handle.write(block)
    return path


def fifo(path: Path) -> Path:
    """A named pipe with a register's name: opening it for reading blocks until a writer comes."""
    os.mkfifo(path)
    return path


def crc_of_repeated(block: bytes, times: int) -> int:
    """CRC-32 of ``block`` repeated ``times`` (for hand-made zip entries)."""
    crc = 0
    for _ in range(times):
        crc = zlib.crc32(block, crc)
    return crc
