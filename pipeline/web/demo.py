"""``make serve``: the sandbox and the workspace, with a demo centre and clerk, in a minute.

Starts the bundled sandbox on a free loopback port (in a thread) with a throw-away app secret,
creates (in ``demo-out/web-state``) the centre 455400000 示范社区卫生服务中心,
a clerk ``demo`` and an admin ``admin`` with fresh random passwords, prints
the address and the logins, and serves the workspace until Ctrl-C.
Upload ``sample_data/社区居民登记表.xlsx`` to see faults, fix them and submit.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
from pathlib import Path

from pipeline.web import accounts, engine
from pipeline.web.serve import serve

DEMO_ORG_CODE = "455400000"
DEMO_CENTRE = "示范社区卫生服务中心"


def main(argv: list[str] | None = None) -> int:
    """Run the demo workspace; returns when it is stopped."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.web.demo")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[2]
    out = root / "demo-out"
    state = out / "web-state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    app_id, app_secret = "demo-app", secrets.token_hex(16)
    for stale in out.glob("web-sandbox.sqlite*"):
        stale.unlink()
    base_url, stop_sandbox = engine.start_sandbox(out / "web-sandbox.sqlite", app_id, app_secret)
    try:
        settings = engine.load_settings(
            None,
            env={**os.environ, "EHC_APP_ID": app_id, "EHC_APP_SECRET": app_secret, "EHC_BASE_URL": base_url,
                 "EHC_STATE_DIR": str(state), "EHC_RATE": "20"},
        )  # fmt: skip
        engine.register_secret(app_secret)
        engine.setup_logging(level="INFO", log_dir=settings.effective_log_dir)
        store = accounts.open_store(state)
        accounts.add_centre(store, DEMO_ORG_CODE, DEMO_CENTRE)
        clerk, admin = secrets.token_urlsafe(9), secrets.token_urlsafe(9)
        accounts.add_user(store, "demo", DEMO_ORG_CODE, clerk)
        accounts.add_user(store, "admin", DEMO_ORG_CODE, admin, admin=True)
        print(f"沙箱（模拟平台）：{base_url}")
        print(f"办事员登录：用户名 demo，密码 {clerk}")
        print(f"管理员登录：用户名 admin，密码 {admin}")
        print(f"试一试：上传 {root / 'sample_data' / '社区居民登记表.xlsx'}，按 Ctrl-C 结束")
        sys.stdout.flush()
        return serve(settings, host="127.0.0.1", port=args.port)
    except engine.EhcError as error:
        sys.stderr.write(f"错误：{error}\n")
        return error.exit_code
    except KeyboardInterrupt:
        return 0
    finally:
        stop_sandbox()


if __name__ == "__main__":
    sys.exit(main())
