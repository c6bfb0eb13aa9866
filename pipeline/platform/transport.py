"""One HTTP exchange with the platform, bounded in time and size, and the one place its faults are read.

requests' timeouts bound each socket operation, not an exchange: an answer
dripped one byte every few seconds never trips a 30-second read timeout (each
read gets its byte in time), and nothing bounds how many bytes an answer may
have.  So every exchange here has

* a **deadline**: one wall-clock limit across connecting, sending and reading
  the whole answer (headers and body).  A single watchdog thread shuts the
  socket of an exchange that runs past it, which ends whatever read or write
  is blocked on it at once; the exchange then fails as "timed out" and the
  connection is dropped from the pool;
* a **size cap**: the answer is streamed and dropped, connection closed, as
  soon as it grows past ``max_bytes`` (or announces more in
  ``Content-Length``).  The largest legitimate answer is a ``getImg`` picture
  of a few kilobytes.

To find the socket of an exchange, the connection pool uses connection
classes that attach themselves to the exchange of the calling thread when
they connect or send a request (keep-alive connections are reused across
exchanges, so both moments matter).

Every failure becomes an :class:`~pipeline.platform.responses.Answer` with
its Chinese message, whether it is worth retrying, and whether the request
may have reached the platform (and been acted upon) although no answer came
back: :func:`transport_failure` is the only place that looks at requests' and
urllib3's exceptions.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from pipeline.platform.responses import Answer

#: Largest answer accepted, in bytes (a getImg picture is a few kilobytes).
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: How often the watchdog looks at the exchanges in flight.
_WATCH_INTERVAL = 0.05
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Received:
    """A complete HTTP answer: status, the ``Retry-After`` header, the body."""

    status: int
    retry_after: str | None
    content: bytes


class _Exchange:
    """One request and its answer, with the deadline the watchdog enforces."""

    __slots__ = ("_lock", "connection", "deadline", "done", "expired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.connection: Any = None
        self.expired = False
        self.done = False
        self._lock = threading.Lock()

    def attach(self, connection: Any) -> None:
        """The connection now carrying this exchange; cut at once if the deadline has passed."""
        with self._lock:
            self.connection = connection
            connection._ehc_exchange = self
            if self.expired:
                _cut(connection)

    def expire(self) -> None:
        """The deadline passed: shut the socket, ending any blocked read or write."""
        with self._lock:
            if self.done:
                return
            self.expired = True
            connection = self.connection
            if connection is not None and getattr(connection, "_ehc_exchange", None) is self:
                _cut(connection)

    def finish(self) -> None:
        """The exchange is over; its connection (maybe back in the pool) is no longer its business."""
        with self._lock:
            self.done = True


def _cut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()


def _attach(connection: Any) -> None:
    exchange = getattr(_current, "exchange", None)
    if exchange is not None:
        exchange.attach(connection)


class _Watched:
    """Mixin for urllib3 connections: attach to the calling thread's exchange on connect and on request."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _attach(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter with connections that report to the watchdog."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class _Watchdog:
    """One thread that expires the exchanges running past their deadline (started when first needed)."""

    def __init__(self) -> None:
        self._active: set[_Exchange] = set()
        self._condition = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, exchange: _Exchange) -> None:
        with self._condition:
            self._active.add(exchange)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="ehc-deadlines", daemon=True)
                self._thread.start()
            elif len(self._active) == 1:
                self._condition.notify()

    def discard(self, exchange: _Exchange) -> None:
        with self._condition:
            self._active.discard(exchange)

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()

    def _run(self) -> None:
        with self._condition:
            while not self._closed:
                if not self._active:
                    self._condition.wait()
                    continue
                now = time.monotonic()
                for exchange in [e for e in self._active if e.deadline <= now]:
                    self._active.discard(exchange)
                    exchange.expire()
                self._condition.wait(_WATCH_INTERVAL)


