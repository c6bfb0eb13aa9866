"""Synthetic residents: registers full of people who do not exist.

Names are drawn from common surname and given-name characters; ID numbers are
well formed (a real administrative division code, a real birth date, a sequence
whose parity matches the gender, a correct MOD 11-2 check character) but belong
to nobody we know of.  Faults of named kinds (:data:`FAULT_KINDS`) are injected
at chosen rows or at a rate, and the manifest says, per faulty row, which
platform result code the dry run must give.  Everything is vectorised numpy: a
million rows take a few seconds.

Values here are platform codes (``xb`` = ``1``); :mod:`bench.clerk` turns them
into what a clerk types (``男``) and writes CSV / xlsx registers::

    python -m bench.synth 1000 --out people.xlsx --fault-rate 0.05 --manifest faults.csv
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import places
from bench.residents import (
    CHECK_BYTES,
    clean_residents,
    dates_from_days,
    days_from_dates,
    epoch_days,
    id15_numbers,
    id_numbers,
    is_valid_check,
    make_unique,
    pick,
    sequences,
)
from pipeline.model import PEOPLE_FIELDS

__all__ = ["FAULT_KINDS", "FaultKind", "Synthetic", "generate", "id_numbers", "is_valid_check"]


@dataclass(frozen=True)
class FaultKind:
    """One way a row goes wrong, and the result code the dry run must give it (0: a warning only).

    ``also`` lists codes the same mistake rightly earns elsewhere in the row
    (a future birth date in the ID is, when the clerk typed it consistently,
    also a future 出生日期).
    """

    name: str
    code: int
    field: str
    description: str
    also: tuple[int, ...] = ()

    @property
    def result_codes(self) -> str:
        """Every code of a row with this fault, joined by ``;`` ("" for a warning only)."""
        return ";".join(str(c) for c in (self.code, *self.also) if c)


FAULT_KINDS: dict[str, FaultKind] = {k.name: k for k in (
    FaultKind("bad_check", 10111, "sfzhm", "ID check character wrong"),
    FaultKind("future_birth", 10111, "sfzhm", "ID birth date in the future (出生日期 too)", (10124,)),
    FaultKind("bad_division", 10111, "sfzhm", "ID division code that never existed"),
    FaultKind("short_id", 10111, "sfzhm", "ID number with a character missing"),
    FaultKind("id_as_number", 10111, "sfzhm", "ID stored by Excel as a number (digits lost)"),
    FaultKind("empty_name", 10114, "xm", "name empty"),
    FaultKind("unknown_ethnicity", 10123, "mzdm", "ethnicity not in GB 3304"),
    FaultKind("gender_mismatch", 10113, "xb", "gender contradicts the ID's sequence parity"),
    FaultKind("bad_gender", 10113, "xb", "gender not in GB/T 2261.1"),
    FaultKind("birth_mismatch", 10124, "csrq", "birth date differs from the ID's"),
    FaultKind("bad_birth_date", 10124, "csrq", "birth date not a real date"),
    FaultKind("bad_phone", 10110, "brdh", "phone number malformed"),
    FaultKind("duplicate_id", 10115, "sfzhm", "ID number of an earlier row again"),
    FaultKind("bad_payment", 10131, "ylfyzffs", "payment method not in CV07.10.003"),
    FaultKind("bad_marriage", 10132, "fyzhdm", "marital status not in GB/T 2261.2"),
    FaultKind("bad_education", 10133, "xldm", "education not in GB/T 4658"),
    FaultKind("bad_occupation", 10135, "zydm", "occupation not in GB/T 6565"),
    FaultKind("bad_document_type", 10134, "zjlx", "document type not in CV02.01.101"),
    FaultKind("id15", 0, "sfzhm", "15-digit ID: upgraded to 18 with a warning, row stays valid"),
)}  # fmt: skip

#: Wrong values a clerk really types, per kind (drawn at random).
_BAD_VALUES: dict[str, tuple[str, ...]] = {
    "unknown_ethnicity": ("穿青人", "汗族", "57", "00"),
    "bad_gender": ("3", "5", "其它"),
    "bad_phone": ("1381234567", "12345678901", "138123456789", "1590757"),
    "bad_payment": ("社保卡", "08", "农保", "10"),
    "bad_marriage": ("同居", "50", "分居"),
    "bad_education": ("幼儿园", "学龄前", "私塾"),
    "bad_occupation": ("Z", "退休", "学生"),
    "bad_document_type": ("10", "社保卡", "暂住证"),
    "empty_name": ("", "\u3000"),
}


@dataclass
class Synthetic:
    """Generated residents and where their faults are.

    ``columns``: :data:`PEOPLE_FIELDS` -> numpy string array, one value per
    resident (platform codes).  ``manifest``: ``row`` (0-based position),
    ``kind``, ``field``, ``code`` (0 for a warning-only kind), ``of_row`` (the
    row a duplicate copies, else -1) and ``result_codes`` (every code the row
    must get, ``;``-joined) of every injected fault, by row.
    """

    columns: dict[str, np.ndarray]
    manifest: pd.DataFrame

    def __len__(self) -> int:
        return len(self.columns["xm"])

    @cached_property
    def people(self) -> pd.DataFrame:
        """The residents as a text DataFrame (:data:`PEOPLE_FIELDS` columns)."""
        return pd.DataFrame({f: pd.array(self.columns[f], dtype="str") for f in PEOPLE_FIELDS})

    def set(self, row: int, field: str, value: str) -> None:
        """Overwrite one value (the column widens so nothing is cut)."""
        _put(self.columns, field, np.array([row]), value)
        self.__dict__.pop("people", None)

    @property
    def expected_codes(self) -> np.ndarray:
        """Per row, the result codes the dry run must give, joined by ``;`` ("" for a valid row)."""
        codes = np.full(len(self), "", dtype="U32")
        codes[self.manifest["row"].to_numpy()] = self.manifest["result_codes"].to_numpy(dtype=str)
        return codes


# --- faults ------------------------------------------------------------------


def _put(columns: dict[str, np.ndarray], field: str, rows: np.ndarray, values: np.ndarray | str) -> None:
    """Assign ``values`` to ``columns[field][rows]``, widening the string dtype so nothing is cut."""
    width = int(np.max(np.strings.str_len(np.asarray(values)), initial=0))
    if width > columns[field].dtype.itemsize // 4:
        columns[field] = columns[field].astype(f"U{width}")
    columns[field][rows] = values


@dataclass
class _Job:
    """What a fault injector works on: the columns, the ID parts of each row, the generator, today."""

    columns: dict[str, np.ndarray]
    parts: dict[str, np.ndarray]
    rng: np.random.Generator
    today: date

    def put(self, field: str, rows: np.ndarray, values: np.ndarray | str) -> None:
        _put(self.columns, field, rows, values)

    def reissue(self, rows: np.ndarray, division: np.ndarray, ymd: np.ndarray, fifteen: bool = False) -> None:
        """New ID numbers (distinct among ``rows``) and matching birth dates for ``rows``."""
        male = self.parts["male"][rows]
        sequence = make_unique(division, ymd, sequences(male, self.rng), male, self.rng)
        self.put("sfzhm", rows, (id15_numbers if fifteen else id_numbers)(division, ymd, sequence))
        self.put("csrq", rows, ymd.astype("U8"))


_Injector = Callable[[_Job, np.ndarray], None]


def _bad_check(job: _Job, rows: np.ndarray) -> None:
    ids = job.columns["sfzhm"][rows].astype("S18").view(np.uint8).reshape(-1, 18).copy()
    ordered = np.sort(CHECK_BYTES)
    ids[:, 17] = ordered[(np.searchsorted(ordered, ids[:, 17]) + job.rng.integers(1, 11, len(rows))) % 11]
    job.put("sfzhm", rows, ids.view("S18").ravel().astype("U18"))


def _future_birth(job: _Job, rows: np.ndarray) -> None:
    start = epoch_days(job.today) + 400
    job.reissue(
        rows, job.parts["division"][rows], dates_from_days(job.rng.integers(start, start + 3650, len(rows)))
    )


def _bad_division(job: _Job, rows: np.ndarray) -> None:
    no_such_province = 990000 + job.rng.integers(0, 10000, len(rows))
    job.reissue(rows, no_such_province, job.parts["ymd"][rows])


def _id15(job: _Job, rows: np.ndarray) -> None:
    born = job.rng.integers(epoch_days(date(1935, 1, 1)), epoch_days(date(1985, 12, 31)), len(rows))
    division = places.OLD_CODES[job.rng.integers(0, len(places.OLD_CODES), len(rows))]
    job.reissue(rows, division, dates_from_days(born), fifteen=True)


def _short_id(job: _Job, rows: np.ndarray) -> None:
    job.put("sfzhm", rows, np.strings.slice(job.columns["sfzhm"][rows], 0, 17))


def _id_as_number(job: _Job, rows: np.ndarray) -> None:
    # Excel keeps 15 significant digits of a number; an X cannot be a number, so it reads as 0 here.
    digits = np.char.replace(job.columns["sfzhm"][rows], "X", "0")
    job.put("sfzhm", rows, np.array([f"{float(v):.14E}" for v in digits.tolist()]))


def _gender_mismatch(job: _Job, rows: np.ndarray) -> None:
    job.put("xb", rows, np.where(job.parts["male"][rows], "2", "1"))


def _birth_mismatch(job: _Job, rows: np.ndarray) -> None:
    days = days_from_dates(job.parts["ymd"][rows]) - job.rng.integers(1, 3650, len(rows))
    job.put("csrq", rows, dates_from_days(days).astype("U8"))


def _bad_birth_date(job: _Job, rows: np.ndarray) -> None:
    thirtieth_of_february = job.parts["ymd"][rows] // 10000 * 10000 + 230
    job.put("csrq", rows, thirtieth_of_february.astype("U8"))


def _bad_value(kind: str) -> _Injector:
    def inject(job: _Job, rows: np.ndarray) -> None:
        job.put(FAULT_KINDS[kind].field, rows, pick(job.rng, list(_BAD_VALUES[kind]), len(rows)))

    return inject


_INJECTORS: dict[str, _Injector] = {
    "bad_check": _bad_check,
    "future_birth": _future_birth,
    "bad_division": _bad_division,
    "short_id": _short_id,
    "id_as_number": _id_as_number,
    "gender_mismatch": _gender_mismatch,
    "birth_mismatch": _birth_mismatch,
    "bad_birth_date": _bad_birth_date,
    "id15": _id15,
    **{kind: _bad_value(kind) for kind in _BAD_VALUES},
}


def _duplicate(
    columns: dict[str, np.ndarray], rows: np.ndarray, clean: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Copy an earlier clean row's ID (and matching gender and birth date) into ``rows``.

    Returns the rows done and the rows they copy.
    """
    earlier = np.searchsorted(clean, rows)  # how many clean rows come before each target
    done = rows[earlier > 0]
    sources = clean[(rng.random(len(done)) * earlier[earlier > 0]).astype(np.int64)]
    for field in ("sfzhm", "xb", "csrq"):
        _put(columns, field, done, columns[field][sources])
    return done, sources


