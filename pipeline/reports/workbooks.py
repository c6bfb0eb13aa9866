"""results.xlsx and errors.xlsx: what the clerk reads after a run, in Chinese.

results.xlsx has 汇总 (per file and sheet: rows read, counts by status, rows
per result code, a total line) and 明细 (every row once, in input order, bad
rows filled red, rows with only warnings yellow).  errors.xlsx has 汇总 (per
code: the platform's description, count, how to fix), 明细 (one line per
error, by code then row, naming the clerk's own column and original value) and
提示 (the warnings, same layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.model import (
    DRY_RUN_STATUSES,
    FIELD_LABELS,
    FIELDS,
    STATUS_LABELS,
    STATUS_VALID,
    SUBMIT_STATUSES,
)
from pipeline.reports.data import WARNING_HINT, ReportData, column_of, extra_columns, relabel, text_of
from pipeline.reports.xlsx.writer import MAX_SHEET_ROWS, Block, FastWorkbook, display_widths, text_block
from pipeline.text.arrow import text_array
from schemas.result_codes import describe, hint

#: Above this many rows, 明细 holds only the rows that did not get through.
DETAIL_ROW_LIMIT = 200_000

#: Chinese headers of the card identifiers in a submission's 明细.
CARD_ID_LABELS: dict[str, str] = {"ehealthCardId": "电子健康卡ID", "virtualCardNum": "虚拟卡号"}

FORMATS: tuple[dict[str, object], ...] = (
    {"bold": True, "bg_color": "#DDEBF7", "bottom": 1, "text_wrap": False},  # 1 header
    {"bg_color": "#FFC7CE", "font_color": "#9C0006"},  # 2 row that did not get through
    {"bg_color": "#FFEB9C", "font_color": "#9C5700"},  # 3 row with warnings only
    {"bold": True},  # 4 total line
    {"bold": True, "font_color": "#C00000"},  # 5 note
)
HEADER, BAD, WARN, TOTAL, NOTE = 1, 2, 3, 4, 5


FULL_CSV_NOTE = "注意：本表只列出未通过的 {shown:,} 行（共 {total:,} 行）；results.csv 含全部行。"
TRUNCATED_NOTE = "注意：本表只列出前 {shown:,} 条（共 {total:,} 条）；每一行的状态和结果代码见 results.csv。"


def _numbers(values: np.ndarray) -> pa.Array:
    """Integers (row numbers, counts) as an int64 array, null where unknown."""
    floats = np.asarray(values, dtype=float)
    return pa.array(np.nan_to_num(floats).astype(np.int64), pa.int64(), mask=np.isnan(floats))


def add_table_sheet(
    book: FastWorkbook,
    name: str,
    headers: Sequence[str],
    columns: Sequence[pa.Array],
    *,
    row_style: np.ndarray | None = None,
    totals: Sequence[object] | None = None,
    notes: Sequence[str] = (),
) -> None:
    """A sheet with a frozen header row, an autofilter over the data, fitted widths and notes below."""
    height = len(columns[0]) if columns else 0
    blocks = [text_block([list(headers)], style=HEADER), Block(columns, first_row=1, row_style=row_style)]
    last = height
    if totals is not None:
        last += 1
        cells = [pa.array([v], pa.int64()) if isinstance(v, int) else text_array([str(v)]) for v in totals]
        blocks.append(Block(cells, first_row=last, style=TOTAL))
    for i, note in enumerate(notes):
        blocks.append(text_block([[note]], first_row=last + 2 + i, style=NOTE))
    sheet = book.add_sheet(name, blocks)
    sheet.freeze_panes(1, 0)
    sheet.autofilter(0, 0, max(height, 1), max(len(headers) - 1, 0))
    for col, width in enumerate(display_widths(columns, headers, cap=60)):
        sheet.set_column(col, col, width)


# -- results.xlsx -----------------------------------------------------------------------------------


def _statuses(data: ReportData) -> list[str]:
    listed = list(SUBMIT_STATUSES if data.submitted else DRY_RUN_STATUSES)
    present = data.statuses_present
    listed += [s for s in present if s not in listed and s != STATUS_VALID]
    if STATUS_VALID in present and STATUS_VALID not in listed:
        listed.insert(0, STATUS_VALID)
    return listed


def sections(data: ReportData) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The (file, sheet) each row belongs to, in order of first appearance: (labels, section per row)."""
    if data.table_of_row is not None:
        labels = [(Path(t.raw.path).name, t.raw.sheet) for t in data.batch.tables]
        return labels, data.table_of_row
    files = text_of(data.rows, "source_file", data.n)
    sheets = text_of(data.rows, "source_sheet", data.n)
    keys = pd.MultiIndex.from_arrays([files, sheets])
    codes, uniques = pd.factorize(keys, sort=False)
    return [(str(f), str(s)) for f, s in uniques], np.asarray(codes)


def _overview(data: ReportData) -> tuple[list[str], list[pa.Array], list[object]]:
    labels, section = sections(data)
    count = len(labels)
    statuses = _statuses(data)
    by_status = [np.bincount(section[data.status == s], minlength=count) for s in statuses]
    distinct = data.errors.drop_duplicates(["pos", "code"])
    codes = sorted(int(c) for c in distinct["code"].unique())
    error_section = section[distinct["pos"].to_numpy()]
    by_code = [np.bincount(error_section[distinct["code"].to_numpy() == c], minlength=count) for c in codes]
    counts = [np.bincount(section, minlength=count), *by_status, *by_code]
    headers = ["文件", "工作表", "读取行数", *(STATUS_LABELS.get(s, s) for s in statuses)]
    headers += [f"{c} {describe(c)}" for c in codes]
    columns = [text_array([f for f, _ in labels]), text_array([s for _, s in labels])]
    columns += [_numbers(c) for c in counts]
    totals: list[object] = ["合计", "", *(int(c.sum()) for c in counts)]
    return headers, columns, totals


