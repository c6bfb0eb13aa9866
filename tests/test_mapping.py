"""Column mapping: aliases, pinyin codes, decorations, user mappings and missing columns."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ConfigError, InputError
from pipeline.mapping import load_mapping_file, map_columns
from pipeline.model import INPUT_FIELDS, MappedTable, RawTable
from pipeline.reading.headers import builtin_aliases, count_known_headers, header_key, is_known_header
from pipeline.reading.register import read_register

TEXT = pd.StringDtype("pyarrow", na_value=np.nan)


def _raw(columns: dict[str, list[str]], *, path: str = "/data/a.xlsx", sheet: str = "Sheet1") -> RawTable:
    data = pd.DataFrame({name: pd.Series(values, dtype=TEXT) for name, values in columns.items()})
    rows = len(data)
    return RawTable(
        path=path,
        sheet=sheet,
        header_row=1,
        headers=list(columns),
        column_positions=list(range(len(columns))),
        data=data,
        source_row=np.arange(2, rows + 2),
    )


def _first_row(mapped: MappedTable, fields: list[str]) -> list[str]:
    return [str(mapped.fields.at[0, field]) for field in fields]


REQUIRED = {
    "姓名": ["张三", "李四"],
    "身份证号码": ["420123196205184516", "110101199003077777"],
    "民族": ["汉族", "01"],
    "联系电话": ["13912343273", "13800000000"],
    "医保类型": ["职工医保", "居民医保"],
}


def test_clerk_headers_map_to_field_codes_and_every_field_is_present() -> None:
    mapped = map_columns(_raw({"序号": ["1", "2"], **REQUIRED, "性别": ["男", "女"], "学历": ["本科", ""]}))
    assert list(mapped.fields.columns) == list(INPUT_FIELDS)
    assert isinstance(mapped.fields.index, pd.RangeIndex)
    assert mapped.fields["xm"].tolist() == ["张三", "李四"]
    assert mapped.fields["sfzhm"].tolist() == ["420123196205184516", "110101199003077777"]
    assert mapped.fields["ylfyzffs"].tolist() == ["职工医保", "居民医保"]
    assert mapped.fields["xldm"].tolist() == ["本科", ""]
    assert mapped.fields["kh"].tolist() == ["", ""]  # absent -> empty text, not NaN
    assert mapped.fields["kh"].dtype == TEXT
    assert mapped.field_headers["brdh"] == "联系电话"
    assert "序号" not in mapped.extras.columns  # ignored: neither a field nor an extra
    assert list(mapped.extras.columns) == []


def test_pinyin_codes_in_any_case() -> None:
    columns = {"XM": ["a"], "sfzhm": ["b"], "MZDM": ["c"], "Brdh": ["d"], "ylfyzffs": ["e"], "orgcode": ["f"]}
    mapped = map_columns(_raw(columns))
    assert _first_row(mapped, ["xm", "sfzhm", "mzdm", "brdh", "ylfyzffs", "orgCode"]) == list("abcdef")
    assert mapped.field_headers["orgCode"] == "orgcode"


def test_pinyin_initials_and_full_pinyin_headers() -> None:
    """Registers exported by other systems name their columns in pinyin: initials or whole words."""
    columns = {
        "XUHAO": ["1"], "XINGMING": ["张三"], "XB": ["男"], "MZ": ["汉族"], "CSRQ": ["19620518"],
        "SFZH": ["420123196205184516"], "LXDH": ["13912343273"], "YBLX": ["职工医保"], "HYZK": ["已婚"],
        "WHCD": ["本科"], "ZhiYe": ["军人"], "Xiang Xi Di Zhi": ["湖北省武汉市江夏区纸坊街道某路1号"],
    }  # fmt: skip
    mapped = map_columns(_raw(columns))
    fields = ["xm", "xb", "mzdm", "csrq", "sfzhm", "brdh", "ylfyzffs", "fyzhdm", "xldm", "zydm"]
    assert _first_row(mapped, fields) == [
        "张三", "男", "汉族", "19620518", "420123196205184516", "13912343273", "职工医保", "已婚", "本科",
        "军人",
    ]  # fmt: skip
    assert mapped.fields["address"].tolist() == ["湖北省武汉市江夏区纸坊街道某路1号"]
    assert list(mapped.extras.columns) == []  # XUHAO (序号) is ignored, not an extra


def test_numbered_and_joined_headers() -> None:
    """List numbers in front of headers go; two names of one field joined by / or 或 name it."""
    columns = {
        "1.姓名": ["张三"], "二、身份证号码": ["420123196205184516"], "3、民族": ["汉族"],
        "手机号码/电话": ["13912343273"], "医保类型或参保类型": ["职工医保"], "姓名/性别": ["x"],
    }  # fmt: skip
    mapped = map_columns(_raw(columns))
    assert _first_row(mapped, ["xm", "sfzhm", "mzdm", "brdh", "ylfyzffs"]) == [
        "张三", "420123196205184516", "汉族", "13912343273", "职工医保",
    ]  # fmt: skip
    assert list(mapped.extras.columns) == ["姓名/性别"]  # names of two fields: not taken for either
    assert is_known_header("10.联系电话") and not is_known_header("10") and not is_known_header("姓名/性别")


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("移动电话", "brdh"), ("联系手机", "brdh"), ("家庭电话", "brdh"), ("公民身份证件号码", "sfzhm"),
        ("医疗保险类型", "ylfyzffs"), ("参保险种", "ylfyzffs"), ("婚姻状态", "fyzhdm"), ("文化", "xldm"),
        ("职业类型", "zydm"), ("户籍所在地", "address"), ("详细住址", "address"), ("所在村（居）", "dzc"),
        ("居民健康档案编号", "jkdah"), ("新农合医疗证号", "xnhkh"), ("出生时间", "csrq"),
    ],
)  # fmt: skip
def test_common_column_names_of_registers(header: str, field: str) -> None:
    others = {name: values[:1] for name, values in REQUIRED.items() if name not in _SAME_FIELD[field]}
    mapped = map_columns(_raw({**others, header: ["v"]}))
    assert mapped.field_headers[field] == header


#: The headers of REQUIRED that name each field (left out when another header is to name it).
_SAME_FIELD = {
    "brdh": {"联系电话"}, "ylfyzffs": {"医保类型"}, "sfzhm": {"身份证号码"}, "fyzhdm": set(), "xldm": set(),
    "zydm": set(), "address": set(), "dzc": set(), "jkdah": set(), "xnhkh": set(), "csrq": set(),
}  # fmt: skip


def test_a_register_whose_only_number_column_is_the_document_number_reads_id_numbers_from_it() -> None:
    without_id = {k: v for k, v in REQUIRED.items() if k != "身份证号码"}
    documents = {"证件类型": ["居民身份证", "护照"], "证件号码": ["420123196205184516", "E1"]}
    mapped = map_columns(_raw({**without_id, **documents}))
    assert mapped.fields["sfzhm"].tolist() == ["420123196205184516", "E1"]  # a passport's: refused later
    assert mapped.fields["zjhm"].tolist() == ["", ""] and mapped.field_headers["sfzhm"] == "证件号码"
    both = map_columns(_raw({**REQUIRED, "证件号码": ["x", "y"]}))
    assert both.field_headers["sfzhm"] == "身份证号码" and both.field_headers["zjhm"] == "证件号码"
    with pytest.raises(InputError, match="身份证号码"):  # the clerk said it is the document number
        map_columns(_raw({**without_id, "证件号码": ["1", "2"]}), {"证件号码": "zjhm"})


def test_a_column_named_in_full_takes_its_field_before_pinyin_initials() -> None:
    """DH is 电话 in pinyin initials, and also 单号: the column that says 联系电话 is the phone."""
    mapped = map_columns(_raw({"DH": ["A-001", "A-002"], **REQUIRED, "XH": ["1", "2"]}))
    assert mapped.field_headers["brdh"] == "联系电话"
    assert list(mapped.extras.columns) == ["DH", "XH"]  # kept in the reports as the clerk's own columns


def test_no_builtin_alias_names_two_fields() -> None:
    """A header key the data file gives to two fields would silently go to the first."""
    text = (Path(__file__).parent.parent / "schemas" / "column_aliases.csv").read_text(encoding="utf-8")
    fields: dict[str, set[str]] = {}
    for line in text.splitlines()[1:]:
        field, alias = line.split(",", 1)
        fields.setdefault(header_key(alias), set()).add(field)
    assert {key: names for key, names in fields.items() if len(names) > 1} == {}
    codes = {field.casefold(): field for field in INPUT_FIELDS}
    assert all(codes.get(key, next(iter(names))) in names for key, names in fields.items())


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("*姓名", "姓名"),
        ("姓名＊", "姓名"),
        (" 身份证号码（必填）", "身份证号码"),
        ("联系电话(选填)：", "联系电话"),
        ("民\u3000族", "民族"),
        ("医保\n类型", "医保类型"),
        ("出生日期\u00a0【格式：19900101】", "出生日期"),
        ("ＸＭ", "xm"),
        ("(备注)", "(备注)"),
        ("★身份证号码", "身份证号码"),  # a template's mark of a required column
        ("※联系电话", "联系电话"),
        ("医保类型▼", "医保类型"),  # a drop-down's arrow typed into the header
    ],
)
def test_header_key_drops_decorations(header: str, key: str) -> None:
    assert header_key(header) == key


@pytest.mark.parametrize(
    ("header", "key"),
    [("(备注【必填】", "(备注"), ("姓名（必填", "姓名(必填"), ("姓名(【必填】", "姓名("), ("<姓名>>(", ">(")],
)
def test_an_unclosed_bracket_is_kept_and_the_notes_after_it_still_dropped(header: str, key: str) -> None:
    assert header_key(header) == key


@pytest.mark.parametrize("opener", ["(", "[", "【", "〔", "<", "(【"])
def test_a_header_cell_of_unclosed_brackets_is_read_in_linear_time(opener: str) -> None:
    """A title row of cells full of ``(`` once kept the header search busy for minutes (a 600 KB CSV)."""
    cells = [opener * (30_000 // len(opener))] * 10
    started = time.perf_counter()
    assert count_known_headers(cells) == 0
    assert time.perf_counter() - started < 1.0


def test_decorated_headers_are_recognised() -> None:
    columns = {
        "*姓 名": ["a"],
        "公民身份号码（必填）": ["b"],
        "民族：": ["c"],
        "手机号码\n(11位)": ["d"],
        "参保类型[必填]": ["e"],
    }
    mapped = map_columns(_raw(columns))
    assert _first_row(mapped, ["xm", "sfzhm", "mzdm", "brdh", "ylfyzffs"]) == list("abcde")
    assert mapped.field_headers["sfzhm"] == "公民身份号码（必填）"


def test_unknown_columns_are_kept_in_order_with_their_values() -> None:
    mapped = map_columns(_raw({"备注": ["x", "y"], **REQUIRED, "所属网格": ["一", "二"]}))
    assert list(mapped.extras.columns) == ["备注", "所属网格"]
    assert mapped.extras["所属网格"].tolist() == ["一", "二"]
    assert isinstance(mapped.extras.index, pd.RangeIndex)


def test_two_columns_for_one_field_first_wins_second_is_extra() -> None:
    mapped = map_columns(_raw({**REQUIRED, "身份证号": ["x", "y"]}))
    assert mapped.field_headers["sfzhm"] == "身份证号码"
    assert mapped.fields["sfzhm"].tolist() == REQUIRED["身份证号码"]
    assert mapped.extras["身份证号"].tolist() == ["x", "y"]


def test_user_alias_wins_over_builtin() -> None:
    columns = {**REQUIRED, "联系人电话": ["1", "2"], "档案编号": ["D1", "D2"]}
    mapped = map_columns(_raw(columns), {"联系人电话": "brdh", "档案编号（选填）": "JKDAH", "备注": "ignore"})
    assert mapped.field_headers["brdh"] == "联系人电话"
    assert mapped.fields["brdh"].tolist() == ["1", "2"]
    assert mapped.fields["jkdah"].tolist() == ["D1", "D2"]
    assert list(mapped.extras.columns) == ["联系电话"]  # the built-in match lost to the user's choice


def test_a_column_mapped_to_extra_is_kept_as_the_clerks_own_and_read_as_no_field() -> None:
    mapped = map_columns(_raw({**REQUIRED, "婚姻状况": ["已婚", "未婚"], "序号": ["1", "2"]}),
                         {"婚姻状况": "extra", "序号": "ignore"})  # fmt: skip
    assert "fyzhdm" not in mapped.field_headers and mapped.fields["fyzhdm"].tolist() == ["", ""]
    assert list(mapped.extras.columns) == ["婚姻状况"] and mapped.extras["婚姻状况"].tolist() == [
        "已婚",
        "未婚",
    ]


def test_user_alias_naming_an_unknown_field_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as excinfo:
        map_columns(_raw(REQUIRED), {"联系人电话": "phone"})
    message = str(excinfo.value)
    assert "phone" in message and "联系人电话" in message and "sfzhm" in message and "\n" not in message


def test_missing_required_columns_name_them_and_list_the_headers() -> None:
    columns = {"姓名": ["a"], "性别": ["男"], "民族": ["汉"], "联系\n电话": ["1"]}
    with pytest.raises(InputError) as excinfo:
        map_columns(_raw(columns, path="/in/a.xlsx", sheet="Sheet1"))
    assert str(excinfo.value) == (
        "文件 a.xlsx，工作表 Sheet1：缺少必需的列：身份证号码、医疗费用支付方式。"
        "找到的表头：姓名、性别、民族、联系 电话。处理办法：在表头行加上这些列，或用 --mapping 指定对应关系"
    )


def test_missing_columns_of_a_csv_name_no_sheet() -> None:
    with pytest.raises(InputError) as excinfo:
        map_columns(_raw({"甲": ["1"]}, path="b.csv", sheet=""))
    assert str(excinfo.value).startswith(
        "文件 b.csv：缺少必需的列：姓名、身份证号码、民族、联系电话、医疗费用支付方式。"
    )


def test_single_address_column_is_the_input_only_address_field() -> None:
    mapped = map_columns(_raw({**REQUIRED, "现住址": ["湖北省武汉市江夏区纸坊街道某路1号", ""]}))
    assert mapped.fields["address"].tolist()[0] == "湖北省武汉市江夏区纸坊街道某路1号"
    assert mapped.fields["dzc"].tolist() == ["", ""]


def test_separate_address_parts_and_the_rest_as_dzc() -> None:
    parts = {
        "省": ["湖北省"],
        "市": ["武汉市"],
        "区/县": ["江夏区"],
        "乡镇": ["纸坊街道"],
        "详细地址": ["某路1号"],
    }
    mapped = map_columns(_raw({**{k: v[:1] for k, v in REQUIRED.items()}, **parts}))
    assert _first_row(mapped, ["dzsf", "dzs", "dzqx", "dzxz", "dzc", "address"]) == [
        "湖北省", "武汉市", "江夏区", "纸坊街道", "某路1号", "",
    ]  # fmt: skip


def test_every_builtin_alias_names_a_field() -> None:
    aliases = builtin_aliases()
    assert set(aliases.values()) <= {*INPUT_FIELDS, "ignore"}
    for header in (
        "身份证号",
        "公民身份号码",
        "手机号",
        "联系方式",
        "婚姻",
        "参保类型",
        "发卡日期",
        "档案号",
        "isrealname",
    ):
        assert is_known_header(header)
    assert not is_known_header("序号")


def test_read_then_map_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "标题\n序号,*姓名,身份证号,民族,手机号,医保类别,楼栋\n1,张三,420123196205184516,01,139,自费,3栋\n",
        "utf-8",
    )
    [raw] = read_register(path)
    mapped = map_columns(raw)
    assert _first_row(mapped, ["xm", "sfzhm", "mzdm"]) == ["张三", "420123196205184516", "01"]
    assert mapped.extras.columns.tolist() == ["楼栋"]


# --- mapping files ----------------------------------------------------------------------------------------


def test_mapping_file_with_columns_table(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[columns]\n"联系人电话" = "brdh"\n"机构" = "ORGCODE"\n', encoding="utf-8")
    assert load_mapping_file(path) == {"联系人电话": "brdh", "机构": "orgCode"}


def test_mapping_file_with_top_level_pairs(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('"姓名（户主）" = "xm"\n"备注" = "ignore"\n', encoding="utf-8")
    assert load_mapping_file(path) == {"姓名（户主）": "xm", "备注": "ignore"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('"联系人电话" = "phone"\n', "phone"),
        ('"联系人电话" = 3\n', "联系人电话"),
        ('"联系人电话" = \n', "格式错误"),
        ("columns = 5\n", "[columns]"),
    ],
)
def test_bad_mapping_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        load_mapping_file(path)
    assert fragment in str(excinfo.value)
    assert "m.toml" in str(excinfo.value)


def test_a_mapping_file_with_a_typo_is_told_how_its_lines_look_not_a_configuration(tmp_path: Path) -> None:
    path = tmp_path / "表头.toml"
    path.write_text('"居民手机" = "brdh\n', encoding="utf-8")  # the closing quote forgotten
    with pytest.raises(ConfigError) as excinfo:
        load_mapping_file(path)
    message = str(excinfo.value)
    assert '"居民手机" = "brdh"' in message and "第 1 行" in message
    assert "org_code" not in message and "[platform]" not in message


def test_missing_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_mapping_file(tmp_path / "none.toml")
    assert "找不到" in str(excinfo.value)
