"""The sandbox over real sockets: envelope checks, field checks, state, faults, rate limit, restart."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import SandboxHandle, make_resident

from pipeline.platform.client import PlatformClient
from pipeline.platform.signing import bind_card_sign, md5_sign, sync_card_sign, timestamp_ms, work_key_sign
from pipeline.sandbox import FaultPlan, build_server, max_in_window
from pipeline.sandbox.faults import FAULT_KINDS

APP_BLOCK = {
    "termId": "",
    "version": "v1.1",
    "appVersion": "1.1",
    "appPackageName": "t",
    "digestType": "",
    "encType": "",
}


def _raw_post(sandbox: SandboxHandle, method: str, document: Any) -> requests.Response:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return requests.post(f"{sandbox.base_url}{method}.do", data=body, timeout=10)


def _call(
    sandbox: SandboxHandle, method: str, data: dict[str, Any], *, app_id: str | None = None
) -> dict[str, Any]:
    response = _raw_post(sandbox, method, {"appId": app_id or sandbox.app_id, "app": APP_BLOCK, "data": data})
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer.get("data", answer)


def _work_key(sandbox: SandboxHandle) -> str:
    timestamp = timestamp_ms()
    sign = work_key_sign(sandbox.app_id, sandbox.app_secret, timestamp)
    answer = _call(sandbox, "getWorkKey", {"timestamp": timestamp, "sign": sign})
    assert answer["resultCode"] == 10000
    return str(answer["workKey"])


def _sync(
    sandbox: SandboxHandle, key: str, serial: int, *, timestamp: str | None = None, **people: str
) -> int:
    card, person = make_resident(serial, **people)
    stamp = timestamp or timestamp_ms()
    data = {"timestamp": stamp, "type": "0", "sign": sync_card_sign(sandbox.app_id, key, stamp, "0"),
            "cardInfo": card, "peopleInfo": person}  # fmt: skip
    return int(_call(sandbox, "syncCardInfo", data)["resultCode"])


# -- envelope --------------------------------------------------------------------------


def test_work_key_refused_for_unknown_app_or_wrong_secret(sandbox: SandboxHandle) -> None:
    timestamp = timestamp_ms()
    unknown = _call(sandbox, "getWorkKey", {"timestamp": timestamp, "sign": "0" * 32}, app_id="nobody")
    assert unknown["resultCode"] == 10101 and unknown["message"] == "机构代码错误"
    wrong = _call(
        sandbox, "getWorkKey", {"timestamp": timestamp, "sign": work_key_sign(sandbox.app_id, "x", timestamp)}
    )
    assert wrong["resultCode"] == 10103


def test_bad_sign_stale_timestamp_and_missing_keys(sandbox: SandboxHandle) -> None:
    key = _work_key(sandbox)
    assert _sync(sandbox, key, 1) == 10000
    assert _sync(sandbox, "NOT-THE-KEY", 2) == 10105
    stale = str(int(time.time() * 1000) - 3_600_000)
    assert _sync(sandbox, key, 3, timestamp=stale) == 10110
    timestamp = timestamp_ms()
    sign = sync_card_sign(sandbox.app_id, key, timestamp, "0")
    card, people = make_resident(4)
    del people["brdh"]
    data = {"timestamp": timestamp, "type": "0", "sign": sign, "cardInfo": card, "peopleInfo": people}
    assert _call(sandbox, "syncCardInfo", data)["resultCode"] == 10110
    envelope = {"appId": sandbox.app_id, "app": {"termId": ""}, "data": data}
    assert _raw_post(sandbox, "syncCardInfo", envelope).json()["data"]["resultCode"] == 10110
    assert _raw_post(sandbox, "syncCardInfo", b"{not json").json()["data"]["resultCode"] == 10110
    assert _raw_post(sandbox, "syncCardInfo", b"[" * 200_000).json()["data"]["resultCode"] == 10110
    assert sandbox.residents() == 1


@pytest.mark.parametrize(
    "timestamp",
    ["²", "١٧٠٠٠٠٠٠٠٠٠٠٠", "9" * 400, "1" + "0" * 12 + " ", "1700000000", "-1700000000000", ""],
)
def test_a_timestamp_not_thirteen_ascii_digits_is_a_parameter_error(
    sandbox: SandboxHandle, timestamp: str
) -> None:
    """The document's timestamp is milliseconds (``1426817510111``): anything else is 10110, never a
    dropped connection (a superscript digit and a 400-digit number crashed the handler)."""
    sign = work_key_sign(sandbox.app_id, sandbox.app_secret, timestamp)
    answer = _call(sandbox, "getWorkKey", {"timestamp": timestamp, "sign": sign})
    assert answer["resultCode"] == 10110


@pytest.mark.parametrize("odd", [5, None, True, ["t"], {"x": "y"}])
@pytest.mark.parametrize("key", ["termId", "appPackageName", "encType"])
def test_an_app_block_value_that_is_no_text_is_a_parameter_error(
    sandbox: SandboxHandle, key: str, odd: object
) -> None:
    """Every ``app`` field is declared String: a number, null or object there is 10110, as a key missing."""
    timestamp = timestamp_ms()
    sign = work_key_sign(sandbox.app_id, sandbox.app_secret, timestamp)
    envelope = {
        "appId": sandbox.app_id,
        "app": {**APP_BLOCK, key: odd},
        "data": {"timestamp": timestamp, "sign": sign},
    }
    assert _raw_post(sandbox, "getWorkKey", envelope).json()["data"]["resultCode"] == 10110


@pytest.mark.parametrize("empty", ["absent", None, {}, "blank"])
@pytest.mark.parametrize("name", ["peopleInfo", "cardInfo"])
def test_an_absent_or_blank_object_is_10149(sandbox: SandboxHandle, name: str, empty: object) -> None:
    """对象或其属性值均为空 (10149): the object absent, null, ``{}`` or every field blank."""
    key = _work_key(sandbox)
    card, person = make_resident(40)
    stamp = timestamp_ms()
    data = {"timestamp": stamp, "type": "0", "sign": sync_card_sign(sandbox.app_id, key, stamp, "0"),
            "cardInfo": card, "peopleInfo": person}  # fmt: skip
    if empty == "absent":
        del data[name]
    else:
        data[name] = {field: " " for field in data[name]} if empty == "blank" else empty
    answer = _call(sandbox, "syncCardInfo", data)
    assert (answer["resultCode"], answer["message"]) == (
        10149,
        "对象或其属性值均为空，请检查语言对复杂对象的支持",
    )
    data[name] = ["not", "an", "object"]
    assert _call(sandbox, "syncCardInfo", data)["resultCode"] == 10110
    assert sandbox.residents() == 0


def test_a_key_with_stray_spaces_is_not_the_field(sandbox: SandboxHandle) -> None:
    """``" brdh "`` is another key than ``brdh``: it neither stands in for it nor overwrites it."""
    key = _work_key(sandbox)
    card, person = make_resident(41)
    stamp = timestamp_ms()
    sign = sync_card_sign(sandbox.app_id, key, stamp, "0")
    phone = person.pop("brdh")
    data = {
        "timestamp": stamp,
        "type": "0",
        "sign": sign,
        "cardInfo": card,
        "peopleInfo": {**person, "brdh ": phone},
    }
    assert _call(sandbox, "syncCardInfo", data)["resultCode"] == 10110
    data["peopleInfo"] = {**person, "brdh": phone, " brdh ": "12345"}
    assert _call(sandbox, "syncCardInfo", data)["resultCode"] == 10000


def test_a_new_work_key_invalidates_the_previous_one(sandbox: SandboxHandle) -> None:
    old = _work_key(sandbox)
    new = _work_key(sandbox)
    assert old != new
    assert _sync(sandbox, old, 1) == 10105
    assert _sync(sandbox, new, 1) == 10000


@pytest.mark.sandbox(workkey_ttl=0.3)
def test_work_key_expires(sandbox: SandboxHandle) -> None:
    key = _work_key(sandbox)
    time.sleep(0.4)
    assert _sync(sandbox, key, 1) == 10105


def test_only_post_to_the_four_methods(sandbox: SandboxHandle) -> None:
    assert requests.get(f"{sandbox.base_url}getWorkKey.do", timeout=5).status_code == 405
    assert requests.post(f"{sandbox.base_url}deleteEverything.do", data=b"{}", timeout=5).status_code == 404


def _exchange(sandbox: SandboxHandle, request: bytes) -> bytes:
    """``request`` (head and body) over a bare socket; the answer, up to the peer's close."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(sandbox.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_a_body_is_read_as_a_web_server_reads_it(sandbox: SandboxHandle) -> None:
    """A length that is no number is a 400 and one beyond a megabyte a 413 (they crashed the handler, a
    declared 100 GB with a MemoryError); a chunked body and a query string are read as a web server does."""
    from urllib.parse import urlsplit

    head = f"POST {urlsplit(sandbox.base_url).path}getWorkKey.do HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    for length, status in (("abc", b"400"), ("-5", b"400"), ("99999999999", b"413"), ("²", b"400")):
        answer = _exchange(sandbox, f"{head}Content-Length: {length}\r\n\r\n{{}}".encode())
        assert answer.startswith(b"HTTP/1.1 " + status), (length, answer[:80])
    timestamp = timestamp_ms()
    sign = work_key_sign(sandbox.app_id, sandbox.app_secret, timestamp)
    body = json.dumps(
        {"appId": sandbox.app_id, "app": APP_BLOCK, "data": {"timestamp": timestamp, "sign": sign}}
    )
    chunked = f"{len(body[:20]):x}\r\n{body[:20]}\r\n{len(body[20:]):X};x=1\r\n{body[20:]}\r\n0\r\n\r\n"
    answer = _exchange(sandbox, f"{head}Transfer-Encoding: chunked\r\n\r\n{chunked}".encode())
    assert answer.startswith(b"HTTP/1.1 200") and b'"resultCode": 10000' in answer
    huge = f"{head}Transfer-Encoding: chunked\r\n\r\n{2 << 20:x}\r\n".encode()
    assert _exchange(sandbox, huge).startswith(b"HTTP/1.1 413")
    with_query = requests.post(f"{sandbox.base_url}getWorkKey.do?from=test", data=body.encode(), timeout=5)
    assert with_query.json()["data"]["resultCode"] == 10000


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-16-le"])
def test_a_body_in_another_encoding_than_utf8_is_a_parameter_error(
    sandbox: SandboxHandle, encoding: str
) -> None:
    """字符编码UTF-8: a body in UTF-16 or UTF-32 is 10110 (json.loads guessed and read them)."""
    timestamp = timestamp_ms()
    sign = work_key_sign(sandbox.app_id, sandbox.app_secret, timestamp)
    body = json.dumps(
        {"appId": sandbox.app_id, "app": APP_BLOCK, "data": {"timestamp": timestamp, "sign": sign}}
    )
    assert _raw_post(sandbox, "getWorkKey", body.encode(encoding)).json()["data"]["resultCode"] == 10110
    assert _raw_post(sandbox, "getWorkKey", body.encode("utf-8-sig")).json()["data"]["resultCode"] == 10000


