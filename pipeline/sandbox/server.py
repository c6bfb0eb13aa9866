"""The sandbox: a real HTTP server on loopback that behaves like the platform.

It serves ``getWorkKey.do``, ``syncCardInfo.do``, ``bindCardInfo.do`` and
``getImg.do`` under ``/jkfs-dzjkk/dzjkk/websvi/``.  Per request, in order: the
per-app rate limit (HTTP 429 with ``Retry-After`` beyond ``rate_limit``
admitted requests in any second), the fault plan (:mod:`pipeline.sandbox.faults`:
failures in front of the platform, and the misbehaviours of a platform in
trouble), then the platform's own checks and state (:mod:`pipeline.sandbox.platform`).
Every request is logged with its arrival time (:mod:`pipeline.sandbox.store`),
stamped by the kernel on receipt.  One thread per connection, HTTP/1.1
keep-alive, each answer written in one send.

Connections are bounded as a web server in front of the platform bounds
them: one silent for :data:`IDLE_SECONDS` (between requests, or in the middle
of one: a request dripped a byte a minute) is closed, and beyond
:data:`MAX_CONNECTIONS` open at once a new one is closed on arrival — each
holds a thread, so a client that opens connections and never sends on them
would otherwise hold the sandbox's memory without bound.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import signal
import socket
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from pipeline.errors import ConfigError
from pipeline.files import explain_os_error, explain_sqlite_error
from pipeline.sandbox import checks
from pipeline.sandbox.faults import (
    ALL_KINDS,
    CODE_10129,
    DOWN,
    DRIP,
    DROP,
    FAULT_KINDS,
    HTTP_429,
    HTTP_500,
    HUGE,
    LOST,
    MALFORMED,
    REKEY,
    FaultPlan,
)
from pipeline.sandbox.platform import METHODS, PlatformLogic
from pipeline.sandbox.store import SandboxStore, max_in_window
from schemas.result_codes import ResultCode

PATH_PREFIX = "/jkfs-dzjkk/dzjkk/websvi/"

# Linux: SO_TIMESTAMPNS makes the kernel stamp each received packet (CLOCK_REALTIME).
_SO_TIMESTAMPNS = 35 if sys.platform.startswith("linux") else None
_STAMP_SPACE = socket.CMSG_SPACE(16)


def _enable_arrival_stamps(connection: socket.socket) -> bool:
    if _SO_TIMESTAMPNS is None:
        return False
    try:
        connection.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _arrival_stamp(connection: socket.socket) -> float | None:
    """When the next request's first bytes reached this host (waits for them); ``None`` if unknown.

    A request is stamped with the kernel's receive time, not the time a
    handler thread got round to it: under load, thread scheduling would
    otherwise shift stamps by tens of milliseconds and distort the one-second
    windows.  Keep-alive clients send a request only after the previous
    answer (no pipelining), so the next bytes are still in the socket here.
    """
    try:
        _, ancillary, _, _ = connection.recvmsg(1, _STAMP_SPACE, socket.MSG_PEEK)
    except TimeoutError:
        raise  # silent past IDLE_SECONDS: the caller closes the connection
    except OSError:
        return None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= 16:
            seconds, nanoseconds = struct.unpack("qq", payload[:16])
            return seconds + nanoseconds / 1e9
    return None


#: The most a request body may hold: one resident's request is about 2 KB.
MAX_BODY_BYTES = 1 << 20

#: Seconds a connection may stay silent before it is closed (nginx's default ``keepalive_timeout``).
IDLE_SECONDS = 75.0

#: Connections served at once; one more is closed as it arrives.
MAX_CONNECTIONS = 512


class _BadBody(Exception):
    """A request body that cannot be read: its HTTP status and answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.answer = json.dumps({"message": message}).encode()


