"""Clean synthetic residents, vectorised: names, valid distinct ID numbers, codes, phones, addresses.

The building blocks (check characters, ID numbers from their parts, dates) are
numpy throughout, so a million residents take a couple of seconds.
:mod:`bench.synth` adds faults on top.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from bench import places
from schemas.tables import code_table

SURNAMES = np.array(list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蔡蒋余于杜叶程魏苏吕丁任"
    "卢姚沈钟姜崔谭陆范汪廖石金韦贾夏付方邹熊白孟秦邱侯江尹薛闫段雷龙黎史陶贺毛郝顾龚邵万覃武钱戴严莫孔"
))  # fmt: skip
GIVEN = np.array(list(
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建文辉力飞燕玲志宇浩凯鹏俊峰晨欣怡佳琪梓涵"
    "子轩雨嘉诗婷思颖国庆海波春梅小东云丹雪晓永康德荣锦坤伦泽慧淑珍惠卓灿"
))  # fmt: skip

WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
CHECK_BYTES = np.frombuffer(b"10X98765432", dtype=np.uint8)
_POW17 = 10 ** np.arange(16, -1, -1, dtype=np.int64)
_POW15 = 10 ** np.arange(14, -1, -1, dtype=np.int64)


def check_bytes(body17: np.ndarray) -> np.ndarray:
    """MOD 11-2 check characters (ASCII bytes) for 17-digit integers."""
    digits = (body17[:, None] // _POW17) % 10
    return CHECK_BYTES[(digits @ WEIGHTS) % 11]


def id_numbers(division: np.ndarray, ymd: np.ndarray, sequence: np.ndarray) -> np.ndarray:
    """18-character ID numbers (``U18``) from division codes, ``YYYYMMDD`` ints and sequences."""
    body = division * 10**11 + ymd * 1000 + sequence
    matrix = np.empty((len(body), 18), dtype=np.uint8)
    matrix[:, :17] = (body[:, None] // _POW17) % 10 + 48
    matrix[:, 17] = check_bytes(body)
    return matrix.view("S18").ravel().astype("U18")


def id15_numbers(division: np.ndarray, ymd: np.ndarray, sequence: np.ndarray) -> np.ndarray:
    """15-digit ID numbers (``YYMMDD``, no check character) for people born 1900–1999."""
    body = division * 10**9 + (ymd % 1_000_000) * 1000 + sequence
    return body.astype("U15")


def is_valid_check(values: np.ndarray) -> np.ndarray:
    """Whether each 18-character ID (``U18`` array) has the right check character."""
    raw = np.char.upper(values).astype("S18").view(np.uint8).reshape(-1, 18)
    body = ((raw[:, :17].astype(np.int64) - 48) * _POW17).sum(axis=1)
    return check_bytes(body) == raw[:, 17]


def dates_from_days(days: np.ndarray) -> np.ndarray:
    """``YYYYMMDD`` integers from days since 1970-01-01."""
    moments = days.astype("datetime64[D]")
    years = moments.astype("datetime64[Y]").astype(np.int64) + 1970
    months = moments.astype("datetime64[M]")
    month_numbers = months.astype(np.int64) % 12 + 1
    day_numbers = (moments - months.astype("datetime64[D]")).astype(np.int64) + 1
    return years * 10000 + month_numbers * 100 + day_numbers


def days_from_dates(ymd: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 from ``YYYYMMDD`` integers (the inverse of :func:`dates_from_days`)."""
    months = (ymd // 10000 - 1970) * 12 + ymd // 100 % 100 - 1
    return months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) + ymd % 100 - 1


