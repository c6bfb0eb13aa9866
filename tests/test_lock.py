"""The run lock: one run at a time, a crashed holder's lock taken over, clear messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.errors import EXIT_LOCKED, ConfigError, LockHeld
from pipeline.state.lock import LockInfo, lock_path, read_holder, run_lock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pipeline.state.lock import run_lock
    with run_lock(Path(sys.argv[1]), command="holder"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def _start_holder(state_dir: Path) -> subprocess.Popen[str]:
    """A separate process holding the lock of ``state_dir`` until killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_lock_records_holder_and_clears_on_release(tmp_path: Path) -> None:
    with run_lock(tmp_path, command="ehc run") as held:
        info = read_holder(tmp_path)
        assert info is not None and info.pid == os.getpid() and info.command == "ehc run"
        assert info.started_at == held.info.started_at
        assert held.taken_over is None
    assert lock_path(tmp_path).read_text() == ""  # a clean end leaves nothing to take over
    with run_lock(tmp_path) as again:
        assert again.taken_over is None


def test_second_holder_in_same_process_is_refused_with_pid_and_start(tmp_path: Path) -> None:
    with run_lock(tmp_path) as held:
        with pytest.raises(LockHeld) as refused, run_lock(tmp_path):
            pass
        assert refused.value.exit_code == EXIT_LOCKED == 3
        message = str(refused.value)
        assert f"进程 {os.getpid()}" in message and held.info.started_at in message
        assert str(lock_path(tmp_path)) in message
    # the refused attempt must not have disturbed the holder's record, nor kept the lock
    with run_lock(tmp_path) as after:
        assert after.taken_over is None


def test_lock_held_by_another_process_is_refused(tmp_path: Path) -> None:
    holder = _start_holder(tmp_path)
    try:
        with pytest.raises(LockHeld, match=f"进程 {holder.pid}"), run_lock(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_killed_process_is_taken_over(tmp_path: Path) -> None:
    holder = _start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    left = read_holder(tmp_path)
    assert left is not None and left.pid == holder.pid  # the dead run's record is still there
    with run_lock(tmp_path) as held:
        assert held.taken_over is not None and held.taken_over.pid == holder.pid
        assert read_holder(tmp_path) == held.info


def test_garbled_lock_file_is_taken_without_fuss(tmp_path: Path) -> None:
    lock_path(tmp_path).write_text("not json {")
    with run_lock(tmp_path) as held:
        assert held.taken_over is None
        assert json.loads(lock_path(tmp_path).read_text())["pid"] == os.getpid()


def test_child_processes_do_not_inherit_the_lock(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with run_lock(tmp_path):  # the child still runs, yet the lock is free
            pass
    finally:
        child.kill()
        child.wait()


def test_unusable_state_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="运行锁"), run_lock(blocker / "state"):
        pass


def test_lock_info_describes_missing_fields() -> None:
    assert LockInfo.parse("[1, 2]") is None
    info = LockInfo.parse('{"pid": "x"}')
    assert info is not None and info.describe() == "进程 未知"
