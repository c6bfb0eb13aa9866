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

The platform may still say "too many requests" (HTTP 429, with a
``Retry-After``): its limit is lower than the one configured, or another
client of the same app shares it.  Retrying each such request on its own
thread keeps the pressure up, and rows run out of attempts.  So a 429 is the
limiter's business, for every thread at once (:meth:`SlidingWindowLimiter.throttled`):

* nothing is admitted until ``Retry-After`` has passed (a pause);
* the rate drops to what the platform accepted over the last window, and at
  least one below the rate that was turned away (or half of it, below 2/s);
  429s to requests sent before that drop do not lower it again;
* after :data:`RECOVERY_SECONDS` without a 429 the rate climbs back in steps
  of a tenth, up to just below the rate that was turned away; after
  :data:`PROBE_SECONDS` more it tries above that, up to the configured rate.

A limiter made without a rate (``rate=None``) admits everything until the
first 429, then behaves as above; it becomes unlimited again once it has
climbed back to twice the rate that was turned away.
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
#: Pause after a 429 without a usable Retry-After, and the longest pause a Retry-After may impose.
DEFAULT_PAUSE = 1.0
MAX_PAUSE = 60.0
#: The slowest a run of 429s can bring the rate down to (requests per second).
MIN_RATE = 0.2
#: Seconds without a 429 before the rate climbs one step, and before it tries above a rate turned away.
RECOVERY_SECONDS = 5.0
PROBE_SECONDS = 60.0


class Ticket:
    """One admitted request; :meth:`sent` records when it reached the socket (first call wins)."""

    __slots__ = ("_done", "_limiter", "at")

    def __init__(self, limiter: SlidingWindowLimiter) -> None:
        self._limiter = limiter
        self._done = False
        self.at: float | None = None  # when it was sent

    def sent(self) -> None:
        """The request's bytes are in the socket now (or it failed): its time now counts in the window."""
        if not self._done:
            self._done = True
            self.at = self._limiter.clock()
            self._limiter._record(self.at)


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
    second; ``rate < 1`` gives one request per ``1/rate`` seconds; ``None``
    gives no limit until the platform asks to slow down.  Both get ``margin``
    added to the window.  Thread-safe.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        margin: float = DEFAULT_MARGIN,
        max_pause: float = MAX_PAUSE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError("rate must be positive and finite")
        self.base_rate = rate
        self.margin = margin
        self.max_pause = max_pause
        self.clock = clock
        self.throttles = 0  # 429s that lowered the rate
        self._sent: deque[float] = deque()  # send times within the window, ascending
        self._refused: deque[float] = deque()  # send times of requests answered 429, ascending
        self._pending = 0
        self._condition = threading.Condition(threading.Lock())
        self._paused_until = -math.inf
        self._changed_at = -math.inf  # when the rate was last lowered or raised
        self._too_fast: float | None = None  # the lowest rate the platform turned away since
        self._unlimited_from: float | None = None  # (no base rate) unlimited again from this rate
        self._set_rate(rate)

    @property
    def rate(self) -> float | None:
        """The rate in force now (``None``: unlimited)."""
        return self._rate

    def _set_rate(self, rate: float | None) -> None:
        self._rate = rate
        if rate is None:
            self.permits, self.window = math.inf, 1.0 + self.margin
        elif rate >= 1:
            self.permits, self.window = math.floor(rate), 1.0 + self.margin
        else:
            self.permits, self.window = 1, 1.0 / rate + self.margin

    def acquire(self, stop: threading.Event | None = None) -> Ticket | None:
        """Wait for room and take it; ``None`` if ``stop`` is set (see :meth:`wake`)."""
        with self._condition:
            while True:
                if stop is not None and stop.is_set():
                    return None
                now = self.clock()
                if now < self._paused_until:
                    self._condition.wait(self._paused_until - now)
                    continue
                self._recover(now)
                horizon = now - self.window
                sent = self._sent
                while sent and sent[0] <= horizon:
                    sent.popleft()
                if self._pending + len(sent) < self.permits:
                    self._pending += 1
                    return Ticket(self)
                # Full: room comes when the oldest send leaves the window, or (if all
                # are pending) after a send is recorded, which notifies.
                self._condition.wait(sent[0] - horizon if sent else None)

    def pause_left(self) -> float:
        """Seconds until a pause after HTTP 429 ends (0 when nothing is paused)."""
        with self._condition:
            return max(0.0, self._paused_until - self.clock())

    def throttled(self, sent_at: float | None, retry_after: float | None) -> bool:
        """The request sent at ``sent_at`` got HTTP 429: pause every thread and lower the rate.

        Returns whether the rate was lowered (429s to requests sent before the last
        change only extend the pause).
        """
        with self._condition:
            now = self.clock()
            pause = DEFAULT_PAUSE if retry_after is None else min(max(retry_after, 0.0), self.max_pause)
            self._paused_until = max(self._paused_until, now + pause)
            self._condition.notify_all()
            if sent_at is not None:
                self._refused.append(sent_at)
            if sent_at is not None and sent_at <= self._changed_at:
                return False  # sent at the old rate: that rate is lowered already
            horizon = now - (1.0 + self.margin)  # what the platform took over the last second
            while self._refused and self._refused[0] <= horizon:
                self._refused.popleft()
            recent = sum(1 for moment in self._sent if moment > horizon)
            accepted = recent - sum(1 for moment in self._refused if moment > horizon)
            too_fast = self._rate if self._rate is not None else float(max(recent, 1))
            slower = too_fast - 1 if too_fast >= 2 else too_fast / 2
            if accepted > 0:
                slower = min(slower, float(accepted))
            slower = max(MIN_RATE, slower)
            if self.base_rate is None and self._unlimited_from is None:
                self._unlimited_from = 2 * too_fast
            self._too_fast = too_fast if self._too_fast is None else min(self._too_fast, too_fast)
            self._set_rate(slower)
            self._changed_at = now
            self.throttles += 1
            return True

    def _recover(self, now: float) -> None:
        """Climb back towards the configured rate after a calm spell (called with the lock held)."""
        rate = self._rate
        if rate is None or rate == self.base_rate or now - self._changed_at < RECOVERY_SECONDS:
            return
        step = max(rate / 10, 1.0) if rate >= 1 else rate / 2
        higher = rate + step
        if self._too_fast is not None:
            below = self._too_fast - 1 if self._too_fast >= 2 else self._too_fast / 1.5
            if rate >= below:
                if now - self._changed_at < PROBE_SECONDS:
                    return
                self._too_fast = None  # calm for long: try above the rate once turned away
            else:
                higher = min(higher, below)
        if self.base_rate is not None:
            self._set_rate(min(higher, self.base_rate))
        elif self._unlimited_from is not None and higher >= self._unlimited_from:
            self._set_rate(None)
            self._unlimited_from = None
        else:
            self._set_rate(higher)
        self._changed_at = now

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
