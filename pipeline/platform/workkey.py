"""The work key (认证字符串): fetched once a day, shared by every thread and process.

The platform issues a work key per app through ``getWorkKey`` and may
invalidate the previous key whenever a new one is issued.  So the key lives in
a small JSON file in the state directory (mode 0600), one per app id and
platform address, stamped with the day it was fetched; every run and every
process on the machine reuses it for that day.  Fetching happens under an
exclusive file lock, and a process that finds a key it did not have (fetched
meanwhile by another process) adopts it instead of fetching again, so two
processes never invalidate each other's keys in a loop.

Every key read or fetched is registered with :func:`pipeline.logs.register_secret`;
neither the key nor the secret is ever logged.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout
from loguru import logger

from pipeline.config import WORKKEY_DIR
from pipeline.errors import ConfigError, PlatformUnreachable
from pipeline.files import explain_os_error, os_errors, write_atomically
from pipeline.logs import register_secret

#: How long a process waits for another one that is fetching the key.
LOCK_TIMEOUT_SECONDS = 300.0


def cache_path(state_dir: Path, app_id: str, base_url: str) -> Path:
    """The cache file of the work key for ``app_id`` at ``base_url``."""
    digest = hashlib.sha256(f"{app_id}\n{base_url}".encode()).hexdigest()[:16]
    return state_dir / WORKKEY_DIR / f"workkey-{digest}.json"


class WorkKeyCache:
    """The work key of one app at one platform address, cached in memory and on disk.

    ``fetch`` asks the platform for a new key (raising the run-stopping
    errors of :mod:`pipeline.errors` when it cannot); ``today`` gives the day
    a key belongs to.
    """

    def __init__(
        self,
        state_dir: Path,
        app_id: str,
        base_url: str,
        fetch: Callable[[], str],
        *,
        today: Callable[[], datetime.date] = datetime.date.today,
    ) -> None:
        self.path = cache_path(state_dir, app_id, base_url)
        self._app_id = app_id
        self._base_url = base_url
        self._fetch = fetch
        self._today = today
        self._mutex = threading.Lock()
        self._file_lock = FileLock(str(self.path) + ".lock", thread_local=False)
        self._current: tuple[str, str] | None = None  # (day, key)
        self.fetches = 0  # keys this object fetched from the platform

    def get(self) -> str:
        """Today's key: from memory, else from the cache file, else fetched."""
        current, day = self._current, self._today().isoformat()
        if current is not None and current[0] == day:
            return current[1]
        with self._mutex:
            current = self._current
            if current is not None and current[0] == day:
                return current[1]
            return self._load_or_fetch(day, failed=None)

    def refresh(self, failed: str) -> str:
        """A key other than ``failed`` (which the platform refused with 10105).

        If another thread or process replaced the key already, that key is
        used; otherwise one new key is fetched for everybody.
        """
        day = self._today().isoformat()
        with self._mutex:
            current = self._current
            if current is not None and current[0] == day and current[1] != failed:
                return current[1]
            return self._load_or_fetch(day, failed=failed)

    def _load_or_fetch(self, day: str, failed: str | None) -> str:
        self._prepare_directory()
        try:
            with self._file_lock.acquire(timeout=LOCK_TIMEOUT_SECONDS):
                stored = self._read()
                if stored is not None and stored[0] == day and stored[1] != failed:
                    key = stored[1]
                else:
                    key = self._fetch()
                    self.fetches += 1
                    self._write(day, key)
        except Timeout:
            raise PlatformUnreachable(
                f"等待其他进程获取认证字符串超时（锁文件 {self.path}.lock）。请确认没有卡住的 ehc 进程后重试"
            ) from None
        register_secret(key)
        self._current = (day, key)
        return key

    def _prepare_directory(self) -> None:
        with os_errors(
            "创建状态目录", self.path.parent, kind=ConfigError, fix="检查 state_dir 配置和目录权限"
        ):
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _read(self) -> tuple[str, str] | None:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # absent or damaged: fetch a new one
        if not isinstance(document, dict):
            return None
        day, key = document.get("day"), document.get("work_key")
        if not isinstance(day, str) or not isinstance(key, str) or not key:
            return None
        register_secret(key)
        return day, key

    def _write(self, day: str, key: str) -> None:
        document = {
            "app_id": self._app_id,
            "base_url": self._base_url,
            "day": day,
            "work_key": key,
            "fetched_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        try:
            write_atomically(self.path, json.dumps(document), mode=0o600)
        except OSError as error:
            # The key still works for this process; other processes will fetch their own.
            reason, _ = explain_os_error(error)
            logger.warning("无法保存认证字符串缓存 {}（{}），其他进程将各自获取", self.path, reason)
