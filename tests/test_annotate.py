"""The annotated copy is the clerk's own workbook: a formatted register round-tripped cell by cell.

The register is built here with openpyxl and carries what clerks put into
theirs: a merged title, bold bordered headers with a fill, widths, a hidden
column, frozen panes, an autofilter, a drop-down, the ``@`` text format on
the ID column, real date cells, a formula, the clerk's own comments, print
setup and a second sheet.  After a dry run, everything of the clerk's must be
as it was — values, formulas, number formats, fonts, borders, alignment,
fills (but the marks), comments, validations, merged cells, widths, panes,
print setup, the sheet list — and only the marks, the 问题说明 column and the
legend sheet added.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import python_calamine
from conftest import make_id_number
from hostile import excel95_xls
from openpyxl.comments import Comment
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.worksheet.datavalidation import DataValidation

from pipeline.config import load_settings
from pipeline.dryrun import prepare_batch
from pipeline.errors import InputError
from pipeline.reports import annotate
from pipeline.reports.data import ReportData
from pipeline.reports.write import write_reports
from pipeline.reports.xlsx import markup
from pipeline.text.idnumber import check_character

RED, YELLOW = "FFFF7C80", "FFFFEB9C"
HEADERS = ["序号", "姓名", "性别", "出生日期", "身份证号", "联系电话", "民族", "医保类型", "备注", "内部编号"]
BORN = dt.date(1980, 1, 1)
GOOD = [make_id_number(i, born=BORN, male=i % 2 == 0) for i in range(8)]
BAD_CHECK = GOOD[1][:17] + ("0" if GOOD[1][17] != "0" else "1")
ID15 = "110105800101001"  # 15 digits: upgraded, a hint only
# Sheet rows 4..10; the faults: row 5 a mistyped ID, row 6 a 女 on a man's ID, row 7 no name (an
# empty cell), row 8 a bad phone, row 9 the 15-digit ID, row 10 repeats row 4's ID.
PEOPLE: list[dict[str, Any]] = [
    {"姓名": "张三", "性别": "男", "身份证号": GOOD[0], "联系电话": "13900000001"},
    {"姓名": "李四", "性别": "女", "身份证号": BAD_CHECK, "联系电话": "13900000002"},
    {"姓名": "王五", "性别": "女", "身份证号": GOOD[2], "联系电话": "13900000003"},
    {"姓名": None, "性别": "男", "身份证号": GOOD[4], "联系电话": "13900000005"},
    {"姓名": "钱七", "性别": "男", "身份证号": GOOD[6], "联系电话": "12"},
    {"姓名": "孙八", "性别": "男", "身份证号": ID15, "联系电话": "13900000007"},
    {"姓名": "周九", "性别": "男", "身份证号": GOOD[0], "联系电话": "13900000009"},
]


def build_register(path: Path) -> Path:
    """A register formatted the way clerks format theirs."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "登记表"
    sheet["A1"] = "XX社区卫生服务中心 电子健康卡申领登记表"
    sheet["A1"].font = Font(name="黑体", size=16, bold=True)
    sheet["A1"].alignment = Alignment(horizontal="center")
    sheet.merge_cells("A1:J1")
    thin = Side(style="thin", color="FF000000")
    for col, header in enumerate(HEADERS, start=1):
        cell = sheet.cell(3, col, header)
        cell.font = Font(name="宋体", size=11, bold=True)
        cell.border = Border(left=thin, right=thin, top=thin, bottom=thin)
        cell.fill = PatternFill("solid", fgColor="FFD9E1F2")
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
    for offset, person in enumerate(PEOPLE):
        row = 4 + offset
        sheet.cell(row, 1, "=ROW()-3")
        sheet.cell(row, 2, person["姓名"])
        sheet.cell(row, 3, person["性别"])
        born = sheet.cell(row, 4, dt.datetime(1980, 1, 1))
        born.number_format = "yyyy-mm-dd"
        id_cell = sheet.cell(row, 5, person["身份证号"])
        id_cell.number_format = "@"
        id_cell.font = Font(name="宋体", size=11, color="FF1F4E79")
        sheet.cell(row, 6, person["联系电话"]).number_format = "@"
        sheet.cell(row, 7, "汉族")
        sheet.cell(row, 8, "职工医保")
        sheet.cell(row, 10, f"NB-{offset:03d}")
        for col in range(1, 11):
            sheet.cell(row, col).border = Border(bottom=Side(style="hair"))
    sheet["I5"] = "上门办理"
    sheet["E6"].comment = Comment("户口本上的号码，待核实", "王主任")
    sheet["I4"].comment = Comment("家属代办", "王主任")
    for letter, width in zip("ABCDEFGHIJ", (6, 10, 6, 12, 22, 14, 8, 16, 20, 10), strict=True):
        sheet.column_dimensions[letter].width = width
    sheet.column_dimensions["J"].hidden = True
    sheet.freeze_panes = "C4"
    sheet.auto_filter.ref = "A3:J10"
    genders = DataValidation(type="list", formula1='"男,女"', allow_blank=True)
    genders.add("C4:C200")
    sheet.add_data_validation(genders)
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr.fitToPage = True
    sheet.print_title_rows = "3:3"
    sheet.print_area = "A1:J10"
    lists = book.create_sheet("字典")
    lists["A1"], lists["B1"] = "性别", "民族"
    lists["A2"], lists["B2"] = "男", "汉族"
    lists["A3"], lists["B3"] = "女", "回族"
    lists["A1"].font = Font(bold=True)
    book.save(path)
    return path


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("annotate")
    register = build_register(folder / "登记表.xlsx")
    batch = prepare_batch([register], load_settings(None))
    paths = write_reports(folder / "out", batch)
    return register, paths["annotated_登记表.xlsx"], paths


def _style(cell: Any) -> tuple[Any, ...]:
    return (
        cell.number_format, repr(cell.font), repr(cell.border), repr(cell.alignment), repr(cell.protection),
    )  # fmt: skip


MARKED = {"E5": RED, "C6": RED, "B7": RED, "F8": RED, "E9": YELLOW, "E10": RED}


