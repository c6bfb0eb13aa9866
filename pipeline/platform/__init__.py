"""Talking to the e-health card platform: the signed calls, their answers, retries, rate and work key.

:mod:`~pipeline.platform.client` is the one entry point; the other modules are
its parts: request signs (:mod:`~pipeline.platform.signing`), reading answers
(:mod:`~pipeline.platform.responses`), the retry policy
(:mod:`~pipeline.platform.retrying`), the shared rate limiter
(:mod:`~pipeline.platform.ratelimit`) and the cached work key
(:mod:`~pipeline.platform.workkey`).
"""
