"""The code tables in ``schemas/codes/*.csv``, loaded once.

Each table file has ``code,name,synonyms`` (synonyms separated by ``|``).
These files are the one source of every code list: validation,
normalisation and the sandbox all read them through this module.  Which
field takes which table is :data:`schemas.rules.FIELD_TABLES`; the result
codes and their texts are :mod:`schemas.result_codes`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources


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
