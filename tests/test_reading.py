"""Reading registers: workbooks and delimited text, header detection, and every bad input."""

from __future__ import annotations

import base64
import codecs
import datetime as dt
import os
import random
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence, Set
from contextlib import AbstractContextManager
from pathlib import Path

import openpyxl
import pytest
from conftest import log_lines
from hostile import compound_file, excel95_xls, write_ods

from pipeline.errors import InputError
from pipeline.model import FIELD_ONLY
from pipeline.reading import biff, delimited, html
from pipeline.reading.delimited import utf16_codec
from pipeline.reading.register import open_register, read_register
from pipeline.reading.table import column_letter

HEADER = ["序号", "姓名", "民族", "身份证号码", "联系电话", "医保类型"]


def _workbook(
    path: Path, sheets: Mapping[str, Sequence[Sequence[object]]], merges: dict[str, list[str]] | None = None
) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
        for cells in (merges or {}).get(name, []):
            sheet.merge_cells(cells)
    book.save(path)
    return path


def _values(table, column: str) -> list[str]:
    return table.data[column].tolist()


def _one_line_error(excinfo: pytest.ExceptionInfo[InputError], *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


def _warnings() -> AbstractContextManager[list[str]]:
    """The warnings logged while the block runs."""
    return log_lines("WARNING")


def _rewrite_sheet(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Rewrite the first sheet's XML of workbook ``path`` in place, as another writer would have it."""
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    parts["xl/worksheets/sheet1.xml"] = change(parts["xl/worksheets/sheet1.xml"])
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)


def _refusal(path: Path, *fragments: str) -> str:
    """The one-line error reading ``path`` gives, which names every fragment."""
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    return _one_line_error(excinfo, *fragments)


# --- workbooks -------------------------------------------------------------------------------------------


def test_title_rows_merged_cells_and_blank_rows_above_the_header_are_skipped(tmp_path: Path) -> None:
    rows: list[Sequence[object]] = [
        ["某某社区卫生服务中心电子健康卡申领登记表"],
        ["填报单位：某某社区", None, None, "填报日期：2024年1月"],
        [],
        HEADER,
        [1, "张三", "01", "420123196205184516", "13912343273", "职工医保"],
        [],
        [2, "李四", "02", "110101199003077777", "13800000000", "居民医保"],
        [None, None, None, None, None, None],
    ]
    path = _workbook(tmp_path / "register.xlsx", {"登记表": rows}, {"登记表": ["A1:F1", "A2:C2"]})
    [table] = read_register(path)
    assert table.sheet == "登记表"
    assert table.header_row == 4
    assert table.headers == HEADER
    assert table.column_positions == [0, 1, 2, 3, 4, 5]
    assert table.source_row.tolist() == [5, 7]  # the blank row 6 and the empty trailing row are not rows
    assert _values(table, "姓名") == ["张三", "李四"]
    assert list(table.data.index) == [0, 1]
    assert table.label == "register.xlsx[登记表]"


def test_rows_of_nothing_but_spaces_or_zero_width_marks_are_blank_rows(tmp_path: Path) -> None:
    """A cell "cleared" with a zero-width space or a BOM pasted from a web page shows nothing."""
    rows: list[Sequence[object]] = [
        HEADER,
        [1, "张三", "01", "420123196205184516", "13912343273", "职工医保"],
        [None, "\u200b", None, "\ufeff", " \u00a0"],
        [None, "\u3000", "\u2060\u200b", None, "\t"],
        [2, "李四", "02", "110101199003077777", "13800000000", "居民医保"],
    ]
    [table] = read_register(_workbook(tmp_path / "register.xlsx", {"登记表": rows}))
    assert table.source_row.tolist() == [2, 5]
    path = tmp_path / "register.csv"
    path.write_text("\n".join(",".join(str(v or "") for v in row) for row in rows) + "\n", encoding="utf-8")
    [table] = read_register(path)
    assert table.source_row.tolist() == [2, 5]


@pytest.mark.parametrize("ending", ["\x1a", "\r\n\x1a", "\x1a\r\n"])
def test_the_ctrl_z_a_dos_tool_writes_at_the_end_of_a_csv_is_no_row(tmp_path: Path, ending: str) -> None:
    """Old tools end a text file with Ctrl-Z (SUB): a spreadsheet shows nothing there; no resident."""
    lines = ["姓名,民族,身份证号码,联系电话,医保类型", "张三,01,420123196205184516,13912343273,职工医保"]
    path = tmp_path / "register.csv"
    path.write_bytes(("\r\n".join(lines) + ending).encode("gbk"))
    [table] = read_register(path)
    assert table.source_row.tolist() == [2]


def test_a_sheet_asked_of_a_text_register_is_said_to_be_none(tmp_path: Path) -> None:
    """--sheet with a CSV: the whole file is read, and the clerk is told so, not left to think it picked."""
    path = tmp_path / "名单.csv"
    path.write_text("姓名,民族,身份证号码,联系电话,医保类型\n张三,01,420123196205184516,13912343273,职工医保\n")
    with _warnings() as logged:
        [_source] = open_register(path, sheet="二组")
    (warning,) = logged
    assert "名单.csv" in warning and "--sheet 二组" in warning and "整个文件" in warning
    with _warnings() as logged:
        open_register(path)
    assert logged == []


def test_cells_become_the_text_a_clerk_typed(tmp_path: Path) -> None:
    rows: list[Sequence[object]] = [
        ["姓名", "民族", "身份证号码", "出生日期", "发卡时间", "是否实名", "联系电话", "备注"],
        [
            "张三",
            "01",
            420123196205184000,
            dt.date(1962, 5, 18),
            dt.datetime(2024, 1, 2, 9, 30),
            True,
            13912343273,
            1.5,
        ],
        ["李四", 1, "110101199003077777", "1990-03-07", "", False, "13800000000", " 保留空格 "],
    ]
    [table] = read_register(_workbook(tmp_path / "cells.xlsx", {"Sheet1": rows}))
    assert _values(table, "民族") == ["01", "1"]  # text keeps its zero; a number never had one
    assert _values(table, "身份证号码") == ["4.20123196205184E+17", "110101199003077777"]
    assert _values(table, "出生日期") == ["1962-05-18", "1990-03-07"]
    assert _values(table, "发卡时间") == ["2024-01-02", ""]
    assert _values(table, "是否实名") == ["TRUE", "FALSE"]
    assert _values(table, "联系电话") == ["13912343273", "13800000000"]
    assert _values(table, "备注") == ["1.5", " 保留空格 "]
    assert str(table.data["姓名"].dtype) == "str"


def test_a_whole_column_of_numbers_or_dates_converts(tmp_path: Path) -> None:
    rows: list[Sequence[object]] = [["姓名", "民族", "身份证号码", "出生日期"]]
    rows += [
        [f"人{i}", i % 56 + 1, 420123196205184000 + i * 10**6, dt.date(1960, 1, 1 + i)] for i in range(20)
    ]
    [table] = read_register(_workbook(tmp_path / "numbers.xlsx", {"S": rows}))
    assert _values(table, "民族")[:3] == ["1", "2", "3"]
    assert _values(table, "身份证号码")[0] == "4.20123196205184E+17"
    assert _values(table, "出生日期")[-1] == "1960-01-20"


def test_headerless_columns_with_data_get_a_name_and_duplicates_a_suffix(tmp_path: Path) -> None:
    rows: list[Sequence[object]] = [
        ["姓名", "身份证号码", None, "备注", "备注", None],
        ["张三", "420123196205184516", "旁注", "甲", "乙", None],
    ]
    [table] = read_register(_workbook(tmp_path / "names.xlsx", {"S": rows}))
    assert table.headers == ["姓名", "身份证号码", "列C", "备注", "备注_2"]
    assert table.column_positions == [0, 1, 2, 3, 4]
    assert _values(table, "备注_2") == ["乙"]


def test_header_not_in_column_a_keeps_sheet_positions(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet["C3"], sheet["D3"], sheet["E3"] = "姓名", "身份证号码", "民族"
    sheet["C4"], sheet["D4"], sheet["E4"] = "张三", "420123196205184516", "汉族"
    book.save(tmp_path / "offset.xlsx")
    [table] = read_register(tmp_path / "offset.xlsx")
    assert table.header_row == 3
    assert table.column_positions == [2, 3, 4]
    assert table.source_row.tolist() == [4]


def test_two_header_rows_under_a_merged_address_cell_are_combined(tmp_path: Path) -> None:
    rows: list[Sequence[object]] = [
        ["姓名", "身份证号码", "现住址", None, None],
        [None, None, "省", "市", "区县"],
        ["张三", "420123196205184516", "湖北省", "武汉市", "江夏区"],
    ]
    path = _workbook(tmp_path / "two.xlsx", {"S": rows}, {"S": ["A1:A2", "B1:B2", "C1:E1"]})
    [table] = read_register(path)
    assert table.headers == ["姓名", "身份证号码", "省", "市", "区县"]
    assert table.header_row == 2
    assert table.source_row.tolist() == [3]


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_a_single_sub_header_under_a_group_title_is_part_of_the_header_not_a_resident(
    tmp_path: Path, suffix: str
) -> None:
    # 联系方式 over 手机号码, every other header cell merged down over two rows: the second header row
    # names one field only, and was read as a resident of no name, no ID number and 手机号码 for a phone.
    rows: list[list[str]] = [
        ["XX社区居民登记表", "", "", "", ""],
        ["姓名", "身份证号码", "民族", "联系方式", "医保类型"],
        ["", "", "", "手机号码", ""],
        ["张三", "420123196205184516", "汉族", "13912345678", "职工医保"],
    ]
    if suffix == ".xlsx":
        merges = ["A1:E1", "A2:A3", "B2:B3", "C2:C3", "E2:E3"]
        cells = [[value or None for value in row] for row in rows]
        path = _workbook(tmp_path / "two.xlsx", {"S": cells}, {"S": merges})
    else:
        path = tmp_path / "two.csv"
        path.write_text("\n".join(",".join(row) for row in rows) + "\n", encoding="utf-8")
    [table] = read_register(path)
    assert table.headers == ["姓名", "身份证号码", "民族", "手机号码", "医保类型"]
    assert (table.header_row, table.source_row.tolist()) == (3, [4])
    # A resident right below the header is still a resident, whatever it holds.
    rows[2] = ["李四", "", "", "", ""]
    path = tmp_path / "short.csv"
    path.write_text("\n".join(",".join(row) for row in rows) + "\n", encoding="utf-8")
    [table] = read_register(path)
    assert (table.header_row, table.source_row.tolist()) == (2, [3, 4])


def test_vertically_merged_data_cells_repeat_their_value(tmp_path: Path) -> None:
    rows: list[Sequence[object]] = [
        ["姓名", "身份证号码", "详细地址"],
        ["张三", "420123196205184516", "幸福村3组"],
        ["张小三", "420123201001014513", None],
        ["合计：2人", None, None],
    ]
    path = _workbook(tmp_path / "merged.xlsx", {"S": rows}, {"S": ["C2:C3", "A4:C4"]})
    [table] = read_register(path)
    # The merged "合计" footer is not a resident: it is dropped, the merged address still repeats.
    assert _values(table, "详细地址") == ["幸福村3组", "幸福村3组"]
    assert table.source_row.tolist() == [2, 3]


def test_sheet_choice(tmp_path: Path) -> None:
    notes = [
        ["填表说明"],
        ["1", "身份证号码一列请设为文本格式", "以免丢失末尾数字"],
        ["2", "民族填名称或代码", "如 汉族 或 01"],
    ]
    data = [["姓名", "身份证号码"], ["张三", "420123196205184516"]]
    other = [["姓名", "身份证号码"], ["李四", "110101199003077777"]]
    sheets = {"说明": notes, "空表": [], "一组": data, "仅表头": [data[0]], "二组": other}
    path = _workbook(tmp_path / "sheets.xlsx", sheets)
    assert [t.sheet for t in read_register(path)] == ["一组"]  # not the instructions before it
    assert [t.sheet for t in read_register(path, all_sheets=True)] == ["一组", "二组"]
    [second] = read_register(path, sheet="二组")
    assert _values(second, "姓名") == ["李四"]
    [named] = read_register(path, sheet="说明")  # asked for by name, it is read as it is
    assert named.headers[:2] == ["1", "身份证号码一列请设为文本格式"]
    with pytest.raises(InputError) as excinfo:
        read_register(path, sheet="三组")
    _one_line_error(excinfo, "sheets.xlsx", "三组", "说明、空表、一组、仅表头、二组")
    with pytest.raises(InputError) as excinfo:
        read_register(path, sheet="仅表头")
    _one_line_error(excinfo, "工作表 仅表头", "只有表头")
    with pytest.raises(InputError) as excinfo:
        read_register(path, sheet="空表")
    _one_line_error(excinfo, "工作表是空的")


def test_a_sheet_is_found_whatever_case_or_full_width_brackets_the_clerk_typed(tmp_path: Path) -> None:
    """Excel takes Sheet2 and sheet2 for one name; a Chinese input method types （） for ()."""
    data = [["姓名", "身份证号码"], ["张三", "420123196205184516"]]
    other = [["姓名", "身份证号码"], ["李四", "110101199003077777"]]
    path = _workbook(tmp_path / "sheets.xlsx", {"Sheet1": data, "二组(东)": other})
    [table] = read_register(path, sheet="sheet1")
    assert table.sheet == "Sheet1" and _values(table, "姓名") == ["张三"]
    [table] = read_register(path, sheet=" 二组（东） ")
    assert table.sheet == "二组(东)" and _values(table, "姓名") == ["李四"]


def test_a_sheet_is_found_whatever_invisible_marks_its_name_was_pasted_with(tmp_path: Path) -> None:
    # A tab renamed by pasting from a web page or a chat keeps a zero-width space no one can see: the
    # error listed the sheets, "三组" among them, yet --sheet 三组 found none.
    data = [["姓名", "身份证号码"], ["张三", "420123196205184516"]]
    sheets = {"说明": [["填表说明"]], "三组\u200b": data, "\ufeff四组": data}
    path = _workbook(tmp_path / "pasted.xlsx", sheets)
    [table] = read_register(path, sheet="三组")
    assert table.sheet == "三组\u200b" and _values(table, "姓名") == ["张三"]
    [table] = read_register(path, sheet="四组")
    assert table.sheet == "\ufeff四组"


def test_a_register_with_only_its_header_is_reported_over_an_instructions_sheet(tmp_path: Path) -> None:
    notes = [
        ["填表说明"],
        ["请按表头填写", "每人一行", "不要合并单元格"],
        ["序号可留空", "电话填手机", "民族填名称"],
    ]
    path = _workbook(tmp_path / "template.xlsx", {"说明": notes, "登记表": [HEADER]})
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "工作表 登记表", "只有表头")


def test_without_a_recognised_header_the_first_sheet_with_rows_is_read(tmp_path: Path) -> None:
    rows = [["甲列", "乙列", "丙列"], ["1", "2", "3"]]
    path = _workbook(tmp_path / "plain.xlsx", {"空": [], "一": rows, "二": rows})
    assert [t.sheet for t in read_register(path)] == ["一"]
    assert [t.sheet for t in read_register(path, all_sheets=True)] == ["一", "二"]


def test_hidden_sheets_are_not_registers(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    hidden = book.active
    hidden.title = "字典"
    hidden.append(["姓名", "民族", "性别"])
    hidden.append(["x", "汉族", "男"])
    hidden.sheet_state = "hidden"
    visible = book.create_sheet("登记")
    visible.append(["姓名", "身份证号码"])
    visible.append(["张三", "420123196205184516"])
    book.save(tmp_path / "hidden.xlsx")
    assert [t.sheet for t in read_register(tmp_path / "hidden.xlsx", all_sheets=True)] == ["登记"]
    [named] = read_register(tmp_path / "hidden.xlsx", sheet="字典")
    assert _values(named, "民族") == ["汉族"]


def test_unknown_headers_fall_back_to_the_first_text_row(tmp_path: Path) -> None:
    rows = [["名单"], ["甲列", "乙列", "丙列"], ["1", "2", "3"]]
    [table] = read_register(_workbook(tmp_path / "plain.xlsx", {"S": rows}))
    assert table.headers == ["甲列", "乙列", "丙列"]
    assert table.source_row.tolist() == [3]


def test_column_letters() -> None:
    assert [column_letter(i) for i in (0, 5, 25, 26, 51, 701, 702)] == [
        "A",
        "F",
        "Z",
        "AA",
        "AZ",
        "ZZ",
        "AAA",
    ]


#: A legacy .xls (BIFF8) workbook saved by LibreOffice: title row, blank row, header on row 3, an ID
#: number stored as a number, a date cell; zlib-compressed and base64-encoded.
LEGACY_XLS = (
    "eNrtWGtsVEUUPnPv3e3dPrcFBAu2KwoU2pLdNEpRoYUWLYlSpRWRNEJptw/YPlKKofG1iCRGHj74gT9IDElJTEiQxkR/aJT+44cG"
    "EkPii6SQmEjgx2o0DWq7fufcucu2bpNuQRO1Z3PuzJy5M3Puec9evJA/cnKo8ApNgofJpPG4j7xJNAX0uQM/kaFp4/F43CXHZ+Ff"
    "BWO6ZR1a0J8HyDrPANpat5m6nYX/HmymHvz6KUAbqBttHw1QOnAXLCZ5v+msGZ/me9OF2fNnfj7Hb47jJjCV/3O8Z//PAmYDc4C5"
    "wDwnBVA+sAA4BzgXOE9sgmg+cAHwbmAhcCFwEfAeYBGwGBgA3qv5uU+3jEvRXwYs0bQVaEtnY9DfAj4bWvR66JOcL1jlovsrsIiz"
    "1rDYxVVgE/WybdQ0R1oC/xSsFx6aFfNwDka6Bj1FJ0DNpQ+E+qk814j1AaopUKkteqtRLbwfkedieeYSr/9Y1nwrlBDs8Hux8rfE"
    "CRRlqBpqpgh10k7EwU68UUjn2b9ekTfYO9Q6meG3bm926YSz4V+qlsK0C7NbaC88owG9btpDRVY2DbI3PhbuDvc1R4qsfDrFnjgA"
    "aCrv6moqb20dEdcbpF/jgSQ3PxdgOu8v9F+mRzfSpNP/jj4I2aWSc6nzfmwyffkU9LIp6CumoPtS0j0uP/ZkPk85dOsW/ZiBQZTi"
    "3PqjprT5Ua+0BVFL2jnRDGnnRj3xHeIuB2FubZwX4CMvPH/20GFsqfAbVjaQqPGIouu0jVNCbLOc5I1x6OeT3StCMlZQVoyd9nOw"
    "bNN+hRRjn1PVeFZT0U9+J8nYMHEbScQeRZ75g96RxJMjAUpdbF878FADs9LxOrz6zedGG9B89WxOI5r8yIWwh9Tpo2Obhg+NNqh9"
    "YPa3p4r3/hAubke3Mfr7iw/svXwIbwa2+zaBv2AI/U3t320BT6FQEL/Q6tXBYEVwFQNyHw/LgxXlwVVIgqGKyqCGOBJjDg1ZTmJs"
    "secBb1nFPN0anD2dKOufEGWzIZxWCI3jUr4Iyg9xlNcsun71wcKq7UKP3tIqLWHlUZnaj5lha4WsKJXnq/Kum30PCO01eS5NrP+x"
    "allSvyTRj1UtT+qfRLT0gSsSBRs4rUwtyPYeGN4xUuW2ip7GjE0vyWeTesPO01+a68Q5cr/QNvw6Ipc5MVDlCc2Q+Yk0MwXNmkQb"
    "k0rEFS2PDBmpxEhhZCRGBkZmYmRiZCVGFkaexMiDEXP8MrRlSnXj1XOm7JmRGBmYY3mZ+FoTvzy6+PVndfWbj9c4ay1UP0ar0vMe"
    "qZPq5t+45lvP85bsnal3s2Rvnz7Xkr29iTlzwpsWRlmJEe/L0r9BT7IFxeoc64nZ2sX4oDwyY0E5z4qVCN0X86eoBg3KlHW8hiWy"
    "1iigj7xOSiV6RKyB67Y8kYx7AKAd/tluJ2+k3Ao0c9q1q0JVZ2Y6NazfNpxA5Uw9yjXjE50tfT17etr6Axv2tYQjgdWryhubd4Yj"
    "kbCIan1nW1vl7dTOyolRM4bxOImnpNiXRg6+9/PN+g7/6bdtKl324TesjXd1ba20fNki6nSd3aQl16Hr7X5dc0d16Dusa/VrY04N"
    "zWt6esPdvQP7IqTrap4P6r1d+Et/69AZb/SySu7f6e9ninHpy0snVi70HzuO7y+7eaaWo8MkWpO+J7jJwZ/0jY/rewnpuwLPV+r5"
    "6qS7C8tqXW/vlnDfns6e7okyYvlWrAzRLKSGO3n/F/1N8uFUa0SnWU7/GZzeR7tRcTMfu9Pmv0DivKPneBr36m2266c1OLcLN5x6"
    "8LBrRuebSXfw6axZDNyYiBP1uA+EZ6w/zl7p3v/v13d1J1s34L7RhV+z6H4jrKBNdMKUftxXekCZGkr0+Z405L8EeD5xfi1OaBEe"
    "wmKB6fFTOYPvXw58f/b/H4E/Aa3QNko="
)


@pytest.mark.parametrize("name", ["legacy.xls", "legacy_saved_as.xlsx"])
def test_legacy_xls_even_under_an_xlsx_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(zlib.decompress(base64.b64decode("".join(LEGACY_XLS))))
    [table] = read_register(path)
    assert table.header_row == 3
    assert table.source_row.tolist() == [4, 5]
    assert table.data.values.tolist() == [
        ["1", "张三", "01", "4.20123196205184E+17", "1962-05-18", "13912343273"],
        ["2", "李四", "1", "110101199003077777", "1990-03-07", "13800000000"],
    ]


#: An .xls saved by LibreOffice (as Excel 97-2003): below a title, 姓名 身份证号码 职业 联系电话
#: 健康档案号 序号; 张三 with =NA() (twice), 7578300123 as 0000-00000000, 123 as 000000, 7; 李四 with
#: =1/0 and 4567 as "NO."00000000, 9.5.
LOOKUP_XLS = (
    "eNrtWFtslEUUPvP/u9t/t7dtAYEC61oFCi1kG6IUENpSEFBsSVvwkgYodXuRpduUYiBqXESMEfASHjSRxJBw0ZBojYk8qLF940Ej"
    "ieFBkaTwpEHNajSESLt+5/zzL9tlm3QLMRF7NuefmTOXMzPnOnv+26Kh45+UXKY0WEEmjSS85EmhKaDXafiJDE0bSSQSDjkxCf8p"
    "GNYly9AF+bmBLPMcoKVl69PlJNx90EhR/PooSGupG2Uv7aNs4B5oTOp645kzMs5x44VJ/hPnz/6b/bgJzGT/7O/Z/nOBecB8YAGw"
    "0A4BVAQsBk4BTgVOE50gmg6cAZwJLAHOAs4GzgEGgPcCg8D7gKV6Tw/oknE+6mXABZpWjrJi0g/dcfBakKLHTZ/nf80iF9lfhkb0"
    "uwZFL64AW6iHdaOuNdIW/LdgteyhVfEeBqCkK1FTdAzUAvpYqF/Id6VoH6CGglVao580amTvR+RbKt8C4vlnZc4PQqmEHv4oWv6W"
    "GIGiHFVHrRShLtoBP9iFESV0ju3rJRnB1qFqpYdH3V5vaBRv2JKqFz8chVU0YUw37Uatjh6lx4RSRwFXHp1gu1wX7g73tkYCril0"
    "km0xBGhZFNIQcOXSKRaj0yym02y1pfUNi0udQUNiqyfor0QwxS8MBJnOGxL6n+OjG1nS6X9HP4G7y3TP5fb4eDp9wRj0ijHoC8eg"
    "ezPS3c5+rPR9nrTprnT6qTHop2+hHzXQiFGCS3/MlLIo5pGyOOaSckosR8qpMXdiu9jjQUSWDznwwAjzmzc3HcaSCr9BZQGJmo8o"
    "ukpPc8yJNwonT5xjC3N23iCpuIRy4+wVvsIRLdqvEMOsAVWDbw0FfvfbUcxCNLMQpaxrML4bsDyfjnQeUuc7Vu1b3vT8c/2HOl+D"
    "2/juqfxmN6kzbwzXDx661qT2grYxVlKPXTbH/n7hwT2XDqE7vOns1rbO9Z3XmtD95lYpgtu89SjqOy5uwYYqK0P4VS5bFgotCS1l"
    "SICjj4rddmxts6YBb+rJNF0avC3bUftHOeo8HP8ZXAu7tiK5Cj8OvKhu9tUrD5VUbxN67KacaS6LhyrUfvQMuhbKjHL5vixjnQB+"
    "QGivyHdecv5P1fNT6mXJerx6QUr9OByuF7siEaEBbhVqRp7nwOD2oWqnVLQZPRa9KMcm9bpVqE9aQFqu+oSW4ddOvcJ2o6pQaEr6"
    "R9OMDDQzjTYsInaulltKWirZUmgZyZaBlplsmWi5ki0XWu5ky42WR7cMWTNHeM+Um2UZLZRUzT6oSbU+3Wlk7jQNDlmmJFP9vy5f"
    "caP2S4Q6A1yn02+KE7CApGvMzxR+luZuCj+vcJ+DlikMclIY5FBA8XQPL2liyRm0dR0vebGAl/yFNvGU+HpboeKWtis+eyGZ8ZDk"
    "f654mdC9cX+GHNMgn8zjOXxJq4xi+sxjB2qih0VBOBsslM07DAAdMMoOK3Uh5eS1vgx8FDJC02fnwH7LsP2Q3fUI55yPd7X1RndH"
    "2/uCa/e2hSPBZUsXNbfuCEciYZHW6q729qrbyb2V7YImDCMJEjXLsC4NHXz/j+sNnf4zb1tUPv/T7/ne39W5udI3yeq4XufpLfqO"
    "OnW+3qdz9pjO2w/rXP/nYTsH5znRnnB3z769EdJ5OfeH9NoO3FJ/b/uxxlcvqdT6nT4/U4wL31w4tniW/+g7OH/F9Y/WsMKn0Vr0"
    "O8Px/f6UM27U7xrSbw3ur9L9NSlvH76r2p6eLeHe3V3R7tF3xPe7ZHEl3a1wJ9//cv9pNphpDsukJteuPwHuvbQTGTfvY2fW+y8W"
    "D2rLKZHFu7rfcuysDnx34YXTgD08OyH+ZsobfDxz7gduSNp5A94D4QnLj4NNtu//ufqtLq8SvC324Py78OZg2W+AFrSLTJjSh/dK"
    "FJSxoUzzd2dx//OA55L814BDm+whLBqY3X6qJnB+jrUfTP7/I/APxSA6IA=="
)


def test_an_xls_reads_error_cells_and_numbers_padded_with_zeros_as_excel_shows_them(tmp_path: Path) -> None:
    # calamine reads an .xls's #N/A as empty (the lookup's blank passed) and 000123 as 123.
    path = tmp_path / "lookup.xls"
    path.write_bytes(zlib.decompress(base64.b64decode("".join(LOOKUP_XLS))))
    [table] = read_register(path)
    assert table.header_row == 2 and table.source_row.tolist() == [3, 4]
    assert table.data.values.tolist() == [
        ["张三", "#N/A", "#N/A", "0075-78300123", "000123", "7"],
        ["李四", "110101199003077777", "", "#DIV/0!", "NO.00004567", "9.5"],
    ]
    # The same under an .xlsx name (judged by its content); damaged records leave calamine's reading.
    assert (
        read_register(path.rename(tmp_path / "lookup.xlsx"))[0].data.values.tolist()
        == table.data.values.tolist()
    )
    damaged = bytearray(path.with_suffix(".xlsx").read_bytes())
    damaged[0x30:0x34] = b"\xff\xff\xff\x7f"  # the directory nowhere
    (tmp_path / "damaged.xls").write_bytes(damaged)
    assert biff.xls_facts(tmp_path / "damaged.xls") == {}


def test_an_excel_95_workbook_in_a_chinese_code_page_reads_as_excel_shows_it(tmp_path: Path) -> None:
    # calamine read an Excel 5.0/95 (BIFF5) workbook's GBK text one byte a character ("张三" became
    # "\ufffd\x00\ufffd\x00…", the sheet's name too): the register was refused for want of a header.
    path = excel95_xls(
        tmp_path / "旧系统导出.xls",
        {
            "说明": [["本表由系统导出，请勿修改"]],
            "居民名单": [
                ["某社区居民名单"],
                ["姓名", "身份证号码", "联系电话", "民族"],
                ["张三", "420123196205184516", 13912343273.0, "汉族"],
                ["李四", "110101199003077777", "13800000000", "01"],
            ],
        },
    )
    [table] = read_register(path)
    assert (table.sheet, table.header_row, table.source_row.tolist()) == ("居民名单", 2, [3, 4])
    assert table.data.values.tolist() == [
        ["张三", "420123196205184516", "13912343273", "汉族"],
        ["李四", "110101199003077777", "13800000000", "01"],
    ]
    assert read_register(path, sheet="居民名单")[0].data.values.tolist() == table.data.values.tolist()
    with pytest.raises(InputError) as excinfo:
        read_register(path, sheet="名单")
    _one_line_error(excinfo, "找不到工作表", "说明、居民名单")
    # In a Western code page calamine reads it right, and still does.
    sheets: dict[str, list[list[str | float]]] = {"Zoë": [["xm", "sfzhm"], ["Zoë", "110101199003077777"]]}
    [table] = read_register(excel95_xls(tmp_path / "west.xls", sheets, codepage=1252, encoding="cp1252"))
    assert (table.sheet, table.data.values.tolist()) == ("Zoë", [["Zoë", "110101199003077777"]])


# --- delimited text --------------------------------------------------------------------------------------

CSV_LINES = [
    "某某社区电子健康卡申领登记表",
    "",
    "序号,姓名,民族,身份证号码,联系电话,医保类型",
    "1,张三,01,420123196205184516,13912343273,职工医保",
    "",
    "2,李四,02,110101199003077777,13800000000,居民医保",
    ",,,,,",
    "3,王五,01,440604196001011234,13700000000,自费",
    "",
]


@pytest.mark.parametrize(
    ("encoding", "newline"),
    [("utf-8", "\n"), ("utf-8-sig", "\r\n"), ("gbk", "\r\n"), ("gb18030", "\n")],
)
def test_csv_encodings_title_lines_and_line_numbers(tmp_path: Path, encoding: str, newline: str) -> None:
    path = tmp_path / "register.csv"
    path.write_bytes(newline.join(CSV_LINES).encode(encoding))
    [table] = read_register(path)
    assert table.sheet == ""
    assert table.label == "register.csv"
    assert table.header_row == 3
    assert table.headers == HEADER
    assert table.source_row.tolist() == [4, 6, 8]
    assert _values(table, "姓名") == ["张三", "李四", "王五"]
    assert _values(table, "民族") == ["01", "02", "01"]
    assert _values(table, "身份证号码")[0] == "420123196205184516"


@pytest.mark.parametrize(
    ("suffix", "delimiter"), [(".tsv", "\t"), (".txt", "\t"), (".csv", ";"), (".txt", "|")]
)
def test_delimiters_are_sniffed(tmp_path: Path, suffix: str, delimiter: str) -> None:
    lines = [
        "登记表",
        delimiter.join(HEADER),
        delimiter.join(["1", "张三", "01", "420123196205184516", "139", "自费"]),
    ]
    path = tmp_path / f"register{suffix}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    [table] = read_register(path)
    assert table.headers == HEADER
    assert _values(table, "身份证号码") == ["420123196205184516"]
    assert table.source_row.tolist() == [3]


@pytest.mark.parametrize("hint", ["sep=;", '"sep=;"'])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_excels_separator_line_is_no_row_so_rows_keep_the_numbers_excel_shows(
    tmp_path: Path, hint: str, newline: str
) -> None:
    # Excel reads a first line "sep=;" as the delimiter to use and shows no row for it: the header is
    # its row 1.  Counted as a title line, every row number was one past the row Excel showed.
    lines = [
        hint,
        ";".join(HEADER),
        ";".join(["1", "张三", "01", "420123196205184516", "139", "自费"]),
        ";".join(["2", "李四", "01", "110101199003077777", "138", "自费"]),
    ]
    path = tmp_path / "hint.csv"
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    [table] = read_register(path)
    assert (table.header_row, table.source_row.tolist()) == (1, [2, 3])
    assert _values(table, "姓名") == ["张三", "李四"]
    # Behind a BOM the line is no hint to Excel, which shows it as a row: so is it counted here.
    path.write_bytes(b"\xef\xbb\xbf" + newline.join(lines).encode() + newline.encode())
    [table] = read_register(path)
    assert (table.header_row, table.source_row.tolist()) == (2, [3, 4])


def test_quoted_values_with_commas_and_line_breaks_keep_spreadsheet_row_numbers(tmp_path: Path) -> None:
    text = (
        "姓名,身份证号码,备注\n"
        '张三,420123196205184516,"一,二"\n'
        '李四,110101199003077777,"第一行\n第二行"\n'
        "\n"
        "王五,440604196001011234,\n"
    )
    path = tmp_path / "quoted.csv"
    path.write_text(text, encoding="utf-8")
    [table] = read_register(path)
    assert _values(table, "备注") == ["一,二", "第一行\n第二行", ""]
    assert table.source_row.tolist() == [2, 3, 5]  # Excel shows 王五 on row 5 (on line 6 of the text)


@pytest.mark.parametrize("later", [0, 30, 200_000])
def test_a_quote_left_open_is_refused_not_allowed_to_swallow_the_rows_after_it(
    tmp_path: Path, later: int
) -> None:
    """Whether the open quote runs to the end of the file or to a quote some rows on."""
    people = [f"居民{n},男,汉族,4406041980010{n:05d},139{n:08d},职工医保" for n in range(12)]
    people[3] = '"' + people[3]  # a stray quote at the start of a row
    tail = [f'居民{n},男,汉族,4406041980020{n:05d},139{n:08d},"职工医保"' for n in range(later)]
    path = tmp_path / "open-quote.csv"
    path.write_text("\n".join(["姓名,性别,民族,身份证号,联系电话,医保类型", *people, *tail]) + "\n", "utf-8")
    with pytest.raises(InputError, match="引号不成对") as refused:
        read_register(path)
    assert "第 5 行" in refused.value.message


def test_a_note_of_several_lines_is_still_one_value(tmp_path: Path) -> None:
    path = tmp_path / "note.csv"
    note = "第一行，说明\n第二行, 再说明\n第三行"
    path.write_text(f'姓名,身份证号码,联系电话,备注\n张三,420123196205184516,13912345678,"{note}"\n', "utf-8")
    [table] = read_register(path)
    assert _values(table, "备注") == [note]


@pytest.mark.parametrize(
    ("set_aside", "batch_rows", "newline", "encoding"),
    [
        (10_000, 100_000, "\n", "utf-8"),  # Arrow, uneven rows put back in place
        (10_000, 100_000, "\r\n", "gbk"),
        (0, 100_000, "\r\n", "utf-8"),  # the csv module
        (0, 1, "\n", "gbk"),  # the csv module, one row per batch
    ],
)
def test_rows_of_uneven_width_are_padded_and_extra_values_kept(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    set_aside: int,
    batch_rows: int,
    newline: str,
    encoding: str,
) -> None:
    monkeypatch.setattr("pipeline.reading.delimited._MAX_UNEVEN_ROWS", set_aside)
    monkeypatch.setattr("pipeline.reading.delimited._CSV_BATCH_ROWS", batch_rows)
    lines = [
        "姓名,身份证号码,民族",
        "张三,420123196205184516",
        "",
        "李四,110101199003077777,01,多出来的",
        "王五,440604196001011234,汉族",
        '"赵,六",440604196001011234,"02"',
        "",
    ]
    path = tmp_path / "ragged.csv"
    path.write_bytes(newline.join(lines).encode(encoding))
    [table] = read_register(path)
    assert table.headers == ["姓名", "身份证号码", "民族", "列D"]
    assert _values(table, "姓名") == ["张三", "李四", "王五", "赵,六"]
    assert _values(table, "民族") == ["", "01", "汉族", "02"]
    assert _values(table, "列D") == ["", "多出来的", "", ""]
    assert table.source_row.tolist() == [2, 4, 5, 6]


def test_columns_named_in_the_header_are_kept_when_every_row_stops_short(tmp_path: Path) -> None:
    # Rows that leave out their empty trailing fields lost the header's last columns: "缺少必需的列 联系电话"
    # for a register whose header names it, and the clerk's 备注 column vanished from the reports.
    path = tmp_path / "short.csv"
    path.write_text(
        "姓名,身份证号码,民族,联系电话,备注\n张三,420123196205184516\n李四,110101199003077777,01\n"
    )
    [table] = read_register(path)
    assert table.headers == ["姓名", "身份证号码", "民族", "联系电话", "备注"]
    assert _values(table, "民族") == ["", "01"] and _values(table, "联系电话") == ["", ""]
    assert table.column_positions == [0, 1, 2, 3, 4]


def test_csv_text_is_kept_as_written(tmp_path: Path) -> None:
    path = tmp_path / "text.csv"
    path.write_text("姓名,身份证号码,民族\nNA,4.20123E+17, 01 \n", encoding="utf-8")
    [table] = read_register(path)
    assert table.data.iloc[0].tolist() == ["NA", "4.20123E+17", " 01 "]


def test_gbk_after_a_long_ascii_start_is_still_gbk(tmp_path: Path) -> None:
    ascii_rows = "".join(f"{i},420123196205184516,01\n" for i in range(80_000))
    path = tmp_path / "late.csv"
    path.write_bytes(("xm,sfzhm,mzdm\n" + ascii_rows + "张三,110101199003077777,01\n").encode("gbk"))
    [table] = read_register(path)
    assert _values(table, "xm")[-1] == "张三"
    assert table.source_row[-1] == 80_002


# --- bad input: one line of Chinese naming the file and the fix --------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        read_register(tmp_path / "nowhere.xlsx")
    _one_line_error(excinfo, "nowhere.xlsx", "找不到文件", "处理办法")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(InputError) as excinfo:
        read_register(tmp_path / "folder.csv")
    _one_line_error(excinfo, "folder.csv", "文件夹")


@pytest.mark.parametrize("name", ["empty.xlsx", "empty.csv"])
def test_zero_byte_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputError) as excinfo:
        read_register(tmp_path / name)
    _one_line_error(excinfo, name, "空的")


def test_blank_csv(tmp_path: Path) -> None:
    (tmp_path / "blank.csv").write_bytes(b"\xef\xbb\xbf\r\n  \r\n")
    with pytest.raises(InputError) as excinfo:
        read_register(tmp_path / "blank.csv")
    _one_line_error(excinfo, "blank.csv", "空的")


def test_workbook_without_any_data(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "nothing.xlsx", {"Sheet1": [], "Sheet2": []})
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "nothing.xlsx", "空的")


