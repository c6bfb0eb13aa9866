"""Resident ID numbers (GB 11643-1999): check character, 15→18 upgrade, validity.

An 18-character number is a six-digit division code (GB/T 2260), the birth date
``YYYYMMDD``, a three-digit sequence (odd for men, even for women) and an
ISO 7064 MOD 11-2 check character.  A number is valid when all four parts are:
the division code has existed at some time (:mod:`schemas.divisions`; it
records where the number was issued, so it is not tied to the birth year), the
birth date is a real date not after today, and the check character matches.

Scalar helpers serve single values (the sandbox, tests); the ``*_array`` /
Series functions do the same over a whole column at numpy speed.
"""

from __future__ import annotations

import datetime
from enum import IntEnum

import numpy as np
import pandas as pd

from schemas.divisions import division_codes as _division_codes
from schemas.divisions import division_lookup

__all__ = [
    "EARLIEST_BIRTH_YEAR",
    "IdProblem",
    "birth_dates",
    "check_character",
    "check_characters",
    "division_codes",
    "genders",
    "id_problems",
    "is_valid_id_number",
    "looks_like_scientific",
    "upgrade_15_to_18",
    "upgrade_15_to_18_series",
]

#: Weights of the first 17 characters, ISO 7064 MOD 11-2.
WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
#: Check character by weighted sum mod 11.
CHECK_CHARACTERS = "10X98765432"
_CHECK_BYTES = np.frombuffer(CHECK_CHARACTERS.encode("ascii"), dtype=np.uint8)

#: Birth years before this are typing errors, not people (the oldest residents
#: ever registered were born in the 1880s).
EARLIEST_BIRTH_YEAR = 1850

_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


class IdProblem(IntEnum):
    """Why an ID number is invalid (``OK`` when it is not); the first problem found wins."""

    OK = 0
    SCIENTIFIC = 1  # Excel stored it as a number: digits are lost
    SHAPE = 2  # not 17 digits + digit/X
    DIVISION = 3  # division code never existed
    BIRTH_DATE = 4  # not a real date (or before EARLIEST_BIRTH_YEAR)
    FUTURE = 5  # birth date after today
    CHECK = 6  # check character does not match


def division_codes() -> frozenset[str]:
    """Every six-digit administrative division code that has ever existed."""
    return _division_codes()


