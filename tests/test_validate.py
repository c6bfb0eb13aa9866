"""Validation: each check keyed by its result code, cross-field rules, duplicates, the fault frame."""

from __future__ import annotations

import datetime
import itertools

import numpy as np
import pandas as pd
import pytest

from pipeline.config import DefaultValues
from pipeline.model import FAULT_COLUMNS, FIELDS, INPUT_FIELDS
from pipeline.normalise import normalise
from pipeline.text.arrow import matches
from pipeline.text.idnumber import check_character
from pipeline.text.phone import VALID_PHONE, valid_phones
from pipeline.validate import RepeatedIds, validate
from schemas.registry import BANK_CARD, NAME, bank_cards, build_schema, valid_names
from schemas.tables import code_table

TODAY = datetime.date(2026, 6, 1)


def make_id(first17: str) -> str:
    return first17 + check_character(first17)


MALE_ID = make_id("44060219600101001")  # 440602: a district code in use 1984–2001 only
FEMALE_ID = "11010519491231002X"

GOOD: dict[str, str] = {
    "xm": "张三", "xb": "1", "mzdm": "01", "csrq": "19600101", "sfzhm": MALE_ID, "zjlx": "01",
    "zjhm": MALE_ID, "jkdah": "", "xnhkh": "", "fyzhdm": "20", "xldm": "20", "zydm": "4", "dzlb": "2",
    "dzsf": "广东省",
    "dzs": "佛山市", "dzqx": "禅城区", "dzxz": "祖庙街道", "dzc": "人民路1号", "brdh": "13912345678",
    "ylfyzffs": "01", "klx": "3", "kh": "", "fksj": "20260601", "orgCode": "440600001", "yhkh": "",
    "isRealName": "0",
}  # fmt: skip


def person(index: int) -> dict[str, str]:
    """A distinct good resident per row (a man born 1960-01-01 in 440602)."""
    number = make_id(f"44060219600101{2 * index + 1:03d}")
    return {**GOOD, "sfzhm": number, "zjhm": number}


def rows(*changes: dict[str, str]) -> pd.DataFrame:
    records = [{**person(index), **change} for index, change in enumerate(changes)]
    return pd.DataFrame(records, columns=list(FIELDS), dtype="str")


def faults_of(*changes: dict[str, str]) -> list[tuple[int, str, int]]:
    found = validate(rows(*changes), today=TODAY)
    return [
        (int(r), str(f), int(c)) for r, f, c in found[["row_id", "field", "code"]].itertuples(index=False)
    ]