def test_every_cell_of_the_clerks_is_kept_but_the_marks(annotated) -> None:
    register, copy, _ = annotated
    before, after = openpyxl.load_workbook(register), openpyxl.load_workbook(copy)
    assert after.sheetnames == [*before.sheetnames, "说明"]
    for name in before.sheetnames:
        old, new = before[name], after[name]
        for row in old.iter_rows(min_row=1, max_row=old.max_row, max_col=old.max_column):
            for cell in row:
                other = new[cell.coordinate]
                if cell.data_type == "f":  # no formula in the copy: the saved result (openpyxl saves none)
                    assert other.value is None and other.data_type != "f", cell.coordinate
                else:
                    assert other.value == cell.value, cell.coordinate
                    assert other.data_type == cell.data_type, cell.coordinate  # text stays text, dates dates
                assert _style(other) == _style(cell), cell.coordinate
                if name == "登记表" and cell.coordinate in MARKED:
                    assert (
                        other.fill.fill_type == "solid" and other.fill.fgColor.rgb == MARKED[cell.coordinate]
                    )
                else:
                    assert repr(other.fill) == repr(cell.fill), cell.coordinate
        assert new.merged_cells.ranges == old.merged_cells.ranges
        assert new.freeze_panes == old.freeze_panes
        assert new.auto_filter.ref == old.auto_filter.ref
        assert new.print_title_rows == old.print_title_rows
        assert (new.page_setup.orientation, new.page_setup.fitToWidth, new.page_setup.fitToHeight) == (
            old.page_setup.orientation, old.page_setup.fitToWidth, old.page_setup.fitToHeight,
        )  # fmt: skip
        for letter, dimension in old.column_dimensions.items():
            assert (new.column_dimensions[letter].width, new.column_dimensions[letter].hidden) == (
                dimension.width, dimension.hidden,
            ), letter  # fmt: skip
        assert [(str(v.sqref), v.formula1, v.type) for v in new.data_validations.dataValidation] == [
            (str(v.sqref), v.formula1, v.type) for v in old.data_validations.dataValidation
        ]
    sheet = after["登记表"]
    assert sheet["A4"].value is None and sheet["A4"].data_type != "f"
    assert (
        sheet["E5"].number_format == "@" and sheet["D4"].is_date and sheet["D4"].number_format == "yyyy-mm-dd"
    )


def test_marked_cells_have_comments_and_the_clerks_comments_are_untouched(annotated) -> None:
    _, copy, _ = annotated
    sheet = openpyxl.load_workbook(copy)["登记表"]
    comments = {c.coordinate: c.comment for row in sheet.iter_rows() for c in row if c.comment}
    assert comments["I4"].text == "家属代办" and comments["I4"].author == "王主任"
    assert comments["E6"].text == "户口本上的号码，待核实"  # the clerk's, though E6 is not marked
    assert set(comments) == set(MARKED) | {"I4", "E6"}
    assert "[10111]" in comments["E5"].text and "对照身份证" in comments["E5"].text
    assert "性别“女”" in comments["C6"].text  # the clerk's own value, not its code
    assert "第 4 行" in comments["E10"].text
    assert "[提示 10111]" in comments["E9"].text and sheet["E9"].fill.fgColor.rgb == YELLOW
    assert sheet["B7"].value is None and "[10114]" in comments["B7"].text


def test_reasons_are_visible_without_hovering_and_in_print(annotated) -> None:
    _, copy, _ = annotated
    book = openpyxl.load_workbook(copy)
    sheet = book["登记表"]
    assert sheet["K3"].value == "问题说明" and sheet["K3"].font.b
    notes = {row: sheet[f"K{row}"].value for row in range(4, 11)}
    assert notes[4] is None
    assert notes[5].startswith("[10111]") and notes[6].startswith("[10113]") and "[10110]" in notes[8]
    assert notes[9].startswith("[提示 10111]") and "第 4 行" in notes[10]
    assert sheet.column_dimensions["K"].width >= 40
    legend = [row[0] for row in book["说明"].iter_rows(values_only=True)]
    assert any("红色" in line for line in legend) and any("黄色" in line for line in legend)
    assert any("原来就有您的批注" in str(line) for line in legend) is False  # no marked cell had one
    assert any("5 个错误单元格、1 个提示单元格" in str(line) for line in legend)
    assert sheet.print_area == "'登记表'!$A$1:$K$10"  # the clerk's print area now takes in 问题说明


def test_only_the_parts_that_carry_marks_change(annotated) -> None:
    register, copy, _ = annotated
    with zipfile.ZipFile(register) as old, zipfile.ZipFile(copy) as new:
        old_parts = {name: old.read(name) for name in old.namelist()}
        new_parts = {name: new.read(name) for name in new.namelist()}
    changed = {name for name in old_parts if new_parts.get(name) != old_parts[name]}
    assert changed <= {
        "xl/worksheets/sheet1.xml", "xl/styles.xml", "xl/workbook.xml", "xl/_rels/workbook.xml.rels",
        "[Content_Types].xml", "xl/comments/comment1.xml", "xl/drawings/commentsDrawing1.vml",
    }  # fmt: skip
    assert "xl/worksheets/sheet2.xml" not in changed and "xl/sharedStrings.xml" not in changed
    assert set(old_parts) <= set(new_parts)


def test_the_copy_reads_back_with_calamine_and_holds_no_formula(annotated) -> None:
    register, copy, _ = annotated
    book = python_calamine.CalamineWorkbook.from_path(str(copy))
    rows = book.get_sheet_by_name("登记表").to_python()
    assert rows[2][:10] == HEADERS and rows[2][10] == "问题说明"
    with zipfile.ZipFile(register) as old, zipfile.ZipFile(copy) as new:
        assert old.read("xl/worksheets/sheet1.xml").count(b"<f>") == 7  # the clerk's =ROW()-3
        sheets = [name for name in new.namelist() if name.startswith("xl/worksheets/sheet")]
        assert len(sheets) == 3 and not any(re.search(rb"<f\b", new.read(name)) for name in sheets)


def _with_saved_results(register: Path, target: Path) -> Path:
    """``register`` as Excel saves it: each =ROW()-3 with its result, and 字典!C1 a link with its text."""
    with zipfile.ZipFile(register) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                for row in range(4, 11):
                    data = data.replace(
                        f'<c r="A{row}"'.encode(), f'<c r="A{row}" data-row="{row}"'.encode(), 1
                    )
                data = re.sub(
                    rb'<c r="A(\d+)" data-row="\d+"([^>]*)><f>ROW\(\)-3</f><v ?/?>(?:</v>)?',
                    lambda m: b'<c r="A' + m[1] + b'"' + m[2] + b"><f>ROW()-3</f><v>"
                    + str(int(m[1]) - 3).encode() + b"</v>",
                    data,
                )
            elif info.filename == "xl/worksheets/sheet2.xml":
                link = (b'<c r="C1" t="str"><f>HYPERLINK("http://example.invalid/x","\xe7\x82\xb9\xe6\x88\x91")'
                        b'</f><v>\xe7\x82\xb9\xe6\x88\x91</v></c></row>')
                data = data.replace(b"</row>", link, 1)
            out.writestr(info, data)
    return target


def test_the_clerks_formulas_come_back_as_the_results_excel_saved_never_live(
    annotated, tmp_path: Path
) -> None:
    """A register is input from outside: a =HYPERLINK(…) (or a DDE formula) in any of its sheets came back
    live in the copy ehc wrote.  Each formula cell keeps the result the workbook saved, as a value."""
    register = _with_saved_results(annotated[0], tmp_path / "登记表.xlsx")
    source = openpyxl.load_workbook(register)
    assert source["登记表"]["A5"].data_type == "f" and source["字典"]["C1"].data_type == "f"
    data = ReportData(prepare_batch([register], load_settings(None)), submitted=False)
    copy = annotate.write_annotated(tmp_path / "copy.xlsx", str(register), data, [0], {})
    book = openpyxl.load_workbook(copy)
    cells = [cell for sheet in book for row in sheet.iter_rows() for cell in row]
    assert [cell.coordinate for cell in cells if cell.data_type == "f"] == []
    assert [book["登记表"][f"A{row}"].value for row in range(4, 11)] == list(range(1, 8))
    assert book["字典"]["C1"].value == "点我" and book["字典"]["C1"].data_type == "s"
    assert book["登记表"]["E5"].fill.fgColor.rgb == RED  # marked as ever
    values = python_calamine.CalamineWorkbook.from_path(str(copy)).get_sheet_by_name("登记表").to_python()
    assert [row[0] for row in values[3:10]] == [1, 2, 3, 4, 5, 6, 7]


