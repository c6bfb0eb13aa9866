"""Nightly imports: every new register in an inbox folder processed, moved and summarised.

:mod:`~pipeline.inbox.run` is ``ehc run --inbox``; :mod:`~pipeline.inbox.summary`
records what became of each file (``summary.json`` and the Chinese text).
"""
