"""The workspace's workers probed: many uploads from one centre, hostile files, workers that die.

The dry runs of one centre must not hold up another's; a register must be
read as a nightly import reads it (in a child under memory and time
limits); a dead dry-run worker must not stop every later upload; a dead
submission process must not leave its job "submitting" for ever, and what
the job says afterwards is what the journal knows.  The last two run the
app with real worker processes (as ``ehc serve`` does), killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.web import checking
from tests.web_support import SAMPLE_CSV, SAMPLE_XLSX, XLSX_TYPE, Site, csrf_of, make_site

CSV_FILE = (SAMPLE_CSV.name, SAMPLE_CSV.read_bytes(), "text/csv")


def _job_ids(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [str(path).rsplit("/", 1)[-1] for path in answer.json()["jobs"]]


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[str]]]:
    """Dry runs wait for the gate to open, and note the order they ran in."""
    opened, order = threading.Event(), []
    real = checking.check_job

    def held(state_dir: Path, job_id: str, settings: Any, today: Any = None) -> str:
        opened.wait(30)
        order.append(job_id)
        return real(state_dir, job_id, settings)

    monkeypatch.setattr(checking, "check_job", held)
    yield opened, order
    opened.set()


def test_one_centres_many_uploads_do_not_hold_up_another_centre(
    tmp_path: Path, gate: tuple[threading.Event, list[str]]
) -> None:
    opened, order = gate
    with make_site(tmp_path / "state", check_workers=1, queued_per_centre=3) as site:
        clerk_a, clerk_b = site.client("clerk_a"), site.client("clerk_b")
        many = site.upload(clerk_a, *[CSV_FILE] * 4)
        theirs = _job_ids(many)
        assert len(theirs) == 3 and len(many.json()["problems"]) == 1  # the centre's queue is bounded
        assert "排队检查" in many.json()["problems"][0]
        more = site.upload(clerk_a, CSV_FILE)
        assert more.status_code == 429 and "排队检查" in more.json()["error"]
        [mine] = _job_ids(site.upload(clerk_b, CSV_FILE))
        opened.set()
        for client, job_id in [(clerk_b, mine)] + [(clerk_a, job_id) for job_id in theirs]:
            assert site.wait(client, job_id)["state"] == "checked"
        assert order.index(mine) == 1  # behind the one upload already running, not behind all three


def test_uploads_arriving_together_cannot_all_pass_the_queue_limit(
    tmp_path: Path, gate: tuple[threading.Event, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_site(tmp_path / "state", check_workers=1, queued_per_centre=3) as site:
        # As when several uploads arrive at once: each read the queue before any of them was added.
        monkeypatch.setattr(type(site.app.state.workspace.runner), "waiting", lambda self, centre: 0)
        clerk = site.client("clerk_a")
        first, second = site.upload(clerk, *[CSV_FILE] * 3), site.upload(clerk, *[CSV_FILE] * 3)
        assert len(_job_ids(first)) == 3 and second.status_code == 429, second.text
        assert site.store.jobs_count(1) == 3
        assert len(list((tmp_path / "state").glob("web/jobs/*"))) == 3  # the refused files are not kept
        gate[0].set()  # the held dry runs end before the site closes (which waits for them)


def test_uploads_stop_before_they_fill_the_disk(tmp_path: Path) -> None:
    free_mb = int(os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize) >> 20
    with make_site(tmp_path / "state", min_free_disk_mb=free_mb + 100) as site:
        clerk = site.client("clerk_a")
        answer = site.upload(clerk, CSV_FILE)
        assert answer.status_code == 507 and "磁盘空间不足" in answer.json()["error"]
        assert site.store.jobs_count(1) == 0 and not list((tmp_path / "state").glob("web/jobs/*"))


def test_a_register_is_read_in_a_child_under_the_limits(tmp_path: Path) -> None:
    with make_site(tmp_path / "state", read_timeout_seconds=0.001) as site:
        clerk = site.client("clerk_a")
        [job_id] = _job_ids(site.upload(clerk, CSV_FILE))
        state = site.wait(clerk, job_id)
        assert state["state"] == "unreadable" and "时间上限" in state["message"], state["message"]
        assert site.client("clerk_a").get("/jobs").status_code == 200  # the server is unharmed


# --- with real worker processes ---------------------------------------------------------------------


def _worker_pids(site: Site) -> list[int]:
    pool = site.app.state.workspace.runner._pool
    return [process.pid for process in pool._processes.values()]


def _submission_under_way(site: Site, clerk: Any, job_id: str, *, done: int) -> int:
    """Submit the job and wait until ``done`` residents are answered; the submission process's pid."""
    csrf = csrf_of(clerk.get(f"/jobs/{job_id}/submit").text)
    assert clerk.post(f"/jobs/{job_id}/submit", data={"csrf_token": csrf}).status_code == 303
    deadline = time.monotonic() + 60
    while site.state(clerk, job_id)["sending"].get("done", 0) < done and time.monotonic() < deadline:
        time.sleep(0.05)
    job = site.store.job_any(job_id)
    assert job is not None and job.pid
    return job.pid


