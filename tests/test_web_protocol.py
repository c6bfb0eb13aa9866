"""The workspace's HTTP server against clients that never finish a request (slowloris).

uvicorn runs here on a loopback port with :class:`GuardedH11Protocol`, as
``ehc serve`` runs it, in front of a one-line app; the bounds are made small
so that the test sees them act.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from pipeline.web.protocol import GuardedH11Protocol


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(GuardedH11Protocol, "header_seconds", 1.0)
    monkeypatch.setattr(GuardedH11Protocol, "waiting_per_address", 5)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(_hello, http=GuardedH11Protocol, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)
    GuardedH11Protocol.waiting.clear()


def _get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return b"".join(iter(lambda: client.recv(4096), b""))


def _closed(client: socket.socket, within: float) -> bool:
    client.settimeout(within)
    try:
        return client.recv(4096) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_connection_that_never_finishes_its_headers_is_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        assert _closed(slow, 5)
        assert time.monotonic() - started < 4
    assert b"\r\nhello\r\n" in _get(port)


def test_one_address_cannot_hold_every_connection_with_half_requests(port: int) -> None:
    slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
    try:
        for client in slow:
            client.sendall(b"GET / HTT")
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sixth:
            assert _closed(sixth, 2)  # refused at once, long before the header deadline
    finally:
        for client in slow:
            client.close()
    time.sleep(0.2)
    assert b"\r\nhello\r\n" in _get(port)  # closed ones are no longer counted


def test_a_keep_alive_connection_is_timed_again_for_its_next_request(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"0\r\n\r\n"):  # the whole chunked answer, however it is split
            more = client.recv(4096)
            assert more, answer
            answer += more
        assert b"hello" in answer
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the second request's headers never end
        assert _closed(client, 4)


def test_an_unparseable_request_is_answered_in_chinese(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"GET /jobs?page=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b"".join(iter(lambda: client.recv(4096), b""))
    assert answer.startswith(b"HTTP/1.1 400")
    assert "请求格式错误" in answer.decode("utf-8")
