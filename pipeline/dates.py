"""Dates as clerks write them, turned into the platform's ``YYYYMMDD``.

Accepted: Excel date cells as the reader renders them (``1962-05-18`` or
``1962-05-18 00:00:00``), Excel serial day numbers (``23150``), ``19620518``,
``1962-05-18``, ``1962/5/18``, ``1962.5.18``, ``1962年5月18日``, each optionally
followed by a time.  A text that is none of these, or not a real calendar
date, is returned unchanged so validation can name it.

A date column has few distinct values (a birth date column over a million
rows holds some 30,000), so the caller parses each distinct value once.
"""

from __future__ import annotations

import datetime
import re
import unicodedata

import numpy as np
import pandas as pd

from pipeline.arrowtext import ascii_matrix, digits_value

#: Excel's day zero in the 1900 date system (serial 1 is 1900-01-01; Excel's
#: phantom 1900-02-29 makes every serial after 60 count from here).
EXCEL_EPOCH = datetime.date(1899, 12, 30)

#: Serial numbers outside this range are not taken as dates: four digits are
#: far more likely a bare year than a day in 1900–1927.
SERIAL_RANGE = (10_000, 99_999)

_SEPARATED = re.compile(
    r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?"
    r"(?:(?:\s+|T)\d{1,2}[:：]\d{1,2}(?:[:：]\d{1,2}(?:\.\d+)?)?)?"
)
_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})(?:(?:\s+|T)\d{1,2}[:：]\d{1,2}(?:[:：]\d{1,2}(?:\.\d+)?)?)?")
_SERIAL = re.compile(r"(\d{5})(?:\.\d+)?")
_SPACES = re.compile(r"\s+")
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def parse_date(text: str) -> str | None:
    """``YYYYMMDD`` for one date text, or ``None`` when it is not a real date in a known form."""
    text = unicodedata.normalize("NFKC", text).strip()
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

    Meant for the *distinct* values of a column (the common forms are handled
    vectorised, the rest one by one).  ``values`` should already be
    NFKC-normalised; spaces are kept up to here because they separate a date
    from its time.
    """
    iso = values.str.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}").fillna(False)
    compact = values.where(~iso, values.str.replace("-", "", regex=False))
    done = (iso & pd.Series(real_dates(compact, 1, datetime.date.max), index=values.index)) | (values == "")
    done |= values.str.fullmatch(r"[0-9]{8}").fillna(False)
    result = compact.where(done, values)
    rest = values[~done]
    if not rest.empty:
        result[~done] = [parse_date(text) or _SPACES.sub("", text) for text in rest]
    return result.astype("str")


def calendar_dates(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Whether each (year, month, day) is a date of the Gregorian calendar."""
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_ok = (month >= 1) & (month <= 12)
    days_in_month = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + ((month == 2) & leap)
    return month_ok & (day >= 1) & (day <= days_in_month)


def real_dates(values: pd.Series, earliest_year: int, latest: datetime.date) -> np.ndarray:
    """Boolean per value: an 8-digit ``YYYYMMDD`` that is a real date in ``[earliest_year, latest]``."""
    eight = values.str.fullmatch(r"[0-9]{8}").fillna(False).to_numpy(dtype=bool)
    result = np.zeros(len(values), dtype=bool)
    if not eight.any():
        return result
    matrix = ascii_matrix(values[eight], 8)
    year, month, day = digits_value(matrix, 0, 4), digits_value(matrix, 4, 6), digits_value(matrix, 6, 8)
    in_range = (year >= earliest_year) & (year * 10000 + month * 100 + day <= int(latest.strftime("%Y%m%d")))
    result[eight] = calendar_dates(year, month, day) & in_range
    return result
