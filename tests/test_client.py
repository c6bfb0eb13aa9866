"""The platform client: tolerant parsing, envelope, retries, rate limit, fatal faults.

Everything but the parsing units runs against the real sandbox over loopback.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import SandboxHandle, log_lines, make_resident

from pipeline.config import PlatformSettings
from pipeline.errors import AuthenticationRefused, ConfigError, EhcError, PlatformUnreachable
from pipeline.logs import register_secret
from pipeline.model import CARD_FIELDS, PEOPLE_FIELDS
from pipeline.platform.client import CallResult, PlatformClient
from pipeline.platform.responses import answer_from_http, parse_body, parse_retry_after
from pipeline.platform.signing import sync_card_sign
from pipeline.sandbox.faults import FAULT_KINDS

# -- tolerant parsing (units) ---------------------------------------------------------


def test_the_platforms_message_is_one_bounded_chinese_line() -> None:
    body = {"resultCode": 10110, "message": "参数错误\n<script>x</script>\r\n=HYPERLINK(1)\t" + "长" * 300}
    _, message, _ = parse_body(json.dumps(body).encode()) or (0, "", {})
    assert "\n" not in message and "\r" not in message and "\t" not in message
    assert message.startswith("参数错误 <script>x</script> =HYPERLINK(1) 长") and len(message) == 200
    java = {"resultCode": 10110, "message": "java.lang.NullPointerException at com.x.Y"}
    assert parse_body(json.dumps(java).encode()) == (
        10110, "参数错误（平台原文：java.lang.NullPointerException at com.x.Y）", {}
    )  # fmt: skip


def test_result_code_as_number_or_string_with_data_wrapper() -> None:
    assert parse_body(b'{"data": {"resultCode": 10000, "message": "ok"}}') == (
        10000,
        "操作成功（平台原文：ok）",
        {},
    )
    assert parse_body(b'{"data": {"resultCode": " 10111 ", "message": ""}}') == (
        10111,
        "身份证号码不正确",
        {},
    )
    assert parse_body('{"data": {"resultCode": "1010", "message": "已挂失"}}'.encode()) == (
        1010,
        "已挂失",
        {},
    )


def test_keys_with_spaces_and_other_case_and_stripped_values() -> None:
    body = (
        '{"data":{"resultCode":10000,"message":"操作成功","ehealthCardId":"AB"," virtualCardNum ":" 134 "}}'
    )
    assert parse_body(body.encode()) == (10000, "操作成功", {"ehealthCardId": "AB", "virtualCardNum": "134"})
    code, _, data = parse_body(
        b'{" ResultCode ": "10000", "QrCode": "x:0:y", "IMG": "aGk=", "WorkKey": "K"}'
    ) or (
        0,
        "",
        {},
    )
    assert code == 10000 and data == {"qrCode": "x:0:y", "img": "aGk=", "workKey": "K"}


def test_answer_without_data_wrapper_like_the_getimg_example() -> None:
    body = '{"resultCode": 10000, "message": "操作成功", "qRCode": "A:0:B", "img": ""}'.encode()
    assert parse_body(body) == (10000, "操作成功", {"qrCode": "A:0:B", "img": ""})


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>busy</html>", b'{"data": {"resultCode": 100', b"[1, 2]", b'{"data": {"message": "x"}}'],
)
def test_malformed_answers_are_none(body: bytes) -> None:
    assert parse_body(body) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": {"resultCode": 10000, "message": "ok", "resultCode": 10111}}',
        b'{"data": {"resultCode": 10111, " ResultCode ": "10000"}}',
        b'{"data": {"resultCode": 10000}, "data": {"resultCode": 10111}}',
    ],
)
def test_an_answer_naming_its_result_code_twice_is_no_verdict(body: bytes) -> None:
    assert parse_body(body) is None  # which of the two the platform meant cannot be told
    assert answer_from_http(200, body, None).result_code is None


@pytest.mark.parametrize(
    "card_id",
    [
        '=HYPERLINK("http://evil.example/x","点我")',
        "+1+cmd|' /C calc'!A0",
        "@ACD5\t=1+1",
        "A" * 100_000,
        "-2+3",
    ],
)
def test_a_card_id_that_is_no_card_id_is_not_kept(card_id: str) -> None:
    body = json.dumps({"data": {"resultCode": 10000, "ehealthCardId": card_id, "virtualCardNum": card_id}})
    assert parse_body(body.encode()) == (10000, "操作成功", {"ehealthCardId": "", "virtualCardNum": ""})
    good = {"ehealthCardId": "AE3F" * 16, "virtualCardNum": "44060419900101123400", "qrCode": "AE3F:0:9b"}
    answer = json.dumps({"data": {"resultCode": 10000, **good}}).encode()
    assert parse_body(answer) == (10000, "操作成功", good)


def test_a_platform_message_quoting_the_app_secret_is_kept_without_it() -> None:
    register_secret("s3cr3t-app-secret-value")
    message = "签名错误：appSecret=s3cr3t-app-secret-value"
    body = json.dumps({"data": {"resultCode": 10110, "message": message}})
    assert parse_body(body.encode()) == (10110, "签名错误：appSecret=***", {})


def test_a_secret_or_work_key_quoted_in_another_case_is_removed_too() -> None:
    """A work key is hex: a platform quoting it lower-cased quotes the same key."""
    register_secret("C328F4AAD4E81346EB260E9E3C7A70D2")
    register_secret("S3cr3t-Mixed-Case")
    message = "认证字符串 c328f4aad4e81346eb260e9e3c7a70d2 无效，appSecret=S3CR3T-MIXED-CASE"
    body = json.dumps({"data": {"resultCode": 10110, "message": message}})
    assert parse_body(body.encode()) == (10110, "认证字符串 *** 无效，appSecret=***", {})


def test_a_retried_answer_is_logged_by_its_codes_words_not_the_platforms(tmp_path: Path) -> None:
    """A 10129 quoting the resident ("处理居民 王甲乙 时超时") put the name in the --debug log."""
    import threading

    from loguru import logger

    from pipeline.platform.responses import Answer
    from pipeline.platform.retrying import RetryPolicy

    quoting = Answer(10129, "网络异常：处理居民 王甲乙 时超时", {}, True)
    answers = iter([quoting, Answer(10000, "操作成功", {}, False)])
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message}")
    try:
        policy = RetryPolicy(max_attempts=3, max_seconds=10, initial_wait=0.01, interrupted=threading.Event())
        assert policy.run(lambda: next(answers), "syncCardInfo").result_code == 10000
    finally:
        logger.remove(sink)
    assert any("第 1 次请求未成功（网络异常）" in line for line in lines), lines
    assert not any("王甲乙" in line for line in lines)


def test_an_answer_in_gbk_is_read() -> None:
    """A platform answering in GBK: every success counted as garbled, its card ids lost."""
    answer = {"data": {"resultCode": "10000", "message": "操作成功", "ehealthCardId": "A" * 64}}
    body = json.dumps(answer, ensure_ascii=False).encode("gbk")
    assert parse_body(body) == (10000, "操作成功", {"ehealthCardId": "A" * 64})
    refusal = '{"data": {"resultCode": 10111, "message": "身份证号码不正确"}}'.encode("gb18030")
    assert parse_body(refusal) == (10111, "身份证号码不正确", {})
    assert parse_body(b"\xff\xfe\x00garbage") is None


def test_http_answers_are_classified() -> None:
    assert answer_from_http(500, b"", None).transient
    too_many = answer_from_http(429, b"", "3")
    assert too_many.transient and too_many.retry_after == 3.0
    assert answer_from_http(200, b"not json", None).transient
    assert answer_from_http(200, b'{"data":{"resultCode":10129}}', None).transient
    final = answer_from_http(200, b'{"data":{"resultCode":10111,"message":"x"}}', None)
    assert not final.transient and final.result_code == 10111
    missing = answer_from_http(404, b"<html/>", None)
    assert not missing.transient and missing.result_code is None and "404" in missing.message


def test_retry_after_as_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now=1445412480.0) == pytest.approx(5.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# -- construction -------------------------------------------------------------------------


def test_missing_credentials_or_bad_url_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="EHC_APP_SECRET"):
        PlatformClient(PlatformSettings(app_id="a", app_secret=" "), tmp_path)
    with pytest.raises(ConfigError, match="EHC_APP_ID"):
        PlatformClient(PlatformSettings(app_id="", app_secret="s"), tmp_path)
    with pytest.raises(ConfigError, match="base_url"):
        PlatformClient(PlatformSettings(base_url="ftp://x/", app_id="a", app_secret="s"), tmp_path)


# -- envelope (captured before it leaves) --------------------------------------------------


class _Captured:
    status_code = 200

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.headers: dict[str, str] = {}

    def iter_content(self, size: int) -> list[bytes]:
        return [self.content]

    def close(self) -> None:
        pass


def test_envelope_strips_values_sends_type_as_string_and_every_key(tmp_path: Path) -> None:
    settings = PlatformSettings(
        base_url="https://platform.invalid/jkfs-dzjkk/dzjkk/websvi", app_id=" APP ", app_secret="env-s3cr3t"
    )
    client = PlatformClient(settings, tmp_path)
    sent: list[tuple[str, dict[str, Any]]] = []

    def post(url: str, data: Any, **_: Any) -> _Captured:
        sent.append((url, json.loads(b"".join(data))))
        if url.endswith("getWorkKey.do"):
            return _Captured(b'{"data":{"resultCode":10000,"message":"ok","workKey":"WK"}}')
        return _Captured(b'{"data":{"resultCode":10000,"message":"ok"}}')

    client._transport.session.post = post  # type: ignore[method-assign,assignment]
    card, people = make_resident(1, xm=" 张三 ", brdh=" 13902263273")
    people.pop("xnhkh")
    assert client.sync_card_info(card, {**people, "unknown": "dropped"}).ok
    url, document = sent[-1]
    assert url == "https://platform.invalid/jkfs-dzjkk/dzjkk/websvi/syncCardInfo.do"
    assert document["appId"] == "APP"
    assert set(document["app"]) == {
        "termId",
        "version",
        "appVersion",
        "appPackageName",
        "digestType",
        "encType",
    }
    data = document["data"]
    assert data["type"] == "0" and isinstance(data["type"], str)
    assert data["sign"] == sync_card_sign("APP", "WK", data["timestamp"], "0")
    assert tuple(data["peopleInfo"]) == PEOPLE_FIELDS and tuple(data["cardInfo"]) == CARD_FIELDS
    assert data["peopleInfo"]["xm"] == "张三" and data["peopleInfo"]["brdh"] == "13902263273"
    assert data["peopleInfo"]["xnhkh"] == ""
    client.close()


@pytest.mark.parametrize("code", [10102, 10103])
def test_the_apps_user_name_or_password_refused_on_a_call_stops_the_run(tmp_path: Path, code: int) -> None:
    settings = PlatformSettings(
        base_url="https://platform.invalid/jkfs-dzjkk/dzjkk/websvi", app_id="APP", app_secret="env-s3cr3t"
    )
    client = PlatformClient(settings, tmp_path, initial_wait=0.01)

    def post(url: str, data: Any, **_: Any) -> _Captured:
        b"".join(data)
        if url.endswith("getWorkKey.do"):
            return _Captured(b'{"data":{"resultCode":10000,"message":"ok","workKey":"WK"}}')
        return _Captured(json.dumps({"resultCode": code, "message": "x"}).encode())

    client._transport.session.post = post  # type: ignore[method-assign,assignment]
    # Not a refusal of the resident: every row would get it, so no row is blamed and the run stops.
    with pytest.raises(AuthenticationRefused, match=str(code)):
        client.sync_card_info(*make_resident(1))
    client.close()


# -- against the sandbox ------------------------------------------------------------------


def _client(sandbox: SandboxHandle, state: Path, **settings: Any) -> PlatformClient:
    return PlatformClient(sandbox.settings(**settings), state, initial_wait=0.01)


def test_enrol_bind_and_qr_code_round_trip(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with _client(sandbox, tmp_path) as client:
        card, people = make_resident(7)
        enrolled = client.sync_card_info(card, people)
        assert enrolled == CallResult(10000, "操作成功", enrolled.data, 1)
        assert len(enrolled.data["ehealthCardId"]) == 64 and len(enrolled.data["virtualCardNum"]) == 20
        # bind signs over zjlx|zjhm: padded values must be stripped before signing and sending
        bound = client.bind_card_info(
            zjlx=" 01", zjhm=f" {people['sfzhm']} ", xm=people["xm"], brdh=people["brdh"]
        )
        assert bound.ok and bound.data == enrolled.data
        image = client.get_img(virtual_card_num=enrolled.data["virtualCardNum"])
        assert image.ok and image.data["qrCode"].startswith(enrolled.data["ehealthCardId"] + ":0:")


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_is_retried_and_never_enrols(kind: str, start_sandbox: Any, tmp_path: Path) -> None:
    sandbox = start_sandbox(slow_ms=50)
    with _client(sandbox, tmp_path) as client:
        client.work_key()
        sandbox.inject(kind, count=2, methods=("syncCardInfo",))
        result = client.sync_card_info(*make_resident(3))
    assert result.ok and result.attempts == 3
    assert sandbox.count("syncCardInfo") == 3
    assert sandbox.residents() == 1
    faults = [
        row[0] for row in sandbox.query("SELECT fault FROM requests WHERE method='syncCardInfo' ORDER BY id")
    ]
    assert faults == [kind, kind, None]


def test_read_timeout_is_retried(start_sandbox: Any, tmp_path: Path) -> None:
    sandbox = start_sandbox(slow_ms=600)
    with _client(sandbox, tmp_path, read_timeout=0.2) as client:
        client.work_key()
        sandbox.inject("slow", count=1, methods=("syncCardInfo",))
        result = client.sync_card_info(*make_resident(4))
    assert result.ok and result.attempts == 2


def test_gives_up_after_max_attempts_with_a_chinese_message(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with _client(sandbox, tmp_path, max_attempts=3) as client:
        client.work_key()
        sandbox.inject("http500", count=10, methods=("syncCardInfo",))
        result = client.sync_card_info(*make_resident(5))
    assert result.result_code is None and not result.ok
    assert result.attempts == 3 and "HTTP 500" in result.message
    assert sandbox.residents() == 0


def test_platform_10129_retried_until_bounded(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with _client(sandbox, tmp_path, max_attempts=2) as client:
        client.work_key()
        sandbox.inject("code10129", count=5, methods=("syncCardInfo",))
        result = client.sync_card_info(*make_resident(6))
    assert result.result_code == 10129 and result.attempts == 2 and result.message == "网络异常"


@pytest.mark.parametrize(("kind", "fix"), [("code10129", "请稍后再运行"), ("http429", "平台正在限流")])
def test_a_work_key_refused_for_the_platforms_own_trouble_says_wait(
    kind: str, fix: str, sandbox: SandboxHandle, tmp_path: Path
) -> None:
    sandbox.inject(kind, count=1000, methods=("getWorkKey",))
    with (
        _client(sandbox, tmp_path, max_attempts=2, max_retry_seconds=2) as client,
        pytest.raises(EhcError) as caught,
    ):
        client.work_key()
    assert fix in caught.value.message
    assert "本机时钟" not in caught.value.message and "平台地址" not in caught.value.message


def test_final_codes_are_not_retried(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with _client(sandbox, tmp_path) as client:
        card, people = make_resident(8, mzdm="99")
        result = client.sync_card_info(card, people)
    assert result.result_code == 10123 and result.attempts == 1
    assert sandbox.count("syncCardInfo") == 1


def test_retry_after_is_honoured(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with _client(sandbox, tmp_path) as client:
        client.work_key()
        sandbox.inject("http429", count=1, methods=("syncCardInfo",))
        assert client.sync_card_info(*make_resident(9)).ok
    first, second = sandbox.arrivals("syncCardInfo")
    assert second - first >= 0.95  # the sandbox said Retry-After: 1


def test_no_one_second_window_above_the_rate(start_sandbox: Any, tmp_path: Path) -> None:
    sandbox = start_sandbox(latency_ms=15, rate_limit=30)
    rate, calls = 30, 100
    client = PlatformClient(sandbox.settings(), tmp_path, rate=rate, pool_size=12, initial_wait=0.01)
    with client, ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda i: client.sync_card_info(*make_resident(100 + i)), range(calls)))
    assert [(r.result_code, r.attempts) for r in results] == [(10000, 1)] * calls
    assert sandbox.max_in_window() <= rate  # getWorkKey included
    assert sandbox.query("SELECT count(*) FROM requests WHERE http_status = 429")[0][0] == 0


def test_fractional_rate_is_rounded_down(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with PlatformClient(sandbox.settings(), tmp_path, rate=2.5, initial_wait=0.01) as client:
        for serial in range(5):
            assert client.sync_card_info(*make_resident(200 + serial)).ok
    assert sandbox.max_in_window() <= 2  # getWorkKey included


# -- faults that stop a run --------------------------------------------------------------


def test_unknown_app_is_refused(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with (
        _client(sandbox, tmp_path, app_id="nobody") as client,
        pytest.raises(AuthenticationRefused) as caught,
    ):
        client.work_key()
    assert caught.value.result_code == 10101 and "EHC_APP_ID" in caught.value.message


def test_wrong_secret_is_refused_and_never_shown(sandbox: SandboxHandle, tmp_path: Path) -> None:
    client = _client(sandbox, tmp_path, app_secret="WRONG-SECRET")
    with client, pytest.raises(AuthenticationRefused) as caught:
        client.sync_card_info(*make_resident(10))
    assert caught.value.result_code == 10103
    assert "WRONG-SECRET" not in caught.value.message and "\n" not in caught.value.message


def test_unreachable_platform(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = PlatformSettings(
        base_url=f"http://127.0.0.1:{port}/jkfs-dzjkk/dzjkk/websvi/",
        app_id="a",
        app_secret="s",
        max_attempts=3,
    )
    with (
        log_lines("INFO") as said,
        PlatformClient(settings, tmp_path, initial_wait=0.01) as client,
        pytest.raises(PlatformUnreachable) as caught,
    ):
        client.work_key()
    assert "3 次" in caught.value.message and "\n" not in caught.value.message
    # The wait is told as it happens: each retry of the work key, in a clerk's words.
    retries = [line for line in said if "获取认证字符串第" in line]
    assert [line.split("第 ")[1][:1] for line in retries] == ["1", "2"], said
    assert all("无法连接平台" in line and "秒后重试" in line and "getWorkKey" not in line for line in retries)


def test_a_residents_retries_stay_in_the_debug_log(sandbox: SandboxHandle, tmp_path: Path) -> None:
    sandbox.inject("drop", count=1, methods=("syncCardInfo",))
    with log_lines("DEBUG") as logged, log_lines("INFO") as said, _client(sandbox, tmp_path) as client:
        client.work_key()
        assert client.sync_card_info(*make_resident(12)).ok
    assert [line for line in logged if "syncCardInfo 第 1 次请求未成功" in line], logged
    assert not [line for line in said if "重试" in line], said


def test_work_key_faults_exhausted_are_unreachable(sandbox: SandboxHandle, tmp_path: Path) -> None:
    sandbox.inject("drop", count=10, methods=("getWorkKey",))
    with _client(sandbox, tmp_path, max_attempts=2) as client, pytest.raises(PlatformUnreachable):
        client.work_key()


def test_interrupt_stops_sending(sandbox: SandboxHandle, tmp_path: Path) -> None:
    client = _client(sandbox, tmp_path)
    client.work_key()
    client.interrupt()
    result = client.sync_card_info(*make_resident(11))
    assert result.result_code is None and result.attempts == 0
    assert sandbox.count("syncCardInfo") == 0
    client.close()


def test_interrupted_client_sends_nothing_not_even_getworkkey(sandbox: SandboxHandle, tmp_path: Path) -> None:
    client = _client(sandbox, tmp_path)
    client.interrupt()
    assert client.sync_card_info(*make_resident(13)) == CallResult(None, "已中断：请求未发送", {}, 0)
    assert sandbox.arrivals() == []
    client.close()


def test_get_img_without_ids_sends_nothing(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with _client(sandbox, tmp_path) as client:
        result = client.get_img()
    assert result.result_code == 10110 and result.attempts == 0
    assert sandbox.arrivals() == []


def test_interrupt_ends_a_rate_limit_wait(sandbox: SandboxHandle, tmp_path: Path) -> None:
    client = PlatformClient(sandbox.settings(), tmp_path, rate=0.01, initial_wait=0.01)
    client.work_key()  # takes the only slot for the next 100 s
    waiting: list[CallResult] = []
    worker = threading.Thread(target=lambda: waiting.append(client.sync_card_info(*make_resident(12))))
    worker.start()
    client.interrupt()
    worker.join(timeout=10)
    assert not worker.is_alive() and waiting[0].result_code is None
    client.close()


def test_untrusted_tls_certificate_is_refused_without_retry(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[int] = []

    def serve() -> None:
        with listener:
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                accepted.append(1)
                try:
                    context.wrap_socket(connection, server_side=True).close()
                except OSError:
                    connection.close()

    threading.Thread(target=serve, daemon=True).start()
    settings = PlatformSettings(base_url=f"https://127.0.0.1:{port}/x/", app_id="a", app_secret="s")
    with (
        PlatformClient(settings, tmp_path, initial_wait=0.01) as client,
        pytest.raises(PlatformUnreachable) as caught,
    ):
        client.work_key()
    listener.close()
    assert "TLS" in caught.value.message and "共尝试 1 次" in caught.value.message


# -- the rate limiter (fake clock) ---------------------------------------------------------


def test_limiter_counts_pending_requests_and_send_times() -> None:
    from pipeline.platform.ratelimit import SlidingWindowLimiter

    now = [0.0]
    limiter = SlidingWindowLimiter(3, margin=0.0, clock=lambda: now[0])
    tickets = [limiter.acquire() for _ in range(3)]
    first = tickets[0]
    assert all(tickets) and first is not None
    admitted = threading.Event()

    def wait_for_room() -> None:
        if limiter.acquire() is not None:
            admitted.set()

    worker = threading.Thread(target=wait_for_room, daemon=True)
    worker.start()
    now[0] = 10.0
    limiter.wake()
    assert not admitted.wait(0.2)  # three pending requests fill the window however long they wait
    first.sent()  # sent at 10.0: occupies the window until 11.0
    first.sent()  # a ticket counts once
    assert not admitted.wait(0.2)
    now[0] = 11.0
    limiter.wake()
    assert admitted.wait(5)
    worker.join(5)


def test_sent_signal_fires_after_the_body_is_consumed() -> None:
    from pipeline.platform.ratelimit import SentSignal

    fired: list[bool] = []
    body = SentSignal(b"abc", lambda: fired.append(True))
    assert len(body) == 3
    chunks = iter(body)
    assert next(chunks) == b"abc" and not fired
    assert list(chunks) == [] and fired == [True]


# -- bounded exchanges (a bare-socket server that misbehaves) -------------------------------------------


class _BareServer:
    """Answers each request on a connection with the next behaviour of ``script`` (keep-alive)."""

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.written = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/x"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(connection,), daemon=True).start()

    def _connection(self, connection: socket.socket) -> None:
        ok = b'{"data":{"resultCode":10000,"message":"ok"}}'
        with connection:
            reader = connection.makefile("rb")
            while self.script:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                reader.read(length)
                behaviour = self.script.pop(0)
                try:
                    if behaviour == "ok":
                        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(ok), ok))
                    elif behaviour == "drip-head":  # the status line itself, a byte every 200 ms
                        for byte in b"HTTP/1.1 200 OK\r\n" * 50:
                            connection.sendall(bytes([byte]))
                            time.sleep(0.2)
                    elif behaviour == "endless":  # chunked, no length announced, never ends
                        connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                        chunk = b"x" * 65536
                        while True:
                            connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.written += len(chunk)
                except OSError:
                    return

    def close(self) -> None:
        self.listener.close()


def test_deadline_cuts_a_status_line_dripped_on_a_reused_connection() -> None:
    from pipeline.platform.transport import Received, Transport

    server = _BareServer(["ok", "drip-head"])
    transport = Transport(server.url, connect_timeout=1, read_timeout=1, deadline=1.5)
    try:
        first = transport.post(server.url, b"{}", {"Content-Type": "application/json"})
        assert isinstance(first, Received) and first.status == 200
        started = time.monotonic()
        second = transport.post(server.url, b"{}", {"Content-Type": "application/json"})
        elapsed = time.monotonic() - started
    finally:
        transport.close()
        server.close()
    assert not isinstance(second, Received) and "超时" in second.message and second.transient
    assert second.arrived and 1.4 < elapsed < 4, elapsed


def test_an_endless_answer_without_length_is_dropped_at_the_cap() -> None:
    from pipeline.platform.transport import Received, Transport

    server = _BareServer(["endless"])
    transport = Transport(server.url, connect_timeout=1, read_timeout=5, deadline=30, max_bytes=256 * 1024)
    try:
        answer = transport.post(server.url, b"{}", {"Content-Type": "application/json"})
    finally:
        transport.close()
        server.close()
    assert not isinstance(answer, Received) and "过大" in answer.message
    time.sleep(0.2)
    assert server.written < 64 * 1024 * 1024, "the client stopped reading, and hung up"


# -- answers that are no verdict, stops and pauses --------------------------------------------------


def test_deeply_nested_or_redirected_answers_are_no_verdict() -> None:
    assert parse_body(b"[" * 200_000) is None
    assert parse_body(b'{"data":' * 100_000) is None
    nested = answer_from_http(200, b"[" * 200_000, None)
    assert nested.result_code is None and nested.transient and nested.arrived
    success = b'{"data":{"resultCode":10000,"message":"ok","ehealthCardId":"C"}}'
    for status in (302, 307, 401, 404):
        answer = answer_from_http(status, success, None)
        assert answer.result_code is None and not answer.transient, status
        assert str(status) in answer.message


def test_a_stop_during_the_backoff_after_an_unanswered_attempt_says_the_outcome_is_unknown(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    client = PlatformClient(sandbox.settings(), tmp_path, initial_wait=5.0)
    client.work_key()
    sandbox.inject("lost", count=1, methods=("syncCardInfo",))
    results: list[CallResult] = []
    worker = threading.Thread(target=lambda: results.append(client.sync_card_info(*make_resident(21))))
    worker.start()
    deadline = time.monotonic() + 10
    while sandbox.count("syncCardInfo") < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # the connection is cut; the client waits before resending
    client.interrupt()
    worker.join(timeout=10)
    client.close()
    (result,) = results
    assert result.result_code is None and result.attempts == 1 and result.uncertain
    assert "结果未知" in result.message and "未发送" not in result.message
    assert sandbox.residents() == 1 and sandbox.count("syncCardInfo") == 1


def test_a_retry_after_beyond_the_calls_patience_ends_the_call(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    with PlatformClient(sandbox.settings(max_retry_seconds=0.5), tmp_path, initial_wait=0.01) as client:
        client.work_key()
        sandbox.inject("http429", count=1, methods=("syncCardInfo",))  # Retry-After: 1
        started = time.monotonic()
        result = client.sync_card_info(*make_resident(22))
        elapsed = time.monotonic() - started
    assert result.result_code is None and "429" in result.message
    assert elapsed < 0.9, elapsed
    assert sandbox.count("syncCardInfo") == 1 and sandbox.residents() == 0


def test_a_retry_after_pause_is_bounded() -> None:
    from pipeline.platform.ratelimit import SlidingWindowLimiter

    now = [100.0]
    limiter = SlidingWindowLimiter(5, max_pause=2.0, clock=lambda: now[0])
    limiter.throttled(None, 999_999_999)
    assert limiter.pause_left() == pytest.approx(2.0)
    now[0] += 3
    assert limiter.pause_left() == 0.0
