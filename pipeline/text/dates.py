"""Dates as clerks write them, turned into the platform's ``YYYYMMDD``.

Accepted: Excel date cells as the reader renders them (``1962-05-18`` or
``1962-05-18 00:00:00``), Excel serial day numbers (``23150``), ``19620518``,
``1962-05-18``, ``1962/5/18``, ``1962.5.18``, ``1962年5月18日`` (or ``18号``), each optionally
followed by a time.  A text that is none of these, or not a real calendar
date, is returned unchanged so validation can name it.

A date column has few distinct values (a birth date column over a million
rows holds some 30,000), so the caller parses each distinct value once.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.text.arrow import byte_matrix, eight_digits, fixed_width, replace_masked, to_arrow, to_series

#: Excel's day zero in the 1900 date system (serial 1 is 1900-01-01; Excel's
#: phantom 1900-02-29 makes every serial after 60 count from here).
EXCEL_EPOCH = datetime.date(1899, 12, 30)

#: Serial numbers outside this range are not taken as dates: four digits are
#: far more likely a bare year than a day in 1900–1927.
SERIAL_RANGE = (10_000, 99_999)

_SEPARATED = re.compile(
    r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*[日号]?"  # 号: as 日 is often said and typed
    r"(?:(?:\s+|T)\d{1,2}[:：]\d{1,2}(?:[:：]\d{1,2}(?:\.\d+)?)?)?"
)
_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})(?:(?:\s+|T)\d{1,2}[:：]\d{1,2}(?:[:：]\d{1,2}(?:\.\d+)?)?)?")
_SERIAL = re.compile(r"(\d{5})(?:\.\d+)?")

# The same forms for RE2, over ASCII digits and spaces only (a subset of what
# the patterns above accept, giving the same groups), without leading or
# trailing space: whatever these miss goes to parse_date.
_TIME_RE2 = r"(?:(?:\s+|T)[0-9]{1,2}[:：][0-9]{1,2}(?:[:：][0-9]{1,2}(?:\.[0-9]+)?)?)?"
_FAST_PATTERNS = tuple(
    f"^{date}{_TIME_RE2}$"
    for date in (
        r"(?P<year>[0-9]{4})\s*[-/.年]\s*(?P<month>[0-9]{1,2})\s*[-/.月]\s*(?P<day>[0-9]{1,2})\s*日?",
        r"(?P<year>[0-9]{4})(?P<month>[0-9]{2})(?P<day>[0-9]{2})",
    )
)
_ISO = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_SPACES = re.compile(r"\s+")
#: Years a lookup table of real dates covers (the table is one byte per ``YYYYMMDD`` number in range).
_TABLE_YEARS = (1000, 2999)
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def parse_date(text: str) -> str | None:
    """``YYYYMMDD`` for one date text, or ``None`` when it is not a real date in a known form."""
    # One space for a run of them: the patterns take any run there, and two runs in a row
    # (before and after an optional 日) cost time squared in a run's length.
    text = _SPACES.sub(" ", unicodedata.normalize("NFKC", text).strip())
    for pattern in (_SEPARATED, _COMPACT):
        match = pattern.fullmatch(text)
        if match:
            year, month, day = (int(part) for part in match.groups())
            try:
                return datetime.date(year, month, day).strftime("%Y%m%d")
            except ValueError:
                return None
    match = _SERIAL.fullmatch(text)
    if match and SERIAL_RANGE[0] <= int(match.group(1)) <= SERIAL_RANGE[1]:
        return (EXCEL_EPOCH + datetime.timedelta(days=int(match.group(1)))).strftime("%Y%m%d")
    return None


def normalise_dates(values: pd.Series) -> pd.Series:
    """Each value as ``YYYYMMDD`` where it parses; otherwise the text without its spaces.

    Meant for the *distinct* values of a column.  The common forms (ASCII
    digits, no space before or after) are read by RE2 and numpy; only the
    rest, and any value that is not a real date, go through :func:`parse_date`
    one by one.  ``values`` should already be NFKC-normalised; spaces are
    kept up to here because they separate a date from its time.
    """
    array = to_arrow(values)
    # Eight digits are left as written: already the platform's form, or for validation to name.
    done = pc.fill_null(pc.or_(pc.equal(array, ""), pc.match_substring_regex(array, r"^[0-9]{8}$")), False)
    result = array
    for pattern in _FAST_PATTERNS:
        found = pc.fill_null(pc.and_not(pc.match_substring_regex(array, pattern), done), False)
        if not pc.any(found).as_py():
            continue
        parts = pc.extract_regex(pc.filter(array, found), pattern)
        year, month, day = (
            pc.cast(parts.field(name), pa.int64()).to_numpy() for name in ("year", "month", "day")
        )
        # Years below 1000 are left to parse_date, whose strftime writes them unpadded;
        # only ``YYYY-MM-DD`` took them here before, as eight digits.
        iso = pc.match_substring_regex(pc.filter(array, found), _ISO).to_numpy(zero_copy_only=False)
        real = calendar_dates(year, month, day) & ((year >= 1000) | (iso & (year >= 1)))
        written = pc.utf8_lpad(pc.cast(pa.array(year * 10000 + month * 100 + day), pa.large_string()), 8, "0")
        positions = np.flatnonzero(found.to_numpy(zero_copy_only=False))[real]
        mask = np.zeros(len(array), dtype=bool)
        mask[positions] = True
        result = replace_masked(result, mask, pc.filter(written, pa.array(real)))
        done = pc.or_(done, pa.array(mask))
    rest = np.flatnonzero(~done.to_numpy(zero_copy_only=False))
    if len(rest):
        odd_forms = array.take(pa.array(rest)).to_pylist()
        parsed = [parse_date(text) or _SPACES.sub("", text) for text in odd_forms]
        mask = np.zeros(len(array), dtype=bool)
        mask[rest] = True
        result = replace_masked(result, mask, pa.array(parsed, type=pa.large_string()))
    return to_series(result, values.index)


def _layouts() -> dict[int, list[tuple[int, int, int, int, bool]]]:
    """The byte layouts of the separated forms read in numpy, by width in bytes.

    Each is (month start, month digits, day start, day digits, CJK): four year
    digits first, then ``-``, ``/`` or ``.`` around a month and day of one or
    two digits, or ``年``, ``月`` and ``日`` (three bytes each in UTF-8).
    """
    layouts: dict[int, list[tuple[int, int, int, int, bool]]] = {}
    for month_digits in (1, 2):
        for day_digits in (1, 2):
            width = 6 + month_digits + day_digits
            layouts.setdefault(width, []).append((5, month_digits, 6 + month_digits, day_digits, False))
            width = 13 + month_digits + day_digits
            layouts.setdefault(width, []).append((7, month_digits, 10 + month_digits, day_digits, True))
    return layouts


_LAYOUTS = _layouts()
_ASCII_SEPARATORS = b"-/."
_EIGHT_ONES = np.uint64(0x0101010101010101)  # eight bytes of True
_YEAR_SIGN, _MONTH_SIGN, _DAY_SIGN = (sign.encode() for sign in "年月日")


def _is_sign(matrix: np.ndarray, start: int, sign: bytes) -> np.ndarray:
    """Whether the bytes of each row of ``matrix`` from ``start`` on are those of ``sign``."""
    found = matrix[:, start] == sign[0]
    for offset, byte in enumerate(sign[1:], start=1):
        found &= matrix[:, start + offset] == byte
    return found


def _is_separator(column: np.ndarray) -> np.ndarray:
    found = column == _ASCII_SEPARATORS[0]
    for byte in _ASCII_SEPARATORS[1:]:
        found |= column == byte
    return found


def _number(digits: np.ndarray, start: int, count: int) -> np.ndarray:
    """The number written by columns ``start:start + count`` of a matrix of digit values."""
    value = digits[:, start].astype(np.int64)
    for column in range(start + 1, start + count):
        value = value * 10 + digits[:, column]
    return value


def settle_common_forms(array: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Which values byte arithmetic settles as :func:`normalise_dates` would, and ``array`` with them settled.

    Most cells of a date column are ``""`` or eight ASCII digits (both left
    as written), or a real date written ``1962-05-18``, ``1962/5/18``,
    ``1962.5.18`` or ``1962年5月18日`` (``YYYYMMDD``): these are read in numpy
    over the whole column, at a fraction of the cost of hashing and matching
    each value.  Anything else (spaces, a time, other characters, a date that
    is not real) is left unsettled for :func:`normalise_dates`.  Returns
    which values are settled, and ``array`` with them normalised.
    """
    lengths = pc.fill_null(pc.binary_length(array), 0).to_numpy(zero_copy_only=False)
    settled = lengths == 0
    positions: list[np.ndarray] = []
    dates: list[np.ndarray] = []  # the YYYYMMDD digits (values 0-9) of the real dates found
    for width, layouts in _LAYOUTS.items():
        rows = lengths == width
        if not rows.any():
            continue
        matrix = byte_matrix(array.filter(pa.array(rows)), width)
        digits = matrix - np.uint8(48)  # uint8 wraps below "0": a digit is below 10
        is_digit = digits < 10
        if width == 8:  # each row's eight flags read as one 64-bit word
            settled[rows] = is_digit.view(np.uint64)[:, 0] == _EIGHT_ONES
        year_shaped = is_digit[:, 0] & is_digit[:, 1] & is_digit[:, 2] & is_digit[:, 3]
        for month_start, month_digits, day_start, day_digits, cjk in layouts:
            shaped = year_shaped.copy()
            for column in (
                *range(month_start, month_start + month_digits),
                *range(day_start, width)[:day_digits],
            ):
                shaped &= is_digit[:, column]
            if cjk:
                shaped &= _is_sign(matrix, 4, _YEAR_SIGN) & _is_sign(matrix, day_start - 3, _MONTH_SIGN)
                shaped &= _is_sign(matrix, width - 3, _DAY_SIGN)
            else:
                shaped &= _is_separator(matrix[:, 4]) & _is_separator(matrix[:, day_start - 1])
            picked = np.flatnonzero(shaped)
            if not len(picked):
                continue
            # Often every value of a width has the one layout (a column of 1962-05-18): no copies then.
            chosen = digits if len(picked) == len(digits) else digits[picked]
            year, month = _number(chosen, 0, 4), _number(chosen, month_start, month_digits)
            day = _number(chosen, day_start, day_digits)
            real = calendar_dates(year, month, day)
            # Years below 1000 are left to parse_date (see normalise_dates), but for ``YYYY-MM-DD``.
            if cjk or month_digits != 2 or day_digits != 2:
                real &= year >= 1000
            else:
                iso = (matrix[picked, 4] == ord("-")) & (matrix[picked, 7] == ord("-"))
                real &= (year >= 1000) | (iso & (year >= 1))
            if real.any():
                if not real.all():
                    picked, chosen = picked[real], chosen[real]
                positions.append(np.flatnonzero(rows)[picked])
                written = np.zeros((len(picked), 8), dtype=np.uint8)
                written[:, :4] = chosen[:, :4]
                written[:, 6 - month_digits : 6] = chosen[:, month_start : month_start + month_digits]
                written[:, 8 - day_digits :] = chosen[:, day_start : day_start + day_digits]
                dates.append(written)
    if not positions:
        return settled, array
    where = np.concatenate(positions)
    mask = np.zeros(len(array), dtype=bool)
    mask[where] = True
    settled |= mask
    # Every row's eight digits side by side (zeros where no date was read), chosen where one was.
    written_digits = np.zeros(len(array), dtype=np.uint64)  # a row's eight bytes as one word: one store each
    written_digits[where] = (np.concatenate(dates) + np.uint8(48)).view(np.uint64)[:, 0]
    offsets = np.arange(0, 8 * len(array) + 1, 8, dtype=np.int64)
    written = pa.LargeStringArray.from_buffers(
        len(array), pa.py_buffer(offsets), pa.py_buffer(written_digits)
    )
    return settled, pc.if_else(pa.array(mask), written, array)


