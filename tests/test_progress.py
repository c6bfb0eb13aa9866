"""Progress bars: shown with rows per second and time left when asked, nothing at all otherwise."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

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


class _CountedBar:
    """A stand-in for :class:`progress.RowBar` that keeps what it was told."""

    made: ClassVar[list[_CountedBar]] = []

    def __init__(
        self, label: str, total: int, *, enabled: bool, unit: str = "行", share: bool = False
    ) -> None:
        self.label, self.total_at_start, self.share, self.done, self.closed = label, total, share, 0, False
        _CountedBar.made.append(self)

    def advance(self, amount: int) -> None:
        self.done += amount

    def close(self) -> None:
        self.closed = True


def test_reading_a_workbook_moves_its_bar_through_every_pass_to_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.config import Settings
    from pipeline.dryrun import open_registers

    workbook = Path(__file__).resolve().parents[1] / "sample_data" / "社区居民登记表.xlsx"
    size = workbook.stat().st_size
    _CountedBar.made = []
    monkeypatch.setattr(progress, "RowBar", _CountedBar)
    first_pass: list[int] = []
    end_first_pass = progress.first_pass_done

    def first_pass_done() -> None:
        assert progress._reading is not None
        first_pass.append(progress._reading.first)
        end_first_pass()

    monkeypatch.setattr("pipeline.reading.excel.first_pass_done", first_pass_done)

    registers = open_registers([workbook], Settings(), progress=True)

    assert len(registers.sources) == 1
    (bar,) = _CountedBar.made
    assert bar.label == f"读取 {workbook.name}" and bar.share and bar.closed
    assert bar.total_at_start == progress.READING_PASSES * size
    # The parts inflated account for most of the file (the rest is zip headers and the directory).
    assert first_pass and 0.8 * size < first_pass[0] <= size
    # The first pass made whole, then calamine's and the columns': to within the rounding per column.
    assert 3 * size - 100 <= bar.done <= 3 * size
    assert progress._reading is None


def test_no_bar_for_a_text_register_or_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import Settings
    from pipeline.dryrun import open_registers

    samples = Path(__file__).resolve().parents[1] / "sample_data"
    _CountedBar.made = []
    monkeypatch.setattr(progress, "RowBar", _CountedBar)
    open_registers([samples / "居民名单_GBK.csv"], Settings(), progress=True)  # read chunk by chunk later
    open_registers([samples / "社区居民登记表.xlsx"], Settings(), progress=False)
    assert _CountedBar.made == []


def test_a_reading_bar_shows_the_share_done_and_the_time_left(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "SHOW_AFTER_SECONDS", 0.0)
    with progress.reading_shown("读取 登记表.xlsx", 1_000, enabled=True):
        time.sleep(0.15)  # tqdm redraws at most ten times a second
        progress.read_bytes(600)
        time.sleep(0.15)
        progress.read_bytes(900)  # a part inflating past the file's size counts no more than the file
        progress.first_pass_done()
        time.sleep(0.15)
        progress.read_share(0.5)
    shown = capsys.readouterr().err
    assert "读取 登记表.xlsx" in shown and " 20% [00:00<" in shown and " 33% [00:00<" in shown
    assert " 50% [00:00<" in shown and " 67%" not in shown
    assert "行" not in shown  # no rows are counted while a workbook is read
    progress.read_bytes(100)  # after the block: nothing to move, nothing written
    assert capsys.readouterr().err == ""


def test_a_reading_bar_names_its_file_masked_and_on_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The bar's label is a message a clerk sees: a file name carrying an ID number or a line end."""
    import shutil

    from pipeline.config import Settings
    from pipeline.dryrun import open_registers

    sample = Path(__file__).resolve().parents[1] / "sample_data" / "社区居民登记表.xlsx"
    workbook = shutil.copy(sample, tmp_path / "张三_440606200410111969\n\x1b[2J.xlsx")
    _CountedBar.made = []
    monkeypatch.setattr(progress, "RowBar", _CountedBar)
    open_registers([Path(workbook)], Settings(), progress=True)
    (bar,) = _CountedBar.made
    assert bar.label == "读取 张三_440606********1969\\n\\x1b[2J.xlsx"