_LINK_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.externalLink+xml"
_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_LINK = f'<Relationship Id="rId98" Type="{_RELS}/externalLink" Target="externalLinks/externalLink1.xml"/>'


def _with_external_link(register: Path, target: Path) -> Path:
    """``register`` linked to another workbook, as Excel saves a formula that reads one: the link part,
    its address, the workbook's list of linked workbooks and a defined name pointing into it."""
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    override = f'<Override PartName="/xl/externalLinks/externalLink1.xml" ContentType="{_LINK_TYPE}"/>'
    references = b'<externalReferences><externalReference r:id="rId98"/></externalReferences>'
    with zipfile.ZipFile(register) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "[Content_Types].xml":
                data = data.replace(b"</Types>", override.encode() + b"</Types>")
            elif info.filename == "xl/_rels/workbook.xml.rels":
                data = data.replace(b"</Relationships>", _LINK.encode() + b"</Relationships>")
            elif info.filename == "xl/workbook.xml":
                data = data.replace(b"</sheets>", b"</sheets>" + references)
                name = '<definedName name="外部">[1]名单!$A$1</definedName>'
                data = data.replace(b"</definedNames>", name.encode() + b"</definedNames>")
            out.writestr(info, data)
        out.writestr(
            "xl/externalLinks/externalLink1.xml",
            f'<externalLink xmlns="{main}" xmlns:r="{_RELS}"><externalBook r:id="rId1"><sheetNames>'
            '<sheetName val="名单"/></sheetNames></externalBook></externalLink>',
        )
        out.writestr(
            "xl/externalLinks/_rels/externalLink1.xml.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{_RELS}/externalLinkPath" Target="http://example.invalid/b.xlsx"'
            ' TargetMode="External"/></Relationships>',
        )
    return target


def test_a_link_to_another_workbook_is_not_carried_into_the_copy(annotated, tmp_path: Path) -> None:
    """Opening the copy asked to bring a link of the register's up to date, from an address it named."""
    register = _with_external_link(annotated[0], tmp_path / "登记表.xlsx")
    assert openpyxl.load_workbook(register)._external_links  # the link is read as one
    data = ReportData(prepare_batch([register], load_settings(None)), submitted=False)
    copy = annotate.write_annotated(tmp_path / "copy.xlsx", str(register), data, [0], {})
    with zipfile.ZipFile(copy) as package:
        names = package.namelist()
        parts = b"".join(package.read(name) for name in names)
        workbook = package.read("xl/workbook.xml")
    assert not [name for name in names if "externalLink" in name]
    assert b"externalLink" not in parts and b"example.invalid" not in parts
    assert b"externalReference" not in workbook and "外部".encode() not in workbook
    book = openpyxl.load_workbook(copy)
    assert not book._external_links and book["登记表"].print_area == "'登记表'!$A$1:$K$10"
    assert book["登记表"]["E5"].fill.fgColor.rgb == RED  # marked as ever


def test_edits_are_written_as_text_in_the_cells_own_style(annotated, tmp_path: Path) -> None:
    register, _, _ = annotated
    batch = prepare_batch([register], load_settings(None))
    data = ReportData(batch, submitted=False)
    fixed = GOOD[1]
    edits = {("登记表", 5, 4): fixed, ("登记表", 8, 5): '=HYPERLINK("x")', ("登记表", 7, 1): "赵六"}
    path = annotate.write_annotated(tmp_path / "a.xlsx", str(register), data, [0], edits)
    sheet = openpyxl.load_workbook(path)["登记表"]
    assert sheet["E5"].value == fixed and sheet["E5"].data_type == "s" and sheet["E5"].number_format == "@"
    assert sheet["F8"].value == '=HYPERLINK("x")' and sheet["F8"].data_type == "s"
    assert sheet["B7"].value == "赵六" and sheet["B7"].fill.fgColor.rgb == RED  # the mark is the run's
    assert sheet["E5"].font.color.rgb == "FF1F4E79"
    legend = " ".join(str(r[0]) for r in openpyxl.load_workbook(path)["说明"].iter_rows(values_only=True))
    assert "3 个单元格" in legend


_CALC_CHAIN_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.calcChain+xml"
_CALC_CHAIN_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/calcChain"


def _with_calc_chain(register: Path, target: Path) -> Path:
    """``register`` with the calculation chain Excel saves beside formulas (its A4:A10 are =ROW()-3)."""
    chain = "".join(f'<c r="A{row}" i="1"/>' for row in range(4, 11))
    override = f'<Override PartName="/xl/calcChain.xml" ContentType="{_CALC_CHAIN_TYPE}"/></Types>'
    relationship = (
        f'<Relationship Id="rId99" Type="{_CALC_CHAIN_REL}" Target="calcChain.xml"/></Relationships>'
    )
    with zipfile.ZipFile(register) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "[Content_Types].xml":
                data = data.replace(b"</Types>", override.encode())
            elif info.filename == "xl/_rels/workbook.xml.rels":
                data = data.replace(b"</Relationships>", relationship.encode())
            out.writestr(info, data)
        main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
        out.writestr("xl/calcChain.xml", f'<calcChain xmlns="{main}">{chain}</calcChain>')
    return target


def test_an_edit_over_a_formula_drops_the_calculation_chain_excel_would_find_stale(
    annotated, tmp_path: Path
) -> None:
    # The chain still listed A5 once an edit wrote text over its formula: Excel opened the copy only after
    # "Removed Records: Formula from /xl/calcChain.xml". Without a chain, Excel builds its own.
    register = _with_calc_chain(annotated[0], tmp_path / "登记表.xlsx")
    data = ReportData(prepare_batch([register], load_settings(None)), submitted=False)
    marked = annotate.write_annotated(tmp_path / "marked.xlsx", str(register), data, [0], {})
    edited = annotate.write_annotated(
        tmp_path / "edited.xlsx", str(register), data, [0], {("登记表", 5, 0): "2"}
    )
    for copy_path in (marked, edited):  # no formula is left in the copy for a chain to list
        with zipfile.ZipFile(copy_path) as copy:
            assert "xl/calcChain.xml" not in copy.namelist()
            listed = copy.read("[Content_Types].xml") + copy.read("xl/_rels/workbook.xml.rels")
            assert b"calcChain" not in listed
    sheet = openpyxl.load_workbook(edited)["登记表"]
    assert (sheet["A5"].value, sheet["A5"].data_type, sheet["A6"].data_type) == ("2", "s", "n")


