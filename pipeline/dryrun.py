"""The dry run: read every register, normalise it, validate it, report it.

This is the orchestration only, and the front half of every run: a
submission and a nightly import call :func:`prepare_batch`, then send, then
:func:`write_outputs`.  Reading is :mod:`pipeline.reading` and
:mod:`pipeline.mapping`, the row work :mod:`pipeline.normalise` and
:mod:`pipeline.validate`, the bookkeeping :mod:`pipeline.batch`, the files
:mod:`pipeline.reports`.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pandas as pd
from loguru import logger

from pipeline import mapping, normalise
from pipeline.batch import combine, exit_code_for, status_from_faults
from pipeline.config import Settings
from pipeline.model import FAULT_COLUMNS, STATUS_INVALID, Batch, MappedTable, ReadOptions, RunResult
from pipeline.progress import StageBar
from pipeline.reading import register as reading

#: Modules needed only after reading (pandera's is the heaviest), imported while the input is read.
LATER_MODULES = ("pipeline.validate", "pipeline.reports.write")


def _import_in_background(names: Sequence[str]) -> None:
    """Start importing ``names`` on a thread: most of reading runs in Arrow without the GIL.

    An import that fails here fails again, with its error, where the module is
    used.  Not a daemon thread: the interpreter never stops halfway through an import.
    """

    def load() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:
                return  # the import where the module is used raises it again

    threading.Thread(target=load, name="ehc-imports").start()


def read_tables(
    inputs: Sequence[Path],
    settings: Settings,
    options: ReadOptions = ReadOptions(),
    *,
    bar: StageBar | None = None,
) -> list[MappedTable]:
    """Read every input and recognise its columns; fatal problems raise InputError."""
    aliases = dict(settings.column_aliases)
    if options.mapping_file is not None:
        aliases.update(mapping.load_mapping_file(options.mapping_file))
    bar = bar or StageBar(len(inputs), enabled=False)
    tables: list[MappedTable] = []
    for path in inputs:
        with bar.stage(f"读取 {Path(path).name}"):
            for raw in reading.read_register(Path(path), sheet=options.sheet, all_sheets=options.all_sheets):
                tables.append(mapping.map_columns(raw, aliases))
                logger.info("读取 {}：{} 行（表头在第 {} 行）", raw.label, len(raw.data), raw.header_row)
    return tables


def prepare_batch(
    inputs: Sequence[Path],
    settings: Settings,
    options: ReadOptions = ReadOptions(),
    *,
    today: date | None = None,
    progress: bool = False,
    bar: StageBar | None = None,
) -> Batch:
    """Read, normalise and validate every input; the batch's outcome says valid/invalid.

    ``progress`` shows a bar of the stages on stderr (callers pass it only for
    a terminal); ``bar`` lets a caller extend that bar over later stages.
    """
    today = today or date.today()
    bar = bar or StageBar(len(inputs) + 2, enabled=progress)
    _import_in_background(LATER_MODULES)
    tables = read_tables(inputs, settings, options, bar=bar)
    offsets, sources, original, extras = combine(tables)
    with bar.stage("规范化"):
        normalised, warnings = normalise.normalise(original, settings.defaults, today)
    with bar.stage("校验"):
        from pipeline import validate

        faults = validate.validate(normalised, today=today, written=original, sources=sources)
        all_faults = pd.concat([faults, warnings], ignore_index=True) if len(warnings) else faults
        all_faults = all_faults.loc[:, list(FAULT_COLUMNS)]
        rows = pd.concat([sources, normalised], axis=1)
        batch = Batch(
            tables=tables,
            table_rows=offsets,
            rows=rows,
            original=original,
            extras=extras,
            faults=all_faults,
            outcome=status_from_faults(len(rows), all_faults),
        )
    invalid = int((batch.outcome["status"] == STATUS_INVALID).sum())
    logger.info("校验完成：{} 行，其中 {} 行未通过", len(batch), invalid)
    return batch


def write_outputs(batch: Batch, out_dir: Path, *, submitted: bool) -> dict[str, Path]:
    """Write every report of ``batch`` into ``out_dir``."""
    from pipeline.reports import write as reports

    return reports.write_reports(out_dir, batch, submitted=submitted)


def run_validate(
    inputs: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    options: ReadOptions = ReadOptions(),
    *,
    progress: bool = False,
) -> RunResult:
    """``ehc validate``: the dry run with every report, nothing sent."""
    bar = StageBar(len(inputs) + 3, enabled=progress)
    try:
        batch = prepare_batch(inputs, settings, options, bar=bar)
        with bar.stage("写报告"):
            paths = write_outputs(batch, out_dir, submitted=False)
    finally:
        bar.close()
    return batch_result(batch, paths, submitted=False)


def batch_result(batch: Batch, paths: dict[str, Path], *, submitted: bool) -> RunResult:
    """The command's result for a finished batch: the end-of-run summary and the exit code of its rows."""
    from pipeline.reports.summary import format_summary

    return RunResult(
        exit_code=exit_code_for(batch),
        summary=format_summary(batch, paths, submitted=submitted),
        paths=paths,
        batch=batch,
    )
