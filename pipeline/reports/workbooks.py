"""results.xlsx and errors.xlsx: what the clerk reads after a run, in Chinese.

results.xlsx has 汇总 (per file and sheet: rows read, counts by status, rows
per problem, a total line) and 明细 (every row once, in input order, bad rows
filled red, rows with only warnings yellow; the header and the file, row,
name and status columns frozen).  errors.xlsx has 汇总 (per problem: code,
title, count, level, how to fix), 明细 (one line per error, by code then row:
first what a clerk needs — row, the clerk's own column, the value as written,
what is wrong, how to fix it — then code, file and sheet) and 提示 (the
warnings, same layout).

A problem is a result code, and the field too where one code covers several
(10110 on the phone is 联系电话不正确, on the name 姓名不正确); a warning is
titled by what happened (15位身份证号码已升级为18位), never as an error.
Every sheet prints landscape, one page wide, with its header row on each page.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.messages import fault_fix, fault_title
from pipeline.model import (
    DRY_RUN_STATUSES,
    FIELD_LABELS,
    FIELDS,
    STATUS_LABELS,
    STATUS_VALID,
    SUBMIT_STATUSES,
)
from pipeline.reports.data import WARNING, ReportData, column_of, extra_columns, relabel, text_of
from pipeline.reports.xlsx.writer import MAX_SHEET_ROWS, Block, FastWorkbook, display_widths, text_block
from pipeline.text.arrow import text_array
from schemas.result_codes import field_pairs

#: Above this many rows, 明细 holds only the rows that did not get through.
DETAIL_ROW_LIMIT = 200_000

#: Columns of 明细 kept in view while scrolling right: 文件, 工作表, 行号, 姓名, 状态.
DETAIL_FROZEN_COLUMNS = 5

#: Chinese headers of the card identifiers in a submission's 明细.
CARD_ID_LABELS: dict[str, str] = {"ehealthCardId": "电子健康卡ID", "virtualCardNum": "虚拟卡号"}

FORMATS: tuple[dict[str, object], ...] = (
    {"bold": True, "bg_color": "#DDEBF7", "bottom": 1, "text_wrap": False},  # 1 header
    {"bg_color": "#FFC7CE", "font_color": "#9C0006"},  # 2 row that did not get through
    {"bg_color": "#FFEB9C", "font_color": "#9C5700"},  # 3 row with warnings only
    {"bold": True},  # 4 total line
    {"bold": True, "font_color": "#C00000"},  # 5 note
    {"text_wrap": True, "valign": "top"},  # 6 wrapped text (说明, 处理办法)
)
HEADER, BAD, WARN, TOTAL, NOTE, WRAP = 1, 2, 3, 4, 5, 6

#: Width (characters) of the wrapped text columns.
WRAPPED_WIDTH = 48


FULL_CSV_NOTE = "注意：本表只列出未通过的 {shown:,} 行（共 {total:,} 行）；results.csv 含全部行。"
TRUNCATED_NOTE = "注意：本表只列出前 {shown:,} 条（共 {total:,} 条）；每一行的状态和结果代码见 results.csv。"


def _numbers(values: np.ndarray) -> pa.Array:
    """Integers (row numbers, counts) as an int64 array, null where unknown."""
    floats = np.asarray(values, dtype=float)
    return pa.array(np.nan_to_num(floats).astype(np.int64), pa.int64(), mask=np.isnan(floats))


def _number_width(column: pa.Array, header: str) -> float:
    """A numeric column just wide enough for its header and its longest number."""
    header_width = len(header.encode()) / 2 + len(header) / 2
    values = column.drop_null() if len(column) else column
    digits = len(str(int(pc.max(pc.abs(values)).as_py() or 0))) if len(values) else 1
    return max(header_width, digits) + 2


def add_table_sheet(
    book: FastWorkbook,
    name: str,
    headers: Sequence[str],
    columns: Sequence[pa.Array],
    *,
    row_style: np.ndarray | None = None,
    totals: Sequence[object] | None = None,
    notes: Sequence[str] = (),
    frozen_columns: int = 0,
    wrapped: Sequence[int] = (),
) -> None:
    """A sheet with a frozen header row, an autofilter over the data, fitted widths and notes below.

    Numeric columns are as narrow as their numbers; ``wrapped`` columns are
    wide and wrap their text; the first ``frozen_columns`` stay in view.  The
    sheet prints landscape, one page wide, the header row on every page.
    """
    height = len(columns[0]) if columns else 0
    wrap_styles = {col: np.full(height, WRAP, dtype=np.int8) for col in wrapped}
    data = Block(columns, first_row=1, row_style=row_style, cell_styles=wrap_styles)
    blocks = [text_block([list(headers)], style=HEADER), data]
    last = height
    if totals is not None:
        last += 1
        cells = [pa.array([v], pa.int64()) if isinstance(v, int) else text_array([str(v)]) for v in totals]
        blocks.append(Block(cells, first_row=last, style=TOTAL))
    for i, note in enumerate(notes):
        blocks.append(text_block([[note]], first_row=last + 2 + i, style=NOTE))
    sheet = book.add_sheet(name, blocks)
    sheet.freeze_panes(1, frozen_columns)
    sheet.autofilter(0, 0, max(height, 1), max(len(headers) - 1, 0))
    for col, width in enumerate(display_widths(columns, headers, cap=60)):
        column = columns[col]
        if col in wrapped:
            width = WRAPPED_WIDTH
        elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            width = _number_width(column, headers[col])
        sheet.set_column(col, col, width)
    sheet.set_landscape()
    sheet.set_paper(9)  # A4
    sheet.fit_to_pages(1, 0)
    sheet.repeat_rows(0)


def problem_keys(faults: pd.DataFrame) -> pd.DataFrame:
    """Each fault's problem: ``code``, ``field`` (where the code has texts per field, else ""), warning."""
    codes = faults["code"].to_numpy(dtype=np.int64)
    fields = faults["field"].to_numpy(dtype=object)
    warning = faults["severity"].to_numpy() == WARNING
    own = field_pairs()
    pairs = zip(codes, fields, warning, strict=True)
    keyed = np.array([f if w or (int(c), f) in own else "" for c, f, w in pairs] or [], dtype=object)
    return pd.DataFrame({"pos": faults["pos"].to_numpy(), "code": codes, "field": keyed, "warning": warning})


