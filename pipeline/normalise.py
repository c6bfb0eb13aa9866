"""Normalisation: the clerk's text turned into the values the platform expects.

One pure function, :func:`normalise`, over the whole run's frame.  Every step
is vectorised: free text goes through pyarrow string kernels (only on the
cells that need it); code and date columns, which hold few distinct values,
are cleaned once per distinct value and spread back through a dictionary
array.  A value that cannot be recognised is left as written (cleaned of
spaces) so that validation names it to the clerk.

What happens, in order:

1. Text: NFKC (full-width → half-width, ideographic space and NBSP → space),
   invisible marks dropped (zero-width characters, direction marks), then
   spaces removed (names keep one space between Latin words), the ID check
   character upper-cased.
2. Dates → ``YYYYMMDD`` (:mod:`pipeline.text.dates`); phones → digits
   (:mod:`pipeline.text.phone`); code fields → their code, from the code, the name
   or a synonym (``schemas/codes``); a finer national sub-code folds into the
   spec's category with a warning (``schemas/codes/folds.csv``).
3. A 15-digit ID number is upgraded to 18 (warning); ``csrq`` and ``xb`` come
   from the ID number when empty; ``zjlx`` = ``01`` and ``zjhm`` = ``sfzhm``
   when empty.
4. A full ``address`` column is split (:mod:`pipeline.text.address`); explicit part
   columns win.  Empty ``dzsf``, ``dzs``, ``orgCode``, ``klx``,
   ``isRealName``, ``dzlb`` and ``fksj`` take the configured defaults.
"""

from __future__ import annotations

import csv
import datetime
import os
import re
import string
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import DefaultValues
from pipeline.messages import warning_messages
from pipeline.model import ADDRESS_FIELD, ADDRESS_PARTS, FAULT_COLUMNS, FIELDS, INPUT_FIELDS, no_faults
from pipeline.text import idnumber
from pipeline.text.address import split_addresses
from pipeline.text.arrow import (
    INVISIBLE_MARKS,
    all_digits,
    all_empty,
    ascii_and_cjk_table,
    empty_mask,
    fill_empty,
    fixed_width,
    outside_ascii_and_cjk,
    per_distinct,
    replace_masked,
    rewrite_where,
    to_arrow,
    to_series,
    where,
)
from pipeline.text.dates import normalise_dates, parse_date, settle_common_forms
from pipeline.text.memo import ValueMemo
from pipeline.text.phone import normalise_phones
from schemas.result_codes import ResultCode
from schemas.rules import FIELD_TABLES, rule_for
from schemas.tables import code_table

#: Code tables whose codes are two digits, so ``1`` means ``01``.
ZERO_PADDED_TABLES = frozenset({"ethnicity", "document_type", "payment"})

#: Free text with (nearly) one value per row: cleaned directly, not per distinct value.
FREE_TEXT_COLUMNS = ("dzc", ADDRESS_FIELD)

#: Columns holding numbers rather than words: spaces and dashes go, and Excel's text marker ``'``.
NUMBER_COLUMNS = ("sfzhm", "zjhm", "jkdah", "xnhkh", "kh", "yhkh")

DATE_COLUMNS = ("csrq", "fksj")

# Whitespace NFKC leaves alone (zero-width space, BOM) besides ordinary spaces.
_SPACES = r"[\s\x{200b}\x{feff}\x{3000}\x{a0}]+"
_MIDDLE_DOTS = r"[•‧∙⋅・･]"
_OCCUPATION_DETAIL = re.compile(r"([0-9XY])(?:[-.][0-9]{1,3})+|([0-9])[0-9]")
_CODE_AND_NAME = re.compile(r"([0-9A-Za-z]{1,2})[-:.、_]?(\D.*)")
# The same the other way round, as drop-down lists write them: "汉族(01)", "汉族|01", "男-1".
_NAME_AND_CODE = re.compile(r"(.*\D)[(\[|/:\-_]([0-9A-Za-z]{1,2})\)?")
_EXCEL_INTEGER = re.compile(r"([0-9]+)\.0+")

