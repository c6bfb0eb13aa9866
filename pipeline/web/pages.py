"""The clerk's pages: log in, upload, check the mapping, see and fix faults, submit, download, history.

Handlers only parse the request, ask :mod:`pipeline.web.context` who is
asking and which job (of their centre) they mean, call the workspace's
modules and render a page.  Every state change is written to the audit log.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote

from loguru import logger
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from pipeline.web import downloads, engine
from pipeline.web.auth import CSRF_FIELD, LOGIN_COOKIE, SESSION_COOKIE, LoginRefused, password_problem, same
from pipeline.web.context import (
    CLEANED,
    STALE_ACTION,
    CsrfFailed,
    NotFound,
    Refused,
    Viewer,
    carries_token,
    centre_job,
    checked_form,
    client_address,
    kept_files,
    notice_key,
    page_number,
    pages,
    query_number,
    read_form,
    redirect,
    render,
    secure_cookies,
    viewer,
    wants_json,
    with_notice,
    workspace,
)
from pipeline.web.downloads import NotAvailable
from pipeline.web.editing import EditRefused, current_values, edit_cell
from pipeline.web.jobfiles import JobFiles, new_job_id, safe_file_name
from pipeline.web.reportfiles import report_path, reports_current
from pipeline.web.runner import QR_REMEMBERED_SECONDS, QrBuild
from pipeline.web.shown import file_name as shown_name
from pipeline.web.shown import for_clerk, visible
from pipeline.web.store import (
    BUSY_STATES,
    CANCELLED,
    CHECK_QUEUE_STATES,
    CHECKED,
    CHECKING,
    NEEDS_MAPPING,
    QUEUED,
    READY_STATES,
    STOPPED,
    SUBMITTED,
    SUBMITTING,
    UNREADABLE,
    WAITING,
    FaultLine,
    Job,
    QueueFull,
)
from pipeline.web.uploads import (
    FORM_OVERHEAD,
    HEAD_BYTES,
    MAX_FILES,
    UploadRefused,
    check_file,
    limit_text,
)

JOBS_PER_PAGE = 20
FAULTS_PER_PAGE = 50

STATE_LABELS = {
    QUEUED: "排队等待检查", CHECKING: "正在检查", NEEDS_MAPPING: "需要确认列", UNREADABLE: "无法读取",
    CHECKED: "已检查", WAITING: "等待提交", SUBMITTING: "正在提交", SUBMITTED: "已提交",
    CANCELLED: "已取消", STOPPED: "提交中止",
}  # fmt: skip

#: Statuses of rows a submission sends (again): valid ones, and those a stopped or refused send left.
SENDABLE = (engine.STATUS_VALID, engine.STATUS_FAILED, engine.STATUS_REJECTED)


def sendable(counts: dict[str, int]) -> int:
    """Rows a submission of the job would send (or find enrolled already)."""
    return sum(counts.get(status, 0) for status in SENDABLE)


DOWNLOADS = {
    "annotated": "标注后的原表",
    "errors": "errors.xlsx（问题清单）",
    "results": "results.xlsx（逐行结果）",
    "csv": "results.csv（供其他系统导入；用 Excel 查看请下载 results.xlsx）",
}


def _downloads(job: Job) -> dict[str, str]:
    """The job's reports offered for download: no link to an annotated copy its register cannot have."""
    if engine.annotated_copy_possible(job.file_name, job.rows):
        return DOWNLOADS
    return {kind: label for kind, label in DOWNLOADS.items() if kind != "annotated"}


#: What the audit log says for a failed login under a name no user has.
UNKNOWN_NAME = "（不存在的用户名）"
#: Fields whose values are codes (sex, nation, payment…), not a person's own data: kept in the audit log.
CODE_FIELDS = frozenset({"xb", "mzdm", "zjlx", "fyzhdm", "xldm", "zydm", "dzlb", "ylfyzffs", "klx",
                         "isRealName", "orgCode", "dzsf", "dzs", "dzqx"})  # fmt: skip


def audited_value(field: str, value: str) -> str:
    """A new cell value as the audit log keeps it: a code as it is, a person's data masked (张**)."""
    if field in CODE_FIELDS:
        return engine.mask_text(value)
    value = value.strip()
    return value[:1] + "*" * min(len(value) - 1, 8) if value else ""


# --- login -----------------------------------------------------------------------------------


def _safe_next(target: str) -> str:
    """A local path to go to after login (never another site)."""
    return (
        target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/jobs"
    )


