"""The work key (认证字符串): fetched once a day, shared by every thread and process.

The platform issues a work key per app through ``getWorkKey`` and may
invalidate the previous key whenever a new one is issued.  So the key lives in
a small JSON file in the state directory (mode 0600), one per app id and
platform address, stamped with the day it was fetched; every run and every
process on the machine reuses it for that day.  Fetching happens under an
exclusive file lock, and a process that finds a key it did not have (fetched
meanwhile by another process) adopts it instead of fetching again, so two
processes never invalidate each other's keys in a loop.

Processes that do not share a state directory (two servers, or two state
directories on one machine) cannot coordinate that way: each new key of one
invalidates the other's, and their calls meet 10105 now and then.  A 10105 is
therefore never a resident's verdict: the call gets a new key (one fetch per
refused key, shared by every thread; :meth:`WorkKeyCache.refused`) and is sent
again.  Taking the key back at once would take it from the other client just
as it starts using its own, and both would go on refusing each other's keys
for ever; so the new key is fetched after a random wait that doubles (up to
:data:`MAX_BACKOFF_SECONDS`) while such replacements follow each other, and
each client gets stretches of time with a working key, as on a shared cable.
Only when the platform refuses :data:`MAX_FRESH_REFUSALS` new keys in a
row, none of which any call got through with, does the run stop
(:class:`~pipeline.errors.AuthenticationRefused`).

Every key read or fetched is registered with :func:`pipeline.logs.register_secret`;
neither the key nor the secret is ever logged.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout
from loguru import logger

from pipeline.config import WORKKEY_DIR, without_password
from pipeline.errors import AuthenticationRefused, ConfigError, PlatformUnreachable
from pipeline.files import explain_os_error, os_errors, write_atomically
from pipeline.logs import register_secret
from schemas.result_codes import ResultCode

#: How long a process waits for another one that is fetching the key.
LOCK_TIMEOUT_SECONDS = 300.0
#: New keys the platform may refuse (10105) in a row, none ever accepted, before the run stops.
MAX_FRESH_REFUSALS = 5
#: Wait before taking a key back from another client: the first, the longest, and how long
#: replacements are remembered as one contention (the wait doubles within it).
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 2.0
REPLACEMENT_MEMORY_SECONDS = 30.0


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
        wait: Callable[[float], object] = time.sleep,
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
        self._accepted = ""  # the last key a call got through with
        self._refused = ""  # the last key refused
        self._fresh_refusals = 0  # keys refused in a row that no call got through with
        self._wait = wait
        self._replacements = 0  # keys taken back in a row, each soon after the last
        self._replaced_at = -math.inf

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

    def accepted(self, key: str) -> None:
        """A call signed with ``key`` got an answer other than 10105: the key works."""
        if key != self._accepted:
            with self._mutex:
                self._accepted = key
                self._fresh_refusals = 0

    def refused(self, key: str) -> str:
        """A call signed with ``key`` got 10105: the key to send it again with.

        A key another thread or process put in place already is used at once.
        Otherwise the key was most likely taken over by another client of the
        same app, which a new key would take back from: so one thread waits a
        random, growing while (:meth:`_backoff`), every other thread waiting
        with it, before fetching one new key for all.  Raises
        :class:`AuthenticationRefused` when :data:`MAX_FRESH_REFUSALS` keys in a
        row were refused before any call got through with them.
        """
        day = self._today().isoformat()
        with self._mutex:
            current = self._current
            if current is not None and current[0] == day and current[1] != key:
                return current[1]
            if key != self._refused:
                self._refused = key
                if key != self._accepted:
                    self._fresh_refusals += 1
            if self._fresh_refusals >= MAX_FRESH_REFUSALS:
                raise AuthenticationRefused(
                    f"平台连续 {self._fresh_refusals} 次拒绝刚取得的认证字符串"
                    f"（{ResultCode.INVALID_WORK_KEY} 认证字符串无效），已停止发送。"
                    "可能另有一处（另一台机器或另一个状态目录）在用同一应用 ID 提交，"
                    "请只在一处运行；也请确认本机时钟准确",
                    ResultCode.INVALID_WORK_KEY,
                )
            return self._load_or_fetch(day, failed=key, backoff=True)

    def _backoff(self) -> float:
        """Seconds to wait before taking the key back: doubling while replacements follow each other."""
        now = time.monotonic()
        recent = now - self._replaced_at < REPLACEMENT_MEMORY_SECONDS
        self._replacements = self._replacements + 1 if recent else 1
        self._replaced_at = now
        base = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (self._replacements - 1))
        return random.uniform(base / 2, base * 1.5)

    def _load_or_fetch(self, day: str, failed: str | None, backoff: bool = False) -> str:
        self._prepare_directory()
        try:
            with self._file_lock.acquire(timeout=LOCK_TIMEOUT_SECONDS):
                stored = self._read()
                if stored is not None and stored[0] == day and stored[1] != failed:
                    key = stored[1]
                else:
                    if backoff:
                        self._wait(self._backoff())
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
            "base_url": without_password(self._base_url),  # a proxy's password is not kept beside the key
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
