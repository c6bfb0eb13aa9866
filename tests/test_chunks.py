"""A run read and reported chunk by chunk: the boundaries between chunks (and files) change nothing.

Every test runs the real pipeline in-process with tiny chunks (a few rows), so
that repeated ID numbers, footers, blank lines, quoted line breaks and the
report caps all fall across chunk boundaries.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from submit_helpers import chinese_name, make_id, resident, write_register

from pipeline.config import DefaultValues, Settings
from pipeline.dryrun import run_validate
from pipeline.reading import delimited
from pipeline.reading.register import open_register
from pipeline.reports import workbooks

TODAY = date(2026, 6, 1)


def _settings(tmp_path: Path) -> Settings:
    return Settings(defaults=DefaultValues(org_code="455400000"), state_dir=tmp_path / "state")


def _people(first: int, count: int) -> list[dict[str, str]]:
    return [resident(make_id(serial)) for serial in range(first, first + count)]


def _results(out: Path) -> list[dict[str, str]]:
    text = (out / "results.csv").read_text(encoding="utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def _sheet(path: Path, sheet: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in openpyxl.load_workbook(path)[sheet].iter_rows(values_only=True)]


def _cells(worksheet: Any) -> list[tuple[str, object, str | None]]:
    """Every cell of a sheet: where it is, its value and its comment."""
    cells = (cell for row in worksheet.iter_rows() for cell in row)
    return [(c.coordinate, c.value, c.comment.text if c.comment else None) for c in cells]


def _validate(tmp_path: Path, inputs: list[Path], out: str, chunk_rows: int | None) -> dict[str, Path]:
    result = run_validate(inputs, tmp_path / out, _settings(tmp_path), today=TODAY, chunk_rows=chunk_rows)
    assert not [p for p in (tmp_path / out).iterdir() if p.name.startswith(".")], "work files left behind"
    return result.paths


def test_a_repeated_id_across_chunks_and_files_names_its_first_row(tmp_path: Path) -> None:
    first = _people(1, 7)
    second = _people(20, 4)
    second[2] = {**first[1]}  # the second file repeats the first file's second resident
    first[6] = {**first[0]}  # the first file's last row repeats its first, chunks apart
    a = write_register(tmp_path / "甲.csv", first)
    b = write_register(tmp_path / "乙.csv", second)
    paths = _validate(tmp_path, [a, b], "out", chunk_rows=2)
    rows = _results(tmp_path / "out")
    assert [(r["source_file"], r["source_row"]) for r in rows] == [
        ("甲.csv", str(n)) for n in range(2, 9)
    ] + [("乙.csv", str(n)) for n in range(2, 6)]
    repeated = {(r["source_file"], r["source_row"]): r for r in rows if r["result_code"] == "10115"}
    assert set(repeated) == {("甲.csv", "8"), ("乙.csv", "4")}
    # The first row is named by its row number in the same file, with its file's name in another.
    assert "与第 2 行重复" in repeated[("甲.csv", "8")]["message"]
    assert "与甲.csv 第 3 行重复" in repeated[("乙.csv", "4")]["message"]
    assert sum(r["status"] == "invalid" for r in rows) == 2
    errors = _sheet(paths["errors.xlsx"], "明细")
    # errors.xlsx: 行号, 列, 原值, 说明, 处理办法, 代码, 文件, 工作表
    assert [(e[5], e[6], e[0]) for e in errors[1:]] == [(10115, "甲.csv", 8), (10115, "乙.csv", 4)]


def test_chunked_reports_equal_a_single_chunk(tmp_path: Path) -> None:
    people = _people(100, 23)
    people[3] = {**people[3], "brdh": "12"}
    people[11] = {**people[11], "xb": "9"}
    people[17] = {**people[17], "sfzhm": people[17]["sfzhm"][:-1] + "0"}
    people[20] = {**people[5]}
    a = write_register(tmp_path / "a.csv", people[:13])
    b = write_register(tmp_path / "b.csv", people[13:])
    whole = _validate(tmp_path, [a, b], "whole", chunk_rows=None)
    small = _validate(tmp_path, [a, b], "small", chunk_rows=3)
    assert _results(tmp_path / "small") == _results(tmp_path / "whole")
    assert len(_results(tmp_path / "small")) == 23
    for workbook, sheets in (("results.xlsx", ("汇总", "明细")), ("errors.xlsx", ("汇总", "明细", "提示"))):
        for sheet in sheets:
            assert _sheet(small[workbook], sheet) == _sheet(whole[workbook], sheet), (workbook, sheet)
    for copy in ("annotated_a.xlsx", "annotated_b.xlsx"):  # a CSV's annotated copy, gathered chunk by chunk
        books = [openpyxl.load_workbook(paths[copy]) for paths in (small, whole)]
        assert books[0].sheetnames == books[1].sheetnames
        for name in books[0].sheetnames:
            assert _cells(books[0][name]) == _cells(books[1][name]), (copy, name)
    marked = openpyxl.load_workbook(small["annotated_a.xlsx"]).worksheets[0]
    assert any(c.comment for row in marked.iter_rows() for c in row)


def test_a_chunk_of_mostly_faults_is_checked_in_parts_and_reports_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A register that is mostly faults (the wrong file, a shifted column) made every fault's message in
    # one batch: 100,000 rows of garbage (1.6 million faults) took 4 GB; in parts, 1.2 GB.
    from pipeline import dryrun

    people = _people(300, 30)
    for serial in range(0, 30, 2):
        people[serial] = {**people[serial], "brdh": "12", "xb": "9", "mzdm": "火星族"}
    people[25] = {**people[3]}  # repeats a row of an earlier part
    register = write_register(tmp_path / "a.csv", people)
    whole = _validate(tmp_path, [register], "whole", chunk_rows=None)
    sizes: list[int] = []
    check_batch = dryrun.check_batch

    def counted(*args: Any, **kwargs: Any) -> Any:
        batch = check_batch(*args, **kwargs)
        sizes.append(len(batch))
        return batch

    monkeypatch.setattr(dryrun, "check_batch", counted)
    monkeypatch.setattr(dryrun, "BATCH_FAULTS", 5)
    monkeypatch.setattr(dryrun, "MIN_BATCH_ROWS", 4)
    parts = _validate(tmp_path, [register], "parts", chunk_rows=None)
    assert len(sizes) > 2 and sum(sizes) == 30 and max(sizes) < 30
    rows = _results(tmp_path / "parts")
    assert rows == _results(tmp_path / "whole")
    assert "与第 5 行重复" in rows[25]["message"]
    for workbook, sheets in (("results.xlsx", ("汇总", "明细")), ("errors.xlsx", ("汇总", "明细", "提示"))):
        for sheet in sheets:
            assert _sheet(parts[workbook], sheet) == _sheet(whole[workbook], sheet), (workbook, sheet)
    books = [openpyxl.load_workbook(paths["annotated_a.xlsx"]) for paths in (parts, whole)]
    assert _cells(books[0].worksheets[0]) == _cells(books[1].worksheets[0])


def test_every_row_once_in_order_across_blank_lines_footers_and_quoted_line_breaks(tmp_path: Path) -> None:
    people = _people(200, 9)
    lines = ["姓名,性别,民族,出生日期,身份证号,联系电话,医疗费用支付方式,备注"]
    for serial, person in enumerate(people):
        note = '"第一行\n第二行"' if serial == 6 else ("合计" if serial == 2 else "")
        lines.append(
            f"{chinese_name(serial)},男,汉族,{person['csrq']},{person['sfzhm']},{person['brdh']},自费,{note}"
        )
        if serial in (1, 4):
            lines.append("")
    lines += ["", "合计,9 人", "填表人：张三"]
    path = tmp_path / "register.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _validate(tmp_path, [path], "out", chunk_rows=2)
    rows = _results(tmp_path / "out")
    # Rows as Excel shows them: header 1; 2, 3, (blank 4), 5, 6, 7, (blank 8), 9, 10 (a value spanning
    # two lines, one row), 11, 12.
    assert [int(r["source_row"]) for r in rows] == [2, 3, 5, 6, 7, 9, 10, 11, 12]
    assert [r["xm"] for r in rows] == [chinese_name(s) for s in range(9)]
    assert rows[6]["备注"] == "第一行\n第二行"


def _chunk_sizes_and_check(tmp_path: Path, more_headers: str, tail: Callable[[int], str]) -> list[int]:
    """Write 30 residents to wide.csv, each line ending in ``tail(serial)``; the rows of each chunk it
    is read in, after checking that a run gives every resident once, in order."""
    lines = ["姓名,性别,民族,出生日期,身份证号,联系电话,医疗费用支付方式" + more_headers]
    for serial, person in enumerate(_people(300, 30)):
        row = [chinese_name(serial), "男", "汉族", person["csrq"], person["sfzhm"], person["brdh"], "自费"]
        lines.append(",".join(row) + tail(serial))
    path = tmp_path / "wide.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    [source] = open_register(path)
    sizes = [len(chunk.data) for chunk in source.read(400_000)]
    _validate(tmp_path, [path], "out", chunk_rows=None)
    assert [r["xm"] for r in _results(tmp_path / "out")] == [chinese_name(s) for s in range(30)]
    return sizes


def test_wide_rows_make_chunks_of_fewer_rows_not_larger_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delimited, "CHUNK_BYTES", 20_000)  # about four of these rows
    sizes = _chunk_sizes_and_check(tmp_path, ",备注", lambda serial: ",很长的备注" + "很长的备注" * 999)
    assert sum(sizes) == 30 and len(sizes) >= 5 and max(sizes) <= 5, sizes


def test_rows_of_many_empty_cells_make_chunks_of_fewer_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV saved from a sheet with a stray value far right runs every line to it: few bytes per row,
    many cells, each costing memory at every stage.  Chunks are bounded by cells, not bytes alone."""
    monkeypatch.setattr(delimited, "CHUNK_CELLS", 20_000)  # about six of these rows
    sizes = _chunk_sizes_and_check(tmp_path, "", lambda serial: "," * 3000 + ("x" if serial == 0 else ""))
    assert sum(sizes) == 30 and len(sizes) >= 5 and max(sizes) <= 7, sizes


