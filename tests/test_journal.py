"""The journal: claims, outcomes, bulk look-ups, file records, durability across kill -9."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.state.journal import (
    STATE_ENROLLED,
    STATE_FAILED,
    STATE_REJECTED,
    STATE_SENDING,
    Journal,
    default_journal_path,
)

ID_A = "420123196205184516"
ID_B = "11010519491231002X"


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    with Journal(tmp_path / "state" / "journal.sqlite") as opened:
        yield opened


def test_claim_then_record_then_lookup(journal: Journal) -> None:
    assert journal.claim(ID_A, "a.xlsx", 12) is None
    assert journal.lookup(ID_A)["state"] == STATE_SENDING
    journal.record(ID_A, STATE_ENROLLED, 10000, "操作成功", "AB" * 32, "1" * 20)
    entry = journal.lookup(ID_A)
    assert entry["state"] == STATE_ENROLLED
    assert entry["ehealth_card_id"] == "AB" * 32
    assert entry["virtual_card_num"] == "1" * 20
    assert entry["source_file"] == "a.xlsx" and entry["source_row"] == 12
    # a second claim reports the state before it and keeps the card ids already known
    assert journal.claim(ID_A, "b.csv", 3) == STATE_ENROLLED
    journal.record(ID_A, STATE_ENROLLED, 10115, "身份证已经办理过")
    entry = journal.lookup(ID_A)
    assert entry["ehealth_card_id"] == "AB" * 32
    assert entry["sends"] == 2
    assert entry["result_code"] == 10115


def test_unknown_state_is_rejected(journal: Journal) -> None:
    with pytest.raises(ValueError):
        journal.record(ID_A, "done", 10000, "")


def test_lookup_many_returns_only_known_residents(journal: Journal) -> None:
    known = [f"{n:018d}" for n in range(0, 5000, 7)]
    for id_number in known:
        journal.record(id_number, STATE_REJECTED, 10111, "身份证号码不正确")
    journal.record(ID_B, STATE_FAILED, None, "无法连接平台")
    wanted = [f"{n:018d}" for n in range(5000)] + [ID_B, ID_B]
    found = journal.lookup_many(wanted)
    assert set(found.index) == {*known, ID_B}
    assert found.loc[ID_B, "state"] == STATE_FAILED
    assert found["result_code"].isna().sum() == 1  # the failed call had no answer
    assert (found.loc[known, "result_code"] == 10111).all()
    assert journal.lookup_many([]).empty
    assert journal.counts() == {STATE_REJECTED: len(known), STATE_FAILED: 1}


def test_residents_by_state(journal: Journal) -> None:
    journal.record(ID_A, STATE_ENROLLED, 10000, "", "C" * 64, "2" * 20)
    journal.claim(ID_B)
    assert list(journal.residents(STATE_ENROLLED).index) == [ID_A]
    assert list(journal.residents().index) == sorted([ID_A, ID_B])


def test_threads_share_one_journal(journal: Journal) -> None:
    def work(offset: int) -> None:
        for n in range(offset, offset + 100):
            id_number = f"{n:018d}"
            assert journal.claim(id_number) is None
            journal.record(id_number, STATE_ENROLLED, 10000, "", f"{n:064X}", f"{n:020d}")

    threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert journal.counts() == {STATE_ENROLLED: 800}


def test_file_records(journal: Journal) -> None:
    assert not journal.file_seen("h1")
    journal.record_file("h1", "a.xlsx", "processing", "", started_at="2026-01-01T01:00:00")
    assert not journal.file_seen("h1"), "a file whose run died before the end is taken again"
    journal.record_file("h1", "a.xlsx", "processed", "/out/a", finished_at="2026-01-01T01:05:00")
    assert journal.file_seen("h1")
    record = journal.file_record("h1")
    assert record is not None
    assert record.started_at == "2026-01-01T01:00:00" and record.finished_at == "2026-01-01T01:05:00"
    assert record.status == "processed" and record.out_dir == "/out/a"
    journal.record_file("h0", "b.csv", "failed", "", "2025-12-31T01:00:00", "2025-12-31T01:00:01")
    assert [r.content_hash for r in journal.files()] == ["h0", "h1"]
    assert journal.file_record("nope") is None


def test_file_is_private_and_default_location(tmp_path: Path) -> None:
    path = default_journal_path(tmp_path / "state")
    assert path == tmp_path / "state" / "journal.sqlite"
    Journal(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_not_a_journal_is_a_config_error(tmp_path: Path) -> None:
    bogus = tmp_path / "journal.sqlite"
    bogus.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(ConfigError, match="提交日志"):
        Journal(bogus)


_KILLED_WRITER = """
import os, signal, sys
from pipeline.state.journal import Journal
journal = Journal(sys.argv[1])
journal.record("420123196205184516", "enrolled", 10000, "ok", "D" * 64, "3" * 20)
journal.claim("11010519491231002X")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_outcomes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path)], cwd=Path(__file__).parents[1])
    assert done.returncode == -9
    with Journal(path) as journal:
        assert journal.lookup(ID_A)["ehealth_card_id"] == "D" * 64
        assert journal.lookup(ID_B)["state"] == STATE_SENDING
    assert os.path.exists(path)


