"""Splitting one full-address text into the platform's five address parts.

``广东省佛山市南海区桂城街道南海大道北1号`` becomes ``dzsf`` 广东省, ``dzs``
佛山市, ``dzqx`` 南海区, ``dzxz`` 桂城街道, ``dzc`` 南海大道北1号.  Each level
is recognised by its suffix (省/自治区/特别行政区; 市/自治州/地区/盟;
区/县/旗/市; 街道/镇/乡); a level that is absent stays empty and the rest of
the text goes to ``dzc``.  The four municipalities are both province and city
(北京市 → ``dzsf`` 北京市, ``dzs`` 北京市), and a province written without its
suffix (广东佛山市…) is recognised by name.

The split runs over the whole column with pyarrow's RE2 kernels and numpy,
never address by address.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.model import ADDRESS_PARTS
from pipeline.text.arrow import contiguous, empty_mask, per_distinct, to_arrow, to_series, where
from pipeline.text.divisions import division_names

#: The address parts, from province down to street.

MUNICIPALITIES: tuple[str, ...] = ("北京市", "天津市", "上海市", "重庆市")

# A level's own name may not run across another level's suffix or a house number.
_NAME = r"[^省市县区旗盟镇乡街巷弄号村组0-9]"
# An autonomous prefecture's name stops at its first 州 (恩施土家族苗族自治州恩施市).
_PREFECTURE_NAME = r"[^省市县区旗州盟镇乡街巷弄号村组0-9]"


@cache
def province_names() -> dict[str, str]:
    """Every spelling of a province-level name (full or without its suffix) -> its full name."""
    spellings: dict[str, str] = {}
    for code, names in division_names().items():
        if not code.endswith("0000") or not names or code[:2] in {"71", "81", "82"}:
            continue
        full = names[-1]
        short = full
        for suffix in ("维吾尔自治区", "壮族自治区", "回族自治区", "自治区", "省", "市"):
            if full.endswith(suffix):
                short = full[: -len(suffix)]
                break
        spellings[full] = full
        spellings[short] = full
    spellings.update({"香港特别行政区": "香港特别行政区", "香港": "香港特别行政区"})
    spellings.update({"澳门特别行政区": "澳门特别行政区", "澳门": "澳门特别行政区"})
    spellings.update({"台湾省": "台湾省", "台湾": "台湾省"})
    return spellings


@cache
def level_patterns() -> tuple[str, ...]:
    """The RE2 pattern of each level's text at the start of what the levels above left."""
    # Longest spellings first: RE2 takes the first alternative that matches.
    provinces = "|".join(sorted(province_names(), key=len, reverse=True))
    return (
        rf"^(?:中华人民共和国|中国)?(?:{provinces})",
        rf"^(?:{_PREFECTURE_NAME}+?自治州|{_NAME}+?市|{_NAME}+?(?:地区|盟))",
        rf"^{_NAME}+?(?:区|县|旗|市)",
        # A street may be named after a village (中关村街道); a village itself (幸福村) is not a street.
        rf"^(?:{_NAME}+?(?:街道办事处|街道|镇|乡)|{_NAME}*村{_NAME}*?(?:街道办事处|街道))",
    )


def _byte_prefixes(array: pa.Array, lengths: np.ndarray) -> pa.Array:
    """The first ``lengths[i]`` bytes of each string (lengths fall on character boundaries).

    A level's text has few distinct lengths (广东省 and 湖北省 are both 9
    bytes), so each distinct length is one slice over the whole column.
    """
    binary = array.view(pa.large_binary())
    result = pc.binary_slice(binary, 0, 0)
    for length in np.unique(lengths[lengths > 0]):
        chosen = pa.array(lengths == length)
        result = pc.if_else(chosen, pc.binary_slice(binary, 0, int(length)), result)
    return result.view(pa.large_string())


def split_addresses(addresses: pd.Series) -> pd.DataFrame:
    """The five address parts of each (cleaned, space-free) address text; "" where absent.

    Each level is peeled off the front in turn with a regular-expression
    replace (RE2's DFA, fast); the level's own text is the difference
    between what was there before and what is left after.
    """
    remaining = pc.fill_null(to_arrow(addresses), "")
    frame: dict[str, pd.Series] = {}
    for part, pattern in zip(ADDRESS_PARTS, level_patterns(), strict=False):
        rest = pc.replace_substring_regex(remaining, pattern, "")  # anchored: one match at most
        rest = contiguous(rest)
        taken = pc.subtract(pc.binary_length(remaining), pc.binary_length(rest)).to_numpy(
            zero_copy_only=False
        )
        frame[part] = to_series(_byte_prefixes(remaining, taken.astype(np.int64)), addresses.index)
        remaining = rest
    frame["dzc"] = to_series(remaining, addresses.index)
    frame["dzsf"] = per_distinct(frame["dzsf"], _full_province_names)
    municipal = frame["dzsf"].isin(MUNICIPALITIES).to_numpy(dtype=bool)
    frame["dzs"] = where(~municipal | ~empty_mask(frame["dzs"]), frame["dzs"], frame["dzsf"])
    return pd.DataFrame(frame, index=addresses.index)


def _full_province_names(provinces: pd.Series) -> pd.Series:
    spellings = province_names()
    # "中国广东省" / "广东": the prefix goes, the short name becomes the full one.
    bare = [p.removeprefix("中华人民共和国").removeprefix("中国") for p in provinces]
    return pd.Series([spellings.get(p, p) for p in bare], index=provinces.index, dtype="str")
