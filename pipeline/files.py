"""Files at the edges: the one place where operating-system errors become a clerk's sentence.

Every module that touches the disk does it through these helpers, so the
same fault reads the same way everywhere:

* :func:`os_errors` is a context manager that turns an :class:`OSError`
  raised inside it into an :class:`~pipeline.errors.EhcError` (or a
  subclass) whose message says what could not be done, to which file, why,
  and how to fix it (as httpx maps transport exceptions in one place);
* :func:`explain_os_error` gives the reason and the fix, for callers that
  log a fault instead of stopping;
* :func:`write_atomically` writes a file under a temporary name and renames
  it into place, so nobody ever reads half a file;
* :func:`scratch_name` names work files so that :func:`sweep_leftovers` can
  remove those of a process that was killed;
* :func:`numbered` picks ``name_2``, ``name_3`` … when a name is taken;
* :func:`read_toml` reads a TOML file and words its faults as
  :class:`~pipeline.errors.ConfigError`;
* :func:`private_dir` and :func:`private_file` create what holds state,
  logs or secrets readable by its owner only (0700 / 0600).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import stat
import threading
import time
import tomllib
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, EhcError, InputError

#: Windows error numbers for "the file is in use by another process" (Excel/WPS holding a report).
_WINDOWS_SHARING_VIOLATIONS = frozenset({32, 33})

_REASONS: dict[int, tuple[str, str]] = {
    errno.ENOENT: ("找不到文件或目录", "检查文件名和路径是否正确"),
    errno.EACCES: ("没有权限", "检查文件和目录的权限，或换一个有权限的位置"),
    errno.EPERM: ("操作不被允许", "检查文件和目录的权限，或换一个有权限的位置"),
    errno.ENOSPC: ("磁盘空间不足", "清理磁盘空间后重新运行"),
    errno.EFBIG: ("文件超过了允许的大小（磁盘或配额的限制）", "清理磁盘空间或请管理员放宽限制后重新运行"),
    errno.EDQUOT: ("磁盘配额已用完", "清理磁盘空间或请管理员提高配额后重新运行"),
    errno.EROFS: ("所在的文件系统是只读的", "换一个可写的目录"),
    errno.EISDIR: ("这是一个文件夹，不是文件", "请给出文件的路径"),
    errno.ENOTDIR: ("路径中有一段不是文件夹", "检查路径是否正确"),
    errno.ENAMETOOLONG: ("文件名或路径太长", "换一个较短的路径或文件名"),
    errno.EMFILE: ("同时打开的文件太多", "稍后重新运行"),
    errno.EIO: ("磁盘读写出错", "检查磁盘或换一个位置后重新运行"),
    errno.EEXIST: ("已有同名的文件", "换一个名字，或先移走同名的文件"),
    errno.ELOOP: ("路径中的快捷方式（符号链接）指向了自己，形成循环", "改用文件的真实路径"),
    errno.EBUSY: ("文件或设备正被占用", "关闭正在使用它的程序后重新运行"),
    errno.ETXTBSY: ("文件正被其他程序使用", "关闭正在使用它的程序后重新运行"),
    errno.ENXIO: ("这不是普通文件（设备或管道）", "请给出登记表文件的路径"),
    errno.ENODEV: ("这不是普通文件（设备）", "请给出登记表文件的路径"),
    errno.ENOTEMPTY: ("文件夹不是空的", "换一个空文件夹，或先移走其中的文件"),
    errno.EXDEV: ("不能跨磁盘移动文件", "把 processed/、failed/ 与收件目录放在同一个磁盘上，不要单独挂载"),
    errno.ETIMEDOUT: ("读写超时（网络共享盘可能断开）", "检查网络共享盘的连接后重新运行"),
    errno.ESTALE: ("网络共享盘上的文件已失效（共享可能已断开或重新挂载）", "检查网络共享盘的连接后重新运行"),
    errno.ENOMEM: ("内存不足", "关闭其他程序，或把登记表分成几个文件后重新运行"),
    errno.EADDRINUSE: ("端口已被其他程序占用", "换一个端口（--port），或先停止占用它的程序"),
    errno.EADDRNOTAVAIL: ("这不是本机的地址", "换成本机的地址（如 127.0.0.1）"),
}


def explain_os_error(error: OSError) -> tuple[str, str]:
    """(reason, fix) in Chinese for an operating-system error."""
    if getattr(error, "winerror", None) in _WINDOWS_SHARING_VIOLATIONS:
        return "文件正被其他程序使用", "请先关闭 Excel/WPS 中打开的该文件，再重新运行"
    if isinstance(error, socket.gaierror):  # its errno is a resolver code (EAI_*), not an errno
        return "地址无法识别或不受支持", "换成本机的 IPv4 地址（如 127.0.0.1）"
    known = _REASONS.get(error.errno or 0)
    if known is not None:
        return known
    # The system's own text is in English: the clerk gets the error's name to pass on instead.
    name = errno.errorcode.get(error.errno or 0, type(error).__name__)
    return f"操作系统报告错误（{name}）", "检查路径、权限和磁盘空间后重新运行；仍不行请把错误名称告诉管理员"


#: SQLite's errors (``sqlite3.Error.sqlite_errorname``, primary code) as a clerk or operator reads them.
_SQLITE_REASONS: dict[str, str] = {
    "SQLITE_NOTADB": "不是本程序的数据库文件（或文件已损坏）",
    "SQLITE_CORRUPT": "数据库文件已损坏",
    "SQLITE_BUSY": "数据库正被其他程序占用",
    "SQLITE_LOCKED": "数据库正被其他程序占用",
    "SQLITE_FULL": "磁盘空间不足",
    "SQLITE_IOERR": "磁盘读写出错",
    "SQLITE_READONLY": "数据库文件是只读的",
    "SQLITE_CANTOPEN": "无法打开数据库文件（路径、权限或磁盘问题）",
    "SQLITE_PERM": "没有权限",
    "SQLITE_NOMEM": "内存不足",
}


def explain_sqlite_error(error: Exception) -> str:
    """Why an SQLite operation failed, in Chinese (its own text is English); by the error's name otherwise."""
    name = str(getattr(error, "sqlite_errorname", "") or "")
    primary = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE: SQLITE_IOERR
    reason = _SQLITE_REASONS.get(name) or _SQLITE_REASONS.get(primary)
    if reason is None and isinstance(error, OSError):
        return explain_os_error(error)[0]
    return reason or f"数据库错误（{name or type(error).__name__}）"


