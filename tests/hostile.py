"""Hostile registers, generated on the fly (never committed): workbooks that blow up a reader, bombs, FIFOs.

Each builder writes one file and returns its path.  The big ones are streamed
(a compressor fed by a generator), so a 1 GB bomb costs a second, not a gigabyte.
"""

from __future__ import annotations

import os
import struct
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


def shared_strings_xlsx(path: Path, rows: list[tuple[str, ...]], *, unique_count: int | None = None) -> Path:
    """``rows`` as an xlsx whose cells refer to a shared-strings part, as Excel writes them.

    ``unique_count``: how many strings the part claims to hold (the truth by default).
    """
    strings: dict[str, int] = {}
    cells = []
    for number, row in enumerate(rows, 1):
        refs = "".join(
            f'<c r="{column_letters(j)}{number}" t="s"><v>{strings.setdefault(text, len(strings))}</v></c>'
            for j, text in enumerate(row)
        )
        cells.append(f'<row r="{number}">{refs}</row>')
    claimed = len(strings) if unique_count is None else unique_count
    shared = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        f'count="{sum(map(len, rows))}" uniqueCount="{claimed}">'
        + "".join(f"<si><t>{text}</t></si>" for text in strings)
        + "</sst>"
    )
    write_raw_xlsx(path, "".join(cells))
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    parts["xl/sharedStrings.xml"] = shared.encode()
    parts["xl/_rels/workbook.xml.rels"] = parts["xl/_rels/workbook.xml.rels"].replace(
        b"</Relationships>",
        b'<Relationship Id="rId2" '
        b'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" '
        b'Target="sharedStrings.xml"/></Relationships>',
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return path


#: The namespaces of an .ods content part, as LibreOffice writes them.
ODS_NAMESPACES = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
)


def write_ods(path: Path, spreadsheet: str, namespaces: str = "") -> Path:
    """An .ods package whose one content part holds ``spreadsheet`` (the ``<table:table>`` elements)."""
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ODS_NAMESPACES} {namespaces}>'
        f"<office:body><office:spreadsheet>{spreadsheet}</office:spreadsheet></office:body>"
        "</office:document-content>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("content.xml", content)
        archive.writestr(
            "META-INF/manifest.xml",
            '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
            'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
            '<manifest:file-entry manifest:full-path="/" manifest:version="1.2" '
            'manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
            '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
            "</manifest:manifest>",
        )
    return path


def register_rows(count: int) -> list[tuple[str, ...]]:
    """A header and ``count`` plausible residents (checksums need not hold: only reading is tested)."""
    rows: list[tuple[str, ...]] = [HEADERS]
    for serial in range(count):
        id_number = f"44060419800101{serial:03d}X"
        rows.append((f"居民{serial}", "男", "汉族", id_number, f"139{serial:08d}", "城镇职工"))
    return rows


def far_cell_xlsx(path: Path, ref: str = "XFD1048576", *, with_register: bool = False) -> Path:
    """One valued cell at ``ref`` (alone, or below a small register): calamine allocates the rectangle."""
    rows = sheet_rows(register_rows(5)) if with_register else ""
    number = int("".join(ch for ch in ref if ch.isdigit()))
    return write_raw_xlsx(path, rows + f'<row r="{number}">{_cell(ref, "x")}</row>')


def _deflated(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def write_zip(path: Path, entries: list[tuple[str, bytes, int, int]]) -> Path:
    """A zip of deflated ``(name, compressed bytes, crc, declared size)`` entries, written by hand.

    By hand because :mod:`zipfile` compresses what it is given: a bomb is
    built here from one compressed block repeated, and its directory may lie.
    """
    local = struct.Struct("<4sHHHHHIIIHH")
    central = struct.Struct("<4sHHHHHHIIIHHHHHII")
    with open(path, "wb") as handle:
        directory = b""
        for name, compressed, crc, size in entries:
            offset = handle.tell()
            encoded = name.encode()
            fields = (20, 0, 8, 0, 0x21, crc, len(compressed), size, len(encoded))
            handle.write(local.pack(b"PK\x03\x04", *fields, 0) + encoded + compressed)
            directory += central.pack(b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, 0, offset) + encoded
        start = handle.tell()
        handle.write(directory)
        handle.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                                 len(directory), start, 0))  # fmt: skip
    return path


