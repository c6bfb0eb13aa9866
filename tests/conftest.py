"""Shared fixtures: a real sandbox on loopback, and synthetic residents it accepts.

``sandbox`` starts the sandbox HTTP server on ``127.0.0.1:0`` in a thread, with
its own SQLite state under ``tmp_path``, and yields a :class:`SandboxHandle`.
Options come from a marker::

    @pytest.mark.sandbox(latency_ms=20, rate_limit=40, workkey_ttl=2, subprocess=True)
    def test_something(sandbox): ...

``start_sandbox(**options)`` starts more (or differently configured) sandboxes
in one test; everything started is stopped at teardown.  With
``subprocess=True`` the sandbox runs as ``python -m pipeline sandbox ...`` in
its own process (``inject`` is then unavailable; the state file still is).
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import PlatformSettings
from pipeline.sandbox import build_server, max_in_window
from pipeline.sandbox.server import SandboxServer
from pipeline.text.idnumber import check_character

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sandbox(**options): options of the `sandbox` fixture (latency_ms, fault_rate, seed, rate_limit, "
        "workkey_ttl, fault_kinds, slow_ms, retry_after, drip_ms, huge_mb, subprocess)",
    )
    _ctrl_c_as_a_terminal_gives_it()


def _ctrl_c_as_a_terminal_gives_it() -> None:
    """Ctrl-C at Python's own handler, not blocked, as a command started from a terminal has it.

    A child inherits an ignored or blocked SIGINT, and the tests that press Ctrl-C on a command
    would find it deaf: a suite started in the background of a script (``make test &``, which
    ignores SIGINT) failed them.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class SandboxHandle:
    """A running sandbox: where it listens, the app registered on it, its state file."""

    base_url: str
    app_id: str
    app_secret: str
    db_path: Path
    options: dict[str, Any] = field(default_factory=dict)
    server: SandboxServer | None = None
    process: subprocess.Popen[str] | None = None
    _thread: threading.Thread | None = None

    def settings(self, **overrides: Any) -> PlatformSettings:
        """Platform settings that reach this sandbox as its registered app (quick retries)."""
        base = PlatformSettings(
            base_url=self.base_url,
            app_id=self.app_id,
            app_secret=self.app_secret,
            app_package_name="ehc-tests",
            connect_timeout=2.0,
            read_timeout=10.0,
            max_attempts=5,
            max_retry_seconds=30.0,
        )
        return replace(base, **overrides)

    def inject(self, kind: str, count: int = 1, methods: tuple[str, ...] | None = None) -> None:
        """Force the next ``count`` requests (to ``methods``) to fail with ``kind`` (thread mode only)."""
        if self.server is None:
            raise RuntimeError("fault injection needs an in-process sandbox")
        self.server.inject(kind, count, methods)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows from the sandbox's state file (read through a separate connection)."""
        with sqlite3.connect(self.db_path, timeout=30) as db:
            return list(db.execute(sql, params))

    def arrivals(self, method: str | None = None, app_id: str | None = None) -> list[float]:
        """Arrival times of the requests the sandbox logged (ascending)."""
        sql, params = "SELECT arrived FROM requests WHERE app_id = ?", [app_id or self.app_id]
        if method:
            sql, params = sql + " AND method = ?", [*params, method]
        return [row[0] for row in self.query(sql + " ORDER BY arrived", *params)]

    def max_in_window(self, method: str | None = None, window: float = 1.0) -> int:
        """The most requests of this app that arrived in any ``window`` seconds."""
        return max_in_window(self.arrivals(method), window)

    def count(self, method: str) -> int:
        """How many requests to ``method`` arrived."""
        return len(self.arrivals(method))

    def residents(self) -> int:
        """How many residents are enrolled."""
        return int(self.query("SELECT count(*) FROM residents")[0][0])

    def stop(self) -> None:
        """Stop the sandbox (idempotent); the state file stays."""
        if self.server is not None:
            self.server.close()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self.server = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()


def _start_in_thread(db_path: Path, apps: dict[str, str], options: dict[str, Any]) -> tuple[str, Any, Any]:
    server = build_server(state=db_path, apps=apps, **options)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="sandbox", daemon=True)
    thread.start()
    return server.base_url, server, thread