def test_a_csv_register_gets_a_workbook_of_text_cells_on_its_line_numbers(tmp_path: Path) -> None:
    register = tmp_path / "名单.csv"
    lines = ["XX社区 居民名单", "姓名,身份证号,联系电话,民族,医保类型"]
    lines += [f"张{i},{GOOD[i]},1390000000{i},汉族,职工医保" for i in range(3)]
    lines[3] = f"李四,{BAD_CHECK},13900000001,汉族,职工医保"
    register.write_text("\n".join(lines) + "\n", encoding="gb18030")
    paths = write_reports(tmp_path / "out", prepare_batch([register], load_settings(None)))
    book = openpyxl.load_workbook(paths["annotated_名单.xlsx"])
    sheet = book.worksheets[0]
    assert [c.value for c in sheet[2]] == ["姓名", "身份证号", "联系电话", "民族", "医保类型", "问题说明"]
    assert sheet["B3"].value == GOOD[0] and sheet["B3"].data_type == "s" and sheet["B3"].number_format == "@"
    assert sheet["B4"].fill.fgColor.rgb == RED and "[10111]" in sheet["B4"].comment.text
    assert sheet["F4"].value.startswith("[10111]") and sheet.freeze_panes == "A3"
    assert book.sheetnames[-1] == "说明"


def test_edits_of_a_csv_register_are_written_in_its_copy_on_their_cells(tmp_path: Path) -> None:
    """A CSV's copy is laid out column by column in Arrow: each value on its line, an edit over its cell
    (two in one row, one in the first column, one on the last line), nothing else moved."""
    register = tmp_path / "名单.csv"
    lines = ["XX社区 居民名单", "姓名,身份证号,联系电话,民族,医保类型"]
    lines += [f"张{i},{GOOD[i]},1390000000{i},汉族,职工医保" for i in range(4)]
    lines[3] = f"李四,{BAD_CHECK},13900000001,汉族,职工医保"
    register.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = ReportData(prepare_batch([register], load_settings(None)), submitted=False)
    edits = {("", 4, 1): GOOD[5], ("", 4, 2): "13900000009", ("", 6, 3): "回族", ("", 3, 0): "=1+1"}
    path = annotate.write_annotated(tmp_path / "copy.xlsx", str(register), data, [0], edits)
    rows = [list(row) for row in openpyxl.load_workbook(path).worksheets[0].iter_rows(values_only=True)]
    assert rows[1][:5] == ["姓名", "身份证号", "联系电话", "民族", "医保类型"]
    expected = [
        ["=1+1", GOOD[0], "13900000000", "汉族", "职工医保"],
        ["李四", GOOD[5], "13900000009", "汉族", "职工医保"],
        ["张2", GOOD[2], "13900000002", "汉族", "职工医保"],
        ["张3", GOOD[3], "13900000003", "回族", "职工医保"],
    ]
    assert [row[:5] for row in rows[2:6]] == expected and len(rows) == 6
    sheet = openpyxl.load_workbook(path).worksheets[0]
    assert sheet["A3"].data_type == "s" and sheet["A3"].value == "=1+1"  # text, never a formula


@pytest.mark.parametrize(
    ("stem", "sheet"),
    [("'名单'", "名单"), ("名单" + "😀" * 20, "名单" + "😀" * 14), ("名单[1]:\x01", "名单_1___")],
    ids=["apostrophes", "emoji", "control"],
)
def test_a_csv_whose_name_excel_takes_for_no_sheet_name_gets_its_copy(
    tmp_path: Path, stem: str, sheet: str
) -> None:
    # An apostrophe at either end, more than 31 UTF-16 units (an emoji is two) or a control character
    # made xlsxwriter refuse the sheet name: an internal error, and no report at all.
    register = tmp_path / f"{stem}.csv"
    lines = ["姓名,身份证号,联系电话,民族,医保类型", f"李四,{BAD_CHECK},13900000001,汉族,职工医保"]
    register.write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths = write_reports(tmp_path / "out", prepare_batch([register], load_settings(None)))
    [copy] = [path for name, path in paths.items() if name.startswith("annotated_")]
    assert openpyxl.load_workbook(copy).sheetnames == [sheet, "说明"]


def test_a_csv_whose_lines_run_to_a_stray_value_far_right_gets_a_copy_without_its_empty_cells(
    tmp_path: Path,
) -> None:
    """Excel saves every line of a sheet with one value in column DKJ with 3,000 values each: the copy writes
    the register's cells and that value, not millions of empty ones (6,000 such lines took 7 GB)."""
    register = tmp_path / "名单.csv"
    lines = ["姓名,身份证号,联系电话,民族,医保类型" + "," * 2995]
    lines += [f"张{i},{GOOD[i]},1390000000{i},汉族,职工医保" + "," * 2995 for i in range(3)]
    lines[1] += "备忘"
    lines[2] = f"李四,{BAD_CHECK},13900000001,汉族,职工医保" + "," * 2995
    register.write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths = write_reports(tmp_path / "out", prepare_batch([register], load_settings(None)))
    with zipfile.ZipFile(paths["annotated_名单.xlsx"]) as package:
        cells = re.findall(rb'<c r="([A-Z]+)([0-9]+)"', package.read("xl/worksheets/sheet1.xml"))
    assert len(cells) == 4 * 7  # the register's five columns, the stray value's, the 问题说明 column
    assert (b"DKJ", b"2") in cells and (b"DKK", b"3") in cells  # the stray value and its row's reasons
    book = openpyxl.load_workbook(paths["annotated_名单.xlsx"])
    sheet = book.worksheets[0]
    assert sheet["B2"].value == GOOD[0] and sheet["B2"].number_format == "@" and sheet["DKJ2"].value == "备忘"
    assert sheet["B3"].fill.fgColor.rgb == RED and sheet["DKK3"].value.startswith("[10111]")


def test_a_web_page_saved_as_xls_gets_a_workbook_of_text_cells_on_its_rows(tmp_path: Path) -> None:
    register = tmp_path / "导出.xls"
    cells = ["姓名", "身份证号", "联系电话", "民族", "医保类型"]
    rows = [[f"张{i}", GOOD[i], f"1390000000{i}", "汉族", "职工医保"] for i in range(3)]
    rows[1][1] = BAD_CHECK
    table = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in [cells, *rows])
    register.write_text(f'<html><meta charset="utf-8"><table><tr><td>标题</td></tr>{table}</table></html>')
    paths = write_reports(tmp_path / "out", prepare_batch([register], load_settings(None)))
    book = openpyxl.load_workbook(paths["annotated_导出.xlsx"])
    sheet = book.worksheets[0]
    assert [c.value for c in sheet[2]] == [*cells, "问题说明"]
    assert sheet["B4"].fill.fgColor.rgb == RED and "[10111]" in sheet["B4"].comment.text
    legend = " ".join(str(r[0]) for r in book["说明"].iter_rows(values_only=True))
    assert "网页格式" in legend