def test_a_lone_surrogate_escape_is_a_parameter_error(sandbox: SandboxHandle) -> None:
    """``"\\ud800"`` is valid JSON but no Unicode text: signing it or logging it crashed the handler."""
    _work_key(sandbox)  # so that getImg goes on to check its sign
    stamp = timestamp_ms()
    img = {"timestamp": stamp, "sign": "0" * 32, "type": "0", "ehealthCardId": "\ud800"}
    for app_id, method, data in (
        (sandbox.app_id, "getImg", img),
        ("\udfff", "getWorkKey", {"timestamp": stamp}),
    ):
        body = json.dumps({"appId": app_id, "app": APP_BLOCK, "data": data}).encode()
        assert b"\\ud" in body
        answer = _raw_post(sandbox, method, body).json()
        assert answer.get("data", answer)["resultCode"] == 10110


# -- the platform's field checks ---------------------------------------------------------

_FIELD_CASES = [
    ({"xm": ""}, 10114),
    ({"sfzhm": "440604198001010012"}, 10111),  # wrong check character
    ({"sfzhm": "999999198001010019"}, 10111),  # division never existed
    ({"xb": "3"}, 10113),
    ({"xb": "2"}, 10113),  # odd sequence number: a man
    ({"mzdm": "57"}, 10123),
    ({"csrq": "19800102"}, 10124),  # differs from the ID number
    ({"csrq": "1980-01-01"}, 10124),
    ({"zjlx": "08"}, 10134),
    ({"fyzhdm": "21"}, 10132),
    ({"xldm": "11"}, 10133),
    ({"zydm": "Z"}, 10135),
    ({"dzlb": "3"}, 10136),
    ({"ylfyzffs": "08"}, 10131),
    ({"brdh": "12345"}, 10110),
    ({"zjhm": "440604198001010010"}, 10110),  # document type 01 but another number
]


