"""The pandera schema of a normalised register: one column per platform field.

Every check is vectorised (no ``element_wise``) and carries the platform's
result code as its ``error`` (``"10123"``), so a failure comes out of
``SchemaErrors.failure_cases`` already keyed by code.  The columns are built
from the field rules of :mod:`schemas.rules` (code table, result code, empty
or not, longest value); code lists come from ``schemas/codes`` through
:func:`schemas.tables.code_table`.

Cross-field rules (gender and birth date against the ID number, the document
number against the ID number) must each land on one column; a pandera
dataframe-level check would report a failure once per column.  So
:func:`prepare` adds one *pair column* per rule, named ``<field>@sfzhm``: an
Arrow struct of what the ID number implies (``implied``) and the field's value
(``stated``), built without copying the text; the pair column's check compares
the two and its failures are reported on ``<field>`` (:data:`PAIR_COLUMNS`).

Empty values: the platform requires every key but its own example sends
empty ``kh``, ``jkdah``, ``xnhkh``, ``fyzhdm`` and ``dzc``; so those, and
education, occupation, issue date, bank card and the address parts, may be
empty.  Where a field's rule refuses an empty value, it is refused with the
rule's empty code (by the value check itself when the codes agree, else by a
not-empty check); every other check passes an empty value.
Two exceptions: an empty gender or birth date is reported by its pair column,
and only when the ID number could have supplied it (otherwise the ID number's
own fault is the one to fix); an empty orgCode is a configuration gap, not a
fault of the clerk's row (the dry run notes it once and submission refuses to
start without it).

The schema checks each row on its own (and is applied chunk by chunk); the
one rule that needs every earlier row of a run, an ID number appearing twice
(10115), is :class:`pipeline.validate.RepeatedIds`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc

from pipeline.text import idnumber
from pipeline.text.arrow import (
    ascii_and_cjk_table,
    empty_mask,
    matches,
    outside_ascii_and_cjk,
    spreadsheet_errors,
    to_arrow,
    to_arrow_any,
    where,
)
from pipeline.text.dates import real_dates
from pipeline.text.phone import valid_phones
from schemas.result_codes import ResultCode
from schemas.rules import FIELD_RULES, NUMBERS_KEPT_AS_TEXT, FieldRule, rule_for
from schemas.tables import code_table

#: Pair column -> the field its failures are reported on.
PAIR_COLUMNS: dict[str, str] = {"xb@sfzhm": "xb", "csrq@sfzhm": "csrq", "zjhm@sfzhm": "zjhm"}

#: Fields whose empty value is not reported by a not-empty check of their own (see the module docstring).
EMPTY_REPORTED_ELSEWHERE: frozenset[str] = frozenset({"xb", "csrq", "orgCode"})

#: Earliest accepted card issue year.
EARLIEST_ISSUE_YEAR = 2000

#: Bank card numbers: 12–19 digits.  No Luhn test: UnionPay cards mostly carry a
#: Luhn digit, but older domestic debit cards still in use do not, and the
#: platform's 10151 is about the number's form.
BANK_CARD = r"^[0-9]{12,19}$"

#: A name: Han characters (any plane), Latin letters, spaces, the middle dot, apostrophe, dot, hyphen.
NAME = r"^(?:\p{Han}|[A-Za-z·.' -])+$"
#: The bytes of the names :func:`valid_names` passes without :data:`NAME`: the ASCII it allows, and the
#: common CJK block (U+4E00–U+9FFF, all Han).
_NAME_BYTES = ascii_and_cjk_table("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.' -")

_UNKNOWN_GENDER = "-"
_UNKNOWN_BIRTH = "-" * 8
_ANY_DOCUMENT = "*" * 18
_GENDERS = pyarrow.array(["1", "2"], type=pyarrow.large_string())
_GENDERS_OR_EMPTY = pyarrow.array(["1", "2", ""], type=pyarrow.large_string())

BoolSeries = pd.Series


def _mask(values: pd.Series, mask: np.ndarray | pd.Series | pyarrow.Array) -> BoolSeries:
    """A boolean Series on ``values``'s index, as pandera needs to locate failures."""
    if isinstance(mask, pyarrow.Array):
        mask = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    return pd.Series(np.asarray(mask, dtype=bool), index=values.index)


def _check(code: ResultCode, name: str, function: Callable[[pd.Series], BoolSeries]) -> pa.Check:
    return pa.Check(function, error=str(int(code)), name=name)


def _not_empty(code: ResultCode) -> pa.Check:
    return _check(code, "not_empty", lambda s: s != "")


