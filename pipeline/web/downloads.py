"""The files a clerk downloads: the reports of a job as it stands now, and its QR codes.

Reports are written when first asked for (and again only after the job
changed: an edit, a submission), by a worker process, with the library's
own report writers: results.xlsx, errors.xlsx, results.csv and the clerk's
own workbook annotated, with the edits applied.  They show the job as the
pages do: the faults and statuses in the database (a submission's outcomes
included), the values as edited.

QR codes are fetched with ``getImg`` through the platform client for the
residents the job enrolled, under the run lock (the platform's rate limit
is one budget), and handed over as one ZIP of PNG files.  That takes
minutes for a large job, so it runs in the background
(:meth:`pipeline.web.runner.Runner.qrcodes`): the build writes how far it
has got beside the ZIP for the page that waits, and once done, which
version of the job the ZIP shows, so that it is handed over again without
asking the platform twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import pandas as pd
from loguru import logger

from pipeline.web import engine
from pipeline.web.checking import edits_frame
from pipeline.web.jobfiles import JobFiles
from pipeline.web.reportfiles import reports_current, write_reports, writing
from pipeline.web.shown import for_clerk
from pipeline.web.store import Job, Store

FAULT_FRAME_COLUMNS = ("row_id", "field", "code", "severity", "message")

#: Seconds a finished QR code ZIP is handed over again without asking the platform: long enough for
#: the page that waited for it and a colleague's click, short enough that dynamic codes are fresh.
QR_REUSE_SECONDS = 600.0

#: Why QR codes cannot be fetched while another run holds the lock (whose, the clerk is not told).
QR_LOCK_HELD = (
    "另一个提交、夜间导入或二维码下载正在进行，暂时不能获取二维码。请几分钟后再点击下载二维码"
)
QR_PLATFORM_DOWN = (
    "暂时连不上电子健康卡平台，二维码没有获取完。请稍后再点击下载二维码；一直连不上请联系运维人员"
)
QR_REFUSED = "电子健康卡平台不接受本服务器的应用凭据{code}，无法获取二维码。请联系运维人员核对配置"
QR_CONFIG = "本服务器的平台配置不完整或有误，无法获取二维码。请联系运维人员"


class NotAvailable(Exception):
    """A download that cannot be made now; ``str()`` is the Chinese reason."""


@dataclass(frozen=True)
class QrZip:
    """A job's QR code ZIP as built: by which build, for which version of the job, what it holds."""

    key: str
    version: int
    written: int
    wanted: int
    #: residents without a picture whom another build may give one (getImg failed for them)
    retryable: int
    #: when it was built (seconds since the epoch): the codes are dynamic, and are fetched anew once old
    made_at: float = 0.0


