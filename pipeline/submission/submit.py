"""``ehc submit``: the dry run, then every valid row sent once with ``syncCardInfo``.

:func:`submit_batch` takes a validated :class:`Batch` and fills its outcome:

* residents the journal knows as enrolled are ``already_enrolled`` with the
  card ids the journal holds, and cost no call;
* the others are claimed in the journal, sent on a pool of threads (the
  client enforces the rate limit across all of them) and recorded:
  10000 ``enrolled``; 10115 ``already_enrolled``; no usable answer after the
  retries ``failed``; any other code ``rejected`` (and a fault row keyed by
  the platform's code, so errors.xlsx lists it beside the local faults);
* on Ctrl-C / SIGTERM no new call starts, the calls in flight finish, and
  the rows never sent are ``failed`` with "已中断，未发送".

:func:`run_submit` is the whole command: dry run, credentials, work key,
submission, reports (written even when the run is interrupted or stopped).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from pipeline.batch import (
    append_rejections,
    fill_from_journal,
    follow_first,
    set_outcomes,
)
from pipeline.config import Settings
from pipeline.errors import ConfigError, EhcError, Interrupted
from pipeline.logs import register_secret
from pipeline.model import (
    CARD_FIELDS,
    PEOPLE_FIELDS,
    STATUS_FAILED,
    STATUS_LABELS,
    STATUS_VALID,
    Batch,
    Outcome,
    ReadOptions,
    RunResult,
)
from pipeline.state.journal import STATE_ENROLLED, Journal
from pipeline.stopping import stop_on_signals
from pipeline.submission.pool import PoolSize, run_pool
from pipeline.submission.sender import ClientLike, ResidentSender, Task

#: Latency assumed for the first threads; the pool grows if the platform is slower.
EXPECTED_LATENCY = 0.1
MIN_CONCURRENCY = 4
MAX_CONCURRENCY = 64
#: Pool size without a rate limit: one process is CPU-bound with a few threads.
UNLIMITED_CONCURRENCY = 8

MESSAGE_NOT_SENT = "已中断，未发送"
MESSAGE_UNKNOWN = "已中断，发送结果未知；再次运行同一命令会重新发送（平台若答复已办理则按已办理处理）"


def derive_concurrency(rate: float | None, latency: float = EXPECTED_LATENCY) -> int:
    """Threads enough that ``latency`` does not cap the rate: ``rate × latency × 1.5`` within [4, 64]."""
    if not rate or rate <= 0:
        return UNLIMITED_CONCURRENCY
    return max(MIN_CONCURRENCY, min(MAX_CONCURRENCY, math.ceil(rate * latency * 1.5)))


def pool_size(rate: float | None, concurrency: int | None) -> PoolSize:
    """A fixed pool of ``concurrency`` threads, or (0/None) one that starts derived and grows to 64."""
    if concurrency and concurrency > 0:
        return PoolSize(concurrency, concurrency, rate)
    if not rate or rate <= 0:
        return PoolSize(UNLIMITED_CONCURRENCY, UNLIMITED_CONCURRENCY, None)
    return PoolSize(derive_concurrency(rate), MAX_CONCURRENCY, rate)


@dataclass
class SendStats:
    """Figures of one submission: counts, calls, rate; for the closing log line and the benchmarks."""

    counts: dict[str, int] = field(default_factory=dict)
    sent: int = 0  # residents whose syncCardInfo was sent
    calls: int = 0  # platform calls (syncCardInfo + bindCardInfo)
    from_journal: int = 0  # rows answered from the journal, no call
    elapsed: float = 0.0  # seconds spent sending
    interrupted: bool = False

    @property
    def achieved_rate(self) -> float:
        """Residents sent per second while sending."""
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


def _text(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The frame's columns as a 2-D array of Python strings ("" for missing)."""
    return frame.loc[:, list(columns)].fillna("").astype(str).to_numpy(dtype=object)


class _Tasks(Sequence[Task]):
    """The rows to send, each made into a :class:`Task` only when a thread takes it."""

    def __init__(self, rows: pd.DataFrame, known: pd.DataFrame) -> None:
        self._people = _text(rows, PEOPLE_FIELDS)
        self._cards = _text(rows, CARD_FIELDS)
        self._files = rows["source_file"].fillna("").astype(str).tolist()
        self._rows = pd.to_numeric(rows["source_row"], errors="coerce").astype("Int64").tolist()
        self._ids = rows["sfzhm"].fillna("").astype(str).tolist()
        states = known["state"].to_dict() if len(known) else {}
        self._prior = [states.get(id_number) for id_number in self._ids]

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        source_row = self._rows[k]
        return Task(
            id_number=self._ids[k],
            source_file=self._files[k],
            source_row=None if source_row is pd.NA else int(source_row),
            people=dict(zip(PEOPLE_FIELDS, self._people[k], strict=True)),
            card=dict(zip(CARD_FIELDS, self._cards[k], strict=True)),
            prior=self._prior[k],
        )


