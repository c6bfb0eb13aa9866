"""Where a job's files live: the upload, its cells as read, its reports and QR codes.

Every job has a folder ``<state_dir>/web/jobs/<job id>/`` (mode 0700), named
by the server's random job id.  The upload is stored in it under a name the
server sanitised from the clerk's file name (a clerk's reports name their
own file); nothing is ever looked up by a name or path a request supplies:
pages name a job by its id and a download by a fixed kind.

``original.arrow`` holds the register's fields as read (before any edit),
one row per ``row_id``: an Arrow IPC file, memory-mapped, so the rows an
edit or a grid page needs are read in microseconds without reading the
register again.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc

from pipeline.web.shown import file_name

JOBS_FOLDER = Path("web") / "jobs"
ORIGINALS = "original.arrow"
REPORTS = "reports"
QRCODES_ZIP = "qrcodes.zip"
#: Which build made the ZIP, for which version of the job, and what it holds.
QRCODES_MADE = ".qrcodes.json"
#: How far the build under way has got.
QRCODES_PROGRESS = ".qrcodes.progress"

#: Job ids: 16 URL-safe characters from 12 random bytes.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{16}")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_MAX_STEM = 80
#: Bytes (UTF-8) of a stored name's stem: well inside the 255 a file name may have, with room for
#: the reports' ``annotated_`` prefix and ``.xlsx``.
_MAX_STEM_BYTES = 180


def new_job_id() -> str:
    """A fresh, unguessable job id."""
    return secrets.token_urlsafe(12)


def safe_file_name(name: str, suffix: str) -> str:
    """The clerk's file name made safe to store: no folders, no control or reserved characters.

    ``suffix`` is the checked extension (lower case, with its dot); the
    stem keeps letters, digits and CJK characters, at most 80 of them and
    180 bytes (four-byte characters fill a name's 255 bytes long before
    80 of them), without direction or control characters.
    """
    base = file_name(name)
    stem = base[: -len(suffix)] if base.lower().endswith(suffix) else Path(base).stem
    stem = _UNSAFE.sub("_", stem).strip(" ._")[:_MAX_STEM]
    while len(stem.encode("utf-8")) > _MAX_STEM_BYTES:
        stem = stem[:-1]
    stem = stem.strip(" ._")
    return f"{stem or '登记表'}{suffix}"


@lru_cache(maxsize=8)
def _mapped(path: str, mtime_ns: int) -> pa.Table:
    """The Arrow file at ``path``, memory-mapped (kept open for the next edit; a rewrite has a new mtime)."""
    return ipc.open_file(pa.memory_map(path)).read_all()


class JobFiles:
    """The folder of one job under the jobs root."""

    def __init__(self, state_dir: Path, job_id: str) -> None:
        if not JOB_ID.fullmatch(job_id):
            raise ValueError("not a job id")
        self.folder = Path(state_dir) / JOBS_FOLDER / job_id

    def create(self) -> Path:
        """Make the folder (0700, and its parents)."""
        self.folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.folder.mkdir(mode=0o700)
        return self.folder

    def upload(self, stored_name: str) -> Path:
        """The stored register."""
        return self.folder / stored_name

    def kept(self, stored_name: str) -> bool:
        """Whether the register is still there (an operator may clean old jobs up)."""
        return self.upload(stored_name).is_file()

    @property
    def originals(self) -> Path:
        """The fields as read, one row per ``row_id``."""
        return self.folder / ORIGINALS

    @property
    def reports(self) -> Path:
        """The folder of the job's reports."""
        return self.folder / REPORTS

    @property
    def qrcodes_zip(self) -> Path:
        """The ZIP of the job's QR code pictures."""
        return self.folder / QRCODES_ZIP

    @property
    def qrcodes_made(self) -> Path:
        """What the QR code ZIP is: the build, the job's version, its counts."""
        return self.folder / QRCODES_MADE

    @property
    def qrcodes_progress(self) -> Path:
        """The residents done so far by the QR code build under way."""
        return self.folder / QRCODES_PROGRESS

    def write_originals(self, original: pd.DataFrame) -> None:
        """Store the fields as read (written aside, then renamed into place)."""
        table = pa.Table.from_pandas(original.reset_index(drop=True), preserve_index=False)
        table = table.cast(pa.schema([(name, pa.large_string()) for name in table.column_names]))
        partial = self.originals.with_name(f".{ORIGINALS}.part")
        with pa.OSFile(str(partial), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(partial, self.originals)

    def read_originals(self, row_ids: list[int] | None = None) -> pd.DataFrame:
        """The fields as read of ``row_ids`` (all rows if None), indexed by ``row_id``."""
        table = _mapped(str(self.originals), self.originals.stat().st_mtime_ns)
        if row_ids is not None:
            table = table.take(pa.array(row_ids, pa.int64()))
        frame = table.to_pandas()
        frame.index = pd.Index(row_ids if row_ids is not None else range(len(frame)), name=None)
        return frame.fillna("").astype("str")

    def remove(self) -> None:
        """Delete the folder and everything in it."""
        shutil.rmtree(self.folder, ignore_errors=True)
