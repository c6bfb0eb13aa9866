"""The workspace in a real headless Chromium: a clerk's whole journey, and a clerk of another centre.

``ehc serve`` runs as its own process (dry runs in its worker processes, the
submission in a process of its own) against a sandbox over loopback HTTP;
Playwright drives Debian's Chromium (``/usr/bin/chromium``; ``make test``
installs it when it is missing and apt-get can).  A screenshot of each page
is saved under the test's folder; ``EHC_SCREENSHOTS=DIR`` copies them there
too (how docs/web/ is refreshed).
"""

from __future__ import annotations

import io
import os
import select
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from pipeline.web import accounts
from pipeline.web.store import Store
from tests.web_support import ORG_A, ORG_B, PASSWORDS, REPO, SAMPLE_CSV, SAMPLE_XLSX

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path(os.environ.get("EHC_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


#: The screenshots docs/web.md shows.
DOC_SHOTS = ("faults", "fixed", "progress", "not-found")


@dataclass
class Server:
    """``ehc serve`` running on a free loopback port."""

    url: str
    state: Path
    process: subprocess.Popen[str]


@pytest.fixture
def server(tmp_path: Path, start_sandbox: Any) -> Iterator[Server]:
    sandbox = start_sandbox(latency_ms=100)
    state = tmp_path / "state"
    store = Store(state)
    accounts.add_centre(store, ORG_A, "甲社区卫生服务中心")
    accounts.add_centre(store, ORG_B, "乙社区卫生服务中心")
    accounts.add_user(store, "clerk_a", ORG_A, PASSWORDS["clerk_a"])
    accounts.add_user(store, "clerk_b", ORG_B, PASSWORDS["clerk_b"])
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHC_")}
    env.update(
        EHC_STATE_DIR=str(state), EHC_APP_ID=sandbox.app_id, EHC_APP_SECRET=sandbox.app_secret,
        EHC_BASE_URL=sandbox.base_url, EHC_RATE="10",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
    )  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--port", "0"], cwd=REPO, env=env,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 60)
    line = process.stdout.readline() if ready else ""
    url = next((word for word in line.replace("：", " ").split() if word.startswith("http://")), "")
    if not url:
        process.kill()
        pytest.fail(f"ehc serve did not start: {line!r}")
    try:
        yield Server(url.rstrip("/"), state, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing ({CHROMIUM}): the browser tests need Debian's chromium package. "
            "Run `make test` (it installs it as root with apt-get) or `apt-get install -y chromium`."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Shots:
    """Screenshots of the journey, numbered, under the test's folder (and ``EHC_SCREENSHOTS``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def take(self, page: Any, name: str, *, full: bool = False) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=full)
        copy_to = os.environ.get("EHC_SCREENSHOTS")
        if copy_to and name in DOC_SHOTS:
            Path(copy_to).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(copy_to) / f"{name}.png")
        return path


def _log_in(page: Any, server: Server, name: str) -> None:
    page.goto(f"{server.url}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/jobs")


def _uploaded(browser: Any, server: Server, register: Path) -> tuple[Any, Any]:
    """A tab of clerk_a's (1366×768) that uploaded ``register`` and shows its rows to fix: (context, page)."""
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    page = context.new_page()
    _log_in(page, server, "clerk_a")
    page.set_input_files("#files", str(register))
    page.click("#upload-button")
    page.wait_for_selector("#grid", timeout=60_000)
    return context, page


def _text_lines(element: Any) -> int:
    """How many lines the text of an element takes on the screen."""
    lines: int = element.evaluate(
        """e => { const range = document.createRange(); range.selectNodeContents(e);
                  const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
                  return tops.size; }"""
    )
    return lines


def test_a_clerks_whole_journey_and_another_centre_locked_out(
    server: Server, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    shots = Shots(tmp_path / "screenshots")
    context = browser.new_context(  # a clerk's Windows PC: a 1366×768 screen
        viewport={"width": 1366, "height": 768}, accept_downloads=True, locale="zh-CN"
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(f"{server.url}/login")
    shots.take(page, "login")
    _log_in(page, server, "clerk_a")
    # Keyboard only: Tab reaches the file chooser, and sending the form without a file says so on it.
    page.focus("#upload-button")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "files"
    page.focus("#upload-button")
    page.keyboard.press("Enter")
    assert page.evaluate("document.querySelector('#files').validationMessage")
    assert page.url.endswith("/jobs")  # nothing was sent
    page.set_input_files("#files", str(SAMPLE_XLSX))
    expect(page.locator("#chosen")).to_contain_text(SAMPLE_XLSX.name)
    shots.take(page, "upload")
    page.click("#upload-button")
    page.wait_for_url("**/jobs/*")
    job_url = page.url.split("?")[0]
    page.wait_for_selector("#grid", timeout=60_000)
    expect(page.locator("#counts")).to_contain_text("校验未通过 8")
    shots.take(page, "faults")

    row_id = page.locator("#grid tr", has_text="姓名为空").get_attribute("data-row")
    row = page.locator(f'#grid tr[data-row="{row_id}"]')
    shown = int(page.locator("#shown-total").inner_text())
    row.locator("input[name=value]").fill("张三")
    row.locator("button").click()
    expect(row.locator(".row-status")).to_have_text("校验通过")
    expect(page.locator("#shown-total")).to_have_text(str(shown - 1))  # the heading's count follows
    expect(row.locator(".code")).to_have_text("—")  # the fixed row no longer shows the code it had
    expect(page.locator("#counts")).to_contain_text("校验通过 43")
    for short in ("button", ".row-status", "td:nth-child(2)"):  # not wrapped into a column of characters
        assert _text_lines(row.locator(short)) == 1, short
    row.scroll_into_view_if_needed()
    shots.take(page, "fixed")

    page.click("a[href$='/mapping']")
    expect(page.locator("h1")).to_contain_text("列对应关系")
    shots.take(page, "mapping")
    page.go_back()

    page.click("#submit-link")
    expect(page.locator("#confirm-count")).to_have_text("43")
    expect(page.locator(".confirm")).to_contain_text("甲社区卫生服务中心（455400001）")
    shots.take(page, "confirm")
    page.click("#submit-form button")
    page.wait_for_selector("#progress-panel")
    expect(page.locator("#sending")).to_contain_text("已发送", timeout=30_000)
    shots.take(page, "progress")
    page.wait_for_selector("#progress-panel", state="detached", timeout=120_000)
    expect(page.locator("#state-label")).to_have_text("已提交")
    expect(page.locator("#counts")).to_contain_text("申领成功 43")
    shots.take(page, "submitted")

    with page.expect_download() as download:
        page.click("a[data-kind=annotated]")
    saved = tmp_path / "annotated.xlsx"
    download.value.save_as(saved)
    assert download.value.suggested_filename == f"annotated_{SAMPLE_XLSX.stem}.xlsx"
    sheet = openpyxl.load_workbook(io.BytesIO(saved.read_bytes())).active
    assert sheet is not None
    names = [sheet.cell(row=r, column=2).value for r in range(1, sheet.max_row + 1)]
    assert "张三" in names  # the edit is in the clerk's own workbook

    # 43 QR codes at 10 a second take longer than a click waits: a page follows their fetching, looks
    # again by itself, and the ZIP downloads without another click.
    with page.expect_download(timeout=60_000) as fetched:
        page.click("a[data-kind=qrcodes]")
        expect(page.locator("h1")).to_have_text("正在获取二维码")
        expect(page.locator("#qr-progress")).to_contain_text("已获取")
        shots.take(page, "qrcodes")
    assert fetched.value.suggested_filename == f"qrcodes_{SAMPLE_XLSX.stem}.zip"
    fetched.value.save_as(tmp_path / "qrcodes.zip")
    pictures = zipfile.ZipFile(tmp_path / "qrcodes.zip").namelist()
    assert sum(name.endswith(".png") for name in pictures) == 43 and "qrcodes.csv" in pictures
    page.goto(f"{server.url}/jobs")
    expect(page.locator("#jobs")).to_contain_text("申领成功 43")
    for header in page.locator("#jobs th").all():
        assert _text_lines(header) == 1, header.text_content()
    shots.take(page, "history")

    # Two files, one of them not a register: the clerk is told which was not taken.
    stray = tmp_path / "会议通知.docx"
    stray.write_bytes(b"PK\x03\x04 a document")
    page.set_input_files("#files", [str(SAMPLE_XLSX), str(stray)])
    page.click("#upload-button")
    expect(page.locator("#upload-status")).to_contain_text("会议通知.docx：不支持的文件类型")
    expect(page.locator("#uploaded-link")).to_be_visible()
    shots.take(page, "partly-uploaded")
    assert not errors, errors

    # A register larger than the proxy in front takes (nginx's client_max_body_size): its page, not ours.
    proxy_page = "<html><center><h1>413 Request Entity Too Large</h1></center><hr>nginx</html>"
    page.route("**/jobs", lambda route: route.fulfill(status=413, content_type="text/html", body=proxy_page))
    page.set_input_files("#files", str(SAMPLE_XLSX))
    page.click("#upload-button")
    expect(page.locator("#upload-status")).to_have_text("文件过大：单次上传最多 50 MB。请拆分后分别上传")
    page.unroute("**/jobs")

    # A clerk of another centre: neither the job, nor its files, nor its place in the history.
    other = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    intruder = other.new_page()
    _log_in(intruder, server, "clerk_b")
    expect(intruder.locator("main")).not_to_contain_text(SAMPLE_XLSX.name)
    answer = intruder.goto(job_url)
    assert answer is not None and answer.status == 404
    expect(intruder.locator("h1")).to_have_text("找不到")
    shots.take(intruder, "not-found")
    downloads = ("/download/annotated", "/download/errors", "/download/results", "/download/csv")
    for path in (*downloads, "/qrcodes.zip", "/state", "/mapping"):
        assert intruder.request.get(job_url + path).status == 404, path
    other.close()
    context.close()
    assert len(list(shots.folder.glob("*.png"))) == shots.count >= 10


def test_every_line_of_the_rows_an_edit_checks_again_shows_their_faults_now(
    server: Server, browser: Any, tmp_path: Path
) -> None:
    """Lines of the edited row and of rows sharing its ID number: what a reload of the page would show."""
    from playwright.sync_api import expect

    from tests.submit_helpers import make_id

    x, y = make_id(1, "19800101", "440604"), make_id(2, "19810202", "440604")  # a man's, a woman's
    register = tmp_path / "名单.csv"
    lines = ["姓名,性别,民族,身份证号码,联系电话,医保类型"]
    lines += [f"{name},{gender},{people},{id_number},13900001111,城镇职工基本医疗保险"
              for name, gender, people, id_number in
              [("甲", "", "汉族", x), ("乙", "", "汉族", x), ("丙", "男", "穿青人", y)]]  # fmt: skip
    register.write_text("\n".join(lines) + "\n", encoding="utf-8")
    context, page = _uploaded(browser, server, register)
    repeat = page.locator('#grid tr[data-row="1"]')  # 乙 repeats 甲's number
    gender = page.locator('#grid tr[data-row="2"][data-source="xb"]')
    people = page.locator('#grid tr[data-row="2"][data-source="mzdm"]')
    expect(repeat.locator(".code")).to_have_text("10115")

    gender.locator("input[name=value]").fill("女")  # right now; the row still has its 民族 fault
    gender.locator("button").click()
    expect(gender.locator(".code")).to_have_text("—")
    expect(page.locator("table.codes")).not_to_contain_text("10113")  # the counts by code follow the edit
    expect(page.locator("#submit-link")).to_have_text("提交 1 行…")
    expect(gender.locator(".message")).to_contain_text("此列已无问题")
    expect(gender.locator(".message")).to_contain_text("[10123]")
    expect(people.locator(".code")).to_have_text("10123")

    repeat.locator("input[name=value]").fill(y)  # 乙 takes 丙's number: 丙 now repeats 乙
    repeat.locator("button").click()
    expect(repeat.locator(".row-status")).to_have_text("校验通过")
    expect(people.locator(".message")).to_contain_text("[10115]")
    expect(gender.locator(".message")).to_contain_text("[10115]")
    expect(page.locator("#submit-link")).to_have_text("提交 2 行…")

    repeat.locator("input[name=value]").fill(make_id(3, "19820303", "440604"))  # 丙 is alone again
    repeat.locator("button").click()
    expect(people.locator(".message")).not_to_contain_text("10115")
    # The connection drops as 民族 is saved: the cell says it was not saved (it looked saved before).
    page.route("**/edit*", lambda route: route.abort())
    people.locator("input[name=value]").fill("汉族")
    people.locator("button").click()
    expect(people.locator(".edit-error")).to_contain_text("没有保存")
    expect(people.locator(".code")).to_have_text("10123")
    page.unroute("**/edit*")
    people.locator("button").click()
    expect(people.locator(".edit-error")).to_have_count(0)
    for line in (gender, people):
        expect(line.locator(".row-status")).to_have_text("校验通过")
        expect(line.locator(".code")).to_have_text("—")
    expect(page.locator("#counts")).to_have_text("校验通过 3")
    expect(page.locator("table.codes")).to_be_hidden()
    expect(page.locator("#submit-link")).to_have_text("提交 3 行…")
    context.close()


def test_checks_under_way_on_the_job_list_in_a_narrow_window_and_over_a_lost_connection(
    server: Server, browser: Any, tmp_path: Path
) -> None:
    """Several files dropped at once land on the job list, not a job page: each line shows its check end."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    page = context.new_page()
    _log_in(page, server, "clerk_a")
    # Dragged from the clerk's folder and let go beside the box (on the list's heading): taken all the same.
    dropped = page.evaluate(
        """files => {
             const carried = new DataTransfer();
             files.forEach(([name, bytes]) => carried.items.add(new File([new Uint8Array(bytes)], name)));
             const drop = new DragEvent("drop", {dataTransfer: carried, bubbles: true, cancelable: true});
             document.querySelector("h2").dispatchEvent(drop);
             return drop.defaultPrevented; }""",
        [[path.name, list(path.read_bytes())] for path in (SAMPLE_XLSX, SAMPLE_CSV)],
    )
    assert dropped  # not left to the browser, which opens a dropped file in place of the page
    expect(page.locator("#chosen")).to_have_text(f"已选择：{SAMPLE_XLSX.name}、{SAMPLE_CSV.name}")
    page.click("#upload-button")
    page.wait_for_url("**/jobs")
    for register, rows in ((SAMPLE_XLSX, "50"), (SAMPLE_CSV, "20")):
        line = page.locator("#jobs tbody tr", has_text=register.name)
        expect(line.locator(".state")).to_have_text("已检查", timeout=60_000)  # no reload
        expect(line.locator("td.num")).to_have_text(rows)
        expect(line).to_contain_text("校验通过")
    context.close()

    # 1024×768 at 150 % zoom: nothing of the list or of the fault grid reaches past the window's edge.
    narrow = browser.new_context(viewport={"width": 683, "height": 512}, locale="zh-CN")
    page = narrow.new_page()
    _log_in(page, server, "clerk_a")
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert page.evaluate(overflow) <= 0
    page.locator("#jobs a", has_text=SAMPLE_XLSX.name).click()
    page.wait_for_selector("#grid")
    assert page.evaluate(overflow) <= 0

    # The server cannot be reached while a register is checked (restarting, a proxy's 502): the page says so.
    page.route("**/state", lambda route: route.abort())
    page.goto(f"{server.url}/jobs")
    page.set_input_files("#files", str(SAMPLE_CSV))
    page.click("#upload-button")
    page.wait_for_url("**/jobs/*")
    expect(page.locator("#state-message")).to_contain_text("暂时连不上服务器，正在重新连接")
    page.unroute("**/state")
    page.wait_for_selector("#grid", timeout=60_000)  # and carries on once it answers again
    narrow.close()


def test_two_login_tabs_and_a_long_file_name_in_a_narrow_window(
    server: Server, browser: Any, tmp_path: Path
) -> None:
    """Tabs left open when a session ended each log in; a register named in one long word (an export's
    ``2024_11_...`` name) is shown whole on its pages at 1024×768 and 150 % zoom, not cut at the edge."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 683, "height": 512}, locale="zh-CN")
    first, second = context.new_page(), context.new_page()
    first.goto(f"{server.url}/jobs")
    second.goto(f"{server.url}/account/password")
    for tab in (first, second):
        expect(tab.locator("h1")).to_have_text("登录")
    first.fill("input[name=name]", "clerk_a")
    first.fill("input[name=password]", PASSWORDS["clerk_a"])
    first.click("#login-form button[type=submit]")
    first.wait_for_url("**/jobs")  # the tab opened first logs in too

    register = tmp_path / ("2024_11_jumin_dengjibiao_" + "x" * 60 + ".csv")
    shutil.copy(SAMPLE_CSV, register)
    first.set_input_files("#files", str(register))
    first.click("#upload-button")
    first.wait_for_selector("#grid", timeout=60_000)
    overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert first.evaluate(overflow) <= 0
    first.click("#submit-link")
    expect(first.locator(".confirm")).to_be_visible()
    assert first.evaluate(overflow) <= 0
    context.close()


def test_a_cell_typed_but_not_saved_survives_the_reload_the_page_asks_for(
    server: Server, browser: Any, tmp_path: Path
) -> None:
    """The clerk logged in again in another tab, so this page's token is stale: 保存 says to reload the
    page, and after the reload the cell still holds what was typed, marked unsaved, ready to be saved."""
    from playwright.sync_api import expect

    from tests.submit_helpers import make_id

    register = tmp_path / "名单.csv"
    register.write_text(
        f"姓名,性别,民族,身份证号码,联系电话,医保类型\n甲,男,穿青人,{make_id(1, '19800101', '440604')},"
        "13900001111,城镇职工基本医疗保险\n",
        encoding="utf-8",
    )
    context, page = _uploaded(browser, server, register)
    _log_in(context.new_page(), server, "clerk_a")  # a second tab: a new session, a new token

    cell = page.locator('#grid tr[data-row="0"][data-source="mzdm"]')
    cell.locator("input[name=value]").fill("汉族")
    cell.locator("button").click()
    expect(cell.locator(".edit-error")).to_contain_text("刷新页面")
    page.reload()
    cell = page.locator('#grid tr[data-row="0"][data-source="mzdm"]')
    expect(cell.locator("input[name=value]")).to_have_value("汉族")  # not lost by the reload
    expect(cell.locator(".edit-error")).to_contain_text("没有保存")
    cell.locator("button").click()
    expect(cell.locator(".row-status")).to_have_text("校验通过")
    expect(cell.locator(".edit-error")).to_have_count(0)
    page.reload()  # saved now: nothing is put back any more
    expect(page.locator("#grid")).to_have_count(0)
    context.close()
