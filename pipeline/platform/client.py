"""The platform client: the four signed calls over one pooled, rate-limited HTTP session.

Per-row outcomes are :class:`CallResult` values; only faults that stop a run
are raised (from :mod:`pipeline.errors`):

* ``ConfigError``           app id or secret missing, base URL not http(s);
* ``AuthenticationRefused`` ``getWorkKey`` refused (10101/10102/10103/10105 or any
                            other code but 10000; :mod:`~pipeline.platform.refusals`);
* ``PlatformUnreachable``   ``getWorkKey`` got no usable answer after every retry.

The business calls need a work key and so may raise the last two as well.
One client is shared by many worker threads: the session's connection pool,
the rate limiter, the retry policy and the work key cache are all thread-safe.
Every HTTP attempt, retries and ``getWorkKey`` included, passes the rate
limiter.  Values are stripped before they are signed and sent; the sign covers
exactly the strings sent.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import urllib3
from loguru import logger
from requests.adapters import HTTPAdapter

from pipeline.config import PlatformSettings
from pipeline.errors import AuthenticationRefused, ConfigError, PlatformUnreachable
from pipeline.logs import mask_app_id, register_secret
from pipeline.model import CARD_FIELDS, PEOPLE_FIELDS
from pipeline.platform.ratelimit import SentSignal, SlidingWindowLimiter
from pipeline.platform.refusals import refusal_message
from pipeline.platform.responses import Answer, CallResult, answer_from_http
from pipeline.platform.retrying import RetryPolicy
from pipeline.platform.signing import bind_card_sign, img_sign, sync_card_sign, timestamp_ms, work_key_sign
from pipeline.platform.workkey import WorkKeyCache
from schemas.result_codes import ResultCode

__all__ = ["CallResult", "PlatformClient"]

_HEADERS = {"Content-Type": "application/json;charset=UTF-8", "Accept": "application/json"}
_METHODS = ("getWorkKey", "syncCardInfo", "bindCardInfo", "getImg")
_INTERRUPTED = Answer(None, "已中断：请求未发送", {}, False)


def _text(value: Any) -> str:
    """A field value as the stripped string that is signed and sent."""
    return "" if value is None else str(value).strip()


def _transport_failure(error: Exception, read_timeout: float) -> Answer:
    """The one place where requests' exceptions become answers (Chinese message, retry or not)."""
    if isinstance(error, requests.exceptions.SSLError):
        return Answer(None, "TLS 证书校验失败，拒绝连接。请检查平台地址和本机的 CA 证书", {}, False)
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return Answer(None, "连接平台超时", {}, True)
    if isinstance(error, requests.exceptions.ReadTimeout):
        return Answer(None, f"等待平台应答超时（{read_timeout:g} 秒）", {}, True)
    if isinstance(error, requests.exceptions.ConnectionError):
        return Answer(None, "无法连接平台，或连接被中断", {}, True)
    if isinstance(
        error, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)
    ):
        return Answer(None, "平台应答中途中断", {}, True)
    if isinstance(error, urllib3.exceptions.HTTPError):
        return Answer(None, f"与平台通信出错（{type(error).__name__}）", {}, True)
    return Answer(None, f"平台地址无效或请求无法发出（{type(error).__name__}）。请检查 base_url", {}, False)


class PlatformClient:
    """Signed calls to the platform at ``settings.base_url``.

    ``rate`` caps the requests in any one-second window across all threads
    (``None``: no cap); ``pool_size`` should be at least the number of worker
    threads.  ``initial_wait`` is the first retry backoff in seconds.
    """

    def __init__(
        self,
        settings: PlatformSettings,
        state_dir: Path,
        *,
        rate: float | None = None,
        pool_size: int = 16,
        initial_wait: float = 0.5,
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
        self._timeout = (settings.connect_timeout, settings.read_timeout)
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

        self._session = requests.Session()
        # Proxy and CA settings from the environment are read once here rather than on every call
        # (requests re-reads them per request when trust_env is on, a noticeable CPU cost).
        self._session.trust_env = False
        self._session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        self._session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

        self._interrupted = threading.Event()
        self._limiter = SlidingWindowLimiter(rate) if rate else None
        self._retry = RetryPolicy(
            max_attempts=settings.max_attempts,
            max_seconds=settings.max_retry_seconds,
            initial_wait=initial_wait,
            interrupted=self._interrupted,
        )
        self._keys = WorkKeyCache(state_dir, self._app_id, self.base_url, self._fetch_work_key)

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
        if self._limiter is not None:
            self._limiter.wake()

    def close(self) -> None:
        """Interrupt waits and close the pooled connections."""
        self.interrupt()
        self._session.close()

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
        try:
            key = self._keys.get()
            answer, attempts = self._send(method, lambda: data(key, timestamp_ms()))
            if answer.result_code == ResultCode.INVALID_WORK_KEY:
                key = self._keys.refresh(failed=key)
                answer, more = self._send(method, lambda: data(key, timestamp_ms()))
                attempts += more
        except PlatformUnreachable:
            if self._interrupted.is_set():  # stopped while fetching the key: not a platform fault
                return interrupted
            raise
        return CallResult(answer.result_code, answer.message, answer.data, attempts)

    def _send(self, method: str, data: Callable[[], dict[str, Any]]) -> tuple[Answer, int]:
        """The last answer to ``method`` after retries, and how many requests were actually sent."""
        url, prefix = self._urls[method], self._prefix
        sent = 0

        def attempt() -> Answer:
            nonlocal sent
            ticket = None
            if self._limiter is not None:
                ticket = self._limiter.acquire(self._interrupted)
                if ticket is None:
                    return _INTERRUPTED
            # Timestamp and sign are made per attempt, once the rate limiter lets us through.
            body = (prefix + json.dumps(data(), ensure_ascii=False, separators=(",", ":")) + "}").encode()
            sent += 1
            try:
                response = self._session.post(
                    url,
                    data=body if ticket is None else SentSignal(body, ticket.sent),
                    headers=_HEADERS,
                    timeout=self._timeout,
                    allow_redirects=False,
                )
            except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
                return _transport_failure(error, self._timeout[1])
            finally:
                if ticket is not None:
                    ticket.sent()  # no-op when the body was sent; else counts the failed attempt now
            retry_after = response.headers.get("Retry-After")
            return answer_from_http(response.status_code, response.content, retry_after)

        if self._interrupted.is_set():
            return _INTERRUPTED, 0
        answer = self._retry.run(attempt, method)
        return answer, sent

    def _fetch_work_key(self) -> str:
        def data() -> dict[str, Any]:
            timestamp = timestamp_ms()
            return {"timestamp": timestamp, "sign": work_key_sign(self._app_id, self._secret, timestamp)}

        answer, attempts = self._send("getWorkKey", data)
        if answer.result_code is None:
            raise PlatformUnreachable(
                f"无法从平台 {self.base_url} 获取认证字符串：{answer.message}（共尝试 {attempts} 次）。"
                "请检查网络连接和平台地址 base_url"
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
