"""Settings: the TOML file, environment overrides, errors, and the documentation kept in step with them."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from pipeline.config import (
    ENV_OVERRIDES,
    PRODUCTION_BASE_URL,
    InboxSettings,
    LogSettings,
    PlatformSettings,
    Settings,
    SubmitSettings,
    WebSettings,
    load_settings,
)
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "ehc.example.toml"
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"
SECTIONS = {
    "platform": PlatformSettings,
    "submit": SubmitSettings,
    "defaults": type(Settings().defaults),
    "logging": LogSettings,
    "inbox": InboxSettings,
    "web": WebSettings,
}
PATH_ENV = {"EHC_STATE_DIR": "state_dir", "EHC_LOG_DIR": "log_dir"}


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ehc.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_environment(tmp_path: Path) -> None:
    settings = load_settings(None, env={"EHC_STATE_DIR": str(tmp_path)})
    assert settings.platform.base_url == PRODUCTION_BASE_URL
    assert settings.platform.app_id == "" and settings.platform.app_secret == ""
    assert settings.submit.rate == 5.0 and settings.submit.concurrency == 0
    assert settings.inbox.settle_seconds == 2.0
    assert settings.logging.level == "INFO" and settings.logging.json is False
    assert settings.state_dir == tmp_path
    assert settings.effective_log_dir == tmp_path / "logs"
    assert settings.source == ""


def test_file_values_are_read_and_typed(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        """
        [platform]
        base_url = "https://platform.example/jkfs-dzjkk/dzjkk/websvi/"
        app_id = " app-1 "
        max_attempts = 3
        [submit]
        rate = 20
        concurrency = 8
        lookup_existing = "yes"
        [defaults]
        org_code = 440604001
        dzsf = "广东省"
        [logging]
        json = true
        retention = "7 days"
        [inbox]
        settle_seconds = 5
        [paths]
        state_dir = "~/ehc-state"
        log_dir = "/var/log/ehc"
        [columns]
        " 居民姓名 " = "xm"
        """,
    )
    settings = load_settings(path, env={})
    assert settings.platform.app_id == "app-1"  # stripped
    assert settings.platform.max_attempts == 3 and isinstance(settings.platform.max_attempts, int)
    assert settings.submit.rate == 20.0 and isinstance(settings.submit.rate, float)
    assert settings.submit.concurrency == 8
    assert settings.submit.lookup_existing is True
    assert settings.defaults.org_code == "440604001"  # a bare number becomes text
    assert settings.logging.json is True and settings.logging.retention == "7 days"
    assert settings.inbox.settle_seconds == 5.0
    assert settings.state_dir == Path.home() / "ehc-state"
    assert settings.log_dir == Path("/var/log/ehc") == settings.effective_log_dir
    assert settings.column_aliases == {"居民姓名": "xm"}
    assert settings.source == str(path)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        """
        [platform]
        app_id = "from-file"
        base_url = "https://file.example/"
        [submit]
        rate = 2
        [defaults]
        org_code = "file-org"
        [paths]
        state_dir = "/file/state"
        log_dir = "/file/logs"
        """,
    )
    env = {
        "EHC_APP_ID": "env-app",
        "EHC_APP_SECRET": "env-secret",
        "EHC_BASE_URL": "https://env.example/",
        "EHC_ORG_CODE": "env-org",
        "EHC_RATE": "7.5",
        "EHC_STATE_DIR": str(tmp_path / "state"),
        "EHC_LOG_DIR": str(tmp_path / "logs"),
    }
    settings = load_settings(path, env=env)
    assert settings.platform.app_id == "env-app"
    assert settings.platform.app_secret == "env-secret"
    assert settings.platform.base_url == "https://env.example/"
    assert settings.defaults.org_code == "env-org"
    assert settings.submit.rate == 7.5
    assert settings.state_dir == tmp_path / "state"
    assert settings.log_dir == tmp_path / "logs"


def test_blank_environment_variables_do_not_override(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[platform]\napp_id = "from-file"\n[submit]\nrate = 3\n')
    settings = load_settings(path, env={"EHC_APP_ID": "  ", "EHC_RATE": "", "EHC_STATE_DIR": str(tmp_path)})
    assert settings.platform.app_id == "from-file" and settings.submit.rate == 3.0


def test_blank_path_variables_do_not_override_and_paths_are_stripped(tmp_path: Path) -> None:
    state, logs = tmp_path / "state", tmp_path / "logs"
    path = _toml(tmp_path, f'[paths]\nstate_dir = " {state} "\nlog_dir = "{logs}"\n')
    settings = load_settings(path, env={"EHC_STATE_DIR": "   ", "EHC_LOG_DIR": " "})
    assert settings.state_dir == tmp_path / "state"
    assert settings.log_dir == tmp_path / "logs"
    settings = load_settings(None, env={"EHC_STATE_DIR": f" {tmp_path} ", "XDG_STATE_HOME": str(state)})
    assert settings.state_dir == tmp_path


def test_secret_never_in_repr(tmp_path: Path) -> None:
    settings = load_settings(None, env={"EHC_APP_SECRET": "s3cr3t-value", "EHC_STATE_DIR": str(tmp_path)})
    assert "s3cr3t-value" not in repr(settings)
    assert "s3cr3t-value" not in str(settings.platform)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[platform]\napp_key = 'x'\n", "app_key"),
        ("[platfrom]\napp_id = 'x'\n", "platfrom"),
        ("[submit]\nrate = 'fast'\n", "[submit] rate"),
        ("[submit]\nrate = -1\n", "[submit] rate"),
        ("[submit]\nlookup_existing = 'maybe'\n", "true 或 false"),
        ("platform = 3\n", "[platform]"),
        ("[paths]\nstate_dir = '/x'\n[columns]\n'姓名' = 1\n", "[columns]"),
        ("[defaults]\nfksj = 2026-11-29\n", "[defaults] fksj"),
        ("[platform\napp_id = 'x'\n", "第 1 行第 10 列格式错误（方括号 [ ] 不成对）"),
        ("[submit]\nrate = fast\n", "第 2 行第 8 列格式错误（值的写法不对"),
        ("[submit]\nrate = 1\nrate = 2\n", "同一个键写了两次"),
        ("[platform]\nconnect_timeout = 0\n", "[platform] connect_timeout 应大于 0"),
        ("[platform]\nread_timeout = 0.0\n", "[platform] read_timeout 应大于 0"),
        ("[platform]\nmax_attempts = 0\n", "[platform] max_attempts 应大于 0"),
        ("[web]\nlogin_attempts = 0\n", "[web] login_attempts 应大于 0"),
        ("[web]\nlogin_attempts_per_address = 0\n", "[web] login_attempts_per_address 应大于 0"),
        ("[submit]\nrate = true\n", "[submit] rate 应为数字"),
        # Below what the reading process needs itself: every register was refused as too big to read.
        ("[inbox]\nread_memory_mb = 20\n", "[inbox] read_memory_mb 为 20，太低"),
        ("[web]\nread_memory_mb = 256\n", "应不小于 512（MB），或为 0（不设上限）"),
    ],
)
def test_bad_files_are_config_errors(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(_toml(tmp_path, text), env={})
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)
    assert not re.search(r"[A-Za-z]{4,} [a-z]{3,} [a-z]{3,}", str(error.value)), "an English sentence"


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="找不到配置文件"):
        load_settings(tmp_path / "absent.toml", env={})
    gbk = tmp_path / "gbk.toml"
    gbk.write_bytes('[defaults]\ndzsf = "广东省"\n'.encode("gbk"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(gbk, env={})


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX thing")
def test_a_device_a_pipe_a_huge_or_deeply_nested_file_is_refused_not_read_for_ever(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)  # opened for reading, it would wait for a writer for ever
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000 + "]" * 100_000, "utf-8")
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * (2 << 20), "utf-8")
    for path, fragment in [
        ("/dev/zero", "不是普通文件"), (fifo, "不是普通文件"), (deep, "嵌套层数过多"), (huge, "超过 1 MB"),
        (tmp_path, "是一个文件夹"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match=fragment):
            load_settings(path, env={})


def test_bad_environment_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"(?i)rate"):
        load_settings(None, env={"EHC_RATE": "abc"})


# -- defects found in config.py (a fix is proposed; these pass once it is applied) --------------


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    settings = load_settings(_toml(tmp_path, '[logging]\nlevel = "info"\n'), env={})
    assert settings.logging.level == "INFO"


def test_unknown_log_level_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="level"):
        load_settings(_toml(tmp_path, '[logging]\nlevel = "VERBOSE"\n'), env={})


def test_unknown_paths_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="statedir"):
        load_settings(_toml(tmp_path, '[paths]\nstatedir = "/srv/ehc"\n'), env={})


def test_non_text_state_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="state_dir"):
        load_settings(_toml(tmp_path, "[paths]\nstate_dir = 5\n"), env={})


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_rate_is_rejected(value: str) -> None:
    with pytest.raises(ConfigError, match=r"(?i)rate"):
        load_settings(None, env={"EHC_RATE": value})


def test_boolean_for_text_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is_real_name"):
        load_settings(_toml(tmp_path, "[defaults]\nis_real_name = true\n"), env={})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="EHC_RATE"):
        load_settings(None, env={"EHC_RATE": "abc"})


def test_default_state_dir_follows_given_environment(tmp_path: Path) -> None:
    settings = load_settings(None, env={"XDG_STATE_HOME": str(tmp_path)})
    assert settings.state_dir == tmp_path / "ehc"


# -- the example file and the documentation ---------------------------------------------------


def test_example_file_is_valid_and_complete() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    settings = load_settings(EXAMPLE, env={})
    assert settings.source == str(EXAMPLE)
    assert settings.platform.app_secret == ""  # the example never carries a secret
    for section, cls in SECTIONS.items():
        assert f"[{section}]" in text
        for field in dataclasses.fields(cls):
            # every key appears, set or commented out, in the example
            assert re.search(rf"^#? ?{field.name} = ", text, re.MULTILINE), f"[{section}] {field.name}"
    assert "[paths]" in text and "[columns]" in text


def test_every_key_and_variable_is_documented_with_its_default() -> None:
    doc = CONFIGURATION_DOC.read_text(encoding="utf-8")
    for section, cls in SECTIONS.items():
        assert f"[{section}]" in doc
        defaults = cls()
        for field in dataclasses.fields(cls):
            row = next((line for line in doc.splitlines() if line.startswith(f"| `{field.name}`")), None)
            assert row is not None, f"[{section}] {field.name} undocumented"
            value = getattr(defaults, field.name)
            if field.name != "app_secret" and value not in ("", 0):
                shown = str(value).lower() if isinstance(value, bool) else str(value)
                assert shown in row, f"default of [{section}] {field.name} not shown"
    for key in ("state_dir", "log_dir"):
        assert f"| `{key}`" in doc
    for variable in [*ENV_OVERRIDES, *PATH_ENV]:
        assert f"`{variable}`" in doc


def test_a_configuration_saved_by_notepad_with_a_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ehc.toml"
    path.write_bytes(b"\xef\xbb\xbf" + '[defaults]\ndzsf = "广东省"\n'.encode())
    assert load_settings(path, env={}).defaults.dzsf == "广东省"


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_a_secret_in_a_file_every_local_user_may_read_is_warned_of(tmp_path: Path) -> None:
    path = tmp_path / "ehc.toml"
    path.write_text('[platform]\napp_id = "abc"\napp_secret = "s3cr3t-in-the-file"\n', encoding="utf-8")
    path.chmod(0o644)
    (warning,) = load_settings(path, env={}).warnings
    assert str(path) in warning and "0644" in warning and "EHC_APP_SECRET" in warning
    assert "s3cr3t" not in warning
    # The environment's secret wins, but the file still shows its own to everyone.
    assert load_settings(path, env={"EHC_APP_SECRET": "other"}).warnings == (warning,)
    path.chmod(0o640)  # readable by the service's group only, as operations.md sets up ehc.env
    assert load_settings(path, env={}).warnings == ()
    path.chmod(0o644)
    path.write_text('[platform]\napp_id = "abc"\n', encoding="utf-8")
    assert load_settings(path, env={"EHC_APP_SECRET": "s3cr3t"}).warnings == ()


def test_a_relative_state_folder_is_warned_of(tmp_path: Path) -> None:
    """Started from another folder (cron, systemd, by hand), a run would use another journal."""
    (warning,) = load_settings(None, env={"EHC_STATE_DIR": "state"}).warnings
    assert "相对路径" in warning and str(Path("state").absolute()) in warning
    path = tmp_path / "ehc.toml"
    path.write_text('[paths]\nstate_dir = "var/ehc"\n', encoding="utf-8")
    assert len(load_settings(path, env={}).warnings) == 1
    assert load_settings(None, env={"EHC_STATE_DIR": str(tmp_path)}).warnings == ()


def test_a_read_memory_cap_of_0_or_enough_is_taken(tmp_path: Path) -> None:
    for value in (0, 512, 4096):
        settings = load_settings(_toml(tmp_path, f"[inbox]\nread_memory_mb = {value}\n"), env={})
        assert settings.inbox.read_memory_mb == value
