"""Golden tests: ``ehc validate`` on the sample registers and on synthetic ones gives the expected rows.

``sample_data/expected.csv`` holds, per data row of the samples, the status and
result codes the dry run must give; the synthetic registers carry their own
manifest (:mod:`bench.synth`).  Everything goes through the real command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from python_calamine import CalamineWorkbook

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data"
XLSX = SAMPLES / "社区居民登记表.xlsx"
GBK_CSV = SAMPLES / "居民名单_GBK.csv"

sys.path.insert(0, str(ROOT))

from bench import clerk, synth  # noqa: E402
from pipeline import cli  # noqa: E402

pytestmark = pytest.mark.slow


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHC_")}
    env.update(EHC_ORG_CODE="455400000", EHC_STATE_DIR=str(state), XDG_STATE_HOME=str(state))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def run_validate(inputs: list[Path], out: Path) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline validate INPUT... --out OUT`` as a clerk would run it."""
    command = [sys.executable, "-m", "pipeline", "validate", *map(str, inputs), "--out", str(out)]
    return subprocess.run(command, cwd=ROOT, env=_env(out.parent / "state"), capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def read_results(out: Path) -> pd.DataFrame:
    """results.csv as text."""
    return pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")


def code_set(codes: str) -> set[str]:
    return {c for c in codes.split(";") if c}


def sheet_rows(path: Path, name: str) -> list[list[Any]]:
    """The rows of sheet ``name`` of an xlsx file."""
    return list(CalamineWorkbook.from_path(str(path)).get_sheet_by_name(name).to_python())


def fault_lines(path: Path, sheet: str = "明细") -> pd.DataFrame:
    """The fault lines of errors.xlsx (code, file, row, column), notes below the table dropped."""
    rows = sheet_rows(path, sheet)
    header = [str(h) for h in rows[0]]
    lines = pd.DataFrame([r for r in rows[1:] if isinstance(r[0], float | int)], columns=header)
    return pd.DataFrame({
        "code": lines["代码"].astype(str).str.replace(r"\.0$", "", regex=True),
        "file": lines["文件"].astype(str),
        "row": lines["行号"].astype(float).astype(int),
        "column": lines["列"].astype(str),
    })  # fmt: skip


def assert_rows_match(results: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Every expected row appears exactly once, in input order, with its status and codes."""
    keys = list(zip(results["source_file"], results["source_row"].astype(int), strict=True))
    assert len(keys) == len(set(keys)), "a row appears twice in results.csv"
    assert keys == list(zip(expected["file"], expected["source_row"].astype(int), strict=True))
    got = {
        k: (s, code_set(c)) for k, s, c in zip(keys, results["status"], results["result_code"], strict=True)
    }
    wrong = [
        (file, row, want_status, want_codes, got[(file, int(row))])
        for file, row, want_status, want_codes in expected[["file", "source_row", "status", "result_codes"]]
        .itertuples(index=False)
        if got[(file, int(row))] != (want_status, code_set(want_codes))
    ]  # fmt: skip
    assert not wrong, "\n".join(map(str, wrong))


# --- the sample registers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("golden") / "out"
    return run_validate([XLSX, GBK_CSV], out), out


@pytest.fixture(scope="module")
def expected() -> pd.DataFrame:
    return pd.read_csv(SAMPLES / "expected.csv", dtype=str, keep_default_na=False)


def test_samples_exit_1_without_traceback(sample_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    process, _ = sample_run
    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr


def test_samples_every_row_once_with_expected_status_and_codes(
    sample_run: tuple[subprocess.CompletedProcess[str], Path], expected: pd.DataFrame
) -> None:
    _, out = sample_run
    results = read_results(out)
    assert list(results.columns[:6]) == ["source_file", "source_sheet", "source_row", "status", "result_code",
                                         "message"]  # fmt: skip
    assert_rows_match(results, expected)
    invalid = results[results["status"] == "invalid"]
    assert (invalid["message"] != "").all() and (
        results.loc[results["status"] == "valid", "result_code"] == ""
    ).all()


def test_samples_fifteen_digit_id_is_upgraded(
    sample_run: tuple[subprocess.CompletedProcess[str], Path], expected: pd.DataFrame
) -> None:
    _, out = sample_run
    results = read_results(out)
    row = int(expected.loc[expected["kind"] == "id15", "source_row"].iloc[0])
    upgraded = results[(results["source_file"] == XLSX.name) & (results["source_row"].astype(int) == row)]
    assert upgraded["status"].tolist() == ["valid"]
    number = upgraded["sfzhm"].iloc[0]
    assert len(number) == 18 and number[6:8] == "19"
    warnings = fault_lines(out / "errors.xlsx", "提示")
    assert ((warnings["file"] == XLSX.name) & (warnings["row"] == row)).any()


def test_samples_errors_xlsx_sorted_by_code_then_row(
    sample_run: tuple[subprocess.CompletedProcess[str], Path], expected: pd.DataFrame
) -> None:
    _, out = sample_run
    lines = fault_lines(out / "errors.xlsx")
    file_order = {XLSX.name: 0, GBK_CSV.name: 1}
    keys = list(zip(lines["code"].astype(int), lines["file"].map(file_order), lines["row"], strict=True))
    assert keys == sorted(keys)
    listed = set(zip(lines["file"], lines["row"], lines["code"], strict=True))
    invalid = expected[expected["status"] == "invalid"]
    for file, row, codes in zip(invalid["file"], invalid["source_row"], invalid["result_codes"], strict=True):
        for code in code_set(codes):
            assert (file, int(row), code) in listed
    assert {int(r) for f, r, _ in listed if f == XLSX.name} <= set(
        expected.loc[
            (expected["file"] == XLSX.name) & (expected["status"] == "invalid"), "source_row"
        ].astype(int)
    )


def test_samples_results_workbooks(sample_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = sample_run
    names = CalamineWorkbook.from_path(str(out / "results.xlsx")).sheet_names
    assert names[:2] == ["汇总", "明细"]
    annotated = out / f"annotated_{XLSX.stem}.xlsx"
    assert annotated.exists()
    rows = sheet_rows(annotated, CalamineWorkbook.from_path(str(annotated)).sheet_names[0])
    assert rows[2][:3] == ["序号", "姓名", "性别"]  # the clerk's own sheet, title rows kept


def test_csv_sample_alone_in_process(
    tmp_path: Path, expected: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _env(tmp_path / "state").items():
        monkeypatch.setenv(key, value)
    code = cli.main(["validate", str(GBK_CSV), "--out", str(tmp_path / "out")])
    assert code == 1
    assert_rows_match(read_results(tmp_path / "out"), expected[expected["file"] == GBK_CSV.name])


# --- synthetic registers with every fault kind --------------------------------------------------

TODAY = date.today()


def _synthetic_expected(people: synth.Synthetic, name: str, first_row: int) -> pd.DataFrame:
    codes = people.expected_codes
    return pd.DataFrame({
        "file": name,
        "source_row": (np.arange(len(codes)) + first_row).astype(str),
        "status": np.where(codes != "", "invalid", "valid"),
        "result_codes": codes,
    })  # fmt: skip


def test_synthetic_registers_match_their_manifests(tmp_path: Path) -> None:
    kinds = list(synth.FAULT_KINDS)
    placements = {5 + 7 * i: kind for i, kind in enumerate(kinds + kinds)}
    workbook_people = synth.generate(300, 21, faults=0.03, placements=placements, today=TODAY)
    in_listing = clerk.style_fields("alternate")  # no 证件类型 column there
    csv_kinds = [k for k in kinds if synth.FAULT_KINDS[k].field in in_listing]
    csv_people = synth.generate(200, 22, faults=dict.fromkeys(csv_kinds, 0.005), today=TODAY)
    assert not set(workbook_people.columns["sfzhm"]) & set(csv_people.columns["sfzhm"])
    workbook = clerk.write_xlsx(
        clerk.to_clerk(workbook_people.columns, "standard", seed=21),
        tmp_path / "a.xlsx",
        title="测试登记表",
        date_cells=np.arange(300) % 3 == 0,
    )
    listing = clerk.write_csv(
        clerk.to_clerk(csv_people.columns, "alternate", seed=22), tmp_path / "b.csv", encoding="utf-8-sig"
    )
    process = run_validate([workbook, listing], tmp_path / "out")
    assert process.returncode == 1, process.stderr
    expected = pd.concat(
        [_synthetic_expected(workbook_people, "a.xlsx", 4), _synthetic_expected(csv_people, "b.csv", 2)],
        ignore_index=True,
    )
    assert_rows_match(read_results(tmp_path / "out"), expected)
