"""``ehc serve``: the workspace on uvicorn, and the password prompt of ``ehc users``.

The listening socket is bound before uvicorn starts, so ``--port 0`` works
and the first line printed names the address really listened on.  Behind a
reverse proxy on the same host (see docs/web.md), uvicorn trusts its
``X-Forwarded-For``/``-Proto`` headers from 127.0.0.1 only.
"""

from __future__ import annotations

import getpass
import socket
import sys

from pipeline.web.engine import ConfigError, Settings


def serve(settings: Settings, *, host: str, port: int) -> int:
    """Run the workspace until SIGINT/SIGTERM; returns 0."""
    import uvicorn

    from pipeline.web.app import create_app

    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until the app has started
    except OSError as error:
        raise ConfigError(
            f"无法在 {host}:{port} 上监听（{error.strerror}）。请换一个端口（--port）或检查地址"
        ) from None
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), log_config=None, access_log=False, proxy_headers=True,
        forwarded_allow_ips="127.0.0.1", server_header=False, timeout_graceful_shutdown=30,
    )  # fmt: skip
    shown = f"[{host}]" if ":" in host else host
    print(f"ehc 工作台已启动：http://{shown}:{bound}/", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def read_password(prompt: str = "密码：") -> str:
    """A password from the terminal (asked twice) or, without one, the first line of stdin; never argv."""
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("再输入一次：") != first:
            raise ConfigError("两次输入的密码不一致")
        return first
    line = sys.stdin.readline()
    if not line:
        raise ConfigError("没有读到密码：请在提示时输入，或通过标准输入传入一行")
    return line.rstrip("\r\n")
