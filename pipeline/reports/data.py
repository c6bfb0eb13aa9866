"""What the reports say about each row and each fault, computed once as columns.

Every report (results.xlsx, results.csv, errors.xlsx, the annotated copies and
the summary) reads the same :class:`ReportData` of each batch of the run, so
they cannot disagree; what they say of the run as a whole (rows per file, per
status, per result code) is a :class:`Tally` added up batch by batch.
Everything here is vectorised: a run of a million rows costs a few array
operations per batch, not a million Python calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.messages import fault_fix, fault_title
from pipeline.model import (
    ADDRESS_FIELD,
    ADDRESS_PARTS,
    BAD_STATUSES,
    FIELD_LABELS,
    INPUT_FIELDS,
    STATUS_INVALID,
    STATUS_REJECTED,
    STATUS_VALID,
    Batch,
)
from pipeline.text.arrow import spread, text_array
from pipeline.text.joins import join_texts_by_key
from schemas.result_codes import describe, field_pairs

ERROR = "error"
WARNING = "warning"
MESSAGE_SEPARATOR = "；"

#: What a clerk does about a warning (the code's own hint is about its error).
WARNING_HINT = "无需处理，仅供核对"


def text_of(frame: pd.DataFrame, column: str, length: int) -> np.ndarray:
    """A frame's column as an object array of str ("" for missing), or all "" when absent."""
    if column not in frame.columns:
        return np.full(length, "", dtype=object)
    series = frame[column]
    values = series.to_numpy(dtype=object, na_value="")
    if not (pd.api.types.is_string_dtype(series.dtype) or series.dtype == object):
        values = np.array([str(v) for v in values], dtype=object)
    return values


def column_of(frame: pd.DataFrame, column: str, length: int) -> pa.Array:
    """A frame's column as Arrow text, or all "" when absent (the bulk path: no Python objects)."""
    if column not in frame.columns:
        return pa.repeat(pa.scalar("", pa.large_string()), length)
    return text_array(frame[column])


def whole_numbers(values: np.ndarray) -> pa.Array:
    """Integers (row numbers, counts) as an int64 array, null where unknown (NaN)."""
    floats = np.asarray(values, dtype=float)
    return pa.array(np.nan_to_num(floats).astype(np.int64), pa.int64(), mask=np.isnan(floats))


