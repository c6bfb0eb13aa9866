"""The workspace's state: one SQLite file of centres, users, sessions, jobs, their rows and faults.

``<state_dir>/web.sqlite`` (mode 0600, WAL).  The server, its dry-run worker
processes and its submission processes all open it; SQLite serialises the
writers and WAL lets pages read while a worker writes.  Every job query that
a page makes takes the centre as well as the job id: a job of another centre
is simply not found.

The faults of a job are rows here (not only a report) so that a grid page of
a 100,000-row register is one indexed query: the pager, the filters by code
and by column and the counts by status and code never scan the job.
Counts are kept in ``job_counts`` and changed by the same transaction that
changes the rows they count.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.files import private_dir
from pipeline.logs import mask_text

DATABASE_NAME = "web.sqlite"
#: How long a write waits for another process's write to end before it fails (a page then says "busy").
BUSY_SECONDS = 30.0

#: Job states.
QUEUED = "queued"  # uploaded, waiting for a dry-run worker
CHECKING = "checking"  # the dry run is running
NEEDS_MAPPING = "needs_mapping"  # a required column was not recognised
UNREADABLE = "unreadable"  # the register cannot be read
CHECKED = "checked"  # the dry run is done: faults can be fixed, valid rows sent
WAITING = "waiting"  # submission asked for, waiting for the run lock
SUBMITTING = "submitting"
SUBMITTED = "submitted"  # the submission ended (every row has a final status)
CANCELLED = "cancelled"  # the clerk stopped the submission (what was sent is kept)
STOPPED = "stopped"  # a fault (platform refused, server restarted) stopped the submission

#: States in which a worker or a submission process owns the job.
BUSY_STATES = frozenset({QUEUED, CHECKING, WAITING, SUBMITTING})
#: States in which the clerk may edit cells and submit.
READY_STATES = frozenset({CHECKED, SUBMITTED, CANCELLED, STOPPED})
#: States of an upload waiting for or in its dry run: what a centre's queue limit counts.
CHECK_QUEUE_STATES = (QUEUED, CHECKING)


class QueueFull(Exception):
    """A centre already has as many uploads waiting for their dry run as it may (the limit in args[0])."""

_SCHEMA_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS centres (
    id         INTEGER PRIMARY KEY,
    org_code   TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    centre_id     INTEGER NOT NULL REFERENCES centres(id),
    is_admin      INTEGER NOT NULL DEFAULT 0,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    password_at   TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created    REAL NOT NULL,
    seen       REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS login_failures (
    key TEXT NOT NULL,
    at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures(key, at);
CREATE TABLE IF NOT EXISTS centre_columns (
    centre_id  INTEGER NOT NULL REFERENCES centres(id),
    header     TEXT NOT NULL,
    field      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (centre_id, header)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    centre_id    INTEGER NOT NULL REFERENCES centres(id),
    user_id      INTEGER NOT NULL REFERENCES users(id),
    file_name    TEXT NOT NULL,
    stored_name  TEXT NOT NULL,
    size         INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    state        TEXT NOT NULL,
    stage        TEXT NOT NULL DEFAULT '',
    progress     REAL NOT NULL DEFAULT 0,
    message      TEXT NOT NULL DEFAULT '',
    rows         INTEGER NOT NULL DEFAULT 0,
    tables       TEXT NOT NULL DEFAULT '[]',
    aliases      TEXT NOT NULL DEFAULT '{}',
    version      INTEGER NOT NULL DEFAULT 0,
    submitted_at TEXT NOT NULL DEFAULT '',
    submitted_by INTEGER,
    sending      TEXT NOT NULL DEFAULT '{}',
    cancel       INTEGER NOT NULL DEFAULT 0,
    pid          INTEGER,
    digest       TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_by_centre ON jobs(centre_id, created_at);
CREATE TABLE IF NOT EXISTS job_rows (
    job_id      TEXT NOT NULL,
    row_id      INTEGER NOT NULL,
    source_row  INTEGER NOT NULL,
    status      TEXT NOT NULL,
    sfzhm       TEXT NOT NULL,
    result_code TEXT NOT NULL DEFAULT '',
    message     TEXT NOT NULL DEFAULT '',
    card_id     TEXT NOT NULL DEFAULT '',
    virtual_num TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, row_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_rows_by_id ON job_rows(job_id, sfzhm);
CREATE INDEX IF NOT EXISTS job_rows_by_status ON job_rows(job_id, status);
CREATE TABLE IF NOT EXISTS faults (
    job_id   TEXT NOT NULL,
    row_id   INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    field    TEXT NOT NULL,
    source   TEXT NOT NULL,
    code     INTEGER NOT NULL,
    severity TEXT NOT NULL,
    message  TEXT NOT NULL,
    PRIMARY KEY (job_id, row_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS faults_by_code ON faults(job_id, severity, code, row_id);
CREATE INDEX IF NOT EXISTS faults_by_source ON faults(job_id, severity, source, row_id);
CREATE TABLE IF NOT EXISTS job_counts (
    job_id TEXT NOT NULL,
    kind   TEXT NOT NULL,
    key    TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (job_id, kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS edits (
    id      INTEGER PRIMARY KEY,
    job_id  TEXT NOT NULL,
    row_id  INTEGER NOT NULL,
    field   TEXT NOT NULL,
    old     TEXT NOT NULL,
    new     TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS edits_by_row ON edits(job_id, row_id, field, id);
CREATE TABLE IF NOT EXISTS audit (
    id        INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    user_id   INTEGER,
    user_name TEXT NOT NULL,
    centre_id INTEGER,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    address   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_centre ON audit(centre_id, id);
"""


