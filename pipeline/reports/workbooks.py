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

A run's rows arrive batch by batch: :func:`detail_columns` and
:func:`fault_columns` build a batch's lines (kept on disk by
:mod:`pipeline.reports.spool` until the run ends), and the writers lay out
the sheets from the run's :class:`~pipeline.reports.data.Tally` and those
lines, read back as :class:`SheetFeed` values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.messages import fault_fix, fault_title
from pipeline.model import (
    DRY_RUN_STATUSES,
    FIELD_LABELS,
    FIELDS,
    STATUS_FAILED,
    STATUS_LABELS,
    STATUS_VALID,
    SUBMIT_STATUSES,
)
from pipeline.reports.data import ReportData, Tally, column_of, problem_keys, relabel_text, whole_numbers

__all__ = ["problem_keys", "problems", "write_errors_xlsx", "write_results_xlsx"]
from pipeline.reports.xlsx.writer import MAX_SHEET_ROWS, Block, FastWorkbook, display_widths, text_block
from pipeline.text.arrow import text_array

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

#: Lines a table sheet can hold below its header and above its notes.
SHEET_LINES = MAX_SHEET_ROWS - 4


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
    _lay_out(sheet, height, headers, widths_of(columns, headers), frozen_columns, wrapped)


def _lay_out(
    sheet: Any,
    height: int,
    headers: Sequence[str],
    widths: Sequence[float],
    frozen: int,
    wrapped: Sequence[int],
) -> None:
    """Frozen header (and ``frozen`` columns), autofilter, widths, landscape printing one page wide."""
    sheet.freeze_panes(1, frozen)
    sheet.autofilter(0, 0, max(height, 1), max(len(headers) - 1, 0))
    for col, width in enumerate(widths):
        sheet.set_column(col, col, WRAPPED_WIDTH if col in wrapped else width)
    sheet.set_landscape()
    sheet.set_paper(9)  # A4
    sheet.fit_to_pages(1, 0)
    sheet.repeat_rows(0)


def widths_of(columns: Sequence[pa.Array], headers: Sequence[str]) -> list[float]:
    """Fitted widths of a table sheet's columns: text fitted to its widest value, numbers to theirs.

    For a sheet written part by part, the caller keeps the widest of every part.
    """
    widths = display_widths(columns, headers, cap=60)
    for col, column in enumerate(columns):
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            widths[col] = _number_width(column, headers[col])
    return widths


def header_widths(headers: Sequence[str]) -> list[float]:
    """Fitted widths of a table sheet's columns with no lines: the headers'."""
    return [min(60.0, len(h.encode()) / 2 + len(h) / 2 + 2) for h in headers]


#: One part of a long sheet: its columns and (optional) style per row.
Lines = tuple[list[pa.Array], np.ndarray | None]


@dataclass
class SheetFeed:
    """A table sheet too long to hold in memory: its lines come back part by part, in order.

    ``height`` lines in all (``parts()`` may be called once), ``widths`` of the
    columns fitted to every line, ``notes`` below the table.
    """

    headers: list[str]
    height: int
    widths: list[float]
    parts: Callable[[], Iterator[Lines]]
    notes: list[str] = field(default_factory=list)


def add_fed_sheet(
    book: FastWorkbook, name: str, feed: SheetFeed, *, frozen_columns: int = 0, wrapped: Sequence[int] = ()
) -> None:
    """A table sheet written from ``feed``, laid out as :func:`add_table_sheet` lays one out."""

    def blocks() -> Iterator[Block]:
        yield text_block([feed.headers], style=HEADER)
        first = 1
        for columns, style in feed.parts():
            if columns and len(columns[0]):
                wrap = {col: np.full(len(columns[0]), WRAP, dtype=np.int8) for col in wrapped}
                yield Block(columns, first_row=first, row_style=style, cell_styles=wrap)
                first += len(columns[0])
        for i, note in enumerate(feed.notes):
            yield text_block([[note]], first_row=feed.height + 2 + i, style=NOTE)

    bottom = feed.height + (1 + len(feed.notes) if feed.notes else 0)
    dimension = f"A1:{_letter(max(len(feed.headers), 1) - 1)}{bottom + 1}"
    sheet = book.add_sheet(name, blocks(), dimension)
    _lay_out(sheet, feed.height, feed.headers, feed.widths, frozen_columns, wrapped)


def _letter(col: int) -> str:
    from xlsxwriter.utility import xl_col_to_name

    return str(xl_col_to_name(col))


