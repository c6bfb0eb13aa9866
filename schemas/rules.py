"""The rule of every platform field, declared once: code table, result code, empty or not, length.

Three consumers read this one table, so they cannot drift apart:

* the pandera schema (:func:`schemas.registry.build_schema`) builds each
  column's checks from its rule, each carrying the rule's result code;
* normalisation (:mod:`pipeline.normalise`) recognises the codes of every
  field with a code table, and warns with the rule's code when it folds a
  finer sub-code into the spec's category;
* the sandbox (:mod:`pipeline.sandbox.checks`) checks ``peopleInfo`` and
  ``cardInfo`` rule by rule, in this table's order, which is the platform's:
  the first failing rule gives the answer.

What a rule cannot say as data (an ID number's check character, a phone
number's form, a date) is a check of each consumer's own, keyed by field and
answering with the rule's ``code``.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.result_codes import ResultCode


@dataclass(frozen=True)
class FieldRule:
    """What the platform accepts in one field, and the code it answers when a value breaks it.

    ``code`` is answered for a value that breaks the rule (not in ``table``,
    badly formed); ``allow_empty`` says whether the platform accepts an empty
    value, and ``empty_code`` what it answers for one when that differs from
    ``code``.  ``max_length`` is our own bound on free text (the spec gives
    none): a longer value is pasted text rather than a value, and a
    :attr:`~ResultCode.PARAMETER_ERROR`.  The sandbox does not apply it.
    """

    field: str
    code: ResultCode
    table: str | None = None
    allow_empty: bool = True
    empty_code: ResultCode | None = None
    max_length: int | None = None

    @property
    def code_when_empty(self) -> ResultCode:
        """The code answered for an empty value (when one is refused)."""
        return self.empty_code if self.empty_code is not None else self.code


_PARAMETER = ResultCode.PARAMETER_ERROR

#: Fields holding long numbers as text, whose last digits Excel loses when it stores them as numbers
#: (shown then as ``4.40637051425053E+16``): such a value is refused with the field's code.  Not the
#: document number: it is the ID number's copy (checked there) or must equal it for an ID card.
NUMBERS_KEPT_AS_TEXT = ("jkdah", "xnhkh", "kh")

#: Every field of ``peopleInfo`` then ``cardInfo``, in the order the platform checks them.
FIELD_RULES: tuple[FieldRule, ...] = (
    FieldRule("xm", _PARAMETER, allow_empty=False, empty_code=ResultCode.NAME_EMPTY, max_length=30),
    FieldRule("sfzhm", ResultCode.INVALID_ID_NUMBER, allow_empty=False),
    FieldRule("xb", ResultCode.INVALID_GENDER, "gender", allow_empty=False),
    FieldRule("csrq", ResultCode.INVALID_BIRTH_DATE, allow_empty=False),
    FieldRule("zjlx", ResultCode.INVALID_DOCUMENT_TYPE, "document_type", allow_empty=False),
    FieldRule("mzdm", ResultCode.INVALID_ETHNICITY, "ethnicity", allow_empty=False),
    FieldRule("fyzhdm", ResultCode.INVALID_MARITAL_STATUS, "marriage"),
    FieldRule("xldm", ResultCode.INVALID_EDUCATION, "education"),
    FieldRule("zydm", ResultCode.INVALID_OCCUPATION, "occupation"),
    FieldRule("dzlb", ResultCode.INVALID_ADDRESS_TYPE, "address_type", allow_empty=False),
    FieldRule("ylfyzffs", ResultCode.INVALID_PAYMENT_METHOD, "payment", allow_empty=False),
    FieldRule("zjhm", _PARAMETER, allow_empty=False, max_length=30),
    FieldRule("brdh", _PARAMETER, allow_empty=False),
    FieldRule("jkdah", _PARAMETER, max_length=50),
    FieldRule("xnhkh", _PARAMETER, max_length=50),
    FieldRule("dzsf", _PARAMETER, max_length=30),
    FieldRule("dzs", _PARAMETER, max_length=30),
    FieldRule("dzqx", _PARAMETER, max_length=30),
    FieldRule("dzxz", _PARAMETER, max_length=50),
    FieldRule("dzc", _PARAMETER, max_length=100),
    FieldRule(
        "orgCode", _PARAMETER, allow_empty=False, empty_code=ResultCode.INVALID_ORG_CODE, max_length=50
    ),
    FieldRule("fksj", ResultCode.INVALID_ISSUE_DATE),
    FieldRule("yhkh", ResultCode.INVALID_BANK_CARD),
    FieldRule("klx", _PARAMETER, allow_empty=False, max_length=10),
    FieldRule("isRealName", _PARAMETER, allow_empty=False),
    FieldRule("kh", _PARAMETER, max_length=50),
)

_BY_FIELD: dict[str, FieldRule] = {rule.field: rule for rule in FIELD_RULES}

#: The code table of every field that has one, by field (in :data:`FIELD_RULES` order).
FIELD_TABLES: dict[str, str] = {rule.field: rule.table for rule in FIELD_RULES if rule.table is not None}


def rule_for(field: str) -> FieldRule:
    """The rule of ``field`` (``KeyError`` for a name that is no platform field)."""
    return _BY_FIELD[field]
