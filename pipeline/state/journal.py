"""The journal: what was sent to the platform for whom, and what came back.

One SQLite file (``<state_dir>/journal.sqlite``, mode 0600) shared by every
run on this machine.  Two tables:

* ``residents``, keyed by ID number (``sfzhm``).  A resident is *claimed*
  (state ``sending``) before its ``syncCardInfo`` call leaves, and its
  outcome *recorded* (``enrolled``, ``rejected`` or ``failed``) after.  A
  resident still ``sending`` at the start of a run is one whose outcome is
  unknown: the process died, or was stopped, while the call was in flight.
* ``files``, keyed by content hash: the registers an inbox run has taken in.

Durability: WAL mode with ``synchronous=NORMAL``.  A commit has been written
to the WAL file (handed to the operating system) when it returns, so
``kill -9`` at any moment loses nothing committed.  A power cut can lose the
commits since the last checkpoint; :meth:`Journal.flush` (a checkpoint, which
fsyncs the WAL) runs every few seconds during a submission and at its end, so
at most those seconds are exposed.  A resident whose record is lost that way
looks unknown (or ``sending``) and is sent again: the platform answers 10115,
which counts as already enrolled; nobody is enrolled twice.  Syncing every
commit instead (``synchronous=FULL``) would cost an fsync per call.

One connection serves every thread, behind a lock: SQLite serialises writers
anyway, and each statement takes microseconds.

A full disk must not cost an answer the platform gave: a call in flight has
enrolled its resident, and only the journal keeps that.  So beside the file
lies a reserve (the folder ``journal.sqlite.reserve``: :data:`RESERVE_FILES`
files of :data:`RESERVE_FILE_BYTES` of allocated space, small files so that a
limit on the size of one file does not forbid it), made before a claim; a claim is refused while it
cannot be made (too little room to record the answers of the calls it would
start).  When a write finds the disk full, the reserve is deleted and the
write tried again in its room, and from then on this journal claims nobody
(:meth:`Journal.mark_sending` raises): the calls in flight are recorded,
nothing new leaves.

A write that fails all the same (read-only, locked for 30 s, a disk full
beyond the reserve) raises :class:`~pipeline.errors.ConfigError`.  The
journal is the record of what was sent, never the source of a report: the
caller keeps the outcome it has in memory, sends nothing more, and leaves the
resident ``sending`` (claimed before its call left), so the next run sends it
again safely.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import JOURNAL_FILE
from pipeline.errors import ConfigError
from pipeline.files import (
    describe_os_error,
    explain_os_error,
    explain_sqlite_error,
    private_dir,
    temporary_name,
)

#: Journal states of a resident.
STATE_SENDING = "sending"
STATE_ENROLLED = "enrolled"
STATE_REJECTED = "rejected"
STATE_FAILED = "failed"
STATES: tuple[str, ...] = (STATE_SENDING, STATE_ENROLLED, STATE_REJECTED, STATE_FAILED)

#: Why a resident recorded enrolled is sent again: a lookup found their card held by someone else.
MESSAGE_CARD_OF_ANOTHER = (
    "记录的卡号经 bindCardInfo 查询属于另一位居民：当时的申领答复不是对此人的答复，结果未知，将重新发送"
)

#: Room kept beside the journal for the answers of the calls in flight when the disk fills up
#: (a recorded answer takes a few pages of the write-ahead log; 64 calls may be in flight).
RESERVE_FILES = 16
RESERVE_FILE_BYTES = 128 * 1024
RESERVE_SUFFIX = ".reserve"
#: SQLite's result codes for a disk that is full (SQLITE_FULL) or failed a write (SQLITE_IOERR).
_SQLITE_FULL, _SQLITE_IOERR = 13, 10

#: Columns of :meth:`Journal.lookup_many` (index ``id_number``).
RESIDENT_COLUMNS: tuple[str, ...] = (
    "state", "result_code", "message", "ehealth_card_id", "virtual_card_num",
    "source_file", "source_row", "sends", "updated_at", "org_code",
)  # fmt: skip

#: 2: residents keep the organisation code (``orgCode``) of the row that was sent.
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS residents (
    id_number        TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    result_code      INTEGER,
    message          TEXT NOT NULL DEFAULT '',
    ehealth_card_id  TEXT NOT NULL DEFAULT '',
    virtual_card_num TEXT NOT NULL DEFAULT '',
    source_file      TEXT NOT NULL DEFAULT '',
    source_row       INTEGER,
    sends            INTEGER NOT NULL DEFAULT 0,
    claimed_at       TEXT NOT NULL DEFAULT '',
    updated_at       TEXT NOT NULL DEFAULT '',
    org_code         TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS residents_state ON residents(state);
CREATE INDEX IF NOT EXISTS residents_card ON residents(ehealth_card_id) WHERE ehealth_card_id != '';
CREATE TABLE IF NOT EXISTS files (
    content_hash TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,
    out_dir      TEXT NOT NULL DEFAULT '',
    started_at   TEXT NOT NULL DEFAULT '',
    finished_at  TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
"""


