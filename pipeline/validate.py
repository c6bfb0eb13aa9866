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


def _details(
    column: str, code: int, values: pd.Series, ids: pd.Series, today: datetime.date
) -> tuple[pd.Series | None, pd.Series | None]:
    """Which variant of the message each fault needs, and the detail it quotes."""
    field = PAIR_COLUMNS.get(column, column)
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
            return mismatch, idnumber.birth_dates(ids)
        return mismatch, ids
    limit = rule_for(field).max_length
    if code == ResultCode.PARAMETER_ERROR and limit is not None:
        return None, pd.Series(str(limit), index=values.index, dtype="str")
    return None, None


def _sorted(faults: pd.DataFrame) -> pd.DataFrame:
    position = faults["field"].map(_FIELD_ORDER).fillna(len(FIELDS)).to_numpy()
    order = np.lexsort((faults["code"].to_numpy(), position, faults["row_id"].to_numpy()))
    return faults.take(order).reset_index(drop=True)


def validate(rows: pd.DataFrame, *, today: datetime.date) -> pd.DataFrame:
    """Every fault of every row of ``rows`` (normalised, :data:`FIELDS` columns, index ``row_id``).

    Returns a fault frame (:data:`FAULT_COLUMNS`, severity ``error``) sorted by
    ``row_id``; it includes 10115 for an ID number seen on an earlier row of
    the same run.
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
        details, extras = _details(column, code, values, rows["sfzhm"].loc[row_ids], today)
        messages = error_messages(code, field, values, details, extras)
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
    return _sorted(faults)[list(FAULT_COLUMNS)]