@pytest.mark.parametrize(("people", "code"), _FIELD_CASES)
def test_people_checks(sandbox: SandboxHandle, tmp_path: Path, people: dict[str, str], code: int) -> None:
    card, person = make_resident(0, **people)
    with PlatformClient(sandbox.settings(), tmp_path) as client:
        assert client.sync_card_info(card, person).result_code == code
    assert sandbox.residents() == 0


@pytest.mark.parametrize(
    ("card", "code"),
    [({"fksj": "20261399"}, 10128), ({"fksj": "29990101"}, 10128), ({"yhkh": "62220abc"}, 10151),
     ({"orgCode": ""}, 10101), ({"isRealName": "2"}, 10110), ({"klx": ""}, 10110)],
)  # fmt: skip
def test_card_checks(sandbox: SandboxHandle, tmp_path: Path, card: dict[str, str], code: int) -> None:
    card_info, person = make_resident(0)
    with PlatformClient(sandbox.settings(), tmp_path) as client:
        assert client.sync_card_info({**card_info, **card}, person).result_code == code


def test_empty_optional_codes_and_landline_pass(sandbox: SandboxHandle, tmp_path: Path) -> None:
    card, person = make_resident(0, fyzhdm="", xldm="", zydm="", brdh="0757-83381234", xb="9")
    with PlatformClient(sandbox.settings(), tmp_path) as client:
        assert client.sync_card_info({**card, "yhkh": "6222021234567890123", "fksj": "20240101"}, person).ok