def test_a_good_row_has_no_fault() -> None:
    assert faults_of({}) == []
    found = validate(rows({}), today=TODAY)
    assert list(found.columns) == list(FAULT_COLUMNS)


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("xm", "", 10114),
        ("xm", "张三1", 10110),
        ("xm", "张" * 31, 10110),
        ("sfzhm", "", 10111),
        ("sfzhm", MALE_ID[:17], 10111),
        ("sfzhm", MALE_ID[:17] + ("0" if MALE_ID[17] != "0" else "1"), 10111),
        ("sfzhm", "4.20123196205184E+17", 10111),
        ("zjlx", "08", 10134),
        ("zjlx", "", 10134),
        ("xb", "3", 10113),
        ("xb", "男人", 10113),
        ("mzdm", "57", 10123),
        ("mzdm", "", 10123),
        ("mzdm", "1", 10123),
        ("csrq", "1960-01-01", 10124),
        ("csrq", "19600230", 10124),
        ("fyzhdm", "21", 10132),
        ("xldm", "50", 10133),
        ("zydm", "Z", 10135),
        ("dzlb", "3", 10136),
        ("dzlb", "", 10136),
        ("ylfyzffs", "08", 10131),
        ("ylfyzffs", "", 10131),
        ("fksj", "2026-06-01", 10128),
        ("fksj", "20260602", 10128),
        ("fksj", "19990101", 10128),
        ("yhkh", "12345678901", 10151),
        ("yhkh", "62220212345678901234", 10151),
        ("yhkh", "6222-0212-3456-7890", 10151),
        ("brdh", "", 10110),
        ("brdh", "1391234567", 10110),
        ("brdh", "86223344", 10110),
        ("brdh", "12912345678", 10110),
        ("zjhm", "", 10110),
        ("orgCode", "9" * 51, 10110),
        ("klx", "", 10110),
        ("isRealName", "2", 10110),
        ("dzc", "路" * 101, 10110),
    ],
)
def test_each_check_reports_its_result_code(field: str, value: str, code: int) -> None:
    assert faults_of({field: value}) == [(0, field, code)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("xm", "JOHN SMITH"),
        ("xm", "阿依古丽·买买提"),
        ("xm", "𠇔一"),
        ("xb", "0"),
        ("orgCode", ""),
        ("xb", "9"),
        ("fyzhdm", ""),
        ("xldm", ""),
        ("zydm", ""),
        ("zydm", "X"),
        ("fksj", ""),
        ("yhkh", "6222021234567890"),
        ("yhkh", "622202123456"),
        ("brdh", "075786223344"),
        ("brdh", "01062345678"),
        ("brdh", "07578622334"),
        ("jkdah", "4406000123"),
        ("dzc", ""),
    ],
)
def test_valid_values_pass(field: str, value: str) -> None:
    assert faults_of({field: value}) == []


@pytest.mark.parametrize(
    ("field", "table"),
    [
        ("xb", "gender"),
        ("mzdm", "ethnicity"),
        ("fyzhdm", "marriage"),
        ("xldm", "education"),
        ("zydm", "occupation"),
        ("ylfyzffs", "payment"),
        ("dzlb", "address_type"),
    ],
)
def test_every_code_of_a_table_passes(field: str, table: str) -> None:
    codes = code_table(table).codes
    changes = [{field: code} for code in codes]
    if field == "xb":  # other codes than the ID's own parity must not contradict it
        changes = [{field: code, "sfzhm": "", "zjhm": "X1", "zjlx": "03"} for code in codes]
        assert {f for _, f, _ in faults_of(*changes)} == {"sfzhm"}
        return
    assert faults_of(*changes) == []


def test_document_types() -> None:
    changes = [
        {"zjlx": code, "zjhm": MALE_ID if code == "01" else "E1234567"}
        for code in code_table("document_type").codes
    ]
    assert faults_of(*changes) == []


def test_historical_division_code_accepted_for_someone_born_in_1960() -> None:
    assert MALE_ID.startswith("440602") and faults_of({}) == []


def test_future_birth_date_in_id_rejected() -> None:
    future = make_id("11010520260602001")
    found = validate(rows({"sfzhm": future, "zjhm": future, "csrq": "20260602"}), today=TODAY)
    assert found[["field", "code"]].values.tolist() == [["csrq", 10124], ["sfzhm", 10111]]
    assert "晚于今天" in found["message"].iloc[1]


def test_gender_contradicting_id_parity() -> None:
    found = validate(rows({"xb": "2"}), today=TODAY)
    assert found[["field", "code"]].values.tolist() == [["xb", 10113]]
    assert "“2”" in found["message"].iloc[0] and "男" in found["message"].iloc[0]


def test_birth_date_contradicting_id() -> None:
    found = validate(rows({"csrq": "19600102"}), today=TODAY)
    assert found[["field", "code"]].values.tolist() == [["csrq", 10124]]
    assert "19600102" in found["message"].iloc[0] and "1960-01-01" in found["message"].iloc[0]


def test_empty_gender_and_birth_date_with_a_readable_id() -> None:
    assert faults_of({"xb": "", "csrq": ""}) == [(0, "xb", 10113), (0, "csrq", 10124)]


def test_document_number_must_be_the_id_number_for_an_id_card() -> None:
    assert faults_of({"zjhm": FEMALE_ID}) == [(0, "zjhm", 10110)]
    assert faults_of({"zjlx": "03", "zjhm": "E12345678"}) == []