#: An .xls saved by LibreOffice: 姓名 民族 身份证号码 联系电话 医疗费用支付方式 健康档案号; 张三 with
#: =NA() for the ID number and 123 shown as 000000, 李四 with 7578300123 shown as 0000-00000000 and 4567
#: as 000000.
LOOKUP_XLS = (
    "eNrtWGtsVEUUPnP30bt9bgsoFKwrCpS24K4VaK3YloKAYktowUcqUOotrSzdprQJJD4WEX8INRJ+wA8SQwLEhEQxJhKjifQfPzSY"
    "GOKTpBBNNKBZjQaJtOt3zp27bNdt0i1oovZszp05Zx5nZs6cx+yn5wqHjr5TfJFSoIZcNBL3kTeJp4A+h/ATGZo3Eo/HHXZ8Ev5V"
    "MKxL1qEb+vMAWedZQFPrNluXk/Dfg3UUwa+PArSCulH20i7KBG7DjUmebzxjRsbZb7wwKX/i8tl/sx93AdPZP/t7tv8cYC4wD5gP"
    "LLBDABUCi4BTgFOB0+ROEN0OnA6cASwGzgTOAt4BLAHeCQwA79LruVuXjHNRnwcs1bwylOWTPuhvAZ8JLXo99EHex6xy0f1F3IhT"
    "7kG5F5eArdTDd6OhLdwe+KdgmayhTfEazuCSLkVN0RFw8+lt4X4o36Vy+wB1FKjSN/oJo07WPiDf2fLNJx5/WsZ8JZwQ7uE3cstf"
    "FyNQlKUaqI3C1EVb4Ae70KOYzrJ9vSg92DpUvbRwr5trDY6SDVtSjeKHI7CKZvTpph2oNdAj9KhwGqjEnUvH2C5XWt1Wb1u4xJ1D"
    "x1lfQYES9xQ6wabJROuCoIYhscpj9Fs8kOQBzgSYz6KF/+v4+EaGfPrf8Y/h7NKdc7ndP5bKnz8Gv2IMftkYfF9avsdZj5m6zuM2"
    "353KP/EX/kEDRJTiXPqjLikLo14pi6JuKadEs6ScGvXEN4uF7UWsOMyhBGaV17K+eT+mVPgNKhNI1DKg6DI9xVEktk4keWMcLViy"
    "86pIxkrKibGdf4StmLRbISqZZ1QdvnVU8rPfjksm4pOJuGNehTldpwMSp3LFvNRnT+a1oCgMn7M8pE6+Ntw4uO9qs9qJZbVE/3hu"
    "Uf+FfSapmuZD/dUDpf33Wl80vm8VbEJXa+3pje2dqzqvNmN4YJOvEcVqzIJ4GKqsDt1Xef+ixUuqMM2a6HdP1zRfaEJ749avN2C1"
    "oVAQv1B1dTBYGVzCEEcozaVv3fay2s1pwBuXZZouDY63tl/2j/LLudjJMzgz9mSFck5+nMaChlmXLy0urt0k/OgNZdMc1h1VqN1o"
    "GXSXyYhy+b4kfZ14vUd4L8t3bmL897XzkuqliXqsdn5S/Sj8qw+rItGvAWkVanqud8/g5qFap1S0Hi0mPS/bJvWqWaB3mi+Fi5wd"
    "moZf1ytsr6kKhKfS8IwU3rDkKc4x2pQCpRKUAcpIUC5QrgTlBuVOUB5QHk0pmdOboHjOLJE9Q3bM+iiTLIz0buqzdVcXGs3EQBbB"
    "6dQLBlMepEk/KbvNEBHZ5FCOCJtiEZx+uQwOYi5JrU79+EDN9Xq7PXleQ+bduJLoCq3lpcVW2dckZmpT4l0WkCsWlCTOHSsVvi/m"
    "T5MoGpQt43gMH8dDRhG957WjLdGDonZO6Qq0CkmHOtoKO9xqJk+knOQ0e7QIhazOlW3nsH7TsL2O3fQw54yPdbX3RnZEOvoCK3a2"
    "W+FA9ZIFLW1brHDYEpUs6+roqLqZ3FnZDmfCMBInuQVp5qWhvW/8cq2p03/ygEnl8979ko/8sM6tlT5EvnOrdJ7dqo+nU+fbfdp/"
    "RXXevV/n6j8M2zk0j4n0WN09u3aGSefV3B7UczuQWo/+/vmVda9cUMn1W71/5hjnPzl/ZOFM/8FD2H/FtbeWs2Wl8Fr1O8Hx9P6k"
    "Pa5J+Ab7rcDtVbq9LuntwmdV39Ozwerd0RXpHn1GfL6VC0M0CenhVr7/RX8pNpxujOg0x64/Dum9tA0ZN69jW8brLxIHaes5nsG7"
    "ut907LQBcrfjhdOENTw7IfmupDf4eMbMBq5O+IkmvAesCeuPXX6m7/979FtdXiV4W/Rj/9vx5mDdr8Yt6BCdMKcP75UIOGNDqZbv"
    "yeD85wDPJuQvh4R2WYMlNzCz9VRNYP/zgW9O/v8j8CcVLD/S"
)


def test_an_xls_rebuilt_shows_error_cells_and_padded_numbers_as_excel_showed_them(tmp_path: Path) -> None:
    # The copy rebuilt from calamine's values had a blank red cell where the clerk's sheet showed #N/A
    # (commented 身份证号码“#N/A”…), and 123 where it showed 000123.
    register = tmp_path / "lookup.xls"
    register.write_bytes(zlib.decompress(base64.b64decode("".join(LOOKUP_XLS))))
    paths = write_reports(tmp_path / "out", prepare_batch([register], load_settings(None)))
    sheet = openpyxl.load_workbook(paths["annotated_lookup.xlsx"])["名单"]
    assert [c.value for c in sheet[2]][:6] == ["张三", "汉族", "#N/A", "13912345678", "职工医保", "000123"]
    assert [c.value for c in sheet[3]][:6] == [
        "李四",
        "汉族",
        "110101199003077777",
        "0075-78300123",
        "职工医保",
        "004567",
    ]
    assert sheet["C2"].fill.fgColor.rgb == RED and "#N/A" in sheet["C2"].comment.text
    assert sheet["D3"].fill.fgColor.rgb == RED


def test_an_excel_95_workbook_in_gbk_is_rebuilt_with_its_names_and_text_as_excel_shows_them(
    tmp_path: Path,
) -> None:
    # calamine reads an Excel 95 workbook's GBK text one byte a character: the copy is rebuilt from
    # the text and sheet names decoded in its code page, not from calamine's.
    register = excel95_xls(
        tmp_path / "旧系统.xls",
        {
            "名单": [
                ["姓名", "民族", "身份证号码", "联系电话", "医保类型"],
                ["张三", "汉族", "110101199003077770", "13912345678", "职工医保"],
            ]
        },
    )
    paths = write_reports(tmp_path / "out", prepare_batch([register], load_settings(None)))
    book = openpyxl.load_workbook(paths["annotated_旧系统.xlsx"])
    assert book.sheetnames[0] == "名单"
    sheet = book["名单"]
    assert [c.value for c in sheet[1]][:5] == ["姓名", "民族", "身份证号码", "联系电话", "医保类型"]
    resident = ["张三", "汉族", "110101199003077770", "13912345678", "职工医保"]
    assert [c.value for c in sheet[2]][:5] == resident
    assert sheet["C2"].fill.fgColor.rgb == RED and "身份证号码" in sheet["C2"].comment.text


