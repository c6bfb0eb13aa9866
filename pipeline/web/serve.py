"""``ehc serve``: the workspace on uvicorn, and the password prompt of ``ehc users``.

The listening socket is bound before uvicorn starts, so ``--port 0`` works
and the first line printed names the address really listened on.  Behind a
reverse proxy on the same host (see docs/web.md), uvicorn trusts its
``X-Forwarded-For``/``-Proto`` headers from 127.0.0.1 only.

uvicorn's own log lines (an exception in a request, a protocol error) go
through the same masked log as every other line, as one line naming the
exception's type: a traceback would print whatever the failing code held,
resident data included.
"""

from __future__ import annotations

import getpass
import logging
import signal
import socket
import sys

from loguru import logger

from pipeline.files import explain_os_error
from pipeline.web.engine import ConfigError, Settings


class _ToMaskedLog(logging.Handler):
    """A stdlib logging handler that hands each record to loguru (masked there), without its traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text = f"{text}（{type(record.exc_info[1]).__name__}）"
        level = record.levelname if record.levelname in _LEVELS else "INFO"
        logger.log(level, "uvicorn：{}", text)


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def route_server_logs() -> None:
    """Send uvicorn's log records to the masked log, one line each (no traceback)."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi"):
        server_logger = logging.getLogger(name)
        server_logger.handlers = [_ToMaskedLog()]
        server_logger.propagate = False
        server_logger.setLevel(logging.WARNING)  # its start-up and shutdown chatter stays out


def serve(settings: Settings, *, host: str, port: int) -> int:
    """Run the workspace until SIGINT/SIGTERM; returns 0."""
    import uvicorn

    from pipeline.web.app import create_app
    from pipeline.web.protocol import GuardedH11Protocol

    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until the app has started
    except OSError as error:
        reason, fix = explain_os_error(error)
        raise ConfigError(f"无法在 {host}:{port} 上监听（{reason}）。处理办法：{fix}") from None
    bound = sock.getsockname()[1]
    route_server_logs()
    config = uvicorn.Config(
        create_app(settings), http=GuardedH11Protocol, log_config=None, access_log=False, proxy_headers=True,
        forwarded_allow_ips="127.0.0.1", server_header=False, timeout_graceful_shutdown=30,
    )  # fmt: skip
    shown = f"[{host}]" if ":" in host else host
    print(f"ehc 工作台已启动：http://{shown}:{bound}/", flush=True)
    # uvicorn stops gracefully on SIGTERM, then raises it again under the handler it found: the default
    # one ends the process by that signal, which systemd counts as a clean stop (the command line's own,
    # Ctrl-C, would be exit 130, a failed unit).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
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
