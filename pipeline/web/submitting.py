"""A submission from the workspace, in a process of its own: wait for the run lock, send, record.

It is ``ehc submit`` for one job: the same run lock (so it never runs beside
a nightly ``ehc run`` or another ``ehc submit``: while one of them holds the
lock the job waits, and its page says who holds it), the same journal
(a resident enrolled by any of them is never sent again) and the same rate
limit.  The register is read again and the clerk's edits applied, then
checked again: what is sent is what the grid shows.

Progress (counts by status, rate) is written into the job twice a second;
the page polls it.  A cancel from the page sets a flag the process watches:
no new call starts, calls in flight finish and are recorded.  SIGTERM (the
service stopping) does the same.  When it ends, the reports are written,
every row's final status goes into the job, and the job says how it ended.

Its own process keeps the sending threads away from the web server's
interpreter lock, so pages and dry runs never slow the rate down.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from pipeline.web import engine
from pipeline.web.checking import edits_frame, fault_sources, fault_tuples, row_tuples, said
from pipeline.web.jobfiles import JobFiles
from pipeline.web.reportfiles import write_reports, writing
from pipeline.web.shown import for_clerk
from pipeline.web.store import CANCELLED, STOPPED, SUBMITTED, SUBMITTING, WAITING, Store, now_text

#: Seconds between two tries of the run lock while another run holds it.
LOCK_RETRY_SECONDS = 2.0
#: What a clerk's job says while another run holds the lock (whose run it is, the clerk is not told).
MESSAGE_WAITING = "另一个提交或夜间导入正在进行，本任务排队等待，它结束后自动开始"
#: Seconds between two progress writes.
PROGRESS_SECONDS = 0.5
#: What a job stopped by the service (systemctl stop or restart: SIGTERM) says: nobody cancelled it.
MESSAGE_SERVICE_STOPPED = (
    "服务器停止，提交中断：已发送的已记录在提交日志中，不会重复发送；其余的行没有发送，可以再次提交"
)


class Progress:
    """Counts of a running submission, shared by the sending threads and the writer."""

    def __init__(self, limit: float) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.total = 0
        self.from_journal = 0
        self.started = 0.0
        self.limit = limit

    def planned(self, to_send: int, from_journal: int) -> None:
        """The plan: residents to send, and rows the journal answers."""
        with self._lock:
            self.total, self.from_journal, self.started = to_send, from_journal, time.time()

    def add(self, status: str) -> None:
        """One resident's outcome."""
        with self._lock:
            self.counts[status] += 1

    def snapshot(self) -> dict[str, Any]:
        """What the page shows."""
        with self._lock:
            done = sum(self.counts.values())
            elapsed = time.time() - self.started if self.started else 0.0
            return {
                "total": self.total, "done": done, "counts": dict(self.counts),
                "from_journal": self.from_journal, "started": self.started,
                "rate": done / elapsed if elapsed > 0 else 0.0, "limit": self.limit,
            }  # fmt: skip


def _watch(store: Store, job_id: str, stop: threading.Event, finished: threading.Event) -> None:
    """Set ``stop`` when the page asks for a cancel."""
    while not finished.wait(0.3):
        job = store.job_any(job_id)
        if job is None or job.cancel:
            stop.set()
            return


def _write_progress(store: Store, job_id: str, progress: Progress, finished: threading.Event) -> None:
    while not finished.wait(PROGRESS_SECONDS):
        store.update_job(job_id, sending=progress.snapshot())


def run_submission(settings: engine.Settings, job_id: str, *, own_process: bool = True) -> str:
    """Submit job ``job_id`` (already in state ``waiting``); return the state it ends in."""
    if own_process:
        engine.setup_logging(
            level=settings.logging.level, log_dir=settings.effective_log_dir,
            rotation=settings.logging.rotation, retention=settings.logging.retention,
            json=settings.logging.json,
        )  # fmt: skip
        engine.register_secret(settings.platform.app_secret)
    store = Store(settings.state_dir)
    stop, finished = threading.Event(), threading.Event()
    store.update_job(job_id, pid=os.getpid())
    watcher = threading.Thread(target=_watch, args=(store, job_id, stop, finished), daemon=True)
    watcher.start()
    try:
        return _run(store, settings, job_id, stop, finished)
    except Exception as error:  # the job must say it ended, whatever happened
        logger.error("网页提交 {} 意外中止（{}）", job_id, type(error).__name__)
        store.update_job(
            job_id, state=STOPPED, stage="", message="程序内部错误，提交已中止；已发送的已记录，不会重复发送"
        )
        return STOPPED
    finally:
        finished.set()
        store.close()


