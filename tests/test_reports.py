"""Reports: results.xlsx, errors.xlsx, results.csv and the annotated copies, from hand-built batches."""

from __future__ import annotations

import csv
import io
import re
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import python_calamine
import xlsxwriter

from pipeline.errors import EhcError
from pipeline.model import FIELDS, INPUT_FIELDS, SOURCE_COLUMNS, Batch, MappedTable, RawTable
from pipeline.reports import annotate
from pipeline.reports import workbooks as report_xlsx
from pipeline.reports.spool import PART_LINES, Cancelled, DetailLines, DetailSpool, LineSpool
from pipeline.reports.write import write_reports
from pipeline.reports.xlsx import comments as xlsx_comments
from pipeline.reports.xlsx import markup as xlsx_markup
from pipeline.reports.xlsx import writer as xlsx_writer
from pipeline.text.arrow import text_array
from schemas.result_codes import describe, field_hint, hint

HEADERS = ["序号", "姓名", "身份证号", "联系电话", "民族", "医保类型", "备注"]
FIELD_HEADERS = {
    "xm": "姓名",
    "sfzhm": "身份证号",
    "brdh": "联系电话",
    "mzdm": "民族",
    "ylfyzffs": "医保类型",
}
TITLE = "2026年电子健康卡申领名单"
# Sheet rows 4..8 (title on row 1, a blank row 2, header on row 3).
PEOPLE: list[list[str | float]] = [
    ["1", "张三", "420123196205184516", "13900000001", "汉族", "职工医保", "=SUM(A1)"],
    ["2", "李四", 4.20123196205184e17, "13900000002", "汉族", "职工医保", ""],
    ["3", "王五", "420123196205184516", "12", "01", "居民医保", "+86 备注"],
    ["4", "@赵六", "110101199003070011", "13900000004", "回族", "新农合", "-1"],
]
CSV_PEOPLE = [["", "110101199003070012", "13900000005"], ["钱七", "110101199003070013", "13900000006"]]


def _write_register(path: Path) -> None:
    book = xlsxwriter.Workbook(path, {"strings_to_formulas": False})
    sheet = book.add_worksheet("名单")
    sheet.merge_range(0, 0, 0, 6, TITLE)
    sheet.write_row(2, 0, HEADERS)
    for offset, person in enumerate(PEOPLE):
        for col, value in enumerate(person):
            if isinstance(value, float):
                sheet.write_number(3 + offset, col, value)
            else:
                sheet.write_string(3 + offset, col, value)
    book.close()


def _text(value: object) -> str:
    return "4.20123196205184E+17" if isinstance(value, float) else str(value)


def _fields(values: dict[str, list[str]], n: int) -> pd.DataFrame:
    return pd.DataFrame({f: values.get(f, [""] * n) for f in INPUT_FIELDS})


def make_batch(tmp_path: Path, *, submitted: bool = False) -> Batch:
    """Two tables (a workbook with a title row and a CSV), six rows, faults of every kind."""
    register = tmp_path / "register.xlsx"
    _write_register(register)
    texts = [[_text(v) for v in person] for person in PEOPLE]
    raw_xlsx = RawTable(
        path=str(register),
        sheet="名单",
        header_row=3,
        headers=HEADERS,
        column_positions=list(range(7)),
        data=pd.DataFrame(texts, columns=HEADERS),
        source_row=np.array([4, 5, 6, 7]),
    )
    columns = {f: [t[HEADERS.index(h)] for t in texts] for f, h in FIELD_HEADERS.items()}
    xlsx_table = MappedTable(
        raw_xlsx, _fields(columns, 4), pd.DataFrame({"备注": [t[6] for t in texts]}), FIELD_HEADERS
    )
    csv_headers = ["姓名", "公民身份号码", "手机号码"]
    raw_csv = RawTable(
        path=str(tmp_path / "more.csv"),
        sheet="",
        header_row=1,
        headers=csv_headers,
        column_positions=[0, 1, 2],
        data=pd.DataFrame(CSV_PEOPLE, columns=csv_headers),
        source_row=np.array([2, 3]),
    )
    csv_fields = {
        "xm": [r[0] for r in CSV_PEOPLE],
        "sfzhm": [r[1] for r in CSV_PEOPLE],
        "brdh": [r[2] for r in CSV_PEOPLE],
    }
    csv_headers_map = {"xm": "姓名", "sfzhm": "公民身份号码", "brdh": "手机号码"}
    csv_table = MappedTable(raw_csv, _fields(csv_fields, 2), pd.DataFrame(index=range(2)), csv_headers_map)

    original = pd.concat([xlsx_table.fields, csv_table.fields], ignore_index=True)
    rows = original[list(FIELDS)].copy()
    rows["mzdm"] = ["01", "01", "01", "03", "", ""]
    rows.insert(0, "source_row", ["4", "5", "6", "7", "2", "3"])
    rows.insert(0, "source_sheet", ["名单"] * 4 + [""] * 2)
    rows.insert(0, "source_file", ["register.xlsx"] * 4 + ["more.csv"] * 2)
    extras = pd.DataFrame({"备注": [t[6] for t in texts] + ["", ""]})
    faults = pd.DataFrame(
        [
            (2, "brdh", 10110, "error", "联系电话不是手机号或带区号的座机号"),
            (1, "sfzhm", 10111, "error", "身份证号码被 Excel 存成了数字，后几位已丢失"),
            (4, "xm", 10114, "error", "姓名为空"),
            (0, "sfzhm", 10111, "warning", "15 位身份证号已升级为 18 位"),
            (1, "csrq", 10124, "error", "出生日期无法从身份证号得出"),
            (2, "sfzhm", 10115, "error", "与第 4 行身份证号重复"),
        ],
        columns=["row_id", "field", "code", "severity", "message"],
    )
    status = ["valid", "invalid", "invalid", "valid", "invalid", "valid"]
    codes = ["", "10111;10124", "10110;10115", "", "10114", ""]
    outcome = pd.DataFrame({"status": status, "result_code": codes, "message": [""] * 6})
    outcome["ehealthCardId"] = ""
    outcome["virtualCardNum"] = ""
    if submitted:
        outcome.loc[0, ["status", "ehealthCardId", "virtualCardNum"]] = ["enrolled", "AB" * 32, "1" * 20]
        outcome.loc[3, ["status", "result_code", "message"]] = ["rejected", "10116", "卡号已经存在"]
        outcome.loc[5, ["status", "message"]] = ["failed", "平台无应答（已重试 5 次）"]
        rejection = pd.DataFrame([(3, "", 10116, "error", "卡号已经存在")], columns=faults.columns)
        faults = pd.concat([faults, rejection], ignore_index=True)
    return Batch(
        tables=[xlsx_table, csv_table],
        table_rows=[range(0, 4), range(4, 6)],
        rows=rows,
        original=original,
        extras=extras,
        faults=faults,
        outcome=outcome,
    )


