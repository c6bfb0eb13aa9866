"""Batches of a run's rows: their statuses, their outcomes, and keeping them on disk between passes.

The front half of every run (:mod:`pipeline.dryrun`) gives each row of a
:class:`~pipeline.model.Batch` its dry-run status from its faults; a
submission then writes the platform's answers into the same outcome columns,
and the exit code of a run is read off them.  A submission checks every row
before it sends any, so its checked batches wait on disk in a
:class:`BatchSpool` (Arrow IPC files, compressed) between the two passes.

Outcome columns are rebuilt whole rather than set cell by cell: setting 100k
cells of an Arrow string column in place costs a hundred times more.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import EXIT_OK, EXIT_ROWS_NOT_OK
from pipeline.files import os_errors
from pipeline.model import (
    FAULT_COLUMNS,
    GOOD_STATUSES,
    INPUT_FIELDS,
    OUTCOME_COLUMNS,
    SOURCE_COLUMNS,
    STATUS_ALREADY_ENROLLED,
    STATUS_ENROLLED,
    STATUS_FAILED,
    STATUS_INVALID,
    STATUS_VALID,
    Batch,
    MappedTable,
    Outcome,
)
from pipeline.state.journal import visible_card_ids
from pipeline.text import arrow as arrowtext
from pipeline.text.joins import join_texts_by_key
from schemas.result_codes import ResultCode


def _source_frame(tables: list[MappedTable], offsets: list[range]) -> pd.DataFrame:
    parts = []
    for table, rows in zip(tables, offsets, strict=True):
        parts.append(
            pd.DataFrame(
                {
                    "source_file": table.raw.file_name,
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


def stack_batches(batches: Sequence[Batch]) -> Batch:
    """Consecutive batches of a run as one Batch (a small run held whole: the web workspace, tests)."""
    if not batches:
        empty = pd.DataFrame({c: pd.Series(dtype="str") for c in (*SOURCE_COLUMNS, *INPUT_FIELDS)})
        return Batch([], [], empty.loc[:, list(SOURCE_COLUMNS)], empty.loc[:, list(INPUT_FIELDS)],
                     pd.DataFrame(index=empty.index), pd.DataFrame(columns=list(FAULT_COLUMNS)),
                     pd.DataFrame(columns=list(OUTCOME_COLUMNS)))  # fmt: skip
    tables: list[MappedTable] = []
    ranges: list[range] = []
    for batch in batches:
        for table, rows in zip(batch.tables, batch.table_rows, strict=False):
            tables.append(table)
            ranges.append(rows)
    extras = pd.concat([b.extras for b in batches])
    extras = extras.fillna("").astype(object) if len(extras.columns) else extras
    return Batch(
        tables=tables,
        table_rows=ranges,
        rows=pd.concat([b.rows for b in batches]),
        original=pd.concat([b.original for b in batches]),
        extras=extras,
        faults=pd.concat([b.faults for b in batches], ignore_index=True),
        outcome=pd.concat([b.outcome for b in batches]),
    )


def status_from_faults(n_rows: int, faults: pd.DataFrame, start: int = 0) -> pd.DataFrame:
    """The dry-run outcome of ``n_rows`` rows from ``start``: ``invalid`` where a row has an error fault."""
    errors = faults[faults["severity"] == "error"]
    order = np.argsort(errors["row_id"].to_numpy(dtype=np.int64), kind="stable")
    index = pd.RangeIndex(start, start + n_rows)
    row_ids = errors["row_id"].to_numpy(dtype=np.int64)[order] - start
    codes = pc.cast(pa.array(errors["code"].to_numpy(dtype=np.int64)[order]), pa.large_string())
    rows, codes = join_texts_by_key(row_ids, codes, ";", distinct=True)
    _, messages = join_texts_by_key(
        row_ids, arrowtext.text_array(errors["message"]).take(pa.array(order)), "；", distinct=True
    )
    invalid = np.zeros(n_rows, dtype=np.int8)
    invalid[rows] = 1
    blank = arrowtext.constant("", index)
    columns = {
        "status": arrowtext.choose(invalid, [STATUS_VALID, STATUS_INVALID], index),
        "result_code": arrowtext.to_series(arrowtext.spread(n_rows, rows, codes), index),
        "message": arrowtext.to_series(arrowtext.spread(n_rows, rows, messages), index),
        "ehealthCardId": blank,
        "virtualCardNum": blank.copy(),
    }
    return pd.DataFrame({name: columns[name] for name in OUTCOME_COLUMNS}, index=index)


def exit_code_for(batch: Batch) -> int:
    """0 when every row is valid / enrolled / already enrolled, else 1."""
    good = batch.outcome["status"].isin(GOOD_STATUSES).all()
    return EXIT_OK if good else EXIT_ROWS_NOT_OK


def exit_code_of(by_status: dict[str, int]) -> int:
    """0 when every row counted per status is valid / enrolled / already enrolled, else 1."""
    good = all(status in GOOD_STATUSES for status, count in by_status.items() if count)
    return EXIT_OK if good else EXIT_ROWS_NOT_OK


MESSAGE_FROM_JOURNAL = "此前已申领成功（据提交日志），本次未重复发送"
MESSAGE_REPEATED = "同一身份证号在本批次中已发送过，未重复发送"


def update_outcome(batch: Batch, row_ids: Sequence[Any] | pd.Index, columns: dict[str, Any]) -> None:
    """Set ``columns`` of ``batch.outcome`` at ``row_ids`` (values: one per row, or one for all)."""
    outcome = batch.outcome
    positions = outcome.index.get_indexer(pd.Index(row_ids))
    for name, values in columns.items():
        column = outcome[name].to_numpy(dtype=object, copy=True)
        column[positions] = values
        outcome[name] = pd.Series(column, index=outcome.index, dtype=outcome[name].dtype)


def set_outcomes(batch: Batch, row_ids: Sequence[Any], outcomes: Sequence[Outcome]) -> None:
    """Write one :class:`Outcome` per row into ``batch.outcome``."""
    if not len(row_ids):
        return
    columns = {
        "status": [o.status for o in outcomes],
        "result_code": [o.result_code for o in outcomes],
        "message": [o.message for o in outcomes],
        "ehealthCardId": [o.ehealth_card_id for o in outcomes],
        "virtualCardNum": [o.virtual_card_num for o in outcomes],
    }
    update_outcome(batch, row_ids, columns)


def append_rejections(batch: Batch, row_ids: Sequence[Any], outcomes: Sequence[Outcome]) -> None:
    """Add a fault row (severity error, no field, the platform's code and message) per rejected row."""
    faults = [
        (row_id, "", o.fault_code, "error", o.message)
        for row_id, o in zip(row_ids, outcomes, strict=True)
        if o.fault_code is not None
    ]
    if not faults:
        return
    new = pd.DataFrame(faults, columns=list(FAULT_COLUMNS))
    dtypes = {column: batch.faults[column].dtype for column in FAULT_COLUMNS if column in batch.faults}
    new = new.astype(dtypes)
    batch.faults = pd.concat([batch.faults, new], ignore_index=True) if len(batch.faults) else new


def fill_from_journal(batch: Batch, row_ids: pd.Index, ids: pd.Series, known: pd.DataFrame) -> None:
    """Rows of residents the journal knows as enrolled: ``already_enrolled``, with the card ids the
    journal has, where the row's centre (``orgCode``) is the one that enrolled them."""
    if not len(row_ids):
        return
    entries = known.loc[ids.loc[row_ids].to_numpy()]
    org_codes = batch.rows["orgCode"].reindex(row_ids).fillna("").astype(str).str.strip().to_numpy()
    cards = visible_card_ids(entries, org_codes)
    update_outcome(
        batch, row_ids,
        {
            "status": STATUS_ALREADY_ENROLLED, "result_code": "", "message": MESSAGE_FROM_JOURNAL,
            "ehealthCardId": cards["ehealth_card_id"].to_numpy(),
            "virtualCardNum": cards["virtual_card_num"].to_numpy(),
        },
    )  # fmt: skip


def follow_first(first: Outcome) -> Outcome:
    """The outcome of a repeated ID number in the same batch, given the first row's outcome."""
    if first.status in (STATUS_ENROLLED, STATUS_ALREADY_ENROLLED):
        return Outcome(
            STATUS_ALREADY_ENROLLED, str(ResultCode.ALREADY_ENROLLED), MESSAGE_REPEATED,
            first.ehealth_card_id, first.virtual_card_num,
        )  # fmt: skip
    return Outcome(first.status, first.result_code, first.message, fault_code=first.fault_code)


def not_sent(batch: Batch, message: str) -> None:
    """Every row of ``batch`` still ``valid`` (never sent) becomes ``failed`` with ``message``."""
    waiting = batch.outcome.index[batch.outcome["status"] == STATUS_VALID]
    if len(waiting):
        update_outcome(batch, waiting, {"status": STATUS_FAILED, "result_code": "", "message": message})


# -- keeping checked batches on disk --------------------------------------------------------------

_PARTS = ("rows", "original", "extras", "outcome")


#: What to do when the checked rows cannot be kept on disk between a submission's two passes.
SPOOL_FIX = "清理 --out 目录所在磁盘的空间，或换一个空间充足的 --out 目录后重新运行"


def _write_arrow(path: Path, table: pa.Table) -> None:
    """``table`` as one LZ4-compressed Arrow IPC file at ``path``."""
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)