def _assign_kinds(
    n: int, rng: np.random.Generator, faults: float | Mapping[str, float], placements: Mapping[int, str]
) -> np.ndarray:
    """The fault kind of every row ("" for a clean row)."""
    if isinstance(faults, Mapping):
        names, rates = list(faults), np.array(list(faults.values()), dtype=float)
    else:
        names = list(FAULT_KINDS)
        rates = np.full(len(names), float(faults) / len(names))
    unknown = set(names) | set(placements.values())
    unknown -= set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {sorted(unknown)}; known: {sorted(FAULT_KINDS)}")
    if rates.sum() > 1:
        raise ValueError("fault rates add up to more than 1")
    index = np.searchsorted(np.cumsum(rates), rng.random(n), side="right")
    labels = np.array([*names, ""], dtype="U32")  # an index past the last rate: no fault
    kinds = labels[np.minimum(index, len(names))]
    for row, kind in placements.items():
        kinds[row] = kind
    return kinds


def generate(
    n: int,
    seed: int = 0,
    *,
    faults: float | Mapping[str, float] = 0.0,
    placements: Mapping[int, str] | None = None,
    today: date | None = None,
) -> Synthetic:
    """``n`` synthetic residents with faults injected.

    ``faults`` is either one rate spread evenly over every kind, or a rate per
    kind name (:data:`FAULT_KINDS`); ``placements`` puts a kind at a given row
    (0-based), overriding the rates.  Each row carries at most one fault.  A
    ``duplicate_id`` row copies the ID of an earlier clean row (a duplicate with
    no clean row before it stays clean).  Same ``seed`` and ``today``, same rows.
    """
    rng = np.random.default_rng(seed)
    today = today or date.today()
    columns, parts = clean_residents(n, rng, today)
    kinds = _assign_kinds(n, rng, faults, placements or {})
    job = _Job(columns, parts, rng, today)
    for kind, inject in _INJECTORS.items():
        rows = np.flatnonzero(kinds == kind)
        if len(rows):
            inject(job, rows)
    duplicates = np.flatnonzero(kinds == "duplicate_id")
    of_row = np.full(n, -1, dtype=np.int64)
    if len(duplicates):
        done, sources = _duplicate(columns, duplicates, np.flatnonzero(kinds == ""), rng)
        kinds[np.setdiff1d(duplicates, done)] = ""
        of_row[done] = sources
    faulty = np.flatnonzero(kinds != "")
    manifest = pd.DataFrame({
        "row": faulty,
        "kind": pd.array(kinds[faulty], dtype="str"),
        "field": pd.array([FAULT_KINDS[k].field for k in kinds[faulty]], dtype="str"),
        "code": np.array([FAULT_KINDS[k].code for k in kinds[faulty]], dtype=np.int64),
        "of_row": of_row[faulty],
        "result_codes": pd.array([FAULT_KINDS[k].result_codes for k in kinds[faulty]], dtype="str"),
    })  # fmt: skip
    return Synthetic({f: columns[f] for f in PEOPLE_FIELDS}, manifest)


