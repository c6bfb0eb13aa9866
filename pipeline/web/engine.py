"""The workspace's one door into the rest of ``ehc``: every call it makes into the library is here.

The pages, the job runner and the submission process speak of registers,
tables, faults and submissions through these functions and names only, so
that where a stage lives in the library (and how it is split) matters to
this module alone.  Nothing here decides anything about the web: it reads,
normalises, validates, writes reports and submits exactly as ``ehc validate``
and ``ehc submit`` do, with two differences the workspace needs:

* the centre's organisation code is every row's ``orgCode``, whatever the
  register or the configured default says (a clerk submits for their own
  centre only);
* the clerk's corrections (cell edits) replace the values read before
  normalisation, and the annotated copy shows them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from pipeline.config import Settings, WebSettings, load_settings
from pipeline.errors import (
    EXIT_FATAL,
    AuthenticationRefused,
    ConfigError,
    EhcError,
    InputError,
    LockHeld,
    PlatformError,
)
from pipeline.files import explain_os_error
from pipeline.logs import mask_id, mask_text, register_secret, setup_logging
from pipeline.messages import fault_fix
from pipeline.model import (
    ADDRESS_FIELD,
    FAULT_COLUMNS,
    FIELD_LABELS,
    FIELDS,
    INPUT_FIELDS,
    REQUIRED_INPUT_FIELDS,
    STATUS_ALREADY_ENROLLED,
    STATUS_ENROLLED,
    STATUS_FAILED,
    STATUS_INVALID,
    STATUS_LABELS,
    STATUS_REJECTED,
    STATUS_VALID,
    Batch,
    MappedTable,
    RawTable,
)
from pipeline.reading.headers import EXTRA, IGNORE, builtin_aliases, field_code, header_key
from pipeline.reading.register import TEXT_SUFFIXES, WORKBOOK_SUFFIXES
from schemas.result_codes import describe, hint

__all__ = [
    "ADDRESS_FIELD", "EXIT_FATAL", "EXTRA", "FIELDS", "FIELD_LABELS", "IGNORE", "INPUT_FIELDS",
    "REQUIRED_INPUT_FIELDS", "STATUS_ALREADY_ENROLLED", "STATUS_ENROLLED", "STATUS_FAILED",
    "STATUS_INVALID", "STATUS_LABELS", "STATUS_REJECTED", "STATUS_VALID", "TEXT_SUFFIXES",
    "WORKBOOK_SUFFIXES", "AuthenticationRefused", "Batch", "ConfigError", "EhcError", "InputError",
    "LockHeld", "MappedTable", "PlatformError", "RawTable", "Settings", "WebSettings", "describe",
    "explain_os_error", "fault_fix", "field_code", "hint", "load_settings", "mask_id", "mask_text",
    "register_secret", "setup_logging",
]  # fmt: skip

#: Statuses a submission gave that a later edit or submission must not undo.
ENROLLED_STATUSES = frozenset({STATUS_ENROLLED, STATUS_ALREADY_ENROLLED})

#: Statuses of rows that did not get through.
BAD_STATUSES = frozenset({STATUS_INVALID, STATUS_REJECTED, STATUS_FAILED})

#: Names of the report files, by the kind a download asks for.
REPORT_FILES = {"errors": "errors.xlsx", "results": "results.xlsx", "csv": "results.csv"}


def preload() -> None:
    """Import the heavy stages now (a worker or server warming up), not on the first upload."""
    from pipeline import normalise, validate  # noqa: F401
    from pipeline.reading import register  # noqa: F401
    from pipeline.reports import write  # noqa: F401


def warm_checks(settings: Settings, org_code: str = "") -> None:
    """Check one blank row, so that the first edit a clerk makes finds today's schema built.

    Building the schema and pandera's first pass over a frame cost about
    100 ms once per process and day; a server does it at start, beside serving.
    """
    blank = pd.DataFrame({name: pd.Series([""], dtype="str") for name in INPUT_FIELDS})
    check_rows(blank, settings, org_code, date.today())


# --- columns -----------------------------------------------------------------------------------


def read_raw_tables(path: Path, limits: WebSettings | None = None) -> list[RawTable]:
    """The register at ``path`` as read by ``ehc validate`` (the first sheet with data); InputError.

    With ``limits`` (the workspace's settings) it is read as a nightly
    import reads a file: in a child process under ``read_memory_mb`` and
    ``read_timeout_seconds``, so that whatever a hostile upload makes the
    reader do costs that upload, not the worker that reads it.
    """
    from pipeline.reading.isolated import ReadLimits
    from pipeline.reading.register import ReadPolicy, read_register, reading_policy

    if limits is None:
        return read_register(path)
    policy = ReadPolicy(
        follow_symlinks=False,
        limits=ReadLimits(
            memory_bytes=limits.read_memory_mb << 20 if limits.read_memory_mb > 0 else None,
            seconds=limits.read_timeout_seconds if limits.read_timeout_seconds > 0 else None,
        ),
    )
    with reading_policy(policy):
        return read_register(path)


@contextlib.contextmanager
def warnings_while_reading() -> Iterator[list[str]]:
    """The warnings logged by this thread inside the block (a sheet left unread, residents above the
    header): the command line prints them, a page must show them too."""
    said: list[str] = []
    thread = threading.get_ident()

    def keep(message: Any) -> None:
        said.append(str(message.record["message"]))

    sink = logger.add(
        keep, level="WARNING", format="{message}",
        filter=lambda record: record["thread"].id == thread and record["level"].name == "WARNING",
    )  # fmt: skip
    try:
        yield said
    finally:
        logger.remove(sink)


def map_table(raw: RawTable, aliases: Mapping[str, str]) -> MappedTable:
    """Recognise the columns of ``raw`` with the centre's ``aliases`` (header -> field code).

    A register lacking a required column raises :class:`InputError`.
    """
    from pipeline.mapping import map_columns

    return map_columns(raw, aliases)


def guess_fields(headers: Sequence[str], aliases: Mapping[str, str]) -> list[str]:
    """The field each header would map to ("" for none), when the table cannot be mapped whole.

    The centre's aliases first, then the built-in vocabulary; a field goes
    to the first column that names it.
    """
    builtin = builtin_aliases()
    user = {header_key(h): code for h, code in aliases.items()}
    taken: set[str] = set()
    guessed = []
    for header in headers:
        key = header_key(header)
        code = user.get(key) or builtin.get(key) or ""
        if code and code not in (IGNORE, EXTRA) and code in taken:
            code = ""
        taken.add(code)
        guessed.append(code)
    return guessed


def source_column(field_headers: Mapping[str, str], field: str) -> tuple[str, str]:
    """(clerk's header, input field) a field's value came from; ("", field) if no column holds it."""
    from pipeline.reports.data import source_column as located

    return located(dict(field_headers), field)


# --- checking rows -----------------------------------------------------------------------------


def check_rows(
    original: pd.DataFrame,
    settings: Settings,
    org_code: str,
    today: date,
    sources: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalise and validate rows as the dry run does, for one centre.

    ``original`` holds :data:`INPUT_FIELDS` as written (index ``row_id``).
    Returns the normalised rows (:data:`FIELDS`) and every fault and warning
    (:data:`FAULT_COLUMNS`), sorted by row.  ``org_code`` is every row's
    ``orgCode``.  ``sources`` (same index: ``source_file``, ``source_sheet``,
    ``source_row``) says where each row is, so that a repeated ID number
    (10115) names the row it first appeared on, as ``ehc validate`` does.
    """
    from pipeline import normalise, validate

    defaults = replace(settings.defaults, org_code=org_code)
    rows, warnings = normalise.normalise(original, defaults, today)
    rows["orgCode"] = pd.Series(org_code, index=rows.index, dtype=rows["orgCode"].dtype)
    faults = validate.validate(rows, today=today, written=original, sources=sources)
    if len(warnings):
        faults = pd.concat([faults, warnings], ignore_index=True)
        order = np.argsort(faults["row_id"].to_numpy(), kind="stable")
        faults = faults.take(order).reset_index(drop=True)
    return rows, faults.loc[:, list(FAULT_COLUMNS)]


def outcome_of(row_ids: pd.Index, faults: pd.DataFrame) -> pd.DataFrame:
    """Status, result codes and message of each row from its faults, as the dry run gives them."""
    from pipeline.batch import status_from_faults

    local = pd.RangeIndex(len(row_ids))
    positions = pd.Index(row_ids).get_indexer(faults["row_id"].to_numpy())
    relabelled = faults.assign(row_id=positions)
    outcome = status_from_faults(len(row_ids), relabelled)
    outcome.index = pd.Index(row_ids)
    assert len(local) == len(outcome)
    return outcome


def stack_tables(tables: list[MappedTable]) -> tuple[list[range], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Row ranges, source columns, fields as written and extras of ``tables`` stacked in order."""
    from pipeline.batch import combine

    return combine(tables)


def apply_edits(original: pd.DataFrame, edits: pd.DataFrame) -> pd.DataFrame:
    """``original`` with each edit's ``value`` in its ``row_id``/``field`` cell (the last edit wins)."""
    if not len(edits):
        return original
    edited = original.copy()
    for field, group in edits.groupby("field", sort=False):
        column = edited[field].to_numpy(dtype=object, copy=True)
        positions = edited.index.get_indexer(pd.Index(group["row_id"]))
        column[positions] = group["value"].to_numpy(dtype=object)
        edited[field] = pd.Series(column, index=edited.index, dtype="str")
    return edited


def build_batch(
    path: Path,
    aliases: Mapping[str, str],
    edits: pd.DataFrame,
    settings: Settings,
    org_code: str,
    *,
    file_name: str,
    today: date | None = None,
) -> Batch:
    """Read ``path`` again, apply ``edits`` (row_id, field, value) and check every row: the batch to send.

    The annotated copy marks the edited cells with their new values.
    """
    today = today or date.today()
    tables = [map_table(raw, aliases) for raw in read_raw_tables(path, settings.web)]
    offsets, sources, original, extras = stack_tables(tables)
    sources["source_file"] = file_name
    original = apply_edits(original, edits)
    rows, faults = check_rows(original, settings, org_code, today, sources)
    return Batch(
        tables=tables,
        table_rows=offsets,
        rows=pd.concat([sources, rows], axis=1),
        original=original,
        extras=extras,
        faults=faults,
        outcome=outcome_of(rows.index, faults),
        cell_edits=edits.loc[:, ["row_id", "field", "value"]] if len(edits) else None,
    )


def annotated_copy_among(raws: Sequence[RawTable]) -> bool:
    """Whether a register read is an annotated copy a run wrote (its sheet has the 问题说明 column)."""
    from pipeline.reports.annotate import old_note_positions

    return any(old_note_positions(raw) for raw in raws)


def annotated_copy_possible(file_name: str, rows: int) -> bool:
    """Whether a register of this name and length gets an annotated copy among its reports.

    Every workbook does (marked in place, or rebuilt from its values); a text
    register does up to the copy's row limit.
    """
    from pipeline.reports.annotate import CSV_ROW_LIMIT

    return Path(file_name).suffix.lower() not in TEXT_SUFFIXES or rows <= CSV_ROW_LIMIT


def write_reports(batch: Batch, out_dir: Path, *, submitted: bool) -> dict[str, Path]:
    """Every report of ``batch`` into ``out_dir``, as ``ehc validate`` / ``ehc submit`` write them."""
    from pipeline.reports.write import write_reports as write

    return write(out_dir, batch, submitted=submitted)


# --- submitting --------------------------------------------------------------------------------


@contextlib.contextmanager
def run_lock(state_dir: Path, command: str) -> Iterator[None]:
    """The run lock ``ehc submit`` and ``ehc run`` hold; raises :class:`LockHeld` when another holds it."""
    from pipeline.state.lock import run_lock as lock

    with lock(state_dir, command=command):
        yield


def lock_holder(state_dir: Path) -> str:
    """Who holds (or last held) the run lock, in Chinese ("" if nobody is written there)."""
    from pipeline.state.lock import read_holder

    holder = read_holder(state_dir)
    if holder is None:
        return ""
    what = holder.command or "ehc"
    return f"{what}（{holder.describe()}）"


@dataclass
class SubmitResult:
    """What a web submission did."""

    sent: int
    elapsed: float
    interrupted: bool
    fatal: EhcError | None


def submit(
    batch: Batch,
    settings: Settings,
    *,
    stop: threading.Event,
    on_plan: Callable[[int, int], object],
    on_outcome: Callable[[str], object],
) -> SubmitResult:
    """Send every valid row of ``batch`` once, as ``ehc submit`` does (same journal and rate limit).

    The caller holds the run lock.  ``on_plan(to_send, from_journal)`` is
    called once planned; ``on_outcome(status)`` after each resident.  A fault
    that stops the run (credentials refused, platform unreachable) is
    returned as ``fatal`` once every row has a final status.
    """
    from pipeline.platform.client import PlatformClient
    from pipeline.state.journal import Journal
    from pipeline.submission.submit import plan_submission, pool_size, submit_batch

    platform = settings.platform
    if not platform.app_id or not platform.app_secret:
        raise ConfigError("服务器没有配置平台的应用 ID 或密钥，无法提交。请联系运维人员")
    register_secret(platform.app_secret)
    rate = settings.submit.rate if settings.submit.rate > 0 else None
    workers = settings.submit.concurrency or None
    with Journal(settings.journal_path) as journal:
        plan = plan_submission(batch, journal)
        on_plan(len(plan.to_send) + len(plan.repeats), len(plan.from_journal))
        size = pool_size(rate, workers).maximum
        client = PlatformClient(platform, settings.state_dir, rate=rate, pool_size=size)
        try:
            if plan.needs_calls:
                client.work_key()  # fail fast, before anything is sent
            try:
                summary = submit_batch(
                    batch, client, journal, rate=rate, concurrency=workers,
                    lookup_existing=settings.submit.lookup_existing, stop=stop, plan=plan,
                    on_outcome=lambda outcome: on_outcome(outcome.status),
                )  # fmt: skip
            except EhcError as error:
                return SubmitResult(0, 0.0, False, error)
        finally:
            client.close()
    return SubmitResult(summary.sent, summary.elapsed, summary.interrupted, None)


def journal_outcomes(settings: Settings, id_numbers: Sequence[str], org_code: str) -> pd.DataFrame:
    """What the journal knows of these residents (index ID number): status, result code, message, card ids.

    Card ids only as the centre of ``org_code`` may see them
    (:func:`~pipeline.state.journal.visible_card_ids`).

    For a submission that ended without recording its rows (its process
    was killed): ``enrolled`` and ``rejected`` are what the platform
    answered; a resident still being sent, or given up on, is ``failed``
    (sent again by the next submission, which the platform answers as
    already enrolled if the first call got through).
    """
    from pipeline.state.journal import (
        STATE_ENROLLED,
        STATE_REJECTED,
        STATE_SENDING,
        Journal,
        visible_card_ids,
    )

    columns = ["status", "result_code", "message", "ehealthCardId", "virtualCardNum"]
    if not settings.journal_path.exists() or not len(id_numbers):
        return pd.DataFrame(columns=columns, dtype=str)
    with Journal(settings.journal_path) as journal:
        known = journal.lookup_many(id_numbers)
    cards = visible_card_ids(known, [org_code] * len(known))
    state = known["state"].astype(str)
    status = np.select(
        [state == STATE_ENROLLED, state == STATE_REJECTED], [STATUS_ENROLLED, STATUS_REJECTED], STATUS_FAILED
    )

    def text(column: str) -> pd.Series:
        return known[column].astype("string").fillna("").astype(str)

    message = np.where(
        state == STATE_SENDING,
        "提交中断，这一人的发送结果未知；再次提交时会重新发送（平台若答复已办理，按已办理处理）",
        text("message"),
    )
    return pd.DataFrame(
        {
            "status": status, "result_code": text("result_code"), "message": message,
            "ehealthCardId": cards["ehealth_card_id"], "virtualCardNum": cards["virtual_card_num"],
        },
        index=known.index,
    )  # fmt: skip


def start_sandbox(state: Path, app_id: str, app_secret: str) -> tuple[str, Callable[[], None]]:
    """The bundled sandbox on a free loopback port, in a thread: (base URL, stop function)."""
    from pipeline.sandbox import build_server

    server = build_server(state=state, apps={app_id: app_secret})
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="ehc-sandbox", daemon=True)
    thread.start()

    def stop() -> None:
        server.close()
        thread.join(timeout=10)

    return server.base_url, stop


def export_qrcodes(
    results_dir: Path,
    out_dir: Path,
    settings: Settings,
    on_progress: Callable[[int, int], object] | None = None,
) -> tuple[int, int, int]:
    """QR code PNGs (``getImg``) of the enrolled residents in a results folder.

    Returns (pictures written, residents wanted, residents without a picture
    whom another try may give one).  ``on_progress(done, total)`` follows the
    residents as they are done.
    """
    from pipeline.platform.client import PlatformClient
    from pipeline.submission import qrcode

    rate = settings.submit.rate if settings.submit.rate > 0 else None
    with PlatformClient(settings.platform, settings.state_dir, rate=rate) as client:
        export = qrcode.export_qrcodes(
            results_dir, out_dir, client, settings.journal_path, on_progress=on_progress
        )
    return len(export.written), len(export.written) + len(export.failed), export.retryable
