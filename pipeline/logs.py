"""Logging through loguru, with personal data masked and control characters escaped in every line.

ID numbers and phone numbers are masked wherever they appear in a message
(``420123********4516``, ``139****3273``), full-width digits included;
registered secrets (app secret, work key) are replaced by ``***``; control
characters (a newline in a file name would forge a log line) are shown as
``\\n``, ``\\x1b``.  Masking is a loguru *patcher*, so it applies to every
sink: stderr, the file and JSON output.  Names and addresses are never
passed to a log call; :func:`mask_text` is also what every fatal message
goes through (:class:`pipeline.errors.EhcError`).

The console shows a clerk Chinese level words (``注意``, ``错误``) or none
(plain information); ``--log-json`` and the log file keep loguru's level
names for collectors.  The log file is one file per day,
``<log_dir>/ehc-YYYY-MM-DD.log`` (mode 0600, in a 0700 folder), appended to
by every process of the day and never renamed: a file another process holds
open (as Windows forbids renaming) is never rotated away under it.  A day's
file that reaches ``[logging] rotation`` continues in ``ehc-YYYY-MM-DD.2.log``;
files older than ``[logging] retention`` are deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from loguru import logger

from pipeline.files import explain_os_error, private_dir

# Only digits bound an ID number: one run into letters ("sfzhm4406…") is masked all the same.
_ID18 = re.compile(r"(?<!\d)(\d{6})\d{8}(\d{3}[0-9Xx])(?!\d)")
_ID15 = re.compile(r"(?<!\d)(\d{6})\d{6}(\d{3})(?!\d)")
_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")
_LANDLINE = re.compile(r"(?<!\d)(0\d{2,3})-?\d{3,4}(\d{4})(?!\d)")

#: Full-width digits and letters (as typed with a Chinese input method) -> ASCII, before matching.
_HALF_WIDTH = str.maketrans(
    {chr(0xFF10 + d): str(d) for d in range(10)} | {"Ｘ": "X", "ｘ": "x", "－": "-", "\u3000": " "}
)

#: C0/C1 control characters and the line/paragraph separators, shown escaped.
# Control characters, line and paragraph separators, the marks that turn text right to left (a name
# "invoice\u202excl.csv" shows as "invoice.lcx.csv"), and the undecodable bytes of a file name.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

#: Level words a clerk sees on the console ("" for plain information).
CONSOLE_LABELS: dict[str, str] = {
    "TRACE": "跟踪 ", "DEBUG": "调试 ", "INFO": "", "SUCCESS": "完成 ",
    "WARNING": "注意 ", "ERROR": "错误 ", "CRITICAL": "严重错误 ",
}  # fmt: skip

LOG_FILE_PREFIX = "ehc-"

#: Every registered secret, by its case-folded form, and the pattern finding it in any case.
_secrets: dict[str, re.Pattern[str]] = {}


def mask_id(value: str) -> str:
    """Mask one ID number: keep the first 6 and last 4 characters."""
    if len(value) <= 10:
        return "*" * len(value)
    return value[:6] + "*" * (len(value) - 10) + value[-4:]


def mask_app_id(app_id: str) -> str:
    """First 4 + ``***`` + last 4 characters; shorter ids keep less so most stays hidden."""
    if len(app_id) > 12:
        return f"{app_id[:4]}***{app_id[-4:]}"
    if len(app_id) > 4:
        return f"{app_id[:2]}***{app_id[-2:]}"
    return "***" if app_id else ""


def without_secrets(text: str) -> str:
    """``text`` with every registered secret (app secret, work key) replaced by ``***``, in any case.

    A work key is hex, and a platform quoting it (or the secret) may change
    its case: "key c328f4aa…" is the same key as "C328F4AA…".
    """
    if not _secrets:
        return text
    folded = text.casefold()
    for secret, pattern in list(_secrets.items()):  # a thread may register a new work key meanwhile
        if secret in folded:
            text = pattern.sub("***", text)
    return text


def mask_text(text: str) -> str:
    """Mask every ID number, phone number and registered secret in ``text`` (full-width digits too)."""
    text = without_secrets(text)
    if not any(ch.isdigit() for ch in text):
        return text
    text = text.translate(_HALF_WIDTH)
    text = _ID18.sub(lambda m: m.group(1) + "********" + m.group(2)[-4:], text)
    text = _ID15.sub(lambda m: m.group(1) + "******" + m.group(2), text)
    text = _MOBILE.sub(lambda m: m.group(1) + "****" + m.group(2), text)
    text = _LANDLINE.sub(lambda m: m.group(1) + "****" + m.group(2), text)
    return text


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``): one line, no terminal tricks."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def safe_text(text: str) -> str:
    """What any message may show: masked, on one line, without control characters."""
    return printable(mask_text(text))


def register_secret(value: str) -> None:
    """Never let ``value`` (an app secret or work key) reach a log line."""
    if value and len(value) >= 4:
        _secrets.setdefault(value.casefold(), re.compile(re.escape(value), re.IGNORECASE))


def _patch(record: Any) -> None:
    record["message"] = safe_text(record["message"])
    record["extra"]["label"] = CONSOLE_LABELS.get(record["level"].name, "")
    if record["exception"] is not None:
        record["extra"]["masked"] = True


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB)?\s*$", re.IGNORECASE)
_DAYS = re.compile(r"^\s*(\d+)\s*(day|days|week|weeks|d|w)\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}


def rotation_bytes(rotation: str) -> int | None:
    """The size at which a day's file continues in a new one (``"10 MB"``); None for time-based values."""
    match = _SIZE.match(rotation)
    if match is None:
        return None  # "1 day", "00:00": the daily file already does that
    return max(1 << 16, int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]))


