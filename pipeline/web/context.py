"""What every request handler needs: the workspace, the logged-in viewer, CSRF checks, pages.

A handler asks :func:`viewer` for the user (no session: a redirect to the
login page, or 401 for a script), takes every job through
:func:`centre_job` (another centre's job is a 404, the same page as a job
that does not exist), and reads a state-changing form through
:func:`checked_form` (a missing or wrong CSRF token is a 403).  The errors
are exceptions turned into Chinese pages by the handlers in
:mod:`pipeline.web.app`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from pipeline.web import engine
from pipeline.web.auth import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, Auth, same
from pipeline.web.jobfiles import JOB_ID, JobFiles
from pipeline.web.runner import Runner
from pipeline.web.store import Centre, Job, Store, User
from pipeline.web.uploads import BodyTooLarge, limited

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"


def static_versions(folder: Path = STATIC) -> dict[str, str]:
    """Each file under ``/static`` by name -> a short hash of its content, read once at start-up.

    Pages link ``/static/<name>?v=<hash>``: a release that changes a file
    changes its address, so browsers fetch it at once however long they
    keep the old one.
    """
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in sorted(folder.iterdir())
        if path.is_file()
    }

#: Fixed notices a redirect may ask the next page to show (never text taken from the request).
NOTICES = {
    "uploaded": "已上传，正在检查。",
    "mapping": "列对应关系已保存，本中心以后上传的表格会自动按此识别；正在重新检查。",
    "submitting": "已开始提交。",
    "already": "此任务已在提交中，不会重复提交。",
    "submitted_since": "此任务已经提交过（在另一个窗口或刚才），这次没有重复提交；结果见本页。",
    "not_sending": "此任务已不在提交中（已提交完、已取消或已中止），无需取消；结果见本页。",
    "cancelling": "正在取消：进行中的请求完成后停止，已发送的会保留。",
    "password": "密码已修改。",
    "expired": "登录已过期（长时间未操作），请重新登录。",
    "expired_action": "登录已过期，刚才的操作没有执行。请重新登录后再做一次。",
    "centre": "中心已添加。",
    "user": "用户已添加。",
    "reset": "密码已重设，该用户需重新登录。",
    "disabled": "用户已停用：已登录的页面立即退出，不能再登录。",
    "enabled": "用户已启用，可以重新登录。",
}
#: The one-time cookie that carries a notice from a redirect to the page it leads to.  Not the
#: query string: a link such as ``/jobs?notice=centre`` would show a notice of something no one did.
NOTICE_COOKIE = "ehc_notice"
#: How long a notice waits for its page (seconds): the redirect is followed at once.
NOTICE_SECONDS = 60


#: Said on the page a button was pressed on, shown afresh with the session's token, when the page had
#: gone stale (a login in another tab): nothing was done.
STALE_ACTION = "页面已过期（可能在别的标签页重新登录过），刚才的操作没有执行。本页已更新，请核对后再做一次"

#: Why a job whose folder was cleaned up cannot be downloaded, edited or sent any more.
CLEANED = "此任务的文件已清理，只保留了记录：不能再下载、修改或提交。如需继续，请重新上传登记表"


class LoginNeeded(Exception):
    """No live session."""


class NotFound(Exception):
    """Nothing there for this viewer (or not theirs: the same answer)."""


class Forbidden(Exception):
    """A page for admins only."""


class CsrfFailed(Exception):
    """A state-changing request without the session's CSRF token."""


class Refused(Exception):
    """A request that cannot be done now; ``str()`` is the Chinese reason, ``status`` the HTTP status."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Workspace:
    """Everything the app shares between requests."""

    settings: engine.Settings
    store: Store
    auth: Auth
    runner: Runner
    templates: Jinja2Templates


@dataclass(frozen=True)
class Viewer:
    """The logged-in user of a request, their centre and their session's CSRF token."""

    user: User
    centre: Centre
    csrf: str


def workspace(request: Request) -> Workspace:
    """The app's workspace."""
    found: Workspace = request.app.state.workspace
    return found


def viewer(request: Request) -> Viewer:
    """The logged-in viewer; raises :class:`LoginNeeded` without a live session."""
    cached = getattr(request.state, "viewer", None)
    if cached is not None:
        return cached
    space = workspace(request)
    found = space.auth.session(request.cookies.get(SESSION_COOKIE, ""))
    if found is None:
        raise LoginNeeded
    user, session = found
    centre = space.store.centre(user.centre_id)
    if centre is None:
        raise LoginNeeded
    request.state.viewer = Viewer(user, centre, session.csrf)
    return request.state.viewer


def admin(request: Request) -> Viewer:
    """The viewer, who must be an admin (else :class:`Forbidden`)."""
    found = viewer(request)
    if not found.user.is_admin:
        raise Forbidden
    return found