def _connection_never_made(error: BaseException) -> bool:
    """Whether ``error`` (requests' ConnectionError) failed before any byte of the request left."""
    reason: BaseException | None = error.args[0] if error.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def transport_failure(error: Exception, read_timeout: float) -> Answer:
    """The one place where requests' exceptions become answers (Chinese message, retry or not, arrived)."""
    if isinstance(error, requests.exceptions.SSLError):
        return Answer(None, "TLS 证书校验失败，拒绝连接。请检查平台地址和本机的 CA 证书", {}, False)
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return Answer(None, "连接平台超时", {}, True)
    if isinstance(error, requests.exceptions.ReadTimeout):
        return Answer(None, f"等待平台应答超时（{read_timeout:g} 秒）", {}, True, arrived=True)
    if isinstance(error, requests.exceptions.ConnectionError):
        if _connection_never_made(error):
            return Answer(None, "无法连接平台", {}, True)
        return Answer(None, "与平台的连接被中断，未收到应答", {}, True, arrived=True)
    if isinstance(
        error, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)
    ):
        return Answer(None, "平台应答中途中断", {}, True, arrived=True)
    if isinstance(error, (urllib3.exceptions.HTTPError, OSError)):
        return Answer(None, f"与平台通信出错（{type(error).__name__}）", {}, True, arrived=True)
    return Answer(None, f"平台地址无效或请求无法发出（{type(error).__name__}）。请检查 base_url", {}, False)


class Transport:
    """POSTs to one platform over a pooled session, each exchange bounded by ``deadline`` and ``max_bytes``.

    ``connect_timeout`` and ``read_timeout`` still bound each socket
    operation; ``deadline`` (seconds) bounds the whole exchange.  Thread-safe.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        deadline: float,
        max_bytes: int = MAX_ANSWER_BYTES,
        pool_size: int = 16,
    ) -> None:
        self._timeout = (connect_timeout, read_timeout)
        self.deadline = deadline
        self.max_bytes = max_bytes
        self._session = requests.Session()
        # Proxy and CA settings from the environment are read once here rather than on every call
        # (requests re-reads them per request when trust_env is on, a noticeable CPU cost).
        self._session.trust_env = False
        self._session.proxies.update(requests.utils.get_environ_proxies(base_url))
        self._session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        adapter = _WatchedAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._watchdog = _Watchdog()

    def post(self, url: str, body: Any, headers: Mapping[str, str]) -> Received | Answer:
        """POST ``body``; the complete answer, or the :class:`Answer` saying why there is none."""
        exchange = _Exchange(time.monotonic() + self.deadline)
        _current.exchange = exchange
        self._watchdog.add(exchange)
        response = None
        try:
            response = self._session.post(
                url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False, stream=True
            )
            content = self._read(response)
            exchange.finish()
            if content is None:
                return Answer(
                    None, f"平台应答过大（超过 {self.max_bytes // (1024 * 1024)} MB），已丢弃", {}, True,
                    arrived=True,
                )  # fmt: skip
            return Received(response.status_code, response.headers.get("Retry-After"), content)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            if exchange.expired:
                return Answer(
                    None, f"平台应答超时（一次请求超过 {self.deadline:g} 秒仍未完成）", {}, True, arrived=True
                )
            return transport_failure(error, self._timeout[1])
        finally:
            exchange.finish()
            self._watchdog.discard(exchange)
            _current.exchange = None
            if response is not None:
                response.close()  # after a complete read the connection is back in the pool already

    def _read(self, response: requests.Response) -> bytes | None:
        """The whole body, or ``None`` once it is larger than ``max_bytes``."""
        declared = response.headers.get("Content-Length", "")
        if declared.strip().isdigit() and int(declared) > self.max_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Close the pooled connections and stop the watchdog."""
        self._watchdog.close()
        self._session.close()

    @property
    def session(self) -> requests.Session:
        """The underlying session (tests replace its ``post``)."""
        return self._session
