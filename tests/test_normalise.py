"""Normalisation: each cleaning rule, the code tables, derived fields, address split, defaults."""

from __future__ import annotations

import datetime
import random
import string
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.config import DefaultValues
from pipeline.model import FAULT_COLUMNS, FIELDS, INPUT_FIELDS
from pipeline.normalise import _phone_text, clean_dates, clean_phones, nfkc, normalise
from pipeline.reports.xlsx.writer import display_widths
from pipeline.text.address import split_addresses
from pipeline.text.arrow import (
    all_empty,
    ascii_and_cjk_table,
    empty_mask,
    outside_ascii_and_cjk,
    replace_masked,
)
from pipeline.text.dates import normalise_dates, parse_date
from pipeline.text.idnumber import check_character

TODAY = datetime.date(2026, 6, 1)
MALE_ID = "11010519491231001" + check_character("11010519491231001")
FEMALE_ID = "11010519491231002X"
DEFAULTS = DefaultValues(org_code="440600001", dzsf="广东省", dzs="佛山市")


def frame(*rows: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [{f: r.get(f, "") for f in INPUT_FIELDS} for r in rows], columns=list(INPUT_FIELDS), dtype="str"
    )


def run(*rows: dict[str, str], defaults: DefaultValues = DEFAULTS) -> tuple[pd.DataFrame, pd.DataFrame]:
    return normalise(frame(*rows), defaults, TODAY)


def one(field: str, value: str, **others: str) -> str:
    rows, _ = run({field: value, **others})
    return str(rows[field].iloc[0])


def column(field: str, values: list[str]) -> list[str]:
    rows, _ = run(*({field: v} for v in values))
    return rows[field].tolist()


# --- shape ---------------------------------------------------------------------


def test_output_has_exactly_the_fields_and_the_index() -> None:
    fields = frame({"xm": "张三"}, {"xm": "李四"}, {"xm": "王五"})
    rows, warnings = normalise(fields, DEFAULTS, TODAY)
    assert list(rows.columns) == list(FIELDS)
    assert rows.index.equals(fields.index)
    assert not rows.isna().any().any()
    assert list(warnings.columns) == list(FAULT_COLUMNS)
    assert warnings.empty


def test_empty_register() -> None:
    rows, warnings = normalise(frame(), DEFAULTS, TODAY)
    assert rows.empty and list(rows.columns) == list(FIELDS)
    assert warnings.empty


def test_missing_input_field_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="address"):
        normalise(frame({"xm": "张三"}).drop(columns=["address"]), DEFAULTS, TODAY)


# --- text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (" 张　三 ", "张三"),
        ("张\u00a0三", "张三"),
        ("ＪＯＨＮ　　ＳＭＩＴＨ", "JOHN SMITH"),
        (" JOHN   SMITH ", "JOHN SMITH"),
        ("阿依古丽•买买提", "阿依古丽·买买提"),
        ("阿依古丽 · 买买提", "阿依古丽·买买提"),
        ("李四", "李四"),
    ],
)
def test_names(written: str, expected: str) -> None:
    assert one("xm", written) == expected


def test_text_fields_lose_every_space_and_become_half_width() -> None:
    assert one("dzc", " 文华路　１２３号 ") == "文华路123号"
    assert one("dzqx", "南 海 区") == "南海区"
    assert one("jkdah", "４４０６ 0001-23") == "4406000123"


def test_id_number_is_cleaned_and_its_check_character_upper_cased() -> None:
    assert one("sfzhm", "11010519491231002x") == FEMALE_ID
    assert one("sfzhm", " １１０１０５ １９４９１２３１ ００２ｘ ") == FEMALE_ID
    assert one("sfzhm", "'11010519491231002X") == FEMALE_ID
    assert one("sfzhm", "110105-19491231-002X") == FEMALE_ID


def test_id_in_scientific_notation_is_not_repaired() -> None:
    rows, warnings = run({"sfzhm": "4.20123196205184E+17"})
    assert rows["sfzhm"].iloc[0] == "4.20123196205184E+17"
    assert rows["csrq"].iloc[0] == "" and rows["xb"].iloc[0] == ""
    assert warnings.empty


