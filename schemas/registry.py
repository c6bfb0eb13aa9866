"""The pandera schema of a normalised register: one column per platform field.

Every check is vectorised (no ``element_wise``) and carries the platform's
result code as its ``error`` (``"10123"``), so a failure comes out of
``SchemaErrors.failure_cases`` already keyed by code.  Code lists come from
``schemas/codes`` through :func:`schemas.tables.code_table`.

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
empty.  An empty gender or birth date is reported by its pair column, and
only when the ID number could have supplied it (otherwise the ID number's
own fault is the one to fix).
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
from pipeline.text.arrow import empty_mask, matches, to_arrow, to_arrow_any, where
from pipeline.text.dates import real_dates
from pipeline.text.phone import valid_phones
from schemas.tables import code_table

#: Pair column -> the field its failures are reported on.
PAIR_COLUMNS: dict[str, str] = {"xb@sfzhm": "xb", "csrq@sfzhm": "csrq", "zjhm@sfzhm": "zjhm"}

#: Longest accepted value per free-text field.  The spec gives no lengths; these
#: are generous, and what exceeds them is pasted text rather than a value.
MAX_LENGTHS: dict[str, int] = {
    "xm": 30, "zjhm": 30, "jkdah": 50, "xnhkh": 50, "dzsf": 30, "dzs": 30, "dzqx": 30, "dzxz": 50,
    "dzc": 100, "klx": 10, "kh": 50, "orgCode": 50,
}  # fmt: skip

#: Earliest accepted card issue year.
EARLIEST_ISSUE_YEAR = 2000

#: Bank card numbers: 12–19 digits.  No Luhn test: UnionPay cards mostly carry a
#: Luhn digit, but older domestic debit cards still in use do not, and the
#: platform's 10151 is about the number's form.
BANK_CARD = r"^[0-9]{12,19}$"

#: A name: Han characters (any plane), Latin letters, spaces, the middle dot, apostrophe, dot, hyphen.
NAME = r"^(?:\p{Han}|[A-Za-z·.' -])+$"

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


def _check(code: int, name: str, function: Callable[[pd.Series], BoolSeries]) -> pa.Check:
    return pa.Check(function, error=str(code), name=name)


def _in_table(table: str, code: int, allow_empty: bool) -> pa.Check:
    codes = list(code_table(table).codes) + ([""] if allow_empty else [])
    return _check(code, f"{table}_code", lambda s: s.isin(codes))


def _not_empty(code: int) -> pa.Check:
    return _check(code, "not_empty", lambda s: s != "")


def _within(values: pd.Series, limit: int) -> BoolSeries:
    """Whether each value is at most ``limit`` characters long."""
    array = to_arrow(values)
    # A character is at least one byte: a column whose longest value is within
    # the limit in bytes (the usual case) needs no character count.
    if (pc.max(pc.binary_length(array)).as_py() or 0) <= limit:
        return _mask(values, np.ones(len(array), dtype=bool))
    return _mask(values, pc.less_equal(pc.utf8_length(array), limit))


def _max_length(field: str) -> pa.Check:
    limit = MAX_LENGTHS[field]
    return _check(10110, "max_length", lambda s: _within(s, limit))


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
    gender = idnumber.genders(ids)
    gender = where(~empty_mask(gender), gender, _UNKNOWN_GENDER)
    birth = where(eighteen, idnumber.birth_dates(ids), _UNKNOWN_BIRTH)
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


def _document_agrees(pairs: pd.Series) -> BoolSeries:
    expected, stated = _halves(pairs)
    return _mask(pairs, pc.or_(pc.equal(expected, _ANY_DOCUMENT), pc.equal(expected, stated)))


def build_schema(today: datetime.date) -> pa.DataFrameSchema:
    """The schema of a normalised run frame (after :func:`prepare`) as of ``today``."""

    def valid_ids(s: pd.Series) -> BoolSeries:
        return _mask(s, idnumber.id_problems(s, today) == idnumber.IdProblem.OK)

    def first_occurrence(s: pd.Series) -> BoolSeries:
        return _mask(s, ~idnumber.repeated(s))

    def birth_date(s: pd.Series) -> BoolSeries:
        return _mask(s, (s == "").to_numpy(dtype=bool) | real_dates(s, idnumber.EARLIEST_BIRTH_YEAR, today))

    def issue_date(s: pd.Series) -> BoolSeries:
        return _mask(s, (s == "").to_numpy(dtype=bool) | real_dates(s, EARLIEST_ISSUE_YEAR, today))

    def column(*checks: pa.Check) -> pa.Column:
        return pa.Column(checks=list(checks), nullable=False, required=True)

    columns = {
        "xm": column(
            _not_empty(10114),
            _check(10110, "name", lambda s: _mask(s, (s == "") | (_within(s, 30) & matches(s, NAME)))),
        ),
        "xb": column(_in_table("gender", 10113, allow_empty=True)),
        "mzdm": column(_in_table("ethnicity", 10123, allow_empty=False)),
        "csrq": column(_check(10124, "birth_date", birth_date)),
        "sfzhm": column(
            _check(10111, "id_number", valid_ids), _check(10115, "first_occurrence", first_occurrence)
        ),
        "zjlx": column(_in_table("document_type", 10134, allow_empty=False)),
        "zjhm": column(_not_empty(10110), _max_length("zjhm")),
        "jkdah": column(_max_length("jkdah")),
        "xnhkh": column(_max_length("xnhkh")),
        "fyzhdm": column(_in_table("marriage", 10132, allow_empty=True)),
        "xldm": column(_in_table("education", 10133, allow_empty=True)),
        "zydm": column(_in_table("occupation", 10135, allow_empty=True)),
        "dzlb": column(_in_table("address_type", 10136, allow_empty=False)),
        "dzsf": column(_max_length("dzsf")),
        "dzs": column(_max_length("dzs")),
        "dzqx": column(_max_length("dzqx")),
        "dzxz": column(_max_length("dzxz")),
        "dzc": column(_max_length("dzc")),
        "brdh": column(_check(10110, "phone", lambda s: _mask(s, valid_phones(s)))),
        "ylfyzffs": column(_in_table("payment", 10131, allow_empty=False)),
        "klx": column(_not_empty(10110), _max_length("klx")),
        "kh": column(_max_length("kh")),
        "fksj": column(_check(10128, "issue_date", issue_date)),
        # An empty orgCode is a configuration gap, not a fault of the clerk's row:
        # the dry run notes it once and submission refuses to start without it.
        "orgCode": column(_max_length("orgCode")),
        "yhkh": column(_check(10151, "bank_card", lambda s: _mask(s, empty_mask(s) | matches(s, BANK_CARD)))),
        "isRealName": column(_check(10110, "real_name_flag", lambda s: s.isin(["0", "1"]))),
        "xb@sfzhm": column(_check(10113, "gender_agrees_with_id", _gender_agrees)),
        "csrq@sfzhm": column(_check(10124, "birth_agrees_with_id", _birth_agrees)),
        "zjhm@sfzhm": column(_check(10110, "document_agrees_with_id", _document_agrees)),
    }
    return pa.DataFrameSchema(columns, name="register", strict=False)
