"""Places for synthetic residents: Foshan's districts and streets, roads, division codes."""

from __future__ import annotations

from functools import cache

import numpy as np

from pipeline.text.divisions import RESIDENCE_PERMIT_CODES, division_codes

#: District -> its street offices and towns (佛山市, current names).
FOSHAN_STREETS: dict[str, tuple[str, ...]] = {
    "禅城区": ("祖庙街道", "石湾镇街道", "张槎街道", "南庄镇"),
    "南海区": ("桂城街道", "九江镇", "西樵镇", "丹灶镇", "狮山镇", "大沥镇", "里水镇"),
    "顺德区": (
        "大良街道", "容桂街道", "伦教街道", "勒流街道", "陈村镇",
        "北滘镇", "乐从镇", "龙江镇", "杏坛镇", "均安镇",
    ),
    "三水区": ("西南街道", "云东海街道", "白坭镇", "乐平镇", "芦苞镇", "大塘镇", "南山镇"),
    "高明区": ("荷城街道", "杨和镇", "明城镇", "更合镇"),
}  # fmt: skip

#: Division codes of Foshan's current districts (where most residents' IDs were issued).
FOSHAN_CODES = np.array([440604, 440605, 440606, 440607, 440608], dtype=np.int64)

STREET_DISTRICTS = np.array([d for d, streets in FOSHAN_STREETS.items() for _ in streets])
STREET_NAMES = np.array([s for streets in FOSHAN_STREETS.values() for s in streets])

#: Road names free of 市/区/县/镇/乡/街道, so a full address splits cleanly.
ROADS = np.array([
    "建设路", "人民路", "文华北路", "季华五路", "岭南大道", "佛山大道", "桂澜路", "灯湖东路", "南海大道",
    "祖庙路", "同济路", "汾江中路", "普君北路", "绿景路", "魁奇路", "朝安南路", "华宝南路", "东平路",
    "新港路", "德胜路", "海八路", "石龙南路", "卫国路", "升平路", "公正路", "福宁路", "江湾一路",
])  # fmt: skip

#: Foshan division codes from before 1999 that clean rows never use: only 15-digit
#: IDs carry them, so their upgraded forms cannot collide with anyone else's.
OLD_CODES = np.array([440602, 440603, 440621, 440622, 440623, 440624], dtype=np.int64)
_RESERVED = frozenset(OLD_CODES.astype(str))


@cache
def county_codes() -> np.ndarray:
    """Every county-level division code that has ever existed (not a province, city or 市辖区 entry)."""
    codes = sorted(
        c for c in division_codes()
        if not c.endswith("00") and not c.endswith("01") and c not in RESIDENCE_PERMIT_CODES
        and c[:2] not in {"71", "81", "82", "83"} and c not in _RESERVED
    )  # fmt: skip
    return np.array(codes, dtype=np.int64)
