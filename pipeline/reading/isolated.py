"""Reading a register in a child process, so that whatever the reader does costs one file, not the run.

A workbook reader written in Rust can abort the whole process (SIGABRT on a
failed allocation), and a hostile file can eat memory or time that no
``try`` gets back.  :func:`read_in_child` reads one register in a child
process under an address-space limit (``RLIMIT_AS`` where the platform has
one) and a time limit; the tables come back over a pipe, the child's log
lines are logged again by the parent (masked there like every line), and a
child that dies of a signal, runs out of memory or time becomes an
:class:`~pipeline.errors.InputError` worded for a clerk.

Children are forked from a *fork server* started once per process with the
reader already imported, so an ordinary file costs a few milliseconds more,
not the second a fresh interpreter takes to import pandas and Arrow (on
Windows, which cannot fork, each child is a fresh interpreter).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from loguru import logger

from pipeline.errors import EhcError, InputError
from pipeline.model import RawTable

_FIX = "请确认文件来源；如是正常的登记表，用 Excel 打开后另存为 .xlsx（或 .csv）再处理"

#: Signal names a clerk's message may mention (the number alone says nothing).
_SIGNAL_WORDS = {
    "SIGABRT": "异常终止", "SIGSEGV": "内存访问错误", "SIGKILL": "被强制结束", "SIGBUS": "总线错误",
}  # fmt: skip


@dataclass(frozen=True)
class ReadLimits:
    """What reading one file may cost: address space (bytes) and wall time (seconds); None: no limit."""

    memory_bytes: int | None = 4 << 30
    seconds: float | None = 600.0


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["pipeline.reading.register"])
        return context
    return multiprocessing.get_context("spawn")


def _limit_memory(memory_bytes: int | None) -> None:
    if memory_bytes is None:
        return
    try:
        import resource
    except ImportError:  # Windows: no rlimits; the time limit still holds
        return
    for name in ("RLIMIT_AS", "RLIMIT_DATA"):
        limit = getattr(resource, name, None)
        if limit is None:
            continue
        _, hard = resource.getrlimit(limit)
        wanted = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(limit, (wanted, hard))


def _die_with_the_run() -> None:
    """On Linux, have the kernel end this reader when the process that started it dies (kill -9 of the
    run, an out-of-memory kill): it would go on reading for nobody, up to its time limit."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


#: prctl's option that sends a signal to a child when its parent thread exits.
_PR_SET_PDEATHSIG = 1


def _child(
    connection: Connection, path: str, sheet: str | None, all_sheets: bool, options: dict[str, Any]
) -> None:
    """The child's whole life: limits, read, send the tables (or the fault) back, exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    _die_with_the_run()
    _limit_memory(options.get("memory_bytes"))
    if options.get("memory_bytes") is not None:
        import pyarrow

        # Arrow's own allocator may have reserved address space in the fork server (once anything there
        # made an Arrow array); allocations from it would escape the limit.  malloc's new memory cannot.
        pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    lines: list[tuple[str, str]] = []
    logger.remove()
    logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
               level="DEBUG", format="{message}")  # fmt: skip
    from pipeline.reading.register import read_here

    try:
        tables = read_here(Path(path), sheet=sheet, all_sheets=all_sheets, **options.get("read", {}))
        reply: tuple[Any, ...] = ("tables", tables, lines)
    except InputError as error:
        reply = ("input", error.message, lines)
    except EhcError as error:
        reply = ("input", error.message, lines)
    except MemoryError:
        reply = ("memory", "", lines)
    except Exception as error:
        kind = type(error)
        reply = ("crash", f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins."), lines)
    try:
        try:
            connection.send(reply)
        except MemoryError:
            connection.send(("memory", "", lines))
    except OSError:
        pass  # the run that asked is gone (killed): nobody to tell, and no traceback in its log
    with contextlib.suppress(OSError):
        connection.close()


def _died(label: str, exitcode: int | None, limits: ReadLimits) -> InputError:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"信号 {-exitcode}"
        word = _SIGNAL_WORDS.get(name, "异常退出")
        memory = (
            f"（可能超出了读取内存上限 {limits.memory_bytes >> 20} MB）"
            if limits.memory_bytes and name in ("SIGABRT", "SIGKILL", "SIGSEGV")
            else ""
        )
        return InputError(f"读取该文件时读取程序{word}（{name}）{memory}，文件无法读取", file=label, fix=_FIX)
    return InputError(
        f"读取该文件时读取程序意外退出（退出码 {exitcode}），文件无法读取", file=label, fix=_FIX
    )


def read_in_child(
    path: Path, *, sheet: str | None, all_sheets: bool, limits: ReadLimits, read: dict[str, Any] | None = None
) -> list[RawTable]:
    """:func:`pipeline.reading.register.read_here` run in a child process under ``limits``."""
    label = path.name or str(path)
    context = _context()
    receiving, sending = context.Pipe(duplex=False)
    options = {"memory_bytes": limits.memory_bytes, "read": read or {}}
    child = context.Process(
        target=_child, args=(sending, str(path), sheet, all_sheets, options), name="ehc-read", daemon=True
    )
    child.start()
    sending.close()
    deadline = None if limits.seconds is None else time.monotonic() + limits.seconds
    reply: tuple[Any, ...] | None = None
    try:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if receiving.poll(left):
            try:
                reply = receiving.recv()
            except (EOFError, OSError):
                reply = None
        else:
            child.kill()
            child.join()
            raise InputError(
                f"读取该文件超过了时间上限（{limits.seconds:g} 秒），已停止读取",
                file=label,
                fix="文件可能过大或已损坏；请拆分后或用 Excel 另存为 .xlsx 后再处理",
            )
    except BaseException:
        if child.is_alive():
            child.kill()
        child.join()
        raise
    finally:
        receiving.close()
    child.join(timeout=10)
    if child.is_alive():
        child.kill()
        child.join()
    if reply is None:
        raise _died(label, child.exitcode, limits)
    kind, payload, lines = reply
    for level, message in lines:
        logger.log(level, "{}", message)
    if kind == "tables":
        return list(payload)
    if kind == "input":
        raise InputError(payload)
    if kind == "memory":
        limit = f"{limits.memory_bytes >> 20} MB" if limits.memory_bytes else "可用内存"
        raise InputError(f"读取该文件需要的内存超过了上限（{limit}），文件无法读取", file=label, fix=_FIX)
    raise InputError(f"读取该文件时程序内部出错（{payload}），文件无法读取", file=label, fix=_FIX)


def platform_can_limit_memory() -> bool:
    """Whether the child's address space can be capped here (not on Windows)."""
    return sys.platform != "win32"