#: A resident's outcome written: inserted, or the row updated (known card ids kept when none are given).
_INSERT_OUTCOME = """INSERT INTO residents (id_number, state, result_code, message, ehealth_card_id,
                                            virtual_card_num, updated_at) """
_OR_UPDATE_OUTCOME = """
    ON CONFLICT(id_number) DO UPDATE SET
      state = excluded.state, result_code = excluded.result_code, message = excluded.message,
      ehealth_card_id = CASE WHEN excluded.ehealth_card_id != ''
                             THEN excluded.ehealth_card_id ELSE ehealth_card_id END,
      virtual_card_num = CASE WHEN excluded.virtual_card_num != ''
                              THEN excluded.virtual_card_num ELSE virtual_card_num END,
      updated_at = excluded.updated_at"""


@dataclass(frozen=True)
class FileRecord:
    """One register taken in by an inbox run.  Times are ISO 8601 text ("" if unset)."""

    content_hash: str
    name: str
    status: str
    out_dir: str
    started_at: str
    finished_at: str


def default_journal_path(state_dir: Path) -> Path:
    """Where the journal lives: ``<state_dir>/journal.sqlite``."""
    return Path(state_dir) / JOURNAL_FILE


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _as_text(moment: datetime | str | None) -> str:
    if moment is None:
        return ""
    if isinstance(moment, datetime):
        return moment.isoformat(timespec="seconds")
    return str(moment)


def _disk_full(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite failed for lack of room (a full disk, a quota, a file-size limit)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
    return "full" in str(error) or "disk I/O" in str(error)


def _allocate(path: Path, size: int) -> None:
    """A file of ``size`` bytes whose blocks are allocated, put in place whole or not at all."""
    partial = temporary_name(path)
    try:
        with partial.open("wb") as handle:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle.fileno(), 0, size)
            else:
                block = bytes(64 * 1024)
                for _ in range(0, size, len(block)):
                    handle.write(block)
        os.replace(partial, path)  # no fsync: the room is taken once written, a crash only loses the reserve
    finally:
        partial.unlink(missing_ok=True)


def visible_card_ids(entries: pd.DataFrame, org_codes: Sequence[str] | np.ndarray) -> pd.DataFrame:
    """The card ids of journal ``entries`` (:meth:`Journal.lookup_many` rows) as the rows of
    ``org_codes`` (one each) may see them: ``ehealth_card_id`` and ``virtual_card_num``.

    One journal serves every centre of a server (the web workspace, the
    nightly run): a card is shown to the centre whose row enrolled it, never
    to another that merely names the same ID number.  A resident recorded
    before the journal kept centres (no ``org_code``) is shown as before.
    """
    if "org_code" not in entries:
        raise ValueError("visible_card_ids needs the journal's org_code column")
    ids = entries[["ehealth_card_id", "virtual_card_num"]].fillna("").astype(str)
    owners = entries["org_code"].fillna("").astype(str).to_numpy()
    asking = np.asarray(org_codes, dtype=object).astype(str)
    hidden = (owners != "") & (owners != asking)
    return ids.mask(pd.DataFrame({c: hidden for c in ids.columns}, index=ids.index), "")


