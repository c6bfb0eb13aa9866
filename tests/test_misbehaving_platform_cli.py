"""A misbehaving platform, seen through the command line: ``python -m pipeline ...`` in a subprocess.

The sandbox runs in-process where a fault must be injected at a chosen moment,
and as its own process where it must die (SIGKILL) or draw faults itself.
"""

from __future__ import annotations

import csv
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import openpyxl
import pytest
from conftest import SandboxHandle, make_resident
from submit_helpers import write_register

REPO_ROOT = Path(__file__).resolve().parent.parent
ORG_CODE = "455400000"


class Cli:
    """Runs ``ehc`` against one sandbox with its own state directory and a quick configuration."""

    def __init__(self, sandbox: SandboxHandle, tmp_path: Path, name: str = "cli", **platform: float) -> None:
        self.home = tmp_path / name
        self.home.mkdir(parents=True, exist_ok=True)
        settings = {"max_attempts": 5, "max_retry_seconds": 20, "connect_timeout": 1, "read_timeout": 5}
        settings.update(platform)
        self.config = self.home / "ehc.toml"
        lines = ["[platform]", *(f"{key} = {value}" for key, value in settings.items())]
        lines += ["[submit]", "rate = 0"]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EHC_")}
        self.env.update(
            EHC_APP_ID=sandbox.app_id, EHC_APP_SECRET=sandbox.app_secret, EHC_ORG_CODE=ORG_CODE,
            EHC_BASE_URL=sandbox.base_url, EHC_STATE_DIR=str(self.home / "state"),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), self.env.get("PYTHONPATH", "")])),
        )  # fmt: skip

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pipeline", *args, "--config", str(self.config)]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def popen(self, *args: str, limit_file_size: int | None = None) -> subprocess.Popen[str]:
        def limit() -> None:  # a disk that fills up: every write past this size fails (EFBIG)
            if limit_file_size is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

        return subprocess.Popen(
            self.command(*args), cwd=REPO_ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, preexec_fn=limit if limit_file_size is not None else None,
        )  # fmt: skip


def _people(first: int, count: int) -> list[dict[str, str]]:
    return [make_resident(serial)[1] for serial in range(first, first + count)]


