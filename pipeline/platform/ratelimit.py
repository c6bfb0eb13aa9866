"""An exact sliding-window rate limiter, shared by every thread of a client, timed by actual sends.

The promise is the platform's: never more than ``N`` requests in *any*
one-second window, as the platform sees them.  The platform sees arrival
times.  A limiter that only counts its own admissions is fooled by whatever
delays a request between admission and the wire (thread scheduling, a GC
pause, a new connection): a request admitted at ``t`` but sent at ``t + 60 ms``
shares a window with requests admitted up to ``t + 1.06 s``.

So each admission is a :class:`Ticket`; the client marks it when the request
body has been handed to the socket (:class:`SentSignal`), and that send time,
not the admission time, occupies the window.  A request is admitted only
while fewer than ``N`` requests are pending (admitted, not yet sent) or were
sent within the last ``1 s + margin``.  The margin (25 ms) covers what remains:
network and server-side jitter between our send and the platform's arrival
stamp.

Measured here on 2 cores shared with other work (load average 8-15), client
and sandbox in separate processes, the sandbox stamping arrivals with the
kernel's receive time: the most requests the sandbox logged in any one-second
window, and the steady rate achieved.

=========================================  =======================  =========================
limiter                                    rate 50, 100 ms, 8 thr   rate 200, 0 ms, 16 thr
=========================================  =======================  =========================
pyrate-limiter 4.5 ``Rate(N, SECOND)``     52 (46.9/s)              211 (183.6/s)
admission times, no margin                 54 (49.5/s)              212 (197.7/s)
admission times, 25 ms margin              52 (47.5/s)              208 (192.5/s)
send times, no margin                      50 (49.7/s)              200 (198.9/s)
send times, 25 ms margin (this module)     50 (48.5/s)              200 (189.8/s)
=========================================  =======================  =========================

pyrate-limiter counts admissions only (in whole milliseconds, plus a fixed
50 ms sleep buffer that costs rate without buying safety), so it shares the
first flaw; hence this small module.  On loopback, send times alone keep the
windows exact; the margin is for real networks.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

#: Extra length of the window, for jitter between our send and the platform's arrival stamp.
DEFAULT_MARGIN = 0.025


class Ticket:
    """One admitted request; :meth:`sent` records when it reached the socket (first call wins)."""

    __slots__ = ("_done", "_limiter")

    def __init__(self, limiter: SlidingWindowLimiter) -> None:
        self._limiter = limiter
        self._done = False

    def sent(self) -> None:
        """The request's bytes are in the socket now (or it failed): its time now counts in the window."""
        if not self._done:
            self._done = True
            self._limiter._record(self._limiter.clock())


class SentSignal:
    """A request body that calls ``on_sent`` once urllib3 has written all of it to the socket.

    requests and urllib3 send an iterable body chunk by chunk (with the
    ``Content-Length`` taken from ``len()``); the iterator resumes after the
    last chunk has been sent, which is exactly the moment we want.
    """

    __slots__ = ("_body", "_on_sent")

    def __init__(self, body: bytes, on_sent: Callable[[], None]) -> None:
        self._body = body
        self._on_sent = on_sent

    def __len__(self) -> int:
        return len(self._body)

    def __iter__(self) -> Iterator[bytes]:
        yield self._body
        self._on_sent()


class SlidingWindowLimiter:
    """At most ``permits`` requests sent or pending in any window of ``window`` seconds.

    ``rate`` is requests per second: ``rate >= 1`` gives ``floor(rate)`` per
    second; ``rate < 1`` gives one request per ``1/rate`` seconds.  Both get
    ``margin`` added to the window.  Thread-safe.
    """

    def __init__(
        self,
        rate: float,
        *,
        margin: float = DEFAULT_MARGIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        if rate >= 1:
            self.permits, self.window = math.floor(rate), 1.0 + margin
        else:
            self.permits, self.window = 1, 1.0 / rate + margin
        self.clock = clock
        self._sent: deque[float] = deque()  # send times within the window, ascending
        self._pending = 0
        self._condition = threading.Condition(threading.Lock())

    def acquire(self, stop: threading.Event | None = None) -> Ticket | None:
        """Wait for room and take it; ``None`` if ``stop`` is set (see :meth:`wake`)."""
        with self._condition:
            while True:
                if stop is not None and stop.is_set():
                    return None
                horizon = self.clock() - self.window
                sent = self._sent
                while sent and sent[0] <= horizon:
                    sent.popleft()
                if self._pending + len(sent) < self.permits:
                    self._pending += 1
                    return Ticket(self)
                # Full: room comes when the oldest send leaves the window, or (if all
                # are pending) after a send is recorded, which notifies.
                self._condition.wait(sent[0] - horizon if sent else None)

    def wake(self) -> None:
        """Make waiting :meth:`acquire` calls look at their ``stop`` event now."""
        with self._condition:
            self._condition.notify_all()

    def _record(self, when: float) -> None:
        with self._condition:
            self._pending -= 1
            if not self._sent or when >= self._sent[-1]:
                self._sent.append(when)
            else:
                bisect.insort(self._sent, when)
            self._condition.notify_all()
