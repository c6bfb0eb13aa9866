"""The workspace in-process: every route, and every refusal (no session, other centre, CSRF, size, type).

The app runs with its workers on threads; submissions go to a real sandbox
over loopback HTTP.
"""

from __future__ import annotations

import base64
import codecs
import csv
import html
import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from pipeline import cli
from pipeline.state.lock import run_lock
from pipeline.web.store import Store
from tests.test_reading import LEGACY_XLS
from tests.web_support import (
    ORG_A,
    ORG_B,
    PASSWORDS,
    SAMPLE_CSV,
    SAMPLE_XLSX,
    XLSX_TYPE,
    Site,
    csrf_of,
    edit_cell,
    make_site,
)


@pytest.fixture
def site(tmp_path: Path, sandbox: Any) -> Iterator[Site]:
    """The workspace on a fresh state directory, reaching the test's sandbox."""
    with make_site(tmp_path / "state", sandbox.settings(), max_upload_mb=1.0, check_workers=1) as made:
        yield made


def _fault_row(site: Site, client: Any, job_id: str, text: str) -> tuple[int, str]:
    """(row_id, field) of the grid line whose message contains ``text``."""
    page = client.get(f"/jobs/{job_id}").text
    match = re.search(
        r'<tr data-row="(\d+)"[^>]*>(?:(?!</tr>).)*?name="field" value="(\w+)"(?:(?!</tr>).)*?'
        + re.escape(text),
        page,
        flags=re.S,
    )
    assert match, f"no grid line with {text}"
    return int(match.group(1)), match.group(2)


def _submit(site: Site, client: Any, job_id: str) -> dict[str, Any]:
    csrf = csrf_of(client.get(f"/jobs/{job_id}/submit").text)
    answer = client.post(f"/jobs/{job_id}/submit", data={"csrf_token": csrf})
    assert answer.status_code == 303, answer.text
    return site.wait(client, job_id)


# --- sessions ------------------------------------------------------------------------------------


def test_pages_without_a_session_send_to_login_and_scripts_get_401(site: Site) -> None:
    anonymous = site.client()
    for path in ("/", "/jobs", "/jobs/AAAAAAAAAAAAAAAA", "/admin/centres", "/account/password"):
        answer = anonymous.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), path
    assert (
        anonymous.get("/jobs/AAAAAAAAAAAAAAAA/state", headers={"accept": "application/json"}).status_code
        == 401
    )
    upload = anonymous.post(
        "/jobs", files=[("files", ("a.csv", b"x", "text/csv"))], headers={"accept": "application/json"}
    )
    assert upload.status_code == 401
    # A plain form sent after the session ended goes to the login page, then back to the page it came from.
    form = anonymous.post(
        "/jobs/AAAAAAAAAAAAAAAA/submit", data={"csrf_token": "x"},
        headers={"referer": "http://testserver/jobs/AAAAAAAAAAAAAAAA?x=1"},
    )  # fmt: skip
    assert form.status_code == 303 and form.headers["location"] == "/login?next=/jobs/AAAAAAAAAAAAAAAA"
    elsewhere = anonymous.post("/jobs/AAAAAAAAAAAAAAAA/cancel", headers={"referer": "http://evil.example/x"})
    assert elsewhere.status_code == 303 and elsewhere.headers["location"] == "/login?next=/jobs"
    assert site.store.jobs_count(site.store.centre_by_code(ORG_A).id) == 0  # type: ignore[union-attr]


def test_login_logout_and_a_wrong_password(site: Site) -> None:
    client = site.client()
    wrong = site.login(client, "clerk_a", "not-the-password")
    assert wrong.status_code == 401 and "用户名或密码不正确" in wrong.text
    assert site.login(client, "nobody", "whatever-password").status_code == 401
    good = site.login(client, "clerk_a", PASSWORDS["clerk_a"])
    assert good.status_code == 303 and good.headers["location"] == "/jobs"
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert client.get("/jobs").status_code == 200
    assert client.post("/logout", data={"csrf_token": site.csrf(client)}).status_code == 303
    assert client.get("/jobs").status_code == 303
    actions = [entry.action for entry in site.store.audit_page(0, 50)]
    assert {"登录", "登录失败", "退出"} <= set(actions)


def test_login_is_throttled_after_repeated_failures(site: Site) -> None:
    client = site.client()
    for _ in range(site.settings.web.login_attempts):
        assert site.login(client, "clerk_a", "wrong-password!").status_code == 401
    refused = site.login(client, "clerk_a", PASSWORDS["clerk_a"])
    assert refused.status_code == 401 and "次数过多" in refused.text
    # Another clerk from the same address (one centre behind one NAT address) still logs in.
    assert site.login(client, "clerk_b", PASSWORDS["clerk_b"]).status_code == 303


def test_a_few_typos_of_an_office_behind_one_address_pause_nobody(site: Site) -> None:
    """Four wrong logins under made-up names and a wrong current password, all from one address,
    leave every clerk there free to log in: the address's limit is far above the name's."""
    web = site.settings.web
    assert web.login_attempts_per_address >= 10 * web.login_attempts
    client = site.client("clerk_a")
    csrf = csrf_of(client.get("/account/password").text)
    new = "c-long-password-7"
    form = {"csrf_token": csrf, "current": "not-my-password", "new": new, "again": new}
    assert "当前密码不正确" in client.post("/account/password", data=form).text
    for number in range(web.login_attempts - 1):
        assert site.login(site.client(), f"clerk_{number}x", "wrong-password!").status_code == 401
    assert site.login(site.client(), "clerk_b", PASSWORDS["clerk_b"]).status_code == 303


def test_guesses_over_many_names_from_one_address_meet_the_address_limit(site: Site) -> None:
    from dataclasses import replace

    from pipeline.web.auth import Auth, LoginRefused

    auth = Auth(site.store, replace(site.settings.web, login_attempts_per_address=8))
    for number in range(8):
        with pytest.raises(LoginRefused, match="用户名或密码不正确"):
            auth.login(f"made-up-{number}", "wrong-password!", "10.0.0.7")
    with pytest.raises(LoginRefused, match="次数过多"):  # even a real user's right password, from there
        auth.login("clerk_a", PASSWORDS["clerk_a"], "10.0.0.7")
    auth.login("clerk_a", PASSWORDS["clerk_a"], "10.0.0.8")  # from elsewhere: the name is not paused