def retention_days(retention: str) -> int:
    """Days to keep log files, from ``"30 days"`` / ``"12 weeks"``; ValueError otherwise."""
    match = _DAYS.match(retention)
    if match is None:
        raise ValueError(f"retention {retention!r}")
    number = int(match.group(1))
    return number * 7 if match.group(2).lower().startswith("w") else number


class DailyLogFile:
    """A loguru sink: ``ehc-YYYY-MM-DD[.N].log`` in ``folder``, appended to, 0600, never renamed."""

    def __init__(self, folder: Path, *, max_bytes: int | None, keep_days: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.keep_days = keep_days
        self._lock = threading.Lock()
        self._handle: TextIO | None = None
        self._day: date | None = None
        self._part = 1
        self._open(date.today())
        self.prune()

    def _name(self, day: date, part: int) -> Path:
        suffix = "" if part == 1 else f".{part}"
        return self.folder / f"{LOG_FILE_PREFIX}{day.isoformat()}{suffix}.log"

    def _open(self, day: date) -> None:
        if self._day != day:
            self._day, self._part = day, 1
            # Continue in the latest part of the day.
            while self._name(day, self._part + 1).exists():
                self._part += 1
        path = self._name(day, self._part)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)  # a file left by an older version
        self._handle = os.fdopen(descriptor, "a", encoding="utf-8", newline="\n")

    @property
    def path(self) -> Path:
        """The file written now."""
        assert self._day is not None
        return self._name(self._day, self._part)

    def write(self, message: str) -> None:
        """Append one formatted line (loguru calls this)."""
        with self._lock:
            today = date.today()
            if today != self._day or (self.max_bytes and self._size() >= self.max_bytes):
                self.close()
                if today == self._day:
                    self._part += 1
                self._open(today)
            assert self._handle is not None
            self._handle.write(message)
            self._handle.flush()

    def _size(self) -> int:
        try:
            return os.fstat(self._handle.fileno()).st_size if self._handle else 0
        except OSError:
            return 0

    def close(self) -> None:
        """Close the current file."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None

    def prune(self) -> None:
        """Delete this folder's log files of days older than the retention (never today's)."""
        cutoff = date.today() - timedelta(days=self.keep_days)
        for path in self.folder.glob(f"{LOG_FILE_PREFIX}*.log"):
            try:
                day = datetime.strptime(path.name[len(LOG_FILE_PREFIX) :][:10], "%Y-%m-%d").date()
            except ValueError:
                continue
            if day < cutoff:
                with contextlib.suppress(OSError):
                    path.unlink()


class _Console:
    """stderr as the log's screen sink: a line written while a progress bar is shown goes above it.

    Written straight to the terminal, the line would land on the bar's own
    line.  tqdm is asked only when it was imported (a bar may be showing),
    and only once its import is complete: a Ctrl-C during that import logs
    the stop while the module is half made.  stderr is looked up at each
    write, so a stream swapped in later is the one written to.
    """

    def write(self, message: str) -> None:
        """Write one formatted log line (above the bars on screen, which are drawn again below it)."""
        bars = getattr(sys.modules.get("tqdm"), "tqdm", None)
        if bars is None:  # no bar can be showing
            sys.stderr.write(message)
            return
        # Only bars already on screen: one waiting for its delay must not be drawn by a log line.
        shown = [
            bar for bar in list(getattr(bars, "_instances", ()))
            if not bar.disable and (bar.delay <= 0 or bar.last_print_t > bar.start_t)
        ]  # fmt: skip
        if not shown:
            sys.stderr.write(message)
            return
        with bars.get_lock():
            for bar in shown:
                bar.clear(nolock=True)
            sys.stderr.write(message)
            for bar in shown:
                bar.refresh(nolock=True)

    def flush(self) -> None:
        """Flush stderr."""
        sys.stderr.flush()

    def isatty(self) -> bool:
        """Whether stderr is a terminal (loguru colours the lines then)."""
        return sys.stderr.isatty()


def setup_logging(
    *,
    level: str = "INFO",
    log_dir: Path | None = None,
    rotation: str = "10 MB",
    retention: str = "30 days",
    json: bool = False,
    debug: bool = False,
) -> DailyLogFile | None:
    """Send masked log lines to stderr and, if ``log_dir`` is given, the day's file; return the file sink.

    ``json`` makes both sinks emit one JSON object per line for collectors.
    Unwritable log directories are ignored with a warning on stderr: a run
    must not fail because its log cannot be kept.
    """
    logger.remove()
    logger.configure(patcher=_patch)
    stderr_level = "DEBUG" if debug else level
    human = "<green>{time:HH:mm:ss}</green> <level>{extra[label]}</level>{message}"
    # A run-stopping error (extra "fatal") is printed by the command line as its one plain line; in
    # JSON it is the log's own line, so that a collector reads every line of stderr.
    logger.add(
        _Console(), level=stderr_level, format=human, serialize=json, backtrace=debug, diagnose=False,
        filter=None if json else (lambda record: not record["extra"].get("fatal")),
    )  # fmt: skip
    if log_dir is None:
        return None
    try:
        private_dir(log_dir)
        sink = DailyLogFile(log_dir, max_bytes=rotation_bytes(rotation), keep_days=retention_days(retention))
    except OSError as error:
        logger.warning("日志目录 {} 不可写，日志只输出到屏幕（{}）", log_dir, explain_os_error(error)[0])
        return None
    except ValueError:
        # The folder is fine: the setting is what keeps the file from being written.
        logger.warning(
            '[logging] retention {!r} 无法识别（应写成如 "30 days" 或 "12 weeks"），日志只输出到屏幕。'
            "请改正配置文件（ehc check-config 可检查）",
            retention,
        )
        return None
    file_format = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {process} | {message}"
    logger.add(
        sink.write,
        level="DEBUG" if debug else level,
        format=file_format,
        serialize=json,
        backtrace=False,
        diagnose=False,
        catch=True,
    )
    return sink