def problems(tally: Tally, *, warnings: bool = True) -> pd.DataFrame:
    """One line per problem of the run: code, field, title, fix, faults and rows; errors first, by code.

    A problem is a result code, with the field too where the code has texts
    per field (:func:`~pipeline.reports.data.problem_keys`); ``warnings``:
    include the warnings' problems.
    """
    keys = [key for key in sorted(tally.problems) if warnings or not key[0]]
    table = pd.DataFrame(
        {
            "warning": [bool(w) for w, _, _ in keys],
            "code": [int(c) for _, c, _ in keys],
            "field": [str(f) for _, _, f in keys],
            "faults": [tally.problems[key][0] for key in keys],
            "rows": [tally.problems[key][1] for key in keys],
        }
    )
    table["title"] = [
        fault_title(c, f, warning=w)
        for c, f, w in zip(table["code"], table["field"], table["warning"], strict=True)
    ]
    table["fix"] = [
        fault_fix(c, f, warning=w)
        for c, f, w in zip(table["code"], table["field"], table["warning"], strict=True)
    ]
    return table


# -- results.xlsx -----------------------------------------------------------------------------------


def _statuses(tally: Tally, submitted: bool) -> list[str]:
    listed = list(SUBMIT_STATUSES if submitted else DRY_RUN_STATUSES)
    present = tally.statuses_present
    listed += [s for s in present if s not in listed and s != STATUS_VALID]
    if STATUS_VALID in present and STATUS_VALID not in listed:
        listed.insert(0, STATUS_VALID)
    return listed


def _overview(tally: Tally, submitted: bool) -> tuple[list[str], list[pa.Array], list[object]]:
    statuses = _statuses(tally, submitted)
    found = problems(tally, warnings=False)
    counts = [np.array(tally.rows, dtype=np.int64)]
    counts += [np.array([c[s] for c in tally.by_status], dtype=np.int64) for s in statuses]
    counts += [
        np.array([c[(int(code), str(f))] for c in tally.rows_by_problem], dtype=np.int64)
        for code, f in zip(found["code"], found["field"], strict=True)
    ]
    headers = ["文件", "工作表", "读取行数", *(STATUS_LABELS.get(s, s) for s in statuses)]
    headers += [f"{int(c)} {t}" for c, t in zip(found["code"], found["title"], strict=True)]
    columns = [
        text_array([name for _, name, _ in tally.keys]),
        text_array([sheet for _, _, sheet in tally.keys]),
    ]
    columns += [whole_numbers(c) for c in counts]
    totals: list[object] = ["合计", "", *(int(c.sum()) for c in counts)]
    return headers, columns, totals


def detail_headers(submitted: bool, extra_names: Sequence[str]) -> list[str]:
    """The headers of 明细: where the row is, name, status, messages, the fields, card ids, the extras."""
    headers = ["文件", "工作表", "行号", FIELD_LABELS["xm"], "状态", "结果代码", "说明"]
    headers += [FIELD_LABELS[f] for f in FIELDS if f != "xm"]
    if submitted:
        headers += list(CARD_ID_LABELS.values())
    return headers + list(extra_names)


def detail_style(data: ReportData) -> np.ndarray:
    """The fill of each row in 明细: red for a row that did not get through, yellow for warnings only."""
    return np.where(data.bad, BAD, np.where(data.has_warning, WARN, 0)).astype(np.int8)


def detail_columns(data: ReportData, keep: np.ndarray | None = None) -> tuple[list[str], list[pa.Array]]:
    """Headers and columns of 明细 for a batch: every row, or only the rows ``keep`` (picked first)."""
    rows, n = data.rows, data.n
    taken = None if keep is None else pa.array(keep)

    def per_row(values: np.ndarray) -> np.ndarray:
        return values if keep is None else values[keep]

    def arrow(values: pa.Array) -> pa.Array:
        return values if taken is None else values.take(taken)

    headers = detail_headers(data.submitted, [name for name, _ in data.extras])
    columns = [
        arrow(column_of(rows, "source_file", n)),
        arrow(column_of(rows, "source_sheet", n)),
        whole_numbers(per_row(data.source_row)),
        arrow(column_of(rows, "xm", n)),
        relabel_text(arrow(data.status_text), STATUS_LABELS),
        arrow(data.result_code_text),
        arrow(data.message_text),
    ]
    columns += [arrow(column_of(rows, f, n)) for f in FIELDS if f != "xm"]
    if data.submitted:
        columns += [arrow(column_of(data.outcome, f, n)) for f in CARD_ID_LABELS]
    columns += [arrow(values) for _, values in data.extras]
    return headers, columns


