"""Validation: every fault of every row, keyed by the platform's result code.

:func:`validate` runs every check of the pandera schema of
:mod:`schemas.registry` (all failures, not the first) over the normalised
rows and turns the failing rows into a fault frame (:data:`~pipeline.model.FAULT_COLUMNS`): one
row per fault, on one field, with the result code the platform itself would
answer and a Chinese message naming the value and the rule
(:mod:`pipeline.messages`).

One root cause, one fault: a gender, birth date or document number that
disagrees with an ID number is not reported while the ID number itself is
invalid — fixing the ID number comes first, and the others may then agree.

An ID number may appear once per run (10115 on every later row, naming the
row where it first appeared).  A run is validated chunk by chunk, so this one
rule needs every earlier row: :class:`RepeatedIds` keeps the ID numbers seen so
far as 64-bit keys in a few sorted arrays (16 bytes per resident, not frames),
with where each first appeared.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc

from pipeline.messages import error_texts
from pipeline.model import FAULT_COLUMNS, FIELDS, no_faults
from pipeline.text import idnumber
from pipeline.text.arrow import spreadsheet_errors, text_array, to_series
from pipeline.text.dates import real_dates
from pipeline.text.memo import ValueMemo
from pipeline.text.phone import VALID_PHONE
from schemas.registry import PAIR_COLUMNS, build_schema, prepare
from schemas.result_codes import ResultCode
from schemas.rules import NUMBERS_KEPT_AS_TEXT, rule_for

_FIELD_ORDER = {field: position for position, field in enumerate(FIELDS)}
_GENDER_NAMES = {"1": "男", "2": "女"}
_PROBLEM_NAMES = {int(problem): problem.name for problem in idnumber.IdProblem}


#: Bits of a place (see :meth:`RepeatedIds.place`) that hold the row number; the rest number the table.
_ROW_BITS = 40


class RepeatedIds:
    """The ID numbers of a run seen so far, and where each first appeared.

    Well-formed numbers are kept as exact 64-bit keys (17 digits and the check
    character), any other non-empty text as a 64-bit hash.  Each chunk's new
    numbers become a sorted block; blocks of similar size are merged, so a
    lookup searches a handful of sorted arrays whatever the run's length.
    ``labels`` name the tables (``a.csv``, ``b.xlsx[名单]``) by table number.
    """

    def __init__(self, labels: Sequence[str] = ()) -> None:
        self.labels = list(labels)
        self._blocks: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted keys, places)

    @staticmethod
    def place(table: int | np.ndarray, source_row: np.ndarray) -> np.ndarray:
        """Where rows are, as one int64 each: the table's number and the row number a clerk sees."""
        tables = np.asarray(table, dtype=np.int64)
        return (tables << np.int64(_ROW_BITS)) | np.asarray(source_row, dtype=np.int64)

    def describe(self, first: np.ndarray, here: np.ndarray) -> pd.Series:
        """Where each repeated number first appeared, seen from ``here``: ``第 5 行``, or ``a.csv 第 5 行``.

        The table is named only when it is not the one of the repeat (``here``).
        """
        tables = first >> np.int64(_ROW_BITS)
        rows = (first & np.int64((1 << _ROW_BITS) - 1)).astype(str).astype(object)
        names = np.array([*self.labels, ""], dtype=object)[np.minimum(tables, len(self.labels))]
        elsewhere = (tables != (here >> np.int64(_ROW_BITS))) & (names != "")
        prefix = np.where(elsewhere, names + " ", "")
        return pd.Series(prefix + "第 " + rows + " 行", dtype="str")

    def _earlier(self, keys: np.ndarray) -> np.ndarray:
        """The place each key was first seen in an earlier chunk, -1 if never."""
        found = np.full(len(keys), -1, dtype=np.int64)
        for block_keys, block_places in self._blocks:
            at = np.searchsorted(block_keys, keys)
            inside = at < len(block_keys)
            hit = np.zeros(len(keys), dtype=bool)
            hit[inside] = block_keys[at[inside]] == keys[inside]
            found[hit] = block_places[at[hit]]
        return found

    def _remember(self, keys: np.ndarray, places: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self._blocks.append((keys[order], places[order]))
        # Merge while the newest block is as large as the one before: log2(chunks) blocks at most.
        while len(self._blocks) > 1 and len(self._blocks[-1][0]) >= len(self._blocks[-2][0]):
            newer, older = self._blocks.pop(), self._blocks.pop()
            self._blocks.append(_merged(older, newer))

    def _first_places(self, keys: np.ndarray, places: np.ndarray) -> np.ndarray:
        """For each key: the place of its first occurrence if that is an earlier row, else -1."""
        if not len(keys):
            return np.zeros(0, dtype=np.int64)
        # Not a stable sort (a quarter of its time on 400,000 keys): the row of each distinct
        # key's first occurrence is the smallest among its equals.
        order = np.argsort(keys)
        ordered = keys[order]
        starts = np.r_[True, ordered[1:] != ordered[:-1]]
        group = np.cumsum(starts) - 1
        first = np.minimum.reduceat(order, np.flatnonzero(starts))
        earlier = self._earlier(ordered[starts])
        first_place = np.where(earlier >= 0, earlier, places[first])
        result = np.full(len(keys), -1, dtype=np.int64)
        repeat = (earlier[group] >= 0) | (order != first[group])
        result[order[repeat]] = first_place[group[repeat]]
        new = earlier < 0
        self._remember(ordered[starts][new], places[first][new])
        return result

    def expect_more(self, more: bool) -> None:
        """Told before a chunk's part is checked whether more parts of the chunk follow (here, nothing
        to do; a worker's questions to the parent say it, see :mod:`pipeline.workers`)."""

    def check(self, ids: pd.Series, places: np.ndarray) -> np.ndarray:
        """For each ID number: where it first appeared if that is an earlier row of the run, else -1.

        The chunk's numbers are then remembered; ``""`` is never a repeat.
        """
        return self.resolve(self.keys(ids), places)

    @staticmethod
    def keys(ids: pd.Series) -> IdKeys:
        """The 64-bit keys of a chunk's ID numbers (the costly part of :meth:`check`, needing no state)."""
        shaped, keys = idnumber.id_keys(ids)
        others = ~shaped & (ids != "").to_numpy(dtype=bool)
        hashed = np.zeros(0, dtype=np.int64)
        if others.any():
            hashed = pd.util.hash_array(ids[others].to_numpy(dtype=object)).view(np.int64)
            # Kept apart from the exact keys: a negative flag bit cannot be a well-formed key.
            hashed = hashed | np.int64(-(1 << 62))
        return IdKeys(shaped, keys, others, hashed)

    def resolve(self, keys: IdKeys, places: np.ndarray) -> np.ndarray:
        """:meth:`check` of the chunk whose :meth:`keys` are ``keys`` (chunks in input order)."""
        result = np.full(len(keys.shaped), -1, dtype=np.int64)
        if keys.shaped.any():
            result[keys.shaped] = self._first_places(keys.keys, places[keys.shaped])
        if keys.others.any():
            result[keys.others] = self._first_places(keys.hashed, places[keys.others])
        return result


def _merged(
    older: tuple[np.ndarray, np.ndarray], newer: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Two blocks of sorted keys (no key in both) and their places, as one sorted block.

    Each newer key goes where the older keys before it end: one binary search
    each, no sort (28 against 38 ms for 400,000 keys into 600,000).
    """
    (old_keys, old_places), (new_keys, new_places) = older, newer
    at = np.searchsorted(old_keys, new_keys) + np.arange(len(new_keys))
    total = len(old_keys) + len(new_keys)
    keys, places = np.empty(total, dtype=old_keys.dtype), np.empty(total, dtype=old_places.dtype)
    rest = np.ones(total, dtype=bool)
    rest[at] = False
    keys[at], keys[rest] = new_keys, old_keys
    places[at], places[rest] = new_places, old_places
    return keys, places


@dataclass
class IdKeys:
    """A chunk's ID numbers as keys: well-formed ones exactly, other non-empty text hashed."""

    shaped: np.ndarray  # bool per row: a well-formed number, keyed by ``keys``
    keys: np.ndarray
    others: np.ndarray  # bool per row: other non-empty text, keyed by ``hashed``
    hashed: np.ndarray


#: Columns validated beside the pair columns, on a second thread (the rest run on the caller's):
#: chosen so that both halves, the pair columns' preparation included, take about as long.
_BESIDE_PAIRS = ("xm", "brdh", "fksj", "yhkh")

#: Below this many rows both parts run on the caller's thread: per-call overhead dominates.
SMALL_FRAME_ROWS = 64


@lru_cache(maxsize=4)
def _schemas(today: datetime.date) -> tuple[pa.DataFrameSchema, pa.DataFrameSchema]:
    """The schema in two parts: columns of the rows as they are, and those needing :func:`prepare`."""
    schema = build_schema(today)
    second = [*_BESIDE_PAIRS, *PAIR_COLUMNS]
    return schema.remove_columns(second), schema.select_columns(second)


def warm_up(today: datetime.date) -> None:
    """Build the schema of ``today`` and run every check once on a row, so later calls find it all ready.

    For a process about to fork its workers: each starts with the schema built
    and pandera's backends registered, rather than doing it again.
    """
    validate(pd.DataFrame({field: pd.Series([""], dtype="str") for field in FIELDS}), today=today)


def _check_output(check: pa.Check, values: pd.Series, has_nulls: bool) -> object:
    """Whether each value passes ``check``: what ``check(values).check_output`` is.

    Every check of the schema is a vectorised function of a column without
    nulls, so pandera's backend would call it and then gather the failing
    values into a report: the function is called directly (for a one-row
    frame, pandera's dispatch cost more than the checks).  Any other check
    goes through pandera.
    """
    if check.element_wise or check.groupby is not None or has_nulls:
        return check(values).check_output
    return check._check_fn(values)


def _column_failures(column: pa.Column, values: pd.Series) -> list[tuple[str, np.ndarray]]:
    """Each check of ``column`` that some of ``values`` fail: (its error, which fail)."""
    has_nulls = bool(values.hasnans)  # once per column, not per check: it costs as much as a small check
    failures = []
    for check in column.checks:
        passed = _check_output(check, values, has_nulls)
        if not isinstance(passed, pd.Series):
            raise ValueError(f"the rows do not have the shape validate() needs: {column.name}: {check.error}")
        failing = ~passed.to_numpy(dtype=bool)
        if failing.any():
            failures.append((str(check.error), failing))
    return failures


#: The checks each value failed (their errors), by the day's schema and column, for the few rows of an edit.
_CHECKED: ValueMemo[tuple[str, ...]] = ValueMemo()


def _remembered_failures(column: pa.Column, values: pd.Series, day: str) -> list[tuple[str, np.ndarray]]:
    """:func:`_column_failures` of a few rows, from :data:`_CHECKED` when it has seen every value."""
    key = f"{day}:{column.name}"
    written = values.tolist()
    known = _CHECKED.known(key, written)
    if known is None:
        failures = _column_failures(column, values)
        failed: list[list[str]] = [[] for _ in written]
        for error, failing in failures:
            for position in np.flatnonzero(failing):
                failed[position].append(error)
        _CHECKED.remember(key, written, (tuple(errors) for errors in failed))
        return failures
    seen = {error for errors in known for error in errors}  # given in the checks' order, as without the memo
    in_order = dict.fromkeys(str(check.error) for check in column.checks if str(check.error) in seen)
    return [(error, np.array([error in errors_of for errors_of in known], dtype=bool)) for error in in_order]


def _cases_of(schema: pa.DataFrameSchema, frame: pd.DataFrame, day: datetime.date) -> pd.DataFrame:
    """The failing (index, column, check) of ``frame`` under ``schema`` (the schema of ``day``).

    Each of the schema's checks is run through pandera's own check API
    (``Check.__call__``), column by column.  This is what ``schema.validate``
    does too, without gathering every failure into pandera's error report
    first: that report (failure values consolidated and formatted as text)
    cost as much again as the checks themselves, for text nobody reads.  The
    schema's columns must all be there and hold text (never null).  A few
    rows (an edit) are checked through :data:`_CHECKED`: each check decides
    each value on its own, so a value's failures are those it had before.
    """
    missing = [name for name in schema.columns if name not in frame.columns]
    if missing:
        raise ValueError(f"the rows do not have the shape validate() needs: missing {', '.join(missing)}")
    small = len(frame) < SMALL_FRAME_ROWS
    found: list[np.ndarray] = []
    columns: list[np.ndarray] = []
    checks: list[np.ndarray] = []
    for name, column in schema.columns.items():
        values = frame[name]
        if small and values.dtype == "str":  # not the pair columns: they hold the ID number, new on every row
            failures = _remembered_failures(column, values, day.isoformat())
        else:
            failures = _column_failures(column, values)
        for error, failing in failures:
            rows = values.index.to_numpy()[failing]
            found.append(rows)
            columns.append(np.full(len(rows), name, dtype=object))
            checks.append(np.full(len(rows), error, dtype=object))
    if not found:
        return pd.DataFrame({"index": [], "column": [], "check": []})
    return pd.DataFrame(
        {"index": np.concatenate(found), "column": np.concatenate(columns), "check": np.concatenate(checks)}
    )


def _failure_cases(rows: pd.DataFrame, today: datetime.date) -> pd.DataFrame:
    """pandera's failure cases (index, column, check) for ``rows``, the pair columns' last.

    The checks are Arrow and numpy kernels that release the GIL, so the two
    parts of the schema run side by side; the second part first builds the
    pair columns.
    """
    plain, paired = _schemas(today)
    if len(rows) < SMALL_FRAME_ROWS:  # a few rows (one edited row): a second thread only adds waiting
        parts = [_cases_of(plain, rows, today), _cases_of(paired, prepare(rows), today)]
        return pd.concat([part for part in parts if len(part)] or parts[:1], ignore_index=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        second = pool.submit(lambda: _cases_of(paired, prepare(rows), today))
        first = _cases_of(plain, rows, today)
        parts = [first, second.result()]
    return pd.concat([part for part in parts if len(part)] or parts[:1], ignore_index=True)


#: A note in brackets after a name (张三（代办）): it belongs in the remarks.
_NOTE_IN_BRACKETS = r"[(（\[【].*[)）\]】]"
#: Two phone numbers in one cell (本人/家属, 手机、座机): the platform takes one.  Two apart by a space or
#: one above the other (Alt+Enter) are run together once normalised (which drops white space).
_SEVERAL_PHONES = (
    rf"(?:{VALID_PHONE}).*?(?:[/、,，;；|]|或|和).*?(?:{VALID_PHONE})|^(?:{VALID_PHONE})(?:{VALID_PHONE})$"
)


def _details(
    column: str, code: int, values: pd.Series, ids: pd.Series | None, today: datetime.date
) -> tuple[pd.Series | None, pd.Series | None]:
    """Which variant of the message each fault needs, and the detail it quotes (``ids``: the rows' ID
    numbers, needed for a pair column's)."""
    field = PAIR_COLUMNS.get(column, column)
    if column == "sfzhm" and code == ResultCode.INVALID_ID_NUMBER:
        problems = pd.Series(idnumber.id_problems(values, today), index=values.index)
        details = problems.map(_PROBLEM_NAMES).astype("str")
        # Letters typed for the digits they look like (O for 0, I or l for 1), and nothing else amiss.
        lettered = (details == "SHAPE") & values.str.fullmatch(r"[0-9OoIlL]{17}[0-9XxOoIlL]").fillna(False)
        details = details.where(~lettered, "LETTERS")
        details = details.where(~values.str.contains("*", regex=False).fillna(False), "MASKED")
        details = details.where(values != "", "EMPTY")
        expected = idnumber.check_characters(values.str.slice(0, 17).where(details == "CHECK", "0" * 17))
        extras = values.str.slice(0, 6).where(details == "DIVISION", values.str.slice(6, 14))
        extras = extras.where(details != "SHAPE", values.str.len().astype("str"))
        return details, extras.where(details != "CHECK", expected)
    if column == "csrq" and code == ResultCode.INVALID_BIRTH_DATE:
        real = real_dates(values, idnumber.EARLIEST_BIRTH_YEAR, datetime.date.max)
        future = real & ~real_dates(values, idnumber.EARLIEST_BIRTH_YEAR, today)
        return pd.Series(np.where(future, "future", ""), index=values.index, dtype="str"), None
    if column in PAIR_COLUMNS:
        if ids is None:
            raise ValueError(f"{column}: the ID numbers are needed for its message")
        mismatch = pd.Series("mismatch", index=values.index, dtype="str")
        mismatch = mismatch.where(values != "", "empty")
        if field == "xb":
            return mismatch, idnumber.genders(ids).map(_GENDER_NAMES).fillna("").astype("str")
        if field == "csrq":
            born = idnumber.birth_dates(ids)  # shown as a clerk writes a date: 1970-05-06
            return mismatch, born.str.slice(0, 4) + "-" + born.str.slice(4, 6) + "-" + born.str.slice(6, 8)
        return mismatch, ids
    if column == "brdh" and code == ResultCode.PARAMETER_ERROR:
        several = values.str.contains(_SEVERAL_PHONES, regex=True).fillna(False).to_numpy(dtype=bool)
        masked = values.str.contains("*", regex=False).fillna(False).to_numpy(dtype=bool)
        # A mobile number with a digit too many or too few; a landline without its area code.
        mobile = values.str.fullmatch(r"1[0-9]{5,9}|1[0-9]{11,15}").fillna(False).to_numpy(dtype=bool)
        local = values.str.fullmatch(r"[2-9][0-9]{6,7}").fillna(False).to_numpy(dtype=bool)
        variant = np.select(
            [masked, several, mobile, local], ["masked", "several", "digits", "local"], default=""
        )
        return pd.Series(variant, index=values.index, dtype="str"), values.str.len().astype("str")
    limit = rule_for(field).max_length
    variants, limits = _text_details(code, field, column, values, limit)
    if code == ResultCode.PARAMETER_ERROR and limit is not None and field != "xm":
        failed = spreadsheet_errors(values)
        if failed.any():  # a formula's error value (#N/A); the column's other faults told as ever
            others = "" if variants is None else variants.to_numpy(dtype=object)
            variants = pd.Series(np.where(failed, "FORMULA_ERROR", others), index=values.index, dtype="str")
    return variants, limits


def _text_details(
    code: int, field: str, column: str, values: pd.Series, limit: int | None
) -> tuple[pd.Series | None, pd.Series | None]:
    """The message variants of a free-text field's 10110 (digits Excel lost, the name's rules), its limit."""
    if code == ResultCode.PARAMETER_ERROR and column in NUMBERS_KEPT_AS_TEXT:
        scientific = idnumber.scientific_numbers(values)
        if scientific.any():  # Excel lost its digits; any other fault of these fields is its length
            limits = pd.Series(str(limit), index=values.index, dtype="str")
            return pd.Series(np.where(scientific, "SCIENTIFIC", ""), index=values.index, dtype="str"), limits
    if code == ResultCode.PARAMETER_ERROR and limit is not None:
        limits = pd.Series(str(limit), index=values.index, dtype="str")
        if field == "xm":  # the name has a character rule besides its length: say which one it broke
            long = values.str.len() > limit
            noted = values.str.contains(_NOTE_IN_BRACKETS, regex=True).fillna(False).to_numpy(dtype=bool)
            # A character GBK lacks (a rare one in a name) becomes ? when Excel saves a CSV as ANSI.
            lost = values.str.contains("?", regex=False).fillna(False).to_numpy(dtype=bool)
            variant = np.select([long, lost, noted], ["long", "lost", "noted"], default="")
            return pd.Series(variant, index=values.index, dtype="str"), limits
        return None, limits
    return None, None


def _places_of(sources: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Table labels (``a.csv``, ``b.xlsx[名单]``) and each row's place, from its source columns."""
    files = sources["source_file"].astype("str").to_numpy(dtype=object)
    sheets = sources["source_sheet"].astype("str").to_numpy(dtype=object)
    codes, tables = pd.factorize(pd.MultiIndex.from_arrays([files, sheets]), sort=False)
    labels = [f"{file}[{sheet}]" if sheet else str(file) for file, sheet in tables]
    rows = pd.to_numeric(sources["source_row"], errors="coerce").fillna(0).astype(np.int64).to_numpy()
    return labels, RepeatedIds.place(codes, rows)


def _repeat_faults(
    rows: pd.DataFrame,
    repeats: RepeatedIds,
    places: np.ndarray | None,
    written: pd.DataFrame | None,
) -> pd.DataFrame | None:
    """10115 for every row whose ID number appeared on an earlier row of the run, naming that row.

    Without ``places`` the rows are numbered by position and the message says only that the
    number appeared before.
    """
    located = places is not None
    if places is None:
        places = np.arange(len(rows), dtype=np.int64)
    first = repeats.check(rows["sfzhm"], places)
    repeated = first >= 0
    if not repeated.any():
        return None
    values = rows["sfzhm"][repeated]
    code = int(ResultCode.ALREADY_ENROLLED)
    if located:
        details, where = None, repeats.describe(first[repeated], places[repeated])
        where.index = values.index
    else:
        details, where = pd.Series("unplaced", index=values.index, dtype="str"), None
    messages = error_texts(code, "sfzhm", _as_written(values, "sfzhm", written), details, where)
    return pd.DataFrame(
        {"row_id": rows.index.to_numpy()[repeated], "field": "sfzhm", "code": code, "severity": "error",
         "message": messages}
    )  # fmt: skip


def _sorted(faults: pd.DataFrame) -> pd.DataFrame:
    position = faults["field"].map(_FIELD_ORDER).fillna(len(FIELDS)).to_numpy()
    order = np.lexsort((faults["code"].to_numpy(), position, faults["row_id"].to_numpy()))
    return faults.take(order).reset_index(drop=True)


class TooManyFaults(Exception):
    """Rows hold more faults than the caller would take in one go (``count``: how many were found)."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


def validate(
    rows: pd.DataFrame,
    *,
    today: datetime.date,
    written: pd.DataFrame | None = None,
    sources: pd.DataFrame | None = None,
    repeats: RepeatedIds | None = None,
    places: np.ndarray | None = None,
    most_faults: int | None = None,
) -> pd.DataFrame:
    """Every fault of every row of ``rows`` (normalised, :data:`FIELDS` columns, index ``row_id``).

    Returns a fault frame (:data:`FAULT_COLUMNS`, severity ``error``) sorted by
    ``row_id``; it includes 10115 for an ID number seen on an earlier row of
    the run, naming the row it first appears on.  ``written`` (same index, the
    values as the clerk wrote them) is what messages quote: a 性别 written 女
    is explained with 女, not with its code; where it is empty (a derived or
    default value) the normalised value is quoted.

    Repeats are those of ``rows`` alone, or, given ``repeats``, of every
    chunk it has seen; ``places`` (:meth:`RepeatedIds.place` of each row), or
    ``sources`` (same index: ``source_file``, ``source_sheet``,
    ``source_row``), say where each row is, so a message can name where the
    number first appeared.

    Given ``most_faults``, rows failing more checks than that raise
    :class:`TooManyFaults` before any message is made and before ``repeats``
    learns their ID numbers: the caller checks them again in smaller parts.
    """
    rows = rows[list(FIELDS)].fillna("").astype("str")
    # One row alone repeats nothing: where it is is not needed (it costs more than the row's checks).
    if places is None and sources is not None and repeats is None and len(rows) > 1:
        labels, places = _places_of(sources.reindex(rows.index))
        repeats = RepeatedIds(labels)
    if repeats is None:
        repeats = RepeatedIds()
    cases = _failure_cases(rows, today)
    if most_faults is not None and len(cases) > most_faults:
        raise TooManyFaults(len(cases))
    parts: list[pd.DataFrame] = []
    repeated = _repeat_faults(rows, repeats, places, written)
    if repeated is not None:
        parts.append(repeated)
    if cases.empty and not parts:
        return no_faults()
    codes = pd.to_numeric(cases["check"], errors="coerce").fillna(int(ResultCode.PARAMETER_ERROR))
    cases = cases.assign(row_id=cases["index"].astype(np.int64), code=codes.astype(np.int64))
    id_faults = (cases["column"] == "sfzhm") & (cases["code"] == ResultCode.INVALID_ID_NUMBER)
    bad_ids = set(cases.loc[id_faults, "row_id"])
    cases = cases[~(cases["column"].isin(list(PAIR_COLUMNS)) & cases["row_id"].isin(bad_ids))]

    # Pair columns last, so that a field's own fault is the one kept.
    cases = cases.assign(pair=cases["column"].isin(list(PAIR_COLUMNS))).sort_values("pair", kind="stable")
    case_columns = cases["column"].to_numpy(dtype=object)
    case_codes = cases["code"].to_numpy()
    case_rows = cases["row_id"].to_numpy()
    # One group per column and code, in the order first met (the pair columns' after the others').
    groups, _ = pd.factorize(pd.Series(case_columns + ":" + case_codes.astype(str), dtype=object), sort=False)
    found: list[tuple[str, int, np.ndarray, np.ndarray]] = []
    for group in range(int(groups.max()) + 1 if len(groups) else 0):
        at = np.flatnonzero(groups == group)
        column, code = str(case_columns[at[0]]), int(case_codes[at[0]])
        field = PAIR_COLUMNS.get(column, column)
        row_ids = case_rows[at]
        values = _taken(rows[field], row_ids)
        ids = _taken(rows["sfzhm"], row_ids) if column in PAIR_COLUMNS else None
        details, extras = _details(column, code, values, ids, today)
        messages = error_texts(code, field, _as_written(values, field, written), details, extras)
        found.append((field, code, row_ids, messages))
    if found:
        sizes = [len(row_ids) for _, _, row_ids, _ in found]
        parts.append(
            pd.DataFrame(
                {"row_id": np.concatenate([row_ids for _, _, row_ids, _ in found]),
                 "field": np.repeat(np.array([field for field, _, _, _ in found], dtype=object), sizes),
                 "code": np.repeat(np.array([code for _, code, _, _ in found], dtype=np.int64), sizes),
                 "severity": "error",
                 "message": np.concatenate([messages for _, _, _, messages in found])}
            )
        )  # fmt: skip
    faults = pd.concat(parts, ignore_index=True).astype({"row_id": np.int64, "code": np.int64})
    # A value that breaks its own rule (an unreal date, an empty document
    # number) also disagrees with the ID number: one fault is enough.
    faults = faults.drop_duplicates(["row_id", "field", "code"], keep="first")
    faults = _without_derived_repeats(faults, written)
    return _sorted(faults)[list(FAULT_COLUMNS)]


def _taken(column: pd.Series, row_ids: np.ndarray) -> pd.Series:
    """``column.loc[row_ids]``, taken by position in Arrow when its index is a plain range (a chunk's).

    Paid per field and code with faults: ``loc`` looked every label up again.
    """
    positions = _positions(column.index, row_ids)
    if positions is None or column.dtype != "str":
        return column.loc[row_ids]
    taken = to_series(pc.take(pyarrow.array(column), pyarrow.array(positions)), pd.Index(row_ids))
    taken.name = column.name
    return taken


def _as_written(values: pd.Series, field: str, written: pd.DataFrame | None) -> pyarrow.Array:
    """The values (as Arrow text) as the clerk wrote them where they wrote one, else as normalised."""
    if written is None or field not in written.columns:
        return text_array(values)
    column = written[field]
    positions = _positions(column.index, values.index)
    if positions is None or column.dtype != "str":
        as_written = column.reindex(values.index).fillna("").astype("str").str.strip()
        return text_array(as_written.where(as_written != "", values))
    # The same in Arrow, by position (35 against 80 ms a million rows): paid per field and code with faults.
    texts = pc.utf8_trim_whitespace(text_array(column).take(pyarrow.array(positions)))
    return pc.if_else(pc.equal(texts, ""), text_array(values), texts)


def _positions(index: pd.Index, labels: pd.Index | np.ndarray) -> np.ndarray | None:
    """Where ``labels`` are in ``index`` when it is a plain range holding them all, else None."""
    if not isinstance(index, pd.RangeIndex) or index.step != 1 or not len(labels):
        return None
    positions = np.asarray(labels, dtype=np.int64) - index.start
    if positions.min() < 0 or positions.max() >= len(index):
        return None
    return positions


#: Fields filled from the ID number when the clerk left them empty (or has no column for them).
_DERIVED_FROM_ID = ("zjhm", "csrq", "xb")


def _without_derived_repeats(faults: pd.DataFrame, written: pd.DataFrame | None) -> pd.DataFrame:
    """Drop a fault on a value derived from a faulty ID number: the ID number's fault is the one to fix.

    A 证件号码 the clerk did not write is the ID number copied; while the ID
    number is faulty, saying the document number is wrong too repeats the
    same fault on a column the clerk may not even have.
    """
    if written is None or not len(faults):
        return faults
    bad_id_rows = faults.loc[
        (faults["field"] == "sfzhm") & (faults["code"] == ResultCode.INVALID_ID_NUMBER), "row_id"
    ].to_numpy()
    derived = faults["field"].isin(_DERIVED_FROM_ID) & faults["row_id"].isin(bad_id_rows)
    if not derived.any():
        return faults
    picked = faults[derived]
    blank = np.zeros(len(picked), dtype=bool)
    for field in _DERIVED_FROM_ID:
        here = (picked["field"] == field).to_numpy()
        if here.any() and field in written.columns:
            values = written[field].reindex(picked["row_id"].to_numpy()[here]).fillna("").astype("str")
            blank[here] = (values.str.strip() == "").to_numpy()
        elif here.any():
            blank[here] = True
    drop = picked.index[blank]
    return faults.drop(index=drop)