def aligned(frame: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """``frame`` on ``index``, copied only when it is not already."""
    return frame if frame.index.equals(index) else frame.reindex(index)


def extra_columns(extras: pd.DataFrame, index: pd.Index) -> list[tuple[str, pa.Array]]:
    """The clerk's unrecognised columns aligned on ``index``: (header, Arrow text) in order."""
    frame = aligned(extras, index) if len(extras.columns) else extras
    return [(str(name), text_array(frame.iloc[:, i])) for i, name in enumerate(frame.columns)]


def relabel_text(values: pa.Array, labels: dict[str, str]) -> pa.Array:
    """Each value mapped through ``labels`` (unknown values kept), looked up once per distinct value."""
    encoded = pc.dictionary_encode(values)
    names = [labels.get(str(v), str(v)) for v in encoded.dictionary.to_pylist()]
    return pa.DictionaryArray.from_arrays(encoded.indices, pa.array(names, pa.large_string())).cast(
        pa.large_string()
    )


def relabel(values: np.ndarray, labels: dict[str, str]) -> np.ndarray:
    """Map each value through ``labels`` (unknown values kept), hashing the distinct values only."""
    codes, uniques = pd.factorize(values)
    mapped = np.array([labels.get(u, u) for u in uniques] + [""], dtype=object)
    return mapped[codes]


def _field_order(fields: np.ndarray) -> np.ndarray:
    position = {name: i for i, name in enumerate(INPUT_FIELDS)}
    return np.array([position.get(f, -1) for f in fields], dtype=np.int64)


@dataclass
class ReportData:
    """A batch seen by the reports: statuses, messages and fault lines, aligned on ``row_id``.

    ``extra_names`` are the clerk's unrecognised columns the reports show (the
    run's, which may be more than this batch's tables have; default: the
    batch's own).
    """

    batch: Batch
    submitted: bool
    extra_names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        batch = self.batch
        self.rows = batch.rows if batch.rows.index.is_monotonic_increasing else batch.rows.sort_index()
        self.n = len(self.rows)
        self.outcome = aligned(batch.outcome, self.rows.index)
        self.faults = self._clean_faults(batch.faults)

    # -- faults -------------------------------------------------------------------------------------
    def _clean_faults(self, faults: pd.DataFrame) -> pd.DataFrame:
        """Faults with typed columns and positions (``pos``) into the row arrays, by code, row, field."""
        n_faults = len(faults)
        row_ids = pd.to_numeric(faults.get("row_id", pd.Series(dtype=int)), errors="coerce").to_numpy()
        pos = self.rows.index.get_indexer(pd.Index(row_ids)) if n_faults else np.array([], dtype=np.int64)
        frame = pd.DataFrame(
            {
                "pos": pos,
                "field": text_of(faults, "field", n_faults),
                "code": pd.to_numeric(faults.get("code", pd.Series(dtype=int)), errors="coerce")
                .fillna(0)
                .astype(np.int64)
                .to_numpy(),
                "severity": np.where(text_of(faults, "severity", n_faults) == WARNING, WARNING, ERROR),
                "message": text_of(faults, "message", n_faults),
            }
        )
        frame = frame[frame["pos"] >= 0]
        # Sorted by code, then row, then column position: the order of errors.xlsx.
        order = np.lexsort(
            (_field_order(frame["field"].to_numpy()), frame["pos"].to_numpy(), frame["code"].to_numpy())
        )
        return frame.iloc[order].reset_index(drop=True)

    @cached_property
    def errors(self) -> pd.DataFrame:
        """Faults of severity error (local and platform), by code then row."""
        return self.faults[self.faults["severity"] == ERROR].reset_index(drop=True)

    @cached_property
    def warnings(self) -> pd.DataFrame:
        """Warnings (never make a row invalid), by code then row."""
        return self.faults[self.faults["severity"] == WARNING].reset_index(drop=True)

    # -- per row ------------------------------------------------------------------------------------
    #
    # Each column is built in Arrow (the ``*_text`` properties); the numpy object arrays are the same
    # values for callers that want them.  Only the rows with a fault or a message are touched in Python.

    @cached_property
    def status_text(self) -> pa.Array:
        """Status of each row; without an outcome, ``invalid`` where an error fault exists."""
        status = column_of(self.outcome, "status", self.n)
        missing = np.asarray(pc.equal(status, "").to_numpy(zero_copy_only=False), dtype=bool)
        if missing.any():
            has_error = np.zeros(self.n, dtype=bool)
            has_error[self.errors["pos"].to_numpy()] = True
            filled = np.where(has_error, STATUS_INVALID, STATUS_VALID)
            status = pc.if_else(pa.array(missing), pa.array(filled, pa.large_string()), status)
        return status

    @cached_property
    def status(self) -> np.ndarray:
        """:attr:`status_text` as an object array."""
        return np.asarray(self.status_text.to_numpy(zero_copy_only=False), dtype=object)

    @cached_property
    def _status_codes(self) -> tuple[np.ndarray, list[str]]:
        """Each row's status as an index into the distinct statuses (in order of first appearance)."""
        encoded = pc.dictionary_encode(self.status_text)
        return encoded.indices.to_numpy(zero_copy_only=False), [
            str(s) for s in encoded.dictionary.to_pylist()
        ]

    @cached_property
    def statuses_present(self) -> list[str]:
        """The distinct statuses of the run, in order of first appearance."""
        return self._status_codes[1]

    @cached_property
    def bad(self) -> np.ndarray:
        """Rows that did not get through (invalid, rejected, failed)."""
        codes, statuses = self._status_codes
        return np.array([s in BAD_STATUSES for s in statuses] + [False], dtype=bool)[codes]

    @cached_property
    def has_warning(self) -> np.ndarray:
        """Rows with at least one warning."""
        flags = np.zeros(self.n, dtype=bool)
        flags[self.warnings["pos"].to_numpy()] = True
        return flags

    @cached_property
    def result_code_text(self) -> pa.Array:
        """The codes of each row, joined by ``;`` (the outcome's, else from its error faults)."""
        if "result_code" in self.outcome.columns or not len(self.errors):
            return column_of(self.outcome, "result_code", self.n)
        codes = pa.array(self.errors["code"].to_numpy(dtype=np.int64))
        keys, joined = join_texts_by_key(
            self.errors["pos"].to_numpy(), pc.cast(codes, pa.large_string()), ";"
        )
        return spread(self.n, keys, joined)

    @cached_property
    def result_codes(self) -> np.ndarray:
        """:attr:`result_code_text` as an object array."""
        return np.asarray(self.result_code_text.to_numpy(zero_copy_only=False), dtype=object)

    @cached_property
    def message_text(self) -> pa.Array:
        """Chinese explanation of each row: its faults (errors then warnings), then the outcome's message.

        The outcome's own message is added where faults do not already tell the
        story: for rows sent to the platform (enrolled, already enrolled,
        failed), and for any row that has no fault text at all.
        """
        has_text = np.zeros(self.n, dtype=bool)
        texts = pa.repeat(pa.scalar("", pa.large_string()), self.n)
        faults = self.faults
        if len(faults):
            pos, codes = faults["pos"].to_numpy(dtype=np.int64), faults["code"].to_numpy(dtype=np.int64)
            warning = faults["severity"].to_numpy() == WARNING
            by_row = np.lexsort((codes, warning, pos))  # stable: errors before warnings, then by code
            lines = fault_text_array(
                codes[by_row], warning[by_row], text_array(faults["message"]).take(by_row)
            )
            keys, joined = join_texts_by_key(pos[by_row], lines, MESSAGE_SEPARATOR)
            texts = spread(self.n, keys, joined)
            has_text[keys] = True
        outcome_message = column_of(self.outcome, "message", self.n)
        with_message = np.asarray(
            pc.not_equal(outcome_message, "").to_numpy(zero_copy_only=False), dtype=bool
        )
        codes, statuses = self._status_codes
        unsent = {STATUS_VALID, STATUS_INVALID, STATUS_REJECTED}
        sent = np.array([s not in unsent for s in statuses] + [False], dtype=bool)[codes]
        candidates = np.flatnonzero(with_message & (sent | ~has_text))
        if len(candidates):
            taken = pa.array(candidates)
            extra = np.asarray(outcome_message.take(taken).to_numpy(zero_copy_only=False), dtype=object)
            own = np.asarray(texts.take(taken).to_numpy(zero_copy_only=False), dtype=object)
            differs = extra != own
            if differs.any():
                both = own[differs] != ""
                changed = np.where(both, own[differs] + MESSAGE_SEPARATOR + extra[differs], extra[differs])
                replaced = np.zeros(self.n, dtype=bool)
                replaced[candidates[differs]] = True
                texts = pc.if_else(pa.array(replaced), spread(self.n, candidates[differs], changed), texts)
        return texts

    @cached_property
    def messages(self) -> np.ndarray:
        """:attr:`message_text` as an object array."""
        return np.asarray(self.message_text.to_numpy(zero_copy_only=False), dtype=object)

    @cached_property
    def extras(self) -> list[tuple[str, pa.Array]]:
        """The clerk's unrecognised columns on the batch's rows: (header, Arrow text), "" where absent."""
        found = dict(extra_columns(self.batch.extras, self.rows.index))
        names = list(found) if self.extra_names is None else list(self.extra_names)
        blank = pa.repeat(pa.scalar("", pa.large_string()), self.n)
        return [(name, found.get(name, blank)) for name in names]

    @cached_property
    def sections(self) -> tuple[list[tuple[str, str, str]], np.ndarray]:
        """(path, file name, sheet) of each table the rows come from, and each row's index into that list."""
        if self.table_of_row is not None:
            keys = [(t.raw.path, t.raw.file_name, t.raw.sheet) for t in self.batch.tables]
            return keys, self.table_of_row
        files = text_of(self.rows, "source_file", self.n)
        sheets = text_of(self.rows, "source_sheet", self.n)
        codes, uniques = pd.factorize(pd.MultiIndex.from_arrays([files, sheets]), sort=False)
        return [(str(f), str(f), str(s)) for f, s in uniques], np.asarray(codes)

    @cached_property
    def source_row(self) -> np.ndarray:
        """Row numbers as the clerk sees them (float, NaN where unknown)."""
        column = self.rows.get("source_row")
        if column is not None and pd.api.types.is_integer_dtype(column.dtype):
            return column.to_numpy(dtype=np.float64, na_value=np.nan)  # no round trip through text
        text = self.source_row_text
        try:
            return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return pd.to_numeric(pd.Series(text.to_numpy(zero_copy_only=False)), errors="coerce").to_numpy()

    @cached_property
    def source_row_text(self) -> pa.Array:
        """Row numbers as results.csv writes them (Arrow text, "" where unknown)."""
        return column_of(self.rows, "source_row", self.n)

    # -- tables -------------------------------------------------------------------------------------
    @cached_property
    def table_of_row(self) -> np.ndarray | None:
        """Index into ``batch.tables`` of each row, or None when the tables do not cover the rows."""
        ranges = self.batch.table_rows
        if not ranges or sum(len(r) for r in ranges) != self.n:
            return None
        index = np.full(self.n, -1, dtype=np.int64)
        ids = self.rows.index.to_numpy()
        for i, span in enumerate(ranges):
            index[(ids >= span.start) & (ids < span.stop)] = i
        return None if (index < 0).any() else index

    def fault_lines(self, faults: pd.DataFrame) -> dict[str, pa.Array]:
        """errors.xlsx lines for ``faults`` as Arrow columns: code, file, sheet, row, the clerk's column,
        original value, message and hint (built in Arrow: no Python object per line)."""
        pos = faults["pos"].to_numpy(dtype=np.int64)
        codes = faults["code"].to_numpy(dtype=np.int64)
        field_codes, field_names = pd.factorize(faults["field"].to_numpy(dtype=object))
        names = [str(name) for name in field_names]
        column, original = self._clerk_columns(pos, field_codes, names)
        messages = text_array(faults["message"])
        blank = np.asarray(pc.equal(messages, "").to_numpy(zero_copy_only=False), dtype=bool)
        if blank.any():  # a platform fault without a message: the code's own description
            filled = messages.to_numpy(zero_copy_only=False).astype(object)
            filled[blank] = [describe(int(c)) for c in codes[blank]]
            messages = text_array(filled)
        warning = faults["severity"].to_numpy() == WARNING
        # (code, field, warning) as one number: the hints are looked up once per distinct key.
        keys = (codes * (len(names) + 1) + field_codes) * 2 + warning
        key_codes, uniques = pd.factorize(keys)
        fixes = [
            fault_fix(int(key) // 2 // (len(names) + 1), names[int(key) // 2 % (len(names) + 1)],
                      warning=bool(key % 2))
            for key in uniques
        ]  # fmt: skip
        return {
            "code": pa.array(codes, pa.int64()),
            "file": column_of(self.rows, "source_file", self.n).take(pa.array(pos)),
            "sheet": column_of(self.rows, "source_sheet", self.n).take(pa.array(pos)),
            "row": whole_numbers(self.source_row[pos]),
            "column": column,
            "original": original,
            "message": messages,
            "hint": pa.array(fixes, pa.large_string()).take(pa.array(key_codes, pa.int64())),
        }

    def _clerk_columns(
        self, pos: np.ndarray, field_codes: np.ndarray, names: list[str]
    ) -> tuple[pa.Array, pa.Array]:
        """For each fault: the header it came from in the clerk's sheet and the value as written.

        ``field_codes`` index ``names``, the faults' fields.  A field the sheet
        lacks is reported on the column its cell is marked on in the annotated
        copy, the ID number's (with that column's value), so a fault is never
        listed under a column the clerk does not have; the address parts point
        at the full-address column.  With no ID column either, the field's
        Chinese label names it.
        """
        tables = self.table_of_row
        where = np.zeros(len(pos), dtype=np.int64) if tables is None else tables[pos]
        # One group per (table, field): each looks its header up once and takes its values in one go.
        groups, group_keys = pd.factorize(where * len(names) + field_codes)
        headers: list[str] = []
        picked: list[np.ndarray] = []
        taken: list[pa.Array] = []
        originals = aligned(self.batch.original, self.rows.index)
        for group, key in enumerate(group_keys):
            table_number, field = divmod(int(key), len(names))
            name = names[field]
            header, source = FIELD_LABELS.get(name, name), name
            if tables is not None and name:
                field_headers = self.batch.tables[table_number].field_headers
                found, source = source_column(field_headers, name)
                if not found:
                    found, source = source_column(field_headers, "sfzhm")
                header = found or header
            headers.append(header if name else "")
            if name:
                at = np.flatnonzero(groups == group)
                picked.append(at)
                taken.append(column_of(originals, source, self.n).take(pa.array(pos[at])))
        column = pa.array(headers, pa.large_string()).take(pa.array(groups, pa.int64()))
        original = pa.repeat(pa.scalar("", pa.large_string()), len(pos))
        if taken:
            at = np.concatenate(picked)
            values = pa.concat_arrays([*taken, pa.repeat(pa.scalar("", pa.large_string()), 1)])
            # Each fault's value sits where its group put it; a fault of no field takes the "" at the end.
            place = np.full(len(pos), len(at), dtype=np.int64)
            place[at] = np.arange(len(at))
            original = values.take(pa.array(place))
        return column, original


@dataclass
class Tally:
    """What the reports count over a whole run, added up batch by batch in input order.

    Sections are the tables read (a file, or a workbook's sheet), keyed by
    path and sheet, in order of first appearance.
    """

    keys: list[tuple[str, str, str]] = dataclass_field(default_factory=list)  # (path, file name, sheet)
    rows: list[int] = dataclass_field(default_factory=list)
    by_status: list[Counter[str]] = dataclass_field(default_factory=list)
    rows_by_code: list[Counter[int]] = dataclass_field(default_factory=list)  # rows with an error of the code
    #: per section, rows with an error of each problem (code, field: see :func:`problem_keys`)
    rows_by_problem: list[Counter[tuple[int, str]]] = dataclass_field(default_factory=list)
    #: per problem (warning, code, field): [faults, rows]
    problems: dict[tuple[bool, int, str], list[int]] = dataclass_field(default_factory=dict)
    errors_by_code: Counter[int] = dataclass_field(default_factory=Counter)  # error lines per code
    warnings_by_code: Counter[int] = dataclass_field(default_factory=Counter)
    statuses_present: list[str] = dataclass_field(default_factory=list)
    n: int = 0

    def _section(self, key: tuple[str, str, str]) -> int:
        try:
            return self.keys.index(key)
        except ValueError:
            self.keys.append(key)
            self.rows.append(0)
            self.by_status.append(Counter())
            self.rows_by_code.append(Counter())
            self.rows_by_problem.append(Counter())
            return len(self.keys) - 1

    def add(self, data: ReportData) -> None:
        """Count the rows and faults of one batch."""
        keys, section = data.sections
        local = np.array([self._section(key) for key in keys] or [0], dtype=np.int64)
        status_code, statuses = data._status_codes
        self.statuses_present += [s for s in statuses if s not in self.statuses_present]
        if data.n:
            width = max(len(statuses), 1)
            counts = np.bincount(
                np.asarray(section, dtype=np.int64) * width + status_code, minlength=len(keys) * width
            ).reshape(len(keys), width)
            for k in range(len(keys)):
                target = int(local[k])
                self.rows[target] += int(counts[k].sum())
                for j, status in enumerate(statuses):
                    if counts[k, j]:
                        self.by_status[target][str(status)] += int(counts[k, j])
        distinct = data.errors.drop_duplicates(["pos", "code"])
        if len(distinct):
            where = local[np.asarray(section)[distinct["pos"].to_numpy()]]
            keys = where * (1 << 32) + distinct["code"].to_numpy(dtype=np.int64)
            pairs, counts_of_pairs = np.unique(keys, return_counts=True)
            for pair, count in zip(pairs.tolist(), counts_of_pairs.tolist(), strict=True):
                self.rows_by_code[pair >> 32][pair & 0xFFFFFFFF] += count
        self._add_problems(data, local, np.asarray(section))
        self.errors_by_code.update(_counts_of(data.errors["code"]))
        self.warnings_by_code.update(_counts_of(data.warnings["code"]))
        self.n += data.n

    def _add_problems(self, data: ReportData, local: np.ndarray, section: np.ndarray) -> None:
        keys = problem_keys(data.faults)
        if not len(keys):
            return
        grouped = keys.groupby(["warning", "code", "field"], sort=False)["pos"].agg(["size", "nunique"])
        for key, faults, rows in zip(grouped.index, grouped["size"], grouped["nunique"], strict=True):
            warning, code, field = key
            totals = self.problems.setdefault((bool(warning), int(code), str(field)), [0, 0])
            totals[0] += int(faults)
            totals[1] += int(rows)
        errors = keys[~keys["warning"]].drop_duplicates(["pos", "code", "field"])
        if len(errors):
            where = local[section[errors["pos"].to_numpy()]]
            per_section = (
                errors.assign(section=where).groupby(["section", "code", "field"], sort=False).size()
            )
            for key, rows in zip(per_section.index, per_section.to_numpy(), strict=True):
                target, code, field = key
                self.rows_by_problem[int(target)][(int(code), str(field))] += int(rows)

    def merge(self, other: Tally) -> None:
        """Add the counts of ``other`` (the batches after this tally's, counted apart)."""
        for k, key in enumerate(other.keys):
            target = self._section(key)
            self.rows[target] += other.rows[k]
            self.by_status[target].update(other.by_status[k])
            self.rows_by_code[target].update(other.rows_by_code[k])
            self.rows_by_problem[target].update(other.rows_by_problem[k])
        for problem, (faults, rows) in other.problems.items():
            totals = self.problems.setdefault(problem, [0, 0])
            totals[0] += faults
            totals[1] += rows
        self.errors_by_code.update(other.errors_by_code)
        self.warnings_by_code.update(other.warnings_by_code)
        self.statuses_present += [s for s in other.statuses_present if s not in self.statuses_present]
        self.n += other.n

    @property
    def faults(self) -> int:
        """Fault lines of the run (errors and warnings)."""
        return sum(self.errors_by_code.values()) + sum(self.warnings_by_code.values())

    @property
    def bad_rows(self) -> int:
        """Rows that did not get through."""
        return sum(c for counter in self.by_status for s, c in counter.items() if s in BAD_STATUSES)

    def counts(self) -> dict[str, Any]:
        """The run's counts, JSON-ready (see :func:`pipeline.reports.summary.summary_counts`)."""
        total: Counter[str] = Counter()
        for statuses in self.by_status:
            total.update(statuses)
        by_code: Counter[int] = Counter()
        for codes in self.rows_by_code:
            by_code.update(codes)
        return {
            "files": [
                {
                    "file": name,
                    "sheet": sheet,
                    "rows": self.rows[i],
                    "by_status": _sorted_counts(self.by_status[i]),
                }
                for i, (_, name, sheet) in enumerate(self.keys)
            ],
            "rows": self.n,
            "by_status": _sorted_counts(total),
            "by_code": {str(code): count for code, count in sorted(by_code.items()) if count},
            "warnings_by_code": {
                str(code): count for code, count in sorted(self.warnings_by_code.items()) if count
            },
            "problems": [
                {"code": code, "field": field, "warning": warning, "faults": faults, "rows": rows,
                 "title": fault_title(code, field, warning=warning)}
                for (warning, code, field), (faults, rows) in sorted(self.problems.items())
            ],
        }  # fmt: skip


def problem_keys(faults: pd.DataFrame) -> pd.DataFrame:
    """Each fault's problem: ``code``, ``field`` (where the code has texts per field, else ""), warning.

    ``faults`` are cleaned by :class:`ReportData` (``pos``, ``field``, ``code``, ``severity``); a
    warning is always keyed by its field (it is titled by what happened to it).
    """
    codes = faults["code"].to_numpy(dtype=np.int64)
    fields = faults["field"].to_numpy(dtype=object)
    warning = faults["severity"].to_numpy() == WARNING
    own = field_pairs()
    pairs = zip(codes, fields, warning, strict=True)
    keyed = np.array([f if w or (int(c), f) in own else "" for c, f, w in pairs] or [], dtype=object)
    return pd.DataFrame({"pos": faults["pos"].to_numpy(), "code": codes, "field": keyed, "warning": warning})


def _counts_of(codes: pd.Series) -> dict[int, int]:
    if not len(codes):
        return {}
    found, counted = np.unique(codes.to_numpy(dtype=np.int64), return_counts=True)
    return dict(zip(found.tolist(), counted.tolist(), strict=True))


def _sorted_counts(counter: Counter[str]) -> dict[str, int]:
    return {key: counter[key] for key in sorted(counter) if counter[key]}


def source_column(field_headers: dict[str, str], field: str) -> tuple[str, str]:
    """(clerk's header, input field) a field's value came from; ("", field) if no column holds it."""
    if field in field_headers:
        return field_headers[field], field
    if field in ADDRESS_PARTS and ADDRESS_FIELD in field_headers:
        return field_headers[ADDRESS_FIELD], ADDRESS_FIELD
    return "", field


def fault_text_array(codes: np.ndarray, warning: np.ndarray, messages: pa.Array) -> pa.Array:
    """:func:`fault_texts` built in Arrow, from each fault's code, whether it is a warning, and message."""
    messages = text_array(messages)
    blank = np.asarray(pc.equal(messages, "").to_numpy(zero_copy_only=False), dtype=bool)
    if blank.any():  # a platform fault without a message: the code's own description
        filled = np.asarray(messages.to_numpy(zero_copy_only=False), dtype=object)
        filled[blank] = [describe(int(c)) for c in codes[blank]]
        messages = text_array(filled)
    prefixes = pa.array(["[", "[提示 "], pa.large_string())
    prefix = pa.DictionaryArray.from_arrays(pa.array(np.asarray(warning, dtype=np.int8)), prefixes)
    code_text = pc.cast(pa.array(np.asarray(codes, dtype=np.int64)), pa.large_string())
    empty = pa.scalar("", pa.large_string())
    return pc.binary_join_element_wise(
        prefix.cast(pa.large_string()), code_text, pa.scalar("] ", pa.large_string()), messages, empty
    )


def fault_texts(faults: pd.DataFrame) -> np.ndarray:
    """One Chinese line per fault: ``[10111] message`` for errors, ``[提示 10110] message`` for warnings."""
    lines = fault_text_array(
        faults["code"].to_numpy(dtype=np.int64),
        faults["severity"].to_numpy() == WARNING,
        text_array(faults["message"]),
    )
    return np.asarray(lines.to_numpy(zero_copy_only=False), dtype=object)
