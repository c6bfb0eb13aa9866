"""The work key: cached per app and day (mode 0600), shared by threads and processes, refreshed once."""

from __future__ import annotations

import datetime
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO_ROOT, SandboxHandle, make_resident

from pipeline.logs import mask_text
from pipeline.platform.client import PlatformClient
from pipeline.platform.workkey import WorkKeyCache, cache_path


def _client(sandbox: SandboxHandle, state: Path) -> PlatformClient:
    return PlatformClient(sandbox.settings(), state, initial_wait=0.01)


def test_key_is_cached_in_a_private_file_and_reused_by_a_second_client(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    with _client(sandbox, tmp_path) as first:
        key = first.work_key()
        assert first.sync_card_info(*make_resident(1)).ok
    path = cache_path(tmp_path, sandbox.app_id, sandbox.base_url)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["work_key"] == key
    with _client(sandbox, tmp_path) as second:
        assert second.work_key() == key
        assert second.sync_card_info(*make_resident(2)).ok
    assert sandbox.count("getWorkKey") == 1


def test_key_is_registered_as_a_secret(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with _client(sandbox, tmp_path) as client:
        key = client.work_key()
    assert key not in mask_text(f"key={key} secret={sandbox.app_secret}")


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    sys.path.insert(0, os.environ["TESTS_DIR"])
    from conftest import make_resident
    from pipeline.platform.client import PlatformClient
    from pipeline.config import PlatformSettings

    base_url, app_id, state, first, barrier = sys.argv[1:6]
    settings = PlatformSettings(base_url=base_url, app_id=app_id, app_secret=os.environ["SECRET"])
    with PlatformClient(settings, Path(state), initial_wait=0.01) as client:
        client.work_key()
        Path(barrier, f"ready-{first}").touch()
        deadline = time.time() + 60
        while not Path(barrier, "go").exists() and time.time() < deadline:
            time.sleep(0.01)
        with ThreadPoolExecutor(4) as pool:
            calls = [make_resident(int(first) + i) for i in range(8)]
            results = list(pool.map(lambda resident: client.sync_card_info(*resident), calls))
    print(",".join(str(r.result_code) for r in results))
    """
)


def _child(sandbox: SandboxHandle, state: Path, first: int, barrier: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "SECRET": sandbox.app_secret, "TESTS_DIR": str(Path(__file__).parent)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            sandbox.base_url,
            sandbox.app_id,
            str(state),
            str(first),
            str(barrier),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def _wait_ready(barrier: Path, count: int, children: list[subprocess.Popen[str]]) -> None:
    deadline = time.time() + 60
    while len(list(barrier.glob("ready-*"))) < count:
        assert time.time() < deadline and all(child.poll() is None for child in children), (
            "children not ready"
        )
        time.sleep(0.01)


def test_a_second_process_reuses_the_cached_key(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with _client(sandbox, tmp_path) as client:
        client.work_key()
    (tmp_path / "go").touch()
    child = _child(sandbox, tmp_path, 300, tmp_path)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out.strip() == ",".join(["10000"] * 8)
    assert sandbox.count("getWorkKey") == 1


def test_two_processes_refresh_a_replaced_key_once(sandbox: SandboxHandle, tmp_path: Path) -> None:
    state, barrier = tmp_path / "state", tmp_path / "barrier"
    barrier.mkdir()
    with _client(sandbox, state) as client:
        client.work_key()
    children = [_child(sandbox, state, 400, barrier), _child(sandbox, state, 500, barrier)]
    _wait_ready(barrier, 2, children)  # both hold the cached key now
    with _client(sandbox, tmp_path / "elsewhere") as other:
        other.work_key()  # the platform replaces the key both children hold
    fetched_before = sandbox.count("getWorkKey")
    (barrier / "go").touch()
    outputs = [child.communicate(timeout=60)[0] for child in children]
    assert all(child.returncode == 0 for child in children)
    assert all(out.strip() == ",".join(["10000"] * 8) for out in outputs)
    assert sandbox.count("getWorkKey") == fetched_before + 1
    assert sandbox.residents() == 16


@pytest.mark.sandbox(workkey_ttl=2)
def test_expired_key_is_refreshed_mid_run_and_the_call_retried(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    with _client(sandbox, tmp_path) as client:
        first_key = client.work_key()
        assert client.sync_card_info(*make_resident(20)).ok
        time.sleep(2.1)
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda i: client.sync_card_info(*make_resident(21 + i)), range(6)))
        assert all(result.ok for result in results)
        assert max(result.attempts for result in results) == 2
        assert client.work_key() != first_key
    assert sandbox.count("getWorkKey") == 2  # six threads hit 10105, one refresh


def test_key_replaced_by_another_process_is_adopted_without_fetching(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    with _client(sandbox, ours) as client:
        client.work_key()
        # another machine's process (its own state directory) takes a new key: ours is now invalid
        with _client(sandbox, theirs) as other:
            other.work_key()
        cache_path(ours, sandbox.app_id, sandbox.base_url).write_text(
            cache_path(theirs, sandbox.app_id, sandbox.base_url).read_text()
        )
        result = client.sync_card_info(*make_resident(40))
    assert result.ok and result.attempts == 2
    assert sandbox.count("getWorkKey") == 2


def test_refresh_flag_fetches_a_new_key(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with _client(sandbox, tmp_path) as client:
        first = client.work_key()
        assert client.work_key(refresh=True) != first
    assert sandbox.count("getWorkKey") == 2


def test_cache_is_per_day_and_survives_damage(tmp_path: Path) -> None:
    day = [datetime.date(2026, 11, 1)]
    fetched: list[str] = []

    def fetch() -> str:
        fetched.append(f"KEY{len(fetched)}")
        return fetched[-1]

    cache = WorkKeyCache(tmp_path, "app", "http://x/", fetch, today=lambda: day[0])
    assert cache.get() == "KEY0" and cache.get() == "KEY0"
    day[0] = datetime.date(2026, 11, 2)
    assert cache.get() == "KEY1"
    cache.path.write_text("{not json")
    fresh = WorkKeyCache(tmp_path, "app", "http://x/", fetch, today=lambda: day[0])
    assert fresh.get() == "KEY2"
    assert WorkKeyCache(tmp_path, "app", "http://x/", fetch, today=lambda: day[0]).get() == "KEY2"


def test_concurrent_refresh_in_one_process_fetches_once(tmp_path: Path) -> None:
    calls = 0
    gate = threading.Event()

    def fetch() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:  # the refresh: slow, so that every thread asks for it meanwhile
            gate.wait(5)
        return f"KEY{calls}"

    cache = WorkKeyCache(tmp_path, "app", "http://x/", fetch)
    old = cache.get()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cache.refresh, old) for _ in range(8)]
        gate.set()
        keys = {future.result() for future in futures}
    assert keys == {"KEY2"} and calls == 2
