"""The package's layers are a contract: nothing imports a stage above its own.

The contract lives in ``pyproject.toml`` (``[tool.importlinter]``) and is also
checked by ``make lint``; running it here makes CI refuse a change that adds
an upward import or a cycle between stages.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
