"""Every report of a run, written into the output folder.

* ``results.xlsx`` — 汇总 and 明细 (every row, or above
  :data:`~pipeline.reports.workbooks.DETAIL_ROW_LIMIT` rows only the bad ones);
* ``errors.xlsx`` — faults keyed by result code (汇总, 明细, 提示);
* ``results.csv`` — every row, English column names, for machines;
* ``annotated_<name>.xlsx`` — each register read, faulty cells marked (:mod:`~pipeline.reports.annotate`).

A :class:`ReportWriter` takes the run's batches in input order as they are
checked: results.csv grows batch by batch, the lines of the workbooks go to a
work folder on disk (:mod:`pipeline.reports.spool`) and the counts to a
:class:`~pipeline.reports.data.Tally`; :meth:`ReportWriter.finish` lays out
the workbooks.  Every file is written under a temporary name, and all of them
are renamed into place together at the end: a crash, Ctrl-C or a full disk
never leaves a half-written report that looks complete, and a report the
clerk has open in Excel or WPS (which Windows will not let anyone replace)
leaves every earlier report as it was.  The workbooks are written two at a
time: the heavy parts (Arrow kernels, zlib) release the GIL, and the machines
this runs on have two cores.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from loguru import logger

from pipeline.errors import EhcError, InputError
from pipeline.files import explain_os_error, os_errors, scratch_name, sweep_leftovers, temporary_name
from pipeline.model import BAD_STATUSES, FAULT_COLUMNS, Batch, MappedTable, RawTable, no_faults
from pipeline.reading.register import TEXT_SUFFIXES, WORKBOOK_SUFFIXES
from pipeline.reports import annotate
from pipeline.reports.annotate import SourceUnreadable, TooLarge, annotated_name, write_annotated
from pipeline.reports.data import ReportData, Tally
from pipeline.reports.results_csv import ResultsCsv
from pipeline.reports.spool import Cancelled, DetailLines, DetailSpool, FaultLines, FaultSpool, remove_folder
from pipeline.reports.workbooks import Lines, detail_headers, write_errors_xlsx, write_results_xlsx

RESULTS_XLSX = "results.xlsx"
ERRORS_XLSX = "errors.xlsx"
RESULTS_CSV = "results.csv"

_WRITE_FIX = "换一个可写的 --out 目录，或清理磁盘空间"

#: Reports written at the same time.
WORKERS = 2

#: Windows error numbers for a file another program holds open (Excel/WPS with a report open).
_IN_USE = frozenset({32, 33})


@dataclass
class ReportPart:
    """One batch's share of the reports: built by :meth:`ReportWriter.prepare`, kept by ``commit``."""

    rows: int
    csv: pa.Table | Path  # results.csv lines: a table, or a file of them already written as CSV
    detail: DetailLines
    errors: FaultLines
    warnings: FaultLines
    tally: Tally


def refuse_inputs_in_the_way(out_dir: Path, inputs: Sequence[Path]) -> None:
    """Refuse a run one of whose registers sits in ``out_dir`` under a report's name: the reports
    would replace it (``ehc validate out/* --out out``).  Raises :class:`InputError`.
    """
    try:
        folder = out_dir.resolve()
    except OSError:
        return  # a folder that cannot be resolved holds no register; making it says what is wrong
    for path in inputs:
        name = path.name
        is_report = name in (RESULTS_XLSX, ERRORS_XLSX, RESULTS_CSV) or (
            name.startswith("annotated_") and name.lower().endswith(".xlsx")
        )
        try:
            inside = path.resolve().parent == folder
        except OSError:
            continue
        if is_report and inside:
            raise InputError(
                f"登记表 {name} 在输出目录 {out_dir} 中，与本次要写的报告同名，写报告会覆盖它",
                file=name,
                fix="换一个输出目录（--out），或把登记表移出该目录、改名后再运行",
            )


def refuse_reports_held_open(out_dir: Path) -> None:
    """Refuse a run whose earlier reports in ``out_dir`` cannot be replaced (open in Excel or WPS on
    Windows, read-only, a folder of that name), before anything is sent: raises :class:`EhcError`.

    The reports would be written after sending, and not at all: the residents
    sent would be in no report of the run.
    """
    try:
        names = [RESULTS_XLSX, ERRORS_XLSX, RESULTS_CSV] + [
            p.name for p in out_dir.glob("annotated_*.xlsx")
        ]
    except OSError:
        return  # a folder that cannot be listed: making it says what is wrong
    for name in names:
        path = out_dir / name
        if not os.path.lexists(path):
            continue
        try:
            if path.is_dir():
                raise IsADirectoryError(21, "Is a directory", str(path))
            with open(path, "r+b"):
                pass
        except OSError as error:
            reason, _ = explain_os_error(error)
            raise EhcError(
                f"上次的报告 {path} 无法替换（{reason}），本次还没有发送任何人。"
                "处理办法：在 Excel 或 WPS 中关闭它（或换一个 --out 目录）后重新运行"
            ) from None


