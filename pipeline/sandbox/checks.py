"""The platform's checks of ``peopleInfo`` and ``cardInfo``, as the sandbox applies them.

Each check gives the platform's own result code; the first failing check
wins, as on the platform.  The code lists come from :mod:`schemas.tables`,
ID numbers are checked by :func:`pipeline.text.idnumber.is_valid_id_number`.
"Required" means the key must be present (spec note 5); values may be empty
unless the check below says otherwise.  ``xnhkh`` is required like the
rest: the document's table marks it 必填 (its example merely leaves it out).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping

from pipeline.model import CARD_FIELDS, PEOPLE_FIELDS
from pipeline.text.idnumber import division_codes, is_valid_id_number
from schemas.tables import FIELD_TABLES, code_table, describe

PARAMETER_ERROR = 10110

#: Keys that must be present in each object.
REQUIRED_PEOPLE: tuple[str, ...] = PEOPLE_FIELDS
REQUIRED_CARD: tuple[str, ...] = tuple(name for name in CARD_FIELDS if name != "yhkh")

_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_LANDLINE = re.compile(r"0[0-9]{2,3}-?[0-9]{7,8}")
_BANK_CARD = re.compile(r"[0-9]{12,19}")

#: Code-table fields: (field, code when wrong, empty allowed).
_TABLE_CHECKS: tuple[tuple[str, int, bool], ...] = (
    ("zjlx", 10134, False),
    ("mzdm", 10123, False),
    ("fyzhdm", 10132, True),
    ("xldm", 10133, True),
    ("zydm", 10135, True),
    ("dzlb", 10136, False),
    ("ylfyzffs", 10131, False),
)


def warm_up() -> None:
    """Load every table the checks use now, so no request pays for it (and stalls the others)."""
    division_codes()
    for name in FIELD_TABLES.values():
        code_table(name)
    describe(10000)


def as_text_fields(value: object, required: tuple[str, ...]) -> dict[str, str] | None:
    """An object's fields as stripped strings, or ``None`` if it is no object, lacks a key or nests."""
    if not isinstance(value, Mapping) or any(name not in value for name in required):
        return None
    fields: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):  # every field is declared String
            return None
        fields[str(key).strip()] = str(item).strip()
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


def check_people(people: Mapping[str, str], today: datetime.date) -> int | None:
    """The first result code ``peopleInfo`` fails, or ``None`` when it passes."""
    if not people["xm"]:
        return 10114
    sfzhm = people["sfzhm"]
    if not is_valid_id_number(sfzhm, today):
        return 10111
    gender = people["xb"]
    if gender not in code_table(FIELD_TABLES["xb"]):
        return 10113
    if gender in ("1", "2") and int(sfzhm[16]) % 2 != (1 if gender == "1" else 0):
        return 10113
    csrq = people["csrq"]
    if not is_date(csrq, today) or csrq != sfzhm[6:14]:
        return 10124
    for field, code, empty_allowed in _TABLE_CHECKS:
        value = people[field]
        if (value or not empty_allowed) and value not in code_table(FIELD_TABLES[field]):
            return code
    if not people["zjhm"] or (people["zjlx"] == "01" and people["zjhm"] != sfzhm):
        return PARAMETER_ERROR
    if not is_phone(people["brdh"]):
        return PARAMETER_ERROR
    return None


def check_card(card: Mapping[str, str], today: datetime.date) -> int | None:
    """The first result code ``cardInfo`` fails, or ``None`` when it passes."""
    if not card["orgCode"]:
        return 10101
    if card["fksj"] and not is_date(card["fksj"], today):
        return 10128
    bank_card = card.get("yhkh", "")
    if bank_card and not _BANK_CARD.fullmatch(bank_card):
        return 10151
    if not card["klx"] or card["isRealName"] not in ("0", "1"):
        return PARAMETER_ERROR
    return None