# --- dates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "1962-05-18",
        "1962-05-18 00:00:00",
        "1962-5-18",
        "19620518",
        "1962/5/18",
        "1962/05/18 08:30",
        "1962.5.18",
        "1962年5月18日",
        "1962 年 5 月 18 日",
        "1962年5月18号",  # 号, as 日 is often said and typed
        "１９６２－０５－１８",
        "1962-05-18T00:00:00",
        "22784",  # Excel serial day number
        "22784.0",
    ],
)
def test_dates_become_yyyymmdd(written: str) -> None:
    assert parse_date(written) == "19620518"
    assert one("csrq", written) == "19620518"


@pytest.mark.parametrize(
    ("written", "kept"), [("1962-02-30", "1962-02-30"), ("1962", "1962"), ("昨天 ", "昨天")]
)
def test_unparseable_dates_stay_for_validation(written: str, kept: str) -> None:
    assert parse_date(written) is None
    assert one("csrq", written, sfzhm=MALE_ID) == kept


@pytest.mark.parametrize("space", [" ", "\u3000", "\t"])
def test_a_date_followed_by_a_long_run_of_spaces_is_read_in_linear_time(space: str) -> None:
    """Three such cells of 30,000 characters kept ehc validate busy for 36 seconds."""
    written = "2020-1-1" + space * 16_000 + "x"
    started = time.perf_counter()
    assert parse_date(written) is None
    assert time.perf_counter() - started < 0.5


def _date_like(rng: random.Random) -> str:
    year = rng.choice(["0000", "0001", "0999", "1000", "1899", "1962", "2000", "2024", "9999", "19a2"])
    month = rng.choice(["00", "01", "02", "1", "2", "09", "12", "13", "001"])
    day = rng.choice(["0", "00", "01", "3", "9", "28", "29", "30", "31", "32"])
    form = rng.choice(
        ["{y}-{m}-{d}", "{y}{m}{d}", "{y}/{m}/{d}", "{y}.{m}.{d}", "{y}/{m}-{d}", "{y}年{m}月{d}日",
         "{y}年{m}月{d}", "{y}年{m}/{d}", " {y}-{m}-{d}", "{y}-{m}-{d} 12:00", "{y}－{m}－{d}",
         "{y}年 {m}月{d}日", "{y}-{m}-{d}日", "{y}x{m}/{d}", "{y}年{m}月{d}x", "{y}{m}{d} 10:00", "", "12345",
         "昨天"]
    )  # fmt: skip
    return form.format(y=year, m=month, d=day)


def test_dates_read_over_the_column_as_one_by_one() -> None:
    """Common forms are read from the bytes of the whole column: each value ends as normalise_dates has it."""
    rng = random.Random(4)
    written = pd.Series([_date_like(rng) for _ in range(20_000)], dtype="str")
    one_by_one = normalise_dates(nfkc(written))
    assert clean_dates(written).tolist() == one_by_one.tolist()
    assert (one_by_one != written).any() and (one_by_one == written).any()


@pytest.mark.parametrize(
    "form", ["{y}-{m:02d}-{d:02d}", "{y}/{m}/{d}", "{y}年{m}月{d}日", "{y}{m:02d}{d:02d}"]
)
def test_a_column_of_one_date_form_reads_as_one_by_one(form: str) -> None:
    """A width whose values all have one layout is read without copies: the same dates, unreal ones left."""
    rng = np.random.default_rng(5)
    years, months, days = (
        rng.integers(1890, 2030, 5_000),
        rng.integers(1, 13, 5_000),
        rng.integers(1, 32, 5_000),
    )
    written = pd.Series(
        [form.format(y=y, m=m, d=d) for y, m, d in zip(years, months, days, strict=True)], dtype="str"
    )
    one_by_one = normalise_dates(nfkc(written))
    assert clean_dates(written).tolist() == one_by_one.tolist()
    assert (one_by_one.str.len() == 8).any() and (days == 31).any()


