"""The dry run: read every register, normalise it, validate it, report it — a chunk at a time.

This is the orchestration only, and the front half of every run: a
submission and a nightly import call :func:`open_registers` and
:func:`check_chunks`, then send, then write the reports.  Reading is
:mod:`pipeline.reading` and :mod:`pipeline.mapping`, the row work
:mod:`pipeline.normalise` and :mod:`pipeline.validate`, the bookkeeping
:mod:`pipeline.batch`, the files :mod:`pipeline.reports`.

Every register is opened first (so a missing column or an unreadable file
stops the run before anything is written); then the rows flow through in
chunks of at most :data:`CHUNK_ROWS`: the next chunk is read on a second
thread (Arrow parses without the GIL) while this one is normalised,
validated and reported, so memory stays flat whatever the register's length.
The one rule needing every earlier row, a repeated ID number, is kept by a
:class:`~pipeline.validate.RepeatedIds` across all chunks and files.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
from loguru import logger

from pipeline import mapping, normalise
from pipeline.batch import exit_code_of, stack_batches, status_from_faults
from pipeline.config import DefaultValues, Settings
from pipeline.errors import ConfigError
from pipeline.files import distinct_names
from pipeline.logs import safe_text
from pipeline.model import (
    BAD_STATUSES,
    FAULT_COLUMNS,
    FIELD_LABELS,
    FIELD_ONLY,
    INPUT_FIELDS,
    STATUS_INVALID,
    Batch,
    MappedTable,
    RawTable,
    ReadOptions,
    RunResult,
    TableSource,
)
from pipeline.prefetch import Prefetched
from pipeline.progress import RowBar, reading_shown
from pipeline.reading import register as reading
from pipeline.reading.table import column_letter
from pipeline.stopping import interrupt_on_signals
from pipeline.text.arrow import constant
from pipeline.workers import Workers, ask, fork_workers, usable_cores

#: Rows handled at once by every stage: bounds memory, large enough that per-chunk costs do not show
#: (some 90 ms of fixed work per chunk: 29 ms normalising and 61 ms validating chunks of 2,000
#: rows).  Measured on two cores: a 1,000,000-row CSV took 3.90 s in chunks of 400,000 rows, 4.00 s
#: in chunks of 300,000 and 4.03 s in chunks of 200,000; a 10,000,000-row one peaked at about 1.9,
#: 1.5 and 1.3 GB.  A text register's first chunks are smaller
#: (:func:`pipeline.reading.delimited.open_delimited`): checking starts at once.
CHUNK_ROWS = 400_000

#: Modules needed only after reading (pandera's is the heaviest), imported while the input is read.
LATER_MODULES = ("pipeline.validate", "pipeline.reports.write")

if TYPE_CHECKING:  # imported where used: pandera is the heaviest import of a run
    from pipeline.reports.write import ReportPart, ReportWriter
    from pipeline.validate import RepeatedIds

T = TypeVar("T")


def _import_in_background(
    names: Sequence[str],
    *,
    warm: tuple[Settings, date] | None = None,
    ahead: Prefetched[tuple[int, MappedTable]] | None = None,
) -> None:
    """Start importing ``names`` on a thread: most of reading runs in Arrow without the GIL.

    Given ``warm`` (the run's settings and day), the thread then normalises
    and validates one blank row, so that the code tables are read and the
    day's schema is built before the first chunk arrives, unless ``ahead``
    (the run's reading) already holds it: the chunk's own check then builds
    them, rather than both at once (a 1,000,000-row CSV's first chunk is read
    before the imports end).  An import that fails here fails again, with its
    error, where the module is used.  Not a daemon thread: the interpreter
    never stops halfway through an import.
    """

    def load() -> None:
        try:
            for name in names:
                importlib.import_module(name)
            if warm is not None and not (ahead is not None and ahead.ready):
                _warm_checks(*warm)
        except Exception:
            return  # the import or check where it is needed raises it again

    threading.Thread(target=load, name="ehc-imports").start()


#: Days whose checks this process has warmed: a nightly run checks file after file, and each warming
#: after the first (a blank row normalised and validated, some 0.1 s) found everything ready already.
_WARMED_DAYS: set[date] = set()


def _warm_checks(settings: Settings, today: date) -> None:
    """Normalise and validate one blank row: the code tables read, the day's schema built (once a day)."""
    from pipeline import validate

    if today in _WARMED_DAYS:
        return
    blank = pd.DataFrame({field: pd.Series([""], dtype="str") for field in INPUT_FIELDS})
    normalise.normalise(blank, settings.defaults, today)
    validate.warm_up(today)
    _WARMED_DAYS.add(today)


@dataclass
class Registers:
    """The registers of a run, opened: each table's header found and its columns recognised.

    ``sources[i]`` reads the rows of the table whose mapping is ``heads[i]``
    (a :class:`MappedTable` without rows).
    """

    sources: list[TableSource]
    heads: list[MappedTable]
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def extra_names(self) -> list[str]:
        """The clerk's unrecognised columns of every table, in order of first appearance."""
        names: dict[str, None] = {}
        for head in self.heads:
            names.update(dict.fromkeys(str(c) for c in head.extras.columns))
        return list(names)

    @property
    def wholes(self) -> dict[tuple[str, str], RawTable]:
        """The tables held in memory as read (workbook sheets), by path and sheet."""
        return {(s.path, s.sheet): s.whole for s in self.sources if s.whole is not None}

    @property
    def estimated_rows(self) -> int:
        """Rows the run will have, as far as can be told before reading them."""
        return sum(source.estimated_rows for source in self.sources)

    @property
    def labels(self) -> list[str]:
        """How a clerk names each table (``a.csv``, ``b.xlsx[名单]``)."""
        return [source.label for source in self.sources]


def open_registers(
    inputs: Sequence[Path],
    settings: Settings,
    options: ReadOptions = ReadOptions(),
    *,
    progress: bool = False,
) -> Registers:
    """Open every input and recognise its columns; fatal problems raise InputError (nothing read yet).

    ``progress``: a workbook (read whole here) shows its reading as a bar on a terminal.

    A default issue date (``[defaults] fksj``) that is no date is a
    :class:`ConfigError` here: otherwise every row would fail 10128, blamed on
    the register.
    """
    if problem := normalise.default_problem(settings.defaults):
        raise ConfigError(f"{problem}。请改正配置文件")
    aliases = dict(settings.column_aliases)
    if options.mapping_file is not None:
        aliases.update(mapping.load_mapping_file(options.mapping_file))
    sources: list[TableSource] = []
    heads: list[MappedTable] = []
    paths = _distinct_files(inputs)
    for path, name in zip(paths, distinct_names(paths), strict=True):
        with reading_shown(f"读取 {safe_text(name)}", _workbook_size(Path(path)), enabled=progress):
            opened = reading.open_register(Path(path), sheet=options.sheet, all_sheets=options.all_sheets)
        for source in opened:
            if name != Path(path).name:
                source = replace(source, name=name)
            head = mapping.map_columns(source.head(), aliases)
            for header, written, code in mapping.unused_field_columns(head, aliases):
                used, letter = head.field_headers[code], _letter(head, header)
                logger.warning(
                    "{}：{} 列“{}”也是{}，没有读取，读取的是前面的 {} 列“{}”。"
                    "要用 {} 列，请删去前面那一列或给它改名",
                    source.label, letter, written, FIELD_LABELS[code], _letter(head, used), used, letter,
                )  # fmt: skip
            heads.append(head)
            sources.append(source)
    return Registers(sources, heads, aliases)


def _workbook_size(path: Path) -> int:
    """The bytes of ``path`` when it is a workbook (read whole when opened), else 0."""
    if path.suffix.lower() not in reading.WORKBOOK_SUFFIXES:
        return 0
    try:
        return path.stat().st_size
    except OSError:  # opening it says what is wrong, in a clerk's words
        return 0


def _letter(head: MappedTable, header: str) -> str:
    """The sheet column (F) of the column ``header`` names."""
    return column_letter(head.raw.column_positions[list(head.raw.data.columns).index(header)])


def _distinct_files(inputs: Sequence[Path]) -> list[Path]:
    """``inputs`` with a file named twice (``a.csv ./a.csv``) kept once: read twice, every resident
    of it would be a repeated ID number (10115) of itself."""
    kept: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for path in map(Path, inputs):
        try:
            status = path.stat()
        except OSError:
            kept.append(path)  # opening it says what is wrong
            continue
        identity = (status.st_dev, status.st_ino)
        if identity in seen and status.st_ino:  # Windows may give no inode number: nothing to compare
            logger.warning("{} 与前面的输入是同一个文件，只读取一次", path.name)
            continue
        seen.add(identity)
        kept.append(path)
    return kept


@dataclass
class CheckStats:
    """What the checking of a run found, for its closing log lines."""

    rows: int = 0
    invalid: int = 0
    missing_org: int = 0
    rows_by_table: list[int] = field(default_factory=list)


def _source_frame(table: MappedTable, index: pd.RangeIndex) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source_file": constant(table.raw.file_name, index),
            "source_sheet": constant(table.raw.sheet, index),
            "source_row": np.asarray(table.raw.source_row, dtype=np.int64),
        },
        index=index,
    )


