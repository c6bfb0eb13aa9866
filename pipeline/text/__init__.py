"""Column kernels: the lowest layer, shared by reading, normalisation, validation and the sandbox.

Each module works on whole text columns (pandas ``str`` Series backed by
Arrow) or on single values, and knows nothing of registers, runs or the
platform: Arrow text helpers (:mod:`~pipeline.text.arrow`), dates, phone
numbers, resident ID numbers, addresses and the administrative division
codes behind them.
"""
