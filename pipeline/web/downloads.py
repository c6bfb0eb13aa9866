"""The files a clerk downloads: the reports of a job as it stands now, and its QR codes.

Reports are written when first asked for (and again only after the job
changed: an edit, a submission), by a worker process, with the library's
own report writers: results.xlsx, errors.xlsx, results.csv and the clerk's
own workbook annotated, with the edits applied.  They show the job as the
pages do: the faults and statuses in the database (a submission's outcomes
included), the values as edited.

QR codes are fetched with ``getImg`` through the platform client for the
residents the job enrolled, under the run lock (the platform's rate limit
is one budget), and handed over as one ZIP of PNG files.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from datetime import date
from pathlib import Path

import pandas as pd

from pipeline.web import engine
from pipeline.web.checking import edits_frame
from pipeline.web.jobfiles import JobFiles
from pipeline.web.reportfiles import reports_current, write_reports, writing
from pipeline.web.shown import for_clerk
from pipeline.web.store import Job, Store

FAULT_FRAME_COLUMNS = ("row_id", "field", "code", "severity", "message")


class NotAvailable(Exception):
    """A download that cannot be made now; ``str()`` is the Chinese reason."""


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


def build_qrcodes(settings: engine.Settings, job_id: str) -> tuple[int, int]:
    """The job's QR code ZIP (in a worker process): (pictures, residents wanted)."""
    build_reports(settings, job_id)
    files = JobFiles(settings.state_dir, job_id)
    folder = Path(tempfile.mkdtemp(prefix="qr-", dir=files.folder))
    try:
        try:
            with engine.run_lock(settings.state_dir, "ehc serve 二维码"):
                written, wanted = engine.export_qrcodes(files.reports, folder, settings)
        except engine.LockHeld:
            raise NotAvailable("正在提交或夜间导入，暂时不能获取二维码，请稍后再试") from None
        except engine.EhcError as error:
            raise NotAvailable(f"无法获取二维码：{for_clerk(str(error), (files.folder, ''))}") from None
        partial = files.qrcodes_zip.with_name(f".{files.qrcodes_zip.name}.part")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
            for path in sorted(folder.iterdir()):
                if path.suffix in (".png", ".csv"):
                    archive.write(path, path.name)
        partial.replace(files.qrcodes_zip)
        return len(written), wanted
    finally:
        shutil.rmtree(folder, ignore_errors=True)