# -- state -----------------------------------------------------------------------------------


def test_second_enrolment_10115_and_card_number_reuse_10116(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with PlatformClient(sandbox.settings(), tmp_path) as client:
        first = client.sync_card_info({**make_resident(1)[0], "kh": "K0001"}, make_resident(1)[1])
        assert first.ok
        assert client.sync_card_info(*make_resident(1)).result_code == 10115
        assert (
            client.sync_card_info({**make_resident(2)[0], "kh": "K0001"}, make_resident(2)[1]).result_code
            == 10116
        )
    assert sandbox.residents() == 1


def test_card_ids_are_deterministic_per_resident(start_sandbox: Any, tmp_path: Path) -> None:
    ids = []
    for index in range(2):
        sandbox = start_sandbox()
        with PlatformClient(sandbox.settings(), tmp_path / str(index)) as client:
            ids.append(client.sync_card_info(*make_resident(5)).data)
    assert ids[0] == ids[1]
    assert re.fullmatch(r"[0-9A-F]{64}", ids[0]["ehealthCardId"])
    assert re.fullmatch(r"[0-9]{20}", ids[0]["virtualCardNum"])


def test_bind_before_and_after_enrolment(sandbox: SandboxHandle, tmp_path: Path) -> None:
    card, person = make_resident(3)
    with PlatformClient(sandbox.settings(), tmp_path) as client:
        who = {"xm": person["xm"], "brdh": person["brdh"]}
        assert client.bind_card_info(zjlx="01", zjhm=person["sfzhm"], **who).result_code == 10108
        enrolled = client.sync_card_info(card, person)
        bound = client.bind_card_info(zjlx="01", zjhm=person["sfzhm"], xm=person["xm"], brdh=person["brdh"])
        assert bound.ok and bound.data == enrolled.data
        other = {"xm": "别人", "brdh": person["brdh"]}
        assert client.bind_card_info(zjlx="01", zjhm=person["sfzhm"], **other).result_code == 10157
        assert (
            client.bind_card_info(zjlx="01", zjhm=person["sfzhm"], **who, bind_type="2").result_code == 10110
        )
        # The name and phone are 必填: without them the platform answers no card
        assert client.bind_card_info(zjlx="01", zjhm=person["sfzhm"], xm="", brdh="").result_code == 10114
        assert (
            client.bind_card_info(zjlx="01", zjhm=person["sfzhm"], xm=person["xm"], brdh="").result_code
            == 10110
        )
    assert sandbox.query("SELECT count(*) FROM bindings")[0][0] == 1


def test_bind_checks_the_documents_as_sync_does(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """A resident ID that is no ID number is 10111 (not 10108, no card); a binder's document type
    outside CV02.01.101 is 10134, and the binder's ID number is checked too."""
    card, person = make_resident(42)
    who = {"xm": person["xm"], "brdh": person["brdh"]}
    wrong = person["sfzhm"][:17] + ("0" if person["sfzhm"][17] != "0" else "1")
    with PlatformClient(sandbox.settings(), tmp_path) as client:
        assert client.sync_card_info(card, person).ok
        assert client.bind_card_info(zjlx="01", zjhm=wrong, **who).result_code == 10111
        assert client.bind_card_info(zjlx="01", zjhm="12345", **who).result_code == 10111
        mine = {"zjlx": "01", "zjhm": person["sfzhm"], **who}
        assert (
            client.bind_card_info(**mine, bind_type="2", bind_zjlx="77", bind_zjhm="X1").result_code == 10134
        )
        assert client.bind_card_info(**mine, bind_type="1", bind_zjlx="77", bind_zjhm="").result_code == 10134
        assert (
            client.bind_card_info(**mine, bind_type="2", bind_zjlx="01", bind_zjhm=wrong).result_code == 10111
        )
        binder = make_resident(43)[1]["sfzhm"]
        assert client.bind_card_info(**mine, bind_type="2", bind_zjlx="01", bind_zjhm=binder).ok
        assert client.bind_card_info(**mine, bind_type="2", bind_zjlx="03", bind_zjhm="E12345678").ok
    assert sandbox.query("SELECT count(*) FROM bindings")[0][0] == 2


def test_get_img_returns_a_png_of_the_qr_text(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with PlatformClient(sandbox.settings(), tmp_path) as client:
        enrolled = client.sync_card_info(*make_resident(6))
        image = client.get_img(ehealth_card_id=enrolled.data["ehealthCardId"])
        assert client.get_img(virtual_card_num="10000000000000000000").result_code == 10109
    assert image.ok
    assert re.fullmatch(enrolled.data["ehealthCardId"] + r":0:[0-9A-F]{32}", image.data["qrCode"])
    assert base64.b64decode(image.data["img"]).startswith(b"\x89PNG\r\n\x1a\n")


def test_get_img_refuses_a_card_id_that_is_no_text(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """ehealthCardId and virtualCardNum are 选填 Strings: a number is 10110, not taken as not sent."""
    with PlatformClient(sandbox.settings(), tmp_path) as client:
        enrolled = client.sync_card_info(*make_resident(44))
    key = _work_key(sandbox)
    number = enrolled.data["virtualCardNum"]
    for sent, signed in ((int(number), number), (int(number), ""), ([number], number)):
        stamp = timestamp_ms()
        img = {"timestamp": stamp, "sign": md5_sign(sandbox.app_id, key, stamp, signed), "type": "0",
               "virtualCardNum": sent}  # fmt: skip
        assert _call(sandbox, "getImg", img)["resultCode"] == 10110, (sent, signed)
    stamp = timestamp_ms()
    img = {"timestamp": stamp, "sign": md5_sign(sandbox.app_id, key, stamp, number), "type": "0",
           "virtualCardNum": number, "ehealthCardId": None}  # fmt: skip
    assert _call(sandbox, "getImg", img)["resultCode"] == 10000


def test_answers_carry_the_documents_quirks(sandbox: SandboxHandle) -> None:
    key = _work_key(sandbox)
    card, person = make_resident(8)
    timestamp = timestamp_ms()
    data = {"timestamp": timestamp, "type": "0", "sign": sync_card_sign(sandbox.app_id, key, timestamp, "0"),
            "cardInfo": card, "peopleInfo": person}  # fmt: skip
    answer = _call(sandbox, "syncCardInfo", data)
    assert answer[" virtualCardNum "].startswith(" ") and "virtualCardNum" not in answer
    sign = bind_card_sign(sandbox.app_id, key, timestamp, "01", person["sfzhm"])
    bind = {"timestamp": timestamp, "sign": sign, "type": "0", "zjlx": "01", "zjhm": person["sfzhm"],
            "xm": person["xm"], "brdh": person["brdh"], "bindType": "1", "bindZjlx": "",
            "bindZjhm": ""}  # fmt: skip
    assert _call(sandbox, "bindCardInfo", bind)["resultCode"] == 10000


def test_restart_keeps_residents_and_work_keys(start_sandbox: Any, tmp_path: Path) -> None:
    first = start_sandbox()
    with PlatformClient(first.settings(), tmp_path / "state") as client:
        enrolled = client.sync_card_info(*make_resident(9))
    first.stop()
    port = int(first.base_url.split(":")[2].split("/")[0])
    again = start_sandbox(db_path=first.db_path, app_id=first.app_id, app_secret=first.app_secret, port=port)
    with PlatformClient(again.settings(), tmp_path / "state") as client:
        assert client.sync_card_info(*make_resident(9)).result_code == 10115
        person = make_resident(9)[1]
        found = client.bind_card_info(zjlx="01", zjhm=person["sfzhm"], xm=person["xm"], brdh=person["brdh"])
        assert found.data == enrolled.data
    assert again.residents() == 1
    assert again.count("getWorkKey") == 1  # the cached key still works after the restart


# -- faults and rate limit -------------------------------------------------------------------


def test_fault_sequence_is_reproducible_with_a_seed() -> None:
    def sequence(seed: int) -> list[str | None]:
        plan = FaultPlan(0.4, seed)
        return [plan.draw("syncCardInfo") for _ in range(200)]

    assert sequence(7) == sequence(7) != sequence(8)
    assert set(sequence(7)) == {None, *FAULT_KINDS}


@pytest.mark.sandbox(fault_rate=0.5, seed=3, slow_ms=50)
def test_random_faults_never_enrol_and_the_client_gets_through(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    settings = sandbox.settings(max_attempts=30, read_timeout=5.0)
    with PlatformClient(settings, tmp_path, initial_wait=0.01) as client:
        results = [client.sync_card_info(*make_resident(50 + i)) for i in range(6)]
    assert all(result.ok for result in results)
    faulted = sandbox.query("SELECT count(*) FROM requests WHERE fault IS NOT NULL")[0][0]
    assert faulted > 0 and sandbox.residents() == 6


@pytest.mark.sandbox(rate_limit=5)
def test_rate_limit_answers_429_with_retry_after(sandbox: SandboxHandle) -> None:
    key = _work_key(sandbox)
    stamp = timestamp_ms()
    data = {"timestamp": stamp, "type": "0", "sign": sync_card_sign(sandbox.app_id, key, stamp, "0"),
            "cardInfo": {}, "peopleInfo": {}}  # fmt: skip
    envelope = {"appId": sandbox.app_id, "app": APP_BLOCK, "data": data}
    statuses = [_raw_post(sandbox, "syncCardInfo", envelope) for _ in range(8)]
    refused = [r for r in statuses if r.status_code == 429]
    assert len(refused) >= 4 and all(int(r.headers["Retry-After"]) >= 1 for r in refused)


@pytest.mark.sandbox(rate_limit=2, retry_after=7)
def test_rate_limit_says_the_configured_retry_after(sandbox: SandboxHandle) -> None:
    """``--rate-limit N --retry-after S`` (README): the rate limit's 429 says S, not the 1 s it computed."""
    envelope = {"appId": sandbox.app_id, "app": APP_BLOCK, "data": {"timestamp": timestamp_ms(), "sign": "x"}}
    answers = [_raw_post(sandbox, "getWorkKey", envelope) for _ in range(4)]
    assert {r.headers["Retry-After"] for r in answers if r.status_code == 429} == {"7"}


def test_max_in_window_counts_half_open_windows() -> None:
    assert max_in_window([0.0, 0.5, 0.999, 1.0, 1.6]) == 3
    assert max_in_window([0.0, 0.5, 0.999, 1.0, 1.2]) == 4
    assert max_in_window([]) == 0


def test_subprocess_sandbox_serves_and_stops_cleanly(start_sandbox: Any, tmp_path: Path) -> None:
    sandbox = start_sandbox(subprocess=True, latency_ms=5)
    assert sandbox.base_url.endswith("/jkfs-dzjkk/dzjkk/websvi/")
    with PlatformClient(sandbox.settings(), tmp_path) as client:
        assert client.sync_card_info(*make_resident(70)).ok
    sandbox.stop()
    assert sandbox.process is not None and sandbox.process.returncode == 0
    assert sandbox.residents() == 1


def test_build_server_reports_a_busy_port(sandbox: SandboxHandle, tmp_path: Path) -> None:
    from pipeline.errors import ConfigError

    port = int(sandbox.base_url.split(":")[2].split("/")[0])
    with pytest.raises(ConfigError, match=f"{port}（端口已被其他程序占用）"):
        build_server(port=port, state=tmp_path / "other.sqlite", apps={})


@pytest.mark.parametrize("host", ["::1", "nosuchhost.invalid"])
def test_build_server_reports_an_address_it_cannot_listen_on(tmp_path: Path, host: str) -> None:
    """The resolver's error was told by its name (操作系统报告错误（gaierror））."""
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(f"沙箱无法监听 {host}:0（地址无法识别或不受支持）")):
        build_server(host=host, port=0, state=tmp_path / "other.sqlite", apps={})


# -- misbehaviours of a platform in trouble -------------------------------------------------------


def _sync_envelope(sandbox: SandboxHandle, key: str, serial: int) -> bytes:
    card, person = make_resident(serial)
    stamp = timestamp_ms()
    data = {"timestamp": stamp, "type": "0", "sign": sync_card_sign(sandbox.app_id, key, stamp, "0"),
            "cardInfo": card, "peopleInfo": person}  # fmt: skip
    return json.dumps({"appId": sandbox.app_id, "app": APP_BLOCK, "data": data}).encode()


def _raw_exchange(sandbox: SandboxHandle, body: bytes, *, read: int = 1 << 20, timeout: float = 5) -> bytes:
    """POST syncCardInfo over a bare socket; whatever arrives before the peer closes or ``read`` bytes."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(sandbox.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        head = (f"POST {url.path}syncCardInfo.do HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n")  # fmt: skip
        sock.sendall(head.encode() + body)
        received = b""
        while len(received) < read:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
        return received


def test_lost_answer_enrols_then_hangs_up(sandbox: SandboxHandle) -> None:
    key = _work_key(sandbox)
    sandbox.inject("lost", methods=("syncCardInfo",))
    assert _raw_exchange(sandbox, _sync_envelope(sandbox, key, 80)) == b""
    assert sandbox.residents() == 1, "the platform acted on the request"
    assert _sync(sandbox, key, 80) == 10115
    assert sandbox.query("SELECT fault, result_code FROM requests WHERE method = 'syncCardInfo'") == [
        ("lost", 10000), (None, 10115),
    ]  # fmt: skip


@pytest.mark.sandbox(huge_mb=8)
def test_huge_answer_announces_and_sends_megabytes_of_filler(sandbox: SandboxHandle) -> None:
    key = _work_key(sandbox)
    sandbox.inject("huge", methods=("syncCardInfo",))
    received = _raw_exchange(sandbox, _sync_envelope(sandbox, key, 81), read=9 << 20)
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"Content-Length: 8388608" in head and len(body) == 8 << 20 and set(body) == {ord("x")}
    assert sandbox.residents() == 0, "a huge answer comes from in front of the platform"


@pytest.mark.sandbox(drip_ms=100)
def test_drip_acts_then_sends_its_answer_a_byte_at_a_time(sandbox: SandboxHandle) -> None:
    import socket
    from urllib.parse import urlsplit

    key = _work_key(sandbox)
    sandbox.inject("drip", methods=("syncCardInfo",))
    url = urlsplit(sandbox.base_url)
    body = _sync_envelope(sandbox, key, 82)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        head_lines = f"POST {url.path}syncCardInfo.do HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
        sock.sendall(head_lines.encode() + b"\r\n\r\n" + body)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        started = time.monotonic()
        first, second = sock.recv(100), sock.recv(100)
        assert len(first) == len(second) == 1 and time.monotonic() - started >= 0.15
    assert b"200 OK" in head and sandbox.residents() == 1


def test_rekey_makes_the_request_key_stale(sandbox: SandboxHandle) -> None:
    key = _work_key(sandbox)
    sandbox.inject("rekey", methods=("syncCardInfo",))
    assert _sync(sandbox, key, 83) == 10105, "another client of the app fetched a key just before"
    assert _sync(sandbox, key, 83) == 10105, "and the old key stays dead"
    assert _sync(sandbox, _work_key(sandbox), 83) == 10000


def test_misbehaviours_can_be_drawn_at_random_with_a_seed() -> None:
    plan = FaultPlan(0.5, 4, ("lost", "rekey"))
    draws = [plan.draw("syncCardInfo") for _ in range(100)]
    assert set(draws) == {None, "lost", "rekey"}
    with pytest.raises(ValueError, match="故障种类 teleport 不存在"):
        FaultPlan(0.5, 4, ("lost", "teleport"))


def test_sandbox_command_refuses_an_unknown_fault_kind(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "sandbox", "--state", str(tmp_path / "s.sqlite"),
         "--fault-rate", "0.1", "--fault-kinds", "lost,teleport"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert (
        len(lines) == 1 and "teleport" in lines[0] and "lost" in lines[0] and "Traceback" not in done.stderr
    )


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--fault-rate", "2"], "--fault-rate"),
        (["--fault-rate", "nan"], "--fault-rate"),
        (["--fault-rate", "0.5", "--fault-kinds", ","], "--fault-kinds"),
        (["--latency-ms", "1e20"], "--latency-ms"),
        (["--drip-ms", "1e20"], "--drip-ms"),
    ],
)
def test_sandbox_command_refuses_bad_values_in_one_chinese_line(
    tmp_path: Path, options: list[str], named: str
) -> None:
    """Each bad value is one Chinese line and exit 2: the fault options were told in English, an empty
    --fault-kinds and a delay beyond time.sleep started a sandbox that crashed on every request."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "sandbox", "--state", str(tmp_path / "s.sqlite"), *options],
        capture_output=True, text=True, timeout=20, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and named in lines[0], done.stderr
    words = re.sub(r"--[a-z-]+|[a-z0-9]+(,[a-z0-9]+)+|ehc sandbox --help|nan|1e20", "", lines[0])
    assert not re.search(r"[A-Za-z]{3,}", words), lines[0]


def test_a_numeric_type_as_the_documents_example_sends_is_signed_as_its_digits(
    sandbox: SandboxHandle,
) -> None:
    """The interface document's syncCardInfo example sends ``"type": 1`` and signs over ``1``."""
    key = _work_key(sandbox)
    card, person = make_resident(31)
    stamp = timestamp_ms()
    data = {"timestamp": stamp, "type": 1, "sign": sync_card_sign(sandbox.app_id, key, stamp, "1"),
            "cardInfo": card, "peopleInfo": person}  # fmt: skip
    assert _call(sandbox, "syncCardInfo", data)["resultCode"] == 10000
    card, person = make_resident(32)
    for odd in (True, 1.5, None, [1]):  # not a number the document writes: a parameter error
        stamp = timestamp_ms()
        data = {"timestamp": stamp, "type": odd, "sign": sync_card_sign(sandbox.app_id, key, stamp, str(odd)),
                "cardInfo": card, "peopleInfo": person}  # fmt: skip
        assert _call(sandbox, "syncCardInfo", data)["resultCode"] == 10110, odd
    assert sandbox.residents() == 1


def test_a_qr_type_the_document_does_not_write_is_a_parameter_error(sandbox: SandboxHandle) -> None:
    """``type`` is 0 (the tables) or 1 (the syncCardInfo example), text except in that example."""
    key = _work_key(sandbox)
    card, person = make_resident(33)
    for odd in ("abc", "7", "", "01"):
        stamp = timestamp_ms()
        data = {"timestamp": stamp, "type": odd, "sign": sync_card_sign(sandbox.app_id, key, stamp, odd),
                "cardInfo": card, "peopleInfo": person}  # fmt: skip
        assert _call(sandbox, "syncCardInfo", data)["resultCode"] == 10110, odd
    stamp = timestamp_ms()
    data = {"timestamp": stamp, "type": "1", "sign": sync_card_sign(sandbox.app_id, key, stamp, "1"),
            "cardInfo": card, "peopleInfo": person}  # fmt: skip
    card_id = _call(sandbox, "syncCardInfo", data)["ehealthCardId"]
    who = {"zjlx": "01", "zjhm": person["sfzhm"], "xm": person["xm"], "brdh": person["brdh"], "bindType": "1",
           "bindZjlx": "", "bindZjhm": ""}  # fmt: skip
    for odd, code in (("abc", 10110), (0, 10110), ("0", 10000), ("1", 10000)):
        stamp = timestamp_ms()
        sign = bind_card_sign(sandbox.app_id, key, stamp, "01", person["sfzhm"])
        bind = {"timestamp": stamp, "sign": sign, "type": odd, **who}
        assert _call(sandbox, "bindCardInfo", bind)["resultCode"] == code, odd
        sign = md5_sign(sandbox.app_id, key, stamp, card_id)
        img = {"timestamp": stamp, "sign": sign, "type": odd, "ehealthCardId": card_id}
        assert _call(sandbox, "getImg", img)["resultCode"] == code, odd


def test_an_unusable_state_file_is_told_in_chinese(tmp_path: Path) -> None:
    from pipeline.errors import ConfigError

    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database, just bytes " * 40)
    with pytest.raises(ConfigError, match=re.escape("junk.sqlite（不是本程序的数据库文件（或文件已损坏））")):
        build_server(port=0, state=junk, apps={})


def _connect(sandbox: SandboxHandle) -> Any:
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(sandbox.base_url)
    return socket.create_connection((url.hostname, url.port), timeout=5)


def _closed_by_peer(sock: Any) -> bool:
    """Whether the sandbox closed ``sock`` (within the socket's timeout), having sent nothing."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.sandbox(idle_seconds=0.3)
def test_a_silent_connection_is_closed_and_its_thread_freed(sandbox: SandboxHandle) -> None:
    """A connection that sends nothing, or stops halfway through a request, is closed after the idle
    time: each held a thread for ever (thousands of such connections, the sandbox's memory)."""
    import threading

    before = threading.active_count()
    with _connect(sandbox) as silent, _connect(sandbox) as halfway:
        path = f"{sandbox.base_url.split('/', 3)[3]}getWorkKey.do"
        halfway.sendall(f"POST /{path} HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{{".encode())
        assert _closed_by_peer(silent) and _closed_by_peer(halfway)
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() <= before
    assert _work_key(sandbox), "still serving"


@pytest.mark.sandbox(max_connections=3)
def test_connections_beyond_the_limit_are_closed_on_arrival(sandbox: SandboxHandle) -> None:
    """Each connection holds a thread: beyond the limit a new one is closed, and served again once one
    of the others has gone."""
    held = [_connect(sandbox) for _ in range(3)]
    try:
        with _connect(sandbox) as extra:  # taken in after the three (one listening queue, in order)
            assert _closed_by_peer(extra)
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # room again once the sandbox has seen the close
            try:
                assert _work_key(sandbox)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
    finally:
        for sock in held:
            sock.close()