def _note_faults(table: MappedTable, index: pd.RangeIndex) -> pd.DataFrame | None:
    """The reading notes of a chunk (cells too long, values beyond the last column) as faults."""
    notes = table.raw.notes
    if not len(notes):
        return None
    field_of = {header: field for field, header in table.field_headers.items()}
    fields = notes["header"].map(field_of).fillna("").astype(str)
    field_only = notes["severity"] == FIELD_ONLY
    if field_only.any():  # a fault only in a field's column: none in 序号 or the clerk's own
        kept = (~field_only | (fields != "")).to_numpy()
        notes, fields, field_only = notes[kept], fields[kept], field_only[kept]
        if not len(notes):
            return None
    named = (fields == "") & (notes["header"] != "")
    messages = (
        notes["message"].astype(str).where(~named, notes["header"].astype(str) + " 列：" + notes["message"])
    )
    return pd.DataFrame(
        {
            "row_id": index.to_numpy()[notes["row"].to_numpy(dtype=np.int64)],
            "field": fields.to_numpy(),
            "code": notes["code"].to_numpy(dtype=np.int64),
            "severity": notes["severity"].astype(str).where(~field_only, "error").to_numpy(),
            "message": messages.to_numpy(),
        }
    )


def check_batch(
    table: MappedTable,
    start: int,
    defaults: DefaultValues,
    today: date,
    *,
    repeats: RepeatedIds | None = None,
    table_number: int = 0,
    most_faults: int | None = None,
) -> Batch:
    """Normalise and validate one chunk of one table: its rows as a Batch, ``row_id`` from ``start``.

    ``repeats`` (a :class:`~pipeline.validate.RepeatedIds`) carries the ID
    numbers of every earlier chunk of the run; ``table_number`` is this
    table's place among the run's tables (for the 10115 message).  Rows
    failing more than ``most_faults`` checks raise
    :class:`~pipeline.validate.TooManyFaults` (see :func:`checked_batches`).
    """
    from pipeline import validate

    n = len(table.fields)
    index = pd.RangeIndex(start, start + n)
    original = table.fields.loc[:, list(INPUT_FIELDS)].set_axis(index)
    normalised, warnings = normalise.normalise(original, defaults, today)
    places = validate.RepeatedIds.place(table_number, table.raw.source_row) if repeats is not None else None
    faults = validate.validate(
        normalised, today=today, written=original, repeats=repeats, places=places, most_faults=most_faults
    )
    parts = [
        frame for frame in (faults, warnings, _note_faults(table, index)) if frame is not None and len(frame)
    ]
    all_faults = pd.concat(parts, ignore_index=True) if parts else faults
    all_faults = all_faults.astype({"row_id": np.int64, "code": np.int64}).loc[:, list(FAULT_COLUMNS)]
    rows = pd.concat([_source_frame(table, index), normalised], axis=1)
    return Batch(
        tables=[table],
        table_rows=[range(start, start + n)],
        rows=rows,
        original=original,
        extras=table.extras.set_axis(index),
        faults=all_faults,
        outcome=status_from_faults(n, all_faults, start),
    )


