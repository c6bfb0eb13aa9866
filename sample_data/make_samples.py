"""Regenerate the sample registers and their expected results (synthetic people only).

    .venv/bin/python sample_data/make_samples.py

Writes, beside this script:

* ``社区居民登记表.xlsx`` — 50 rows as a community health centre keeps them: a
  merged title row, a blank row, Chinese headers with ``序号`` and ``备注``,
  codes given as names, birth dates partly real Excel dates and partly text,
  the ID column stored as text; eight faulty rows of different kinds and one
  15-digit ID that is upgraded with a warning;
* ``居民名单_GBK.csv`` — 20 rows, GBK, a title line, other header names
  (身份证号码 / 手机号码 / 学历 / 医保类型 / 现住址), two faulty rows;
* ``expected.csv`` — per data row: file, source_row, status, result_codes, kind.

The output is deterministic (fixed seeds and a fixed "today").
"""

from __future__ import annotations

import csv
import sys
from datetime import date
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import clerk, synth  # noqa: E402

TODAY = date(2026, 11, 1)
XLSX_NAME = "社区居民登记表.xlsx"
XLSX_TITLE = "XX社区卫生服务中心 电子健康卡申领登记表"
XLSX_FIRST_ROW = 4  # title row, blank row, header row above the data
CSV_NAME = "居民名单_GBK.csv"
CSV_TITLE = "XX社区居委会 居民名单（2026年11月）"
CSV_FIRST_LINE = 3  # title line, header line above the data

#: 0-based data row -> fault kind, per file.
XLSX_FAULTS = {
    2: "bad_check", 6: "empty_name", 11: "unknown_ethnicity", 17: "gender_mismatch", 23: "bad_phone",
    29: "duplicate_id", 34: "bad_payment", 40: "id_as_number", 45: "id15",
}  # fmt: skip
CSV_FAULTS = {4: "birth_mismatch", 13: "bad_education"}

#: The wrong values shown in the samples (clearer than random ones).
XLSX_VALUES = {(6, "xm"): "", (11, "mzdm"): "穿青人", (23, "brdh"): "1381234567", (34, "ylfyzffs"): "社保卡"}
CSV_VALUES = {(13, "xldm"): "幼儿园"}


def _make(
    rows: int, seed: int, faults: dict[int, str], values: dict[tuple[int, str], str]
) -> synth.Synthetic:
    people = synth.generate(rows, seed, placements=faults, today=TODAY)
    for (row, field), value in values.items():
        people.set(row, field, value)
    return people


def _expected(file: str, people: synth.Synthetic, first_row: int) -> list[dict[str, object]]:
    kinds = dict(zip(people.manifest["row"].tolist(), people.manifest["kind"].tolist(), strict=True))
    codes = people.expected_codes
    return [
        {"file": file, "source_row": first_row + row, "status": "invalid" if codes[row] else "valid",
         "result_codes": codes[row], "kind": kinds.get(row, "")}
        for row in range(len(people))
    ]  # fmt: skip


def main() -> int:
    """Write both registers and expected.csv."""
    register = _make(50, 2026, XLSX_FAULTS, XLSX_VALUES)
    duplicate = register.manifest.loc[register.manifest["kind"] == "duplicate_id"].iloc[0]
    for field in register.columns:  # the same person entered twice
        register.set(int(duplicate["row"]), field, str(register.columns[field][int(duplicate["of_row"])]))
    listing = _make(20, 1107, CSV_FAULTS, CSV_VALUES)
    overlap = set(register.columns["sfzhm"].tolist()) & set(listing.columns["sfzhm"].tolist())
    if overlap:
        raise SystemExit("the two samples share an ID number; change a seed")

    table = clerk.to_clerk(register.columns, "standard", seed=2026)
    date_cells = np.random.default_rng(7).random(len(register)) < 0.5
    clerk.write_xlsx(table, HERE / XLSX_NAME, title=XLSX_TITLE, date_cells=date_cells)
    clerk.write_csv(
        clerk.to_clerk(listing.columns, "alternate", seed=1107),
        HERE / CSV_NAME,
        encoding="gbk",
        title=CSV_TITLE,
    )

    rows = _expected(XLSX_NAME, register, XLSX_FIRST_ROW) + _expected(CSV_NAME, listing, CSV_FIRST_LINE)
    with open(HERE / "expected.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "source_row", "status", "result_codes", "kind"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {XLSX_NAME} ({len(register)} rows), {CSV_NAME} ({len(listing)} rows), expected.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
