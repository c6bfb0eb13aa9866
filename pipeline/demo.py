"""``make demo``: submit ``sample_data/`` to the bundled sandbox, end to end.

Starts ``ehc sandbox`` on a free loopback port with a fresh state and a
throw-away app secret, runs ``ehc submit`` on every register in
``sample_data/`` (real HTTP over 127.0.0.1), prints the summary and where the
reports are, then stops the sandbox.  Everything lands in ``demo-out/``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline import cli
from pipeline.config import SANDBOX_FILE
from pipeline.reading.register import REGISTER_SUFFIXES


def sample_registers(folder: Path) -> list[Path]:
    """The registers in ``folder`` (not README or expectation files), sorted."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in REGISTER_SUFFIXES and not p.name.startswith(("expected", "~$", "."))
    )


def start_sandbox(state: Path, app_id: str, app_secret: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``ehc sandbox`` on a free port; return the process and its base URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "sandbox",
            "--port",
            "0",
            "--state",
            str(state),
            "--app",
            f"{app_id}:{app_secret}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first_line = process.stdout.readline()
    url = next((word for word in first_line.split() if word.startswith("http://")), "")
    if not url:
        process.kill()
        raise SystemExit(f"沙箱没有启动：{first_line.strip() or '无输出'}")
    return process, url


def main() -> int:
    """Run the demo; return the exit code of ``ehc submit``."""
    root = Path(__file__).resolve().parent.parent
    out = root / "demo-out"
    shutil.rmtree(out, ignore_errors=True)
    (out / "state").mkdir(parents=True)
    app_id, app_secret = "demo-app", secrets.token_hex(16)
    sandbox, base_url = start_sandbox(out / SANDBOX_FILE, app_id, app_secret)
    print(f"沙箱已启动：{base_url}")
    os.environ.update(
        EHC_APP_ID=app_id,
        EHC_APP_SECRET=app_secret,
        EHC_BASE_URL=base_url,
        EHC_ORG_CODE="455400000",
        EHC_STATE_DIR=str(out / "state"),
    )
    try:
        registers = sample_registers(root / "sample_data")
        code = cli.main(["submit", *map(str, registers), "--out", str(out / "results"), "--rate", "20"])
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    print(f"\n报告在 {out / 'results'}（results.xlsx、errors.xlsx、results.csv、annotated_*.xlsx）")
    print(f"退出码 {code}：0 全部成功，1 有行未通过校验或被平台拒绝，2 致命错误")
    return 0 if code in (0, 1) else code


if __name__ == "__main__":
    sys.exit(main())