#: Threads cleaning columns side by side.
_THREADS = max(1, min(4, os.cpu_count() or 1))
#: Below this many rows the columns are cleaned one after another: per-call overhead dominates.
SMALL_FRAME_ROWS = 64


# --- text --------------------------------------------------------------------
#
# Most cells are already clean, so each column is first searched for anything
# that cleaning could change; only the rows found are rewritten.

# Anything outside printable ASCII and the common CJK block: full-width forms,
# odd spaces, compatibility characters — what NFKC or space removal may change.
_USUAL = ascii_and_cjk_table("".join(map(chr, range(0x21, 0x7F))))
#: A name needs tidying when it holds anything but Chinese characters and Latin letters.
_USUAL_IN_NAMES = ascii_and_cjk_table(string.ascii_letters)


def _rewrite_unusual(
    values: pd.Series, usual: np.ndarray, rewrite: Callable[[pa.Array], pa.Array]
) -> pd.Series:
    """``rewrite`` applied to the values holding a character ``usual`` does not let pass."""
    return rewrite_where(values, outside_ascii_and_cjk(to_arrow(values), usual), rewrite)


def _nfkc(array: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(pc.utf8_normalize(array, "NFKC"), INVISIBLE_MARKS, "")


def _without_spaces(array: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(_nfkc(array), _SPACES, "")


def clean_text(values: pd.Series) -> pd.Series:
    """Free text and codes: NFKC (full-width → half-width), then every space removed."""
    return _rewrite_unusual(values, _USUAL, _without_spaces)


def nfkc(values: pd.Series) -> pd.Series:
    """NFKC only: spaces kept (they separate a date from its time)."""
    return _rewrite_unusual(values, _USUAL, _nfkc)


def _tidy_name(array: pa.Array) -> pa.Array:
    array = pc.replace_substring_regex(_nfkc(array), _MIDDLE_DOTS, "·")
    array = pc.utf8_trim_whitespace(pc.replace_substring_regex(array, _SPACES, " "))
    return pc.replace_substring_regex(array, r" ?([^\x00-\x7f]) ?", r"\1")


def clean_name(values: pd.Series) -> pd.Series:
    """Names: one space between Latin words, none next to a Chinese character; ``·`` unified."""
    return _rewrite_unusual(values, _USUAL_IN_NAMES, _tidy_name)


#: What exports from other systems do to numbers and dates kept as text: Excel's text formula
#: ``="440123…"`` (so that Excel keeps every digit), Excel's text marker ``'2004-10-11`` kept in the
#: export, and a whole number written as a float, ``13912345678.0``.
_TEXT_FORMULA = r'^\s*="(.*)"\s*$'
_TEXT_MARKER = r"^'"
_FLOAT_TAIL = r"^([0-9]+)\.0+$"


def undo_export_artefacts(array: pa.Array) -> pa.Array:
    """``="0757…"`` as ``0757…``, ``'2004-10-11`` as ``2004-10-11`` and ``13912345678.0`` as
    ``13912345678`` (after NFKC)."""
    unwrapped = pc.replace_substring_regex(_nfkc(array), _TEXT_FORMULA, r"\1")
    unmarked = pc.replace_substring_regex(unwrapped, _TEXT_MARKER, "")
    return pc.replace_substring_regex(unmarked, _FLOAT_TAIL, r"\1")


def _tidy_number(array: pa.Array) -> pa.Array:
    unwrapped = undo_export_artefacts(array)
    return pc.utf8_upper(pc.replace_substring_regex(unwrapped, r"[\s\x{200b}\x{feff}\-]+|^'", ""))


def clean_number(values: pd.Series) -> pd.Series:
    """Numbers kept as text: spaces, dashes and a leading ``'`` removed; letters upper-cased."""
    if all_empty(values):
        return values
    array = to_arrow(values)
    # Kernels, not a regex: ten times faster on a column of clean numbers.
    untidy = pc.or_(pc.invert(pc.ascii_is_alnum(array)), pc.not_equal(array, pc.ascii_upper(array)))
    untidy = pc.and_(untidy, pc.greater(pc.binary_length(array), 0))
    return rewrite_where(values, pc.fill_null(untidy, False), _tidy_number)


def _phone_text(array: pa.Array) -> pa.Array:
    unwrapped = undo_export_artefacts(array)
    return to_arrow(normalise_phones(clean_text(to_series(unwrapped, pd.RangeIndex(len(array))))))


def _phones_rewritten(array: pa.Array) -> pa.Array:
    """:func:`_phone_text` of phones that are not bare digits.

    Most are digits apart by dashes or spaces (139-1234-5678, 0757 8622 3344):
    their separators are taken out as plain text, a tenth of the time of the
    regular expressions every other form goes through.  One that then starts
    with a country prefix (86, 0086) goes through them too.
    """
    digits = pc.replace_substring(pc.replace_substring(array, "-", ""), " ", "")
    prefixed = pc.or_(pc.starts_with(digits, "86"), pc.starts_with(digits, "0086"))
    plain = pc.fill_null(pc.and_(pc.ascii_is_decimal(digits), pc.invert(prefixed)), False)
    plain = plain.to_numpy(zero_copy_only=False)
    if plain.all():
        return digits
    others = ~plain
    return replace_masked(digits, others, _phone_text(pc.filter(array, pa.array(others))))


def clean_phones(values: pd.Series) -> pd.Series:
    """Phones: text cleaning, then separators and the country prefix removed."""
    if all_empty(values):
        return values
    array = to_arrow(values)
    # Bare digits without a country prefix (most phones) are left by both steps.
    prefixed = pc.or_(pc.starts_with(array, "0086"), pc.starts_with(array, "86"))
    candidates = pc.fill_null(pc.or_(pc.invert(pc.ascii_is_decimal(array)), prefixed), False)
    return rewrite_where(values, candidates, _phones_rewritten)


def clean_dates(values: pd.Series) -> pd.Series:
    """Dates as ``YYYYMMDD``: the common forms read over the whole column, others once per distinct value."""
    if all_empty(values):
        return values
    array = to_arrow(values)
    settled, result = settle_common_forms(array)
    if settled.all():
        return values if result is array else to_series(result, values.index)
    rest = ~settled
    odd_forms = to_series(pc.filter(array, pa.array(rest)), pd.RangeIndex(int(rest.sum())))

    def read(distinct: pd.Series) -> pd.Series:
        return normalise_dates(to_series(undo_export_artefacts(to_arrow(distinct)), distinct.index))

    cleaned = per_distinct(odd_forms, read)
    return to_series(replace_masked(result, rest, to_arrow(cleaned)), values.index)


# --- code fields ---------------------------------------------------------------


@cache
def _folds(table: str) -> dict[str, str]:
    """Finer national sub-codes of ``table`` -> the spec's category (``schemas/codes/folds.csv``)."""
    text = resources.files("schemas").joinpath("codes", "folds.csv").read_text(encoding="utf-8")
    return {
        row["code"]: row["category"] for row in csv.DictReader(text.splitlines()) if row["table"] == table
    }


@cache
def _spellings(table: str) -> dict[str, str]:
    """Every accepted spelling of ``table``'s codes (case-folded) -> code.

    Names of finer sub-categories (初婚, 大学本科毕业) map to their category
    without a warning: the clerk's meaning is plain.
    """
    spellings = {spelling.casefold(): code for spelling, code in code_table(table).synonyms.items()}
    text = resources.files("schemas").joinpath("codes", "folds.csv").read_text(encoding="utf-8")
    for row in csv.DictReader(text.splitlines()):
        if row["table"] == table and row["name"]:
            spellings.setdefault(row["name"].casefold(), row["category"])
    return spellings


def recognise_code(value: str, table: str, *, split: bool = True) -> tuple[str, bool]:
    """The code ``value`` stands for in ``table`` and whether a sub-code was folded.

    ``value`` is already cleaned (no spaces, half-width).  An unknown value
    comes back unchanged, for validation to report.  With ``split``, a value
    that is a code and a name ("01汉族", "汉族(01)") is recognised when both
    parts stand for the same code.
    """
    if not value:
        return value, False
    spellings = _spellings(table)
    excel_integer = _EXCEL_INTEGER.fullmatch(value)
    candidate = excel_integer.group(1) if excel_integer else value
    if table in ZERO_PADDED_TABLES and len(candidate) == 1 and candidate.isdigit():
        candidate = "0" + candidate
    if candidate.casefold() in spellings:
        return spellings[candidate.casefold()], False
    if candidate in _folds(table):
        return _folds(table)[candidate], True
    if table == "occupation":
        detail = _OCCUPATION_DETAIL.fullmatch(candidate.upper())
        if detail:
            return (detail.group(1) or detail.group(2)), True
    for pattern, code_group, name_group in ((_CODE_AND_NAME, 1, 2), (_NAME_AND_CODE, 2, 1)) if split else ():
        both = pattern.fullmatch(candidate)
        if both:  # "01汉族", "1-男", "汉族(01)": code and name that agree
            # Each part is a code or a name, not split again: splitting "aaaa…(" two letters at a
            # time went as deep as the cell is long (RecursionError, and time squared in its length).
            code, _ = recognise_code(both.group(code_group), table, split=False)
            name, _ = recognise_code(both.group(name_group), table, split=False)
            if code == name and code in code_table(table):
                return code, False
    return value, False


def normalise_codes(values: pd.Series, table: str) -> tuple[pd.Series, np.ndarray]:
    """Codes for a whole column, and a boolean mask of the rows whose sub-code was folded."""
    no_fold = np.zeros(len(values), dtype=bool)
    if all_empty(values):
        return values, no_fold
    encoded = pc.dictionary_encode(to_arrow(values))
    spelled = clean_text(to_series(encoded.dictionary, pd.RangeIndex(len(encoded.dictionary))))
    recognised = [recognise_code(value, table) for value in spelled]
    codes = pa.array([code for code, _ in recognised], type=pa.large_string())
    if codes.equals(encoded.dictionary):
        return values, no_fold
    folded = np.array([was_folded for _, was_folded in recognised], dtype=bool)
    if folded.any():
        no_fold = folded[encoded.indices.to_numpy(zero_copy_only=False)]
    rebuilt = pa.DictionaryArray.from_arrays(encoded.indices, codes).cast(pa.large_string())
    return to_series(rebuilt, values.index), no_fold


# --- the whole frame -------------------------------------------------------------


def _cleaner(column: str) -> Callable[[pd.Series], pd.Series]:
    """The cleaning of a (non-code) input column."""
    if column == "xm":
        return clean_name
    if column in NUMBER_COLUMNS:
        return clean_number
    if column == "brdh":
        return clean_phones
    if column in DATE_COLUMNS:
        return clean_dates
    if column in FREE_TEXT_COLUMNS:
        return clean_text
    return lambda values: per_distinct(values, clean_text)


def _clean_column(column: str, values: pd.Series) -> tuple[pd.Series, np.ndarray | None]:
    """One input column cleaned; for a code column also the mask of rows whose sub-code was folded."""
    if column in FIELD_TABLES:
        return normalise_codes(values, FIELD_TABLES[column])
    return _cleaner(column)(values), None


#: Each column's cleaning of values seen before (cleaned text, sub-code folded), for the few rows of an edit.
_CLEANED: ValueMemo[tuple[str, bool]] = ValueMemo()


def _clean_remembered(column: str, values: pd.Series) -> tuple[pd.Series, np.ndarray | None]:
    """:func:`_clean_column` of a few rows, from :data:`_CLEANED` when it has seen every value."""
    written = values.tolist()
    known = _CLEANED.known(column, written)
    if known is None:
        cleaned, folded = _clean_column(column, values)
        marks = folded.tolist() if folded is not None else [False] * len(written)
        _CLEANED.remember(column, written, zip(cleaned.tolist(), marks, strict=True))
        return cleaned, folded
    texts = [text for text, _ in known]
    cleaned = values if texts == written else pd.Series(texts, index=values.index, dtype="str")
    if column not in FIELD_TABLES:
        return cleaned, None
    return cleaned, np.array([was_folded for _, was_folded in known], dtype=bool)


def _clean_columns(text: pd.DataFrame) -> tuple[dict[str, pd.Series], dict[str, np.ndarray]]:
    """Every column cleaned (codes recognised), and per code column the rows whose sub-code was folded.

    Columns are independent and their work is in Arrow kernels and numpy,
    which release the GIL: they are cleaned side by side, a thread per core.
    """

    def clean(column: str) -> tuple[pd.Series, np.ndarray | None]:
        return _clean_column(column, text[column])

    if len(text) < SMALL_FRAME_ROWS:  # a few rows (one edited row): threads would only wait on each other
        results = {column: _clean_remembered(column, text[column]) for column in INPUT_FIELDS}
    else:
        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            results = dict(zip(INPUT_FIELDS, pool.map(clean, INPUT_FIELDS), strict=True))
    cleaned = {column: values for column, (values, _) in results.items()}
    folded = {column: mask for column, (_, mask) in results.items() if mask is not None}
    return cleaned, folded


def _as_text(fields: pd.DataFrame) -> pd.DataFrame:
    missing = [column for column in INPUT_FIELDS if column not in fields]
    if missing:
        raise ValueError(f"normalise() needs every input field; missing: {', '.join(missing)}")
    # One frame-wide conversion: per column it cost ~0.1 ms each, most of an edited row's normalisation.
    return fields[list(INPUT_FIELDS)].fillna("").astype("str")


def _warnings(row_ids: np.ndarray, field: str, code: ResultCode, messages: pd.Series) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"row_id": row_ids.astype(np.int64), "field": field, "code": int(code), "severity": "warning"}
    )
    frame["message"] = messages.reset_index(drop=True)
    return frame


