"""Result codes and field rules: the enum agrees with its CSV; one rule table drives all three consumers."""

from __future__ import annotations

import csv
import datetime
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
from conftest import SandboxHandle, make_resident

from pipeline.config import DefaultValues
from pipeline.model import CARD_FIELDS, FIELDS, INPUT_FIELDS, PEOPLE_FIELDS
from pipeline.normalise import normalise
from pipeline.platform.client import PlatformClient
from pipeline.platform.refusals import REFUSAL_ADVICE, refusal_message
from pipeline.sandbox.checks import check_card, check_people
from pipeline.text.idnumber import check_character
from pipeline.validate import validate
from schemas.registry import EMPTY_REPORTED_ELSEWHERE, build_schema
from schemas.result_codes import ResultCode, describe, hint
from schemas.rules import FIELD_RULES, FIELD_TABLES, FieldRule, rule_for
from schemas.tables import code_table

TODAY = datetime.date(2026, 6, 1)
ID_NUMBER = "44060219600101001" + check_character("44060219600101001")
GOOD: dict[str, str] = {
    "xm": "张三", "xb": "1", "mzdm": "01", "csrq": "19600101", "sfzhm": ID_NUMBER, "zjlx": "01",
    "zjhm": ID_NUMBER, "jkdah": "", "xnhkh": "", "fyzhdm": "20", "xldm": "20", "zydm": "4", "dzlb": "2",
    "dzsf": "广东省", "dzs": "佛山市", "dzqx": "禅城区", "dzxz": "祖庙街道", "dzc": "人民路1号",
    "brdh": "13912345678", "ylfyzffs": "01", "klx": "3", "kh": "", "fksj": "20260601",
    "orgCode": "440600001", "yhkh": "", "isRealName": "0",
}  # fmt: skip
NOT_A_CODE = "ZZ"


def _field(rule: FieldRule) -> str:
    return rule.field


REQUIRED = [rule for rule in FIELD_RULES if not rule.allow_empty]
OPTIONAL = [rule for rule in FIELD_RULES if rule.allow_empty]
BOUNDED = [rule for rule in FIELD_RULES if rule.max_length is not None]


