"""A run faced with hostile files, signals, read-only folders and reports held open elsewhere.

Every hostile file is generated here; none is committed.
"""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from submit_helpers import make_id, resident, write_register

from pipeline import cli
from pipeline.config import DefaultValues, Settings
from pipeline.dryrun import run_validate
from pipeline.errors import EhcError, InputError
from pipeline.model import MAX_CELL_CHARS
from pipeline.reading import delimited
from pipeline.reports import write as report_write
from pipeline.reports.results_csv import MACHINE_COLUMNS

REPO_ROOT = Path(__file__).resolve().parent.parent
TODAY = date(2026, 6, 1)
HEADER = "姓名,性别,民族,出生日期,身份证号,联系电话,医疗费用支付方式"


def _settings(tmp_path: Path) -> Settings:
    return Settings(defaults=DefaultValues(org_code="455400000"), state_dir=tmp_path / "state")


def _line(serial: int, **overrides: str) -> str:
    person = resident(make_id(serial))
    values = {
        "xm": "张三", "xb": "男" if person["xb"] == "1" else "女", "mzdm": "汉族", "csrq": person["csrq"],
        "sfzhm": person["sfzhm"], "brdh": person["brdh"], "ylfyzffs": "自费",
    }  # fmt: skip
    values.update(overrides)
    return ",".join(values.values())


