"""``ehc submit`` attacked from outside: a strict platform that misbehaves on cue, signals, full disks.

The platform is the independent one of ``test_outside_platform`` (written from
the interface document alone, sharing no code with ``pipeline``), with two
hooks: ``before`` may answer a request instead of the platform, ``after`` may
replace or cut the platform's answer once it has acted.  The tests only run
``python -m pipeline ...`` in subprocesses and judge the documented outputs:
exit codes, the one-line Chinese error, ``results.csv``, and what the platform
saw.
"""

from __future__ import annotations

import http.server
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_outside_platform import (
    PREFIX,
    REPO_ROOT,
    Env,
    StrictPlatform,
    _handler,
    assert_no_secrets,
    fatal_line,
    person,
    read_results,
    serving,
    write_csv,
)

#: What a hook may do instead of the platform's own answer: ("json", status, body),
#: ("raw", status, headers, bytes) or ("cut", body bytes): half the body, then a reset.
Action = tuple[Any, ...]


class HookedPlatform(StrictPlatform):
    """The strict platform, with hooks that misbehave for chosen requests."""

    def __init__(self) -> None:
        super().__init__()
        #: (method, sfzhm) -> an action instead of the platform, or None
        self.before: Callable[[str, str], Action | None] | None = None
        #: (method, sfzhm, status, answer) -> an action replacing the platform's answer, or None
        self.after: Callable[[str, str, int, dict[str, Any]], Action | None] | None = None
        #: sfzhm -> result codes the platform itself answered to syncCardInfo
        self.answered: dict[str, list[Any]] = {}


def _hooked_handler(state: HookedPlatform) -> type[http.server.BaseHTTPRequestHandler]:
    base = _handler(state)

    class Handler(base):  # type: ignore[valid-type,misc]
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            method = self.path.removeprefix(PREFIX).removesuffix(".do")
            try:
                body = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                body = None
            data = body.get("data") if isinstance(body, dict) else None
            data = data if isinstance(data, dict) else {}
            people = data.get("peopleInfo") if isinstance(data.get("peopleInfo"), dict) else {}
            sfzhm = str(people.get("sfzhm") or data.get("zjhm") or "")
            action = state.before(method, sfzhm) if state.before else None
            if action is None:
                if state.delay_seconds:
                    time.sleep(state.delay_seconds)
                status, answer = state.handle(method, body)
                if method == "syncCardInfo":
                    with state.lock:
                        state.answered.setdefault(sfzhm, []).append(answer.get("data", {}).get("resultCode"))
                action = state.after(method, sfzhm, status, answer) if state.after else None
                action = action or ("json", status, answer)
            try:
                self._act(action)
            except OSError:  # the client went away (it was killed): nothing to answer
                self.close_connection = True

        def _act(self, action: Action) -> None:
            kind = action[0]
            if kind == "json":
                status, answer = action[1], action[2]
                payload = json.dumps(answer, ensure_ascii=False).encode()
                headers = {"Content-Type": "application/json;charset=UTF-8"}
            elif kind == "raw":
                status, headers, payload = action[1], action[2], action[3]
            else:  # "cut": the answer stops half way and the connection is reset
                payload = action[1]
                self.send_response(200)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def platform() -> Iterator[HookedPlatform]:
    """The hooked strict platform on 127.0.0.1:<free port>, in a thread."""
    state = HookedPlatform()
    with serving(state, _hooked_handler(state)):
        yield state


def _popen(env: Env, *args: str, **options: Any) -> subprocess.Popen[str]:
    command = [sys.executable, *options.pop("python_options", ()), "-m", "pipeline", *args]
    command += ["--config", str(env.config)]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env.vars, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **options)  # fmt: skip


def _assert_truthful(platform: HookedPlatform, rows: list[dict[str, str]], count: int) -> None:
    """Every input row once with a final status, and no row claims an answer the platform did not give."""
    assert len(rows) == count and len({r["source_row"] for r in rows}) == count
    for row in rows:
        assert row["status"] not in ("", "valid"), row
        sfzhm = row["sfzhm"]
        if row["status"] in ("enrolled", "already_enrolled"):
            assert sfzhm in platform.residents, row
        if row["status"] == "enrolled":
            assert 10000 in platform.answered.get(sfzhm, []), row
        if row["ehealthCardId"]:
            assert row["ehealthCardId"] == platform.residents[sfzhm][0], row