def test_header_only_workbook(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "header.xlsx", {"登记表": [["标题"], HEADER, [None] * 6]})
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "header.xlsx", "工作表 登记表", "只有表头，没有数据行", "处理办法")


@pytest.mark.parametrize("body", ["", "\n", "\n,,,,,\n\n"])
def test_header_only_csv(tmp_path: Path, body: str) -> None:
    path = tmp_path / "header.csv"
    path.write_text("标题\n" + ",".join(HEADER) + body, encoding="utf-8")
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "header.csv", "只有表头")


def test_csv_named_xlsx(tmp_path: Path) -> None:
    path = tmp_path / "fake.xlsx"
    path.write_text("姓名,身份证号码\n张三,420123196205184516\n", encoding="utf-8")
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "fake.xlsx", "不是 Excel 工作簿", ".csv")


@pytest.mark.parametrize("name", ["saved_as.csv", "legacy_saved_as.txt"])
def test_workbook_named_csv_is_named_for_what_it_is(tmp_path: Path, name: str) -> None:
    # A workbook renamed to .csv was reported as text in an unknown encoding, asking for a re-save as CSV.
    if name.startswith("legacy"):
        data = zlib.decompress(base64.b64decode("".join(LEGACY_XLS)))
    else:
        book = _workbook(tmp_path / "book.xlsx", {"S": [HEADER, [1, "张三", "01", "x", "y", "z"]]})
        data = book.read_bytes()
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    message = _one_line_error(excinfo, name, "Excel 工作簿", "扩展名")
    assert "编码" not in message


