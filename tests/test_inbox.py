"""``ehc run --inbox`` against the sandbox: moves, folders, summary, duplicates, settling, locks, crashes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openpyxl
import pytest
from conftest import REPO_ROOT, SandboxHandle, make_id_number

import pipeline.inbox.run as inbox_module
from pipeline.config import DefaultValues, InboxSettings, Settings, SubmitSettings
from pipeline.errors import LockHeld
from pipeline.inbox.run import run_inbox
from pipeline.state.journal import Journal
from pipeline.state.lock import lock_path, run_lock

HEADERS = ["姓名", "性别", "民族", "身份证号码", "联系电话", "医疗费用支付方式"]


def _name(serial: int) -> str:
    """A distinct Chinese name per serial (names may hold only characters, no digits)."""
    return "居民" + "".join("零一二三四五六七八九"[int(digit)] for digit in str(serial))


def _row(serial: int, *, bad_id: bool = False) -> list[str]:
    male = serial % 2 == 0
    id_number = make_id_number(serial, male=male)
    if bad_id:  # a wrong check character
        id_number = id_number[:17] + ("0" if id_number[17] != "0" else "1")
    return [
        _name(serial),
        "男" if male else "女",
        "汉族",
        id_number,
        f"139{serial:08d}",
        "城镇职工基本医疗保险",
    ]


def write_xlsx(path: Path, serials: range | list[int], bad: tuple[int, ...] = ()) -> Path:
    """A register as a centre sends it: Chinese headers, one row per resident."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(HEADERS)
    for serial in serials:
        sheet.append(_row(serial, bad_id=serial in bad))
    book.save(path)
    return path


def write_csv(path: Path, serials: range | list[int], bad: tuple[int, ...] = ()) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        for serial in serials:
            writer.writerow(_row(serial, bad_id=serial in bad))
    return path


@pytest.fixture
def settings(sandbox: SandboxHandle, tmp_path: Path) -> Settings:
    return Settings(
        platform=sandbox.settings(),
        submit=SubmitSettings(rate=0, concurrency=4),
        defaults=DefaultValues(org_code="455400000", dzsf="广东省", dzs="佛山市"),
        inbox=InboxSettings(settle_seconds=0),
        state_dir=tmp_path / "state",
    )


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def _calls(sandbox: SandboxHandle) -> int:
    """Every request the sandbox received from our app, whatever the method."""
    return len(sandbox.arrivals())


def _day(out: Path) -> Path:
    (day,) = [p for p in out.iterdir() if p.is_dir()]
    return day


