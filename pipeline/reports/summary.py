"""The end-of-run summary: one screen of Chinese for the clerk, and counts for summary.json."""

from __future__ import annotations

from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.model import DRY_RUN_STATUSES, STATUS_LABELS, SUBMIT_STATUSES, Batch
from pipeline.reports.data import ReportData
from pipeline.reports.workbooks import problems, sections

#: Files listed one by one before the rest are only counted.
LISTED_FILES = 8

#: Problems (a result code, per field where the code covers several) listed in the summary.
TOP_CODES = 8


def _tally(values: Any) -> dict[str, int]:
    """Occurrences of each value, by hashing (sorting a million objects costs seconds)."""
    counts = pd.Series(values, dtype=object).value_counts(sort=False).sort_index()
    return {str(value): int(count) for value, count in counts.items()}


def _present(names: list[str], counts: np.ndarray) -> dict[str, int]:
    """The non-zero ``counts`` keyed by name, in name order."""
    return {name: int(counts[i]) for i, name in sorted(enumerate(names), key=itemgetter(1)) if counts[i]}


def _counts(data: ReportData) -> dict[str, Any]:
    labels, section = sections(data)
    distinct = data.errors.drop_duplicates(["pos", "code"])
    # One hashing pass over the statuses; per-file counts are then integer arithmetic.
    status_code, uniques = pd.factorize(data.status)
    statuses = [str(s) for s in uniques]
    width = max(len(statuses), 1)
    per_file = np.bincount(
        np.asarray(section, dtype=np.int64) * width + status_code, minlength=len(labels) * width
    ).reshape(len(labels), width)
    files = [
        {
            "file": name,
            "sheet": sheet,
            "rows": int(per_file[i].sum()),
            "by_status": _present(statuses, per_file[i]),
        }
        for i, (name, sheet) in enumerate(labels)
    ]
    return {
        "files": files,
        "rows": data.n,
        "by_status": _present(statuses, per_file.sum(axis=0)),
        "by_code": {str(int(c)): k for c, k in _tally(distinct["code"].astype("int64")).items()},
        "warnings_by_code": {
            str(int(c)): k for c, k in _tally(data.warnings["code"].astype("int64")).items()
        },
    }


def summary_counts(batch: Batch) -> dict[str, Any]:
    """Counts of a run, JSON-ready.

    ``files``: one entry per file and sheet read (``file``, ``sheet``,
    ``rows``, ``by_status``); ``rows``: rows read; ``by_status``: rows per
    status; ``by_code``: rows per error result code (as a string key);
    ``warnings_by_code``: warnings per result code.
    """
    return _counts(ReportData(batch, submitted=False))


def format_summary(batch: Batch, paths: dict[str, Path], *, submitted: bool) -> str:
    """One screen of Chinese: rows read per file, rows per status, the main problems, the reports.

    A problem is named by its code and what it is about (``10110 联系电话不正确``).
    """
    data = ReportData(batch, submitted)
    counts = _counts(data)
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
    found = problems(data.errors)
    if len(found):
        ranked = found.assign(order=-found["rows"]).sort_values(["order", "code", "field"], kind="stable")
        lines.append("主要问题（结果代码，行数）：")
        for code, title, rows in ranked[["code", "title", "rows"]].head(TOP_CODES).itertuples(index=False):
            lines.append(f"  {int(code)} {title}  {int(rows):,} 行")
        if len(ranked) > TOP_CODES:
            lines.append(f"  另有 {len(ranked) - TOP_CODES} 种问题，见 errors.xlsx")
    warned = sum(counts["warnings_by_code"].values())
    if warned:
        lines.append(f"提示 {warned:,} 条（不影响提交），见 errors.xlsx 的“提示”表")
    if paths:
        lines.append("报告：")
        lines += [f"  {path}" for path in paths.values()]
    return "\n".join(lines)