#: A web system's "导出Excel": a layout table, then the register under a title row, a header cell
#: spanning two columns, a line break and an entity in cells, a footer.
_EXPORTED_PAGE = """<html><head><meta http-equiv="Content-Type" content="text/html; charset=gb2312"></head>
<body><table><tr><td>导出时间：2026-12-01</td></tr></table>
<table border=1>
<tr><td colspan="5">某某社区居民登记表</td></tr>
<tr><th>姓名</th><th>身份证号码</th><th colspan="2">联系电话</th><th>备注</th></tr>
<tr><td> 张三 </td><td style="mso-number-format:'\\@'">420123196205184516</td><td>13912343273</td><td></td>
    <td>一<br>二 &amp; 三</td></tr>
<tr><td>李四</td><td>110101199003077777</td><td>13800000000</td><td></td><td></td></tr>
</table></body></html>"""


def test_a_web_page_saved_as_xls_is_read_as_the_sheet_excel_shows(tmp_path: Path) -> None:
    path = tmp_path / "export.xls"
    path.write_bytes(_EXPORTED_PAGE.encode("gb18030"))
    [table] = read_register(path)
    assert table.header_row == 2 and table.headers[:3] == ["姓名", "身份证号码", "联系电话"]
    assert table.data["姓名"].tolist() == ["张三", "李四"]
    assert table.data["身份证号码"].tolist() == ["420123196205184516", "110101199003077777"]
    assert table.data["备注"].tolist() == ["一\n二 & 三", ""]
    assert list(table.source_row) == [3, 4]


