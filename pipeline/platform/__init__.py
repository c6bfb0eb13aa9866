"""Talking to the e-health card platform: the signed calls, their answers, retries, rate and work key.

:mod:`~pipeline.platform.client` is the one entry point; the other modules are
its parts: request signs (:mod:`~pipeline.platform.signing`), one HTTP exchange
bounded in time and size (:mod:`~pipeline.platform.transport`), reading answers
(:mod:`~pipeline.platform.responses`), the retry policy
(:mod:`~pipeline.platform.retrying`), the shared rate limiter that a 429 slows
(:mod:`~pipeline.platform.ratelimit`), the circuit breaker that notices the
platform has gone (:mod:`~pipeline.platform.breaker`) and the cached work key
(:mod:`~pipeline.platform.workkey`).
"""
