"""Synthetic registers and the ``make bench`` benchmarks."""