def test_an_export_split_into_several_tables_loses_no_resident(tmp_path: Path) -> None:
    header = "<tr><td>姓名</td><td>身份证号码</td><td>联系电话</td></tr>"
    page = (
        f"<html><body><table>{header}<tr><td>张三</td><td>420123196205184516</td><td>139</td></tr></table>"
        f"<table>{header}<tr><td>李四</td><td>110101199003077777</td><td>138</td></tr></table>"
        "<table><tr><td>王五</td><td>440604196001011234</td><td>137</td></tr></table>"
        "<table><tr><td>制表人：某某</td></tr></table></body></html>"
    )
    path = tmp_path / "pages.xls"
    path.write_text(page, encoding="utf-8")
    [table] = read_register(path)
    # the repeated header and the footer are no rows
    assert table.data["姓名"].tolist() == ["张三", "李四", "王五"]
    assert list(table.source_row) == [2, 4, 5]


def test_cells_spanning_rows_in_a_page_leave_the_cells_below_in_their_columns(tmp_path: Path) -> None:
    # A two-level header (现住址 over 省 and 市, the others spanning both rows), a family's number and
    # address each spanning two residents: the second resident's cells were read one column to the left.
    page = (
        "<html><body><table>"
        '<tr><th rowspan="2">序号</th><th rowspan="2">姓名</th><th rowspan="2">身份证号码</th>'
        '<th colspan="2">现住址</th></tr><tr><th>省</th><th>市</th></tr>'
        '<tr><td rowspan="2">1</td><td>张三</td><td>420123196205184516</td>'
        '<td rowspan="2">广东省</td><td>佛山市</td></tr>'
        "<tr><td>李四</td><td>110101199003077777</td><td>广州市</td></tr>"
        "<tr><td>2</td><td>王五</td><td>440604196001011234</td>"
        '<td>湖北省</td><td rowspan="9">武汉市</td></tr>'
        "</table></body></html>"
    )
    path = tmp_path / "family.xls"
    path.write_text(page, encoding="utf-8")
    [table] = read_register(path)
    assert table.header_row == 2
    assert table.headers == ["序号", "姓名", "身份证号码", "省", "市"]
    assert table.data.values.tolist() == [
        ["1", "张三", "420123196205184516", "广东省", "佛山市"],
        ["1", "李四", "110101199003077777", "广东省", "广州市"],
        ["2", "王五", "440604196001011234", "湖北省", "武汉市"],
    ]
    assert list(table.source_row) == [3, 4, 5]


def test_pages_are_told_from_workbooks_and_text() -> None:
    assert html.looks_like_html(b"\xef\xbb\xbf <HTML><body>") and html.looks_like_html(b"<table><tr>")
    assert html.looks_like_html(b'<?xml version="1.0"?><!DOCTYPE html><html>')
    spreadsheet_ml = b'<?xml version="1.0"?><Workbook xmlns="urn:schemas-microsoft-com:office:spreadsheet">'
    assert not html.looks_like_html(spreadsheet_ml)
    assert not html.looks_like_html(b"PK\x03\x04") and not html.looks_like_html("姓名,身份证号\n".encode())