def check_character(first17: str) -> str:
    """The MOD 11-2 check character for the first 17 digits of an ID number."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("the first 17 characters of an ID number must be 17 digits")
    total = sum(int(c) * int(w) for c, w in zip(first17, WEIGHTS, strict=True))
    return CHECK_CHARACTERS[total % 11]


def upgrade_15_to_18(value: str) -> str:
    """The 18-character form of a 15-digit ID number: ``19`` before the year, check character after."""
    if len(value) != 15 or not value.isascii() or not value.isdigit():
        raise ValueError("a 15-digit ID number must be 15 digits")
    first17 = value[:6] + "19" + value[6:]
    return first17 + check_character(first17)


def _is_real_date(year: int, month: int, day: int) -> bool:
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return year >= EARLIEST_BIRTH_YEAR


def is_valid_id_number(value: str, today: datetime.date | None = None) -> bool:
    """Whether ``value`` is a valid 18-character ID number (upper-case ``X``), as of ``today``."""
    if len(value) != 18 or not value.isascii() or not value[:17].isdigit():
        return False
    if not (value[17].isdigit() or value[17] == "X"):
        return False
    if value[:6] not in division_codes():
        return False
    year, month, day = int(value[6:10]), int(value[10:12]), int(value[12:14])
    if not _is_real_date(year, month, day):
        return False
    if datetime.date(year, month, day) > (today or datetime.date.today()):
        return False
    return check_character(value[:17]) == value[17]


# --- vectorised -------------------------------------------------------------


def _as_bytes(values: pd.Series, width: int) -> np.ndarray:
    """An ``(n, width)`` uint8 matrix of ASCII strings all exactly ``width`` long."""
    if values.empty:
        return np.empty((0, width), dtype=np.uint8)
    joined = "".join(values.tolist()).encode("ascii")
    return np.frombuffer(joined, dtype=np.uint8).reshape(-1, width)


def _check_bytes(digits17: np.ndarray) -> np.ndarray:
    """Check characters (as ASCII bytes) for an ``(n, 17)`` matrix of ASCII digits."""
    weighted = (digits17.astype(np.int64) - 48) @ WEIGHTS
    return _CHECK_BYTES[weighted % 11]


def check_characters(first17: pd.Series) -> pd.Series:
    """Check characters of a Series of 17-digit strings (same index)."""
    matrix = _as_bytes(first17, 17)
    chars = _check_bytes(matrix).view("S1").astype(str)
    return pd.Series(chars, index=first17.index, dtype="str")


def upgrade_15_to_18_series(values: pd.Series) -> pd.Series:
    """The 18-character forms of a Series of 15-digit ID numbers (same index)."""
    first17 = values.str.slice(0, 6) + "19" + values.str.slice(6)
    return first17 + check_characters(first17)


def _number(matrix: np.ndarray, start: int, stop: int) -> np.ndarray:
    result = np.zeros(len(matrix), dtype=np.int64)
    for column in range(start, stop):
        result = result * 10 + (matrix[:, column].astype(np.int64) - 48)
    return result


def _date_problems(year: np.ndarray, month: np.ndarray, day: np.ndarray, today: datetime.date) -> np.ndarray:
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_ok = (month >= 1) & (month <= 12)
    days = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + ((month == 2) & leap)
    real = month_ok & (day >= 1) & (day <= days) & (year >= EARLIEST_BIRTH_YEAR)
    future = (year * 10000 + month * 100 + day) > int(today.strftime("%Y%m%d"))
    return np.where(~real, IdProblem.BIRTH_DATE, np.where(future, IdProblem.FUTURE, IdProblem.OK))


def looks_like_scientific(values: pd.Series) -> pd.Series:
    """Whether each value is a number in scientific notation (``4.20123196205184E+17``)."""
    return values.str.fullmatch(r"[0-9](?:\.[0-9]+)?[eE]\+?[0-9]+").fillna(False).astype(bool)


def id_problems(values: pd.Series, today: datetime.date) -> np.ndarray:
    """An :class:`IdProblem` value (int8) per 18-character ID number in ``values``."""
    problems = np.full(len(values), IdProblem.SHAPE, dtype=np.int8)
    shaped = values.str.fullmatch(r"[0-9]{17}[0-9X]").fillna(False).to_numpy(dtype=bool)
    scientific = ~shaped & looks_like_scientific(values).to_numpy(dtype=bool)
    problems[scientific] = IdProblem.SCIENTIFIC
    if not shaped.any():
        return problems
    matrix = _as_bytes(values[shaped], 18)
    found = np.full(len(matrix), IdProblem.OK, dtype=np.int8)
    found[_check_bytes(matrix[:, :17]) != matrix[:, 17]] = IdProblem.CHECK
    dates = _date_problems(_number(matrix, 6, 10), _number(matrix, 10, 12), _number(matrix, 12, 14), today)
    found = np.where(dates != IdProblem.OK, dates, found)
    found[~division_lookup()[_number(matrix, 0, 6)]] = IdProblem.DIVISION
    problems[shaped] = found
    return problems


def birth_dates(values: pd.Series) -> pd.Series:
    """``YYYYMMDD`` from 18-character ID numbers ("" where the value is not 18 characters)."""
    return values.str.slice(6, 14).where(values.str.len() == 18, "")


def genders(values: pd.Series) -> pd.Series:
    """GB/T 2261.1 gender from the sequence parity: ``1`` odd, ``2`` even, "" if unknown."""
    seventeenth = values.str.slice(16, 17).where(values.str.len() == 18, "")
    return seventeenth.map(_PARITY_GENDER).fillna("").astype("str")


_PARITY_GENDER = {str(d): ("1" if d % 2 else "2") for d in range(10)}
