"""A platform that misbehaves, over loopback: lost answers, a full journal, endless answers, a dying
platform, 429s, and another client replacing the work key.

Each test drives the real sandbox (in-process, so faults can be injected at a
chosen moment; some in a subprocess) with the real client, pool and journal.
Timeouts, backoffs and the breaker's patience are short, so the suite stays fast.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import SandboxHandle, make_resident
from submit_helpers import make_batch, submit_quickly, write_register

from pipeline.config import DefaultValues, Settings, SubmitSettings
from pipeline.errors import AuthenticationRefused, ConfigError, PlatformUnreachable
from pipeline.model import Batch
from pipeline.platform.client import PlatformClient
from pipeline.state.journal import STATE_ENROLLED, STATE_SENDING, Journal
from pipeline.submission.submit import run_submit

#: What a row says when the platform answers 10115 to a resend after an answer was lost.
MESSAGE_ANSWER_LOST = "平台答复已办理：上次发送可能已成功但答复丢失"


def _batch(first: int, count: int) -> Batch:
    return make_batch(
        [{**card, **people} for card, people in map(make_resident, range(first, first + count))]
    )


def _client(
    sandbox: SandboxHandle, state: Path, *, rate: float | None = None, **options: Any
) -> PlatformClient:
    """A client with quick retries; ``options`` are platform settings or client keywords."""
    client_keys = {
        "deadline", "max_answer_bytes", "pool_size",
        "breaker_failures", "breaker_silence", "breaker_throttle_silence",
    }  # fmt: skip
    client_options = {k: options.pop(k) for k in list(options) if k in client_keys}
    settings = sandbox.settings(**{"max_attempts": 3, "max_retry_seconds": 10.0, **options})
    return PlatformClient(settings, state, rate=rate, initial_wait=0.01, **client_options)


class _Hooked:
    """A client that runs ``before`` with the resident's ID number before each syncCardInfo."""

    def __init__(self, client: PlatformClient, before: Callable[[str], None]) -> None:
        self._client, self._before = client, before

    def sync_card_info(self, card_info: dict[str, str], people_info: dict[str, str]) -> Any:
        self._before(people_info["sfzhm"])
        return self._client.sync_card_info(card_info, people_info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _answers(sandbox: SandboxHandle, method: str = "syncCardInfo") -> dict[Any, int]:
    rows = sandbox.query("SELECT result_code, count(*) FROM requests WHERE method = ? GROUP BY 1", method)
    return {code: count for code, count in rows}


# -- 1. an answer lost after the platform enrolled the resident ---------------------------------------


def test_lost_answer_is_told_truthfully_and_a_later_run_recovers_the_card_ids(
    sandbox: SandboxHandle, tmp_path: Path, journal: Journal
) -> None:
    batch = _batch(0, 6)
    lost = batch.rows.loc[[1, 4], "sfzhm"].tolist()

    def lose(id_number: str) -> None:
        if id_number in lost:
            sandbox.inject("lost", methods=("syncCardInfo",))

    with _client(sandbox, tmp_path / "state") as client:
        submit_quickly(batch, _Hooked(client, lose), journal, concurrency=1)
    assert sandbox.residents() == 6 and _answers(sandbox) == {10000: 6, 10115: 2}
    assert batch.outcome["status"].tolist() == [
        "enrolled", "already_enrolled", "enrolled", "enrolled", "already_enrolled", "enrolled",
    ]  # fmt: skip
    for row in (1, 4):
        message = batch.outcome.loc[row, "message"]
        assert message.startswith(MESSAGE_ANSWER_LOST) and "别处" not in message
        assert "--lookup-existing" in message and batch.outcome.loc[row, "ehealthCardId"] == ""
    assert journal.enrolled_without_card_ids() == sorted(lost)

    # A later run with lookup allowed recovers the ids of those rows, from the journal's residents.
    again = _batch(0, 6)
    with _client(sandbox, tmp_path / "state") as client:
        submit_quickly(again, client, journal, lookup_existing=True)
    assert _answers(sandbox) == {10000: 6, 10115: 2}, "nobody was sent again"
    assert sandbox.count("bindCardInfo") == 2
    assert (again.outcome["status"] == "already_enrolled").all()
    cards = dict(sandbox.query("SELECT sfzhm, ehealth_card_id FROM cards"))
    assert again.outcome["ehealthCardId"].tolist() == [cards[i] for i in again.rows["sfzhm"]]
    assert "bindCardInfo" in again.outcome.loc[1, "message"]
    assert journal.enrolled_without_card_ids() == []

    # Now everyone is known with ids: a third run makes no call at all.
    before = len(sandbox.arrivals())
    with _client(sandbox, tmp_path / "state") as client:
        submit_quickly(_batch(0, 6), client, journal, lookup_existing=True)
    assert len(sandbox.arrivals()) == before


def test_a_call_whose_every_answer_was_lost_says_its_outcome_is_unknown_not_failed(
    sandbox: SandboxHandle, tmp_path: Path, journal: Journal
) -> None:
    batch = _batch(20, 1)
    sandbox.inject("lost", count=3, methods=("syncCardInfo",))  # every attempt enrols, none is answered
    # Nothing the run sent was answered: the platform counts as unreachable (exit 2), however short the run.
    with _client(sandbox, tmp_path / "state") as client, pytest.raises(PlatformUnreachable, match="没有应答"):
        submit_quickly(batch, client, journal, concurrency=1)
    assert sandbox.residents() == 1
    (status,), (message,) = batch.outcome["status"].tolist(), batch.outcome["message"].tolist()
    assert status == "failed" and message.startswith("发送结果未知") and "发送失败" not in message


def test_lost_answer_with_lookup_allowed_gets_the_ids_in_the_same_run(
    sandbox: SandboxHandle, tmp_path: Path, journal: Journal
) -> None:
    batch = _batch(10, 3)
    sandbox.inject("lost", methods=("syncCardInfo",))
    with _client(sandbox, tmp_path / "state") as client:
        submit_quickly(batch, client, journal, concurrency=1, lookup_existing=True)
    assert batch.outcome["status"].tolist() == ["already_enrolled", "enrolled", "enrolled"]
    assert batch.outcome.loc[0, "message"].startswith(MESSAGE_ANSWER_LOST)
    assert len(batch.outcome.loc[0, "ehealthCardId"]) == 64 and sandbox.count("bindCardInfo") == 1


def test_residents_of_other_registers_are_looked_up_only_with_their_own_rows(
    sandbox: SandboxHandle, tmp_path: Path, journal: Journal
) -> None:
    with _client(sandbox, tmp_path / "state") as client:
        elsewhere = [make_resident(serial) for serial in (20, 21)]
        for card, people in elsewhere:
            assert client.sync_card_info(card, people).ok
            journal.record(people["sfzhm"], STATE_ENROLLED, 10115, MESSAGE_ANSWER_LOST)  # ids lost
        # bindCardInfo needs the name and phone (必填), which the journal does not keep: not looked up here
        submit_quickly(_batch(22, 1), client, journal, lookup_existing=True)
        assert sandbox.count("bindCardInfo") == 0
        assert len(journal.enrolled_without_card_ids()) == 2
        # Their register submitted again: looked up with the names and phones of its rows.
        again = make_batch([{**card, **people} for card, people in elsewhere])
        submit_quickly(again, client, journal, lookup_existing=True)
    assert sandbox.count("bindCardInfo") == 2
    assert journal.enrolled_without_card_ids() == []
    found = journal.lookup_many([p["sfzhm"] for _, p in elsewhere])["ehealth_card_id"]
    assert found.str.len().tolist() == [64, 64]


def test_qrcode_names_the_residents_without_ids_then_exports_them_once_recovered(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    from pipeline.submission.qrcode import describe_export, export_qrcodes

    people = [make_resident(serial)[1] for serial in range(30, 34)]
    register = write_register(tmp_path / "reg.csv", people)
    settings = Settings(
        platform=sandbox.settings(max_attempts=3), submit=SubmitSettings(rate=0.0, concurrency=1),
        defaults=DefaultValues(org_code="455400000"), state_dir=tmp_path / "state",
    )  # fmt: skip
    sandbox.inject("lost", methods=("syncCardInfo",))
    run_submit([register], tmp_path / "out", settings)
    # A run's rows are not kept in memory: its outcome is read back from results.csv.
    first = pd.read_csv(
        tmp_path / "out" / "results.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig"
    )
    assert first["ehealthCardId"].eq("").sum() == 1

    with PlatformClient(sandbox.settings(), tmp_path / "state") as client:
        export = export_qrcodes(tmp_path / "out", tmp_path / "qr", client, settings.journal_path)
        assert len(export.written) == 3 and len(export.failed) == 1
        text = describe_export(export, tmp_path / "qr")
        lost = people[0]["sfzhm"]
        assert f"{lost[:6]}********{lost[-4:]}" in text and lost not in text and "--lookup-existing" in text

        # Recovered by a later submission (any register will do), the same results folder exports everyone.
        run_submit([register], tmp_path / "again", settings, lookup_existing=True)
        export = export_qrcodes(tmp_path / "out", tmp_path / "qr2", client, settings.journal_path)
    assert len(export.written) == 4 and export.failed == []


# -- 2. the journal cannot be written (full disk) ------------------------------------------------------


def test_a_journal_that_fills_up_mid_run_loses_no_answer_and_the_next_run_is_safe(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    path = tmp_path / "journal.sqlite"
    batch = _batch(40, 60)
    with Journal(path) as journal, _client(sandbox, tmp_path / "state") as client:
        # SQLite's own "database or disk is full" once the file would grow past its current pages.
        journal._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
        journal._db.execute(f"PRAGMA max_page_count = {pages + 1}")
        with pytest.raises(ConfigError, match="提交日志"):
            submit_quickly(batch, client, journal, concurrency=4)
    statuses = batch.outcome["status"]
    assert "valid" not in set(statuses), "every row says what the platform answered, or that it was not sent"
    enrolled = set(batch.rows.loc[statuses == "enrolled", "sfzhm"])
    assert enrolled == {row[0] for row in sandbox.query("SELECT sfzhm FROM residents")}
    assert 0 < len(enrolled) < 60
    assert batch.outcome.loc[statuses == "failed", "message"].str.contains("提交日志|发送结果未知").all()

    with Journal(path) as journal:  # the disk has room again
        states = journal.lookup_many(sorted(enrolled))["state"]
        assert set(states) <= {STATE_ENROLLED, STATE_SENDING}, "an unrecorded answer leaves its claim"
        again = _batch(40, 60)
        with _client(sandbox, tmp_path / "state") as client:
            submit_quickly(again, client, journal)
    assert set(again.outcome["status"]) <= {"enrolled", "already_enrolled"}
    assert sandbox.residents() == 60 and _answers(sandbox)[10000] == 60, "nobody enrolled twice"


def test_a_disk_that_fills_up_mid_run_keeps_every_answer_in_the_journal(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    path = tmp_path / "journal.sqlite"
    batch = _batch(900, 40)
    journal_files = {path.name, f"{path.name}-wal", f"{path.name}-shm"}

    def others() -> int:  # bytes the other files beside the journal take
        beside = [f for f in tmp_path.rglob("*") if f.is_file() and f.name not in journal_files]
        return sum(f.stat().st_size for f in beside)

    with Journal(path) as journal, _client(sandbox, tmp_path / "state") as client:
        connection = journal._db
        full = threading.Event()
        taken: list[int] = []

        class FullDisk:  # once full, SQLite's writes fail unless a file beside it made room by going away
            def execute(self, statement: str, *args: Any) -> Any:
                writing = not statement.lstrip().upper().startswith(("SELECT", "PRAGMA WAL_CHECKPOINT"))
                if full.is_set() and writing:
                    taken.append(taken[0] if taken else others())
                    if others() >= taken[0]:
                        raise sqlite3.OperationalError("database or disk is full")
                return connection.execute(statement, *args)

            def __getattr__(self, name: str) -> Any:
                return getattr(connection, name)

        journal._db = FullDisk()  # type: ignore[assignment]
        sent: list[str] = []

        def fill_up_at_the_tenth(sfzhm: str) -> None:  # the tenth call is in flight as the disk fills up
            sent.append(sfzhm)
            if len(sent) == 10:
                full.set()

        with pytest.raises(ConfigError, match="磁盘"):
            submit_quickly(batch, _Hooked(client, fill_up_at_the_tenth), journal, concurrency=1)
        answered = batch.outcome[batch.outcome["status"] == "enrolled"]
        ids = batch.rows.loc[answered.index, "sfzhm"]
        known = journal.lookup_many(ids.tolist())
    assert len(answered) == 10 == sandbox.residents()
    # Every answer the platform gave is in the journal, card ids and all: none is left "sending".
    assert (known.loc[ids, "state"] == STATE_ENROLLED).all()
    assert known.loc[ids, "ehealth_card_id"].tolist() == answered["ehealthCardId"].tolist()
    with Journal(path) as journal:
        assert journal.counts().get(STATE_SENDING, 0) == 0


def test_a_journal_checkpoint_that_fails_keeps_the_answers(
    sandbox: SandboxHandle, tmp_path: Path, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_: Any) -> None:
        raise ConfigError(f"无法写入提交日志 {journal.path}（database or disk is full）。请检查磁盘空间")

    monkeypatch.setattr(journal, "flush", full)
    batch = _batch(110, 5)
    with _client(sandbox, tmp_path / "state") as client, pytest.raises(ConfigError):
        submit_quickly(batch, client, journal)
    assert batch.outcome["status"].tolist() == ["enrolled"] * 5


# -- 3. answers without bounds: huge, dripped -------------------------------------------------------------


@pytest.mark.sandbox(huge_mb=64)
def test_a_huge_answer_is_cut_at_a_few_megabytes(sandbox: SandboxHandle, tmp_path: Path) -> None:
    with _client(sandbox, tmp_path, max_attempts=1) as client:
        client.work_key()
        sandbox.inject("huge", methods=("syncCardInfo",))
        started = time.monotonic()
        result = client.sync_card_info(*make_resident(50))
    assert result.result_code is None and "过大" in result.message
    assert time.monotonic() - started < 10
    assert sandbox.server is not None
    time.sleep(0.2)
    assert sandbox.server.huge_written < 32 * 1024 * 1024, "the client stopped reading long before the end"


@pytest.mark.sandbox(drip_ms=150)
def test_a_dripped_answer_is_cut_at_the_deadline_and_the_resend_is_read_truthfully(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    results: list[Any] = []
    with _client(sandbox, tmp_path, connect_timeout=0.5, read_timeout=1.0, max_attempts=2) as client:
        client.work_key()
        sandbox.inject("drip", methods=("syncCardInfo",))  # about 200 bytes: 30 s at 150 ms a byte
        worker = threading.Thread(target=lambda: results.append(client.sync_card_info(*make_resident(51))))
        started = time.monotonic()
        worker.start()
        worker.join(timeout=15)
        elapsed = time.monotonic() - started
    assert not worker.is_alive(), "the call must end at its deadline, not when the last byte drips in"
    assert elapsed < 6
    (result,) = results
    assert result.result_code == 10115 and result.uncertain  # the dripped call had enrolled the resident


# -- 4. the platform dies mid-run ---------------------------------------------------------------------------


def test_a_platform_that_dies_stops_the_run_quickly_and_marks_the_rest_not_sent(
    sandbox: SandboxHandle, tmp_path: Path, journal: Journal
) -> None:
    batch = _batch(60, 60)
    calls = {"count": 0}

    def die_after_ten(id_number: str) -> None:
        calls["count"] += 1
        if calls["count"] == 11:
            sandbox.inject("down")

    settings = {"max_attempts": 5, "max_retry_seconds": 30.0, "connect_timeout": 0.5}
    with _client(sandbox, tmp_path / "state", **settings) as client:
        started = time.monotonic()
        with pytest.raises(PlatformUnreachable, match="无法访问"):
            submit_quickly(batch, _Hooked(client, die_after_ten), journal, concurrency=1)
        elapsed = time.monotonic() - started
    assert elapsed < 10, "no full round of retries per remaining row"
    statuses = batch.outcome["status"]
    assert (statuses == "enrolled").sum() == sandbox.residents() == 10
    assert set(statuses) == {"enrolled", "failed"}
    not_sent = batch.outcome.loc[statuses == "failed", "message"]
    assert not_sent.str.startswith("未发送：平台").sum() >= 45
    assert calls["count"] <= 15, "nothing more is sent once the platform counts as unreachable"
    # The calls sent to the dead platform say they were sent and their outcome is unknown; nobody interrupted.
    tried = not_sent[~not_sent.str.startswith("未发送")]
    # (a call whose first request met the dying platform may have reached it: its outcome is unknown)
    assert len(tried) >= 1 and tried.str.match("发送失败|发送结果未知").all(), tried.tolist()
    assert not batch.outcome["message"].str.contains("已中断").any()


def test_a_flaky_platform_that_still_answers_does_not_trip_the_breaker(
    start_sandbox: Callable[..., SandboxHandle], tmp_path: Path, journal: Journal
) -> None:
    sandbox = start_sandbox(fault_rate=0.3, seed=11, fault_kinds=("drop", "http500"))
    batch = _batch(130, 60)
    with _client(sandbox, tmp_path / "state", max_attempts=8, breaker_silence=0.2) as client:
        submit_quickly(batch, client, journal, concurrency=4)
    assert (batch.outcome["status"] == "enrolled").all()


# -- 5. HTTP 429 with Retry-After -----------------------------------------------------------------------


@pytest.mark.sandbox(subprocess=True, rate_limit=10, latency_ms=5)
def test_429_slows_every_thread_and_fails_no_row(
    sandbox: SandboxHandle, tmp_path: Path, journal: Journal
) -> None:
    batch = _batch(200, 60)
    with _client(sandbox, tmp_path / "state", rate=40, max_attempts=5) as client:
        started = time.monotonic()
        stats: Any = submit_quickly(batch, client, journal, rate=40, concurrency=8)
        elapsed = time.monotonic() - started
        assert (batch.outcome["status"] == "enrolled").all(), batch.outcome["message"].value_counts()
        throttles = client.throttles
    refused = sandbox.query("SELECT count(*) FROM requests WHERE http_status = 429")[0][0]
    assert throttles >= 1 and refused < 60, "the limiter slowed down instead of hammering"
    assert stats.sent / elapsed > 4, "and kept close to what the platform allows (10/s)"


def test_limiter_backs_off_on_429_then_recovers() -> None:
    from pipeline.platform.ratelimit import PROBE_SECONDS, RECOVERY_SECONDS, SlidingWindowLimiter

    now = [0.0]
    limiter = SlidingWindowLimiter(20, margin=0.0, clock=lambda: now[0])
    tickets = []
    for _ in range(8):
        ticket = limiter.acquire()
        assert ticket is not None
        ticket.sent()
        tickets.append(ticket)
    now[0] = 0.1
    for ticket in tickets[5:]:  # three answers come back 429
        limiter.throttled(ticket.at, 2.0)
    assert limiter.throttles == 1, "429s to requests sent at the old rate lower it once"
    assert limiter.rate == 7, "down to what the platform accepted when the first 429 came"

    admitted = threading.Event()
    waiter = threading.Thread(target=lambda: limiter.acquire() and admitted.set(), daemon=True)
    waiter.start()
    assert not admitted.wait(0.3), "nobody is admitted during Retry-After"
    now[0] = 2.2
    limiter.wake()
    assert admitted.wait(5)

    now[0] += RECOVERY_SECONDS + 0.1
    assert limiter.acquire() is not None and limiter.rate == 8, "a calm spell raises the rate a step"
    now[0] += 0.01
    late = limiter.acquire()
    assert late is not None
    late.sent()
    limiter.throttled(late.at, 1.0)  # 8 is too fast as well
    assert limiter.rate == 7 and limiter.throttles == 2
    for _ in range(3):
        now[0] += RECOVERY_SECONDS + 1.1
        limiter.acquire()
    assert limiter.rate == 7, "it stays just below the rate turned away"
    now[0] += PROBE_SECONDS
    limiter.acquire()
    now[0] += RECOVERY_SECONDS + 0.1
    limiter.acquire()
    assert limiter.rate is not None and limiter.rate > 7, "and tries above it again after a long calm"


def test_unlimited_limiter_learns_a_rate_from_429() -> None:
    from pipeline.platform.ratelimit import SlidingWindowLimiter

    now = [0.0]
    limiter = SlidingWindowLimiter(None, margin=0.0, clock=lambda: now[0])
    tickets = [limiter.acquire() for _ in range(30)]
    for ticket in tickets:
        assert ticket is not None
        ticket.sent()
    now[0] = 0.05
    limiter.throttled(tickets[-1].at if tickets[-1] else None, 0.0)
    assert limiter.rate == 29


# -- 6. another client of the same app replaces the work key -----------------------------------------------


def test_work_key_replaced_by_another_client_is_never_a_rows_verdict(
    sandbox: SandboxHandle, tmp_path: Path, journal: Journal
) -> None:
    batch = _batch(300, 4)
    sandbox.inject("rekey", count=3, methods=("syncCardInfo",))
    with _client(sandbox, tmp_path / "state") as client:
        client.work_key()
        submit_quickly(batch, client, journal, concurrency=1)
    assert batch.outcome["status"].tolist() == ["enrolled"] * 4
    assert "10105" not in "".join(batch.outcome["result_code"])
    assert sandbox.count("getWorkKey") == 1 + 3  # one new key per refused key


def test_two_processes_with_one_app_id_enrol_everyone(sandbox: SandboxHandle, tmp_path: Path) -> None:
    batches = [_batch(400, 40), _batch(440, 40)]

    def run(side: int) -> None:
        with (
            Journal(tmp_path / f"journal{side}.sqlite") as journal,
            _client(sandbox, tmp_path / f"state{side}") as client,
        ):
            submit_quickly(batches[side], client, journal, concurrency=4)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, (0, 1)))
    for batch in batches:
        assert (batch.outcome["status"] == "enrolled").all(), batch.outcome["result_code"].value_counts()
    assert sandbox.residents() == 80
    assert sandbox.count("getWorkKey") > 2, "the two really did invalidate each other's keys"


def test_a_platform_answering_only_429_stops_the_run_instead_of_crawling(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    sandbox.inject("http429", count=1000, methods=("syncCardInfo",))
    options: Any = {"max_attempts": 3, "breaker_failures": 4, "breaker_throttle_silence": 1.5}
    with _client(sandbox, tmp_path / "state", **options) as client:
        started = time.monotonic()
        with pytest.raises(PlatformUnreachable) as caught:
            for seed in range(600, 620):
                client.sync_card_info(*make_resident(seed))
        elapsed = time.monotonic() - started
    assert "持续限流" in caught.value.message and "\n" not in caught.value.message
    assert elapsed < 15, "stopped after the streak, not after every row's retries"
    assert sandbox.residents() == 0


def test_429s_between_answers_never_open_the_breaker() -> None:
    from pipeline.platform.breaker import CircuitBreaker
    from pipeline.platform.responses import Answer

    now = [0.0]
    breaker = CircuitBreaker("http://127.0.0.1/", failures=3, throttle_silence=10, clock=lambda: now[0])
    throttled = Answer(None, "平台请求过于频繁（HTTP 429）", {}, True, 1.0, throttled=True)
    answered = Answer(10000, "操作成功", {}, False)
    for _ in range(50):  # a busy platform that lets some through
        for answer in (throttled, throttled, answered):
            now[0] += 5
            breaker.record(answer)
    assert not breaker.is_open
    for _ in range(3):  # then nothing but 429 for ten seconds
        now[0] += 5
        breaker.record(throttled)
    assert breaker.is_open
    with pytest.raises(PlatformUnreachable, match="持续限流"):
        breaker.check()


def test_a_429_spell_outlives_the_client_that_saw_it() -> None:
    """A nightly run sends each file with a client of its own: a quota used up stays used up."""
    from pipeline.platform.breaker import SPELL_GAP, CircuitBreaker
    from pipeline.platform.responses import Answer

    now = [0.0]

    def clock() -> float:
        return now[0]

    throttled = Answer(None, "平台请求过于频繁（HTTP 429）", {}, True, 1.0, throttled=True)
    for _ in range(2):  # the first file: two 429s, then its rows have failed
        now[0] += 5
        CircuitBreaker("http://127.0.0.1/q/", failures=3, throttle_silence=10, clock=clock).record(throttled)
    later = CircuitBreaker("http://127.0.0.1/q/", failures=3, throttle_silence=10, clock=clock)
    now[0] += 5
    later.record(throttled)  # the next file's first 429: the third of the spell, over ten seconds
    assert later.is_open
    now[0] += SPELL_GAP + 1  # a platform quiet for longer than that starts a spell afresh
    fresh = CircuitBreaker("http://127.0.0.1/q/", failures=3, throttle_silence=10, clock=clock)
    fresh.record(throttled)
    assert not fresh.is_open


def test_a_platform_refusing_every_new_key_stops_the_run_without_rejecting_rows(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    register = write_register(tmp_path / "reg.csv", [make_resident(s)[1] for s in (500, 501, 502)])
    settings = Settings(
        platform=sandbox.settings(max_attempts=2), submit=SubmitSettings(rate=0.0, concurrency=1),
        defaults=DefaultValues(org_code="455400000"), state_dir=tmp_path / "state",
    )  # fmt: skip
    sandbox.inject("rekey", count=100, methods=("syncCardInfo",))
    with pytest.raises(AuthenticationRefused, match="10105"):
        run_submit([register], tmp_path / "out", settings)
    table = pd.read_csv(
        tmp_path / "out" / "results.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig"
    )
    assert set(table["status"]) == {"failed"} and "rejected" not in set(table["status"])
    assert sandbox.residents() == 0


# -- the sandbox's misbehaviours themselves ----------------------------------------------------------------


def test_down_refuses_every_later_connection(sandbox: SandboxHandle, tmp_path: Path) -> None:
    import requests

    sandbox.inject("down")
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{sandbox.base_url}getWorkKey.do", data=b"{}", timeout=5)
    time.sleep(0.3)
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{sandbox.base_url}getWorkKey.do", data=b"{}", timeout=5)
    assert sqlite3.connect(sandbox.db_path).execute("SELECT fault FROM requests").fetchall() == [("down",)]
