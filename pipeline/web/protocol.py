"""uvicorn's HTTP/1.1 protocol with bounds on clients that never finish a request.

uvicorn waits for a request's headers as long as the client likes: a few
thousand connections that each send half a request line (slowloris) use up
the server's open files, and then nobody can log in.  A reverse proxy (see
docs/web.md) shields the workspace from this; ``ehc serve`` on its own is
shielded here:

* a connection has :attr:`GuardedH11Protocol.header_seconds` to send a whole
  request's headers, from when it opens or its last response ended;
* one address may hold at most :attr:`GuardedH11Protocol.waiting_per_address`
  connections that are waiting for headers (open browser tabs and a clinic's
  PCs behind one router keep far fewer; a proxy sends whole requests);
* a request h11 cannot parse is answered in Chinese, not with uvicorn's English.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_BAD_REQUEST = "请求格式错误，无法处理。请从工作台页面重新操作".encode()


class GuardedH11Protocol(H11Protocol):
    """:class:`H11Protocol` that closes connections slow to send their headers, and too many of them."""

    #: Seconds a connection has to send a request's headers.
    header_seconds: ClassVar[float] = 20.0
    #: Connections one address may hold open while they send no whole request.
    waiting_per_address: ClassVar[int] = 200
    #: Connections waiting for headers, by client address (one server per process).
    waiting: ClassVar[Counter[str]] = Counter()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._cycle_at_deadline: object = None
        self._address = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Take the connection, unless its address already holds too many waiting ones."""
        super().connection_made(transport)
        self._address = self.client[0] if self.client else ""
        if self.waiting[self._address] >= self.waiting_per_address:
            transport.close()
            return
        self._start_deadline()

    def data_received(self, data: bytes) -> None:
        """Read as uvicorn does; a request whose headers are complete is no longer on the clock."""
        super().data_received(data)
        if self._deadline is not None and self.cycle is not self._cycle_at_deadline:
            self._stop_deadline()

    def on_response_complete(self) -> None:
        """After a response the connection may wait for the next request, on the clock again."""
        super().on_response_complete()
        if not self.transport.is_closing() and not self._in_request():
            self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection's place among its address's waiting ones."""
        self._stop_deadline()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 cannot parse with one Chinese line, and close."""
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=_BAD_REQUEST),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _start_deadline(self) -> None:
        self._stop_deadline()
        self._cycle_at_deadline = self.cycle
        self._deadline = self.loop.call_later(self.header_seconds, self._too_slow)
        self.waiting[self._address] += 1

    def _stop_deadline(self) -> None:
        if self._deadline is None:
            return
        self._deadline.cancel()
        self._deadline = None
        self.waiting[self._address] -= 1
        if self.waiting[self._address] <= 0:
            del self.waiting[self._address]

    def _too_slow(self) -> None:
        self._stop_deadline()
        if not self._in_request() and not self.transport.is_closing():
            self.transport.close()