def _sheet_rows(path: Path, sheet: str) -> list[tuple]:
    book = openpyxl.load_workbook(path)
    return [tuple(row) for row in book[sheet].iter_rows(values_only=True)]


@pytest.fixture
def dry_run(tmp_path: Path) -> tuple[Batch, dict[str, Path]]:
    batch = make_batch(tmp_path)
    return batch, write_reports(tmp_path / "out", batch)


def test_write_reports_returns_every_file(dry_run, tmp_path: Path) -> None:
    _, paths = dry_run
    assert list(paths) == [
        "results.xlsx", "errors.xlsx", "results.csv", "annotated_register.xlsx", "annotated_more.xlsx",
    ]  # fmt: skip
    assert all(p.exists() and p.parent == tmp_path / "out" for p in paths.values())
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind


def test_detail_has_every_row_once_in_input_order(dry_run) -> None:
    _, paths = dry_run
    rows = _sheet_rows(paths["results.xlsx"], "明细")
    header = rows[0]
    assert header[:7] == ("文件", "工作表", "行号", "姓名", "状态", "结果代码", "说明")
    assert header[7:9] == ("性别", "民族") and header[-1] == "备注"
    body = rows[1:]
    assert [(r[0], r[2]) for r in body] == [("register.xlsx", n) for n in (4, 5, 6, 7)] + [
        ("more.csv", 2),
        ("more.csv", 3),
    ]
    assert [r[4] for r in body] == [
        "校验通过",
        "校验未通过",
        "校验未通过",
        "校验通过",
        "校验未通过",
        "校验通过",
    ]
    assert body[1][5] == "10111;10124" and body[1][3] == "李四"
    assert "[10111] 身份证号码被 Excel 存成了数字" in body[1][6] and "[10124]" in body[1][6]
    assert body[0][6] == "[提示 10111] 15 位身份证号已升级为 18 位"
    assert body[2][header.index("民族")] == "01"


def test_detail_sheet_is_frozen_filtered_and_highlights_invalid_rows(dry_run) -> None:
    _, paths = dry_run
    sheet = openpyxl.load_workbook(paths["results.xlsx"])["明细"]
    assert sheet.freeze_panes == "F2"  # the header, and 文件 工作表 行号 姓名 状态
    assert sheet.auto_filter.ref == f"A1:{sheet.cell(1, sheet.max_column).column_letter}7"
    assert sheet.column_dimensions["G"].width > sheet.column_dimensions["C"].width
    assert sheet.page_setup.orientation == "landscape" and sheet.sheet_properties.pageSetUpPr.fitToPage
    assert sheet.page_setup.fitToWidth in (1, None) and sheet.page_setup.fitToHeight == 0  # 1 is the default
    assert sheet.print_title_rows == "$1:$1"
    invalid, valid, warned = sheet["A3"], sheet["A5"], sheet["A2"]
    assert invalid.fill.fgColor.rgb == "FFFFC7CE"
    assert sheet["Z3"].fill.fgColor.rgb == "FFFFC7CE"  # empty cells of the row too
    assert valid.fill.fill_type is None
    assert warned.fill.fgColor.rgb == "FFFFEB9C"


def test_overview_counts_per_file_and_code(dry_run) -> None:
    _, paths = dry_run
    rows = _sheet_rows(paths["results.xlsx"], "汇总")
    header = rows[0]
    assert header[:5] == ("文件", "工作表", "读取行数", "校验通过", "校验未通过")
    assert header[5:] == (
        "10110 联系电话不正确",
        *(f"{c} {describe(c)}" for c in (10111, 10114, 10115, 10124)),
    )
    assert rows[1] == ("register.xlsx", "名单", 4, 2, 2, 1, 1, 0, 1, 1)
    assert rows[2] == ("more.csv", None, 2, 1, 1, 0, 0, 1, 0, 0)
    assert rows[3] == ("合计", None, 6, 3, 3, 1, 1, 1, 1, 1)


def test_results_csv_has_bom_stable_columns_and_every_row(dry_run) -> None:
    batch, paths = dry_run
    raw = paths["results.csv"].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    records = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    expected = [
        *SOURCE_COLUMNS,
        "status",
        "result_code",
        "message",
        *FIELDS,
        "ehealthCardId",
        "virtualCardNum",
        "备注",
    ]
    assert records[0] == expected
    body = records[1:]
    assert len(body) == len(batch)
    assert [r[2] for r in body] == ["4", "5", "6", "7", "2", "3"]
    assert [r[3] for r in body] == ["valid", "invalid", "invalid", "valid", "invalid", "valid"]
    # Text that a spreadsheet would run as a formula keeps a leading apostrophe (OWASP).
    assert body[0][-1] == "'=SUM(A1)" and body[2][-1] == "'+86 备注"
    assert body[1][4] == "10111;10124"
    assert all(r[-3:-1] == ["", ""] for r in body)