def qrcodes_zip(files: JobFiles) -> QrZip | None:
    """What the job's QR code ZIP on disk is (None: there is none, or it is not known what it shows)."""
    try:
        made = QrZip(**json.loads(files.qrcodes_made.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return made if files.qrcodes_zip.is_file() else None


def qrcodes_current(files: JobFiles, job: Job) -> QrZip | None:
    """The job's QR code ZIP, if it can be handed over again without asking the platform.

    That is one built since the job last changed, less than
    :data:`QR_REUSE_SECONDS` ago, in which every resident whose card ids are
    known has a picture: one with pictures missing because getImg failed is
    fetched again at the next click.  The codes are of type 0, dynamic, and
    the interface document does not say how long one stays valid: a click
    well after the build fetches them anew rather than hand over old ones.
    """
    made = qrcodes_zip(files)
    if made is None or made.version != job.version or made.retryable:
        return None
    return made if made.made_at <= time.time() < made.made_at + QR_REUSE_SECONDS else None


def qrcodes_progress(files: JobFiles, key: str) -> tuple[int, int] | None:
    """(residents done, residents wanted) of build ``key``; None before it knows who is wanted."""
    try:
        found = json.loads(files.qrcodes_progress.read_text(encoding="utf-8"))
        if found.get("key") == key:
            return int(found["done"]), int(found["total"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


def _write_json(path: Path, value: dict[str, object]) -> None:
    """``value`` as ``path``, written aside and renamed: a reader never sees half of it."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    partial.write_text(json.dumps(value), encoding="utf-8")
    partial.replace(path)


class _Progress:
    """Writes how far build ``key`` has got, for the page that waits (a lost write only shows less)."""

    def __init__(self, files: JobFiles, key: str) -> None:
        self.path = files.qrcodes_progress
        self.key = key

    def __call__(self, done: int, total: int) -> None:
        with contextlib.suppress(OSError):
            _write_json(self.path, {"key": self.key, "done": done, "total": total})


def batch_from_store(store: Store, job: Job, settings: engine.Settings, org_code: str) -> engine.Batch:
    """The job as a batch: the register read again, edits applied, faults and statuses from the database."""
    files = JobFiles(settings.state_dir, job.id)
    edits = edits_frame(store.edits(job.id))
    batch = engine.build_batch(
        files.upload(job.stored_name), job.aliases, edits, settings, org_code,
        file_name=job.file_name, today=date.today(),
    )  # fmt: skip
    if len(batch) != job.rows:
        raise NotAvailable("文件与检查时不一致，请重新上传")
    faults = pd.DataFrame(
        [(r, f, c, s, m) for r, _, f, _, c, s, m in store.faults_of(job.id)],
        columns=list(FAULT_FRAME_COLUMNS),
    ).astype({"row_id": "int64", "code": "int64"})
    rows = store.all_rows(job.id)
    outcome = pd.DataFrame(
        {
            "status": [r.status for r in rows],
            "result_code": [r.result_code for r in rows],
            "message": [r.message for r in rows],
            "ehealthCardId": [r.card_id for r in rows],
            "virtualCardNum": [r.virtual_num for r in rows],
        },
        index=pd.Index([r.row_id for r in rows]),
    )
    batch.faults, batch.outcome = faults, outcome.reindex(batch.rows.index)
    return batch


def build_reports(settings: engine.Settings, job_id: str) -> int:
    """Write the job's reports if they are not current (in a worker process); return the version shown."""
    store = Store(settings.state_dir)
    try:
        job = store.job_any(job_id)
        centre = store.centre(job.centre_id) if job else None
        if job is None or centre is None:
            raise NotAvailable("没有这个任务")
        files = JobFiles(settings.state_dir, job_id)
        if reports_current(files, job):
            return job.version
        if job.rows == 0:
            raise NotAvailable("此任务还没有检查结果")
        with writing(files):
            job = store.job_any(job_id) or job  # as it is once the other writer (if any) is done
            if reports_current(files, job):
                return job.version
            batch = batch_from_store(store, job, settings, centre.org_code)
            write_reports(batch, files, job.version, submitted=bool(job.submitted_at))
        return job.version
    finally:
        store.close()


def _platform_fault(error: engine.EhcError, files: JobFiles) -> str:
    """Why the QR codes could not be fetched, in the clerk's terms (the operator's version is in the log)."""
    if isinstance(error, engine.AuthenticationRefused):
        code = f"（结果代码 {error.result_code}）" if error.result_code is not None else ""
        return QR_REFUSED.format(code=code)
    if isinstance(error, engine.PlatformError):
        return QR_PLATFORM_DOWN
    if isinstance(error, engine.ConfigError):
        return QR_CONFIG
    said = for_clerk(str(error), (files.folder, "")).rstrip("。")
    return f"无法获取二维码：{said}。请稍后再点击下载二维码；仍然如此请联系运维人员"


def build_qrcodes(settings: engine.Settings, job_id: str, key: str) -> QrZip:
    """Build ``key`` of the job's QR code ZIP (in a worker process); :class:`NotAvailable` says why not."""
    files = JobFiles(settings.state_dir, job_id)
    for left in files.folder.glob("qr-*"):  # what a build cut short by a server stopping left
        shutil.rmtree(left, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix="qr-", dir=files.folder))
    try:
        try:
            version = build_reports(settings, job_id)
            with engine.run_lock(settings.state_dir, "ehc serve 二维码"):
                written, wanted, retryable = engine.export_qrcodes(
                    files.reports, folder, settings, on_progress=_Progress(files, key)
                )
        except engine.LockHeld:
            raise NotAvailable(QR_LOCK_HELD) from None
        except engine.EhcError as error:
            logger.error("网页获取二维码（任务 {}）失败：{}", job_id, str(error))
            raise NotAvailable(_platform_fault(error, files)) from None
        partial = files.qrcodes_zip.with_name(f".{files.qrcodes_zip.name}.part")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
            for path in sorted(folder.iterdir()):
                if path.suffix in (".png", ".csv"):
                    archive.write(path, path.name)
        made = QrZip(key, version, written, wanted, retryable, made_at=time.time())
        files.qrcodes_made.unlink(missing_ok=True)  # never the new ZIP under the old one's description
        partial.replace(files.qrcodes_zip)
        _write_json(files.qrcodes_made, asdict(made))
        return made
    finally:
        shutil.rmtree(folder, ignore_errors=True)
