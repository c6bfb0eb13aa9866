"""The dry run: read every register, normalise it, validate it, report it.

This is also the front half of every submission and nightly import: they
call :func:`prepare_batch`, then send, then :func:`write_outputs`.
"""

from __future__ import annotations

import importlib
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd
from loguru import logger

from pipeline import mapping, normalise
from pipeline.config import Settings
from pipeline.errors import EXIT_OK, EXIT_ROWS_NOT_OK
from pipeline.model import (
    FAULT_COLUMNS,
    INPUT_FIELDS,
    OUTCOME_COLUMNS,
    SOURCE_COLUMNS,
    STATUS_ALREADY_ENROLLED,
    STATUS_ENROLLED,
    STATUS_INVALID,
    STATUS_VALID,
    Batch,
    MappedTable,
)
from pipeline.progress import StageBar
from pipeline.reading import register as reading
from pipeline.text import arrow as arrowtext

#: Statuses that count as a row done well.
GOOD_STATUSES = frozenset({STATUS_VALID, STATUS_ENROLLED, STATUS_ALREADY_ENROLLED})


@dataclass
class RunResult:
    """What a finished dry run or submission hands back to the command line."""

    batch: Batch
    paths: dict[str, Path]

    @property
    def exit_code(self) -> int:
        """0 when every row is good, 1 otherwise."""
        return exit_code_for(self.batch)


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
    *,
    sheet: str | None = None,
    all_sheets: bool = False,
    mapping_file: Path | None = None,
    bar: StageBar | None = None,
) -> list[MappedTable]:
    """Read every input and recognise its columns; fatal problems raise InputError."""
    aliases = dict(settings.column_aliases)
    if mapping_file is not None:
        aliases.update(mapping.load_mapping_file(mapping_file))
    bar = bar or StageBar(len(inputs), enabled=False)
    tables: list[MappedTable] = []
    for path in inputs:
        with bar.stage(f"读取 {Path(path).name}"):
            for raw in reading.read_register(Path(path), sheet=sheet, all_sheets=all_sheets):
                tables.append(mapping.map_columns(raw, aliases))
                logger.info("读取 {}：{} 行（表头在第 {} 行）", raw.label, len(raw.data), raw.header_row)
    return tables


def _source_frame(tables: list[MappedTable], offsets: list[range]) -> pd.DataFrame:
    parts = []
    for table, rows in zip(tables, offsets, strict=True):
        parts.append(
            pd.DataFrame(
                {
                    "source_file": Path(table.raw.path).name,
                    "source_sheet": table.raw.sheet,
                    "source_row": table.raw.source_row.astype("int64"),
                },
                index=pd.RangeIndex(rows.start, rows.stop),
            )
        )
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SOURCE_COLUMNS})
    return pd.concat(parts)