def test_an_xml_spreadsheet_2003_export_is_named_for_what_it_is_not_read_as_an_empty_page(
    tmp_path: Path,
) -> None:
    """A web system's "导出Excel" as SpreadsheetML holds ``<Table>`` near its start: it is no page."""
    rows = "".join(
        "<Row>" + "".join(f'<Cell><Data ss:Type="String">{v}</Data></Cell>' for v in values) + "</Row>"
        for values in (HEADER, ["张三", "男", "汉族", "19900102", "440606199001021238", "13912345678"])
    )
    path = tmp_path / "导出.xls"
    path.write_text(
        '<?xml version="1.0"?>\n<?mso-application progid="Excel.Sheet"?>\n'
        '<Workbook xmlns="urn:schemas-microsoft-com:office:spreadsheet" '
        'xmlns:ss="urn:schemas-microsoft-com:office:spreadsheet">'
        f'<Worksheet ss:Name="Sheet1"><Table>{rows}</Table></Worksheet></Workbook>',
        encoding="utf-8",
    )
    assert not html.looks_like_html(path.read_bytes()[:1024])
    message = _refusal(path, "导出.xls", "XML 电子表格 2003", "另存为 .xlsx")
    assert "没有数据行" not in message


@pytest.mark.parametrize(
    "tail",
    [
        "<script" + "x" * 1_000_000,
        "<a" + "b" * 500_000 + " " + "c" * 500_000,
        "<td" * 300_000,
        "<!--" * 300_000,
    ],
)
def test_a_hostile_page_is_refused_as_one_without_rows(tmp_path: Path, tail: str) -> None:
    """Pages cut to make a pattern give back what it took: each is read in one pass, then refused."""
    path = tmp_path / "export.xls"
    path.write_text("<html><table><tr><td>姓名</td><td>身份证号</td></tr><tr><td>" + tail, encoding="utf-8")
    _refusal(path, "export.xls", "没有数据行")


@pytest.mark.parametrize("span", ["99999999", "9" * 5000])  # 5,000 digits: more than int() takes from text
def test_a_page_cell_spanning_more_columns_than_a_sheet_has_is_refused(tmp_path: Path, span: str) -> None:
    path = tmp_path / "export.xls"
    cells = f'<td colspan="{span}">姓名</td><td>身份证号</td>'
    rows = f"<tr>{cells}</tr><tr><td>a</td><td>b</td></tr>"
    path.write_text(f"<html><table>{rows}</table></html>", encoding="utf-8")
    _refusal(path, "export.xls", "列", "16384")


@pytest.mark.parametrize(
    "rows",
    [
        '<tr><td colspan="50">x</td></tr>' * 100,  # 50 cells a row
        "<tr>" + '<td rowspan="60000">x</td>' * 50 + "</tr>" + "<tr><td>y</td></tr>" * 100,  # 50 down
    ],
    ids=["colspan", "rowspan"],
)
def test_a_page_whose_spans_ask_for_more_cells_than_its_bytes_could_hold_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: str
) -> None:
    # A few bytes of colspan or rowspan each spelled out thousands of cells: 660 KB of page took 5.8 GB.
    monkeypatch.setattr(html, "MAX_HTML_CELLS", 1000, raising=False)
    path = tmp_path / "export.xls"
    path.write_text(
        f"<html><table><tr><td>姓名</td><td>身份证号码</td></tr>{rows}</table></html>", encoding="utf-8"
    )
    _refusal(path, "export.xls", "网页格式的表格过大", "1,000 个单元格", "另存为 .xlsx")


def test_a_web_page_without_rows_or_too_large_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "export.xls"
    path.write_text("<html><body><table><tr><td>姓名</td></tr></table></body></html>", encoding="utf-8")
    _refusal(path, "export.xls", "网页", "没有数据行")
    # Rows below the header, every one empty (an export of nobody): an internal AssertionError.
    empty = "<tr><td></td><td> </td></tr><tr><td>&nbsp;</td><td></td></tr>"
    path.write_text(
        f"<html><table><tr><td>姓名</td><td>身份证号码</td></tr>{empty}</table></html>", encoding="utf-8"
    )
    _refusal(path, "export.xls", "网页", "没有数据行")
    monkeypatch.setattr(html, "MAX_HTML_BYTES", 10)
    _refusal(path, "export.xls", "网页", "过大", "另存为 .xlsx")


def test_truncated_xlsx(tmp_path: Path) -> None:
    whole = _workbook(tmp_path / "whole.xlsx", {"S": [HEADER, [1, "张三", "01", "x", "y", "z"]]}).read_bytes()
    path = tmp_path / "cut.xlsx"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "cut.xlsx", "损坏或不完整", "处理办法")


def test_zip_that_is_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "archive.xlsx", "不是 Excel 工作簿", "处理办法")


@pytest.mark.parametrize(
    ("name", "streams", "said"),
    [
        # Excel's "用密码进行加密" makes an .xlsx a compound file: named .xls, "encrypted or damaged".
        ("加密.xls", {"EncryptionInfo": b"\x04\x00\x04\x00", "EncryptedPackage": b"\x10"}, "设有打开密码"),
        ("加密.xlsx", {"EncryptionInfo": b"\x04\x00\x04\x00", "EncryptedPackage": b"\x10"}, "设有打开密码"),
        # A Word or PowerPoint file under a workbook's name was "encrypted, password-protected or damaged".
        ("登记表.xls", {"WordDocument": b"\xec\xa5", "1Table": b""}, "Word 文档"),
        ("登记表.xls", {"PowerPoint Document": b"\x00"}, "PowerPoint"),
    ],
)
def test_a_compound_file_that_is_no_workbook_is_named_for_what_it_is(
    tmp_path: Path, name: str, streams: dict[str, bytes], said: str
) -> None:
    path = tmp_path / name
    path.write_bytes(compound_file(streams))
    message = _refusal(path, name, said, "处理办法")
    assert "损坏" not in message, message


def _wide_csv(path: Path, *, named: int = 0, blank: int = 0) -> Path:
    header = ",".join(HEADER + [f"备注{j}" for j in range(named)]) + "," * blank
    row = ",".join(["1", "张三", "01", "420123196205184516", "13912343273", "01"] + ["x"] * named)
    path.write_text(f"{header}\n{row}{',' * blank}\n", encoding="utf-8")
    return path


def test_a_csv_wider_than_any_spreadsheet_is_refused(tmp_path: Path) -> None:
    # 17,000 columns of nothing: no spreadsheet wrote them; every later stage paid per column.
    path = _wide_csv(tmp_path / "commas.csv", blank=17_000)
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "commas.csv", "17006 列", "16384", "处理办法")


def test_a_csv_row_wider_than_any_spreadsheet_is_refused_where_it_is(tmp_path: Path) -> None:
    path = _wide_csv(tmp_path / "row.csv")
    with path.open("a", encoding="utf-8") as handle:
        handle.write("2,李四,01,110101199003077777,13800000000,01" + ",z" * 17_000 + "\n")
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "row.csv", "第 3 行", "16384", "处理办法")


def test_a_register_with_more_filled_columns_than_a_register_needs_is_refused(tmp_path: Path) -> None:
    # Each column costs every stage a few milliseconds: 16,384 of them took a one-row register 30 s.
    path = _wide_csv(tmp_path / "wide.csv", named=1_200)
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "wide.csv", "1206 列", "1000", "处理办法")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append([*HEADER, *(f"备注{j}" for j in range(1_100))])
    sheet.append([1, "张三", "01", "420123196205184516", "13912343273", "01"])
    book.save(tmp_path / "wide.xlsx")
    with pytest.raises(InputError) as excinfo:
        read_register(tmp_path / "wide.xlsx")
    _one_line_error(excinfo, "wide.xlsx", "工作表 Sheet", "1106 列", "1000", "删除")


def test_a_register_of_many_columns_is_still_read(tmp_path: Path) -> None:
    [table] = read_register(_wide_csv(tmp_path / "many.csv", named=900, blank=5_000))
    assert len(table.headers) == 906 and table.data["备注899"].tolist() == ["x"]


#: A register as Excel's "Unicode text" saves it (tabs): a title line, a value spanning lines, a blank line.
_UNICODE_TEXT = (
    '某社区居民登记表\r\n姓名\t身份证号码\t备注\r\n张三\t420123196205184516\t"两\r\n行"\r\n\r\n'
    "李四\t110101199003077777\t𠀋\r\n"  # a character outside the BMP: a surrogate pair in UTF-16
)


@pytest.mark.parametrize(
    ("encoding", "bom"), [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE),
                          ("utf-16-le", b""), ("utf-16-be", b"")],
)  # fmt: skip
def test_a_utf16_register_reads_as_its_utf8_twin(tmp_path: Path, encoding: str, bom: bytes) -> None:
    (tmp_path / "utf8.txt").write_bytes(_UNICODE_TEXT.encode("utf-8"))
    (tmp_path / "unicode.txt").write_bytes(bom + _UNICODE_TEXT.encode(encoding))
    [twin] = read_register(tmp_path / "utf8.txt")
    [whole] = read_register(tmp_path / "unicode.txt")
    [source] = open_register(tmp_path / "unicode.txt")  # the streaming path of a long register
    [streamed] = list(source.read(1))
    for table in (whole, streamed):
        assert table.header_row == twin.header_row == 2 and table.headers == twin.headers
        assert table.data["备注"].tolist() == ["两\r\n行", "𠀋"] == twin.data["备注"].tolist()
        assert table.data["姓名"].tolist() == ["张三", "李四"]
        assert list(table.source_row) == list(twin.source_row) == [3, 5]  # as Excel shows them


@pytest.mark.parametrize("piece", [1 << 20, 7])  # 7 bytes: every piece ends inside a character
def test_a_utf16_register_with_a_broken_character_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    monkeypatch.setattr(delimited, "_TRANSCODE_BYTES", piece)
    lines = ["姓名,身份证号码\n", "张三,420123196205184516\n", "李四,110101199003077777\n"]
    good = b"".join(line.encode("utf-16-le") for line in lines[:2])
    broken = good + b"\x00\xd8" + lines[2].encode("utf-16-le")
    path = tmp_path / "broken.csv"
    path.write_bytes(codecs.BOM_UTF16_LE + broken)  # a lone high surrogate at the start of line 3
    _refusal(path, "broken.csv", "第 3 行", "UTF-16", "处理办法")


def test_a_utf32_register_is_refused_with_how_to_save_it(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes("姓名,身份证号码\n张三,420123196205184516\n".encode("utf-32"))
    _refusal(path, "wide.csv", "UTF-32", "UTF-8", "GBK")


def test_binary_with_nul_bytes_is_not_taken_for_utf16() -> None:
    assert utf16_codec(bytes(range(256)) * 8) is None  # control characters once decoded
    assert utf16_codec(b"\x00" * 4096) is None
    assert utf16_codec("姓名,身份证号码\n".encode("utf-16-le")) == "utf-16-le"
    assert utf16_codec("姓名,身份证号码\n".encode()) is None


def test_undecodable_csv_names_its_encoding(tmp_path: Path) -> None:
    path = tmp_path / "big5.csv"
    path.write_bytes(
        "姓名,身份證號碼,備註\n張三丰,420123196205184516,澳門\n".encode("big5") + b"\xff\xfe\xfa\n"
    )
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "big5.csv", "编码", "UTF-8")


def test_nul_bytes_in_a_text_register_are_named_where_they_are(tmp_path: Path) -> None:
    # A UTF-8 file with a run of NUL bytes (a copy cut short, a disk error) was "文件编码为 UTF-8，无法读取",
    # with advice to save it again as UTF-8.
    path = tmp_path / "nul.csv"
    path.write_bytes("姓名,身份证号码\n张三,420123196205184516\n".encode() + b"\x00\x00\x00abc\n")
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    message = _one_line_error(excinfo, "nul.csv", "第 3 行", "空字符", "处理办法")
    assert "编码为 UTF-8" not in message