def test_worker_processes_that_die_are_replaced_and_their_jobs_told_truthfully(
    tmp_path: Path, start_sandbox: Any
) -> None:
    sandbox = start_sandbox(latency_ms=20)
    with make_site(
        tmp_path / "state", sandbox.settings(), rate=40.0, check_workers=1, processes=True
    ) as site:
        clerk = site.client("clerk_a")
        job_id = site.upload_sample(clerk)  # the dry-run worker is up

        # A dry-run worker killed (as the kernel's out-of-memory killer would): later uploads still checked.
        for pid in _worker_pids(site):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        [later] = _job_ids(site.upload(clerk, (SAMPLE_XLSX.name, SAMPLE_XLSX.read_bytes(), XLSX_TYPE)))
        assert site.wait(clerk, later)["state"] == "checked"

        # A submission process killed mid-run: the job stops, and says what the journal knows.
        pid = _submission_under_way(site, clerk, job_id, done=5)
        site.app.state.workspace.runner._submissions.clear()  # as if a previous server had started it
        os.kill(pid, signal.SIGKILL)
        state = site.wait(clerk, job_id, timeout=15)
        assert state["state"] == "stopped" and "意外结束" in state["message"]
        # What the journal knows, not "valid": enrolled as answered; a call in flight when the process
        # died is "failed" (its answer never came) and is sent again, the platform then answering 10115.
        enrolled, in_flight = state["counts"].get("enrolled", 0), state["counts"].get("failed", 0)
        assert 5 <= enrolled <= sandbox.residents() <= enrolled + in_flight
        assert sum(state["counts"].values()) == 50
        again = csrf_of(clerk.get(f"/jobs/{job_id}/submit").text)
        assert clerk.post(f"/jobs/{job_id}/submit", data={"csrf_token": again}).status_code == 303
        assert site.wait(clerk, job_id, timeout=60)["state"] == "submitted"
        assert sandbox.residents() == 42
        assert sandbox.count("syncCardInfo") <= 42 + in_flight  # only the calls in flight when it died


def test_a_submission_stopped_with_the_service_says_so_not_that_someone_cancelled_it(
    tmp_path: Path, start_sandbox: Any
) -> None:
    """systemctl stop sends SIGTERM to every process of the service, the submission's too."""
    sandbox = start_sandbox(latency_ms=20)
    with make_site(
        tmp_path / "state", sandbox.settings(), rate=20.0, check_workers=1, processes=True
    ) as site:
        clerk = site.client("clerk_a")
        job_id = site.upload_sample(clerk)
        pid = _submission_under_way(site, clerk, job_id, done=3)
        os.kill(pid, signal.SIGTERM)
        state = site.wait(clerk, job_id, timeout=30)
        assert state["state"] == "stopped" and "服务器停止" in state["message"], state
        assert "已取消" not in clerk.get(f"/jobs/{job_id}").text
        assert 3 <= state["counts"].get("enrolled", 0) == sandbox.residents() < 42
