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

from loguru import logger

from pipeline.errors import InputError
from pipeline.files import os_errors
from pipeline.model import RawTable
from pipeline.reading.delimited import read_delimited
from pipeline.reading.excel import read_workbook

#: File name endings read as workbooks (python-calamine) and as delimited text: the registers.
WORKBOOK_SUFFIXES: tuple[str, ...] = (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods")
TEXT_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".txt")
REGISTER_SUFFIXES: tuple[str, ...] = WORKBOOK_SUFFIXES + TEXT_SUFFIXES


def read_register(path: str | Path, *, sheet: str | None = None, all_sheets: bool = False) -> list[RawTable]:
    """Read the register at ``path`` as text tables, one per sheet read.

    Workbooks: by default the first visible sheet with data rows; ``sheet``
    picks one by name (an unknown name -> InputError listing the sheets);
    ``all_sheets`` returns every visible sheet with data rows.  Text files
    (``sheet`` does not apply) give one table.  Any unreadable input ->
    :class:`InputError`.
    """
    path = Path(path)
    label = path.name or str(path)
    suffix = path.suffix.lower()
    started = time.perf_counter()
    with os_errors("读取文件", path, kind=InputError):
        size = path.stat().st_size
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if suffix in WORKBOOK_SUFFIXES:
            with open(path, "rb"):  # permission problems surface here, not inside calamine
                pass
        data = path.read_bytes() if suffix in TEXT_SUFFIXES else b""
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
    else:
        tables = [read_delimited(path, data)]
    for table in tables:
        logger.debug(
            "read {}: header row {}, {} rows, {} columns in {:.2f}s",
            table.label, table.header_row, len(table.data), len(table.headers), time.perf_counter() - started,
        )  # fmt: skip
    return tables