def _csv_rows() -> list[dict[str, str]]:
    text = resources.files("schemas").joinpath("codes", "result_codes.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def _faults(**changes: str) -> list[tuple[str, int, str]]:
    rows = pd.DataFrame([{**GOOD, **changes}], columns=list(FIELDS), dtype="str")
    found = validate(rows, today=TODAY)
    columns = found[["field", "code", "message"]]
    return [(str(f), int(c), str(m)) for f, c, m in columns.itertuples(index=False)]


def _sandbox_answer(rule: FieldRule, value: str) -> int | None:
    """The sandbox's checks of a resident it accepts, but with ``rule``'s field set to ``value``."""
    card, people = make_resident(0)
    if rule.field in CARD_FIELDS:
        card = {**card, rule.field: value}
    else:
        people = {**people, rule.field: value}
    return check_people(people, TODAY) or check_card(card, TODAY)


# -- ResultCode ------------------------------------------------------------------------------


def test_the_enum_and_the_csv_list_exactly_the_same_codes() -> None:
    listed = [int(row["code"]) for row in _csv_rows()]
    assert len(listed) == len(set(listed))  # no code twice in the CSV
    assert set(listed) == {int(code) for code in ResultCode}


def test_each_member_carries_its_csv_description_and_hint() -> None:
    for row in _csv_rows():
        code = ResultCode(int(row["code"]))
        assert (code.description, code.hint) == (row["description"], row["hint"])
        assert code.description  # every code has the platform's phrase
    assert ResultCode.INVALID_ID_NUMBER == 10111
    assert ResultCode.INVALID_ID_NUMBER.description == "身份证号码不正确"
    assert str(ResultCode.ALREADY_ENROLLED) == "10115"  # as stored in frames and CSVs


def test_describe_and_hint_take_any_code() -> None:
    assert describe(10000) == "操作成功" and describe(1040) == "已注销"
    assert hint(10115) == ResultCode.ALREADY_ENROLLED.hint != ""
    assert describe(10199) == "未知返回代码 10199" and hint(10199) == ""
    assert hint(10102) == ""  # a known code with nothing to say


def test_each_refusal_of_the_app_is_said_once_with_the_platforms_phrase() -> None:
    app_id = "app-secretive-0001"
    for code, (refused, advice) in REFUSAL_ADVICE.items():
        line = refusal_message(code, "平台原文", app_id)
        assert f"{int(code)} {code.description}" in line and refused in line and advice in line
        assert app_id not in line and "\n" not in line
    assert "app_id" in REFUSAL_ADVICE[ResultCode.INVALID_ORG_CODE][1]
    assert "EHC_APP_SECRET" in REFUSAL_ADVICE[ResultCode.INVALID_PASSWORD][1]
    other = refusal_message(10144, "应用城市代码未填写", app_id)
    assert "10144 应用城市代码未填写" in other


# -- the rule table ---------------------------------------------------------------------------


def test_the_rules_cover_every_platform_field_once_people_before_card() -> None:
    fields = [rule.field for rule in FIELD_RULES]
    assert sorted(fields) == sorted(FIELDS) and len(fields) == len(set(fields))
    assert fields[: len(PEOPLE_FIELDS)] == [f for f in fields if f in PEOPLE_FIELDS]
    assert all(rule_for(rule.field) is rule for rule in FIELD_RULES)
    for field, table in FIELD_TABLES.items():
        assert code_table(table).codes and rule_for(field).table == table


def test_every_rule_code_is_the_error_of_a_check_in_the_schema() -> None:
    schema = build_schema(TODAY)
    for rule in FIELD_RULES:
        errors = {check.error for check in schema.columns[rule.field].checks}
        assert str(int(rule.code)) in errors, rule
        if not rule.allow_empty and rule.field not in EMPTY_REPORTED_ELSEWHERE:
            assert str(int(rule.code_when_empty)) in errors, rule
        if rule.max_length is not None:
            assert str(int(ResultCode.PARAMETER_ERROR)) in errors, rule


@pytest.mark.parametrize("field", list(FIELD_TABLES))
def test_validation_refuses_a_value_outside_each_code_table_with_the_rules_code(field: str) -> None:
    assert (field, rule_for(field).code) in [(f, c) for f, c, _ in _faults(**{field: NOT_A_CODE})]


@pytest.mark.parametrize("rule", [r for r in REQUIRED if r.field not in EMPTY_REPORTED_ELSEWHERE], ids=_field)
def test_validation_refuses_an_empty_value_where_the_rule_does(rule: FieldRule) -> None:
    assert (rule.field, rule.code_when_empty) in [(f, c) for f, c, _ in _faults(**{rule.field: ""})]


@pytest.mark.parametrize("rule", BOUNDED, ids=_field)
def test_validation_bounds_free_text_by_the_rules_length(rule: FieldRule) -> None:
    assert rule.max_length is not None
    letter = "张" if rule.field == "xm" else "1"
    other = {"zjlx": "03"} if rule.field == "zjhm" else {}  # a passport number need not be the ID number
    longest = {rule.field: letter * rule.max_length, **other}
    assert not [f for f, _, _ in _faults(**longest) if f == rule.field]
    too_long = {rule.field: letter * (rule.max_length + 1), **other}
    over = [(c, m) for f, c, m in _faults(**too_long) if f == rule.field]
    assert len(over) == 1 and over[0][0] == ResultCode.PARAMETER_ERROR and str(rule.max_length) in over[0][1]


@pytest.mark.parametrize("field", list(FIELD_TABLES))
def test_normalisation_reads_each_code_table_field_through_its_rule(field: str) -> None:
    table = code_table(rule_for(field).table or "")
    code, name = next((c, n) for c, n in table.names.items() if n and n != c)
    row = {**GOOD, field: f" {name} ", "address": ""}
    fields = pd.DataFrame([row], columns=list(INPUT_FIELDS), dtype="str")
    rows, warnings = normalise(fields, DefaultValues(), TODAY)
    assert rows[field].iloc[0] == code and warnings.empty


def test_a_folded_sub_code_warns_with_its_fields_rule_code() -> None:
    fields = pd.DataFrame([{**GOOD, "fyzhdm": "21", "xldm": "44", "zydm": "1-01", "address": ""}],
                          columns=list(INPUT_FIELDS), dtype="str")  # fmt: skip
    _, warnings = normalise(fields, DefaultValues(), TODAY)
    assert warnings[["field", "code"]].values.tolist() == [
        [field, rule_for(field).code] for field in ("fyzhdm", "xldm", "zydm")
    ]


@pytest.mark.parametrize("field", list(FIELD_TABLES))
def test_the_sandbox_refuses_a_value_outside_each_code_table_with_the_rules_code(field: str) -> None:
    rule = rule_for(field)
    assert _sandbox_answer(rule, NOT_A_CODE) == rule.code


@pytest.mark.parametrize("rule", REQUIRED, ids=_field)
def test_the_sandbox_refuses_an_empty_value_where_the_rule_does(rule: FieldRule) -> None:
    assert _sandbox_answer(rule, "") == rule.code_when_empty


@pytest.mark.parametrize("rule", OPTIONAL, ids=_field)
def test_the_sandbox_accepts_an_empty_value_where_the_rule_does(rule: FieldRule) -> None:
    assert _sandbox_answer(rule, "") is None


def test_the_sandbox_answers_the_first_broken_rule_in_the_tables_order() -> None:
    _, good = make_resident(0)
    people = {**good, **{field: NOT_A_CODE for field in FIELD_TABLES}}
    for field in FIELD_TABLES:  # in the table's order: each answer is the first rule still broken
        assert check_people(people, TODAY) == rule_for(field).code
        people[field] = good[field]
    assert check_people(people, TODAY) is None


@pytest.mark.slow
def test_the_sandbox_over_loopback_refuses_each_code_table_field_with_its_rules_code(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    with PlatformClient(sandbox.settings(), tmp_path) as client:
        for field, _ in FIELD_TABLES.items():
            card, people = make_resident(0, **{field: NOT_A_CODE})
            assert client.sync_card_info(card, people).result_code == rule_for(field).code, field
    assert sandbox.residents() == 0