def make_out_dir(out_dir: Path, work: str = "") -> Path:
    """Create the output folder (and, given ``work``, a work folder of that name inside it); its path.

    Every way this fails is one Chinese line naming the folder: a read-only
    disk, no permission, a file of that name.
    """
    fix = "换一个可写的 --out 目录"
    with os_errors("创建输出目录", out_dir, fix=fix):  # asking whether it exists fails too (a name too long)
        if out_dir.exists() and not out_dir.is_dir():
            raise EhcError(f"无法创建输出目录 {out_dir}：已有同名的文件，不是文件夹。处理办法：{fix}")
        out_dir.mkdir(parents=True, exist_ok=True)
        if work:
            for leftover in sweep_leftovers(out_dir):
                logger.info("已清理上次中断的运行留下的临时文件 {}", leftover.name)
            (out_dir / work).mkdir(exist_ok=True)
    return out_dir / work if work else out_dir


def commit_all(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Rename every (temporary, report) pair into place: all of them, or none.

    Reports already in place are first moved aside; if any rename fails (a
    report open in Excel or WPS on Windows), what was placed is removed, what
    was there is put back, the temporary files are deleted and an
    :class:`EhcError` names the report.
    """
    aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    current = pairs[0][1] if pairs else Path()
    # A folder of a report's name would be moved aside under a hidden name and stay there, the
    # clerk's files in it out of sight: it is left as it is, and no report is written.
    folders = [target for _, target in pairs if target.is_dir() and not target.is_symlink()]
    if folders:
        for temporary, _ in pairs:
            with contextlib.suppress(OSError):
                temporary.unlink()
        raise EhcError(
            f"无法写入报告 {folders[0]}：输出目录中已有同名的文件夹。处理办法：把这个文件夹改名或移走，"
            "或换一个 --out 目录，再重新运行（本次的报告都未写入，原有报告保持不变）"
        )
    try:
        for _, target in pairs:
            current = target
            if target.exists() or target.is_symlink():
                old = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.old")
                os.replace(target, old)
                aside.append((old, target))
        for temporary, target in pairs:
            current = target
            os.replace(temporary, target)
            placed.append(target)
    except OSError as error:
        for target in placed:
            with contextlib.suppress(OSError):
                target.unlink()
        for old, target in reversed(aside):
            with contextlib.suppress(OSError):
                os.replace(old, target)
        for temporary, _ in pairs:
            with contextlib.suppress(OSError):
                temporary.unlink()
        if getattr(error, "winerror", None) in _IN_USE:
            raise EhcError(
                f"无法替换报告 {current}：文件正被其他程序使用。处理办法：请先关闭 Excel/WPS 中打开的报告 "
                f"{current.name}，再重新运行（本次的报告都未写入，原有报告保持不变）"
            ) from error
        reason, fix = explain_os_error(error)
        raise EhcError(f"无法写入报告 {current}：{reason}。处理办法：{fix}（本次的报告都未写入）") from error
    for old, _ in aside:
        with contextlib.suppress(OSError):
            old.unlink()


@dataclass
class _Annotation:
    """One table's marks, gathered batch by batch for the annotated copy of its register.

    ``notes`` are the rows with a status that did not get through or with a
    message (``status``, ``message`` on their ``row_id``: what the copy's
    问题说明 column says); ``chunks`` the rows of a text register, kept while
    the register is short enough for a copy (:data:`~pipeline.reports.annotate.CSV_ROW_LIMIT`).
    """

    table: MappedTable
    start: int
    stop: int
    faults: list[pd.DataFrame] = field(default_factory=list)
    notes: list[pd.DataFrame] = field(default_factory=list)
    edits: list[pd.DataFrame] = field(default_factory=list)  # the clerk's corrections (the web workspace)
    chunks: list[RawTable] = field(default_factory=list)
    rows: int = 0
    text_bytes: int = 0
    marks: int = 0
    too_large: str = ""  # why no copy is written (a limit passed), once one is


class ReportWriter:
    """The reports of one run, fed its batches in input order; :meth:`finish` or :meth:`abort` at the end.

    ``extra_names`` are the run's unrecognised columns (every table's, in
    order; default: the first batch's); ``wholes`` the workbook tables of the
    run as read (path and sheet -> table), for the annotated copies of a run
    fed in chunks.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        submitted: bool = False,
        extra_names: Sequence[str] | None = None,
        wholes: dict[tuple[str, str], RawTable] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.submitted = submitted
        self.extra_names = None if extra_names is None else list(extra_names)
        self.wholes = wholes or {}
        self.tally = Tally()
        self.stop = threading.Event()
        self.work = make_out_dir(self.out_dir, scratch_name("ehc-work"))
        self._temporaries: dict[str, Path] = {}
        self._csv: ResultsCsv | None = None
        try:
            self._detail = DetailSpool(self.work)
            self._errors = FaultSpool(self.work, "errors")
            self._warnings = FaultSpool(self.work, "warnings")
        except BaseException:  # a Ctrl-C or a full disk before the caller holds the writer to abort it
            remove_folder(self.work)
            raise
        self._annotations: dict[str, dict[tuple[str, str], _Annotation]] = {}
        self._closed = False

    # -- feeding ---------------------------------------------------------------------------------
    def add(self, batch: Batch) -> None:
        """Take one batch (the next rows of the run, in order)."""
        if self.extra_names is None:
            self.extra_names = [str(c) for c in batch.extras.columns]
        self.commit(self.prepare(batch, self.tally.n), batch)

    def prepare(self, batch: Batch, rows_before: int, csv_part: Path | None = None) -> ReportPart:
        """What the reports take from one batch, built from the batch alone (``rows_before``: rows before it).

        This is the work proportional to the batch's rows, and it changes
        nothing in the writer: a worker process can do it on its own copy of
        the writer.  Given ``csv_part``, the batch's lines of results.csv are
        written there (without the header) rather than kept as a table.
        """
        data = ReportData(batch, self.submitted, self.extra_names)
        table = ResultsCsv.lay_out(data, self._csv_names())
        csv: pa.Table | Path = table
        if csv_part is not None:
            with os_errors(
                "写入报告", self.out_dir / RESULTS_CSV, fix="换一个可写的 --out 目录，或清理磁盘空间"
            ):
                csv = ResultsCsv.encode(table, csv_part)
        tally = Tally()
        tally.add(data)
        return ReportPart(
            rows=data.n,
            csv=csv,
            detail=self._detail.lines(data, rows_before),
            errors=FaultSpool.lines(data, data.errors),
            warnings=FaultSpool.lines(data, data.warnings),
            tally=tally,
        )

    def commit(self, part: ReportPart, batch: Batch) -> None:
        """Keep a prepared batch (the next rows of the run, in order).

        ``batch`` needs only its tables, row ranges, faults and the outcome of
        the rows with a bad status or a message (for the annotated copies).
        """
        with os_errors("写入报告", self.out_dir / RESULTS_CSV, fix="换一个可写的 --out 目录，或清理磁盘空间"):
            if self._csv is None:
                self._csv = ResultsCsv(self._temporary(RESULTS_CSV), self.extra_names or [])
            self._csv.write_part(part.csv)
            self._detail.append(part.detail)
            self._errors.append(part.errors)
            self._warnings.append(part.warnings)
        self.tally.merge(part.tally)
        self._gather_annotations(batch)

    def _csv_names(self) -> list[str]:
        return ResultsCsv.column_names(self.extra_names or [])

    def _temporary(self, name: str) -> Path:
        path = temporary_name(self.out_dir / name)
        self._temporaries[name] = path
        return path

    def _gather_annotations(self, batch: Batch) -> None:
        row_ids = batch.faults["row_id"].to_numpy() if len(batch.faults) else None
        for table, rows in zip(batch.tables, batch.table_rows, strict=False):
            raw = table.raw
            suffix = Path(raw.path).suffix.lower()
            if suffix not in (*WORKBOOK_SUFFIXES, *TEXT_SUFFIXES) or not len(rows):
                continue
            key = (raw.path, raw.sheet)
            per_file = self._annotations.setdefault(raw.path, {})
            part = per_file.get(key)
            if part is None:
                whole = self.wholes.get(key, raw)
                mapped = MappedTable(whole, table.fields.iloc[:0], table.extras.iloc[:0], table.field_headers)
                part = per_file[key] = _Annotation(mapped, rows.start, rows.stop)
            part.start, part.stop = min(part.start, rows.start), max(part.stop, rows.stop)
            part.rows += len(rows)
            if suffix in TEXT_SUFFIXES and key not in self.wholes:
                # A chunk's table holds its rows as read, unless they were not kept (a long register).
                kept = len(raw.source_row) == len(rows)
                part.text_bytes += int(raw.data.memory_usage(index=False).sum()) if kept else 0
                too_long = part.rows > annotate.CSV_ROW_LIMIT or part.text_bytes > annotate.CSV_TEXT_LIMIT
                if not part.too_large and (too_long or not kept):
                    limit = f"{annotate.CSV_ROW_LIMIT:,} 行或 {annotate.CSV_TEXT_LIMIT >> 20} MB 文字"
                    part.too_large = f"超过 {limit}"
                part.chunks = [] if part.too_large else [*part.chunks, raw]
            if row_ids is not None and not part.too_large:
                mine = (row_ids >= rows.start) & (row_ids < rows.stop)
                part.marks += int(mine.sum())
                if part.marks > annotate.MARK_LIMIT:
                    part.too_large = f"有问题的单元格超过 {annotate.MARK_LIMIT:,} 个"
                elif mine.any():
                    part.faults.append(batch.faults[mine].loc[:, list(FAULT_COLUMNS)])
            if part.too_large:
                part.faults, part.notes, part.edits, part.chunks = [], [], [], []
                continue
            outcome = batch.outcome.loc[rows.start : rows.stop - 1]
            if "status" in outcome.columns and "message" in outcome.columns:
                noted = outcome["status"].isin(list(BAD_STATUSES)) | (outcome["message"] != "")
                if noted.any():
                    part.notes.append(outcome.loc[noted, ["status", "message"]])
            edits = batch.cell_edits
            if edits is not None and len(edits):
                edited = edits["row_id"].to_numpy()
                part.edits.append(edits[(edited >= rows.start) & (edited < rows.stop)])

    # -- finishing -------------------------------------------------------------------------------
    def finish(self, on_rows: Callable[[int], object] | None = None) -> dict[str, Path]:
        """Lay out the workbooks and put every report in place; the paths written, by file name.

        Order: ``results.xlsx``, ``errors.xlsx``, ``results.csv``, then the
        annotated copies.  ``on_rows`` is told of each part of lines written
        (a progress bar).
        """
        try:
            with os_errors(
                "写入报告", self.out_dir / RESULTS_CSV, fix="换一个可写的 --out 目录，或清理磁盘空间"
            ):
                if self._csv is None:
                    self._csv = ResultsCsv(self._temporary(RESULTS_CSV), self.extra_names or [])
            jobs = self._jobs(on_rows)
            written = self._run(jobs, meanwhile=self._close_csv)
            order = [RESULTS_XLSX, ERRORS_XLSX, RESULTS_CSV]
            names = order + [n for n in written if n not in order]
            pairs = [(self._temporaries[name], self.out_dir / name) for name in names if written.get(name)]
            commit_all(pairs)
            return {name: self.out_dir / name for name in names if written.get(name)}
        finally:
            self.abort()

    def _jobs(self, on_rows: Callable[[int], object] | None) -> dict[str, Callable[[Path], Path]]:
        stop = self.stop
        detail = self._detail.feed(detail_headers(self.submitted, self.extra_names or []), stop)
        errors, warnings = self._errors.feed(stop), self._warnings.feed(stop)
        if on_rows is not None:
            for feed in (detail, errors, warnings):
                feed.parts = _counted(feed.parts, on_rows)
        tally, submitted = self.tally, self.submitted
        jobs: dict[str, Callable[[Path], Path]] = {}
        # The largest jobs first, so the two workers finish together.
        taken = {RESULTS_XLSX, ERRORS_XLSX, RESULTS_CSV}
        for source, parts in self._annotations.items():
            name = annotated_name(source, taken)
            jobs[name] = _annotator(source, parts, submitted)
        jobs[RESULTS_XLSX] = lambda path: write_results_xlsx(path, tally, detail, submitted=submitted)
        jobs[ERRORS_XLSX] = lambda path: write_errors_xlsx(path, tally, errors, warnings)
        return jobs

    def _close_csv(self) -> None:
        with os_errors("写入报告", self.out_dir / RESULTS_CSV, fix="换一个可写的 --out 目录，或清理磁盘空间"):
            if self._csv is not None:
                self._csv.close()

    def _run(self, jobs: dict[str, Callable[[Path], Path]], meanwhile: Callable[[], None]) -> dict[str, bool]:
        """Every job on the workers; ``meanwhile`` (the last lines of results.csv) runs here as they start."""
        written: dict[str, bool] = {RESULTS_CSV: True}
        pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ehc-report")
        futures: dict[str, Future[Path | None]] = {}
        try:
            for name, job in jobs.items():
                futures[name] = pool.submit(self._write_one, name, job)
            meanwhile()
            for name, future in futures.items():
                written[name] = future.result() is not None
        except BaseException:
            self.stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return written

    def _write_one(self, name: str, job: Callable[[Path], Path]) -> Path | None:
        temporary = self._temporary(name)
        if self.stop.is_set():
            raise Cancelled
        try:
            with os_errors("写入报告", self.out_dir / name, fix="换一个可写的 --out 目录，或清理磁盘空间"):
                return job(temporary)
        except SourceUnreadable as unreadable:
            temporary.unlink(missing_ok=True)
            logger.warning(
                "未生成 {}：无法重新读取 {}（文件已移走或已改动）", name, Path(str(unreadable)).name
            )
            return None
        except TooLarge as reason:
            temporary.unlink(missing_ok=True)
            logger.info("未生成 {}：{}，问题见 errors.xlsx", name, reason)
            return None

    def abort(self) -> None:
        """Stop: remove every temporary file and the work folder (idempotent; never raises)."""
        self.stop.set()
        if self._closed:
            return
        self._closed = True
        if self._csv is not None:
            with contextlib.suppress(Exception):
                self._csv.close()
        for spool in (self._detail, self._errors, self._warnings):
            with contextlib.suppress(Exception):
                spool.close()
        for path in self._temporaries.values():
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        remove_folder(self.work)


def _counted(
    parts: Callable[[], Iterator[Lines]], on_rows: Callable[[int], object]
) -> Callable[[], Iterator[Lines]]:
    def counting() -> Iterator[Lines]:
        for columns, style in parts():
            yield columns, style
            on_rows(len(columns[0]) if columns else 0)

    return counting


def _annotator(
    source: str, parts: dict[tuple[str, str], _Annotation], submitted: bool
) -> Callable[[Path], Path]:
    """The job writing one register's annotated copy from what was gathered for its tables."""

    def write(path: Path) -> Path:
        listed = list(parts.values())
        for part in listed:
            if part.too_large:
                raise TooLarge(f"{Path(source).name} {part.too_large}")
        tables = [_whole(part) for part in listed]
        index = pd.Index(np.concatenate([np.arange(part.start, part.stop) for part in listed]))
        faults = [frame for part in listed for frame in part.faults]
        notes = [frame for part in listed for frame in part.notes]
        edits = [frame for part in listed for frame in part.edits if len(frame)]
        empty = pd.DataFrame(index=index)
        status = np.full(len(index), "", dtype=object)
        message = np.full(len(index), "", dtype=object)
        if notes:
            noted = pd.concat(notes)
            where = index.get_indexer(noted.index)
            status[where] = noted["status"].to_numpy(dtype=object)
            message[where] = noted["message"].to_numpy(dtype=object)
        outcome = pd.DataFrame({"status": status, "message": message}, index=index).astype("str")
        fault_frame = pd.concat(faults, ignore_index=True) if faults else no_faults()
        batch = Batch(
            tables=tables,
            table_rows=[range(part.start, part.stop) for part in listed],
            rows=empty,
            original=empty,
            extras=empty,
            faults=fault_frame,
            outcome=outcome,
            cell_edits=pd.concat(edits, ignore_index=True) if edits else None,
        )
        return write_annotated(path, source, ReportData(batch, submitted), list(range(len(listed))))

    return write


def _whole(part: _Annotation) -> MappedTable:
    """The table of ``part`` with every row read (a text register's chunks stacked)."""
    if not part.chunks or (len(part.chunks) == 1 and part.chunks[0] is part.table.raw):
        return part.table
    first = part.chunks[0]
    offsets = np.cumsum([0, *(len(c.data) for c in part.chunks)])
    notes = [c.notes.assign(row=c.notes["row"] + o) for c, o in zip(part.chunks, offsets, strict=False)]
    raw = RawTable(
        first.path, first.sheet, first.header_row, first.headers, first.column_positions,
        pd.concat([c.data for c in part.chunks], ignore_index=True),
        np.concatenate([c.source_row for c in part.chunks]), pd.concat(notes, ignore_index=True),
    )  # fmt: skip
    return MappedTable(raw, part.table.fields, part.table.extras, part.table.field_headers)


def write_reports(out_dir: Path, batch: Batch, *, submitted: bool = False) -> dict[str, Path]:
    """Write every report of ``batch`` (a whole run) into ``out_dir`` (created if missing).

    ``submitted`` adds the submission's statuses and card ids.  Returns the
    paths written, keyed by file name (``"results.xlsx"``, ``"errors.xlsx"``,
    ``"results.csv"``, ``"annotated_<stem>.xlsx"`` …), in that order.
    """
    writer = ReportWriter(out_dir, submitted=submitted)
    try:
        writer.add(batch)
        return writer.finish()
    finally:
        writer.abort()
