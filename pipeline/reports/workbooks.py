"""results.xlsx and errors.xlsx: what the clerk reads after a run, in Chinese.

results.xlsx has 汇总 (per file and sheet: rows read, counts by status, rows
per result code, a total line) and 明细 (every row once, in input order, bad
rows filled red, rows with only warnings yellow).  errors.xlsx has 汇总 (per
code: the platform's description, count, how to fix), 明细 (one line per
error, by code then row, naming the clerk's own column and original value) and
提示 (the warnings, same layout).

A run's rows arrive batch by batch: :func:`detail_columns` and
:func:`fault_columns` build a batch's lines (kept on disk by
:mod:`pipeline.reports.spool` until the run ends), and the writers lay out
the sheets from the run's :class:`~pipeline.reports.data.Tally` and those
lines, read back as :class:`SheetFeed` values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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
from pipeline.reports.data import WARNING_HINT, ReportData, Tally, column_of, relabel_text
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


#: Rows a table sheet can hold below its header and above its notes.
SHEET_LINES = MAX_SHEET_ROWS - 4


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


def add_fed_sheet(book: FastWorkbook, name: str, feed: SheetFeed) -> None:
    """A table sheet written from ``feed``: frozen header, autofilter, fitted widths, notes below."""

    def blocks() -> Iterator[Block]:
        yield text_block([feed.headers], style=HEADER)
        first = 1
        for columns, style in feed.parts():
            if columns and len(columns[0]):
                yield Block(columns, first_row=first, row_style=style)
                first += len(columns[0])
        for i, note in enumerate(feed.notes):
            yield text_block([[note]], first_row=feed.height + 2 + i, style=NOTE)

    bottom = feed.height + (1 + len(feed.notes) if feed.notes else 0)
    dimension = f"A1:{_letter(max(len(feed.headers), 1) - 1)}{bottom + 1}"
    sheet = book.add_sheet(name, blocks(), dimension)
    sheet.freeze_panes(1, 0)
    sheet.autofilter(0, 0, max(feed.height, 1), max(len(feed.headers) - 1, 0))
    for col, width in enumerate(feed.widths):
        sheet.set_column(col, col, width)


def _letter(col: int) -> str:
    from xlsxwriter.utility import xl_col_to_name

    return str(xl_col_to_name(col))


def widths_of(columns: Sequence[pa.Array], headers: Sequence[str]) -> list[float]:
    """Fitted widths of a table sheet's columns (the widest of every part is kept by the caller)."""
    return display_widths(columns, headers, cap=60)


def header_widths(headers: Sequence[str]) -> list[float]:
    """Fitted widths of a table sheet's columns with no lines: the headers'."""
    return [min(60.0, len(h.encode()) / 2 + len(h) / 2 + 2) for h in headers]


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
    codes = sorted({code for counter in tally.rows_by_code for code, count in counter.items() if count})
    counts = [np.array(tally.rows, dtype=np.int64)]
    counts += [np.array([c[s] for c in tally.by_status], dtype=np.int64) for s in statuses]
    counts += [np.array([c[code] for c in tally.rows_by_code], dtype=np.int64) for code in codes]
    headers = ["文件", "工作表", "读取行数", *(STATUS_LABELS.get(s, s) for s in statuses)]
    headers += [f"{c} {describe(c)}" for c in codes]
    columns = [
        text_array([name for _, name, _ in tally.keys]),
        text_array([sheet for _, _, sheet in tally.keys]),
    ]
    columns += [pa.array(c, pa.int64()) for c in counts]
    totals: list[object] = ["合计", "", *(int(c.sum()) for c in counts)]
    return headers, columns, totals


def detail_style(data: ReportData) -> np.ndarray:
    """The fill of each row in 明细: red for a row that did not get through, yellow for warnings only."""
    return np.where(data.bad, BAD, np.where(data.has_warning, WARN, 0)).astype(np.int8)


def detail_headers(submitted: bool, extra_names: Sequence[str]) -> list[str]:
    """The headers of 明细: where the row is, status, messages, the fields, card ids, the clerk's extras."""
    headers = ["文件", "工作表", "行号", "状态", "结果代码", "说明"]
    headers += [FIELD_LABELS[f] for f in FIELDS]
    if submitted:
        headers += list(CARD_ID_LABELS.values())
    return headers + list(extra_names)


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
        _numbers(per_row(data.source_row)),
        arrow(relabel_text(data.status_text, STATUS_LABELS)),
        arrow(data.result_code_text),
        arrow(data.message_text),
    ]
    columns += [arrow(column_of(rows, f, n)) for f in FIELDS]
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
    add_fed_sheet(book, "明细", detail)
    return book.close()


# -- errors.xlsx ------------------------------------------------------------------------------------

FAULT_HEADERS = ("代码", "文件", "工作表", "行号", "列", "原值", "说明", "处理办法")


def fault_columns(data: ReportData, faults: pd.DataFrame) -> list[pa.Array]:
    """The errors.xlsx lines of ``faults`` (a batch's, cleaned by :class:`ReportData`), as columns."""
    lines = data.fault_lines(faults)
    columns = [_numbers(lines["code"].to_numpy())]
    columns += [text_array(lines[c].to_numpy(dtype=object)) for c in ("file", "sheet")]
    columns.append(_numbers(lines["row"].to_numpy()))
    columns += [
        text_array(lines[c].to_numpy(dtype=object)) for c in ("column", "original", "message", "hint")
    ]
    return columns


def truncated_note(shown: int, total: int) -> list[str]:
    """The note under a fault sheet that holds only the first ``shown`` of ``total`` lines."""
    return [TRUNCATED_NOTE.format(shown=shown, total=total)] if shown < total else []


def _code_counts(tally: Tally) -> tuple[list[str], list[pa.Array]]:
    parts = [(code, count, "错误") for code, count in sorted(tally.errors_by_code.items()) if count]
    parts += [(code, count, "提示") for code, count in sorted(tally.warnings_by_code.items()) if count]
    headers = ["代码", "说明", "数量", "级别", "处理办法"]
    columns = [
        _numbers(np.array([p[0] for p in parts], dtype=float)),
        text_array([describe(p[0]) for p in parts]),
        _numbers(np.array([p[1] for p in parts], dtype=float)),
        text_array([p[2] for p in parts]),
        text_array([hint(p[0]) if p[2] == "错误" else WARNING_HINT for p in parts]),
    ]
    return headers, columns


def write_errors_xlsx(path: Path, tally: Tally, errors: SheetFeed, warnings: SheetFeed) -> Path:
    """Write errors.xlsx (汇总 from the run's counts, 明细 and 提示 from the feeds); returns ``path``."""
    book = FastWorkbook(path, FORMATS)
    headers, columns = _code_counts(tally)
    notes = ["错误使本行不能提交；提示不影响提交，仅供核对。"]
    if not tally.faults:
        notes = ["没有发现错误或提示。"]
    add_table_sheet(book, "汇总", headers, columns, notes=notes)
    add_fed_sheet(book, "明细", errors)
    add_fed_sheet(book, "提示", warnings)
    return book.close()


def fed(headers: Sequence[str], parts: Iterable[Lines], height: int, widths: Sequence[float]) -> SheetFeed:
    """A :class:`SheetFeed` of lines already at hand."""
    listed = list(parts)
    return SheetFeed(list(headers), height, list(widths), lambda: iter(listed))