#: What a login form's token looks like (``secrets.token_urlsafe(24)``): a cookie that is anything else is
#: not reused.
_LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")
#: A login form sent with a token that no longer matches: the page was open too long, or a colleague
#: logged in from this browser since.
LOGIN_PAGE_EXPIRED = "登录页面已过期（打开太久，或已在其他页面登录过），请重新输入密码登录"


def _login_page(
    request: Request, message: str = "", status: int = 200, *, target: str | None = None, name: str = ""
) -> Response:
    """The login form; ``target`` is where a login leads (a POST's own field; the address's otherwise).

    The token of a login page still open in another tab is reused, so that each of them logs in.
    """
    kept = request.cookies.get(LOGIN_COOKIE, "")
    token = kept if _LOGIN_TOKEN.fullmatch(kept) else secrets.token_urlsafe(24)
    going = target if target is not None else request.query_params.get("next", "/jobs")
    response = render(
        request, "login.html",
        {"login_token": token, "message": message, "next": _safe_next(going), "name": name[:40]},
        status,
    )  # fmt: skip
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=1800, path="/login", httponly=True, samesite="strict",
        secure=secure_cookies(request),
    )  # fmt: skip
    return response


async def login_form(request: Request) -> Response:
    """GET /login."""
    return _login_page(request)


async def login(request: Request) -> Response:
    """POST /login: check the name and password (throttled), start a session."""
    space = workspace(request)
    form = await read_form(request)
    name, password = str(form.get("name", ""))[:100], str(form.get("password", ""))[:200]
    target = str(form.get("next", "/jobs"))
    if not same(request.cookies.get(LOGIN_COOKIE, ""), str(form.get(CSRF_FIELD, ""))):
        # Nothing is checked; the form comes back with a fresh token, the name and where it led.
        known = await run_in_threadpool(space.store.user_by_name, name.strip()) if name.strip() else None
        return _login_page(request, LOGIN_PAGE_EXPIRED, 403, target=target, name=known.name if known else "")
    address = client_address(request)
    try:
        done = await run_in_threadpool(space.auth.login, name, password, address)
    except LoginRefused as refused:
        # A name nobody has is not kept: it is often the password, typed into the wrong box.
        known = await run_in_threadpool(space.store.user_by_name, name.strip()) if name.strip() else None
        await run_in_threadpool(
            space.store.audit, "登录失败", user=None, user_name=known.name if known else UNKNOWN_NAME,
            target="", detail=str(refused), address=address,
        )  # fmt: skip
        # The name is typed again only when it is a user's: a password typed into it is not shown.
        return _login_page(request, str(refused), 401, target=target, name=known.name if known else "")
    space.auth.logout(request.cookies.get(SESSION_COOKIE, ""))  # the session this login replaces ends
    await run_in_threadpool(space.store.audit, "登录", user=done.user, address=address)
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, done.token, httponly=True, samesite="lax", path="/",
        secure=secure_cookies(request),
    )  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