def _results(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _fatal_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("错误")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _wait(
    condition: Callable[[], bool], process: subprocess.Popen[str], what: str, seconds: float = 60
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.05)


def _masked(id_number: str) -> str:
    return f"{id_number[:6]}********{id_number[-4:]}"


# -- 1. lost answers: truthful rows, qrcode names who it could not export, a later run recovers -------------


@pytest.mark.slow
@pytest.mark.sandbox(subprocess=True, fault_rate=0.2, seed=3, fault_kinds=("lost",))
def test_lost_answers_are_told_truthfully_and_qrcode_names_who_it_could_not_export(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    people = _people(700, 10)
    register = write_register(tmp_path / "reg.csv", people)
    cli = Cli(sandbox, tmp_path)
    out, qr = tmp_path / "out", tmp_path / "qr"
    done = cli.run("submit", str(register), "--out", str(out), "--concurrency", "1")
    assert done.returncode == 0, done.stderr
    rows = _results(out)
    lost = [row for row in rows if row["status"] == "already_enrolled"]
    assert lost and all(
        row["message"].startswith("平台答复已办理：上次发送可能已成功但答复丢失") for row in lost
    )
    assert all(row["ehealthCardId"] == "" for row in lost)

    done = cli.run("qrcode", "--from", str(out), "--out", str(qr))
    assert done.returncode == 1, done.stderr
    assert len(list(qr.glob("*.png"))) == len(people) - len(lost)
    for row in lost:
        assert _masked(row["sfzhm"]) in done.stdout
    assert not any(person["sfzhm"] in done.stdout + done.stderr for person in people)


# -- 2. the disk under the state directory fills up during submission -----------------------------------


@pytest.mark.slow
def test_full_disk_during_submission_reports_what_the_platform_answered(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    people = _people(720, 60)
    register = write_register(tmp_path / "reg.csv", people)
    cli = Cli(sandbox, tmp_path)
    cli.env["EHC_LOG_DIR"] = str(tmp_path / "logs")
    out = tmp_path / "out"
    process = cli.popen("submit", str(register), "--out", str(out), limit_file_size=160_000)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    assert "提交日志" in _fatal_line(stderr)
    rows = _results(out)
    statuses = Counter(row["status"] for row in rows)
    assert "valid" not in statuses and len(rows) == 60
    enrolled = {row["sfzhm"] for row in rows if row["status"] == "enrolled"}
    assert enrolled == {row[0] for row in sandbox.query("SELECT sfzhm FROM residents")}
    assert 0 < len(enrolled) < 60

    done = cli.run("submit", str(register), "--out", str(tmp_path / "again"))
    assert done.returncode == 0, done.stderr
    answers = dict(sandbox.query("SELECT result_code, count(*) FROM requests GROUP BY 1"))
    assert sandbox.residents() == 60 and answers[10000] <= 60 + 2  # 60 enrolments (+ work keys)
    assert answers[10000] - sandbox.count("getWorkKey") == 60, "each resident enrolled exactly once"


# -- 3. an answer dripped byte by byte does not hold the run (nor its first SIGTERM) ---------------------


@pytest.mark.slow
@pytest.mark.sandbox(drip_ms=500)
def test_dripped_answers_end_at_the_deadline_and_sigterm_is_heard(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    register = write_register(tmp_path / "reg.csv", _people(800, 10))
    cli = Cli(sandbox, tmp_path, connect_timeout=1, read_timeout=2)
    sandbox.inject("drip", count=100, methods=("syncCardInfo",))
    process = cli.popen("submit", str(register), "--out", str(tmp_path / "out"), "--concurrency", "2")
    _wait(lambda: sandbox.count("syncCardInfo") >= 1, process, "a call")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert time.monotonic() - started < 10, "the calls in flight end at their deadline (3 s)"
    assert {row["status"] for row in _results(tmp_path / "out")} <= {"failed", "already_enrolled", "enrolled"}


# -- 4. the platform dies mid-run -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.sandbox(subprocess=True, latency_ms=20)
def test_platform_dies_mid_run_stops_with_exit_2(sandbox: SandboxHandle, tmp_path: Path) -> None:
    register = write_register(tmp_path / "reg.csv", _people(820, 80))
    cli = Cli(sandbox, tmp_path)
    out = tmp_path / "out"
    process = cli.popen("submit", str(register), "--out", str(out), "--rate", "20", "--concurrency", "4")
    _wait(lambda: sandbox.residents() >= 10, process, "ten enrolments")
    assert sandbox.process is not None
    sandbox.process.kill()
    died = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    stopped_after = time.monotonic() - died
    assert process.returncode == 2, stderr
    assert "无法访问" in _fatal_line(stderr)
    assert stopped_after < 15, "no full round of retries for every remaining row"
    rows = _results(out)
    statuses = Counter(row["status"] for row in rows)
    assert set(statuses) == {"enrolled", "failed"}
    enrolled = {row[0] for row in sandbox.query("SELECT sfzhm FROM residents")}
    reported = {row["sfzhm"] for row in rows if row["status"] == "enrolled"}
    assert reported <= enrolled and len(enrolled - reported) <= 4, (
        "at most the calls in flight lost their answer"
    )
    for row in rows:
        if row["sfzhm"] in enrolled - reported:
            assert row["status"] == "failed" and re.search("结果未知|发送失败", row["message"]), row
    assert sum(row["message"].startswith("未发送：平台") for row in rows) >= 80 - len(enrolled) - 8


def test_a_short_run_the_platform_never_answers_exits_2_like_a_long_one(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    # Too few calls for the breaker to open: it exited 1, as if only some rows had failed.
    sandbox.inject("lost", count=100, methods=("syncCardInfo",))  # the work key is given, nothing else
    register = write_register(tmp_path / "reg.csv", _people(900, 2))
    done = Cli(sandbox, tmp_path, max_attempts=2).run(
        "submit", str(register), "--out", str(tmp_path / "out"), "--concurrency", "1"
    )
    assert done.returncode == 2, done.stderr
    assert "没有应答" in _fatal_line(done.stderr)
    rows = _results(tmp_path / "out")
    assert len(rows) == 2 and all(row["message"].startswith("发送结果未知") for row in rows), rows
    # errors.xlsx lists faults of the data only; it no longer reads as "nothing wrong" beside two unsent rows
    summary = openpyxl.load_workbook(tmp_path / "out" / "errors.xlsx", read_only=True)["汇总"]
    text = " ".join(str(cell) for row in summary.iter_rows(values_only=True) for cell in row if cell)
    assert "另有 2 行发送失败或发送结果未知" in text


# -- 6. two machines (state directories) with one app id ------------------------------------------------


@pytest.mark.slow
@pytest.mark.sandbox(subprocess=True, latency_ms=10)
def test_two_state_directories_with_one_app_id(sandbox: SandboxHandle, tmp_path: Path) -> None:
    registers = [write_register(tmp_path / f"reg{side}.csv", _people(950 + 30 * side, 30)) for side in (0, 1)]
    clis = [Cli(sandbox, tmp_path, f"side{side}") for side in (0, 1)]
    processes = [
        cli.popen("submit", str(register), "--out", str(cli.home / "out"), "--concurrency", "4")
        for cli, register in zip(clis, registers, strict=True)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    for cli in clis:
        rows = _results(cli.home / "out")
        assert {row["status"] for row in rows} == {"enrolled"}
        assert not any(re.search(r"10105", row["result_code"]) for row in rows)
    assert sandbox.residents() == 60
