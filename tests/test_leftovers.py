"""What a killed run leaves in the output folder is removed by the next run, and nothing else is.

A process killed outright (``kill -9``, the out-of-memory killer) cannot
clean up: its work folder and temporary reports stay.  The next run into the
same folder removes those of this machine whose process is gone and which
nothing changed for a while; a live run's files, a young leftover, another
machine's files and the clerk's own files are never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from pipeline.cli import main
from pipeline.files import LEFTOVER_AGE_SECONDS, scratch_name, sweep_leftovers

pytestmark = pytest.mark.skipif(os.name != "posix", reason="leftovers are swept on POSIX systems only")

SAMPLE = REPO_ROOT / "sample_data" / "居民名单_GBK.csv"

#: A run killed outright after creating its work folder and starting a temporary report.
KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from pipeline.files import temporary_name
from pipeline.reports.write import ReportWriter
out = Path(sys.argv[1])
writer = ReportWriter(out, submitted=False)
(writer.work / "detail-bad.arrow").write_bytes(b"x" * 1000)
temporary_name(out / "results.csv").write_bytes(b"half a report")
print(writer.work.name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _gone_pid() -> int:
    """The number of a process that has ended."""
    code = "import os; print(os.getpid())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout)


def _aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    for inner in [*path.iterdir()] if path.is_dir() else []:
        os.utime(inner, (then, then))
    os.utime(path, (then, then))
    return path


def _named_like(stem: str, pid: int, machine: str | None = None) -> str:
    ours = scratch_name(stem)
    _, _, mine, _, thread = ours.rsplit(".", 4)
    return f".{stem}.{machine or mine}.{pid}.{thread}"


def test_only_old_leftovers_of_ended_processes_of_this_machine_go(tmp_path: Path) -> None:
    old = LEFTOVER_AGE_SECONDS + 60
    gone = _gone_pid()
    killed_folder = tmp_path / _named_like("ehc-work", gone)
    killed_folder.mkdir()
    (killed_folder / "errors-10111.arrow").write_bytes(b"x")
    killed_file = tmp_path / (_named_like("results.csv", gone) + ".tmp")
    killed_file.write_bytes(b"x")
    young = tmp_path / (_named_like("errors.xlsx", gone) + ".tmp")
    young.write_bytes(b"x")
    live = tmp_path / (_named_like("results.xlsx", os.getppid()) + ".tmp")  # a process that runs
    live.write_bytes(b"x")
    elsewhere = tmp_path / (_named_like("results.csv", gone, machine="other-pc") + ".tmp")
    elsewhere.write_bytes(b"x")
    clerks = tmp_path / ".results.csv.backup.1.2.tmp"  # not of this machine's form: the clerk's own
    clerks.write_bytes(b"x")
    report = tmp_path / "results.csv"
    report.write_bytes(b"x")
    for path in (killed_folder, killed_file, live, elsewhere, clerks, report):
        _aged(path, old)

    removed = sweep_leftovers(tmp_path)

    assert sorted(removed) == sorted([killed_folder, killed_file])
    assert not killed_folder.exists() and not killed_file.exists()
    assert all(path.exists() for path in (young, live, elsewhere, clerks, report))


def test_a_leftover_folder_with_a_recent_file_is_kept(tmp_path: Path) -> None:
    folder = tmp_path / _named_like("ehc-work", _gone_pid())
    folder.mkdir()
    (folder / "old.arrow").write_bytes(b"x")
    _aged(folder, LEFTOVER_AGE_SECONDS + 60)
    (folder / "new.arrow").write_bytes(b"x")  # something wrote here just now
    assert sweep_leftovers(tmp_path) == []
    assert folder.exists()


def test_the_next_run_removes_what_a_killed_run_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(out)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    leftovers = sorted(p.name for p in out.iterdir())
    assert killed.stdout.strip() in leftovers and any(name.endswith(".tmp") for name in leftovers)

    assert main(["validate", str(SAMPLE), "--out", str(out)]) in (0, 1)
    assert set(leftovers) <= {p.name for p in out.iterdir()}  # just killed: kept (it may still be settling)

    for name in leftovers:
        _aged(out / name, LEFTOVER_AGE_SECONDS + 60)
    capsys.readouterr()
    assert main(["validate", str(SAMPLE), "--out", str(out)]) in (0, 1)
    names = {p.name for p in out.iterdir()}
    assert not names & set(leftovers)
    assert {"results.csv", "results.xlsx", "errors.xlsx"} <= names
    assert not [name for name in names if name.startswith(".")]  # the run left nothing of its own


def test_a_work_file_name_shown_in_a_message_is_not_masked_as_an_id_number() -> None:
    from pipeline.logs import mask_text

    name = scratch_name("ehc-submit")
    assert mask_text(name) == name  # an error naming it (a full disk) names the real file


def test_a_nightly_run_removes_what_a_killed_run_left_in_a_files_report_folder(tmp_path: Path) -> None:
    """The killed run's file is taken again into ``<stem>-2``: no later run writes into its first folder."""
    from datetime import date, timedelta

    from pipeline.config import PlatformSettings, Settings
    from pipeline.inbox.run import run_inbox

    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    today = date.today()
    folders = [out / today.isoformat() / "名单", out / f"{today - timedelta(days=1)}-dry-run" / "名单-2",
               out / str(today - timedelta(days=40)) / "旧"]  # fmt: skip
    dead = _gone_pid()
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "results.csv").write_text("the killed run's own report\n", encoding="utf-8")
        work = folder / _named_like("ehc-submit", dead)
        work.mkdir()
        (work / "rows.arrow").write_bytes(b"x" * 1000)
        _aged(work, LEFTOVER_AGE_SECONDS + 60)
    credentials = PlatformSettings(app_id="app", app_secret="secret")
    settings = Settings(platform=credentials, state_dir=tmp_path / "state")
    assert run_inbox(inbox, out, settings).exit_code == 0  # nothing to do, and no call made
    assert [sorted(p.name for p in folder.iterdir()) for folder in folders[:2]] == [["results.csv"]] * 2
    assert len(list(folders[2].iterdir())) == 2  # older than a week: not looked through every night
