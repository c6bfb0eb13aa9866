"""``ehc`` seen from outside: the command line against an independent, strict platform.

The fixture ``platform`` is a small HTTP server written from the original
interface document alone (it shares no code with ``pipeline``): it insists on
the exact envelope, String values, every required key, signs over the strings
sent, fresh millisecond timestamps, unpadded values and codes from the tables,
and it answers with the document's own quirks (``resultCode`` as a number,
``" virtualCardNum "`` with spaces, ``getImg`` unwrapped with ``qRCode``).
Whatever it dislikes is kept in ``platform.violations``; every test ends with
none.  The tests only run ``python -m pipeline ...`` in subprocesses.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime
import hashlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pipeline.text.idnumber import check_character

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "/jkfs-dzjkk/dzjkk/websvi/"
APP_ID = "39bf0ca6e9b340659852808173fdf705"
APP_SECRET = "S3cr3t-outside-7f1e2d9c4b"
ORG_CODE = "440604001"

APP_KEYS = ("termId", "version", "appVersion", "appPackageName", "digestType", "encType")
CARD_KEYS = ("klx", "kh", "fksj", "orgCode", "isRealName")  # yhkh optional
PEOPLE_KEYS = (
    "xm", "xb", "mzdm", "csrq", "sfzhm", "zjlx", "zjhm", "jkdah", "xnhkh", "fyzhdm",
    "xldm", "zydm", "dzlb", "dzsf", "dzs", "dzqx", "dzxz", "dzc", "brdh", "ylfyzffs",
)  # fmt: skip
BIND_KEYS = ("type", "zjlx", "zjhm", "xm", "brdh", "bindType", "bindZjlx", "bindZjhm")
TABLES: dict[str, set[str]] = {
    "xb": {"0", "1", "2", "9"},
    "mzdm": {f"{n:02d}" for n in range(1, 57)},
    "zjlx": {"01", "02", "03", "04", "05", "06", "07", "99"},
    "fyzhdm": {"", "10", "20", "30", "40", "90"},
    "xldm": {"", "10", "20", "30", "40", "60", "70", "81", "90"},
    "zydm": {"", *"0123456789XY"},
    "dzlb": {"1", "2"},
    "ylfyzffs": {"01", "02", "03", "04", "05", "06", "07", "99"},
    "isRealName": {"0", "1"},
}
# A tiny valid PNG (1x1), base64: the strict server does not draw QR codes.
PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
    )
).decode()


def md5_upper(*parts: str) -> str:
    return hashlib.md5("|".join(parts).encode("utf-8")).hexdigest().upper()


class StrictPlatform:
    """State and rules of the strict platform (thread-safe)."""

    def __init__(self) -> None:
        self.apps = {APP_ID: APP_SECRET}
        self.lock = threading.Lock()
        self.work_keys: dict[str, str] = {}
        self.issued_keys: list[str] = []
        self.residents: dict[str, tuple[str, str]] = {}  # sfzhm -> (ehealthCardId, virtualCardNum)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.violations: list[str] = []
        self.reject: dict[str, int] = {}  # sfzhm -> result code answered for it
        self.http_500_for: set[str] = set()  # sfzhm answered with HTTP 500 every time
        self.expire_after_syncs: int | None = None  # answer 10105 once after this many syncCardInfo
        self.img_fail: set[str] = set()  # ehealthCardId answered 10109 by getImg
        self.arrivals: list[float] = []  # monotonic arrival time of every request
        self.delay_seconds = 0.0
        self.base_url = ""
        self.lose_answer_for: set[str] = set()  # sfzhm enrolled, then the connection cut unanswered (once)
        self.rate_limit: int | None = None  # requests per second beyond which it answers 429
        self.throttled = 0

    # -- bookkeeping -----------------------------------------------------------
    def count(self, method: str) -> int:
        with self.lock:
            return sum(1 for name, _ in self.requests if name == method)

    def sent_ids(self, method: str = "syncCardInfo") -> list[str]:
        with self.lock:
            return [d.get("peopleInfo", {}).get("sfzhm", "") for m, d in self.requests if m == method]

    def enrol(self, sfzhm: str) -> tuple[str, str]:
        digest = hashlib.sha256(sfzhm.encode()).hexdigest().upper()
        number = str(int(digest[:16], 16))[:20].rjust(20, "1")
        self.residents[sfzhm] = (digest, number)
        return self.residents[sfzhm]

    def _violation(self, text: str) -> dict[str, Any]:
        self.violations.append(text)
        return {"data": {"resultCode": 10110, "message": f"参数错误: {text}"}}

    # -- checks ------------------------------------------------------------------
    def _check_strings(self, where: str, obj: Any, problems: list[str]) -> None:
        if isinstance(obj, dict):
            for key, value in obj.items():
                self._check_strings(f"{where}.{key}", value, problems)
        elif not isinstance(obj, str):
            problems.append(f"{where} is {type(obj).__name__}, not String")
        elif obj != obj.strip():
            problems.append(f"{where} has surrounding spaces")

    def _envelope(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | dict[str, Any]:
        problems: list[str] = []
        self._check_strings("", body, problems)
        if problems:
            return self._violation("; ".join(problems))
        if set(body) != {"appId", "app", "data"}:
            return self._violation(f"envelope keys {sorted(body)}")
        if not isinstance(body["app"], dict) or set(body["app"]) != set(APP_KEYS):
            return self._violation(f"app keys {sorted(body['app'])}")
        data = body["data"]
        if not isinstance(data, dict) or "timestamp" not in data or "sign" not in data:
            return self._violation("data lacks timestamp/sign")
        timestamp = data["timestamp"]
        if not re.fullmatch(r"\d{13}", timestamp) or abs(int(timestamp) - time.time() * 1000) > 300_000:
            return self._violation(f"timestamp {timestamp!r} not ms within 5 minutes of now")
        if not re.fullmatch(r"[0-9A-F]{32}", data["sign"]):
            return self._violation("sign is not upper-case md5 hex")
        return body["appId"], data

    def handle(self, method: str, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            return 200, self._violation("body is not an object")
        with self.lock:
            now = time.monotonic()
            if self.rate_limit is not None:
                recent = [t for t in self.arrivals if now - t < 1.0]
                if len(recent) >= self.rate_limit:
                    self.throttled += 1
                    return 429, {"message": "too many requests"}
            self.arrivals.append(now)
            self.requests.append((method, body.get("data", {}) if isinstance(body.get("data"), dict) else {}))
            checked = self._envelope(body)
            if isinstance(checked, dict):
                return 200, checked
            app_id, data = checked
            if app_id not in self.apps:
                return 200, {"data": {"resultCode": 10101, "message": "机构代码错误"}}
            if method == "getWorkKey":
                return 200, self._get_work_key(app_id, data)
            key = self.work_keys.get(app_id, "")
            if method == "syncCardInfo":
                return self._sync(app_id, key, data)
            if method == "bindCardInfo":
                return 200, self._bind(app_id, key, data)
            if method == "getImg":
                return 200, self._img(app_id, key, data)
        return 404, {}

    def _get_work_key(self, app_id: str, data: dict[str, Any]) -> dict[str, Any]:
        if set(data) != {"timestamp", "sign"}:
            return self._violation(f"getWorkKey data keys {sorted(data)}")
        if data["sign"] != md5_upper(app_id, self.apps[app_id], data["timestamp"]):
            return {"data": {"resultCode": 10105, "message": "认证字符串无效"}}
        key = os.urandom(16).hex().upper()
        self.work_keys[app_id] = key  # a new key invalidates the old one
        self.issued_keys.append(key)
        return {"data": {"resultCode": 10000, "message": "操作成功", "workKey": key}}

    def _card_answer(self, sfzhm: str) -> dict[str, Any]:
        card_id, number = self.residents[sfzhm]
        return {"data": {"resultCode": 10000, "message": "操作成功", "ehealthCardId": card_id,
                         " virtualCardNum ": f" {number}"}}  # fmt: skip

    def _sync(self, app_id: str, key: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        expected = {"timestamp", "sign", "type", "cardInfo", "peopleInfo"}
        if set(data) != expected:
            return 200, self._violation(f"syncCardInfo data keys {sorted(data)}")
        card, people = data["cardInfo"], data["peopleInfo"]
        missing = [k for k in CARD_KEYS if k not in card] + [k for k in PEOPLE_KEYS if k not in people]
        extra = set(card) - set(CARD_KEYS) - {"yhkh"} | set(people) - set(PEOPLE_KEYS)
        if missing or extra:
            return 200, self._violation(f"syncCardInfo missing {missing} extra {sorted(extra)}")
        if data["type"] != "0":
            return 200, self._violation(f"type {data['type']!r}")
        if not key or data["sign"] != md5_upper(app_id, key, data["timestamp"], data["type"]):
            return 200, {"data": {"resultCode": 10105, "message": "认证字符串无效"}}
        if self.expire_after_syncs is not None and self.count_ok_syncs() >= self.expire_after_syncs:
            self.expire_after_syncs = None
            self.work_keys[app_id] = ""  # expired: only a new getWorkKey helps
            return 200, {"data": {"resultCode": 10105, "message": "认证字符串无效"}}
        values = {**card, **people}
        bad = [f"{k}={values[k]!r}" for k, allowed in TABLES.items() if values.get(k) not in allowed]
        for k in ("csrq", "fksj"):
            if values[k] and not re.fullmatch(r"(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])", values[k]):
                bad.append(f"{k}={values[k]!r}")
        if values["orgCode"] != ORG_CODE:
            bad.append(f"orgCode={values['orgCode']!r}")
        sfzhm = people["sfzhm"]
        if not re.fullmatch(r"\d{17}[\dX]", sfzhm) or check_character(sfzhm[:17]) != sfzhm[17]:
            bad.append("sfzhm")
        if bad:
            return 200, self._violation("bad values " + ", ".join(bad))
        if sfzhm in self.http_500_for:
            return 500, {"error": "boom"}
        if sfzhm in self.reject:
            return 200, {"data": {"resultCode": self.reject[sfzhm], "message": "该人属于贫困人口"}}
        if sfzhm in self.residents:
            return 200, {"data": {"resultCode": 10115, "message": "身份证已经办理过"}}
        self.enrol(sfzhm)
        if sfzhm in self.lose_answer_for:
            self.lose_answer_for.discard(sfzhm)
            return 0, {}  # enrolled, but the answer never leaves
        return 200, self._card_answer(sfzhm)

    def max_in_one_second(self) -> int:
        times = sorted(self.arrivals)
        return max((sum(1 for u in times[i:] if u - t < 1.0) for i, t in enumerate(times)), default=0)

    def count_ok_syncs(self) -> int:
        return sum(1 for m, d in self.requests if m == "syncCardInfo") - 1

    def _bind(self, app_id: str, key: str, data: dict[str, Any]) -> dict[str, Any]:
        if set(data) != {"timestamp", "sign", *BIND_KEYS}:
            return self._violation(f"bindCardInfo data keys {sorted(data)}")
        sign = md5_upper(app_id, key, data["timestamp"], data["zjlx"], data["zjhm"])
        if not key or data["sign"] != sign:
            return {"data": {"resultCode": 10105, "message": "认证字符串无效"}}
        if data["zjhm"] not in self.residents:
            return {"data": {"resultCode": 10108, "message": "身份证未办卡"}}
        return self._card_answer(data["zjhm"])

    def _img(self, app_id: str, key: str, data: dict[str, Any]) -> dict[str, Any]:
        allowed = {"timestamp", "sign", "type", "ehealthCardId", "virtualCardNum"}
        if not set(data) <= allowed or "type" not in data:
            return self._violation(f"getImg data keys {sorted(data)}")
        card_id, number = data.get("ehealthCardId", ""), data.get("virtualCardNum", "")
        if not card_id and not number:
            return self._violation("getImg without ehealthCardId and virtualCardNum")
        if not key or data["sign"] != md5_upper(app_id, key, data["timestamp"], card_id or number):
            return {"resultCode": 10105, "message": "认证字符串无效"}
        found = [c for c, n in self.residents.values() if (c == card_id if card_id else n == number)]
        if not found or found[0] in self.img_fail:
            return {"resultCode": 10109, "message": "卡号不存在"}
        # The document's own getImg answer: not wrapped in data, key spelt qRCode.
        return {"resultCode": 10000, "message": "操作成功", "qRCode": f"{found[0]}:0:{'A' * 32}",
                "img": PNG_1X1}  # fmt: skip


def _handler(state: StrictPlatform) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        disable_nagle_algorithm = True
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            method = self.path.removeprefix(PREFIX).removesuffix(".do")
            if not self.path.startswith(PREFIX) or method not in {
                "getWorkKey", "syncCardInfo", "bindCardInfo", "getImg"
            }:  # fmt: skip
                status, answer = 404, dict[str, Any]()
            else:
                try:
                    body = json.loads(raw.decode("utf-8"))
                except (ValueError, UnicodeDecodeError):
                    body = None
                if state.delay_seconds:
                    time.sleep(state.delay_seconds)
                status, answer = state.handle(method, body)
            if status == 0:  # the connection dies before the answer
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            payload = json.dumps(answer, ensure_ascii=False).encode()
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serving(state: StrictPlatform, handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[None]:
    """Serve ``state`` with ``handler`` on 127.0.0.1:<free port> in a thread; no spec violation at the end."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"
    yield
    server.shutdown()
    server.server_close()
    assert state.violations == [], state.violations


