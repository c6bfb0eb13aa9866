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
  the rows never sent are ``failed`` with "已中断，未发送" and what sends them.

:func:`run_submit` is the whole command, in two passes over the run's rows,
a chunk at a time: the dry run checks every row and keeps the checked
batches on disk (nothing is sent until every row is checked, the
credentials and every orgCode are there); then each batch is looked up in
the journal in one query, sent in slices of :data:`SEND_ROWS`, and reported.
No pass holds more than a chunk of rows, and only a slice as Python objects.
The reports are written even when the run is interrupted or stopped, every
row with a final status.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from loguru import logger

from pipeline.batch import (
    BatchSpool,
    append_rejections,
    fill_from_journal,
    follow_first,
    not_sent,
    set_outcomes,
    update_outcome,
)
from pipeline.config import Settings
from pipeline.errors import ConfigError, EhcError, Interrupted, PlatformUnreachable
from pipeline.files import scratch_name
from pipeline.logs import register_secret
from pipeline.messages import RESEND_SAME_COMMAND
from pipeline.model import (
    CARD_FIELDS,
    PEOPLE_FIELDS,
    STATUS_FAILED,
    STATUS_LABELS,
    STATUS_VALID,
    Batch,
    MappedTable,
    Outcome,
    ReadOptions,
    RunResult,
)
from pipeline.progress import RowBar

if TYPE_CHECKING:
    from pipeline.dryrun import Registers
from pipeline.state.journal import STATE_ENROLLED, Journal
from pipeline.stopping import interrupt_on_signals, stop_on_signals
from pipeline.submission.pool import PoolSize, run_pool
from pipeline.submission.recovery import recover_card_ids
from pipeline.submission.sender import ClientLike, ResidentSender, Task

#: Latency assumed for the first threads; the pool grows if the platform is slower.
EXPECTED_LATENCY = 0.1
MIN_CONCURRENCY = 4
MAX_CONCURRENCY = 64
#: Pool size without a rate limit: one process is CPU-bound with a few threads.
UNLIMITED_CONCURRENCY = 8

#: A row never sent because the run was stopped: the same command (the web's 再次提交) sends it.
MESSAGE_NOT_SENT = "已中断，未发送；再次运行同一命令会发送"

#: Rows sent as one slice: the rows of a slice become Python objects (the calls' JSON), no more.
SEND_ROWS = 20_000
MESSAGE_UNKNOWN = "已中断，发送结果未知；再次运行同一命令会重新发送（平台若答复已办理则按已办理处理）"
#: A call in flight when a fault (not the operator) stopped the run: the fault is named, not an interrupt.
MESSAGE_STOPPED_UNKNOWN = (
    "已停止，发送结果未知（{fault}）；再次运行同一命令会重新发送（平台若答复已办理则按已办理处理）"
)


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
        ids.unique().tolist(), columns=("state", "ehealth_card_id", "virtual_card_num", "org_code")
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
    resend: str = RESEND_SAME_COMMAND,
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
    ``resend`` is what a row that failed to send says to do, as true of the
    caller's command (:data:`pipeline.messages.RESEND_SAME_COMMAND` and the others there).
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

    sender = ResidentSender(client, journal, lookup_existing=lookup_existing, stop=stop, resend=resend)
    send: Callable[[Task], Outcome | None] = sender.send
    if on_outcome is not None:
        send = _reporting(sender.send, on_outcome)
    with stop_on_signals(stop):
        pool = run_pool(
            tasks, send, size=size, stop=stop, progress=progress,
            on_stop=getattr(client, "interrupt", None), on_tick=sender.flush,
        )  # fmt: skip
        missing_ids_fault = recover_card_ids(
            batch, plan.from_journal, plan.ids, plan.known, sender,
            lookup=lookup_existing, size=size, stop=stop,
        )  # fmt: skip
    sender.settle_disputes()
    sender.flush()

    # A fault met after an answer came back (journal unwritable, platform gone) keeps that answer.
    fatal = pool.fatal or sender.fault or missing_ids_fault
    if fatal is None and sender.sent and not sender.answered and not stop.is_set():
        # Every call went unanswered, too few or too quick for the breaker: the platform is unreachable
        # all the same, and the run says so (exit 2) as a longer one would.
        latest = f"（最近一次：{sender.last_unanswered}）" if sender.last_unanswered else ""
        fatal = PlatformUnreachable(
            f"平台没有应答：本次发送的 {sender.sent} 人都没有得到平台的答复{latest}，结果未知。"
            "请检查网络、平台状态和平台地址 base_url 后重新运行同一命令（已办理的不会重复发送）",
            "平台没有应答",
        )
    reason, unknown = MESSAGE_NOT_SENT, MESSAGE_UNKNOWN
    if fatal is not None:
        fault = str(fatal) if isinstance(fatal, EhcError) else "程序内部错误"
        reason = f"未发送：{fault}"
        if not pool.abandoned:  # the fault stopped the calls in flight, not a second Ctrl-C
            unknown = MESSAGE_STOPPED_UNKNOWN.format(fault=fault)
    final: list[Outcome] = []
    for position, outcome in enumerate(pool.outcomes):
        if outcome is None:
            outcome = Outcome(STATUS_FAILED, "", unknown if position in pool.unknown else reason)
        final.append(outcome)
    set_outcomes(batch, list(plan.to_send), final)
    append_rejections(batch, list(plan.to_send), final)
    by_id = dict(zip(plan.ids.loc[plan.to_send].tolist(), final, strict=True))
    follow = [follow_first(by_id[plan.ids.loc[row_id]]) for row_id in plan.repeats]
    set_outcomes(batch, list(plan.repeats), follow)
    if sender.withdrawn:
        # The card given to these residents turned out to be in doubt in this batch (a lookup found it
        # another's, or it was answered to two); the journal no longer holds them enrolled, and their
        # rows must not show that card as theirs.
        doubted = plan.ids[plan.ids.isin(list(sender.withdrawn)).to_numpy()]
        update_outcome(
            batch, doubted.index,
            {"status": STATUS_FAILED, "result_code": "", "message": doubted.map(sender.withdrawn).tolist(),
             "ehealthCardId": "", "virtualCardNum": ""},
        )  # fmt: skip

    stats.sent = sender.sent
    stats.calls = sender.calls
    stats.elapsed = pool.elapsed
    stats.interrupted = stop.is_set() and fatal is None
    stats.counts = {str(k): int(v) for k, v in batch.outcome["status"].value_counts().items()}
    logger.info(
        "提交结束：发送 {} 人，用时 {:.1f} 秒（{:.1f} 人/秒）；结果 {}",
        stats.sent, stats.elapsed, stats.achieved_rate,
        "，".join(f"{STATUS_LABELS.get(status, status)} {count}" for status, count in stats.counts.items()),
    )  # fmt: skip
    if fatal is not None:
        raise fatal
    return stats