def test_unusual_characters_found_from_the_bytes_as_by_a_regular_expression() -> None:
    characters = [chr(c) for c in [*range(0x80), 0xA0, 0xE9, 0x3000, 0x3400, 0x4000, 0x4DFF, 0x4E00, 0x4E1C,
                                   0x5E74, 0x9FFF, 0xA000, 0xFEFF, 0xFF10, 0x1F600, 0x10FFFF]]  # fmt: skip
    rng = random.Random(5)
    values = pa.array(["".join(rng.choices(characters, k=rng.randint(0, 5))) for _ in range(20_000)])
    for allowed, pattern in [
        ("".join(map(chr, range(0x21, 0x7F))), r"[^\x21-\x7e\x{4e00}-\x{9fff}]"),
        (string.ascii_letters, r"[^\x{4e00}-\x{9fff}A-Za-z]"),
    ]:
        for part in (values, values.slice(7, 999)):
            expected = pc.match_substring_regex(part, pattern).to_numpy(zero_copy_only=False)
            assert (outside_ascii_and_cjk(part, ascii_and_cjk_table(allowed)) == expected).all()


def test_masked_values_replaced_in_order_as_arrow_replace_with_mask_does() -> None:
    rng = random.Random(6)
    texts = ["".join(rng.choices("ab张三 ", k=rng.randint(0, 6))) for _ in range(5_000)]
    values = pa.array(texts, pa.large_string())
    for share in (0.0, 0.03, 0.5, 1.0):
        for part in (values, values.slice(11, 3_000)):
            flags = [rng.random() < share for _ in range(len(part))]
            mask = pa.array(flags)
            replacements = pc.utf8_upper(pc.filter(part, mask))
            expected = pc.replace_with_mask(part, mask, replacements)
            assert replace_masked(part, mask, replacements).equals(expected)
            assert replace_masked(part, pd.Series(flags).to_numpy(), replacements).equals(expected)
    with pytest.raises(ValueError, match="2 values to replace, 1 replacements"):
        replace_masked(pa.array(["a", "b"], pa.large_string()), pa.array([True, True]), pa.array(["x"]))


def test_issue_date_parsed_too() -> None:
    assert one("fksj", "2025/1/2") == "20250102"


# --- code fields -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "written", "code"),
    [
        ("xb", "男", "1"),
        ("xb", "男性", "1"),
        ("xb", "女", "2"),
        ("xb", "2", "2"),
        ("xb", "1.0", "1"),
        ("mzdm", "汉", "01"),
        ("xb", "M", "1"),
        ("xb", "female", "2"),
        ("xb", "Ｆ", "2"),
        ("mzdm", "汉族", "01"),
        ("mzdm", "1", "01"),
        ("mzdm", "01", "01"),
        ("mzdm", "01汉族", "01"),
        ("mzdm", "汉族(01)", "01"),  # as drop-down lists write them, the name first
        ("mzdm", "汉族（01）", "01"),
        ("mzdm", "汉族|01", "01"),
        ("xb", "男-1", "1"),
        ("ylfyzffs", "全自费(07)", "07"),
        ("mzdm", "han", "01"),
        ("mzdm", "壮族", "08"),
        ("mzdm", "德昴族", "46"),
        ("fyzhdm", "已婚", "20"),
        ("fyzhdm", "初婚", "20"),
        ("xldm", "大学本科", "20"),
        ("xldm", "本科", "20"),
        ("xldm", "大专", "30"),
        ("xldm", "大学本科毕业", "20"),
        ("ylfyzffs", "城镇职工基本医疗保险", "01"),
        ("ylfyzffs", "职工医保", "01"),
        ("ylfyzffs", "7", "07"),
        ("ylfyzffs", "职工", "01"),
        ("ylfyzffs", "居民", "02"),
        ("fyzhdm", "未说明", "90"),
        ("zjlx", "居民身份证", "01"),
        ("zjlx", "身份证", "01"),
        ("zjlx", "护照", "03"),
        ("zydm", "x", "X"),
        ("zydm", "军人", "X"),
        ("dzlb", "户籍地址", "1"),
        ("dzlb", "现住址", "2"),
    ],
)
def test_code_fields_accept_code_name_or_synonym(field: str, written: str, code: str) -> None:
    rows, warnings = run({field: written, "sfzhm": MALE_ID})
    assert rows[field].iloc[0] == code
    assert warnings.empty