@contextlib.contextmanager
def arrow_threads(count: int) -> Iterator[None]:
    """Arrow's pool of CPU threads at ``count`` within the block, as it was after."""
    before = pa.cpu_count()
    pa.set_cpu_count(max(1, count))
    try:
        yield
    finally:
        pa.set_cpu_count(before)


@contextlib.contextmanager
def _taken_on_a_thread(take: Callable[[T], object], *, name: str) -> Iterator[Callable[[T], None]]:
    """A function handing items to ``take``, which takes them in order on a thread of its own.

    The caller goes on with the next chunk while ``take`` works on this one
    (much of both is Arrow and numpy, which release the GIL).  A hand-over
    waits until ``take`` is done with the item before: only one chunk is in
    its hands, and memory stays that of one chunk more.  An error of
    ``take`` is raised by the next hand-over or on leaving the block;
    leaving the block normally waits until every item is taken, leaving it
    by an error drops what is not yet taken.
    """
    slots: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=1)
    fault: list[BaseException] = []
    stop = threading.Event()

    def work() -> None:
        while True:
            try:
                more, item = slots.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():  # the caller was stopped before it could hand over the end
                    return
                continue
            try:
                if not more or stop.is_set():
                    return
                if not fault:  # after a fault, drained until the end is handed over
                    take(item)  # type: ignore[arg-type]
            except BaseException as error:  # raised again in the caller's thread
                fault.append(error)
            finally:
                del item
                slots.task_done()

    def hand(item: T) -> None:
        slots.join()  # the item before is done with
        if fault:
            raise fault[0]
        slots.put((True, item))

    # A daemon: a Ctrl-C striking where even ``stop`` cannot be set must not hold the process at exit.
    worker = threading.Thread(target=work, name=name, daemon=True)
    try:
        worker.start()  # a Ctrl-C while it starts: the thread may be running, and is stopped below
        yield hand
    except BaseException:
        stop.set()
        raise
    finally:
        try:
            slots.put((False, None))
        except BaseException:  # a Ctrl-C while the end is handed over: the thread stops on its own
            stop.set()
            raise
        finally:
            # Waited for even then: ``take`` must be done before the caller closes what it writes to.
            if worker.ident is not None:  # started
                worker.join()
    if fault:
        raise fault[0]