def _read_body(handler: BaseHTTPRequestHandler, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request's body, framed by ``Content-Length`` or sent chunked, as any web server reads it.

    A length that is no number is a 400; a body larger than ``limit`` a 413,
    refused before it is read (a declared 100 GB would otherwise be allocated).
    """
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        return _read_chunked(handler, limit)
    declared = (handler.headers.get("Content-Length") or "0").strip()
    if not (declared.isascii() and declared.isdigit()):
        raise _BadBody(400, "bad Content-Length")
    if int(declared) > limit:
        raise _BadBody(413, "request body too large")
    return handler.rfile.read(int(declared)) if int(declared) else b""


def _read_chunked(handler: BaseHTTPRequestHandler, limit: int) -> bytes:
    """A body sent with ``Transfer-Encoding: chunked``, at most ``limit`` bytes."""
    body = bytearray()
    while True:
        line = handler.rfile.readline(1024)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _BadBody(400, "bad chunk size") from None
        if size < 0 or len(body) + size > limit:
            raise _BadBody(413 if size > 0 else 400, "request body too large")
        if size == 0:
            while handler.rfile.readline(1024).strip():  # trailers, up to the blank line
                pass
            return bytes(body)
        chunk = handler.rfile.read(size)
        if len(chunk) < size or handler.rfile.readline(1024).strip():
            raise _BadBody(400, "bad chunk")
        body += chunk


def _parse(body: bytes) -> object:
    """The request's JSON, or None when it is none: not UTF-8, not JSON, or text that is no Unicode."""
    try:
        # 字符编码UTF-8 (a BOM allowed): json.loads would also guess UTF-16 and UTF-32 from bytes.
        document = json.loads(body.decode("utf-8-sig"))
        # A "\ud800" escape is valid JSON but a lone surrogate no UTF-8 holds: signing it, or logging
        # it in SQLite, raised UnicodeEncodeError in the handler.
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # nesting deeper than the stack is no request either
        return None
    return document


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # http.server writes headers and body in separate sends; without this, delayed ACKs cost ~40 ms per call.
    disable_nagle_algorithm = True
    server: SandboxServer
    arrived: float | None = None
    _stamping = False

    def setup(self) -> None:
        self.request.settimeout(self.server.idle_seconds)  # every read and write of it, from its first
        super().setup()
        self._stamping = _enable_arrival_stamps(self.connection)

    def handle_one_request(self) -> None:
        try:
            self.arrived = _arrival_stamp(self.connection) if self._stamping else None
        except TimeoutError:
            self.close_connection = True
            return
        super().handle_one_request()

    def do_POST(self) -> None:
        self.server.handle_post(self)

    def do_GET(self) -> None:
        self.server.respond(self, 405, b'{"message":"POST only"}')

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log: the requests table is the log


class SandboxServer(ThreadingHTTPServer):
    """The sandbox HTTP server; build it with :func:`build_server`."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(
        self,
        address: tuple[str, int],
        store: SandboxStore,
        *,
        latency_ms: float = 0.0,
        faults: FaultPlan | None = None,
        rate_limit: float | None = None,
        workkey_ttl: float = 86400.0,
        slow_ms: float = 2000.0,
        quirks: bool = True,
        clock: Callable[[], float] = time.time,
        retry_after: int = 1,
        drip_ms: float = 1000.0,
        huge_mb: float = 64.0,
        idle_seconds: float = IDLE_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        super().__init__(address, _Handler)
        # Accepted connections inherit the flag, so even a new connection's first request is stamped
        # on arrival (set only after accept, that request could be stamped when the handler reads it).
        _enable_arrival_stamps(self.socket)
        self.store = store
        self.faults = faults or FaultPlan()
        self.latency = latency_ms / 1000.0
        self.slow = slow_ms / 1000.0
        self.retry_after = max(0, int(retry_after))
        self.drip = drip_ms / 1000.0
        self.huge_bytes = int(huge_mb * 1024 * 1024)
        #: bytes of ``huge`` answers actually written before the client hung up (tests read it)
        self.huge_written = 0
        self.idle_seconds = idle_seconds
        self.max_connections = max_connections
        self.down = False
        self.rate_limit = rate_limit
        self.platform = PlatformLogic(store, workkey_ttl=workkey_ttl, quirks=quirks)
        self.clock = clock
        self._admitted: dict[str, list[float]] = {}
        self._rate_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._serving = threading.Event()
        self._closing = False

    @property
    def base_url(self) -> str:
        """The URL a client uses as ``base_url`` (ends with ``/``)."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{PATH_PREFIX}"

    def inject(self, kind: str, count: int = 1, methods: tuple[str, ...] | None = None) -> None:
        """Make the next ``count`` requests (to ``methods``, if given) fail with fault ``kind``."""
        self.faults.inject(kind, count, methods)

    # -- connection bookkeeping, so that stopping also ends keep-alive connections ---------

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            room = len(self._connections) < self.max_connections
            if room:
                self._connections.add(request)
        if not room:  # no thread for it: closed at once, as a full web server does
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Handle requests until :meth:`shutdown` or :meth:`close`."""
        self._serving.set()
        try:
            super().serve_forever(poll_interval)
        finally:
            self._serving.clear()

    def close(self) -> None:
        """Stop serving (if serving), end open connections, close the listening socket and the state."""
        self._closing = True
        self._stop_listening()
        self.store.close()

    def _stop_listening(self) -> None:
        """Stop serving (if serving), close the listening socket and cut every open connection."""
        if self._serving.is_set():
            self.shutdown()
        self.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    # -- request handling ------------------------------------------------------------------

    def respond(
        self, handler: BaseHTTPRequestHandler, status: int, body: bytes, extra_headers: str = ""
    ) -> None:
        """Send one complete answer in a single write."""
        reason = handler.responses.get(status, ("",))[0]
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json;charset=UTF-8\r\n"
            f"Content-Length: {len(body)}\r\n{extra_headers}\r\n"
        )
        handler.wfile.write(head.encode("latin-1") + body)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Report a handler's crash on stderr, except while closing (connections are cut then)."""
        if not self._closing:
            super().handle_error(request, client_address)

    def handle_post(self, handler: _Handler) -> None:
        """Answer one POST: route, rate limit, faults, checks, state."""
        try:
            self._handle_post(handler)
        except TimeoutError:  # the request's body stopped coming: there is nothing to answer
            handler.close_connection = True
        except (OSError, sqlite3.ProgrammingError):
            if not self._closing:
                raise
            handler.close_connection = True

    def _handle_post(self, handler: _Handler) -> None:
        if self.down:  # dead: a request that slipped in on an open connection gets no answer
            self._hang_up(handler)
            return
        arrived = handler.arrived or self.clock()
        try:
            body = _read_body(handler)
        except _BadBody as bad:
            handler.close_connection = True  # the body's end is unknown: no next request can be found
            self.respond(handler, bad.status, bad.answer, "Connection: close\r\n")
            return
        path = urlsplit(handler.path).path  # a query string does not change the method, as on a web server
        method = path[len(PATH_PREFIX) : -3] if path.startswith(PATH_PREFIX) and path.endswith(".do") else ""
        if method not in METHODS:
            self.respond(handler, 404, b'{"message":"not found"}')
            return
        document = _parse(body)
        app_id = document.get("appId") if isinstance(document, dict) else None
        app_key = app_id if isinstance(app_id, str) else ""

        if self.rate_limit is not None:
            wait = self._admit(app_key, arrived)
            if wait is not None:
                self.store.log_request(app_key, method, arrived, 429, None, "rate_limited")
                self.respond(handler, 429, b'{"message":"too many requests"}', f"Retry-After: {wait}\r\n")
                return

        fault = self.faults.draw(method)
        if fault in (LOST, DRIP, REKEY):
            self._misbehave(handler, fault, app_key, method, document, arrived)
            return
        if fault is not None:
            self._fail(handler, fault, app_key, method, arrived)
            return

        code, answer = self.platform.handle(method, document, arrived)
        self.store.log_request(app_key, method, arrived, 200, code, None)
        if self.latency:
            time.sleep(self.latency)
        self.respond(handler, 200, answer)

    def _misbehave(
        self, handler: _Handler, fault: str, app_id: str, method: str, document: object, arrived: float
    ) -> None:
        """The misbehaviours that reach the platform logic: ``lost``, ``drip``, ``rekey``."""
        if fault == REKEY and app_id and self.store.app_secret(app_id) is not None:
            self.store.issue_work_key(app_id, arrived)  # another client of this app logged in just now
        code, answer = self.platform.handle(method, document, arrived)
        self.store.log_request(app_id, method, arrived, 0 if fault == LOST else 200, code, fault)
        if fault == LOST:
            self._hang_up(handler)
        elif fault == DRIP:
            self._drip(handler, answer)
        else:
            self.respond(handler, 200, answer)

    def _hang_up(self, handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)

    def _drip(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        """The answer's head at once, then its body one byte every ``drip`` seconds."""
        handler.close_connection = True
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=UTF-8\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        try:
            handler.wfile.write(head.encode("latin-1"))
            for position in range(len(body)):
                time.sleep(self.drip)
                if self._closing:
                    return
                handler.wfile.write(body[position : position + 1])
        except OSError:
            return  # the client gave up

    def _huge(self, handler: BaseHTTPRequestHandler) -> None:
        """An answer announced (and sent) as ``huge_bytes`` of filler, until the client hangs up."""
        handler.close_connection = True
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=UTF-8\r\n"
            f"Content-Length: {self.huge_bytes}\r\n\r\n"
        )
        chunk = b"x" * 65536
        try:
            handler.wfile.write(head.encode("latin-1"))
            left = self.huge_bytes
            while left > 0 and not self._closing:
                piece = chunk[: min(left, len(chunk))]
                handler.wfile.write(piece)
                left -= len(piece)
                with self._rate_lock:
                    self.huge_written += len(piece)
        except OSError:
            return  # the client gave up

    def go_down(self) -> None:
        """Die as a platform does: stop listening, cut every open connection; the state stays readable."""
        self.down = True
        threading.Thread(target=self._stop_listening, name="sandbox-down", daemon=True).start()

    def _admit(self, app_id: str, arrived: float) -> int | None:
        """``None`` if the request is within the app's rate, else seconds to wait (Retry-After): until
        the window frees a permit, and at least ``retry_after`` (``--rate-limit N --retry-after S``).

        Handler threads may run in another order than their requests arrived, so
        admission looks at every admitted stamp near this one, not just the last ``N``.
        """
        assert self.rate_limit is not None
        permits = max(1, math.floor(self.rate_limit))
        window = 1.0 if self.rate_limit >= 1 else 1.0 / self.rate_limit
        with self._rate_lock:
            stamps = self._admitted.setdefault(app_id, [])
            del stamps[: bisect.bisect_right(stamps, arrived - 2 * window)]
            near = stamps[
                bisect.bisect_right(stamps, arrived - window) : bisect.bisect_left(stamps, arrived + window)
            ]
            bisect.insort(near, arrived)
            if max_in_window(near, window) > permits:
                return max(1, self.retry_after, math.ceil(near[0] + window - arrived))
            bisect.insort(stamps, arrived)
        return None

    def _fail(
        self, handler: BaseHTTPRequestHandler, fault: str, app_id: str, method: str, arrived: float
    ) -> None:
        statuses = {
            DROP: 0,
            DOWN: 0,
            HTTP_500: 500,
            HTTP_429: 429,
            CODE_10129: 200,
            MALFORMED: 200,
            HUGE: 200,
        }
        status = statuses.get(fault, 504)
        code = ResultCode.NETWORK_ERROR if fault == CODE_10129 else None
        self.store.log_request(app_id, method, arrived, status, code, fault)
        if fault in (DROP, DOWN):
            self._hang_up(handler)
            if fault == DOWN:
                self.go_down()
        elif fault == HUGE:
            self._huge(handler)
        elif fault == HTTP_500:
            self.respond(handler, 500, b'{"message":"internal server error"}')
        elif fault == HTTP_429:
            self.respond(
                handler, 429, b'{"message":"too many requests"}', f"Retry-After: {self.retry_after}\r\n"
            )
        elif fault == CODE_10129:
            self.respond(handler, 200, self.platform.answer(method, ResultCode.NETWORK_ERROR, {}))
        elif fault == MALFORMED:
            self.respond(handler, 200, b'{"data": {"resultCode": 100')
        else:  # slow: a gateway that waited in vain
            time.sleep(self.slow)
            self.respond(handler, 504, b'{"message":"gateway timeout"}')


def build_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    state: Path,
    apps: Mapping[str, str],
    latency_ms: float = 0,
    fault_rate: float = 0.0,
    seed: int | None = None,
    rate_limit: float | None = None,
    workkey_ttl: float = 86400,
    fault_kinds: tuple[str, ...] = FAULT_KINDS,
    slow_ms: float = 2000.0,
    quirks: bool = True,
    retry_after: int = 1,
    drip_ms: float = 1000.0,
    huge_mb: float = 64.0,
    idle_seconds: float = IDLE_SECONDS,
    max_connections: int = MAX_CONNECTIONS,
) -> SandboxServer:
    """A sandbox bound to ``host:port`` (0: a free port) with state in ``state``; call ``serve_forever``."""
    try:
        faults = FaultPlan(fault_rate, seed, fault_kinds)
    except ValueError as error:
        raise ConfigError(
            f"沙箱故障注入参数有误：{error}。--fault-rate 应在 0 到 1 之间；"
            f"--fault-kinds 取 {','.join(ALL_KINDS)} 中的若干个，用逗号分隔"
        ) from None
    try:
        store = SandboxStore(Path(state))
    except (OSError, sqlite3.Error) as error:
        reason = explain_sqlite_error(error)
        raise ConfigError(f"无法打开沙箱状态文件 {state}（{reason}）。请检查 --state 路径和权限") from None
    for app_id, secret in apps.items():
        store.register_app(app_id, secret)
    checks.warm_up()
    try:
        return SandboxServer(
            (host, port), store, latency_ms=latency_ms, faults=faults, rate_limit=rate_limit,
            workkey_ttl=workkey_ttl, slow_ms=slow_ms, quirks=quirks, retry_after=retry_after,
            drip_ms=drip_ms, huge_mb=huge_mb, idle_seconds=idle_seconds, max_connections=max_connections,
        )  # fmt: skip
    except OSError as error:
        store.close()
        raise ConfigError(
            f"沙箱无法监听 {host}:{port}（{explain_os_error(error)[0]}）。请换一个端口或检查地址"
        ) from None


def serve(*, out: TextIO | None = None, **options: Any) -> int:
    """Run a sandbox until SIGINT/SIGTERM; the first line on stdout names its base URL."""
    server = build_server(**options)
    stream = out or sys.stdout
    stream.write(f"沙箱已启动，平台地址 {server.base_url}\n")
    stream.flush()

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
    return 0