def is_journal(path: Path) -> bool:
    """Whether the SQLite file at ``path`` is a journal of this program, looked at without writing to it.

    Opening a :class:`Journal` creates its tables: done to someone else's
    database (``ehc qrcode --from other.sqlite``) it would change that file.
    """
    try:
        db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except (sqlite3.Error, OSError, ValueError):
        return False
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return False
    finally:
        db.close()
    return 1 <= version <= _SCHEMA_VERSION and {"residents", "files"} <= tables


class Journal:
    """The SQLite journal at ``path``; safe to share between threads.

    Opening creates the file (and its directory) if needed.  Raises
    :class:`ConfigError` with a Chinese message when the file cannot be
    opened or is not a journal.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.reserve_path = self.path.with_name(self.path.name + RESERVE_SUFFIX)
        #: the disk filled up and the reserve was used: no claim any more (see the module docstring)
        self.out_of_room = False
        self._reserve_ready = False  # checked (or made) once, before the first claim
        try:
            private_dir(self.path.parent)
            fresh = not self.path.exists()
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            if fresh:
                os.chmod(self.path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise ConfigError(
                    f"提交日志 {self.path} 由更新版本的程序创建（版本 {version}）。请升级本程序后再运行"
                )
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(residents)")}
            if "org_code" not in columns:  # a journal of version 1: its residents' centres are unknown
                self._db.execute("ALTER TABLE residents ADD COLUMN org_code TEXT NOT NULL DEFAULT ''")
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except sqlite3.DatabaseError as error:
            self._close_quietly()
            raise ConfigError(
                f"无法打开提交日志 {self.path}（{explain_sqlite_error(error)}）。"
                "请检查状态目录的权限，或确认该文件是本程序的日志"
            ) from None
        except OSError as error:
            raise ConfigError(describe_os_error(error, "创建提交日志", self.path)) from None

    # -- connection handling -------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; each statement commits by itself (autocommit)."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.OperationalError as error:
                # Disk full, read-only or locked for 30 s: nothing more may be sent unrecorded.
                raise ConfigError(
                    f"无法写入提交日志 {self.path}（{explain_sqlite_error(error)}）。"
                    "请检查磁盘空间和状态目录的权限后重新运行"
                ) from None

    def _write(self, statement: str, parameters: Sequence[object]) -> int:
        """Run one writing statement; on a full disk, once more in the reserve's room.  Rows changed."""
        with self._writing() as db:
            try:
                return db.execute(statement, parameters).rowcount
            except sqlite3.OperationalError as error:
                if not _disk_full(error) or not self._use_reserve():
                    raise
                return db.execute(statement, parameters).rowcount

    def _reserve_files(self) -> list[Path]:
        return [self.reserve_path / f"{number:02d}" for number in range(RESERVE_FILES)]

    def _use_reserve(self) -> bool:
        """Free the reserve's room and claim nobody from now on; whether there was room to free."""
        self.out_of_room = True
        freed = False
        for file in self._reserve_files():
            with suppress(OSError):
                file.unlink()
                freed = True
        with suppress(OSError):
            self.reserve_path.rmdir()
        return freed

    def _ensure_reserve(self) -> None:
        """The reserve in place before a claim, or the claim refused (see the module docstring)."""
        if self.out_of_room:
            raise ConfigError(
                f"状态目录 {self.path.parent} 所在磁盘已满，已停止发送（已收到的平台答复记入了提交日志）。"
                "请清理磁盘空间后重新运行同一命令"
            )
        if self._reserve_ready:
            return
        files = self._reserve_files()
        if files[-1].exists():  # made in order: the last one says they all are
            self._reserve_ready = True
            return
        try:
            self.reserve_path.mkdir(exist_ok=True)
            for file in files:
                if not file.exists():
                    _allocate(file, RESERVE_FILE_BYTES)
        except OSError as error:
            self._use_reserve()  # what was made of it is no use; nothing is claimed
            self.out_of_room = False
            reason, fix = explain_os_error(error)
            megabytes = RESERVE_FILES * RESERVE_FILE_BYTES / (1024 * 1024)
            raise ConfigError(
                f"无法在状态目录 {self.path.parent} 预留记录平台答复的空间（{megabytes:g} MB）："
                f"{reason}，未发送。处理办法：{fix}"
            ) from None
        self._reserve_ready = True

    def flush(self) -> None:
        """Make every commit so far survive a power cut too (a WAL checkpoint syncs the WAL first)."""
        with self._writing() as db:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            with suppress(sqlite3.Error):
                db.close()

    def close(self) -> None:
        """Close the connection (later calls raise ``sqlite3.ProgrammingError``)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- residents ---------------------------------------------------------------------

    def claim(
        self, id_number: str, source_file: str = "", source_row: int | None = None, org_code: str = ""
    ) -> str | None:
        """Mark a resident ``sending`` before its call leaves; return the state it had before.

        ``None`` means the journal did not know the resident.  The card ids of
        an earlier outcome are kept.
        """
        with self._lock:
            row = self._db.execute("SELECT state FROM residents WHERE id_number = ?", (id_number,)).fetchone()
        self.mark_sending(id_number, source_file, source_row, org_code)
        return None if row is None else str(row[0])

    def mark_sending(
        self, id_number: str, source_file: str = "", source_row: int | None = None, org_code: str = ""
    ) -> None:
        """:meth:`claim` without reading the state before: one statement, for callers that know it.

        ``org_code`` is the centre (``orgCode``) of the row sent: the card ids
        the platform answers are shown to that centre alone (:func:`visible_card_ids`).
        """
        self._ensure_reserve()
        moment = _now()
        with self._writing() as db:
            # Never in the reserve's room: a claim starts a call, whose answer needs that room.
            db.execute(
                """INSERT INTO residents
                     (id_number, state, source_file, source_row, sends, claimed_at, updated_at, org_code)
                   VALUES (?, 'sending', ?, ?, 1, ?, ?, ?)
                   ON CONFLICT(id_number) DO UPDATE SET
                     state = 'sending', source_file = excluded.source_file,
                     source_row = excluded.source_row, sends = sends + 1,
                     claimed_at = excluded.claimed_at, updated_at = excluded.updated_at,
                     org_code = excluded.org_code""",
                (id_number, source_file, source_row, moment, moment, org_code),
            )

    def record(
        self,
        id_number: str,
        status: str,
        result_code: int | None,
        message: str,
        ehealth_card_id: str = "",
        virtual_card_num: str = "",
    ) -> None:
        """Record the outcome of a resident's call (``enrolled``/``rejected``/``failed``/``sending``).

        Committed with fsync before returning.  Card ids already known are
        kept when ``ehealth_card_id``/``virtual_card_num`` are empty.
        """
        if status not in STATES:
            raise ValueError(f"unknown journal state {status!r}")
        self._write(
            _INSERT_OUTCOME + "VALUES (?, ?, ?, ?, ?, ?, ?)" + _OR_UPDATE_OUTCOME,
            (id_number, status, result_code, message, ehealth_card_id, virtual_card_num, _now()),
        )

    def record_enrolled(
        self, id_number: str, result_code: int, message: str, ehealth_card_id: str, virtual_card_num: str
    ) -> bool:
        """Record a resident enrolled with ``ehealth_card_id``, unless the journal holds that card for
        another resident (then nothing is written and the answer is False: it answered some other call,
        a cache or a proxy replaying it).  One statement: the test costs no query of its own.
        """
        return self._write(
            _INSERT_OUTCOME
            + """SELECT ?, ?, ?, ?, ?, ?, ?
                 WHERE ? = '' OR NOT EXISTS (SELECT 1 FROM residents
                                             WHERE ehealth_card_id = ? AND ehealth_card_id != ''
                                               AND id_number != ?)"""
            + _OR_UPDATE_OUTCOME,
            (
                id_number, STATE_ENROLLED, result_code, message, ehealth_card_id, virtual_card_num, _now(),
                ehealth_card_id, ehealth_card_id, id_number,
            ),
        ) > 0  # fmt: skip

    def set_card_ids(self, id_number: str, ehealth_card_id: str, virtual_card_num: str) -> list[str]:
        """Store the card ids of a resident found later (``bindCardInfo``); state and message stay.

        The lookup names the card of this ID number: any other resident the
        journal holds with that card was recorded from an answer to some other
        request (answers mixed up).  Their outcome becomes unknown (``failed``,
        card ids cleared), so the next run sends them again and one card is
        never exported for two people.  Returns the ID numbers so corrected,
        for the run's reports to say the same of their rows.
        """
        corrected: list[str] = []
        if ehealth_card_id:
            with self._writing() as db:
                corrected = [
                    str(row[0]) for row in db.execute(
                        "SELECT id_number FROM residents WHERE ehealth_card_id = ? AND id_number != ?",
                        (ehealth_card_id, id_number),
                    )
                ]  # fmt: skip
        if corrected:
            self.withdraw(corrected, ehealth_card_id, MESSAGE_CARD_OF_ANOTHER)
        self._write(
            """UPDATE residents SET
                     ehealth_card_id = CASE WHEN ? != '' THEN ? ELSE ehealth_card_id END,
                     virtual_card_num = CASE WHEN ? != '' THEN ? ELSE virtual_card_num END,
                     updated_at = ?
                   WHERE id_number = ?""",
            (ehealth_card_id, ehealth_card_id, virtual_card_num, virtual_card_num, _now(), id_number),
        )
        return corrected

    def withdraw(self, id_numbers: Sequence[str], ehealth_card_id: str, message: str) -> list[str]:
        """Make the outcome of ``id_numbers`` unknown again (``failed``, card ids cleared, ``message``)
        where they still hold ``ehealth_card_id``: the answer that gave it them is in doubt.  The next
        run sends them again.  Returns the ID numbers so changed.
        """
        wanted = list(dict.fromkeys(i for i in id_numbers if i))
        if not ehealth_card_id or not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        with self._writing() as db:
            holding = [
                str(row[0]) for row in db.execute(
                    f"SELECT id_number FROM residents WHERE ehealth_card_id = ? AND id_number IN ({marks})",
                    (ehealth_card_id, *wanted),
                )
            ]  # fmt: skip
        if holding:
            self._write(
                f"""UPDATE residents SET state = ?, result_code = NULL, message = ?, ehealth_card_id = '',
                          virtual_card_num = '', updated_at = ?
                    WHERE ehealth_card_id = ? AND id_number IN ({", ".join("?" * len(holding))})""",
                (STATE_FAILED, message, _now(), ehealth_card_id, *holding),
            )
        return holding

    def enrolled_without_card_ids(self) -> list[str]:
        """ID numbers of residents enrolled (here or, per a 10115, anywhere) whose card ids are unknown."""
        with self._lock:
            found = self._db.execute(
                "SELECT id_number FROM residents WHERE state = 'enrolled' "
                "AND ehealth_card_id = '' AND virtual_card_num = '' ORDER BY id_number"
            ).fetchall()
        return [str(row[0]) for row in found]

    def lookup_many(
        self, id_numbers: Iterable[str], columns: Sequence[str] = RESIDENT_COLUMNS
    ) -> pd.DataFrame:
        """The journal's rows for ``id_numbers`` (those it knows), indexed by ``id_number``.

        ``columns`` (a subset of :data:`RESIDENT_COLUMNS`) are fetched; one
        query whatever the count: the ID numbers travel as one JSON array (or,
        where SQLite lacks JSON, through a temporary table).
        """
        unknown = set(columns) - set(RESIDENT_COLUMNS)
        if unknown:
            raise ValueError(f"not journal columns: {sorted(unknown)}")
        wanted = list(dict.fromkeys(id_numbers))
        selected = ", ".join(["id_number", *columns])
        with self._lock:
            try:
                found = self._db.execute(
                    f"SELECT {selected} FROM residents WHERE id_number IN (SELECT value FROM json_each(?))",
                    (json.dumps(wanted),),
                ).fetchall()
            except sqlite3.OperationalError:
                self._db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (id_number TEXT PRIMARY KEY)")
                self._db.execute("DELETE FROM wanted")
                self._db.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", ((i,) for i in wanted))
                found = self._db.execute(
                    f"SELECT {selected} FROM residents JOIN wanted USING (id_number)"
                ).fetchall()
        return self._frame(found, columns)

    def lookup(self, id_number: str) -> dict[str, object] | None:
        """One resident's journal row as a dict, or ``None`` if unknown."""
        frame = self.lookup_many([id_number])
        if frame.empty:
            return None
        entry: dict[str, object] = {"id_number": id_number}
        entry.update({str(key): value for key, value in frame.iloc[0].items()})
        return entry

    def residents(self, state: str | None = None) -> pd.DataFrame:
        """Every resident (or those in ``state``), indexed by ``id_number``, in ID order."""
        columns = ", ".join(RESIDENT_COLUMNS)
        query = f"SELECT id_number, {columns} FROM residents"
        params: tuple[str, ...] = ()
        if state is not None:
            query += " WHERE state = ?"
            params = (state,)
        with self._lock:
            found = self._db.execute(query + " ORDER BY id_number", params).fetchall()
        return self._frame(found)

    def counts(self) -> dict[str, int]:
        """Residents per journal state."""
        with self._lock:
            found = self._db.execute("SELECT state, COUNT(*) FROM residents GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in found}

    @staticmethod
    def _frame(found: list[tuple[object, ...]], columns: Sequence[str] = RESIDENT_COLUMNS) -> pd.DataFrame:
        # object dtype: inferring Arrow strings for 100k rows costs more than the query
        frame = pd.DataFrame(found, columns=["id_number", *columns], dtype=object)
        for column in ("result_code", "source_row"):
            if column in frame:
                frame[column] = frame[column].astype("Int64")
        if "sends" in frame:
            frame["sends"] = frame["sends"].astype("int64")
        return frame.set_index("id_number")

    # -- files (inbox runs) ----------------------------------------------------------------

    def file_seen(self, content_hash: str) -> bool:
        """Whether a register with this content hash was processed to the end before.

        A file recorded as started (no ``finished_at``) by a run that then died
        counts as not seen, so the next run takes it again.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM files WHERE content_hash = ? AND finished_at != ''", (content_hash,)
            ).fetchone()
        return row is not None

    def record_file(
        self,
        content_hash: str,
        name: str,
        status: str,
        out_dir: str | Path = "",
        started_at: datetime | str | None = None,
        finished_at: datetime | str | None = None,
    ) -> None:
        """Record (or update) what became of a register; durable before returning.

        Leave ``finished_at`` empty to mark a file as being processed;
        :meth:`file_seen` is true only once it is set.
        """
        with self._writing() as db:
            db.execute(
                """INSERT INTO files (content_hash, name, status, out_dir, started_at, finished_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT(content_hash) DO UPDATE SET
                     name = excluded.name, status = excluded.status, out_dir = excluded.out_dir,
                     started_at = CASE WHEN excluded.started_at != ''
                                       THEN excluded.started_at ELSE started_at END,
                     finished_at = excluded.finished_at""",
                (content_hash, name, status, str(out_dir), _as_text(started_at), _as_text(finished_at)),
            )

    def file_record(self, content_hash: str) -> FileRecord | None:
        """The record of one register, or ``None``."""
        with self._lock:
            row = self._db.execute(
                "SELECT content_hash, name, status, out_dir, started_at, finished_at "
                "FROM files WHERE content_hash = ?",
                (content_hash,),
            ).fetchone()
        return None if row is None else FileRecord(*row)

    def files(self) -> list[FileRecord]:
        """Every register recorded, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT content_hash, name, status, out_dir, started_at, finished_at "
                "FROM files ORDER BY started_at, name"
            ).fetchall()
        return [FileRecord(*row) for row in rows]