def _fold_warnings(
    text: pd.DataFrame, rows: dict[str, pd.Series], folded: dict[str, np.ndarray], notes: list[pd.DataFrame]
) -> None:
    for field in FIELD_TABLES:
        if folded[field].any():
            written = per_distinct(text[field][folded[field]], clean_text)
            messages = warning_messages("fold", field, written, rows[field][folded[field]])
            # The code the sub-code would have drawn had it not been recognised.
            code = rule_for(field).code
            notes.append(_warnings(text.index.to_numpy()[folded[field]], field, code, messages))


def _upgrade(array: pa.Array) -> pa.Array:
    return to_arrow(idnumber.upgrade_15_to_18_series(to_series(array, pd.RangeIndex(len(array)))))


def _upgrade_short_ids(rows: dict[str, pd.Series], notes: list[pd.DataFrame]) -> None:
    ids = rows["sfzhm"]
    exact, matrix = fixed_width(to_arrow(ids), 15)
    fifteen = np.zeros(len(ids), dtype=bool)
    fifteen[exact] = all_digits(matrix)
    if not fifteen.any():
        return
    upgraded = rewrite_where(ids, fifteen, _upgrade)
    messages = warning_messages("upgrade", "sfzhm", ids[fifteen], upgraded[fifteen])
    notes.append(_warnings(ids.index.to_numpy()[fifteen], "sfzhm", ResultCode.INVALID_ID_NUMBER, messages))
    same_document = fifteen & (rows["zjhm"] == ids).to_numpy(dtype=bool)
    rows["zjhm"] = where(same_document, upgraded, rows["zjhm"])
    rows["sfzhm"] = upgraded


