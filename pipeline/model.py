"""The shapes that pass between the stages of a run.

The stages, one package or module each, in the order the data flows::

    reading/   a register file          -> TableSource (one per sheet or CSV file), read in chunks
                                           of at most ``chunk_rows`` rows, each a RawTable
    mapping    RawTable                 -> MappedTable (columns recognised as field codes)
    dryrun     MappedTable chunk        -> Batch of the chunk's rows, indexed by row_id
    normalise  Batch.original           -> Batch.rows (the platform's values) + warnings
    validate   Batch.rows               -> faults (a frame of FAULT_COLUMNS); repeated ID numbers
                                           across every chunk of a run through one RepeatedIds
    submission Batch (valid rows)       -> Outcome per row -> Batch.outcome
    reports/   every Batch, in order    -> results.xlsx, errors.xlsx, results.csv, annotated copies
    every command                       -> RunResult (text to print, files written, counts, exit code)

A run is a sequence of :class:`Batch` values, one per chunk, in input order:
``row_id`` counts the rows of the whole run (0..n-1) and each chunk holds a
contiguous range of them, from one table.  No stage ever holds every row of a
large run: memory is bounded by the chunk size, and what must see every row
(the repeated ID number, 10115; the counts; the reports) keeps compact
structures or spools to disk.  A small run may also be one Batch (the web
workspace, the tests): every stage takes any Batch.  Faults are rows of a
frame with :data:`FAULT_COLUMNS`.  Every frame here holds text only (``""``
for empty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: ``cardInfo`` fields of ``syncCardInfo``, in the spec's order.
CARD_FIELDS: tuple[str, ...] = ("klx", "kh", "fksj", "orgCode", "yhkh", "isRealName")

#: ``peopleInfo`` fields of ``syncCardInfo``, in the spec's order.
PEOPLE_FIELDS: tuple[str, ...] = (
    "xm", "xb", "mzdm", "csrq", "sfzhm", "zjlx", "zjhm", "jkdah", "xnhkh", "fyzhdm",
    "xldm", "zydm", "dzlb", "dzsf", "dzs", "dzqx", "dzxz", "dzc", "brdh", "ylfyzffs",
)  # fmt: skip

#: Every platform field, people first.
FIELDS: tuple[str, ...] = PEOPLE_FIELDS + CARD_FIELDS

#: Input-only field: one full-address column, split into dzsf/dzs/dzqx/dzxz/dzc.
ADDRESS_FIELD = "address"

#: The parts of an address, in order; the full ``address`` column is split into them.
ADDRESS_PARTS: tuple[str, ...] = ("dzsf", "dzs", "dzqx", "dzxz", "dzc")

#: Every field a clerk's column can map to.
INPUT_FIELDS: tuple[str, ...] = (*FIELDS, ADDRESS_FIELD)

#: Columns that locate a row in the clerk's files.
SOURCE_COLUMNS: tuple[str, ...] = ("source_file", "source_sheet", "source_row")

#: Columns of a fault frame.  ``row_id`` indexes the run frame; ``field`` is a
#: field code (or ``""`` for a row-level fault); ``severity`` is ``error`` or
#: ``warning`` (warnings never make a row invalid); ``code`` is the platform
#: result code as int.
FAULT_COLUMNS: tuple[str, ...] = ("row_id", "field", "code", "severity", "message")

#: Chinese labels of the fields, used in every clerk-facing text.
FIELD_LABELS: dict[str, str] = {
    "xm": "姓名", "xb": "性别", "mzdm": "民族", "csrq": "出生日期", "sfzhm": "身份证号码",
    "zjlx": "证件类型", "zjhm": "证件号码", "jkdah": "健康档案号", "xnhkh": "新农合卡号",
    "fyzhdm": "婚姻状况", "xldm": "文化程度", "zydm": "职业", "dzlb": "地址类别",
    "dzsf": "省", "dzs": "市", "dzqx": "区县", "dzxz": "街道/乡镇", "dzc": "村/街/路",
    "brdh": "联系电话", "ylfyzffs": "医疗费用支付方式", "klx": "卡类别", "kh": "卡号",
    "fksj": "发卡时间", "orgCode": "发卡机构代码", "yhkh": "银行卡号",
    "isRealName": "是否实名", "address": "地址",
}  # fmt: skip

#: Fields whose column a register must have: no derivation or default supplies them.
REQUIRED_INPUT_FIELDS: tuple[str, ...] = ("xm", "sfzhm", "mzdm", "brdh", "ylfyzffs")

#: Row statuses.  A dry run gives ``valid``/``invalid``; a submission gives the rest.
STATUS_VALID = "valid"
STATUS_INVALID = "invalid"
STATUS_ENROLLED = "enrolled"
STATUS_ALREADY_ENROLLED = "already_enrolled"
STATUS_REJECTED = "rejected"
STATUS_FAILED = "failed"

#: Statuses of rows done well: valid in a dry run, enrolled (now or before) in a submission.
GOOD_STATUSES: frozenset[str] = frozenset({STATUS_VALID, STATUS_ENROLLED, STATUS_ALREADY_ENROLLED})

#: Statuses of rows that did not get through: highlighted, and kept in 明细 when it is cut.
BAD_STATUSES: frozenset[str] = frozenset({STATUS_INVALID, STATUS_REJECTED, STATUS_FAILED})

#: The statuses a dry run and a submission report, in the order reports list them.
DRY_RUN_STATUSES: tuple[str, ...] = (STATUS_VALID, STATUS_INVALID)
SUBMIT_STATUSES: tuple[str, ...] = (
    STATUS_ENROLLED, STATUS_ALREADY_ENROLLED, STATUS_REJECTED, STATUS_FAILED, STATUS_INVALID,
)  # fmt: skip

#: Chinese names of the statuses, for clerk-facing sheets.
STATUS_LABELS: dict[str, str] = {
    STATUS_VALID: "校验通过", STATUS_INVALID: "校验未通过", STATUS_ENROLLED: "申领成功",
    STATUS_ALREADY_ENROLLED: "已办理过", STATUS_REJECTED: "平台拒绝", STATUS_FAILED: "发送失败",
}  # fmt: skip

#: Columns of a batch outcome frame (index ``row_id``).
OUTCOME_COLUMNS: tuple[str, ...] = ("status", "result_code", "message", "ehealthCardId", "virtualCardNum")


@dataclass(frozen=True)
class Outcome:
    """One row's final status, as :data:`OUTCOME_COLUMNS` hold it; ``fault_code``: a platform rejection."""

    status: str
    result_code: str
    message: str
    ehealth_card_id: str = ""
    virtual_card_num: str = ""
    fault_code: int | None = None