@dataclass(frozen=True)
class Plan:
    """Which valid rows the journal answers and which need a call; computed without changing the batch."""

    ids: pd.Series  # ID number of every valid row (index row_id)
    known: pd.DataFrame  # the journal's state and card ids of those residents
    from_journal: pd.Index  # rows of residents enrolled per the journal: no call
    to_send: pd.Index  # the first row of every other resident: one call each
    repeats: pd.Index  # later rows of a resident in ``to_send``: answered from its outcome

    @property
    def needs_calls(self) -> bool:
        """Whether anything has to be sent."""
        return len(self.to_send) > 0


def plan_submission(batch: Batch, journal: Journal) -> Plan:
    """Look every valid row's resident up in the journal (one query) and split the rows."""
    valid = batch.outcome.index[batch.outcome["status"] == STATUS_VALID]
    ids = batch.rows.loc[valid, "sfzhm"].fillna("").astype(str)
    known = journal.lookup_many(
        ids.unique().tolist(), columns=("state", "ehealth_card_id", "virtual_card_num")
    )
    enrolled = (
        ids.map(known["state"]).eq(STATE_ENROLLED).to_numpy() if len(known) else np.zeros(len(ids), bool)
    )
    pending = ids[~enrolled]
    repeated = pending.duplicated(keep="first").to_numpy()
    return Plan(ids, known, valid[enrolled], pending.index[~repeated], pending.index[repeated])


def submit_batch(
    batch: Batch,
    client: ClientLike,
    journal: Journal,
    *,
    rate: float | None,
    concurrency: int | None,
    lookup_existing: bool = False,
    progress: bool = False,
    stop: threading.Event | None = None,
    plan: Plan | None = None,
    on_outcome: Callable[[Outcome], object] | None = None,
) -> SendStats:
    """Send every valid row of ``batch`` and fill its outcome (invalid rows stay invalid).

    ``rate`` only sizes the pool (the client enforces it); ``concurrency``
    0/None derives the pool size from it.  Ctrl-C and SIGTERM set ``stop``
    (handlers installed when called from the main thread).  When this
    returns or raises, every row has a final status; a run-stopping fault
    raised by the client (e.g. :class:`AuthenticationRefused`) is re-raised
    after the outcome is filled, so the caller can still write the reports.
    ``plan`` is :func:`plan_submission` of this batch, if the caller has it.
    ``on_outcome`` is called (on a sending thread) with each resident's
    outcome as it is recorded, for a caller that shows live progress.
    """
    stop = stop or threading.Event()
    plan = plan or plan_submission(batch, journal)
    stats = SendStats(from_journal=len(plan.from_journal))
    fill_from_journal(batch, plan.from_journal, plan.ids, plan.known)
    tasks = _Tasks(batch.rows.loc[plan.to_send], plan.known)
    size = pool_size(rate, concurrency)
    logger.info(
        "开始提交：{} 人待发送，{} 人据提交日志已办理；速率上限 {}/秒，并发 {}{}",
        len(tasks), stats.from_journal, rate or "不限", size.initial,
        f"（按需增至 {size.maximum}）" if size.maximum > size.initial else "",
    )  # fmt: skip

    sender = ResidentSender(client, journal, lookup_existing=lookup_existing, stop=stop)
    send: Callable[[Task], Outcome] = sender.send
    if on_outcome is not None:
        send = _reporting(sender.send, on_outcome)
    with stop_on_signals(stop):
        pool = run_pool(
            tasks, send, size=size, stop=stop, progress=progress,
            on_stop=getattr(client, "interrupt", None), on_tick=journal.flush,
        )  # fmt: skip
    journal.flush()

    reason = MESSAGE_NOT_SENT
    if pool.fatal is not None:
        reason = f"未发送：{pool.fatal}" if isinstance(pool.fatal, EhcError) else "未发送：程序内部错误"
    final: list[Outcome] = []
    for position, outcome in enumerate(pool.outcomes):
        if outcome is None:
            outcome = Outcome(STATUS_FAILED, "", MESSAGE_UNKNOWN if position in pool.unknown else reason)
        final.append(outcome)
    set_outcomes(batch, list(plan.to_send), final)
    append_rejections(batch, list(plan.to_send), final)
    by_id = dict(zip(plan.ids.loc[plan.to_send].tolist(), final, strict=True))
    follow = [follow_first(by_id[plan.ids.loc[row_id]]) for row_id in plan.repeats]
    set_outcomes(batch, list(plan.repeats), follow)

    stats.sent = sum(1 for o in pool.outcomes if o is not None)
    stats.calls = sender.calls
    stats.elapsed = pool.elapsed
    stats.interrupted = stop.is_set() and pool.fatal is None
    stats.counts = {str(k): int(v) for k, v in batch.outcome["status"].value_counts().items()}
    logger.info(
        "提交结束：发送 {} 人，用时 {:.1f} 秒（{:.1f} 人/秒）；结果 {}",
        stats.sent, stats.elapsed, stats.achieved_rate,
        "，".join(f"{STATUS_LABELS.get(status, status)} {count}" for status, count in stats.counts.items()),
    )  # fmt: skip
    if pool.fatal is not None:
        raise pool.fatal
    return stats