def test_a_bad_id_number_is_the_only_fault_reported_for_it() -> None:
    # The gender, birth date and document number all disagree with the ID, but
    # the ID itself is wrong: fixing it comes first.
    bad = MALE_ID[:17] + ("0" if MALE_ID[17] != "0" else "1")
    assert faults_of({"sfzhm": bad, "xb": "2", "csrq": "19700101"}) == [(0, "sfzhm", 10111)]


def test_scientific_notation_message_says_how_to_fix() -> None:
    found = validate(rows({"sfzhm": "4.20123196205184E+17"}), today=TODAY)
    message = found["message"].iloc[0]
    assert found["code"].iloc[0] == 10111
    assert "4.20123196205184E+17" in message and "科学计数法" in message and "文本" in message


@pytest.mark.parametrize("field", ["jkdah", "xnhkh", "kh"])
def test_a_long_number_excel_stored_as_a_number_is_refused(field: str) -> None:
    """4.40637051425053E+16 is what is left of a health record number Excel kept as a number."""
    change = {field: "4.40637051425053E+16"}
    others = ({field: "44063705142505278", "zjlx": "03"}, {field: "A1E2B3", "zjlx": "03"})
    found = validate(rows(change, *others), today=TODAY)
    placed = found[["row_id", "field", "code"]].itertuples(index=False)
    assert [(int(r), f, int(c)) for r, f, c in placed] == [(0, field, 10110)]
    message = found["message"].iloc[0]
    assert "4.40637051425053E+16" in message and "科学计数法" in message and "过长" not in message


@pytest.mark.parametrize("field", ["jkdah", "dzc", "dzxz", "kh"])
def test_a_formulas_error_value_in_free_text_is_refused_not_sent(field: str) -> None:
    """#N/A is what a lookup that found nothing shows: no value of the resident's, whatever the field."""
    long = "号" * 200
    found = validate(
        rows({field: "#N/A"}, {field: "#REF!"}, {field: "#1栋"}, {field: long}), today=TODAY
    )
    placed = [(int(r), f, int(c)) for r, f, c in found[["row_id", "field", "code"]].itertuples(index=False)]
    assert placed == [(0, field, 10110), (1, field, 10110), (3, field, 10110)]  # "#1栋" is an address
    messages = found["message"].tolist()
    assert all("错误值" in m and "公式" in m and "过长" not in m for m in messages[:2])
    assert "#N/A" in messages[0] and "#REF!" in messages[1]
    assert "过长" in messages[2] and "错误值" not in messages[2]  # the column's other faults as ever


def test_an_id_number_excel_stored_as_a_number_is_one_fault_though_copied_as_the_document_number() -> None:
    found = validate(rows({"sfzhm": "4.20123196205184E+17", "zjhm": "4.20123196205184E+17"}), today=TODAY)
    assert found[["field", "code"]].values.tolist() == [["sfzhm", 10111]]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", ["为空"]),
        ("99060219600101001X", ["990602", "行政区划"]),
        (make_id("11010519490230001"), ["19490230", "不是有效的出生日期"]),
        ("11010519491231002", ["18位"]),
    ],
)
def test_id_messages_name_the_problem(value: str, words: list[str]) -> None:
    message = validate(rows({"sfzhm": value, "zjhm": "X1", "zjlx": "03"}), today=TODAY)["message"].iloc[0]
    assert all(word in message for word in words), message


def test_check_character_message_sends_the_clerk_to_the_id_card_not_to_the_last_digit() -> None:
    wrong = MALE_ID[:17] + ("0" if MALE_ID[17] != "0" else "1")
    message = validate(rows({"sfzhm": wrong, "zjhm": wrong}), today=TODAY)["message"].iloc[0]
    assert "对照身份证" in message and "不要只改最后一位" in message
    assert f"应为{MALE_ID[17]}" not in message and MALE_ID not in message


