"""The shapes that pass between the stages of a run.

Reading yields :class:`RawTable` values (one per sheet or CSV file); mapping turns
each into a :class:`MappedTable` whose columns are the platform's field codes;
normalisation and validation work on one concatenated frame for the whole run,
indexed by ``row_id`` (0..n-1, input order); faults are rows of a frame with
:data:`FAULT_COLUMNS`.  Every frame here holds text only (``""`` for empty).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

#: Chinese names of the statuses, for clerk-facing sheets.
STATUS_LABELS: dict[str, str] = {
    STATUS_VALID: "校验通过", STATUS_INVALID: "校验未通过", STATUS_ENROLLED: "申领成功",
    STATUS_ALREADY_ENROLLED: "已办理过", STATUS_REJECTED: "平台拒绝", STATUS_FAILED: "发送失败",
}  # fmt: skip

#: Columns of a batch outcome frame (index ``row_id``).
OUTCOME_COLUMNS: tuple[str, ...] = ("status", "result_code", "message", "ehealthCardId", "virtualCardNum")


@dataclass
class RawTable:
    """One sheet (or one CSV file) as read, before any mapping.

    ``data`` has one column per header (headers deduplicated, as text), every
    cell text (``""`` for empty); ``source_row`` holds, for each data row, the
    1-based row number the clerk sees in Excel (or the CSV line number);
    ``column_positions`` holds the 0-based sheet column of each header, so
    reports can point at the clerk's own cells.
    """

    path: str
    sheet: str
    header_row: int
    headers: list[str]
    column_positions: list[int]
    data: pd.DataFrame
    source_row: np.ndarray

    @property
    def label(self) -> str:
        """File name, plus the sheet name for workbooks: how a clerk names it."""
        from pathlib import Path

        name = Path(self.path).name
        return f"{name}[{self.sheet}]" if self.sheet else name


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


@dataclass
class Batch:
    """Every row of one run, from reading to its final status.

    All frames share the index ``row_id`` (0..n-1, input order across files).

    * ``rows``: :data:`SOURCE_COLUMNS` + :data:`FIELDS`, normalised values.
    * ``original``: :data:`INPUT_FIELDS`, the values as the clerk wrote them.
    * ``extras``: the clerk's unrecognised columns (union over files).
    * ``faults``: :data:`FAULT_COLUMNS` (local faults and warnings, and
      platform rejections after a submission).
    * ``outcome``: :data:`OUTCOME_COLUMNS`; ``result_code`` holds the codes
      of a row joined by ``;`` (empty for a good row).
    * ``tables``: the tables read, in order; ``table_rows[i]`` is the
      ``row_id`` range of ``tables[i]``.
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