def combine(tables: list[MappedTable]) -> tuple[list[range], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Stack the tables of a run: row ranges, source columns, fields as written, extras."""
    offsets: list[range] = []
    start = 0
    for table in tables:
        offsets.append(range(start, start + len(table.fields)))
        start += len(table.fields)
    index = pd.RangeIndex(start)
    if tables:
        original = pd.concat([t.fields.loc[:, list(INPUT_FIELDS)] for t in tables], ignore_index=True)
        extras = pd.concat([t.extras.reset_index(drop=True) for t in tables], ignore_index=True)
        extras = extras.fillna("").astype(object) if len(extras.columns) else pd.DataFrame(index=index)
    else:
        original = pd.DataFrame({c: pd.Series(dtype=object) for c in INPUT_FIELDS})
        extras = pd.DataFrame(index=index)
    original.index = index
    extras.index = index
    return offsets, _source_frame(tables, offsets), original, extras


def _join_by_row(row_ids: np.ndarray, texts: np.ndarray, sep: str) -> tuple[np.ndarray, list[str]]:
    """Join ``texts`` per row id (``row_ids`` sorted), dropping repeats within a row."""
    rows: list[int] = []
    joined: list[str] = []
    for row_id, group in itertools.groupby(
        zip(row_ids.tolist(), texts.tolist(), strict=True), key=itemgetter(0)
    ):
        rows.append(row_id)
        joined.append(sep.join(dict.fromkeys(text for _, text in group)))
    return np.asarray(rows, dtype="int64"), joined


def _spread(n_rows: int, rows: np.ndarray, texts: Sequence[str], index: pd.Index) -> pd.Series:
    """A ``str`` column: ``texts[k]`` on row ``rows[k]``, "" elsewhere (built in Arrow, not as objects)."""
    picks = np.zeros(n_rows, dtype=np.int32)
    picks[rows] = np.arange(1, len(rows) + 1, dtype=np.int32)
    return arrowtext.choose(picks, ["", *texts], index)


def status_from_faults(n_rows: int, faults: pd.DataFrame) -> pd.DataFrame:
    """The dry-run outcome frame: ``invalid`` where a row has an error fault."""
    errors = faults[faults["severity"] == "error"].sort_values("row_id", kind="stable")
    index = pd.RangeIndex(n_rows)
    row_ids = errors["row_id"].to_numpy(dtype="int64")
    rows, codes = _join_by_row(row_ids, errors["code"].astype(str).to_numpy(), ";")
    _, messages = _join_by_row(row_ids, errors["message"].to_numpy(dtype=object), "；")
    invalid = np.zeros(n_rows, dtype=np.int8)
    invalid[rows] = 1
    blank = arrowtext.constant("", index)
    outcome = pd.DataFrame(
        {
            "status": arrowtext.choose(invalid, [STATUS_VALID, STATUS_INVALID], index),
            "result_code": _spread(n_rows, rows, codes, index),
            "message": _spread(n_rows, rows, messages, index),
            "ehealthCardId": blank,
            "virtualCardNum": blank.copy(),
        },
        index=index,
    )
    return outcome.loc[:, list(OUTCOME_COLUMNS)]


def prepare_batch(
    inputs: Sequence[Path],
    settings: Settings,
    *,
    sheet: str | None = None,
    all_sheets: bool = False,
    mapping_file: Path | None = None,
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
    tables = read_tables(
        inputs, settings, sheet=sheet, all_sheets=all_sheets, mapping_file=mapping_file, bar=bar
    )
    offsets, sources, original, extras = combine(tables)
    with bar.stage("规范化"):
        normalised, warnings = normalise.normalise(original, settings.defaults, today)
    with bar.stage("校验"):
        from pipeline import validate

        faults = validate.validate(normalised, today=today)
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
    missing_org = int((rows["orgCode"] == "").sum())
    if missing_org:
        logger.warning(
            "{} 行没有发卡机构代码（orgCode）：提交前请设置环境变量 EHC_ORG_CODE 或配置 [defaults] org_code",
            missing_org,
        )
    return batch


def write_outputs(batch: Batch, out_dir: Path, *, submitted: bool) -> dict[str, Path]:
    """Write every report of ``batch`` into ``out_dir``."""
    from pipeline.reports import write as reports

    return reports.write_reports(out_dir, batch, submitted=submitted)


def exit_code_for(batch: Batch) -> int:
    """0 when every row is valid / enrolled / already enrolled, else 1."""
    good = batch.outcome["status"].isin(GOOD_STATUSES).all()
    return EXIT_OK if good else EXIT_ROWS_NOT_OK


def run_validate(
    inputs: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    *,
    sheet: str | None = None,
    all_sheets: bool = False,
    mapping_file: Path | None = None,
    progress: bool = False,
) -> RunResult:
    """``ehc validate``: the dry run with every report, nothing sent."""
    bar = StageBar(len(inputs) + 3, enabled=progress)
    try:
        batch = prepare_batch(
            inputs, settings, sheet=sheet, all_sheets=all_sheets, mapping_file=mapping_file, bar=bar
        )
        with bar.stage("写报告"):
            paths = write_outputs(batch, out_dir, submitted=False)
    finally:
        bar.close()
    return RunResult(batch, paths)