def _reporting(
    send: Callable[[Task], Outcome | None], report: Callable[[Outcome], object]
) -> Callable[[Task], Outcome | None]:
    """``send``, then ``report`` of its outcome (``None``: not sent, nothing to report)."""

    def send_and_report(task: Task) -> Outcome | None:
        outcome = send(task)
        if outcome is not None:
            report(outcome)
        return outcome

    return send_and_report


def _platform_client(settings: Settings, rate: float | None, concurrency: int) -> Any:
    from pipeline.platform.client import PlatformClient

    return PlatformClient(settings.platform, settings.state_dir, rate=rate, pool_size=concurrency)


def missing_credentials(settings: Settings) -> str:
    """Which of the app's credentials are not set, as the start of a sentence (``缺少应用密钥…``), or ""."""
    missing = []
    if not settings.platform.app_id:
        missing.append("应用 ID（环境变量 EHC_APP_ID 或配置 [platform] app_id）")
    if not settings.platform.app_secret:
        missing.append("应用密钥（环境变量 EHC_APP_SECRET）")
    return f"缺少{'和'.join(missing)}" if missing else ""


def _check_credentials(settings: Settings) -> None:
    if missing := missing_credentials(settings):
        raise ConfigError(f"{missing}，无法提交。请设置后重新运行；校验报告已写出")


def _check_org_code(missing: int) -> None:
    if missing:
        raise ConfigError(
            f"{missing} 行没有发卡机构代码（orgCode），无法提交。"
            "请设置环境变量 EHC_ORG_CODE 或配置 [defaults] org_code"
            "（或在表中加一列 发卡机构代码）；校验报告已写出"
        )


def _valid_ids(spool: BatchSpool, position: int) -> list[str]:
    """The ID numbers of the valid rows of a kept batch, read without its other columns."""
    status = spool.column(position, "outcome", "status")
    ids = spool.column(position, "rows", "sfzhm")
    valid = np.asarray(status.to_numpy(zero_copy_only=False) == STATUS_VALID)
    return [str(i) for i in ids.filter(valid).to_pylist()]


def _needs_calls(spool: BatchSpool, journal: Journal) -> bool:
    """Whether any valid row's resident is not enrolled per the journal (stops at the first such batch)."""
    for position in range(len(spool)):
        ids = list(dict.fromkeys(_valid_ids(spool, position)))
        if not ids:
            continue
        known = journal.lookup_many(ids, columns=("state",))
        enrolled = set(known.index[known["state"] == STATE_ENROLLED]) if len(known) else set()
        if any(i not in enrolled for i in ids):
            return True
    return False