def test_errors_sorted_by_code_then_row_naming_the_clerks_columns(dry_run) -> None:
    _, paths = dry_run
    rows = _sheet_rows(paths["errors.xlsx"], "明细")
    assert rows[0] == ("行号", "列", "原值", "说明", "处理办法", "代码", "文件", "工作表")
    body = rows[1:]
    assert [(r[5], r[0]) for r in body] == [(10110, 6), (10111, 5), (10114, 2), (10115, 6), (10124, 5)]
    id_line = body[1]
    assert id_line[1] == "身份证号"  # the clerk's header, not the field label
    assert id_line[2] == "4.20123196205184E+17"  # as the clerk wrote it
    assert id_line[4] == hint(10111)
    assert body[0][4] == field_hint(10110, "brdh") and "11位手机号码" in body[0][4]  # the phone's own fix
    assert body[2][0:2] == (2, "姓名") and body[2][6:8] == ("more.csv", None)
    # The sheet has no 出生日期 column: the fault is on the column the cell is marked on, the ID number's.
    assert body[4][1] == "身份证号" and body[4][2] == "4.20123196205184E+17"
    warnings = _sheet_rows(paths["errors.xlsx"], "提示")
    assert [(r[5], r[0], r[1]) for r in warnings[1:]] == [(10111, 4, "身份证号")]
    assert warnings[1][4].startswith("无需处理")  # the code's fix is about its error, not this warning
    summary = _sheet_rows(paths["errors.xlsx"], "汇总")
    assert summary[0][:4] == ("代码", "说明", "数量", "级别")
    assert [r[:4] for r in summary[1:6]] == [
        (10110, "联系电话不正确", 1, "错误"),
        *((c, describe(c), 1, "错误") for c in (10111, 10114, 10115, 10124)),
    ]
    assert summary[6][:4] == (10111, "15位身份证号码已升级为18位（提示）", 1, "提示")


def test_errors_sheets_print_on_one_page_wide_with_wrapped_reasons(dry_run) -> None:
    _, paths = dry_run
    book = openpyxl.load_workbook(paths["errors.xlsx"])
    for sheet in book:
        assert sheet.page_setup.orientation == "landscape" and sheet.print_title_rows == "$1:$1"
        assert sheet.page_setup.fitToWidth in (1, None) and sheet.page_setup.fitToHeight == 0
        assert sheet.sheet_properties.pageSetUpPr.fitToPage
    detail = book["明细"]
    widths = {c: detail.column_dimensions[c].width for c in "ABCDEF"}
    assert widths["A"] < 10 and widths["F"] < 10  # 行号 and 代码: narrow
    # 说明 and 处理办法: wide (openpyxl folds equal neighbouring widths into one range) …
    assert widths["D"] >= 40 and (widths["E"] >= 40 or detail.column_dimensions["D"].max >= 5)
    assert detail["D2"].alignment.wrap_text and detail["E2"].alignment.wrap_text  # … and wrapped


def test_no_output_cell_is_a_formula(dry_run) -> None:
    _, paths = dry_run
    texts = set()
    for name, path in paths.items():
        if name.endswith(".xlsx"):
            for sheet in openpyxl.load_workbook(path):
                for row in sheet.iter_rows():
                    for cell in row:
                        assert cell.data_type != "f", (name, cell.coordinate, cell.value)
                        texts.add(cell.value)
    assert {"=SUM(A1)", "+86 备注", "@赵六", "-1"} <= texts


def test_annotated_copy_marks_faulty_cells_at_the_clerks_positions(dry_run) -> None:
    _, paths = dry_run
    sheet = openpyxl.load_workbook(paths["annotated_register.xlsx"])["名单"]
    assert sheet["A1"].value == TITLE and "A1:G1" in {str(r) for r in sheet.merged_cells.ranges}
    assert [c.value for c in sheet[3]] == [*HEADERS, "问题说明"]
    assert sheet["C5"].value == pytest.approx(4.20123196205184e17)  # still the number Excel stored
    assert sheet["G4"].value == "=SUM(A1)" and sheet["G4"].data_type == "s"
    id_cell, phone_cell, warned = sheet["C5"], sheet["D6"], sheet["C4"]
    assert id_cell.fill.fgColor.rgb == "FFFF7C80"
    assert "[10111]" in id_cell.comment.text and "[10124]" in id_cell.comment.text  # csrq has no column
    assert "处理办法：" + hint(10111) in id_cell.comment.text
    assert phone_cell.fill.fgColor.rgb == "FFFF7C80" and "[10110]" in phone_cell.comment.text
    assert "处理办法：" + field_hint(10110, "brdh") in phone_cell.comment.text
    assert sheet["C6"].fill.fgColor.rgb == "FFFF7C80" and "[10115]" in sheet["C6"].comment.text
    assert warned.fill.fgColor.rgb == "FFFFEB9C" and "[提示 10111]" in warned.comment.text
    commented = {c.coordinate for row in sheet.iter_rows() for c in row if c.comment}
    assert commented == {"C4", "C5", "C6", "D6"}
    assert sheet["B5"].fill.fill_type is None
    notes = {row: sheet[f"H{row}"].value for row in range(4, 8)}
    assert notes[4] == "[提示 10111] 15 位身份证号已升级为 18 位" and notes[7] is None
    assert notes[6] == "[10110] 联系电话不是手机号或带区号的座机号；[10115] 与第 4 行身份证号重复"


