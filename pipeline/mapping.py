"""Recognise a register's columns: the clerk's headers -> the platform's field codes.

Headers are matched through the vocabulary of :mod:`pipeline.reading.headers`
(built-in aliases, the spec's pinyin field codes, decorations removed).  A
user mapping (header -> field code, from the config file or ``--mapping
FILE``) wins over the built-ins.  A register whose only column of numbers
is 证件号码 (the document being the ID card, as on most forms) has its ID
numbers read from it; the document number is then filled from them.  A
register missing a required column is an
:class:`~pipeline.errors.InputError` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import ConfigError, InputError
from pipeline.files import read_toml
from pipeline.model import (
    ADDRESS_FIELD,
    ADDRESS_PARTS,
    FIELD_LABELS,
    INPUT_FIELDS,
    REQUIRED_INPUT_FIELDS,
    MappedTable,
    RawTable,
)
from pipeline.reading.headers import EXTRA, IGNORE, builtin_code, count_known_headers, field_code, header_key
from pipeline.reading.table import HEADER_SEARCH_ROWS
from pipeline.text.arrow import constant

#: Fields that, present as separate columns, mean the address is already split (dzc is what remains).
_SPLIT_ADDRESS = ADDRESS_PARTS[:-1]

#: How many headers an error message lists before saying "等 N 列".
_HEADERS_SHOWN = 40


#: The pseudo codes of columns read as no field: dropped (序号) or kept as the clerk's own.
_NO_FIELD = (IGNORE, EXTRA)


def _valid_codes_text() -> str:
    return "、".join(INPUT_FIELDS) + f"；或 {IGNORE}（忽略该列）、{EXTRA}（作为附加列保留，不读作字段）"


def check_user_aliases(user_aliases: Mapping[str, str], source: str = "") -> dict[str, str]:
    """Header key -> canonical field code for a user mapping; unknown codes -> ConfigError."""
    checked: dict[str, str] = {}
    for header, code in user_aliases.items():
        canonical = field_code(str(code))
        if canonical is None:
            where = f" {source} 中" if source else ""
            raise ConfigError(
                f"列对应关系{where}的表头“{header}”指向未知的字段代码“{code}”。"
                f"可用的字段代码：{_valid_codes_text()}"
            )
        checked[header_key(str(header))] = canonical
    return checked


def _initials(key: str) -> bool:
    """Whether a header key is pinyin initials of two or three letters (MZ, DH, SFZ).

    Other words abbreviate to them too (DH: 单号), so a column named in full
    takes the field first.
    """
    return key.isascii() and key.isalpha() and len(key) <= 3 and field_code(key) is None


def _in_full(key: str) -> str | None:
    return None if _initials(key) else builtin_code(key)


def _by_initials(key: str) -> str | None:
    return builtin_code(key) if _initials(key) else None


def _assign(keys: list[str], user: dict[str, str]) -> dict[int, str]:
    """Column index -> field code; the user's mapping first, then built-ins, first column wins.

    Built-in names written in full are matched before pinyin initials.
    """
    chosen: dict[int, str] = {}
    taken: set[str] = set()
    by_user: set[int] = set()
    for lookup, is_user in ((user.get, True), (_in_full, False), (_by_initials, False)):
        for index, key in enumerate(keys):
            code = lookup(key)
            if index in chosen or code is None or (code in taken and code not in _NO_FIELD):
                continue
            chosen[index] = code
            taken.add(code)
            if is_user:
                by_user.add(index)
    if any(code in _SPLIT_ADDRESS for code in chosen.values()):
        # The address is already split: a built-in "详细地址" column holds what is left (dzc).
        for index, code in sorted(chosen.items()):
            if code == ADDRESS_FIELD and index not in by_user:
                del chosen[index]
                if "dzc" not in taken:
                    chosen[index] = "dzc"
                    taken.add("dzc")
    documents = [index for index, code in chosen.items() if code == "zjhm" and index not in by_user]
    if "sfzhm" not in taken and documents:
        chosen[documents[0]] = "sfzhm"
    return chosen


def _empty_text(length: int) -> pd.Series:
    # Not from a numpy array of "" objects: converting those cost 28 ms per 200,000 rows, this 0.5 ms.
    return constant("", pd.RangeIndex(length))


#: What clerks separate columns with when a Chinese input method is on, instead of the CSV comma.
_RUN_TOGETHER = re.compile(r"[，；、]|\s+")


def _run_together(headers: Sequence[str]) -> bool:
    """Whether a header cell holds several known column names joined by a Chinese comma, 、 or spaces."""
    return any(count_known_headers(_RUN_TOGETHER.split(header.strip())) >= 2 for header in headers)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def map_columns(raw: RawTable, user_aliases: Mapping[str, str] | None = None) -> MappedTable:
    """Recognise the columns of ``raw``; see the module docstring for the rules.

    ``fields`` has every :data:`INPUT_FIELDS` column (``""`` where absent) in
    ``raw.data``'s row order; ``extras`` keeps the unrecognised columns under
    their own headers.  A missing required column -> :class:`InputError`
    naming it and listing the headers found; a user alias naming an unknown
    field code -> :class:`ConfigError`.
    """
    user = check_user_aliases(user_aliases or {})
    headers = list(raw.data.columns)
    chosen = _assign([header_key(h) for h in headers], user)
    field_headers = {code: headers[i] for i, code in sorted(chosen.items()) if code not in _NO_FIELD}

    missing = [f for f in REQUIRED_INPUT_FIELDS if f not in field_headers]
    if missing and not field_headers and _run_together(headers):
        raise InputError(
            "表头各列之间用的是中文逗号、分号或空格，整行成了一列，程序无法分列",
            file=raw.file_name,
            sheet=raw.sheet,
            fix="把“，”“；”或空格全部替换为英文逗号“,”后再处理；或在 Excel 中用“数据→分列”分开后另存为 .xlsx",
        )
    if missing and not field_headers:
        # Nothing recognised: the "header" is a data row (a register without one) or not a register
        # at all, and its cells (names, ID numbers, a system file's first line) are not repeated.
        raise InputError(
            f"缺少必需的列：{'、'.join(FIELD_LABELS[f] for f in missing)}。"
            f"没有找到表头：前 {HEADER_SEARCH_ROWS} 行中没有表头，第一行有内容的行也不是表头"
            f"（可能缺少表头行，或表头上方的标题和说明超过 {HEADER_SEARCH_ROWS} 行，或不是登记表）",
            file=raw.file_name,
            sheet=raw.sheet,
            fix="在数据上方加一行表头（如 姓名、身份证号码、联系电话）；表头上方的标题和说明请删减到 "
            f"{HEADER_SEARCH_ROWS} 行以内；或用 --mapping 指定对应关系",
        )
    if missing:
        found = [_one_line(h) for h in headers]
        listed = "、".join(found[:_HEADERS_SHOWN]) + (
            f" 等 {len(found)} 列" if len(found) > _HEADERS_SHOWN else ""
        )
        raise InputError(
            f"缺少必需的列：{'、'.join(FIELD_LABELS[f] for f in missing)}。找到的表头：{listed or '（无）'}",
            file=raw.file_name,
            sheet=raw.sheet,
            fix="在表头行加上这些列，或用 --mapping 指定对应关系",
        )

    length = len(raw.data)
    index = pd.RangeIndex(length)
    empty = _empty_text(length) if len(field_headers) < len(INPUT_FIELDS) else None
    columns = {
        code: (raw.data[field_headers[code]] if code in field_headers else empty) for code in INPUT_FIELDS
    }
    fields = pd.DataFrame(
        {code: column.set_axis(index) for code, column in columns.items() if column is not None}
    )
    extra_names = [h for i, h in enumerate(headers) if chosen.get(i, EXTRA) == EXTRA]
    extras = raw.data[extra_names].set_axis(index) if extra_names else pd.DataFrame(index=index)
    return MappedTable(raw=raw, fields=fields, extras=extras, field_headers=field_headers)


#: A header the reader numbered because an earlier column has the same one ("身份证号码_2").
_NUMBERED = re.compile(r"(.+)_[0-9]+")


def unused_field_columns(
    mapped: MappedTable, user_aliases: Mapping[str, str] | None = None
) -> list[tuple[str, str, str]]:
    """The clerk's columns left as extras although their header names a field an earlier column gives
    (the first one wins), e.g. a second 身份证号码 or a 公民身份号码 after a 身份证号: (the column's
    name in the table, its header as written, the field code)."""
    user = check_user_aliases(user_aliases or {})
    headers = set(mapped.raw.data.columns)
    found = []
    for header in mapped.extras.columns:
        numbered = _NUMBERED.fullmatch(header)
        written = numbered[1] if numbered and numbered[1] in headers else header
        key = header_key(written)
        code = user.get(key) or _in_full(key) or _by_initials(key)
        if code is not None and code not in _NO_FIELD and code in mapped.field_headers:
            found.append((header, written, code))
    return found


#: How a mapping file's lines are written, told with a TOML syntax error (not a configuration's keys).
MAPPING_TOML_FORM = '每行写成 "表头" = "字段代码"，两边都加英文双引号（如 "居民手机" = "brdh"）'


def load_mapping_file(path: str | Path) -> dict[str, str]:
    """Read a TOML mapping file: a ``[columns]`` table and/or top-level ``"表头" = "字段代码"`` pairs.

    Returns header -> canonical field code.  Any problem -> :class:`ConfigError`.
    """
    name = str(path)
    document = read_toml(path, "列对应关系文件", MAPPING_TOML_FORM)

    pairs: dict[str, Any] = {k: v for k, v in document.items() if k != "columns"}
    table = document.get("columns", {})
    if not isinstance(table, dict):
        raise ConfigError(f'列对应关系文件 {name} 中的 columns 应为 [columns] 表，内容为 "表头" = "字段代码"')
    pairs.update(table)
    bad = [str(k) for k, v in pairs.items() if not isinstance(v, str)]
    if bad:
        raise ConfigError(
            f'列对应关系文件 {name} 中“{bad[0]}”的值应为字段代码文字，例如 "联系人电话" = "brdh"。请改正'
        )
    check_user_aliases(pairs, name)
    return {str(k).strip(): str(field_code(v)) for k, v in pairs.items()}