# -- answers that are not what the document promises ----------------------------------------------------


def test_success_without_card_ids_says_so_and_a_lookup_finds_them(
    platform: HookedPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    rows = [person(i) for i in range(1, 4)]
    bare = rows[1]["身份证号"]

    def without_ids(method: str, sfzhm: str, status: int, answer: dict[str, Any]) -> Action | None:
        if method == "syncCardInfo" and sfzhm == bare:
            return ("json", 200, {"data": {"resultCode": 10000, "message": "操作成功"}})
        return None

    platform.after = without_ids
    register = write_csv(tmp_path / "r.csv", rows)
    out = tmp_path / "out"
    done = env.run("submit", str(register), "--out", str(out), "--rate", "50")
    assert done.returncode == 0, done.stderr
    results = read_results(out)
    _assert_truthful(platform, results, 3)
    row = results[1]
    assert row["status"] == "enrolled" and row["ehealthCardId"] == ""
    # The platform said 10000 but gave no card: the clerk is told, and how to get the ids.
    assert "没有卡号" in row["message"] and "--lookup-existing" in row["message"], row["message"]

    again = tmp_path / "again"
    done = env.run("submit", str(register), "--out", str(again), "--rate", "50", "--lookup-existing")
    assert done.returncode == 0, done.stderr
    row = read_results(again)[1]
    assert row["status"] == "already_enrolled"
    assert (row["ehealthCardId"], row["virtualCardNum"]) == platform.residents[bare]
    assert Counter(platform.sent_ids())[bare] == 1 and platform.count("bindCardInfo") == 1


def test_success_without_card_ids_is_looked_up_in_the_same_run_when_allowed(
    platform: HookedPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    rows = [person(i) for i in range(1, 3)]
    platform.after = lambda method, sfzhm, status, answer: (
        ("json", 200, {"data": {"resultCode": "10000", "message": "操作成功", "workKey": "ABCDEF"}})
        if method == "syncCardInfo" else None
    )  # fmt: skip
    out = tmp_path / "out"
    done = env.run("submit", str(write_csv(tmp_path / "r.csv", rows)), "--out", str(out), "--rate", "50",
                   "--lookup-existing")  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = read_results(out)
    _assert_truthful(platform, results, 2)
    for row in results:
        assert row["status"] == "enrolled"
        assert (row["ehealthCardId"], row["virtualCardNum"]) == platform.residents[row["sfzhm"]]
    assert platform.count("bindCardInfo") == 2 and len(platform.sent_ids()) == 2


def test_an_answer_naming_another_residents_card_is_not_taken_for_this_one(
    platform: HookedPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    rows = [person(i) for i in range(1, 4)]
    first, third = rows[0]["身份证号"], rows[2]["身份证号"]

    def first_ones_answer(method: str, sfzhm: str, status: int, answer: dict[str, Any]) -> Action | None:
        if method == "syncCardInfo" and sfzhm == third:  # enrolled, but the answer of another request
            return ("json", 200, platform._card_answer(first))
        return None

    platform.after = first_ones_answer
    register = write_csv(tmp_path / "r.csv", rows)
    out = tmp_path / "out"
    done = env.run("submit", str(register), "--out", str(out), "--rate", "50", "--concurrency", "1")
    assert done.returncode == 1, done.stderr
    results = read_results(out)
    _assert_truthful(platform, results, 3)
    row = results[2]
    assert row["status"] == "failed" and row["ehealthCardId"] == "", row
    assert "另一位居民" in row["message"], row["message"]

    # The resend meets the enrolment that answer hid, and a lookup finds the resident's own card.
    platform.after = None
    again = tmp_path / "again"
    done = env.run("submit", str(register), "--out", str(again), "--lookup-existing")
    assert done.returncode == 0, done.stderr
    row = read_results(again)[2]
    assert row["status"] == "already_enrolled"
    assert row["message"].startswith("平台答复已办理：上次发送可能已成功"), row["message"]
    assert (row["ehealthCardId"], row["virtualCardNum"]) == platform.residents[third]
    done = env.run("qrcode", "--from", str(again), "--out", str(tmp_path / "qr"))
    assert done.returncode == 0, done.stderr
    assert Counter(platform.sent_ids())[third] == 2 and len(platform.residents) == 3


def test_a_code_the_document_does_not_list_is_no_verdict_and_a_10115_after_a_refusal_says_so(
    platform: HookedPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    rows = [person(i) for i in range(1, 4)]
    odd, refused = rows[1]["身份证号"], rows[2]["身份证号"]
    platform.reject[refused] = 10156
    platform.after = lambda method, sfzhm, status, answer: (
        ("json", 200, {"data": {"resultCode": -1, "message": "系统异常"}})
        if method == "syncCardInfo" and sfzhm == odd else None  # enrolled, then "system error"
    )  # fmt: skip
    register = write_csv(tmp_path / "r.csv", rows)
    out = tmp_path / "out"
    done = env.run("submit", str(register), "--out", str(out), "--rate", "50")
    assert done.returncode == 1, done.stderr
    results = read_results(out)
    _assert_truthful(platform, results, 3)
    assert results[1]["status"] == "failed" and results[1]["result_code"] == "-1", results[1]
    assert "接口文档中没有的结果代码 -1（系统异常）" in results[1]["message"]
    assert results[2]["status"] == "rejected" and "10156" in results[2]["result_code"]

    # Later the refused resident is enrolled elsewhere; the resend of both meets 10115.
    platform.after = None
    del platform.reject[refused]
    platform.enrol(refused)
    again = tmp_path / "again"
    done = env.run("submit", str(register), "--out", str(again), "--rate", "50")
    assert done.returncode == 0, done.stderr
    second = read_results(again)
    assert second[1]["message"].startswith("平台答复已办理：上次发送可能已成功但答复丢失"), second[1]
    assert second[2]["status"] == "already_enrolled"
    assert "没有此人的发送记录" not in second[2]["message"] and "拒绝" in second[2]["message"], second[2]


# -- signals at every moment ----------------------------------------------------------------------------


def test_sigterm_while_the_work_key_is_fetched_writes_the_reports_and_exits_130(
    platform: HookedPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    rows = [person(i) for i in range(1, 5)]
    process: dict[str, subprocess.Popen[str]] = {}

    def term_then_answer(method: str, sfzhm: str) -> Action | None:
        if method == "getWorkKey":  # the dry run is over and nothing has been sent yet
            process["run"].send_signal(signal.SIGTERM)
            time.sleep(1.0)
        return None

    platform.before = term_then_answer
    out = tmp_path / "out"
    process["run"] = _popen(env, "submit", str(write_csv(tmp_path / "r.csv", rows)), "--out", str(out))
    _, stderr = process["run"].communicate(timeout=60)
    assert process["run"].returncode == 130, stderr
    assert "Traceback" not in stderr
    results = read_results(out)
    _assert_truthful(platform, results, 4)
    assert {r["status"] for r in results} == {"failed"} and platform.count("syncCardInfo") == 0
    assert all("未发送" in r["message"] for r in results)


def test_sigterm_during_the_last_call_keeps_its_answer_and_the_rerun_sends_nobody_again(
    platform: HookedPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    rows = [person(i) for i in range(1, 5)]
    last = rows[-1]["身份证号"]
    process: dict[str, subprocess.Popen[str]] = {}

    def signal_then_answer(method: str, sfzhm: str, status: int, answer: dict[str, Any]) -> Action | None:
        if method == "syncCardInfo" and sfzhm == last:  # answered by the platform, not yet by the wire
            process["run"].send_signal(signal.SIGTERM)
            time.sleep(0.3)
        return None

    platform.after = signal_then_answer
    register = write_csv(tmp_path / "r.csv", rows)
    out = tmp_path / "out"
    process["run"] = _popen(env, "submit", str(register), "--out", str(out), "--concurrency", "1")
    _, stderr = process["run"].communicate(timeout=60)
    assert process["run"].returncode == 130, stderr
    results = read_results(out)
    _assert_truthful(platform, results, 4)
    assert [r["status"] for r in results] == ["enrolled"] * 4

    done = env.run("submit", str(register), "--out", str(tmp_path / "again"))
    assert done.returncode == 0, done.stderr
    assert {r["status"] for r in read_results(tmp_path / "again")} == {"already_enrolled"}
    assert Counter(platform.sent_ids()).most_common(1)[0][1] == 1


def test_an_inbox_run_stopped_mid_file_counts_in_its_summary_what_its_reports_say(
    platform: HookedPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    inbox, results = tmp_path / "inbox", tmp_path / "results"
    inbox.mkdir()
    rows = [person(i) for i in range(1, 5)]
    write_csv(inbox / "a.csv", rows)
    process: dict[str, subprocess.Popen[str]] = {}

    def stop_at_the_third(method: str, sfzhm: str, status: int, answer: dict[str, Any]) -> Action | None:
        if method == "syncCardInfo" and sfzhm == rows[2]["身份证号"]:
            process["run"].send_signal(signal.SIGTERM)
            time.sleep(0.3)
        return None

    platform.after = stop_at_the_third
    (tmp_path / "ehc.toml").write_text(
        env.config.read_text(encoding="utf-8") + "[submit]\nrate = 50\nconcurrency = 1\n", encoding="utf-8"
    )
    process["run"] = _popen(env, "run", "--inbox", str(inbox), "--out", str(results))
    _, stderr = process["run"].communicate(timeout=60)
    assert process["run"].returncode == 130, stderr
    (day,) = [path for path in results.iterdir() if path.is_dir()]  # beside it: last-summary.json
    written = read_results(day / "a")
    _assert_truthful(platform, written, 4)
    summary = json.loads((day / "summary.json").read_text(encoding="utf-8"))
    (entry,) = summary["files"]
    assert entry["status"] == "interrupted" and entry["rows"] == 4
    assert entry["statuses"] == dict(Counter(r["status"] for r in written)) == {"enrolled": 3, "failed": 1}
    assert summary["totals"]["statuses"] == entry["statuses"] and (inbox / "a.csv").exists()


def _interrupted_module(tmp_path: Path, name: str, source: str) -> str:
    """Run ``source`` as ``python -m name`` (it runs ``pipeline`` in its own way), which must end with
    exit 130; what it printed on stderr."""
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}
    done = subprocess.run([sys.executable, "-m", name], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 130, (done.returncode, done.stderr[-500:])
    return done.stderr


def test_python_m_pipeline_exits_130_after_a_ctrl_c_handled_inside_code_run_from_a_string(
    tmp_path: Path,
) -> None:
    """CPython ends ``-m`` by SIGINT after a Ctrl-C met in exec'd code (a dataclass being made)."""
    stderr = _interrupted_module(
        tmp_path,
        "interrupted_start",
        "import runpy\n"
        "import pipeline.cli\n"
        "def main():\n"
        "    exec('raise KeyboardInterrupt')  # as a Ctrl-C landing in a dataclass's generated code\n"
        "pipeline.cli.main = main\n"
        "runpy.run_module('pipeline', run_name='__main__', alter_sys=True)\n",
    )
    assert stderr.strip() == "已中断。"


@pytest.mark.parametrize("where", ["importing", "command"])
def test_a_ctrl_c_python_wraps_as_a_class_is_made_is_exit_130_not_a_fault(tmp_path: Path, where: str) -> None:
    """A Ctrl-C in a dataclass field's ``__set_name__`` (pipeline.config being imported) reaches the caller
    as a RuntimeError caused by it: the command ended with a traceback and exit 1, or 程序内部错误 and 2."""
    stderr = _interrupted_module(
        tmp_path,
        "wrapped_interrupt",
        "import runpy, sys\n"
        "import pipeline.cli\n"
        "class Field:\n"
        "    def __set_name__(self, owner, name):\n"
        "        raise KeyboardInterrupt  # where the signal landed\n"
        "def made(*args):\n"
        "    class Settings:\n"
        "        app_secret = Field()\n"
        f"if {where!r} == 'importing':\n"
        "    pipeline.cli.main = made\n"
        "else:\n"
        "    pipeline.cli._COMMANDS['validate'] = made\n"
        "sys.argv[1:] = ['validate', 'r.csv', '--out', 'out']\n"
        "runpy.run_module('pipeline', run_name='__main__', alter_sys=True)\n",
    )
    assert stderr.strip().splitlines()[-1] == "已中断。" and "Traceback" not in stderr


def test_a_ctrl_c_that_strikes_inside_a_callback_still_stops_the_command(tmp_path: Path) -> None:
    """Python lost a Ctrl-C whose handler ran in a weakref callback (importlib's module locks have one):
    "Exception ignored ... KeyboardInterrupt" was printed and the run went on to its end, exit 1."""
    stderr = _interrupted_module(
        tmp_path,
        "lost_interrupt",
        "import runpy, sys, time, weakref\n"
        "import pipeline.cli\n"
        "class Lock:\n"
        "    pass\n"
        "def main():\n"
        "    def callback(reference):\n"
        "        raise KeyboardInterrupt  # where the signal's handler ran\n"
        "    lock = Lock()\n"
        "    reference = weakref.ref(lock, callback)\n"
        "    del lock\n"
        "    time.sleep(20)  # the rest of the run\n"
        "    return 0\n"
        "pipeline.cli.main = main\n"
        "runpy.run_module('pipeline', run_name='__main__', alter_sys=True)\n",
    )
    assert stderr.strip() == "已中断。"


def test_a_sigterm_that_cuts_asyncios_import_short_is_exit_130_without_a_traceback(tmp_path: Path) -> None:
    """The interrupt lands in asyncio's import (loguru needs it): the half-imported package's leftovers
    made the exit's flushing of the logs import it again, and NameError ended the command with exit 1."""
    stderr = _interrupted_module(
        tmp_path,
        "interrupted_import",
        "import runpy, sys\n"
        "class Interrupting:\n"
        "    fired = False\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'asyncio.events' and not Interrupting.fired:  # after asyncio.coroutines\n"
        "            Interrupting.fired = True\n"
        "            raise KeyboardInterrupt  # what SIGTERM becomes there\n"
        "sys.meta_path.insert(0, Interrupting())\n"
        "sys.argv[1:] = ['validate', 'r.csv', '--out', 'out']\n"
        "runpy.run_module('pipeline', run_name='__main__', alter_sys=True)\n",
    )
    assert stderr.strip() == "已中断。"


def test_a_sigterm_after_the_imports_and_before_the_commands_own_handling_is_exit_130(tmp_path: Path) -> None:
    """``systemctl stop`` while the settings are read or the lock taken: the default action of SIGTERM
    ended the process (-15), not the documented 130."""
    stderr = _interrupted_module(
        tmp_path,
        "stopped_early",
        "import os, runpy, signal, sys, time\n"
        "import pipeline.cli\n"
        "def settings(args):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "pipeline.cli._settings = settings\n"
        "sys.argv[1:] = ['run', '--inbox', '.']\n"
        "runpy.run_module('pipeline', run_name='__main__', alter_sys=True)\n",
    )
    assert stderr.strip() == "已中断。"


def test_ctrl_c_while_the_program_starts_is_one_line_and_exit_130(tmp_path: Path) -> None:
    env = Env(tmp_path, None)
    # Long enough that the run is still going when the signal comes, however late a loaded machine lets
    # this test read the line below (a run already over ignores signals while it exits with its code).
    register = write_csv(tmp_path / "r.csv", [person(serial % 400 + 1) for serial in range(40_000)])
    # -X importtime prints a line as each module is imported: pipeline.errors comes just before the
    # second or so of importing the command line (pandas, pyarrow ...), when Ctrl-C printed a traceback.
    process = _popen(env, "validate", str(register), "--out", str(tmp_path / "out"),
                     python_options=("-X", "importtime"))  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if line.rstrip().endswith("pipeline.errors"):
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-2000:]


# -- full disks -------------------------------------------------------------------------------------------


def test_a_full_disk_under_out_before_sending_is_one_chinese_line_and_nothing_is_sent(
    platform: HookedPlatform, tmp_path: Path
) -> None:
    env = Env(tmp_path, platform)
    rows = [person(i) for i in range(1, 301)]
    register = write_csv(tmp_path / "r.csv", rows)
    out = tmp_path / "out"
    limit = 24_000  # the checked rows kept between the two passes need more

    def small_files() -> None:  # every write past this size fails (EFBIG), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    process = _popen(env, "submit", str(register), "--out", str(out), preexec_fn=small_files)
    done = subprocess.CompletedProcess(process.args, 0, *process.communicate(timeout=60))
    done.returncode = process.returncode
    line = fatal_line(done)
    assert "程序内部错误" not in line and str(out) in line, line
    assert platform.count("syncCardInfo") == 0
    assert_no_secrets(env, platform)
