"""``ehc check-config`` against the sandbox: what it prints, each way it fails, and what it never shows."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import SandboxHandle
from loguru import logger

from pipeline import cli
from pipeline.checkconfig import check_config, settings_problems
from pipeline.config import LogSettings, Settings, SubmitSettings
from pipeline.errors import AuthenticationRefused, ConfigError, PlatformUnreachable
from pipeline.logs import mask_app_id


def _settings(sandbox: SandboxHandle, tmp_path: Path, **platform: object) -> Settings:
    return Settings(
        platform=sandbox.settings(max_attempts=2, max_retry_seconds=2.0, **platform),
        state_dir=tmp_path / "state",
        log_dir=tmp_path / "logs",
    )


def _cached_work_key(state_dir: Path) -> str:
    (cache,) = (state_dir / "workkeys").glob("workkey-*.json")
    return str(json.loads(cache.read_text(encoding="utf-8"))["work_key"])


def test_success_prints_locations_and_never_the_secrets(sandbox: SandboxHandle, tmp_path: Path) -> None:
    settings = _settings(sandbox, tmp_path)
    lines = check_config(settings)
    text = "\n".join(lines)
    assert sandbox.count("getWorkKey") == 1
    assert sandbox.base_url in text
    assert mask_app_id(sandbox.app_id) in text and sandbox.app_id not in text
    assert "每秒最多 5 次" in text
    for path in (
        settings.state_dir,
        settings.state_dir / "journal.sqlite",
        settings.state_dir / "ehc.lock",
        tmp_path / "logs",
    ):
        assert str(path) in text
    assert lines[-1].startswith("认证成功")
    assert "保留 30 天，每天一个文件，满 10 MB 后接着写入下一个文件" in text
    assert sandbox.app_secret not in text
    assert _cached_work_key(settings.state_dir) not in text


def test_a_cached_key_does_not_spare_the_login(sandbox: SandboxHandle, tmp_path: Path) -> None:
    settings = _settings(sandbox, tmp_path)
    check_config(settings)
    first_key = _cached_work_key(settings.state_dir)
    check_config(settings)
    assert sandbox.count("getWorkKey") == 2  # the second check logged in again
    assert _cached_work_key(settings.state_dir) != first_key


def test_wrong_secret_is_refused_with_advice(sandbox: SandboxHandle, tmp_path: Path) -> None:
    settings = _settings(sandbox, tmp_path, app_secret="0" * 32)
    with pytest.raises(AuthenticationRefused) as refused:
        check_config(settings)
    assert refused.value.result_code == 10103
    assert "EHC_APP_SECRET" in str(refused.value) and "0" * 32 not in str(refused.value)


def test_unknown_app_id_is_refused_with_advice(sandbox: SandboxHandle, tmp_path: Path) -> None:
    settings = _settings(sandbox, tmp_path, app_id="no-such-app-0001")
    with pytest.raises(AuthenticationRefused) as refused:
        check_config(settings)
    assert refused.value.result_code == 10101
    message = str(refused.value)
    assert "EHC_APP_ID" in message and "10101" in message
    assert "no-such-app-0001" not in message  # the app id is shown masked, if at all


def test_unreachable_platform(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(state_dir=tmp_path / "state")
    settings = replace(
        settings,
        platform=replace(
            settings.platform,
            base_url=f"http://127.0.0.1:{port}/jkfs-dzjkk/dzjkk/websvi/",
            app_id="app-0001",
            app_secret="secret-0001",
            max_attempts=1,
            connect_timeout=1.0,
        ),
    )
    with pytest.raises(PlatformUnreachable, match=str(port)):
        check_config(settings)


def test_settings_problems_are_all_listed_before_any_call(sandbox: SandboxHandle, tmp_path: Path) -> None:
    settings = _settings(sandbox, tmp_path, app_id="", app_secret="")
    settings = replace(
        settings, logging=LogSettings(level="LOUD", rotation="sometimes"), column_aliases={"手机": "phone"}
    )
    with pytest.raises(ConfigError) as error:
        check_config(settings)
    message = str(error.value)
    for fragment in ("EHC_APP_ID", "EHC_APP_SECRET", "level", "rotation 'sometimes'", "phone"):
        assert fragment in message
    assert "\n" not in message and "Cannot" not in message  # the logging library's English stays out
    assert sandbox.count("getWorkKey") == 0


@pytest.mark.parametrize("retention", ["1 month", "30 dayz", "forever"])
def test_a_retention_the_log_file_cannot_read_is_a_problem(
    retention: str, sandbox: SandboxHandle, tmp_path: Path
) -> None:
    # The daily log file reads days and weeks only; loguru alone would have passed "1 month", and every run
    # then said the log folder was not writable.
    settings = replace(_settings(sandbox, tmp_path), logging=LogSettings(retention=retention))
    [problem] = settings_problems(settings)
    assert "retention" in problem and repr(retention) in problem and "12 weeks" in problem
    assert not settings_problems(replace(settings, logging=LogSettings(retention="12 weeks")))


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://platform.example/jkfs-dzjkk/dzjkk/websvi/", True),
        ("http://127.0.0.1:8080/jkfs-dzjkk/dzjkk/websvi/", True),
        ("http://localhost:8080/x/", True),
        ("http://[::1]:8080/x/", True),
        ("http://platform.example/jkfs-dzjkk/dzjkk/websvi/", False),
        ("ftp://platform.example/", False),
        ("platform.example", False),
    ],
)
def test_base_url_must_be_https_or_loopback(tmp_path: Path, url: str, ok: bool) -> None:
    platform = replace(Settings().platform, base_url=url, app_id="a", app_secret="s")
    settings = Settings(platform=platform, state_dir=tmp_path)
    assert (settings_problems(settings) == []) is ok


def test_unlimited_rate_is_only_a_warning(sandbox: SandboxHandle, tmp_path: Path) -> None:
    settings = replace(_settings(sandbox, tmp_path), submit=SubmitSettings(rate=0))
    lines = check_config(settings)
    assert any("不限速" in line for line in lines)


def test_unusable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    settings = Settings(state_dir=blocker / "state")
    settings = replace(settings, platform=replace(settings.platform, app_id="a", app_secret="s"))
    assert any("状态目录" in problem for problem in settings_problems(settings))


@pytest.mark.parametrize(
    ("app_id", "masked"),
    [("39bf0ca6e9b340659852808173fdf705", "39bf***f705"), ("app-12345", "ap***45"), ("abc", "***"), ("", "")],
)
def test_mask_app_id(app_id: str, masked: str) -> None:
    assert mask_app_id(app_id) == masked


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """cli.main points loguru at the captured stderr, which pytest closes after the test."""
    yield
    logger.remove()
    logger.add(sys.stderr)


@pytest.fixture
def sandbox_env(sandbox: SandboxHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox's credentials and a fresh state directory in the environment, as an operator sets them."""
    monkeypatch.setenv("EHC_APP_ID", sandbox.app_id)
    monkeypatch.setenv("EHC_APP_SECRET", sandbox.app_secret)
    monkeypatch.setenv("EHC_STATE_DIR", str(tmp_path / "state"))


