"""Measuring commands for ``make bench``: wall time, CPU time and peak memory of a child process,
and a sandbox on loopback whose request log tells what a client really sent.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Measured:
    """What one child process cost."""

    wall: float  # seconds
    cpu: float  # user + system seconds
    peak_mb: float  # peak resident set size
    returncode: int
    stdout: str
    stderr: str

    def check(self, allowed: tuple[int, ...] = (0,)) -> Measured:
        """Raise if the command ended with an exit code not in ``allowed``."""
        if self.returncode not in allowed:
            raise RuntimeError(f"exit code {self.returncode}: {self.stderr.strip()[-2000:]}")
        return self


#: Runs a command and writes its rusage as JSON.  The measured command is forked from
#: this small interpreter, not from the benchmark process: a child's peak RSS on Linux
#: counts the memory of the process it was forked from.
_WRAPPER = """
import json, os, subprocess, sys, time
started = time.perf_counter()
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
report = {"wall": time.perf_counter() - started, "cpu": usage.ru_utime + usage.ru_stime,
          "peak_kb": usage.ru_maxrss, "returncode": os.waitstatus_to_exitcode(status)}
with open(sys.argv[1], "w") as handle:
    json.dump(report, handle)
"""


def measure(command: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``command`` to the end: its own wall time, CPU time and peak RSS (``wait4``)."""
    with tempfile.TemporaryDirectory() as folder:
        report_path = Path(folder) / "usage.json"
        out_path, err_path = Path(folder) / "stdout", Path(folder) / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            subprocess.run([sys.executable, "-c", _WRAPPER, str(report_path), *command], cwd=ROOT, env=env,
                           stdout=out, stderr=err, check=False)  # fmt: skip
        usage = json.loads(report_path.read_text())
        output, errors = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
        peak_mb = usage["peak_kb"] / 1024
        return Measured(usage["wall"], usage["cpu"], peak_mb, usage["returncode"], output, errors)


def python(*args: str) -> list[str]:
    """A command running this interpreter."""
    return [sys.executable, *args]


def ehc(*args: str) -> list[str]:
    """A command running ``ehc``."""
    return python("-m", "pipeline", *args)


def ehc_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for an ``ehc`` child: its own state directory, nothing inherited from EHC_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHC_")}
    env.update(EHC_STATE_DIR=str(state_dir), EHC_ORG_CODE="455400000", XDG_STATE_HOME=str(state_dir), **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def max_in_window(arrivals: np.ndarray, window: float = 1.0) -> int:
    """The most arrivals (ascending) in any half-open window ``[t, t + window)``."""
    if not len(arrivals):
        return 0
    return int((np.searchsorted(arrivals, arrivals + window, side="left") - np.arange(len(arrivals))).max())


class Sandbox:
    """``ehc sandbox`` in its own process on a free loopback port, with a fresh state file."""

    def __init__(self, folder: Path, *, latency_ms: float = 0.0, app_id: str = "bench-app",
                 app_secret: str = "BENCH0SECRET0NOT0REAL") -> None:  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        self.state = folder / "sandbox.sqlite"
        for stale in folder.glob("sandbox.sqlite*"):
            stale.unlink()
        self.app_id, self.app_secret = app_id, app_secret
        command = ehc("sandbox", "--port", "0", "--state", str(self.state), "--app", f"{app_id}:{app_secret}",
                      "--latency-ms", str(latency_ms))  # fmt: skip
        self.process = subprocess.Popen(command, cwd=ROOT, env=ehc_env(folder / "sandbox-home"),
                                        stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 60)
        line = self.process.stdout.readline() if ready else ""
        self.base_url = next((w for w in line.split() if w.startswith("http://")), "")
        if not self.base_url:
            self.stop()
            raise RuntimeError(f"the sandbox did not start: {line!r}")

    def arrivals(self, method: str = "syncCardInfo") -> np.ndarray:
        """Arrival times (ascending) of the requests to ``method`` the sandbox logged."""
        with sqlite3.connect(self.state, timeout=30) as db:
            rows = db.execute("SELECT arrived FROM requests WHERE method = ? ORDER BY arrived", (method,))
            return np.array([r[0] for r in rows], dtype=float)

    def submit_env(self, state_dir: Path) -> dict[str, str]:
        """Environment for ``ehc submit`` against this sandbox as its registered app."""
        return ehc_env(state_dir, EHC_APP_ID=self.app_id, EHC_APP_SECRET=self.app_secret,
                       EHC_BASE_URL=self.base_url)  # fmt: skip

    def stop(self) -> None:
        """Stop the sandbox process."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