def test_detail_holds_only_bad_rows_above_the_limit(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(report_xlsx, "DETAIL_ROW_LIMIT", 3)
    batch = make_batch(tmp_path)
    paths = write_reports(tmp_path / "out", batch)
    rows = _sheet_rows(paths["results.xlsx"], "明细")
    data = [r for r in rows[1:] if r[2] is not None]
    assert [r[2] for r in data] == [5, 6, 2]
    assert any(r[0] and "results.csv" in r[0] for r in rows[1:] if r[2] is None)
    assert len(paths["results.csv"].read_text(encoding="utf-8-sig").splitlines()) == 7


def test_submitted_run_reports_statuses_card_ids_and_rejections(tmp_path: Path) -> None:
    batch = make_batch(tmp_path, submitted=True)
    paths = write_reports(tmp_path / "out", batch, submitted=True)
    rows = _sheet_rows(paths["results.xlsx"], "明细")
    header, body = rows[0], rows[1:]
    assert "电子健康卡ID" in header and "虚拟卡号" in header
    assert [r[4] for r in body] == [
        "申领成功",
        "校验未通过",
        "校验未通过",
        "平台拒绝",
        "校验未通过",
        "发送失败",
    ]
    assert body[0][header.index("电子健康卡ID")] == "AB" * 32
    assert "平台无应答" in body[5][6] and "[10116] 卡号已经存在" in body[3][6]
    overview = _sheet_rows(paths["results.xlsx"], "汇总")
    assert overview[0][3:8] == ("申领成功", "已办理过", "平台拒绝", "发送失败", "校验未通过")
    errors = _sheet_rows(paths["errors.xlsx"], "明细")
    assert [r[5] for r in errors[1:]] == [10110, 10111, 10114, 10115, 10116, 10124]
    assert errors[5] == (7, None, None, "卡号已经存在", hint(10116) or None, 10116, "register.xlsx", "名单")
    records = list(csv.DictReader(io.StringIO(paths["results.csv"].read_text(encoding="utf-8-sig"))))
    assert records[0]["status"] == "enrolled" and records[0]["virtualCardNum"] == "1" * 20
    annotated = openpyxl.load_workbook(paths["annotated_register.xlsx"])["名单"]
    assert "[10116]" in annotated["C7"].comment.text  # a row-level rejection lands on the ID cell


def test_annotated_copy_is_skipped_when_the_workbook_is_gone(tmp_path: Path) -> None:
    batch = make_batch(tmp_path)
    (tmp_path / "register.xlsx").unlink()
    paths = write_reports(tmp_path / "out", batch)
    assert "annotated_register.xlsx" not in paths and paths["results.xlsx"].exists()


def test_two_inputs_with_one_stem_get_two_annotated_copies() -> None:
    taken: set[str] = set()
    assert annotate.annotated_name("a/reg.xlsx", taken) == "annotated_reg.xlsx"
    assert annotate.annotated_name("b/reg.xlsm", taken) == "annotated_reg_2.xlsx"


def test_unwritable_output_is_one_chinese_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EhcError, match="输出目录"):
        write_reports(blocker / "out", make_batch(tmp_path))


# -- the cell writer ---------------------------------------------------------------------------------


def _cells_of(path: Path) -> dict[str, object]:
    # calamine, like Excel, decodes the _xHHHH_ escapes of the string type (openpyxl does not, inline).
    sheet = python_calamine.CalamineWorkbook.from_path(path).get_sheet_by_index(0)
    rows = sheet.to_python(skip_empty_area=False)
    return {f"{chr(65 + c)}{r + 1}": v for r, row in enumerate(rows) for c, v in enumerate(row) if v != ""}


def test_writer_escapes_xml_and_keeps_text_exact(tmp_path: Path) -> None:
    values = ["a&b<c>", "  lead", "trail ", "x_x0041_y", "bell\x07", "line\nbreak", "", "=1+1"]
    book = xlsx_writer.FastWorkbook(tmp_path / "w.xlsx")
    book.add_sheet("s", [xlsx_writer.Block([text_array(values)], first_row=2, first_col=1)])
    book.close()
    cells = _cells_of(tmp_path / "w.xlsx")
    assert cells["B3"] == "a&b<c>" and cells["B4"] == "  lead" and cells["B5"] == "trail "
    assert cells["B6"] == "x_x0041_y" and cells["B8"] == "line\nbreak" and cells["B10"] == "=1+1"
    assert "B9" not in cells
    assert cells["B7"] == "bell\x07"  # a control character XML forbids survives, encoded


def test_text_cells_are_what_laying_out_every_row_both_ways_gives() -> None:
    # Cells are laid out in one join, with a byte scan deciding whether a column needs escaping; the
    # reference asks the pattern, lays every row out both as a cell and as a blank, and picks.
    from pipeline.reports.xlsx.xml import EMPTY, NEEDS_CARE, NEEDS_PRESERVE, escaped, lit, needs_care

    def join(*parts: Any) -> pa.Array:
        return pc.binary_join_element_wise(*parts, EMPTY)

    def reference(text: pa.Array, numbers: pa.Array, style: Any) -> pa.Array:
        start: Any = lit("<t>")
        if pc.any(pc.match_substring_regex(text, NEEDS_CARE)).as_py():
            start = pc.if_else(
                pc.match_substring_regex(text, NEEDS_PRESERVE), lit('<t xml:space="preserve">'), start
            )
            text = escaped(text)
        opening = lit('<c r="C')
        cell = join(
            opening, numbers, lit('"'), style, lit(' t="inlineStr"><is>'), start, text, lit("</t></is></c>")
        )
        blank: Any = EMPTY
        if not isinstance(style, pa.Scalar):
            blank = pc.if_else(pc.equal(style, ""), EMPTY, join(opening, numbers, lit('"'), style, lit("/>")))
        return pc.if_else(pc.equal(text, ""), blank, cell)

    rng = np.random.default_rng(5)
    pieces = ["", "张三", "a&b", " ", "_x0041_", "_", "x", "\uffff", "\ufffe", "（注）", "\x07", "\n", "01"]
    for _ in range(300):
        n = int(rng.integers(1, 30))
        values = ["".join(rng.choice(pieces, size=int(rng.integers(0, 4)))) for _ in range(n)]
        text = pa.array(values, pa.large_string())
        for column in (text, text.slice(1)):
            expected = bool(len(column)) and bool(
                pc.any(pc.match_substring_regex(column, NEEDS_CARE)).as_py()
            )
            assert needs_care(column) == expected, column.to_pylist()
        numbers = pa.array([str(i + 2) for i in range(n)], pa.large_string())
        row_styles = pa.array(rng.choice(["", ' s="2"', ' s="3"'], size=n).tolist(), pa.large_string())
        for style in (row_styles, lit(' s="4"'), lit("")):
            built = xlsx_writer._cells(text, "C", numbers, style)
            assert built.to_pylist() == reference(text, numbers, style).to_pylist(), values
        # Rows styled one by one: their numbers, a quote and their styles joined once for every column.
        numbered = join(numbers, lit('"'), row_styles)
        built = xlsx_writer._cells(text, "C", numbers, row_styles, numbered=numbered)
        assert built.to_pylist() == reference(text, numbers, row_styles).to_pylist(), values
        counts = pa.array(rng.integers(0, 5, size=n), pa.int64())
        counts = pc.if_else(pa.array(rng.random(n) < 0.2), None, counts)
        with_numbered = xlsx_writer._cells(counts, "C", numbers, row_styles, numbered=numbered)
        assert with_numbered.to_pylist() == xlsx_writer._cells(counts, "C", numbers, row_styles).to_pylist()


