"""Submission: statuses, the journal, resends, stops and faults; a scripted client, then the sandbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import SandboxHandle, make_resident
from loguru import logger
from submit_helpers import ScriptedClient, card_ids, make_batch, make_id, resident, write_register

from pipeline.client import PlatformClient
from pipeline.config import DefaultValues, Settings, SubmitSettings
from pipeline.errors import AuthenticationRefused, ConfigError
from pipeline.journal import STATE_ENROLLED, STATE_SENDING, Journal
from pipeline.logs import setup_logging
from pipeline.model import Batch
from pipeline.pool import PoolSize, run_pool
from pipeline.submit import (
    MESSAGE_FROM_JOURNAL,
    MESSAGE_NOT_SENT,
    derive_concurrency,
    pool_size,
    run_submit,
    submit_batch,
)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    with Journal(tmp_path / "journal.sqlite") as opened:
        yield opened


def _submit(batch, client, journal, **options):
    options.setdefault("rate", None)
    options.setdefault("concurrency", 4)
    return submit_batch(batch, client, journal, **options)


def test_every_status_and_the_faults(journal: Journal) -> None:
    ids = [make_id(n) for n in range(6)]
    journal.record(ids[4], STATE_ENROLLED, 10000, "操作成功", "E" * 64, "4" * 20)
    client = ScriptedClient({ids[1]: 10115, ids[2]: 10124, ids[3]: None})
    batch = make_batch([resident(i) for i in ids], invalid=[5])
    summary = _submit(batch, client, journal)

    status = batch.outcome["status"].tolist()
    assert status == ["enrolled", "already_enrolled", "rejected", "failed", "already_enrolled", "invalid"]
    assert batch.outcome.loc[0, "ehealthCardId"] == card_ids(ids[0])["ehealthCardId"]
    assert batch.outcome.loc[1, "ehealthCardId"] == "", "enrolled elsewhere: ids unknown without lookup"
    assert batch.outcome.loc[2, "result_code"] == "10124"
    assert "无法连接平台" in batch.outcome.loc[3, "message"]
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
    _submit(make_batch([resident(i) for i in ids]), client, journal)
    assert len(client.sync_calls) == 20

    again = ScriptedClient()
    batch = make_batch([resident(i) for i in reversed(ids)], file="other.csv")
    summary = _submit(batch, again, journal)
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
    _submit(batch, client, journal)
    assert client.sync_calls.count(lost) == 1 and client.sync_calls.count(failed) == 1
    assert (batch.outcome["status"] == "already_enrolled").all()
    assert "此前已发送" in batch.outcome.loc[0, "message"]
    assert journal.lookup(lost)["state"] == STATE_ENROLLED
    assert client.bind_calls == []


def test_lookup_existing_fetches_card_ids_with_bind(journal: Journal) -> None:
    elsewhere = make_id(7)
    client = ScriptedClient({elsewhere: 10115})
    batch = make_batch([resident(elsewhere)])
    _submit(batch, client, journal, lookup_existing=True)
    assert client.bind_calls == [elsewhere]
    assert batch.outcome.loc[0, "status"] == "already_enrolled"
    assert batch.outcome.loc[0, "ehealthCardId"] == card_ids(elsewhere)["ehealthCardId"]
    assert journal.lookup(elsewhere)["virtual_card_num"] == card_ids(elsewhere)["virtualCardNum"]


def test_repeated_id_is_sent_once(journal: Journal) -> None:
    twice = make_id(3)
    client = ScriptedClient()
    batch = make_batch([resident(twice), resident(make_id(4)), resident(twice)])
    _submit(batch, client, journal)
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
    summary = _submit(batch, client, journal, concurrency=2, stop=stop)
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
    summary = _submit(batch, client, journal, concurrency=1)
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
        _submit(batch, client, journal, concurrency=1)
    assert batch.outcome["status"].tolist() == ["enrolled"] * 3 + ["failed"] * 7
    assert "结果未知" in batch.outcome.loc[3, "message"]
    assert "10105" in batch.outcome.loc[4, "message"]
    assert journal.lookup(ids[3])["state"] == STATE_SENDING, "its outcome is unknown: resent next time"


def test_derived_concurrency() -> None:
    assert derive_concurrency(5) == 4
    assert derive_concurrency(50) == 8
    assert derive_concurrency(1000) == 64
    assert derive_concurrency(None) == 8


# -- against the real sandbox over loopback -------------------------------------------------------


def _platform_batch(residents: list[tuple[dict[str, str], dict[str, str]]]) -> Batch:
    return make_batch([{**card, **people} for card, people in residents])


@pytest.fixture
def platform(sandbox: SandboxHandle, tmp_path: Path) -> Iterator[PlatformClient]:
    settings = sandbox.settings(max_attempts=2, max_retry_seconds=5.0)
    with PlatformClient(settings, tmp_path / "state", initial_wait=0.01) as client:
        yield client


def test_sandbox_statuses_and_calls(
    sandbox: SandboxHandle, platform: PlatformClient, journal: Journal
) -> None:
    new, elsewhere, bad_ethnicity, dropped = (make_resident(n) for n in range(4))
    bad_ethnicity[1]["mzdm"] = "99"  # the platform's check, not ours: rejected with 10123
    assert platform.sync_card_info(*elsewhere).ok  # enrolled by another run we know nothing of
    batch = _platform_batch([new, elsewhere, bad_ethnicity, dropped])

    def drop_for(id_number: str) -> None:
        if id_number == dropped[1]["sfzhm"]:
            sandbox.inject("drop", count=2, methods=("syncCardInfo",))

    calls_before = sandbox.count("syncCardInfo")
    _submit(batch, _Hooked(platform, drop_for), journal, concurrency=1)
    assert batch.outcome["status"].tolist() == ["enrolled", "already_enrolled", "rejected", "failed"]
    card_id, virtual = batch.outcome.loc[0, ["ehealthCardId", "virtualCardNum"]]
    assert len(card_id) == 64 and len(virtual) == 20
    assert batch.outcome.loc[2, "result_code"] == "10123"
    assert batch.faults.loc[batch.faults["code"] == 10123, "row_id"].tolist() == [2]
    assert sandbox.count("syncCardInfo") - calls_before == 3 + 2  # the dropped one was tried twice
    assert sandbox.residents() == 2

    # the rerun sends only the residents not enrolled: the rejected and the failed one
    again = _platform_batch([new, elsewhere, bad_ethnicity, dropped])
    calls_before = sandbox.count("syncCardInfo")
    _submit(again, platform, journal)
    assert sandbox.count("syncCardInfo") - calls_before == 2
    assert again.outcome["status"].tolist() == [
        "already_enrolled",
        "already_enrolled",
        "rejected",
        "enrolled",
    ]
    assert again.outcome.loc[0, "ehealthCardId"] == card_id, "card ids come from the journal"


def test_sandbox_unknown_outcomes_are_resent(
    sandbox: SandboxHandle, platform: PlatformClient, journal: Journal
):
    residents = [make_resident(n) for n in range(10, 16)]
    for card, people in residents[:3]:  # the calls arrived, but the process died before recording them
        journal.claim(people["sfzhm"], "reg.xlsx", 2)
        assert platform.sync_card_info(card, people).ok
    calls_before = sandbox.count("syncCardInfo")
    batch = _platform_batch(residents)
    _submit(batch, platform, journal)
    assert sandbox.count("syncCardInfo") - calls_before == 6, "every unknown resident is sent again"
    assert batch.outcome["status"].tolist() == ["already_enrolled"] * 3 + ["enrolled"] * 3
    assert sandbox.residents() == 6
    assert journal.counts() == {STATE_ENROLLED: 6}


def test_sandbox_lookup_existing(sandbox: SandboxHandle, platform: PlatformClient, journal: Journal) -> None:
    card, people = make_resident(20)
    first = platform.sync_card_info(card, people)
    batch = _platform_batch([(card, people)])
    _submit(batch, platform, journal, lookup_existing=True)
    assert sandbox.count("bindCardInfo") == 1
    assert batch.outcome.loc[0, "status"] == "already_enrolled"
    assert batch.outcome.loc[0, "ehealthCardId"] == first.data["ehealthCardId"]


@pytest.mark.sandbox(subprocess=True, latency_ms=20)
def test_sandbox_never_sees_more_than_the_rate(
    sandbox: SandboxHandle, tmp_path: Path, journal: Journal
) -> None:
    rate = 10
    batch = _platform_batch([make_resident(n) for n in range(100, 140)])
    with PlatformClient(sandbox.settings(), tmp_path / "state", rate=rate) as client:
        client.work_key()
        summary = _submit(batch, client, journal, rate=rate, concurrency=None)
    assert summary.sent == 40
    assert (batch.outcome["status"] == "enrolled").all()
    assert sandbox.max_in_window() <= rate  # getWorkKey included


class _Hooked:
    """A client that runs ``before`` with the resident's ID number before each syncCardInfo."""

    def __init__(self, client: PlatformClient, before: Callable[[str], None]) -> None:
        self._client, self._before = client, before

    def sync_card_info(self, card_info: dict[str, str], people_info: dict[str, str]) -> Any:
        self._before(people_info["sfzhm"])
        return self._client.sync_card_info(card_info, people_info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


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


# -- the whole command: dry run, submission, reports -------------------------------------------------


def _settings(sandbox: SandboxHandle, tmp_path: Path, **platform: Any) -> Settings:
    return Settings(
        platform=sandbox.settings(max_attempts=2, max_retry_seconds=5.0, **platform),
        submit=SubmitSettings(rate=0.0),
        defaults=DefaultValues(org_code="455400000"),
        state_dir=tmp_path / "state",
    )


def _people(first: int, count: int) -> list[dict[str, str]]:
    return [make_resident(serial)[1] for serial in range(first, first + count)]


def _results(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")


def test_run_submit_then_rerun(sandbox: SandboxHandle, tmp_path: Path) -> None:
    people = _people(300, 5)
    people[2] = {
        **people[2],
        "sfzhm": people[2]["sfzhm"][:-1] + ("0" if people[2]["sfzhm"][-1] != "0" else "1"),
    }
    register = write_register(tmp_path / "社区登记.csv", people)
    settings = _settings(sandbox, tmp_path)

    batch, paths = run_submit([register], tmp_path / "out", settings)
    assert batch.outcome["status"].tolist() == ["enrolled", "enrolled", "invalid", "enrolled", "enrolled"]
    assert {"results.xlsx", "errors.xlsx", "results.csv"} <= set(paths)
    table = _results(tmp_path / "out")
    assert table["status"].tolist() == batch.outcome["status"].tolist()
    assert table.loc[0, "ehealthCardId"] == batch.outcome.loc[0, "ehealthCardId"] != ""
    assert sandbox.count("syncCardInfo") == 4

    again, _ = run_submit([register], tmp_path / "again", settings)
    assert sandbox.count("syncCardInfo") == 4, "a rerun sends nothing for enrolled residents"
    assert (
        again.outcome["status"].tolist() == ["already_enrolled"] * 2 + ["invalid"] + ["already_enrolled"] * 2
    )
    assert again.outcome["ehealthCardId"].tolist() == batch.outcome["ehealthCardId"].tolist()


def test_missing_secret_stops_before_sending_but_writes_the_reports(sandbox: SandboxHandle, tmp_path: Path):
    register = write_register(tmp_path / "reg.csv", _people(320, 2))
    settings = _settings(sandbox, tmp_path, app_secret="")
    with pytest.raises(ConfigError, match="EHC_APP_SECRET"):
        run_submit([register], tmp_path / "out", settings)
    assert _results(tmp_path / "out")["status"].tolist() == ["valid", "valid"]
    assert sandbox.count("syncCardInfo") == 0


def test_refused_credentials_stop_before_sending(sandbox: SandboxHandle, tmp_path: Path) -> None:
    register = write_register(tmp_path / "reg.csv", _people(330, 2))
    settings = _settings(sandbox, tmp_path, app_secret="WRONG0SECRET0")
    with pytest.raises(AuthenticationRefused):
        run_submit([register], tmp_path / "out", settings)
    assert (tmp_path / "out" / "results.csv").exists()
    assert sandbox.count("syncCardInfo") == 0


def test_secret_and_work_key_never_logged_or_written(sandbox: SandboxHandle, tmp_path: Path) -> None:
    register = write_register(tmp_path / "reg.csv", _people(340, 4))
    settings = _settings(sandbox, tmp_path)
    log = tmp_path / "ehc.log"
    setup_logging(level="DEBUG", log_dir=tmp_path, debug=True)
    try:
        sandbox.inject("drop", count=1, methods=("syncCardInfo",))  # a retry, logged
        run_submit([register], tmp_path / "out", settings, lookup_existing=True)
    finally:
        logger.remove()
    work_key = sandbox.query("SELECT work_key FROM work_keys WHERE revoked_at IS NULL")[0][0]
    written = [log, *sorted((tmp_path / "out").iterdir()), tmp_path / "state" / "journal.sqlite"]
    assert log.stat().st_size > 0
    for path in written:
        content = path.read_bytes()
        assert sandbox.app_secret.encode() not in content, path.name
        assert work_key.encode() not in content, path.name
    text = log.read_text(encoding="utf-8")
    assert all(person["sfzhm"] not in text for person in _people(340, 4)), "ID numbers are masked in logs"


# -- the command line in a subprocess: kill -9 and Ctrl-C ------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent


def _command(
    sandbox: SandboxHandle, tmp_path: Path, register: Path, out: str
) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHC_")}
    env.update(
        EHC_APP_ID=sandbox.app_id, EHC_APP_SECRET=sandbox.app_secret, EHC_ORG_CODE="455400000",
        EHC_STATE_DIR=str(tmp_path / "state"), EHC_LOG_DIR=str(tmp_path / "logs"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")])),
    )  # fmt: skip
    command = [sys.executable, "-m", "pipeline", "submit", str(register), "--out", str(tmp_path / out)]
    return [*command, "--base-url", sandbox.base_url, "--rate", "10"], env


def _wait_for_residents(sandbox: SandboxHandle, process: subprocess.Popen[bytes], count: int) -> None:
    deadline = time.monotonic() + 60
    while sandbox.residents() < count:
        assert process.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline, "the run enrolled nobody within a minute"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.sandbox(latency_ms=30)
def test_killed_mid_run_then_resumed(sandbox: SandboxHandle, tmp_path: Path) -> None:
    people = _people(400, 30)
    register = write_register(tmp_path / "reg.csv", people)
    command, env = _command(sandbox, tmp_path, register, "out")
    process = subprocess.Popen(
        command, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for_residents(sandbox, process, 8)
    process.kill()
    assert process.wait() == -signal.SIGKILL

    enrolled_by_platform = {row[0] for row in sandbox.query("SELECT sfzhm FROM residents")}
    with Journal(tmp_path / "state" / "journal.sqlite") as journal:
        states = journal.lookup_many([p["sfzhm"] for p in people])["state"]
    assert enrolled_by_platform <= set(states.index), "every call that may have arrived was claimed first"
    unknown = int((states == STATE_SENDING).sum())

    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    statuses = _results(tmp_path / "out")["status"]
    assert set(statuses) <= {"enrolled", "already_enrolled"} and len(statuses) == 30
    assert sandbox.residents() == 30
    answers = sandbox.query(
        "SELECT result_code, count(*) FROM requests WHERE method = 'syncCardInfo' GROUP BY 1"
    )
    answers = dict(answers)
    assert answers[10000] == 30, "each resident was enrolled exactly once"
    assert answers.get(10115, 0) <= unknown, "only residents of unknown outcome were sent twice"
    with Journal(tmp_path / "state" / "journal.sqlite") as journal:
        assert journal.counts() == {STATE_ENROLLED: 30}


@pytest.mark.slow
@pytest.mark.sandbox(latency_ms=30)
def test_sigint_writes_the_reports_and_exits_non_zero(sandbox: SandboxHandle, tmp_path: Path) -> None:
    register = write_register(tmp_path / "reg.csv", _people(500, 30))
    command, env = _command(sandbox, tmp_path, register, "out")
    process = subprocess.Popen(
        command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _wait_for_residents(sandbox, process, 5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()
    assert "报告" in stderr.decode()
    table = _results(tmp_path / "out")
    assert len(table) == 30 and set(table["status"]) == {"enrolled", "failed"}
    assert (table["message"] == MESSAGE_NOT_SENT).any()
    assert (table["status"] == "enrolled").sum() == sandbox.residents(), "calls in flight were finished"
    assert (tmp_path / "out" / "results.xlsx").exists() and (tmp_path / "out" / "errors.xlsx").exists()
    with Journal(tmp_path / "state" / "journal.sqlite") as journal:
        assert STATE_SENDING not in journal.counts()
    for path in [*(tmp_path / "out").iterdir(), *(tmp_path / "logs").iterdir()]:
        assert sandbox.app_secret.encode() not in path.read_bytes(), path.name

    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert sandbox.residents() == 30