def test_mixed_encodings_name_the_line(tmp_path: Path) -> None:
    head = "姓名,身份证号码\n" + "".join(f"张{i},420123196205184516\n" for i in range(60_000))
    path = tmp_path / "mixed.csv"
    path.write_bytes(head.encode("utf-8") + "李四,110101199003077777\n".encode("gbk"))
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "mixed.csv", "第 60002 行", "UTF-8")


@pytest.mark.parametrize("header", ["姓名,身份证号码,住址", "XM,SFZH,ZZ"])
def test_a_short_utf8_register_with_a_gbk_row_is_refused_not_read_garbled(
    tmp_path: Path, header: str
) -> None:
    # Small enough to be judged whole: GB18030 decoded every byte of it, and the names were sent garbled.
    rows = [f"{name},420123196205184516,广东省佛山市" for name in ("张伟", "刘洋", "王芳", "李娜")]
    path = tmp_path / "mixed.csv"
    text = "\n".join([header, *rows]) + "\n"
    path.write_bytes(text.encode() + "陈静,110101199003077777,南海区\n".encode("gbk"))
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "mixed.csv", "第 6 行", "UTF-8")
    # A GBK register whose first characters happen to form a UTF-8 sequence is still GBK.
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes(text.encode("gbk"))
    [table] = read_register(gbk)
    assert "张伟" in table.data.to_string()


@pytest.mark.parametrize("piece", [16, 17, 29, 64, 1 << 23])
def test_a_run_of_utf8_is_found_wherever_the_scan_cuts_the_block(
    monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    monkeypatch.setattr(delimited, "_UTF8_SLICE", piece)
    gbk = "".join(f"居民{n},南海区\n" for n in range(9)).encode("gbk")
    for cut in range(0, 40, 7):  # the UTF-8 line starts at every offset against the slices
        data = gbk + b"x" * cut + "\n张伟,广东省佛山市顺德区\n".encode()
        with pytest.raises(InputError) as excinfo:
            delimited._utf8_in_gbk(data, 100, "a.csv")
        assert "第 111 行" in str(excinfo.value)
    delimited._utf8_in_gbk(gbk * 50, 0, "a.csv")  # GBK alone: nothing found


@pytest.mark.parametrize("spanning", [False, True], ids=["arrow", "csv-module"])
def test_values_exported_as_excel_text_formulas_read_as_excel_shows_them(
    tmp_path: Path, spanning: bool
) -> None:
    # An export that writes every value as ="…" (so that Excel keeps an ID number's digits): Excel shows
    # 张三 and 汉族, and so they are read (the name was refused as holding = and ").
    remark = '"两\n行"' if spanning else '="备注"'
    text = (
        '"姓名","民族","身份证号码","备注"\r\n'
        f'="张三",="汉族",="420123196205184516",{remark}\r\n'
        '李四,汉族,110101199003077777, a="b" 不是公式\r\n'
    )
    path = tmp_path / "export.csv"
    path.write_bytes(codecs.BOM_UTF8 + text.encode())
    [table] = read_register(path)
    assert _values(table, "姓名") == ["张三", "李四"] and _values(table, "民族") == ["汉族", "汉族"]
    assert _values(table, "身份证号码") == ["420123196205184516", "110101199003077777"]
    assert _values(table, "备注") == ["两\n行" if spanning else "备注", ' a="b" 不是公式']


def test_text_formulas_far_down_a_block_parsed_in_pieces_are_read_as_excel_shows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrow parses a block in pieces of a few lines here; a hundred remarks holding "=" (none followed
    # by a quote) come before the one ="…" value, which sits in a later piece.
    monkeypatch.setattr(delimited, "_PARSE_PIECE_BYTES", 300)
    rows = [f"居民{n},110101199003077777,a=b{n}" for n in range(100)]
    rows[90] = '="张三",="420123196205184516",="备注"'
    path = tmp_path / "export.csv"
    path.write_text("姓名,身份证号码,备注\n" + "\n".join(rows) + "\n", encoding="utf-8")
    [table] = read_register(path)
    names, remarks = _values(table, "姓名"), _values(table, "备注")
    assert names[90] == "张三" and _values(table, "身份证号码")[90] == "420123196205184516"
    assert remarks[90] == "备注" and remarks[:3] == ["a=b0", "a=b1", "a=b2"] and len(names) == 100
    assert names[:90] == [f"居民{n}" for n in range(90)] and table.source_row.tolist() == list(range(2, 102))
    assert delimited._holds_text_formula(b"a=b," * 100 + b'="x"', 405)
    assert not delimited._holds_text_formula(b"a=b," * 100 + b'="x"', 401)  # the pair lies past the end
    assert not delimited._holds_text_formula(b"a=b," * 100, 400)


@pytest.mark.parametrize("quoted", [False, True], ids=["arrow", "csv-module"])
@pytest.mark.parametrize("before", [3, 60_000, -60_000], ids=["short", "long", "ascii-first"])
def test_a_gbk_register_with_utf8_rows_joined_on_is_refused_not_read_garbled(
    tmp_path: Path, quoted: bool, before: int
) -> None:
    # GB18030 decodes UTF-8's bytes without complaint: 张伟 came out as 寮犱紵 and was checked and sent so.
    gbk_rows = [f"居民{n},420123196205184516,广东省佛山市南海区桂城街道" for n in range(abs(before))]
    if before < 0:  # the first megabyte plain ASCII: the first block with other bytes decides the encoding
        gbk_rows[:-1] = [f"r{n},420123196205184516,-" for n in range(abs(before) - 1)]
        before = abs(before)
    if quoted:  # a value spanning lines: the rest is read by the csv module
        gbk_rows[1] = '居民1,420123196205184516,"广东省佛山市\n南海区"'
    utf8_rows = ["张伟,110101199003077777,广东省佛山市顺德区大良街道", "刘洋,110101199003077777,南海区"]
    path = tmp_path / "joined.csv"
    gbk = "\n".join(["姓名,身份证号码,住址", *gbk_rows]) + "\n"
    path.write_bytes(gbk.encode("gbk") + ("\n".join(utf8_rows) + "\n").encode("utf-8"))
    line = before + 2 + quoted  # the first UTF-8 line
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "joined.csv", f"第 {line} 行", "GBK", "处理办法")
    # Every GB2312 character, in GBK, joined and shuffled: no run of them looks like UTF-8.
    characters = [
        bytes([high, low]).decode("gbk")
        for high in range(0xB0, 0xF8)
        for low in range(0xA1, 0xFF)
        if (high, low) not in {(0xD7, low) for low in range(0xFA, 0xFF)}
    ]
    random.Random(before).shuffle(characters)
    names = "\n".join(
        f"{''.join(characters[i : i + 40])},420123196205184516,南海区" for i in range(0, 6720, 40)
    )
    path.write_bytes(("姓名,身份证号码,住址\n" + names + "\n").encode("gbk"))
    [table] = read_register(path)
    assert table.data["姓名"].str.len().sum() == 6720


@pytest.mark.parametrize("piece", [1 << 22, 61, 97], ids=["whole", "cut-61", "cut-97"])
def test_excel_error_cells_read_as_the_error_the_clerk_sees_not_as_blanks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    # calamine reads #N/A as empty: a lookup that found nothing passed as a field left blank.
    monkeypatch.setattr("pipeline.reading.bounds._CHUNK", piece)  # every cell cut by a piece's end
    path = _workbook(
        tmp_path / "lookup.xlsx",
        {
            "名单": [
                ["姓名", "身份证号码", "职业", "联系电话"],
                ["张三", "#N/A", "#N/A", "13912345678"],
                ["李四", "110101199003077777", "", "#REF!"],
            ]
        },
    )

    def as_excel_writes_it(xml: bytes) -> bytes:  # a formula whose cached result is an error
        assert xml.count(b't="e"') == 3
        return xml.replace(
            b'<c r="C2" t="e"><v>#N/A</v></c>',
            b'<c r="C2" s="0" t="e"><f>VLOOKUP(A2,\xe5\xad\x97\xe5\x85\xb8!A:B,2,FALSE)</f><v>#N/A</v></c>',
        )

    _rewrite_sheet(path, as_excel_writes_it)
    [table] = read_register(path)
    assert _values(table, "身份证号码") == ["#N/A", "110101199003077777"]
    assert _values(table, "职业") == ["#N/A", ""]
    assert _values(table, "联系电话") == ["13912345678", "#REF!"]


@pytest.mark.parametrize("piece", [1 << 22, 53, 89], ids=["whole", "cut-53", "cut-89"])
def test_formulas_saved_without_their_results_fault_their_cells_and_say_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    # A program (openpyxl, a web system's export) writes =MID(D2,7,8) with no result: calamine reads it
    # empty, and a 出生日期 or 姓名 the clerk wrote as a formula passed as blank ("姓名为空").
    monkeypatch.setattr("pipeline.reading.bounds._CHUNK", piece)  # every cell cut by a piece's end
    path = tmp_path / "生成.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "名单"
    for row in [
        ["姓名", "出生日期", "联系电话", "身份证号码", "备注"],
        ['=TRIM(" 张三 ")', "=MID(D2,7,8)", "13912345678", "420123196205184516", "=1+1"],
        ["李四", "=MID(D3,7,8)", "=D2", "110101199003077777", '=""'],
        ["王五", "1960-01-01", "13700000000", "440604196001011234", "有"],
    ]:
        sheet.append(row)
    book.save(path)

    def as_a_program_writes_it(xml: bytes) -> bytes:
        # E2 as Excel saves it (its result kept); E3 an empty text result, as Excel keeps "" (t="str").
        xml = xml.replace(b"<f>1+1</f><v />", b"<f>1+1</f><v>2</v>")
        xml = xml.replace(b'<c r="E3"><f>""</f><v />', b'<c r="E3" t="str"><f>""</f><v></v>')
        # C3 as a shared formula without a result: no formula text of its own.
        return xml.replace(b"<f>D2</f><v />", b'<f t="shared" si="0"/>')

    _rewrite_sheet(path, as_a_program_writes_it)
    with _warnings() as logged:
        [table] = read_register(path)
    assert _values(table, "备注") == ["2", "", "有"]
    notes = table.notes
    assert sorted(zip(notes["row"], notes["header"], strict=True)) == [
        (0, "出生日期"), (0, "姓名"), (1, "出生日期"), (1, "联系电话"),
    ]  # fmt: skip
    assert set(notes["severity"]) == {FIELD_ONLY}  # an error in a field's column, no fault elsewhere
    for message in notes["message"]:
        assert "公式" in message and "计算结果" in message and "Excel 或 WPS" in message and "保存" in message
    [warning] = [line for line in logged if "公式" in line]
    for fragment in ("生成.xlsx[名单]", "4 个", "姓名", "出生日期", "联系电话", "A2", "保存"):
        assert fragment in warning, warning
    assert "张三" not in warning  # a formula may hold a resident's name: the log does not quote it


def test_a_sheet_of_more_formulas_without_results_than_are_noted_is_refused_not_read_blank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past the cells noted, the rest would pass as blanks the clerk never left.
    monkeypatch.setattr("pipeline.reading.bounds.MAX_UNCALCULATED_CELLS", 3)
    path = tmp_path / "生成.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["姓名", "出生日期", "身份证号码"])
    for row in range(2, 6):
        book.active.append([f"居民{row}", f"=MID(C{row},7,8)", "420123196205184516"])
    book.save(path)
    message = _refusal(path, "生成.xlsx", "3 个以上", "公式", "保存")
    assert "Excel 或 WPS" in message


def _ods_as_libreoffice_saves_it(
    path: Path, rows: Sequence[Sequence[str]], hidden: Set[int] = frozenset()
) -> Path:
    """An .ods of ``rows`` of cells' XML, each row ending as LibreOffice ends it, below an empty row;
    the rows of ``hidden`` (indices in ``rows``) hidden."""
    rest = '<table:table-cell table:number-columns-repeated="1020"/>'
    shown = ["<table:table-row>", '<table:table-row table:visibility="collapse">']
    body = "".join(
        f"{shown[index in hidden]}{''.join(row)}{rest}</table:table-row>" for index, row in enumerate(rows)
    )
    table = (
        '<table:table table:name="名单">'
        f'<table:table-row><table:table-cell table:number-columns-repeated="1024"/></table:table-row>{body}'
        "</table:table>"
    )
    calc = 'xmlns:calcext="urn:org:documentfoundation:names:experimental:calc:xmlns:calcext:1.0"'
    return write_ods(path, table, calc)


@pytest.mark.parametrize("piece", [1 << 22, 211, 257, 331], ids=["whole", "cut-211", "cut-257", "cut-331"])
def test_an_ods_reads_error_cells_and_numbers_padded_with_zeros_as_they_are_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    # calamine read LibreOffice's #N/A as empty (the lookup's blank passed) and 000123 as 123.
    # Pieces longer than a cell's tag (a tag longer than a piece is read as a giant text node would be).
    monkeypatch.setattr("pipeline.reading.bounds._CHUNK", piece)

    def text(value: str) -> str:
        cell = '<table:table-cell office:value-type="string" calcext:value-type="string">'
        return f"{cell}<text:p>{value}</text:p></table:table-cell>"

    def number(value: str, shown: str) -> str:
        return (
            f'<table:table-cell table:style-name="ce1" office:value-type="float" office:value="{value}" '
            f'calcext:value-type="float"><text:p>{shown}</text:p></table:table-cell>'
        )

    def error(shown: str) -> str:
        return (
            '<table:table-cell table:formula="of:=VLOOKUP([.A2];$字典.A:B;2;0)" office:value-type="string" '
            f'office:string-value="" calcext:value-type="error"><text:p>{shown}</text:p></table:table-cell>'
        )

    rows = [
        [text("姓名"), text("身份证号码"), text("职业"), text("联系电话"), text("健康档案号"), text("序号")],
        [text("张三"), error("#N/A"), error("#N/A"), number("7578300123", "0757-8300123"),
         number("123", "000123"), number("7", "7")],
        [text("李四"), text("110101199003077777"), text(""), error("#REF!"), number("4567", "NO.00004567"),
         number("1234", "1,234")],
    ]  # fmt: skip
    [table] = read_register(_ods_as_libreoffice_saves_it(tmp_path / "lookup.ods", rows))
    assert table.header_row == 2
    assert _values(table, "身份证号码") == ["#N/A", "110101199003077777"]
    assert _values(table, "职业") == ["#N/A", ""]
    assert _values(table, "联系电话") == ["0757-8300123", "#REF!"]
    assert _values(table, "健康档案号") == ["000123", "NO.00004567"]
    assert _values(table, "序号") == ["7", "1234"]  # no zeros added: shown as it is read


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_a_register_without_a_header_row_is_refused_not_read_short_of_its_first_resident(
    tmp_path: Path, suffix: str
) -> None:
    # Its first resident was taken for the header (lost, and their name and ID number stored as the
    # centre's column names), and later residents sharing most of its values were dropped as repeated headers.
    people = [
        [name, "男", "汉族", "420123196205184516", "13800000000", "广东省", "佛山市", "南海区", "桂城街道"]
        for name in ("陈秀英", "李建国", "黄丽华", "张伟")
    ]
    if suffix == ".csv":
        path = tmp_path / "people.csv"
        path.write_text("\n".join(",".join(row) for row in people) + "\n", encoding="utf-8")
    else:
        path = _workbook(tmp_path / "people.xlsx", {"Sheet1": people})
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, path.name, "第 1 行", "表头", "处理办法")