#: Excel's own limit on the characters of one cell; a longer cell is a fault on its row.
MAX_CELL_CHARS = 32_767

#: Characters of a clerk's value quoted in a message or a note (the whole value is in its cell and in
#: errors.xlsx's 原值): a message quoting a whole long cell would outgrow a cell itself.
QUOTED_CHARS = 40

#: Columns of a RawTable's reading notes: ``row`` (0-based row of ``data``), the ``header`` of the
#: cell (``""``: the row as a whole), the result ``code``, ``severity`` and the Chinese ``message``.
NOTE_COLUMNS: tuple[str, ...] = ("row", "header", "code", "severity", "message")

#: The severity of a reading note that is an error only where its column is read as a field, and no
#: fault at all in a column of none (序号, the clerk's own columns): a formula saved without its result
#: loses nothing the platform is sent there.
FIELD_ONLY = "field"


def no_notes() -> pd.DataFrame:
    """A reading-notes frame with no rows."""
    return pd.DataFrame(
        {
            "row": pd.Series(dtype=np.int64),
            "header": pd.Series(dtype=object),
            "code": pd.Series(dtype=np.int64),
            "severity": pd.Series(dtype=object),
            "message": pd.Series(dtype=object),
        }
    )


def no_faults() -> pd.DataFrame:
    """A fault frame (:data:`FAULT_COLUMNS`) with no rows: the right columns and types."""
    return _no_faults().copy(deep=False)  # a new frame each time: callers may add to theirs


