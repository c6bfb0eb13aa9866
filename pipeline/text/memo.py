"""What a per-value column function answered for values it has seen, for the few rows of an edit.

Normalising and validating are whole-column operations: for a million rows
their cost is the work, for the one row a clerk edits in the web workspace it
is a fixed cost per column (a few hundred microseconds of pandas and Arrow
set-up each, for some sixty columns and checks).  Yet every one of these
functions decides each value on its own — a value cleans, or passes a check,
the same whatever the other rows hold — and a clerk's edits keep meeting the
same values: the same ethnicity, street and payment type on row after row,
only the edited cell new.  So the small-frame paths of
:mod:`pipeline.normalise` and :mod:`pipeline.validate` keep each column's
answer per value here and run the column function only for a column holding a
value not seen before.  The answers are those of the same functions; the memo
only saves calling them again.

Bounded: at most ``capacity`` values, none longer than ``longest``
characters (a longer value is worked out every time); the oldest go first.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Sequence
from itertools import islice
from typing import Generic, TypeVar

R = TypeVar("R")


class ValueMemo(Generic[R]):
    """Answers of a per-value function by key (a column and a value), the oldest forgotten first."""

    def __init__(self, capacity: int = 20_000, longest: int = 100) -> None:
        self.capacity = capacity
        self.longest = longest
        self._answers: dict[Hashable, R] = {}
        self._lock = threading.Lock()  # the workspace edits rows on several threads

    def __len__(self) -> int:
        return len(self._answers)

    def known(self, column: str, values: Sequence[str]) -> list[R] | None:
        """The answers for every one of ``values`` of ``column``, or None if any is not known."""
        answers = self._answers
        found: list[R] = []
        for value in values:
            answer = answers.get((column, value), _MISSING)
            if answer is _MISSING:
                return None
            found.append(answer)  # type: ignore[arg-type]
        return found

    def remember(self, column: str, values: Iterable[str], answers: Iterable[R]) -> None:
        """Keep the answer for each of ``values`` of ``column`` (none for a value over ``longest``)."""
        with self._lock:
            for value, answer in zip(values, answers, strict=True):
                if len(value) > self.longest:
                    continue
                self._answers[(column, value)] = answer
            excess = len(self._answers) - self.capacity
            if excess > 0:
                for key in list(islice(self._answers, excess)):
                    del self._answers[key]

    def clear(self) -> None:
        """Forget every answer."""
        with self._lock:
            self._answers.clear()


_MISSING = object()
