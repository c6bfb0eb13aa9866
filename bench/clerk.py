"""Synthetic residents as a clerk keeps them: Chinese headers, names for codes, CSV and xlsx files.

:func:`to_clerk` turns :mod:`bench.synth` people (platform codes) into the
register a clerk types — ``男`` for ``1``, ``汉族`` for ``01``, dates written
several ways, a ``序号`` column and a ``备注`` column nobody maps.  The writers
produce UTF-8 / UTF-8-BOM / GB18030 / GBK CSV and xlsx (xlsxwriter, constant
memory) with an optional merged title row above the header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xlsxwriter

from pipeline.model import PEOPLE_FIELDS
from schemas.tables import code_table

#: Column layouts: (header, source).  Sources are field codes, or ``#`` (running
#: number), ``note`` (a remark) and ``address`` (the full address in one cell).
STYLES: dict[str, tuple[tuple[str, str], ...]] = {
    "standard": (
        ("序号", "#"), ("姓名", "xm"), ("性别", "xb"), ("民族", "mzdm"), ("出生日期", "csrq"),
        ("身份证号", "sfzhm"), ("证件类型", "zjlx"), ("联系电话", "brdh"), ("婚姻状况", "fyzhdm"),
        ("文化程度", "xldm"), ("职业", "zydm"), ("医疗费用支付方式", "ylfyzffs"), ("健康档案号", "jkdah"),
        ("省", "dzsf"), ("市", "dzs"), ("区县", "dzqx"), ("街道", "dzxz"), ("村/街/路", "dzc"),
        ("备注", "note"),
    ),
    "alternate": (
        ("姓名", "xm"), ("性别", "xb"), ("民族", "mzdm"), ("出生日期", "csrq"), ("身份证号码", "sfzhm"),
        ("手机号码", "brdh"), ("学历", "xldm"), ("婚姻状况", "fyzhdm"), ("职业", "zydm"),
        ("医保类型", "ylfyzffs"), ("现住址", "address"), ("备注", "note"),
    ),
    "pinyin": (
        ("xm", "xm"), ("xb", "xb"), ("mzdm", "mzdm"), ("csrq", "csrq"), ("sfzhm", "sfzhm"), ("zjlx", "zjlx"),
        ("brdh", "brdh"), ("fyzhdm", "fyzhdm"), ("xldm", "xldm"), ("zydm", "zydm"), ("ylfyzffs", "ylfyzffs"),
        ("dzsf", "dzsf"), ("dzs", "dzs"), ("dzqx", "dzqx"), ("dzxz", "dzxz"), ("dzc", "dzc"),
        ("备注", "note"),
    ),
}  # fmt: skip

_TABLES = {"xb": "gender", "mzdm": "ethnicity", "fyzhdm": "marriage", "xldm": "education",
           "zydm": "occupation", "ylfyzffs": "payment", "zjlx": "document_type"}  # fmt: skip
#: The words clerks use where they differ from the tables' official names.
_CLERK_NAMES: dict[str, dict[str, str]] = {
    "xb": {"1": "男", "2": "女"},
    "xldm": {"30": "大专", "40": "中专", "90": "文盲"},
}
#: Short names some clerks write instead (drawn for a share of rows in mixed mode).
_SHORT_NAMES: dict[str, dict[str, str]] = {
    "ylfyzffs": {"01": "职工医保", "02": "居民医保", "03": "新农合", "07": "自费"},
    "xldm": {"20": "本科", "30": "专科"},
}
NOTES = np.array(["", "行动不便，上门办理", "已电话通知", "家属代办", "外出务工", "新迁入", "复印件已收"])
_SCIENTIFIC = re.compile(r"^[0-9](?:\.[0-9]+)?[eE]\+?[0-9]+$")


Table = dict[str, np.ndarray]


def style_fields(style: str) -> set[str]:
    """The platform fields a register in ``style`` holds (a full address counts as its five parts)."""
    sources = {source for _, source in STYLES[style]}
    if "address" in sources:
        sources |= {"dzsf", "dzs", "dzqx", "dzxz", "dzc"}
    return sources & set(PEOPLE_FIELDS)


def display_names(field: str) -> dict[str, str]:
    """Code -> the name a clerk writes for it, for a coded field."""
    table = code_table(_TABLES[field])
    names = {code: table.names[code] for code in table.codes if table.synonyms.get(table.names[code]) == code}
    names.update(_CLERK_NAMES.get(field, {}))
    return names


def _text(values: object) -> np.ndarray:
    """A numpy string array of ``values`` (a numpy array, Series or list)."""
    array = np.asarray(values)
    return array if array.dtype.kind == "U" else np.asarray(array.astype(object), dtype=str)


def translate(values: np.ndarray, mapping: Mapping[str, str]) -> np.ndarray:
    """``values`` with each one found in ``mapping`` replaced (others unchanged), vectorised."""
    if not len(values):
        return values
    distinct, inverse = np.unique(values, return_inverse=True)
    return np.array([mapping.get(v, v) for v in distinct.tolist()], dtype=str)[inverse]


def _named(values: np.ndarray, field: str, rng: np.random.Generator, mixed: bool) -> np.ndarray:
    named = translate(values, display_names(field))
    if not mixed:
        return named
    short = translate(values, {**display_names(field), **_SHORT_NAMES.get(field, {})})
    draw = rng.random(len(values))
    as_code = (draw < 0.06) & (field != "xb")
    return np.where(as_code, values, np.where(draw > 0.8, short, named))


def _join(*parts: np.ndarray | str) -> np.ndarray:
    joined = np.asarray(parts[0])
    for part in parts[1:]:
        joined = np.strings.add(joined, part)
    return joined


def _format_dates(values: np.ndarray, form: int) -> np.ndarray:
    year, month, day = (np.strings.slice(values, a, b) for a, b in ((0, 4), (4, 6), (6, 8)))
    if form == 0:
        return _join(year, "-", month, "-", day)
    bare_month, bare_day = np.strings.lstrip(month, "0"), np.strings.lstrip(day, "0")
    if form == 1:
        return values
    if form == 2:
        return _join(year, "/", bare_month, "/", bare_day)
    if form == 3:
        return _join(year, "年", bare_month, "月", bare_day, "日")
    return _join(year, ".", bare_month, ".", bare_day)


def _dates(values: np.ndarray, rng: np.random.Generator, mixed: bool) -> np.ndarray:
    """Birth dates as clerks write them: ``1962-05-18`` (or five ways when ``mixed``)."""
    choice = (
        rng.choice(5, size=len(values), p=[0.5, 0.2, 0.15, 0.1, 0.05]) if mixed else np.zeros(len(values))
    )
    choice[np.strings.str_len(values) != 8] = 1  # not a date: as written
    result = values.astype("U12")
    for form in range(5):
        rows = np.flatnonzero(choice == form)
        if len(rows):
            result[rows] = _format_dates(values[rows], form)
    return result


def _phones(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mobile = (np.strings.str_len(values) == 11) & np.strings.startswith(values, "1")
    draw = rng.random(len(values))
    result = values.astype("U16")
    for rows, separator in ((mobile & (draw < 0.05), "-"), (mobile & (draw > 0.98), " ")):
        picked = values[rows]
        result[rows] = _join(
            np.strings.slice(picked, 0, 3),
            separator,
            np.strings.slice(picked, 3, 7),
            separator,
            np.strings.slice(picked, 7, 11),
        )
    plus = mobile & (draw > 0.96) & (draw <= 0.98)
    result[plus] = np.strings.add("+86 ", values[plus])
    return result


def to_clerk(
    people: Mapping[str, np.ndarray] | pd.DataFrame,
    style: str = "standard",
    *,
    seed: int = 0,
    mixed: bool = True,
) -> Table:
    """The register a clerk would keep for ``people``: header -> column of text, in ``style``'s order.

    ``people`` holds platform codes (``Synthetic.columns`` or ``.people``).
    With ``mixed`` the rows vary as real registers do (dates written five
    ways, some codes instead of names, phones with dashes or ``+86``, a
    lower-case ``x``, stray spaces around names); without it every row uses
    one form.  The ``pinyin`` style keeps platform codes as they are.
    ``pd.DataFrame(table)`` gives a frame.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; known: {sorted(STYLES)}")
    rng = np.random.default_rng(seed)
    source_columns = {f: _text(people[f]) for f in PEOPLE_FIELDS}
    n = len(source_columns["xm"])
    table: Table = {}
    for header, source in STYLES[style]:
        if source == "#":
            column = np.arange(1, n + 1).astype(str)
        elif source == "note":
            column = NOTES[np.where(rng.random(n) < 0.15, rng.integers(1, len(NOTES), n), 0)]
        elif source == "address":
            column = _join(*(source_columns[f] for f in ("dzsf", "dzs", "dzqx", "dzxz", "dzc")))
        elif style == "pinyin":
            column = source_columns[source]
        elif source in _TABLES:
            column = _named(source_columns[source], source, rng, mixed)
        elif source == "csrq":
            column = _dates(source_columns["csrq"], rng, mixed)
        elif source == "brdh" and mixed:
            column = _phones(source_columns["brdh"], rng)
        elif source == "sfzhm" and mixed:
            ids = source_columns["sfzhm"]
            column = np.where(
                np.strings.endswith(ids, "X") & (rng.random(n) < 0.3), np.strings.lower(ids), ids
            )
        elif source == "xm" and mixed:
            names = source_columns["xm"]
            column = np.where(rng.random(n) < 0.02, _join(" ", names, "\u3000"), names)
        else:
            column = source_columns[source]
        table[header] = column
    return table