#: The columns of a user, in the order :class:`User` takes them.
_USER_COLUMNS = "id, name, centre_id, is_admin, password_hash, created_at, password_at, disabled"

#: The rows (or ID numbers) a query is about, passed as one JSON array and looked up one by one.
_WANTED = "json_each(?) AS w"


def now_text() -> str:
    """The local time as ISO 8601 text to the second: how every time is stored and shown."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class Centre:
    """A community health centre: its platform organisation code and name."""

    id: int
    org_code: str
    name: str
    created_at: str


@dataclass(frozen=True)
class User:
    """A person who logs in: a clerk of one centre, or an admin (who also belongs to a centre)."""

    id: int
    name: str
    centre_id: int
    is_admin: bool
    password_hash: str = field(repr=False)
    created_at: str = ""
    password_at: str = ""
    disabled: bool = False


@dataclass(frozen=True)
class Session:
    """A logged-in browser: whose, its CSRF token, when it began and was last used (epoch seconds)."""

    token_hash: str
    user_id: int
    csrf: str
    created: float
    seen: float


@dataclass(frozen=True)
class Job:
    """One uploaded register and everything done with it."""

    id: str
    centre_id: int
    user_id: int
    file_name: str
    stored_name: str
    size: int
    created_at: str
    updated_at: str
    state: str
    stage: str
    progress: float
    message: str
    rows: int
    tables: list[dict[str, Any]]
    aliases: dict[str, str]
    version: int
    submitted_at: str
    submitted_by: int | None
    sending: dict[str, Any]
    cancel: bool
    pid: int | None
    user_name: str = ""

    @property
    def busy(self) -> bool:
        """A worker or a submission owns the job: no edit, no second submission."""
        return self.state in BUSY_STATES

    @property
    def ready(self) -> bool:
        """The dry run is done and nothing runs: the clerk may edit and submit."""
        return self.state in READY_STATES


@dataclass(frozen=True)
class FaultLine:
    """One fault on a grid page."""

    row_id: int
    seq: int
    field: str
    source: str
    code: int
    severity: str
    message: str
    source_row: int
    status: str


@dataclass(frozen=True)
class RowState:
    """What a job knows about one row."""

    row_id: int
    source_row: int
    status: str
    sfzhm: str
    result_code: str
    message: str
    card_id: str
    virtual_num: str


@dataclass
class RowUpdate:
    """New state of one row after a check: status, codes, message and its faults (replaced whole)."""

    row_id: int
    status: str
    sfzhm: str
    result_code: str
    message: str
    faults: list[tuple[str, str, int, str, str]]  # field, source, code, severity, message


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log."""

    id: int
    at: str
    user_name: str
    centre_id: int | None
    action: str
    target: str
    detail: str
    address: str


def _add_column(db: sqlite3.Connection, table: str, column: str, definition: str) -> None:
    """Add ``column`` to ``table`` of a database made by an earlier schema, unless it has it."""
    if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