def centre_job(request: Request, who: Viewer) -> Job:
    """The job named in the path, if it is one of the viewer's centre (else :class:`NotFound`)."""
    job_id = str(request.path_params.get("job_id", ""))
    if not JOB_ID.fullmatch(job_id):
        raise NotFound
    job = workspace(request).store.job(job_id, who.centre.id)
    if job is None:
        raise NotFound
    return job


def kept_files(request: Request, job: Job) -> JobFiles:
    """The job's files; :class:`Refused` (410) when they were cleaned up and only the record is left."""
    files = JobFiles(workspace(request).settings.state_dir, job.id)
    if not files.kept(job.stored_name):
        raise Refused(CLEANED, 410)
    return files


#: The most a form other than an upload may carry: a register's column mapping is a few kilobytes.
FORM_LIMIT = 1024 * 1024
_FORM_TOO_LARGE = "提交的内容过大，未处理。请刷新页面后重试"


async def read_form(request: Request, *, limit: int = FORM_LIMIT, max_files: int = 0) -> FormData:
    """The request's form, read only up to ``limit`` bytes and ``max_files`` files: a request bigger
    than that is refused (413) before it is held in memory or spooled to disk, whoever sends it.

    Raises :class:`Refused`.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(_FORM_TOO_LARGE, 413)
    bounded = Request(request.scope, limited(request.receive, limit))
    try:
        return await bounded.form(max_files=max_files)
    except BodyTooLarge:
        raise Refused(_FORM_TOO_LARGE, 413) from None


async def checked_form(
    request: Request, who: Viewer, *, limit: int = FORM_LIMIT, max_files: int = 0
) -> FormData:
    """The request's form (see :func:`read_form`), after checking its CSRF token against the viewer's
    session."""
    form = await read_form(request, limit=limit, max_files=max_files)
    if not carries_token(request, who, form):
        raise CsrfFailed
    return form


def carries_token(request: Request, who: Viewer, form: FormData) -> bool:
    """Whether the form (or the request's header) carries the CSRF token of the viewer's session."""
    given = str(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, ""))
    return same(who.csrf, given)


def client_address(request: Request) -> str:
    """The client's address (the proxy's, unless uvicorn trusts it to forward the real one)."""
    return request.client.host if request.client else ""


def wants_json(request: Request) -> bool:
    """Whether the request came from the page's script (it asks for JSON)."""
    return "application/json" in request.headers.get("accept", "")


#: The largest page number taken: far past any list, and well inside SQLite's integers.
MAX_PAGE = 10**9
_NUMBER = re.compile(r"[0-9]{1,9}")


def page_number(request: Request) -> int:
    """The ``page`` query parameter (1 to :data:`MAX_PAGE`; anything else is page 1)."""
    given = request.query_params.get("page", "1")
    return max(1, int(given)) if _NUMBER.fullmatch(given) else 1


def query_number(request: Request, name: str) -> int | None:
    """A query parameter of at most nine ASCII digits as a number (None when it is anything else)."""
    given = request.query_params.get(name, "")
    return int(given) if _NUMBER.fullmatch(given) else None


def pages(total: int, per_page: int) -> int:
    """How many pages ``total`` items fill."""
    return max(1, math.ceil(total / per_page))


def secure_cookies(request: Request) -> bool:
    """Whether cookies are sent over HTTPS only: when configured, and whenever the page came over HTTPS."""
    return workspace(request).settings.web.secure_cookies or request.url.scheme == "https"


def with_notice(request: Request, response: Response, notice: str) -> Response:
    """``response`` (a redirect, or the upload's JSON answer) asking the next page to show ``notice``
    (a key of :data:`NOTICES`) once."""
    response.set_cookie(
        NOTICE_COOKIE, notice, max_age=NOTICE_SECONDS, path="/", httponly=True, samesite="lax",
        secure=secure_cookies(request),
    )  # fmt: skip
    return response


def redirect(request: Request, target: str, notice: str) -> Response:
    """A redirect to ``target`` whose page shows ``notice`` (a key of :data:`NOTICES`) once."""
    return with_notice(request, RedirectResponse(target, status_code=303), notice)


def notice_key(request: Request) -> str:
    """The key of the notice this request's page is to show ("" for none)."""
    key = request.cookies.get(NOTICE_COOKIE, "")
    return key if key in NOTICES else ""


def render(
    request: Request, template: str, context: Mapping[str, Any] | None = None, status: int = 200
) -> Response:
    """A page from ``template`` with the viewer (if any), CSRF token and notice filled in.

    The notice is shown once: the page that shows it takes its cookie away.
    """
    space = workspace(request)
    who = getattr(request.state, "viewer", None)
    values: dict[str, Any] = {
        "viewer": who,
        "csrf": who.csrf if who else "",
        "notice": NOTICES.get(notice_key(request), ""),
        "status_labels": engine.STATUS_LABELS,
    }
    values.update(context or {})
    response = space.templates.TemplateResponse(request, template, values, status_code=status)
    if NOTICE_COOKIE in request.cookies:
        response.delete_cookie(NOTICE_COOKIE, path="/", httponly=True, samesite="lax")
    return response
