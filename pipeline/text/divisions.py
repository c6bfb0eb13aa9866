"""Administrative division codes (GB/T 2260), the first six digits of an ID number.

The data is python-stdnum's ``stdnum/cn/loc.dat`` (taken from Wikipedia's lists,
historical codes included with the years each was in use).  Only the data is
used: stdnum's own validator ties a code to the birth year and so rejects real
people, whereas the six digits record where the number was *issued*.  Any code
that has ever existed is therefore accepted, whatever the birth year.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import numpy as np

#: Codes of the residence permits for Hong Kong, Macau and Taiwan residents
#: (港澳台居民居住证, GB 11643 numbers since 2018): 810000 and 820000 are in the
#: data as regions; Taiwan residents' permits use 830000, which is not.
RESIDENCE_PERMIT_CODES: frozenset[str] = frozenset({"810000", "820000", "830000"})

_NAME = re.compile(r"(?:\[[0-9-]*\])?([^,\[\]\"]+)")


def _lines() -> list[str]:
    return resources.files("stdnum.cn").joinpath("loc.dat").read_text(encoding="utf-8").splitlines()


@cache
def division_names() -> dict[str, tuple[str, ...]]:
    """Every division code that has existed -> its names over time (latest last)."""
    names: dict[str, tuple[str, ...]] = {}
    prefix = ""
    for line in _lines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, rest = line.strip().partition(" ")
        value = rest.partition("=")[2].strip().strip('"')
        if not line.startswith(" "):
            prefix = key
            continue
        names[prefix + key] = tuple(m.group(1) for m in _NAME.finditer(value))
    for code in RESIDENCE_PERMIT_CODES:
        names.setdefault(code, ())
    return names


@cache
def division_codes() -> frozenset[str]:
    """Every six-digit division code that has ever existed, plus the residence-permit codes.

    Read from the keys alone: the names (a regular expression over every
    line) are only needed to split addresses, and this set is needed by the
    first ID number checked (52 ms less before a run's first check).
    """
    codes = set(RESIDENCE_PERMIT_CODES)
    prefix = ""
    for line in _lines():
        key = line.strip().partition(" ")[0]
        if not key or key.startswith("#"):
            continue
        if line.startswith(" "):
            codes.add(prefix + key)
        else:
            prefix = key
    return frozenset(codes)


@cache
def division_lookup() -> np.ndarray:
    """A boolean table indexed by the six-digit code as an integer: ``True`` where it exists."""
    table = np.zeros(1_000_000, dtype=bool)
    table[np.fromiter((int(c) for c in division_codes()), dtype=np.int64)] = True
    table.setflags(write=False)
    return table
