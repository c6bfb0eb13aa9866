"""`ehc validate` on messy registers built here, driven through the command line only.

Each test writes a small register the way clerks actually keep them, runs
``python -m pipeline validate`` in a subprocess and checks the reports from the
outside: every data row exactly once in input order with the row number the
clerk sees, counts that reconcile, exit code matching the statuses, no live
formula in any workbook, masked logs, and one line of Chinese for fatal input.
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import pytest

from pipeline.text.idnumber import check_character

REPO_ROOT = Path(__file__).resolve().parent.parent
LEAD_COLUMNS = ["source_file", "source_sheet", "source_row", "status", "result_code", "message"]
FULL_ID = re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9])")
FULL_MOBILE = re.compile(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])")


def id_number(serial: int, born: str = "19800101", male: bool = True, division: str = "440604") -> str:
    """A valid 18-character ID number, distinct per ``serial``."""
    first17 = f"{division}{born}{(serial % 500) * 2 + (1 if male else 0):03d}"
    return first17 + check_character(first17)


@dataclass
class Run:
    """One finished `ehc validate`: exit code, streams, the output folder and the state folder."""

    code: int
    stdout: str
    stderr: str
    out: Path
    state: Path

    def rows(self) -> list[dict[str, str]]:
        raw = (self.out / "results.csv").read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf"), "results.csv must start with a UTF-8 BOM"
        return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))

    def header(self) -> list[str]:
        text = (self.out / "results.csv").read_text(encoding="utf-8-sig")
        return next(csv.reader(io.StringIO(text)))

    def sheet(self, workbook: str, sheet: str) -> list[tuple[object, ...]]:
        return list(openpyxl.load_workbook(self.out / workbook)[sheet].iter_rows(values_only=True))

    def fault_lines(self) -> list[tuple[object, ...]]:
        """errors.xlsx 明细 as (code, file, sheet, row, column, original, message, fix)."""
        header, *lines = self.sheet("errors.xlsx", "明细")
        assert header == ("行号", "列", "原值", "说明", "处理办法", "代码", "文件", "工作表")
        return [(r[5], r[6], r[7], r[0], r[1], r[2], r[3], r[4]) for r in lines if r[5] is not None]

    def log_text(self) -> str:
        return self.stderr + "".join(p.read_text(errors="replace") for p in (self.state / "logs").glob("*"))


def run_validate(tmp_path: Path, *args: object, out: str = "out") -> Run:
    """Run ``python -m pipeline validate ARGS --out tmp_path/out`` with its own state folder."""
    state = tmp_path / f"state-{out}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHC_")}
    env["EHC_STATE_DIR"] = str(state)
    command = [sys.executable, "-m", "pipeline", "validate", *map(str, args), "--out", str(tmp_path / out)]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    return Run(done.returncode, done.stdout, done.stderr, tmp_path / out, state)


def assert_invariants(
    run: Run, expected: Sequence[tuple[str, str, int]] | None = None
) -> list[dict[str, str]]:
    """The checks every successful run must pass; returns the rows of results.csv."""
    assert "Traceback" not in run.stderr
    rows = run.rows()
    assert run.header()[:6] == LEAD_COLUMNS
    keys = [(r["source_file"], r["source_sheet"], int(r["source_row"])) for r in rows]
    if expected is not None:
        assert keys == list(expected)
    statuses = {r["status"] for r in rows}
    assert statuses <= {"valid", "invalid"}
    assert run.code == (1 if "invalid" in statuses else 0)
    for row in rows:
        assert (row["status"] == "invalid") == bool(row["result_code"]), row
    detail = [r for r in run.sheet("results.xlsx", "明细")[1:] if r[0] is not None]
    assert [(str(r[0]), str(r[1] or ""), int(str(r[2]))) for r in detail] == keys
    summary = run.sheet("results.xlsx", "汇总")
    totals = dict(zip(summary[0], next(r for r in summary if r[0] == "合计"), strict=False))
    invalid = sum(r["status"] == "invalid" for r in rows)
    assert (totals["读取行数"], totals["校验通过"], totals["校验未通过"]) == (
        len(rows),
        len(rows) - invalid,
        invalid,
    )
    for workbook in run.out.glob("*.xlsx"):
        for sheet in openpyxl.load_workbook(workbook):
            live = [c.coordinate for row in sheet.iter_rows() for c in row if c.data_type == "f"]
            assert not live, f"live formulas in {workbook.name}[{sheet.title}]: {live}"
    faults = run.fault_lines()
    order = [(int(str(f[0])), int(str(f[3]))) for f in faults]
    assert order == sorted(order), "errors.xlsx must be sorted by code, then row"
    logs = run.log_text()
    assert not FULL_ID.findall(logs) and not FULL_MOBILE.findall(logs), "unmasked ID/phone in logs"
    return rows


def assert_one_line_fatal(run: Run, *names: str) -> str:
    """Exit 2, exactly one line of Chinese on stderr naming ``names``, no traceback."""
    lines = run.stderr.strip().splitlines()
    assert run.code == 2, run.stderr
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr and re.search(r"[\u4e00-\u9fff]", lines[0])
    for name in names:
        assert name in lines[0]
    return lines[0]


def text_cells(sheet: openpyxl.worksheet.worksheet.Worksheet) -> None:
    """Make every cell of ``sheet`` that openpyxl took for a formula a plain text cell again."""
    for row in sheet.iter_rows():
        for cell in row:
            if isinstance(cell.value, str) and cell.value[:1] in "=+-@":
                cell.data_type = "s"


def save(path: Path, sheets: dict[str, Sequence[Sequence[object]]], merged: Sequence[str] = ()) -> Path:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
        text_cells(sheet)
    for cells in merged:
        workbook.worksheets[0].merge_cells(cells)
    workbook.save(path)
    return path


HEADER: list[object] = ["姓名", "性别", "民族", "身份证号", "联系电话", "医保类型"]


def resident(serial: int, **changes: object) -> list[object]:
    row: dict[str, object] = {
        "姓名": f"居民{chr(0x4E00 + serial)}", "性别": "男", "民族": "汉族", "身份证号": id_number(serial),
        "联系电话": f"139{serial:08d}", "医保类型": "职工医保",
    }  # fmt: skip
    row.update(changes)
    return list(row.values())


# --------------------------------------------------------------------------- passing behaviour


def test_messy_workbook_every_row_once_and_normalised(tmp_path: Path) -> None:
    x_id = next(v for v in (id_number(i, born="19910304") for i in range(50)) if v.endswith("X"))
    fullwidth = id_number(4, born="19620303").translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    header: list[object] = [
        "序号",
        "姓 名\n（必填）",
        "*性别",
        "民族",
        "出生\n日期",
        "身份证号码（必填）",
        "联系电话*",
    ]
    header += ["医保类型", "婚姻状况", "文化程度", "现住址", "备注"]
    rows: list[list[object]] = [
        ["某某街道社区卫生服务中心"],
        ["电子健康卡申领登记表（2024年）"],
        [],
        header,
        [1, "张三", "男", "汉族", datetime.datetime(1990, 1, 2), id_number(0, born="19900102"),
         "+86 139-1234-5678", "职工医保", "已婚", "本科", "广东省佛山市禅城区祖庙街道建设路1号", "=1+1"],
        [2, "李四", "男", "01", "1991/3/4", x_id.lower()[:6] + " " + x_id.lower()[6:], "(020)8765-4321",
         "城镇职工基本医疗保险", "未婚", "大专", "", "+8613912345678"],
        [3, "王五", "男性", "汉", "1970.06.15", id_number(2, born="19700615"), "0086 13812345678", "01", "20",
         "20", "", "@x"],
        [4, "赵六", "女", "回族", "2000年2月29日", id_number(3, born="20000229", male=False), "020-87654321",
         "职工医保", "未婚", "大学本科", "", "-5"],
        [5, "钱七", "男", "０１", "19620303", fullwidth, "13912345679", "职工医保", "已婚", "大专", "",
         "正常"],
        [6, "孙八", "女", "汉族", 34824, id_number(5, born="19950505", male=False), "139 1234 5670",
         "职工医保", "已婚", "本科", "", "=SUM(A1:A2)"],
        [],
        [],
    ]  # fmt: skip
    path = save(tmp_path / "花名册.xlsx", {"花名册": rows}, ["A1:L1", "A2:L2"])
    run = run_validate(tmp_path, path)
    got = assert_invariants(run, [("花名册.xlsx", "花名册", r) for r in range(5, 11)])
    assert run.code == 0, [r["message"] for r in got]
    assert [r["csrq"] for r in got] == [
        "19900102",
        "19910304",
        "19700615",
        "20000229",
        "19620303",
        "19950505",
    ]
    assert [r["brdh"] for r in got][:4] == ["13912345678", "02087654321", "13812345678", "02087654321"]
    assert got[1]["sfzhm"] == x_id and got[4]["sfzhm"].isascii()
    assert [r["xb"] for r in got] == ["1", "1", "1", "2", "1", "2"]
    assert [r["mzdm"] for r in got] == ["01", "01", "01", "03", "01", "01"]
    assert (got[0]["fyzhdm"], got[0]["xldm"], got[1]["xldm"]) == ("20", "20", "30")
    assert (got[0]["dzsf"], got[0]["dzs"], got[0]["dzqx"], got[0]["dzxz"]) == (
        "广东省",
        "佛山市",
        "禅城区",
        "祖庙街道",
    )
    # Unknown columns come back as written; in results.csv formula-looking text keeps a leading apostrophe
    # so no spreadsheet runs it (checked for xlsx in the invariants).
    assert [r["备注"] for r in got] == ["'=1+1", "'+8613912345678", "'@x", "'-5", "正常", "'=SUM(A1:A2)"]
    detail = run.sheet("results.xlsx", "明细")
    assert detail[1][detail[0].index("备注")] == "=1+1"


def test_faults_keyed_by_code_with_clerk_columns_and_red_cells_at_the_right_place(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "登记"
    sheet["C1"] = "标题"
    sheet.merge_cells("C1:H1")
    bad_check = id_number(4)[:-1] + ("9" if id_number(4)[-1] != "9" else "8")
    # Row 4: a 15-digit ID stored as a number (exact); row 5: an 18-digit one (digits lost).
    table: list[list[object]] = [
        ["姓名*", "性别", "民族", "出生日期", "身份证号", "联系电话", "医保类型"],
        ["甲", "男", "汉族", "", 440604800101001, "13912345678", "职工医保"],
        ["乙", "男", "汉族", "", 440604198001010011, "13912345678", "职工医保"],
        ["丙", "男", "汉族", "", bad_check, "139 1234 567", "职工医保"],
        ["丁", "男", "汉族", "20990101", id_number(7, born="20990101"), "13912345678", "职工医保"],
        ["", "男", "汉族", "", id_number(8), "=1+1", "职工医保"],
    ]
    for i, row in enumerate(table):
        for j, value in enumerate(row):
            sheet.cell(row=3 + i, column=3 + j, value=value)
    text_cells(sheet)
    path = tmp_path / "offset.xlsx"
    workbook.save(path)

    run = run_validate(tmp_path, path)
    got = assert_invariants(run, [("offset.xlsx", "登记", r) for r in range(4, 9)])
    assert [(r["status"], r["result_code"]) for r in got] == [
        ("valid", ""), ("invalid", "10111"), ("invalid", "10111;10110"), ("invalid", "10124;10111"),
        ("invalid", "10114;10110"),
    ]  # fmt: skip
    assert got[0]["sfzhm"] == "440604198001010013" and "15位" in got[0]["message"]
    assert "科学计数法" in got[1]["message"]
    faults = {(f[0], f[3], f[4]): f[5] for f in run.fault_lines()}
    assert faults[(10110, 6, "联系电话")] == "139 1234 567"
    assert faults[(10110, 8, "联系电话")] == "=1+1"
    assert faults[(10114, 8, "姓名*")] in (None, "")
    assert faults[(10124, 7, "出生日期")] == "20990101"
    annotated = openpyxl.load_workbook(run.out / "annotated_offset.xlsx")["登记"]
    red = {c.coordinate for row in annotated.iter_rows() for c in row if c.fill.fgColor.rgb == "FFFF7C80"}
    assert red == {"G5", "G6", "H6", "F7", "G7", "C8", "H8"}
    assert "10110" in annotated["H8"].comment.text and annotated["H8"].data_type == "s"


@pytest.mark.parametrize(
    ("name", "encoding", "delimiter", "bom"),
    [
        ("utf8.csv", "utf-8", ",", False),
        ("bom.csv", "utf-8", ";", True),
        ("gbk.csv", "gbk", "\t", False),
        ("gb18030.tsv", "gb18030", "\t", False),
        ("semicolon.txt", "gb18030", ";", False),
    ],
)
def test_csv_line_numbers_encodings_and_delimiters(
    tmp_path: Path, name: str, encoding: str, delimiter: str, bom: bool
) -> None:
    lines = ["居民登记表" + delimiter * 5, delimiter.join(map(str, HEADER))]
    lines += [delimiter.join(map(str, resident(0, 姓名="龘㐀" if encoding == "gb18030" else "张三"))), ""]
    lines += [delimiter.join(map(str, resident(i))) for i in (1, 2)]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode(encoding)
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + data if bom else data)
    run = run_validate(tmp_path, path)
    got = assert_invariants(run, [(name, "", 3), (name, "", 5), (name, "", 6)])
    assert run.code == 0
    assert got[0]["xm"] in ("张三", "龘㐀")


def test_duplicate_ids_across_two_files_and_sheets(tmp_path: Path) -> None:
    first = save(tmp_path / "一组.xlsx", {"说明": [["填表说明"]], "名单": [HEADER, resident(1), resident(2)]})
    second = tmp_path / "二组.csv"
    second.write_text("\n".join(",".join(map(str, r)) for r in [HEADER, resident(3), resident(1)]), "gbk")
    run = run_validate(tmp_path, first, second)
    got = assert_invariants(run, [("一组.xlsx", "名单", 2), ("一组.xlsx", "名单", 3), ("二组.csv", "", 2),
                                  ("二组.csv", "", 3)])  # fmt: skip
    assert [r["result_code"] for r in got] == ["", "", "", "10115"]


def test_two_registers_of_the_same_name_in_different_folders_are_told_apart(tmp_path: Path) -> None:
    (tmp_path / "村A").mkdir()
    (tmp_path / "村B").mkdir()
    first, second = tmp_path / "村A" / "登记表.csv", tmp_path / "村B" / "登记表.csv"
    first.write_text("\n".join(",".join(map(str, r)) for r in [HEADER, resident(1), resident(2)]), "utf-8")
    second.write_text("\n".join(",".join(map(str, r)) for r in [HEADER, resident(3), resident(2)]), "utf-8")
    run = run_validate(tmp_path, first, second)
    a, b = "村A/登记表.csv", "村B/登记表.csv"
    got = assert_invariants(run, [(a, "", 2), (a, "", 3), (b, "", 2), (b, "", 3)])
    assert [r["result_code"] for r in got] == ["", "", "", "10115"]
    assert f"{a} 第 3 行" in got[3]["message"]
    annotated = sorted(p.name for p in run.out.glob("annotated_*"))
    assert annotated == ["annotated_登记表.xlsx", "annotated_登记表_2.xlsx"]


def test_a_file_name_with_a_line_break_or_escape_codes_cannot_forge_the_summary(tmp_path: Path) -> None:
    name = "fake\n07:00:00 校验完成：10 行，其中 0 行未通过\x1b[31m.csv"
    register = tmp_path / name
    register.write_text("\n".join(",".join(map(str, r)) for r in [HEADER, resident(1)]), "utf-8")
    run = run_validate(tmp_path, register)
    assert run.code == 0 and [r["source_file"] for r in run.rows()] == [name]  # the reports keep the name
    assert "\x1b" not in run.stdout and "\x1b" not in run.stderr
    assert not any(line.startswith("07:00:00") for line in run.stdout.splitlines())
    [annotated] = [p.name for p in run.out.glob("annotated_*")]
    assert annotated == "annotated_fake_07:00:00 校验完成：10 行，其中 0 行未通过_[31m.xlsx"


def test_a_register_printed_with_its_header_on_every_page_has_no_header_residents(tmp_path: Path) -> None:
    rows: list[list[object]] = [["XX社区登记表"], HEADER]
    for serial in range(1, 8):
        if serial in (4, 7):
            rows += [["XX社区登记表（续）"], HEADER]
        rows.append(resident(serial))
    run = run_validate(tmp_path, save(tmp_path / "打印版.xlsx", {"登记表": rows}))
    got = assert_invariants(run, [("打印版.xlsx", "登记表", n) for n in (3, 4, 5, 8, 9, 10, 13)])
    assert {r["status"] for r in got} == {"valid"}


def test_a_second_table_with_its_columns_in_another_order_is_refused(tmp_path: Path) -> None:
    moved = [HEADER[3], *HEADER[:3], *HEADER[4:]]
    second = [[row[3], *row[:3], *row[4:]] for row in (resident(5), resident(6))]
    rows = [HEADER, resident(1), resident(2), [], ["二村"], moved, *second]
    run = run_validate(tmp_path, save(tmp_path / "两村.xlsx", {"登记表": rows}))
    line = assert_one_line_fatal(run, "两村.xlsx")
    assert "第 6 行" in line and "又是一个表头" in line


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_residents_above_the_header_are_named_in_a_warning(tmp_path: Path, kind: str) -> None:
    rows = [resident(1), resident(2), HEADER, resident(3)]
    if kind == "csv":
        register = tmp_path / "上方.csv"
        register.write_text("\n".join(",".join(map(str, r)) for r in rows), "utf-8")
    else:
        register = save(tmp_path / "上方.xlsx", {"名单": rows})
    run = run_validate(tmp_path, register)
    assert len(run.rows()) == 1
    assert "表头（第 3 行）上方的第 1、2 行有身份证号码" in run.stderr, run.stderr


def test_a_second_column_of_a_field_that_is_not_read_is_named_with_the_one_read(tmp_path: Path) -> None:
    """A template's empty 身份证号 column and the clerk's own 身份证号 column further right: every row
    says the ID number is empty, and the warning tells which column was read and how to use the other."""
    rows = [[*HEADER, "身份证号", "公民身份号码"]]
    rows += [[*resident(n, 身份证号=""), id_number(n), id_number(n)] for n in (1, 2)]
    register = save(tmp_path / "两列.xlsx", {"名单": rows})
    run = run_validate(tmp_path, register)
    assert len(run.rows()) == 2
    for letter, header in (("G", "身份证号"), ("H", "公民身份号码")):
        told = f"{letter} 列“{header}”也是身份证号码，没有读取，读取的是前面的 D 列“身份证号”"
        assert told in run.stderr, run.stderr
    assert "要用 G 列，请删去前面那一列或给它改名" in run.stderr, run.stderr


def test_sheet_choice_and_all_sheets(tmp_path: Path) -> None:
    path = save(
        tmp_path / "multi.xlsx",
        {"一组": [HEADER, resident(1)], "二组": [["标题"], HEADER, resident(2), resident(1)], "空表": []},
    )
    only = run_validate(tmp_path, path, "--sheet", "二组", out="one")
    assert [
        r["result_code"]
        for r in assert_invariants(only, [("multi.xlsx", "二组", 3), ("multi.xlsx", "二组", 4)])
    ] == ["", ""]
    every = run_validate(tmp_path, path, "--all-sheets", out="all")
    got = assert_invariants(
        every, [("multi.xlsx", "一组", 2), ("multi.xlsx", "二组", 3), ("multi.xlsx", "二组", 4)]
    )
    assert [r["result_code"] for r in got] == ["", "", "10115"]


def test_pinyin_headers_and_a_mapping_file(tmp_path: Path) -> None:
    path = save(tmp_path / "pinyin.xlsx", {"S": [
        ["xm", "xb", "mzdm", "csrq", "SFZHM", "ylfyzffs", "居民手机"],
        ["拼音", "1", "1", "19800101", id_number(10), "01", "139 0000 0010"],
    ]})  # fmt: skip
    mapping = tmp_path / "表头.toml"
    mapping.write_text('"居民手机" = "brdh"\n', encoding="utf-8")
    run = run_validate(tmp_path, path, "--mapping", mapping)
    [row] = assert_invariants(run, [("pinyin.xlsx", "S", 2)])
    assert (row["mzdm"], row["brdh"], row["status"]) == ("01", "13900000010", "valid")


def _write_bad_inputs(tmp_path: Path) -> dict[str, tuple[list[object], tuple[str, ...]]]:
    good = save(tmp_path / "good.xlsx", {"登记": [HEADER, resident(1)]})
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header_only.csv").write_text(",".join(map(str, HEADER)) + "\n", encoding="utf-8")
    save(tmp_path / "header_only.xlsx", {"S": [HEADER]})
    no_id = [h for h in HEADER if h != "身份证号"]
    (tmp_path / "no_id.csv").write_text(
        ",".join(map(str, no_id)) + "\n张三,男,汉族,13900000000,职工医保\n", encoding="utf-8"
    )
    (tmp_path / "text.xlsx").write_text("这不是 Excel\n", encoding="utf-8")
    (tmp_path / "truncated.xlsx").write_bytes(good.read_bytes()[:3000])
    (tmp_path / "utf32.csv").write_text(",".join(map(str, HEADER)) + "\n", encoding="utf-32")
    (tmp_path / "bad_mapping.toml").write_text("not toml = = =\n", encoding="utf-8")
    (tmp_path / "unknown_field.toml").write_text('"居民手机" = "nosuch"\n', encoding="utf-8")
    (tmp_path / "bad_config.toml").write_text("[defaults\n", encoding="utf-8")
    return {
        "empty": ([tmp_path / "empty.csv"], ("empty.csv",)),
        "header only csv": ([tmp_path / "header_only.csv"], ("header_only.csv",)),
        "header only xlsx": ([tmp_path / "header_only.xlsx"], ("header_only.xlsx",)),
        "no ID column": ([tmp_path / "no_id.csv"], ("no_id.csv", "身份证号码")),
        "text named xlsx": ([tmp_path / "text.xlsx"], ("text.xlsx",)),
        "truncated xlsx": ([tmp_path / "truncated.xlsx"], ("truncated.xlsx",)),
        "UTF-32 csv": ([tmp_path / "utf32.csv"], ("utf32.csv", "UTF-32")),
        "missing file": ([tmp_path / "missing.xlsx"], ("missing.xlsx",)),
        "unknown sheet": ([good, "--sheet", "nosuch"], ("good.xlsx", "nosuch", "登记")),
        "bad mapping": ([good, "--mapping", tmp_path / "bad_mapping.toml"], ("bad_mapping.toml",)),
        "unknown field": (
            [good, "--mapping", tmp_path / "unknown_field.toml"],
            ("unknown_field.toml", "nosuch"),
        ),
        "missing mapping": ([good, "--mapping", tmp_path / "nomap.toml"], ("nomap.toml",)),
        "missing config": ([good, "--config", tmp_path / "noconf.toml"], ("noconf.toml",)),
        "bad config": ([good, "--config", tmp_path / "bad_config.toml"], ("bad_config.toml",)),
    }


#: Every way a dry run must stop with exit 2 and one line (a bad --config once also printed a DEBUG line).
_BAD_CASES = [
    "empty", "header only csv", "header only xlsx", "no ID column", "text named xlsx", "truncated xlsx",
    "UTF-32 csv", "missing file", "unknown sheet", "bad mapping", "unknown field", "missing mapping",
    "missing config", "bad config",
]  # fmt: skip


@pytest.mark.parametrize("case", _BAD_CASES)
def test_bad_input_is_one_line_of_chinese_and_exit_2(tmp_path: Path, case: str) -> None:
    args, names = _write_bad_inputs(tmp_path)[case]
    assert_one_line_fatal(run_validate(tmp_path, *args), *names)


# --------------------------------------------------------------------------- regressions found from outside


def test_a_header_below_a_long_block_of_instructions_is_told_to_be_moved_up(tmp_path: Path) -> None:
    # "第一行有内容的行不是表头 … 在数据上方加一行表头" sent a clerk whose header was there, 41 rows down,
    # looking for a header to add.
    rows: list[list[object]] = [[f"填表说明第{i}条：请按要求填写"] for i in range(1, 41)]
    rows += [HEADER, resident(1)]
    run = run_validate(tmp_path, save(tmp_path / "说明多.xlsx", {"名单": rows}))
    line = assert_one_line_fatal(run, "说明多.xlsx")
    assert "前 30 行中没有表头" in line and "删减到 30 行以内" in line, line


def test_pre_numbered_template_rows_and_footer_rows_are_not_residents(tmp_path: Path) -> None:
    rows: list[list[object]] = [["序号", *HEADER]]
    rows += [[i + 1, *resident(i)] for i in range(3)]
    rows += [[i] for i in range(4, 11)]
    rows += [["合计", "3人"], ["填表人：张三", None, None, "审核人：李四"]]
    path = save(tmp_path / "模板.xlsx", {"模板": rows})
    run = run_validate(tmp_path, path)
    assert_invariants(run, [("模板.xlsx", "模板", r) for r in (2, 3, 4)])
    assert run.code == 0


def test_csv_header_cell_with_a_line_break(tmp_path: Path) -> None:
    header = [*HEADER[:3], '"身份证号\n（18位）"', *HEADER[4:]]
    lines = [",".join(map(str, header)), ",".join(map(str, resident(1))), ",".join(map(str, resident(2)))]
    path = tmp_path / "导出.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = run_validate(tmp_path, path)
    got = assert_invariants(run, [("导出.csv", "", 3), ("导出.csv", "", 4)])
    assert run.code == 0 and got[0]["sfzhm"] == id_number(1)


def test_results_csv_column_names_are_unique(tmp_path: Path) -> None:
    path = save(tmp_path / "两列电话.xlsx", {"S": [
        ["xm", "xb", "mzdm", "sfzhm", "ylfyzffs", "联系电话", "brdh", "status"],
        ["甲", "1", "01", id_number(1), "01", "13900000001", "010-12345678", "已核对"],
    ]})  # fmt: skip
    run = run_validate(tmp_path, path)
    [row] = assert_invariants(run, [("两列电话.xlsx", "S", 2)])
    header = run.header()
    assert len(header) == len(set(header)), [h for h in header if header.count(h) > 1]
    assert (row["brdh"], row["status"]) == ("13900000001", "valid")


def test_phone_with_excel_text_apostrophe(tmp_path: Path) -> None:
    path = tmp_path / "apostrophe.csv"
    rows = [HEADER, resident(1, 身份证号="'" + id_number(1), 联系电话="'13912345678")]
    path.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n", encoding="utf-8")
    [row] = assert_invariants(run_validate(tmp_path, path), [("apostrophe.csv", "", 2)])
    assert (row["sfzhm"], row["brdh"], row["status"]) == (id_number(1), "13912345678", "valid")


def test_a_formula_behind_a_nul_is_no_live_formula_in_results_csv(tmp_path: Path) -> None:
    # LibreOffice Calc's CSV import drops a leading NUL and runs the rest: \x00=HYPERLINK(…) became a link.
    path = tmp_path / "nul.csv"
    rows = [[*HEADER, "备注"], [*resident(1), '"\x00=HYPERLINK(""http://x"",""y"")"']]
    path.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n", encoding="utf-8-sig")
    [row] = assert_invariants(run_validate(tmp_path, path), [("nul.csv", "", 2)])
    assert row["备注"] == "'\x00=HYPERLINK(\"http://x\",\"y\")"


def test_single_address_column_with_a_village_named_street(tmp_path: Path) -> None:
    path = save(tmp_path / "address.xlsx", {"S": [
        [*HEADER, "现住址"], [*resident(1), "北京市海淀区中关村街道知春路1号"],
    ]})  # fmt: skip
    [row] = assert_invariants(run_validate(tmp_path, path), [("address.xlsx", "S", 2)])
    assert (row["dzsf"], row["dzs"], row["dzqx"], row["dzxz"], row["dzc"]) == (
        "北京市", "北京市", "海淀区", "中关村街道", "知春路1号")  # fmt: skip


def test_invisible_marks_pasted_with_a_value_are_dropped(tmp_path: Path) -> None:
    # Copied from a chat or a web page, a value brings marks the clerk cannot see: a phone with a zero-width
    # joiner, an ID in LRO/PDF marks, a name behind a left-to-right mark were faults no one could find.
    rows: list[list[object]] = [[*HEADER[:3], "身份证号\u202c", *HEADER[4:]]]
    rows += [
        resident(1, 姓名="\u200e张\u202e三\u2066"),
        resident(2, 联系电话="139\u200d0000\u20600002"),
        resident(3, 身份证号="\u202d" + id_number(3) + "\u202c"),
        resident(4, 民族="汉族\u200f", 医保类型="\u00ad职工医保"),
    ]
    path = save(tmp_path / "粘贴.xlsx", {"S": rows})
    run = run_validate(tmp_path, path)
    got = assert_invariants(run, [("粘贴.xlsx", "S", r) for r in range(2, 6)])
    assert run.code == 0, [r["message"] for r in got]
    assert [(r["xm"], r["brdh"], r["sfzhm"], r["mzdm"]) for r in got] == [
        ("张三", "13900000001", id_number(1), "01"),
        (got[1]["xm"], "13900000002", id_number(2), "01"),
        (got[2]["xm"], "13900000003", id_number(3), "01"),
        (got[3]["xm"], "13900000004", id_number(4), "01"),
    ]


@pytest.mark.parametrize("separator", ["，", "；", "  "])
def test_a_register_separated_by_chinese_commas_or_spaces_says_so(tmp_path: Path, separator: str) -> None:
    # Typed with a Chinese input method, every line was one column: "没有找到表头" for a header in plain view.
    path = tmp_path / "名单.txt"
    path.write_text("\n".join(separator.join(map(str, r)) for r in [HEADER, resident(1)]) + "\n", "utf-8")
    line = assert_one_line_fatal(run_validate(tmp_path, path), "名单.txt")
    assert "英文逗号" in line and "没有找到表头" not in line, line


def test_formulas_saved_without_results_fault_only_the_fields_they_hide(tmp_path: Path) -> None:
    # A register written by a program (openpyxl here) keeps =ROW()-1 and =TRIM(…) without results.
    path = tmp_path / "系统生成.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "名单"
    sheet.append(["序号", *HEADER, "年龄"])
    sheet.append(["=ROW()-1", *resident(1), "=DATEDIF(D2,TODAY(),\"Y\")"])
    sheet.append(["=ROW()-1", '=TRIM(" 居民丁 ")', *resident(2)[1:], 40])
    book.save(path)
    run = run_validate(tmp_path, path)
    assert run.code == 1 and "Traceback" not in run.stderr, run.stderr
    # (not assert_invariants: the annotated copy is the clerk's workbook, formulas and all)
    first, second = run.rows()
    assert [(r["source_sheet"], r["source_row"]) for r in (first, second)] == [("名单", "2"), ("名单", "3")]
    # 序号 is read as no field and 年龄 is the clerk's own: their lost results lose nothing sent.
    assert first["status"] == "valid", first
    assert second["status"] == "invalid" and "10110" in second["result_code"].split(";"), second
    assert "公式" in second["message"] and "Excel 或 WPS" in second["message"], second
    [fault] = [f for f in run.fault_lines() if f[0] == 10110]
    assert (fault[3], fault[4]) == (3, "姓名")
    warning = next(line for line in run.stderr.splitlines() if "公式" in line)
    for fragment in ("系统生成.xlsx[名单]", "序号", "姓名", "年龄", "保存"):
        assert fragment in warning, warning


def test_a_default_issue_date_that_is_no_date_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "ehc.toml"
    config.write_text('[defaults]\nfksj = "2025-13-45"\n', encoding="utf-8")
    register = tmp_path / "名单.csv"
    register.write_text("\n".join(",".join(map(str, r)) for r in [HEADER, resident(1)]), "utf-8")
    line = assert_one_line_fatal(run_validate(tmp_path, register, "--config", config), "fksj")
    assert "2025-13-45" in line and not (tmp_path / "out" / "results.csv").exists()
