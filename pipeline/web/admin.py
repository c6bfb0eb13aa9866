"""The admin pages: centres, users (added, passwords reset) and the audit log.

Only users marked admin reach them (others get a 403 page).  They do what
``ehc centres add``, ``ehc users add``, ``ehc users passwd`` and ``ehc users
disable``/``enable`` do, through
:mod:`pipeline.web.accounts`, and every change is in the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pipeline.web import accounts
from pipeline.web.context import (
    STALE_ACTION,
    NotFound,
    admin,
    carries_token,
    client_address,
    page_number,
    pages,
    read_form,
    redirect,
    render,
    workspace,
)
from pipeline.web.engine import ConfigError

AUDIT_PER_PAGE = 50


#: Said with a form sent from a page whose token is no longer the session's.
STALE_FORM = (
    "页面已过期（可能在别的标签页重新登录过），没有保存。您填写的内容已保留在下面（密码除外），请核对后再提交"
)


def admin_home(request: Request) -> Response:
    """GET /admin."""
    admin(request)
    return RedirectResponse("/admin/centres", status_code=303)


def centres_page(
    request: Request, message: str = "", status: int = 200, typed: Mapping[str, str] | None = None
) -> Response:
    """GET /admin/centres: every centre, and a form to add one (``typed``: what a refused form held)."""
    admin(request)
    store = workspace(request).store
    values = {"centres": store.centres(), "message": message, "typed": typed or {}}
    return render(request, "admin_centres.html", values, status)


async def add_centre(request: Request) -> Response:
    """POST /admin/centres."""
    who = admin(request)
    form = await read_form(request)
    if not carries_token(request, who, form):  # a page gone stale: what was typed comes back
        return centres_page(request, STALE_FORM, 403, _typed(form, "org_code", "name"))
    store = workspace(request).store
    try:
        await run_in_threadpool(
            accounts.add_centre, store, str(form.get("org_code", "")), str(form.get("name", "")), by=who.user
        )
    except ConfigError as error:
        return centres_page(request, str(error), 400, _typed(form, "org_code", "name"))
    return redirect(request, "/admin/centres", "centre")


def users_page(
    request: Request, message: str = "", status: int = 200, typed: Mapping[str, str] | None = None
) -> Response:
    """GET /admin/users: every user with their centre, a form to add one and to reset a password
    (``typed``: what a refused form to add one held, the password left out)."""
    admin(request)
    store = workspace(request).store
    centres = {centre.id: centre for centre in store.centres()}
    values = {"users": store.users(), "centres": centres, "message": message, "typed": typed or {}}
    return render(request, "admin_users.html", values, status)


def _typed(form: Mapping[str, Any], *names: str) -> dict[str, str]:
    """What a refused form held in ``names``, to fill it in again (bounded: it is shown back)."""
    return {name: str(form.get(name, ""))[:200] for name in names}


async def add_user(request: Request) -> Response:
    """POST /admin/users."""
    who = admin(request)
    form = await read_form(request)
    if not carries_token(request, who, form):  # a page gone stale: what was typed comes back
        return users_page(request, STALE_FORM, 403, _typed(form, "name", "org_code", "admin"))
    store = workspace(request).store
    try:
        await run_in_threadpool(
            accounts.add_user, store, str(form.get("name", "")), str(form.get("org_code", "")),
            str(form.get("password", ""))[:200], admin=form.get("admin") == "1", by=who.user,
        )  # fmt: skip
    except ConfigError as error:
        return users_page(request, str(error), 400, _typed(form, "name", "org_code", "admin"))
    return redirect(request, "/admin/users", "user")


async def reset_password(request: Request) -> Response:
    """POST /admin/users/{user_id}/password."""
    who = admin(request)
    form = await read_form(request)
    if not carries_token(request, who, form):  # the new password typed is not shown again
        return users_page(request, STALE_ACTION, 403)
    store = workspace(request).store
    try:
        user = store.user(int(request.path_params["user_id"]))
    except ValueError:
        raise NotFound from None
    if user is None:
        raise NotFound
    try:
        await run_in_threadpool(
            accounts.set_password, store, user.name, str(form.get("password", ""))[:200], by=who.user
        )
    except ConfigError as error:
        return users_page(request, str(error), 400)
    return redirect(request, "/admin/users", "reset")


async def disable_user(request: Request) -> Response:
    """POST /admin/users/{user_id}/disable: the user can no longer log in; their sessions end."""
    return await _set_disabled(request, True)


async def enable_user(request: Request) -> Response:
    """POST /admin/users/{user_id}/enable."""
    return await _set_disabled(request, False)


async def _set_disabled(request: Request, disabled: bool) -> Response:
    who = admin(request)
    if not carries_token(request, who, await read_form(request)):
        return users_page(request, STALE_ACTION, 403)
    store = workspace(request).store
    user = store.user(int(request.path_params["user_id"]))
    if user is None:
        raise NotFound
    try:
        await run_in_threadpool(accounts.set_disabled, store, user.name, disabled, by=who.user)
    except ConfigError as error:
        return users_page(request, str(error), 400)
    return redirect(request, "/admin/users", "disabled" if disabled else "enabled")


def audit_page(request: Request) -> Response:
    """GET /admin/audit: the audit log, newest first."""
    who = admin(request)
    store = workspace(request).store
    page = page_number(request)
    total = store.audit_count()
    entries = store.audit_page((page - 1) * AUDIT_PER_PAGE, AUDIT_PER_PAGE)
    centres = {centre.id: centre for centre in store.centres()}
    store.audit("查看审计日志", user=who.user, address=client_address(request))
    return render(
        request, "admin_audit.html",
        {"entries": entries, "page": page, "pages": pages(total, AUDIT_PER_PAGE), "centres": centres},
    )  # fmt: skip
