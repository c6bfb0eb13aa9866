"""The platform's result codes as one IntEnum, so code names them instead of repeating numbers.

Members are declared here (``ResultCode.INVALID_ID_NUMBER``); their texts live
in ``schemas/codes/result_codes.csv``, the one place a wording changes:
``.description`` is the platform's own Chinese phrase, ``.hint`` how a clerk
fixes a row refused with the code (``""`` when there is nothing to say).  A
test holds the enum and the CSV to the same set of codes.

Some codes cover several fields (10110 answers a bad name, phone, document
number, address …): ``schemas/codes/field_fixes.csv`` gives such a code, per
field, its own short title and fix, read through :func:`field_title` and
:func:`field_hint`.

Members compare equal to ints, so codes read from answers, journals and
frames (ints, or strings where stored as text) need no conversion.
:func:`describe` and :func:`hint` also take codes the platform may send but
this list does not know.
"""

from __future__ import annotations

import csv
from enum import IntEnum
from functools import cache
from importlib import resources


@cache
def _texts() -> dict[int, tuple[str, str]]:
    """Every code in ``result_codes.csv`` -> (description, hint)."""
    text = resources.files("schemas").joinpath("codes", "result_codes.csv").read_text(encoding="utf-8")
    return {int(row["code"]): (row["description"], row["hint"]) for row in csv.DictReader(text.splitlines())}


class ResultCode(IntEnum):
    """A result code of the platform, with its Chinese description and a clerk's hint."""

    SUCCESS = 10000
    INVALID_ORG_CODE = 10101
    INVALID_USER_NAME = 10102
    INVALID_PASSWORD = 10103
    INVALID_WORK_KEY = 10105
    NO_CARD_FOR_ID = 10108
    NO_SUCH_CARD = 10109
    PARAMETER_ERROR = 10110
    INVALID_ID_NUMBER = 10111
    INVALID_OPERATION_CODE = 10112
    INVALID_GENDER = 10113
    NAME_EMPTY = 10114
    ALREADY_ENROLLED = 10115
    CARD_NUMBER_TAKEN = 10116
    CARD_NOT_REPLACEABLE = 10117
    CARD_RESIDENT_MISSING = 10118
    LOSS_NEEDS_ACTIVE_CARD = 10119
    RECOVERY_NEEDS_LOST_CARD = 10121
    REPLACEMENT_NEEDS_ID = 10122
    INVALID_ETHNICITY = 10123
    INVALID_BIRTH_DATE = 10124
    CARD_IN_USE = 10125
    INVALID_CONSUMPTION_TYPE = 10126
    OLD_CARD_BLACKLISTED = 10127
    INVALID_ISSUE_DATE = 10128
    NETWORK_ERROR = 10129
    CARD_AND_ID_UNRELATED = 10130
    INVALID_PAYMENT_METHOD = 10131
    INVALID_MARITAL_STATUS = 10132
    INVALID_EDUCATION = 10133
    INVALID_DOCUMENT_TYPE = 10134
    INVALID_OCCUPATION = 10135
    INVALID_ADDRESS_TYPE = 10136
    INVALID_VACCINATION_DATE = 10137
    INVALID_ABO_BLOOD_TYPE = 10138
    INVALID_RH_BLOOD_TYPE = 10139
    INVALID_MEDICAL_ALERT = 10140
    INVALID_CHIP_SERIAL = 10141
    INVALID_ISSUE_SERIAL = 10142
    SEVERAL_CARDS_FOR_ID = 10143
    INVALID_CITY_CODE = 10144
    EMPTY_OBJECT = 10149
    CARD_NUMBER_NOT_ID = 10150
    INVALID_BANK_CARD = 10151
    INVALID_CONTACT_RELATION = 10152
    DUPLICATE_CHIP_SERIAL = 10153
    INVALID_ISSUE_METHOD = 10154
    INVALID_BANK_CODE = 10155
    RESIDENT_IN_POVERTY = 10156
    BINDING_MISMATCH = 10157
    CARD_REPORTED_LOST = 1010
    CARD_CANCELLED = 1040

    @property
    def description(self) -> str:
        """The platform's Chinese description of this code (``result_codes.csv``)."""
        return _texts()[self.value][0]

    @property
    def hint(self) -> str:
        """How a clerk fixes a row refused with this code (``""`` when there is nothing to say)."""
        return _texts()[self.value][1]


def describe(code: int) -> str:
    """The platform's Chinese description of ``code``, or a generic text for a code not in the list."""
    try:
        return ResultCode(code).description
    except ValueError:
        return f"未知返回代码 {code}"


def hint(code: int) -> str:
    """How a clerk fixes a row refused with ``code`` (``""`` for a code not in the list)."""
    try:
        return ResultCode(code).hint
    except ValueError:
        return ""


@cache
def _field_texts() -> dict[tuple[int, str], tuple[str, str]]:
    """Every (code, field) in ``field_fixes.csv`` -> (title, fix)."""
    text = resources.files("schemas").joinpath("codes", "field_fixes.csv").read_text(encoding="utf-8")
    return {
        (int(row["code"]), row["field"]): (row["title"], row["fix"])
        for row in csv.DictReader(text.splitlines())
    }


def field_title(code: int, field: str) -> str:
    """A short title for ``code`` on ``field`` (10110 on the phone: 联系电话不正确), else its description."""
    found = _field_texts().get((int(code), field))
    return found[0] if found else describe(code)


def field_hint(code: int, field: str) -> str:
    """How a clerk fixes ``code`` on ``field``, else the code's own hint."""
    found = _field_texts().get((int(code), field))
    return found[1] if found else hint(code)


def field_pairs() -> frozenset[tuple[int, str]]:
    """The (code, field) pairs that have a title and fix of their own."""
    return frozenset(_field_texts())