def test_lookup_many_without_sqlite_json(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    journal.record(ID_A, STATE_ENROLLED, 10000, "", "F" * 64, "6" * 20)
    real = journal._db

    class WithoutJson:
        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if "json_each" in sql:
                raise sqlite3.OperationalError("no such table: json_each")
            return real.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    monkeypatch.setattr(journal, "_db", WithoutJson())
    found = journal.lookup_many([ID_A, ID_B, ID_A])
    assert list(found.index) == [ID_A] and found.loc[ID_A, "ehealth_card_id"] == "F" * 64
    assert journal.lookup_many([ID_B]).empty


def test_card_ids_found_later_are_stored_without_touching_the_outcome(journal: Journal) -> None:
    journal.record(ID_A, STATE_ENROLLED, 10115, "平台答复已办理：上次发送可能已成功但答复丢失")
    journal.record(ID_B, STATE_ENROLLED, 10000, "操作成功", "CD" * 32, "2" * 20)
    journal.record("440604198001010011", STATE_REJECTED, 10124, "出生日期格式不正确")
    assert journal.enrolled_without_card_ids() == [ID_A]
    journal.set_card_ids(ID_A, "AB" * 32, "1" * 20)
    entry = journal.lookup(ID_A)
    assert (entry["ehealth_card_id"], entry["virtual_card_num"]) == ("AB" * 32, "1" * 20)
    assert entry["state"] == STATE_ENROLLED and entry["result_code"] == 10115
    assert entry["message"].startswith("平台答复已办理")
    assert journal.enrolled_without_card_ids() == []


def test_a_card_found_for_one_resident_is_taken_from_another_recorded_with_it(journal: Journal) -> None:
    # B was recorded from a mixed-up answer carrying A's card; A's lookup names the card as A's.
    journal.record(ID_A, STATE_ENROLLED, 10115, "平台答复已办理：上次发送可能已成功但答复丢失")
    journal.record(ID_B, STATE_ENROLLED, 10000, "操作成功", "AB" * 32, "1" * 20)
    assert journal.set_card_ids(ID_A, "AB" * 32, "1" * 20) == [ID_B]
    a, b = journal.lookup(ID_A), journal.lookup(ID_B)
    assert (a["state"], a["ehealth_card_id"]) == (STATE_ENROLLED, "AB" * 32)
    assert (b["state"], b["ehealth_card_id"], b["virtual_card_num"]) == (STATE_FAILED, "", "")
    assert "另一位居民" in b["message"]  # sent again by the next run, never exported with A's card
    assert journal.set_card_ids(ID_A, "AB" * 32, "1" * 20) == []


def test_a_full_database_is_one_clear_config_error(journal: Journal) -> None:
    journal._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(ConfigError, match="磁盘空间"):
        for serial in range(2000):
            journal.mark_sending(f"{serial:018d}")


class _DiskFullButTheReserve:
    """The journal's connection on a disk that fills up: once ``full``, every write fails while the
    journal's reserve takes the last room (SQLite's own "database or disk is full"), and succeeds once
    the reserve is deleted and its room free again."""

    def __init__(self, journal: Journal) -> None:
        self._db, self._reserve = journal._db, journal.reserve_path
        self.full = False
        self.refused = 0

    def execute(self, statement: str, *args: object) -> sqlite3.Cursor:
        writing = not statement.lstrip().upper().startswith(("SELECT", "PRAGMA WAL_CHECKPOINT"))
        if self.full and writing and self._reserve.exists():
            self.refused += 1
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(statement, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_a_disk_that_fills_up_loses_no_answer_of_a_call_in_flight(journal: Journal) -> None:
    disk = _DiskFullButTheReserve(journal)
    journal._db = disk  # type: ignore[assignment]
    journal.mark_sending(ID_A)
    journal.mark_sending(ID_B)  # two calls in flight
    assert sum(file.stat().st_size for file in journal.reserve_path.iterdir()) >= 1024 * 1024
    disk.full = True
    journal.record(ID_A, STATE_ENROLLED, 10000, "操作成功", "AB" * 32, "1" * 20)
    journal.record(ID_B, STATE_REJECTED, 10156, "该人属于贫困人口")
    assert disk.refused == 1 and not journal.reserve_path.exists()
    with pytest.raises(ConfigError, match="磁盘已满，已停止发送"):
        journal.mark_sending("110105194912310037")
    entry = journal.lookup(ID_A)
    assert entry is not None and entry["state"] == STATE_ENROLLED
    assert (entry["ehealth_card_id"], entry["virtual_card_num"]) == ("AB" * 32, "1" * 20)
    assert journal.lookup(ID_B)["state"] == STATE_REJECTED  # type: ignore[index]
    assert journal.lookup("110105194912310037") is None, "nobody claimed once the room is gone"


def test_no_claim_without_room_for_the_answer(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_room(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room, raising=False)
    monkeypatch.setattr(os, "replace", no_room)
    with pytest.raises(ConfigError, match=r"磁盘空间不足.*未发送"):
        journal.mark_sending(ID_A)
    assert journal.lookup(ID_A) is None and not journal.reserve_path.exists()
    assert [p.name for p in journal.path.parent.iterdir() if "reserve" in p.name] == []