def _detail(data: ReportData, keep: np.ndarray | None) -> tuple[list[str], list[pa.Array]]:
    """Headers and columns of 明细: every row, or only the rows ``keep`` (picked before any conversion)."""
    rows, n = data.rows, data.n
    taken = None if keep is None else pa.array(keep)

    def per_row(values: np.ndarray) -> np.ndarray:
        return values if keep is None else values[keep]

    def arrow(values: pa.Array) -> pa.Array:
        return values if taken is None else values.take(taken)

    headers = ["文件", "工作表", "行号", "状态", "结果代码", "说明"]
    columns = [
        arrow(column_of(rows, "source_file", n)),
        arrow(column_of(rows, "source_sheet", n)),
        _numbers(per_row(data.source_row)),
        text_array(relabel(per_row(data.status), STATUS_LABELS)),
        text_array(per_row(data.result_codes)),
        text_array(per_row(data.messages)),
    ]
    headers += [FIELD_LABELS[f] for f in FIELDS]
    columns += [arrow(column_of(rows, f, n)) for f in FIELDS]
    if data.submitted:
        headers += list(CARD_ID_LABELS.values())
        columns += [arrow(column_of(data.outcome, f, n)) for f in CARD_ID_LABELS]
    for name, values in extra_columns(data.batch.extras, rows.index):
        headers.append(name)
        columns.append(arrow(values))
    return headers, columns


def write_results_xlsx(path: Path, data: ReportData) -> Path:
    """Write results.xlsx (汇总 and 明细); returns ``path``."""
    book = FastWorkbook(path, FORMATS)
    style = np.where(data.bad, BAD, np.where(data.has_warning, WARN, 0)).astype(np.int8)
    notes: list[str] = []
    keep = None
    if data.n > DETAIL_ROW_LIMIT:
        keep = np.flatnonzero(data.bad)[: MAX_SHEET_ROWS - 4]
        notes.append(FULL_CSV_NOTE.format(shown=len(keep), total=data.n))
        style = style[keep]
    headers, columns = _detail(data, keep)
    overview_headers, overview_columns, totals = _overview(data)
    guide = "各结果代码列为出现该代码的行数；每条错误的位置和处理办法见 errors.xlsx。"
    add_table_sheet(book, "汇总", overview_headers, overview_columns, totals=totals, notes=[*notes, guide])
    add_table_sheet(book, "明细", headers, columns, row_style=style, notes=notes)
    return book.close()


# -- errors.xlsx ------------------------------------------------------------------------------------

FAULT_HEADERS = ("代码", "文件", "工作表", "行号", "列", "原值", "说明", "处理办法")


def _fault_sheet(book: FastWorkbook, name: str, data: ReportData, faults: pd.DataFrame) -> None:
    notes = []
    if len(faults) > MAX_SHEET_ROWS - 4:
        notes.append(TRUNCATED_NOTE.format(shown=MAX_SHEET_ROWS - 4, total=len(faults)))
        faults = faults.iloc[: MAX_SHEET_ROWS - 4]
    lines = data.fault_lines(faults)
    columns = [_numbers(lines["code"].to_numpy())]
    columns += [text_array(lines[c].to_numpy(dtype=object)) for c in ("file", "sheet")]
    columns.append(_numbers(lines["row"].to_numpy()))
    columns += [
        text_array(lines[c].to_numpy(dtype=object)) for c in ("column", "original", "message", "hint")
    ]
    add_table_sheet(book, name, FAULT_HEADERS, columns, notes=notes)


def _code_counts(data: ReportData) -> tuple[list[str], list[pa.Array]]:
    parts = []
    for level, faults in (("错误", data.errors), ("提示", data.warnings)):
        counts = faults["code"].value_counts().sort_index()
        parts += [
            (int(code), int(count), level)
            for code, count in zip(counts.index, counts.to_numpy(), strict=True)
        ]
    headers = ["代码", "说明", "数量", "级别", "处理办法"]
    columns = [
        _numbers(np.array([p[0] for p in parts], dtype=float)),
        text_array([describe(p[0]) for p in parts]),
        _numbers(np.array([p[1] for p in parts], dtype=float)),
        text_array([p[2] for p in parts]),
        text_array([hint(p[0]) if p[2] == "错误" else WARNING_HINT for p in parts]),
    ]
    return headers, columns


def write_errors_xlsx(path: Path, data: ReportData) -> Path:
    """Write errors.xlsx (汇总, 明细 for errors, 提示 for warnings); returns ``path``."""
    book = FastWorkbook(path, FORMATS)
    headers, columns = _code_counts(data)
    notes = ["错误使本行不能提交；提示不影响提交，仅供核对。"]
    if not len(data.faults):
        notes = ["没有发现错误或提示。"]
    add_table_sheet(book, "汇总", headers, columns, notes=notes)
    _fault_sheet(book, "明细", data, data.errors)
    _fault_sheet(book, "提示", data, data.warnings)
    return book.close()