def test_duplicates_only_on_second_and_later_rows() -> None:
    first, second = person(0), person(1)
    found = faults_of(
        first, second, first, {**first, "xm": "李四"}, second, {"sfzhm": "", "zjhm": "X", "zjlx": "03"}
    )
    assert found == [(2, "sfzhm", 10115), (3, "sfzhm", 10115), (4, "sfzhm", 10115), (5, "sfzhm", 10111)]
    message = validate(rows(first, first), today=TODAY)["message"].iloc[0]
    assert first["sfzhm"] in message


def test_faults_sorted_and_typed() -> None:
    found = validate(rows({"brdh": "1"}, {}, {"mzdm": "x", "xm": ""}, {"fksj": "x"}), today=TODAY)
    assert found["row_id"].tolist() == [0, 2, 2, 3]
    assert found["field"].tolist() == ["brdh", "xm", "mzdm", "fksj"]
    assert found["row_id"].dtype == np.int64 and found["code"].dtype == np.int64
    assert set(found["severity"]) == {"error"}
    assert all(isinstance(m, str) and m for m in found["message"])


def test_each_fault_lands_on_one_field() -> None:
    rng = np.random.default_rng(3)
    bad_values = [
        {"xm": ""}, {"xb": "2"}, {"csrq": "19600102"}, {"zjhm": FEMALE_ID}, {"mzdm": "x"}, {"brdh": "1"},
        {"sfzhm": "1"}, {"fksj": "x"}, {"xb": "2", "csrq": "19991231", "zjhm": "1"},
    ]  # fmt: skip
    changes = [
        bad_values[i] if i < len(bad_values) else {} for i in rng.integers(0, 2 * len(bad_values), 400)
    ]
    found = validate(rows(*changes), today=TODAY)
    assert not found.duplicated(["row_id", "field", "code"]).any()
    assert set(found["field"]) <= set(FIELDS)


def test_a_chunks_range_of_row_ids_and_scattered_ids_give_the_same_faults() -> None:
    """Values are taken by position under a chunk's range of row ids, by label otherwise: same faults."""
    changes = [
        {"xm": "张\x7f三"}, {"xb": "2"}, {"csrq": "19600102"}, {"zjhm": FEMALE_ID}, {"mzdm": "x"}, {},
        {"brdh": "1" * 300}, {"sfzhm": "1"}, {"fksj": "x"}, {"xb": "2", "csrq": "19991231", "zjhm": "1"},
    ] * 3  # fmt: skip
    frame = rows(*changes)
    written = frame.assign(xb=frame["xb"].replace({"1": "男", "2": "女"}))
    in_chunk = pd.RangeIndex(5_000, 5_000 + len(frame))
    scattered = pd.Index(np.random.default_rng(1).permutation(len(frame)) * 7 + 3)
    found = {}
    for name, index in (("chunk", in_chunk), ("scattered", scattered)):
        found[name] = validate(frame.set_axis(index), today=TODAY, written=written.set_axis(index))
        found[name]["row_id"] = index.get_indexer(found[name]["row_id"])  # back to positions
    by_position = [f.sort_values(["row_id", "field", "code"]).reset_index(drop=True) for f in found.values()]
    pd.testing.assert_frame_equal(*by_position)
    messages = " ".join(found["chunk"]["message"])
    assert "女" in messages and "[U+007F]" in messages and "…" in messages  # as written, shown, cut


def test_every_custom_check_carries_a_result_code() -> None:
    schema = build_schema(TODAY)
    for column in schema.columns.values():
        for check in column.checks:
            assert str(check.error).isdigit() and int(check.error) >= 10000, (column.name, check.name)


