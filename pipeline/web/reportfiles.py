"""A job's report files as the workspace hands them out, and which version of the job they show.

The library's writers write them, as ``ehc validate`` and ``ehc submit`` do
(no cell of any of them is a live formula, ``results.csv`` included); a
marker file says which version of the job the folder shows, so a download
after an edit or a submission writes them again.

One writer at a time per job: a submission process finishing its job and a
clerk's download right after it would otherwise write the same folder at
once.  The lock is a file lock beside the reports, so it holds between the
server's threads and its worker and submission processes alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from pipeline.web import engine
from pipeline.web.jobfiles import JobFiles
from pipeline.web.shown import in_page_words
from pipeline.web.store import Job

VERSION_FILE = ".version"
LOCK_FILE = ".writing.lock"


@contextmanager
def writing(files: JobFiles) -> Iterator[None]:
    """Hold the job's report folder for writing (waiting for another writer to finish)."""
    files.reports.mkdir(parents=True, exist_ok=True)
    with FileLock(str(files.reports / LOCK_FILE), mode=0o600, thread_local=False):
        yield


def write_reports(batch: engine.Batch, files: JobFiles, version: int, *, submitted: bool) -> None:
    """The job's reports as the library writes them, advice in the page's words, and the version they show.

    The caller holds :func:`writing`.
    """
    worded = dataclasses.replace(
        batch,
        outcome=batch.outcome.assign(message=in_page_words(batch.outcome["message"])),
        faults=batch.faults.assign(message=in_page_words(batch.faults["message"])),
    )
    engine.write_reports(worded, files.reports, submitted=submitted)
    (files.reports / VERSION_FILE).write_text(str(version), encoding="utf-8")


def reports_current(files: JobFiles, job: Job) -> bool:
    """Whether the job's report folder shows the job as it is now."""
    marker = files.reports / VERSION_FILE
    try:
        return marker.read_text(encoding="utf-8").strip() == str(job.version)
    except OSError:
        return False


def report_path(files: JobFiles, job: Job, kind: str) -> Path | None:
    """The file of a download kind (``annotated``, ``errors``, ``results``, ``csv``) in the report folder."""
    if kind == "annotated":
        found = sorted(files.reports.glob("annotated_*.xlsx"))
        return found[0] if found else None
    name = engine.REPORT_FILES.get(kind)
    return files.reports / name if name else None