def _within(values: pd.Series, limit: int) -> BoolSeries:
    """Whether each value is at most ``limit`` characters long."""
    array = to_arrow(values)
    # A character is at least one byte: a column whose longest value is within
    # the limit in bytes (the usual case) needs no character count.
    if (pc.max(pc.binary_length(array)).as_py() or 0) <= limit:
        return _mask(values, np.ones(len(array), dtype=bool))
    return _mask(values, pc.less_equal(pc.utf8_length(array), limit))


def _max_length(limit: int) -> pa.Check:
    return _check(ResultCode.PARAMETER_ERROR, "max_length", lambda s: _within(s, limit))


def _pair(implied: pd.Series, values: pd.Series) -> pd.Series:
    """A struct column of ``implied`` and ``values`` side by side (no text copied)."""
    pairs = pyarrow.StructArray.from_arrays(
        [to_arrow(implied), to_arrow(values)], names=["implied", "stated"]
    )
    return pd.Series(pd.arrays.ArrowExtensionArray(pairs), index=values.index)


def _halves(pairs: pd.Series) -> tuple[pyarrow.Array, pyarrow.Array]:
    """The ``implied`` and ``stated`` text of a pair column."""
    array = to_arrow_any(pairs)
    return pc.struct_field(array, "implied"), pc.struct_field(array, "stated")