def _rewritten(register: Path, target: Path, change: Any, part: str = "xl/worksheets/sheet1.xml") -> Path:
    """A copy of ``register`` at ``target`` whose ``part`` is ``change``d."""
    with zipfile.ZipFile(register) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = old.read(info.filename)
            new.writestr(info, change(data) if info.filename == part else data)
    return target


def test_a_package_that_cannot_be_followed_is_regenerated_and_says_so(
    annotated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logged: list[str]
) -> None:
    register, _, _ = annotated
    empty = b'<?xml version="1.0"?><styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"/>'
    styles_free = _rewritten(register, tmp_path / "odd.xlsx", lambda _: empty, part="xl/styles.xml")
    batch = prepare_batch([styles_free], load_settings(None))
    paths = write_reports(tmp_path / "out", batch)
    book = openpyxl.load_workbook(paths["annotated_odd.xlsx"])
    legend = " ".join(str(r[0]) for r in book["说明"].iter_rows(values_only=True))
    assert "重新生成" in legend and "没有保留" in legend
    assert any("无法在原文件上直接标注" in line for line in logged)
    assert book["登记表"]["E5"].fill.fgColor.rgb == RED


@pytest.mark.parametrize("name", ["登记表.xls", "登记表.xlsb"])
def test_an_xlsx_under_another_workbooks_name_is_marked_up_as_the_xlsx_it_is(
    annotated, tmp_path: Path, name: str
) -> None:
    """Read by its content, so annotated by it too: the copy keeps the clerk's sheets and marks them."""
    register, copy, _ = annotated
    misnamed = tmp_path / name
    misnamed.write_bytes(register.read_bytes())
    paths = write_reports(tmp_path / "out", prepare_batch([misnamed], load_settings(None)))
    book = openpyxl.load_workbook(paths["annotated_登记表.xlsx"])
    expected = openpyxl.load_workbook(copy)
    assert book.sheetnames == expected.sheetnames  # marked in place: the clerk's 字典 sheet is still there
    for cell, colour in MARKED.items():
        assert book["登记表"][cell].fill.fgColor.rgb == colour, cell
    legend = " ".join(str(r[0]) for r in book["说明"].iter_rows(values_only=True))
    assert "重新生成" not in legend


def _as_macro_workbook(register: Path, target: Path) -> Path:
    """``register`` as Excel saves it with macros: a VBA project, its relationship, the macro type."""
    with zipfile.ZipFile(register) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = old.read(info.filename)
            if info.filename == "[Content_Types].xml":
                data = data.replace(b"spreadsheetml.sheet.main+xml", b"PLACEHOLDER")
                data = data.replace(
                    b"application/vnd.openxmlformats-officedocument.PLACEHOLDER",
                    b"application/vnd.ms-excel.sheet.macroEnabled.main+xml",
                )
                vba = b'<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>'
                data = data.replace(b"</Types>", vba + b"</Types>")
            if info.filename == "xl/_rels/workbook.xml.rels":
                data = data.replace(
                    b"</Relationships>",
                    b'<Relationship Id="rId99" Type="http://schemas.microsoft.com/office/2006/relationships/'
                    b'vbaProject" Target="vbaProject.bin"/></Relationships>',
                )
            new.writestr(info, data)
        new.writestr("xl/vbaProject.bin", b"\xd0\xcf\x11\xe0" + bytes(508))
    return target


def test_a_macro_workbooks_copy_is_an_xlsx_excel_opens_without_the_macros(annotated, tmp_path: Path) -> None:
    """Excel refuses an .xlsx whose workbook part says it holds macros: the copy is a plain workbook."""
    register, _, _ = annotated
    macro = _as_macro_workbook(register, tmp_path / "登记表.xlsm")
    paths = write_reports(tmp_path / "out", prepare_batch([macro], load_settings(None)))
    with zipfile.ZipFile(paths["annotated_登记表.xlsx"]) as package:
        names = set(package.namelist())
        types = package.read("[Content_Types].xml")
        rels = package.read("xl/_rels/workbook.xml.rels")
    assert "xl/vbaProject.bin" not in names and b"vbaProject" not in rels
    assert b"macroEnabled" not in types and b"spreadsheetml.sheet.main+xml" in types
    book = openpyxl.load_workbook(paths["annotated_登记表.xlsx"])
    for cell, colour in MARKED.items():
        assert book["登记表"][cell].fill.fgColor.rgb == colour, cell
    legend = " ".join(str(r[0]) for r in book["说明"].iter_rows(values_only=True))
    assert "宏" in legend and "重新生成" not in legend


def _with_macro_sheet(register: Path, target: Path) -> Path:
    """``register`` (an .xlsm) with an Excel 4.0 macro sheet run by Auto_Open, as such a workbook is saved."""
    sheet_type = "http://schemas.microsoft.com/office/2006/relationships/xlMacrosheet"
    override = (
        b'<Override PartName="/xl/macrosheets/sheet1.xml"'
        b' ContentType="application/vnd.ms-excel.macrosheet+xml"/>'
    )
    with zipfile.ZipFile(register) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = old.read(info.filename)
            if info.filename == "[Content_Types].xml":
                data = data.replace(b"</Types>", override + b"</Types>")
            elif info.filename == "xl/_rels/workbook.xml.rels":
                link = f'<Relationship Id="rId97" Type="{sheet_type}" Target="macrosheets/sheet1.xml"/>'
                data = data.replace(b"</Relationships>", link.encode() + b"</Relationships>")
            elif info.filename == "xl/workbook.xml":
                sheet = b'<sheet name="Macro1" sheetId="9" state="hidden" r:id="rId97"/>'
                data = data.replace(b"</sheets>", sheet + b"</sheets>")
                name = b'<definedName name="_xlnm.Auto_Open">Macro1!$A$1</definedName>'
                data = data.replace(b"</definedNames>", name + b"</definedNames>")
            new.writestr(info, data)
        new.writestr(
            "xl/macrosheets/sheet1.xml",
            '<xm:macrosheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:xm="http://schemas.microsoft.com/office/excel/2006/main"><sheetData><row r="1">'
            '<c r="A1"><f>EXEC("calc.exe")</f></c></row></sheetData></xm:macrosheet>',
        )
    return target


def test_a_workbook_with_excel_4_macro_sheets_is_refused_saying_so_and_how_to_copy_the_table_out(
    annotated, tmp_path: Path
) -> None:
    """Such a workbook cannot be read (calamine refuses it): it was "damaged or incomplete", a copy fetched
    again would be refused the same."""
    from pipeline.reading.register import read_register

    register, _, _ = annotated
    macro = _with_macro_sheet(_as_macro_workbook(register, tmp_path / "有宏.xlsm"), tmp_path / "登记表.xlsm")
    with pytest.raises(InputError) as refused:
        read_register(macro)
    message = str(refused.value)
    assert "Excel 4.0 宏表" in message and "移动或复制" in message and "登记表.xlsm" in message
    assert "损坏" not in message and "\n" not in message