@pytest.mark.parametrize("written", ["a" * 4_000 + "(", "汉族" * 1_500 + "(01)", "01" * 2_000 + "x"])
def test_a_long_code_cell_of_letters_or_codes_is_kept_for_validation_without_recursing(written: str) -> None:
    """A 民族 cell of 4,000 letters and a bracket was split two letters at a time: RecursionError, exit 2."""
    started = time.perf_counter()
    assert one("mzdm", written, sfzhm=MALE_ID) == written
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("field", "written", "category", "result_code"),
    [
        ("fyzhdm", "21", "20", 10132),
        ("fyzhdm", "23", "20", 10132),
        ("xldm", "14", "10", 10133),
        ("xldm", "23", "20", 10133),
        ("xldm", "35", "30", 10133),
        ("xldm", "44", "40", 10133),
        ("xldm", "61", "60", 10133),
        ("xldm", "73", "70", 10133),
        ("xldm", "83", "81", 10133),
        ("zydm", "1-01", "1", 10135),
        ("zydm", "2-02-01", "2", 10135),
        ("zydm", "27", "2", 10135),
    ],
)
def test_finer_national_sub_codes_fold_with_a_warning(
    field: str, written: str, category: str, result_code: int
) -> None:
    rows, warnings = run({"xm": "张三"}, {field: written})
    assert rows[field].iloc[1] == category
    assert warnings[["row_id", "field", "code", "severity"]].values.tolist() == [
        [1, field, result_code, "warning"]
    ]
    assert written in warnings["message"].iloc[0] and category in warnings["message"].iloc[0]


def test_unknown_code_values_stay_as_written() -> None:
    assert column("mzdm", ["99", "火星族", "Ｍ"]) == ["99", "火星族", "M"]
    assert column("xb", ["男人", "3"]) == ["男人", "3"]


# --- derived fields ----------------------------------------------------------------


def test_birth_date_and_gender_come_from_the_id_number_when_empty() -> None:
    rows, _ = run({"sfzhm": MALE_ID}, {"sfzhm": FEMALE_ID, "csrq": "1949-12-30", "xb": "男"})
    assert rows[["csrq", "xb"]].values.tolist() == [["19491231", "1"], ["19491230", "1"]]


def test_nothing_is_derived_from_an_unreadable_id_number() -> None:
    future = "11010520991231001" + check_character("11010520991231001")
    rows, _ = run({"sfzhm": "1101051949"}, {"sfzhm": future})
    assert rows[["csrq", "xb"]].values.tolist() == [["", ""], ["", ""]]


def test_document_type_and_number_default_to_the_id_number() -> None:
    rows, _ = run({"sfzhm": MALE_ID}, {"sfzhm": MALE_ID, "zjlx": "护照", "zjhm": "E12345678"})
    assert rows[["zjlx", "zjhm"]].values.tolist() == [["01", MALE_ID], ["03", "E12345678"]]


def test_15_digit_id_is_upgraded_with_a_warning() -> None:
    rows, warnings = run({"xm": "张三"}, {"sfzhm": "110105491231002", "zjhm": "110105491231002"})
    assert rows["sfzhm"].iloc[1] == FEMALE_ID
    assert rows["zjhm"].iloc[1] == FEMALE_ID
    assert rows["csrq"].iloc[1] == "19491231" and rows["xb"].iloc[1] == "2"
    assert warnings[["row_id", "field", "code", "severity"]].values.tolist() == [
        [1, "sfzhm", 10111, "warning"]
    ]
    assert "110105491231002" in warnings["message"].iloc[0] and FEMALE_ID in warnings["message"].iloc[0]


def test_warnings_are_sorted_by_row() -> None:
    _, warnings = run({"xldm": "14"}, {"sfzhm": "110105491231002", "fyzhdm": "21"}, {"zydm": "1-01"})
    assert warnings["row_id"].tolist() == sorted(warnings["row_id"].tolist())
    assert set(warnings["severity"]) == {"warning"}


