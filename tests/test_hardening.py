"""The edges a clerk or an attacker can reach: masked messages, escaped names, file modes, http, numbers."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, make_id_number
from loguru import logger

from pipeline.cli import main
from pipeline.config import load_settings
from pipeline.errors import ConfigError, InputError
from pipeline.files import distinct_names, explain_os_error, private_dir, private_file
from pipeline.logs import mask_text, printable, setup_logging

ID = make_id_number(7)
FULL_WIDTH_ID = ID.translate({ord(c): 0xFF10 + int(c) for c in "0123456789"})


# -- personal data ------------------------------------------------------------------------------


def test_a_full_width_id_number_is_masked_whole() -> None:
    masked = mask_text(f"身份证 {FULL_WIDTH_ID} 电话 １３９１２３４５６７８")
    assert ID[6:14] not in masked and "12345678" not in masked and "1234" not in masked.split("电话")[1][:7]
    assert ID[:6] in masked


def test_an_id_number_run_into_letters_is_masked() -> None:
    for text in (f"sfzhm{ID}", f"zjhm={ID}abc", f"ID{ID[:15]}x"):
        assert ID[6:12] not in mask_text(text), text  # the birth date is hidden


def test_every_fatal_message_is_masked_whatever_built_it() -> None:
    error = InputError(f"第一行是 {ID}、13912345678", file="a.csv")
    assert ID not in error.message and "13912345678" not in error.message and "139****5678" in error.message


def test_a_register_without_a_header_never_echoes_its_first_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "noheader.csv"
    path.write_text(
        f"张三,男,汉族,{ID},13912345678,北京市朝阳区幸福路1号\n李四,女,汉族,{ID},13912345679,幸福路2号\n",
        encoding="utf-8",
    )
    code = main(["validate", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "没有表头" in err
    for value in ("张三", ID, "13912345678", "幸福路"):
        assert value not in err
    logs = "".join(
        p.read_text(encoding="utf-8") for p in (Path(os.environ["EHC_STATE_DIR"]) / "logs").glob("*")
    )
    for value in ("张三", ID, "13912345678", "幸福路"):
        assert value not in logs


def test_a_file_name_with_a_newline_cannot_forge_a_log_line(tmp_path: Path) -> None:
    sink: list[str] = []
    setup_logging(level="INFO")
    logger.add(sink.append, format="{message}")
    try:
        logger.info("处理 {}", "a.csv\n12:00:00 错误 forged\x1b[2J")
    finally:
        logger.remove()
    assert sink == ["处理 a.csv\\n12:00:00 错误 forged\\x1b[2J\n"]
    assert printable("ok.csv") == "ok.csv"
    # Right-to-left marks ("invoice\u202excl.csv" shows as "invoice.lcx.csv") and a name's undecodable bytes
    assert printable("invoice\u202excl.csv") == "invoice\\u202excl.csv"
    assert printable("a\udcb5.csv") == "a\\udcb5.csv"


def test_the_console_shows_chinese_level_words_and_json_keeps_english(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    setup_logging(level="INFO", log_dir=tmp_path / "logs")
    logger.info("普通信息")
    logger.warning("注意这个")
    logger.error("出错了")
    logger.remove()
    err = capfd.readouterr().err
    assert "INFO" not in err and "WARNING" not in err and "ERROR" not in err
    assert "注意 注意这个" in err and "错误 出错了" in err
    [log_file] = (tmp_path / "logs").glob("ehc-*.log")
    assert "WARNING" in log_file.read_text(encoding="utf-8")
    setup_logging(level="INFO", json=True)
    logger.warning("给采集器")
    logger.remove()
    record = json.loads(capfd.readouterr().err.strip().splitlines()[-1])
    assert record["record"]["level"]["name"] == "WARNING"


# -- file modes ---------------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_a_fresh_state_folder_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import cli

    old = os.umask(0o022)
    try:
        monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.delenv("EHC_LOG_DIR", raising=False)
        register = tmp_path / "名单.csv"
        register.write_text("姓名,身份证号码\n张三,110101199003074514\n", encoding="utf-8")
        cli.main(["validate", str(register), "--out", str(tmp_path / "out")])
        assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "state" / "logs").stat().st_mode) == 0o700
    finally:
        os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_log_file_and_folders_are_private_and_reports_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        setup_logging(level="INFO", log_dir=tmp_path / "state" / "logs")
        logger.info("x")
        logger.remove()
        [log_file] = (tmp_path / "state" / "logs").glob("ehc-*.log")
        assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "state" / "logs").stat().st_mode) == 0o700
        assert stat.S_IMODE(private_file(tmp_path / "s" / "sandbox.sqlite").stat().st_mode) == 0o600
        assert stat.S_IMODE(private_dir(tmp_path / "p").stat().st_mode) == 0o700
        from pipeline.sandbox.store import SandboxStore

        store = SandboxStore(tmp_path / "sb" / "state.sqlite")
        assert stat.S_IMODE((tmp_path / "sb" / "state.sqlite").stat().st_mode) == 0o600
        store.close()
    finally:
        os.umask(old)


def test_a_retention_it_cannot_read_says_so_instead_of_blaming_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert setup_logging(level="INFO", log_dir=tmp_path / "logs", retention="1 month") is None
    logger.remove()
    err = capsys.readouterr().err
    assert "retention" in err and "1 month" in err and "30 days" in err
    assert "不可写" not in err


def test_a_days_log_file_continues_in_a_new_file_without_renaming(tmp_path: Path) -> None:
    from pipeline.logs import DailyLogFile

    sink = DailyLogFile(tmp_path, max_bytes=1 << 16, keep_days=30)
    first = sink.path
    for _ in range(70):
        sink.write("x" * 1023 + "\n")
    assert sink.path != first and sink.path.name.endswith(".2.log")
    assert first.stat().st_size >= 1 << 16  # never renamed, never truncated
    sink.close()
    old = tmp_path / "ehc-2000-01-01.log"
    old.write_text("old\n")
    DailyLogFile(tmp_path, max_bytes=None, keep_days=30).close()
    assert not old.exists() and first.exists()


# -- plain http and numbers ---------------------------------------------------------------------


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "ehc.toml"
    path.write_text(
        f'[platform]\nbase_url = "http://example.org/api/"\napp_id = "a"\n{extra}', encoding="utf-8"
    )
    return path


def test_plain_http_to_another_host_is_refused_at_loading_for_every_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="不加密的 http"):
        load_settings(_config(tmp_path))
    settings = load_settings(_config(tmp_path, "allow_insecure_http = true\n"))
    assert settings.platform.base_url.startswith("http://example.org")
    assert load_settings(_config(tmp_path), env={"EHC_ALLOW_INSECURE_HTTP": "1"}).platform.allow_insecure_http
    loopback = load_settings(env={"EHC_BASE_URL": "http://127.0.0.1:8000/"})
    with pytest.raises(ConfigError, match="--base-url"):
        loopback.with_base_url("http://10.0.0.1/api/")


@pytest.mark.parametrize("command", [["submit", "x.csv", "--out", "o"], ["run", "--inbox", "i"],
                                     ["qrcode", "--from", "j", "--out", "o"], ["check-config"]])  # fmt: skip
@pytest.mark.parametrize("how", ["option", "environment"])
def test_every_command_refuses_plain_http_before_doing_anything(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    how: str,
) -> None:
    if how == "option" and command[0] != "run":
        command = [*command, "--base-url", "http://example.org/api/"]
    else:
        monkeypatch.setenv("EHC_BASE_URL", "http://example.org/api/")
    monkeypatch.chdir(tmp_path)
    assert main(command) == 2
    assert "不加密的 http" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "i-results").exists()


def _with_base_url(
    command: list[str], url: str, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> int:
    """``ehc command`` with the platform address ``url`` given as an option or in the environment."""
    if how == "option":
        command = [*command, "--base-url", url]
    else:
        monkeypatch.setenv("EHC_BASE_URL", url)
    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path / "state"))
    return main(command)


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://[zz]/api/", "http://127.0.0.1:99999/api/", "https://exa mple.org/", "ftp://x/"]
)
@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_malformed_platform_address_is_refused_in_one_line_before_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str, how: str
) -> None:
    # A bracket left open was an internal error (ValueError); a port out of range or a space was sent,
    # and retried five times as a communication error.
    assert _with_base_url(["check-config"], url, how, tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "不是有效网址" in err and "内部错误" not in err, err
    with pytest.raises(ConfigError, match="不是有效网址"):
        load_settings(env={"EHC_BASE_URL": url})


@pytest.mark.parametrize(
    "url", ["http://proxy:pa55word@10.0.0.1/api/", "http://proxy:pa55@word@127.0.0.1:99999/api/"]
)
@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_refused_platform_address_never_shows_the_password_written_into_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str, how: str
) -> None:
    # Refused before the password was known as a secret to mask: it was printed.
    assert _with_base_url(["submit", "x.csv", "--out", "o"], url, how, tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "proxy:***@" in err and "pa55" not in err and "word" not in err, err


def test_a_work_key_cache_does_not_keep_the_password_of_the_address(tmp_path: Path) -> None:
    from pipeline.platform.workkey import WorkKeyCache

    url = "http://proxy:pa55word@127.0.0.1:8000/api/"
    cache = WorkKeyCache(tmp_path, "app", url, lambda: "0123456789ABCDEF")
    cache.get()
    kept = cache.path.read_text(encoding="utf-8")
    assert "0123456789ABCDEF" in kept and "pa55word" not in kept and "proxy:***@127.0.0.1:8000" in kept


@pytest.mark.parametrize("rate", ["nan", "inf", "-inf", "1e9", "0", "-1"])
def test_a_rate_that_is_not_a_sane_number_is_refused(rate: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["submit", "x.csv", "--out", "o", "--rate", rate])
    assert exited.value.code == 2 and "--rate" in capsys.readouterr().err


@pytest.mark.parametrize("rate", ["nan", "inf", "1e9"])
def test_a_configured_rate_that_is_not_a_sane_number_is_refused(tmp_path: Path, rate: str) -> None:
    with pytest.raises(ConfigError, match="EHC_RATE"):
        load_settings(env={"EHC_RATE": rate})
    path = tmp_path / "rate.toml"
    path.write_text(f'[submit]\nrate = "{rate}"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="rate"):
        load_settings(path)


@pytest.mark.slow
def test_a_fatal_message_on_the_command_line_is_one_masked_line(tmp_path: Path) -> None:
    path = tmp_path / f"{ID}.csv"
    path.write_text("", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHC_")}
    env["EHC_STATE_DIR"] = str(tmp_path / "state")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path), "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and ID not in done.stderr and ID[:6] in done.stderr


# -- Windows ------------------------------------------------------------------------------------


def test_the_state_dir_keeps_xdg_on_linux_and_follows_the_platform_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import platformdirs

    from pipeline import config

    if sys.platform.startswith("linux"):
        assert config.default_state_dir({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "ehc"
    monkeypatch.setattr(
        platformdirs, "user_state_dir", lambda name, appauthor: f"C:/Users/u/AppData/Local/{name}"
    )
    assert config.default_state_dir({}, platform="win32") == Path("C:/Users/u/AppData/Local/ehc")


def test_the_run_lock_does_not_need_fcntl() -> None:
    source = (REPO_ROOT / "pipeline" / "state" / "lock.py").read_text(encoding="utf-8")
    assert "import fcntl" not in source
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests" / "without_fcntl"), str(REPO_ROOT)]),
    }
    code = (
        "import pipeline.state.lock, pipeline.cli\ntry:\n import fcntl\nexcept ImportError:\n print('none')"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "none", done.stderr


def test_operating_system_errors_are_told_in_chinese_with_their_name(tmp_path: Path) -> None:
    """A symlink loop, an unlisted error: never the system's English text."""
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(loop), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "EHC_ORG_CODE": "455400000"},
    )  # fmt: skip
    assert done.returncode == 2 and "符号链接" in done.stderr and "Too many" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    reason, fix = explain_os_error(OSError(errno.ENOLINK, "Link has been severed"))
    assert reason == "操作系统报告错误（ENOLINK）" and "管理员" in fix