def test_xml_text_never_lets_markup_or_forbidden_characters_through() -> None:
    assert markup.xml_text("a<b>&c\x07_x0041_") == b"a&lt;b&gt;&amp;c_x0007__x005F_x0041_"
    assert check_character(GOOD[0][:17]) == GOOD[0][17]


def test_comment_boxes_are_sized_to_their_text() -> None:
    from pipeline.reports.xlsx.comments import box_sizes
    from pipeline.text.arrow import text_array

    widths, heights = box_sizes(text_array(["短", "一行很长的说明" * 10, "三\n行\n字"]))
    assert widths[0] < widths[1] and heights[1] > heights[0] and heights[2] > heights[0]
    assert widths.max() <= 420 and widths.min() >= 140


def test_comments_and_their_shapes_are_made_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault in every cell of a register gives millions of comments: their XML at once took gigabytes."""
    import numpy as np

    from pipeline.reports.xlsx import comments as notes
    from pipeline.text.arrow import text_array

    texts = text_array([f"第{i}条<说明>" for i in range(35)])
    many = notes.Comments(np.arange(35) // 5, np.arange(35) % 5, texts)
    whole_entries = b"".join(notes.comment_entries(many))
    whole_shapes = b"".join(notes.note_shapes(many, 1025))
    monkeypatch.setattr(notes, "COMMENTS_PER_SLICE", 10)
    entries, shapes = list(notes.comment_entries(many)), list(notes.note_shapes(many, 1025))
    assert [piece.count(b"<comment ") for piece in entries] == [10, 10, 10, 5]
    assert [piece.count(b"<v:shape ") for piece in shapes] == [10, 10, 10, 5]
    assert b"".join(entries) == whole_entries and b"".join(shapes) == whole_shapes


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_comment_parts_made_in_slices_are_the_parts_made_at_once(
    annotated, suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.reports.xlsx import comments as notes

    register = annotated[0]
    if suffix == ".csv":
        register = tmp_path / "登记表.csv"
        rows = python_calamine.CalamineWorkbook.from_path(str(annotated[0])).get_sheet_by_index(0).to_python()
        register.write_text("\n".join(",".join(str(v) for v in row) for row in rows), encoding="utf-8")
    parts = []
    for per_slice in (notes.COMMENTS_PER_SLICE, 2):
        monkeypatch.setattr(notes, "COMMENTS_PER_SLICE", per_slice)
        paths = write_reports(tmp_path / f"out{per_slice}", prepare_batch([register], load_settings(None)))
        with zipfile.ZipFile(paths["annotated_登记表.xlsx"]) as copy:
            parts.append({n: copy.read(n) for n in copy.namelist() if "comments" in n or n.endswith(".vml")})
    assert parts[0] and parts[0] == parts[1]


def test_io_of_the_markup_is_streamed(annotated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register, copy, _ = annotated
    monkeypatch.setattr(markup, "READ_BYTES", 13)
    batch = prepare_batch([register], load_settings(None))
    paths = write_reports(tmp_path / "out", batch)
    with zipfile.ZipFile(copy) as whole, zipfile.ZipFile(paths["annotated_登记表.xlsx"]) as pieces:
        assert whole.read("xl/worksheets/sheet1.xml") == pieces.read("xl/worksheets/sheet1.xml")


def test_cells_written_without_their_reference_are_still_found(annotated, tmp_path: Path) -> None:
    """The format lets a writer leave out a cell's ``r``: the cell is then the one after the previous."""
    register, copy, _ = annotated
    bare = tmp_path / "bare.xlsx"
    with zipfile.ZipFile(register) as old, zipfile.ZipFile(bare, "w") as new:
        for info in old.infolist():
            data = old.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(rb'(<c\b[^>]*?) r="[A-Z]+[0-9]+"', rb"\1", data)
            new.writestr(info, data)
    paths = write_reports(tmp_path / "out", prepare_batch([bare], load_settings(None)))
    sheet = openpyxl.load_workbook(paths["annotated_bare.xlsx"])["登记表"]
    expected = openpyxl.load_workbook(copy)["登记表"]
    for coordinate, colour in MARKED.items():
        assert sheet[coordinate].fill.fgColor.rgb == colour, coordinate
        assert sheet[coordinate].value == expected[coordinate].value
    assert sheet["K3"].value == "问题说明" and sheet["K5"].value == expected["K5"].value


def _reversed_rows(xml: bytes) -> bytes:
    head, rest = xml.split(b"<sheetData>", 1)
    body, tail = rest.split(b"</sheetData>", 1)
    rows = re.findall(rb"<row\b.*?</row>", body, re.S)
    return head + b"<sheetData>" + b"".join(reversed(rows)) + b"</sheetData>" + tail


def _row_in_a_comment(xml: bytes) -> bytes:
    return xml.replace(b"<sheetData>", b'<sheetData><!-- <row r="9"><c r="A9"/></row> -->', 1)


@pytest.mark.parametrize("change", [_reversed_rows, _row_in_a_comment])
def test_rows_the_marks_cannot_follow_make_a_regenerated_copy_not_lost_marks(
    annotated, tmp_path: Path, change: Any
) -> None:
    """Rows out of order, or a row tag in a comment: marked in place, the marks would be lost or misplaced."""
    register, _, _ = annotated
    odd = _rewritten(register, tmp_path / "odd.xlsx", change)
    paths = write_reports(tmp_path / "out", prepare_batch([odd], load_settings(None)))
    book = openpyxl.load_workbook(paths["annotated_odd.xlsx"])
    for coordinate, colour in MARKED.items():
        assert book["登记表"][coordinate].fill.fgColor.rgb == colour, coordinate
    legend = " ".join(str(r[0]) for r in book["说明"].iter_rows(values_only=True))
    assert "重新生成" in legend


@pytest.mark.parametrize("setting", ['hidden="1"', 'width="9" customWidth="1"'])
def test_the_reason_column_is_shown_whatever_the_clerk_set_for_the_columns_around_it(
    annotated, tmp_path: Path, setting: str
) -> None:
    """Hiding the unused columns, or one width for the whole sheet, is a <col> over the reason's column."""
    register, _, _ = annotated

    def whole_sheet(xml: bytes) -> bytes:
        xml = re.sub(rb"<cols>.*?</cols>", b"", xml, flags=re.S)
        cols = f'<cols><col min="1" max="16384" {setting}/></cols>'.encode()
        return xml.replace(b"<sheetData>", cols + b"<sheetData>", 1)

    odd = _rewritten(register, tmp_path / "cols.xlsx", whole_sheet)
    paths = write_reports(tmp_path / "out", prepare_batch([odd], load_settings(None)))
    sheet = openpyxl.load_workbook(paths["annotated_cols.xlsx"])["登记表"]
    assert sheet["K3"].value == "问题说明"
    reason = sheet.column_dimensions["K"]
    assert not reason.hidden and reason.width == 60
    assert sheet.column_dimensions["L"].min == 12 and sheet.column_dimensions["L"].max == 16384
    assert sheet.column_dimensions["A"].max == 10  # the clerk's setting kept on either side


