"""Validation: every fault of every row, keyed by the platform's result code.

:func:`validate` runs the pandera schema of :mod:`schemas.registry` lazily
(all failures, not the first) over the normalised rows and turns pandera's
failure cases into a fault frame (:data:`~pipeline.model.FAULT_COLUMNS`): one
row per fault, on one field, with the result code the platform itself would
answer and a Chinese message naming the value and the rule
(:mod:`pipeline.messages`).

One root cause, one fault: a gender, birth date or document number that
disagrees with an ID number is not reported while the ID number itself is
invalid — fixing the ID number comes first, and the others may then agree.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import pandas as pd
import pandera.pandas as pa

from pipeline.messages import error_messages
from pipeline.model import FAULT_COLUMNS, FIELDS
from pipeline.text import idnumber
from pipeline.text.dates import real_dates
from schemas.registry import PAIR_COLUMNS, build_schema, prepare
from schemas.result_codes import ResultCode
from schemas.rules import rule_for

_FIELD_ORDER = {field: position for position, field in enumerate(FIELDS)}
_GENDER_NAMES = {"1": "男", "2": "女"}
_PROBLEM_NAMES = {int(problem): problem.name for problem in idnumber.IdProblem}


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


def empty_faults() -> pd.DataFrame:
    """A fault frame with no rows (the right columns and types)."""
    return pd.DataFrame(
        {
            "row_id": pd.Series(dtype=np.int64),
            "field": pd.Series(dtype="str"),
            "code": pd.Series(dtype=np.int64),
            "severity": pd.Series(dtype="str"),
            "message": pd.Series(dtype="str"),
        }
    )


def _cases_of(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    try:
        schema.validate(frame, lazy=True, inplace=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return pd.DataFrame({"index": [], "column": [], "check": []})
    located = cases["index"].notna()
    if not located.all():
        unlocated = cases[~located]
        problems = "; ".join(
            sorted(set(unlocated["column"].astype(str) + ": " + unlocated["check"].astype(str)))
        )
        raise ValueError(f"the rows do not have the shape validate() needs: {problems}")
    return cases[["index", "column", "check"]]


def _failure_cases(rows: pd.DataFrame, today: datetime.date) -> pd.DataFrame:
    """pandera's failure cases (index, column, check) for ``rows``, the pair columns' last.

    The checks are Arrow and numpy kernels that release the GIL, so the two
    parts of the schema run side by side; the second part first builds the
    pair columns.
    """
    plain, paired = _schemas(today)
    if len(rows) < SMALL_FRAME_ROWS:  # a few rows (one edited row): a second thread only adds waiting
        parts = [_cases_of(plain, rows), _cases_of(paired, prepare(rows))]
        return pd.concat([part for part in parts if len(part)] or parts[:1], ignore_index=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        second = pool.submit(lambda: _cases_of(paired, prepare(rows)))
        first = _cases_of(plain, rows)
        parts = [first, second.result()]
    return pd.concat([part for part in parts if len(part)] or parts[:1], ignore_index=True)


def first_places(ids: pd.Series, repeats: pd.Series, sources: pd.DataFrame | None) -> pd.Series:
    """Where each repeated ID number in ``repeats`` first appears: ``第 5 行`` (same sheet) or with its file.

    ``ids`` are every row's ID numbers; ``sources`` (same index) the rows'
    ``source_file``, ``source_sheet`` and ``source_row``; without them every
    place is ``""`` and the message says the number appeared before.
    """
    candidates = ids[ids.isin(pd.unique(repeats.to_numpy()))]
    first = pd.Series(candidates.index, index=candidates.to_numpy()).groupby(level=0).min()
    first_ids = first.reindex(repeats.to_numpy()).to_numpy()
    if sources is None or not {"source_file", "source_sheet", "source_row"} <= set(sources.columns):
        return pd.Series("", index=repeats.index, dtype="str")  # where is unknown: the message says so

    def where(row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        picked = sources.loc[row_ids]
        return (
            picked["source_file"].astype("str").to_numpy(),
            picked["source_sheet"].astype("str").to_numpy(),
            picked["source_row"].astype("str").to_numpy(),
        )

    file_first, sheet_first, row_first = where(first_ids)
    file_here, sheet_here, _ = where(repeats.index.to_numpy())
    same = (file_first == file_here) & (sheet_first == sheet_here)
    sheet_part = np.where(sheet_first != "", "[" + sheet_first.astype(object) + "]", "")
    elsewhere = file_first.astype(object) + sheet_part + " "
    places = np.where(same, "", elsewhere) + "第 " + row_first.astype(object) + " 行"
    return pd.Series(places, index=repeats.index, dtype="str")


def _details(
    column: str,
    code: int,
    values: pd.Series,
    ids: pd.Series,
    today: datetime.date,
    first_place: Callable[[pd.Series], pd.Series] | None = None,
) -> tuple[pd.Series | None, pd.Series | None]:
    """Which variant of the message each fault needs, and the detail it quotes."""
    field = PAIR_COLUMNS.get(column, column)
    if column == "sfzhm" and code == ResultCode.ALREADY_ENROLLED:
        places = first_place(values) if first_place is not None else None
        if places is None or (places == "").all():
            return pd.Series("unplaced", index=values.index, dtype="str"), None
        return None, places
    if column == "sfzhm" and code == ResultCode.INVALID_ID_NUMBER:
        problems = pd.Series(idnumber.id_problems(values, today), index=values.index)
        details = problems.map(_PROBLEM_NAMES).astype("str")
        details = details.where(values != "", "EMPTY")
        expected = idnumber.check_characters(values.str.slice(0, 17).where(details == "CHECK", "0" * 17))
        extras = values.str.slice(0, 6).where(details == "DIVISION", values.str.slice(6, 14))
        return details, extras.where(details != "CHECK", expected)
    if column == "csrq" and code == ResultCode.INVALID_BIRTH_DATE:
        real = real_dates(values, idnumber.EARLIEST_BIRTH_YEAR, datetime.date.max)
        future = real & ~real_dates(values, idnumber.EARLIEST_BIRTH_YEAR, today)
        return pd.Series(np.where(future, "future", ""), index=values.index, dtype="str"), None
    if column in PAIR_COLUMNS:
        mismatch = pd.Series("mismatch", index=values.index, dtype="str")
        mismatch = mismatch.where(values != "", "empty")
        if field == "xb":
            return mismatch, idnumber.genders(ids).map(_GENDER_NAMES).fillna("").astype("str")
        if field == "csrq":
            born = idnumber.birth_dates(ids)  # shown as a clerk writes a date: 1970-05-06
            return mismatch, born.str.slice(0, 4) + "-" + born.str.slice(4, 6) + "-" + born.str.slice(6, 8)
        return mismatch, ids
    limit = rule_for(field).max_length
    if code == ResultCode.PARAMETER_ERROR and limit is not None:
        limits = pd.Series(str(limit), index=values.index, dtype="str")
        if field == "xm":  # the name has a character rule besides its length: say which one it broke
            long = values.str.len() > limit
            return pd.Series(np.where(long, "long", ""), index=values.index, dtype="str"), limits
        return None, limits
    return None, None


def _sorted(faults: pd.DataFrame) -> pd.DataFrame:
    position = faults["field"].map(_FIELD_ORDER).fillna(len(FIELDS)).to_numpy()
    order = np.lexsort((faults["code"].to_numpy(), position, faults["row_id"].to_numpy()))
    return faults.take(order).reset_index(drop=True)


def validate(
    rows: pd.DataFrame,
    *,
    today: datetime.date,
    written: pd.DataFrame | None = None,
    sources: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every fault of every row of ``rows`` (normalised, :data:`FIELDS` columns, index ``row_id``).

    Returns a fault frame (:data:`FAULT_COLUMNS`, severity ``error``) sorted by
    ``row_id``; it includes 10115 for an ID number seen on an earlier row of
    the same run, naming the row it first appears on.  ``written`` (same
    index, the values as the clerk wrote them) is what messages quote: a
    性别 written 女 is explained with 女, not with its code; where it is
    empty (a derived or default value) the normalised value is quoted.
    ``sources`` (same index: ``source_file``, ``source_sheet``,
    ``source_row``) locates the first occurrence of a repeated ID number.
    """
    rows = rows[list(FIELDS)].fillna("").astype("str")
    cases = _failure_cases(rows, today)
    if cases.empty:
        return empty_faults()
    codes = pd.to_numeric(cases["check"], errors="coerce").fillna(int(ResultCode.PARAMETER_ERROR))
    cases = cases.assign(row_id=cases["index"].astype(np.int64), code=codes.astype(np.int64))
    id_faults = (cases["column"] == "sfzhm") & (cases["code"] == ResultCode.INVALID_ID_NUMBER)
    bad_ids = set(cases.loc[id_faults, "row_id"])
    cases = cases[~(cases["column"].isin(list(PAIR_COLUMNS)) & cases["row_id"].isin(bad_ids))]

    parts: list[pd.DataFrame] = []
    # Pair columns last, so that a field's own fault is the one kept.
    cases = cases.assign(pair=cases["column"].isin(list(PAIR_COLUMNS))).sort_values("pair", kind="stable")
    for _, group in cases.groupby(["pair", "column", "code"], sort=False):
        column, code = str(group["column"].iloc[0]), int(group["code"].iloc[0])
        field = PAIR_COLUMNS.get(column, column)
        row_ids = group["row_id"].to_numpy()
        values = rows[field].loc[row_ids]
        details, extras = _details(
            column, code, values, rows["sfzhm"].loc[row_ids], today,
            lambda repeats: first_places(rows["sfzhm"], repeats, sources),
        )  # fmt: skip
        messages = error_messages(code, field, _as_written(values, field, written), details, extras)
        parts.append(
            pd.DataFrame(
                {"row_id": row_ids, "field": field, "code": code, "severity": "error",
                 "message": messages.to_numpy()}
            )
        )  # fmt: skip
    faults = pd.concat(parts, ignore_index=True).astype({"row_id": np.int64, "code": np.int64})
    # A value that breaks its own rule (an unreal date, an empty document
    # number) also disagrees with the ID number: one fault is enough.
    faults = faults.drop_duplicates(["row_id", "field", "code"], keep="first")
    faults = _without_derived_repeats(faults, written)
    return _sorted(faults)[list(FAULT_COLUMNS)]


def _as_written(values: pd.Series, field: str, written: pd.DataFrame | None) -> pd.Series:
    """The values as the clerk wrote them where they wrote one, else as normalised."""
    if written is None or field not in written.columns:
        return values
    as_written = written[field].reindex(values.index).fillna("").astype("str").str.strip()
    return as_written.where(as_written != "", values)


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
