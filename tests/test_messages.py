"""What the clerk reads about a fault: their own value, what the field accepts, a fix for that field."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from test_validate import FEMALE_ID, GOOD, MALE_ID, TODAY, person, rows

from pipeline import messages
from pipeline.model import FIELDS
from pipeline.text.arrow import matches, text_array
from pipeline.text.phone import normalise_phones
from pipeline.validate import validate
from schemas.registry import NAME
from schemas.result_codes import ResultCode, field_hint, field_pairs, hint
from schemas.rules import FIELD_RULES


def _messages(found: pd.DataFrame) -> dict[tuple[int, str], str]:
    return {
        (int(r), str(f)): str(m) for r, f, m in found[["row_id", "field", "message"]].itertuples(index=False)
    }


def test_the_message_quotes_the_value_as_the_clerk_wrote_it() -> None:
    normalised = rows({"xb": "2"}, {"mzdm": "99"})  # 女 on a man's ID number; a made-up ethnicity
    written = normalised.copy()
    written.loc[0, "xb"] = "女"
    written.loc[1, "mzdm"] = "九十九族"
    found = _messages(validate(normalised, today=TODAY, written=written))
    assert found[(0, "xb")].startswith("性别“女”") and "“2”" not in found[(0, "xb")]
    assert "应为男" in found[(0, "xb")]
    assert found[(1, "mzdm")].startswith("民族“九十九族”")


def test_a_derived_value_is_quoted_as_derived() -> None:
    normalised = rows({"dzlb": "7"})
    written = normalised.copy()
    written.loc[0, "dzlb"] = ""  # a default from the configuration, not the clerk's
    assert "“7”" in validate(normalised, today=TODAY, written=written)["message"].iloc[0]


def test_a_repeated_id_names_the_row_where_it_first_appears() -> None:
    first, other = person(0), person(1)
    frame = pd.DataFrame([first, other, first, first], columns=list(FIELDS), dtype="str")
    sources = pd.DataFrame(
        {"source_file": ["a.xlsx"] * 3 + ["b.csv"], "source_sheet": ["名单"] * 3 + [""],
         "source_row": ["4", "5", "6", "2"]}
    )  # fmt: skip
    found = validate(frame, today=TODAY, sources=sources)
    repeats = found[found["code"] == ResultCode.ALREADY_ENROLLED]
    assert list(repeats["row_id"]) == [2, 3]
    assert "与第 4 行重复" in repeats["message"].iloc[0]
    assert "与a.xlsx[名单] 第 4 行重复" in repeats["message"].iloc[1]  # first seen in another file


def test_a_document_number_derived_from_a_faulty_id_is_not_reported_again() -> None:
    normalised = rows({"sfzhm": "", "zjhm": ""})
    written = normalised.copy()  # the clerk's sheet has no 证件号码 column: empty as written
    found = validate(normalised, today=TODAY, written=written)
    assert list(zip(found["field"], found["code"], strict=True)) == [("sfzhm", ResultCode.INVALID_ID_NUMBER)]
    # Written by the clerk, a wrong document number is theirs to fix and stays.
    typed = rows({"zjhm": "X" * 31})
    assert "zjhm" in set(validate(typed, today=TODAY, written=typed)["field"])


@pytest.mark.parametrize("name", ["O'Neil-Smith", "J. R. Tolkien", "阿依古丽·买买提", "欧阳娜娜"])
def test_the_name_rule_accepts_every_character_its_message_names(name: str) -> None:
    assert validate(rows({"xm": name}), today=TODAY).empty
    template = messages.error_template(ResultCode.PARAMETER_ERROR, "xm")
    for char in "·.'-":
        assert f"（{char}）" in template and matches(pd.Series([f"张{char}三"]), NAME)[0]
    assert "空格" in template and "英文字母" in template and "汉字" in template


def test_a_bad_name_and_a_too_long_name_are_told_apart() -> None:
    found = _messages(validate(rows({"xm": "张三1"}, {"xm": "张" * 31}), today=TODAY))
    assert "不能用的字符" in found[(0, "xm")] and "过长" in found[(1, "xm")] and "30" in found[(1, "xm")]


def test_each_field_of_a_shared_code_has_its_own_fix_and_title() -> None:
    name_fix, phone_fix = field_hint(10110, "xm"), field_hint(10110, "brdh")
    assert name_fix != phone_fix
    assert "姓名" in name_fix and "手机" not in name_fix and "11位" in phone_fix
    assert messages.fault_title(10110, "brdh") == "联系电话不正确"
    assert messages.fault_title(10110, "xm") == "姓名不正确"
    # Every field the platform answers 10110 for has a fix of its own.
    parameter_fields = {r.field for r in FIELD_RULES if r.code == ResultCode.PARAMETER_ERROR}
    assert parameter_fields <= {f for c, f in field_pairs() if c == ResultCode.PARAMETER_ERROR}


def test_a_warning_is_titled_as_a_hint() -> None:
    assert "提示" in messages.fault_title(10111, "sfzhm", warning=True)
    assert "不正确" not in messages.fault_title(10111, "sfzhm", warning=True)
    assert messages.fault_fix(10111, "sfzhm", warning=True).startswith("无需处理")


def test_no_message_explains_with_a_standard_number_or_asks_for_a_computed_check_character() -> None:
    templates = [*messages._ERRORS.values(), *(hint(int(c)) for c in ResultCode)]
    templates += [field_hint(c, f) for c, f in field_pairs()]
    for text in templates:
        # A standard's number may only follow the examples, in brackets.
        for found in re.finditer(r"GB|CV\d", text):
            assert text[: found.start()].endswith("（"), text
    check = messages.error_template(ResultCode.INVALID_ID_NUMBER, "sfzhm", "CHECK")
    assert "{extra}" not in check and "对照身份证" in check


def test_a_female_id_number_explains_a_wrong_gender_with_the_expected_one() -> None:
    frame = rows({"sfzhm": FEMALE_ID, "zjhm": FEMALE_ID, "csrq": "19491231", "xb": "1"})
    written = frame.copy()
    written.loc[0, "xb"] = "男"
    message = validate(frame, today=TODAY, written=written)["message"].iloc[0]
    assert message == "性别“男”与身份证号码不一致：按身份证号码第17位应为女"
    assert GOOD["sfzhm"] == MALE_ID


def test_a_control_character_in_a_value_is_shown_not_hidden_in_the_message() -> None:
    written = pd.Series(["张三\x7f", "李\t四", "王五"], dtype="str")
    shown = messages.error_texts(10110, "xm", text_array(written)).tolist()
    quoted = [text[: text.index("”") + 1] for text in shown]
    assert quoted == ["姓名“张三[U+007F]”", "姓名“李[U+0009]四”", "姓名“王五”"]


def test_a_long_value_is_quoted_cut_so_the_message_fits_a_cell() -> None:
    # A whole 32,767-character cell quoted made a message Excel cannot hold: results.xlsx, errors.xlsx
    # and the annotated copy opened only after Excel's repair. The whole value stays in 原值.
    written = pd.Series(["张" * 32_767, "1" * 41, "1" * 40 + "\x01", None], dtype="str")
    shown = messages.error_texts(10110, "brdh", text_array(written)).tolist()
    quoted = [text[: text.index("”") + 1] for text in shown[:3]]
    assert quoted == [f"联系电话“{'张' * 40}…”", f"联系电话“{'1' * 40}…”", f"联系电话“{'1' * 40}…”"]
    assert shown[3] == "联系电话为空" and max(map(len, shown)) < 200


@pytest.mark.parametrize(
    "phone", ["13800138000/13900139000", "13800138000、075783001234", "075783001234或13800138000"]
)
def test_two_phone_numbers_in_one_cell_are_told_to_keep_one(phone: str) -> None:
    [message] = validate(rows({"brdh": phone}), today=TODAY)["message"].tolist()
    assert f"联系电话“{phone}”填了不止一个号码" in message and "只能填一个" in message


@pytest.mark.parametrize("phone", ["13800138000 13900139000", "13800138000\n075783001234"])
def test_two_phone_numbers_apart_by_a_space_or_a_line_break_are_told_to_keep_one(phone: str) -> None:
    """Normalising drops the white space between them: the run-together value is still two numbers."""
    normalised = rows({"brdh": normalise_phones(pd.Series([phone], dtype="str")).iloc[0]})
    written = normalised.copy()
    written.loc[0, "brdh"] = phone
    [message] = validate(normalised, today=TODAY, written=written)["message"].tolist()
    assert "填了不止一个号码" in message and "只能填一个" in message


def test_one_wrong_phone_number_gets_the_usual_message() -> None:
    [message] = validate(rows({"brdh": "0757123"}), today=TODAY)["message"].tolist()
    assert "不正确" in message and "不止一个" not in message


def test_numbers_with_digits_hidden_by_another_system_are_named_as_such() -> None:
    # Exports of other systems hide digits (440606********1232): "应为18位" sent the clerk to count them.
    found = _messages(validate(rows({"sfzhm": "440606********1232", "brdh": "138****8000"}), today=TODAY))
    assert "隐去了部分数字" in found[(0, "sfzhm")] and "完整的号码" in found[(0, "sfzhm")]
    assert "隐去了部分数字" in found[(0, "brdh")]


def test_a_name_with_a_note_in_brackets_is_told_where_the_note_goes() -> None:
    found = _messages(validate(rows({"xm": "张三（代办）"}, {"xm": "李四2"}), today=TODAY))
    assert "括号里的说明" in found[(0, "xm")] and "备注" in found[(0, "xm")]
    assert "括号" not in found[(1, "xm")] and "不能用的字符" in found[(1, "xm")]


def test_a_name_whose_rare_character_became_a_question_mark_is_told_why() -> None:
    # Excel saving a CSV as ANSI (GBK) turns a character GBK lacks into ?: 王?明 for 王䶮明.
    found = _messages(validate(rows({"xm": "王?明"}), today=TODAY))
    assert "生僻字" in found[(0, "xm")] and "CSV UTF-8" in found[(0, "xm")]


def test_an_id_number_of_the_wrong_length_says_its_length_and_letters_for_digits_are_named() -> None:
    found = _messages(
        validate(rows({"sfzhm": "44060619900101123"}, {"sfzhm": "44O6O6199OO1O11232"}), today=TODAY)
    )
    assert "应为18位（现在是17位）" in found[(0, "sfzhm")]
    assert "字母 O、I 或 L" in found[(1, "sfzhm")] and "数字 0 或 1" in found[(1, "sfzhm")]


@pytest.mark.parametrize(("phone", "digits"), [("1380013800", 10), ("138001380001", 12)])
def test_a_mobile_number_with_a_digit_too_many_or_few_says_how_many_it_has(phone: str, digits: int) -> None:
    [message] = validate(rows({"brdh": phone}), today=TODAY)["message"].tolist()
    assert f"是{digits}位数字" in message and "应为11位" in message


def test_a_landline_without_its_area_code_is_told_to_add_it() -> None:
    [message] = validate(rows({"brdh": "83001234"}), today=TODAY)["message"].tolist()
    assert "没有区号" in message and "0757-83001234" in message


def test_an_eleven_digit_number_that_is_no_mobile_is_not_told_it_needs_eleven_digits() -> None:
    [message] = validate(rows({"brdh": "12345678901"}), today=TODAY)["message"].tolist()
    assert "不正确" in message and "位数字" not in message


def test_values_beyond_the_header_columns_are_titled_and_fixed_as_such_not_as_a_folded_code() -> None:
    """Reading's warning of values in columns without a header has no field: it is no sub-code folded."""
    title = messages.fault_title(10110, "", warning=True)
    fix = messages.fault_fix(10110, "", warning=True)
    assert title == "表头以外的列有内容，没有读取（提示）"
    assert "大类" not in fix and "有表头的列" in fix and "不会提交" in fix
    assert messages.fault_title(10123, "mzdm", warning=True) == "民族细分代码已按大类处理（提示）"
