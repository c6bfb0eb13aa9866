"""Reproducible fault injection for the sandbox.

Each request draws from one seeded random stream: with probability
``fault_rate`` it gets one of the chosen fault kinds instead of the normal
answer.  The *sequence* of faults is fixed by the seed (requests draw in
arrival order).  Tests can also force the next faults with
:meth:`FaultPlan.inject`.

Two families.  The :data:`FAULT_KINDS` (the default choice) are failures in
front of the platform: the request never reaches the platform logic, so it
never enrols anyone, and a retry is always safe.  The :data:`MISBEHAVIOURS`
are what a platform in trouble does, each as seen in the field:

* ``lost``   the platform acts on the request (it may enrol the resident),
             then the connection is cut before any answer: a resend meets 10115;
* ``huge``   an answer of ``huge_mb`` megabytes of filler, streamed (never valid JSON);
* ``drip``   the platform acts on the request, then its real answer is sent one
             byte every ``drip_ms`` milliseconds;
* ``rekey``  another client of the same app fetches a new work key just before
             this request, whose key is then stale: the platform answers 10105;
* ``down``   the platform dies: this connection is cut unanswered, the port is
             closed and every later connection is refused.
"""

from __future__ import annotations

import random
import threading
from collections import deque

DROP = "drop"  # connection closed without an answer
HTTP_500 = "http500"  # HTTP 500 Internal Server Error
HTTP_429 = "http429"  # HTTP 429 Too Many Requests, with Retry-After
CODE_10129 = "code10129"  # a JSON answer with resultCode 10129 (网络异常)
MALFORMED = "malformed"  # HTTP 200 with a body that is not JSON
SLOW = "slow"  # answers only after a long delay, with HTTP 504

FAULT_KINDS: tuple[str, ...] = (DROP, HTTP_500, HTTP_429, CODE_10129, MALFORMED, SLOW)

LOST = "lost"  # acted upon, then the connection is cut unanswered
HUGE = "huge"  # an endless-looking answer of filler
DRIP = "drip"  # acted upon, then the answer dripped byte by byte
REKEY = "rekey"  # the app's work key replaced by another client just before this request
DOWN = "down"  # the platform dies for good

MISBEHAVIOURS: tuple[str, ...] = (LOST, HUGE, DRIP, REKEY, DOWN)
ALL_KINDS: tuple[str, ...] = FAULT_KINDS + MISBEHAVIOURS


class FaultPlan:
    """Decides, request by request, whether and how to fail."""

    def __init__(
        self, rate: float = 0.0, seed: int | None = None, kinds: tuple[str, ...] = FAULT_KINDS
    ) -> None:
        unknown = set(kinds) - set(ALL_KINDS)
        if unknown:
            raise ValueError(f"故障种类 {'、'.join(sorted(unknown))} 不存在")
        if not kinds:  # every drawn fault would pick from nothing, and fail the request it hit
            raise ValueError("没有列出故障种类")
        if not 0.0 <= rate <= 1.0:  # NaN too
            raise ValueError(f"故障比例 {rate} 不在 0 到 1 之间")
        self.rate = rate
        self.kinds = tuple(kinds)
        self._random = random.Random(seed)
        self._forced: deque[tuple[str, frozenset[str] | None]] = deque()
        self._lock = threading.Lock()

    def inject(self, kind: str, count: int = 1, methods: tuple[str, ...] | None = None) -> None:
        """Make the next ``count`` requests (to ``methods``, if given) fail with ``kind``."""
        if kind not in ALL_KINDS:
            raise ValueError(f"unknown fault kind: {kind}")
        wanted = frozenset(methods) if methods else None
        with self._lock:
            self._forced.extend([(kind, wanted)] * count)

    def draw(self, method: str) -> str | None:
        """The fault for the next request to ``method``, or ``None`` to process it normally."""
        if not self.rate and not self._forced:
            return None
        with self._lock:
            if self._forced:
                kind, methods = self._forced[0]
                if methods is None or method in methods:
                    self._forced.popleft()
                    return kind
            if self.rate and self._random.random() < self.rate:
                return self._random.choice(self.kinds)
        return None
