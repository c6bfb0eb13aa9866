"""Read a clerk's register (workbook or delimited text) into tables of text.

This is the edge where files are touched: every failure to read becomes an
:class:`~pipeline.errors.InputError` with a one-line Chinese message naming the
file (and sheet, row, column when known) and the fix.  Workbooks go through
:mod:`pipeline.reading.excel`, text files through :mod:`pipeline.reading.delimited`;
both find the header row below any title rows (:mod:`pipeline.reading.table`).

Only regular files are read: a named pipe or a device (``/dev/zero``) given as
a register is refused from its ``stat`` before it is opened, and the file is
opened non-blocking and checked again, so nothing can make a read hang.
Within :func:`reading_policy`, symbolic links are refused rather than
followed (an inbox must not read what a link points at outside it) and each
file is read in a child process under memory and time limits
(:mod:`pipeline.reading.isolated`).

:func:`open_register` is what a run uses: a workbook's sheets are read whole
(the format bounds them), a text file is opened and its rows are read chunk
by chunk as the run asks for them, so a register of any length is read in
bounded memory.  Under a :func:`reading_policy` a workbook is read whole
in its child; a text file is still read chunk by chunk here (its reader
bounds every line, column and block; a child would send the whole register
back at once), links refused as the policy says.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from loguru import logger

from pipeline.errors import InputError
from pipeline.files import os_errors
from pipeline.model import RawTable, TableSource
from pipeline.reading.delimited import open_delimited
from pipeline.reading.excel import read_workbook
from pipeline.reading.isolated import ReadLimits, read_in_child

#: File name endings read as workbooks (python-calamine) and as delimited text: the registers.
WORKBOOK_SUFFIXES: tuple[str, ...] = (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods")
TEXT_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".txt")
REGISTER_SUFFIXES: tuple[str, ...] = WORKBOOK_SUFFIXES + TEXT_SUFFIXES

#: Largest text register read whole (in a reading child); a run otherwise reads any size in chunks.
MAX_TEXT_BYTES = 2 << 30


@dataclass(frozen=True)
class ReadPolicy:
    """How registers are read: following symbolic links or not; in a child under ``limits``, or here."""

    follow_symlinks: bool = True
    limits: ReadLimits | None = None


_policy = ReadPolicy()


@contextlib.contextmanager
def reading_policy(policy: ReadPolicy) -> Iterator[None]:
    """Within the block, every :func:`read_register` follows ``policy`` (an inbox's: no links, a child)."""
    global _policy
    previous, _policy = _policy, policy
    try:
        yield
    finally:
        _policy = previous


def not_regular(label: str, mode: int) -> InputError:
    """Why a file of ``mode`` (a link, a pipe, a device) is not read."""
    if stat.S_ISLNK(mode):
        return InputError(
            "这是一个符号链接（快捷方式），不是登记表文件本身，为安全起见不予读取",
            file=label,
            fix="把登记表文件本身（而不是链接）放进来",
        )
    device = stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
    kind = "命名管道" if stat.S_ISFIFO(mode) else "设备" if device else "特殊文件"
    return InputError(f"这不是普通文件（是{kind}），不予读取", file=label, fix="请给出登记表文件的路径")


#: What WPS saves under its own names, and how to get a register from it.
_WPS_FIXES = {
    ".et": "这是 WPS 表格自己的格式：请在 WPS 表格中“另存为” .xlsx（Excel 工作簿）后再处理",
    ".ett": "这是 WPS 表格的模板：请在 WPS 表格中打开，“另存为” .xlsx（Excel 工作簿）后再处理",
    ".wps": "这是 WPS 文字文档，不是表格：请把登记表做成 WPS 表格或 Excel 表格，另存为 .xlsx 后再处理",
}


def unsupported_type(suffix: str, label: str) -> InputError:
    """Why a file of another ending than a register's is not read, naming the endings that are."""
    readable = "、".join(REGISTER_SUFFIXES)
    return InputError(
        f"不支持的文件类型“{suffix or '无扩展名'}”（能读取的是 {readable}）",
        file=label,
        fix=_WPS_FIXES.get(suffix.lower(), "请另存为 .xlsx（Excel 工作簿）或 .csv 后再处理"),
    )


def _open_regular(path: Path, label: str, follow_symlinks: bool) -> tuple[int, int]:
    """An open descriptor of ``path`` and its size, once it is known to be a regular file."""
    before = os.stat(path, follow_symlinks=follow_symlinks)
    if stat.S_ISDIR(before.st_mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if not stat.S_ISREG(before.st_mode):
        raise not_regular(label, before.st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:  # swapped for a link since the stat
            raise not_regular(label, stat.S_IFLNK) from None
        raise
    after = os.fstat(descriptor)
    if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(descriptor)
        raise not_regular(label, after.st_mode)
    return descriptor, after.st_size


def open_register(
    path: str | Path, *, sheet: str | None = None, all_sheets: bool = False
) -> list[TableSource]:
    """Open the register at ``path``: one table per sheet read, whose rows are then read chunk by chunk.

    As :func:`read_register`, except that a text file is only opened here
    (its header found, its columns decided from the first megabyte) and its
    rows are read as they are asked for, in bounded memory; a fault found
    further in (another encoding, an unbalanced quote) is then an
    :class:`InputError` raised while reading.  Under a :func:`reading_policy`
    that refuses links or reads in a child, the file is read whole, there.
    """
    path = Path(path)
    policy = _policy
    if sheet is not None and path.suffix.lower() in TEXT_SUFFIXES:
        # Said, not passed over: the clerk meant a sheet and would take the whole file for it.
        logger.warning(
            "{} 是文本文件，没有工作表：--sheet {} 对它不起作用，读取的是整个文件", path.name, sheet
        )
    if path.suffix.lower() in TEXT_SUFFIXES and (policy.limits is not None or not policy.follow_symlinks):
        # Read here, chunk by chunk, even where workbooks go to a child: the text reader bounds itself
        # (lines, columns, blocks), and a child would send the whole register back at once.
        size = _check_file(path, policy.follow_symlinks, whole=False)
        return [open_delimited(path, size, opener=lambda: _reopened(path, policy.follow_symlinks))]
    if policy.limits is not None or not policy.follow_symlinks:
        return [TableSource.of(table) for table in read_register(path, sheet=sheet, all_sheets=all_sheets)]
    size = _check_file(path, follow_symlinks=True, whole=False)
    if path.suffix.lower() in WORKBOOK_SUFFIXES:
        return [TableSource.of(table) for table in read_here(path, sheet=sheet, all_sheets=all_sheets)]
    return [open_delimited(path, size)]


def _reopened(path: Path, follow_symlinks: bool) -> BinaryIO:
    """``path`` opened again for reading, as a regular file (and not through a link, unless allowed)."""
    with os_errors("读取文件", path, kind=InputError):
        descriptor, _ = _open_regular(path, path.name or str(path), follow_symlinks)
    return os.fdopen(descriptor, "rb")


def read_register(path: str | Path, *, sheet: str | None = None, all_sheets: bool = False) -> list[RawTable]:
    """Read the register at ``path`` whole, as text tables, one per sheet read.

    Workbooks: by default the first visible sheet with data rows; ``sheet``
    picks one by name (an unknown name -> InputError listing the sheets);
    ``all_sheets`` returns every visible sheet with data rows.  Text files
    (``sheet`` does not apply) give one table.  Any unreadable input ->
    :class:`InputError`.  How links are treated and where the file is read
    is set by :func:`reading_policy`.
    """
    path = Path(path)
    policy = _policy
    if policy.limits is None:
        return read_here(path, sheet=sheet, all_sheets=all_sheets, follow_symlinks=policy.follow_symlinks)
    _check_file(path, policy.follow_symlinks)  # plainly not a register: refused without a child
    return read_in_child(
        path,
        sheet=sheet,
        all_sheets=all_sheets,
        limits=policy.limits,
        read={"follow_symlinks": policy.follow_symlinks},
    )


def _check_file(path: Path, follow_symlinks: bool, *, whole: bool = True) -> int:
    """The size of ``path``, once it is known to be a non-empty regular file with a register's ending.

    ``whole``: the file is to be read whole (a text file then has a size limit).
    """
    label = path.name or str(path)
    suffix = path.suffix.lower()
    with os_errors("读取文件", path, kind=InputError):
        descriptor, size = _open_regular(path, label, follow_symlinks)
        os.close(descriptor)
    if suffix not in REGISTER_SUFFIXES:
        raise unsupported_type(path.suffix, label)
    if size == 0:
        raise InputError("文件是空的（0 字节）", file=label, fix="请确认文件已保存完整，或重新导出")
    if whole and suffix in TEXT_SUFFIXES and size > MAX_TEXT_BYTES:
        raise InputError(
            f"文件过大（{size >> 20} MB，文本文件上限 {MAX_TEXT_BYTES >> 20} MB）",
            file=label,
            fix="请把登记表拆分成几个较小的文件后再处理",
        )
    return size


def read_here(
    path: Path, *, sheet: str | None = None, all_sheets: bool = False, follow_symlinks: bool = True
) -> list[RawTable]:
    """:func:`read_register` in this process (what a reading child runs)."""
    label = path.name or str(path)
    suffix = path.suffix.lower()
    started = time.perf_counter()
    size = _check_file(path, follow_symlinks)
    if suffix in WORKBOOK_SUFFIXES:
        tables = read_workbook(path, sheet=sheet, all_sheets=all_sheets, size=size)
    else:
        with os_errors("读取文件", path, kind=InputError):
            descriptor, size = _open_regular(path, label, follow_symlinks)
        try:
            # Read through the descriptor checked above: the path may have been swapped since.
            source = open_delimited(path, size, opener=lambda: os.fdopen(os.dup(descriptor), "rb"))
            tables = [_stack(list(source.read(1 << 62)))]
        finally:
            os.close(descriptor)
    for table in tables:
        logger.debug(
            "read {}: header row {}, {} rows, {} columns in {:.2f}s",
            table.label, table.header_row, len(table.data), len(table.headers), time.perf_counter() - started,
        )  # fmt: skip
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