@cache
def _no_faults() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row_id": pd.Series(dtype=np.int64),
            "field": pd.Series(dtype="str"),
            "code": pd.Series(dtype=np.int64),
            "severity": pd.Series(dtype="str"),
            "message": pd.Series(dtype="str"),
        }
    )


class _Named:
    """How a table's file is named in reports, for :class:`RawTable` and :class:`TableSource` alike."""

    path: str
    sheet: str
    name: str  # set where the file's own name is not enough (two inputs named alike)

    @property
    def file_name(self) -> str:
        """The file's name in reports: its own, or with its folder where another input has the same one."""
        return self.name or Path(self.path).name

    @property
    def label(self) -> str:
        """File name, plus the sheet name for workbooks: how a clerk names it."""
        return f"{self.file_name}[{self.sheet}]" if self.sheet else self.file_name


@dataclass
class RawTable(_Named):
    """One sheet (or one CSV file) as read, before any mapping; or a chunk of its rows.

    ``data`` has one column per header (headers deduplicated, as text), every
    cell text (``""`` for empty); ``source_row`` holds, for each data row, the
    1-based row number the clerk sees in Excel or WPS (a CSV file's too);
    ``column_positions`` holds the 0-based sheet column of each header, so
    reports can point at the clerk's own cells.  ``notes`` are what reading
    found wrong with single cells or rows (:data:`NOTE_COLUMNS`: a cell longer
    than a spreadsheet holds, values beyond the last column), which become
    faults of those rows.
    """

    path: str
    sheet: str
    header_row: int
    headers: list[str]
    column_positions: list[int]
    data: pd.DataFrame
    source_row: np.ndarray
    notes: pd.DataFrame = field(default_factory=no_notes)
    name: str = ""  # how reports name the file, where its own name is not enough (see file_name)

    def rows(self, start: int, stop: int) -> RawTable:
        """Rows ``start:stop`` of the table, as a table with the same header (no text copied)."""
        notes = self.notes
        if len(notes):
            picked = (notes["row"] >= start) & (notes["row"] < stop)
            notes = notes[picked].assign(row=notes["row"][picked] - start).reset_index(drop=True)
        data = self.data.iloc[start:stop]
        return RawTable(
            self.path, self.sheet, self.header_row, self.headers, self.column_positions,
            data.set_axis(pd.RangeIndex(len(data))), self.source_row[start:stop], notes, self.name,
        )  # fmt: skip


@dataclass
class TableSource(_Named):
    """A table whose header row has been found, its rows read chunk by chunk.

    ``read(chunk_rows)`` yields the data rows in order as RawTables (same
    header, ``source_row`` each) of about ``chunk_rows`` rows; it reads the
    file as it goes and may be called once.  ``whole`` is the table itself
    when it is held in memory anyway (a workbook's sheet).  ``estimated_rows``
    guides a progress bar (a CSV file's is guessed from its size).
    """

    path: str
    sheet: str
    header_row: int
    headers: list[str]
    column_positions: list[int]
    read: Callable[[int], Iterator[RawTable]]
    whole: RawTable | None = None
    estimated_rows: int = 0
    name: str = ""  # as RawTable.name: given to every table read

    def named(self, table: RawTable) -> RawTable:
        """``table`` (read from this source) with the source's name for reports."""
        return replace(table, name=self.name) if self.name and table.name != self.name else table

    def head(self) -> RawTable:
        """The table with its header and no rows: what mapping needs to recognise the columns."""
        data = pd.DataFrame({name: pd.Series(dtype="str") for name in self.headers})
        return RawTable(
            self.path, self.sheet, self.header_row, list(self.headers), list(self.column_positions),
            data, np.empty(0, dtype=np.int64), name=self.name,
        )  # fmt: skip

    @classmethod
    def of(cls, table: RawTable) -> TableSource:
        """A table already in memory, read back in slices."""

        def read(chunk_rows: int) -> Iterator[RawTable]:
            size = max(1, chunk_rows)
            for start in range(0, len(table.data), size):
                yield table.rows(start, start + size)

        return cls(
            table.path, table.sheet, table.header_row, table.headers, table.column_positions,
            read, whole=table, estimated_rows=len(table.data),
        )  # fmt: skip


