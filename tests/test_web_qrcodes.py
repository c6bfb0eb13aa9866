"""The QR code ZIP of a job, fetched in the background: a click answers at once, and the ZIP comes later.

A large job's codes take minutes at the platform's rate: longer than a
browser shows a blank tab, or nginx waits for an answer (60 s).  The first
click starts the build; a page follows its progress (looking again at the
same address) until the ZIP is handed over, or says why there is none.
The platform is held by a gate in front of ``getImg`` (no sleeps); the
page is told not to wait for the ZIP (``QR_READY_SECONDS`` 0).
"""

from __future__ import annotations

import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import WORKKEY_DIR
from pipeline.platform.client import PlatformClient
from pipeline.platform.responses import CallResult
from pipeline.web import engine, pages
from tests.web_support import Site, csrf_of, edit_cell, make_site

#: Residents the sample register has enrolled once submitted.
ENROLLED = 42


class Gate:
    """getImg held after ``passing`` calls until :meth:`open` (a slow platform, without a sleep)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, passing: int) -> None:
        self.opened = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()
        original = PlatformClient.get_img

        def get_img(client: PlatformClient, **card: str) -> CallResult:
            with self._lock:
                self.calls += 1
                mine = self.calls
            if mine > passing:
                self.opened.wait(timeout=60)  # a bound only: the test opens it
            return original(client, **card)

        monkeypatch.setattr(PlatformClient, "get_img", get_img)

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def site(tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.setattr(pages, "QR_READY_SECONDS", 0.0, raising=False)
    with make_site(tmp_path / "state", sandbox.settings(), rate=500.0) as made:
        yield made


@pytest.fixture
def gate(site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    """getImg held after 10 calls (opened at the latest before the site stops)."""
    held = Gate(monkeypatch, passing=10)
    yield held
    held.open()


def _submitted(site: Site, clerk: Any) -> str:
    job_id = site.upload_sample(clerk)
    clerk.post(
        f"/jobs/{job_id}/submit", data={"csrf_token": csrf_of(clerk.get(f"/jobs/{job_id}/submit").text)}
    )
    assert site.wait(clerk, job_id)["state"] == "submitted"
    site.app.state.workspace.runner.wait_submissions()  # and its run lock released
    return job_id


def _handed_over(site: Site) -> int:
    return sum(entry.action == "下载二维码" for entry in site.store.audit_page(0, 200))


def _pictures(answer: Any) -> int:
    assert answer.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(BytesIO(answer.content)).namelist()
    assert "qrcodes.csv" in names
    return sum(name.endswith(".png") for name in names)


def _looked_at_until(client: Any, job_id: str, until: Callable[[Any], bool]) -> Any:
    """The page of the build, looked at again (as its refresh does) until ``until(answer)``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = client.get(f"/jobs/{job_id}/qrcodes.zip")
        assert answer.headers["content-type"].startswith("text/html"), answer.headers
        if until(answer):
            return answer
        time.sleep(0.02)
    raise AssertionError(f"the page never got there: {answer.text}")


def _ended(answer: Any) -> bool:
    return answer.status_code != 200


def test_a_zip_not_ready_at_once_is_a_page_following_the_build_then_the_zip(
    site: Site, sandbox: Any, gate: Gate
) -> None:
    clerk, colleague = site.client("clerk_a"), site.client("admin_a")  # the same centre
    job_id = _submitted(site, clerk)
    first = clerk.get(f"/jobs/{job_id}/qrcodes.zip")
    # At once, a page of the workspace (the clerk's centre in its header) that looks again by itself.
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/html")
    assert "正在获取二维码" in first.text and "自动开始下载" in first.text
    assert f'<meta http-equiv="refresh" content="{pages.QR_REFRESH_SECONDS}">' in first.text
    assert "甲社区卫生服务中心（455400001）" in first.text
    assert first.headers["cache-control"] == "no-store"
    progress = _looked_at_until(clerk, job_id, lambda page: f"已获取 <b>10 / {ENROLLED}</b> 人" in page.text)
    assert "<progress" in progress.text
    # A colleague's click joins the build under way: the same progress, no second round of getImg.
    joined = colleague.get(f"/jobs/{job_id}/qrcodes.zip")
    assert joined.status_code == 200 and f"10 / {ENROLLED}" in joined.text
    assert site.client("clerk_b").get(f"/jobs/{job_id}/qrcodes.zip").status_code == 404
    assert _handed_over(site) == 0  # a page is no download
    gate.open()
    assert _pictures(site.qrcodes(clerk, job_id)) == ENROLLED
    assert _pictures(site.qrcodes(colleague, job_id)) == ENROLLED
    assert sandbox.count("getImg") == ENROLLED
    assert _handed_over(site) == 2
    # Built since the job last changed: handed over again at once, nothing asked of the platform.
    again = clerk.get(f"/jobs/{job_id}/qrcodes.zip")
    assert _pictures(again) == ENROLLED and sandbox.count("getImg") == ENROLLED
    assert _handed_over(site) == 3
    assert not list((site.settings.state_dir / "web" / "jobs" / job_id).glob("qr-*"))