def test_run_over_several_files(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    write_xlsx(inbox / "禅城区.xlsx", range(0, 3))
    write_csv(inbox / "南海区.csv", range(3, 6), bad=(5,))
    (inbox / "broken.xlsx").write_text("这不是 Excel 文件", encoding="utf-8")
    (inbox / "说明.pdf").write_bytes(b"%PDF-1.4")
    (inbox / "~$禅城区.xlsx").write_bytes(b"lock")
    (inbox / ".partial.csv").write_text("姓名\n")
    (inbox / "processed").mkdir()
    write_xlsx(inbox / "processed" / "old.xlsx", range(100, 102))

    result = run_inbox(inbox, out, settings)

    assert result.exit_code == 1  # one invalid row, one unreadable file
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == [
        "old.xlsx",
        "南海区.csv",
        "禅城区.xlsx",
    ]
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == ["broken.xlsx", "broken.xlsx.reason.txt"]
    reason = (inbox / "failed" / "broken.xlsx.reason.txt").read_text(encoding="utf-8")
    assert "broken.xlsx" in reason and "原因：" in reason and len(reason.splitlines()[2]) > 5
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [
        ".partial.csv",
        "~$禅城区.xlsx",
        "说明.pdf",
    ]

    day = _day(out)
    assert day.name == result.started_at.strftime("%Y-%m-%d")
    for stem in ("禅城区", "南海区"):
        assert {"results.xlsx", "errors.xlsx", "results.csv"} <= {p.name for p in (day / stem).iterdir()}
    assert not (day / "broken").exists()
    assert sandbox.residents() == 5 and sandbox.count("syncCardInfo") == 5

    summary = json.loads((day / "summary.json").read_text(encoding="utf-8"))
    assert summary == json.loads((out / "last-summary.json").read_text(encoding="utf-8"))
    assert summary["mode"] == "submit" and summary["exit_code"] == 1
    assert datetime.fromisoformat(summary["finished_at"]) >= datetime.fromisoformat(summary["started_at"])
    assert summary["duration_seconds"] >= 0
    files = {f["name"]: f for f in summary["files"]}
    assert {name: f["status"] for name, f in files.items()} == {
        "broken.xlsx": "failed",
        "南海区.csv": "processed",
        "禅城区.xlsx": "processed",
    }
    assert files["禅城区.xlsx"]["statuses"] == {"enrolled": 3}
    assert files["南海区.csv"]["statuses"] == {"enrolled": 2, "invalid": 1}
    assert files["南海区.csv"]["result_codes"] == {"10111": 1}
    assert files["南海区.csv"]["problems"] == {"10111 身份证号码不正确": 1}
    assert len(files["禅城区.xlsx"]["sha256"]) == 64
    assert files["broken.xlsx"]["message"] and files["broken.xlsx"]["moved_to"].endswith("broken.xlsx")
    totals = summary["totals"]
    assert totals["files"] == {"failed": 1, "processed": 2} and totals["rows"] == 6
    assert totals["statuses"] == {"enrolled": 5, "invalid": 1} and totals["result_codes"] == {"10111": 1}
    assert summary["ignored"] == ["说明.pdf"]

    with Journal(settings.state_dir / "journal.sqlite") as journal:
        assert journal.file_seen(files["禅城区.xlsx"]["sha256"])
        assert not journal.file_seen(files["broken.xlsx"]["sha256"])  # may be put back after a fix
    assert "禅城区.xlsx" in result.text and "退出码 1" in result.text
    assert "返回代码：10111 身份证号码不正确 ×1" in result.text


def test_second_run_processes_nothing_and_sends_nothing(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    write_xlsx(inbox / "a.xlsx", range(0, 4))
    first = run_inbox(inbox, out, settings)
    assert first.exit_code == 0
    calls = _calls(sandbox)
    day_summary = (_day(out) / "summary.json").read_text(encoding="utf-8")

    second = run_inbox(inbox, out, settings)

    assert second.exit_code == 0 and second.files == []
    assert _calls(sandbox) == calls
    assert "没有新的登记表" in second.text
    assert (_day(out) / "summary.json").read_text(encoding="utf-8") == day_summary  # last night's trail kept
    last = json.loads((out / "last-summary.json").read_text(encoding="utf-8"))
    assert last["files"] == [] and last["started_at"] == second.started_at.isoformat(timespec="seconds")


def test_copy_or_renamed_file_is_not_processed_twice(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    write_xlsx(inbox / "a.xlsx", range(0, 3))
    shutil.copy(inbox / "a.xlsx", inbox / "b-same-content.xlsx")  # the same file twice in one run
    first = run_inbox(inbox, out, settings)
    assert [(f.name, f.status) for f in first.files] == [
        ("a.xlsx", "processed"),
        ("b-same-content.xlsx", "duplicate"),
    ]
    assert sandbox.count("syncCardInfo") == 3
    calls = _calls(sandbox)

    shutil.copy(inbox / "processed" / "a.xlsx", inbox / "a (renamed).xlsx")  # and again on another night
    second = run_inbox(inbox, out, settings)

    assert [(f.name, f.status) for f in second.files] == [("a (renamed).xlsx", "duplicate")]
    assert second.exit_code == 0 and _calls(sandbox) == calls
    assert (inbox / "processed" / "a (renamed).xlsx").exists()
    assert not (_day(out) / "a (renamed)").exists()


def test_same_name_new_content_gets_its_own_folder(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    write_xlsx(inbox / "register.xlsx", range(0, 2))
    run_inbox(inbox, out, settings)
    write_xlsx(inbox / "register.xlsx", range(2, 4))
    result = run_inbox(inbox, out, settings)

    assert [f.status for f in result.files] == ["processed"]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["register-2.xlsx", "register.xlsx"]
    assert (_day(out) / "register-2" / "results.csv").exists()
    assert sandbox.residents() == 4
    assert sorted(p.name for p in _day(out).glob("summary*.json"))[0].startswith("summary-")  # earlier kept


def test_file_still_being_written_is_left_for_next_run(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = replace(settings, inbox=InboxSettings(settle_seconds=1))
    hour_ago = (datetime.now() - timedelta(hours=1)).timestamp()
    write_xlsx(inbox / "settled.xlsx", range(0, 2))
    growing = write_csv(inbox / "growing.csv", range(4, 6))
    time.sleep(1.5)
    write_xlsx(inbox / "fresh.xlsx", range(2, 4))  # modified just now
    copied = write_csv(inbox / "copied.csv", range(7, 9))  # copied just now with cp -p: an old mtime
    os.utime(copied, (hour_ago, hour_ago))

    def still_copying(seconds: float) -> None:  # the copy goes on during the re-check
        with open(growing, "a", encoding="utf-8") as handle:
            handle.write(",".join(_row(6)) + "\n")

    monkeypatch.setattr(inbox_module, "time", SimpleNamespace(sleep=still_copying, monotonic=time.monotonic))
    result = run_inbox(inbox, tmp_path / "out", settings, now=datetime.now())

    assert {f.name: f.status for f in result.files} == {
        "settled.xlsx": "processed",
        "fresh.xlsx": "waiting",
        "growing.csv": "waiting",
        "copied.csv": "waiting",  # its inode changed just now, whatever its mtime says
    }
    assert (inbox / "fresh.xlsx").exists() and (inbox / "growing.csv").exists()
    assert result.exit_code == 0 and sandbox.residents() == 2


def test_dry_run_sends_moves_and_records_nothing(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    write_xlsx(inbox / "a.xlsx", range(0, 3), bad=(1,))
    (inbox / "broken.csv").write_bytes("姓名,身份证号码\n".encode("utf-16"))
    with run_lock(settings.state_dir):  # a dry run never waits for, nor blocks, the real run
        result = run_inbox(inbox, out, settings, dry_run=True)

    assert result.exit_code == 1
    assert {f.name: f.status for f in result.files} == {"a.xlsx": "processed", "broken.csv": "failed"}
    assert result.files[0].statuses == {"valid": 2, "invalid": 1}
    assert sorted(p.name for p in inbox.iterdir()) == ["a.xlsx", "broken.csv"]
    assert _calls(sandbox) == 0
    assert (_day(out) / "a" / "results.xlsx").exists() and _day(out).name.endswith("-dry-run")
    assert json.loads((_day(out) / "summary.json").read_text(encoding="utf-8"))["mode"] == "dry_run"
    with Journal(settings.state_dir / "journal.sqlite") as journal:
        assert journal.files() == []

    real = run_inbox(inbox, out, settings)  # the dry run did not mark anything as seen
    assert {f.name: f.status for f in real.files} == {"a.xlsx": "processed", "broken.csv": "failed"}
    assert sandbox.residents() == 2
    # The dry run's folders and summary keep names of their own: the real run's are never taken over.
    days = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(days) == 2 and days[1] == days[0] + "-dry-run"
    assert (out / days[0] / "a" / "results.xlsx").exists() and not (out / days[0] / "a-2").exists()
    write_xlsx(inbox / "c.xlsx", range(5, 7))
    run_inbox(inbox, out, settings, dry_run=True)  # a check by hand after the night's run
    assert json.loads((out / "last-summary.json").read_text(encoding="utf-8"))["mode"] == "submit"
    assert json.loads((out / "last-dry-run-summary.json").read_text(encoding="utf-8"))["mode"] == "dry_run"


def test_a_large_inbox_writes_its_summary_under_way_every_few_seconds_not_before_every_file(
    settings: Settings, inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each summary lists every file: written before each of thousands, they added up to gigabytes.
    for n in range(6):
        write_csv(inbox / f"r{n}.csv", range(n, n + 1))
    written: list[bool] = []
    real_write = inbox_module.write_summary

    def counted(result: Any, day_dir: Path) -> Path:
        written.append(result.under_way)
        return real_write(result, day_dir)

    monkeypatch.setattr(inbox_module, "write_summary", counted)
    monkeypatch.setattr(inbox_module, "PROGRESS_EVERY_FILE_UP_TO", 3)
    run_inbox(inbox, tmp_path / "out", settings, dry_run=True)
    assert written == [True, False]  # the first under way, then (all within seconds) only the last
    monkeypatch.setattr(inbox_module, "PROGRESS_EVERY_FILE_UP_TO", 200)
    written.clear()
    for n in range(3):
        write_csv(inbox / f"s{n}.csv", range(n, n + 1))
    run_inbox(inbox, tmp_path / "out2", settings, dry_run=True)
    assert written.count(True) == 9 and written[-1] is False  # a small inbox: before every file


def test_lock_held_by_another_run(settings: Settings, inbox: Path, tmp_path: Path) -> None:
    write_xlsx(inbox / "a.xlsx", range(0, 2))
    with run_lock(settings.state_dir) as held, pytest.raises(LockHeld) as refused:
        run_inbox(inbox, tmp_path / "out", settings)
    assert refused.value.exit_code == 3
    assert f"进程 {os.getpid()}" in str(refused.value) and held.info.started_at in str(refused.value)
    assert (inbox / "a.xlsx").exists() and not (tmp_path / "out").exists()


def test_stale_lock_of_a_crashed_run_is_taken_over(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    settings.state_dir.mkdir(parents=True)
    # What a killed run leaves: its record in the lock file, the flock itself released by the kernel.
    lock_path(settings.state_dir).write_text(
        json.dumps(
            {"pid": 999999, "host": "h", "started_at": "2026-11-28T01:30:00+08:00", "command": "ehc run"}
        )
    )
    write_xlsx(inbox / "a.xlsx", range(0, 2))
    result = run_inbox(inbox, tmp_path / "out", settings)
    assert result.exit_code == 0 and sandbox.residents() == 2
    assert result.taken_over is not None and "999999" in result.taken_over
    assert (
        "999999" in json.loads((tmp_path / "out" / "last-summary.json").read_text())["stale_lock_taken_over"]
    )
    assert lock_path(settings.state_dir).read_text() == ""  # and released cleanly


def test_fatal_platform_fault_stops_the_run_and_keeps_the_files(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    write_xlsx(inbox / "a.xlsx", range(0, 2))
    write_xlsx(inbox / "b.xlsx", range(2, 4))
    wrong = replace(settings, platform=sandbox.settings(app_secret="0" * 32))
    result = run_inbox(inbox, out, wrong)

    assert result.exit_code == 2
    assert [(f.name, f.status) for f in result.files] == [("a.xlsx", "error"), ("b.xlsx", "not_reached")]
    assert "EHC_APP_SECRET" in result.files[0].message
    assert (inbox / "a.xlsx").exists() and (inbox / "b.xlsx").exists()
    assert json.loads((_day(out) / "summary.json").read_text())["exit_code"] == 2

    fixed = run_inbox(inbox, out, settings)  # once the secret is right, both go through
    assert [f.status for f in fixed.files] == ["processed", "processed"] and fixed.exit_code == 0
    assert sandbox.residents() == 4


# -- the command line, in separate processes ------------------------------------------------


def _config(sandbox: SandboxHandle, tmp_path: Path, *, rate: float = 0, concurrency: int = 4) -> Path:
    path = tmp_path / "ehc.toml"
    path.write_text(
        f"""
[platform]
base_url = "{sandbox.base_url}"
app_id = "{sandbox.app_id}"
app_secret = "{sandbox.app_secret}"
max_attempts = 3
[submit]
rate = {rate}
concurrency = {concurrency}
[defaults]
org_code = "455400000"
dzsf = "广东省"
dzs = "佛山市"
[inbox]
settle_seconds = 0
[paths]
state_dir = "{tmp_path / "state"}"
""",
        encoding="utf-8",
    )
    return path


def _ehc(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", *map(str, args)]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHC_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


@pytest.mark.slow
def test_command_line_second_concurrent_run_exits_3(
    sandbox: SandboxHandle, inbox: Path, tmp_path: Path
) -> None:
    config = _config(sandbox, tmp_path)
    write_xlsx(inbox / "a.xlsx", range(0, 2))
    holder_code = (
        "import sys, time; from pathlib import Path; from pipeline.state.lock import run_lock\n"
        "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(tmp_path / "state")],
        cwd=REPO_ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        second = subprocess.run(
            _ehc("run", "--inbox", inbox, "--out", tmp_path / "out", "--config", config),
            cwd=REPO_ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 3, second.stderr
    assert f"进程 {holder.pid}" in second.stderr
    assert (inbox / "a.xlsx").exists() and _calls(sandbox) == 0


@pytest.mark.slow
@pytest.mark.sandbox(latency_ms=40)
def test_command_line_killed_mid_run_then_resumed(
    sandbox: SandboxHandle, inbox: Path, tmp_path: Path
) -> None:
    residents, small = 60, 5
    config = _config(sandbox, tmp_path, rate=20, concurrency=2)
    write_xlsx(inbox / "a-small.xlsx", range(400, 400 + small))  # finished before the kill
    write_xlsx(inbox / "big.xlsx", range(0, residents))
    out = tmp_path / "out"
    command = _ehc("run", "--inbox", inbox, "--out", out, "--config", config)
    crashed = subprocess.Popen(
        command, cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while sandbox.residents() < small + 10 and crashed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    crashed.send_signal(signal.SIGKILL)
    crashed.wait()
    enrolled_before = sandbox.residents()
    assert small + 10 <= enrolled_before < small + residents, "the run should have been killed mid-file"
    assert (inbox / "big.xlsx").exists()  # not moved: the file was not finished
    # The killed run's summary names the file it finished and the one it died in, and says it did not end.
    [day] = [d for d in out.iterdir() if d.is_dir()]
    killed = json.loads((day / "summary.json").read_text(encoding="utf-8"))
    assert killed["complete"] is False and killed["exit_code"] is None
    assert [(f["name"], f["status"]) for f in killed["files"]] == [
        ("a-small.xlsx", "processed"), ("big.xlsx", "unfinished")
    ]
    assert killed["files"][0]["statuses"] == {"enrolled": small}
    assert json.loads((out / "last-summary.json").read_text(encoding="utf-8")) == killed
    with Journal(tmp_path / "state" / "journal.sqlite") as journal:
        unknown = journal.counts().get("sending", 0)  # calls in flight when the process died
        assert sorted(bool(record.finished_at) for record in journal.files()) == [False, True]  # big: not

    resumed = subprocess.run(command, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=180)

    assert resumed.returncode == 0, resumed.stderr
    assert sandbox.residents() == small + residents
    answers = sandbox.query(
        "SELECT result_code, count(*) FROM requests WHERE method = 'syncCardInfo' GROUP BY result_code"
    )
    by_code = dict(answers)
    assert by_code.get(10000) == small + residents  # each resident enrolled exactly once
    assert by_code.get(10115, 0) <= unknown  # only calls whose outcome was unknown were sent again
    assert (inbox / "processed" / "big.xlsx").exists()
    summary = json.loads((out / "last-summary.json").read_text(encoding="utf-8"))
    (big,) = summary["files"]
    assert big["rows"] == residents
    assert big["statuses"].get("enrolled", 0) + big["statuses"].get("already_enrolled", 0) == residents
    assert summary["stale_lock_taken_over"] is not None
    assert Path(big["out_dir"]).name == "big-2"  # the killed run's partial folder is left as it was
    assert summary["complete"] is True
    kept = [json.loads(p.read_text(encoding="utf-8")) for p in day.glob("summary-*.json")]
    assert kept == [killed]  # the killed run's summary, kept beside the one that finished the work


@pytest.mark.slow
@pytest.mark.sandbox(latency_ms=40)
def test_command_line_sigterm_writes_reports_and_summary(
    sandbox: SandboxHandle, inbox: Path, tmp_path: Path
) -> None:
    config = _config(sandbox, tmp_path, rate=20, concurrency=2)
    write_xlsx(inbox / "big.xlsx", range(0, 60))
    out = tmp_path / "out"
    command = _ehc("run", "--inbox", inbox, "--out", out, "--config", config)
    stopped = subprocess.Popen(
        command, cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while sandbox.residents() < 5 and stopped.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    stopped.send_signal(signal.SIGTERM)  # what `systemctl stop` sends
    stopped.communicate(timeout=60)

    assert stopped.returncode == 130
    assert (inbox / "big.xlsx").exists()  # taken again by the next run
    summary = json.loads((out / "last-summary.json").read_text(encoding="utf-8"))
    assert summary["exit_code"] == 130 and summary["files"][0]["status"] == "interrupted"
    assert (Path(summary["files"][0]["out_dir"]) / "results.csv").exists()  # the reports of what was done
    assert sandbox.residents() < 60


def test_the_summary_names_each_problem_as_ehc_validate_does(tmp_path: Path) -> None:
    """10110 is named by its field (联系电话不正确, 姓名不正确), not by the platform's 参数错误."""
    from pipeline.inbox.summary import InboxFile, InboxResult, format_run

    counts = {
        "rows": 9, "by_status": {"valid": 5, "invalid": 4}, "by_code": {"10110": 3, "10123": 1},
        "warnings_by_code": {"10133": 2},
        "problems": [
            {"code": code, "field": field, "warning": warning, "faults": rows, "rows": rows, "title": title}
            for code, field, warning, rows, title in [
                (10110, "brdh", False, 2, "联系电话不正确"), (10110, "xm", False, 1, "姓名不正确"),
                (10123, "", False, 1, "民族代码不正确"), (10133, "xldm", True, 2, "文化程度已归类"),
            ]
        ],
    }  # fmt: skip
    named = InboxFile("a.csv", "processed")
    named.take_counts(counts)
    older = InboxFile("b.csv", "processed", rows=1, statuses={"invalid": 1}, result_codes={"10131": 1})
    moment = datetime(2026, 12, 7, 1, 30)
    result = InboxResult(
        exit_code=1, summary="", inbox=tmp_path, out_root=tmp_path, dry_run=True, started_at=moment,
        finished_at=moment, files=[named, older], ignored=[],
    )  # fmt: skip
    assert named.problems == {"10110 联系电话不正确": 2, "10110 姓名不正确": 1, "10123 民族代码不正确": 1}
    assert result.as_json()["totals"]["problems"] == named.problems
    line = next(line for line in format_run(result).splitlines() if line.startswith("返回代码："))
    assert line == (
        "返回代码：10110 联系电话不正确 ×2；10110 姓名不正确 ×1；10123 民族代码不正确 ×1；"
        "10131 医疗费用支付方式不正确 ×1"  # a file counted without problems: the platform's phrase
    )


def test_a_register_replaced_while_it_is_sent_stays_for_the_next_run(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    write_csv(inbox / "a.csv", range(0, 3))
    original = inbox_module._Run._submit

    def and_a_new_version_arrives(run: Any, path: Path, out_dir: Path) -> Any:
        counts = original(run, path, out_dir)
        newer = write_csv(inbox / ".a.csv.part", range(10, 13))  # dropped safely: hidden name, then renamed
        os.replace(newer, path)
        return counts

    monkeypatch.setattr(inbox_module._Run, "_submit", and_a_new_version_arrives)
    first = run_inbox(inbox, out, settings)
    monkeypatch.undo()
    assert [f.status for f in first.files] == ["processed"] and (inbox / "a.csv").exists()
    assert sandbox.residents() == 3
    second = run_inbox(inbox, out, settings)  # the new version, not moved away unread
    assert [f.status for f in second.files] == ["processed"] and not (inbox / "a.csv").exists()
    assert sandbox.residents() == 6


def test_a_register_dated_in_the_future_is_not_left_waiting_for_ever(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    settings = replace(settings, inbox=InboxSettings(settle_seconds=60))
    path = write_xlsx(inbox / "ahead.xlsx", range(0, 2))
    later = datetime(2099, 1, 1).timestamp()  # the clock of the PC that made it was wrong
    os.utime(path, (later, later))
    result = run_inbox(inbox, tmp_path / "out", settings)
    assert [f.status for f in result.files] == ["processed"] and sandbox.residents() == 2


def test_a_register_named_like_the_summary_keeps_its_own_folder(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    write_csv(inbox / "summary.json.csv", range(0, 2))
    result = run_inbox(inbox, out, settings)
    (outcome,) = result.files
    assert outcome.status == "processed" and outcome.out_dir is not None
    assert (outcome.out_dir / "results.csv").is_file()
    summary = _day(out) / "summary.json"
    assert summary.is_file() and json.loads(summary.read_text(encoding="utf-8"))["files"]


def test_a_register_with_a_long_name_gets_its_reports_and_stops_nobody(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    long = "禅城区社区居民登记表" * 8  # 240 bytes: a legal name, too long with a prefix or a suffix added
    write_csv(inbox / f"{long}.csv", range(0, 2))
    (inbox / f"{long}X.xlsx").write_bytes(b"not a register")
    write_csv(inbox / "b.csv", range(2, 4))
    result = run_inbox(inbox, tmp_path / "out", settings)
    statuses = {f.name: f.status for f in result.files}
    assert statuses == {f"{long}.csv": "processed", f"{long}X.xlsx": "failed", "b.csv": "processed"}
    assert result.exit_code == 1 and sandbox.residents() == 4
    (folder,) = [o.out_dir for o in result.files if o.name == f"{long}.csv"]
    assert folder is not None and any(p.name.startswith("annotated_") for p in folder.iterdir())
    reasons = list((inbox / "failed").glob("*.reason.txt"))
    assert len(reasons) == 1 and all(len(p.name.encode()) <= 255 for p in (inbox / "failed").iterdir())


@pytest.mark.parametrize("all_sheets", [False, True])
def test_a_workbook_of_several_register_sheets_is_read_whole_when_asked(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path, all_sheets: bool
) -> None:
    book = openpyxl.Workbook()
    for number, (title, serials) in enumerate((("一月", range(0, 2)), ("二月", range(2, 5)))):
        sheet = book.active if number == 0 else book.create_sheet(title)
        sheet.title = title
        sheet.append(HEADERS)
        for serial in serials:
            sheet.append(_row(serial))
    book.save(inbox / "months.xlsx")
    settings = replace(settings, inbox=InboxSettings(settle_seconds=0, all_sheets=all_sheets))
    result = run_inbox(inbox, tmp_path / "out", settings)
    assert [f.status for f in result.files] == ["processed"]
    assert sandbox.residents() == (5 if all_sheets else 2)


@pytest.mark.skipif(os.name == "nt", reason="Windows file names are always text")
def test_a_register_whose_name_is_not_utf8_is_renamed_and_stops_nobody(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    settings = replace(settings, inbox=InboxSettings(settle_seconds=1))
    gbk = os.fsdecode(os.path.join(os.fsencode(inbox), "居民名单".encode("gbk") + b".csv"))
    write_csv(Path(gbk), range(0, 2))  # unzipped on a Chinese Windows PC
    write_csv(inbox / "b.csv", range(2, 4))
    (inbox / os.fsdecode("说明".encode("gbk") + b".doc")).write_text("x")
    time.sleep(1.2)  # settled: the rename must not make it look freshly written
    dry = run_inbox(inbox, tmp_path / "dry", settings, dry_run=True)
    odd = [(f.status, "居民名单.csv" in f.message) for f in dry.files if f.name != "b.csv"]
    assert odd == [("waiting", True)]
    assert Path(gbk).exists()  # a dry run renames nothing
    result = run_inbox(inbox, tmp_path / "out", settings)
    assert {f.name: f.status for f in result.files} == {"b.csv": "processed", "居民名单.csv": "processed"}
    assert result.exit_code == 0 and sandbox.residents() == 4
    assert (inbox / "processed" / "居民名单.csv").exists()
    summary = json.loads((tmp_path / "out" / "last-summary.json").read_text(encoding="utf-8"))
    assert len(summary["ignored"]) == 1  # the .doc with its odd name, written out


def test_a_file_that_cannot_be_moved_out_of_the_inbox_does_not_end_the_run_all_well(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    write_csv(inbox / "a.csv", range(0, 2))
    (inbox / "bad.xlsx").write_bytes(b"not a register")
    (inbox / "processed").write_text("a file where the folder should be")
    (inbox / "failed").write_text("likewise")
    result = run_inbox(inbox, tmp_path / "out", settings)
    by_name = {f.name: f for f in result.files}
    assert by_name["a.csv"].status == "processed" and sandbox.residents() == 2
    assert all("无法移出收件目录" in by_name[name].message for name in ("a.csv", "bad.xlsx"))
    assert result.exit_code == 2  # the operator must see it: the file stays and is met again every night
    assert (inbox / "a.csv").exists()


def test_a_file_name_with_a_line_break_cannot_forge_a_line_of_the_run_summary(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    from pipeline.inbox.summary import format_run

    write_csv(inbox / "a\n02:00:00 收件箱运行结束，退出码 0\x1b[2J.csv", range(0, 2))
    text = format_run(run_inbox(inbox, tmp_path / "out", settings))
    assert "\x1b" not in text and not any(line.startswith("02:00:00") for line in text.splitlines())


def test_a_missing_app_secret_stops_the_run_before_any_file_is_touched(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    from pipeline.errors import ConfigError

    write_csv(inbox / "a.csv", range(0, 2))
    unset = replace(settings, platform=replace(settings.platform, app_secret=""))
    with pytest.raises(ConfigError) as stopped:
        run_inbox(inbox, tmp_path / "out", unset)
    assert "EHC_APP_SECRET" in stopped.value.message and stopped.value.exit_code == 2
    assert (inbox / "a.csv").exists() and not (tmp_path / "out").exists()  # no reports blamed on a.csv
    assert not (tmp_path / "state" / "journal.sqlite").exists() and _calls(sandbox) == 0
    dry = run_inbox(inbox, tmp_path / "dry", unset, dry_run=True)  # a dry run needs no secret
    assert [f.status for f in dry.files] == ["processed"]


def test_a_file_done_but_not_moved_is_said_so_in_the_printed_summary_and_the_run_not_said_stopped(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    from pipeline.inbox.summary import format_run

    write_csv(inbox / "a.csv", range(0, 2))
    write_csv(inbox / "b.csv", range(2, 4))
    (inbox / "processed").write_text("a file where the folder should be")
    result = run_inbox(inbox, tmp_path / "out", settings)
    assert result.exit_code == 2 and [f.status for f in result.files] == ["processed", "processed"]
    text = format_run(result)
    assert text.count("注意：已处理，但文件无法移出收件目录") == 2  # was shown only in summary.json
    assert "运行已停止" not in text and "无法移出收件目录" in text.splitlines()[-1]
    summary = json.loads((tmp_path / "out" / "last-summary.json").read_text(encoding="utf-8"))
    assert summary["exit_meaning"] == text.splitlines()[-1].split("：", 1)[1]


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
def test_processed_and_failed_as_links_out_of_the_inbox_are_not_followed(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    """Whoever drops files into the inbox can leave such links: every file would land where they point."""
    elsewhere = {name: tmp_path / f"elsewhere-{name}" for name in ("processed", "failed")}
    for name, target in elsewhere.items():
        target.mkdir()
        (inbox / name).symlink_to(target)
    write_csv(inbox / "a.csv", range(0, 2))
    (inbox / "bad.xlsx").write_bytes(b"not a register")
    result = run_inbox(inbox, tmp_path / "out", settings)
    assert [list(target.iterdir()) for target in elsewhere.values()] == [[], []]
    assert (inbox / "a.csv").exists() and (inbox / "bad.xlsx").exists()
    assert result.exit_code == 2 and all("符号链接" in f.message for f in result.files)
    assert sandbox.residents() == 2


def test_the_reason_a_register_could_not_be_read_gives_advice_the_nightly_run_can_follow(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    """ehc run takes no --mapping and no --sheet: the configuration's [columns] does what --mapping does."""
    (inbox / "noid.csv").write_text("姓名,电话\n王五,13912340000\n", encoding="utf-8")
    book = openpyxl.Workbook()
    book.active.title = "说明"
    book.active.append(["填表说明"])
    hidden = book.create_sheet("登记表")
    hidden.append(HEADERS)
    hidden.append(_row(1))
    hidden.sheet_state = "hidden"
    book.save(inbox / "hidden.xlsx")
    result = run_inbox(inbox, tmp_path / "out", settings)
    assert [f.status for f in result.files] == ["failed", "failed"]
    reasons = [p.read_text(encoding="utf-8") for p in sorted((inbox / "failed").glob("*.reason.txt"))]
    for text in [*reasons, *(f.message for f in result.files)]:
        assert "--mapping" not in text and "--sheet" not in text, text
    assert "[columns]" in result.files[1].message and "取消隐藏" in result.files[0].message


@pytest.mark.parametrize("given", [".", "./", "../inbox"])
def test_the_default_results_folder_is_beside_the_inbox_however_it_is_named(
    tmp_path: Path, inbox: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    from pipeline import cli

    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(inbox)
    assert cli.main(["run", "--inbox", given, "--dry-run"]) == 0
    assert (tmp_path / "inbox-results" / "last-dry-run-summary.json").is_file()
    assert [p.name for p in inbox.iterdir()] == []  # not "-results" inside the inbox


def test_a_register_replaced_before_it_is_read_leaves_its_first_version_to_be_taken_in(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashed, then replaced (the clerk saved it again) before it was read: what was sent is the new version,
    so the first one's content is not recorded as done; dropped in again, it is not a duplicate."""
    out = tmp_path / "out"
    first = write_csv(tmp_path / "first.csv", range(0, 3))
    shutil.copy(first, inbox / "a.csv")
    original = inbox_module._Run._submit

    def replaced_before_reading(run: Any, path: Path, out_dir: Path) -> Any:
        os.replace(write_csv(inbox / ".a.csv.part", range(10, 13)), path)
        return original(run, path, out_dir)

    monkeypatch.setattr(inbox_module._Run, "_submit", replaced_before_reading)
    run_inbox(inbox, out, settings)
    monkeypatch.undo()
    assert sandbox.residents() == 3  # the new version's
    run_inbox(inbox, out, settings)  # the new version again: moved, nobody sent twice
    shutil.copy(first, inbox / "a-again.csv")
    again = run_inbox(inbox, out, settings)
    assert [f.status for f in again.files] == ["processed"]  # was "duplicate": its residents never sent
    assert sandbox.residents() == 6


def test_rows_that_failed_to_send_are_told_how_to_be_sent_again_since_the_next_run_will_not(
    settings: Settings, inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their messages say running the same command sends them again: the nightly run takes the processed
    file in again only as a duplicate (docs/operations.md: ehc submit the file instead)."""
    from pipeline.inbox.summary import format_run

    write_csv(inbox / "a.csv", range(0, 3))
    counts = {"rows": 3, "by_status": {"enrolled": 1, "failed": 2}, "by_code": {}, "warnings_by_code": {},
              "problems": []}  # fmt: skip
    monkeypatch.setattr(inbox_module._Run, "_submit", lambda run, path, out_dir: counts)
    result = run_inbox(inbox, tmp_path / "out", settings)
    (outcome,) = result.files
    assert outcome.status == "processed" and outcome.moved_to == inbox / "processed" / "a.csv"
    assert "2 行发送失败" in outcome.message and f"ehc submit {outcome.moved_to}" in outcome.message
    assert f"注意：{outcome.message}" in format_run(result)


def test_the_reports_of_rows_that_failed_to_send_tell_what_is_true_of_the_nightly_run(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    """The rows' own message in results.csv / results.xlsx (and the note in errors.xlsx) said that
    running the same command sends them again: the nightly run has moved the file to processed/ and
    takes it again only as a duplicate. They now point to ehc submit; ehc submit's rows keep theirs."""
    settings = replace(settings, platform=replace(settings.platform, max_attempts=1),
                       submit=SubmitSettings(rate=0, concurrency=1))  # fmt: skip
    write_csv(inbox / "a.csv", range(0, 3))
    sandbox.inject("http500", count=1, methods=("syncCardInfo",))
    result = run_inbox(inbox, tmp_path / "out", settings)
    (outcome,) = result.files
    assert outcome.statuses.get("failed") == 1 and outcome.out_dir is not None
    with open(outcome.out_dir / "results.csv", encoding="utf-8-sig", newline="") as handle:
        texts = [" ".join(row) for row in csv.reader(handle)]
    (failed,) = [text for text in texts if "failed" in text or "发送失败" in text]
    assert "请用 ehc submit 提交该文件重新发送" in failed and "再次运行同一命令" not in failed
    book = openpyxl.load_workbook(outcome.out_dir / "results.xlsx", read_only=True)
    cells = " ".join(str(cell) for sheet in book.worksheets for row in sheet.iter_rows(values_only=True)
                     for cell in row)  # fmt: skip
    assert "请用 ehc submit 提交该文件重新发送" in cells and "再次运行同一命令" not in cells
    errors = openpyxl.load_workbook(outcome.out_dir / "errors.xlsx", read_only=True)
    notes = " ".join(str(cell) for row in errors["汇总"].iter_rows(values_only=True) for cell in row)
    assert "1 行发送失败" in notes and "再次运行同一命令" not in notes


def test_a_run_whose_summary_file_cannot_be_written_does_not_end_all_well(
    settings: Settings, inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Monitoring reads last-summary.json: left unwritten (here a folder of that name), it kept reading
    an earlier run's while the run logged an error and exited 0."""
    from pipeline.inbox.summary import format_run

    out = tmp_path / "out"
    (out / "last-summary.json").mkdir(parents=True)
    result = run_inbox(inbox, out, settings)  # nothing to do: only last-summary.json is written
    assert result.exit_code == 2 and result.summary_path is None
    text = format_run(result)
    assert "无法写出运行汇总" in text and "last-summary.json" in text
    assert "汇总文件无法写出" in text.splitlines()[-1]

    # The day's summary.json unwritable: last-summary.json is still written, and says the run's exit 2.
    write_csv(inbox / "a.csv", range(0, 3))
    counts = {"rows": 3, "by_status": {"enrolled": 3}, "by_code": {}, "warnings_by_code": {}, "problems": []}
    monkeypatch.setattr(inbox_module._Run, "_submit", lambda run, path, out_dir: counts)
    (out / "last-summary.json").rmdir()
    now = datetime(2026, 11, 29, 2, 0)
    (out / "2026-11-29" / "summary.json").mkdir(parents=True)
    result = run_inbox(inbox, out, settings, now=now)
    assert result.exit_code == 2 and [f.status for f in result.files] == ["processed"]
    summary = json.loads((out / "last-summary.json").read_text(encoding="utf-8"))
    assert summary["exit_code"] == 2 and "汇总文件无法写出" in summary["exit_meaning"]


def test_what_is_made_of_a_file_with_a_control_character_in_its_name_is_where_the_summary_says(
    sandbox: SandboxHandle, settings: Settings, inbox: Path, tmp_path: Path
) -> None:
    """The report folder (and the file's place in processed/) took the raw line break and escape, while
    the summary printed them written out: the path printed led nowhere, nor did its ehc submit command."""
    from pipeline.inbox.summary import format_run

    write_csv(inbox / "村\n名\x1b.csv", range(0, 2))
    (inbox / "坏\t表.xlsx").write_bytes(b"not a register")
    result = run_inbox(inbox, tmp_path / "out", settings)
    text = format_run(result)
    done, unread = sorted(result.files, key=lambda f: f.status, reverse=True)
    assert done.status == "processed" and unread.status == "failed"
    assert done.out_dir is not None and done.out_dir.name == "村\\n名\\x1b" and done.out_dir.is_dir()
    assert f"报告：{done.out_dir}" in text
    for moved in (done.moved_to, unread.moved_to):
        assert moved is not None and moved.is_file() and f"文件已移到：{moved}" in text
    assert unread.moved_to is not None and unread.moved_to.name == "坏\\t表.xlsx"
    assert unread.moved_to.with_name("坏\\t表.xlsx.reason.txt").is_file()
