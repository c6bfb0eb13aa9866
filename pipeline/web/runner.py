"""The server's workers: a small process pool for dry runs and reports, a process per submission.

Dry runs are CPU-bound (reading, pandas, pandera): they run in a pool of
worker processes (``[web] check_workers``, at a lower CPU priority), so a
page never waits for one and twenty clerks uploading at once queue for the
pool rather than for the interpreter lock of the server.  Each submission
runs in a process of its own (:mod:`pipeline.web.submitting`) and keeps its
rate whatever the pool is doing.

Uploads wait here, one queue per centre, and are handed to the pool no more
than it has workers, taking the centres in turn: a centre that uploads forty
registers has one checked at a time like everyone else, and a clerk who
downloads a report waits at most for the dry runs already running.

A worker that dies (the kernel's out-of-memory killer, a crash) breaks a
process pool for good; the runner starts a new one and checks again the
uploads that were running, once: one that kills its worker twice is
marked unreadable.  A submission process that dies without saying how it
ended (killed), whether this server started it or a previous one did, is
noticed within seconds: the job is marked stopped, and
each of its rows takes what the journal knows of it (enrolled, rejected,
or unknown and so to be sent again).

At start-up the runner takes up what a previous server left: uploads that
were queued or being checked are checked again; submissions whose process
is gone are marked stopped the same way.

A job's QR code ZIP is built on the pool too, in the background: a build
asks the platform for every enrolled resident's code at the submission's
rate, minutes for a large job, longer than a browser or the proxy in front
waits for one answer.  One build per job runs at a time; a click that comes
while it runs (a second one, a colleague's) follows that build.

``processes=False`` runs the same work on threads of the server itself:
for tests that drive the app in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger

from pipeline.web import checking, downloads, engine, submitting
from pipeline.web.jobfiles import JobFiles
from pipeline.web.store import (
    CHECK_QUEUE_STATES,
    CHECKING,
    QUEUED,
    STOPPED,
    SUBMITTING,
    UNREADABLE,
    WAITING,
    Job,
    Store,
)

T = TypeVar("T")

#: CPU priority of the dry-run workers (added niceness): pages and submissions come first.
WORKER_NICENESS = 10
#: Seconds between two looks at the submission processes.
WATCH_SECONDS = 1.0
#: Times an upload is checked again after its worker died under it.
CHECK_RETRIES = 1

STOPPED_BY_RESTART = "服务重启，提交中断：已发送的已记录在提交日志中，不会重复发送；可以再次提交其余的行"
STOPPED_BY_CRASH = (
    "提交进程意外结束（可能是服务器内存不足或被强制结束）：已发送的已记录在提交日志中，不会重复发送；"
    "各行的结果已按提交日志更新，可以再次提交其余的行"
)
#: Statuses of rows a submission may have sent before it died.
_SENT_MAYBE = frozenset({engine.STATUS_VALID, engine.STATUS_FAILED, engine.STATUS_REJECTED})
WORKER_DIED = "检查该文件时检查程序意外结束（文件可能过大或已损坏）。请用 Excel 打开后另存为 .xlsx 再上传"
#: Seconds a finished QR code build is remembered: the pages that waited for it learn how it ended.
QR_REMEMBERED_SECONDS = 3600.0
QR_CANCELLED = "服务器正在停止或重启，二维码没有获取完。请稍后再点击下载二维码"
QR_BROKEN = "获取二维码时程序内部错误。请稍后再点击下载二维码；仍然如此请联系运维人员"


@dataclass
class QrBuild:
    """One build of a job's QR code ZIP, running in the background; ``key`` names it to the pages."""

    key: str
    future: Future[downloads.QrZip]
    finished: float | None = field(default=None)

    @property
    def done(self) -> bool:
        """Whether the build has ended (made its ZIP or failed)."""
        return self.future.done()

    def failure(self) -> str | None:
        """Why the build failed, in the clerk's words; None while it runs or once it made its ZIP."""
        if not self.future.done():
            return None
        if self.future.cancelled():
            return QR_CANCELLED
        error = self.future.exception()
        if error is None:
            return None
        if isinstance(error, downloads.NotAvailable):
            return str(error)
        return QR_BROKEN

    async def wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the build to end; the build goes on whatever becomes of the waiter."""
        if seconds <= 0 or self.future.done():
            return
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not ended.done():
                ended.set_result(None)

        def wake(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop of a request that has gone
                loop.call_soon_threadsafe(settle)

        self.future.add_done_callback(wake)
        await asyncio.wait([ended], timeout=seconds)


def _alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet waited for, does not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (not Linux): the signal test is all there is
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


class Runner:
    """Runs dry runs, report writing, QR code builds and submissions away from the request handlers."""

    def __init__(self, settings: engine.Settings, store: Store, *, processes: bool = True) -> None:
        self.settings = settings
        self.store = store
        self.processes = processes
        self.workers = max(1, int(settings.web.check_workers))
        self._pool: Executor | None = None
        self._submissions: dict[str, Any] = {}
        self._report_locks: dict[str, asyncio.Lock] = {}
        self._qr_builds: dict[str, QrBuild] = {}  # job -> its QR code build running, or the last one
        self._lock = threading.RLock()
        self._waiting: dict[int, deque[str]] = {}  # centre -> its uploads, in the order they came
        self._served: dict[int, int] = {}  # centre -> the turn its last upload went to the pool
        self._turn = 0
        self._retry: deque[str] = deque()  # uploads whose worker died under them: first in line
        self._checking: dict[str, Future[str]] = {}
        self._tries: dict[str, int] = {}
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the pool (warming its workers up) and take up what a previous server left."""
        self._closed.clear()
        self._pool = self._new_pool()
        self.recover()
        self._watcher = threading.Thread(target=self._watch, name="ehc-web-watch", daemon=True)
        self._watcher.start()

    def _new_pool(self) -> Executor:
        if not self.processes:
            return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ehc-web-check")
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=checking.worker_setup,
            initargs=(self.settings, WORKER_NICENESS),
        )
        for _ in range(self.workers):  # spawn and import now, not on the first upload
            pool.submit(os.getpid)
        return pool

    def close(self) -> None:
        """Stop the pool; running submissions carry on in their processes and finish on their own."""
        self._closed.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def recover(self) -> None:
        """Check again the uploads a previous server left queued; mark orphaned submissions stopped."""
        for job in self.store.jobs_in([QUEUED, CHECKING]):
            self.store.update_job(job.id, state=QUEUED, stage="排队等待检查", progress=0.0)
            self.check(job.id)
        for job in self.store.jobs_in([WAITING, SUBMITTING]):
            if job.id not in self._submissions and not _alive(job.pid):
                self._stopped(job.id, STOPPED_BY_RESTART)

    # -- the pool --------------------------------------------------------------------------------

    def _pool_now(self) -> Executor:
        with self._lock:
            if self._pool is None:
                raise RuntimeError("the runner is not started")
            return self._pool

    def _renew(self, broken: Executor) -> None:
        """Replace a pool a dead worker broke (once, whoever notices first)."""
        with self._lock:
            if self._pool is not broken or self._closed.is_set():
                return
            logger.error("网页检查进程意外结束，已重新启动检查进程")
            self._pool = self._new_pool()
        broken.shutdown(wait=False, cancel_futures=True)

    def _submit(self, function: Callable[..., T], *args: Any) -> tuple[Executor, Future[T]]:
        """``function(*args)`` on the pool, and the pool it went to (a broken pool is renewed first)."""
        pool = self._pool_now()
        try:
            return pool, pool.submit(function, *args)
        except BrokenProcessPool:
            self._renew(pool)
            pool = self._pool_now()
            return pool, pool.submit(function, *args)

    # -- dry runs, fairly --------------------------------------------------------------------------

    def check(self, job_id: str) -> None:
        """Queue the dry run of an uploaded job behind its centre's other uploads."""
        job = self.store.job_any(job_id)
        if job is None:
            return
        with self._lock:
            self._waiting.setdefault(job.centre_id, deque()).append(job_id)
        self._dispatch()

    def waiting(self, centre_id: int) -> int:
        """Uploads of a centre waiting for or in their dry run."""
        return self.store.jobs_in_count(centre_id, CHECK_QUEUE_STATES)

    def _dispatch(self) -> None:
        """Hand waiting uploads to the pool while it has a free worker, one centre after another."""
        with self._lock:
            while len(self._checking) < self.workers and (self._retry or self._waiting):
                if self._retry:
                    job_id = self._retry.popleft()
                else:
                    # The centre served longest ago (or never) goes first; ties by who came first.
                    centre_id = min(self._waiting, key=lambda c: self._served.get(c, -1))
                    queue = self._waiting[centre_id]
                    job_id = queue.popleft()
                    if not queue:
                        del self._waiting[centre_id]
                    self._turn += 1
                    self._served[centre_id] = self._turn
                pool, future = self._submit(
                    checking.check_job, self.settings.state_dir, job_id, self.settings
                )
                self._checking[job_id] = future
                future.add_done_callback(functools.partial(self._checked, job_id, pool))

    def _checked(self, job_id: str, pool: Executor, future: Future[str]) -> None:
        with self._lock:
            self._checking.pop(job_id, None)
        error = None if future.cancelled() else future.exception()
        if isinstance(error, BrokenProcessPool):
            self._renew(pool)
            tries = self._tries.get(job_id, 0)
            if tries < CHECK_RETRIES and not self._closed.is_set():
                self._tries[job_id] = tries + 1
                self.store.update_job(job_id, state=QUEUED, stage="排队等待检查", progress=0.0)
                with self._lock:
                    self._retry.append(job_id)
            else:
                self._tries.pop(job_id, None)
                logger.error("网页上传 {} 两次检查时检查进程都意外结束", job_id)
                self.store.update_job(job_id, state=UNREADABLE, stage="", message=WORKER_DIED)
        elif error is not None:
            logger.error("网页上传 {} 检查失败（{}）", job_id, type(error).__name__)
            self.store.update_job(
                job_id, state=UNREADABLE, stage="", message="检查时程序内部错误，请重新上传或联系运维人员"
            )
        else:
            self._tries.pop(job_id, None)
        if not self._closed.is_set():
            self._dispatch()

    # -- reports and QR codes --------------------------------------------------------------------

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on the pool and wait for it without holding up the event loop.

        A pool broken under it (a worker died) is renewed and the work tried once more.
        """
        pool, future = self._submit(function, *args)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._renew(pool)
            return await asyncio.wrap_future(self._submit(function, *args)[1])

    async def reports(self, job_id: str) -> int:
        """Bring the job's reports up to date (one writer per job at a time)."""
        lock = self._report_locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            return await self.run(downloads.build_reports, self.settings, job_id)

    def _background(self, function: Callable[..., T], *args: Any) -> Future[T]:
        """``function(*args)`` on the pool, nobody waiting for it; a pool broken under it is renewed, once."""
        outcome: Future[T] = Future()

        def attempt(tries_left: int) -> None:
            try:
                pool, future = self._submit(function, *args)
            except Exception as error:  # the runner closed, or a pool that cannot be renewed
                outcome.set_exception(error)
                return

            def ended(future: Future[T]) -> None:
                if future.cancelled():
                    outcome.cancel()
                    return
                error = future.exception()
                if isinstance(error, BrokenProcessPool) and tries_left and not self._closed.is_set():
                    self._renew(pool)
                    attempt(tries_left - 1)
                elif error is not None:
                    outcome.set_exception(error)
                else:
                    outcome.set_result(future.result())

            future.add_done_callback(ended)

        attempt(1)
        return outcome

    def qrcodes(self, job: Job, waited_for: str = "") -> QrBuild | None:
        """The QR code build a request for the job's ZIP is to follow, started if need be.

        The build running is joined: every code is asked of the platform once,
        whoever clicks.  A finished build is followed by the page that waited
        for it (``waited_for`` is its key), to hand over its ZIP or say why
        there is none.  None: the ZIP on disk was built since the job last
        changed and is handed over again without asking the platform.
        """
        files = JobFiles(self.settings.state_dir, job.id)
        with self._lock:
            self._forget_qrcodes()
            last = self._qr_builds.get(job.id)
            if last is not None and not last.done:
                return last
            if last is not None and waited_for and last.key == waited_for:
                if last.failure() is not None:
                    return last
                made = downloads.qrcodes_zip(files)
                if made is not None and made.key == last.key and made.version == job.version:
                    return last
            if downloads.qrcodes_current(files, job) is not None:
                return None
            key = secrets.token_urlsafe(12)
            files.qrcodes_progress.unlink(missing_ok=True)
            build = QrBuild(key, self._background(downloads.build_qrcodes, self.settings, job.id, key))
            build.future.add_done_callback(functools.partial(self._qrcodes_ended, job.id, build))
            self._qr_builds[job.id] = build
            return build

    @staticmethod
    def _qrcodes_ended(job_id: str, build: QrBuild, future: Future[downloads.QrZip]) -> None:
        build.finished = time.monotonic()
        error = None if future.cancelled() else future.exception()
        if error is not None and not isinstance(error, downloads.NotAvailable):
            logger.error("网页任务 {} 的二维码获取时程序内部错误（{}）", job_id, type(error).__name__)

    def _forget_qrcodes(self) -> None:
        """Forget the builds that ended long ago (the caller holds the lock)."""
        now = time.monotonic()
        for job_id, build in list(self._qr_builds.items()):
            if build.finished is not None and now - build.finished > QR_REMEMBERED_SECONDS:
                del self._qr_builds[job_id]

    # -- submissions -----------------------------------------------------------------------------

    def submit(self, job_id: str) -> None:
        """Start the submission of a job already moved to ``waiting``."""
        with self._lock:
            if self.processes:
                process = multiprocessing.get_context("spawn").Process(
                    target=submitting.process_main, args=(self.settings, job_id), name=f"ehc-submit-{job_id}"
                )
                process.start()
                self._submissions[job_id] = process
            else:
                thread = threading.Thread(
                    target=submitting.run_submission, args=(self.settings, job_id),
                    kwargs={"own_process": False}, name=f"ehc-submit-{job_id}", daemon=True,
                )  # fmt: skip
                thread.start()
                self._submissions[job_id] = thread

    def _watch(self) -> None:
        """Notice, every :data:`WATCH_SECONDS`, a submission whose process ended without saying how."""
        while not self._closed.wait(WATCH_SECONDS):
            try:
                self.reap()
            except Exception as error:  # the watcher must outlive any one look
                logger.error("网页提交监视出错（{}）", type(error).__name__)

    def reap(self) -> None:
        """Forget finished submissions; mark stopped any whose process died leaving its job running.

        That is a process this runner started, or one a previous server
        started (its job carries the process id) that outlived it.
        """
        with self._lock:
            ended = [(job_id, w) for job_id, w in self._submissions.items() if not w.is_alive()]
            for job_id, _ in ended:
                del self._submissions[job_id]
            ours = set(self._submissions)
        for running in self.store.jobs_in([WAITING, SUBMITTING]):
            if running.id in ours or running.id in dict(ended) or not running.pid or _alive(running.pid):
                continue
            logger.error("网页提交 {} 的进程（上次启动的服务留下的）意外结束", running.id)
            self._stopped(running.id, STOPPED_BY_CRASH)
        for job_id, worker in ended:
            if hasattr(worker, "join"):
                worker.join(0)
            job = self.store.job_any(job_id)
            if job is not None and job.state in (WAITING, SUBMITTING):
                logger.error(
                    "网页提交 {} 的进程意外结束（退出码 {}）", job_id, getattr(worker, "exitcode", "")
                )
                self._stopped(job_id, STOPPED_BY_CRASH)

    def _stopped(self, job_id: str, message: str) -> None:
        """Mark a submission that can no longer say how it ended: stopped, rows as the journal knows them."""
        rows = [row for row in self.store.all_rows(job_id) if row.status in _SENT_MAYBE and row.sfzhm]
        job = self.store.job_any(job_id)
        centre = self.store.centre(job.centre_id) if job is not None else None
        org_code = centre.org_code if centre is not None else ""
        known = engine.journal_outcomes(self.settings, [row.sfzhm for row in rows], org_code)
        outcomes = [
            (str(k.status), str(k.result_code), str(k.message), str(k.ehealthCardId), str(k.virtualCardNum),
             row.row_id)
            for row in rows
            if row.sfzhm in known.index
            for k in [known.loc[row.sfzhm]]
        ]  # fmt: skip
        self.store.set_outcomes(job_id, outcomes)
        self.store.update_job(job_id, state=STOPPED, stage="", message=message)

    def wait_submissions(self, timeout: float = 60.0) -> None:
        """Wait for running submissions to end (tests and shutdown)."""
        for worker in list(self._submissions.values()):
            worker.join(timeout)