def main(argv: list[str] | None = None) -> int:
    """Command line: write a synthetic register (CSV or xlsx, clerk form) and its fault manifest."""
    from bench import clerk

    parser = argparse.ArgumentParser(prog="python -m bench.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", type=int)
    parser.add_argument("--out", type=Path, required=True, help="register to write (.csv or .xlsx)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--style", choices=sorted(clerk.STYLES), default="standard")
    parser.add_argument("--encoding", default="utf-8", help="CSV encoding: utf-8, utf-8-sig, gb18030, gbk")
    parser.add_argument("--title", default="", help="a title row above the header")
    parser.add_argument("--manifest", type=Path, help="CSV of the injected faults (row, kind, field, code)")
    args = parser.parse_args(argv)
    synthetic = generate(args.rows, args.seed, faults=args.fault_rate)
    table = clerk.to_clerk(synthetic.columns, args.style, seed=args.seed)
    if args.out.suffix.lower() == ".xlsx":
        clerk.write_xlsx(table, args.out, title=args.title or None)
    else:
        clerk.write_csv(table, args.out, encoding=args.encoding, title=args.title or None)
    if args.manifest:
        synthetic.manifest.to_csv(args.manifest, index=False)
    print(f"{args.out}: {args.rows} rows, {len(synthetic.manifest)} faulty")
    return 0


if __name__ == "__main__":
    sys.exit(main())