#: Faults one batch is made with, at most, unless a batch of :data:`MIN_BATCH_ROWS` holds more.
#: Each fault's message and its lines in the reports take a few hundred bytes while a batch is
#: checked and written: 100,000 rows of garbage (1.6 million faults) in one batch took 4 GB.
BATCH_FAULTS = 200_000

#: Fewest rows a chunk of a register that is mostly faults is cut into.
MIN_BATCH_ROWS = 1_000


def checked_batches(
    table: MappedTable,
    start: int,
    defaults: DefaultValues,
    today: date,
    *,
    repeats: RepeatedIds | None = None,
    table_number: int = 0,
) -> Iterator[Batch]:
    """:func:`check_batch` of ``table``, as one Batch, or several when it holds too many faults for one.

    A chunk is sized by rows and cells as read; a register whose cells are
    mostly wrong (the wrong file, a shifted column) would make millions of
    faults in one.  Its faults are counted before their messages are made,
    and such a chunk is checked again in parts of about :data:`BATCH_FAULTS`
    faults each, so memory stays that of a bounded batch.
    """
    from pipeline import validate

    n = len(table.fields)
    most = BATCH_FAULTS if n > MIN_BATCH_ROWS else None
    try:
        batch = check_batch(
            table, start, defaults, today, repeats=repeats, table_number=table_number, most_faults=most
        )
    except validate.TooManyFaults as dense:
        rows = max(MIN_BATCH_ROWS, int(n * BATCH_FAULTS / dense.count))
    else:
        yield batch
        return
    for offset in range(0, n, rows):
        if repeats is not None:
            repeats.expect_more(offset + rows < n)
        yield check_batch(
            table.rows(offset, offset + rows),
            start + offset,
            defaults,
            today,
            repeats=repeats,
            table_number=table_number,
        )