async def logout(request: Request) -> Response:
    """POST /logout."""
    who = viewer(request)
    await checked_form(request, who)
    space = workspace(request)
    space.auth.logout(request.cookies.get(SESSION_COOKIE, ""))
    space.store.audit("退出", user=who.user, address=client_address(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def home(request: Request) -> Response:
    """GET /."""
    viewer(request)
    return RedirectResponse("/jobs", status_code=303)


# --- jobs: list and upload -----------------------------------------------------------------------


def jobs_page(request: Request) -> Response:
    """GET /jobs: the upload box and the centre's jobs, newest first."""
    who = viewer(request)
    store = workspace(request).store
    page = page_number(request)
    total = store.jobs_count(who.centre.id)
    jobs = store.jobs_page(who.centre.id, (page - 1) * JOBS_PER_PAGE, JOBS_PER_PAGE)
    counts = {job.id: store.counts(job.id)["status"] for job in jobs}
    limit = limit_text(_upload_limit(request))
    return render(
        request, "jobs.html",
        {"jobs": jobs, "counts": counts, "page": page, "pages": pages(total, JOBS_PER_PAGE), "total": total,
         "state_labels": STATE_LABELS, "limit": limit, "max_files": MAX_FILES},
    )  # fmt: skip


def _upload_limit(request: Request) -> int:
    return int(workspace(request).settings.web.max_upload_mb * 1024 * 1024)


def _queue_full(bound: int) -> str:
    return f"本中心已有 {bound} 个文件在排队检查，请等它们检查完后再上传"


def _copied_with_digest(source: BinaryIO, target: BinaryIO) -> str:
    """Copy ``source`` to ``target``; the SHA-256 of the bytes copied (hex), to know the same register
    uploaded again under another name."""
    digest = hashlib.sha256()
    while chunk := source.read(1 << 20):
        digest.update(chunk)
        target.write(chunk)
    return digest.hexdigest()


def _store_upload(request: Request, who: Viewer, upload: UploadFile) -> Job:
    """Check one uploaded file and store it as a new job (raises :class:`UploadRefused`)."""
    space = workspace(request)
    upload.file.seek(0)
    head = upload.file.read(HEAD_BYTES)
    suffix = check_file(upload.filename or "", head)
    upload.file.seek(0, 2)
    size = upload.file.tell()
    if size > _upload_limit(request):
        raise UploadRefused(f"{upload.filename}：文件过大，最多 {limit_text(_upload_limit(request))}", 413)
    upload.file.seek(0)
    reserve = space.settings.web.min_free_disk_mb << 20
    if shutil.disk_usage(space.settings.state_dir).free - size < reserve:
        # The journal and the nightly imports share this disk: a clerk's uploads never fill it.
        logger.error(
            "网页上传被拒绝：状态目录所在磁盘的剩余空间不足 {} MB", space.settings.web.min_free_disk_mb
        )
        raise UploadRefused(
            f"{shown_name(upload.filename or '')}：服务器磁盘空间不足，暂时不能上传。请联系运维人员", 507
        )
    job_id = new_job_id()
    files = JobFiles(space.settings.state_dir, job_id)
    stored = safe_file_name(upload.filename or "", suffix)
    try:
        files.create()
        with open(files.upload(stored), "xb") as target:
            digest = _copied_with_digest(upload.file, target)
    except OSError as error:
        files.remove()
        reason, _ = engine.explain_os_error(error)
        logger.error("网页上传无法保存（{}）", reason)
        name = shown_name(upload.filename or "")
        message = f"{name}：服务器无法保存文件（{reason}），请稍后再试或联系运维人员"
        raise UploadRefused(message, 507) from None
    display = (shown_name(upload.filename or "") or stored)[:120]
    bound = space.settings.web.queued_per_centre
    try:
        job = space.store.add_job(
            job_id, who.centre.id, who.user.id, display, stored, size, digest=digest, queue_limit=bound
        )
    except QueueFull:
        files.remove()
        raise UploadRefused(f"{shown_name(upload.filename or '')}：{_queue_full(bound)}", 429) from None
    space.store.audit(
        "上传",
        user=who.user,
        target=job_id,
        detail=f"{display}（{size} 字节）",
        address=client_address(request),
    )
    return job


async def upload(request: Request) -> Response:
    """POST /jobs: store each uploaded register as a job and queue its dry run."""
    who = viewer(request)
    limit = _upload_limit(request)
    declared = request.headers.get("content-length", "")
    too_large = Refused(f"文件过大：单次上传最多 {limit_text(limit)}。请拆分后分别上传", 413)
    if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise too_large
    queued = await run_in_threadpool(workspace(request).runner.waiting, who.centre.id)
    bound = workspace(request).settings.web.queued_per_centre
    if queued >= bound:
        raise Refused(_queue_full(bound), 429)
    try:
        form = await checked_form(request, who, limit=limit + FORM_OVERHEAD, max_files=MAX_FILES + 1)
    except Refused as refused:
        raise (too_large if refused.status == 413 else refused) from None
    files = [item for item in form.getlist("files") if isinstance(item, UploadFile) and item.filename]
    if not files:
        raise Refused("没有选择文件：请选择或拖入 .xlsx、.xls、.csv 或 .txt 文件", 400)
    if len(files) > MAX_FILES:
        raise Refused(f"一次最多上传 {MAX_FILES} 个文件", 400)
    jobs: list[Job] = []
    problems: list[str] = []
    status = 415
    for item in files:
        try:
            if queued + len(jobs) >= bound:
                raise UploadRefused(f"{shown_name(item.filename or '')}：{_queue_full(bound)}", 429)
            jobs.append(await run_in_threadpool(_store_upload, request, who, item))
        except UploadRefused as refused:
            problems.append(str(refused))
            status = refused.status if refused.status != 415 else status
    await form.close()
    runner = workspace(request).runner
    for job in jobs:
        runner.check(job.id)
    if problems and not jobs:
        raise Refused("；".join(problems), status)
    target = f"/jobs/{jobs[0].id}" if len(jobs) == 1 else "/jobs"
    if wants_json(request):
        uploaded = [f"/jobs/{job.id}" for job in jobs]
        answer = JSONResponse({"jobs": uploaded, "problems": problems, "next": target})
        return with_notice(request, answer, "uploaded")
    if problems:
        raise Refused("；".join(problems) + f"。其余 {len(jobs)} 个文件已上传", status)
    return redirect(request, target, "uploaded")


# --- one job --------------------------------------------------------------------------------------


@dataclass
class GridLine:
    """One fault as the grid shows it."""

    fault: FaultLine
    column: str
    in_sheet: bool
    value: str
    hint: str
    editable: bool


def _column_name(job: Job, line: FaultLine) -> tuple[str, bool]:
    if not line.field:
        return "（整行）", False
    for info in job.tables:
        header = info["field_headers"].get(line.source)
        if header:
            return str(header), True
    return engine.FIELD_LABELS.get(line.source, line.source), False


def _grid(request: Request, job: Job, lines: list[FaultLine]) -> list[GridLine]:
    space = workspace(request)
    files = JobFiles(space.settings.state_dir, job.id)
    kept = files.kept(job.stored_name)
    row_ids = sorted({line.row_id for line in lines})
    readable = row_ids and kept and files.originals.is_file()
    values = current_values(space.store, files, job, row_ids) if readable else None
    grid = []
    for line in lines:
        column, in_sheet = _column_name(job, line)
        value = ""
        if values is not None and line.source in values.columns:
            value = str(values.at[line.row_id, line.source])
        editable = kept and job.ready and bool(line.source) and line.status not in engine.ENROLLED_STATUSES
        fix = engine.fault_fix(line.code, line.field, warning=line.severity == "warning")
        grid.append(GridLine(line, column, in_sheet, value, fix, editable))
    return grid


def _filters(request: Request) -> tuple[str, int | None, str | None]:
    severity = "warning" if request.query_params.get("severity") == "warning" else "error"
    code = query_number(request, "code")
    source = request.query_params.get("column") or None
    if source is not None and source not in engine.INPUT_FIELDS:
        source = None
    return severity, code, source


def job_page(request: Request, notice: str = "", status: int = 200) -> Response:
    """GET /jobs/{id}: state, counts, the fault grid (filtered, paged), downloads, submission
    (``notice``: why it is shown again, in answer to a form)."""
    who = viewer(request)
    job = centre_job(request, who)
    store = workspace(request).store
    counts = store.counts(job.id)
    severity, code, source = _filters(request)
    page = page_number(request)
    total = store.fault_count(job.id, severity=severity, code=code, source=source)
    lines = store.fault_page(
        job.id, severity=severity, code=code, source=source,
        offset=(page - 1) * FAULTS_PER_PAGE, limit=FAULTS_PER_PAGE,
    )  # fmt: skip
    failed = (
        store.row_page(job.id, engine.STATUS_FAILED, 0, FAULTS_PER_PAGE)
        if counts["status"].get("failed")
        else []
    )
    names = {
        src: _column_name(job, FaultLine(0, 0, src, src, 0, "", "", 0, ""))[0] for src in counts["column"]
    }
    # The column filter lists the columns as the clerk's sheet has them, left to right (then any the
    # sheet has no column for): not in the order of the platform's field codes.
    order = {src: i for i, src in enumerate(job.tables[0]["field_headers"])} if job.tables else {}
    columns = dict(sorted(names.items(), key=lambda item: (order.get(item[0], len(order)), item[1])))
    kept = JobFiles(workspace(request).settings.state_dir, job.id).kept(job.stored_name)
    # "已上传，正在检查" only while it is: a register checked before its page opened is checked already.
    stale_notice = notice_key(request) == "uploaded" and job.state not in CHECK_QUEUE_STATES
    return render(
        request, "job.html",
        {
            "job": job, "counts": counts, "grid": _grid(request, job, lines), "total": total, "page": page,
            "pages": pages(total, FAULTS_PER_PAGE), "severity": severity, "code": code, "source": source,
            "columns": columns, "describe": engine.describe, "state_labels": STATE_LABELS,
            "downloads": _downloads(job) if job.rows and job.state not in BUSY_STATES and kept else {},
            "kept": kept, "cleaned": CLEANED,
            "failed": failed, "sendable": sendable(counts["status"]),
            "history": store.edit_history(job.id, 10), "field_labels": engine.FIELD_LABELS,
            "mask": engine.mask_text, "said": for_clerk, "earlier": store.earlier_upload(job),
            **({"notice": ""} if stale_notice else {}), **({"notice": notice} if notice else {}),
        },
        status,
    )  # fmt: skip


def _state(job: Job, counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    sending = dict(job.sending)
    if sending.get("total"):
        remaining = max(0, int(sending["total"]) - int(sending.get("done", 0)))
        rate = min(float(sending.get("rate") or 0), float(sending.get("limit") or 0) or float("inf"))
        sending["seconds_left"] = round(remaining / rate) if rate > 0 else None
        sending["elapsed"] = round(time.time() - float(sending.get("started") or time.time()), 1)
    return {
        "state": job.state, "label": STATE_LABELS.get(job.state, job.state), "stage": job.stage,
        "progress": job.progress, "message": visible(job.message), "busy": job.busy, "sending": sending,
        "counts": counts["status"], "rows": job.rows, "version": job.version,
    }  # fmt: skip


def job_state(request: Request) -> Response:
    """GET /jobs/{id}/state: progress of the dry run or the submission, for the page's polling."""
    who = viewer(request)
    job = centre_job(request, who)
    return JSONResponse(_state(job, workspace(request).store.counts(job.id)))


def _faults_json(faults: list[tuple[str, str, int, str, str]]) -> list[dict[str, Any]]:
    """A row's faults (field, source, code, severity, message) as an edit's JSON answer gives them."""
    return [
        {"field": f, "source": s, "code": c, "severity": sev, "message": visible(m),
         "hint": engine.fault_fix(c, f, warning=sev == "warning")}
        for f, s, c, sev, m in faults
    ]


async def edit(request: Request) -> Response:
    """POST /jobs/{id}/edit: set one cell, re-check the row at once."""
    who = viewer(request)
    job = centre_job(request, who)
    form = await checked_form(request, who)
    kept_files(request, job)
    space = workspace(request)
    try:
        row_id = int(str(form.get("row_id", "")))
    except ValueError:
        raise NotFound from None
    field, value = str(form.get("field", "")), str(form.get("value", ""))
    try:
        result = await run_in_threadpool(
            edit_cell, space.store, space.settings.state_dir, job, row_id, field, value,
            user=who.user, settings=space.settings, org_code=who.centre.org_code,
        )  # fmt: skip
    except KeyError:
        raise NotFound from None
    except EditRefused as refused:
        raise Refused(str(refused)) from None
    label = engine.FIELD_LABELS.get(field, field)
    await run_in_threadpool(
        space.store.audit, "修改单元格", user=who.user, target=job.id,
        detail=f"第 {result.row.source_row} 行 {label}：改为“{audited_value(field, value)}”，"
        f"结果 {engine.STATUS_LABELS.get(result.row.status, result.row.status)}",
        address=client_address(request),
    )  # fmt: skip
    if wants_json(request):
        counts = space.store.counts(job.id)
        severity, only_code, source = _filters(request)  # the filters of the page the edit was made on
        shown = space.store.fault_count(job.id, severity=severity, code=only_code, source=source)
        return JSONResponse(
            {
                "row_id": result.row.row_id, "status": result.row.status,
                "status_label": engine.STATUS_LABELS.get(result.row.status, result.row.status),
                "result_code": result.row.result_code, "message": visible(result.row.message),
                "value": visible(result.value),
                "faults": _faults_json(result.faults),
                "others": {
                    str(k): {"status": status, "status_label": engine.STATUS_LABELS.get(status, status),
                             "faults": _faults_json(faults)}
                    for k, (status, faults) in result.others.items()
                },
                "counts": counts["status"],
                "codes": [
                    {"code": code, "description": engine.describe(int(code)), "n": n}
                    for code, n in sorted(counts["error"].items())
                ],
                "sendable": sendable(counts["status"]),
                "shown": shown,
            }
        )  # fmt: skip
    back = request.headers.get("referer", "")
    target = back if back.startswith(str(request.base_url)) else f"/jobs/{job.id}"
    return RedirectResponse(target, status_code=303)


# --- mapping ------------------------------------------------------------------------------------


#: Said with a mapping sent from a page whose token is no longer the session's.
STALE_MAPPING = (
    "页面已过期（可能在别的标签页重新登录过），列对应关系没有保存。您的选择已保留在下面，请核对后再点一次保存"
)


def mapping_page(
    request: Request, picked: dict[str, str] | None = None, message: str = "", status: int = 200
) -> Response:
    """GET /jobs/{id}/mapping: the header row found and which column became which field.

    ``picked`` (form field -> code) shows the clerk's own choices again, with ``message`` saying why
    they were not saved.
    """
    who = viewer(request)
    job = centre_job(request, who)
    if not job.tables:
        raise Refused("此任务还没有读出表头")
    choices = [("", "（不使用，保留为附加列）"), ("ignore", "（忽略，如序号）")]
    choices += [(code, f"{engine.FIELD_LABELS[code]}（{code}）") for code in engine.INPUT_FIELDS]
    # What save_mapping would refuse is not offered: the page shows the mapping and says why it stays.
    locked = ""
    if job.submitted_at:
        locked = "此任务已提交，列对应关系不能再修改。如需改正，请改好表格后重新上传"
    elif job.busy:
        locked = "此任务正在检查或提交，请等它结束后再修改列对应关系"
    selected = [
        [(picked or {}).get(f"t{t}c{c}", field or "") for c, field in enumerate(info["fields"])]
        for t, info in enumerate(job.tables)
    ]
    return render(
        request, "mapping.html",
        {"job": job, "choices": choices, "required": engine.REQUIRED_INPUT_FIELDS,
         "labels": engine.FIELD_LABELS, "locked": locked, "selected": selected, "message": message},
        status,
    )  # fmt: skip


def _taken_twice(job: Job, changes: dict[str, str]) -> str:
    """Why the mapping cannot be saved when it gives one field two columns ("" when it does not)."""
    seen: dict[str, int] = {}
    headers = job.tables[0]["headers"] if job.tables else []
    for c, code in enumerate(_final_fields(job, changes)):
        if not code or code in (engine.IGNORE, engine.EXTRA):
            continue
        if code in seen:
            first = seen[code]
            label = engine.FIELD_LABELS.get(code, code)
            return (
                f"“{label}”对应了两列：第 {first + 1} 列“{headers[first]}”和第 {c + 1} 列“{headers[c]}”。"
                "一个字段只能对应一列，请把其中一列改为“不使用”或“忽略”后再保存"
            )
        seen[code] = c
    return ""


async def save_mapping(request: Request) -> Response:
    """POST /jobs/{id}/mapping: save the centre's corrections and check the register again."""
    who = viewer(request)
    job = centre_job(request, who)
    form = await read_form(request)
    picked = {str(key): str(value) for key, value in form.items() if str(key).startswith("t")}
    if not carries_token(request, who, form):
        # The page's token went stale (a login in another tab): nothing is saved, and the choices the
        # clerk made come back with a fresh token rather than being lost on an error page.
        return mapping_page(request, picked, STALE_MAPPING, 403)
    kept_files(request, job)
    space = workspace(request)
    if job.state not in (*READY_STATES, NEEDS_MAPPING) or job.submitted_at:
        raise Refused("此任务正在处理或已提交，不能再修改列对应关系")
    chosen: dict[str, str] = {}
    for t, info in enumerate(job.tables):
        for c, header in enumerate(info["headers"]):
            if f"t{t}c{c}" not in form:
                continue  # a column the form does not name stays as it is (a cut-short form)
            code = str(form.get(f"t{t}c{c}", ""))
            if code and code not in (*engine.INPUT_FIELDS, engine.IGNORE, engine.EXTRA):
                raise Refused("未知的字段", 400)
            if code != (info["fields"][c] or ""):
                chosen[str(header)] = code or engine.EXTRA  # a recognised column kept as the clerk's own
    mapping = chosen
    twice = _taken_twice(job, mapping)
    if twice:  # the clerk's choices come back as they made them, with the two columns named
        return mapping_page(request, picked, twice, 400)
    await run_in_threadpool(space.store.save_centre_columns, who.centre.id, mapping)
    if not space.store.claim_job(
        job.id, [*READY_STATES, NEEDS_MAPPING], QUEUED, stage="排队等待检查", progress=0.0
    ):
        raise Refused("此任务正在处理，请稍后再试")
    space.runner.check(job.id)
    space.store.audit(
        "修改列对应", user=who.user, target=job.id,
        detail="；".join(f"{h} → {c}" for h, c in mapping.items())[:500], address=client_address(request),
    )  # fmt: skip
    return redirect(request, f"/jobs/{job.id}", "mapping")


def _final_fields(job: Job, changes: dict[str, str]) -> list[str]:
    fields = []
    for info in job.tables[:1]:
        for c, header in enumerate(info["headers"]):
            fields.append(changes.get(str(header), info["fields"][c]))
    return fields


# --- submission -----------------------------------------------------------------------------------


def submit_page(request: Request, notice: str = "", status: int = 200) -> Response:
    """GET /jobs/{id}/submit: the confirmation, naming the count and the centre (``notice``: why it is
    shown again)."""
    who = viewer(request)
    job = centre_job(request, who)
    counts = workspace(request).store.counts(job.id)["status"]
    return render(
        request, "submit.html",
        {"job": job, "sendable": sendable(counts), "counts": counts,
         "rate": workspace(request).settings.submit.rate, **({"notice": notice} if notice else {})},
        status,
    )  # fmt: skip


async def submit(request: Request) -> Response:
    """POST /jobs/{id}/submit: start sending the valid rows (queued behind any run holding the lock)."""
    who = viewer(request)
    job = centre_job(request, who)
    form = await read_form(request)
    if not carries_token(request, who, form):
        # The confirmation went stale (a login in another tab): nothing is sent; it is shown again,
        # counted afresh and with the session's token, for the clerk to confirm once more.
        return submit_page(request, STALE_ACTION, 403)
    kept_files(request, job)
    space = workspace(request)
    seen = form.get("submitted")
    if isinstance(seen, str) and seen != job.submitted_at and job.state in READY_STATES:
        # The confirmation was shown before a submission that has ended since (another tab, the back
        # button): that one is what the clerk meant; its results are on the job's page.
        return redirect(request, f"/jobs/{job.id}", "submitted_since")
    if sendable(space.store.counts(job.id)["status"]) == 0:
        raise Refused("没有可提交的行（校验通过的行数为 0）")
    moved = space.store.claim_job(
        job.id, list(READY_STATES), WAITING, stage="准备提交", progress=0.0, message="", cancel=0, sending={},
        submitted_by=who.user.id, pid=None,
    )  # fmt: skip
    if not moved:
        now = space.store.job(job.id, who.centre.id)
        if now is not None and now.state in (WAITING, SUBMITTING):
            # A second click (or a second tab, or the back button): the submission runs once; say so.
            return redirect(request, f"/jobs/{job.id}", "already")
        raise Refused("此任务正在检查或提交中")
    space.runner.submit(job.id)
    space.store.audit(
        "提交", user=who.user, target=job.id, detail=f"{job.file_name}，机构 {who.centre.org_code}",
        address=client_address(request),
    )  # fmt: skip
    return redirect(request, f"/jobs/{job.id}", "submitting")


async def cancel(request: Request) -> Response:
    """POST /jobs/{id}/cancel: stop the submission (calls in flight finish, what was done is kept)."""
    who = viewer(request)
    job = centre_job(request, who)
    form = await read_form(request)
    if not carries_token(request, who, form):
        if wants_json(request):
            raise CsrfFailed
        return job_page(request, STALE_ACTION, 403)  # nothing cancelled: the job's page as it is now
    space = workspace(request)
    if job.state not in (WAITING, SUBMITTING):
        if wants_json(request):
            raise Refused("此任务已不在提交中，无需取消")
        # Pressed as the submission ended, or in a second tab after the first cancelled: nothing to do;
        # the job's page shows how it ended.
        return redirect(request, f"/jobs/{job.id}", "not_sending")
    space.store.update_job(job.id, cancel=1)
    space.store.audit("取消提交", user=who.user, target=job.id, address=client_address(request))
    if wants_json(request):
        return JSONResponse({"ok": True})
    return redirect(request, f"/jobs/{job.id}", "cancelling")


# --- downloads ------------------------------------------------------------------------------------


def _disposition(name: str) -> dict[str, str]:
    return {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"}


def _attachment(path: str, name: str, media_type: str) -> FileResponse:
    return FileResponse(path, media_type=media_type, headers=_disposition(name))


async def download(request: Request) -> Response:
    """GET /jobs/{id}/download/{kind}: a report of the job as it stands (written first if needed)."""
    who = viewer(request)
    job = centre_job(request, who)
    kind = str(request.path_params["kind"])
    if kind not in DOWNLOADS:
        raise NotFound
    if job.busy or not job.rows:
        raise Refused("此任务正在处理或还没有检查结果，请稍后再下载")
    space = workspace(request)
    files = kept_files(request, job)
    if not reports_current(files, job):
        try:
            await space.runner.reports(job.id)
        except NotAvailable as reason:
            raise Refused(str(reason)) from None
    path = report_path(files, job, kind)
    if path is None or not path.is_file():
        raise Refused(
            "这个登记表没有标注后的原表（CSV 超过 20 万行、有问题的单元格超过 100 万个，"
            "或原文件无法再次读取），问题见 errors.xlsx",
            404,
        )
    stem = job.file_name.rsplit(".", 1)[0]
    names = {"annotated": f"annotated_{stem}.xlsx", "errors": f"errors_{stem}.xlsx",
             "results": f"results_{stem}.xlsx", "csv": f"results_{stem}.csv"}  # fmt: skip
    media = (
        "text/csv" if kind == "csv" else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    if request.method == "GET":  # a HEAD (a download manager looking first) downloads nothing
        space.store.audit(
            "下载", user=who.user, target=job.id, detail=names[kind], address=client_address(request)
        )
    return _attachment(str(path), names[kind], media)


#: Seconds a click on the QR codes waits for their ZIP before it answers with the page that follows it.
QR_READY_SECONDS = 3.0
#: Seconds between two looks of that page (each a GET of the ZIP's own address).
QR_REFRESH_SECONDS = 2
#: The cookie that tells a look of the page which build it has been waiting for (one per job: its path).
QR_COOKIE = "ehc_qr"


def _qr_cookie_path(job: Job) -> str:
    return f"/jobs/{job.id}/qrcodes.zip"


def _qr_page(request: Request, job: Job, build: QrBuild, failure: str | None) -> Response:
    """The page a click on the QR codes gets while they are fetched, or once fetching them failed."""
    space = workspace(request)
    files = JobFiles(space.settings.state_dir, job.id)
    done, total = downloads.qrcodes_progress(files, build.key) or (0, 0)
    rate = space.settings.submit.rate
    seconds_left = round((total - done) / rate) if total and rate > 0 else None
    response = render(
        request, "qrcodes.html",
        {"job": job, "failure": failure, "done": done, "total": total,
         "seconds_left": seconds_left, "refresh": QR_REFRESH_SECONDS},
        503 if failure else 200,
    )  # fmt: skip
    if failure:  # said once: the next click starts a new build
        response.delete_cookie(QR_COOKIE, path=_qr_cookie_path(job), httponly=True, samesite="lax")
    else:
        response.set_cookie(
            QR_COOKIE, build.key, max_age=int(QR_REMEMBERED_SECONDS), path=_qr_cookie_path(job),
            httponly=True, samesite="lax", secure=secure_cookies(request),
        )  # fmt: skip
    return response


async def qrcodes(request: Request) -> Response:
    """GET /jobs/{id}/qrcodes.zip: the QR codes of the residents this job enrolled.

    The first click starts fetching them in the background; when they take
    longer than :data:`QR_READY_SECONDS`, the answer is a page saying how far
    it has got, which looks again at the same address until the ZIP is
    handed over (or says why there is none).
    """
    who = viewer(request)
    job = centre_job(request, who)
    if not job.submitted_at or job.busy:
        raise Refused("此任务还没有提交完成，暂无二维码")
    files = kept_files(request, job)
    name = f"qrcodes_{job.file_name.rsplit('.', 1)[0]}.zip"
    if request.method != "GET":
        # A HEAD (a download manager or a link preview looking first) fetches no QR code: a GET may start
        # asking the platform for every enrolled resident's code under the run lock.
        looked = Response(headers=_disposition(name), media_type="application/zip")
        del looked.headers["content-length"]  # the size is not known until the codes are fetched
        return looked
    space = workspace(request)
    build = space.runner.qrcodes(job, request.cookies.get(QR_COOKIE, ""))
    if build is not None:
        await build.wait(QR_READY_SECONDS)
        if not build.done or build.failure() is not None:
            return _qr_page(request, job, build, build.failure())
    made = downloads.qrcodes_zip(files)
    if made is None or (build is not None and made.key != build.key):
        raise Refused("二维码文件已不在服务器上（可能刚被清理），请重新点击下载二维码", 503)
    space.store.audit(
        "下载二维码",
        user=who.user,
        target=job.id,
        detail=f"{made.written}/{made.wanted} 张",
        address=client_address(request),
    )
    handed = _attachment(str(files.qrcodes_zip), name, "application/zip")
    if QR_COOKIE in request.cookies:
        handed.delete_cookie(QR_COOKIE, path=_qr_cookie_path(job), httponly=True, samesite="lax")
    return handed


# --- account --------------------------------------------------------------------------------------


def password_page(request: Request) -> Response:
    """GET /account/password."""
    viewer(request)
    return render(request, "password.html", {"message": ""})


async def change_password(request: Request) -> Response:
    """POST /account/password: the current password, then the new one twice."""
    who = viewer(request)
    form = await read_form(request)
    if not carries_token(request, who, form):  # the passwords typed are not shown again
        return render(request, "password.html", {"message": STALE_ACTION}, 403)
    space = workspace(request)
    current, new, again = (str(form.get(k, ""))[:200] for k in ("current", "new", "again"))
    from pipeline.web.auth import hash_password

    try:
        await run_in_threadpool(space.auth.confirm_password, who.user, current, client_address(request))
        problem = "两次输入的新密码不一致" if new != again else password_problem(new, who.user.name)
    except LoginRefused as refused:  # a wrong current password counts as a failed login
        problem = str(refused)
    if problem:
        return render(request, "password.html", {"message": problem}, 400)
    space.store.set_password(who.user.id, await run_in_threadpool(hash_password, new))
    space.store.audit("修改密码", user=who.user, target=who.user.name, address=client_address(request))
    response = redirect(request, "/login", "password")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