def test_the_workspace_on_a_busy_port_says_so_in_chinese(tmp_path: Path) -> None:
    from pipeline.web.serve import serve

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port} 上监听（端口已被其他程序占用）"):
            serve(load_settings(None), host="127.0.0.1", port=port)
    finally:
        holder.close()


def test_database_and_csv_errors_are_told_in_chinese(tmp_path: Path) -> None:
    """SQLite's and the csv module's own texts are English: a clerk reads why in Chinese."""
    import csv
    import sqlite3

    from pipeline.files import explain_sqlite_error
    from pipeline.reading.delimited import _csv_reason
    from pipeline.state.journal import Journal

    junk = tmp_path / "journal.sqlite"
    junk.write_bytes(b"not a database " * 100)
    with pytest.raises(ConfigError, match="不是本程序的数据库文件") as refused:
        Journal(junk)
    assert "file is not a database" not in str(refused.value)
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorname = "SQLITE_BUSY_SNAPSHOT"
    assert explain_sqlite_error(locked) == "数据库正被其他程序占用"
    assert explain_sqlite_error(sqlite3.Error("odd")) == "数据库错误（Error）"
    assert _csv_reason(csv.Error("field larger than field limit (5)")).startswith("一个单元格超过")
    assert _csv_reason(csv.Error("something new")) == "无法按 CSV 拆分这一行"


def test_a_workspace_database_from_a_newer_version_is_told_in_chinese(tmp_path: Path) -> None:
    import sqlite3

    from pipeline.web.accounts import open_store
    from pipeline.web.store import DATABASE_NAME, Store

    Store(tmp_path).close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as connection:
        connection.execute("PRAGMA user_version=999")
    with pytest.raises(ConfigError, match="由更新版本的程序创建（版本 999）") as refused:
        open_store(tmp_path)
    assert "newer" not in str(refused.value)


def test_distinct_names_add_folders_only_where_file_names_collide() -> None:
    paths = [Path("a/x/登记表.csv"), Path("b/x/登记表.csv"), Path("c/名单.csv"), Path("/data/登记表.csv")]
    assert distinct_names(paths) == ["a/x/登记表.csv", "b/x/登记表.csv", "名单.csv", "data/登记表.csv"]
    assert distinct_names([Path("r.csv"), Path("/r.csv")]) == ["r.csv", "/r.csv"]
    assert distinct_names([]) == []