@pytest.mark.usefixtures("restore_logging", "sandbox_env")
def test_command_line(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check-config", "--base-url", sandbox.base_url]) == 0
    out, err = capsys.readouterr()
    assert "认证成功" in out and sandbox.base_url in out
    assert sandbox.app_secret not in out + err

    monkeypatch.setenv("EHC_APP_SECRET", "F" * 32)
    assert cli.main(["check-config", "--base-url", sandbox.base_url]) == 2
    out, err = capsys.readouterr()
    assert "10103" in err and "F" * 32 not in out + err
    assert len(err.strip().splitlines()[-1]) > 0


@pytest.mark.usefixtures("restore_logging", "sandbox_env")
def test_a_password_written_into_the_platform_address_is_never_shown(
    sandbox: SandboxHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A proxy's password in base_url was printed as it was, by check-config and in every platform error.
    with_password = sandbox.base_url.replace("http://", "http://proxyuser:Pr0xyPassw0rd@")
    assert cli.main(["check-config", "--base-url", with_password]) == 0
    out, err = capsys.readouterr()
    assert "认证成功" in out and "proxyuser:***@" in out
    logs = "".join(path.read_text(encoding="utf-8") for path in (tmp_path / "state" / "logs").glob("*"))
    assert "Pr0xyPassw0rd" not in out + err + logs


@pytest.mark.usefixtures("restore_logging", "sandbox_env")
def test_a_read_memory_cap_too_low_to_read_anything_is_refused_by_check_config(
    sandbox: SandboxHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[inbox] read_memory_mb = 20 passed, then every nightly register was refused as too big."""
    config = tmp_path / "ehc.toml"
    config.write_text("[inbox]\nread_memory_mb = 20\n", encoding="utf-8")
    assert cli.main(["check-config", "--config", str(config), "--base-url", sandbox.base_url]) == 2
    _, err = capsys.readouterr()
    (line,) = [line for line in err.splitlines() if "read_memory_mb" in line]
    assert "[inbox] read_memory_mb" in line and "512" in line