# --- writers -----------------------------------------------------------------


def _columns(table: Mapping[str, object] | pd.DataFrame) -> dict[str, np.ndarray]:
    return {str(header): _text(table[str(header)]) for header in table}


def _csv_cells(column: np.ndarray) -> list[str]:
    """The column's cells as CSV fields, quoted where they must be."""
    characters = (
        column.view(np.uint32).reshape(len(column), -1) if column.dtype.itemsize else np.empty((0, 0))
    )
    special = np.isin(characters, [ord(","), ord('"'), ord("\n"), ord("\r")]).any(axis=1)
    if special.any():
        column = column.copy().astype(object)
        column[special] = ['"' + v.replace('"', '""') + '"' for v in column[special].tolist()]
    return column.tolist()


def write_csv(
    table: Mapping[str, object] | pd.DataFrame,
    path: Path | str,
    *,
    encoding: str = "utf-8",
    title: str | None = None,
) -> Path:
    """Write ``table`` as CSV in ``encoding`` (utf-8, utf-8-sig, gb18030, gbk), title line first."""
    columns = _columns(table)
    lines = [title] if title else []
    lines.append(",".join(_csv_cells(np.array(list(columns), dtype=str))))
    lines.extend(",".join(row) for row in zip(*(_csv_cells(c) for c in columns.values()), strict=True))
    path = Path(path)
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