# --- phones ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("139 1234 5678", "13912345678"),
        ("+86 139-1234-5678", "13912345678"),
        ("0086 13912345678", "13912345678"),
        ("+86(139)12345678", "13912345678"),
        ("8613912345678", "13912345678"),
        ("(0757)8622-3344", "075786223344"),
        ("０７５７－８６２２３３４４", "075786223344"),
        ("010-62345678", "01062345678"),
        ("13912345678", "13912345678"),
        # Digits apart by dashes or spaces only: separators taken out as plain text, the prefix still dropped.
        ("86 139 1234 5678", "13912345678"),
        ("0086-139-1234-5678", "13912345678"),
        ("86-0757-1234567", "8607571234567"),  # no mobile after 86: kept, for the check to refuse
        ("0086", ""),
        ("- -", ""),
        ("139\t1234 5678", "13912345678"),
    ],
)
def test_phones(written: str, expected: str) -> None:
    assert one("brdh", written) == expected


def test_phones_apart_by_dashes_or_spaces_are_cleaned_as_every_other_form_is() -> None:
    """The plain-text path for 139-1234-5678 and 0757 8622 3344 answers what the full cleaning would."""
    written = [
        "139-1234-5678", "0757 8622 3344", "86 13912345678", "0086-13912345678", "135 - 8100", "１３９-1",
        "+86 139-1234-5678", "139-1234-5678.0", "'0757-86223344", " ", "-", "", "86", "0757-8622-3344 转 8",
    ]  # fmt: skip
    values = pd.Series(written * 40, dtype="str")  # enough rows for the column path, not the few-rows one
    cleaned = clean_phones(values).tolist()
    assert cleaned == _phone_text(pa.array(written, pa.large_string())).to_pylist() * 40
    assert cleaned[:3] == ["13912345678", "075786223344", "13912345678"]


# --- address ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "parts"),
    [
        (
            "广东省佛山市南海区桂城街道南海大道北1号",
            ["广东省", "佛山市", "南海区", "桂城街道", "南海大道北1号"],
        ),
        ("北京市朝阳区建国路88号", ["北京市", "北京市", "朝阳区", "", "建国路88号"]),
        ("上海市浦东新区张江镇科苑路1号", ["上海市", "上海市", "浦东新区", "张江镇", "科苑路1号"]),
        (
            "内蒙古自治区呼和浩特市新城区海东路街道1号",
            ["内蒙古自治区", "呼和浩特市", "新城区", "海东路街道", "1号"],
        ),
        (
            "湖北省恩施土家族苗族自治州恩施市舞阳坝街道",
            ["湖北省", "恩施土家族苗族自治州", "恩施市", "舞阳坝街道", ""],
        ),
        ("广东东莞市虎门镇连升路2号", ["广东省", "东莞市", "", "虎门镇", "连升路2号"]),
        ("中国广东省广州市天河区天河路385号", ["广东省", "广州市", "天河区", "", "天河路385号"]),
        ("西藏阿里地区噶尔县狮泉河镇", ["西藏自治区", "阿里地区", "噶尔县", "狮泉河镇", ""]),
        ("温州市鹿城区五马街道", ["", "温州市", "鹿城区", "五马街道", ""]),
        ("南海区桂城街道灯湖东路1号", ["", "", "南海区", "桂城街道", "灯湖东路1号"]),
        ("锡林郭勒盟锡林浩特市", ["", "锡林郭勒盟", "锡林浩特市", "", ""]),
        ("某某村委会3组", ["", "", "", "", "某某村委会3组"]),
    ],
)
def test_address_split(address: str, parts: list[str]) -> None:
    split = split_addresses(pd.Series([address], dtype="str"))
    assert split.iloc[0].tolist() == parts


def test_address_column_fills_the_parts_and_explicit_parts_win() -> None:
    rows, _ = run(
        {"address": "广东省 佛山市南海区桂城街道南海大道北1号"},
        {"address": "湖北省武汉市洪山区珞南街道珞喻路1号", "dzqx": "江夏区"},
        {"dzc": "无地址列"},
        defaults=DefaultValues(org_code="1", dzsf="广东省", dzs="佛山市"),
    )
    parts = ["dzsf", "dzs", "dzqx", "dzxz", "dzc"]
    assert rows[parts].values.tolist() == [
        ["广东省", "佛山市", "南海区", "桂城街道", "南海大道北1号"],
        ["湖北省", "武汉市", "江夏区", "珞南街道", "珞喻路1号"],
        ["广东省", "佛山市", "", "", "无地址列"],
    ]


