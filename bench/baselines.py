"""The raw baselines ``make bench`` compares ``ehc`` with, each run in its own process.

    python bench/baselines.py read-csv FILE
    python bench/baselines.py copy-xlsx IN OUT
    python bench/baselines.py bare-post BASE_URL APP_ID APP_SECRET COUNT SEED

``bare-post`` prints one JSON line: calls, seconds and CPU seconds of the post
loop alone (set-up excluded), so the caller can compare per-call costs.  Each
baseline's process opts out of transparent huge pages, as ``ehc``'s does
(:mod:`pipeline.memory`), so both sides of a ratio run on the same terms.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Mapping
from datetime import date
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def read_csv(path: str) -> None:
    """A raw ``pandas.read_csv(dtype=str, engine="pyarrow")`` of the whole file."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, engine="pyarrow")
    print(len(frame))


def copy_xlsx(source: str, target: str) -> None:
    """Read every row with python-calamine, write them with xlsxwriter in constant-memory mode."""
    import xlsxwriter
    from python_calamine import CalamineWorkbook

    rows = CalamineWorkbook.from_path(source).get_sheet_by_index(0).to_python()
    workbook = xlsxwriter.Workbook(target, {"constant_memory": True})
    sheet = workbook.add_worksheet()
    for index, row in enumerate(rows):
        sheet.write_row(index, 0, row)
    workbook.close()
    print(len(rows))


def _sign(*parts: str) -> str:
    return hashlib.md5("|".join(parts).encode()).hexdigest().upper()


def _envelope(app_id: str, data: Mapping[str, object]) -> dict[str, object]:
    app = {"termId": "", "version": "v1.1", "appVersion": "1.1", "appPackageName": "bench", "digestType": "",
           "encType": ""}  # fmt: skip
    return {"appId": app_id, "app": app, "data": data}


def bare_post(base_url: str, app_id: str, app_secret: str, count: int, seed: int) -> None:
    """``count`` syncCardInfo calls with one ``requests.Session``, one after another, nothing else."""
    import requests

    from bench import synth
    from pipeline.model import PEOPLE_FIELDS

    people = synth.generate(count, seed).columns
    residents = [dict(zip(PEOPLE_FIELDS, values, strict=True))
                 for values in zip(*(people[f].tolist() for f in PEOPLE_FIELDS), strict=True)]  # fmt: skip
    for person in residents:
        person["zjhm"] = person["sfzhm"]
    card = {"klx": "3", "kh": "", "fksj": date.today().strftime("%Y%m%d"), "orgCode": "455400000", "yhkh": "",
            "isRealName": "0"}  # fmt: skip
    session = requests.Session()
    stamp = str(int(time.time() * 1000))
    answer = session.post(base_url + "getWorkKey.do", timeout=30, json=_envelope(
        app_id, {"timestamp": stamp, "sign": _sign(app_id, app_secret, stamp)})).json()  # fmt: skip
    work_key = str(answer["data"]["workKey"])
    url = base_url + "syncCardInfo.do"
    failures = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for person in residents:
        stamp = str(int(time.time() * 1000))
        data = {"timestamp": stamp, "sign": _sign(app_id, work_key, stamp, "0"), "type": "0",
                "cardInfo": card, "peopleInfo": person}  # fmt: skip
        reply = session.post(url, json=_envelope(app_id, data), timeout=30)
        failures += str(reply.json()["data"]["resultCode"]) != "10000"
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"calls": count, "seconds": seconds, "cpu": cpu, "failures": failures}))


def main(argv: list[str]) -> int:
    """Dispatch on the first argument."""
    from pipeline.memory import opt_out_of_huge_pages

    # As ehc's own process does: otherwise the kernel's zeroing of huge pages, which varies from
    # run to run on a shared machine (a raw read took 0.74-1.28 s), decides the ratios.
    opt_out_of_huge_pages()
    kind, *args = argv
    if kind == "read-csv":
        read_csv(args[0])
    elif kind == "copy-xlsx":
        copy_xlsx(args[0], args[1])
    elif kind == "bare-post":
        bare_post(args[0], args[1], args[2], int(args[3]), int(args[4]))
    else:
        raise SystemExit(f"unknown baseline {kind!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
