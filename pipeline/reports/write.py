"""Every report of a run, written into the output folder.

* ``results.xlsx`` — 汇总 and 明细 (every row, or above
  :data:`~pipeline.reports.workbooks.DETAIL_ROW_LIMIT` rows only the bad ones);
* ``errors.xlsx`` — faults keyed by result code (汇总, 明细, 提示);
* ``results.csv`` — every row, English column names, for machines;
* ``annotated_<name>.xlsx`` — each register read, faulty cells marked (:mod:`~pipeline.reports.annotate`).

Each file is written under a temporary name and renamed into place, so a
crash never leaves a half-written report that looks complete.  The files are
written two at a time: the heavy parts (Arrow kernels, zlib) release the GIL,
and the machines this runs on have two cores.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from loguru import logger

from pipeline.files import os_errors, write_atomically
from pipeline.model import Batch
from pipeline.reports.annotate import (
    SourceUnreadable,
    TooLarge,
    annotated_name,
    register_inputs,
    write_annotated,
)
from pipeline.reports.data import ReportData
from pipeline.reports.results_csv import write_results_csv
from pipeline.reports.workbooks import write_errors_xlsx, write_results_xlsx

RESULTS_XLSX = "results.xlsx"
ERRORS_XLSX = "errors.xlsx"
RESULTS_CSV = "results.csv"

#: Reports written at the same time.
WORKERS = 2

Writer = Callable[[Path], Path]


def _prepare(data: ReportData) -> None:
    """Compute the shared columns once, before the writers run side by side."""
    shared = ("status", "statuses_present", "bad", "has_warning", "result_codes", "messages", "source_row")
    for name in (*shared, "table_of_row", "errors", "warnings"):
        getattr(data, name)


def _write_in_place(target: Path, writer: Writer) -> Path:
    with os_errors("写入报告", target):
        return write_atomically(target, writer)


def _annotate(target: Path, source: str, data: ReportData, tables: list[int]) -> Path | None:
    """Write one annotated copy; a workbook that cannot be read again is skipped with a warning."""
    try:
        return _write_in_place(target, partial(_annotated, source=source, data=data, tables=tables))
    except SourceUnreadable:
        logger.warning("未生成 {}：无法重新读取 {}（文件已移走或已改动）", target.name, Path(source).name)
        return None
    except TooLarge as reason:
        logger.info("未生成 {}：{} {}，问题见 errors.xlsx", target.name, Path(source).name, reason)
        return None


def _annotated(path: Path, *, source: str, data: ReportData, tables: list[int]) -> Path:
    return write_annotated(path, source, data, tables)


def write_reports(out_dir: Path, batch: Batch, *, submitted: bool = False) -> dict[str, Path]:
    """Write every report of ``batch`` into ``out_dir`` (created if missing).

    ``submitted`` adds the submission's statuses and card ids.  Returns the
    paths written, keyed by file name (``"results.xlsx"``, ``"errors.xlsx"``,
    ``"results.csv"``, ``"annotated_<stem>.xlsx"`` …), in that order.
    """
    out_dir = Path(out_dir)
    with os_errors("创建输出目录", out_dir, fix="换一个可写的 --out 目录"):
        out_dir.mkdir(parents=True, exist_ok=True)
    data = ReportData(batch, submitted)
    _prepare(data)
    writers: dict[str, Writer] = {
        RESULTS_XLSX: partial(write_results_xlsx, data=data),
        ERRORS_XLSX: partial(write_errors_xlsx, data=data),
        RESULTS_CSV: partial(write_results_csv, data=data),
    }
    taken = set(writers)
    annotations = {
        annotated_name(source, taken): (source, tables) for source, tables in register_inputs(data).items()
    }
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        # The largest jobs first, so the two workers finish together.
        annotated = {
            name: pool.submit(_annotate, out_dir / name, source, data, tables)
            for name, (source, tables) in annotations.items()
        }
        written = {
            name: pool.submit(_write_in_place, out_dir / name, writer) for name, writer in writers.items()
        }
        paths = {name: future.result() for name, future in written.items()}
        for name, future in annotated.items():
            if (path := future.result()) is not None:
                paths[name] = path
    return paths