def test_a_build_that_fails_says_why_on_its_page_and_the_next_click_starts_again(
    site: Site, sandbox: Any
) -> None:
    clerk = site.client("clerk_a")
    job_id = _submitted(site, clerk)
    with engine.run_lock(site.settings.state_dir, "ehc run（夜间导入）"):
        first = clerk.get(f"/jobs/{job_id}/qrcodes.zip")
        assert first.status_code == 200 and "正在获取二维码" in first.text
        failed = _looked_at_until(clerk, job_id, _ended)
    assert failed.status_code == 503 and "二维码获取失败" in failed.text
    assert "夜间导入" in failed.text and "请几分钟后再点击下载二维码" in failed.text
    assert "http-equiv" not in failed.text  # said once, not looked at again and again
    assert 'href="/jobs/' + job_id + '/qrcodes.zip"' in failed.text
    assert sandbox.count("getImg") == 0 and _handed_over(site) == 0
    assert _pictures(site.qrcodes(clerk, job_id)) == ENROLLED  # the lock is free: a new click starts again
    assert sandbox.count("getImg") == ENROLLED and _handed_over(site) == 1


def test_a_platform_that_cannot_be_reached_is_said_with_what_to_do(
    tmp_path: Path, start_sandbox: Any
) -> None:
    sandbox = start_sandbox()
    settings = sandbox.settings(max_attempts=1, max_retry_seconds=0.0, connect_timeout=0.5)
    with make_site(tmp_path / "state", settings, rate=500.0) as site:
        clerk = site.client("clerk_a")
        job_id = _submitted(site, clerk)
        sandbox.stop()
        shutil.rmtree(site.settings.state_dir / WORKKEY_DIR)  # the day's work key must be asked for again
        answer = _looked_at_until(clerk, job_id, _ended)
    assert answer.status_code == 503, answer.text
    assert "暂时连不上电子健康卡平台" in answer.text and "请稍后再点击下载二维码" in answer.text
    assert "http://" not in answer.text and "Traceback" not in answer.text


def test_a_zip_with_pictures_the_platform_failed_to_give_is_fetched_again_at_the_next_click(
    site: Site, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clerk = site.client("clerk_a")
    job_id = _submitted(site, clerk)
    original = PlatformClient.get_img
    refused = threading.Event()

    def once_unanswered(client: PlatformClient, **card: str) -> CallResult:
        if not refused.is_set():
            refused.set()
            return CallResult(None, "平台无应答", {}, 1)
        return original(client, **card)

    monkeypatch.setattr(PlatformClient, "get_img", once_unanswered)
    assert _pictures(site.qrcodes(clerk, job_id)) == ENROLLED - 1  # the clerk who waited gets what there is
    assert _pictures(site.qrcodes(clerk, job_id)) == ENROLLED  # asked again: the missing one is there now
    assert _pictures(site.qrcodes(clerk, job_id)) == ENROLLED
    assert sandbox.count("getImg") == 2 * ENROLLED - 1


def test_a_zip_built_before_the_job_changed_is_built_again(site: Site, sandbox: Any) -> None:
    clerk = site.client("clerk_a")
    job_id = _submitted(site, clerk)
    assert _pictures(site.qrcodes(clerk, job_id)) == ENROLLED
    page = clerk.get(f"/jobs/{job_id}").text
    row_id = int(page.split('data-row="', 1)[1].split('"', 1)[0])  # a row not enrolled: still editable
    assert edit_cell(clerk, job_id, row_id, "xm", "张三").status_code == 200
    assert _pictures(site.qrcodes(clerk, job_id)) == ENROLLED
    assert sandbox.count("getImg") == 2 * ENROLLED


def test_a_zip_built_long_ago_is_built_again(
    site: Site, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The codes are dynamic (type 0), valid for a time the document does not give: a click long after the
    build fetches them anew rather than hand over old ones."""
    from pipeline.web import downloads

    clerk = site.client("clerk_a")
    job_id = _submitted(site, clerk)
    assert _pictures(site.qrcodes(clerk, job_id)) == ENROLLED
    assert _pictures(site.qrcodes(clerk, job_id)) == ENROLLED
    assert sandbox.count("getImg") == ENROLLED  # soon after: the same ZIP
    monkeypatch.setattr(downloads, "QR_REUSE_SECONDS", 0.0)  # as if that ZIP were long since built
    assert _pictures(site.qrcodes(clerk, job_id)) == ENROLLED
    assert sandbox.count("getImg") == 2 * ENROLLED
