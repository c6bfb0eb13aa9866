"""Progress on stderr, only when a person is watching a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


class StageBar:
    """A bar over the coarse stages of a dry run (one read per file, normalise, validate, reports)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = tqdm(
            total=total,
            disable=not enabled,
            file=sys.stderr,
            leave=False,
            bar_format="{desc:<12} {bar} {n_fmt}/{total_fmt} 步 [{elapsed}]",
        )

    @contextmanager
    def stage(self, label: str) -> Iterator[None]:
        """Show ``label`` while the stage runs, then advance the bar by one."""
        self._bar.set_description_str(label)
        yield
        self._bar.update(1)

    def close(self) -> None:
        """Remove the bar from the terminal."""
        self._bar.close()