def _mapped_chunks(registers: Registers, chunk_rows: int) -> Iterator[tuple[int, MappedTable]]:
    for number, source in enumerate(registers.sources):
        for raw in source.read(chunk_rows):
            yield number, mapping.map_columns(source.named(raw), registers.aliases)


def read_ahead(registers: Registers, chunk_rows: int | None = None) -> Prefetched[tuple[int, MappedTable]]:
    """The run's chunks (table number, rows mapped), read from now on a thread of their own."""
    return Prefetched(_mapped_chunks(registers, chunk_rows or CHUNK_ROWS), name="ehc-read-ahead")


def check_chunks(
    registers: Registers,
    settings: Settings,
    *,
    today: date | None = None,
    chunk_rows: int | None = None,
    stats: CheckStats | None = None,
    bar: RowBar | None = None,
    ahead: Prefetched[tuple[int, MappedTable]] | None = None,
) -> Generator[Batch, None, None]:
    """Every row of the run, checked, as one Batch per chunk (in input order; ``row_id`` counts the run).

    ``ahead`` is the run's :func:`read_ahead` when reading has already
    started (then ``chunk_rows`` is the one it was given).
    """
    from pipeline import validate

    today = today or date.today()
    stats = stats if stats is not None else CheckStats()
    stats.rows_by_table = [0] * len(registers.sources)
    repeats = validate.RepeatedIds(registers.labels)
    start = 0
    for number, table in ahead if ahead is not None else read_ahead(registers, chunk_rows):
        for batch in checked_batches(
            table, start, settings.defaults, today, repeats=repeats, table_number=number
        ):
            start += len(batch)
            stats.rows += len(batch)
            stats.rows_by_table[number] += len(batch)
            stats.invalid += int((batch.outcome["status"] == STATUS_INVALID).sum())
            stats.missing_org += int((batch.rows["orgCode"] == "").sum())
            if bar is not None:
                bar.advance(len(batch))
            yield batch
    for source, rows in zip(registers.sources, stats.rows_by_table, strict=True):
        logger.info("读取 {}：{} 行（表头在第 {} 行）", source.label, rows, source.header_row)
    logger.info("校验完成：{} 行，其中 {} 行未通过", stats.rows, stats.invalid)


def prepare_batch(
    inputs: Sequence[Path],
    settings: Settings,
    options: ReadOptions = ReadOptions(),
    *,
    today: date | None = None,
) -> Batch:
    """Every row of a small run, checked, as one Batch (its chunks stacked).

    For callers that hold a run whole (the tests, a clerk's one register in
    the web workspace); a run of any length goes through :func:`check_chunks`.
    """
    registers = open_registers(inputs, settings, options)
    with contextlib.closing(check_chunks(registers, settings, today=today, chunk_rows=1 << 62)) as batches:
        return stack_batches(list(batches))


