"""The end-of-run summary and the counts behind summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.model import FIELDS, INPUT_FIELDS, Batch, MappedTable, RawTable
from pipeline.reports.summary import format_summary, summary_counts
from schemas.result_codes import describe


def _table(path: str, sheet: str, n: int) -> MappedTable:
    raw = RawTable(path, sheet, 1, ["姓名"], [0], pd.DataFrame({"姓名": ["x"] * n}), np.arange(2, n + 2))
    return MappedTable(raw, pd.DataFrame({f: [""] * n for f in INPUT_FIELDS}), pd.DataFrame(index=range(n)))


def make_batch(statuses: list[str], faults: list[tuple[int, str, int, str]]) -> Batch:
    """Rows 0-2 from a.xlsx[名单], the rest from b.csv."""
    n = len(statuses)
    rows = pd.DataFrame({f: [""] * n for f in FIELDS})
    rows.insert(0, "source_row", [str(i + 2) for i in range(n)])
    rows.insert(0, "source_sheet", ["名单"] * 3 + [""] * (n - 3))
    rows.insert(0, "source_file", ["a.xlsx"] * 3 + ["b.csv"] * (n - 3))
    fault_frame = pd.DataFrame(
        [(r, f, c, s, "msg") for r, f, c, s in faults],
        columns=["row_id", "field", "code", "severity", "message"],
    )
    outcome = pd.DataFrame({"status": statuses, "result_code": [""] * n, "message": [""] * n})
    return Batch(
        tables=[_table("in/a.xlsx", "名单", 3), _table("in/b.csv", "", n - 3)],
        table_rows=[range(0, 3), range(3, n)],
        rows=rows,
        original=pd.DataFrame({f: [""] * n for f in INPUT_FIELDS}),
        extras=pd.DataFrame(index=range(n)),
        faults=fault_frame,
        outcome=outcome,
    )


DRY = make_batch(
    ["valid", "invalid", "invalid", "valid", "invalid"],
    [
        (1, "sfzhm", 10111, "error"),
        (1, "brdh", 10110, "error"),
        (2, "sfzhm", 10111, "error"),
        (4, "sfzhm", 10111, "error"),
        (4, "xm", 10114, "error"),
        (4, "yhkh", 10110, "error"),
        (4, "brdh", 10110, "error"),  # a second 10110 on the same row counts the row once
        (0, "sfzhm", 10111, "warning"),
    ],
)


def test_summary_counts_files_statuses_and_codes() -> None:
    counts = summary_counts(DRY)
    assert counts["rows"] == 5
    assert counts["files"] == [
        {"file": "a.xlsx", "sheet": "名单", "rows": 3, "by_status": {"invalid": 2, "valid": 1}},
        {"file": "b.csv", "sheet": "", "rows": 2, "by_status": {"invalid": 1, "valid": 1}},
    ]
    assert counts["by_status"] == {"invalid": 3, "valid": 2}
    assert counts["by_code"] == {"10110": 2, "10111": 3, "10114": 1}
    assert counts["warnings_by_code"] == {"10111": 1}
    assert json.loads(json.dumps(counts)) == counts


def test_format_summary_is_chinese_and_names_codes_and_reports() -> None:
    paths = {"results.xlsx": Path("/out/results.xlsx"), "errors.xlsx": Path("/out/errors.xlsx")}
    text = format_summary(DRY, paths, submitted=False)
    lines = text.splitlines()
    assert lines[0] == "共读取 2 个表、5 行："
    assert "  a.xlsx[名单]  3 行" in lines and "  b.csv  2 行" in lines
    assert "结果：校验通过 2 行，校验未通过 3 行" in lines
    codes = [line for line in lines if line.startswith("  101")]
    assert codes == [
        f"  10111 {describe(10111)}  3 行",
        "  10110 联系电话不正确  2 行",  # one code, several fields: named by the field
        f"  10110 {describe(10110)}  1 行",  # the bank card's 10110 has no title of its own
        f"  10114 {describe(10114)}  1 行",
    ]
    assert any("提示 1 条" in line for line in lines)
    assert lines[-2:] == ["  /out/results.xlsx", "  /out/errors.xlsx"]
    assert len(lines) < 25


def test_format_summary_of_a_submission_lists_submission_statuses() -> None:
    batch = make_batch(
        ["enrolled", "already_enrolled", "rejected", "failed", "invalid"], [(2, "", 10116, "error")]
    )
    text = format_summary(batch, {}, submitted=True)
    assert "结果：申领成功 1 行，已办理过 1 行，平台拒绝 1 行，发送失败 1 行，校验未通过 1 行" in text
    assert f"10116 {describe(10116)}  1 行" in text
    assert "报告" not in text