_DATE = re.compile(r"^(\d{4})\D?(\d{1,2})\D?(\d{1,2})\D?$")


def excel_date(text: str) -> datetime | None:
    """The date a clerk wrote (``1962-05-18``, ``19620518``, ``1962年5月18日`` …), None if not a real one."""
    match = _DATE.match(text)
    if not match:
        return None
    try:
        year, month, day = map(int, match.groups())
        return datetime(year, month, day)
    except ValueError:
        return None


def write_xlsx(
    table: Mapping[str, object] | pd.DataFrame,
    path: Path | str,
    *,
    title: str | None = None,
    sheet: str = "登记表",
    date_column: str = "出生日期",
    date_cells: Sequence[bool] | np.ndarray | bool = False,
    id_columns: Sequence[str] = ("身份证号", "身份证号码", "sfzhm"),
    number_columns: Sequence[str] = ("序号",),
) -> Path:
    """Write ``table`` as one xlsx sheet the way clerks' registers look.

    A ``title`` becomes a merged, centred first row with a blank row under it;
    the header follows.  ID columns are text-formatted and written as text,
    except values in scientific notation, which are written as numbers — as
    Excel stores an ID typed into a General cell.  ``date_cells`` (all rows,
    or a mask) makes those birth dates real Excel date cells; ``number_columns``
    are written as numbers.
    """
    columns = _columns(table)
    headers = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0
    path = Path(path)
    workbook = xlsxwriter.Workbook(
        str(path),
        {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
        },
    )
    workbook.set_properties({"created": datetime(2026, 1, 1)})  # same rows, same bytes
    worksheet = workbook.add_worksheet(sheet)
    bold = workbook.add_format({"bold": True, "align": "center", "border": 1})
    text = workbook.add_format({"num_format": "@"})
    date_format = workbook.add_format({"num_format": "yyyy-mm-dd"})
    for position, header in enumerate(headers):
        width = 20 if header in id_columns else 30 if header in ("现住址", "村/街/路", "备注") else 12
        worksheet.set_column(position, position, width, text if header in id_columns else None)
    row = 0
    if title:
        worksheet.merge_range(
            0,
            0,
            0,
            len(headers) - 1,
            title,
            workbook.add_format({"bold": True, "font_size": 16, "align": "center"}),
        )
        row = 2
    worksheet.write_row(row, 0, headers, bold)

    wanted = np.full(n, date_cells) if isinstance(date_cells, bool) else np.asarray(date_cells, dtype=bool)
    date_position = headers.index(date_column) if date_column in columns and wanted.any() else -1
    as_number: dict[int, np.ndarray] = {}  # column -> rows whose cell is written as a number
    for position, header in enumerate(headers):
        if header in id_columns:
            scientific = pd.Series(columns[header], dtype=object).str.fullmatch(_SCIENTIFIC.pattern)
            as_number[position] = scientific.fillna(False).to_numpy(dtype=bool)
        elif header in number_columns:
            as_number[position] = np.strings.isdigit(columns[header])
    for index, values in enumerate(zip(*(c.tolist() for c in columns.values()), strict=True)):
        row += 1
        cells: list[object] = list(values)
        for position, mask in as_number.items():
            if mask[index]:
                cells[position] = float(values[position])
        moment = excel_date(str(cells[date_position])) if date_position >= 0 and wanted[index] else None
        if moment is not None:
            cells[date_position] = None
        worksheet.write_row(row, 0, cells)
        if moment is not None:
            worksheet.write_datetime(row, date_position, moment, date_format)
    workbook.close()
    return path
