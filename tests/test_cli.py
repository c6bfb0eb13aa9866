"""The command line itself: option errors, exit codes, no tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

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