def test_writer_mixed_and_numeric_columns_and_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(xlsx_writer, "CHUNK_ROWS", 2)
    mixed = xlsx_writer.MixedColumn(text_array(["a", "", "c", ""]), pa.array([None, 1.5, None, 4.2e17]))
    numbers = pa.array([1, None, 3, 4], pa.int64())
    styles = {0: np.array([0, 1, 0, 0], dtype=np.int8)}
    block = xlsx_writer.Block([mixed, numbers], cell_styles=styles)
    book = xlsx_writer.FastWorkbook(tmp_path / "m.xlsx", [{"bg_color": "#FF0000"}])
    book.add_sheet("s", [block])
    book.close()
    sheet = openpyxl.load_workbook(tmp_path / "m.xlsx").active
    assert [[c.value for c in row] for row in sheet.iter_rows()] == [
        ["a", 1],
        [1.5, None],
        ["c", 3],
        [4.2e17, 4],
    ]
    assert sheet["A2"].fill.fgColor.rgb == "FFFF0000" and sheet["A1"].fill.fill_type is None
    assert sheet.dimensions == "A1:B4"
    with zipfile.ZipFile(tmp_path / "m.xlsx") as package:
        assert "<f>" not in package.read("xl/worksheets/sheet1.xml").decode()


def test_a_run_without_rows_still_gets_every_report(tmp_path: Path) -> None:
    batch = make_batch(tmp_path)
    empty = Batch(
        tables=[],
        table_rows=[],
        rows=batch.rows.iloc[:0],
        original=batch.original.iloc[:0],
        extras=batch.extras.iloc[:0],
        faults=batch.faults.iloc[:0],
        outcome=batch.outcome.iloc[:0],
    )
    paths = write_reports(tmp_path / "out", empty)
    assert _sheet_rows(paths["results.xlsx"], "明细")[0][:3] == ("文件", "工作表", "行号")
    assert len(_sheet_rows(paths["results.xlsx"], "明细")) == 1
    assert any("没有发现" in str(r[0]) for r in _sheet_rows(paths["errors.xlsx"], "汇总"))
    assert paths["results.csv"].read_text(encoding="utf-8-sig").count("\n") == 1


def test_each_sheet_read_from_a_workbook_is_annotated_in_its_own_sheet(tmp_path: Path) -> None:
    batch = make_batch(tmp_path)
    register = tmp_path / "register.xlsx"
    book = xlsxwriter.Workbook(register)
    for name, offset in (("名单", 3), ("补录", 0)):
        sheet = book.add_worksheet(name)
        sheet.write_row(offset - 1 if offset else 0, 0, HEADERS)
        for i, person in enumerate(PEOPLE):
            sheet.write_row((offset or 1) + i, 0, [str(v) for v in person])
    book.close()
    first = batch.tables[0]
    raw = RawTable(str(register), "补录", 1, HEADERS, list(range(7)), first.raw.data, np.array([2, 3, 4, 5]))
    second = MappedTable(raw, first.fields, first.extras, FIELD_HEADERS)
    n = len(batch)
    shifted = {
        "rows": batch.rows.iloc[:4],
        "original": batch.original.iloc[:4],
        "extras": batch.extras.iloc[:4],
    }
    doubled = {
        k: pd.concat([batch_frame, batch_frame], ignore_index=True) for k, batch_frame in shifted.items()
    }
    doubled["rows"].loc[4:, "source_sheet"] = "补录"
    doubled["rows"].loc[4:, "source_row"] = ["2", "3", "4", "5"]
    faults = pd.DataFrame([(6, "brdh", 10110, "error", "联系电话不对")], columns=batch.faults.columns)
    outcome = pd.concat([batch.outcome.iloc[:4]] * 2, ignore_index=True)
    two = Batch([first, second], [range(0, 4), range(4, 8)], faults=faults, outcome=outcome, **doubled)
    paths = write_reports(tmp_path / "out", two)
    annotated = openpyxl.load_workbook(paths["annotated_register.xlsx"])
    assert annotated.sheetnames == ["名单", "补录", "说明"]
    assert [c.coordinate for row in annotated["名单"].iter_rows() for c in row if c.comment] == []
    assert [c.coordinate for row in annotated["补录"].iter_rows() for c in row if c.comment] == ["D4"]
    assert annotated["补录"]["D4"].value == "12" and n == 6


@pytest.mark.parametrize("read_bytes", [7, 64, 1 << 20])
def test_tall_sheets_are_marked_up_piece_by_piece(tmp_path: Path, monkeypatch, read_bytes: int) -> None:
    monkeypatch.setattr(xlsx_markup, "READ_BYTES", read_bytes)
    paths = write_reports(tmp_path / "out", make_batch(tmp_path))
    sheet = openpyxl.load_workbook(paths["annotated_register.xlsx"])["名单"]
    assert sheet["A1"].value == TITLE and [c.value for c in sheet[7]][:7] == [_text(v) for v in PEOPLE[3]]
    assert {c.coordinate for row in sheet.iter_rows() for c in row if c.comment} == {"C4", "C5", "C6", "D6"}
    assert sheet["D6"].fill.fgColor.rgb == "FFFF7C80" and sheet["H6"].value.startswith("[10110]")