def problems(faults: pd.DataFrame) -> pd.DataFrame:
    """One line per problem of ``faults``: code, title, fix, faults and rows; errors first, by code."""
    keys = problem_keys(faults)
    if not len(keys):
        return pd.DataFrame(
            {"code": [], "field": [], "warning": [], "title": [], "fix": [], "faults": [], "rows": []}
        )
    grouped = keys.groupby(["warning", "code", "field"], sort=True)
    table = grouped.agg(faults=("pos", "size"), rows=("pos", "nunique")).reset_index()
    table["title"] = [
        fault_title(int(c), str(f), warning=bool(w))
        for c, f, w in zip(table["code"], table["field"], table["warning"], strict=True)
    ]
    table["fix"] = [
        fault_fix(int(c), str(f), warning=bool(w))
        for c, f, w in zip(table["code"], table["field"], table["warning"], strict=True)
    ]
    return table


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
    keys = problem_keys(data.errors).drop_duplicates(["pos", "code", "field"])
    found = problems(data.errors)
    error_section = section[keys["pos"].to_numpy()]
    by_problem = [
        np.bincount(error_section[((keys["code"] == c) & (keys["field"] == f)).to_numpy()], minlength=count)
        for c, f in zip(found["code"], found["field"], strict=True)
    ]
    counts = [np.bincount(section, minlength=count), *by_status, *by_problem]
    headers = ["文件", "工作表", "读取行数", *(STATUS_LABELS.get(s, s) for s in statuses)]
    headers += [f"{int(c)} {t}" for c, t in zip(found["code"], found["title"], strict=True)]
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

    headers = ["文件", "工作表", "行号", FIELD_LABELS["xm"], "状态", "结果代码", "说明"]
    columns = [
        arrow(column_of(rows, "source_file", n)),
        arrow(column_of(rows, "source_sheet", n)),
        _numbers(per_row(data.source_row)),
        arrow(column_of(rows, "xm", n)),
        text_array(relabel(per_row(data.status), STATUS_LABELS)),
        text_array(per_row(data.result_codes)),
        text_array(per_row(data.messages)),
    ]
    others = [f for f in FIELDS if f != "xm"]
    headers += [FIELD_LABELS[f] for f in others]
    columns += [arrow(column_of(rows, f, n)) for f in others]
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
    add_table_sheet(
        book, "明细", headers, columns, row_style=style, notes=notes, frozen_columns=DETAIL_FROZEN_COLUMNS
    )
    return book.close()


# -- errors.xlsx ------------------------------------------------------------------------------------

#: errors.xlsx 明细 and 提示: what a clerk needs first, then where it is among several files.
FAULT_HEADERS = ("行号", "列", "原值", "说明", "处理办法", "代码", "文件", "工作表")
_WRAPPED_FAULT_COLUMNS = (FAULT_HEADERS.index("说明"), FAULT_HEADERS.index("处理办法"))


def _fault_sheet(book: FastWorkbook, name: str, data: ReportData, faults: pd.DataFrame) -> None:
    notes = []
    if len(faults) > MAX_SHEET_ROWS - 4:
        notes.append(TRUNCATED_NOTE.format(shown=MAX_SHEET_ROWS - 4, total=len(faults)))
        faults = faults.iloc[: MAX_SHEET_ROWS - 4]
    lines = data.fault_lines(faults)
    columns = [_numbers(lines["row"].to_numpy())]
    columns += [
        text_array(lines[c].to_numpy(dtype=object)) for c in ("column", "original", "message", "hint")
    ]
    columns.append(_numbers(lines["code"].to_numpy()))
    columns += [text_array(lines[c].to_numpy(dtype=object)) for c in ("file", "sheet")]
    add_table_sheet(book, name, FAULT_HEADERS, columns, notes=notes, wrapped=_WRAPPED_FAULT_COLUMNS)


def _problem_counts(data: ReportData) -> tuple[list[str], list[pa.Array]]:
    table = problems(data.faults)
    headers = ["代码", "说明", "数量", "级别", "处理办法"]
    columns = [
        _numbers(table["code"].to_numpy(dtype=float)),
        text_array(table["title"].to_numpy(dtype=object)),
        _numbers(table["faults"].to_numpy(dtype=float)),
        text_array(np.where(table["warning"].to_numpy(dtype=bool), "提示", "错误").astype(object)),
        text_array(table["fix"].to_numpy(dtype=object)),
    ]
    return headers, columns


def write_errors_xlsx(path: Path, data: ReportData) -> Path:
    """Write errors.xlsx (汇总, 明细 for errors, 提示 for warnings); returns ``path``."""
    book = FastWorkbook(path, FORMATS)
    headers, columns = _problem_counts(data)
    notes = ["错误使本行不能提交；提示不影响提交，仅供核对。"]
    if not len(data.faults):
        notes = ["没有发现错误或提示。"]
    add_table_sheet(book, "汇总", headers, columns, notes=notes, wrapped=(headers.index("处理办法"),))
    _fault_sheet(book, "明细", data, data.errors)
    _fault_sheet(book, "提示", data, data.warnings)
    return book.close()