def _start_process(db_path: Path, apps: dict[str, str], options: dict[str, Any]) -> tuple[str, Any]:
    command = [sys.executable, "-m", "pipeline", "sandbox", "--port", "0", "--state", str(db_path)]
    for app_id, secret in apps.items():
        command += ["--app", f"{app_id}:{secret}"]
    flags = {"latency_ms": "--latency-ms", "fault_rate": "--fault-rate", "seed": "--seed",
             "rate_limit": "--rate-limit", "workkey_ttl": "--workkey-ttl", "fault_kinds": "--fault-kinds",
             "retry_after": "--retry-after", "drip_ms": "--drip-ms", "huge_mb": "--huge-mb"}  # fmt: skip
    for name, value in options.items():
        if name not in flags:
            raise ValueError(f"option {name} is not available for a sandbox subprocess")
        if isinstance(value, tuple):
            value = ",".join(value)
        if value is not None:
            command += [flags[name], str(value)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHC_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else ""
    url = next((word for word in line.split() if word.startswith("http://")), "")
    if not url:
        process.kill()
        process.wait()
        raise RuntimeError(f"sandbox subprocess did not start: {line!r}")
    return url, process


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[Callable[..., SandboxHandle]]:
    """A function that starts a sandbox: ``start_sandbox(latency_ms=..., subprocess=True, db_path=...)``."""
    started: list[SandboxHandle] = []

    def start(
        *,
        subprocess: bool = False,
        db_path: Path | None = None,
        app_id: str | None = None,
        app_secret: str | None = None,
        **options: Any,
    ) -> SandboxHandle:
        path = db_path or tmp_path / f"sandbox-{len(started)}" / "state.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        app = app_id or f"app{secrets.token_hex(8)}"
        secret = app_secret or secrets.token_hex(16).upper()
        if subprocess:
            url, process = _start_process(path, {app: secret}, options)
            handle = SandboxHandle(url, app, secret, path, options, process=process)
        else:
            url, server, thread = _start_in_thread(path, {app: secret}, options)
            handle = SandboxHandle(url, app, secret, path, options, server=server, _thread=thread)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def sandbox(start_sandbox: Callable[..., SandboxHandle], request: pytest.FixtureRequest) -> SandboxHandle:
    """A sandbox on loopback, configured by ``@pytest.mark.sandbox(...)``."""
    marker = request.node.get_closest_marker("sandbox")
    return start_sandbox(**(marker.kwargs if marker else {}))


def make_id_number(
    serial: int, *, division: str = "440604", born: date = date(1980, 1, 1), male: bool = True
) -> str:
    """A valid 18-character ID number, distinct per ``serial`` (0..499) for one birth date."""
    sequence = (serial % 500) * 2 + (1 if male else 0)
    first17 = f"{division}{born:%Y%m%d}{sequence:03d}"
    return first17 + check_character(first17)


def make_resident(serial: int, **people: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(cardInfo, peopleInfo)`` of a synthetic resident the platform accepts; ``people`` overrides fields.

    Distinct residents for ``serial`` 0..359,999.
    """
    born = date(1950 + (serial // 500) % 60, 1 + (serial // 30000) % 12, 1)
    sfzhm = make_id_number(serial, born=born, male=serial % 2 == 0)
    person = {
        "xm": f"测试{serial}", "xb": "1" if serial % 2 == 0 else "2", "mzdm": "01",
        "csrq": f"{born:%Y%m%d}", "sfzhm": sfzhm, "zjlx": "01", "zjhm": sfzhm, "jkdah": "", "xnhkh": "",
        "fyzhdm": "20", "xldm": "20", "zydm": "4", "dzlb": "2", "dzsf": "广东省", "dzs": "佛山市",
        "dzqx": "禅城区", "dzxz": "祖庙街道", "dzc": "", "brdh": f"139{serial % 10**8:08d}",
        "ylfyzffs": "01",
    }  # fmt: skip
    person.update(people)
    card = {"klx": "3", "kh": "", "fksj": "", "orgCode": "455400000", "yhkh": "", "isRealName": "0"}
    return card, person


@pytest.fixture
def resident() -> Callable[..., tuple[dict[str, str], dict[str, str]]]:
    """:func:`make_resident` as a fixture."""
    return make_resident


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's journal, work key cache and logs out of the user's real state directory."""
    if "EHC_STATE_DIR" not in os.environ:
        monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    for variable in ("EHC_APP_ID", "EHC_APP_SECRET", "EHC_BASE_URL", "EHC_ORG_CODE", "EHC_RATE"):
        monkeypatch.delenv(variable, raising=False)


@contextmanager
def log_lines(level: str = "INFO") -> Iterator[list[str]]:
    """The lines logged at ``level`` and above while the block runs."""
    from loguru import logger

    lines: list[str] = []
    handler = logger.add(lambda message: lines.append(str(message)), level=level)
    try:
        yield lines
    finally:
        logger.remove(handler)


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """The lines logged at INFO and above while the test runs."""
    with log_lines("INFO") as lines:
        yield lines


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Any]:
    """An open journal in the test's own folder."""
    from pipeline.state.journal import Journal

    with Journal(tmp_path / "journal.sqlite") as opened:
        yield opened