class Store:
    """The workspace database under ``state_dir``; one connection per thread."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DATABASE_NAME
        self._local = threading.local()
        private_dir(self.state_dir)
        if not self.path.exists():
            # Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = self._db()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} 由更新版本的程序创建（版本 {version}），请升级本程序后再运行")
        if version < _SCHEMA_VERSION:
            existed = version >= 1
            db.executescript(_SCHEMA)
            if existed:
                # Schema 1 had no way to stop a user logging in; schema 2 told an upload seen before by
                # its name and size only.
                _add_column(db, "users", "disabled", "INTEGER NOT NULL DEFAULT 0")
                _add_column(db, "jobs", "digest", "TEXT NOT NULL DEFAULT ''")
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    # -- connections ---------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self.path, isolation_level=None, timeout=BUSY_SECONDS, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE … COMMIT; ROLLBACK on any error)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def _one(self, sql: str, *params: Any) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._db().execute(sql, params).fetchone()
        return row

    def _all(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return list(self._db().execute(sql, params).fetchall())

    # -- centres and users ---------------------------------------------------------------------

    def add_centre(self, org_code: str, name: str) -> Centre:
        """Add a centre; raises ``sqlite3.IntegrityError`` if the code exists."""
        at = now_text()
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO centres (org_code, name, created_at) VALUES (?, ?, ?)", (org_code, name, at)
            )
        return Centre(int(cursor.lastrowid or 0), org_code, name, at)

    def rename_centre(self, centre_id: int, name: str) -> None:
        """Change a centre's name."""
        with self.transaction() as db:
            db.execute("UPDATE centres SET name = ? WHERE id = ?", (name, centre_id))

    def centres(self) -> list[Centre]:
        """Every centre, by organisation code."""
        return [Centre(*row) for row in self._all("SELECT * FROM centres ORDER BY org_code")]

    def centre(self, centre_id: int) -> Centre | None:
        """The centre with this id."""
        row = self._one("SELECT * FROM centres WHERE id = ?", centre_id)
        return Centre(*row) if row else None

    def centre_by_code(self, org_code: str) -> Centre | None:
        """The centre with this organisation code."""
        row = self._one("SELECT * FROM centres WHERE org_code = ?", org_code)
        return Centre(*row) if row else None

    def add_user(self, name: str, centre_id: int, password_hash: str, *, is_admin: bool) -> User:
        """Add a user; raises ``sqlite3.IntegrityError`` if the name is taken (any case)."""
        at = now_text()
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO users (name, centre_id, is_admin, password_hash, created_at, password_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, centre_id, int(is_admin), password_hash, at, at),
            )
        return User(int(cursor.lastrowid or 0), name, centre_id, is_admin, password_hash, at, at)

    @staticmethod
    def _user(row: tuple[Any, ...] | None) -> User | None:
        if row is None:
            return None
        return User(
            int(row[0]), str(row[1]), int(row[2]), bool(row[3]), str(row[4]), str(row[5]), str(row[6]),
            bool(row[7]),
        )  # fmt: skip

    def user(self, user_id: int) -> User | None:
        """The user with this id."""
        return self._user(self._one(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", user_id))

    def user_by_name(self, name: str) -> User | None:
        """The user with this name (any case)."""
        return self._user(self._one(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", name))

    def users(self) -> list[User]:
        """Every user, by name."""
        found = [self._user(row) for row in self._all(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name")]
        return [user for user in found if user is not None]

    def set_password(self, user_id: int, password_hash: str) -> None:
        """Store a new password hash and end every session of the user."""
        with self.transaction() as db:
            db.execute(
                "UPDATE users SET password_hash = ?, password_at = ? WHERE id = ?",
                (password_hash, now_text(), user_id),
            )
            db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    def set_disabled(self, user_id: int, disabled: bool) -> None:
        """Stop (or allow again) a user logging in; stopping ends every session of theirs."""
        with self.transaction() as db:
            db.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(disabled), user_id))
            if disabled:
                db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    def rehash_password(self, user_id: int, password_hash: str) -> None:
        """Replace a password hash by a stronger one of the same password (sessions kept)."""
        with self.transaction() as db:
            db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))

    # -- sessions and login throttling ------------------------------------------------------------

    def add_session(self, token_hash: str, user_id: int, csrf: str, at: float) -> None:
        """Record a new login."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sessions (token_hash, user_id, csrf, created, seen) VALUES (?, ?, ?, ?, ?)",
                (token_hash, user_id, csrf, at, at),
            )

    def session(self, token_hash: str) -> Session | None:
        """The session with this token hash."""
        row = self._one("SELECT * FROM sessions WHERE token_hash = ?", token_hash)
        return Session(*row) if row else None

    def touch_session(self, token_hash: str, at: float) -> None:
        """Note that the session was used."""
        self._db().execute("UPDATE sessions SET seen = ? WHERE token_hash = ?", (at, token_hash))

    def end_session(self, token_hash: str) -> None:
        """Forget a session (logout, expiry)."""
        self._db().execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    def end_stale_sessions(self, seen_before: float, created_before: float) -> int:
        """Forget sessions idle or old beyond the limits; return how many."""
        cursor = self._db().execute(
            "DELETE FROM sessions WHERE seen < ? OR created < ?", (seen_before, created_before)
        )
        return cursor.rowcount

    def take_login_attempt(self, limits: Mapping[str, int], at: float, since: float) -> float:
        """Count an attempt against every key of ``limits`` (key -> its limit) before its password is
        checked; 0, or the latest failure of a key already at its limit since ``since`` (then nothing
        is counted).

        Counting and testing in one write transaction is what holds the limit
        when many guesses arrive at once: each is counted before any is
        checked.  A good password takes its count back (:meth:`forgive_login_attempt`).
        """
        with self.transaction() as db:  # this thread's connection: login_failures reads inside it
            for key, limit in limits.items():
                count, latest = self.login_failures(key, since)
                if count >= limit:
                    return latest or at
            db.executemany("INSERT INTO login_failures (key, at) VALUES (?, ?)", [(k, at) for k in limits])
        return 0.0

    def forgive_login_attempt(self, keys: Sequence[str], at: float) -> None:
        """Take back one attempt counted by :meth:`take_login_attempt` (its password was right)."""
        with self.transaction() as db:
            for key in keys:
                db.execute(
                    "DELETE FROM login_failures WHERE rowid = "
                    "(SELECT rowid FROM login_failures WHERE key = ? AND at = ? LIMIT 1)",
                    (key, at),
                )

    def login_failures(self, key: str, since: float) -> tuple[int, float]:
        """How many failures ``key`` has had since ``since``, and when the latest was."""
        row = self._one("SELECT COUNT(*), MAX(at) FROM login_failures WHERE key = ? AND at >= ?", key, since)
        return (int(row[0]), float(row[1] or 0.0)) if row else (0, 0.0)

    def clear_login_failures(self, key: str, before: float | None = None) -> None:
        """Forget a key's failures (after a good login), or everyone's before ``before``."""
        if before is not None:
            self._db().execute("DELETE FROM login_failures WHERE at < ?", (before,))
        else:
            self._db().execute("DELETE FROM login_failures WHERE key = ?", (key,))

    # -- column mappings --------------------------------------------------------------------------

    def centre_columns(self, centre_id: int) -> dict[str, str]:
        """The centre's own column mapping: header -> field code (or ``ignore``)."""
        rows = self._all(
            "SELECT header, field FROM centre_columns WHERE centre_id = ? ORDER BY header", centre_id
        )
        return {str(header): str(code) for header, code in rows}

    def save_centre_columns(self, centre_id: int, mapping: dict[str, str]) -> None:
        """Add or change entries of the centre's column mapping."""
        at = now_text()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO centre_columns (centre_id, header, field, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(centre_id, header) DO UPDATE SET field = excluded.field, "
                "updated_at = excluded.updated_at",
                [(centre_id, header, code, at) for header, code in mapping.items()],
            )

    # -- audit ---------------------------------------------------------------------------------

    def audit(
        self,
        action: str,
        *,
        user: User | None,
        target: str = "",
        detail: str = "",
        address: str = "",
        user_name: str = "",
        centre_id: int | None = None,
    ) -> None:
        """Append a line to the audit log.

        ``target`` and ``detail`` are masked here (:func:`~pipeline.logs.mask_text`):
        they may quote what a clerk chose, such as an upload's file name
        ``张三_440606199001011234.xlsx``, and the log outlives every job.
        """
        target, detail = mask_text(target), mask_text(detail)
        self._db().execute(
            "INSERT INTO audit (at, user_id, user_name, centre_id, action, target, detail, address) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                now_text(), user.id if user else None, user.name if user else user_name,
                user.centre_id if user else centre_id, action, target, detail, address,
            ),
        )  # fmt: skip

    def audit_page(self, offset: int, limit: int, centre_id: int | None = None) -> list[AuditEntry]:
        """Audit lines, newest first (of one centre, or all)."""
        where, params = ("WHERE centre_id = ?", [centre_id]) if centre_id is not None else ("", [])
        rows = self._all(
            "SELECT id, at, user_name, centre_id, action, target, detail, address FROM audit "
            f"{where} ORDER BY id DESC LIMIT ? OFFSET ?",
            *params, limit, offset,
        )  # fmt: skip
        return [AuditEntry(*row) for row in rows]

    def audit_count(self, centre_id: int | None = None) -> int:
        """How many audit lines (of one centre, or all)."""
        if centre_id is None:
            row = self._one("SELECT COUNT(*) FROM audit")
        else:
            row = self._one("SELECT COUNT(*) FROM audit WHERE centre_id = ?", centre_id)
        return int(row[0]) if row else 0

    # -- jobs ----------------------------------------------------------------------------------

    _JOB_COLUMNS = (
        "j.id, j.centre_id, j.user_id, j.file_name, j.stored_name, j.size, j.created_at, j.updated_at, "
        "j.state, j.stage, j.progress, j.message, j.rows, j.tables, j.aliases, j.version, j.submitted_at, "
        "j.submitted_by, j.sending, j.cancel, j.pid, u.name"
    )

    @staticmethod
    def _job(row: tuple[Any, ...] | None) -> Job | None:
        if row is None:
            return None
        values = list(row)
        for position in (13, 14, 18):  # tables, aliases, sending: JSON
            values[position] = json.loads(values[position])
        values[19] = bool(values[19])
        return Job(*values)

    def add_job(
        self,
        job_id: str,
        centre_id: int,
        user_id: int,
        file_name: str,
        stored_name: str,
        size: int,
        *,
        digest: str = "",
        queue_limit: int | None = None,
    ) -> Job:
        """Record an uploaded register (state ``queued``); ``digest``: the SHA-256 of its bytes.

        Given ``queue_limit``, raises :class:`QueueFull` when the centre
        already has that many jobs queued or being checked: counted and
        added in one write transaction, so uploads arriving together cannot
        all pass the count.
        """
        at = now_text()
        with self.transaction() as db:
            if queue_limit is not None and self.jobs_in_count(centre_id, CHECK_QUEUE_STATES) >= queue_limit:
                raise QueueFull(queue_limit)
            db.execute(
                "INSERT INTO jobs (id, centre_id, user_id, file_name, stored_name, size, created_at, "
                "updated_at, state, stage, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, centre_id, user_id, file_name, stored_name, size, at, at, QUEUED, "排队等待检查",
                 digest),
            )
        job = self.job_any(job_id)
        assert job is not None
        return job

    def job(self, job_id: str, centre_id: int) -> Job | None:
        """The job ``job_id`` of centre ``centre_id`` (None for another centre's job)."""
        return self._job(
            self._one(
                f"SELECT {self._JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.user_id "
                "WHERE j.id = ? AND j.centre_id = ?",
                job_id, centre_id,
            )
        )  # fmt: skip

    def job_any(self, job_id: str) -> Job | None:
        """The job ``job_id`` whatever its centre: for workers, never for pages."""
        return self._job(
            self._one(
                f"SELECT {self._JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.user_id WHERE j.id = ?",
                job_id,
            )
        )

    def jobs_page(self, centre_id: int, offset: int, limit: int) -> list[Job]:
        """The centre's jobs, newest first."""
        rows = self._all(
            f"SELECT {self._JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.user_id "
            "WHERE j.centre_id = ? ORDER BY j.created_at DESC, j.id LIMIT ? OFFSET ?",
            centre_id, limit, offset,
        )  # fmt: skip
        return [job for job in map(self._job, rows) if job is not None]

    def earlier_upload(self, job: Job) -> Job | None:
        """The centre's latest job uploaded before ``job`` with the same bytes, whatever its file name
        (None when there is none): the same register sent again.  A job recorded before uploads were
        digested is matched by file name and size."""
        return self._job(
            self._one(
                f"SELECT {self._JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.user_id "
                "JOIN jobs this ON this.id = ? "
                # Times are kept to the second: two uploads within one cannot be told apart, so neither
                # is named as the other's.
                "WHERE j.centre_id = this.centre_id AND j.created_at < this.created_at "
                "AND j.size = this.size "
                "AND (this.digest != '' AND j.digest = this.digest "
                "     OR (this.digest = '' OR j.digest = '') AND j.file_name = this.file_name) "
                "ORDER BY j.created_at DESC, j.id LIMIT 1",
                job.id,
            )
        )  # fmt: skip

    def jobs_count(self, centre_id: int) -> int:
        """How many jobs the centre has."""
        row = self._one("SELECT COUNT(*) FROM jobs WHERE centre_id = ?", centre_id)
        return int(row[0]) if row else 0

    def jobs_in(self, states: Sequence[str]) -> list[Job]:
        """Every job in one of ``states`` (all centres): for the runner at start-up."""
        marks = ", ".join("?" * len(states))
        rows = self._all(
            f"SELECT {self._JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.user_id "
            f"WHERE j.state IN ({marks}) ORDER BY j.created_at",
            *states,
        )
        return [job for job in map(self._job, rows) if job is not None]

    def jobs_in_count(self, centre_id: int, states: Sequence[str]) -> int:
        """How many jobs of the centre are in one of ``states``."""
        marks = ", ".join("?" * len(states))
        row = self._one(
            f"SELECT COUNT(*) FROM jobs WHERE centre_id = ? AND state IN ({marks})", centre_id, *states
        )
        return int(row[0]) if row else 0

    def update_job(self, job_id: str, **changes: Any) -> None:
        """Set columns of a job (dicts and lists stored as JSON)."""
        allowed = {
            "state", "stage", "progress", "message", "rows", "tables", "aliases", "submitted_at",
            "submitted_by", "sending", "cancel", "pid",
        }  # fmt: skip
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"not job columns: {sorted(unknown)}")
        values = [
            json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v for v in changes.values()
        ]
        sets = ", ".join(f"{name} = ?" for name in changes)
        self._db().execute(
            f"UPDATE jobs SET {sets}, updated_at = ? WHERE id = ?", (*values, now_text(), job_id)
        )

    def claim_job(self, job_id: str, from_states: Sequence[str], to_state: str, **changes: Any) -> bool:
        """Move a job from one of ``from_states`` to ``to_state`` atomically; False if it was elsewhere."""
        marks = ", ".join("?" * len(from_states))
        with self.transaction() as db:
            row = db.execute(
                f"SELECT 1 FROM jobs WHERE id = ? AND state IN ({marks})", (job_id, *from_states)
            )
            if row.fetchone() is None:
                return False
            db.execute(
                "UPDATE jobs SET state = ?, version = version + 1, updated_at = ? WHERE id = ?",
                (to_state, now_text(), job_id),
            )
            if changes:  # in the same transaction: nobody sees the new state with the old details
                self.update_job(job_id, **changes)
        return True

    # -- rows and faults --------------------------------------------------------------------------

    def replace_rows(
        self,
        job_id: str,
        rows: Iterable[tuple[int, int, str, str, str, str, str, str]],
        faults: Iterable[tuple[int, int, str, str, int, str, str]],
        *,
        state: str,
        row_count: int,
        tables: list[dict[str, Any]] | None = None,
        aliases: dict[str, str] | None = None,
    ) -> None:
        """Replace every row and fault of a job, recount, and move it to ``state`` (one transaction).

        ``rows``: (row_id, source_row, status, sfzhm, result_code, message,
        card_id, virtual_num); ``faults``: (row_id, seq, field, source, code,
        severity, message).
        """
        changes: dict[str, Any] = {"state": state, "rows": row_count, "stage": "", "progress": 1.0}
        if tables is not None:
            changes["tables"] = json.dumps(tables, ensure_ascii=False)
        if aliases is not None:
            changes["aliases"] = json.dumps(aliases, ensure_ascii=False)
        sets = ", ".join(f"{name} = ?" for name in changes)
        with self.transaction() as db:
            for table in ("job_rows", "faults", "job_counts"):
                db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
            db.executemany(
                "INSERT INTO job_rows (job_id, row_id, source_row, status, sfzhm, result_code, message, "
                "card_id, virtual_num) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((job_id, *row) for row in rows),
            )
            db.executemany(
                "INSERT INTO faults (job_id, row_id, seq, field, source, code, severity, message) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((job_id, *fault) for fault in faults),
            )
            self._recount(db, job_id)
            db.execute(
                f"UPDATE jobs SET {sets}, version = version + 1, updated_at = ? WHERE id = ?",
                (*changes.values(), now_text(), job_id),
            )

    @staticmethod
    def _recount(db: sqlite3.Connection, job_id: str) -> None:
        db.execute(
            "INSERT INTO job_counts (job_id, kind, key, n) "
            "SELECT ?, 'status', status, COUNT(*) FROM job_rows WHERE job_id = ? GROUP BY status",
            (job_id, job_id),
        )
        db.execute(
            "INSERT INTO job_counts (job_id, kind, key, n) "
            "SELECT ?, severity, code, COUNT(*) FROM faults WHERE job_id = ? GROUP BY severity, code",
            (job_id, job_id),
        )
        db.execute(
            "INSERT INTO job_counts (job_id, kind, key, n) "
            "SELECT ?, 'column', source, COUNT(*) FROM faults "
            "WHERE job_id = ? AND severity = 'error' GROUP BY source",
            (job_id, job_id),
        )

    def counts(self, job_id: str) -> dict[str, dict[str, int]]:
        """The job's counts: ``status`` -> {status: rows}, ``error``/``warning`` -> {code: faults},
        ``column`` -> {input field: error faults}."""
        found: dict[str, dict[str, int]] = {"status": {}, "error": {}, "warning": {}, "column": {}}
        for kind, key, n in self._all(
            "SELECT kind, key, n FROM job_counts WHERE job_id = ? AND n > 0", job_id
        ):
            found.setdefault(str(kind), {})[str(key)] = int(n)
        return found

    def _fault_filter(
        self, job_id: str, severity: str, code: int | None, source: str | None
    ) -> tuple[str, list[Any]]:
        where = "f.job_id = ? AND f.severity = ?"
        params: list[Any] = [job_id, severity]
        if code is not None:
            where, params = where + " AND f.code = ?", [*params, code]
        if source is not None:
            where, params = where + " AND f.source = ?", [*params, source]
        return where, params

    def fault_page(
        self, job_id: str, *, severity: str, code: int | None, source: str | None, offset: int, limit: int
    ) -> list[FaultLine]:
        """One page of a job's faults (of one severity, optionally one code and one column), by row."""
        where, params = self._fault_filter(job_id, severity, code, source)
        rows = self._all(
            "SELECT f.row_id, f.seq, f.field, f.source, f.code, f.severity, f.message, r.source_row, "
            "r.status "
            f"FROM (SELECT * FROM faults f WHERE {where} ORDER BY f.row_id, f.seq LIMIT ? OFFSET ?) f "
            "JOIN job_rows r ON r.job_id = f.job_id AND r.row_id = f.row_id ORDER BY f.row_id, f.seq",
            *params, limit, offset,
        )  # fmt: skip
        return [FaultLine(*row) for row in rows]

    def fault_count(self, job_id: str, *, severity: str, code: int | None, source: str | None) -> int:
        """How many faults a filter of :meth:`fault_page` has."""
        if code is None or source is None:
            counts = self.counts(job_id)
            if code is not None:
                return counts.get(severity, {}).get(str(code), 0)
            if source is not None and severity == "error":
                return counts["column"].get(source, 0)
            if source is None:
                return sum(counts.get(severity, {}).values())
        where, params = self._fault_filter(job_id, severity, code, source)
        row = self._one(f"SELECT COUNT(*) FROM faults f WHERE {where}", *params)
        return int(row[0]) if row else 0

    def row_page(self, job_id: str, status: str, offset: int, limit: int) -> list[RowState]:
        """Rows of one status, by row."""
        rows = self._all(
            "SELECT row_id, source_row, status, sfzhm, result_code, message, card_id, virtual_num "
            "FROM job_rows WHERE job_id = ? AND status = ? ORDER BY row_id LIMIT ? OFFSET ?",
            job_id, status, limit, offset,
        )  # fmt: skip
        return [RowState(*row) for row in rows]

    def rows(self, job_id: str, row_ids: Sequence[int]) -> dict[int, RowState]:
        """The state of the given rows."""
        if not row_ids:
            return {}
        found = self._all(
            "SELECT r.row_id, r.source_row, r.status, r.sfzhm, r.result_code, r.message, r.card_id, "
            f"r.virtual_num FROM {_WANTED} CROSS JOIN job_rows r ON r.job_id = ? AND r.row_id = w.value",
            json.dumps([int(r) for r in row_ids]), job_id,
        )  # fmt: skip
        return {int(row[0]): RowState(*row) for row in found}

    def all_rows(self, job_id: str) -> list[RowState]:
        """Every row of the job, by row."""
        found = self._all(
            "SELECT row_id, source_row, status, sfzhm, result_code, message, card_id, virtual_num "
            "FROM job_rows WHERE job_id = ? ORDER BY row_id",
            job_id,
        )
        return [RowState(*row) for row in found]

    def rows_with_ids(self, job_id: str, id_numbers: Iterable[str]) -> list[int]:
        """Rows whose normalised ID number is one of ``id_numbers`` (empty ones never match)."""
        wanted = sorted({i for i in id_numbers if i})
        if not wanted:
            return []
        found = self._all(
            f"SELECT r.row_id FROM {_WANTED} CROSS JOIN job_rows r INDEXED BY job_rows_by_id "
            "ON r.job_id = ? AND r.sfzhm = w.value",
            json.dumps(wanted), job_id,
        )  # fmt: skip
        return sorted(int(row[0]) for row in found)

    def faults_of(self, job_id: str, row_ids: Sequence[int] | None = None) -> list[tuple[Any, ...]]:
        """(row_id, seq, field, source, code, severity, message) of the given rows (or all), by row."""
        if row_ids is None:
            return self._all(
                "SELECT row_id, seq, field, source, code, severity, message FROM faults WHERE job_id = ? "
                "ORDER BY row_id, seq",
                job_id,
            )
        return self._all(
            "SELECT f.row_id, f.seq, f.field, f.source, f.code, f.severity, f.message "
            f"FROM {_WANTED} CROSS JOIN faults f ON f.job_id = ? AND f.row_id = w.value "
            "ORDER BY f.row_id, f.seq",
            json.dumps([int(r) for r in row_ids]), job_id,
        )  # fmt: skip

    def update_rows(
        self,
        job_id: str,
        updates: Sequence[RowUpdate],
        *,
        edit: tuple[int, str, str, str, int] | None = None,
        expect_version: int | None = None,
    ) -> int:
        """Replace the state and faults of some rows (and record ``edit``), keeping counts right.

        ``edit`` is (row_id, field, old, new, user_id).  With
        ``expect_version`` the change is refused (returns -1) if the job
        changed meanwhile.  Returns the job's new version.
        """
        with self.transaction() as db:
            if expect_version is not None:
                row = db.execute("SELECT version FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None or int(row[0]) != expect_version:
                    return -1
            ids = json.dumps([u.row_id for u in updates])
            self._count_rows(db, job_id, ids, -1)
            for row_id in (u.row_id for u in updates):
                db.execute("DELETE FROM faults WHERE job_id = ? AND row_id = ?", (job_id, row_id))
            db.executemany(
                "UPDATE job_rows SET status = ?, sfzhm = ?, result_code = ?, message = ?, card_id = '', "
                "virtual_num = '' WHERE job_id = ? AND row_id = ?",
                [(u.status, u.sfzhm, u.result_code, u.message, job_id, u.row_id) for u in updates],
            )
            db.executemany(
                "INSERT INTO faults (job_id, row_id, seq, field, source, code, severity, message) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(job_id, u.row_id, seq, *fault) for u in updates for seq, fault in enumerate(u.faults)],
            )
            self._count_rows(db, job_id, ids, +1)
            if edit is not None:
                db.execute(
                    "INSERT INTO edits (job_id, row_id, field, old, new, user_id, at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (job_id, *edit, now_text()),
                )
            db.execute(
                "UPDATE jobs SET version = version + 1, updated_at = ? WHERE id = ?", (now_text(), job_id)
            )
            row = db.execute("SELECT version FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return int(row[0])

    @staticmethod
    def _count_rows(db: sqlite3.Connection, job_id: str, ids: str, sign: int) -> None:
        """Add (``sign`` +1) or take away (-1) the given rows and their faults from the job's counts."""
        parts = (
            f"SELECT 'status', r.status, COUNT(*) FROM {_WANTED} CROSS JOIN job_rows r "
            "ON r.job_id = ? AND r.row_id = w.value GROUP BY r.status",
            f"SELECT f.severity, CAST(f.code AS TEXT), COUNT(*) FROM {_WANTED} CROSS JOIN faults f "
            "ON f.job_id = ? AND f.row_id = w.value GROUP BY f.severity, f.code",
            f"SELECT 'column', f.source, COUNT(*) FROM {_WANTED} CROSS JOIN faults f "
            "ON f.job_id = ? AND f.row_id = w.value WHERE f.severity = 'error' GROUP BY f.source",
        )
        for query in parts:
            for kind, key, n in db.execute(query, (ids, job_id)).fetchall():
                db.execute(
                    "INSERT INTO job_counts (job_id, kind, key, n) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(job_id, kind, key) DO UPDATE SET n = n + excluded.n",
                    (job_id, kind, str(key), sign * int(n)),
                )

    def edits(self, job_id: str, row_ids: Sequence[int] | None = None) -> list[tuple[int, str, str]]:
        """The latest edited value of every edited cell: (row_id, field, value), by row."""
        if row_ids is None:
            rows = self._all(
                "SELECT row_id, field, new FROM edits WHERE id IN "
                "(SELECT MAX(id) FROM edits WHERE job_id = ? GROUP BY row_id, field) ORDER BY row_id, id",
                job_id,
            )
        else:
            rows = self._all(
                "SELECT row_id, field, new FROM edits WHERE id IN (SELECT MAX(e.id) FROM "
                f"{_WANTED} CROSS JOIN edits e ON e.job_id = ? AND e.row_id = w.value "
                "GROUP BY e.row_id, e.field) "
                "ORDER BY row_id, id",
                json.dumps([int(r) for r in row_ids]), job_id,
            )  # fmt: skip
        return [(int(r), str(f), str(v)) for r, f, v in rows]

    def edit_history(self, job_id: str, limit: int = 50) -> list[tuple[Any, ...]]:
        """The latest edits of a job: (at, user name, source_row, field, old, new), newest first."""
        return self._all(
            "SELECT e.at, u.name, r.source_row, e.field, e.old, e.new FROM edits e "
            "JOIN users u ON u.id = e.user_id "
            "JOIN job_rows r ON r.job_id = e.job_id AND r.row_id = e.row_id "
            "WHERE e.job_id = ? ORDER BY e.id DESC LIMIT ?",
            job_id, limit,
        )  # fmt: skip

    def set_outcomes(self, job_id: str, outcomes: Iterable[tuple[str, str, str, str, str, int]]) -> None:
        """Write submission outcomes (status, result_code, message, card_id, virtual_num, row_id).

        The job's counts by status are counted again in the same transaction.
        """
        with self.transaction() as db:
            db.executemany(
                "UPDATE job_rows SET status = ?, result_code = ?, message = ?, card_id = ?, virtual_num = ? "
                "WHERE job_id = ? AND row_id = ?",
                ((s, c, m, card, virtual, job_id, row) for s, c, m, card, virtual, row in outcomes),
            )
            db.execute("DELETE FROM job_counts WHERE job_id = ? AND kind = 'status'", (job_id,))
            db.execute(
                "INSERT INTO job_counts (job_id, kind, key, n) "
                "SELECT ?, 'status', status, COUNT(*) FROM job_rows WHERE job_id = ? GROUP BY status",
                (job_id, job_id),
            )
            db.execute(
                "UPDATE jobs SET version = version + 1, updated_at = ? WHERE id = ?", (now_text(), job_id)
            )


def epoch() -> float:
    """Seconds since the epoch (session and throttling times)."""
    return time.time()