@dataclass
class MappedTable:
    """A :class:`RawTable` with its columns recognised.

    ``fields`` has one column per :data:`INPUT_FIELDS` entry (``""`` where the
    clerk's sheet lacks it); ``extras`` holds the clerk's unrecognised columns;
    ``field_headers`` maps a field code to the header it came from.
    """

    raw: RawTable
    fields: pd.DataFrame
    extras: pd.DataFrame
    field_headers: dict[str, str] = field(default_factory=dict)

    def rows(self, start: int, stop: int) -> MappedTable:
        """Rows ``start:stop`` of the table, its columns recognised the same way (no text copied)."""
        index = pd.RangeIndex(len(range(start, min(stop, len(self.fields)))))
        return MappedTable(
            self.raw.rows(start, stop),
            self.fields.iloc[start:stop].set_axis(index),
            self.extras.iloc[start:stop].set_axis(index),
            self.field_headers,
        )


@dataclass
class Batch:
    """Rows of a run, from reading to their final status: one chunk, or a whole small run.

    All frames share the index ``row_id``: the rows' places in the whole run
    (input order across files), a contiguous range for a chunk.

    * ``rows``: :data:`SOURCE_COLUMNS` + :data:`FIELDS`, normalised values.
    * ``original``: :data:`INPUT_FIELDS`, the values as the clerk wrote them.
    * ``extras``: the clerk's unrecognised columns (union over files).
    * ``faults``: :data:`FAULT_COLUMNS` (local faults and warnings, and
      platform rejections after a submission).
    * ``outcome``: :data:`OUTCOME_COLUMNS`; ``result_code`` holds the codes
      of a row joined by ``;`` (empty for a good row).
    * ``tables``: the tables the rows come from, in order; ``table_rows[i]``
      is the ``row_id`` range of ``tables[i]`` (for a chunk: its table's
      rows in this chunk, and ``tables[i].raw`` holds just those rows).
    * ``cell_edits``: values a clerk changed after reading (``row_id``,
      ``field`` — an input field —, ``value``; the web workspace), already in
      ``original``; the annotated copy writes them into the clerk's cells.
    """

    tables: list[MappedTable]
    table_rows: list[range]
    rows: pd.DataFrame
    original: pd.DataFrame
    extras: pd.DataFrame
    faults: pd.DataFrame
    outcome: pd.DataFrame
    cell_edits: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def start(self) -> int:
        """The first ``row_id`` of the batch (0 for an empty one)."""
        return int(self.rows.index[0]) if len(self.rows) else 0


@dataclass(frozen=True)
class ReadOptions:
    """How the registers of a run are read: which sheets, and the clerk's own column mapping.

    ``sheet`` picks one sheet by name, ``all_sheets`` takes every sheet with
    data (default: the first with data); ``mapping_file`` is a TOML file of
    ``header = field code`` pairs that win over the built-in aliases.
    """

    sheet: str | None = None
    all_sheets: bool = False
    mapping_file: Path | None = None


@dataclass
class RunResult:
    """What a command hands back to the command line: the text to print, the files written, the exit code.

    Every command returns one, so the command line prints and exits the same
    way for all of them; ``counts`` are a run's rows counted as its reports
    count them (:func:`pipeline.reports.summary.summary_counts`), where it has rows.
    """

    exit_code: int
    summary: str = ""
    paths: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, Any] | None = None
