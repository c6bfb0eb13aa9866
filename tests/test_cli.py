"""The command line itself: option errors, exit codes, no tracebacks."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from submit_helpers import make_id, resident, write_register

from pipeline import cli


def test_missing_arguments_exit_2_with_one_chinese_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["validate"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("错误：") and "\n" not in err


def test_unknown_option_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["submit", "x.csv", "--out", "o", "--rate", "-3"])
    assert stopped.value.code == 2
    assert "应为正数" in capsys.readouterr().err


def test_missing_file_is_fatal_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["validate", str(tmp_path / "nope.xlsx"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("错误：")]
    assert len(lines) == 1 and "nope.xlsx" in lines[0]


@pytest.mark.parametrize("command", ["validate", "qrcode"])
def test_a_path_too_long_for_the_system_is_one_chinese_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    # Asking whether such a folder exists raised OSError (ENAMETOOLONG): 程序内部错误（OSError）.
    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path / "state"))
    register = write_register(tmp_path / "名单.csv", [resident(make_id(1))])
    too_long = str(tmp_path / "/".join(["很长的文件夹名" * 10] * 40))
    argv = {
        "validate": ["validate", str(register), "--out", too_long],
        "qrcode": ["qrcode", "--from", too_long, "--out", str(tmp_path / "qr")],
    }[command]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "内部错误" not in err and "\n" not in err and "路径太长" in err, err


@pytest.mark.parametrize("command", ["validate", "submit"])
@pytest.mark.parametrize("name", ["results.csv", "errors.xlsx", "annotated_名单.xlsx"])
def test_a_register_named_like_a_report_in_the_output_folder_is_never_overwritten(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    name: str,
) -> None:
    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path / "state"))
    sample = (
        REPO_ROOT / "sample_data" / ("居民名单_GBK.csv" if name.endswith(".csv") else "社区居民登记表.xlsx")
    )
    out = tmp_path / "out"
    out.mkdir()
    register = out / name
    register.write_bytes(sample.read_bytes())
    code = cli.main([command, str(register), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "覆盖" in err and "--out" in err, err
    assert register.read_bytes() == sample.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing written, nothing sent


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["validate", str(tmp_path / "nope.xlsx"), "--out", str(tmp_path / "o"), "--debug"])
    assert code == 2
    assert "Traceback" in capsys.readouterr().err


def test_bad_config_file_is_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ehc.toml"
    config.write_text("[platform]\nrate = [", encoding="utf-8")
    register = tmp_path / "r.csv"
    register.write_text("姓名,身份证号\n", encoding="utf-8")
    code = cli.main(["validate", str(register), "--out", str(tmp_path / "o"), "--config", str(config)])
    assert code == 2
    assert "配置文件" in capsys.readouterr().err


def test_internal_errors_become_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr("pipeline.dryrun.run_validate", explode)
    code = cli.main(["validate", str(tmp_path / "a.csv"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "--debug" in err


# -- the command line in Chinese ---------------------------------------------------------------------

COMMANDS = (
    "validate", "submit", "run", "qrcode", "check-config", "serve", "users", "users add", "users passwd",
    "users disable", "users enable", "centres", "centres add", "sandbox",
)  # fmt: skip


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_of_every_command_is_chinese_with_an_example_and_the_exit_codes(
    command: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main([*command.split(), "--help"] if command else ["--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("用法：ehc")
    assert "示例：" in text and "退出码：" in text and "\n  0 " in text and "\n  2 " in text
    for english in (
        "usage:",
        "show this help message",
        "positional arguments",
        "options:",
        "optional arguments",
    ):
        assert english not in text
    if command:
        assert f"  ehc {command}" in text  # the example runs this command
    option_lines = [line for line in text.splitlines() if line.startswith("  -")]
    assert option_lines and all(re.search(r"[\u4e00-\u9fff]", line) for line in option_lines)


def _exit_codes_in_help(command: str, capsys: pytest.CaptureFixture[str]) -> dict[int, str]:
    with pytest.raises(SystemExit):
        cli.main([*command.split(), "--help"])
    table = capsys.readouterr().out.split("退出码：", 1)[1]
    return {int(m[1]): m[2] for m in re.finditer(r"^  (\d+) +(.+)$", table, re.MULTILINE)}


@pytest.mark.parametrize(
    ("command", "codes"),
    [
        ("validate", {0, 1, 2, 130}),
        ("submit", {0, 1, 2, 3, 130}),
        ("run", {0, 1, 2, 3, 130}),
        ("qrcode", {0, 1, 2, 130}),
        ("check-config", {0, 2, 130}),
    ],
)
def test_each_command_lists_the_exit_codes_it_can_return(
    command: str, codes: set[int], capsys: pytest.CaptureFixture[str]
) -> None:
    # Only submit and run take the run lock: a dry run or a QR code export never exits 3.
    assert set(_exit_codes_in_help(command, capsys)) == codes


def test_the_exit_codes_of_qrcode_and_run_say_what_those_commands_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    qrcode = _exit_codes_in_help("qrcode", capsys)
    assert "二维码" in qrcode[0] and "二维码" in qrcode[1] and "校验" not in qrcode[0]
    run = _exit_codes_in_help("run", capsys)
    assert "failed/" in run[1] and "没有新文件" in run[0]
    validate = _exit_codes_in_help("validate", capsys)
    assert "申领" not in validate[0] and "平台" not in validate[2]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["validate"], ["缺少必需的参数", "--out"]),
        (["frobnicate"], ["命令", "frobnicate", "无效", "validate"]),
        (["validate", "a.csv", "--out", "o", "--bogus"], ["无法识别的参数", "--bogus"]),
        (["validate", "a.csv", "--out"], ["--out", "需要一个值"]),
        (["validate", "a.csv", "--out", ""], ["--out", "不能为空"]),  # not the current folder unasked
        (["qrcode", "--from", "r", "--out", " "], ["--out", "不能为空"]),
        (["validate", "a.csv", "--out", "o", "--sheet", "x", "--all-sheets"], ["不能与", "同时使用"]),
        (["sandbox", "--port", "eighty"], ["--port", "eighty", "整数"]),
        (["submit", "a.csv", "--out", "o", "--concurrency", "0"], ["--concurrency", "正整数"]),
        # bounded like [submit] concurrency: a typed 100000 would start that many threads
        (["submit", "a.csv", "--out", "o", "--concurrency", "257"], ["--concurrency", "257", "256"]),
    ],
)
def test_argparse_errors_are_one_chinese_line(
    argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("错误：命令行参数有误：") and "\n" not in err and "--help" in err
    assert all(word in err for word in words), err
    for english in (
        "required",
        "invalid choice",
        "unrecognized",
        "expected one",
        "not allowed",
        "invalid int",
    ):
        assert english not in err


def test_an_argparse_error_masks_an_id_number_or_phone_typed_in_the_wrong_place(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["qrcode", "--from", "x", "--out", "y", "420102198503121234", "13900001111"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "无法识别的参数" in err and "420102********1234" in err and "139****1111" in err
    assert "198503121234" not in err and "13900001111" not in err


def _gbk_console(monkeypatch: pytest.MonkeyPatch) -> tuple[io.BytesIO, io.BytesIO]:
    out, err = io.BytesIO(), io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out, encoding="gbk", errors="strict"))
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(err, encoding="gbk", errors="strict"))
    return out, err


def test_the_summary_survives_a_gbk_console_and_a_name_it_cannot_encode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register = tmp_path / "名单😀.csv"
    register.write_bytes((REPO_ROOT / "sample_data" / "居民名单_GBK.csv").read_bytes())
    out, _ = _gbk_console(monkeypatch)
    code = cli.main(["validate", str(register), "--out", str(tmp_path / "out")])
    sys.stdout.flush()
    printed = out.getvalue().decode("gbk")
    assert code == 1  # rows invalid: the run finished, it is not a crash
    assert "程序内部错误" not in printed and "共读取 1 个表" in printed and "名单?.csv" in printed
    assert (tmp_path / "out" / "annotated_名单😀.xlsx").exists()


def test_a_closed_pipe_does_not_turn_a_finished_run_into_an_error(tmp_path: Path) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    cli.emit("共读取 1 个表", Closed())  # nothing raised


def test_validate_does_not_warn_about_settings_only_a_submission_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["validate", str(REPO_ROOT / "sample_data" / "居民名单_GBK.csv"), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "orgCode" not in err and "EHC_ORG_CODE" not in err and "EHC_APP" not in err


def test_emit_replaces_what_a_strict_gbk_stream_cannot_encode() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="gbk", errors="strict")
    cli.emit("报告：\n  out/annotated_名单😀.xlsx", stream)
    assert raw.getvalue().decode("gbk") == "报告：\n  out/annotated_名单?.xlsx\n"


@pytest.mark.parametrize("before", [[], ["./名单.xlsx"]])
def test_a_register_named_with_a_leading_dash_gets_a_way_to_write_it(
    before: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # "-名单.xlsx" is taken for an option: the clerk was told a register was missing, or the name unknown.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-名单.xlsx").write_bytes(b"PK")
    (tmp_path / "名单.xlsx").write_bytes(b"PK")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["validate", *before, "-名单.xlsx", "--out", "out"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("错误：命令行参数有误：") and "\n" not in err
    assert "./-名单.xlsx" in err, err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["sandbox", "--port", "99999"], ["--port", "99999", "65535"]),
        (["serve", "--port", "-1"], ["--port", "-1", "65535"]),
        (["sandbox", "--latency-ms", "-5"], ["--latency-ms", "-5"]),
        (["sandbox", "--latency-ms", "nan"], ["--latency-ms", "nan"]),
        (["sandbox", "--drip-ms", "inf"], ["--drip-ms", "inf"]),
        (["sandbox", "--huge-mb", "-1"], ["--huge-mb", "-1"]),
        (["sandbox", "--retry-after", "-1"], ["--retry-after", "-1"]),
        (["sandbox", "--workkey-ttl", "0"], ["--workkey-ttl", "0"]),
    ],
)
def test_a_server_option_out_of_range_is_refused_before_serving(
    argv: list[str], words: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A port out of range was an internal error (OverflowError); a negative or NaN latency started a
    # sandbox whose every request died with a traceback.
    from pipeline.sandbox import server
    from pipeline.web import serve

    def started(**options: object) -> None:
        raise AssertionError(f"served with {options}")

    monkeypatch.setattr(server, "serve", started)
    monkeypatch.setattr(serve, "serve", started)
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("错误：命令行参数有误：") and "\n" not in err
    assert all(word in err for word in words), err


def test_a_file_named_twice_is_read_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path / "state"))
    register = tmp_path / "名单.csv"
    register.write_bytes((REPO_ROOT / "sample_data" / "居民名单_GBK.csv").read_bytes())
    monkeypatch.chdir(tmp_path)
    code = cli.main(["validate", str(register), "名单.csv", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1  # the sample's own faults, not every resident repeated
    assert "只读取一次" in captured.err and "10115" not in captured.out
    rows = (tmp_path / "out" / "results.csv").read_text(encoding="utf-8-sig").splitlines()
    assert len(rows) == 1 + 20


@pytest.mark.parametrize("json_log", [True, False])
def test_a_run_stopping_error_is_in_the_days_log_and_json_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, json_log: bool
) -> None:
    import json

    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path / "state"))
    args = ["validate", str(tmp_path / "nope.xlsx"), "--out", str(tmp_path / "out")]
    code = cli.main(args + (["--log-json"] if json_log else []))
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    if json_log:  # a collector reads every line of stderr
        records = [json.loads(line) for line in lines]
        assert any(
            "nope.xlsx" in r["record"]["message"] and r["record"]["level"]["name"] == "ERROR" for r in records
        )
    else:
        assert [line for line in lines if "nope.xlsx" in line] == [
            line for line in lines if line.startswith("错误：")
        ]
        assert len([line for line in lines if "nope.xlsx" in line]) == 1
    (log,) = (tmp_path / "state" / "logs").glob("ehc-*.log")
    assert "nope.xlsx" in log.read_text(encoding="utf-8")


def test_an_argument_error_is_json_when_json_logs_are_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "--log-json", "--inbox"])
    assert stopped.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # a collector reads every line of stderr
    assert [r["record"]["level"]["name"] for r in records] == ["ERROR"]
    assert records[0]["record"]["message"].startswith("错误：命令行参数有误：--inbox")


def test_ehc_serve_log_json_reaches_the_workers_log_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from loguru import logger

    from pipeline.config import Settings
    from pipeline.web import checking, serve

    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path / "state"))
    started: list[Settings] = []
    monkeypatch.setattr(serve, "serve", lambda settings, **_: started.append(settings) or 0)
    assert cli.main(["serve", "--log-json", "--port", "0"]) == 0
    capsys.readouterr()
    # A dry-run worker (a process of its own) sets its log up from the settings the server started with.
    checking.worker_setup(started[0], 0)
    try:
        logger.info("网页上传 J 检查完成：5 行")
    finally:
        logger.remove()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [json.loads(line)["record"]["message"] for line in lines] == ["网页上传 J 检查完成：5 行"]
    (log,) = (tmp_path / "state" / "logs").glob("ehc-*.log")
    assert all(json.loads(line) for line in log.read_text(encoding="utf-8").splitlines())


def test_ehc_serve_debug_reaches_the_workers_log_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from loguru import logger

    from pipeline.config import Settings
    from pipeline.web import checking, serve

    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path / "state"))
    started: list[Settings] = []
    monkeypatch.setattr(serve, "serve", lambda settings, **_: started.append(settings) or 0)
    assert cli.main(["serve", "--debug", "--port", "0"]) == 0
    capsys.readouterr()
    checking.worker_setup(started[0], 0)  # a dry-run worker, a process of its own
    try:
        logger.debug("并发增至 8")
    finally:
        logger.remove()
    assert "并发增至 8" in capsys.readouterr().err


@pytest.mark.parametrize("json_log", [True, False])
def test_the_debug_traceback_is_masked_and_a_json_record_when_json_logs_are_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, json_log: bool
) -> None:
    import json

    def explode(*args: object, **kwargs: object) -> None:  # a library quoting the cell it choked on
        raise ValueError("invalid literal: '440604198001010011' / 13912345678")

    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr("pipeline.dryrun.run_validate", explode)
    args = ["validate", str(tmp_path / "a.csv"), "--out", str(tmp_path / "o"), "--debug"]
    code = cli.main(args + (["--log-json"] if json_log else []))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and "ValueError" in err
    assert "440604198001010011" not in err and "13912345678" not in err
    assert "440604********0011" in err and "139****5678" in err
    if json_log:  # a collector reads every line of stderr
        records = [json.loads(line) for line in err.splitlines() if line.strip()]
        assert any("Traceback" in record["record"]["message"] for record in records)


def test_a_mistake_in_the_configuration_file_is_a_json_line_when_json_logs_are_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    config = tmp_path / "ehc.toml"
    config.write_text('[submit]\nrate = "fast"\n', encoding="utf-8")
    code = cli.main(["run", "--log-json", "--inbox", str(tmp_path), "--config", str(config)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    records = [json.loads(line) for line in lines]  # before the fix: the plain line 错误：配置项 …
    assert [r["record"]["level"]["name"] for r in records] == ["ERROR"]
    assert "[submit] rate" in records[0]["record"]["message"]