@pytest.fixture
def platform() -> Iterator[StrictPlatform]:
    """The strict platform on 127.0.0.1:<free port>, in a thread."""
    state = StrictPlatform()
    with serving(state, _handler(state)):
        yield state


# -- registers and running the command line ---------------------------------------------------------


def id_number(serial: int, *, male: bool = True, born: str = "19800101", division: str = "440604") -> str:
    first17 = f"{division}{born}{serial * 2 + (1 if male else 0):03d}"
    return first17 + check_character(first17)


HEADER = ["序号", "姓名", "性别", "民族", "出生日期", "身份证号", "联系电话", "婚姻状况", "文化程度",
          "医疗费用支付方式", "省", "市", "区县", "街道", "村/街/路"]  # fmt: skip


def person(serial: int, **overrides: str) -> dict[str, str]:
    male = serial % 2 == 0
    given = "甲乙丙丁戊己庚辛壬癸"
    row = {
        "序号": str(serial), "姓名": "测试" + given[serial // 10 % 10] + given[serial % 10],
        "性别": "男" if male else "女", "民族": "汉族",
        "出生日期": "1980-01-01", "身份证号": id_number(serial, male=male),
        "联系电话": f"139{serial:08d}", "婚姻状况": "已婚", "文化程度": "大学本科",
        "医疗费用支付方式": "城镇职工基本医疗保险", "省": "广东省", "市": "佛山市", "区县": "禅城区",
        "街道": "祖庙街道", "村/街/路": f"建设路{serial}号",
    }  # fmt: skip
    row.update(overrides)
    return row


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_xlsx(path: Path, rows: list[dict[str, str]]) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["XX社区卫生服务中心 电子健康卡申领登记表"])
    sheet.append(HEADER)
    for row in rows:
        sheet.append([row[h] for h in HEADER])
    book.save(path)
    return path