def epoch_days(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def pick(
    rng: np.random.Generator, values: np.ndarray | list[str], n: int, p: list[float] | None = None
) -> np.ndarray:
    return np.asarray(values)[rng.choice(len(values), size=n, p=p)]


def sequences(male: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Three-digit sequences: odd for men (1–999), even for women (2–998)."""
    return np.where(male, rng.integers(0, 500, len(male)) * 2 + 1, rng.integers(1, 500, len(male)) * 2)


def make_unique(
    division: np.ndarray, ymd: np.ndarray, sequence: np.ndarray, male: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``sequence`` with repeats redrawn (parity kept) until every ID body is unique."""
    sequence = sequence.copy()
    while True:
        repeated = pd.Series(division * 10**11 + ymd * 1000 + sequence).duplicated().to_numpy()
        if not repeated.any():
            return sequence
        sequence[repeated] = sequences(male[repeated], rng)


def random_digits(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    return rng.integers(0, 10**width, n, dtype=np.int64).astype(f"U{width}")


def zero_pad(values: np.ndarray, width: int) -> np.ndarray:
    return np.strings.zfill(values.astype(f"U{width}"), width)


# --- clean residents ---------------------------------------------------------


def clean_residents(
    n: int, rng: np.random.Generator, today: date
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Columns of ``n`` valid, distinct residents, and the ID parts (division, ymd, sequence, male)."""
    first_day, last_day = epoch_days(today - timedelta(days=95 * 365)), epoch_days(today)
    days = rng.integers(first_day, last_day, n)
    ymd = dates_from_days(days)
    age = (last_day - days) // 365
    male = rng.random(n) < 0.5
    foshan = places.FOSHAN_CODES[rng.integers(0, len(places.FOSHAN_CODES), n)]
    elsewhere = places.county_codes()[rng.integers(0, len(places.county_codes()), n)]
    division = np.where(rng.random(n) < 0.6, foshan, elsewhere)
    sequence = make_unique(division, ymd, sequences(male, rng), male, rng)

    given = np.strings.add(pick(rng, GIVEN, n), np.where(rng.random(n) < 0.65, pick(rng, GIVEN, n), ""))
    ethnic_codes = np.array(code_table("ethnicity").codes[1:])
    ethnicity = np.where(rng.random(n) < 0.92, "01", pick(rng, ethnic_codes, n))
    marriage = np.where(
        age < 20,
        "10",
        pick(rng, ["10", "20", "30", "40", "90", ""], n, [0.14, 0.70, 0.06, 0.06, 0.01, 0.03]),
    )
    adult_education = pick(
        rng,
        ["10", "20", "30", "40", "60", "70", "81", "90", ""],
        n,
        [0.03, 0.14, 0.14, 0.10, 0.20, 0.24, 0.10, 0.03, 0.02],
    )
    education = np.select([age < 7, age < 13, age < 16, age < 19], ["", "81", "70", "60"], adult_education)
    occupation = np.where(
        (age < 18) | (age > 70),
        "",
        pick(
            rng, ["0", "1", "3", "4", "5", "6", "X", "Y"], n, [0.03, 0.15, 0.14, 0.25, 0.08, 0.20, 0.01, 0.14]
        ),
    )
    payment = pick(
        rng,
        ["01", "02", "03", "04", "05", "06", "07", "99"],
        n,
        [0.32, 0.45, 0.08, 0.01, 0.03, 0.02, 0.08, 0.01],
    )
    mobile = np.strings.add(
        np.strings.add("1", pick(rng, list("3456789"), n, [0.3, 0.05, 0.25, 0.05, 0.03, 0.3, 0.02])),
        zero_pad(random_digits(rng, n, 9), 9),
    )
    landline = np.strings.add("0757-8", zero_pad(random_digits(rng, n, 7), 7))
    street = rng.integers(0, len(places.STREET_NAMES), n)
    house = rng.integers(1, 300, n).astype("U3")
    record = np.strings.add("4406", zero_pad(random_digits(rng, n, 13), 13))
    columns = {
        "xm": np.strings.add(pick(rng, SURNAMES, n), given),
        "xb": np.where(male, "1", "2"),
        "mzdm": ethnicity,
        "csrq": ymd.astype("U8"),
        "sfzhm": id_numbers(division, ymd, sequence),
        "zjlx": np.full(n, "01"),
        "zjhm": np.full(n, ""),
        "jkdah": np.where(rng.random(n) < 0.4, record, ""),
        "xnhkh": np.full(n, ""),
        "fyzhdm": marriage,
        "xldm": education,
        "zydm": occupation,
        "dzlb": np.full(n, "2"),
        "dzsf": np.full(n, "广东省"),
        "dzs": np.full(n, "佛山市"),
        "dzqx": places.STREET_DISTRICTS[street],
        "dzxz": places.STREET_NAMES[street],
        "dzc": np.strings.add(np.strings.add(pick(rng, places.ROADS, n), house), "号"),
        "brdh": np.where(rng.random(n) < 0.04, landline, mobile),
        "ylfyzffs": payment,
    }
    return columns, {"division": division, "ymd": ymd, "sequence": sequence, "male": male}
