"""Submission with a scripted client: statuses, the journal, resends, stops, faults, the pool."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from submit_helpers import ScriptedClient, card_ids, make_batch, make_id, resident, submit_quickly

from pipeline.batch import MESSAGE_FROM_JOURNAL
from pipeline.errors import AuthenticationRefused
from pipeline.platform.responses import CallResult
from pipeline.state.journal import STATE_ENROLLED, STATE_SENDING, Journal
from pipeline.submission.pool import PoolSize, run_pool
from pipeline.submission.submit import (
    MESSAGE_NOT_SENT,
    derive_concurrency,
    pool_size,
)


def test_every_status_and_the_faults(journal: Journal) -> None:
    ids = [make_id(n) for n in range(6)]
    journal.record(ids[4], STATE_ENROLLED, 10000, "操作成功", "E" * 64, "4" * 20)
    client = ScriptedClient({ids[1]: 10115, ids[2]: 10124, ids[3]: None})
    batch = make_batch([resident(i) for i in ids], invalid=[5])
    summary = submit_quickly(batch, client, journal)

    status = batch.outcome["status"].tolist()
    assert status == ["enrolled", "already_enrolled", "rejected", "failed", "already_enrolled", "invalid"]
    assert batch.outcome.loc[0, "ehealthCardId"] == card_ids(ids[0])["ehealthCardId"]
    assert batch.outcome.loc[1, "ehealthCardId"] == "", "enrolled elsewhere: ids unknown without lookup"
    assert batch.outcome.loc[2, "result_code"] == "10124"
    assert "无法连接平台" in batch.outcome.loc[3, "message"]
    assert "再次运行同一命令会重新发送" in batch.outcome.loc[3, "message"]  # ehc submit's own advice
    assert batch.outcome.loc[4, "ehealthCardId"] == "E" * 64
    assert batch.outcome.loc[4, "message"] == MESSAGE_FROM_JOURNAL
    assert sorted(client.sync_calls) == sorted(ids[:4]), "journal-enrolled and invalid rows cost no call"
    assert summary.sent == 4 and summary.from_journal == 1

    rejection = batch.faults[batch.faults["code"] == 10124]
    assert rejection[["row_id", "field", "severity"]].values.tolist() == [[2, "", "error"]]
    assert rejection["message"].iloc[0] == "出生日期格式不正确"
    assert batch.faults["code"].dtype == "int64"

    states = journal.lookup_many(ids)["state"].to_dict()
    assert states == {
        ids[0]: "enrolled",
        ids[1]: "enrolled",
        ids[2]: "rejected",
        ids[3]: "failed",
        ids[4]: "enrolled",
    }


def test_rerun_sends_nothing_for_enrolled_residents(journal: Journal) -> None:
    ids = [make_id(n) for n in range(20)]
    client = ScriptedClient()
    submit_quickly(make_batch([resident(i) for i in ids]), client, journal)
    assert len(client.sync_calls) == 20

    again = ScriptedClient()
    batch = make_batch([resident(i) for i in reversed(ids)], file="other.csv")
    summary = submit_quickly(batch, again, journal)
    assert again.sync_calls == []
    assert (batch.outcome["status"] == "already_enrolled").all()
    assert batch.outcome["ehealthCardId"].tolist() == [card_ids(i)["ehealthCardId"] for i in reversed(ids)]
    assert summary.sent == 0 and summary.from_journal == 20


def test_unknown_outcome_is_resent_and_10115_counts_as_enrolled(journal: Journal) -> None:
    lost, failed = make_id(1), make_id(2)
    journal.claim(lost, "reg.xlsx", 2)  # a crash left it "sending"
    journal.record(failed, "failed", None, "等待平台应答超时")
    client = ScriptedClient({lost: 10115, failed: 10115})
    batch = make_batch([resident(lost), resident(failed)])
    submit_quickly(batch, client, journal)
    assert client.sync_calls.count(lost) == 1 and client.sync_calls.count(failed) == 1
    assert (batch.outcome["status"] == "already_enrolled").all()
    assert batch.outcome.loc[0, "message"].startswith("平台答复已办理：上次发送可能已成功但答复丢失")
    assert journal.lookup(lost)["state"] == STATE_ENROLLED
    assert client.bind_calls == []


def test_lookup_existing_fetches_card_ids_with_bind(journal: Journal) -> None:
    elsewhere = make_id(7)
    client = ScriptedClient({elsewhere: 10115})
    batch = make_batch([resident(elsewhere)])
    submit_quickly(batch, client, journal, lookup_existing=True)
    assert client.bind_calls == [elsewhere]
    assert batch.outcome.loc[0, "status"] == "already_enrolled"
    assert batch.outcome.loc[0, "ehealthCardId"] == card_ids(elsewhere)["ehealthCardId"]
    assert journal.lookup(elsewhere)["virtual_card_num"] == card_ids(elsewhere)["virtualCardNum"]


def test_a_row_whose_card_a_lookup_of_the_same_batch_gives_to_another_does_not_show_that_card(
    journal: Journal,
) -> None:
    """bindCardInfo answering one card for everyone: the journal withdrew the earlier holders, the
    reports showed every row enrolled with that card all the same (exit 0)."""
    ids = [make_id(n) for n in range(3)]
    for id_number in ids:
        journal.record(id_number, STATE_ENROLLED, 10115, "平台答复已办理：上次发送可能已成功但答复丢失")

    class OneCardForAll(ScriptedClient):
        def bind_card_info(self, *, zjlx: str, zjhm: str, xm: str, brdh: str, **_: str) -> CallResult:
            with self._lock:
                self.bind_calls.append(zjhm)
            return CallResult(10000, "操作成功", {"ehealthCardId": "F" * 64, "virtualCardNum": "1" * 20}, 1)

    from loguru import logger

    from pipeline.logs import mask_id

    batch = make_batch([resident(i) for i in ids])
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        submit_quickly(batch, OneCardForAll(), journal, lookup_existing=True, concurrency=1)
    finally:
        logger.remove(sink)
    holders = [i for i in ids if journal.lookup(i)["ehealth_card_id"] == "F" * 64]  # type: ignore[index]
    # The log names whose outcome became unknown, not only who looked the card up.
    assert [line.split()[0] for line in lines if "查得的卡号在提交日志中记在" in line] == [
        mask_id(i) for i in ids[1:]
    ]
    said = "".join(lines)
    assert f"记在 {mask_id(ids[0])} 名下" in said and f"记在 {mask_id(ids[1])} 名下" in said
    assert len(holders) == 1
    shown = batch.outcome.set_index(batch.rows["sfzhm"])
    assert shown.loc[holders[0], "ehealthCardId"] == "F" * 64
    for other in set(ids) - set(holders):
        assert journal.lookup(other)["state"] == "failed"  # type: ignore[index]
        assert shown.loc[other, "status"] == "failed" and shown.loc[other, "ehealthCardId"] == ""
        assert "另一位居民" in shown.loc[other, "message"]


def test_repeated_id_is_sent_once(journal: Journal) -> None:
    twice = make_id(3)
    client = ScriptedClient()
    batch = make_batch([resident(twice), resident(make_id(4)), resident(twice)])
    submit_quickly(batch, client, journal)
    assert client.sync_calls.count(twice) == 1
    assert batch.outcome["status"].tolist() == ["enrolled", "enrolled", "already_enrolled"]
    assert batch.outcome.loc[2, "ehealthCardId"] == batch.outcome.loc[0, "ehealthCardId"]


def test_stop_sends_nothing_new_and_marks_the_rest(journal: Journal) -> None:
    ids = [make_id(n) for n in range(40)]
    stop = threading.Event()
    client = ScriptedClient()

    def stop_after_five(id_number: str) -> None:
        if len(client.sync_calls) >= 5:
            stop.set()

    client.before_answer = stop_after_five
    batch = make_batch([resident(i) for i in ids])
    summary = submit_quickly(batch, client, journal, concurrency=2, stop=stop)
    sent = set(client.sync_calls)
    assert 5 <= len(sent) <= 8
    assert summary.interrupted
    assert client.interrupted.is_set(), "the client is told to cut its waits short"
    for row_id, id_number in enumerate(ids):
        status, message = batch.outcome.loc[row_id, ["status", "message"]]
        if id_number in sent:
            assert status == "enrolled"
        else:
            assert (status, message) == ("failed", MESSAGE_NOT_SENT)
    assert set(journal.residents().index) == sent, "nothing is claimed that was not sent"


def test_calls_a_stop_cut_short_before_sending_are_not_counted_as_sent(journal: Journal) -> None:
    # The client answers "interrupted, not sent" (no attempt) to a call that was waiting for the rate
    # limiter when the stop came: the summary's "发送 N 人" and the rate count only what left.
    ids = [make_id(n) for n in range(12)]
    stop = threading.Event()

    entered: list[str] = []
    lock = threading.Lock()

    class CutShort(ScriptedClient):
        def sync_card_info(self, card_info: dict[str, str], people_info: dict[str, str]) -> CallResult:
            with lock:
                entered.append(people_info["sfzhm"])
                waiting = len(entered) > 3
            if waiting:  # held by the rate limiter until the stop comes
                stop.wait(10)
                return CallResult(None, "已中断：请求未发送", {}, 0)
            time.sleep(0.2)  # the other workers take their residents meanwhile
            answer = super().sync_card_info(card_info, people_info)
            with lock:
                if len(self.sync_calls) == 3:
                    stop.set()
            return answer

    client = CutShort()
    batch = make_batch([resident(i) for i in ids])
    summary = submit_quickly(batch, client, journal, concurrency=4, stop=stop)
    assert summary.interrupted
    enrolled = int((batch.outcome["status"] == "enrolled").sum())
    assert enrolled == len(client.sync_calls) == 3 and len(entered) > 3
    assert summary.sent == 3 and summary.calls == 3
    assert (batch.outcome["status"] == "failed").sum() == len(ids) - enrolled


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_pool_from_the_main_thread(journal: Journal, signum: int) -> None:
    ids = [make_id(n) for n in range(30)]
    client = ScriptedClient()

    def interrupt_once(id_number: str) -> None:
        time.sleep(0.01)
        if len(client.sync_calls) == 3:
            signal.pthread_kill(threading.main_thread().ident or 0, signum)

    client.before_answer = interrupt_once
    previous = signal.getsignal(signum)
    batch = make_batch([resident(i) for i in ids])
    summary = submit_quickly(batch, client, journal, concurrency=1)
    assert signal.getsignal(signum) is previous, "handlers are restored"
    assert summary.interrupted
    assert len(client.sync_calls) < len(ids)
    assert set(batch.outcome["status"]) == {"enrolled", "failed"}
    assert (batch.outcome["status"] == "enrolled").sum() == len(client.sync_calls)


def test_run_stopping_fault_fills_the_outcome_then_raises(journal: Journal) -> None:
    ids = [make_id(n) for n in range(10)]
    client = ScriptedClient()

    def refuse(id_number: str) -> None:
        if id_number == ids[3]:
            raise AuthenticationRefused("平台拒绝了应用密钥（10105 认证字符串无效）", 10105)

    client.before_answer = refuse
    batch = make_batch([resident(i) for i in ids])
    with pytest.raises(AuthenticationRefused):
        submit_quickly(batch, client, journal, concurrency=1)
    assert batch.outcome["status"].tolist() == ["enrolled"] * 3 + ["failed"] * 7
    assert "结果未知" in batch.outcome.loc[3, "message"]
    assert "10105" in batch.outcome.loc[4, "message"]
    assert journal.lookup(ids[3])["state"] == STATE_SENDING, "its outcome is unknown: resent next time"


def test_derived_concurrency() -> None:
    assert derive_concurrency(5) == 4
    assert derive_concurrency(50) == 8
    assert derive_concurrency(1000) == 64
    assert derive_concurrency(None) == 8


def test_pool_sizes() -> None:
    assert pool_size(50, 6) == PoolSize(6, 6, 50), "an explicit concurrency is fixed"
    assert pool_size(50, None) == PoolSize(8, 64, 50)
    assert pool_size(None, None) == PoolSize(8, 8, None)


def test_pool_grows_while_latency_caps_the_rate() -> None:
    def slow(task: int) -> int:
        time.sleep(0.05)  # four threads reach 80/s at most
        return task

    result = run_pool(list(range(250)), slow, size=PoolSize(4, 64, 200.0), stop=threading.Event())
    assert result.outcomes == list(range(250))
    assert result.threads > 4

    fixed = run_pool(list(range(40)), slow, size=PoolSize(3, 3, 200.0), stop=threading.Event())
    assert fixed.threads == 3 and fixed.outcomes == list(range(40))


def test_a_tick_that_fails_stops_the_pool_and_keeps_every_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.submission import pool as pool_module

    monkeypatch.setattr(pool_module, "TICK_SECONDS", 0.0)
    stop = threading.Event()

    def send(n: int) -> int:
        time.sleep(0.02)
        return n * 10

    def tick() -> None:
        raise OSError("disk full")

    result = run_pool(list(range(200)), send, size=PoolSize(2, 2), stop=stop, on_tick=tick)
    assert isinstance(result.fatal, OSError) and stop.is_set()
    done = [n for n, outcome in enumerate(result.outcomes) if outcome is not None]
    assert 0 < len(done) < 200 and all(result.outcomes[n] == n * 10 for n in done)


# -- answers that say more than they seem to ------------------------------------------------------


class _ScriptedAnswers(ScriptedClient):
    """Answers every syncCardInfo with the same scripted CallResult."""

    def __init__(self, answer: CallResult) -> None:
        super().__init__()
        self.answer = answer

    def sync_card_info(self, card_info: dict[str, str], people_info: dict[str, str]) -> CallResult:
        self.sync_calls.append(people_info["sfzhm"])
        return self.answer


def test_10143_several_cards_is_enrolled_and_never_sent_again(journal: Journal) -> None:
    ids = [make_id(n) for n in range(2)]
    client = ScriptedClient({ids[0]: 10143})
    batch = make_batch([resident(i) for i in ids])
    submit_quickly(batch, client, journal)
    assert batch.outcome["status"].tolist() == ["already_enrolled", "enrolled"]
    assert batch.outcome.loc[0, "result_code"] == "10143"
    assert "多张健康卡" in batch.outcome.loc[0, "message"]
    assert journal.lookup(ids[0])["state"] == STATE_ENROLLED  # type: ignore[index]

    again = ScriptedClient()
    submit_quickly(make_batch([resident(i) for i in ids]), again, journal)
    assert again.sync_calls == []


def test_a_success_naming_a_card_the_journal_holds_for_another_resident_is_not_believed(
    journal: Journal,
) -> None:
    first, second = make_id(1), make_id(2)
    cached = CallResult(10000, "操作成功", {"ehealthCardId": "C" * 64, "virtualCardNum": "1" * 20}, 1)
    submit_quickly(make_batch([resident(first)]), _ScriptedAnswers(cached), journal)
    assert journal.lookup(first)["state"] == STATE_ENROLLED  # type: ignore[index]

    # A later run (a caching proxy replays the old answer): the card is the first resident's.
    batch = make_batch([resident(second)])
    submit_quickly(batch, _ScriptedAnswers(cached), journal)
    assert batch.outcome.loc[0, "status"] == "failed"
    assert batch.outcome.loc[0, "ehealthCardId"] == ""
    assert "属于另一位居民" in batch.outcome.loc[0, "message"]
    assert journal.lookup(second)["state"] == "failed"  # type: ignore[index]
    # The resident's own card, answered again, is believed.
    again = make_batch([resident(first)])
    journal.record(first, "failed", None, "")
    submit_quickly(again, _ScriptedAnswers(cached), journal)
    assert again.outcome.loc[0, "status"] == "enrolled"


def test_the_platforms_words_are_in_the_report_but_not_in_the_log(journal: Journal) -> None:
    from loguru import logger

    id_number = make_id(3)
    echoed = f"姓名王甲乙不合法；sfzhm{id_number}；地址幸福路1号"
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message}")
    try:
        batch = make_batch([resident(id_number)])
        submit_quickly(batch, _ScriptedAnswers(CallResult(10110, echoed, {}, 1)), journal)
        undocumented = make_batch([resident(make_id(4))])
        submit_quickly(undocumented, _ScriptedAnswers(CallResult(99999, echoed, {}, 1)), journal)
    finally:
        logger.remove(sink)
    assert batch.outcome.loc[0, "message"] == echoed  # the clerk's report keeps what the platform said
    assert "99999" in undocumented.outcome.loc[0, "status"] + undocumented.outcome.loc[0, "result_code"]
    logged = "".join(lines)
    assert "10110" in logged and "99999" in logged
    for private in ("王甲乙", "幸福路", id_number, make_id(4)):
        assert private not in logged


def test_a_run_no_call_of_which_got_a_verdict_says_why_the_last_got_none(journal: Journal) -> None:
    """Every call redirected (a moved platform): the run blamed the network, not the address."""
    from pipeline.errors import PlatformUnreachable

    redirected = CallResult(None, "平台返回 HTTP 301，请检查平台地址（base_url）", {}, 1, unanswered=True)
    batch = make_batch([resident(make_id(n)) for n in range(2)])
    with pytest.raises(PlatformUnreachable) as raised:
        submit_quickly(batch, _ScriptedAnswers(redirected), journal)
    assert "最近一次：平台返回 HTTP 301，请检查平台地址（base_url）" in raised.value.message
    assert batch.outcome["status"].tolist() == ["failed", "failed"]


def test_a_call_cut_short_by_a_fault_names_the_fault_not_an_interruption(journal: Journal) -> None:
    """The platform refusing every new key: calls in flight said "已中断" though nobody stopped the run."""
    refused = AuthenticationRefused("平台连续 5 次拒绝刚取得的认证字符串（10105 认证字符串无效）", 10105)

    class Refusing(ScriptedClient):
        def sync_card_info(self, card_info: dict[str, str], people_info: dict[str, str]) -> CallResult:
            raise refused

    batch = make_batch([resident(make_id(n)) for n in range(3)])
    with pytest.raises(AuthenticationRefused):
        submit_quickly(batch, Refusing(), journal, concurrency=1)
    messages = batch.outcome["message"].tolist()
    assert batch.outcome["status"].tolist() == ["failed"] * 3
    assert messages[0].startswith("已停止，发送结果未知（平台连续 5 次拒绝") and "已中断" not in messages[0]
    assert all(m.startswith("未发送：平台连续 5 次拒绝") for m in messages[1:])


def test_a_card_answered_to_two_residents_of_a_run_is_kept_for_neither(journal: Journal) -> None:
    """Answers mixed up among the calls in flight: the first to arrive may be the wrong one.  The first
    holder kept the card, its QR code then exported for a resident it may not belong to."""
    first, second, other = make_id(1), make_id(2), make_id(3)
    same = CallResult(10000, "操作成功", {"ehealthCardId": "C" * 64, "virtualCardNum": "1" * 20}, 1)

    class MixedUp(ScriptedClient):
        def sync_card_info(self, card_info: dict[str, str], people_info: dict[str, str]) -> CallResult:
            if people_info["sfzhm"] in (first, second):
                self.sync_calls.append(people_info["sfzhm"])
                return same
            return super().sync_card_info(card_info, people_info)

    batch = make_batch([resident(first), resident(second), resident(other), resident(first)])
    submit_quickly(batch, MixedUp(), journal, concurrency=1)
    assert batch.outcome["status"].tolist() == ["failed", "failed", "enrolled", "failed"]
    assert batch.outcome.loc[[0, 1, 3], "ehealthCardId"].tolist() == ["", "", ""]
    assert "也答复给了本次提交的另一位居民" in batch.outcome.loc[0, "message"]
    assert "属于另一位居民" in batch.outcome.loc[1, "message"]
    for id_number in (first, second):
        entry = journal.lookup(id_number)
        assert entry is not None and (entry["state"], entry["ehealth_card_id"]) == ("failed", "")
    assert journal.lookup(other)["state"] == STATE_ENROLLED  # type: ignore[index]