def test_regenerated_copies_are_read_chunk_by_chunk(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(annotate, "STREAM_ABOVE_ROWS", 0)
    monkeypatch.setattr(annotate, "CHUNK_ROWS", 2)
    monkeypatch.setattr(xlsx_writer, "CHUNK_ROWS", 2)
    monkeypatch.setattr(annotate, "MARKABLE_SUFFIXES", ())  # as for an .xls register,
    monkeypatch.setattr(annotate, "is_workbook_package", lambda path: False)  # which is not an xlsx inside
    paths = write_reports(tmp_path / "out", make_batch(tmp_path))
    book = openpyxl.load_workbook(paths["annotated_register.xlsx"])
    sheet = book["名单"]
    assert sheet["A1"].value == TITLE and [c.value for c in sheet[7]][:7] == [_text(v) for v in PEOPLE[3]]
    assert {c.coordinate for row in sheet.iter_rows() for c in row if c.comment} == {"C4", "C5", "C6", "D6"}
    assert sheet["D6"].fill.fgColor.rgb == "FFFF7C80" and sheet["H6"].value.startswith("[10110]")
    assert sheet["H3"].value == "问题说明"
    legend = " ".join(str(c.value) for row in book["说明"].iter_rows() for c in row)
    assert "重新生成" in legend and "没有保留" in legend


def test_many_comments_across_sheets_keep_unique_shape_ids(tmp_path: Path) -> None:
    book = xlsx_writer.FastWorkbook(tmp_path / "c.xlsx")
    for name, count in (("a", 1500), ("b", 10)):
        rows = np.arange(count)
        texts = text_array([f"第{i}行 & <注>" for i in range(count)])
        comments = xlsx_comments.Comments(rows, rows % 3, texts)
        book.add_sheet(name, [xlsx_writer.Block([text_array(["x"] * count)])], comments=comments)
    book.close()
    with zipfile.ZipFile(tmp_path / "c.xlsx") as package:
        vml = [package.read(f"xl/drawings/vmlDrawing{i}.vml").decode() for i in (1, 2)]
    assert 'data="1,2"' in vml[0] and 'data="3"' in vml[1]
    ids = [i for part in vml for i in re.findall(r'id="_x0000_s(\d+)"', part)]
    assert len(ids) == len(set(ids)) == 1510
    loaded = openpyxl.load_workbook(tmp_path / "c.xlsx")
    notes = {
        name: {c.coordinate: c.comment.text for row in loaded[name].iter_rows() for c in row if c.comment}
        for name in ("a", "b")
    }
    assert len(notes["a"]) == 1500 and len(notes["b"]) == 10
    assert notes["a"]["C1500"] == "第1499行 & <注>"


def test_annotated_marks_follow_a_sheet_that_starts_off_a1(tmp_path: Path) -> None:
    batch = make_batch(tmp_path)
    register = tmp_path / "register.xlsx"
    book = xlsxwriter.Workbook(register)
    sheet = book.add_worksheet("名单")
    sheet.write_row(1, 2, HEADERS)  # header on C2
    for i, person in enumerate(PEOPLE):
        sheet.write_row(2 + i, 2, [str(v) for v in person])
    book.close()
    raw = batch.tables[0].raw
    raw.column_positions = [p + 2 for p in raw.column_positions]
    raw.source_row = np.array([3, 4, 5, 6])
    raw.header_row = 2
    paths = write_reports(tmp_path / "out", batch)
    annotated = openpyxl.load_workbook(paths["annotated_register.xlsx"])["名单"]
    assert annotated["C2"].value == "序号" and annotated["A1"].value is None
    marked = {c.coordinate for row in annotated.iter_rows() for c in row if c.comment}
    assert marked == {"E3", "E4", "E5", "F5"}
    assert annotated["F5"].value == "12" and annotated["F5"].fill.fgColor.rgb == "FFFF7C80"
    assert annotated["J2"].value == "问题说明" and annotated["J5"].value.startswith("[10110]")


def test_every_text_a_spreadsheet_could_start_a_formula_with_gets_an_apostrophe() -> None:
    import pyarrow as pa

    from pipeline.reports.results_csv import neutralised

    values = ["=1+1", "+86", "-1", "@SUM(A1)", "\t=1", "\r=1", "\n=1", "张三", "", "1-2", "'=1", "\x00=1"]
    assert neutralised(pa.array(values, pa.large_string())).to_pylist() == [
        "'=1+1", "'+86", "'-1", "'@SUM(A1)", "'\t=1", "'\r=1", "'\n=1", "张三", "", "1-2", "'=1", "'\x00=1",
    ]  # fmt: skip


def test_a_rows_faults_join_into_one_cell_each_text_once_in_order() -> None:
    from pipeline.batch import status_from_faults
    from pipeline.text.joins import join_texts_by_key

    keys = np.array([0, 0, 0, 3, 5, 5], dtype=np.int64)
    texts = pa.array(["10110", "10123", "10110", "10131", "a", "b"], pa.large_string())
    rows, joined = join_texts_by_key(keys, texts, ";", distinct=True)
    assert rows.tolist() == [0, 3, 5] and joined.to_pylist() == ["10110;10123", "10131", "a;b"]
    assert join_texts_by_key(keys, texts, ";")[1].to_pylist()[0] == "10110;10123;10110"
    assert join_texts_by_key(keys[:0], texts[:0], ";")[1].to_pylist() == []

    faults = pd.DataFrame(
        {"row_id": [12, 10, 12, 12, 14], "field": ["xm", "brdh", "brdh", "mzdm", "xb"],
         "code": [10110, 10110, 10110, 10123, 10113], "severity": ["error"] * 4 + ["warning"],
         "message": ["姓名有误", "电话有误", "电话有误", "民族有误", "提示"]}
    )  # fmt: skip
    outcome = status_from_faults(5, faults, start=10)
    assert outcome["status"].tolist() == ["invalid", "valid", "invalid", "valid", "valid"]
    assert outcome["result_code"].tolist() == ["10110", "", "10110;10123", "", ""]
    assert outcome["message"].tolist() == ["电话有误", "", "姓名有误；电话有误；民族有误", "", ""]


@pytest.mark.parametrize("distinct", [False, True], ids=["every", "distinct"])
def test_joining_in_arrow_gives_what_joining_python_strings_gives(distinct: bool) -> None:
    # The reports and the outcome join each row's texts in Arrow; plain Python, text by text, is reference.
    from pipeline.reports.data import fault_text_array, fault_texts
    from pipeline.text.joins import join_texts_by_key
    from schemas.result_codes import describe

    rng = np.random.default_rng(11)
    keys = np.sort(rng.integers(0, 3_000, 10_000))
    words = np.array(["", "电话有误", "10110", "a；b", "姓名\n有误", "x"], dtype=object)
    texts = words[rng.integers(0, len(words), len(keys))]
    grouped: dict[int, list[str]] = {}
    for key, text in zip(keys.tolist(), texts.tolist(), strict=True):
        group = grouped.setdefault(key, [])
        if not (distinct and text in group):
            group.append(text)
    expected_keys, expected = list(grouped), ["；".join(group) for group in grouped.values()]
    found_keys, found = join_texts_by_key(
        keys, pa.array(texts.tolist(), pa.large_string()), "；", distinct=distinct
    )
    assert found_keys.tolist() == expected_keys
    assert found.to_pylist() == expected
    assert join_texts_by_key(keys[:0], pa.array([], pa.large_string()), ";")[1].to_pylist() == []

    faults = pd.DataFrame(
        {"code": rng.choice([10110, 10123, 10131], len(keys)),
         "severity": rng.choice(["error", "warning"], len(keys)),
         "message": texts}
    )  # fmt: skip
    warning = faults["severity"].to_numpy() == "warning"
    built = fault_text_array(faults["code"].to_numpy(), warning, pa.array(texts.tolist(), pa.large_string()))
    reference = [
        f"[{'提示 ' if w else ''}{c}] {m or describe(int(c))}"
        for c, w, m in zip(faults["code"], warning, texts, strict=True)
    ]
    assert built.to_pylist() == reference
    assert fault_texts(faults).tolist() == reference


def test_results_csv_closed_by_another_thread_while_a_batch_waits_leaves_no_one_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Ctrl-C closed results.csv while the thread feeding the reports waited to hand it a batch:
    # the end was never marked done, and that thread waited for ever (`ehc validate` never exited).
    import threading

    from pipeline.reports import results_csv

    gate = threading.Event()
    real_append = results_csv._append_file

    def held(sink: Any, path: Path) -> None:
        gate.wait(10)
        real_append(sink, path)

    monkeypatch.setattr(results_csv, "_append_file", held)
    writer = results_csv.ResultsCsv(tmp_path / "results.csv", [])
    first = tmp_path / "part1.csv"
    first.write_bytes(b"a\n")
    writer.write_part(first)  # in the writer's hands, held at the gate
    outcome: list[BaseException | None] = []

    def hand_one_more() -> None:
        try:
            writer.write_part(writer.schema.empty_table())
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    feeder = threading.Thread(target=hand_one_more, daemon=True)
    feeder.start()
    closer = threading.Thread(target=writer.close, daemon=True)
    closer.start()
    time.sleep(0.2)  # both waiting on the writer
    gate.set()
    closer.join(5)
    feeder.join(5)
    assert not closer.is_alive() and not feeder.is_alive()
    # The batch handed after the end is refused, not dropped in silence.
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError)
    assert (tmp_path / "results.csv").read_bytes().endswith(b"a\n")