def bomb_xlsx(path: Path, inflated: int = 1 << 30, *, declared: int | None = None) -> Path:
    """A register whose one cell inflates to ``inflated`` bytes (1 GB: about 1 MB on disk, in a second).

    ``declared``: the size the zip directory claims for the sheet (the truth by default).
    """
    block = b"A" * (1 << 20)
    head = (_SHEET_HEAD + "<sheetData>" + sheet_rows(register_rows(1))).encode()
    head += b'<row r="3"><c r="A3" t="inlineStr"><is><t>'
    tail = b"</t></is></c></row></sheetData></worksheet>"
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = packer.compress(head) + packer.flush(zlib.Z_FULL_FLUSH)
    # After a full flush the compressor starts afresh: the same block compresses to the same bytes.
    packed = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    repeats = inflated // len(block)
    end = packer.compress(tail) + packer.flush()
    crc = zlib.crc32(head)
    for _ in range(repeats):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(tail, crc)
    size = len(head) + repeats * len(block) + len(tail)
    small = [
        ("[Content_Types].xml", _CONTENT_TYPES), ("_rels/.rels", _ROOT_RELS),
        ("xl/workbook.xml", _WORKBOOK), ("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS),
    ]  # fmt: skip
    entries = [
        (name, _deflated(text.encode()), zlib.crc32(text.encode()), len(text.encode()))
        for name, text in small
    ]
    sheet = start + packed * repeats + end
    entries.append(("xl/worksheets/sheet1.xml", sheet, crc, size if declared is None else declared))
    return write_zip(path, entries)


def lying_bomb_xlsx(path: Path, inflated: int = 64 << 20) -> Path:
    """A bomb whose zip directory claims the sheet is 1 KB: only inflating it tells the truth."""
    return bomb_xlsx(path, inflated, declared=1024)


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


def compound_file(streams: dict[str, bytes]) -> bytes:
    """An OLE compound file (the container of an .xls) holding ``streams``, each padded to 4 KB or more
    so that none goes to the mini stream."""
    sector = 512
    names = list(streams)
    datas = [data.ljust(4096, b"\0") for data in streams.values()]
    lengths = [-(-len(data) // sector) for data in datas]
    directory_sectors = -(-(len(names) + 1) // 4)
    fat_sectors = 1
    while fat_sectors * 128 < fat_sectors + directory_sectors + sum(lengths):
        fat_sectors += 1
    end, free, reserved = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD
    fat = [reserved] * fat_sectors
    chains = [directory_sectors, *lengths]
    starts = []
    for length in chains:
        starts.append(len(fat))
        fat += [len(fat) + k + 1 if k < length - 1 else end for k in range(length)]
    fat += [free] * (fat_sectors * 128 - len(fat))

    def entry(name: str, kind: int, start: int, size: int, child: int = free, right: int = free) -> bytes:
        encoded = name.encode("utf-16-le") + b"\0\0"
        return (
            encoded.ljust(64, b"\0") + struct.pack("<HBBIII", len(encoded), kind, 1, free, right, child)
            + b"\0" * 36 + struct.pack("<II", start, size) + b"\0" * 4
        )  # fmt: skip

    entries = [entry("Root Entry", 5, end, 0, child=1)]
    for index, (name, data) in enumerate(zip(names, datas, strict=True)):
        right = index + 2 if index + 1 < len(names) else free
        entries.append(entry(name, 2, starts[index + 1], len(data), right=right))
    unused = b"\0" * 64 + struct.pack("<HBBIII", 0, 0, 0, free, free, free) + b"\0" * 48
    directory = b"".join(entries) + unused * (directory_sectors * 4 - len(entries))
    difat = list(range(fat_sectors)) + [free] * (109 - fat_sectors)
    header = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 16 + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
        + b"\0" * 10 + struct.pack("<II", fat_sectors, starts[0]) + b"\0" * 4
        + struct.pack("<IIIII", 4096, end, 0, end, 0) + struct.pack("<109I", *difat)
    )  # fmt: skip
    body = b"".join(data.ljust(length * sector, b"\0") for data, length in zip(datas, lengths, strict=True))
    return header + struct.pack(f"<{len(fat)}I", *fat) + directory + body


def _record(number: int, body: bytes = b"") -> bytes:
    return struct.pack("<HH", number, len(body)) + body


def excel95_xls(
    path: Path,
    sheets: dict[str, list[list[str | float]]],
    *,
    codepage: int = 936,
    encoding: str = "gbk",
    far: tuple[int, int] | None = None,
) -> Path:
    """An Excel 5.0/95 (BIFF5) workbook of text and number cells, its text in ``codepage``, as Excel 95
    and the old export libraries of many a system write it; ``far``: one more number on the first sheet
    at that 0-based (row, column)."""
    version = struct.pack("<HHHH", 0x0500, 0x0005, 0x096C, 0x07C9)
    head = [_record(0x0809, version), _record(0x0042, struct.pack("<H", codepage))]
    styles = [struct.pack("<8H", 0, 0, 0xFFF5 if k < 15 else 1, 0x20, 0, 0, 0, 0) for k in range(16)]
    head += [_record(0x00E0, style) for style in styles]
    bodies = []
    for rows in sheets.values():
        records = [_record(0x0809, struct.pack("<HHHH", 0x0500, 0x0010, 0x096C, 0x07C9))]
        for row, cells in enumerate(rows):
            for column, value in enumerate(cells):
                if isinstance(value, str):
                    text = value.encode(encoding)
                    records.append(_record(0x0204, struct.pack("<HHHH", row, column, 15, len(text)) + text))
                else:
                    records.append(_record(0x0203, struct.pack("<HHHd", row, column, 15, value)))
        if far is not None and not bodies:
            records.append(_record(0x0203, struct.pack("<HHHd", *far, 15, 1.0)))
        records.append(_record(0x000A))
        bodies.append(b"".join(records))

    def boundsheets(offsets: list[int]) -> list[bytes]:
        names = [name.encode(encoding) for name in sheets]
        return [
            _record(0x0085, struct.pack("<IBBB", offset, 0, 0, len(name)) + name)
            for offset, name in zip(offsets, names, strict=True)
        ]

    start = sum(map(len, head + boundsheets([0] * len(sheets)))) + len(_record(0x000A))
    offsets = [start + sum(map(len, bodies[:k])) for k in range(len(bodies))]
    stream = b"".join([*head, *boundsheets(offsets), _record(0x000A), *bodies])
    path.write_bytes(compound_file({"Book": stream}))
    return path


def _xlsb_record(kind: int, body: bytes = b"") -> bytes:
    """One record of an .xlsb part: its type and size as 7-bit varints, then its body."""
    head = bytes([kind]) if kind < 0x80 else bytes([kind & 0x7F | 0x80, kind >> 7])
    size = len(body)
    while True:
        head += bytes([size & 0x7F | (0x80 if size > 0x7F else 0)])
        size >>= 7
        if not size:
            return head + body


def _wide(text: str) -> bytes:
    return struct.pack("<I", len(text)) + text.encode("utf-16-le")


#: An .xlsb error cell: ("error", code), the code as the format stores it (0x2A is #N/A).
XlsbCell = str | float | tuple[str, int]


def write_xlsb(path: Path, rows: list[list[XlsbCell]], *, far: tuple[int, int] | None = None) -> Path:
    """An .xlsb (Excel's binary workbook) of one sheet 名单 holding ``rows`` (0-based from A1): text as
    inline strings, numbers, error cells; ``far``: one more number at that 0-based (row, column)."""
    cells: list[tuple[int, list[tuple[int, XlsbCell]]]] = []
    cells += [(number, list(enumerate(row))) for number, row in enumerate(rows)]
    if far is not None:
        cells.append((far[0], [(far[1], 1.0)]))
    claimed = struct.pack("<IIII", 0, len(rows) - 1, 0, max(map(len, rows)) - 1)  # the range it says it has
    records = [_xlsb_record(0x81), _xlsb_record(0x94, claimed), _xlsb_record(0x91)]
    for row, values in cells:
        records.append(_xlsb_record(0x00, struct.pack("<IIHHBBI", row, 0, 0x12C, 0, 0, 0, 0)))
        for column, value in values:
            if isinstance(value, str):
                records.append(_xlsb_record(0x06, struct.pack("<II", column, 0) + _wide(value)))
            elif isinstance(value, tuple):
                records.append(_xlsb_record(0x03, struct.pack("<IIB", column, 0, value[1])))
            else:
                records.append(_xlsb_record(0x05, struct.pack("<IId", column, 0, value)))
    sheet = b"".join([*records, _xlsb_record(0x92), _xlsb_record(0x82)])
    book = _xlsb_record(0x83) + _xlsb_record(0x8F)
    book += _xlsb_record(0x9C, struct.pack("<II", 0, 1) + _wide("rId1") + _wide("名单"))
    book += _xlsb_record(0x90) + _xlsb_record(0x84)
    relation = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"
    main = "application/vnd.ms-excel.sheet.binary.macroEnabled.main"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            f'<Default Extension="bin" ContentType="{main}"/></Types>',
        )
        archive.writestr("_rels/.rels", _ROOT_RELS.replace("xl/workbook.xml", "xl/workbook.bin"))
        archive.writestr(
            "xl/_rels/workbook.bin.rels",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{relation}" Target="worksheets/sheet1.bin"/></Relationships>',
        )
        archive.writestr("xl/workbook.bin", book)
        archive.writestr("xl/worksheets/sheet1.bin", sheet)
    return path