def test_guesses_sent_all_at_once_meet_the_same_limit(site: Site) -> None:
    """Each attempt is counted before its password is checked: a burst is no way around the limit."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.web.auth import Auth, LoginRefused

    auth, limit = Auth(site.store, site.settings.web), site.settings.web.login_attempts

    def guess(number: int) -> str:
        password = PASSWORDS["clerk_a"] if number == 29 else f"wrong-guess-{number}"
        try:
            auth.login("clerk_a", password, f"10.0.0.{number}")
        except LoginRefused as refusal:
            return str(refusal)
        return "logged in"

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(guess, range(30)))
    assert sum(answer == "用户名或密码不正确" for answer in answers) <= limit
    assert answers.count("logged in") <= 1
    assert sum("次数过多" in answer for answer in answers) >= 30 - limit - 1
    with pytest.raises(LoginRefused, match="次数过多"):
        auth.login("clerk_a", PASSWORDS["clerk_a"], "10.0.1.1")


def test_a_right_password_takes_back_its_count(site: Site) -> None:
    client = site.client()
    for _ in range(site.settings.web.login_attempts - 1):
        assert site.login(client, "clerk_b", "wrong-password!").status_code == 401
    for _ in range(3):  # good logins from the same address do not add up to a lockout
        assert site.login(site.client(), "clerk_a", PASSWORDS["clerk_a"]).status_code == 303
    assert site.login(client, "clerk_b", PASSWORDS["clerk_b"]).status_code == 303


def test_guessing_the_current_password_on_the_password_page_is_throttled_like_a_login(site: Site) -> None:
    """A session left open on a PC does not let anyone try passwords without the login page's limit."""
    client = site.client("clerk_a")

    def change(current: str) -> Any:
        csrf = csrf_of(client.get("/account/password").text)
        new = "c-long-password-7"
        form = {"csrf_token": csrf, "current": current, "new": new, "again": new}
        return client.post("/account/password", data=form)

    for attempt in range(site.settings.web.login_attempts):
        answer = change(f"guess-{attempt}")
        assert answer.status_code == 400 and "当前密码不正确" in answer.text
    refused = change(PASSWORDS["clerk_a"])  # even the right one, until the pause is over
    assert refused.status_code == 400 and "次数过多" in refused.text
    assert "次数过多" in site.login(site.client(), "clerk_a", PASSWORDS["clerk_a"]).text


def test_login_form_needs_its_token(site: Site) -> None:
    client = site.client()
    answer = client.post("/login", data={"name": "clerk_a", "password": PASSWORDS["clerk_a"]})
    assert answer.status_code == 403 and "页面已过期" in answer.text