def detail_cut(total_rows: int) -> bool:
    """Whether 明细 of a run of ``total_rows`` rows holds only the rows that did not get through."""
    return total_rows > DETAIL_ROW_LIMIT


def write_results_xlsx(path: Path, tally: Tally, detail: SheetFeed, *, submitted: bool) -> Path:
    """Write results.xlsx (汇总 from the run's counts, 明细 from ``detail``); returns ``path``.

    Above :data:`DETAIL_ROW_LIMIT` rows, ``detail`` holds only the rows that
    did not get through (as many as the sheet holds) and both sheets say so.
    """
    book = FastWorkbook(path, FORMATS)
    notes: list[str] = []
    if detail_cut(tally.n):
        notes.append(FULL_CSV_NOTE.format(shown=detail.height, total=tally.n))
    overview_headers, overview_columns, totals = _overview(tally, submitted)
    guide = "各结果代码列为出现该代码的行数；每条错误的位置和处理办法见 errors.xlsx。"
    add_table_sheet(book, "汇总", overview_headers, overview_columns, totals=totals, notes=[*notes, guide])
    detail.notes = notes
    add_fed_sheet(book, "明细", detail, frozen_columns=DETAIL_FROZEN_COLUMNS)
    return book.close()


# -- errors.xlsx ------------------------------------------------------------------------------------

#: errors.xlsx 明细 and 提示: what a clerk needs first, then where it is among several files.
FAULT_HEADERS = ("行号", "列", "原值", "说明", "处理办法", "代码", "文件", "工作表")
_WRAPPED_FAULT_COLUMNS = (FAULT_HEADERS.index("说明"), FAULT_HEADERS.index("处理办法"))


def fault_columns(data: ReportData, faults: pd.DataFrame) -> list[pa.Array]:
    """The errors.xlsx lines of ``faults`` (a batch's, cleaned by :class:`ReportData`), as columns."""
    lines = data.fault_lines(faults)
    return [lines[name] for name in ("row", "column", "original", "message", "hint", "code", "file", "sheet")]


def truncated_note(shown: int, total: int) -> list[str]:
    """The note under a fault sheet that holds only the first ``shown`` of ``total`` lines."""
    return [TRUNCATED_NOTE.format(shown=shown, total=total)] if shown < total else []


def _problem_counts(tally: Tally) -> tuple[list[str], list[pa.Array]]:
    table = problems(tally)
    headers = ["代码", "说明", "数量", "级别", "处理办法"]
    columns = [
        whole_numbers(table["code"].to_numpy(dtype=float)),
        text_array(table["title"].to_numpy(dtype=object)),
        whole_numbers(table["faults"].to_numpy(dtype=float)),
        text_array(np.where(table["warning"].to_numpy(dtype=bool), "提示", "错误").astype(object)),
        text_array(table["fix"].to_numpy(dtype=object)),
    ]
    return headers, columns


def write_errors_xlsx(path: Path, tally: Tally, errors: SheetFeed, warnings: SheetFeed) -> Path:
    """Write errors.xlsx (汇总 from the run's counts, 明细 and 提示 from the feeds); returns ``path``."""
    book = FastWorkbook(path, FORMATS)
    headers, columns = _problem_counts(tally)
    notes = ["错误使本行不能提交；提示不影响提交，仅供核对。"]
    if not tally.faults:
        notes = ["没有发现错误或提示。"]
    unsent = sum(counter.get(STATUS_FAILED, 0) for counter in tally.by_status)
    if unsent:  # not a fault of their data, so in no sheet here: said, lest "no errors" read as "all done"
        notes.append(
            # What to do about them depends on the command that sent them (the nightly run does not send
            # them again): each row's message in results.xlsx says it, as true of that command.
            f"另有 {unsent} 行发送失败或发送结果未知（不是数据的问题，不列在本表中），"
            "如何重新发送见 results.xlsx 中这些行的说明"
        )
    add_table_sheet(book, "汇总", headers, columns, notes=notes, wrapped=(headers.index("处理办法"),))
    add_fed_sheet(book, "明细", errors, wrapped=_WRAPPED_FAULT_COLUMNS)
    add_fed_sheet(book, "提示", warnings, wrapped=_WRAPPED_FAULT_COLUMNS)
    return book.close()