def prepare(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` plus the pair columns of :data:`PAIR_COLUMNS`, ready for :func:`build_schema`."""
    ids = rows["sfzhm"]
    eighteen = pc.equal(pc.utf8_length(to_arrow(ids)), 18).to_numpy(zero_copy_only=False)
    gender = idnumber.genders(ids, unknown=_UNKNOWN_GENDER)
    birth = idnumber.birth_dates(ids, unknown=_UNKNOWN_BIRTH)
    as_document = where(eighteen & (rows["zjlx"] == "01").to_numpy(dtype=bool), ids, _ANY_DOCUMENT)
    return rows.assign(
        **{
            "xb@sfzhm": _pair(gender, rows["xb"]),
            "csrq@sfzhm": _pair(birth, rows["csrq"]),
            "zjhm@sfzhm": _pair(as_document, rows["zjhm"]),
        }
    )


def _gender_agrees(pairs: pd.Series) -> BoolSeries:
    # An empty gender fails here only when the ID number implies one: while
    # the ID number is unreadable its own fault (10111) is the one to fix.
    implied, stated = _halves(pairs)
    comparable = pc.and_(pc.is_in(implied, value_set=_GENDERS), pc.is_in(stated, value_set=_GENDERS_OR_EMPTY))
    return _mask(pairs, pc.or_(pc.invert(comparable), pc.equal(implied, stated)))


def _birth_agrees(pairs: pd.Series) -> BoolSeries:
    implied, stated = _halves(pairs)
    # A stated value that is no date at all is the csrq column's own fault.
    stated_length = pc.utf8_length(stated)
    comparable = pc.and_(
        pc.not_equal(implied, _UNKNOWN_BIRTH), pc.or_(pc.equal(stated_length, 0), pc.equal(stated_length, 8))
    )
    return _mask(pairs, pc.or_(pc.invert(comparable), pc.equal(implied, stated)))


def valid_names(values: pd.Series) -> np.ndarray:
    """Whether each value is a name as :data:`NAME` has it.

    A name of common Chinese characters and Latin letters (nearly every one)
    is told by its bytes; only the others go through the regular expression,
    which costs many times as much over a column of names.
    """
    array = to_arrow(values)
    others = outside_ascii_and_cjk(array, _NAME_BYTES)
    valid = ~others & (pc.fill_null(pc.binary_length(array), 0).to_numpy(zero_copy_only=False) > 0)
    if others.any():
        valid[others] = matches(values[others], NAME)
    return valid


def bank_cards(values: pd.Series) -> np.ndarray:
    """Whether each value is 12 to 19 ASCII digits (:data:`BANK_CARD`), told without a regular expression."""
    array = to_arrow(values)
    lengths = pc.binary_length(array)
    long_enough = pc.and_(pc.greater_equal(lengths, 12), pc.less_equal(lengths, 19))
    shaped = pc.and_(long_enough, pc.ascii_is_decimal(array))
    return pc.fill_null(shaped, False).to_numpy(zero_copy_only=False)


def _document_agrees(pairs: pd.Series) -> BoolSeries:
    expected, stated = _halves(pairs)
    return _mask(pairs, pc.or_(pc.equal(expected, _ANY_DOCUMENT), pc.equal(expected, stated)))


def _not_scientific(values: pd.Series) -> np.ndarray:
    """Whether each value is not a number in scientific notation (``4.40637051425053E+16``)."""
    return ~idnumber.scientific_numbers(values)


#: A value check a rule cannot say as data: its name and whether each value passes (an empty one fails).
FormatCheck = tuple[str, Callable[[pd.Series], np.ndarray]]


def _format_checks(today: datetime.date) -> dict[str, FormatCheck]:
    """The format checks of the fields that have one, by field; each answers with the field rule's code."""

    def valid_ids(s: pd.Series) -> np.ndarray:
        return np.asarray(idnumber.id_problems(s, today) == idnumber.IdProblem.OK, dtype=bool)

    return {
        "xm": ("name", valid_names),
        "sfzhm": ("id_number", valid_ids),
        "csrq": ("birth_date", lambda s: real_dates(s, idnumber.EARLIEST_BIRTH_YEAR, today)),
        "brdh": ("phone", valid_phones),
        "fksj": ("issue_date", lambda s: real_dates(s, EARLIEST_ISSUE_YEAR, today)),
        "yhkh": ("bank_card", bank_cards),
        "isRealName": ("real_name_flag", lambda s: s.isin(["0", "1"]).to_numpy(dtype=bool)),
        **{field: ("kept_as_text", _not_scientific) for field in NUMBERS_KEPT_AS_TEXT},
    }


def _value_check(
    name: str, code: ResultCode, passes: Callable[[pd.Series], np.ndarray], empty_passes: bool
) -> pa.Check:
    """A check of each value by ``passes``; with ``empty_passes`` an empty value is not its concern."""
    if empty_passes:
        return _check(code, name, lambda s: _mask(s, empty_mask(s) | passes(s)))
    return _check(code, name, lambda s: _mask(s, passes(s)))


def _rule_checks(rule: FieldRule, formats: dict[str, FormatCheck]) -> list[pa.Check]:
    """The checks of one field, built from its rule: not empty, in its table, its format, its length.

    An empty value the rule refuses is refused by the value check itself when
    the code is the same (one check fewer over every row), else by a
    not-empty check of its own; where it is allowed, every check passes it.
    """
    value_checks: list[tuple[str, Callable[[pd.Series], np.ndarray]]] = []
    if rule.table is not None:
        codes = [*code_table(rule.table).codes]
        value_checks.append((f"{rule.table}_code", lambda s: s.isin(codes).to_numpy(dtype=bool)))
    if rule.field in formats:
        value_checks.append(formats[rule.field])
    refuse_empty = not rule.allow_empty and rule.field not in EMPTY_REPORTED_ELSEWHERE
    refused_by_value_check = refuse_empty and bool(value_checks) and rule.code_when_empty == rule.code
    checks: list[pa.Check] = []
    if refuse_empty and not refused_by_value_check:
        checks.append(_not_empty(rule.code_when_empty))
    checks += [
        _value_check(name, rule.code, passes, empty_passes=not refused_by_value_check)
        for name, passes in value_checks
    ]
    if rule.max_length is not None and rule.field != "xm":  # the name's own rule refuses a "#"
        # Free text: a formula's error value (#N/A) is no value the clerk wrote, not one to send.
        checks.append(_check(rule.code, "no_spreadsheet_error", lambda s: _mask(s, ~spreadsheet_errors(s))))
    if rule.max_length is not None:
        checks.append(_max_length(rule.max_length))
    return checks


#: The check of each pair column: its name and whether the two halves agree.
_PAIR_CHECKS: dict[str, tuple[str, Callable[[pd.Series], BoolSeries]]] = {
    "xb@sfzhm": ("gender_agrees_with_id", _gender_agrees),
    "csrq@sfzhm": ("birth_agrees_with_id", _birth_agrees),
    "zjhm@sfzhm": ("document_agrees_with_id", _document_agrees),
}


def build_schema(today: datetime.date) -> pa.DataFrameSchema:
    """The schema of a normalised run frame (after :func:`prepare`) as of ``today``."""

    formats = _format_checks(today)
    checks = {rule.field: _rule_checks(rule, formats) for rule in FIELD_RULES}
    for pair, (name, function) in _PAIR_CHECKS.items():
        # A disagreement with the ID number is reported on the field, with the field's code.
        checks[pair] = [_check(rule_for(PAIR_COLUMNS[pair]).code, name, function)]
    columns = {name: pa.Column(checks=list(c), nullable=False, required=True) for name, c in checks.items()}
    return pa.DataFrameSchema(columns, name="register", strict=False)
