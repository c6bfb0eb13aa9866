"""The end-of-run summary: one screen of Chinese for the clerk, and counts for summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.model import DRY_RUN_STATUSES, STATUS_LABELS, SUBMIT_STATUSES, Batch
from pipeline.reports.data import ReportData, Tally
from schemas.result_codes import describe

#: Files listed one by one before the rest are only counted.
LISTED_FILES = 8

#: Result codes listed in the summary.
TOP_CODES = 8


def summary_counts(batch: Batch) -> dict[str, Any]:
    """Counts of a run held in one batch, JSON-ready (a run fed in chunks has its :class:`Tally`'s).

    ``files``: one entry per file and sheet read (``file``, ``sheet``,
    ``rows``, ``by_status``); ``rows``: rows read; ``by_status``: rows per
    status; ``by_code``: rows per error result code (as a string key);
    ``warnings_by_code``: warnings per result code.
    """
    tally = Tally()
    tally.add(ReportData(batch, submitted=False))
    return tally.counts()


def format_summary(counts: dict[str, Any] | Batch, paths: dict[str, Path], *, submitted: bool) -> str:
    """One screen of Chinese: rows read per file, rows per status, the main result codes, the reports.

    ``counts`` are a run's :func:`summary_counts` (or the batch holding the run).
    """
    if isinstance(counts, Batch):
        counts = summary_counts(counts)
    files = counts["files"]
    lines = [f"共读取 {len(files)} 个表、{counts['rows']:,} 行："]
    for entry in files[:LISTED_FILES]:
        where = f"{entry['file']}[{entry['sheet']}]" if entry["sheet"] else entry["file"]
        lines.append(f"  {where}  {entry['rows']:,} 行")
    if len(files) > LISTED_FILES:
        rest = sum(e["rows"] for e in files[LISTED_FILES:])
        lines.append(f"  另有 {len(files) - LISTED_FILES} 个表，共 {rest:,} 行")
    order = list(SUBMIT_STATUSES if submitted else DRY_RUN_STATUSES)
    by_status = counts["by_status"]
    order += [s for s in by_status if s not in order]
    shown = [f"{STATUS_LABELS.get(s, s)} {by_status.get(s, 0):,} 行" for s in order]
    lines.append("结果：" + "，".join(shown))
    by_code = sorted(counts["by_code"].items(), key=lambda item: (-item[1], int(item[0])))
    if by_code:
        lines.append("主要问题（结果代码，行数）：")
        for code, count in by_code[:TOP_CODES]:
            lines.append(f"  {code} {describe(int(code))}  {count:,} 行")
        if len(by_code) > TOP_CODES:
            lines.append(f"  另有 {len(by_code) - TOP_CODES} 种代码，见 errors.xlsx")
    warned = sum(counts["warnings_by_code"].values())
    if warned:
        lines.append(f"提示 {warned:,} 条（不影响提交），见 errors.xlsx 的“提示”表")
    if paths:
        lines.append("报告：")
        lines += [f"  {path}" for path in paths.values()]
    return "\n".join(lines)