def calendar_dates(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Whether each (year, month, day) is a date of the Gregorian calendar."""
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_ok = (month >= 1) & (month <= 12)
    days_in_month = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + ((month == 2) & leap)
    return month_ok & (day >= 1) & (day <= days_in_month)


@cache
def _date_table(earliest_year: int, latest: datetime.date) -> tuple[int, np.ndarray]:
    """(first ``YYYYMMDD`` number, table): ``table[n - first]`` says whether ``n`` is a real date in range."""
    days = np.arange(np.datetime64(f"{earliest_year:04d}-01-01"), np.datetime64(latest) + 1)
    months = days.astype("datetime64[M]")
    year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    numbers = year * 10000 + (months.astype(np.int64) % 12 + 1) * 100 + (days - months).astype(np.int64) + 1
    table = np.zeros(int(numbers[-1] - numbers[0]) + 1, dtype=bool)
    table[numbers - numbers[0]] = True
    table.setflags(write=False)
    return int(numbers[0]), table


def real_date_numbers(numbers: np.ndarray, earliest_year: int, latest: datetime.date) -> np.ndarray:
    """Whether each ``YYYYMMDD`` number is a real date in ``[earliest_year, latest]``."""
    if not _TABLE_YEARS[0] <= earliest_year <= latest.year <= _TABLE_YEARS[1]:
        year, month, day = numbers // 10000, numbers // 100 % 100, numbers % 100
        in_range = (year >= earliest_year) & (numbers <= int(latest.strftime("%Y%m%d")))
        return calendar_dates(year, month, day) & in_range
    first, table = _date_table(earliest_year, latest)
    offset = numbers - first
    inside = (offset >= 0) & (offset < len(table))
    return inside & table[np.where(inside, offset, 0)]


def real_dates(values: pd.Series, earliest_year: int, latest: datetime.date) -> np.ndarray:
    """Boolean per value: an 8-digit ``YYYYMMDD`` that is a real date in ``[earliest_year, latest]``."""
    result = np.zeros(len(values), dtype=bool)
    if values.empty:
        return result
    eight, matrix = fixed_width(to_arrow(values), 8)
    digits, numbers = eight_digits(matrix)
    result[eight] = digits & real_date_numbers(numbers, earliest_year, latest)
    return result
