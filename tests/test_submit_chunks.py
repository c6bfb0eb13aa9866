"""``ehc submit`` in chunks against the sandbox: checked first, then sent slice by slice, each row once."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import SandboxHandle, make_resident
from submit_helpers import write_register

from pipeline.config import DefaultValues, Settings, SubmitSettings
from pipeline.errors import ConfigError, Interrupted
from pipeline.submission import submit


def _settings(sandbox: SandboxHandle, tmp_path: Path, org_code: str = "455400000") -> Settings:
    return Settings(
        platform=sandbox.settings(max_attempts=2, max_retry_seconds=5.0),
        submit=SubmitSettings(rate=0.0),
        defaults=DefaultValues(org_code=org_code),
        state_dir=tmp_path / "state",
    )


def _results(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _registers(tmp_path: Path) -> list[Path]:
    people = [make_resident(serial)[1] for serial in range(700, 711)]
    second = people[7:]
    second[1] = {**people[2]}  # the second file repeats a resident of the first, chunks apart
    return [write_register(tmp_path / "一.csv", people[:7]), write_register(tmp_path / "二.csv", second)]


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit, "SEND_ROWS", 2)


def test_a_chunked_submission_sends_each_resident_once_and_reports_every_row(
    sandbox: SandboxHandle, tmp_path: Path, small_slices: None
) -> None:
    inputs = _registers(tmp_path)
    settings = _settings(sandbox, tmp_path)
    result = submit.run_submit(inputs, tmp_path / "out", settings, chunk_rows=3)
    rows = _results(tmp_path / "out")
    assert [(r["source_file"], r["source_row"]) for r in rows] == [
        ("一.csv", str(n)) for n in range(2, 9)
    ] + [("二.csv", str(n)) for n in range(2, 6)]
    assert [r["status"] for r in rows] == ["enrolled"] * 7 + ["enrolled", "invalid", "enrolled", "enrolled"]
    assert rows[8]["result_code"] == "10115" and "与一.csv 第 4 行重复" in rows[8]["message"]
    assert sandbox.count("syncCardInfo") == 10
    assert result.counts is not None and result.counts["rows"] == 11
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]

    again = submit.run_submit(inputs, tmp_path / "again", settings, chunk_rows=3)
    assert sandbox.count("syncCardInfo") == 10, "a rerun sends nobody twice"
    assert again.counts is not None and again.counts["by_status"] == {"already_enrolled": 10, "invalid": 1}
    assert [r["ehealthCardId"] for r in _results(tmp_path / "again")] == [r["ehealthCardId"] for r in rows]


def test_a_missing_org_code_anywhere_stops_before_sending_with_the_dry_run_reports(
    sandbox: SandboxHandle, tmp_path: Path, small_slices: None
) -> None:
    inputs = _registers(tmp_path)
    with pytest.raises(ConfigError, match="10 行没有发卡机构代码"):
        submit.run_submit(inputs, tmp_path / "out", _settings(sandbox, tmp_path, org_code=""), chunk_rows=3)
    assert sandbox.count("syncCardInfo") == 0
    assert [r["status"] for r in _results(tmp_path / "out")] == ["valid"] * 8 + ["invalid"] + ["valid"] * 2


def test_ctrl_c_between_slices_reports_every_row_and_stops(
    sandbox: SandboxHandle, tmp_path: Path, small_slices: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = submit.submit_batch
    calls: list[int] = []

    def then_ctrl_c(*args: Any, **kwargs: Any) -> Any:
        stats = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # between two slices: the handler only sets the stop flag
        return stats

    monkeypatch.setattr(submit, "submit_batch", then_ctrl_c)
    with pytest.raises(Interrupted):
        submit.run_submit(_registers(tmp_path), tmp_path / "out", _settings(sandbox, tmp_path), chunk_rows=3)
    rows = _results(tmp_path / "out")
    assert len(rows) == 11
    statuses = [r["status"] for r in rows]
    # The first chunk (3 rows) went out in two slices; then the run stopped.
    assert statuses[:3] == ["enrolled"] * 3
    assert statuses.count("enrolled") == sandbox.count("syncCardInfo") == 3
    assert {r["message"] for r in rows[3:] if r["status"] == "failed"} == {submit.MESSAGE_NOT_SENT}
    assert statuses.count("failed") == 7 and statuses.count("invalid") == 1


def test_the_rows_left_after_a_stop_are_reported_a_chunk_at_a_time_under_a_bar(
    sandbox: SandboxHandle, tmp_path: Path, small_slices: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.reports.write import ReportWriter

    real = submit.submit_batch

    def ctrl_c_after_the_first_slice(*args: Any, **kwargs: Any) -> Any:
        stats = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # mid-chunk: the chunk's second slice is left unsent
        return stats

    added: list[int] = []
    real_add = ReportWriter.add

    def add(self: ReportWriter, batch: Any) -> None:
        added.append(len(batch))
        real_add(self, batch)

    bars: list[tuple[str, int, list[int]]] = []

    class Bar:
        def __init__(self, label: str, total: int, *, enabled: bool, unit: str = "行") -> None:
            self.advanced: list[int] = []
            bars.append((label, total, self.advanced))

        def advance(self, rows: int) -> None:
            self.advanced.append(rows)

        def total(self, rows: int) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(submit, "submit_batch", ctrl_c_after_the_first_slice)
    monkeypatch.setattr(ReportWriter, "add", add)
    monkeypatch.setattr(submit, "RowBar", Bar)
    with pytest.raises(Interrupted):
        submit.run_submit(_registers(tmp_path), tmp_path / "out", _settings(sandbox, tmp_path), chunk_rows=3)
    rows = _results(tmp_path / "out")
    statuses = [r["status"] for r in rows]
    assert len(rows) == 11 and statuses[:2] == ["enrolled"] * 2
    assert statuses.count("enrolled") == sandbox.count("syncCardInfo") == 2
    assert statuses.count("failed") == 8 and statuses.count("invalid") == 1
    # The sent slice and the first chunk's unsent one (both by the sending loop), then each later
    # chunk whole, under a bar that counts the rows left (8) and reaches them.
    assert added[:2] == [2, 1] and sum(added) == 11 and max(added[2:]) > submit.SEND_ROWS
    (total, advanced) = next((total, advanced) for label, total, advanced in bars if label == "写报告")
    assert total == 8 and advanced == added[2:]