def test_footer_words_followed_by_residents_are_residents(tmp_path: Path) -> None:
    people = _people(300, 4)
    path = write_register(tmp_path / "r.csv", people)
    text = path.read_text(encoding="utf-8").splitlines()
    text.insert(3, "合计,男,汉族,19800101,110101198001010011,13900001111,自费,,,,")
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    _validate(tmp_path, [path], "out", chunk_rows=2)
    rows = _results(tmp_path / "out")
    assert [r["xm"] for r in rows][2] == "合计"
    assert len(rows) == 5


def test_detail_above_the_limit_keeps_bad_rows_up_to_the_sheet_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workbooks, "DETAIL_ROW_LIMIT", 5)
    monkeypatch.setattr(workbooks, "SHEET_LINES", 3)
    people = _people(400, 12)
    for k in (1, 4, 6, 9, 11):
        people[k] = {**people[k], "brdh": "12"}
    path = write_register(tmp_path / "r.csv", people)
    paths = _validate(tmp_path, [path], "out", chunk_rows=2)
    detail = _sheet(paths["results.xlsx"], "明细")
    shown = [r for r in detail[1:] if r[2] is not None]
    assert [r[2] for r in shown] == [3, 6, 8]  # the first three bad rows, in order
    notes = [r[0] for r in detail[1:] if r[2] is None and r[0]]
    assert notes == ["注意：本表只列出未通过的 3 行（共 12 行）；results.csv 含全部行。"]
    errors = _sheet(paths["errors.xlsx"], "明细")
    assert [(r[5], r[0]) for r in errors[1:4]] == [(10110, 3), (10110, 6), (10110, 8)]
    assert any(r[0] and "本表只列出前 3 条（共 5 条）" in str(r[0]) for r in errors[4:])
    assert len(_results(tmp_path / "out")) == 12


