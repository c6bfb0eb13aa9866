"""Shared pieces of the workspace tests: a site with two centres, logged-in clients, waiting for jobs."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from pipeline.config import Settings, SubmitSettings, WebSettings
from pipeline.web import accounts
from pipeline.web.app import create_app
from pipeline.web.auth import hash_password
from pipeline.web.store import Store

REPO = Path(__file__).resolve().parent.parent
SAMPLE_XLSX = REPO / "sample_data" / "社区居民登记表.xlsx"
SAMPLE_CSV = REPO / "sample_data" / "居民名单_GBK.csv"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

ORG_A, ORG_B = "455400001", "455400002"
PASSWORDS = {"clerk_a": "a-long-password-1", "clerk_b": "b-long-password-2", "admin_a": "admin-password-3"}


def csrf_of(html: str) -> str:
    """The CSRF token in a page."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)



def edit_cell(client: Any, job_id: str, row_id: int, field: str, value: str) -> Any:
    """POST one cell's new value to a job's grid, as the page's script does (a JSON answer)."""
    csrf = csrf_of(client.get(f"/jobs/{job_id}").text)
    return client.post(
        f"/jobs/{job_id}/edit", data={"csrf_token": csrf, "row_id": row_id, "field": field, "value": value},
        headers={"accept": "application/json"},
    )  # fmt: skip

@dataclass
class Site:
    """The workspace app over a state directory, with centres A and B and their users."""

    app: Any
    settings: Settings
    store: Store
    clients: dict[str, TestClient] = field(default_factory=dict)

    def client(self, name: str | None = None) -> TestClient:
        """A client with its own cookies, logged in as ``name`` (or anonymous)."""
        client = TestClient(self.app, follow_redirects=False)
        if name is not None:
            self.login(client, name, PASSWORDS[name])
        return client

    @staticmethod
    def login(client: TestClient, name: str, password: str) -> Any:
        """Log ``client`` in through the login form; returns the answer."""
        page = client.get("/login")
        return client.post(
            "/login",
            data={"name": name, "password": password, "csrf_token": csrf_of(page.text), "next": "/jobs"},
        )

    @staticmethod
    def csrf(client: TestClient) -> str:
        """The session's CSRF token (from the jobs page)."""
        return csrf_of(client.get("/jobs").text)

    def upload(self, client: TestClient, *files: tuple[str, bytes, str]) -> Any:
        """Upload files as the page's script does (JSON answer)."""
        return client.post(
            "/jobs", data={"csrf_token": self.csrf(client)}, files=[("files", f) for f in files],
            headers={"accept": "application/json"},
        )  # fmt: skip

    def upload_sample(self, client: TestClient, path: Path = SAMPLE_XLSX) -> str:
        """Upload a sample register and wait for its dry run; returns the job id."""
        answer = self.upload(client, (path.name, path.read_bytes(), XLSX_TYPE))
        assert answer.status_code == 200, answer.text
        job_id = str(answer.json()["jobs"][0]).rsplit("/", 1)[-1]
        self.wait(client, job_id)
        return job_id

    @staticmethod
    def state(client: TestClient, job_id: str) -> dict[str, Any]:
        """The job's state as the page polls it."""
        answer = client.get(f"/jobs/{job_id}/state", headers={"accept": "application/json"})
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    @staticmethod
    def qrcodes(client: TestClient, job_id: str, timeout: float = 90.0) -> Any:
        """The job's QR code ZIP, as a browser gets it: the page that follows its build looked at again
        (as its refresh does) until the ZIP comes; fails on a page saying the build failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = client.get(f"/jobs/{job_id}/qrcodes.zip")
            if answer.headers.get("content-type") == "application/zip":
                return answer
            assert answer.status_code == 200 and 'http-equiv="refresh"' in answer.text, answer.text
            time.sleep(0.05)
        raise AssertionError(f"the QR codes of job {job_id} are still being fetched")

    def wait(self, client: TestClient, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
        """Poll until the job is no longer busy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(client, job_id)
            if not state["busy"]:
                return state
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} still busy: {state}")


@cache
def password_hash(name: str) -> str:
    """The argon2 hash of a test user's password (made once per process)."""
    return hash_password(PASSWORDS[name])


@contextmanager
def make_site(
    state_dir: Path, platform: Any = None, *, rate: float = 500.0, processes: bool = False, **web: Any
) -> Iterator[Site]:
    """A started site with centres A and B, clerks of each and an admin of A.

    Its workers run on threads, or (``processes``) in processes as under ``ehc serve``.
    """
    settings = Settings(state_dir=state_dir, submit=SubmitSettings(rate=rate), web=WebSettings(**web))
    if platform is not None:
        settings = replace(settings, platform=platform)
    app = create_app(settings, processes=processes)
    store = Store(state_dir)
    centre_a = accounts.add_centre(store, ORG_A, "甲社区卫生服务中心")
    centre_b = accounts.add_centre(store, ORG_B, "乙社区卫生服务中心")
    # The users' argon2 hashes are made once per test process: each costs a tenth of a second.
    store.add_user("clerk_a", centre_a.id, password_hash("clerk_a"), is_admin=False)
    store.add_user("clerk_b", centre_b.id, password_hash("clerk_b"), is_admin=False)
    store.add_user("admin_a", centre_a.id, password_hash("admin_a"), is_admin=True)
    with TestClient(app, follow_redirects=False):  # runs the lifespan: the runner starts and stops
        site = Site(app, settings, store)
        yield site
        app.state.workspace.runner.wait_submissions()