def test_messy_register_normalises_into_valid_rows() -> None:
    written = {
        "xm": " 张　三 ", "xb": "男", "mzdm": "汉族", "csrq": "1960/1/1", "sfzhm": MALE_ID.lower(),
        "fyzhdm": "已婚", "xldm": "本科", "zydm": "4", "brdh": "+86 139-1234-5678", "ylfyzffs": "职工医保",
        "address": "广东省佛山市禅城区祖庙街道人民路1号",
    }  # fmt: skip
    fields = pd.DataFrame([{f: written.get(f, "") for f in INPUT_FIELDS}], dtype="str")
    normalised, warnings = normalise(fields, DefaultValues(org_code="440600001"), TODAY)
    assert warnings.empty
    assert validate(normalised, today=TODAY).empty
    assert normalised.iloc[0].to_dict() == {**GOOD, "fksj": "20260601"}


def test_empty_run() -> None:
    found = validate(rows(), today=TODAY)
    assert found.empty and list(found.columns) == list(FAULT_COLUMNS)


@pytest.mark.parametrize("distinct", [300, 60_000])  # many equals in each chunk; few
def test_repeated_ids_name_the_first_row_of_many_equals_across_chunks(distinct: int) -> None:
    """Each repeat points at the earliest row with that number, however often and wherever it recurs."""
    rng = np.random.default_rng(11)
    numbers = [f"4406041976120{n:04d}X" for n in rng.integers(0, distinct, 6_000)] + [""] * 50
    rng.shuffle(numbers)
    repeats = RepeatedIds(["a.csv"])
    seen: dict[str, int] = {}
    bounds = [0, 400, 700, 1_500, 2_000, 3_500, 6_050]  # growing chunks: their blocks of keys merge
    for start, stop in itertools.pairwise(bounds):
        chunk = pd.Series(numbers[start:stop], dtype="str")
        places = RepeatedIds.place(0, np.arange(start, start + len(chunk)) + 2)
        found = repeats.check(chunk, places)
        expected = []
        for row, number in enumerate(chunk, start=start + 2):
            expected.append(seen.get(number, -1) if number else -1)
            if number:
                seen.setdefault(number, row)
        assert found.tolist() == expected
    assert len(seen) <= distinct


# --- value checks told by their bytes -------------------------------------------------------------


def _random_texts(seed: int, alphabet: str, longest: int, count: int = 40_000) -> pd.Series:
    pick = np.random.default_rng(seed)
    lengths = pick.integers(0, longest + 1, size=count)
    text = "".join(pick.choice(np.array(list(alphabet)), size=int(lengths.sum())))
    ends = np.cumsum(lengths).tolist()
    texts = [text[end - n : end] for end, n in zip(ends, lengths.tolist(), strict=True)]
    return pd.Series(texts, dtype="str")


@pytest.mark.parametrize("seed", [1, 2])
def test_phones_names_and_bank_cards_told_by_their_bytes_answer_as_their_patterns(seed: int) -> None:
    """The checks read from the bytes (a twentieth of the regular expressions' time) say what the
    rule's pattern says, on well-formed values and on every near miss: other lengths, full-width
    digits, a line feed, a Han character outside the common block, the middle dot."""
    phones = _random_texts(seed, "0123456789" * 6 + "0113" + "x-+ ０\n", 13)
    edges = ["13912345678", "0101234567", "075712345678", "12012345678", "07571234567", "1391234567８"]
    phones = pd.concat([phones, pd.Series(edges, dtype="str")], ignore_index=True)
    assert (valid_phones(phones) == matches(phones, f"^(?:{VALID_PHONE})$")).all()
    assert valid_phones(phones).sum() > 100  # the valid ones were tried, not only the misses
    names = _random_texts(seed, "张王李赵欧阳abcXYZ·.' -\t0１ａ𠀀㐀豈\u9fff\u4dff", 6)
    assert (valid_names(names) == matches(names, NAME)).all()
    assert valid_names(names).sum() > 100
    cards = _random_texts(seed, "0123456789" * 4 + "a１ -", 21)
    assert (bank_cards(cards) == matches(cards, BANK_CARD)).all()
    assert bank_cards(cards).sum() > 100
