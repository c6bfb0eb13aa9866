"""When to try a platform call again, and how long to wait (tenacity).

An attempt is retried when its :class:`~pipeline.platform.responses.Answer` is
transient: connection refused or dropped, a timeout, HTTP 5xx,
an answer that is not JSON, or resultCode 10129 (网络异常).  Every other
answer is final.  Waits grow exponentially with jitter; a ``Retry-After``
header is honoured.  Retries stop after ``max_attempts`` attempts, or when the
next wait would end beyond ``max_seconds`` since the first attempt, or at once
when the client is interrupted or ``halted`` (the platform counts as
unreachable: :mod:`~pipeline.platform.breaker`).  An HTTP 429 never reaches
this policy: the client waits it out with the shared rate limiter
(:mod:`~pipeline.platform.ratelimit`) and sends again without spending an
attempt.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from loguru import logger
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    stop_before_delay,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential_jitter

from pipeline.platform.responses import Answer, logged_reason

#: Longest wait between two attempts, whatever the backoff or Retry-After says.
MAX_WAIT_SECONDS = 60.0


class _Backoff(wait_base):
    """Exponential backoff with jitter, or the server's ``Retry-After`` (plus a little jitter)."""

    def __init__(self, initial: float) -> None:
        self._exponential = wait_exponential_jitter(multiplier=initial, max=MAX_WAIT_SECONDS, jitter=initial)
        self._jitter = initial

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        answer = outcome.result() if outcome is not None and not outcome.failed else None
        if isinstance(answer, Answer) and answer.retry_after is not None:
            return min(answer.retry_after + random.uniform(0, self._jitter / 4), MAX_WAIT_SECONDS)
        return float(self._exponential(retry_state))


class _Interrupted(stop_base):
    def __init__(self, event: threading.Event, halted: Callable[[], bool]) -> None:
        self._event = event
        self._halted = halted

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._event.is_set() or self._halted()


def _is_transient(answer: Answer) -> bool:
    return answer.transient


def _call(attempt: Callable[[], Answer], method: str) -> Answer:
    return attempt()  # ``method`` rides along in tenacity's call state, for the log line


#: Calls whose retries the person running ``ehc`` is told of, in their words: the work key, which the
#: whole run waits on (a platform out of reach kept a terminal silent for the ten seconds of its
#: retries).  A resident's retries stay in the debug log: there are many, and their outcome is reported.
TOLD_RETRIES = {"getWorkKey": "获取认证字符串"}


def _log_retry(retry_state: RetryCallState) -> None:
    answer = retry_state.outcome.result() if retry_state.outcome is not None else None
    method = retry_state.args[1] if len(retry_state.args) > 1 else ""
    told = TOLD_RETRIES.get(method)
    logger.log(
        "WARNING" if told else "DEBUG",
        "{}第 {} 次请求未成功（{}），{:.1f} 秒后重试",
        told or f"{method} ",
        retry_state.attempt_number,
        # A 10129's message is the platform's, and may quote the resident (a name): its code's words.
        logged_reason(answer.result_code, answer.message) if isinstance(answer, Answer) else "",
        retry_state.upcoming_sleep,
    )


def _last_answer(retry_state: RetryCallState) -> Answer:
    assert retry_state.outcome is not None
    answer: Answer = retry_state.outcome.result()
    return answer


class RetryPolicy:
    """Runs one call's attempts; shared by every thread of a client (tenacity keeps per-thread state)."""

    def __init__(
        self,
        *,
        max_attempts: int,
        max_seconds: float,
        initial_wait: float,
        interrupted: threading.Event,
        halted: Callable[[], bool] = lambda: False,
    ) -> None:
        def sleep(seconds: float) -> None:
            interrupted.wait(seconds)

        self._retrying = Retrying(
            sleep=sleep,
            stop=stop_after_attempt(max(1, max_attempts))
            | stop_before_delay(max_seconds)
            | _Interrupted(interrupted, halted),
            wait=_Backoff(initial_wait),
            retry=retry_if_result(_is_transient),
            retry_error_callback=_last_answer,
            before_sleep=_log_retry,
        )

    def run(self, attempt: Callable[[], Answer], method: str) -> Answer:
        """Call ``attempt`` until its answer is final or retries are spent; the last answer."""
        answer: Answer = self._retrying(_call, attempt, method)
        return answer