def describe_os_error(error: OSError, doing: str, path: str | Path) -> str:
    """``无法{doing} {path}：{reason}。处理办法：{fix}`` for an operating-system error."""
    reason, fix = explain_os_error(error)
    return f"无法{doing} {path}：{reason}。处理办法：{fix}"


@contextmanager
def os_errors(
    doing: str, path: str | Path, *, kind: type[EhcError] = EhcError, fix: str = ""
) -> Iterator[None]:
    """Within the block, an :class:`OSError` becomes ``kind`` with the one-line Chinese message.

    ``doing`` is the action as a verb phrase (``写入报告``); ``fix``, when
    given, replaces the generic advice.  An :class:`~pipeline.errors.InputError`
    names the file in its own way.
    """
    try:
        yield
    except OSError as error:
        reason, generic_fix = explain_os_error(error)
        if issubclass(kind, InputError):
            raise kind(f"无法{doing}（{reason}）", file=str(path), fix=fix or generic_fix) from error
        raise kind(f"无法{doing} {path}：{reason}。处理办法：{fix or generic_fix}") from error


@cache
def _machine() -> str:
    """This machine's name as it may stand in a file name (letters, digits and dashes only)."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()).strip("-")[:40] or "host"


def scratch_name(stem: str) -> str:
    """A hidden name for work files of this process and thread: ``.{stem}.{machine}.{pid}.{thread}``.

    The machine and process in the name let :func:`sweep_leftovers` tell the
    leftovers of a process that was killed from the files of a live one.
    """
    # The thread in hex: its 15 decimal digits would be masked as an old ID number in every message.
    tail = f".{_machine()}.{os.getpid()}.{threading.get_ident():x}"
    # A long register's name leaves room for the tail (and a ".tmp"): shortened, still one name.
    return f".{fitting_name(stem, room=1 + len(tail) + 4)}{tail}"


def temporary_name(path: Path) -> Path:
    """Where :func:`write_atomically` writes ``path`` before renaming it (hidden, beside it)."""
    return path.with_name(scratch_name(path.name) + ".tmp")


_SCRATCH = re.compile(r"\.(?P<stem>.+)\.(?P<machine>[A-Za-z0-9-]+)\.(?P<pid>[0-9]+)\.[0-9a-f]+(?:\.tmp)?")

#: Leftovers younger than this are kept, whatever their process: a live one may be between two writes.
LEFTOVER_AGE_SECONDS = 15 * 60


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the process exists is checked
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's) or cannot be told: kept
    return False


def _newest_change(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for inner in path.iterdir():
            newest = max(newest, inner.lstat().st_mtime)
    return newest


def sweep_leftovers(folder: Path, *, now: float | None = None) -> list[Path]:
    """Remove from ``folder`` the work files a killed process of this machine left (see :func:`scratch_name`).

    A process stopped by ``kill -9``, the out-of-memory killer or a power cut
    cannot clean up after itself; its temporary reports and work folder would
    stay in the output folder (and take its disk) for good.  Removed: only
    names of :func:`scratch_name`'s form, of this machine, whose process no
    longer runs and which nothing changed for :data:`LEFTOVER_AGE_SECONDS`.
    Never raises; returns what was removed.  On Windows nothing is removed:
    there is no safe way there to ask whether a process runs without opening it.
    """
    if os.name != "posix":
        return []
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        found = _SCRATCH.fullmatch(entry.name)
        if found is None or found["machine"] != _machine() or int(found["pid"]) == os.getpid():
            continue
        try:
            if now - _newest_change(entry) < LEFTOVER_AGE_SECONDS or not _process_gone(int(found["pid"])):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


def write_atomically(
    path: Path, content: bytes | str | Callable[[Path], Any], *, mode: int | None = None
) -> Path:
    """Write ``path`` under a temporary name beside it, then rename it into place.

    ``content`` is bytes, text (UTF-8) or a function that writes the file it
    is given.  ``mode`` (e.g. ``0o600``) is set before any byte is written.
    On any failure the temporary file is removed and the error re-raised: a
    reader sees the old file or the whole new one, never half of one.
    """
    temporary = temporary_name(path)
    try:
        if callable(content):
            if mode is not None:
                os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
            content(temporary)
        else:
            data = content.encode("utf-8") if isinstance(content, str) else content
            descriptor = os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode
            )
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) as 0700 when missing; an existing folder keeps its mode."""
    path = Path(path)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        else:
            os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty as 0600 when missing, or take an existing file down to 0600."""
    path = Path(path)
    private_dir(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600))
    os.chmod(path, 0o600)
    return path


#: Bytes a file name may have (ext4, XFS, APFS; NTFS's 255 UTF-16 units hold at least as much).
NAME_BYTES = 255


def fitting_name(name: str, *, room: int = 0) -> str:
    """``name`` with its stem shortened (whole characters) so that it, and ``room`` bytes more (a
    ``-2``, a ``.reason.txt``), fit in :data:`NAME_BYTES`: a name made from a long one is still a name."""
    if len(name.encode("utf-8")) + room <= NAME_BYTES:
        return name
    suffix = Path(name).suffix
    stem = name[: -len(suffix)] if suffix else name
    budget = NAME_BYTES - room - len(suffix.encode("utf-8"))
    while stem and len(stem.encode("utf-8")) > budget:
        stem = stem[:-1]
    return stem + suffix


def distinct_names(paths: Sequence[Path]) -> list[str]:
    """A name for each of ``paths`` that no other of them has: the file's own name, or, where
    another file has that name too (``村A/登记表.xlsx``, ``村B/登记表.xlsx``), with as many of its
    folders as tell them apart.  The same path given twice keeps one name."""
    parts = [Path(path).parts or (str(path),) for path in paths]
    depth = [1] * len(parts)
    while True:
        names = [Path(*p[-d:]).as_posix() for p, d in zip(parts, depth, strict=True)]
        owners: dict[str, set[tuple[str, ...]]] = {}
        for name, p in zip(names, parts, strict=True):
            owners.setdefault(name, set()).add(p)
        grow = [i for i, name in enumerate(names) if len(owners[name]) > 1 and depth[i] < len(parts[i])]
        if not grow:
            return names
        for i in grow:
            depth[i] += 1


def numbered(
    name: str, taken: Container[str], *, separator: str = "_", suffix: str = "", stem: str | None = None
) -> str:
    """``name`` + ``suffix`` if free, else ``name_2`` + ``suffix``, ``name_3`` … whichever is not taken.

    ``stem`` (default ``name``) is what the numbers are added to, for names
    that must be shortened to make room for them (sheet names: 31 characters).
    """
    candidate, number = name + suffix, 1
    while candidate in taken:
        number += 1
        candidate = f"{name if stem is None else stem}{separator}{number}{suffix}"
    return candidate


class ExistingNames:
    """The names taken in ``folder``, as a container :func:`numbered` can ask (looked up on the disk)."""

    def __init__(self, folder: Path, exists: Callable[[Path], bool] = Path.exists) -> None:
        self.folder = folder
        self.exists = exists

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.exists(self.folder / name)


#: tomllib's messages (English) by what they start with, as a clerk or operator reads them.
_TOML_REASONS = (
    ("Expected ']'", "方括号 [ ] 不成对"),
    ("Unclosed", "引号或括号没有闭合"),
    ("Illegal character", "有不允许的字符"),
    ("Expected '=' after a key", "键后面缺少 ="),
    ("Invalid value", "值的写法不对（文字要加英文双引号）"),
    ("Invalid statement", "这一行不是 键 = 值 的写法"),
    ("Cannot overwrite a value", "同一个键写了两次"),
    ("Cannot declare", "同一个小节写了两次"),
    ("Expected newline", "一行里写了多个值，或值后面多了字符"),
    ("Found invalid character", "有不允许的字符"),
)


def _toml_reason(detail: str) -> str:
    """What tomllib found wrong, in Chinese (its own text is English)."""
    return next((reason for start, reason in _TOML_REASONS if detail.strip().startswith(start)), "写法不对")


#: Largest configuration or mapping file read (a real one is a few kilobytes).
MAX_TOML_BYTES = 1 << 20


#: How a configuration file's lines are written, told with a TOML syntax error.
CONFIG_TOML_FORM = '每行写成 键 = 值，文字加英文双引号（如 org_code = "455400000"），小节名写成 [platform]'


def read_toml(path: str | Path, what: str, form: str = CONFIG_TOML_FORM) -> dict[str, Any]:
    """The TOML document at ``path``; any fault is a :class:`ConfigError` naming ``what`` (e.g. 配置文件).

    ``form`` says how the file's lines are written (told with a syntax error).
    Only a regular file of at most :data:`MAX_TOML_BYTES` is read: a device
    (``/dev/zero``) or a pipe would be read for ever.
    """
    try:
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        descriptor = os.open(path, flags)
        with os.fdopen(descriptor, "rb") as handle:
            kind = os.fstat(handle.fileno()).st_mode
            if stat.S_ISDIR(kind):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
            if not stat.S_ISREG(kind):
                fix = "请给出 TOML 文件的路径"
                raise ConfigError(f"{what} {path} 不是普通文件（是设备、管道或套接字）。{fix}")
            text = handle.read(MAX_TOML_BYTES + 1)
        if len(text) > MAX_TOML_BYTES:
            raise ConfigError(f"{what} {path} 超过 {MAX_TOML_BYTES >> 20} MB，不像配置文件。请检查路径")
        return tomllib.loads(text.decode("utf-8-sig"))  # Notepad saves UTF-8 with a BOM
    except RecursionError:  # brackets nested deeper than Python's stack
        raise ConfigError(f"{what} {path} 嵌套层数过多，不是有效的配置。请按 TOML 格式改正") from None
    except FileNotFoundError:
        raise ConfigError(f"找不到{what} {path}。请检查路径") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} 是一个文件夹。请给出 TOML 文件的路径") from None
    except OSError as error:
        reason, fix = explain_os_error(error)
        raise ConfigError(f"无法读取{what} {path}（{reason}）。{fix}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} 不是 UTF-8 编码。请另存为 UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        detail = str(error)
        at = re.search(r"\s*\(at line (\d+), column (\d+)\)", detail) or re.search(
            r"\s*\(at end of document\)", detail
        )
        where = (
            "末尾"
            if at is not None and at.lastindex is None
            else f"第 {at.group(1)} 行第 {at.group(2)} 列"
            if at
            else ""
        )
        detail = detail[: at.start()] + detail[at.end() :] if at else detail
        raise ConfigError(
            f"{what} {path} {where}格式错误（{_toml_reason(detail)}）。请按 TOML 格式改正：{form}"
        ) from None
