"""The sandbox's state in SQLite: apps, work keys, residents, cards, bindings, and a request log.

A restart keeps everything.  The ``requests`` table records every request with
its arrival time (seconds since the epoch), so tests and benchmarks can check
the one-second windows a client produced from the platform's own point of view.

Card ids are deterministic per resident, independent of the app:
``ehealthCardId`` is the upper-case SHA-256 hex of the resident's ID number
(64 characters), ``virtualCardNum`` 20 digits derived the same way.

One connection serves every handler thread, under a lock: SQLite writes are
serialised anyway, and one connection keeps the per-request cost low.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.files import private_file
from schemas.result_codes import ResultCode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (app_id TEXT PRIMARY KEY, secret TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS work_keys (
    work_key TEXT PRIMARY KEY, app_id TEXT NOT NULL, issued_at REAL NOT NULL, revoked_at REAL
);
CREATE INDEX IF NOT EXISTS work_keys_app ON work_keys (app_id, revoked_at);
CREATE TABLE IF NOT EXISTS residents (
    sfzhm TEXT PRIMARY KEY, zjlx TEXT NOT NULL, zjhm TEXT NOT NULL, xm TEXT NOT NULL, brdh TEXT NOT NULL,
    app_id TEXT NOT NULL, enrolled_at REAL NOT NULL, people TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS residents_document ON residents (zjlx, zjhm);
CREATE TABLE IF NOT EXISTS cards (
    kh TEXT PRIMARY KEY, ehealth_card_id TEXT NOT NULL UNIQUE, virtual_card_num TEXT NOT NULL UNIQUE,
    sfzhm TEXT NOT NULL UNIQUE REFERENCES residents (sfzhm), card TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bindings (
    id INTEGER PRIMARY KEY, app_id TEXT NOT NULL, ehealth_card_id TEXT NOT NULL, bind_type TEXT NOT NULL,
    bind_zjlx TEXT NOT NULL, bind_zjhm TEXT NOT NULL, bound_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY, app_id TEXT NOT NULL, method TEXT NOT NULL, arrived REAL NOT NULL,
    http_status INTEGER NOT NULL, result_code INTEGER, fault TEXT
);
CREATE INDEX IF NOT EXISTS requests_app ON requests (app_id, arrived);
"""


@dataclass(frozen=True)
class Card:
    """An enrolled resident's card."""

    sfzhm: str
    xm: str
    brdh: str
    kh: str
    ehealth_card_id: str
    virtual_card_num: str


def ehealth_card_id(sfzhm: str) -> str:
    """The resident's deterministic ``ehealthCardId``: 64 upper-case hex characters."""
    return hashlib.sha256(f"ehc-sandbox-card|{sfzhm}".encode()).hexdigest().upper()


def virtual_card_num(sfzhm: str) -> str:
    """The resident's deterministic ``virtualCardNum``: 20 digits."""
    number = int(hashlib.sha256(f"ehc-sandbox-virtual|{sfzhm}".encode()).hexdigest(), 16) % 10**19
    return f"1{number:019d}"