def _slices(batch: Batch, rows: int) -> list[Batch]:
    """``batch`` cut into batches of at most ``rows`` rows (frames sliced, not copied)."""
    if len(batch) <= rows:
        return [batch]
    pieces = []
    row_ids = batch.faults["row_id"].to_numpy()
    for first in range(0, len(batch), rows):
        last = min(first + rows, len(batch))
        start, stop = batch.start + first, batch.start + last
        mine = (row_ids >= start) & (row_ids < stop)
        pieces.append(
            Batch(
                tables=batch.tables, table_rows=[range(start, stop)] if batch.tables else [],
                rows=batch.rows.iloc[first:last], original=batch.original.iloc[first:last],
                extras=batch.extras.iloc[first:last], faults=batch.faults[mine].reset_index(drop=True),
                outcome=batch.outcome.iloc[first:last].copy(),
            )
        )  # fmt: skip
    return pieces


@dataclass
class _Sending:
    """The state of a submission's second pass."""

    stop: threading.Event
    stats: SendStats = field(default_factory=SendStats)
    fatal: BaseException | None = None
    reason: str = ""
    position: int = 0  # the kept batch being sent
    part: int = 0  # its slices already reported

    def absorb(self, part: SendStats) -> None:
        self.stats.sent += part.sent
        self.stats.calls += part.calls
        self.stats.from_journal += part.from_journal
        self.stats.elapsed += part.elapsed
        self.stats.interrupted = self.stats.interrupted or part.interrupted


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
    chunk_rows: int | None = None,
    resend: str = RESEND_SAME_COMMAND,
) -> RunResult:
    """``ehc submit``: dry run, then send every valid row; the result holds the counts and the reports.

    The reports are written in every case: after the dry run if submission
    cannot start (missing credentials or orgCode, platform refusing or
    unreachable: the error is then raised), and after submission even when it
    was stopped.  Ctrl-C / SIGTERM raise :class:`Interrupted` (exit 130) once
    the reports are written.  ``resend`` is what a row that failed to send
    says to do (see :func:`submit_batch`): ``ehc run --inbox`` says its own.
    """
    from pipeline.dryrun import CheckStats, check_chunks, finish_reports, open_registers, run_result
    from pipeline.reports.annotate import CSV_ROW_LIMIT
    from pipeline.reports.write import (
        ReportWriter,
        make_out_dir,
        refuse_inputs_in_the_way,
        refuse_reports_held_open,
    )

    rate = settings.submit.rate if rate is None else rate
    limit = rate if rate and rate > 0 else None
    workers = concurrency or settings.submit.concurrency or None
    lookup = settings.submit.lookup_existing if lookup_existing is None else lookup_existing
    register_secret(settings.platform.app_secret)
    registers = open_registers(inputs, settings, options, progress=progress)
    refuse_inputs_in_the_way(Path(out_dir), [Path(path) for path in inputs])
    refuse_reports_held_open(Path(out_dir))
    work = make_out_dir(Path(out_dir), scratch_name("ehc-submit"))
    spool = BatchSpool(work, keep_rows=CSV_ROW_LIMIT)
    stats = CheckStats()
    reported: dict[str, object] | None = None  # the counts of the reports, once they are in place
    try:
        # Pass 1: every row checked (and kept on disk) before anything is sent.
        with interrupt_on_signals():
            bar = RowBar("校验", registers.estimated_rows, enabled=progress)
            chunks = check_chunks(registers, settings, chunk_rows=chunk_rows, stats=stats, bar=bar)
            try:
                for batch in chunks:
                    spool.add(batch, _head_of(registers, batch))
            finally:
                chunks.close()  # stops reading ahead at once, whatever stopped the run
                bar.close()
        sending = _Sending(threading.Event())
        # From here until the reports are in place a signal stops the sending (nothing new leaves, the
        # calls in flight are recorded) and never the reports: no default SIGTERM death between the passes
        # or while the reports are written (a second signal still ends the run at once).
        with stop_on_signals(sending.stop):
            writer: ReportWriter | None = None
            started = False
            try:
                _check_credentials(settings)
                _check_org_code(_missing_org(spool))
                with (
                    Journal(settings.journal_path) as journal,
                    _platform_client(settings, limit, pool_size(limit, workers).maximum) as client,
                ):
                    if _needs_calls(spool, journal):
                        client.work_key()  # fail fast, before anything is sent
                    started = True
                    writer = ReportWriter(out_dir, submitted=True, extra_names=registers.extra_names,
                                          wholes=registers.wholes)  # fmt: skip
                    _send_all(spool, writer, sending, client, journal, rate=limit, workers=workers,
                              lookup=lookup, progress=progress, total=stats.rows - stats.invalid,
                              resend=resend)  # fmt: skip
            finally:
                if writer is None:
                    writer = ReportWriter(out_dir, submitted=started, extra_names=registers.extra_names,
                                          wholes=registers.wholes)  # fmt: skip
                try:
                    _report_rest(spool, writer, sending, started, progress=progress)
                    paths = finish_reports(writer, progress=progress)
                    reported = writer.tally.counts()
                finally:
                    writer.abort()
        if sending.fatal is not None:
            raise sending.fatal
        if sending.stats.interrupted or sending.stop.is_set():
            raise Interrupted(
                f"提交已中断；已完成部分的报告已写入 {out_dir}。"
                "再次运行同一命令即可继续（已办理的不会重复发送）"
            )
    except EhcError as error:
        error.counts = reported  # what the reports say, for a caller that sums up (ehc run --inbox)
        raise
    finally:
        from pipeline.reports.spool import remove_folder

        remove_folder(work)
    assert reported is not None  # the reports are in place, or the run raised
    return run_result(reported, paths, submitted=True)


