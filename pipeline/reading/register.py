"""Read a clerk's register (workbook or delimited text) into RawTables of text.

This is the edge where files are touched: every failure to read becomes an
:class:`~pipeline.errors.InputError` with a one-line Chinese message naming the
file (and sheet, row, column when known) and the fix.  Workbooks go through
:mod:`pipeline.reading.excel`, text files through :mod:`pipeline.reading.delimited`;
both find the header row below any title rows (:mod:`pipeline.reading.table`).
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

import numpy as np
import pandas as pd
from loguru import logger

from pipeline.errors import InputError
from pipeline.files import os_errors
from pipeline.model import RawTable, TableSource
from pipeline.reading.delimited import open_delimited
from pipeline.reading.excel import read_workbook

#: File name endings read as workbooks (python-calamine) and as delimited text: the registers.
WORKBOOK_SUFFIXES: tuple[str, ...] = (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods")
TEXT_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".txt")
REGISTER_SUFFIXES: tuple[str, ...] = WORKBOOK_SUFFIXES + TEXT_SUFFIXES


def open_register(
    path: str | Path, *, sheet: str | None = None, all_sheets: bool = False
) -> list[TableSource]:
    """Open the register at ``path``: one table per sheet read, whose rows are then read chunk by chunk.

    Workbooks: by default the first visible sheet with data rows; ``sheet``
    picks one by name (an unknown name -> InputError listing the sheets);
    ``all_sheets`` returns every visible sheet with data rows.  A workbook's
    sheets are read whole here (the format bounds them); a text file
    (``sheet`` does not apply) gives one table, read as its rows are asked
    for.  Any unreadable input -> :class:`InputError`, here or while reading.
    """
    path = Path(path)
    label = path.name or str(path)
    suffix = path.suffix.lower()
    started = time.perf_counter()
    with os_errors("读取文件", path, kind=InputError):
        size = path.stat().st_size
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        with open(path, "rb"):  # permission problems surface here, not inside a reader
            pass
    if suffix not in REGISTER_SUFFIXES:
        raise InputError(
            f"不支持的文件类型“{path.suffix or '无扩展名'}”",
            file=label,
            fix="请另存为 .xlsx（Excel 工作簿）或 .csv 后再处理",
        )
    if size == 0:
        raise InputError("文件是空的（0 字节）", file=label, fix="请确认文件已保存完整，或重新导出")

    if suffix in WORKBOOK_SUFFIXES:
        tables = read_workbook(path, sheet=sheet, all_sheets=all_sheets)
        for table in tables:
            logger.debug(
                "read {}: header row {}, {} rows, {} columns in {:.2f}s", table.label, table.header_row,
                len(table.data), len(table.headers), time.perf_counter() - started,
            )  # fmt: skip
        return [TableSource.of(table) for table in tables]
    with os_errors("读取文件", path, kind=InputError):
        return [open_delimited(path, size)]


def read_register(path: str | Path, *, sheet: str | None = None, all_sheets: bool = False) -> list[RawTable]:
    """Read the register at ``path`` whole, as text tables, one per sheet read (see :func:`open_register`)."""
    tables = []
    for source in open_register(path, sheet=sheet, all_sheets=all_sheets):
        if source.whole is not None:
            tables.append(source.whole)
            continue
        with os_errors("读取文件", Path(path), kind=InputError):
            tables.append(_stack(list(source.read(1 << 62))))
    return tables


def _stack(chunks: list[RawTable]) -> RawTable:
    """One table of the chunks of it."""
    if len(chunks) == 1:
        return chunks[0]
    first = chunks[0]
    offsets = np.cumsum([0, *(len(c.data) for c in chunks)])
    notes = [c.notes.assign(row=c.notes["row"] + offset) for c, offset in zip(chunks, offsets, strict=False)]
    return RawTable(
        first.path, first.sheet, first.header_row, first.headers, first.column_positions,
        pd.concat([c.data for c in chunks], ignore_index=True),
        np.concatenate([c.source_row for c in chunks]),
        pd.concat(notes, ignore_index=True),
    )  # fmt: skip
