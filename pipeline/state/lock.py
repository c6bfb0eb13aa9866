"""The run lock: one inbox run at a time per state directory, on Linux and Windows alike.

The lock itself is ``<state_dir>/ehc.lock.lck``, held through :mod:`filelock`
(``flock`` on Unix, ``msvcrt.locking`` on Windows).  The operating system
releases such a lock when its holder exits for any reason (including
``kill -9``, a closed console and a power-cut reboot), so a lock left by a
crashed run is never "held": the next run takes it at once.

``<state_dir>/ehc.lock`` holds, while a run goes, who holds the lock (pid,
host, start time, command), and is emptied when the run ends cleanly.  It is
only for messages: it names the holder when a second run is refused, and,
when a run finds content left behind by a holder that did not end cleanly,
it logs that it took the lock over.  It is a separate file because Windows
does not let another process read a locked file.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from loguru import logger

from pipeline.config import LOCK_FILE
from pipeline.errors import ConfigError, LockHeld
from pipeline.files import os_errors, private_dir


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or held) the lock, as written inside the lock file."""

    pid: int | None
    host: str
    started_at: str
    command: str

    @classmethod
    def parse(cls, text: str) -> LockInfo | None:
        """The holder described by ``text`` (the lock file's content), or None if empty/garbled."""
        try:
            data: Any = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        pid = data.get("pid")
        return cls(
            pid=pid if isinstance(pid, int) else None,
            host=str(data.get("host", "")),
            started_at=str(data.get("started_at", "")),
            command=str(data.get("command", "")),
        )

    def describe(self) -> str:
        """A Chinese phrase naming the holder: 进程 1234（主机 x，开始于 ...）."""
        pid = str(self.pid) if self.pid is not None else "未知"
        details = []
        if self.host:
            details.append(f"主机 {self.host}")
        if self.started_at:
            details.append(f"开始于 {self.started_at}")
        return f"进程 {pid}" + (f"（{'，'.join(details)}）" if details else "")


@dataclass(frozen=True)
class HeldLock:
    """The lock this process holds; ``taken_over`` names a holder that did not end cleanly."""

    path: Path
    info: LockInfo
    taken_over: LockInfo | None


def lock_path(state_dir: Path) -> Path:
    """Where the holder of the run lock of ``state_dir`` is written."""
    return Path(state_dir) / LOCK_FILE


def _os_lock_path(state_dir: Path) -> Path:
    """The file the operating system locks."""
    return Path(state_dir) / f"{LOCK_FILE}.lck"


def read_holder(state_dir: Path) -> LockInfo | None:
    """The holder written in the lock file (current or left behind), without locking."""
    try:
        return LockInfo.parse(lock_path(state_dir).read_text(encoding="utf-8"))
    except OSError:
        return None


_FIX = "检查状态目录的权限，或在配置 [paths] state_dir / 环境变量 EHC_STATE_DIR 中另选一个可写目录"


def _open(path: Path) -> int:
    with os_errors("创建运行锁文件", path, kind=ConfigError, fix=_FIX):
        private_dir(path.parent)
        # Not inheritable (Python's default): child processes never hold the holder file open.
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _write_fd(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode("utf-8"))
    os.fsync(fd)


@contextlib.contextmanager
def run_lock(state_dir: Path, *, command: str | None = None) -> Iterator[HeldLock]:
    """Hold the run lock of ``state_dir`` for the ``with`` block; never waits.

    Raises :class:`LockHeld` (exit 3) naming the holder's pid and start time
    when another process holds it.  A lock left by a crashed or killed run is
    taken over (the operating system has already released it);
    ``HeldLock.taken_over`` then describes that run.  Not re-entrant: a
    second ``run_lock`` on the same directory inside the block is refused
    like any other.
    """
    path = lock_path(state_dir)
    fd = _open(path)
    guard = FileLock(str(_os_lock_path(state_dir)), timeout=0, mode=0o600, thread_local=False)
    try:
        with os_errors("创建运行锁文件", _os_lock_path(state_dir), kind=ConfigError, fix=_FIX):
            try:
                guard.acquire(timeout=0)
            except Timeout:  # an OSError too: told apart before os_errors sees it
                holder = LockInfo.parse(_read_fd(fd))
                who = holder.describe() if holder else "另一个进程"
                raise LockHeld(
                    f"另一个 ehc 运行正在进行：{who}持有运行锁 {path}。本次不运行；"
                    "请等它结束后再运行（锁在该进程结束时自动释放，无需手动删除）"
                ) from None
        try:
            left_behind = LockInfo.parse(_read_fd(fd))
            info = LockInfo(
                pid=os.getpid(),
                host=socket.gethostname(),
                started_at=datetime.now().astimezone().isoformat(timespec="seconds"),
                command=command if command is not None else " ".join(sys.argv[:3]),
            )
            _write_fd(fd, json.dumps(info.__dict__, ensure_ascii=False))
            if left_behind is not None:
                logger.warning("上一次运行（{}）没有正常结束；已接管其运行锁", left_behind.describe())
            yield HeldLock(path=path, info=info, taken_over=left_behind)
        finally:
            # An empty file tells the next run that this one ended cleanly.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            guard.release(force=True)
    finally:
        os.close(fd)