def test_a_templates_example_and_instruction_rows_are_no_residents(tmp_path: Path) -> None:
    # The example's 张三 has a well-formed ID number: read as a resident, a made-up person would be sent.
    rows = [
        ["序号", "姓名", "身份证号码"],
        ["示例", "张三", "420123196205184516"],
        ["填写说明：", "请填写真实姓名", "18位身份证号码"],
        ["1", "李四", "110101199003077777"],
        ["2", "示例", "110101199003077778"],  # a resident's cell saying 示例 further down is data
    ]
    with _warnings() as logged:
        [table] = read_register(_workbook(tmp_path / "template.xlsx", {"Sheet1": rows}))
    assert table.data["姓名"].tolist() == ["李四", "示例"]
    assert table.source_row.tolist() == [4, 5]
    (warning,) = logged  # naming the sheet, as every other warning of a workbook does
    assert "template.xlsx[Sheet1]：第 2、3 行是模板的示例或填写说明" in warning


@pytest.mark.parametrize("name", ["register.doc", "register", "register.numbers"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"something")
    with pytest.raises(InputError) as excinfo:
        read_register(tmp_path / name)
    _one_line_error(excinfo, name, "不支持的文件类型", ".xlsx")


@pytest.mark.parametrize(
    ("name", "fix"),
    [("名单.et", "WPS 表格中“另存为” .xlsx"), ("名单.ETT", "WPS 表格中打开"), ("名单.wps", "WPS 文字文档")],
)
def test_a_wps_file_is_refused_naming_the_types_read_and_how_to_save_it(
    tmp_path: Path, name: str, fix: str
) -> None:
    (tmp_path / name).write_bytes(b"\xd0\xcf\x11\xe0" + b"\0" * 1020)
    with pytest.raises(InputError) as excinfo:
        read_register(tmp_path / name)
    _one_line_error(
        excinfo, name, "不支持的文件类型", "能读取的是 .xlsx、.xlsm、.xlsb、.xls、.ods、.csv", fix
    )


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.csv"
    path.write_text("姓名\n张三\n", encoding="utf-8")

    def refuse(name: object, *args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", str(name))

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "locked.csv", "权限")


def test_blocks_parsed_apart_are_glued_into_growing_chunks_with_every_row_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.reading.register import open_register

    # Blocks of about two lines, glued into chunks of up to eight rows: a wider row, a blank line and
    # a value spanning lines (which a block's end cuts in two) fall inside glued chunks.
    monkeypatch.setattr("pipeline.reading.delimited.PARSE_ROWS", 2)
    monkeypatch.setattr("pipeline.reading.delimited._CSV_BATCH_ROWS", 2)
    lines = ["姓名,身份证号码,民族"]
    for n in range(1, 31):
        lines.append(f"居民{n},4401011990010{n:05d},汉族" + (",多出来的" if n == 9 else ""))
        if n == 13:
            lines.append("")
    lines[20] = '"跨行\n的名字",440101199001000020,汉族'
    path = tmp_path / "blocks.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    [whole] = read_register(path)
    [source] = open_register(path)
    chunks = list(source.read(8))
    sizes = [len(chunk.data) for chunk in chunks]
    assert sum(sizes) == len(whole.data) == 30
    assert max(sizes) <= 8 and sizes[0] < sizes[1] <= sizes[2]  # the first at once, then growing
    for column in whole.headers:
        assert [v for c in chunks for v in _values(c, column)] == _values(whole, column)
    assert [r for c in chunks for r in c.source_row.tolist()] == whole.source_row.tolist()
    assert _values(whole, "列D")[8] == "多出来的" and whole.source_row.tolist()[13] == 16
    assert _values(whole, "姓名")[18] == "跨行\n的名字"
    # From the value spanning lines on, rows are numbered as a spreadsheet shows them, not by line.
    assert whole.source_row.tolist()[18:20] == [21, 22] and whole.source_row.tolist()[-1] == 32


def test_a_second_register_sheet_left_unread_is_named(tmp_path: Path) -> None:

    book = openpyxl.Workbook()
    first = book.active
    first.title = "一月"
    for sheet, name in ((first, "张三"), (book.create_sheet("二月"), "李四")):
        sheet.append(["姓名", "性别", "民族", "身份证号码", "联系电话"])
        sheet.append([name, "男", "汉族", "420123196205184516", "13912345678"])
    book.create_sheet("字典").append(["男", "女"])
    path = tmp_path / "months.xlsx"
    book.save(path)
    with _warnings() as logged:
        [table] = read_register(path)
        both = read_register(path, all_sheets=True)
    assert table.sheet == "一月" and [t.sheet for t in both] == ["一月", "二月"]
    (warning,) = logged  # once, for the run that read one sheet; the lists sheet is no register
    assert "二月" in warning and "--all-sheets" in warning


@pytest.mark.parametrize("piece", [1 << 22, 61, 97], ids=["whole", "cut-61", "cut-97"])
def test_numbers_formatted_with_zeros_read_as_excel_shows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    # calamine gives the number: a health record number shown as 000000000123 was read as 123, a
    # landline shown as 0757-83001234 as 75783001234.
    monkeypatch.setattr("pipeline.reading.bounds._CHUNK", piece)  # cells cut by a piece's end too
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["姓名", "联系电话", "健康档案号", "序号"])
    formats = ["0000-00000000", "000000000000", "0"]
    sheet.append(["张三", 75783001234, 123, 7])
    sheet.append(["李四", 13800138001, 4567, 8])
    sheet.append(["王五", 13800138002, 1234567890123, 9.5])
    for row in (2, 3, 4):
        for column, number_format in zip("BCD", formats, strict=True):
            sheet[f"{column}{row}"].number_format = number_format
    sheet["C3"].number_format = '"NO."00000000'
    path = tmp_path / "padded.xlsx"
    book.save(path)
    [table] = read_register(path)
    assert _values(table, "联系电话") == ["0757-83001234", "0138-00138001", "0138-00138002"]
    assert _values(table, "健康档案号") == ["000000000123", "NO.00004567", "1234567890123"]
    assert _values(table, "序号") == ["7", "8", "9.5"]  # a plain 0 pads nothing


def test_padding_formats_are_told_from_others() -> None:
    from pipeline.reading.bounds import padded_text, padding_format

    assert padding_format("000000") == [6] and padding_format('"NO."0000') == ["NO.", 4]
    assert padding_format("0000\\-0000") == [4, "-", 4]
    for other in ("0", "#,##0", "0.00", "@", "General", "0000;[Red]-0000", "yyyy-mm-dd", "0.0E+00"):
        assert padding_format(other) is None, other
    pieces = padding_format("000-000")
    assert pieces is not None
    assert padded_text(pieces, 42) == "000-042" and padded_text(pieces, 12345678) == "12345-678"


def test_rows_hidden_in_excel_are_read_and_named_in_a_warning(tmp_path: Path) -> None:
    # A clerk who filtered the register to one village saw a few rows and sent every one without a word.

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["姓名", "身份证号码", "村"])
    for n in range(6):
        sheet.append([f"居民{n}", "420123196205184516", "东村" if n % 2 else "西村"])
    for row in (3, 5, 40):  # two residents filtered out, and an empty row far below
        sheet.row_dimensions[row].hidden = True
    notes = book.create_sheet("填表说明", 0)  # looked at and left before the register: its hidden rows
    for line in ("填表说明", "一、姓名填写身份证上的姓名", "二、性别填 男 或 女", "三、村填所在村"):
        notes.append([line])  # are no concern
    notes.row_dimensions[3].hidden = True
    path = tmp_path / "filtered.xlsx"
    book.save(path)
    # Another writer's attribute order for one of them.
    _rewrite_sheet(path, lambda xml: xml.replace(b'<row r="5" hidden="1"', b'<row hidden="1" r="5"'))
    with _warnings() as logged:
        [table] = read_register(path)
    assert len(table.data) == 6
    (warning,) = logged
    assert "第 3、5 行（共 2 行）" in warning and "隐藏" in warning