def run_validate(
    inputs: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    options: ReadOptions = ReadOptions(),
    *,
    progress: bool = False,
    today: date | None = None,
    chunk_rows: int | None = None,
    workers: int | None = None,
) -> RunResult:
    """``ehc validate``: the dry run with every report, nothing sent.

    A long run is checked by ``workers`` forked processes side by side
    (default: see :func:`worker_count`; ``EHC_WORKERS`` overrides; 0 checks
    in this process);
    where forking is not possible the run is checked in this process, with
    the same results.  Ctrl-C and SIGTERM stop it (exit 130) and leave no file behind.
    """
    with interrupt_on_signals(), contextlib.ExitStack() as cleanup:
        registers = open_registers(inputs, settings, options, progress=progress)
        today = today or date.today()
        count = worker_count(registers, workers)
        ahead: Prefetched[tuple[int, MappedTable]] | None = None
        if count:
            for name in LATER_MODULES:  # before forking: every worker starts with them
                importlib.import_module(name)
        else:
            # Reading ahead, checking and feeding the reports keep a thread each busy: Arrow's own pool
            # beside them only makes more threads than cores (on two cores, a 1,000,000-row CSV took
            # about 4 % more CPU and wall time with the pool at two threads than at one).
            cleanup.enter_context(arrow_threads(usable_cores() - 1))
            # The first chunk is read while the checks are imported and built.
            ahead = cleanup.enter_context(contextlib.closing(read_ahead(registers, chunk_rows)))
            _import_in_background(LATER_MODULES, warm=(settings, today), ahead=ahead)
        from pipeline.reports.write import ReportWriter, refuse_inputs_in_the_way

        refuse_inputs_in_the_way(out_dir, [Path(path) for path in inputs])
        writer = ReportWriter(
            out_dir, submitted=False, extra_names=registers.extra_names, wholes=registers.wholes
        )
        cleanup.callback(writer.abort)
        pool = _fork_checkers(registers, settings, writer, today, count) if count else None
        if pool is not None:
            cleanup.callback(pool.close)
        bar = RowBar("校验", registers.estimated_rows, enabled=progress)
        if pool is not None:
            try:
                _check_in_workers(pool, registers, writer, chunk_rows or PARALLEL_CHUNK_ROWS, bar)
            finally:
                pool.close()
                bar.close()
        else:
            chunks = check_chunks(
                registers, settings, today=today, chunk_rows=chunk_rows, bar=bar, ahead=ahead
            )
            try:
                with _taken_on_a_thread(writer.add, name="ehc-report-feed") as add:
                    for batch in chunks:
                        add(batch)
            finally:
                chunks.close()  # stops reading ahead at once, whatever stopped the run
                bar.close()
        paths = finish_reports(writer, progress=progress)
    return run_result(writer.tally.counts(), paths, submitted=False)


# --- checking in worker processes ---------------------------------------------------------------

#: Rows per chunk when chunks are checked side by side: small enough that the workers finish together.
PARALLEL_CHUNK_ROWS = 100_000

#: A run estimated below this many rows is checked in one process: forking would cost more than it saves.
PARALLEL_MIN_ROWS = 300_000

#: Most worker processes a run uses.
MAX_WORKERS = 4

#: Fewest cores on which a run forks workers by default.  The parent reads
#: the register and writes the reports while the workers check, so on two
#: cores they only take turns: a 1,000,000-row CSV took 6.6-6.9 s in one
#: process and 7.0-7.7 s with two workers on a 2-core machine.
MIN_CORES_FOR_WORKERS = 3


