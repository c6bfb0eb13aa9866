"""The process opts out of transparent huge pages (Linux): fresh buffers are not zeroed 2 MB at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


#: Python putting the process back to the kernel's default (the flag is inherited: a test process
#: that ran ``cli.main`` passes it on to its children).
_RESET = "import ctypes\nassert ctypes.CDLL(None).prctl(41, 0, 0, 0, 0) == 0"


def _thp_enabled_after(code: str) -> str:
    status = "[l for l in open('/proc/self/status') if l.startswith('THP_enabled')][0].split()[1]"
    script = f"{_RESET}\n{code}\nprint({status})"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


@pytest.mark.skipif(
    not Path("/proc/self/status").exists() or "THP_enabled" not in Path("/proc/self/status").read_text(),
    reason="the kernel does not report THP_enabled (not Linux, or older than 5.0)",
)
def test_the_command_line_opts_the_process_out_of_huge_pages() -> None:
    assert _thp_enabled_after("pass") == "1"
    assert _thp_enabled_after("from pipeline.memory import opt_out_of_huge_pages as o; assert o()") == "0"
    # ehc's entry point does it before anything is read.
    code = "from pipeline import cli\ntry:\n    cli.main(['--version'])\nexcept SystemExit:\n    pass"
    assert _thp_enabled_after(code) == "0"


def test_elsewhere_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import memory

    monkeypatch.setattr(memory.sys, "platform", "win32")
    assert memory.opt_out_of_huge_pages() is False


def _before_and_after_main(setting: str, setup: str = "") -> list[str]:
    """``setting`` (Python text) printed in a fresh process before and after ``cli.main``."""
    script = (
        f"{setup}\nfrom pipeline import cli\nbefore = {setting}\n"
        "try:\n    cli.main(['--version'])\nexcept SystemExit:\n    pass\n"
        f"print(before, {setting})"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-2:]


def test_the_command_line_leaves_what_it_imported_out_of_garbage_collections() -> None:
    from pipeline.memory import YOUNG_COLLECTION_THRESHOLD

    assert _before_and_after_main("gc.get_threshold()[0]", "import gc") == [
        "700",
        str(YOUNG_COLLECTION_THRESHOLD),
    ]
    assert _before_and_after_main("gc.get_freeze_count() > 1000", "import gc") == ["False", "True"]


def test_the_command_line_switches_threads_every_millisecond() -> None:
    before, after = map(float, _before_and_after_main("sys.getswitchinterval()", "import sys"))
    assert before == 0.005 and after == 0.001


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="threads are counted in /proc")
def test_numpy_imported_by_ehc_starts_no_idle_blas_threads() -> None:
    """OpenBLAS would start a thread per core at numpy's import, spinning beside ehc's own start."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    count = "import os; print(len(os.listdir('/proc/self/task')))"
    threads = []
    for first in ("import pipeline, numpy", "import numpy"):
        done = subprocess.run(
            [sys.executable, "-c", f"{first}; {count}"], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        threads.append(int(done.stdout))
    assert threads[0] == 1
    assert threads[1] >= threads[0]  # without ehc's setting: as many as numpy's build starts