class Env:
    """Environment, paths and a runner for ``python -m pipeline``."""

    def __init__(self, tmp: Path, platform: StrictPlatform | None) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.config = tmp / "ehc.toml"
        # Quick retries so a "failed" row is given up on quickly; a fresh inbox file is taken at once.
        self.config.write_text(
            "[platform]\nmax_attempts = 2\nmax_retry_seconds = 2\nconnect_timeout = 2\nread_timeout = 5\n"
            "[inbox]\nsettle_seconds = 0\n",
            encoding="utf-8",
        )
        self.vars = {k: v for k, v in os.environ.items() if not k.startswith("EHC_")}
        self.vars.update({
            "EHC_APP_ID": APP_ID, "EHC_APP_SECRET": APP_SECRET, "EHC_ORG_CODE": ORG_CODE,
            "EHC_STATE_DIR": str(self.state), "EHC_BASE_URL": platform.base_url if platform else "",
        })  # fmt: skip
        self.outputs: list[str] = []

    def run(self, *args: str, env: dict[str, str] | None = None, config: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
        command = [sys.executable, "-m", "pipeline", *args]
        if config and args[0] in {"submit", "run", "qrcode", "check-config"}:
            command += ["--config", str(self.config)]
        variables = {**self.vars, **(env or {})}
        variables = {k: v for k, v in variables.items() if v is not None}
        done = subprocess.run(command, cwd=REPO_ROOT, env=variables, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        self.outputs += [done.stdout, done.stderr]
        return done

    def run_all(
        self, *commands: tuple[tuple[str, ...], dict[str, str]]
    ) -> list[subprocess.CompletedProcess[str]]:
        """Several independent commands at once (faster on a loaded machine)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(commands)) as pool:
            return list(pool.map(lambda item: self.run(*item[0], env=item[1]), commands))

    def popen(self, *args: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "pipeline", *args, "--config", str(self.config)]
        return subprocess.Popen(command, cwd=REPO_ROOT, env=self.vars, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip


def read_results(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def texts_of(path: Path) -> Iterator[tuple[Path, str]]:
    """Every file under ``path`` as text (xlsx/zip members unpacked)."""
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        data = file.read_bytes()
        if data[:2] == b"PK":
            with zipfile.ZipFile(file) as archive:
                for name in archive.namelist():
                    yield file / name, archive.read(name).decode("utf-8", "replace")
        else:
            yield file, data.decode("utf-8", "replace")


def assert_no_secrets(env: Env, platform: StrictPlatform, *dirs: Path) -> None:
    secrets = [APP_SECRET, *platform.issued_keys]
    places = [(Path("<stdout/stderr>"), "\n".join(env.outputs))]
    for directory in (*dirs, env.state / "logs"):
        if directory.exists():
            places += list(texts_of(directory))
    leaks = [(str(where), s[:6]) for where, text in places for s in secrets if s and s in text]
    assert leaks == []


def fatal_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a fatal error (asserts there is exactly one and it is Chinese)."""
    # Log lines of the work done before the fault may precede it; the fault itself is one line.
    lines = [line for line in done.stderr.splitlines() if line.startswith("错误")]
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1, done.stderr
    assert re.search(r"[\u4e00-\u9fff]", lines[0]), lines[0]
    assert "Traceback" not in done.stderr
    return lines[0]


# -- submission ---------------------------------------------------------------------------------------


def test_submit_statuses_card_ids_rerun_and_no_leaks(platform: StrictPlatform, tmp_path: Path) -> None:
    env = Env(tmp_path, platform)
    rows = [person(i) for i in range(1, 7)]
    bad = id_number(7)
    rows.append(person(7, 身份证号=bad[:17] + ("0" if bad[17] != "0" else "1")))  # wrong check char
    register = write_xlsx(tmp_path / "登记表.xlsx", rows)
    ids = [r["身份证号"] for r in rows]
    platform.enrol(ids[1])  # enrolled elsewhere: the platform answers 10115
    platform.reject[ids[2]] = 10156
    platform.http_500_for.add(ids[3])

    out = tmp_path / "out1"
    done = env.run("submit", str(register), "--out", str(out), "--rate", "50", "--concurrency", "4")
    assert done.returncode == 1, done.stderr
    results = {r["sfzhm"] or r["source_row"]: r for r in read_results(out)}
    by_row = [r["status"] for r in read_results(out)]
    assert by_row == ["enrolled", "already_enrolled", "rejected", "failed", "enrolled", "enrolled", "invalid"]
    for sfzhm in (ids[0], ids[4], ids[5]):
        card_id, number = platform.residents[sfzhm]
        assert (results[sfzhm]["ehealthCardId"], results[sfzhm]["virtualCardNum"]) == (card_id, number)
    assert "10156" in results[ids[2]]["result_code"]
    assert "10111" in read_results(out)[6]["result_code"]
    assert ids[6] not in platform.sent_ids()
    assert platform.count("getWorkKey") == 1

    # A rerun sends nothing for the enrolled residents, and they come back already_enrolled with their ids.
    before = Counter(platform.sent_ids())
    out2 = tmp_path / "out2"
    done = env.run("submit", str(register), "--out", str(out2), "--rate", "50")
    resent = Counter(platform.sent_ids()) - before
    assert not {ids[0], ids[4], ids[5]} & set(resent), resent
    again = {r["sfzhm"]: r for r in read_results(out2) if r["sfzhm"]}
    for sfzhm in (ids[0], ids[4], ids[5]):
        assert again[sfzhm]["status"] == "already_enrolled"
        assert again[sfzhm]["ehealthCardId"] == platform.residents[sfzhm][0]
    assert platform.count("getWorkKey") == 1  # the cached key is reused across runs

    # Logs mask ID numbers and phones; no secret or work key anywhere.
    log_text = "\n".join(text for _, text in texts_of(env.state / "logs"))
    assert log_text
    for row in rows:
        assert row["身份证号"] not in log_text and row["联系电话"] not in log_text
    assert_no_secrets(env, platform, out, out2)


def test_lookup_existing_fetches_card_ids_with_bind(platform: StrictPlatform, tmp_path: Path) -> None:
    env = Env(tmp_path, platform)
    rows = [person(1), person(2)]
    platform.enrol(rows[0]["身份证号"])
    register = write_csv(tmp_path / "名单.csv", rows)
    out = tmp_path / "out"
    done = env.run("submit", str(register), "--out", str(out), "--rate", "50", "--lookup-existing")
    assert done.returncode == 0, done.stderr
    first = read_results(out)[0]
    assert first["status"] == "already_enrolled"
    assert (first["ehealthCardId"], first["virtualCardNum"]) == platform.residents[rows[0]["身份证号"]]
    assert platform.count("bindCardInfo") == 1


def test_expired_work_key_mid_run_is_fetched_again_and_the_call_retried_once(
    platform: StrictPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    rows = [person(i) for i in range(1, 6)]
    platform.expire_after_syncs = 2
    out = tmp_path / "out"
    done = env.run("submit", str(write_csv(tmp_path / "r.csv", rows)), "--out", str(out),
                   "--rate", "4", "--concurrency", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in read_results(out)] == ["enrolled"] * 5
    assert platform.count("getWorkKey") == 2
    # Calls in flight with the expired key each get 10105 and are retried once; one new key serves them all.
    assert 6 <= platform.count("syncCardInfo") <= 5 + 4
    assert len(platform.residents) == 5 and Counter(platform.sent_ids()).most_common(1)[0][1] <= 2
    assert platform.max_in_one_second() <= 4  # getWorkKey and the retry count against --rate too
    assert_no_secrets(env, platform, out)


def test_qrcode_writes_one_png_per_enrolled_resident(platform: StrictPlatform, tmp_path: Path) -> None:
    env = Env(tmp_path, platform)
    rows = [person(1), person(2), person(3, 姓名="")]
    out, qr = tmp_path / "out", tmp_path / "qr"
    assert env.run("submit", str(write_csv(tmp_path / "r.csv", rows)), "--out", str(out),
                   "--rate", "50").returncode == 1  # fmt: skip
    done = env.run("qrcode", "--from", str(out), "--out", str(qr))
    assert done.returncode == 0, done.stderr
    pngs = sorted(qr.glob("*.png"))
    assert len(pngs) == 2 == platform.count("getImg")
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not any(r["身份证号"] in png.name for r in rows)
    assert_no_secrets(env, platform, out, qr)


def test_interrupt_writes_reports_and_exits_130(platform: StrictPlatform, tmp_path: Path) -> None:
    env = Env(tmp_path, platform)
    rows = [person(i) for i in range(1, 31)]
    platform.delay_seconds = 0.2
    out = tmp_path / "out"
    process = env.popen("submit", str(write_csv(tmp_path / "r.csv", rows)), "--out", str(out),
                        "--rate", "50", "--concurrency", "2")  # fmt: skip
    deadline = time.monotonic() + 20
    while platform.count("syncCardInfo") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    statuses = Counter(r["status"] for r in read_results(out))
    assert statuses["enrolled"] == len(platform.residents) >= 3
    assert sum(statuses.values()) == 30


# -- failures that stop a run ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_config_ok_and_each_refusal_is_one_chinese_line(
    platform: StrictPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    unreachable = f"http://127.0.0.1:{_free_port()}{PREFIX}"
    cases = [
        {},
        {"EHC_APP_SECRET": "not-the-secret"},
        {"EHC_APP_ID": "unknownapp0001"},
        {"EHC_BASE_URL": unreachable},
    ]
    # Separate state directories: side by side, the runs would share one work key cache.
    ok, wrong_secret, unknown_app, no_answer = env.run_all(
        *[
            (("check-config",), {**case, "EHC_STATE_DIR": str(tmp_path / f"state{i}")})
            for i, case in enumerate(cases)
        ]
    )
    assert ok.returncode == 0, ok.stderr
    assert platform.base_url in ok.stdout and APP_ID not in ok.stdout
    line = fatal_line(wrong_secret)
    assert "10105" in line or "10103" in line
    assert "10101" in fatal_line(unknown_app)
    fatal_line(no_answer)
    assert_no_secrets(env, platform, *(tmp_path / f"state{i}" / "logs" for i in range(len(cases))))


def test_missing_credentials_org_code_or_unknown_app_stop_submit(
    platform: StrictPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    register = str(write_csv(tmp_path / "r.csv", [person(1)]))
    cases = [
        {"EHC_APP_ID": ""},
        {"EHC_APP_SECRET": ""},
        {"EHC_ORG_CODE": ""},
        {"EHC_APP_ID": "unknownapp0001"},
    ]
    # Separate state directories: a submission holds the run lock, so these could not run side by side.
    runs = env.run_all(*[(("submit", register, "--out", str(tmp_path / f"o{i}")),
                          {**case, "EHC_STATE_DIR": str(tmp_path / f"state{i}")})
                         for i, case in enumerate(cases)])  # fmt: skip
    lines = [fatal_line(done) for done in runs]
    assert "EHC_APP_ID" in lines[0] and "EHC_APP_SECRET" in lines[1]
    assert "EHC_ORG_CODE" in lines[2] or "org_code" in lines[2]
    assert "10101" in lines[3]
    assert platform.count("syncCardInfo") == 0
    assert_no_secrets(env, platform)


def test_a_config_fault_is_exactly_one_line_on_stderr(tmp_path: Path) -> None:
    env = Env(tmp_path, None)
    bad = tmp_path / "bad.toml"
    bad.write_text('[platform]\napp_secert = "x"\n', encoding="utf-8")
    done = env.run("check-config", "--config", str(bad), config=False)
    assert done.returncode == 2
    assert [line for line in done.stderr.splitlines() if line.strip()] == [fatal_line(done)]


def test_a_mistyped_secret_is_not_echoed(tmp_path: Path) -> None:
    env = Env(tmp_path, None)
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[platform]\napp_secret = ["{APP_SECRET}"]\n', encoding="utf-8")
    done = env.run("check-config", "--config", str(bad), config=False, env={"EHC_APP_SECRET": ""})
    assert done.returncode == 2
    assert APP_SECRET not in done.stdout + done.stderr


def test_app_id_is_masked_in_logs(platform: StrictPlatform, tmp_path: Path) -> None:
    env = Env(tmp_path, platform)
    done = env.run("check-config")
    assert done.returncode == 0, done.stderr
    log_text = "\n".join(text for _, text in texts_of(env.state / "logs"))
    assert APP_ID not in done.stderr + log_text


def test_qrcode_exit_code_says_when_a_picture_is_missing(platform: StrictPlatform, tmp_path: Path) -> None:
    env = Env(tmp_path, platform)
    out, qr = tmp_path / "out", tmp_path / "qr"
    register = write_csv(tmp_path / "r.csv", [person(1), person(2)])
    assert env.run("submit", str(register), "--out", str(out), "--rate", "50").returncode == 0
    platform.img_fail.add(platform.residents[person(2)["身份证号"]][0])
    done = env.run("qrcode", "--from", str(out), "--out", str(qr))
    assert len(list(qr.glob("*.png"))) == 1
    assert done.returncode == 1


def test_lost_answer_is_told_truthfully_and_qrcode_names_the_resident_until_looked_up(
    platform: StrictPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    rows = [person(i) for i in range(1, 4)]
    lost = rows[1]["身份证号"]
    platform.lose_answer_for.add(lost)
    register = write_csv(tmp_path / "r.csv", rows)
    out, qr = tmp_path / "out", tmp_path / "qr"
    done = env.run("submit", str(register), "--out", str(out), "--rate", "50", "--concurrency", "1")
    assert done.returncode == 0, done.stderr
    row = read_results(out)[1]
    assert row["status"] == "already_enrolled" and row["ehealthCardId"] == ""
    assert row["message"].startswith("平台答复已办理：上次发送可能已成功但答复丢失"), row["message"]
    assert "别处" not in row["message"]

    done = env.run("qrcode", "--from", str(out), "--out", str(qr))
    assert done.returncode == 1 and len(list(qr.glob("*.png"))) == 2
    assert f"{lost[:6]}********{lost[-4:]}" in done.stdout
    assert not any(r["身份证号"] in done.stdout + done.stderr for r in rows)

    done = env.run("submit", str(register), "--out", str(tmp_path / "again"), "--lookup-existing")
    assert done.returncode == 0, done.stderr
    assert platform.count("bindCardInfo") == 1 and len(platform.residents) == 3
    assert Counter(platform.sent_ids())[lost] == 2, "resent once after the lost answer, never again"
    done = env.run("qrcode", "--from", str(out), "--out", str(tmp_path / "qr2"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list((tmp_path / "qr2").glob("*.png"))) == 3


def test_429_slows_the_run_down_and_fails_no_row(platform: StrictPlatform, tmp_path: Path) -> None:
    env = Env(tmp_path, platform)
    platform.rate_limit = 4
    register = write_csv(tmp_path / "r.csv", [person(i) for i in range(1, 17)])
    out = tmp_path / "out"
    done = env.run("submit", str(register), "--out", str(out), "--rate", "20", "--concurrency", "4")
    assert done.returncode == 0, done.stderr
    assert {r["status"] for r in read_results(out)} == {"enrolled"}
    assert 0 < platform.throttled < 16, "turned away now and then, not on every call"


# -- nightly inbox runs --------------------------------------------------------------------------------


def test_inbox_run_moves_files_writes_folders_and_second_run_does_nothing(
    platform: StrictPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    inbox, out = tmp_path / "inbox", tmp_path / "results"
    inbox.mkdir()
    write_csv(inbox / "中心甲.csv", [person(1), person(2)])
    write_xlsx(inbox / "中心乙.xlsx", [person(3), person(4, 民族="穿青人")])
    (inbox / "坏文件.xlsx").write_text("this is not a workbook", encoding="utf-8")

    dry = env.run("run", "--inbox", str(inbox), "--out", str(tmp_path / "dry"), "--dry-run")
    assert dry.returncode == 1, dry.stderr
    assert platform.count("syncCardInfo") == 0 and sorted(p.name for p in inbox.iterdir()) == [
        "中心乙.xlsx", "中心甲.csv", "坏文件.xlsx"
    ]  # fmt: skip

    done = env.run("run", "--inbox", str(inbox), "--out", str(out))
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["中心乙.xlsx", "中心甲.csv"]
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == ["坏文件.xlsx", "坏文件.xlsx.reason.txt"]
    assert (inbox / "failed" / "坏文件.xlsx.reason.txt").read_text(encoding="utf-8").strip()
    day = out / datetime.date.today().isoformat()
    for stem in ("中心甲", "中心乙"):
        assert {"results.xlsx", "errors.xlsx", "results.csv"} <= {p.name for p in (day / stem).iterdir()}
    assert [r["status"] for r in read_results(day / "中心乙")] == ["enrolled", "invalid"]
    summary = json.loads((day / "summary.json").read_text(encoding="utf-8"))
    assert summary["exit_code"] == 1
    assert summary["totals"]["statuses"] == {"enrolled": 3, "invalid": 1}
    assert {f["name"]: f["status"] for f in summary["files"]} == {
        "中心甲.csv": "processed", "中心乙.xlsx": "processed", "坏文件.xlsx": "failed"
    }  # fmt: skip
    assert platform.count("syncCardInfo") == 3

    again = env.run("run", "--inbox", str(inbox), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert platform.count("syncCardInfo") == 3
    assert_no_secrets(env, platform, out, inbox)


def test_second_concurrent_run_exits_3(platform: StrictPlatform, tmp_path: Path) -> None:
    env = Env(tmp_path, platform)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    # 40 residents at 5 a second: the first run holds the lock for 8 s, longer than a loaded
    # machine takes to start the second.
    write_csv(inbox / "a.csv", [person(i) for i in range(1, 41)])
    platform.delay_seconds = 0.3
    first = env.popen("run", "--inbox", str(inbox), "--out", str(tmp_path / "out"))
    deadline = time.monotonic() + 20
    while platform.count("syncCardInfo") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    second = env.run("run", "--inbox", str(inbox), "--out", str(tmp_path / "out"))
    platform.delay_seconds = 0
    _, err = first.communicate(timeout=30)
    assert second.returncode == 3, second.stderr + "\nFIRST:\n" + err
    assert first.returncode == 0


# -- the bundled sandbox, judged against the same document ------------------------------------------


@pytest.fixture(scope="module")
def sandbox_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path = tmp_path_factory.mktemp("sandbox")
    command = [sys.executable, "-m", "pipeline", "sandbox", "--port", "0", "--state", str(tmp_path / "sb.db"),
               "--app", f"{APP_ID}:{APP_SECRET}"]  # fmt: skip
    variables = {k: v for k, v in os.environ.items() if not k.startswith("EHC_")}
    variables["EHC_STATE_DIR"] = str(tmp_path / "sbstate")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=variables, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    url = next(word for word in line.split() if word.startswith("http://"))
    yield url if url.endswith("/") else url + "/"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)
    process.stdout.close()


def _envelope(app_id: str, data: dict[str, Any]) -> dict[str, Any]:
    app = {"termId": "", "version": "v1.1", "appVersion": "1.1", "appPackageName": "qa",
           "digestType": "", "encType": ""}  # fmt: skip
    return {"appId": app_id, "app": app, "data": data}


def _code(answer: requests.Response) -> int:
    document = answer.json()
    return int(document.get("data", document)["resultCode"])


SANDBOX_PEOPLE = {"xm": "测试", "xb": "1", "mzdm": "01", "csrq": "19800101", "sfzhm": "", "zjlx": "01",
                  "zjhm": "", "jkdah": "", "xnhkh": "", "fyzhdm": "", "xldm": "", "zydm": "", "dzlb": "2",
                  "dzsf": "广东省", "dzs": "佛山市", "dzqx": "禅城区", "dzxz": "祖庙街道", "dzc": "",
                  "brdh": "13900000001", "ylfyzffs": "01"}  # fmt: skip
SANDBOX_CARD = {"klx": "3", "kh": "", "fksj": "", "orgCode": ORG_CODE, "yhkh": "", "isRealName": "0"}


class SandboxCaller:
    """Hand-made requests to the sandbox, signed from the document's rules."""

    def __init__(self, url: str) -> None:
        self.url, self.session = url, requests.Session()

    def post(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.session.post(f"{self.url}{method}.do", json=body, timeout=10)
        assert answer.status_code == 200
        return answer.json()

    def code(self, method: str, body: dict[str, Any]) -> int:
        document = self.post(method, body)
        return int(document.get("data", document)["resultCode"])

    def work_key(self) -> str:
        now = str(int(time.time() * 1000))
        answer = self.post(
            "getWorkKey", _envelope(APP_ID, {"timestamp": now, "sign": md5_upper(APP_ID, APP_SECRET, now)})
        )
        assert answer["data"]["resultCode"] in (10000, "10000")
        return str(answer["data"]["workKey"])

    def sync(self, people: dict[str, Any], key: str, *, qr_type: Any = "0") -> int:
        stamp = str(int(time.time() * 1000))
        data = {"timestamp": stamp, "type": qr_type, "sign": md5_upper(APP_ID, key, stamp, str(qr_type)),
                "cardInfo": SANDBOX_CARD, "peopleInfo": people}  # fmt: skip
        return self.code("syncCardInfo", _envelope(APP_ID, data))


def test_sandbox_is_faithful(sandbox_url: str) -> None:
    call = SandboxCaller(sandbox_url)
    now = str(int(time.time() * 1000))
    # A wrong getWorkKey sign means a wrong secret: 10103 (密码错误) or 10105 both name it.
    assert call.code("getWorkKey", _envelope(APP_ID, {"timestamp": now, "sign": "0" * 32})) in (10103, 10105)
    stranger = {"timestamp": now, "sign": md5_upper("nobody", APP_SECRET, now)}
    assert call.code("getWorkKey", _envelope("nobody", stranger)) == 10101
    stale = str(int(time.time() * 1000) - 3_600_000)
    assert (
        call.code(
            "getWorkKey",
            _envelope(APP_ID, {"timestamp": stale, "sign": md5_upper(APP_ID, APP_SECRET, stale)}),
        )
        != 10000
    )
    key = call.work_key()
    sfzhm = id_number(5)
    people = {**SANDBOX_PEOPLE, "sfzhm": sfzhm, "zjhm": sfzhm}
    assert call.sync(people, "F" * 32) == 10105
    assert call.sync({k: v for k, v in people.items() if k != "dzc"}, key) == 10110
    assert call.sync({**people, "xb": "3"}, key) == 10113
    assert call.sync({**people, "mzdm": "57"}, key) == 10123
    assert call.sync(people, key) == 10000
    assert call.sync(people, key) == 10115

    # bindCardInfo answers the card ids of enrolled residents (10108 otherwise); getImg is unwrapped, qRCode.
    stamp = str(int(time.time() * 1000))
    bind = {"timestamp": stamp, "sign": md5_upper(APP_ID, key, stamp, "01", sfzhm), "type": "0", "zjlx": "01",
            "zjhm": sfzhm, "xm": people["xm"], "brdh": people["brdh"], "bindType": "1", "bindZjlx": "",
            "bindZjhm": ""}  # fmt: skip
    answer = call.post("bindCardInfo", _envelope(APP_ID, bind))["data"]
    card_id = answer["ehealthCardId"]
    assert re.fullmatch(r"[0-9A-F]{64}", card_id) and answer["resultCode"] in (10000, "10000")
    other = id_number(6)
    bind_other = {**bind, "zjhm": other, "sign": md5_upper(APP_ID, key, stamp, "01", other)}
    assert call.code("bindCardInfo", _envelope(APP_ID, bind_other)) == 10108
    img = {"timestamp": stamp, "sign": md5_upper(APP_ID, key, stamp, card_id), "ehealthCardId": card_id,
           "type": "0"}  # fmt: skip
    picture = call.post("getImg", _envelope(APP_ID, img))
    assert picture["qRCode"].startswith(f"{card_id}:0:")
    assert base64.b64decode(picture["img"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_sandbox_requires_every_people_key(sandbox_url: str) -> None:
    call = SandboxCaller(sandbox_url)
    sfzhm = id_number(8)
    people = {**SANDBOX_PEOPLE, "sfzhm": sfzhm, "zjhm": sfzhm}
    assert call.sync({k: v for k, v in people.items() if k != "xnhkh"}, call.work_key()) == 10110


def test_sandbox_refuses_non_string_values(sandbox_url: str) -> None:
    call = SandboxCaller(sandbox_url)
    sfzhm = id_number(9)
    people = {**SANDBOX_PEOPLE, "sfzhm": sfzhm, "zjhm": sfzhm, "xb": 1}
    assert call.sync(people, call.work_key()) == 10110