def test_rows_of_fixed_height_are_made_tall_enough_for_their_reason(annotated, tmp_path: Path) -> None:
    register, _, _ = annotated

    def fixed(xml: bytes) -> bytes:
        xml = re.sub(rb'\s(?:ht|customHeight)="[^"]*"', b"", xml)
        return re.sub(rb"<row\b", b'<row ht="15" customHeight="1"', xml)

    odd = _rewritten(register, tmp_path / "fixed.xlsx", fixed)
    paths = write_reports(tmp_path / "out", prepare_batch([odd], load_settings(None)))
    sheet = openpyxl.load_workbook(paths["annotated_fixed.xlsx"])["登记表"]
    from pipeline.reports.xlsx.markup import note_height

    for row in range(4, 11):
        reason = sheet[f"K{row}"].value
        height = sheet.row_dimensions[row].height
        if reason:
            assert height >= note_height(reason) > 15, row
        else:
            assert height == 15, row  # rows without a reason keep the clerk's height


def test_the_batchs_own_cell_edits_are_written_into_the_clerks_cells(annotated, tmp_path: Path) -> None:
    """The web workspace's edits (``Batch.cell_edits``) land in the clerk's cells, as text, in their style."""
    import pandas as pd

    register, _, _ = annotated
    batch = prepare_batch([register], load_settings(None))
    batch.cell_edits = pd.DataFrame(
        {"row_id": [1, 4], "field": ["sfzhm", "brdh"], "value": [GOOD[1], "=2+2"]}
    )
    paths = write_reports(tmp_path / "out", batch)
    sheet = openpyxl.load_workbook(paths["annotated_登记表.xlsx"])["登记表"]
    assert sheet["E5"].value == GOOD[1] and sheet["E5"].data_type == "s" and sheet["E5"].number_format == "@"
    assert sheet["F8"].value == "=2+2" and sheet["F8"].data_type == "s"
    assert sheet["A5"].value is None and sheet["A5"].data_type != "f"  # the formula had no saved result


@pytest.mark.parametrize("limit", [("CSV_ROW_LIMIT", 2), ("CSV_TEXT_LIMIT", 200)])
def test_a_csv_too_long_for_a_copy_gets_none_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: tuple[str, int]
) -> None:
    monkeypatch.setattr(annotate, *limit)  # too many rows, or too much text (wide rows) to hold for a copy
    register = tmp_path / "名单.csv"
    rows = [f"张{i},{GOOD[i]},1390000000{i},汉族,职工医保" for i in range(3)]
    register.write_text("姓名,身份证号,联系电话,民族,医保类型\n" + "\n".join(rows) + "\n", encoding="utf-8")
    paths = write_reports(tmp_path / "out", prepare_batch([register], load_settings(None)))
    assert list(paths) == ["results.xlsx", "errors.xlsx", "results.csv"]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["errors.xlsx", "results.csv", "results.xlsx"]


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_a_register_with_more_faulty_cells_than_a_copy_may_hold_gets_none_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, logged: list[str]
) -> None:
    # Every faulty cell was held for the copy until the end: 100,000 rows of garbage (1.6 million faulty
    # cells) took 5 GB and 1 min 46 s for a copy of 2 GB of XML no spreadsheet opens in useful time.
    header = ["姓名", "身份证号", "联系电话", "民族", "医保类型"]
    rows = [[f"张{i}", "123", "1", "火星族", "职工医保"] for i in range(3)]  # 3 faulty cells a row
    register = tmp_path / f"名单{suffix}"
    if suffix == ".csv":
        register.write_text("\n".join(",".join(row) for row in [header, *rows]) + "\n", encoding="utf-8")
    else:
        book = openpyxl.Workbook()
        for row in [header, *rows]:
            book.active.append(row)
        book.save(register)
    batch = prepare_batch([register], load_settings(None))
    faulty = len(batch.faults)
    assert faulty >= 9
    monkeypatch.setattr(annotate, "MARK_LIMIT", faulty)
    copy = "annotated_名单.xlsx"
    assert copy in write_reports(tmp_path / "held", batch)
    monkeypatch.setattr(annotate, "MARK_LIMIT", faulty - 1)
    paths = write_reports(tmp_path / "out", prepare_batch([register], load_settings(None)))
    assert list(paths) == ["results.xlsx", "errors.xlsx", "results.csv"]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["errors.xlsx", "results.csv", "results.xlsx"]
    assert any(f"未生成 {copy}" in line and f"有问题的单元格超过 {faulty - 1} 个" in line for line in logged)


def test_checking_an_annotated_copy_again_marks_only_what_is_still_wrong(
    annotated, tmp_path: Path, logged: list[str]
) -> None:
    # Marked in place, the mended E5 stayed red with its old comment, the old reasons stayed in a first
    # 问题说明 column beside a second, and a second legend sheet 说明2 was added.
    _, copy, _ = annotated
    mended = openpyxl.load_workbook(copy)
    mended["登记表"]["E5"] = GOOD[1]  # the mistyped ID number put right in the copy
    again = tmp_path / "annotated_again.xlsx"
    mended.save(again)
    paths = write_reports(tmp_path / "out", prepare_batch([again], load_settings(None)))
    assert any("标注副本" in line and "重新生成" in line for line in logged)
    book = openpyxl.load_workbook(paths["annotated_annotated_again.xlsx"])
    assert book.sheetnames == ["登记表", "说明"]
    sheet = book["登记表"]
    headers = [cell.value for cell in sheet[3]]
    assert headers.count("问题说明") == 1 and headers.index("问题说明") == 10  # where the old one was
    cell = sheet["E5"]
    assert cell.value == GOOD[1] and cell.fill.fgColor.rgb != RED and cell.comment is None
    assert sheet["K5"].value in (None, "")  # its old reason is gone
    still = {ref for ref in MARKED if ref != "E5"}
    assert {ref for ref in still if sheet[ref].fill.fgColor.rgb == MARKED[ref]} == still
    assert "10115" in str(sheet["K10"].value)  # row 10 still repeats row 4's ID number
    legend = " ".join(str(r[0]) for r in book["说明"].iter_rows(values_only=True))
    assert "重新生成" in legend and "已清除" in legend
    with open(paths["results.csv"], encoding="utf-8-sig") as handle:  # nor do old reasons reach results
        assert "问题说明" not in handle.readline()


def test_a_marked_cell_with_the_clerks_own_comment_is_told_apart_in_the_legend(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "登记表"
    sheet.append(["姓名", "身份证号", "联系电话", "民族", "医保类型"])
    sheet.append(["张三", BAD_CHECK, "13900000001", "汉族", "职工医保"])
    sheet["B2"].comment = Comment("请核对此号码", "clerk")
    register = tmp_path / "登记表.xlsx"
    book.save(register)
    paths = write_reports(tmp_path / "out", prepare_batch([register], load_settings(None)))
    copy = openpyxl.load_workbook(paths["annotated_登记表.xlsx"])
    assert copy["登记表"]["B2"].comment.text == "请核对此号码"  # the clerk's, as it was
    legend = " ".join(str(c.value) for row in copy["说明"].iter_rows() for c in row if c.value)
    assert "原来就有您的批注的除外" in legend and "每个红色单元格都有批注" not in legend
