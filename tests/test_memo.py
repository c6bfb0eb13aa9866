"""A few rows (an edit) checked through the per-value memo give exactly what the whole-column path gives.

The memo (:mod:`pipeline.text.memo`) keeps, per column and value, what
cleaning and each check answered; the small-frame paths of normalisation and
validation use it.  These tests check it against the path without it: a
synthetic register with every kind of fault is normalised and validated whole
(threads, no memo), then row by row, twice (the first pass fills the memo, the
second answers from it).
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import clerk, synth  # noqa: E402
from pipeline import normalise, validate  # noqa: E402
from pipeline.config import DefaultValues, Settings  # noqa: E402
from pipeline.dryrun import open_registers  # noqa: E402
from pipeline.mapping import map_columns  # noqa: E402
from pipeline.model import INPUT_FIELDS  # noqa: E402
from pipeline.text.memo import ValueMemo  # noqa: E402

TODAY = date(2026, 6, 1)
DEFAULTS = DefaultValues(org_code="455400000")


def test_known_only_when_every_value_is() -> None:
    memo: ValueMemo[int] = ValueMemo()
    memo.remember("xb", ["男", "女"], [1, 2])
    assert memo.known("xb", ["女", "男", "女"]) == [2, 1, 2]
    assert memo.known("xb", ["女", "未知"]) is None
    assert memo.known("mzdm", ["男"]) is None  # another column's answer is not this one's


def test_bounded_in_values_and_length() -> None:
    memo: ValueMemo[str] = ValueMemo(capacity=3, longest=5)
    memo.remember("c", ["a", "b", "c", "d"], ["A", "B", "C", "D"])
    assert len(memo) == 3
    assert memo.known("c", ["a"]) is None  # the oldest went first
    assert memo.known("c", ["b", "c", "d"]) == ["B", "C", "D"]
    memo.remember("c", ["x" * 6], ["long"])
    assert memo.known("c", ["x" * 6]) is None  # too long to keep: worked out every time
    memo.clear()
    assert len(memo) == 0


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Every input field as a clerk wrote it: 140 synthetic residents, most of them faulty in every way."""
    people = synth.generate(140, seed=5, faults=0.6)
    path = tmp_path_factory.mktemp("memo") / "r.csv"
    clerk.write_csv(clerk.to_clerk(people.columns, "standard"), path, encoding="utf-8")
    registers = open_registers([path], Settings())
    (raw,) = list(registers.sources[0].read(1_000_000))
    fields = map_columns(raw, {}).fields.loc[:, list(INPUT_FIELDS)]
    return fields.set_axis(pd.RangeIndex(len(fields)))


def _row_by_row(written: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, warnings, faults = [], [], []
    for row_id in written.index:
        one = written.loc[[row_id]]
        normalised, warned = normalise.normalise(one, DEFAULTS, TODAY)
        rows.append(normalised)
        warnings.append(warned)
        faults.append(validate.validate(normalised, today=TODAY, written=one))
    return pd.concat(rows), pd.concat([*warnings, *faults], ignore_index=True)


def _in_order(faults: pd.DataFrame) -> pd.DataFrame:
    ordered = faults.sort_values(["row_id", "severity", "field", "code", "message"], kind="stable")
    return ordered.reset_index(drop=True)


def test_row_by_row_equals_the_whole_column_path(written: pd.DataFrame) -> None:
    assert len(written) >= 2 * normalise.SMALL_FRAME_ROWS  # the whole frame takes the path without the memo
    whole, warnings = normalise.normalise(written, DEFAULTS, TODAY)
    repeats = validate.RepeatedIds()
    faults = validate.validate(whole, today=TODAY, written=written, repeats=repeats)
    # 10115 needs the other rows: a row checked alone cannot have it.
    expected = _in_order(pd.concat([warnings, faults[faults["code"] != 10115]], ignore_index=True))
    assert expected["severity"].eq("error").sum() > 50  # many faults, of many kinds
    assert expected["code"].nunique() >= 10

    validate._CHECKED.clear()
    normalise._CLEANED.clear()
    cold_rows, cold_faults = _row_by_row(written)
    assert len(validate._CHECKED) > 0 and len(normalise._CLEANED) > 0
    warm_rows, warm_faults = _row_by_row(written)

    pd.testing.assert_frame_equal(cold_rows, whole)
    pd.testing.assert_frame_equal(warm_rows, whole)
    pd.testing.assert_frame_equal(_in_order(cold_faults), expected)
    pd.testing.assert_frame_equal(_in_order(warm_faults), expected)


def test_a_check_of_another_day_is_not_taken_from_the_memo(written: pd.DataFrame) -> None:
    """A birth date of today is valid today and in the future the day before."""
    row = written.iloc[[0]].copy()
    row["csrq"] = TODAY.strftime("%Y-%m-%d")
    row["sfzhm"] = ""  # nothing to compare the date with: only its own rule
    for day, future in ((TODAY, False), (date(2026, 5, 31), True), (TODAY, False)):
        normalised, _ = normalise.normalise(row, DEFAULTS, day)
        faults = validate.validate(normalised, today=day, written=row)
        assert ((faults["field"] == "csrq") & (faults["code"] == 10124)).any() == future


def test_a_server_warms_up_the_day_s_schema_before_the_first_edit() -> None:
    from pipeline.web import engine

    validate._schemas.cache_clear()
    engine.warm_checks(Settings())
    hits = validate._schemas.cache_info().hits
    validate._schemas(date.today())
    assert validate._schemas.cache_info().hits == hits + 1  # built already: the first edit finds it
