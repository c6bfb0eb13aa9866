"""Resident ID numbers: check character, 15→18 upgrade, validity, scalar and vectorised."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.text import idnumber
from pipeline.text.idnumber import IdProblem

TODAY = datetime.date(2026, 6, 1)
DIVISIONS = sorted(idnumber.division_codes())


def make_id(division: str, birth: datetime.date, sequence: int) -> str:
    first17 = f"{division}{birth:%Y%m%d}{sequence:03d}"
    return first17 + idnumber.check_character(first17)


valid_ids = st.builds(
    make_id,
    st.sampled_from(DIVISIONS),
    st.dates(min_value=datetime.date(1900, 1, 1), max_value=TODAY),
    st.integers(min_value=0, max_value=999),
)


def problems(*values: str) -> list[IdProblem]:
    return [IdProblem(p) for p in idnumber.id_problems(pd.Series(values, dtype="str"), TODAY)]


def test_check_character_of_the_standard_example() -> None:
    # GB 11643-1999's own example number.
    assert idnumber.check_character("11010519491231002") == "X"
    assert idnumber.is_valid_id_number("11010519491231002X", TODAY)


def test_check_character_rejects_non_digits() -> None:
    with pytest.raises(ValueError):
        idnumber.check_character("1101051949123100X")
    with pytest.raises(ValueError):
        idnumber.check_character("1101051949123100")


@settings(max_examples=200, deadline=None)
@given(valid_ids, st.sampled_from("0123456789X"))
def test_any_other_check_character_fails(number: str, other: str) -> None:
    assert idnumber.is_valid_id_number(number, TODAY)
    altered = number[:17] + other
    assert idnumber.is_valid_id_number(altered, TODAY) == (other == number[17])
    expected = IdProblem.OK if other == number[17] else IdProblem.CHECK
    assert problems(altered) == [expected]


@settings(max_examples=40, deadline=None)
@given(st.lists(valid_ids, min_size=1, max_size=30))
def test_vectorised_check_characters_match_the_scalar_ones(numbers: list[str]) -> None:
    first17 = pd.Series([n[:17] for n in numbers], dtype="str")
    assert idnumber.check_characters(first17).tolist() == [n[17] for n in numbers]
    assert problems(*numbers) == [IdProblem.OK] * len(numbers)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(DIVISIONS),
    st.dates(min_value=datetime.date(1900, 1, 1), max_value=datetime.date(1999, 12, 31)),
    st.integers(min_value=0, max_value=999),
)
def test_upgrade_of_a_15_digit_number_gives_the_18_back(
    division: str, birth: datetime.date, sequence: int
) -> None:
    eighteen = make_id(division, birth, sequence)
    fifteen = eighteen[:6] + eighteen[8:17]
    assert idnumber.upgrade_15_to_18(fifteen) == eighteen
    upgraded = idnumber.upgrade_15_to_18_series(pd.Series([fifteen], dtype="str"))
    assert upgraded.tolist() == [eighteen]


def test_upgrade_needs_15_digits() -> None:
    with pytest.raises(ValueError):
        idnumber.upgrade_15_to_18("11010549123100")
    with pytest.raises(ValueError):
        idnumber.upgrade_15_to_18("11010549123100X")


def test_historical_division_code_is_accepted_whatever_the_birth_year() -> None:
    # 440602 existed only 1984–2001, long after this person was born: the code
    # records where the number was issued, not where the person was born.
    number = make_id("440602", datetime.date(1960, 3, 1), 17)
    assert idnumber.is_valid_id_number(number, TODAY)
    assert problems(number) == [IdProblem.OK]
    for code in ("420116", "310115", "440305", "440604"):
        assert idnumber.is_valid_id_number(make_id(code, datetime.date(1960, 3, 1), 17), TODAY)


def test_province_level_and_residence_permit_codes_are_accepted() -> None:
    for code in ("110000", "440000", "810000", "820000", "830000"):
        assert idnumber.is_valid_id_number(make_id(code, datetime.date(1980, 1, 1), 1), TODAY), code


def test_division_code_that_never_existed_is_rejected() -> None:
    number = make_id("990602", datetime.date(1960, 3, 1), 17)
    assert not idnumber.is_valid_id_number(number, TODAY)
    assert problems(number) == [IdProblem.DIVISION]


def test_future_birth_date_is_rejected() -> None:
    tomorrow = make_id("110105", TODAY + datetime.timedelta(days=1), 1)
    today = make_id("110105", TODAY, 1)
    assert not idnumber.is_valid_id_number(tomorrow, TODAY)
    assert idnumber.is_valid_id_number(today, TODAY)
    assert problems(tomorrow, today) == [IdProblem.FUTURE, IdProblem.OK]


def test_impossible_birth_dates_are_rejected() -> None:
    for first17 in ("11010519490229001", "11010519491301001", "11010519490100001", "11010518000101001"):
        number = first17 + idnumber.check_character(first17)
        assert not idnumber.is_valid_id_number(number, TODAY)
        assert problems(number) == [IdProblem.BIRTH_DATE]
    leap = "11010520000229001"
    assert idnumber.is_valid_id_number(leap + idnumber.check_character(leap), TODAY)


def test_shape_problems() -> None:
    assert (
        problems("", "1101051949123100", "11010519491231002x", "11010519491231002XX", "身份证")
        == [IdProblem.SHAPE] * 5
    )
    assert not idnumber.is_valid_id_number("11010519491231002x", TODAY)


def test_scientific_notation_is_recognised_not_repaired() -> None:
    assert problems("4.20123196205184E+17", "4.20123196205184e17") == [IdProblem.SCIENTIFIC] * 2
    assert not idnumber.is_valid_id_number("4.20123196205184E+17", TODAY)


def test_repeated_marks_second_and_later_occurrences_only() -> None:
    a, b = make_id("110105", datetime.date(1949, 12, 31), 2), make_id("440602", datetime.date(1960, 1, 1), 3)
    values = pd.Series([a, b, "", a, "bad", "", "bad", a], dtype="str")
    assert idnumber.repeated(values).tolist() == [False, False, False, True, False, False, True, True]


def test_birth_dates_and_genders_come_from_readable_numbers_only() -> None:
    male = make_id("110105", datetime.date(1949, 12, 31), 1)
    female = make_id("110105", datetime.date(1949, 12, 31), 2)
    wrong_check = female[:17] + ("0" if female[17] != "0" else "1")
    future = make_id("110105", TODAY + datetime.timedelta(days=3), 1)
    values = pd.Series([male, female, wrong_check, future, "123"], dtype="str")
    births, genders = idnumber.birth_dates_and_genders(values, TODAY)
    assert births.tolist() == ["19491231", "19491231", "19491231", "", ""]
    assert genders.tolist() == ["1", "2", "2", "", ""]


def test_division_codes_include_historical_codes() -> None:
    codes = idnumber.division_codes()
    assert len(codes) > 6800
    assert {"440602", "110103", "110000"} <= codes  # 110103: 崇文区, gone since 2010
    assert all(len(code) == 6 and code.isdigit() for code in codes)
    # Read from the keys alone, they are exactly the codes the names are read for (addresses).
    from pipeline.text.divisions import division_names

    assert codes == frozenset(division_names())


def test_large_column_problems_match_scalar_validity() -> None:
    rng = np.random.default_rng(7)
    numbers = [
        make_id(DIVISIONS[i % len(DIVISIONS)], datetime.date(1950, 1, 1), i % 1000) for i in range(500)
    ]
    broken = [n[:17] + "X" if rng.random() < 0.3 else n for n in numbers]
    found = idnumber.id_problems(pd.Series(broken, dtype="str"), TODAY)
    assert [p == IdProblem.OK for p in found] == [idnumber.is_valid_id_number(n, TODAY) for n in broken]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="0123456789Xx:/ .-A张", min_size=16, max_size=19), min_size=1, max_size=40))
def test_well_formed_numbers_found_byte_by_byte_as_by_a_regular_expression(texts: list[str]) -> None:
    """17 digits and a digit or X: bytes just outside the digits (``/``, ``:``) or a wide character fail."""
    values = pd.Series([*texts, "110105194912310021", "11010519491231002X"], dtype="str")
    shaped, keys = idnumber.id_keys(values)
    expected = values.str.fullmatch(r"[0-9]{17}[0-9X]").to_numpy(dtype=bool)
    assert shaped.tolist() == expected.tolist()
    exact = [int(v[:17]) * 11 + (10 if v[17] == "X" else int(v[17])) for v in values[expected]]
    assert keys.tolist() == exact


@pytest.mark.parametrize("unknown", ["", "-"])
def test_genders_and_birth_dates_say_unknown_where_the_number_is_not_eighteen_characters(
    unknown: str,
) -> None:
    values = pd.Series(["11010519491231002X", "110105194912310", "", "１１０１０５１９４９１２３１００２Ｘ"])
    assert idnumber.genders(values, unknown=unknown).tolist() == ["2", unknown, unknown, unknown]
    assert idnumber.birth_dates(values, unknown=unknown * 8).tolist() == [
        "19491231",
        unknown * 8,
        unknown * 8,
        "１９４９１２３１",
    ]