def _derive_from_id(rows: dict[str, pd.Series], today: datetime.date) -> None:
    ids = rows["sfzhm"]
    missing = empty_mask(rows["csrq"]) | empty_mask(rows["xb"])
    if missing.any():
        birth, gender = idnumber.birth_dates_and_genders(ids, today)
        rows["csrq"] = fill_empty(rows["csrq"], birth)
        rows["xb"] = fill_empty(rows["xb"], gender)
    rows["zjlx"] = fill_empty(rows["zjlx"], "01")
    rows["zjhm"] = fill_empty(rows["zjhm"], ids)


def _split_address(rows: dict[str, pd.Series]) -> None:
    has_address = ~empty_mask(rows[ADDRESS_FIELD])
    if not has_address.any():
        return
    parts = split_addresses(rows[ADDRESS_FIELD][has_address])
    for part in ADDRESS_PARTS:
        split = parts[part].reindex(rows[part].index, fill_value="").astype("str")
        rows[part] = fill_empty(rows[part], split)


def default_problem(defaults: DefaultValues) -> str:
    """What is wrong with the configured defaults, as one Chinese sentence ("" if nothing).

    A default issue date that is no date would fail every row with 10128, the
    fault blamed on the register: the configuration is what is wrong.
    """
    fksj = defaults.fksj.strip()
    if fksj and parse_date(fksj) is None:
        return f"配置项 [defaults] fksj 应为日期（如 20261129 或 2026-11-29）或留空，实际为 {fksj!r}"
    return ""


