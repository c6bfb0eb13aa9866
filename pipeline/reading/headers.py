"""The vocabulary of column names: what tells a register's header row from a title or data row.

Built-in aliases are data (``schemas/column_aliases.csv``: ``field,alias``; the
field ``ignore`` marks row-number columns such as 序号).  The spec's pinyin field
codes (``xm``, ``sfzhm``, ``orgCode`` ...) are always recognised, in any case.
Headers are compared after :func:`header_key` has removed what clerks decorate
them with (spaces, ``*``, ``（必填）``, a trailing ``：``).  Reading uses this to
find the header row; :mod:`pipeline.mapping` uses it to map columns to fields.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterable
from functools import cache
from importlib import resources

from pipeline.model import INPUT_FIELDS
from pipeline.text.arrow import INVISIBLE_MARKS

#: The pseudo field code of columns that are neither a field nor an extra (序号).
IGNORE = "ignore"
#: The pseudo field code of a column kept as one of the clerk's own (shown in the reports, never sent),
#: though its header names a field: a clerk's correction of a column the built-in names took wrongly.
EXTRA = "extra"

#: Bracketed notes, by opening and closing bracket: "（必填）", "(选填)", "【格式：19900101】".
_BRACKETS = {"(": ")", "[": "]", "【": "】", "〔": "〕", "<": ">"}
#: The marks templates put on required columns or drop-downs: "*", "★", "※", "▼".
_MARKS = re.compile(r"[*★☆※▲△▼▽●◆]")
_INVISIBLE = re.compile(INVISIBLE_MARKS)
#: A list number in front of a header: "1.姓名", "2、性别", "三、联系电话".
_NUMBERING = re.compile(r"^(?:[0-9]{1,2}|[一二三四五六七八九十]{1,3})[.、]")
#: What joins two names of one column: "手机号码/电话", "联系电话或手机".
_ALTERNATIVES = re.compile(r"[/|或]")


def header_key(text: str) -> str:
    """The form of a header used for matching: NFKC, no whitespace, no decorations, case-folded.

    ``" 身份证号码（必填）："`` and ``"*身份证号码"`` both give ``"身份证号码"``;
    ``"XM"`` gives ``"xm"``; ``"1.姓名"`` and ``"三、联系电话"`` lose their list
    numbers.  A header that is nothing but decoration keeps it, so
    ``"(备注)"`` still has a key of its own.
    """
    compact = "".join(_INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).split())
    stripped = _undecorated(_MARKS.sub("", compact), frozenset(_BRACKETS)).rstrip(":")
    stripped = _NUMBERING.sub("", stripped) or stripped
    return (stripped or compact).casefold()


@cache
def _brackets_pattern(openers: frozenset[str]) -> re.Pattern[str]:
    # An opening bracket with what follows up to its closing bracket, or up to the end when none does.
    closers = {opener: re.escape(_BRACKETS[opener]) for opener in openers}
    return re.compile("|".join(f"{re.escape(o)}[^{c}]*(?:{c}|\\Z)" for o, c in sorted(closers.items())))


def _undecorated(text: str, openers: frozenset[str]) -> str:
    """``text`` without its bracketed notes, in time linear in its length.

    A note runs from an opening bracket to the first closing one after it.  An
    opening bracket that no closing one follows is kept, and what follows it is
    searched for the other kinds only: searching again from each such bracket
    to the end of the text took time squared in its length (30,000 ``(`` in a
    header cell kept a run busy for minutes).
    """
    if not openers:
        return text

    def replaced(match: re.Match[str]) -> str:
        note = match.group()
        opener = note[0]
        if len(note) > 1 and note[-1] == _BRACKETS[opener]:
            return ""
        return opener + _undecorated(note[1:], openers - {opener})

    return _brackets_pattern(openers).sub(replaced, text)


def builtin_code(key: str) -> str | None:
    """The field code (or ``ignore``) a header key names among the built-in aliases, else None.

    A key that joins names with ``/`` or ``或`` ("手机号码/电话") names the
    field that every one of its names names, when they agree.
    """
    aliases = builtin_aliases()
    code = aliases.get(key)
    if code is not None or not _ALTERNATIVES.search(key):
        return code
    codes = {aliases.get(part) for part in _ALTERNATIVES.split(key)}
    return codes.pop() if len(codes) == 1 else None


def field_code(code: str) -> str | None:
    """The canonical spelling of a field code given in any case (or ``ignore``, ``extra``), else None."""
    canonical = {f.casefold(): f for f in (*INPUT_FIELDS, IGNORE, EXTRA)}
    return canonical.get(code.strip().casefold())


@cache
def builtin_aliases() -> dict[str, str]:
    """Header key -> field code (or ``ignore``) for every built-in alias and pinyin code."""
    text = resources.files("schemas").joinpath("column_aliases.csv").read_text(encoding="utf-8")
    aliases: dict[str, str] = {field.casefold(): field for field in INPUT_FIELDS}
    for row in csv.DictReader(text.splitlines()):
        code = field_code(row["field"])
        if code is None:  # a broken data file is a programming error, not a clerk's
            raise ValueError(f"column_aliases.csv: unknown field {row['field']!r}")
        aliases.setdefault(header_key(row["alias"]), code)
    return aliases


def is_known_header(text: str) -> bool:
    """True when ``text`` is a built-in alias or a pinyin field code (not a 序号 column)."""
    code = builtin_code(header_key(text))
    return code is not None and code != IGNORE


def count_known_headers(cells: Iterable[str]) -> int:
    """How many of ``cells`` name a field: what tells a header row from a title or data row."""
    return sum(1 for cell in cells if cell and is_known_header(cell))