class SandboxStore:
    """The SQLite state file at ``path`` (created if absent, WAL mode)."""

    def __init__(self, path: Path) -> None:
        private_file(path)  # holds the apps' secrets: the owner's only, -wal and -shm alike
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._secrets: dict[str, str] = dict(self._db.execute("SELECT app_id, secret FROM apps"))
            self._keys: dict[str, tuple[str, float]] = {
                app: (key, issued)
                for key, app, issued in self._db.execute(
                    "SELECT work_key, app_id, issued_at FROM work_keys WHERE revoked_at IS NULL"
                )
            }

    # -- apps and work keys ----------------------------------------------------------

    def register_app(self, app_id: str, secret: str) -> None:
        """Register (or re-key) an app."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO apps VALUES (?, ?)", (app_id, secret))
            self._secrets[app_id] = secret

    def app_secret(self, app_id: str) -> str | None:
        """The secret of a registered app, ``None`` for an unknown app id."""
        return self._secrets.get(app_id)

    def issue_work_key(self, app_id: str, now: float) -> str:
        """A new work key for ``app_id``; the previous one stops working."""
        key = secrets.token_hex(16).upper()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE work_keys SET revoked_at = ? WHERE app_id = ? AND revoked_at IS NULL", (now, app_id)
            )
            self._db.execute("INSERT INTO work_keys VALUES (?, ?, ?, NULL)", (key, app_id, now))
            self._keys[app_id] = (key, now)
        return key

    def work_key(self, app_id: str) -> tuple[str, float] | None:
        """The app's current work key and when it was issued."""
        return self._keys.get(app_id)

    # -- residents and cards ---------------------------------------------------------

    def enrol(
        self, app_id: str, people: Mapping[str, str], card: Mapping[str, str], now: float
    ) -> tuple[ResultCode, Card]:
        """Enrol a resident: ``(10000, card)``, or 10115 (ID enrolled already) / 10116 (card number used)."""
        sfzhm = people["sfzhm"]
        enrolled = Card(
            sfzhm, people["xm"], people["brdh"], card.get("kh") or virtual_card_num(sfzhm),
            ehealth_card_id(sfzhm), virtual_card_num(sfzhm),
        )  # fmt: skip
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if self._db.execute("SELECT 1 FROM residents WHERE sfzhm = ?", (sfzhm,)).fetchone():
                return ResultCode.ALREADY_ENROLLED, enrolled
            if self._db.execute("SELECT 1 FROM cards WHERE kh = ?", (enrolled.kh,)).fetchone():
                return ResultCode.CARD_NUMBER_TAKEN, enrolled
            self._db.execute(
                "INSERT INTO residents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (sfzhm, people["zjlx"], people["zjhm"], people["xm"], people["brdh"], app_id, now,
                 json.dumps(dict(people), ensure_ascii=False)),
            )  # fmt: skip
            self._db.execute(
                "INSERT INTO cards VALUES (?, ?, ?, ?, ?)",
                (enrolled.kh, enrolled.ehealth_card_id, enrolled.virtual_card_num, sfzhm,
                 json.dumps(dict(card), ensure_ascii=False)),
            )  # fmt: skip
        return ResultCode.SUCCESS, enrolled

    _CARD_QUERY = (
        "SELECT r.sfzhm, r.xm, r.brdh, c.kh, c.ehealth_card_id, c.virtual_card_num "
        "FROM residents r JOIN cards c ON c.sfzhm = r.sfzhm "
    )

    def find_by_document(self, zjlx: str, zjhm: str) -> Card | None:
        """The card of the resident with this document (an ID number for type 01)."""
        with self._lock:
            row = self._db.execute(
                self._CARD_QUERY + "WHERE r.sfzhm = ? AND ? = '01'", (zjhm, zjlx)
            ).fetchone()
            if row is None:
                row = self._db.execute(
                    self._CARD_QUERY + "WHERE r.zjlx = ? AND r.zjhm = ?", (zjlx, zjhm)
                ).fetchone()
        return Card(*row) if row else None

    def find_card(self, ehealth_card_id: str, virtual_card_num: str) -> Card | None:
        """A card by ``ehealthCardId`` (which wins when both are given) or ``virtualCardNum``."""
        with self._lock:
            if ehealth_card_id:
                row = self._db.execute(self._CARD_QUERY + "WHERE c.ehealth_card_id = ?", (ehealth_card_id,))
            else:
                row = self._db.execute(self._CARD_QUERY + "WHERE c.virtual_card_num = ?", (virtual_card_num,))
            found = row.fetchone()
        return Card(*found) if found else None

    def record_binding(
        self, app_id: str, card_id: str, bind_type: str, bind_zjlx: str, bind_zjhm: str, now: float
    ) -> None:
        """Remember that ``app_id`` bound a card."""
        with self._lock:
            self._db.execute(
                "INSERT INTO bindings (app_id, ehealth_card_id, bind_type, bind_zjlx, bind_zjhm, bound_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (app_id, card_id, bind_type, bind_zjlx, bind_zjhm, now),
            )

    def resident_count(self) -> int:
        """How many residents are enrolled."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM residents").fetchone()[0])

    # -- request log -----------------------------------------------------------------

    def log_request(
        self,
        app_id: str,
        method: str,
        arrived: float,
        http_status: int,
        result_code: int | None,
        fault: str | None,
    ) -> None:
        """Record one request (every request, faulted or refused ones included)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO requests (app_id, method, arrived, http_status, result_code, fault) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (app_id, method, arrived, http_status, result_code, fault),
            )

    def arrivals(self, app_id: str | None = None, method: str | None = None) -> list[float]:
        """Arrival times (epoch seconds, ascending) of the logged requests, optionally filtered."""
        query, params = "SELECT arrived FROM requests WHERE 1 = 1", list[str]()
        if app_id is not None:
            query, params = query + " AND app_id = ?", [*params, app_id]
        if method is not None:
            query, params = query + " AND method = ?", [*params, method]
        with self._lock:
            return [row[0] for row in self._db.execute(query + " ORDER BY arrived", params)]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most arrivals in any half-open window ``[t, t + window)`` (``times`` ascending)."""
    most, start = 0, 0
    for end, arrived in enumerate(times):
        while arrived - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most
