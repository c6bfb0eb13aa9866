"""The end-of-run summary: one screen of Chinese for the clerk, and counts for summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.logs import printable
from pipeline.model import DRY_RUN_STATUSES, STATUS_LABELS, SUBMIT_STATUSES, Batch
from pipeline.reports.data import ReportData, Tally

#: Files listed one by one before the rest are only counted.
LISTED_FILES = 8

#: Problems (a result code, per field where the code covers several) listed in the summary.
TOP_CODES = 8


def summary_counts(batch: Batch) -> dict[str, Any]:
    """Counts of a run held in one batch, JSON-ready (a run fed in chunks has its :class:`Tally`'s).

    ``files``: one entry per file and sheet read (``file``, ``sheet``,
    ``rows``, ``by_status``); ``rows``: rows read; ``by_status``: rows per
    status; ``by_code``: rows per error result code (as a string key);
    ``warnings_by_code``: warnings per result code; ``problems``: per problem
    (code, field where the code has texts per field, warning or not) its
    title and its faults and rows.
    """
    tally = Tally()
    tally.add(ReportData(batch, submitted=False))
    return tally.counts()


def format_summary(counts: dict[str, Any] | Batch, paths: dict[str, Path], *, submitted: bool) -> str:
    """One screen of Chinese: rows read per file, rows per status, the main problems, the reports.

    A problem is named by its code and what it is about (``10110 联系电话不正确``).  ``counts``
    are a run's :func:`summary_counts` (or the batch holding the run).
    """
    if isinstance(counts, Batch):
        counts = summary_counts(counts)
    files = counts["files"]
    lines = [f"共读取 {len(files)} 个表、{counts['rows']:,} 行："]
    for entry in files[:LISTED_FILES]:
        where = f"{entry['file']}[{entry['sheet']}]" if entry["sheet"] else entry["file"]
        lines.append(f"  {printable(where)}  {entry['rows']:,} 行")
    if len(files) > LISTED_FILES:
        rest = sum(e["rows"] for e in files[LISTED_FILES:])
        lines.append(f"  另有 {len(files) - LISTED_FILES} 个表，共 {rest:,} 行")
    order = list(SUBMIT_STATUSES if submitted else DRY_RUN_STATUSES)
    by_status = counts["by_status"]
    order += [s for s in by_status if s not in order]
    shown = [f"{STATUS_LABELS.get(s, s)} {by_status.get(s, 0):,} 行" for s in order]
    lines.append("结果：" + "，".join(shown))
    found = [p for p in counts.get("problems", []) if not p["warning"]]
    if found:
        ranked = sorted(found, key=lambda p: (-p["rows"], p["code"], p["field"]))
        lines.append("主要问题（结果代码，行数）：")
        for problem in ranked[:TOP_CODES]:
            lines.append(f"  {int(problem['code'])} {problem['title']}  {int(problem['rows']):,} 行")
        if len(ranked) > TOP_CODES:
            lines.append(f"  另有 {len(ranked) - TOP_CODES} 种问题，见 errors.xlsx")
    warned = sum(counts["warnings_by_code"].values())
    if warned:
        lines.append(f"提示 {warned:,} 条（不影响提交），见 errors.xlsx 的“提示”表")
    if paths:
        lines.append("报告：")
        lines += [f"  {printable(str(path))}" for path in paths.values()]
    return "\n".join(lines)