def worker_count(registers: Registers, requested: int | None = None) -> int:
    """How many worker processes check ``registers`` (0: this process does).

    ``requested`` (or the ``EHC_WORKERS`` environment variable) decides when
    given, up to :data:`MAX_WORKERS`; otherwise, for a run long enough on a machine of at least
    :data:`MIN_CORES_FOR_WORKERS` cores, one per idle core but one (the
    parent's), up to :data:`MAX_WORKERS`.
    """
    if requested is None and os.environ.get("EHC_WORKERS", "").strip().isdigit():
        requested = int(os.environ["EHC_WORKERS"])
    if requested is not None:
        return min(max(0, requested), MAX_WORKERS)  # EHC_WORKERS=5000 forked thousands
    cores = usable_cores()
    if cores < MIN_CORES_FOR_WORKERS or registers.estimated_rows < PARALLEL_MIN_ROWS:
        return 0
    # Cores busy with other work (another run, a test suite) would only be fought over.
    idle = int(cores - (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0))
    workers = min(idle - 1, MAX_WORKERS)
    return workers if workers >= 2 else 0


@dataclass
class _Task:
    """One chunk for a worker: the ``number``-th table's rows from ``row_id`` ``start``."""

    index: int
    number: int
    start: int
    table: MappedTable

    def for_worker(self) -> _Task:
        """The task as sent: the rows as read stay here (the annotated copy reads them)."""
        raw = replace(self.table.raw, data=self.table.raw.data.iloc[:0])
        return replace(self, table=replace(self.table, raw=raw))


@dataclass
class _Checked:
    """What a worker sends back for a chunk or a part of one (``offset`` rows into it): its share of
    the reports, and what the run counts."""

    offset: int
    part: ReportPart
    faults: pd.DataFrame
    noted: pd.DataFrame  # status and message of the rows with a bad status or a message
    rows: int
    invalid: int
    missing_org: int


def _fork_checkers(
    registers: Registers, settings: Settings, writer: ReportWriter, today: date, count: int
) -> Workers[_Task, list[_Checked]] | None:
    """Worker processes checking chunks (normalise, validate, the reports' share), or None."""
    from pipeline import validate

    _warm_checks(settings, today)  # every worker starts with the code tables read and the schema built

    class AskedRepeats(validate.RepeatedIds):
        """The run's repeated ID numbers, kept by the parent: each chunk's (or part's) keys are sent to it."""

        more = False

        def expect_more(self, more: bool) -> None:
            self.more = more

        def check(self, ids: pd.Series, places: np.ndarray) -> np.ndarray:
            answer: np.ndarray = ask((self.keys(ids), places), last=not self.more)
            return answer

    labels = registers.labels

    def check(task: _Task) -> list[_Checked]:
        found = []
        batches = checked_batches(
            task.table,
            task.start,
            settings.defaults,
            today,
            repeats=AskedRepeats(labels),
            table_number=task.number,
        )
        for piece, batch in enumerate(batches):
            offset = batch.table_rows[0].start - task.start
            csv_part = writer.work / f"results-{task.index}-{piece}.csv"
            part = writer.prepare(batch, task.start + offset, csv_part=csv_part)
            outcome = batch.outcome
            noted = outcome["status"].isin(list(BAD_STATUSES)) | (outcome["message"] != "")
            found.append(
                _Checked(
                    offset=offset,
                    part=part,
                    faults=batch.faults,
                    noted=outcome.loc[noted, ["status", "message"]],
                    rows=len(batch),
                    invalid=int((outcome["status"] == STATUS_INVALID).sum()),
                    missing_org=int((batch.rows["orgCode"] == "").sum()),
                )
            )
        return found

    return fork_workers(check, count)


#: Rows of a worker's task while none of the run's faults are known: a task's faults, their messages
#: and its lines of the reports are held until it is done, and a first task of garbage must stay small.
FIRST_TASK_ROWS = 20_000


def _task_parts(n: int, chunk_rows: int, rows_seen: int, faults_seen: int) -> Iterator[tuple[int, int]]:
    """(offset, rows) of the tasks a chunk of ``n`` rows is cut into, by the faults per row seen so far:
    about :data:`BATCH_FAULTS` faults a task, at most ``chunk_rows`` rows."""
    if not rows_seen:
        size = min(chunk_rows, FIRST_TASK_ROWS)
    elif faults_seen:
        size = min(chunk_rows, max(MIN_BATCH_ROWS, int(BATCH_FAULTS * rows_seen / faults_seen)))
    else:
        size = chunk_rows
    size = max(1, size)
    for offset in range(0, n, size):
        yield offset, min(size, n - offset)


