"""The platform's checks of ``peopleInfo`` and ``cardInfo``, as the sandbox applies them.

Each check gives the platform's own result code; the first failing check
wins, as on the platform.  The checks are the field rules of
:mod:`schemas.rules`, taken in that table's order (the platform's): an empty
value where the rule refuses one, a value outside the rule's code table, and
the field's format check below (:data:`_FORMATS`).  The code lists come from
:mod:`schemas.tables`, ID numbers are checked by
:func:`pipeline.text.idnumber.is_valid_id_number`.  "Required" means the key
must be present (spec note 5); values may be empty unless the field's rule
says otherwise.  ``xnhkh`` is required like the rest: the document's table
marks it 必填 (its example merely leaves it out).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping

from pipeline.model import CARD_FIELDS, PEOPLE_FIELDS
from pipeline.text.idnumber import division_codes, is_valid_id_number
from schemas.result_codes import ResultCode
from schemas.rules import FIELD_RULES, FIELD_TABLES, FieldRule
from schemas.tables import code_table

#: Keys that must be present in each object.
REQUIRED_PEOPLE: tuple[str, ...] = PEOPLE_FIELDS
REQUIRED_CARD: tuple[str, ...] = tuple(name for name in CARD_FIELDS if name != "yhkh")

_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_LANDLINE = re.compile(r"0[0-9]{2,3}-?[0-9]{7,8}")
_BANK_CARD = re.compile(r"[0-9]{12,19}")

#: The rules of each object's fields, in the platform's order.
_PEOPLE_RULES: tuple[FieldRule, ...] = tuple(rule for rule in FIELD_RULES if rule.field in PEOPLE_FIELDS)
_CARD_RULES: tuple[FieldRule, ...] = tuple(rule for rule in FIELD_RULES if rule.field in CARD_FIELDS)


def warm_up() -> None:
    """Load every table the checks use now, so no request pays for it (and stalls the others)."""
    division_codes()
    for name in FIELD_TABLES.values():
        code_table(name)
    _ = ResultCode.SUCCESS.description


def is_empty_object(value: object) -> bool:
    """Whether ``value`` is the platform's 10149 (对象或其属性值均为空): absent, null, ``{}``, or an
    object whose every field is null or blank, as a client that does not serialise nested objects sends."""
    if value is None:
        return True
    if not isinstance(value, Mapping):
        return False
    return all(item is None or (isinstance(item, str) and not item.strip()) for item in value.values())


def as_text_fields(value: object, required: tuple[str, ...]) -> dict[str, str] | None:
    """An object's fields as stripped strings, or ``None`` if it is no object, lacks a key or nests."""
    if not isinstance(value, Mapping) or any(name not in value for name in required):
        return None
    fields: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):  # every field is declared String
            return None
        fields[key] = item.strip()  # values as the example sends them (" 13902263273"); keys exactly
    return fields


def is_date(text: str, today: datetime.date) -> bool:
    """Whether ``text`` is a real ``YYYYMMDD`` date not after ``today``."""
    if len(text) != 8 or not text.isascii() or not text.isdigit():
        return False
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:])) <= today
    except ValueError:
        return False


def is_phone(text: str) -> bool:
    """A mobile number (11 digits) or a landline with its area code."""
    return bool(_MOBILE.fullmatch(text) or _LANDLINE.fullmatch(text))


def _gender_agrees(gender: str, fields: Mapping[str, str], today: datetime.date) -> bool:
    # The ID number passed its own check before: its 17th digit is odd for a man, even for a woman.
    return gender not in ("1", "2") or int(fields["sfzhm"][16]) % 2 == (1 if gender == "1" else 0)


def _birth_date(csrq: str, fields: Mapping[str, str], today: datetime.date) -> bool:
    return is_date(csrq, today) and csrq == fields["sfzhm"][6:14]


def _document_number(zjhm: str, fields: Mapping[str, str], today: datetime.date) -> bool:
    return fields["zjlx"] != "01" or zjhm == fields["sfzhm"]


#: The platform's check of a non-empty value beyond its code table, by field
#: (the value, the object's fields, today): failing it answers the field rule's code.
_FORMATS: dict[str, Callable[[str, Mapping[str, str], datetime.date], bool]] = {
    "sfzhm": lambda value, _, today: is_valid_id_number(value, today),
    "xb": _gender_agrees,
    "csrq": _birth_date,
    "zjhm": _document_number,
    "brdh": lambda value, _, __: is_phone(value),
    "fksj": lambda value, _, today: is_date(value, today),
    "yhkh": lambda value, _, __: bool(_BANK_CARD.fullmatch(value)),
    "isRealName": lambda value, _, __: value in ("0", "1"),
}


def _first_failure(
    rules: tuple[FieldRule, ...], fields: Mapping[str, str], today: datetime.date
) -> ResultCode | None:
    """The code of the first rule ``fields`` break, or ``None`` when they keep every rule."""
    for rule in rules:
        value = fields.get(rule.field, "")
        if not value:
            if not rule.allow_empty:
                return rule.code_when_empty
            continue
        if rule.table is not None and value not in code_table(rule.table):
            return rule.code
        check = _FORMATS.get(rule.field)
        if check is not None and not check(value, fields, today):
            return rule.code
    return None


def check_people(people: Mapping[str, str], today: datetime.date) -> ResultCode | None:
    """The first result code ``peopleInfo`` fails, or ``None`` when it passes."""
    return _first_failure(_PEOPLE_RULES, people, today)


def check_card(card: Mapping[str, str], today: datetime.date) -> ResultCode | None:
    """The first result code ``cardInfo`` fails, or ``None`` when it passes."""
    return _first_failure(_CARD_RULES, card, today)
