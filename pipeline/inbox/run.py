"""``ehc run --inbox DIR``: take in every new register dropped into a folder, unattended.

A register is *new* when its content (SHA-256) has not been processed to the
end before, as recorded in the journal's ``files`` table: a copy or a renamed
file is recognised and set aside, not sent twice.  A file still being written
(modified less than ``[inbox] settle_seconds`` ago, or growing across a short
re-check) is left for the next run.

Each file is read in a child process under ``[inbox] read_memory_mb`` and
``read_timeout_seconds`` (:mod:`pipeline.reading.isolated`): a reader that
crashes, or a file that would take too much memory or time, costs that file
only.  Symbolic links are never followed, and a link, a named pipe or a
device with a register's name goes to ``failed/`` unread.

Each new file gets ``<out>/<date>/<stem>/`` with the reports of ``ehc submit``
and is then moved to ``<inbox>/processed/``; a file that cannot be read goes to
``<inbox>/failed/`` with ``<name>.reason.txt`` beside it.  The order is chosen
for crashes: reports, then the journal's file record, then the move.  A run
killed mid-file leaves the file in the inbox and its hash unfinished, so the
next run takes it again; the journal's per-resident records make that rerun
send nobody twice.

``--dry-run`` validates and writes reports only: nothing is sent, moved or
recorded, and it takes no lock, so it never keeps the real run from starting.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shlex
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from loguru import logger

from pipeline.config import Settings
from pipeline.errors import (
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_ROWS_NOT_OK,
    ConfigError,
    EhcError,
    InputError,
)
from pipeline.files import (
    ExistingNames,
    describe_os_error,
    explain_os_error,
    fitting_name,
    numbered,
    sweep_leftovers,
)
from pipeline.inbox.summary import (
    DRY_RUN_DAY_SUFFIX,
    FILE_DUPLICATE,
    FILE_ERROR,
    FILE_FAILED,
    FILE_INTERRUPTED,
    FILE_NOT_REACHED,
    FILE_PROCESSED,
    FILE_UNFINISHED,
    FILE_WAITING,
    InboxFile,
    InboxResult,
    write_summary,
)
from pipeline.logs import printable
from pipeline.model import STATUS_FAILED, ReadOptions
from pipeline.reading.isolated import ReadLimits
from pipeline.reading.register import REGISTER_SUFFIXES, ReadPolicy, not_regular, reading_policy
from pipeline.state.journal import Journal
from pipeline.state.lock import run_lock
from pipeline.stopping import interrupt_on_signals

#: Inboxes of up to this many files get their summary under way written before every file; larger ones
#: every :data:`PROGRESS_SECONDS`.
PROGRESS_EVERY_FILE_UP_TO = 200
PROGRESS_SECONDS = 5.0

PROCESSED_DIR = "processed"
FAILED_DIR = "failed"
REASON_SUFFIX = ".reason.txt"
#: Pause between the two size checks of the settle test (only when settle_seconds > 0).
RECHECK_SECONDS = 1.0
#: Days back whose files' report folders each run looks through for what a killed run left there.
SWEEP_DAYS = 7

__all__ = ["InboxFile", "InboxResult", "run_inbox", "scan_inbox"]


#: The command line's advice in why a file could not be read, as the nightly run takes it: it has no
#: --mapping or --sheet, the configuration's [columns] does what --mapping does.
_ADVICE = (
    (
        re.compile(r"或用 --mapping 指定对应关系"),
        "或在配置文件的 [columns] 中写明对应关系（见 docs/configuration.md）",
    ),
    (re.compile(r"，或加 --sheet .* 指定读取它$"), ""),
)


def for_inbox(message: str) -> str:
    """``message`` (a reason a file could not be read) with advice the nightly run can follow."""
    for advice, instead in _ADVICE:
        message = advice.sub(instead, message)
    return message


def _is_scratch(name: str) -> bool:
    """Hidden files, Office lock files (``~$x.xlsx``), LibreOffice locks, our own reason notes."""
    return name.startswith((".", "~")) or name.endswith(REASON_SUFFIX)


def scan_inbox(inbox: Path) -> tuple[list[Path], list[str]]:
    """The registers lying directly in ``inbox`` (sorted by name) and the other files' names.

    Subfolders (``processed/``, ``failed/`` and any other) are never entered,
    links never followed: a link or a special file with a register's name is
    listed among the registers, to be refused unread (:meth:`_Run.process`).
    """
    registers, ignored = [], []
    with os.scandir(inbox) as entries:
        found = sorted(entries, key=lambda entry: entry.name)
    for entry in found:
        if _is_scratch(entry.name) or entry.is_dir(follow_symlinks=False):
            continue
        if Path(entry.name).suffix.lower() in REGISTER_SUFFIXES:
            registers.append(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            ignored.append(printable(entry.name))
    return registers, ignored


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """Which file is at ``path`` (device, inode, size, time of change), or None if none is.

    The time of change is the later of the modification time and the inode's
    change time: ``cp -p``, ``tar`` and ``rsync -t`` set the former back to the
    source's, so a file still being copied looked settled; the latter no writer
    can set.
    """
    try:
        status = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return status.st_dev, status.st_ino, status.st_size, max(status.st_mtime_ns, status.st_ctime_ns)


def split_settled(paths: list[Path], now: datetime, settle_seconds: float) -> tuple[list[Path], list[Path]]:
    """(ready, still being written): too recently modified, or changing across a short re-check."""
    if settle_seconds <= 0:
        return list(paths), []
    first = {path: _identity(path) for path in paths}
    cutoff, ahead = now.timestamp() - settle_seconds, now.timestamp() + settle_seconds
    # A time of change in the future (a clock ahead where the file was made) says nothing about
    # whether it is still being written: only the re-check below does.
    young = {path for path, sig in first.items() if sig is not None and cutoff < sig[3] / 1e9 <= ahead}
    for path, sig in first.items():
        if sig is not None and sig[3] / 1e9 > ahead:
            logger.warning("{} 的修改时间在将来（对方电脑的时钟不准？）：按文件是否还在变化判断", path.name)
    candidates = [p for p in paths if p not in young and first[p] is not None]
    if candidates:
        time.sleep(min(RECHECK_SECONDS, settle_seconds))
    changing = {p for p in candidates if _identity(p) != first[p]}
    ready = [p for p in candidates if p not in changing]
    waiting = [p for p in paths if p in young or p in changing]
    return ready, waiting


def sha256_of(path: Path) -> tuple[str, int]:
    """Hex SHA-256 and size of a regular file, read in 1 MiB chunks; never through a link.

    A link or a special file raises :class:`InputError` (nothing of it is read).
    """
    digest, size = hashlib.sha256(), 0
    status = os.stat(path, follow_symlinks=False)
    if not stat.S_ISREG(status.st_mode):
        raise not_regular(path.name, status.st_mode)
    flags = (
        os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    )
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise not_regular(path.name, stat.S_IFLNK) from None
        raise
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise not_regular(path.name, stat.S_IFIFO)
    with os.fdopen(descriptor, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _unique(path: Path, exists: Callable[[Path], bool] = Path.exists) -> Path:
    """``path``, or ``<stem>-2<suffix>``, ``-3`` ... whichever does not exist yet."""
    taken = ExistingNames(path.parent, exists)
    return path.with_name(numbered(path.stem, taken, separator="-", suffix=path.suffix))


def _safe_name(name: str, *, room: int) -> str:
    """``name`` as the run names what it makes of a file (its report folder, its place in processed/ or
    failed/): control characters written out as the summary and the log print them (``\\n``), so that
    the path they print is the real one, and short enough for ``room`` bytes more."""
    return fitting_name(printable(name), room=room)


def _results_dir(day_dir: Path, stem: str) -> Path:
    if stem.lower().endswith(".json"):  # never a folder named like the day's summary.json beside it
        stem += "_"
    stem = _safe_name(stem, room=4)
    day_dir.mkdir(parents=True, exist_ok=True)
    while True:
        target = _unique(day_dir / stem)
        with contextlib.suppress(FileExistsError):
            target.mkdir()
            return target


def sweep_killed_runs(out_root: Path, today: date) -> None:
    """Remove what killed runs left in the report folders of the last :data:`SWEEP_DAYS` days' runs.

    A run killed outright (``kill -9``, out of memory, a power cut) leaves its
    work files in the file's report folder: the rows kept between checking and
    sending, as large as the register, and half-written reports.  The file is
    taken again into a new folder (``<stem>-2``), so no later run writes into
    that one, where :func:`~pipeline.files.sweep_leftovers` would have found
    them.  Only what it removes goes: a live run's files and young ones stay.
    """
    try:
        days = [entry for entry in out_root.iterdir() if entry.is_dir() and not entry.is_symlink()]
    except OSError:
        return
    for day in days:
        try:
            when = date.fromisoformat(day.name.removesuffix(DRY_RUN_DAY_SUFFIX))
        except ValueError:
            continue
        if (today - when).days > SWEEP_DAYS:
            continue
        with contextlib.suppress(OSError):
            for folder in [entry for entry in day.iterdir() if entry.is_dir() and not entry.is_symlink()]:
                for leftover in sweep_leftovers(folder):
                    logger.info("已清理被中断的运行在 {} 留下的临时文件 {}", folder, leftover.name)


def decoded_name(name: str) -> str | None:
    """A text name for a file name that is not UTF-8 (bytes Python keeps as surrogates), else None.

    Such names come from Windows: a zip made on a Chinese PC, a Samba share.
    They are GBK more often than not; bytes that are not GBK either become ``_``.
    """
    if not any("\udc80" <= ch <= "\udcff" for ch in name):
        return None
    raw = os.fsencode(name)
    try:
        return raw.decode("gb18030")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace").replace("\ufffd", "_")


def _renamed_to_text(path: Path, text: str) -> Path:
    """``path`` renamed in the inbox to ``text`` (:func:`decoded_name` of its name): every report,
    summary and log line names a register by text, and a name that is none stopped every run."""
    target = _unique(path.with_name(text))
    os.rename(path, target)
    logger.warning("收件箱中的文件名不是 UTF-8 编码（{}），已改名为 {}", printable(path.name), target.name)
    return target


def _text_named(registers: list[Path], dry_run: bool) -> tuple[list[Path], list[InboxFile]]:
    """The registers with every name that is not UTF-8 renamed to text, and the files left as they are.

    A dry run renames nothing: such a file is listed as waiting, with the
    name the real run will give it.
    """
    kept: list[Path] = []
    left: list[InboxFile] = []
    for path in registers:
        text = decoded_name(path.name)
        if text is None:
            kept.append(path)
            continue
        if dry_run:
            message = f"文件名不是 UTF-8 编码：试运行不读取；正式运行时先改名为 {printable(text)} 再处理"
        else:
            try:
                kept.append(_renamed_to_text(path, text))
                continue
            except OSError as error:
                message = f"文件名不是 UTF-8 编码，无法改名（{explain_os_error(error)[0]}）：请手动改名"
        left.append(InboxFile(name=printable(path.name), status=FILE_WAITING, message=message))
    return sorted(kept, key=lambda path: path.name), left


class NotAFolder(OSError):
    """``processed/`` or ``failed/`` is a symbolic link (or a file), not a folder of the inbox."""


def _inbox_folder(folder: Path) -> Path:
    """``folder`` (``processed/``, ``failed/``), made if missing; never through a link.

    Whoever may drop files into the inbox may also leave a link of that name
    there: followed, every register and reason note would be written wherever
    it points (another centre's share, the state folder), as the service user.
    """
    with contextlib.suppress(FileExistsError):
        folder.mkdir()
    if not stat.S_ISDIR(os.lstat(folder).st_mode):
        raise NotAFolder(errno.ENOTDIR, "not a folder", str(folder))
    return folder


def _moving_failed(error: OSError, path: Path, folder: str) -> str:
    """Why ``path`` could not be moved into the inbox's ``folder``, with what to do, in Chinese."""
    if isinstance(error, NotAFolder):
        return (
            f"无法把 {printable(path.name)} 移到 {folder}/：收件目录中的 {folder} 不是文件夹"
            f"（是符号链接或文件），为安全起见不往里移。处理办法：删除或移走它，下次运行自建 {folder} 文件夹"
        )
    return describe_os_error(error, f"把 {printable(path.name)} 移到", f"{folder}/")


def _move(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder`` (a rename on the inbox's own filesystem), never overwriting."""
    _inbox_folder(folder)
    target = _unique(folder / _safe_name(path.name, room=4))
    os.replace(path, target)
    return target


def _write_reason(failed_dir: Path, path: Path, outcome: InboxFile, when: datetime) -> Path:
    """Write ``<name>.reason.txt`` where ``path`` will land in ``failed/``; return the landing path."""
    _inbox_folder(failed_dir)

    def taken(candidate: Path) -> bool:
        return candidate.exists() or candidate.with_name(candidate.name + REASON_SUFFIX).exists()

    target = _unique(failed_dir / _safe_name(path.name, room=len(REASON_SUFFIX) + 4), taken)
    reason = target.with_name(target.name + REASON_SUFFIX)
    reason.write_text(
        f"文件：{printable(path.name)}\n时间：{when.isoformat(timespec='seconds')}\n原因：{outcome.message}\n"
        f"SHA-256：{outcome.sha256}\n处理办法：按上面的原因改正文件后，重新放入收件箱（文件名可以不变）。\n",
        encoding="utf-8",
    )
    return target


@dataclass
class _Run:
    """One inbox run in progress: its settings, clock, journal and what happened so far."""

    inbox: Path
    out_root: Path
    settings: Settings
    dry_run: bool
    started_at: datetime
    journal: Journal
    t0: float = field(default_factory=time.monotonic)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    last_progress: float = -float("inf")  # when the summary under way was last written
    hashes_done: set[str] = field(default_factory=set)
    #: which file each inbox path was when taken in: a newer one put in its place is not moved away
    taken: dict[Path, tuple[int, int, int, int] | None] = field(default_factory=dict)

    def clock(self) -> datetime:
        return self.started_at + timedelta(seconds=time.monotonic() - self.t0)

    @property
    def day_dir(self) -> Path:
        day = self.started_at.strftime("%Y-%m-%d")
        return self.out_root / (day + DRY_RUN_DAY_SUFFIX if self.dry_run else day)

    def result(
        self, files: list[InboxFile], ignored: list[str], taken_over: str | None, *, under_way: bool = False
    ) -> InboxResult:
        """The run with these file outcomes, now: ended, or ``under_way``."""
        return InboxResult(
            inbox=self.inbox,
            out_root=self.out_root,
            dry_run=self.dry_run,
            started_at=self.started_at,
            finished_at=self.clock(),
            files=files,
            ignored=ignored,
            exit_code=_exit_code(files),
            taken_over=taken_over,
            under_way=under_way,
            run_id=self.run_id,
        )

    def progress(self, files: list[InboxFile], ignored: list[str], taken_over: str | None) -> None:
        """Write the summary of the run so far, as one under way: if the process dies (kill -9, a power
        cut, the kernel out of memory), the files it finished are in a summary, said to be unfinished.

        Each summary lists every file: for an inbox of thousands of small files, written before each
        one, they would add up to gigabytes; there it is written every few seconds.
        """
        now = time.monotonic()
        if len(files) > PROGRESS_EVERY_FILE_UP_TO and now - self.last_progress < PROGRESS_SECONDS:
            return
        self.last_progress = now
        try:
            write_summary(self.result(files, ignored, taken_over, under_way=True), self.day_dir)
        except OSError as error:  # the summary at the end says it, or fails the same way and says so
            logger.debug("{}", describe_os_error(error, "写出运行汇总到", self.out_root))

    def process(self, path: Path) -> InboxFile | None:
        """Take in one register; None if it vanished before it could be read."""
        outcome = InboxFile(name=printable(path.name), status=FILE_PROCESSED, started_at=self.clock())
        try:
            self.taken[path] = _identity(path)
            outcome.sha256, outcome.size = sha256_of(path)
        except FileNotFoundError:
            logger.info("{} 在处理前被移走，跳过", path.name)
            return None
        except InputError as error:
            return self._failed(path, outcome, error.message)
        except OSError as error:
            return self._failed(path, outcome, describe_os_error(error, "读取文件", path.name))
        if outcome.sha256 in self.hashes_done or self.journal.file_seen(outcome.sha256):
            return self._duplicate(path, outcome)
        try:
            outcome.out_dir = _results_dir(self.day_dir, path.stem)
        except OSError as error:
            return self._stopped(
                outcome,
                FILE_ERROR,
                describe_os_error(error, "创建结果目录", self.day_dir / path.stem),
                EXIT_FATAL,
            )
        if not self.dry_run:
            self.journal.record_file(
                outcome.sha256, path.name, "processing", outcome.out_dir, outcome.started_at
            )
        logger.info("处理 {} → {}", path.name, outcome.out_dir)
        try:
            counts = self._submit(path, outcome.out_dir)
        except InputError as error:
            with contextlib.suppress(OSError):
                outcome.out_dir.rmdir()  # only if nothing was written into it
            outcome.out_dir = outcome.out_dir if outcome.out_dir.exists() else None
            return self._failed(path, outcome, error.message)
        except EhcError as error:
            status = FILE_INTERRUPTED if error.exit_code == EXIT_INTERRUPTED else FILE_ERROR
            if error.counts is not None:  # stopped after its reports were written: count what they say
                outcome.take_counts(error.counts)
            return self._stopped(outcome, status, error.message, error.exit_code)
        except KeyboardInterrupt:
            return self._stopped(outcome, FILE_INTERRUPTED, "运行被中断", EXIT_INTERRUPTED)
        outcome.take_counts(counts)
        outcome.finished_at = self.clock()
        if self._replaced(path):
            # What was read may be the new version: the content hashed is not recorded as done (dropped
            # again, it would be set aside as a duplicate, its residents never sent). The new version
            # stays for the next run; the journal keeps anyone it enrolled from being sent twice.
            if not self.dry_run:
                self.journal.record_file(
                    outcome.sha256, path.name, FILE_PROCESSED, outcome.out_dir, outcome.started_at, None
                )
            outcome.message = "处理期间文件被换成了新版本：新版本留在收件目录，下次运行处理"
            return outcome
        self.hashes_done.add(outcome.sha256)
        if not self.dry_run:
            self.journal.record_file(
                outcome.sha256,
                path.name,
                FILE_PROCESSED,
                outcome.out_dir,
                outcome.started_at,
                outcome.finished_at,
            )
            outcome.moved_to = self._move_processed(path, outcome)
            failed = outcome.statuses.get(STATUS_FAILED, 0)
            if failed and outcome.moved_to is not None:
                # Their messages say that running the same command sends them again: true of ehc submit,
                # not of this run, which takes a processed file in again only as a duplicate.
                moved = shlex.quote(printable(str(outcome.moved_to)))
                outcome.message = (
                    f"{failed} 行发送失败，下次运行不会自动重发（文件已移到 {PROCESSED_DIR}/）："
                    f"请用 ehc submit {moved} --out 新的结果目录 重新提交"
                    "（已办理的不会重复发送）"
                )
        return outcome

    @property
    def read_policy(self) -> ReadPolicy:
        """How this run reads: no links, each file in a child under the configured limits."""
        inbox = self.settings.inbox
        return ReadPolicy(
            follow_symlinks=False,
            limits=ReadLimits(
                memory_bytes=inbox.read_memory_mb << 20 if inbox.read_memory_mb > 0 else None,
                seconds=inbox.read_timeout_seconds if inbox.read_timeout_seconds > 0 else None,
            ),
        )

    def _replaced(self, path: Path) -> bool:
        """Whether the file at ``path`` is no longer the one this run took in (a new version dropped in)."""
        taken = self.taken.get(path)
        if taken is None or _identity(path) == taken:
            return False
        logger.warning("{} 在处理期间被换成了新文件：新文件留在收件目录，下次运行处理", path.name)
        return True

    def _move_processed(self, path: Path, outcome: InboxFile) -> Path | None:
        if self._replaced(path):
            return None
        try:
            return _move(path, self.inbox / PROCESSED_DIR)
        except OSError as error:
            # Recorded as processed already: the next run sees the same hash and only retries the move.
            # The run does not end "all well" (exit 2): the folder needs the operator, every night.
            message = _moving_failed(error, path, PROCESSED_DIR)
            logger.error("{}", message)
            outcome.message = f"已处理，但文件无法移出收件目录：{message}"
            outcome.exit_code = EXIT_FATAL
            return None

    def _submit(self, path: Path, out_dir: Path) -> Any:
        """The file's run (a dry run with --dry-run): its rows counted as its reports count them."""
        with reading_policy(self.read_policy):
            return self._submit_file(path, out_dir)

    def _submit_file(self, path: Path, out_dir: Path) -> Any:
        options = ReadOptions(all_sheets=self.settings.inbox.all_sheets)
        if self.dry_run:
            from pipeline.dryrun import run_validate

            return run_validate([path], out_dir, self.settings, options, today=self.started_at.date()).counts
        from pipeline.messages import RESEND_FROM_INBOX
        from pipeline.submission.submit import run_submit

        # Its failed rows must not say that running the same command sends them again: this run moves
        # the file to processed/ and takes it in again only as a duplicate.
        return run_submit([path], out_dir, self.settings, options, resend=RESEND_FROM_INBOX).counts

    def _duplicate(self, path: Path, outcome: InboxFile) -> InboxFile:
        outcome.status = FILE_DUPLICATE
        outcome.message = "内容与已处理过的文件相同，未再处理"
        outcome.finished_at = self.clock()
        if not self.dry_run:
            outcome.moved_to = self._move_processed(path, outcome)
        logger.info("{} 与已处理过的文件内容相同，跳过", path.name)
        return outcome

    def _failed(self, path: Path, outcome: InboxFile, message: str) -> InboxFile:
        message = for_inbox(message)
        outcome.status, outcome.message, outcome.finished_at = FILE_FAILED, message, self.clock()
        logger.error("{} 无法读取：{}", path.name, message)
        if self.dry_run:
            return outcome
        if outcome.sha256:
            # Left unfinished on purpose: the same file, put back after a configuration fix, is taken again.
            self.journal.record_file(
                outcome.sha256, path.name, FILE_FAILED, outcome.out_dir or "", outcome.started_at, None
            )
        if self._replaced(path):
            return outcome
        try:
            target = _write_reason(self.inbox / FAILED_DIR, path, outcome, outcome.finished_at)
            os.replace(path, target)
            outcome.moved_to = target
        except OSError as error:
            moving = _moving_failed(error, path, FAILED_DIR)
            logger.error("{}", moving)
            outcome.message = f"{message}；且文件无法移出收件目录：{moving}"
            outcome.exit_code = EXIT_FATAL
        return outcome

    def _stopped(self, outcome: InboxFile, status: str, message: str, exit_code: int) -> InboxFile:
        outcome.status, outcome.message, outcome.finished_at = status, message, self.clock()
        outcome.exit_code = exit_code
        if outcome.sha256 and not self.dry_run:
            with contextlib.suppress(EhcError):  # the journal may be what failed
                self.journal.record_file(
                    outcome.sha256, outcome.name, status, outcome.out_dir or "", outcome.started_at, None
                )
        logger.error(
            "{}：{}；文件留在收件箱，下次运行继续（已办理的居民不会重复发送）", outcome.name, message
        )
        return outcome


def _summarised(result: InboxResult, day_dir: Path) -> Path | None:
    """Write the run's summary files; the one that describes the run, or None if they could not be written.

    Monitoring reads them: one left unwritten (a folder of that name, a
    read-only or full disk) would leave it reading an earlier run's, so the
    run does not end "all well" (exit 2, said in the summary), and whichever
    of the two can be written is written again to say so.
    """
    try:
        return write_summary(result, day_dir)
    except OSError as error:
        reason, fix = explain_os_error(error)
        if isinstance(error, IsADirectoryError):  # "give the path of a file": the name is ours, not theirs
            fix = "删除或改名这个同名文件夹（每次运行都要写这个文件）"
        where = error.filename or result.out_root
        result.summary_failure = f"无法写出运行汇总 {where}：{reason}。处理办法：{fix}"
    logger.error("{}", result.summary_failure)
    if result.exit_code in (EXIT_OK, EXIT_ROWS_NOT_OK):
        result.exit_code = EXIT_FATAL
    with contextlib.suppress(OSError):
        write_summary(result, day_dir)
    return None


def _exit_code(outcomes: list[InboxFile]) -> int:
    for outcome in outcomes:
        if outcome.status in (FILE_ERROR, FILE_INTERRUPTED):
            return outcome.exit_code or EXIT_FATAL
    if any(outcome.exit_code == EXIT_FATAL for outcome in outcomes):  # a file that could not be moved
        return EXIT_FATAL
    if any(o.status == FILE_FAILED or (o.status == FILE_PROCESSED and o.rows_not_ok) for o in outcomes):
        return EXIT_ROWS_NOT_OK
    return EXIT_OK


def run_inbox(
    inbox: Path,
    out_root: Path,
    settings: Settings,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> InboxResult:
    """Process every new register in ``inbox``; write ``summary.json``; return what happened.

    Raises :class:`LockHeld` (exit 3) if another run holds the lock of
    ``settings.state_dir``, :class:`InputError` if ``inbox`` is not a
    folder, and :class:`ConfigError` if the app id or secret is not set (a
    real run).  A fatal fault during a file (platform unreachable,
    authentication refused, Ctrl-C/SIGTERM) stops the run: that file and the
    ones after it stay in the inbox, the summary is written, and
    ``exit_code`` is 2 (130 when interrupted).
    """
    inbox, out_root = Path(inbox), Path(out_root)
    if not inbox.is_dir():
        raise InputError("收件箱目录不存在或不是文件夹", file=str(inbox), fix="检查 --inbox 的路径")
    if not dry_run:
        from pipeline.submission.submit import missing_credentials

        # Known before any file is touched: found after the first file was read, it was blamed on that
        # file, which got a folder of reports and an unfinished record every night until it was set.
        if missing := missing_credentials(settings):
            raise ConfigError(f"{missing}，无法提交。请设置后重新运行（收件箱中的文件都未动）")
    command = f"ehc run --inbox {inbox}"
    lock = contextlib.nullcontext() if dry_run else run_lock(settings.state_dir, command=command)
    with lock as held, interrupt_on_signals(), Journal(settings.journal_path) as journal:
        run = _Run(inbox, out_root, settings, dry_run, (now or datetime.now()).astimezone(), journal)
        logger.info("收件箱运行开始：{}{}", inbox, "（试运行）" if dry_run else "")
        sweep_killed_runs(out_root, run.started_at.date())
        registers, ignored = scan_inbox(inbox)
        ready, waiting = split_settled(registers, run.started_at, settings.inbox.settle_seconds)
        # Renamed once settled: a rename changes the inode's time of change, which the settle check reads.
        ready, outcomes = _text_named(ready, dry_run)
        stopped = False
        taken_over = held.taken_over.describe() if held is not None and held.taken_over else None
        for number, path in enumerate(ready):
            if stopped:
                outcomes.append(InboxFile(name=printable(path.name), status=FILE_NOT_REACHED))
                continue
            unfinished = [InboxFile(name=printable(p.name), status=FILE_UNFINISHED) for p in ready[number:]]
            run.progress([*outcomes, *unfinished], ignored, taken_over)
            try:
                outcome = run.process(path)
            except KeyboardInterrupt:
                outcome = run._stopped(
                    InboxFile(name=printable(path.name), status=FILE_INTERRUPTED),
                    FILE_INTERRUPTED,
                    "运行被中断",
                    EXIT_INTERRUPTED,
                )
            if outcome is not None:
                outcomes.append(outcome)
                stopped = outcome.status in (FILE_ERROR, FILE_INTERRUPTED)
        outcomes += [InboxFile(name=printable(p.name), status=FILE_WAITING) for p in waiting]
        result = run.result(outcomes, ignored, taken_over)
        result.summary_path = _summarised(result, run.day_dir)
    logger.info("收件箱运行结束，退出码 {}", result.exit_code)
    return result.finish()
