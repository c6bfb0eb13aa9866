"""Submission against the real sandbox on loopback: calls, resends, rate, the command, kill -9, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import SandboxHandle, make_resident
from loguru import logger
from submit_helpers import make_batch, submit_quickly, write_register

from pipeline.config import DefaultValues, Settings, SubmitSettings
from pipeline.errors import AuthenticationRefused, ConfigError, EhcError
from pipeline.logs import setup_logging
from pipeline.model import Batch
from pipeline.platform.client import PlatformClient
from pipeline.state.journal import STATE_ENROLLED, STATE_SENDING, Journal
from pipeline.submission.submit import MESSAGE_NOT_SENT, run_submit

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
    submit_quickly(batch, _Hooked(platform, drop_for), journal, concurrency=1)
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
    submit_quickly(again, platform, journal)
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
    submit_quickly(batch, platform, journal)
    assert sandbox.count("syncCardInfo") - calls_before == 6, "every unknown resident is sent again"
    assert batch.outcome["status"].tolist() == ["already_enrolled"] * 3 + ["enrolled"] * 3
    assert sandbox.residents() == 6
    assert journal.counts() == {STATE_ENROLLED: 6}


def test_sandbox_lookup_existing(sandbox: SandboxHandle, platform: PlatformClient, journal: Journal) -> None:
    card, people = make_resident(20)
    first = platform.sync_card_info(card, people)
    batch = _platform_batch([(card, people)])
    submit_quickly(batch, platform, journal, lookup_existing=True)
    assert sandbox.count("bindCardInfo") == 1
    assert batch.outcome.loc[0, "status"] == "already_enrolled"
    assert batch.outcome.loc[0, "ehealthCardId"] == first.data["ehealthCardId"]


@pytest.mark.sandbox(subprocess=True, latency_ms=20)
def test_another_centre_naming_an_enrolled_resident_gets_no_card_of_theirs(
    sandbox: SandboxHandle, platform: PlatformClient, journal: Journal
) -> None:
    card, people = make_resident(40)  # enrolled by centre 455400000
    first = make_batch([{**card, **people}])
    submit_quickly(first, platform, journal)
    enrolled = first.outcome.loc[0, "ehealthCardId"]
    assert len(enrolled) == 64
    # Another centre uploads the same ID number under a made-up name: nothing is sent, no card shown.
    stranger = make_batch([{**card, **people, "xm": "张三", "brdh": "13800000000", "orgCode": "455400002"}])
    submit_quickly(stranger, platform, journal)
    assert stranger.outcome.loc[0, "status"] == "already_enrolled"
    assert (stranger.outcome.loc[0, "ehealthCardId"], stranger.outcome.loc[0, "virtualCardNum"]) == ("", "")
    # The centre that enrolled the resident still gets the card on a later run.
    again = make_batch([{**card, **people}])
    submit_quickly(again, platform, journal)
    assert again.outcome.loc[0, "ehealthCardId"] == enrolled
    assert sandbox.count("syncCardInfo") == 1


def test_sandbox_never_sees_more_than_the_rate(
    sandbox: SandboxHandle, tmp_path: Path, journal: Journal
) -> None:
    rate = 10
    batch = _platform_batch([make_resident(n) for n in range(100, 140)])
    with PlatformClient(sandbox.settings(), tmp_path / "state", rate=rate) as client:
        client.work_key()
        summary = submit_quickly(batch, client, journal, rate=rate, concurrency=None)
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

    result = run_submit([register], tmp_path / "out", settings)
    paths = result.paths
    # A run's rows are not kept in memory: its outcome is read back from results.csv.
    outcome = _results(tmp_path / "out")
    assert outcome["status"].tolist() == ["enrolled", "enrolled", "invalid", "enrolled", "enrolled"]
    assert {"results.xlsx", "errors.xlsx", "results.csv"} <= set(paths)
    assert result.counts is not None and result.counts["by_status"] == {"enrolled": 4, "invalid": 1}
    assert outcome.loc[0, "ehealthCardId"] != ""
    assert sandbox.count("syncCardInfo") == 4

    run_submit([register], tmp_path / "again", settings)
    again = _results(tmp_path / "again")
    assert sandbox.count("syncCardInfo") == 4, "a rerun sends nothing for enrolled residents"
    assert again["status"].tolist() == ["already_enrolled"] * 2 + ["invalid"] + ["already_enrolled"] * 2
    assert again["ehealthCardId"].tolist() == outcome["ehealthCardId"].tolist()


def test_missing_secret_stops_before_sending_but_writes_the_reports(sandbox: SandboxHandle, tmp_path: Path):
    register = write_register(tmp_path / "reg.csv", _people(320, 2))
    settings = _settings(sandbox, tmp_path, app_secret="")
    with pytest.raises(ConfigError, match="EHC_APP_SECRET"):
        run_submit([register], tmp_path / "out", settings)
    assert _results(tmp_path / "out")["status"].tolist() == ["valid", "valid"]
    assert sandbox.count("syncCardInfo") == 0


def test_an_earlier_report_that_cannot_be_replaced_stops_the_run_before_anyone_is_sent(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    register = write_register(tmp_path / "reg.csv", _people(340, 2))
    (tmp_path / "out" / "results.xlsx").mkdir(parents=True)  # as a report open in Excel cannot be replaced
    with pytest.raises(EhcError, match=r"results\.xlsx 无法替换.*还没有发送任何人"):
        run_submit([register], tmp_path / "out", _settings(sandbox, tmp_path))
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
    sink = setup_logging(level="DEBUG", log_dir=tmp_path, debug=True)
    assert sink is not None
    log = sink.path
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