def _check_in_workers(
    pool: Workers[_Task, list[_Checked]],
    registers: Registers,
    writer: ReportWriter,
    chunk_rows: int,
    bar: RowBar,
) -> CheckStats:
    """Every chunk of the run checked by ``pool``, its reports' share kept by ``writer`` in input order."""
    from pipeline import validate

    stats = CheckStats(rows_by_table=[0] * len(registers.sources))
    repeats = validate.RepeatedIds(registers.labels)

    faults_seen = [0]  # faults of the rows checked so far (stats.rows): how many rows a task may hold

    def tasks() -> Generator[_Task, None, None]:
        start, index = 0, 0
        for number, table in read_ahead(registers, chunk_rows):
            n = len(table.fields)
            for offset, rows in _task_parts(n, chunk_rows, stats.rows, faults_seen[0]):
                part = table if rows == n else table.rows(offset, offset + rows)
                yield _Task(index, number, start + offset, part)
                index += 1
            start += n

    def answer(task: _Task, question: tuple[validate.IdKeys, np.ndarray]) -> np.ndarray:
        return repeats.resolve(*question)

    items = tasks()
    # The workers keep the cores busy: Arrow's own threads would only contend with them.
    with arrow_threads(1), contextlib.closing(items):
        for task, pieces in pool.run(items, answer, send=_Task.for_worker):
            for checked in pieces:
                n, start = checked.rows, task.start + checked.offset
                whole = n == len(task.table.fields)
                empty = pd.DataFrame(index=pd.RangeIndex(start, start + n))
                writer.commit(
                    checked.part,
                    Batch(
                        tables=[task.table if whole else task.table.rows(checked.offset, checked.offset + n)],
                        table_rows=[range(start, start + n)],
                        rows=empty,
                        original=empty,
                        extras=empty,
                        faults=checked.faults,
                        outcome=checked.noted,
                    ),
                )
                stats.rows += n
                faults_seen[0] += len(checked.faults)
                stats.rows_by_table[task.number] += n
                stats.invalid += checked.invalid
                stats.missing_org += checked.missing_org
                bar.advance(n)
    for source, rows in zip(registers.sources, stats.rows_by_table, strict=True):
        logger.info("读取 {}：{} 行（表头在第 {} 行）", source.label, rows, source.header_row)
    logger.info("校验完成：{} 行，其中 {} 行未通过", stats.rows, stats.invalid)
    return stats


def finish_reports(writer: ReportWriter, *, progress: bool) -> dict[str, Path]:
    """Lay out a run's workbooks and put its reports in place, with a bar on a terminal."""
    from pipeline.reports.workbooks import DETAIL_ROW_LIMIT, SHEET_LINES

    tally = writer.tally
    detail = tally.n if tally.n <= DETAIL_ROW_LIMIT else min(tally.bad_rows, SHEET_LINES)
    lines = detail + min(tally.faults, 2 * SHEET_LINES)
    bar = RowBar("写报告", lines, enabled=progress)
    try:
        return writer.finish(on_rows=bar.advance)
    finally:
        bar.close()


def run_result(counts: dict[str, object], paths: dict[str, Path], *, submitted: bool) -> RunResult:
    """The command's result for a finished run: the end-of-run summary and the exit code of its rows."""
    from pipeline.reports.summary import format_summary

    by_status = counts.get("by_status", {})
    assert isinstance(by_status, dict)
    return RunResult(
        exit_code=exit_code_of(by_status),
        summary=format_summary(counts, paths, submitted=submitted),
        paths=paths,
        counts=counts,
    )