def _reporting(
    send: Callable[[Task], Outcome], report: Callable[[Outcome], object]
) -> Callable[[Task], Outcome]:
    """``send``, then ``report`` of its outcome."""

    def send_and_report(task: Task) -> Outcome:
        outcome = send(task)
        report(outcome)
        return outcome

    return send_and_report


def _platform_client(settings: Settings, rate: float | None, concurrency: int) -> Any:
    from pipeline.platform.client import PlatformClient

    return PlatformClient(settings.platform, settings.state_dir, rate=rate, pool_size=concurrency)


def _check_credentials(settings: Settings) -> None:
    missing = []
    if not settings.platform.app_id:
        missing.append("应用 ID（环境变量 EHC_APP_ID 或配置 [platform] app_id）")
    if not settings.platform.app_secret:
        missing.append("应用密钥（环境变量 EHC_APP_SECRET）")
    if missing:
        raise ConfigError(f"缺少{'和'.join(missing)}，无法提交。请设置后重新运行；校验报告已写出")


def _check_org_code(batch: Batch) -> None:
    sendable = batch.outcome["status"] == STATUS_VALID
    missing = sendable & (batch.rows["orgCode"] == "")
    if missing.any():
        raise ConfigError(
            f"{int(missing.sum())} 行没有发卡机构代码（orgCode），无法提交。"
            "请设置环境变量 EHC_ORG_CODE 或配置 [defaults] org_code"
            "（或在表中加一列 发卡机构代码）；校验报告已写出"
        )


def run_submit(
    inputs: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    options: ReadOptions = ReadOptions(),
    *,
    rate: float | None = None,
    concurrency: int | None = None,
    lookup_existing: bool | None = None,
    progress: bool = False,
) -> RunResult:
    """``ehc submit``: dry run, then send every valid row; the result holds the batch and the reports.

    The reports are written in every case, from one place: after the dry run
    if submission cannot start (missing credentials or orgCode, platform
    refusing or unreachable: the error is then raised), and after submission
    even when it was stopped.  Ctrl-C / SIGTERM raise :class:`Interrupted`
    (exit 130) once the reports are written.
    """
    from pipeline.dryrun import batch_result, prepare_batch, write_outputs

    batch = prepare_batch(inputs, settings, options, progress=progress)
    rate = settings.submit.rate if rate is None else rate
    limit = rate if rate and rate > 0 else None
    workers = concurrency or settings.submit.concurrency or None
    lookup = settings.submit.lookup_existing if lookup_existing is None else lookup_existing
    register_secret(settings.platform.app_secret)
    stats: SendStats | None = None
    sending = False  # once true, rows may have been sent: the reports carry the submission's columns
    try:
        _check_credentials(settings)
        _check_org_code(batch)
        with (
            Journal(settings.journal_path) as journal,
            _platform_client(settings, limit, pool_size(limit, workers).maximum) as client,
        ):
            plan = plan_submission(batch, journal)
            if plan.needs_calls:
                client.work_key()  # fail fast, before anything is sent
            sending = True
            stats = submit_batch(
                batch, client, journal, rate=limit, concurrency=workers,
                lookup_existing=lookup, progress=progress, stop=threading.Event(), plan=plan,
            )  # fmt: skip
    finally:
        paths = write_outputs(batch, out_dir, submitted=sending)
    if stats.interrupted:
        raise Interrupted(
            f"提交已中断；已完成部分的报告已写入 {out_dir}。再次运行同一命令即可继续（已办理的不会重复发送）"
        )
    return batch_result(batch, paths, submitted=True)