def _head_of(registers: Registers, batch: Batch) -> MappedTable | None:
    """The run's table (without rows) a chunk comes from, matched by path and sheet."""
    raw = batch.tables[0].raw
    for head in registers.heads:
        if head.raw.path == raw.path and head.raw.sheet == raw.sheet:
            return head
    return None


def _missing_org(spool: BatchSpool) -> int:
    missing = 0
    for position in range(len(spool)):
        status = spool.column(position, "outcome", "status").to_numpy(zero_copy_only=False)
        org = spool.column(position, "rows", "orgCode").to_numpy(zero_copy_only=False)
        missing += int(((status == STATUS_VALID) & (org == "")).sum())
    return missing


def _send_all(
    spool: BatchSpool, writer: Any, sending: _Sending, client: ClientLike, journal: Journal, *,
    rate: float | None, workers: int | None, lookup: bool, progress: bool, total: int,
    resend: str = RESEND_SAME_COMMAND,
) -> None:  # fmt: skip
    """Pass 2: each kept batch looked up, sent slice by slice and reported, until stopped or done."""
    bar = RowBar("提交", total, enabled=progress, unit="人")
    try:
        with stop_on_signals(sending.stop):
            for part in _unreported(spool, sending, until=sending.stop.is_set):
                if sending.stop.is_set():
                    not_sent(part, sending.reason or MESSAGE_NOT_SENT)
                else:
                    try:
                        sending.absorb(
                            submit_batch(
                                part, client, journal, rate=rate, concurrency=workers,
                                lookup_existing=lookup, stop=sending.stop,
                                on_outcome=lambda _: bar.advance(1), resend=resend,
                            )
                        )  # fmt: skip
                    except EhcError as error:
                        sending.fatal = error
                        sending.reason = f"未发送：{error}"
                        sending.stop.set()
                    except Exception as error:
                        sending.fatal = error
                        sending.reason = "未发送：程序内部错误"
                        sending.stop.set()
                writer.add(part)
    finally:
        bar.close()


def _unreported(
    spool: BatchSpool, sending: _Sending, *, until: Callable[[], bool] = lambda: False, whole: bool = False
) -> Iterator[Batch]:
    """The kept rows not reported yet, in order, a slice at a time.

    A part counts as reported once the next is asked for (a caller that
    stops on an error leaves it unreported), and a batch is let go once all
    its parts are.  No new batch is started once ``until()`` says so.
    ``whole``: a batch none of whose rows is reported comes as one part.
    """
    while sending.position < len(spool) and not until():
        batch = spool.batch(sending.position)
        for part in [batch] if whole and sending.part == 0 else _slices(batch, SEND_ROWS)[sending.part :]:
            yield part
            sending.part += 1
        spool.discard(sending.position)
        sending.position += 1
        sending.part = 0


def _report_rest(
    spool: BatchSpool, writer: Any, sending: _Sending, started: bool, *, progress: bool = False
) -> None:
    """Report every kept row not reported yet: as checked if sending never started, else as not sent.

    A chunk none of whose rows has been reported is reported whole, as a dry
    run reports it, rather than in the slices it is sent in (each report of a
    slice has its fixed cost: a million rows took some 2.5 s in slices).
    """
    bar = RowBar("写报告", spool.rows_from(sending.position) - sending.part * SEND_ROWS, enabled=progress)
    try:
        for part in _unreported(spool, sending, whole=True):
            if started:
                not_sent(part, sending.reason or MESSAGE_NOT_SENT)
            writer.add(part)
            bar.advance(len(part))
    finally:
        bar.close()