def test_a_spool_of_many_small_parts_reads_back_in_parts_of_thousands_of_lines(tmp_path: Path) -> None:
    """A submission reports its rows slice by slice: a code's few faults per slice were read back as
    hundreds of parts, each laid out as XML at a cost of its own (errors.xlsx of 1,000,000 rows took
    1.3 s, not 0.1 s).  They come back joined, every line once, in order, with its style, up to the limit."""
    spool = LineSpool(tmp_path / "lines.arrow", ["a", "b"])
    sizes = [3, 0, 1, 7000, 2, 5000, 4000, 1]
    written = 0
    for size in sizes:
        numbers = np.arange(written, written + size)
        texts = pa.array([str(n) for n in numbers], pa.large_string())
        spool.append([texts, texts], style=(numbers % 3).astype(np.int8))
        written += size
    parts = list(spool.parts())
    assert [len(columns[0]) for columns, _ in parts] == [12006, 4001]  # >= PART_LINES each, the rest last
    assert all(len(columns[0]) >= PART_LINES for columns, _ in parts[:-1])
    lines = [int(text) for columns, _ in parts for text in columns[0].to_pylist()]
    assert lines == list(range(written))
    styles = np.concatenate([style for _, style in parts if style is not None])
    assert styles.tolist() == (np.arange(written) % 3).tolist()
    cut = list(spool.parts(limit=7005))
    assert sum(len(columns[0]) for columns, _ in cut) == 7005
    assert int(cut[-1][0][1].to_pylist()[-1]) == 7004


def _detail_lines(first: int, size: int, *, bad_every: int = 4, every: bool = True) -> DetailLines:
    """Made-up 明细 lines of ``size`` rows numbered from ``first``: every ``bad_every``-th one bad
    (``every``: with every row's lines, as :meth:`DetailSpool.lines` gives while the run fits)."""
    numbers = np.arange(first, first + size)
    texts = pa.array([f"行{n}" for n in numbers], pa.large_string())
    columns = [texts, pa.array(numbers, pa.int64())]
    style = np.where(numbers % bad_every == 0, 2, 0).astype(np.int8)
    bad = np.flatnonzero(style)
    bad_lines = ([c.take(pa.array(bad)) for c in columns], style[bad]) if len(bad) else None
    return DetailLines(size, ["说明", "行号"], (columns, style) if every else None, bad_lines)