def _frame_table(frames: dict[str, pd.DataFrame]) -> pa.Table:
    arrays, names = [], []
    for part, frame in frames.items():
        for column in frame.columns:
            values = frame[column]
            arrays.append(
                pa.array(values.to_numpy()) if values.dtype.kind in "iuf" else arrowtext.text_array(values)
            )
            names.append(f"{part}\x1f{column}")
    return pa.Table.from_arrays(arrays, names=names)


def _frames(table: pa.Table, index: pd.Index) -> dict[str, pd.DataFrame]:
    frames: dict[str, dict[str, pd.Series]] = {part: {} for part in _PARTS}
    for name, column in zip(table.column_names, table.columns, strict=True):
        part, _, field = name.partition("\x1f")
        array = arrowtext.contiguous(column)
        if pa.types.is_integer(array.type):
            series = pd.Series(array.to_numpy(zero_copy_only=False), index=index)
        else:
            series = arrowtext.to_series(array, index)
        frames[part][field] = series
    return {part: pd.DataFrame(columns, index=index) for part, columns in frames.items()}


@dataclass
class _Spooled:
    path: Path
    table: int
    start: int
    rows: int


class BatchSpool:
    """Checked batches kept on disk in order, to be read back one by one (a submission's second pass).

    Each batch's frames go to one Arrow IPC file (LZ4-compressed) in
    ``folder``; only their tables (header and column mapping, no rows) stay in
    memory, and the rows as read of a table of at most ``keep_rows`` rows
    (what an annotated copy of a text register is made of).
    """

    def __init__(self, folder: Path, keep_rows: int = 0) -> None:
        self.folder = folder
        self.keep_rows = keep_rows
        self.tables: list[MappedTable] = []
        self._spooled: list[_Spooled] = []
        self._kept: dict[int, MappedTable] = {}  # position -> the chunk's own table, rows and all
        self._rows_of: dict[int, int] = {}  # table number -> rows kept so far
        self.rows = 0

    def add(self, batch: Batch, head: MappedTable | None = None) -> None:
        """Keep ``batch`` (one table's rows: a chunk of the run).

        ``head`` is its table without rows (header, column mapping), kept in
        memory in place of the chunk's table; default: the chunk's own.
        """
        mapped = head if head is not None else (batch.tables[0] if batch.tables else None)
        number = -1
        if mapped is not None:
            number = next((i for i, t in enumerate(self.tables) if t is mapped), -1)
            if number < 0:
                self.tables.append(mapped)
                number = len(self.tables) - 1
        path = self.folder / f"batch-{len(self._spooled):06d}.arrow"
        frames = {
            "rows": batch.rows,
            "original": batch.original,
            "extras": batch.extras,
            "outcome": batch.outcome,
        }
        faults = batch.faults.loc[:, list(FAULT_COLUMNS)].reset_index(drop=True)
        # A full disk under --out is the clerk's to fix, named in one line (nothing has been sent yet).
        with os_errors("保存校验结果的临时文件", self.folder, fix=SPOOL_FIX):
            _write_arrow(path, _frame_table(frames))
            fault_table = pa.Table.from_pandas(faults, preserve_index=False)
            _write_arrow(path.with_suffix(".faults.arrow"), fault_table)
        if batch.tables and number >= 0 and self.keep_rows:
            kept = self._rows_of.get(number, 0) + len(batch)
            self._rows_of[number] = kept
            if kept <= self.keep_rows:
                self._kept[len(self._spooled)] = batch.tables[0]
            else:  # too long to keep: none of its rows are
                for position in [p for p, s in enumerate(self._spooled) if s.table == number]:
                    self._kept.pop(position, None)
        self._spooled.append(_Spooled(path, number, batch.start, len(batch)))
        self.rows += len(batch)

    def __len__(self) -> int:
        return len(self._spooled)

    def rows_from(self, position: int) -> int:
        """Rows of the batches kept from the ``position``-th on."""
        return sum(spooled.rows for spooled in self._spooled[position:])

    def column(self, position: int, part: str, name: str) -> pa.Array:
        """One column of the ``position``-th batch, read without the others."""
        spooled = self._spooled[position]
        with pa.memory_map(str(spooled.path)) as source:
            wanted = pa.ipc.open_file(source).schema.get_field_index(f"{part}\x1f{name}")
            options = pa.ipc.IpcReadOptions(included_fields=[wanted])
            table = pa.ipc.open_file(source, options=options).read_all()
        return arrowtext.contiguous(table.column(0))

    def batch(self, position: int) -> Batch:
        """The ``position``-th batch, as it was kept."""
        spooled = self._spooled[position]
        index = pd.RangeIndex(spooled.start, spooled.start + spooled.rows)
        with pa.memory_map(str(spooled.path)) as source:
            frames = _frames(pa.ipc.open_file(source).read_all(), index)
        with pa.memory_map(str(spooled.path.with_suffix(".faults.arrow"))) as source:
            faults = pa.ipc.open_file(source).read_all().to_pandas()
        faults = faults.astype({"row_id": np.int64, "code": np.int64})
        for column in ("field", "severity", "message"):
            faults[column] = faults[column].astype("str")
        tables = [self._kept.get(position, self.tables[spooled.table])] if spooled.table >= 0 else []
        return Batch(
            tables=tables,
            table_rows=[range(spooled.start, spooled.start + spooled.rows)] if tables else [],
            rows=frames["rows"],
            original=frames["original"],
            extras=frames["extras"],
            faults=faults,
            outcome=frames["outcome"],
        )

    def batches(self) -> Iterator[Batch]:
        """Every batch in order."""
        for position in range(len(self._spooled)):
            yield self.batch(position)

    def discard(self, position: int) -> None:
        """Remove the files (and the rows kept) of a batch no longer needed."""
        self._kept.pop(position, None)
        path = self._spooled[position].path
        path.unlink(missing_ok=True)
        path.with_suffix(".faults.arrow").unlink(missing_ok=True)
