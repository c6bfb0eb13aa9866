"""Sending valid rows to the platform, once each, and fetching what enrolment gave back.

:mod:`~pipeline.submission.submit` is ``ehc submit``; it plans a batch against
the journal and runs :class:`~pipeline.submission.sender.ResidentSender` on a
growing pool of threads (:mod:`~pipeline.submission.pool`), then looks up the
card ids the platform did not give (:mod:`~pipeline.submission.recovery`).
:mod:`~pipeline.submission.qrcode` is ``ehc qrcode``.
"""
