"""The synthetic resident generator: clean rows are valid, faults are where the manifest says."""

from __future__ import annotations

import re
import sys
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from python_calamine import CalamineWorkbook

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import clerk, synth
from pipeline.text.divisions import division_codes
from schemas.rules import FIELD_TABLES
from schemas.tables import code_table

TODAY = date(2026, 11, 1)
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def textbook_check(first17: str) -> str:
    """The check character computed the way GB 11643 describes it."""
    return "10X98765432"[sum(int(c) * w for c, w in zip(first17, WEIGHTS, strict=True)) % 11]


def id_is_valid(value: str) -> bool:
    if not re.fullmatch(r"[0-9]{17}[0-9X]", value) or value[:6] not in division_codes():
        return False
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return born <= TODAY and textbook_check(value[:17]) == value[17]


def parity_gender(value: str) -> str:
    return "1" if int(value[16]) % 2 else "2"


def in_table(field: str, value: str) -> bool:
    return value in code_table(FIELD_TABLES[field])


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``frame`` as dicts."""
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


@pytest.fixture(scope="module")
def every_kind() -> synth.Synthetic:
    """3,000 residents with every fault kind at 1 % each."""
    return synth.generate(3000, 11, faults=dict.fromkeys(synth.FAULT_KINDS, 0.01), today=TODAY)


def test_clean_residents_are_valid_and_distinct() -> None:
    people = synth.generate(3000, 5, today=TODAY).people
    assert len(people) == 3000 and people["sfzhm"].is_unique
    for row in records(people):
        assert id_is_valid(row["sfzhm"]), row["sfzhm"]
        assert row["xb"] == parity_gender(row["sfzhm"])
        assert row["csrq"] == row["sfzhm"][6:14]
        assert row["xm"].strip() and re.fullmatch(r"1[3-9][0-9]{9}|0757-8[0-9]{7}", row["brdh"])
        for field in ("mzdm", "ylfyzffs", "zjlx", "dzlb", "xb"):
            assert in_table(field, row[field]), (field, row[field])
        for field in ("fyzhdm", "xldm", "zydm"):
            assert row[field] == "" or in_table(field, row[field])
        assert (row["dzsf"], row["dzs"]) == ("广东省", "佛山市") and row["dzqx"].endswith("区")


def test_vectorised_check_agrees_with_the_textbook() -> None:
    ids = synth.generate(500, 3, today=TODAY).columns["sfzhm"]
    assert synth.is_valid_check(ids).all()
    broken = np.array([v[:17] + ("0" if v[17] != "0" else "1") for v in ids.tolist()])
    assert not synth.is_valid_check(broken).any()
    assert all(textbook_check(v[:17]) == v[17] for v in ids.tolist())


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    first = synth.generate(200, 9, faults=0.1, today=TODAY)
    again = synth.generate(200, 9, faults=0.1, today=TODAY)
    other = synth.generate(200, 10, faults=0.1, today=TODAY)
    pd.testing.assert_frame_equal(first.people, again.people)
    pd.testing.assert_frame_equal(first.manifest, again.manifest)
    assert not first.people["sfzhm"].equals(other.people["sfzhm"])


def test_every_kind_is_injected_and_only_there(every_kind: synth.Synthetic) -> None:
    people, manifest = every_kind.people, every_kind.manifest
    assert set(manifest["kind"]) == set(synth.FAULT_KINDS)
    assert manifest["row"].is_unique
    faulty = set(manifest["row"])
    for position, row in enumerate(records(people)):
        if position not in faulty:
            sfzhm = row["sfzhm"]
            assert id_is_valid(sfzhm) and row["xb"] == parity_gender(sfzhm) and row["csrq"] == sfzhm[6:14]


def _fault_is_visible(kind: str, person: dict[str, Any], source: dict[str, Any] | None) -> bool:
    sfzhm = person["sfzhm"]
    checks = {
        "bad_check": lambda: len(sfzhm) == 18 and textbook_check(sfzhm[:17]) != sfzhm[17],
        "future_birth": lambda: sfzhm[6:14] > f"{TODAY:%Y%m%d}" and textbook_check(sfzhm[:17]) == sfzhm[17],
        "bad_division": lambda: sfzhm[:6] not in division_codes() and textbook_check(sfzhm[:17]) == sfzhm[17],
        "short_id": lambda: len(sfzhm) == 17,
        "id_as_number": lambda: re.fullmatch(r"[0-9]\.[0-9]{14}E\+17", sfzhm) is not None,
        "empty_name": lambda: person["xm"].strip("\u3000 ") == "",
        "unknown_ethnicity": lambda: not in_table("mzdm", person["mzdm"]),
        "gender_mismatch": lambda: id_is_valid(sfzhm) and person["xb"] != parity_gender(sfzhm),
        "bad_gender": lambda: not in_table("xb", person["xb"]),
        "birth_mismatch": lambda: id_is_valid(sfzhm) and person["csrq"] < sfzhm[6:14],
        "bad_birth_date": lambda: person["csrq"].endswith("0230"),
        "bad_phone": lambda: re.fullmatch(r"1[3-9][0-9]{9}|0757-8[0-9]{7}", person["brdh"]) is None,
        "bad_payment": lambda: not in_table("ylfyzffs", person["ylfyzffs"]),
        "bad_marriage": lambda: not in_table("fyzhdm", person["fyzhdm"]),
        "bad_education": lambda: not in_table("xldm", person["xldm"]),
        "bad_occupation": lambda: not in_table("zydm", person["zydm"]),
        "bad_document_type": lambda: not in_table("zjlx", person["zjlx"]),
        "id15": lambda: len(sfzhm) == 15 and id_is_valid(sfzhm[:6] + "19" + sfzhm[6:] + textbook_check(
            sfzhm[:6] + "19" + sfzhm[6:])) and person["csrq"] == "19" + sfzhm[6:12],
        "duplicate_id": lambda: source is not None and (sfzhm, person["xb"], person["csrq"]) == (
            source["sfzhm"], source["xb"], source["csrq"]) and id_is_valid(sfzhm),
    }  # fmt: skip
    return checks[kind]()


def test_each_fault_is_where_the_manifest_says(every_kind: synth.Synthetic) -> None:
    people = records(every_kind.people)
    faulty = set(every_kind.manifest["row"])
    for fault in records(every_kind.manifest):
        row, of_row, kind = int(fault["row"]), int(fault["of_row"]), str(fault["kind"])
        source = people[of_row] if of_row >= 0 else None
        assert fault["code"] == synth.FAULT_KINDS[kind].code
        assert _fault_is_visible(kind, people[row], source), (fault, people[row])
        if kind == "duplicate_id":
            assert of_row < row and of_row not in faulty


def test_expected_codes_follow_the_manifest(every_kind: synth.Synthetic) -> None:
    expected = every_kind.expected_codes
    manifest = every_kind.manifest
    errors = manifest[manifest["code"] > 0]
    assert (expected != "").sum() == len(errors)
    assert [c.split(";")[0] for c in expected[errors["row"].to_numpy()]] == errors["code"].astype(
        str
    ).tolist()
    future = manifest.loc[manifest["kind"] == "future_birth", "row"].to_numpy()
    assert set(expected[future]) == {"10111;10124"}
    warned = manifest.loc[manifest["kind"] == "id15", "row"].to_numpy()
    assert (expected[warned] == "").all()


def test_placements_put_kinds_at_the_rows_given() -> None:
    placed = {0: "bad_check", 3: "empty_name", 7: "duplicate_id", 9: "id15"}
    result = synth.generate(12, 1, placements=placed, today=TODAY)
    assert dict(zip(result.manifest["row"], result.manifest["kind"], strict=True)) == placed
    with pytest.raises(ValueError, match="unknown fault kinds"):
        synth.generate(5, placements={1: "no_such_kind"})


def test_duplicate_without_an_earlier_clean_row_stays_clean() -> None:
    result = synth.generate(3, 1, placements={0: "duplicate_id"}, today=TODAY)
    assert result.manifest.empty and result.expected_codes.tolist() == ["", "", ""]


def test_clerk_form_names_codes_and_keeps_extra_columns() -> None:
    people = synth.generate(300, 2, today=TODAY).people
    table = clerk.to_clerk(people, "standard", seed=2, mixed=False)
    assert list(table)[::18] == ["序号", "备注"]
    assert set(table["性别"]) <= {"男", "女"}
    assert "汉族" in set(table["民族"]) and set(table["证件类型"]) == {"居民身份证"}
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", d) for d in table["出生日期"].tolist())
    names = clerk.display_names("ylfyzffs")
    assert set(table["医疗费用支付方式"]) <= set(names.values())
    alternate = clerk.to_clerk(people, "alternate", seed=2)
    assert alternate["现住址"][0].startswith("广东省佛山市") and "身份证号码" in alternate


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "gbk"])
def test_csv_round_trip(tmp_path: Path, encoding: str) -> None:
    table = clerk.to_clerk(synth.generate(50, 4, today=TODAY).people, "alternate", seed=4)
    path = clerk.write_csv(table, tmp_path / "r.csv", encoding=encoding, title="XX社区 居民名单")
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") == (encoding == "utf-8-sig")
    back = pd.read_csv(
        path,
        dtype=str,
        keep_default_na=False,
        skiprows=1,
        encoding="utf-8-sig" if encoding.startswith("utf") else encoding,
    )
    assert list(back.columns) == list(table) and len(back) == 50
    assert back["身份证号码"].tolist() == table["身份证号码"].tolist()


def test_xlsx_has_title_text_ids_numbers_and_date_cells(tmp_path: Path) -> None:
    result = synth.generate(20, 6, placements={5: "id_as_number"}, today=TODAY)
    table = clerk.to_clerk(result.columns, "standard", seed=6)
    path = clerk.write_xlsx(table, tmp_path / "r.xlsx", title="登记表", date_cells=np.arange(20) % 2 == 0)
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    assert rows[0][0] == "登记表" and all(v == "" for v in rows[1]) and rows[2] == list(table)
    ids = [r[5] for r in rows[3:]]
    assert isinstance(ids[5], float) and all(isinstance(v, str) for i, v in enumerate(ids) if i != 5)
    births = [r[4] for r in rows[3:]]
    assert all(isinstance(b, date) for b in births[::2]) and all(isinstance(b, str) for b in births[1::2])
    assert isinstance(births[0], date) and f"{births[0]:%Y%m%d}" == result.columns["csrq"][0]
