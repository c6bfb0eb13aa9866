"""The workspace as an ASGI app: routes, security headers, error pages, start-up and shutdown.

:func:`create_app` builds it from :class:`~pipeline.config.Settings`;
``ehc serve`` runs it with uvicorn.  Every response carries a Content
Security Policy without inline scripts or styles (the page's script and
style sheet are files under ``/static``), ``frame-ancestors 'none'``,
``X-Content-Type-Options: nosniff``, ``no-store`` caching for pages, a year's
caching for a static file asked for at its current version (the pages link
``/static/app.js?v=<hash of its content>``: a release changes the address),
and a ``Server-Timing`` header with the time the server took.
A state-changing request whose ``Origin`` names another site is refused
before any handler runs.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from loguru import logger
from starlette.applications import Starlette
from starlette.convertors import IntegerConvertor, register_url_convertor
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.web import admin, engine, pages, shown
from pipeline.web.auth import SESSION_COOKIE, Auth
from pipeline.web.context import (
    STATIC,
    TEMPLATES,
    CsrfFailed,
    Forbidden,
    LoginNeeded,
    NotFound,
    Refused,
    Workspace,
    centre_job,
    render,
    static_versions,
    viewer,
    wants_json,
    with_notice,
)
from pipeline.web.runner import Runner
from pipeline.web.store import Store
from pipeline.web.uploads import MAX_FILES

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


#: A static file asked for at its current version never changes at that address.
STATIC_CACHED = "public, max-age=31536000, immutable"
#: One asked for without it (or at an old version) is checked with the server each time it is used.
STATIC_CHECKED = "no-cache"


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response, and refuses cross-site state changes.

    ``static_versions`` maps each static file's name to its current version
    (:func:`~pipeline.web.context.static_versions`).
    """

    def __init__(self, app: ASGIApp, static_versions: dict[str, str] | None = None) -> None:
        self.app = app
        self.static_versions = static_versions or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and not _same_origin(scope):
            await PlainTextResponse("跨站请求被拒绝", status_code=403)(
                scope, receive, self._with_headers(scope, send)
            )
            return
        await self.app(scope, receive, self._with_headers(scope, send))

    def _caching(self, scope: Scope) -> str:
        path = str(scope.get("path", ""))
        if not path.startswith("/static/"):
            return "no-store"
        version = self.static_versions.get(path.removeprefix("/static/"))
        asked = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1")).get("v", [""])[-1]
        # An old page's address (or none) must not pin a file for a year under a changed content.
        return STATIC_CACHED if version and asked == version else STATIC_CHECKED

    def _with_headers(self, scope: Scope, send: Send) -> Send:
        caching = self._caching(scope)
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers["cache-control"] = caching
                # How long the server took to answer (what the benchmarks read).
                headers["server-timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
            await send(message)

        return sending


class RowIdConvertor(IntegerConvertor):
    """A database row id in a path: at most 18 digits, so that it always fits SQLite's 64-bit integer
    (a longer one matches no route and is answered 404, like any id that names nothing)."""

    regex = "[0-9]{1,18}"


register_url_convertor("rowid", RowIdConvertor())


def _same_origin(scope: Scope) -> bool:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
    origin = headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == headers.get("host", "")


#: An upload whose form could not be read at all.
UNREADABLE_UPLOAD = (
    f"上传的内容无法读取：一次最多上传 {MAX_FILES} 个文件，文件名不能过长。"
    "请减少文件数或改短文件名后重新上传。"
)


#: A method a page never uses on an address: a button's address typed into the address bar, say.
UNSUPPORTED_METHOD = "不支持这种请求（例如在地址栏直接打开了按钮的地址）。请用页面上的链接和按钮操作"
#: Any other request that could not be read.
UNREADABLE_REQUEST = "请求无法处理，操作没有执行。请刷新页面后重试；一直出错请联系运维人员"
SERVER_ERROR = "服务器内部错误，操作可能没有完成。请刷新页面查看结果后再试；一直出错请联系运维人员"


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return render(request, "error.html", {"title": title, "message": message}, status)


async def _login_needed(request: Request, exc: Exception) -> Response:
    if wants_json(request):
        return JSONResponse({"error": "登录已过期，请重新登录"}, status_code=401)
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:
        # A form sent after the session ended (提交, 取消): back to the page it was sent from, not to
        # the action itself, once logged in again; the clerk then sends it again knowingly.
        came_from = urlsplit(request.headers.get("referer", ""))
        same_site = came_from.netloc == request.headers.get("host", "") and came_from.path.startswith("/")
        target = came_from.path if same_site and not came_from.path.startswith("/login") else "/jobs"
    answer = RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    if not request.cookies.get(SESSION_COOKIE) or request.url.path == "/logout":
        return answer  # never logged in (or leaving anyway): nothing ended that needs saying
    # The clerk's session ended (idle, or ended elsewhere): the login page says so, and that what was
    # pressed was not done, rather than appearing as if nothing had happened.
    return with_notice(request, answer, "expired" if request.method == "GET" else "expired_action")


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error_page(request, 404, "找不到", "没有这个页面或任务：它不存在，或不属于您的中心。")


async def _forbidden(request: Request, exc: Exception) -> Response:
    return _error_page(request, 403, "无权访问", "此页面只对管理员开放。")


async def _csrf_failed(request: Request, exc: Exception) -> Response:
    return _error_page(request, 403, "页面已过期", "页面已过期或来源不明，操作没有执行。请刷新页面后重试。")


async def _refused(request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, Refused) else 409
    return _error_page(request, status, "无法完成", str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return await _not_found(request, exc)
    if status == 405:
        if not _own_job(request):  # the same answer as for any other URL of a job not the viewer's
            return await _not_found(request, exc)
        return _error_page(request, 405, "不支持的操作", UNSUPPORTED_METHOD)
    if status == 400 and request.method == "POST" and request.url.path == "/jobs":
        # The form itself could not be read (Starlette's multipart limits): too many parts, a huge name.
        return _error_page(request, 400, "无法上传", UNREADABLE_UPLOAD)
    return _error_page(request, status, "出错了", UNREADABLE_REQUEST)


def _own_job(request: Request) -> bool:
    """Whether a path under ``/jobs/<id>`` names a job of the viewer's centre (other paths: True)."""
    parts = request.url.path.split("/")
    if len(parts) < 3 or parts[1] != "jobs" or not parts[2]:
        return True
    try:
        who = viewer(request)
    except LoginNeeded:
        return False
    request.scope["path_params"] = {"job_id": parts[2]}
    try:
        centre_job(request, who)
    except NotFound:
        return False
    return True


async def _database_error(request: Request, exc: Exception) -> Response:
    if "locked" in str(exc) or "busy" in str(exc):
        # Another process held the database longer than a page waits (busy_timeout): try again soon.
        logger.warning("网页请求 {} 等待数据库超时", request.url.path)
        response = _error_page(request, 503, "系统繁忙", "系统正忙，操作没有执行。请稍等片刻后重试。")
        response.headers["retry-after"] = "5"
        return response
    return await _server_error(request, exc)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The clerk closed the page or lost the connection mid-upload: nothing went wrong on the server.
    logger.info("网页请求 {} 中途断开（浏览器已关闭或网络中断）", request.url.path)
    return PlainTextResponse("请求未完成：连接已断开", status_code=400)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.error("网页请求 {} 出错（{}）", request.url.path, type(exc).__name__)
    try:  # the workspace's own error page, with the way back to the job list
        return _error_page(request, 500, "服务器出错", SERVER_ERROR)
    except Exception:  # the page could not be made either: the plainest answer
        return PlainTextResponse(SERVER_ERROR, status_code=500)


def _routes() -> list[Any]:
    return [
        Route("/", pages.home),
        Route("/login", pages.login_form, methods=["GET"]),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/jobs", pages.jobs_page, methods=["GET"]),
        Route("/jobs", pages.upload, methods=["POST"]),
        Route("/jobs/{job_id}", pages.job_page, methods=["GET"]),
        Route("/jobs/{job_id}/state", pages.job_state, methods=["GET"]),
        Route("/jobs/{job_id}/edit", pages.edit, methods=["POST"]),
        Route("/jobs/{job_id}/mapping", pages.mapping_page, methods=["GET"]),
        Route("/jobs/{job_id}/mapping", pages.save_mapping, methods=["POST"]),
        Route("/jobs/{job_id}/submit", pages.submit_page, methods=["GET"]),
        Route("/jobs/{job_id}/submit", pages.submit, methods=["POST"]),
        Route("/jobs/{job_id}/cancel", pages.cancel, methods=["POST"]),
        Route("/jobs/{job_id}/download/{kind}", pages.download, methods=["GET"]),
        Route("/jobs/{job_id}/qrcodes.zip", pages.qrcodes, methods=["GET"]),
        Route("/account/password", pages.password_page, methods=["GET"]),
        Route("/account/password", pages.change_password, methods=["POST"]),
        Route("/admin", admin.admin_home, methods=["GET"]),
        Route("/admin/centres", admin.centres_page, methods=["GET"]),
        Route("/admin/centres", admin.add_centre, methods=["POST"]),
        Route("/admin/users", admin.users_page, methods=["GET"]),
        Route("/admin/users", admin.add_user, methods=["POST"]),
        Route("/admin/users/{user_id:rowid}/password", admin.reset_password, methods=["POST"]),
        Route("/admin/users/{user_id:rowid}/disable", admin.disable_user, methods=["POST"]),
        Route("/admin/users/{user_id:rowid}/enable", admin.enable_user, methods=["POST"]),
        Route("/admin/audit", admin.audit_page, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]


def _warm(settings: engine.Settings) -> None:
    try:
        engine.warm_checks(settings)
    except Exception:  # only a head start: the first edit builds what this could not
        logger.opt(exception=True).debug("warming the checks up failed")


def create_app(settings: engine.Settings, *, processes: bool = True) -> Starlette:
    """The workspace app for ``settings``; ``processes=False`` runs its workers on threads (tests)."""
    store = Store(settings.state_dir)
    runner = Runner(settings, store, processes=processes)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.finalize = shown.finalize  # nothing a page prints can hide or turn text around
    versions = static_versions()
    templates.env.globals["static_url"] = lambda name: f"/static/{name}?v={versions[name]}"
    space = Workspace(settings, store, Auth(store, settings.web), runner, templates)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine.preload()
        if processes:  # a real server: ready for the first edit (tests start too many apps to wait for it)
            threading.Thread(target=_warm, args=(settings,), name="ehc-warm-checks", daemon=True).start()
        space.auth.tidy()
        runner.start()
        try:
            yield
        finally:
            runner.close()

    app = Starlette(
        routes=_routes(),
        exception_handlers={
            LoginNeeded: _login_needed,
            NotFound: _not_found,
            Forbidden: _forbidden,
            CsrfFailed: _csrf_failed,
            Refused: _refused,
            HTTPException: _http_error,
            sqlite3.OperationalError: _database_error,
            ClientDisconnect: _client_gone,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    app.state.workspace = space
    app.add_middleware(SecurityHeaders, static_versions=versions)
    return app
