"""Noticing that the platform has gone away, once for every thread: a circuit breaker.

Without it, a platform that dies mid-run costs every remaining row its full
set of retries (241 rows × 5 attempts, over a minute) and the run ends as if
those rows had merely failed.  The breaker watches every attempt of every
thread of one client.  An attempt that heard nothing usable from the platform
(connection refused or cut, timeout, HTTP 5xx, a garbled answer) extends the
current streak; any answer the platform gave (a result code, even a refusal;
an HTTP 429) ends it.  When the streak holds at least ``failures`` attempts
*and* has lasted ``silence`` seconds, the breaker opens for good: the client
then sends nothing more and raises
:class:`~pipeline.errors.PlatformUnreachable`, and the run stops (exit 2).

Both conditions are needed.  A count alone would trip on a run of bad luck
under a flaky but working platform (at 30 % faults, ten misses in a row turn
up once in about 170,000 attempts), and a time alone would trip on one slow
call.  A platform that answers now and then never trips it.

A platform that answers every attempt with HTTP 429 (a quota used up for the
day) is heard, but sends nobody through: each row would wait out its retries
and fail, and a nightly run would crawl for hours holding the run lock.  So
429s keep a streak of their own, ended by any answer with a result code; at
``failures`` attempts over ``throttle_silence`` seconds (ten minutes by
default: far longer than any Retry-After a working platform sends) the
breaker opens the same way, saying the platform keeps refusing for load.
Such a spell outlives the client that saw it (:data:`_SPELLS`): a nightly run
sends each file with a client of its own, and a quota used up for the day
stays used up from one file to the next.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pipeline.errors import PlatformUnreachable
from pipeline.platform.responses import Answer

#: Attempts without an answer, in a row, before the platform counts as unreachable.
DEFAULT_FAILURES = 10
#: Seconds of nothing but HTTP 429 before the platform counts as unavailable.
DEFAULT_THROTTLE_SILENCE = 600.0

_THROTTLED = (
    "平台 {} 持续限流：连续 {} 次请求在 {:.0f} 分钟内都被平台以“请求过于频繁（HTTP 429）”拒绝，"
    "没有一人办理成功"
)
_THROTTLED_STOP = (
    "。已停止发送，未发送的行已标为发送失败；"
    "请稍后（或次日）重新运行同一命令（已办理的不会重复发送），或向平台确认本机构的调用额度"
)


#: The 429-only spell of each platform (address, clock) in this process: (429s in a row, since when,
#: the last one).  One whose last 429 is older than :data:`SPELL_GAP` seconds is over.
_SPELLS: dict[tuple[str, Callable[[], float]], tuple[int, float, float]] = {}
SPELL_GAP = 120.0


class CircuitBreaker:
    """Opens after ``failures`` attempts in a row heard nothing for at least ``silence`` seconds."""

    def __init__(
        self,
        base_url: str,
        *,
        failures: int = DEFAULT_FAILURES,
        silence: float = 5.0,
        throttle_silence: float = DEFAULT_THROTTLE_SILENCE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url
        self.failures = max(1, failures)
        self.silence = max(0.0, silence)
        self.throttle_silence = max(0.0, throttle_silence)
        self._clock = clock
        self._spell = (base_url, clock)
        count, since, last = _SPELLS.get(self._spell, (0, 0.0, 0.0))
        self._throttled, self._throttled_since = (count, since) if clock() - last <= SPELL_GAP else (0, 0.0)
        self._lock = threading.Lock()
        self._streak = 0
        self._since = 0.0
        self._last = ""
        self._error: PlatformUnreachable | None = None

    @property
    def is_open(self) -> bool:
        """Whether the platform counts as unreachable: nothing more may be sent."""
        return self._error is not None

    def record(self, answer: Answer) -> None:
        """Count one attempt's answer (a final non-answer, e.g. TLS refused, counts neither way)."""
        if answer.silent:
            with self._lock:
                now = self._clock()
                if self._streak == 0:
                    self._since = now
                self._streak += 1
                self._last = answer.message
                if (
                    self._error is None
                    and self._streak >= self.failures
                    and now - self._since >= self.silence
                ):
                    seconds = now - self._since
                    finding = (
                        f"平台 {self.base_url} 无法访问：连续 {self._streak} 次请求在 {seconds:.0f} 秒内"
                        f"都没有应答（最近一次：{self._last}）"
                    )
                    self._error = PlatformUnreachable(
                        f"{finding}。已停止发送，未发送的行已标为发送失败；"
                        "请检查网络和平台状态后重新运行同一命令（已办理的不会重复发送）",
                        finding,
                    )
        elif answer.throttled:
            with self._lock:
                self._streak = 0
                now = self._clock()
                if self._throttled == 0:
                    self._throttled_since = now
                self._throttled += 1
                _SPELLS[self._spell] = (self._throttled, self._throttled_since, now)
                seconds = now - self._throttled_since
                tripped = self._throttled >= self.failures and seconds >= self.throttle_silence
                if self._error is None and tripped:
                    _SPELLS.pop(self._spell, None)  # the run stops: the next one starts afresh
                    finding = _THROTTLED.format(self.base_url, self._throttled, seconds / 60)
                    self._error = PlatformUnreachable(finding + _THROTTLED_STOP, finding)
        elif answer.result_code is not None and (self._streak or self._throttled):
            with self._lock:
                self._streak = 0
                self._throttled = 0
                _SPELLS.pop(self._spell, None)

    def check(self) -> None:
        """Raise :class:`PlatformUnreachable` if the breaker is open."""
        error = self._error
        if error is not None:
            raise PlatformUnreachable(error.message, error.finding)
