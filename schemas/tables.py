"""The code tables in ``schemas/codes/*.csv``, loaded once.

Each table file has ``code,name,synonyms`` (synonyms separated by ``|``);
``result_codes.csv`` has ``code,description,hint``.  These files are the one
source of every code list: validation, normalisation, the sandbox and the
reports all read them through this module.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

#: Table names, by the platform field they govern.
FIELD_TABLES: dict[str, str] = {
    "xb": "gender",
    "mzdm": "ethnicity",
    "fyzhdm": "marriage",
    "xldm": "education",
    "zydm": "occupation",
    "zjlx": "document_type",
    "ylfyzffs": "payment",
    "dzlb": "address_type",
}


@dataclass(frozen=True)
class CodeTable:
    """One national code table: codes, their names and accepted synonyms."""

    name: str
    codes: tuple[str, ...]
    names: dict[str, str]
    synonyms: dict[str, str]  # any accepted spelling (code, name, synonym) -> code

    def __contains__(self, code: object) -> bool:
        return code in self.names


def _rows(filename: str) -> list[dict[str, str]]:
    text = resources.files("schemas").joinpath("codes", filename).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def code_table(name: str) -> CodeTable:
    """The code table called ``name`` (e.g. ``"ethnicity"``)."""
    rows = _rows(f"{name}.csv")
    names = {r["code"]: r["name"] for r in rows}
    synonyms: dict[str, str] = {}
    for r in rows:
        for spelling in [r["code"], r["name"], *filter(None, (r.get("synonyms") or "").split("|"))]:
            synonyms.setdefault(spelling.strip(), r["code"])
    return CodeTable(name, tuple(names), names, synonyms)


@cache
def result_codes() -> dict[int, tuple[str, str]]:
    """Every platform result code -> (Chinese description, how to fix)."""
    return {int(r["code"]): (r["description"], r["hint"]) for r in _rows("result_codes.csv")}


def describe(code: int) -> str:
    """The platform's Chinese description of a result code (or a generic text)."""
    return result_codes().get(code, (f"未知返回代码 {code}", ""))[0]


def hint(code: int) -> str:
    """How a clerk fixes a row refused with ``code`` ("" when there is nothing to say)."""
    return result_codes().get(code, ("", ""))[1]
