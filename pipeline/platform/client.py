"""The platform client: the four signed calls over one pooled, rate-limited HTTP session.

Per-row outcomes are :class:`CallResult` values; only faults that stop a run
are raised (from :mod:`pipeline.errors`):

* ``ConfigError``           app id or secret missing, base URL not http(s);
* ``AuthenticationRefused`` ``getWorkKey`` refused (10101/10102/10103/10105 or any
                            other code but 10000; :mod:`~pipeline.platform.refusals`);
* ``PlatformUnreachable``   ``getWorkKey`` got no usable answer after every retry,
                            or attempts of any call kept getting no answer at all
                            (:mod:`~pipeline.platform.breaker`): nothing more is sent;
* ``AuthenticationRefused`` also when the platform keeps refusing (10105) new work
                            keys (:mod:`~pipeline.platform.workkey`).

The business calls need a work key and so may raise these as well.  A 10105
to a business call is never its outcome: the call is signed again with a new
key and resent.  An HTTP 429 is never an outcome either: the shared rate
limiter pauses and slows every thread, and the request is sent again.
One client is shared by many worker threads: the connection pool, the rate
limiter, the retry policy, the circuit breaker and the work key cache are all
thread-safe.  Every HTTP attempt, retries and ``getWorkKey`` included, passes
the rate limiter, and is bounded in time and size
(:mod:`~pipeline.platform.transport`).  Values are stripped before they are
signed and sent; the sign covers exactly the strings sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from loguru import logger

from pipeline.config import PlatformSettings
from pipeline.errors import AuthenticationRefused, ConfigError, PlatformUnreachable
from pipeline.logs import mask_app_id, register_secret
from pipeline.model import CARD_FIELDS, PEOPLE_FIELDS
from pipeline.platform.breaker import DEFAULT_FAILURES, DEFAULT_THROTTLE_SILENCE, CircuitBreaker
from pipeline.platform.ratelimit import MAX_PAUSE, SentSignal, SlidingWindowLimiter
from pipeline.platform.refusals import refusal_message
from pipeline.platform.responses import Answer, CallResult, answer_from_http
from pipeline.platform.retrying import RetryPolicy
from pipeline.platform.signing import bind_card_sign, img_sign, sync_card_sign, timestamp_ms, work_key_sign
from pipeline.platform.transport import MAX_ANSWER_BYTES, Transport
from pipeline.platform.workkey import MAX_FRESH_REFUSALS, WorkKeyCache
from schemas.result_codes import ResultCode

__all__ = ["CallResult", "PlatformClient"]

_HEADERS = {"Content-Type": "application/json;charset=UTF-8", "Accept": "application/json"}
_METHODS = ("getWorkKey", "syncCardInfo", "bindCardInfo", "getImg")
_INTERRUPTED = Answer(None, "已中断：请求未发送", {}, False)
#: A stop that cut the wait before a resend short, after an attempt that may have reached the platform.
_INTERRUPTED_UNANSWERED = Answer(None, "已中断：此前发出的请求没有得到答复，发送结果未知", {}, False)
#: Codes refusing the app itself, whatever call they answer: a run stops at the first.
_APP_REFUSALS = frozenset({ResultCode.INVALID_USER_NAME, ResultCode.INVALID_PASSWORD})
#: Times one call may be signed again with a new key after 10105, whatever other calls do meanwhile.
_MAX_KEY_CHANGES_PER_CALL = 2 * MAX_FRESH_REFUSALS


def _text(value: Any) -> str:
    """A field value as the stripped string that is signed and sent."""
    return "" if value is None else str(value).strip()


def _cut_short(error: PlatformUnreachable) -> str:
    """What a call whose requests had left says when the breaker opened: its outcome is unknown."""
    return f"{error.finding}，发送结果未知"


class PlatformClient:
    """Signed calls to the platform at ``settings.base_url``.

    ``rate`` caps the requests in any one-second window across all threads
    (``None``: no cap until the platform answers 429); ``pool_size`` should be
    at least the number of worker threads.  ``initial_wait`` is the first
    retry backoff in seconds.  One HTTP exchange may take ``deadline``
    seconds in all (default: the connect timeout plus the read timeout) and
    its answer ``max_answer_bytes``.  The platform counts as unreachable after
    ``breaker_failures`` attempts in a row without an answer that span at
    least ``breaker_silence`` seconds (default: the connect timeout), or
    unavailable after as many answered only with HTTP 429 over
    ``breaker_throttle_silence`` seconds.
    """

    def __init__(
        self,
        settings: PlatformSettings,
        state_dir: Path,
        *,
        rate: float | None = None,
        pool_size: int = 16,
        initial_wait: float = 0.5,
        deadline: float | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        breaker_failures: int = DEFAULT_FAILURES,
        breaker_silence: float | None = None,
        breaker_throttle_silence: float = DEFAULT_THROTTLE_SILENCE,
    ) -> None:
        self._app_id = _text(settings.app_id)
        self._secret = _text(settings.app_secret)
        if not self._app_id or not self._secret:
            missing = "app_id（EHC_APP_ID）" if not self._app_id else "app_secret（EHC_APP_SECRET）"
            raise ConfigError(f"缺少平台凭据 {missing}。请设置环境变量或在配置文件 [platform] 中填写")
        register_secret(self._secret)
        base = _text(settings.base_url)
        if not base.startswith(("https://", "http://")):
            raise ConfigError(f"平台地址 base_url 应以 https:// 开头，实际为 {base!r}。请改正配置")
        self.base_url = base if base.endswith("/") else base + "/"
        self._urls = {method: f"{self.base_url}{method}.do" for method in _METHODS}
        self._qr_type = _text(settings.qr_type)
        self._max_retry_seconds = settings.max_retry_seconds
        app_block = {
            "termId": _text(settings.term_id),
            "version": _text(settings.version),
            "appVersion": _text(settings.app_version),
            "appPackageName": _text(settings.app_package_name),
            "digestType": _text(settings.digest_type),
            "encType": _text(settings.enc_type),
        }
        # The envelope is the same for every request: encode it once, append ``data`` per request.
        envelope = json.dumps(
            {"appId": self._app_id, "app": app_block}, ensure_ascii=False, separators=(",", ":")
        )
        self._prefix = envelope[:-1] + ',"data":'

        self._transport = Transport(
            self.base_url,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            deadline=deadline or settings.connect_timeout + settings.read_timeout,
            max_bytes=max_answer_bytes,
            pool_size=pool_size,
        )
        self._interrupted = threading.Event()
        # No Retry-After holds the calls longer than each may keep trying.
        max_pause = min(MAX_PAUSE, settings.max_retry_seconds)
        self._limiter = SlidingWindowLimiter(rate if rate else None, max_pause=max_pause)
        self._breaker = CircuitBreaker(
            self.base_url,
            failures=breaker_failures,
            silence=settings.connect_timeout if breaker_silence is None else breaker_silence,
            throttle_silence=breaker_throttle_silence,
        )
        self._retry = RetryPolicy(
            max_attempts=settings.max_attempts,
            max_seconds=settings.max_retry_seconds,
            initial_wait=initial_wait,
            interrupted=self._interrupted,
            halted=lambda: self._breaker.is_open,
        )
        self._keys = WorkKeyCache(
            state_dir, self._app_id, self.base_url, self._fetch_work_key, wait=self._interrupted.wait
        )

    @property
    def throttles(self) -> int:
        """How many times an HTTP 429 made the shared rate limiter slow down."""
        return self._limiter.throttles

    # -- public calls ------------------------------------------------------------

    def work_key(self, *, refresh: bool = False) -> str:
        """Today's work key (cached in memory and in the state directory); ``refresh`` forces a new one."""
        key = self._keys.get()
        return self._keys.refresh(failed=key) if refresh else key

    def sync_card_info(self, card_info: Mapping[str, Any], people_info: Mapping[str, Any]) -> CallResult:
        """``syncCardInfo``: apply for a card; sends exactly the spec's ``cardInfo``/``peopleInfo`` keys."""
        card = {name: _text(card_info.get(name)) for name in CARD_FIELDS}
        people = {name: _text(people_info.get(name)) for name in PEOPLE_FIELDS}
        qr_type = self._qr_type

        def data(key: str, timestamp: str) -> dict[str, Any]:
            return {
                "timestamp": timestamp,
                "type": qr_type,
                "sign": sync_card_sign(self._app_id, key, timestamp, qr_type),
                "cardInfo": card,
                "peopleInfo": people,
            }

        return self._signed_call("syncCardInfo", data)

    def bind_card_info(
        self,
        *,
        zjlx: str,
        zjhm: str,
        xm: str,
        brdh: str,
        bind_type: str = "1",
        bind_zjlx: str = "",
        bind_zjhm: str = "",
    ) -> CallResult:
        """``bindCardInfo``: bind the card of an enrolled resident; answers its card ids."""
        fields = {
            "type": self._qr_type,
            "zjlx": _text(zjlx),
            "zjhm": _text(zjhm),
            "xm": _text(xm),
            "brdh": _text(brdh),
            "bindType": _text(bind_type),
            "bindZjlx": _text(bind_zjlx),
            "bindZjhm": _text(bind_zjhm),
        }

        def data(key: str, timestamp: str) -> dict[str, Any]:
            sign = bind_card_sign(self._app_id, key, timestamp, fields["zjlx"], fields["zjhm"])
            return {"timestamp": timestamp, "sign": sign, **fields}

        return self._signed_call("bindCardInfo", data)

    def get_img(self, *, ehealth_card_id: str = "", virtual_card_num: str = "") -> CallResult:
        """``getImg``: the QR code (``qrCode`` text and ``img`` base64 PNG) of a card."""
        card_id, card_num = _text(ehealth_card_id), _text(virtual_card_num)
        if not card_id and not card_num:
            unsent = "参数错误：电子健康卡ID和虚拟卡号都为空，未发送"
            return CallResult(ResultCode.PARAMETER_ERROR, unsent, {}, 0)
        fields = {"type": self._qr_type}
        if card_id:
            fields["ehealthCardId"] = card_id
        if card_num:
            fields["virtualCardNum"] = card_num

        def data(key: str, timestamp: str) -> dict[str, Any]:
            sign = img_sign(self._app_id, key, timestamp, card_id, card_num)
            return {"timestamp": timestamp, "sign": sign, **fields}

        return self._signed_call("getImg", data)

    def interrupt(self) -> None:
        """Stop waiting: pending backoffs and rate-limit waits end now; calls in flight finish."""
        self._interrupted.set()
        self._limiter.wake()

    def close(self) -> None:
        """Interrupt waits and close the pooled connections."""
        self.interrupt()
        self._transport.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------

    def _signed_call(self, method: str, data: Callable[[str, str], dict[str, Any]]) -> CallResult:
        interrupted = CallResult(None, _INTERRUPTED.message, {}, 0)
        if self._interrupted.is_set():
            return interrupted

        def signed(key: str) -> Callable[[], dict[str, Any]]:
            return lambda: data(key, timestamp_ms())

        attempts, uncertain = 0, False
        try:
            key = self._keys.get()
            answer, attempts, uncertain = self._send(method, signed(key))
            changes = 0
            while answer.result_code == ResultCode.INVALID_WORK_KEY:
                # Refused unread: not this resident's verdict.  Sign again with a new key and resend.
                changes += 1
                if changes > _MAX_KEY_CHANGES_PER_CALL:
                    raise AuthenticationRefused(
                        f"平台反复拒绝认证字符串（{ResultCode.INVALID_WORK_KEY} 认证字符串无效），"
                        f"同一请求换了 {changes - 1} 次仍被拒绝，已停止发送。"
                        "请确认同一应用 ID 只在一处运行，并确认本机时钟准确",
                        ResultCode.INVALID_WORK_KEY,
                    )
                key = self._keys.refused(key)
                answer, more, unsure = self._send(method, signed(key))
                attempts, uncertain = attempts + more, uncertain or unsure
            if answer.result_code in _APP_REFUSALS:
                # The app's user name or password refused: no verdict on this row, and every row would
                # get the same; the run stops as a getWorkKey refused so would have (exit 2).
                code = int(answer.result_code or 0)
                raise AuthenticationRefused(refusal_message(code, answer.message, self._app_id), code)
            if answer.result_code is not None:
                self._keys.accepted(key)
        except PlatformUnreachable as error:
            if self._interrupted.is_set() and not self._breaker.is_open:
                return interrupted  # stopped while fetching the key: not a platform fault
            if attempts:  # requests of this call left before: raised, the call would look never sent
                return CallResult(None, _cut_short(error), {}, attempts, uncertain=True, unanswered=True)
            raise
        unanswered = uncertain or answer.arrived
        return CallResult(answer.result_code, answer.message, answer.data, attempts, uncertain, unanswered)

    def _send(self, method: str, data: Callable[[], dict[str, Any]]) -> tuple[Answer, int, bool]:
        """The last answer to ``method`` after retries, the requests actually sent, and whether an
        attempt before the last may have reached the platform unanswered.

        Raises :class:`PlatformUnreachable` once the circuit breaker is open, and only before any
        request of the call left: one cut short by the breaker is an answer of unknown outcome.
        """
        url, prefix = self._urls[method], self._prefix
        sent = 0
        arrived: list[bool] = []  # per attempt: may have reached the platform without an answer
        started = time.monotonic()

        def attempt() -> Answer:
            nonlocal sent
            while True:
                self._breaker.check()
                ticket = self._limiter.acquire(self._interrupted)
                if ticket is None:
                    return _INTERRUPTED
                # Timestamp and sign are made per attempt, once the rate limiter lets us through.
                body = (prefix + json.dumps(data(), ensure_ascii=False, separators=(",", ":")) + "}").encode()
                sent += 1
                try:
                    received = self._transport.post(url, SentSignal(body, ticket.sent), _HEADERS)
                finally:
                    ticket.sent()  # no-op when the body was sent; else counts the failed attempt now
                if isinstance(received, Answer):
                    answer = received
                else:
                    answer = answer_from_http(received.status, received.content, received.retry_after)
                self._breaker.record(answer)
                if answer.throttled:
                    # Turned away unread: slow every thread down and send again, without spending an attempt.
                    if self._limiter.throttled(ticket.at, answer.retry_after):
                        logger.warning(
                            "平台要求放慢（HTTP 429）：暂停后速率降至每秒 {:g} 次，之后逐步恢复",
                            self._limiter.rate or 0,
                        )
                    # A Retry-After longer than the call may keep trying ends the call now.
                    patience = self._max_retry_seconds - (time.monotonic() - started)
                    if patience > self._limiter.pause_left() and not self._interrupted.is_set():
                        continue
                arrived.append(answer.arrived)
                return answer

        if self._interrupted.is_set():
            return _INTERRUPTED, 0, False
        try:
            answer = self._retry.run(attempt, method)
        except PlatformUnreachable as error:
            if not sent:
                raise
            # Attempts of this call left before the breaker opened: its outcome is unknown, and said so
            # (the run stops at the next call); raising would lose that they were sent.
            arrived.append(True)
            return Answer(None, _cut_short(error), {}, False, arrived=True), sent, True
        if not sent:
            self._breaker.check()  # nothing left: the open breaker, not "interrupted", is why
        if answer is _INTERRUPTED and sent:
            arrived.append(False)  # the resend the stop prevented
            if any(arrived):
                answer = _INTERRUPTED_UNANSWERED
        return answer, sent, any(arrived[:-1])

    def _fetch_work_key(self) -> str:
        def data() -> dict[str, Any]:
            timestamp = timestamp_ms()
            return {"timestamp": timestamp, "sign": work_key_sign(self._app_id, self._secret, timestamp)}

        answer, attempts, _ = self._send("getWorkKey", data)
        if answer.result_code is None:
            fix = "平台正在限流，请稍后再运行" if answer.throttled else "请检查网络连接和平台地址 base_url"
            raise PlatformUnreachable(
                f"无法从平台 {self.base_url} 获取认证字符串：{answer.message}（共尝试 {attempts} 次）。{fix}"
            )
        if answer.result_code != ResultCode.SUCCESS:
            code = answer.result_code
            raise AuthenticationRefused(refusal_message(code, answer.message, self._app_id), code)
        key = answer.data.get("workKey", "")
        if not key:
            raise AuthenticationRefused(
                "平台应答成功但没有给出认证字符串 workKey。请联系平台核实应用配置", ResultCode.SUCCESS
            )
        register_secret(key)
        logger.info("已从平台获取新的认证字符串（应用 {}，请求 {} 次）", mask_app_id(self._app_id), attempts)
        return key