def _apply_defaults(rows: dict[str, pd.Series], defaults: DefaultValues, today: datetime.date) -> None:
    issue_date = (parse_date(defaults.fksj) or defaults.fksj) if defaults.fksj else today.strftime("%Y%m%d")
    address_type = recognise_code(defaults.dzlb.strip(), FIELD_TABLES["dzlb"])[0]
    for field, default in (
        ("dzsf", defaults.dzsf), ("dzs", defaults.dzs), ("orgCode", defaults.org_code), ("klx", defaults.klx),
        ("isRealName", defaults.is_real_name), ("dzlb", address_type), ("fksj", issue_date),
    ):  # fmt: skip
        if default.strip():
            rows[field] = fill_empty(rows[field], default.strip())


def normalise(
    fields: pd.DataFrame, defaults: DefaultValues, today: datetime.date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalise every row of a run.

    ``fields`` has every :data:`~pipeline.model.INPUT_FIELDS` column as text
    (``""`` for empty), indexed by ``row_id``.  Returns the rows with exactly
    :data:`~pipeline.model.FIELDS` columns (same index) and a frame of
    warnings (:data:`~pipeline.model.FAULT_COLUMNS`, severity ``warning``,
    sorted by ``row_id``).
    """
    text = _as_text(fields)
    rows, folded = _clean_columns(text)
    notes: list[pd.DataFrame] = []
    _fold_warnings(text, rows, folded, notes)
    _upgrade_short_ids(rows, notes)
    _derive_from_id(rows, today)
    _split_address(rows)
    _apply_defaults(rows, defaults, today)

    if notes:
        warnings = pd.concat(notes, ignore_index=True)
        order = np.argsort(warnings["row_id"].to_numpy(), kind="stable")
        warnings = warnings.take(order).reset_index(drop=True)
        warnings = warnings.astype({"row_id": np.int64, "code": np.int64})[list(FAULT_COLUMNS)]
    else:
        warnings = no_faults()
    return pd.DataFrame({field: rows[field] for field in FIELDS}, index=text.index), warnings