def _run(
    store: Store, settings: engine.Settings, job_id: str, stop: threading.Event, finished: threading.Event
) -> str:
    job = store.job_any(job_id)
    centre = store.centre(job.centre_id) if job else None
    if job is None or centre is None:
        return ""
    files = JobFiles(settings.state_dir, job_id)
    with ExitStack() as held:
        while True:
            if stop.is_set():
                store.update_job(job_id, state=CANCELLED, stage="", message="已取消：没有发送任何数据")
                return CANCELLED
            try:
                held.enter_context(engine.run_lock(settings.state_dir, f"ehc serve 提交 {job.file_name}"))
                break
            except engine.LockHeld:
                # The holder (another centre's file, the server's folders and process) is the operator's
                # to see, in the log; the clerk is told only that a run is going on.
                job_now = store.job_any(job_id)
                if job_now is not None and job_now.state != WAITING:
                    holder = engine.lock_holder(settings.state_dir) or "另一个 ehc 运行"
                    logger.info("网页提交 {} 等待运行锁：{}正在进行", job_id, holder)
                store.update_job(job_id, state=WAITING, stage="等待运行锁", message=MESSAGE_WAITING)
                stop.wait(LOCK_RETRY_SECONDS)
        store.update_job(
            job_id, state=SUBMITTING, stage="读取并检查数据", message="", submitted_at=now_text()
        )
        engine.preload()
        try:
            batch = engine.build_batch(
                files.upload(job.stored_name), job.aliases, edits_frame(store.edits(job_id)), settings,
                centre.org_code, file_name=job.file_name,
            )  # fmt: skip
        except engine.EhcError as error:
            store.update_job(job_id, state=STOPPED, stage="", message=f"无法提交：{said(error, files, job)}")
            return STOPPED
        if len(batch) != job.rows:
            store.update_job(job_id, state=STOPPED, stage="", message="文件与检查时不一致，请重新上传")
            return STOPPED
        progress = Progress(settings.submit.rate)
        writer = threading.Thread(
            target=_write_progress, args=(store, job_id, progress, finished), daemon=True
        )
        writer.start()
        store.update_job(job_id, stage="发送")
        try:
            result = engine.submit(
                batch, settings, stop=stop, on_plan=progress.planned, on_outcome=progress.add
            )
        except engine.EhcError as error:  # nothing was sent: the credentials or the platform refused first
            message = f"无法提交，没有发送任何数据：{platform_fault(error)}"
            store.update_job(job_id, state=STOPPED, stage="", message=message, sending=progress.snapshot())
            return STOPPED
        store.update_job(job_id, stage="写报告", sending=progress.snapshot())
        state, message = SUBMITTED, ""
        if result.fatal is not None:
            state, message = (
                STOPPED,
                f"提交中止，已发送的已记录，未发送的行标为发送失败：{platform_fault(result.fatal)}",
            )
        elif result.interrupted:
            # A stop is the clerk's cancel only if the page asked for one; otherwise a signal stopped it.
            asked = store.job_any(job_id)
            if asked is not None and asked.cancel:
                state, message = CANCELLED, "已取消：已发送的已记录，其余未发送"
            else:
                state, message = STOPPED, MESSAGE_SERVICE_STOPPED
        _record(store, files, job_id, batch, state, message, job.tables, progress)
    logger.info("网页提交 {} 结束：{}", job_id, state)
    return state


def platform_fault(error: engine.EhcError) -> str:
    """What a clerk is told of a fault that stops a submission: what happened and what to do, in their terms.

    The operator's version (which setting, which address) goes to the log.
    """
    logger.error("网页提交因平台或配置中止：{}", str(error))
    if isinstance(error, engine.AuthenticationRefused):
        code = f"（结果代码 {error.result_code}）" if error.result_code is not None else ""
        return f"电子健康卡平台不接受本服务器的应用凭据{code}。请联系运维人员核对配置后再提交"
    if isinstance(error, engine.ConfigError):
        return "本服务器的平台配置不完整或有误。请联系运维人员"
    if isinstance(error, engine.PlatformError):
        return "暂时连不上电子健康卡平台。请稍后再次提交（已办理的不会重复发送）；一直连不上请联系运维人员"
    return for_clerk(str(error))


def _record(
    store: Store,
    files: JobFiles,
    job_id: str,
    batch: engine.Batch,
    state: str,
    message: str,
    tables: list[dict[str, Any]],
    progress: Progress,
) -> None:
    """Record every row's final status and the job's state, and write the reports.

    Both under the job's report lock: a download the new state lets through
    waits for these reports instead of writing the same folder at once.
    """
    offsets = batch.table_rows
    faults = batch.faults
    rows = batch.rows
    with writing(files):
        store.replace_rows(
            job_id,
            row_tuples(rows["source_row"].to_numpy(dtype=np.int64), batch.outcome, rows["sfzhm"].astype(str)),
            fault_tuples(faults, fault_sources(faults, tables, offsets)),
            state=state,
            row_count=len(rows),
        )
        store.update_job(job_id, message=message, sending=progress.snapshot())
        job = store.job_any(job_id)
        if job is not None:
            write_reports(batch, files, job.version, submitted=True)


def process_main(settings: engine.Settings, job_id: str) -> None:
    """Entry point of the submission process."""
    run_submission(settings, job_id)


def job_folder(settings: engine.Settings, job_id: str) -> Path:
    """The folder of a job (for callers that only have settings)."""
    return JobFiles(settings.state_dir, job_id).folder
