"""Make ``import fcntl`` fail, as it does on Windows: the command line must work without it.

Put this folder first on ``PYTHONPATH`` (``make test`` does, for a second pass over
the command-line tests); every Python process started with it, the tests' own
subprocesses included, then runs without ``fcntl``.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder
from typing import Any


class _NoFcntl(MetaPathFinder):
    """Refuses ``fcntl`` like a platform that does not have it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "fcntl":
            raise ModuleNotFoundError("No module named 'fcntl'", name="fcntl")
        return None


sys.modules.pop("fcntl", None)
sys.meta_path.insert(0, _NoFcntl())