#: An .xls saved by LibreOffice: 姓名 身份证号码 村, six residents, rows 3 and 5 hidden.
FILTERED_XLS = (
    "eNrtWFtMXEUY/ufs2eUsLLDQopUirtWW27bZ5SaNVrbdUlsvoEC9hcRSXCh2yxJAQx9Mt9aaqG1T0wd9aNI04cGExEtM6oMmwltj"
    "NJqYPmjU0D5p6sNqNE0TYf3mP3MOZ2FJWEpMrMzmPzPzzT/X/zL/7LfflMxc/Lj8Ki1ID5KL5tJe8jgwAfJaFT+RprC5dDptwem1"
    "9J9KsyqXMtQhPzdIyjwPZCjZ5qt8Ld1+qZMS+I1RgNpoCPkIHaVc0h3QGOd4y+kzt0y+5aa1+Vc+v/Tf0o+7QNnsX/p7af8FIB+o"
    "EFQEKjavACoBlYLWgdaDylgniO4EbQDdBSoHbQRVgO4GVYLuAQVA94I2qTXdr3JJVShXg2oUVoc8uOaHVj15DUjR46bPCr+SImfZ"
    "X4VGfKRPs15cA/XQsNSNaG+8L/BvpV28hl4h1zAFJd2BkqDzQIvoQ0Y/5+8O1j6kCAValEY/q0V47af5u4m/RST7f8p9fmAkDD38"
    "kbX8LBuBoDwRpV6K0yAdhB8cBEc5XZb2dYw5pHWIndwiuW6tNZQxN2xJtLMfTsAqusAzRKMoRelReoyRKFXqPpqQdvlIbCg20huf"
    "YXuboL/SAYdtTwUkLgdl/M/l4VqOOP3v8AmcXbZzrjP5UwvxmiXw4BJ47RK4NyvuttZjzOPnNNhoktIy9yddnJckPZyXJnXO1yXz"
    "OF+fdKcPsC2chFcfkE4fBlDYvb/rFCxd4DctDBBR92lB1+l56e9TnTyTJyX9unQIVvzvpAYqSEmL/AJLM+i4wP1hTIkIvhGq/N1v"
    "3iAGbhIDN4RxA4r/N13iW8PHhiC+e66w201i8sxs+/TbN7rEOFbz1ICLvBq19ZTEQ3xHaeat01gfCtc3hLc314eawi2NTeFmDHDs"
    "TQd72GZHS0W7o6XebrGhhsVQ42KoyYbSuBl9dEY3195nlIHmNaRM5Zq8Pk03689wsz4M8iIOVjqmEh7QjyPbGq24fq25vPUFxpPz"
    "EqbNUsAUFMfRMq3Xco86/r7GvNb1e4Kx1/m7xe7/S2uVo1xtl1OtNY7yRbhLL1ZFrAQaZguKDT7PiekDM61WLmg/Wgx6lbdN4i2j"
    "WO20iDPeIAcUhuZX5aDpBEUxYyILpjmwgMJcWfj0LHzuLHyeBdgshzGWWMyaQE3YNQ01TdUEc7rsmoCcdLsmOd2qpjGnx645OTXm"
    "zFM1F3Mads3J6coYU2dOr11zcuoZY7qZM9+uOTndGWN6mLPArjk5PfaYv9GTUiNTe01tTBnKrCVrMblSIQ799FQ1496UP0t4qVE+"
    "95N95OwPa6V0yWPe0UQPsXbJQLCYT8SaAGkAPmHAcA4krJA2f6lYViAidOWbMbDf0ExfaDbtkTHnE4N9I4nRRP9YoG28LxYPbH9g"
    "a3fvwVg8HuMT2TXY399yK7G3MN3gitNcmlihsoxLMycv/HGz45B/8h2D6qo++V4e/nvKwIQ6TinCvSpO71EHdUjF62PKqyZV3H5K"
    "xfq/zpoxuOyTGI4NDR8dj5OKy2V7SI1tpUXlV37+svONn4SzvNr7Z5d95esr57dt9J97F/sP3vxgt/S8C7Ae9c6w7h+/Y4+PKzdE"
    "6q0h21tUe8Tx9pFntXN4+OnYyOhgYijzjOT5NmwL0+2aVvP9z+e/wAaz9ZEyiRSY5Wcw+wgdRsQt13E45/WXspM15ZTO4V09aVh2"
    "FsW8R/DC6cAaXlrR/C7HG3w5fe4D7bPtvAPvgdiK5ScvmVzf/5vVW51fJXhbvIz9H8GbQ8p+H7Sgn2UikTG8VxJAlk7Van53Due/"
    "BXTZnn83ZujjNcRYA3NbT8sK9l8Len/t/x9O/wBgch/c"
)


def test_vertically_merged_data_cells_of_an_ods_repeat_their_value(tmp_path: Path) -> None:
    # calamine gives no merged cells of an .ods: the second resident of a family had no address.
    def cell(value: str, spans: str = "") -> str:
        return (
            f'<table:table-cell{spans} office:value-type="string"><text:p>{value}</text:p></table:table-cell>'
        )

    covered = "<table:covered-table-cell/>"
    rows = [
        [cell("姓名"), cell("身份证号码"), cell("详细地址")],
        [cell("张三"), cell("420123196205184516"), cell("幸福村3组", ' table:number-rows-spanned="2"')],
        [cell("张小三"), cell("420123201001014513"), covered],
        [
            cell("合计：2人", ' table:number-columns-spanned="3" table:number-rows-spanned="1"'),
            covered,
            covered,
        ],
        ['<table:table-cell table:number-rows-spanned="2"/>'],  # an empty merged cell below: no rows
    ]
    [table] = read_register(_ods_as_libreoffice_saves_it(tmp_path / "merged.ods", rows))
    assert _values(table, "详细地址") == ["幸福村3组", "幸福村3组"]
    assert table.source_row.tolist() == [3, 4]


def test_rows_hidden_in_an_xls_or_an_ods_are_named_in_a_warning_too(tmp_path: Path) -> None:
    xls = tmp_path / "filtered.xls"
    xls.write_bytes(zlib.decompress(base64.b64decode("".join(FILTERED_XLS))))

    def cell(value: str) -> str:
        return f'<table:table-cell office:value-type="string"><text:p>{value}</text:p></table:table-cell>'

    rows = [[cell("姓名"), cell("身份证号码"), cell("村")]]
    rows += [[cell(f"居民{n}"), cell("420123196205184516"), cell("东村")] for n in range(6)]
    ods = _ods_as_libreoffice_saves_it(tmp_path / "filtered.ods", rows, hidden={3, 4})  # rows 5 and 6
    for path, shown in ((xls, "第 3、5 行（共 2 行）"), (ods, "第 5、6 行（共 2 行）")):
        with _warnings() as logged:
            [table] = read_register(path)
        assert len(table.data) == 6
        (warning,) = logged
        assert shown in warning and "隐藏" in warning


def test_a_workbook_of_many_register_sheets_gets_a_few_warning_lines(tmp_path: Path) -> None:

    book = openpyxl.Workbook()
    book.remove(book.active)
    for day in range(1, 41):
        sheet = book.create_sheet(f"{day}日")
        sheet.append(["姓名", "性别", "民族", "身份证号码", "联系电话"])
        sheet.append(["张三", "男", "汉族", "420123196205184516", "13912345678"])
    path = tmp_path / "days.xlsx"
    book.save(path)
    with _warnings() as logged:
        [table] = read_register(path)
    assert table.sheet == "1日" and len(logged) == 6
    assert "另有 34 个工作表" in logged[-1] and "--all-sheets" in logged[-1]


@pytest.mark.parametrize("registers", [True, False])
def test_all_sheets_of_a_workbook_of_more_sheets_than_a_run_checks_is_refused_before_they_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registers: bool
) -> None:
    # Each sheet read is checked as a table of its own, about a quarter of a second however few its
    # rows: 200 sheets of four residents took 54 s, and 1,000 of them were stopped after two minutes.
    monkeypatch.setattr("pipeline.reading.excel.MAX_SHEETS_READ", 4)
    header = ["姓名", "性别", "民族", "身份证号码", "联系电话"] if registers else ["甲", "乙", "丙"]
    rows = [header, ["张三", "男", "汉族", "420123196205184516", "13912345678"][: len(header)]]
    path = _workbook(tmp_path / "days.xlsx", {f"{day}日": rows for day in range(1, 7)})
    with pytest.raises(InputError) as excinfo:
        read_register(path, all_sheets=True)
    _one_line_error(excinfo, "days.xlsx", "超过 4 个", "分")
    assert len(read_register(path)) == 1
    path = _workbook(tmp_path / "four.xlsx", {f"{day}日": rows for day in range(1, 5)})
    assert len(read_register(path, all_sheets=True)) == 4


@pytest.mark.parametrize("state", ["hidden", "veryHidden"])
def test_a_register_on_a_hidden_sheet_is_named_with_how_to_read_it(tmp_path: Path, state: str) -> None:
    book = openpyxl.Workbook()
    book.active.title = "说明"
    book.active.append(["填表说明：请在登记表中填写"])
    register = book.create_sheet("登记表")
    register.append(["姓名", "性别", "民族", "身份证号码", "联系电话"])
    register.append(["张三", "男", "汉族", "420123196205184516", "13912345678"])
    register.sheet_state = state
    path = tmp_path / "hidden.xlsx"
    book.save(path)
    with pytest.raises(InputError) as excinfo:
        read_register(path)
    _one_line_error(excinfo, "隐藏的工作表“登记表”", "--sheet 登记表")
    [table] = read_register(path, sheet="登记表")
    assert table.data.iloc[0, 0] == "张三"


def test_a_register_still_growing_is_read_as_it_was_when_opened(tmp_path: Path) -> None:
    rows = [f"张{i},男,汉族,420123196205184516,1391234567{i}" for i in range(6)]
    lines = ["姓名,性别,民族,身份证号码,联系电话", *rows]
    path = tmp_path / "growing.csv"
    path.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    size = path.stat().st_size
    [source] = open_register(path)
    with open(path, "a", encoding="utf-8") as more:  # another program appends while the run reads
        more.write("\n".join(lines[4:]) + "\n")
    assert source.estimated_rows <= 4 and size < path.stat().st_size
    read = [name for table in source.read(2) for name in table.data["姓名"]]
    assert read == ["张0", "张1", "张2"]


def test_gbk_text_behind_a_utf8_bom_is_read_as_gbk(tmp_path: Path) -> None:
    path = tmp_path / "bom_gbk.csv"
    text = "姓名,性别,民族,身份证号码,联系电话\n张三,男,汉族,420123196205184516,13912345678\n"
    path.write_bytes(codecs.BOM_UTF8 + text.encode("gbk"))  # a tool that "saves as UTF-8" by adding a BOM
    [table] = read_register(path)
    assert list(table.data.columns)[:2] == ["姓名", "性别"] and table.data.iloc[0, 0] == "张三"
