"""Progress bars: shown with rows per second and time left when asked, nothing at all otherwise."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from pipeline import progress


def test_a_bar_shows_rows_their_rate_and_the_time_left(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "SHOW_AFTER_SECONDS", 0.0)
    bar = progress.RowBar("校验", 1_000, enabled=True)
    bar.advance(400)
    time.sleep(0.2)  # tqdm redraws at most ten times a second
    bar.advance(300)
    time.sleep(0.2)
    bar.advance(400)  # past the estimate: the total follows
    bar.total(1_100)
    bar.close()
    shown = capsys.readouterr().err
    assert "校验" in shown and "700/1.00k 行" in shown and "1.10k/1.10k 行" in shown
    # Rows a second, and elapsed<remaining with the time left known.
    assert re.search(r"\[00:00<00:00, [0-9.]+k?行/s\]", shown), shown


def test_no_bar_writes_nothing_and_leaves_tqdm_unimported() -> None:
    code = (
        "import sys; from pipeline.progress import RowBar\n"
        "bar = RowBar('校验', 10, enabled=False); bar.advance(5); bar.total(12); bar.close()\n"
        "print('tqdm' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False" and done.stderr == ""


def test_a_log_line_goes_above_a_shown_bar_and_never_draws_a_waiting_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal the log and the bars share stderr: a line must not land on a bar's line."""
    from loguru import logger

    from pipeline.logs import setup_logging

    setup_logging(level="INFO")
    try:
        waiting = progress.RowBar("写报告", 100, enabled=True)  # shown only after its delay
        logger.info("第一行")
        said = capsys.readouterr().err
        assert "第一行" in said and "写报告" not in said
        monkeypatch.setattr(progress, "SHOW_AFTER_SECONDS", 0.0)
        shown = progress.RowBar("校验", 100, enabled=True)
        time.sleep(0.15)
        shown.advance(50)
        assert "校验" in capsys.readouterr().err
        logger.info("第二行")
        said = capsys.readouterr().err
        before, _, after = said.partition("第二行")
        assert "校验" not in before and "\r  " in before  # the bar's line cleared, not written after
        assert "校验" in after and "/100 行" in after and "写报告" not in said  # drawn again below
        shown.close()
        waiting.close()
    finally:
        logger.remove()


def test_a_log_line_written_while_tqdm_is_still_being_imported_is_written(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during the import of tqdm: the stop's warning was lost for a "Logging error" traceback."""
    import types

    from loguru import logger

    from pipeline.logs import setup_logging

    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))  # partly initialised: no tqdm yet
    setup_logging(level="INFO")
    try:
        logger.warning("收到中断信号")
    finally:
        logger.remove()
    said = capsys.readouterr().err
    assert "收到中断信号" in said and "Logging error" not in said and "Traceback" not in said
