"""The server's workers: a small process pool for dry runs and reports, a process per submission.

Dry runs are CPU-bound (reading, pandas, pandera): they run in a pool of
worker processes (``[web] check_workers``, at a lower CPU priority), so a
page never waits for one and twenty clerks uploading at once queue for the
pool rather than for the interpreter lock of the server.  Each submission
runs in a process of its own (:mod:`pipeline.web.submitting`) and keeps its
rate whatever the pool is doing.

At start-up the runner takes up what a previous server left: uploads that
were queued or being checked are checked again; submissions whose process
is gone are marked stopped (what they sent is in the journal, and a new
submission of the job sends only the rest).

``processes=False`` runs the same work on threads of the server itself:
for tests that drive the app in-process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

from loguru import logger

from pipeline.web import checking, downloads, engine, submitting
from pipeline.web.store import CHECKING, QUEUED, STOPPED, SUBMITTING, UNREADABLE, WAITING, Store

T = TypeVar("T")

#: CPU priority of the dry-run workers (added niceness): pages and submissions come first.
WORKER_NICENESS = 10


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Runner:
    """Runs dry runs, report writing and submissions away from the request handlers."""

    def __init__(self, settings: engine.Settings, store: Store, *, processes: bool = True) -> None:
        self.settings = settings
        self.store = store
        self.processes = processes
        self._pool: Executor | None = None
        self._submissions: dict[str, Any] = {}
        self._report_locks: dict[str, asyncio.Lock] = {}
        self._lock = threading.Lock()

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the pool (warming its workers up) and take up what a previous server left."""
        workers = max(1, int(self.settings.web.check_workers))
        if self.processes:
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=checking.worker_setup,
                initargs=(self.settings, WORKER_NICENESS),
            )
            for _ in range(workers):  # spawn and import now, not on the first upload
                self._pool.submit(os.getpid)
        else:
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ehc-web-check")
        self.recover()

    def close(self) -> None:
        """Stop the pool; running submissions carry on in their processes and finish on their own."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def recover(self) -> None:
        """Check again the uploads a previous server left queued; mark orphaned submissions stopped."""
        for job in self.store.jobs_in([QUEUED, CHECKING]):
            self.store.update_job(job.id, state=QUEUED, stage="排队等待检查", progress=0.0)
            self.check(job.id)
        for job in self.store.jobs_in([WAITING, SUBMITTING]):
            if job.id not in self._submissions and not _alive(job.pid):
                self.store.update_job(
                    job.id, state=STOPPED, stage="",
                    message="服务重启，提交中断：已发送的已记录在提交日志中，不会重复发送；可以再次提交其余的行",
                )  # fmt: skip

    # -- work --------------------------------------------------------------------------------------

    def _submit(self, function: Callable[..., T], *args: Any) -> Future[T]:
        if self._pool is None:
            raise RuntimeError("the runner is not started")
        return self._pool.submit(function, *args)

    def check(self, job_id: str) -> None:
        """Queue the dry run of an uploaded job."""
        future = self._submit(checking.check_job, self.settings.state_dir, job_id, self.settings)
        future.add_done_callback(lambda done: self._checked(job_id, done))

    def _checked(self, job_id: str, future: Future[str]) -> None:
        error = future.exception()
        if error is not None:
            logger.error("网页上传 {} 检查失败（{}）", job_id, type(error).__name__)
            self.store.update_job(
                job_id, state=UNREADABLE, stage="", message="检查时程序内部错误，请重新上传或联系运维人员"
            )

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on the pool and wait for it without holding up the event loop."""
        return await asyncio.wrap_future(self._submit(function, *args))

    async def reports(self, job_id: str) -> int:
        """Bring the job's reports up to date (one writer per job at a time)."""
        lock = self._report_locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            return await self.run(downloads.build_reports, self.settings, job_id)

    async def qrcodes(self, job_id: str) -> tuple[int, int]:
        """Build the job's QR code ZIP."""
        lock = self._report_locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            return await self.run(downloads.build_qrcodes, self.settings, job_id)

    def submit(self, job_id: str) -> None:
        """Start the submission of a job already moved to ``waiting``."""
        with self._lock:
            self._reap()
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

    def _reap(self) -> None:
        for job_id, worker in list(self._submissions.items()):
            if not worker.is_alive():
                if hasattr(worker, "join"):
                    worker.join(0)
                del self._submissions[job_id]

    def wait_submissions(self, timeout: float = 60.0) -> None:
        """Wait for running submissions to end (tests and shutdown)."""
        for worker in list(self._submissions.values()):
            worker.join(timeout)