def test_detail_of_a_short_run_holds_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workbooks, "DETAIL_ROW_LIMIT", 6)
    path = write_register(tmp_path / "r.csv", _people(500, 6))
    paths = _validate(tmp_path, [path], "out", chunk_rows=4)
    detail = _sheet(paths["results.xlsx"], "明细")
    assert [r[2] for r in detail[1:]] == [2, 3, 4, 5, 6, 7]


def test_a_workbook_read_in_chunks_is_annotated_whole(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "名单"
    sheet.append(["XX社区 登记表"])
    sheet.append(["姓名", "性别", "民族", "出生日期", "身份证号", "联系电话", "医疗费用支付方式"])
    people = _people(600, 7)
    for serial, person in enumerate(people):
        phone = "12" if serial in (1, 5) else person["brdh"]
        gender = "男" if person["xb"] == "1" else "女"
        sheet.append([chinese_name(serial), gender, "汉族", person["csrq"], person["sfzhm"], phone, "自费"])
    book.save(tmp_path / "w.xlsx")
    paths = _validate(tmp_path, [tmp_path / "w.xlsx"], "out", chunk_rows=2)
    annotated = openpyxl.load_workbook(paths["annotated_w.xlsx"])["名单"]
    marked = {c.coordinate for row in annotated.iter_rows() for c in row if c.comment}
    assert marked == {"F4", "F8"}
    assert annotated["A1"].value == "XX社区 登记表"


def _register_with_everything(tmp_path: Path) -> list[Path]:
    """Two registers with faults, warnings, blank lines, footer words, repeats across chunks and files."""
    people = _people(600, 40)
    for k in (3, 14, 27):
        people[k] = {**people[k], "brdh": "12"}
    people[9] = {**people[9], "xb": "9"}
    wrong = "0" if people[21]["sfzhm"][-1] != "0" else "1"
    people[21] = {**people[21], "sfzhm": people[21]["sfzhm"][:-1] + wrong}  # a wrong check character
    people[30] = {**people[2]}  # repeats a row several chunks earlier
    people[35] = {**people[30]}
    a = write_register(tmp_path / "a.csv", people[:26])
    text = a.read_text(encoding="utf-8").splitlines()
    text.insert(5, "")
    text.insert(9, "合计,男,汉族,19800101,110101198001010011,13900001111,自费,,,,")  # data: rows follow
    text += ["", "合计,26 人", "填表人：张三"]  # a footer: dropped
    a.write_text("\n".join(text) + "\n", encoding="utf-8")
    second = people[26:]
    second[6] = {**people[7]}  # repeats the first file's row
    b = write_register(tmp_path / "b.csv", second)
    return [a, b]


def _same_reports(left: dict[str, Path], right: dict[str, Path]) -> None:
    assert list(left) == list(right)
    assert left["results.csv"].read_bytes() == right["results.csv"].read_bytes()
    for name in left:
        if name.endswith(".xlsx"):
            books = [openpyxl.load_workbook(paths[name]) for paths in (left, right)]
            assert books[0].sheetnames == books[1].sheetnames, name
            for sheet in books[0].sheetnames:
                assert _cells(books[0][sheet]) == _cells(books[1][sheet]), (name, sheet)
                widths = [{k: d.width for k, d in book[sheet].column_dimensions.items()} for book in books]
                assert widths[0] == widths[1], (name, sheet)


def test_arrow_runs_beside_the_runs_own_threads_on_one_core_fewer_and_is_given_back_its_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading ahead, checking and the reports keep a thread each busy; Arrow's pool of threads beside
    them is one fewer than the cores (two cores: one thread) while the run checks, as it was after."""
    import pyarrow as pa

    from pipeline import dryrun

    inputs = _register_with_everything(tmp_path)
    before = pa.cpu_count()
    seen: list[int] = []
    checked = dryrun.check_batch

    def noting(*args: Any, **kwargs: Any) -> Any:
        seen.append(pa.cpu_count())
        return checked(*args, **kwargs)

    monkeypatch.setattr(dryrun, "check_batch", noting)
    monkeypatch.setattr(dryrun, "usable_cores", lambda: 2)
    run_validate(inputs, tmp_path / "out", _settings(tmp_path), today=TODAY, workers=0)
    assert seen and set(seen) == {1}
    assert pa.cpu_count() == before


@pytest.mark.parametrize("chunk_rows", [3, 7])
def test_worker_processes_give_the_reports_of_one_process(tmp_path: Path, chunk_rows: int) -> None:
    inputs = _register_with_everything(tmp_path)
    settings, rows = _settings(tmp_path), chunk_rows
    alone = run_validate(inputs, tmp_path / "alone", settings, today=TODAY, chunk_rows=rows, workers=0)
    forked = run_validate(inputs, tmp_path / "forked", settings, today=TODAY, chunk_rows=rows, workers=2)
    _same_reports(alone.paths, forked.paths)
    assert alone.counts == forked.counts
    assert alone.exit_code == forked.exit_code == 1
    rows = _results(tmp_path / "forked")
    assert len(rows) == 41  # 26, the resident named like a footer, 14 of the second file
    repeats = [r for r in rows if "10115" in r["result_code"]]
    assert len(repeats) == 3
    assert not [p for p in (tmp_path / "forked").iterdir() if p.name.startswith(".")], "work files left"


def test_worker_processes_check_a_chunk_of_mostly_faults_in_parts_and_report_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker checked its chunk in one batch, however many faults: 100,000 garbage rows took 3.2 GB in
    # the worker. In parts, each part asks the parent about the run's ID numbers; the next chunk's
    # question must wait for the last of them, or a repeat across chunks would go unseen.
    from pipeline import dryrun

    monkeypatch.setattr(dryrun, "BATCH_FAULTS", 1)
    monkeypatch.setattr(dryrun, "MIN_BATCH_ROWS", 2)
    check_batch = dryrun.check_batch

    def noted(*args: Any, **kwargs: Any) -> Any:  # in the workers too: they are forked after this
        batch = check_batch(*args, **kwargs)
        with open(tmp_path / "sizes", "a", encoding="utf-8") as sizes:
            sizes.write(f"{batch.table_rows[0].start} {len(batch)}\n")
        return batch

    monkeypatch.setattr(dryrun, "check_batch", noted)
    inputs = _register_with_everything(tmp_path)
    settings = _settings(tmp_path)
    alone = run_validate(inputs, tmp_path / "alone", settings, today=TODAY, chunk_rows=9, workers=0)
    (tmp_path / "sizes").unlink()
    forked = run_validate(inputs, tmp_path / "forked", settings, today=TODAY, chunk_rows=9, workers=2)
    lines = (tmp_path / "sizes").read_text(encoding="utf-8").splitlines()
    parts = sorted(tuple(int(number) for number in line.split()) for line in lines)
    assert len(parts) > 6  # the chunks (7, 8, 7, 5, 9, 5 rows) were cut into parts, in tasks or in them
    assert [start for start, _ in parts] == list(itertools.accumulate([0] + [n for _, n in parts[:-1]]))
    assert sum(n for _, n in parts) == 41
    _same_reports(alone.paths, forked.paths)
    assert alone.counts == forked.counts
    rows = _results(tmp_path / "forked")
    assert len(rows) == 41 and len([r for r in rows if "10115" in r["result_code"]]) == 3


def test_worker_processes_with_a_detail_cut_and_capped_sheets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workbooks, "DETAIL_ROW_LIMIT", 10)
    monkeypatch.setattr(workbooks, "SHEET_LINES", 2)
    inputs = _register_with_everything(tmp_path)
    settings = _settings(tmp_path)
    alone = run_validate(inputs, tmp_path / "alone", settings, today=TODAY, chunk_rows=4, workers=0)
    forked = run_validate(inputs, tmp_path / "forked", settings, today=TODAY, chunk_rows=4, workers=2)
    _same_reports(alone.paths, forked.paths)


def test_a_worker_that_dies_stops_the_run_with_no_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    from pipeline import dryrun
    from pipeline.workers import WorkerCrashed

    inputs = _register_with_everything(tmp_path)
    parent = os.getpid()
    real = dryrun.check_batch

    def dying(*args: object, **kwargs: object) -> object:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dryrun, "check_batch", dying)
    with pytest.raises(WorkerCrashed) as raised:
        run_validate(inputs, tmp_path / "out", _settings(tmp_path), today=TODAY, chunk_rows=5, workers=2)
    assert "校验子进程意外退出" in str(raised.value) and "没有写入任何报告" in str(raised.value)
    assert not list((tmp_path / "out").iterdir())


def test_without_fork_the_run_is_checked_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing

    inputs = _register_with_everything(tmp_path)
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # as on Windows
    settings = _settings(tmp_path)
    alone = run_validate(inputs, tmp_path / "alone", settings, today=TODAY, chunk_rows=5, workers=0)
    asked = run_validate(inputs, tmp_path / "asked", settings, today=TODAY, chunk_rows=5, workers=2)
    _same_reports(alone.paths, asked.paths)


@pytest.mark.parametrize(
    ("cores", "load", "rows", "expected"),
    [
        (2, 0.0, 1_000_000, 0),  # two cores: reading and checking only take turns
        (4, 0.0, 1_000_000, 3),  # one idle core stays with the parent
        (4, 2.0, 1_000_000, 0),  # two busy cores leave one worker: not worth forking
        (8, 0.0, 1_000_000, 4),  # at most MAX_WORKERS
        (8, 0.0, 1_000, 0),  # a short run is checked in one process
    ],
)
def test_workers_by_default_only_where_they_gain(
    monkeypatch: pytest.MonkeyPatch, cores: int, load: float, rows: int, expected: int
) -> None:
    from types import SimpleNamespace

    from pipeline import dryrun

    monkeypatch.delenv("EHC_WORKERS", raising=False)
    monkeypatch.setattr(dryrun, "usable_cores", lambda: cores)
    monkeypatch.setattr(dryrun.os, "getloadavg", lambda: (load, load, load))
    registers = SimpleNamespace(estimated_rows=rows)
    assert dryrun.worker_count(registers) == expected  # type: ignore[arg-type]
    monkeypatch.setenv("EHC_WORKERS", "2")
    assert dryrun.worker_count(registers) == 2  # type: ignore[arg-type]
    monkeypatch.setenv("EHC_WORKERS", "5000")  # a typing mistake forks no more than the most a run uses
    assert dryrun.worker_count(registers) == dryrun.MAX_WORKERS  # type: ignore[arg-type]


def _threads_left() -> list[str]:
    import threading
    import time

    deadline = time.monotonic() + 5
    while True:
        left = [t.name for t in threading.enumerate() if t.name.startswith("ehc-") and t.is_alive()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def test_a_report_that_fails_mid_run_stops_it_with_no_report_and_no_thread_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.errors import EhcError
    from pipeline.reports.write import ReportWriter

    inputs = [write_register(tmp_path / "名单.csv", _people(1, 30))]
    real = ReportWriter.add
    taken: list[int] = []

    def failing(self: ReportWriter, batch: Any) -> None:
        taken.append(len(batch))
        if len(taken) == 2:  # the second chunk: the first is already in results.csv
            raise EhcError("无法写入报告：磁盘已满")
        real(self, batch)

    monkeypatch.setattr(ReportWriter, "add", failing)
    with pytest.raises(EhcError, match="磁盘已满"):
        run_validate(inputs, tmp_path / "out", _settings(tmp_path), today=TODAY, chunk_rows=4, workers=0)
    assert len(taken) == 2, "chunks were still handed on after the failure"
    assert not list((tmp_path / "out").iterdir())
    assert _threads_left() == []


def _counted(produced: list[int]) -> Iterator[int]:
    """0, 1, 2… for ever, each number noted in ``produced`` as it is made."""
    number = 0
    while True:
        produced.append(number)
        yield number
        number += 1


def test_reading_ahead_stops_when_closed_before_anything_is_taken(tmp_path: Path) -> None:
    from pipeline.prefetch import Prefetched

    produced: list[int] = []

    ahead = Prefetched(_counted(produced), depth=1)
    ahead.close()
    assert _threads_left() == []
    assert len(produced) <= 3  # one waiting in the slot, one being put: never the whole stream


def test_reading_ahead_makes_the_next_item_only_once_the_one_before_is_taken() -> None:
    # One chunk ahead of the one being checked, not two: each held chunk is a few hundred megabytes.
    import threading

    from pipeline.prefetch import Prefetched

    produced: list[int] = []

    def settled(count: int) -> list[int]:
        for _ in range(500):
            if len(produced) >= count:
                break
            threading.Event().wait(0.01)
        threading.Event().wait(0.2)  # time enough to make one more, were it allowed to
        return list(produced)

    ahead = Prefetched(_counted(produced), depth=1)
    try:
        items = iter(ahead)
        assert next(items) == 0
        assert settled(2) == [0, 1]
        assert next(items) == 1
        assert settled(3) == [0, 1, 2]
    finally:
        ahead.close()
    assert _threads_left() == []


def test_reading_ahead_gives_items_in_order_then_the_error_in_its_place() -> None:
    from pipeline.prefetch import Prefetched

    def items() -> Any:
        yield from range(5)
        raise ValueError("第 6 行读不出")

    taken: list[int] = []
    with pytest.raises(ValueError, match="第 6 行"):
        for item in Prefetched(items(), depth=2):
            taken.append(item)
    assert taken == [0, 1, 2, 3, 4]
    assert _threads_left() == []


@pytest.mark.parametrize("first_chunk_read", [False, True], ids=["still-reading", "read"])
def test_the_checks_are_warmed_up_beside_the_imports_only_while_the_first_chunk_is_still_being_read(
    monkeypatch: pytest.MonkeyPatch, first_chunk_read: bool
) -> None:
    # Warming up beside a first chunk already read built the schema and code tables twice at once.
    import threading

    from pipeline import dryrun
    from pipeline.prefetch import Prefetched

    warmed: list[object] = []
    monkeypatch.setattr(dryrun, "_warm_checks", lambda settings, today: warmed.append(today))
    release = threading.Event()

    def chunks() -> Any:
        if not first_chunk_read:
            release.wait(10)
        yield 1

    ahead = Prefetched(chunks())
    try:
        while first_chunk_read and not ahead.ready:
            threading.Event().wait(0.01)
        assert ahead.ready is first_chunk_read
        before = set(threading.enumerate())
        dryrun._import_in_background(["json"], warm=(Settings(), date(2026, 12, 7)), ahead=ahead)
        for thread in set(threading.enumerate()) - before:
            thread.join(10)
        assert warmed == ([] if first_chunk_read else [date(2026, 12, 7)])
    finally:
        release.set()
        ahead.close()


@pytest.mark.parametrize("moment", ["start", "end"])
def test_ctrl_c_as_the_report_thread_starts_or_is_told_the_end_leaves_no_thread_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    # A Ctrl-C landing while the thread feeding the reports was started, or while it was handed
    # the end, left it waiting for more: `ehc validate` said 已中断。 and then never exited.
    import queue
    import threading

    real_start, real_put, real_get = threading.Thread.start, queue.Queue.put, queue.Queue.get
    queues: list[queue.Queue[Any]] = []  # the feeding thread's, to let it end if the test fails

    def start(self: threading.Thread) -> None:
        real_start(self)
        if moment == "start" and self.name == "ehc-report-feed":
            raise KeyboardInterrupt

    def put(self: queue.Queue[Any], item: Any, *args: Any, **kwargs: Any) -> None:
        if moment == "end" and item == (False, None):
            raise KeyboardInterrupt
        real_put(self, item, *args, **kwargs)

    def get(self: queue.Queue[Any], *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "ehc-report-feed" and self not in queues:
            queues.append(self)
        return real_get(self, *args, **kwargs)

    monkeypatch.setattr(threading.Thread, "start", start)
    monkeypatch.setattr(queue.Queue, "get", get)
    monkeypatch.setattr(queue.Queue, "put", put)
    inputs = [write_register(tmp_path / "名单.csv", _people(1, 30))]
    with pytest.raises(KeyboardInterrupt):
        run_validate(inputs, tmp_path / "out", _settings(tmp_path), today=TODAY, chunk_rows=4, workers=0)
    left = _threads_left()
    for waiting in queues if left else []:  # let a thread left waiting end, so that pytest can exit
        real_put(waiting, (False, None))
    assert left == []
    assert not list((tmp_path / "out").iterdir())


def test_the_checks_are_warmed_once_a_day_however_many_runs_a_process_makes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A nightly run checks file after file in one process: each warming after the first cost 0.1 s."""
    from pipeline import dryrun, validate

    warmed: list[date] = []
    real = validate.warm_up

    def warm_up(today: date) -> None:
        warmed.append(today)
        real(today)

    monkeypatch.setattr(validate, "warm_up", warm_up)
    monkeypatch.setattr(dryrun, "_WARMED_DAYS", set())
    for day in (date(2026, 12, 7), date(2026, 12, 7), date(2026, 12, 8), date(2026, 12, 7)):
        dryrun._warm_checks(Settings(), day)
    assert warmed == [date(2026, 12, 7), date(2026, 12, 8)]
