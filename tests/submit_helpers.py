"""Shared pieces of the submission tests: hand-built batches and a scripted client."""

from __future__ import annotations

import csv
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from pipeline.model import FAULT_COLUMNS, FIELDS, OUTCOME_COLUMNS, SOURCE_COLUMNS, Batch
from pipeline.platform.responses import CallResult


def submit_quickly(batch: Batch, client: object, journal: object, **options: object) -> object:
    """``submit_batch`` with test defaults: no rate limit, four workers."""
    from pipeline.submission.submit import submit_batch

    options.setdefault("rate", None)
    options.setdefault("concurrency", 4)
    return submit_batch(batch, client, journal, **options)  # type: ignore[arg-type]


def check_char(body17: str) -> str:
    """The GB 11643 check character of 17 digits."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return "10X98765432"[sum(int(d) * w for d, w in zip(body17, weights, strict=True)) % 11]


def make_id(serial: int, birth: str = "19800101", area: str = "420102") -> str:
    """A valid 18-digit ID number; ``serial`` (0..999) picks the sequence code."""
    body = f"{area}{birth}{serial % 1000:03d}"
    return body + check_char(body)


def resident(id_number: str, **overrides: str) -> dict[str, str]:
    """A normalised row that passes the platform's checks."""
    sequence = int(id_number[14:17])
    row = {name: "" for name in FIELDS}
    row.update(
        xm="测试人", xb="1" if sequence % 2 else "2", mzdm="01", csrq=id_number[6:14], sfzhm=id_number,
        zjlx="01", zjhm=id_number, dzlb="2", dzsf="湖北省", dzs="武汉市", dzqx="江岸区", dzxz="大智街道",
        brdh="13900001111", ylfyzffs="01", klx="3", fksj="20260101", orgCode="ORG001", isRealName="0",
    )  # fmt: skip
    row.update(overrides)
    return row


def make_batch(rows: Sequence[dict[str, str]], invalid: Sequence[int] = (), file: str = "reg.xlsx") -> Batch:
    """A batch as the dry run would hand it over: ``invalid`` row ids carry a local 10111 fault."""
    index = pd.RangeIndex(len(rows))
    fields = pd.DataFrame([{name: row.get(name, "") for name in FIELDS} for row in rows], index=index)
    sources = pd.DataFrame(
        {"source_file": file, "source_sheet": "Sheet1", "source_row": [k + 2 for k in range(len(rows))]},
        index=index,
    )
    faults = pd.DataFrame(
        {
            "row_id": list(invalid),
            "field": "sfzhm",
            "code": 10111,
            "severity": "error",
            "message": "身份证号码不正确",
        },
        columns=list(FAULT_COLUMNS),
    ).astype({"row_id": "int64", "code": "int64"})
    outcome = pd.DataFrame(
        {"status": "valid", "result_code": "", "message": "", "ehealthCardId": "", "virtualCardNum": ""},
        index=index,
        columns=list(OUTCOME_COLUMNS),
    )
    outcome.loc[list(invalid), ["status", "result_code", "message"]] = [
        "invalid",
        "10111",
        "身份证号码不正确",
    ]
    assert list(sources.columns) == list(SOURCE_COLUMNS)
    return Batch(
        tables=[], table_rows=[range(len(rows))], rows=pd.concat([sources, fields], axis=1),
        original=fields.copy(), extras=pd.DataFrame(index=index), faults=faults, outcome=outcome,
    )  # fmt: skip


def card_ids(id_number: str) -> dict[str, str]:
    """Deterministic card ids for the scripted client."""
    digest = f"{abs(hash(id_number)):064X}"[-64:]
    return {"ehealthCardId": digest, "virtualCardNum": f"{int(id_number[:17]) % 10**20:020d}"}


class ScriptedClient:
    """A platform client whose answers are scripted per ID number (default: 10000 once, then 10115)."""

    def __init__(self, answers: dict[str, int | None] | None = None) -> None:
        self.answers = dict(answers or {})
        self.enrolled: set[str] = set()
        self.sync_calls: list[str] = []
        self.bind_calls: list[str] = []
        self.interrupted = threading.Event()
        self.before_answer: Callable[[str], None] | None = None
        self._lock = threading.Lock()

    def sync_card_info(self, card_info: dict[str, str], people_info: dict[str, str]) -> CallResult:
        id_number = people_info["sfzhm"]
        assert all(isinstance(v, str) for v in [*card_info.values(), *people_info.values()])
        if self.before_answer is not None:
            self.before_answer(id_number)
        with self._lock:
            self.sync_calls.append(id_number)
            if id_number in self.answers:
                code = self.answers[id_number]
            else:
                code = 10115 if id_number in self.enrolled else 10000
            if code == 10000:
                self.enrolled.add(id_number)
        if code is None:
            return CallResult(None, "无法连接平台，或连接被中断", {}, 5)
        data = card_ids(id_number) if code == 10000 else {}
        return CallResult(
            code, {10000: "操作成功", 10115: "身份证已经办理过"}.get(code, "出生日期格式不正确"), data, 1
        )

    def bind_card_info(self, *, zjlx: str, zjhm: str, xm: str, brdh: str, **_: str) -> CallResult:
        with self._lock:
            self.bind_calls.append(zjhm)
        return CallResult(10000, "操作成功", card_ids(zjhm), 1)

    def interrupt(self) -> None:
        self.interrupted.set()


_DIGITS = "零一二三四五六七八九"
REGISTER_HEADERS = (
    "姓名",
    "性别",
    "民族",
    "出生日期",
    "身份证号",
    "联系电话",
    "医疗费用支付方式",
    "省",
    "市",
    "区县",
    "街道",
)


def chinese_name(serial: int) -> str:
    """A name a clerk could write (no digits): 测试 + the serial in Chinese numerals."""
    return "测试" + "".join(_DIGITS[int(d)] for d in str(serial))


def write_register(path: Path, people: Sequence[dict[str, str]]) -> Path:
    """A UTF-8 CSV register with Chinese headers holding ``people`` (peopleInfo dicts)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(REGISTER_HEADERS)
        for serial, person in enumerate(people):
            writer.writerow([
                chinese_name(serial), "男" if person["xb"] == "1" else "女", "汉族", person["csrq"],
                person["sfzhm"], person["brdh"], "城镇职工基本医疗保险", person["dzsf"], person["dzs"],
                person["dzqx"], person["dzxz"],
            ])  # fmt: skip
    return path