def test_two_login_pages_open_at_once_both_log_in(site: Site) -> None:
    """Two tabs sent to the login page (a session that ended with both open): the one opened first
    logs in too, rather than being told its page expired."""
    client = site.client()
    first = client.get("/login?next=/jobs").text
    client.get("/login?next=/account/password")  # the second tab
    answer = client.post(
        "/login",
        data={
            "name": "clerk_a",
            "password": PASSWORDS["clerk_a"],
            "csrf_token": csrf_of(first),
            "next": "/jobs",
        },
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/jobs", answer.text


def test_an_expired_login_page_is_the_login_page_again_keeping_where_the_clerk_was_going(site: Site) -> None:
    """A login page left open past its token: the login page again, saying what to do, with the name
    typed and the page the clerk was going to kept (the password is typed again)."""
    client = site.client()
    client.get("/login?next=/account/password")
    client.cookies.clear()  # the login page's token expired (30 minutes)
    answer = client.post(
        "/login",
        data={
            "name": "clerk_a",
            "password": PASSWORDS["clerk_a"],
            "csrf_token": "old",
            "next": "/account/password",
        },
    )
    assert answer.status_code == 403 and "登录页面已过期" in answer.text and "请重新输入密码" in answer.text
    assert 'value="clerk_a"' in answer.text and PASSWORDS["clerk_a"] not in answer.text
    again = client.post(
        "/login",
        data={"name": "clerk_a", "password": PASSWORDS["clerk_a"], "csrf_token": csrf_of(answer.text),
              "next": re.search(r'name="next" value="([^"]*)"', answer.text).group(1)},  # type: ignore[union-attr]
    )  # fmt: skip
    assert again.status_code == 303 and again.headers["location"] == "/account/password"


def test_a_mistyped_password_keeps_the_page_the_clerk_was_going_to(site: Site) -> None:
    client = site.client()
    page = client.get("/login?next=/account/password").text
    wrong = client.post(
        "/login",
        data={"name": "clerk_a", "password": "not-the-password", "csrf_token": csrf_of(page),
              "next": "/account/password"},
    )  # fmt: skip
    assert wrong.status_code == 401
    assert 'name="next" value="/account/password"' in wrong.text and 'value="clerk_a"' in wrong.text
    # A password typed into the name box is not shown back in it.
    mistaken = client.post(
        "/login",
        data={"name": PASSWORDS["clerk_a"], "password": "", "csrf_token": csrf_of(page), "next": "/jobs"},
    )
    assert mistaken.status_code == 401 and PASSWORDS["clerk_a"] not in mistaken.text


def test_a_session_ends_when_idle_too_long(site: Site) -> None:
    client = site.client("clerk_a")
    assert client.get("/jobs").status_code == 200
    site.store._db().execute("UPDATE sessions SET seen = seen - 3600")
    assert client.get("/jobs").status_code == 303


def test_a_form_sent_after_the_session_ended_says_on_the_login_page_it_was_not_done(site: Site) -> None:
    """The clerk comes back from lunch and presses a button: the login page says the session ended and
    what they pressed was not done, so they do it again once logged in (not a silent login page)."""
    client = site.client("clerk_a")
    csrf = csrf_of(client.get("/account/password").text)
    site.store._db().execute("UPDATE sessions SET seen = seen - 3600")
    sent = client.post(
        "/account/password", data={"csrf_token": csrf, "current": "x", "new": "y", "again": "y"},
        headers={"referer": "http://testserver/account/password"},
    )  # fmt: skip
    assert sent.status_code == 303 and sent.headers["location"] == "/login?next=/account/password"
    page = client.get(sent.headers["location"]).text
    assert "登录已过期" in page and "没有执行" in page
    assert "登录已过期" not in client.get("/login").text  # said once

    # A link followed after the session ended: the login page says why it is shown.
    client = site.client("clerk_a")
    site.store._db().execute("UPDATE sessions SET seen = seen - 3600")
    went = client.get("/jobs")
    assert went.status_code == 303 and "登录已过期" in client.get(went.headers["location"]).text
    # Someone who never logged in is not told a session of theirs ended.
    fresh = site.client()
    assert "登录已过期" not in fresh.get(fresh.get("/jobs").headers["location"]).text


def test_a_password_change_ends_other_sessions(site: Site) -> None:
    first, second = site.client("clerk_a"), site.client("clerk_a")
    csrf = csrf_of(first.get("/account/password").text)
    short = first.post("/account/password", data={"csrf_token": csrf, "current": PASSWORDS["clerk_a"],
                                                  "new": "short", "again": "short"})  # fmt: skip
    assert short.status_code == 400 and "至少" in short.text
    changed = first.post(
        "/account/password",
        data={"csrf_token": csrf, "current": PASSWORDS["clerk_a"], "new": "another-password-9",
              "again": "another-password-9"},
    )  # fmt: skip
    assert changed.status_code == 303
    assert second.get("/jobs").status_code == 303
    assert site.login(site.client(), "clerk_a", "another-password-9").status_code == 303


# --- the clerk's journey ----------------------------------------------------------------------------


def test_an_edit_says_how_many_of_the_faults_the_page_shows_are_left(site: Site) -> None:
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    page = clerk.get(f"/jobs/{job_id}?code=10114").text
    shown = int(re.search(r'<span id="shown-total">(\d+)</span>', page).group(1))  # type: ignore[union-attr]
    assert shown >= 1
    row_id, field = _fault_row(site, clerk, job_id, "姓名为空")
    csrf = csrf_of(page)
    answer = clerk.post(
        f"/jobs/{job_id}/edit?code=10114", data={"csrf_token": csrf, "row_id": row_id, "field": field,
        "value": "张三"}, headers={"accept": "application/json"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["shown"] == shown - 1  # the page's filter: 10114 only
    everything = edit_cell(clerk, job_id, row_id, field, "李四")  # no filter: every error of the job
    errors = sum(everything.json()["codes"][i]["n"] for i in range(len(everything.json()["codes"])))
    assert everything.json()["shown"] == errors


def test_upload_fix_submit_download(site: Site, sandbox: Any) -> None:
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    page = clerk.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert "校验未通过 <b>8</b>" in page.text and "校验通过 <b>42</b>" in page.text
    assert "10114" in page.text and "姓名不能为空" in page.text  # the code with the platform's description
    filtered = clerk.get(f"/jobs/{job_id}?code=10111").text
    assert filtered.count('<tr data-row="') == 2
    by_column = clerk.get(f"/jobs/{job_id}?column=xm").text
    assert by_column.count('<tr data-row="') == 1 and "姓名为空" in by_column
    # The column filter names the columns left to right, as the clerk's sheet has them.
    choices = re.search(r'<select name="column">(.*?)</select>', page.text, flags=re.S)
    assert choices is not None
    assert re.findall(r">([^<]+)</option>", choices.group(1))[1:] == [
        "姓名", "性别", "民族", "身份证号", "联系电话", "医疗费用支付方式"
    ]

    row_id, field = _fault_row(site, clerk, job_id, "姓名为空")
    fixed = edit_cell(clerk, job_id, row_id, field, "张三")
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["status"] == "valid" and fixed.json()["counts"] == {"invalid": 7, "valid": 43}
    # The answer the page reads: other rows checked again come under "others", once.
    assert set(fixed.json()) >= {"row_id", "faults", "others", "counts"} and "changed" not in fixed.json()
    still = edit_cell(clerk, job_id, *_fault_row(site, clerk, job_id, "1381234567"), "1381234567X")
    assert still.json()["status"] == "invalid" and still.json()["faults"][0]["code"] == 10110
    audit = [e for e in site.store.audit_page(0, 50) if e.action == "修改单元格"]
    assert len(audit) == 2 and audit[0].user_name == "clerk_a"

    assert '将把 <strong id="confirm-count">43</strong> 行' in clerk.get(f"/jobs/{job_id}/submit").text
    assert "甲社区卫生服务中心（455400001）" in clerk.get(f"/jobs/{job_id}/submit").text
    rate = site.settings.submit.rate
    assert f"每秒最多发送 {rate:g} 人" in clerk.get(f"/jobs/{job_id}/submit").text  # 20 人, not 20.0 人
    state = _submit(site, clerk, job_id)
    assert state["state"] == "submitted" and state["counts"] == {"enrolled": 43, "invalid": 7}
    assert state["sending"]["done"] == 43 and state["sending"]["counts"] == {"enrolled": 43}
    assert sandbox.residents() == 43
    cards = [json.loads(row[0]) for row in sandbox.query("SELECT card FROM cards")]
    assert len(cards) == 43 and {card["orgCode"] for card in cards} == {ORG_A}  # the centre's own code

    annotated = clerk.get(f"/jobs/{job_id}/download/annotated")
    assert annotated.status_code == 200 and "annotated_" in annotated.headers["content-disposition"]
    sheet = openpyxl.load_workbook(io.BytesIO(annotated.content)).active
    assert "张三" in [cell.value for row in sheet.iter_rows() for cell in row]
    results = clerk.get(f"/jobs/{job_id}/download/csv")
    rows = list(csv.DictReader(io.StringIO(results.content.decode("utf-8-sig"))))
    assert len(rows) == 50 and {r["orgCode"] for r in rows} == {ORG_A}
    assert sum(r["status"] == "enrolled" for r in rows) == 43
    assert {r["source_file"] for r in rows} == {SAMPLE_XLSX.name}
    for kind in ("errors", "results"):
        answer = clerk.get(f"/jobs/{job_id}/download/{kind}")
        assert answer.status_code == 200 and answer.content[:2] == b"PK"
    qr = site.qrcodes(clerk, job_id)
    assert qr.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(qr.content)).namelist()
    assert sum(name.endswith(".png") for name in names) == 43 and "qrcodes.csv" in names
    history = clerk.get("/jobs").text
    assert SAMPLE_XLSX.name in history and "已提交" in history and "申领成功 43" in history
    # The mapping of a submitted job is shown, not offered for a change the save would refuse.
    mapping = clerk.get(f"/jobs/{job_id}/mapping").text
    assert "保存并重新检查" not in mapping and "列对应关系不能再修改" in mapping


def test_a_resident_enrolled_by_ehc_submit_is_not_sent_again_from_the_web(
    site: Site, sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EHC_STATE_DIR", str(site.settings.state_dir))
    monkeypatch.setenv("EHC_APP_ID", sandbox.app_id)
    monkeypatch.setenv("EHC_APP_SECRET", sandbox.app_secret)
    monkeypatch.setenv("EHC_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("EHC_ORG_CODE", ORG_A)
    monkeypatch.setenv("EHC_RATE", "500")
    assert cli.main(["submit", str(SAMPLE_XLSX), "--out", str(tmp_path / "cli")]) == 1
    calls = sandbox.count("syncCardInfo")
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    state = _submit(site, clerk, job_id)
    assert sandbox.count("syncCardInfo") == calls  # nothing sent twice
    assert state["counts"] == {"already_enrolled": 42, "invalid": 8}


def test_a_submission_waits_while_another_run_holds_the_lock(site: Site, sandbox: Any) -> None:
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    with run_lock(site.settings.state_dir, command="ehc serve 提交 乙中心_机密名单.csv"):
        csrf = csrf_of(clerk.get(f"/jobs/{job_id}/submit").text)
        assert clerk.post(f"/jobs/{job_id}/submit", data={"csrf_token": csrf}).status_code == 303
        for _ in range(200):
            state = site.state(clerk, job_id)
            if state["message"]:
                break
        assert state["state"] == "waiting" and "排队等待" in state["message"]
        page = clerk.get(f"/jobs/{job_id}").text
        assert "排队等待" in page
        for private in ("乙中心", "机密名单", "进程", str(site.settings.state_dir)):  # another centre's run
            assert private not in state["message"] and private not in page
        assert sandbox.count("syncCardInfo") == 0
    assert site.wait(clerk, job_id)["state"] == "submitted"
    assert sandbox.count("syncCardInfo") == 42


def test_cancel_stops_new_calls_and_keeps_what_was_done(tmp_path: Path, sandbox: Any) -> None:
    with make_site(tmp_path / "slow", sandbox.settings(), rate=10.0) as site:
        _cancel_and_resubmit(site, sandbox)


def _cancel_and_resubmit(site: Site, sandbox: Any) -> None:
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    csrf = csrf_of(clerk.get(f"/jobs/{job_id}/submit").text)
    clerk.post(f"/jobs/{job_id}/submit", data={"csrf_token": csrf})
    for _ in range(400):
        if site.state(clerk, job_id)["sending"].get("done", 0) >= 3:
            break
    answer = clerk.post(
        f"/jobs/{job_id}/cancel", data={"csrf_token": csrf}, headers={"accept": "application/json"}
    )
    assert answer.status_code == 200
    state = site.wait(clerk, job_id)
    enrolled = state["counts"].get("enrolled", 0)
    assert state["state"] == "cancelled" and 3 <= enrolled < 42
    assert sandbox.residents() == enrolled
    assert state["counts"].get("failed", 0) == 42 - enrolled  # never sent: "已中断，未发送"
    assert "命令" not in clerk.get(f"/jobs/{job_id}").text  # the page's advice, not the command line's
    download = clerk.get(f"/jobs/{job_id}/download/csv").content.decode("utf-8-sig")
    assert "再次提交" in download and "命令" not in download  # the downloads say what the page says
    never_sent = [row for row in csv.DictReader(io.StringIO(download)) if "未发送" in row["message"]]
    assert never_sent and all("再次提交会" in row["message"] for row in never_sent)  # and what to do
    again = _submit(site, clerk, job_id)
    assert again["counts"]["enrolled"] + again["counts"]["already_enrolled"] == 42
    assert sandbox.count("syncCardInfo") == 42  # the first ones were not sent again


# --- mapping ----------------------------------------------------------------------------------------


def _csv_with_header(phone_header: str) -> bytes:
    text = SAMPLE_CSV.read_bytes().decode("gb18030")
    return text.replace("手机号码", phone_header).encode("gb18030")


def test_a_corrected_mapping_is_kept_for_the_centre(site: Site) -> None:
    clerk_a, clerk_b = site.client("clerk_a"), site.client("clerk_b")
    upload = site.upload(clerk_a, ("居民名单.csv", _csv_with_header("居民手机XX"), "text/csv"))
    job_id = upload.json()["jobs"][0].rsplit("/", 1)[-1]
    state = site.wait(clerk_a, job_id)
    assert state["state"] == "needs_mapping" and "联系电话" in state["message"]
    # The advice is the page's, not the command line's: a clerk has no --mapping option.
    assert "--mapping" not in state["message"] and "列对应关系" in state["message"]
    assert "--mapping" not in clerk_a.get(f"/jobs/{job_id}").text
    page = clerk_a.get(f"/jobs/{job_id}/mapping").text
    assert "--mapping" not in page
    select = re.search(r'<select name="(t0c\d+)" aria-label="居民手机XX">', page)
    assert select
    chosen = r'<select name="(t0c\d+)"[^>]*>.*?<option value="([^"]*)"[^>]*selected'
    form = dict(re.findall(chosen, page, flags=re.S))
    form[select.group(1)] = "brdh"
    answer = clerk_a.post(f"/jobs/{job_id}/mapping", data={"csrf_token": csrf_of(page), **form})
    assert answer.status_code == 303
    assert site.wait(clerk_a, job_id)["state"] == "checked"
    second = site.upload(clerk_a, ("下月名单.csv", _csv_with_header("居民手机XX"), "text/csv"))
    assert site.wait(clerk_a, second.json()["jobs"][0].rsplit("/", 1)[-1])["state"] == "checked"
    other = site.upload(clerk_b, ("名单.csv", _csv_with_header("居民手机XX"), "text/csv"))
    assert site.wait(clerk_b, other.json()["jobs"][0].rsplit("/", 1)[-1])["state"] == "needs_mapping"


def test_a_mapping_giving_one_field_two_columns_is_the_mapping_page_again_naming_both(site: Site) -> None:
    """Two columns chosen for one field: the mapping page again, with the clerk's choices as they made
    them and the field and both columns named (not an error page whose only link leaves them behind)."""
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    page = clerk.get(f"/jobs/{job_id}/mapping").text
    chosen = r'<select name="(t0c\d+)"[^>]*>.*?<option value="([^"]*)"[^>]*selected'
    form = dict(re.findall(chosen, page, flags=re.S))
    assert form["t0c17"] == "dzc" and form["t0c18"] == ""  # 村/街/路, 备注
    form.update(t0c0="ignore", t0c18="dzc")
    answer = clerk.post(f"/jobs/{job_id}/mapping", data={"csrf_token": csrf_of(page), **form})
    assert answer.status_code == 400 and 'id="mapping-form"' in answer.text
    said = re.search(r'<p class="error" role="alert">([^<]*)</p>', answer.text)
    assert said and all(part in said.group(1) for part in ("村/街/路", "第 18 列", "第 19 列", "备注"))
    again = dict(re.findall(chosen, answer.text, flags=re.S))
    assert again["t0c0"] == "ignore" and again["t0c18"] == "dzc"  # as the clerk chose them
    assert site.state(clerk, job_id)["state"] == "checked"  # nothing was saved or checked again


def test_a_mapping_sent_from_a_page_gone_stale_comes_back_with_the_choices_and_a_fresh_token(
    site: Site,
) -> None:
    """The page's token no longer the session's (a login in another tab): the choices were lost on an
    error page; now nothing is saved and the mapping page comes back as the clerk left it."""
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    page = clerk.get(f"/jobs/{job_id}/mapping").text
    chosen = r'<select name="(t0c\d+)"[^>]*>.*?<option value="([^"]*)"[^>]*selected'
    form = dict(re.findall(chosen, page, flags=re.S))
    form.update(t0c0="ignore", t0c18="")
    stale = clerk.post(f"/jobs/{job_id}/mapping", data={"csrf_token": "a-token-of-another-session", **form})
    assert stale.status_code == 403 and 'id="mapping-form"' in stale.text and "页面已过期" in stale.text
    again = dict(re.findall(chosen, stale.text, flags=re.S))
    assert again["t0c0"] == "ignore" and again == form  # as the clerk chose them
    assert site.state(clerk, job_id)["state"] == "checked"  # nothing was saved or checked again
    fresh = csrf_of(stale.text)
    assert fresh == site.csrf(clerk)  # the page now carries the session's token: saving works
    saved = clerk.post(f"/jobs/{job_id}/mapping", data={"csrf_token": fresh, **again})
    assert saved.status_code == 303


def test_buttons_pressed_on_a_page_gone_stale_show_the_page_again_with_a_fresh_token(site: Site) -> None:
    """确认提交, 取消提交 and 修改密码 sent from a page whose token is no longer the session's (a login in
    another tab) were an error page; now nothing is done, and the page they came from is shown again,
    saying so, with the session's token: pressing again works."""
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    stale = clerk.post(f"/jobs/{job_id}/submit", data={"csrf_token": "a-token-of-another-session"})
    assert stale.status_code == 403 and 'id="submit-form"' in stale.text and "没有执行" in stale.text
    assert site.state(clerk, job_id)["state"] == "checked"  # nothing was sent
    assert csrf_of(stale.text) == site.csrf(clerk)
    site.store.update_job(job_id, state="submitting")  # as if a submission were running
    try:
        cancel = clerk.post(f"/jobs/{job_id}/cancel", data={"csrf_token": "a-token-of-another-session"})
        assert cancel.status_code == 403 and "没有执行" in cancel.text
        assert f'action="/jobs/{job_id}/cancel"' in cancel.text  # the job's page, its button there
        job = site.store.job(job_id, site.store.centre_by_code(ORG_A).id)  # type: ignore[union-attr]
        assert job is not None and not job.cancel  # not cancelled
        scripted = clerk.post(
            f"/jobs/{job_id}/cancel", data={"csrf_token": "x"}, headers={"accept": "application/json"}
        )
        assert scripted.status_code == 403 and "页面已过期" in scripted.json()["error"]
    finally:
        site.store.update_job(job_id, state="checked")
    new = "a-new-password-71"
    typed = {"csrf_token": "x", "current": PASSWORDS["clerk_a"], "new": new, "again": new}
    password = clerk.post("/account/password", data=typed)
    assert password.status_code == 403 and "没有执行" in password.text and new not in password.text
    assert csrf_of(password.text) == site.csrf(clerk)
    assert site.login(site.client(), "clerk_a", PASSWORDS["clerk_a"]).status_code == 303  # unchanged


def test_a_recognised_column_set_to_no_field_is_kept_as_the_clerks_own_column(site: Site) -> None:
    """（不使用，保留为附加列）keeps the column in the reports as the clerk's own; it is not dropped."""
    clerk_a = site.client("clerk_a")
    upload = site.upload(clerk_a, ("居民名单.csv", SAMPLE_CSV.read_bytes(), "text/csv"))
    job_id = upload.json()["jobs"][0].rsplit("/", 1)[-1]
    assert site.wait(clerk_a, job_id)["state"] == "checked"
    page = clerk_a.get(f"/jobs/{job_id}/mapping").text
    chosen = r'<select name="(t0c\d+)"[^>]*>.*?<option value="([^"]*)"[^>]*selected'
    form = dict(re.findall(chosen, page, flags=re.S))
    select = re.search(r'<select name="(t0c\d+)" aria-label="婚姻状况">', page)
    assert select and form[select.group(1)] == "fyzhdm"
    form[select.group(1)] = ""  # （不使用，保留为附加列）
    answer = clerk_a.post(f"/jobs/{job_id}/mapping", data={"csrf_token": csrf_of(page), **form})
    assert answer.status_code == 303
    assert site.wait(clerk_a, job_id)["state"] == "checked"
    results = list(
        csv.DictReader(io.StringIO(clerk_a.get(f"/jobs/{job_id}/download/csv").text.lstrip("\ufeff")))
    )
    assert {row["婚姻状况"] for row in results} >= {"其他"}  # kept, under the clerk's own header
    assert {row["fyzhdm"] for row in results} == {""}  # and read as no field
    page = clerk_a.get(f"/jobs/{job_id}/mapping").text
    shown = re.search(r'aria-label="婚姻状况">.*?<option value="([^"]*)"[^>]*selected', page, flags=re.S)
    assert shown and shown.group(1) == ""  # the page shows the choice the clerk made


def test_a_mapping_form_without_a_column_leaves_that_column_as_it_was(site: Site) -> None:
    """Only a column the form names is changed: a cut-short form never turns the centre's 姓名 off."""
    clerk_a = site.client("clerk_a")
    upload = site.upload(clerk_a, ("居民名单.csv", _csv_with_header("居民手机XX"), "text/csv"))
    job_id = upload.json()["jobs"][0].rsplit("/", 1)[-1]
    assert site.wait(clerk_a, job_id)["state"] == "needs_mapping"
    page = clerk_a.get(f"/jobs/{job_id}/mapping").text
    select = re.search(r'<select name="(t0c\d+)" aria-label="居民手机XX">', page)
    assert select
    form = {"csrf_token": csrf_of(page), select.group(1): "brdh"}  # no other column named
    answer = clerk_a.post(f"/jobs/{job_id}/mapping", data=form)
    assert answer.status_code == 303
    assert site.wait(clerk_a, job_id)["state"] == "checked"
    centre = site.store.centre_by_code(ORG_A)
    assert centre is not None
    assert site.store.centre_columns(centre.id) == {"居民手机XX": "brdh"}


# --- refusals ---------------------------------------------------------------------------------------


def test_another_centres_job_is_not_found_whatever_the_url(site: Site) -> None:
    clerk_a, clerk_b = site.client("clerk_a"), site.client("clerk_b")
    job_id = site.upload_sample(clerk_a)
    csrf_b = site.csrf(clerk_b)
    gets = ["", "/state", "/mapping", "/submit", "/download/annotated", "/download/errors",
            "/download/results", "/download/csv", "/qrcodes.zip"]  # fmt: skip
    for path in gets:
        answer = clerk_b.get(f"/jobs/{job_id}{path}")
        assert answer.status_code == 404, path
        assert SAMPLE_XLSX.name not in answer.text
    for path in ("/edit", "/submit", "/cancel", "/mapping"):
        data = {"csrf_token": csrf_b, "row_id": "0", "field": "xm", "value": "x"}
        assert clerk_b.post(f"/jobs/{job_id}{path}", data=data).status_code == 404, path
    assert job_id not in clerk_b.get("/jobs").text
    assert site.state(clerk_a, job_id)["state"] == "checked" and not site.store.edits(job_id)
    assert clerk_b.get("/jobs/../../etc/passwd").status_code == 404


def test_state_changes_need_the_csrf_token(site: Site) -> None:
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    attempts = {
        "/jobs": {"files": [("files", (SAMPLE_XLSX.name, SAMPLE_XLSX.read_bytes(), XLSX_TYPE))]},
        f"/jobs/{job_id}/edit": {"data": {"row_id": "6", "field": "xm", "value": "张三"}},
        f"/jobs/{job_id}/submit": {"data": {}},
        f"/jobs/{job_id}/mapping": {"data": {}},
        "/logout": {"data": {}},
        "/account/password": {"data": {"current": PASSWORDS["clerk_a"], "new": "x" * 12, "again": "x" * 12}},
    }
    for path, kwargs in attempts.items():
        answer = clerk.post(path, **kwargs)  # type: ignore[arg-type]
        assert answer.status_code == 403 and "页面已过期" in answer.text, path
        forged = clerk.post(path, headers={"x-csrf-token": "forged"}, **kwargs)  # type: ignore[arg-type]
        assert forged.status_code == 403, path
    assert site.store.jobs_count(site.store.centre_by_code(ORG_A).id) == 1  # type: ignore[union-attr]
    assert not site.store.edits(job_id) and site.state(clerk, job_id)["state"] == "checked"
    assert clerk.get("/jobs").status_code == 200  # still logged in


def test_a_cross_site_post_is_refused(site: Site) -> None:
    clerk = site.client("clerk_a")
    answer = clerk.post(
        "/logout", data={"csrf_token": site.csrf(clerk)}, headers={"origin": "http://evil.example"}
    )
    assert answer.status_code == 403
    assert clerk.get("/jobs").status_code == 200


def test_an_oversized_upload_is_refused_with_the_limit(site: Site) -> None:
    clerk = site.client("clerk_a")
    big = b"\xe5\xa7\x93\xe5\x90\x8d," * (1024 * 1024 // 7 + 1000)
    answer = site.upload(clerk, ("big.csv", big, "text/csv"))
    assert (
        answer.status_code == 413
        and "文件过大" in answer.json()["error"]
        and "1 MB" in answer.json()["error"]
    )
    huge = site.upload(clerk, ("huge.csv", big * 3, "text/csv"))  # refused by its Content-Length, unread
    assert huge.status_code == 413 and "单次上传最多 1 MB" in huge.json()["error"]
    assert site.store.jobs_count(site.store.centre_by_code(ORG_A).id) == 0  # type: ignore[union-attr]


def test_the_same_register_uploaded_again_names_the_earlier_job_of_the_centre(site: Site) -> None:
    """A clerk unsure the first upload went through sends the file again: the new job's page names the
    earlier one, so the clerk carries on there instead of fixing and submitting the same rows twice;
    another centre's upload of a file with the same name is never named."""
    clerk_a, clerk_b = site.client("clerk_a"), site.client("clerk_b")
    first = site.upload_sample(clerk_a, SAMPLE_CSV)
    elsewhere = site.upload_sample(clerk_b, SAMPLE_CSV)
    # Uploaded this morning (times are kept to the second: two within one are not told apart).
    site.store._db().execute(
        "UPDATE jobs SET created_at = '2026-01-05T08:30:00+08:00' WHERE id IN (?, ?)", (first, elsewhere)
    )
    second = site.upload_sample(clerk_a, SAMPLE_CSV)
    page = clerk_a.get(f"/jobs/{second}").text
    said = re.search(r'<p class="notice" id="same-upload">(.*?)</p>', page, flags=re.S)
    assert said and f'href="/jobs/{first}"' in said.group(1) and "上传过" in said.group(1)
    assert elsewhere not in page
    assert 'id="same-upload"' not in clerk_a.get(f"/jobs/{first}").text
    assert 'id="same-upload"' not in clerk_b.get(f"/jobs/{elsewhere}").text
    # The same bytes under another name are the same register; other bytes of its name and size are not.
    body = SAMPLE_CSV.read_bytes()
    # Uploaded an hour later than the first (within one second of the next, it would not be told apart).
    later = "UPDATE jobs SET created_at = '2026-01-05T09:30:00+08:00' WHERE id = ?"
    site.store._db().execute(later, [second])
    renamed = str(site.upload(clerk_a, ("再次导出.csv", body, "text/csv")).json()["jobs"][0]).rsplit("/")[-1]
    site.wait(clerk_a, renamed)
    page = clerk_a.get(f"/jobs/{renamed}").text
    said = re.search(r'<p class="notice" id="same-upload">(.*?)</p>', page, flags=re.S)
    assert said and f'href="/jobs/{second}"' in said.group(1)
    other = body.replace("居民".encode("gb18030"), "住户".encode("gb18030"), 1)
    assert len(other) == len(body) and other != body
    answer = site.upload(clerk_a, (SAMPLE_CSV.name, other, "text/csv"))
    lookalike = str(answer.json()["jobs"][0]).rsplit("/")[-1]
    site.wait(clerk_a, lookalike)
    assert 'id="same-upload"' not in clerk_a.get(f"/jobs/{lookalike}").text


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("report.pdf", b"%PDF-1.7 ...", "不支持的文件类型"),
        ("register.xlsx", b"%PDF-1.7 not a workbook", "与扩展名"),
        ("register.xls", b"\x89PNG\r\n\x1a\n a picture", "与扩展名"),
        ("register.csv", b"\x7fELF\x02\x01\x01\x00\x00\x00", "不是文本"),
        ("empty.csv", b"", "空的"),
    ],
)
def test_a_wrong_file_type_is_refused(site: Site, name: str, content: bytes, reason: str) -> None:
    clerk = site.client("clerk_a")
    answer = site.upload(clerk, (name, content, "application/octet-stream"))
    assert answer.status_code == 415 and reason in answer.json()["error"]
    assert site.store.jobs_count(site.store.centre_by_code(ORG_A).id) == 0  # type: ignore[union-attr]


def test_a_utf16_register_is_checked_as_its_utf8_twin(site: Site) -> None:
    """Excel's "Unicode text" (UTF-16 with a BOM) and a UTF-16 export without one are read, not refused."""
    clerk = site.client("clerk_a")
    text = SAMPLE_CSV.read_bytes().decode("gb18030")
    states = []
    for name, content in [
        (SAMPLE_CSV.name, SAMPLE_CSV.read_bytes()),
        ("unicode.txt", codecs.BOM_UTF16_LE + text.replace(",", "\t").encode("utf-16-le")),
        ("export.csv", text.encode("utf-16-le")),
    ]:
        answer = site.upload(clerk, (name, content, "text/csv"))
        assert answer.status_code == 200, answer.text
        state = site.wait(clerk, answer.json()["jobs"][0].rsplit("/", 1)[-1])
        assert state["state"] == "checked", (name, state)
        states.append({key: value for key, value in state.items() if key in ("counts", "rows", "problems")})
    assert states[0] and states[1] == states[0] and states[2] == states[0]


def test_a_web_systems_export_named_xls_is_checked_with_its_annotated_copy(site: Site) -> None:
    """A web system's "导出Excel" is an HTML table named .xls: read as Excel shows it, not refused."""
    clerk = site.client("clerk_a")
    rows = list(csv.reader(io.StringIO(SAMPLE_CSV.read_bytes().decode("gb18030"))))
    table = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    page = f'<html><head><meta charset="utf-8"></head><body><table>{table}</table></body></html>'.encode()
    uploads = ((SAMPLE_CSV.name, SAMPLE_CSV.read_bytes()), ("导出.xls", page))
    answers = [site.upload(clerk, (name, content, "application/vnd.ms-excel")) for name, content in uploads]
    states = [site.wait(clerk, a.json()["jobs"][0].rsplit("/", 1)[-1]) for a in answers]
    assert [s["state"] for s in states] == ["checked", "checked"], states
    assert states[1].get("counts") == states[0].get("counts") and states[0].get("counts")
    job_id = answers[1].json()["jobs"][0].rsplit("/", 1)[-1]
    copy = clerk.get(f"/jobs/{job_id}/download/annotated")
    assert copy.status_code == 200 and "说明" in openpyxl.load_workbook(io.BytesIO(copy.content)).sheetnames


def test_a_workbook_under_the_other_workbook_extension_is_read_as_ehc_validate_reads_it(site: Site) -> None:
    """An xls exported under an .xlsx name is read; a password-protected xlsx (OLE2) is said to be so."""
    clerk = site.client("clerk_a")
    legacy = zlib.decompress(base64.b64decode("".join(LEGACY_XLS)))
    protected = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4096)  # an OLE2 file with no workbook in it
    for name, content, state, said in [
        ("导出.xlsx", legacy, "needs_mapping", "医疗费用支付方式"),  # read: only a column is missing
        ("名单.xls", SAMPLE_XLSX.read_bytes(), "checked", ""),
        ("加密.xlsx", protected, "unreadable", "加密"),
    ]:
        answer = site.upload(clerk, (name, content, "application/octet-stream"))
        assert answer.status_code == 200, answer.text
        job_id = answer.json()["jobs"][0].rsplit("/", 1)[-1]
        job = site.wait(clerk, job_id)
        assert job["state"] == state and said in job["message"], (name, job)
        if state == "checked":  # its annotated copy too is made from what it is, not what it is called
            assert 'data-kind="annotated"' in clerk.get(f"/jobs/{job_id}").text
            copy = clerk.get(f"/jobs/{job_id}/download/annotated")
            assert copy.status_code == 200, copy.text
            book = openpyxl.load_workbook(io.BytesIO(copy.content))
            marked = [c for r in book.worksheets[0].iter_rows() for c in r if c.comment]
            assert "说明" in book.sheetnames and marked


def test_no_link_to_an_annotated_copy_a_register_cannot_have(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV longer than an annotated copy may be: its page offers the other reports only."""
    from pipeline.reports import annotate

    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk, SAMPLE_CSV)
    assert site.state(clerk, job_id)["state"] == "checked"
    assert 'data-kind="annotated"' in clerk.get(f"/jobs/{job_id}").text
    monkeypatch.setattr(annotate, "CSV_ROW_LIMIT", 2)
    page = clerk.get(f"/jobs/{job_id}").text
    assert 'data-kind="annotated"' not in page and 'data-kind="errors"' in page
    refused = clerk.get(f"/jobs/{job_id}/download/annotated")
    assert refused.status_code == 404 and "errors.xlsx" in refused.text


def test_an_unreadable_register_says_why(site: Site) -> None:
    clerk = site.client("clerk_a")
    answer = site.upload(clerk, ("broken.xlsx", b"PK\x03\x04" + b"\x00" * 200, XLSX_TYPE))
    state = site.wait(clerk, answer.json()["jobs"][0].rsplit("/", 1)[-1])
    assert state["state"] == "unreadable" and "broken.xlsx" in state["message"]


def test_edits_are_refused_on_enrolled_rows_and_unknown_fields(site: Site) -> None:
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    assert edit_cell(clerk, job_id, 0, "password", "x").status_code == 409
    assert edit_cell(clerk, job_id, 999, "xm", "x").status_code == 404
    assert edit_cell(clerk, job_id, 0, "xm", "x" * 300).status_code == 409
    _submit(site, clerk, job_id)
    refused = edit_cell(clerk, job_id, 0, "xm", "改名")
    assert refused.status_code == 409 and "申领成功" in refused.json()["error"]


# --- admin ----------------------------------------------------------------------------------------


def test_admin_pages_are_for_admins_only(site: Site) -> None:
    clerk, admin = site.client("clerk_a"), site.client("admin_a")
    for path in ("/admin/centres", "/admin/users", "/admin/audit"):
        assert clerk.get(path).status_code == 403, path
        assert admin.get(path).status_code == 200, path
    csrf = site.csrf(clerk)
    assert (
        clerk.post(
            "/admin/centres", data={"csrf_token": csrf, "org_code": "99990000", "name": "x"}
        ).status_code
        == 403
    )
    csrf = site.csrf(admin)
    added = admin.post("/admin/centres", data={"csrf_token": csrf, "org_code": "455400003", "name": "丙中心"})
    assert added.status_code == 303 and site.store.centre_by_code("455400003") is not None
    bad = admin.post("/admin/centres", data={"csrf_token": csrf, "org_code": "no!", "name": "丁中心"})
    assert bad.status_code == 400 and "机构代码" in bad.text
    assert 'value="no!"' in bad.text and 'value="丁中心"' in bad.text  # the form keeps what was typed
    short = admin.post("/admin/users", data={"csrf_token": csrf, "name": "clerk_d", "org_code": "455400003",
                                             "password": "short-9", "admin": "1"})  # fmt: skip
    assert short.status_code == 400 and 'value="clerk_d"' in short.text and "short-9" not in short.text
    assert 'value="455400003" selected' in short.text and 'value="1" checked' in short.text
    typed = {"csrf_token": "x", "name": "clerk_e", "org_code": "455400003", "password": "e-long-password-6"}
    stale = admin.post("/admin/users", data=typed)
    assert stale.status_code == 403 and "页面已过期" in stale.text and 'value="clerk_e"' in stale.text
    assert "e-long-password-6" not in stale.text and site.store.user_by_name("clerk_e") is None
    assert csrf_of(stale.text) == csrf  # the page now carries the session's token
    centre = {"csrf_token": "", "org_code": "455400009", "name": "戊"}
    stale_centre = admin.post("/admin/centres", data=centre)
    assert stale_centre.status_code == 403 and 'value="455400009"' in stale_centre.text
    assert site.store.centre_by_code("455400009") is None
    user = admin.post("/admin/users", data={"csrf_token": csrf, "name": "clerk_c", "org_code": "455400003",
                                            "password": "c-long-password-4"})  # fmt: skip
    assert user.status_code == 303
    assert site.login(site.client(), "clerk_c", "c-long-password-4").status_code == 303
    target = site.store.user_by_name("clerk_b")
    assert target is not None
    reset = admin.post(
        f"/admin/users/{target.id}/password", data={"csrf_token": csrf, "password": "b-new-password-5"}
    )
    assert reset.status_code == 303
    for action, data in (("password", {"password": "b-other-password-8"}), ("disable", {})):
        stale_button = admin.post(f"/admin/users/{target.id}/{action}", data={"csrf_token": "x", **data})
        assert stale_button.status_code == 403 and "没有执行" in stale_button.text, action
        assert csrf_of(stale_button.text) == csrf and "b-other-password-8" not in stale_button.text
    assert site.login(site.client(), "clerk_b", "b-new-password-5").status_code == 303  # neither was done
    assert site.login(site.client(), "clerk_b", "b-new-password-5").status_code == 303
    audit = admin.get("/admin/audit").text
    assert "添加中心" in audit and "添加用户" in audit and "修改密码" in audit


def test_every_page_carries_the_security_headers(site: Site) -> None:
    clerk = site.client("clerk_a")
    for path in ("/login", "/jobs", "/static/app.js"):
        headers = clerk.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
    assert clerk.get("/jobs").headers["cache-control"] == "no-store"
    page = clerk.get("/jobs").text
    assert "<script>" not in page and " style=" not in page and "onclick" not in page


def test_static_files_are_linked_at_their_content_s_version(site: Site) -> None:
    """A release that changes app.js or the style sheet changes their address on every page: the
    browsers fetch it at once, while the one they hold stays cached as long as it is current."""
    import hashlib

    from pipeline.web.context import STATIC

    clerk = site.client("clerk_a")
    for name in ("app.js", "app.css"):
        version = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]
        for path in ("/login", "/jobs"):
            assert f'"/static/{name}?v={version}"' in clerk.get(path).text, (path, name)
        current = clerk.get(f"/static/{name}?v={version}")
        assert current.status_code == 200 and current.content == (STATIC / name).read_bytes()
        assert "immutable" in current.headers["cache-control"]
        for stale in (f"/static/{name}", f"/static/{name}?v=000000000000"):  # an old page's link
            assert clerk.get(stale).headers["cache-control"] == "no-cache", stale


def test_the_secret_never_reaches_a_page_or_a_download(site: Site, sandbox: Any) -> None:
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    _submit(site, clerk, job_id)
    bodies = [clerk.get(p).content for p in ("/jobs", f"/jobs/{job_id}", f"/jobs/{job_id}/state")]
    bodies += [clerk.get(f"/jobs/{job_id}/download/{k}").content for k in ("csv", "errors", "results")]
    for body in bodies:
        assert sandbox.app_secret.encode() not in body


def test_cli_manages_centres_and_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path))
    assert cli.main(["centres", "add", "455400009", "--name", "丁社区卫生服务中心"]) == 0
    assert cli.main(["centres", "add", "455400009", "--name", "重复"]) == 2
    assert "已存在" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("a-good-password-7\n"))
    assert cli.main(["users", "add", "zhang", "--centre", "455400009"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["users", "add", "li", "--centre", "455400009"]) == 2
    assert "密码不符合要求" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("a-good-password-7\n"))
    assert cli.main(["users", "add", "wang", "--centre", "000000000"]) == 2
    assert "没有机构代码" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("another-password-8\n"))
    assert cli.main(["users", "passwd", "zhang"]) == 0
    store = Store(tmp_path)
    user = store.user_by_name("zhang")
    assert user is not None and user.password_hash.startswith("$argon2id$")
    assert "another-password-8" not in (tmp_path / "web.sqlite").read_bytes().decode("latin-1")
    with pytest.raises(SystemExit):
        cli.main(["users", "add", "x", "--centre", ORG_B, "--password", "p"])  # never from argv


def test_cli_refuses_a_user_before_asking_for_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path))
    assert cli.main(["centres", "add", "455400009", "--name", "丁社区卫生服务中心"]) == 0
    asked: list[str] = []

    def read_password(prompt: str = "密码：") -> str:
        asked.append(prompt)
        return "a-good-password-7"

    monkeypatch.setattr("pipeline.web.serve.read_password", read_password)
    assert cli.main(["users", "add", "zhang", "--centre", "455400009"]) == 0
    assert len(asked) == 1
    for args, said in (
        (["users", "add", "wang", "--centre", "000000000"], "没有机构代码"),
        (["users", "add", "zhang", "--centre", "455400009"], "已存在"),
        (["users", "add", "?", "--centre", "455400009"], "用户名"),
        (["users", "passwd", "nobody"], "没有用户"),
    ):
        assert cli.main(args) == 2
        assert said in capsys.readouterr().err
    assert len(asked) == 1  # none of the refused ones asked for a password


def test_the_uploaded_notice_is_shown_only_while_the_upload_is_being_checked(site: Site) -> None:
    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)  # waits until checked, the upload's notice not yet shown
    assert "已上传，正在检查" not in clerk.get(f"/jobs/{job_id}").text


def test_a_notice_is_shown_once_by_the_page_an_action_led_to_and_never_from_a_link(site: Site) -> None:
    """A link such as /jobs?notice=centre once showed 中心已添加。 to a clerk who added nothing."""
    clerk, admin = site.client("clerk_a"), site.client("admin_a")
    forged = {
        "/jobs?notice=centre": "中心已添加",
        "/admin/users?notice=disabled": "用户已停用",
        "/login?notice=password": "密码已修改",
        "/jobs?notice=uploaded": "已上传",
    }
    for path, said in forged.items():
        assert said not in (admin if path.startswith("/admin") else clerk).get(path).text, path
    added = admin.post(
        "/admin/centres",
        data={"csrf_token": site.csrf(admin), "org_code": "455400009", "name": "丁社区卫生服务中心"},
    )
    assert added.status_code == 303 and added.headers["location"] == "/admin/centres"
    assert "中心已添加" in admin.get("/admin/centres").text
    assert "中心已添加" not in admin.get("/admin/centres").text  # once: not again on a reload
    csrf = csrf_of(clerk.get("/account/password").text)
    new = "a-new-password-8"
    changed = clerk.post("/account/password", data={"csrf_token": csrf, "current": PASSWORDS["clerk_a"],
                                                    "new": new, "again": new})  # fmt: skip
    assert changed.status_code == 303 and changed.headers["location"] == "/login"
    assert "密码已修改" in clerk.get("/login").text


def test_the_fault_grid_says_how_to_fix_each_field_as_errors_xlsx_does(site: Site) -> None:
    from pipeline.messages import fault_fix

    clerk = site.client("clerk_a")
    job_id = site.upload_sample(clerk)
    page = clerk.get(f"/jobs/{job_id}?code=10110").text
    phone = html.escape(fault_fix(10110, "brdh"))
    assert phone in page and phone != html.escape(fault_fix(10110, "xm"))  # 10110 covers several fields
    # results.csv is for machines: Excel would turn its ID numbers into 4.40604E+17
    assert "results.csv（供其他系统导入；用 Excel 查看请下载 results.xlsx）" in page


def test_an_annotated_copy_uploaded_again_is_named_as_one(site: Site) -> None:
    clerk = site.client("clerk_a")
    first = site.upload_sample(clerk)
    copy = clerk.get(f"/jobs/{first}/download/annotated")
    assert copy.status_code == 200
    answer = site.upload(clerk, ("annotated_登记表.xlsx", copy.content, XLSX_TYPE))
    again = str(answer.json()["jobs"][0]).rsplit("/", 1)[-1]
    site.wait(clerk, again)
    assert "标注副本" in clerk.get(f"/jobs/{again}").text
    results = clerk.get(f"/jobs/{again}/download/csv").content.decode("utf-8-sig")
    assert "问题说明" not in results.splitlines()[0]  # last run's reasons are not this run's data


def test_the_mapping_page_shows_no_samples_for_an_empty_column() -> None:
    import numpy as np
    import pandas as pd

    from pipeline.model import RawTable
    from pipeline.web.checking import table_info

    data = pd.DataFrame({"姓名": ["张三", "李四"], "备用": ["", " "]}, dtype="str")
    raw = RawTable("a.csv", "", 1, ["姓名", "备用"], [0, 1], data, np.array([2, 3]))
    assert table_info(raw, None, {})["samples"] == [["张三", "李四"], []]


def _checked_upload(site: Site, name: str, book: openpyxl.Workbook) -> tuple[dict[str, Any], str]:
    """Clerk A uploads ``book`` as ``name``: the job's state once checked, and its page's text."""
    buffer = io.BytesIO()
    book.save(buffer)
    clerk = site.client("clerk_a")
    answer = site.upload(clerk, (name, buffer.getvalue(), XLSX_TYPE))
    job_id = str(answer.json()["jobs"][0]).rsplit("/", 1)[-1]
    state = site.wait(clerk, job_id)
    return state, html.unescape(clerk.get(f"/jobs/{job_id}").text)


def test_a_second_register_sheet_left_unread_is_told_on_the_job_page(site: Site) -> None:
    # The command line warned of it; the page said nothing, and that sheet's residents were in no report.
    book = openpyxl.load_workbook(SAMPLE_XLSX)
    second = book.copy_worksheet(book.worksheets[0])
    second.title = "十一月"
    state, page = _checked_upload(site, "两个月.xlsx", book)
    assert "十一月" in state["message"] and "--all-sheets" not in state["message"]
    assert "十一月" in page and "另存为单独的文件后另行上传" in page


def test_rows_hidden_in_the_clerks_workbook_are_told_on_the_job_page(site: Site) -> None:
    book = openpyxl.load_workbook(SAMPLE_XLSX)
    for row in (5, 6):  # filtered out in Excel: read and checked all the same
        book.worksheets[0].row_dimensions[row].hidden = True
    state, page = _checked_upload(site, "筛选过.xlsx", book)
    assert "第 5、6 行" in state["message"] and "隐藏" in state["message"] and "第 5、6 行" in page


def test_a_clerk_closing_the_page_mid_upload_is_no_server_error(site: Site) -> None:
    import asyncio

    from loguru import logger

    clerk = site.client("clerk_a")
    site.csrf(clerk)  # the session is open
    cookie = "; ".join(f"{name}={value}" for name, value in clerk.cookies.items())
    part = b'--b\r\nContent-Disposition: form-data; name="files"'
    body = iter([{"type": "http.request", "body": part, "more_body": True}, {"type": "http.disconnect"}])
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/jobs", "raw_path": b"/jobs", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"cookie", cookie.encode()), (b"content-length", b"500000"),
                    (b"content-type", b"multipart/form-data; boundary=b")],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80), "state": {},
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return next(body, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    levels: list[str] = []
    sink = logger.add(lambda message: levels.append(message.record["level"].name), level="DEBUG")
    try:
        asyncio.run(site.app(scope, receive, send))
    finally:
        logger.remove(sink)
    assert "ERROR" not in levels  # the operator's error log held two false alarms per closed page
    assert sent and sent[0]["status"] != 500


def test_an_admins_pages_do_not_claim_to_show_one_centre_alone(site: Site) -> None:
    admin, clerk = site.client("admin_a"), site.client("clerk_a")
    assert "全区所有中心" in admin.get("/admin/users").text  # it lists every centre's users
    page = clerk.get("/jobs").text
    assert "所有页面只显示本中心的数据" in page and "全区所有中心" not in page