# --- defaults -----------------------------------------------------------------------------


def test_defaults_fill_empty_cells_only() -> None:
    defaults = DefaultValues(
        org_code="440600001", dzsf="广东省", dzs="佛山市", klx="3", is_real_name="1", dzlb="2"
    )
    rows, _ = run(
        {},
        {"orgCode": "X1", "klx": "1", "isRealName": "0", "dzlb": "户籍", "fksj": "20250101"},
        defaults=defaults,
    )
    fields = ["orgCode", "dzsf", "dzs", "klx", "isRealName", "dzlb", "fksj"]
    assert rows[fields].values.tolist() == [
        ["440600001", "广东省", "佛山市", "3", "1", "2", "20260601"],
        ["X1", "广东省", "佛山市", "1", "0", "1", "20250101"],
    ]


def test_configured_issue_date_and_address_type_name() -> None:
    rows, _ = run({}, defaults=DefaultValues(fksj="2026-05-01", dzlb="户籍地址"))
    assert rows[["fksj", "dzlb", "orgCode"]].values.tolist() == [["20260501", "1", ""]]


@pytest.mark.parametrize("values", [["", "a", "", "汉字"], [""], ["", ""], ["x"], []])
def test_empty_cells_told_from_the_offsets(values: list[str]) -> None:
    column = pd.Series(["lead", *values], dtype="str").iloc[1:]  # a slice: its offsets start past zero
    assert empty_mask(column).tolist() == [value == "" for value in values]
    assert all_empty(column) is all(value == "" for value in values)


@pytest.mark.parametrize(
    ("values", "widest"),
    [(["ab", "abcd", ""], 4.0), (["汉字", "ab"], 4.0), (["", ""], 0.0), (["a", None], 1.0)],
)
def test_display_widths_count_a_chinese_character_double(values: list[str | None], widest: float) -> None:
    for kind in (pa.string(), pa.large_string()):
        column = pa.array(["lead", *values], kind).slice(1)
        assert display_widths([column], [""], cap=100) == [widest + 2]


@pytest.mark.parametrize(
    ("field", "written", "expected"),
    [
        ("sfzhm", '="440604197612012654"', "440604197612012654"),
        ("sfzhm", ' ＝"44060819800802339x" ', "44060819800802339X"),
        ("brdh", '="13912345678"', "13912345678"),
        ("brdh", '="0757-83001234"', "075783001234"),
        ("jkdah", '="0440637051425052"', "0440637051425052"),
        ("csrq", '="19761201"', "19761201"),
        ("csrq", '="1976-12-01"', "19761201"),
        ("sfzhm", '="4406"&"04197612012654"', '4406"&"04197612012654'),  # a real formula: left for validation
        ("brdh", "13912345678.0", "13912345678"),
        ("jkdah", "4406370514250.0", "4406370514250"),
        ("csrq", "19761201.0", "19761201"),
        ("csrq", "'2004-10-11", "20041011"),  # Excel's text marker kept by an export
        ("fksj", "'2024/1/5", "20240105"),
        ("sfzhm", "'440604197612012654", "440604197612012654"),
        ("brdh", "1391234.5678", "13912345678"),  # a dot among digits is a separator, as before
    ],
)
def test_export_artefacts_of_exported_registers_are_undone(field: str, written: str, expected: str) -> None:
    """Systems export long numbers as ="…" so that Excel keeps them as text: the text is the value."""
    rows, _ = run({field: written, **({} if field == "sfzhm" else {"sfzhm": MALE_ID})})
    assert rows[field].iloc[0] == expected


@pytest.mark.parametrize("written", ["03汉族", "汉族(03)", "汉族|3", "男-2"])
def test_a_code_and_a_name_that_disagree_are_left_for_validation(written: str) -> None:
    field = "xb" if "男" in written else "mzdm"
    rows, _ = run({field: written, "sfzhm": MALE_ID})
    assert rows[field].iloc[0] == written
