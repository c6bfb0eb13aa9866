"""Reproducible fault injection for the sandbox.

Each request draws from one seeded random stream: with probability
``fault_rate`` it gets one of the fault kinds below instead of being
processed.  The *sequence* of faults is fixed by the seed (requests draw in
arrival order).  A faulted request never reaches the platform logic, so it
never enrols anyone.  Tests can also force the next faults with
:meth:`FaultPlan.inject`.
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


class FaultPlan:
    """Decides, request by request, whether and how to fail."""

    def __init__(
        self, rate: float = 0.0, seed: int | None = None, kinds: tuple[str, ...] = FAULT_KINDS
    ) -> None:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError("fault rate must be between 0 and 1")
        self.rate = rate
        self.kinds = tuple(kinds)
        self._random = random.Random(seed)
        self._forced: deque[tuple[str, frozenset[str] | None]] = deque()
        self._lock = threading.Lock()

    def inject(self, kind: str, count: int = 1, methods: tuple[str, ...] | None = None) -> None:
        """Make the next ``count`` requests (to ``methods``, if given) fail with ``kind``."""
        if kind not in FAULT_KINDS:
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