def _results(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("错误：")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "程序内部错误" not in err
    return lines[0]


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The command line's state (logs) under tmp_path."""
    for name in [n for n in os.environ if n.startswith("EHC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


# --- cells and lines no spreadsheet holds -----------------------------------------------------------


def test_an_uneven_row_with_a_140_kb_cell_is_read_and_its_row_faulted(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wide.csv"
    lines = [HEADER, _line(1), _line(2) + "," + "长" * 140_000, _line(3)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = cli.main(["validate", str(path), "--out", str(tmp_path / "out")])
    assert code == 1, capsys.readouterr().err
    rows = _results(tmp_path / "out")
    assert [r["source_row"] for r in rows] == ["2", "3", "4"]
    assert [r["status"] for r in rows] == ["valid", "invalid", "valid"]
    assert "超过电子表格单元格的上限 32767 个字符" in rows[1]["message"] and rows[1]["result_code"] == "10110"
    assert max(len(v) for r in rows for v in r.values()) <= MAX_CELL_CHARS
    assert (tmp_path / "out" / "results.csv").stat().st_size < 200_000


def test_a_cell_longer_than_a_spreadsheet_holds_is_cut_and_faulted(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    lines = [HEADER + ",备注", _line(1) + ",短", _line(2, xm="名" * 40_000) + ",x" * 1, _line(3) + ",y"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_validate([path], tmp_path / "out", _settings(tmp_path), today=TODAY)
    rows = _results(tmp_path / "out")
    assert [r["status"] for r in rows] == ["valid", "invalid", "valid"]
    assert len(rows[1]["xm"]) == MAX_CELL_CHARS
    assert "姓名" in rows[1]["message"] and "上限 32767 个字符" in rows[1]["message"]


def test_a_line_of_hundreds_of_megabytes_without_a_line_break_is_refused_in_one_line(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The limit is 64 MB; the same code refuses a 3 MB line once the limit is 1 MB.
    monkeypatch.setattr(delimited, "MAX_LINE_BYTES", 1 << 20)
    path = tmp_path / "endless.csv"
    with open(path, "wb") as handle:
        handle.write((HEADER + "\n" + _line(1) + "\n").encode())
        handle.write(b"x" * (3 << 20))
    code = cli.main(["validate", str(path), "--out", str(tmp_path / "out")])
    assert code == 2
    line = _one_line_error(capsys)
    assert "endless.csv" in line and "第 3 行" in line and "没有换行" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_long_line_below_the_limit_is_one_row_with_a_fault(tmp_path: Path) -> None:
    path = tmp_path / "long-line.csv"
    with open(path, "wb") as handle:
        handle.write((HEADER + "\n" + _line(1) + "\n").encode())
        handle.write(b"x" * (2 << 20))
    run_validate([path], tmp_path / "out", _settings(tmp_path), today=TODAY)
    rows = _results(tmp_path / "out")
    assert [r["status"] for r in rows] == ["valid", "invalid"]
    assert len(rows[1]["xm"]) == MAX_CELL_CHARS and "个字符" in rows[1]["message"]


# --- results.csv holds no live formula ----------------------------------------------------------------

HOSTILE = [
    '=HYPERLINK("http://example.invalid/x","点我")',
    "-2+3+cmd|' /C calc'!A0",
    "+1+1",
    "@SUM(1,1)",
    "\t=1+1",
    "\r=1+1",
]


def test_results_csv_text_that_starts_like_a_formula_gets_an_apostrophe(tmp_path: Path) -> None:
    path = tmp_path / "=formula.csv"
    lines = [HEADER + ",备注"]
    for serial, value in enumerate(HOSTILE, start=1):
        quoted = '"' + value.replace('"', '""') + '"'
        lines.append(_line(serial, xm="=1+2" if serial == 1 else "张三") + "," + quoted)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_validate([path], tmp_path / "out", _settings(tmp_path), today=TODAY)
    rows = _results(tmp_path / "out")
    assert [r["备注"] for r in rows] == ["'" + value for value in HOSTILE]
    assert rows[0]["source_file"] == "'=formula.csv" and rows[0]["xm"] == "'=1+2"
    assert rows[0]["message"].startswith("[")  # a message is text that never needs it
    for row in rows:
        for name, value in row.items():
            if name not in MACHINE_COLUMNS:
                assert value[:1] not in ("=", "+", "-", "@", "\t", "\r"), (name, value)
    assert [r["source_row"] for r in rows] == [str(n) for n in range(2, 8)]
    assert (
        rows[0]["status"] == "invalid" and rows[1]["status"] == "valid" and rows[0]["result_code"] == "10110"
    )


# --- signals ---------------------------------------------------------------------------------------


def test_sigterm_during_validate_exits_130_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(HEADER + "\n")
        line = _line(1) + "\n"
        handle.write(line * 900_000)  # long enough that the stop lands mid-run on a busy machine too
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHC_")}
    env["EHC_STATE_DIR"] = str(tmp_path / "state")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "validate", str(path), "--out", str(out)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and any(p.name.startswith(".") for p in out.iterdir()):
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be stopped"
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "已中断" in err and "Traceback" not in err
    assert not list(out.iterdir()), [p.name for p in out.iterdir()]


# --- where the reports go -----------------------------------------------------------------------------


def _register(tmp_path: Path) -> Path:
    return write_register(tmp_path / "r.csv", [resident(make_id(s)) for s in (1, 2)])


@pytest.mark.parametrize("shape", ["existing", "new", "nested", "file"])
def test_read_only_out_is_one_chinese_line_for_every_shape(
    tmp_path: Path,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
) -> None:
    register = _register(tmp_path)
    mount = tmp_path / "ro"
    mount.mkdir()
    out = {"existing": mount, "new": mount / "out", "nested": mount / "a" / "b", "file": tmp_path / "r.csv"}[
        shape
    ]
    real_mkdir = os.mkdir

    def read_only(path: object, *args: object, **kwargs: object) -> None:
        if str(path).startswith(str(mount)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        real_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "mkdir", read_only)
    code = cli.main(["validate", str(register), "--out", str(out)])
    assert code == 2
    line = _one_line_error(capsys)
    assert str(out) in line and "--out" in line
    assert ("只读" in line) if shape != "file" else ("不是文件夹" in line)
    assert register.read_text(encoding="utf-8").startswith("姓名")  # the register itself untouched


def _reports(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_reports_are_replaced_all_or_none_when_one_is_open_in_excel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    first = write_register(tmp_path / "r.csv", [resident(make_id(s)) for s in (1, 2)])
    run_validate([first], out, _settings(tmp_path), today=TODAY)
    before = _reports(out)
    second = write_register(tmp_path / "r.csv", [resident(make_id(s)) for s in (3, 4, 5)])
    real_replace = os.replace

    def excel_holds_errors_xlsx(source: object, target: object) -> None:
        if Path(str(source)).name == "errors.xlsx" or Path(str(target)).name == "errors.xlsx":
            error = PermissionError(errno.EACCES, "The process cannot access the file", str(target))
            error.winerror = 32  # type: ignore[attr-defined]
            raise error
        real_replace(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(report_write.os, "replace", excel_holds_errors_xlsx)
    with pytest.raises(EhcError) as stopped:
        run_validate([second], out, _settings(tmp_path), today=TODAY)
    message = str(stopped.value)
    assert "请先关闭 Excel/WPS 中打开的报告" in message and "errors.xlsx" in message and "\n" not in message
    assert _reports(out) == before  # every report as it was; nothing half-replaced, no temporary file


@pytest.mark.parametrize("name", ["results.xlsx", "annotated_r.xlsx"])
def test_a_folder_named_like_a_report_is_left_where_it_is_and_said(tmp_path: Path, name: str) -> None:
    # It was moved aside under a hidden name (.results.xlsx.<pid>-<thread>.old) and left there,
    # with the clerk's files in it, while the run said it had written its reports.
    out = tmp_path / "out"
    register = write_register(tmp_path / "r.csv", [resident(make_id(s)) for s in (1, 2)])
    run_validate([register], out, _settings(tmp_path), today=TODAY)
    (out / name).unlink()
    (out / name).mkdir()
    (out / name / "自己的文件.txt").write_text("留着", encoding="utf-8")
    files = lambda: {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}  # noqa: E731
    before = files()
    with pytest.raises(EhcError) as stopped:
        run_validate([register], out, _settings(tmp_path), today=TODAY)
    message = str(stopped.value)
    assert name in message and "同名的文件夹" in message and "\n" not in message
    assert (out / name / "自己的文件.txt").read_text(encoding="utf-8") == "留着"
    assert files() == before and not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_report_that_cannot_be_renamed_leaves_the_new_ones_out_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    real_replace = os.replace

    def disk_full_on_csv(source: object, target: object) -> None:
        if Path(str(target)).name == "results.csv":
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        real_replace(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(report_write.os, "replace", disk_full_on_csv)
    with pytest.raises(EhcError, match="磁盘空间不足"):
        run_validate([_register(tmp_path)], out, _settings(tmp_path), today=TODAY)
    assert not out.exists() or not list(out.iterdir())


def test_an_unreadable_register_mid_run_leaves_nothing_behind(tmp_path: Path) -> None:
    good = _register(tmp_path)
    mixed = tmp_path / "mixed.csv"
    body = "\n".join(_line(s) for s in range(1, 20_000)) + "\n"  # more than the first megabyte
    mixed.write_bytes(
        (HEADER + "\n" + body).encode("utf-8") + (_line(30_000, xm="李四") + "\n").encode("gbk")
    )
    with pytest.raises(InputError, match="第 20001 行"):
        run_validate([good, mixed], tmp_path / "out", _settings(tmp_path), today=TODAY, chunk_rows=2_000)
    assert not list((tmp_path / "out").iterdir())


def test_ctrl_c_while_the_reports_work_folder_is_set_up_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The work folder was made, then a Ctrl-C struck before the run held the writer to abort it:
    # ehc validate exited 130 with a hidden .ehc-work folder left in --out.
    real = report_write.FaultSpool

    def interrupted(work: Path, kind: str) -> object:
        if kind == "warnings":
            raise KeyboardInterrupt
        return real(work, kind)

    monkeypatch.setattr(report_write, "FaultSpool", interrupted)
    register = write_register(tmp_path / "r.csv", [resident(make_id(s)) for s in (1, 2)])
    with pytest.raises(KeyboardInterrupt):
        run_validate([register], tmp_path / "out", _settings(tmp_path), today=TODAY)
    assert list((tmp_path / "out").iterdir()) == []