def test_detail_lines_of_a_short_run_are_held_and_come_back_joined_in_order(tmp_path: Path) -> None:
    """While the run fits 明细, every row's lines stay in memory (no file for them) and come back in
    input order, small batches joined into parts of thousands of lines, fitted to the widest line."""
    spool = DetailSpool(tmp_path, limit=20_000)
    sizes, first = [3, 0, 1, 7000, 2, 5000, 4000, 1], 0
    for size in sizes:
        spool.append(_detail_lines(first, size))
        first += size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detail-bad.arrow"]
    feed = spool.feed([])
    assert feed.height == first
    parts = list(feed.parts())
    assert [len(columns[0]) for columns, _ in parts] == [12006, 4001]
    numbers = [n for columns, _ in parts for n in columns[1].to_pylist()]
    assert numbers == list(range(first))
    styles = np.concatenate([style for _, style in parts if style is not None])
    assert styles.tolist() == np.where(np.arange(first) % 4 == 0, 2, 0).tolist()
    widest = max(len(f"行{n}".encode()) / 2 + len(f"行{n}") / 2 for n in range(first))
    assert feed.widths[0] == pytest.approx(widest + 2)
    stopped = threading.Event()
    stopped.set()
    with pytest.raises(Cancelled):
        list(spool.feed([], stopped).parts())


def test_detail_lines_past_the_limit_are_dropped_and_the_bad_rows_read_back(tmp_path: Path) -> None:
    """A run that passes the limit keeps only its bad rows (every row's lines let go unread), in order."""
    spool = DetailSpool(tmp_path, limit=100)
    spool.append(_detail_lines(0, 60))
    spool.append(_detail_lines(60, 60, every=False))
    assert spool._every == []
    feed = spool.feed([])
    numbers = [n for columns, _ in feed.parts() for n in columns[1].to_pylist()]
    assert numbers == list(range(0, 120, 4)) and feed.height == 30


def test_a_workbook_part_is_deflated_by_zlib_ng_and_reads_back_as_written(tmp_path: Path) -> None:
    """Large parts are deflated by zlib-ng (1.6 times as fast as zlib for a file as small): the entry is
    the size zlib-ng makes of the text, not zlib's, and any zip reader gets the text back, CRC checked."""
    from zlib import DEFLATED, MAX_WBITS

    from zlib_ng import zlib_ng

    from pipeline.reports.xlsx import deflate

    text = b"".join(f'<row r="{n}"><c r="A{n}" t="inlineStr"><is><t>{n * 7919}</t></is></c></row>'.encode()
                    for n in range(1, 50_000))  # fmt: skip
    path = tmp_path / "p.zip"
    with deflate.new_package(path) as package, deflate.open_part(package, "xl/worksheets/sheet1.xml") as part:
        for start in range(0, len(text), 1 << 20):
            part.write(text[start : start + (1 << 20)])
    ours = zlib_ng.compressobj(deflate.LEVEL, DEFLATED, -MAX_WBITS)
    expected = len(ours.compress(text) + ours.flush())
    with zipfile.ZipFile(path) as package:
        assert package.testzip() is None
        info = package.getinfo("xl/worksheets/sheet1.xml")
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.compress_size == expected
        assert package.read(info) == text


def _shared_register(rows: int) -> tuple[list[pa.Array], np.ndarray]:
    """Columns as a report holds them: repeated texts with gaps, one needing escapes, one all different."""
    rng = np.random.default_rng(11)
    repeated = rng.choice(["汉族", "回族", "", "校验通过", "01", "=1+1"], size=rows).tolist()
    escaped_too = rng.choice(["A&B", "<x>", "", " 前后有空格 "], size=rows).tolist()
    different = [f"张{n}" for n in range(rows)]
    style = rng.choice([0, 1], size=rows).astype(np.int8)
    return [text_array(repeated), text_array(escaped_too), text_array(different)], style


def test_repeated_texts_are_shared_strings_and_read_back_as_written(tmp_path: Path) -> None:
    """A column that repeats its texts refers to the workbook's shared strings (what Excel writes): every
    reader gets each cell's text back, a styled empty cell keeps its fill, and text needing escapes or
    of mostly different values stays inline."""
    columns, style = _shared_register(3000)
    book = xlsx_writer.FastWorkbook(tmp_path / "s.xlsx", [{"bg_color": "#FF0000"}])
    book.add_sheet("s", [xlsx_writer.Block(columns, row_style=style)])
    book.add_sheet("t", [xlsx_writer.Block(columns[:1])])
    book.close()
    with zipfile.ZipFile(tmp_path / "s.xlsx") as package:
        sheet = package.read("xl/worksheets/sheet1.xml").decode()
        table = package.read("xl/sharedStrings.xml").decode()
    assert re.search(r'<c r="A\d+"( s="\d+")? t="s"><v>\d+</v></c>', sheet)
    assert not re.search(r'<c r="[BC]\d+"[^>]* t="s">', sheet) and 'uniqueCount="6"' in table
    expected = [[v or None for v in column.to_pylist()] for column in columns]
    book_read = openpyxl.load_workbook(tmp_path / "s.xlsx")
    for name, width in (("s", 3), ("t", 1)):
        rows = [list(r) for r in book_read[name].iter_rows(values_only=True)]
        assert [[row[c] if c < len(row) else None for row in rows] for c in range(width)] == expected[:width]
        calamine = python_calamine.CalamineWorkbook.from_path(tmp_path / "s.xlsx").get_sheet_by_name(name)
        assert [[row[c] or None for row in calamine.to_python()] for c in range(width)] == expected[:width]
    blank_styled = next(i for i, v in enumerate(expected[0]) if v is None and style[i])
    assert book_read["s"].cell(blank_styled + 1, 1).fill.fgColor.rgb == "FFFF0000"


def test_shared_strings_past_their_bounds_are_written_inline(tmp_path: Path, monkeypatch) -> None:
    from pipeline.reports.xlsx import shared

    monkeypatch.setattr(shared, "MOST_STRINGS", 3)
    columns, style = _shared_register(1000)
    book = xlsx_writer.FastWorkbook(tmp_path / "b.xlsx", [{"bg_color": "#FF0000"}])
    book.add_sheet("s", [xlsx_writer.Block(columns[:1], row_style=style)])
    book.close()
    with zipfile.ZipFile(tmp_path / "b.xlsx") as package:
        assert ' t="s">' not in package.read("xl/worksheets/sheet1.xml").decode()
    sheet = openpyxl.load_workbook(tmp_path / "b.xlsx").active
    values = [row[0] for row in sheet.iter_rows(values_only=True)]
    assert values == [v or None for v in columns[0].to_pylist()]
