"""What an inbox run did: per-file outcomes, the run totals, ``summary.json`` and the Chinese text.

``<out>/<date>/summary.json`` describes the latest run of that date that took
in at least one file (an earlier one of the same date is kept beside it as
``summary-<HHMMSS>.json``); ``<out>/last-summary.json`` is always the latest
run, even one that found nothing to do.  Both are written atomically.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import EXIT_FATAL
from pipeline.files import ExistingNames, numbered, write_atomically
from pipeline.logs import printable
from pipeline.model import GOOD_STATUSES, STATUS_LABELS, Batch, RunResult
from pipeline.reports.summary import summary_counts

SUMMARY_NAME = "summary.json"
LAST_SUMMARY_NAME = "last-summary.json"
#: A dry run's own: it never replaces the real run's summary, which monitoring reads.
LAST_DRY_RUN_SUMMARY_NAME = "last-dry-run-summary.json"
#: A dry run's day folder is ``<YYYY-MM-DD>`` with this after it: its reports never take the real run's names.
DRY_RUN_DAY_SUFFIX = "-dry-run"
SUMMARY_FORMAT = 1

#: What became of a file.
FILE_PROCESSED = "processed"  # reports written (rows sent unless a dry run); moved to processed/
FILE_FAILED = "failed"  # could not be read; moved to failed/ with a .reason.txt
FILE_DUPLICATE = "duplicate"  # same content as a file processed before; moved to processed/
FILE_WAITING = "waiting"  # still being written; left for the next run
FILE_ERROR = "error"  # a fatal fault stopped the run here; left in the inbox
FILE_INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM stopped the run here; left in the inbox
FILE_NOT_REACHED = "not_reached"  # after the run stopped; left in the inbox
FILE_UNFINISHED = "unfinished"  # being processed, or the run died in it (kill -9, power); left in the inbox

FILE_STATUS_LABELS: dict[str, str] = {
    FILE_PROCESSED: "已处理", FILE_FAILED: "无法读取", FILE_DUPLICATE: "重复文件已跳过",
    FILE_WAITING: "仍在写入，留待下次", FILE_ERROR: "出错停止", FILE_INTERRUPTED: "被中断",
    FILE_NOT_REACHED: "未处理（运行已停止）",
    FILE_UNFINISHED: "处理中或未完成（运行没有正常结束时，下次运行会接着处理）",
}  # fmt: skip

#: What ``summary.json`` says of a run while it is under way, and so of a run that died without ending
#: (kill -9, power cut, out of memory): the files finished so far are in it, as they are in the journal.
MEANING_UNFINISHED = "运行尚未结束：仍在运行，或进程被意外终止（断电、被强制结束、内存不足）"


#: Exit 2 of a run that went on to the end: a file was taken in but could not be moved out of the inbox.
MEANING_NOT_MOVED = "严重错误：有文件无法移出收件目录（原因见该文件），每次运行都会再遇到，请处理后重新运行"

#: Exit 2 of a run whose summary file could not be written: monitoring would read the last one's.
MEANING_NO_SUMMARY = (
    "严重错误：运行汇总文件无法写出（原因见上），监控读到的仍是以前的汇总，请处理后重新运行"
)

EXIT_MEANINGS: dict[int, str] = {
    0: "一切正常",
    1: "有行未通过校验、被平台拒绝或发送失败，或有文件无法读取",
    2: "严重错误，运行已停止",
    130: "运行被中断",
}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


@dataclass
class InboxFile:
    """One file of an inbox run and what became of it."""

    name: str
    status: str
    sha256: str = ""
    size: int = 0
    rows: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    result_codes: dict[str, int] = field(default_factory=dict)
    warning_codes: dict[str, int] = field(default_factory=dict)
    #: Rows per problem, named as ``ehc validate`` names it: ``10110 联系电话不正确``.
    problems: dict[str, int] = field(default_factory=dict)
    out_dir: Path | None = None
    moved_to: Path | None = None
    message: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int = 0  # set when this file stopped the run

    def take_counts(self, counts: dict[str, Any] | Batch) -> None:
        """Rows, rows per status, per error code, warnings per code and rows per problem, as the
        file's own reports count them (``counts``: the run's :attr:`RunResult.counts`, or its batch)."""
        if isinstance(counts, Batch):
            counts = summary_counts(counts)
        self.rows, self.statuses = int(counts["rows"]), counts["by_status"]
        self.result_codes, self.warning_codes = counts["by_code"], counts["warnings_by_code"]
        errors = [problem for problem in counts.get("problems", []) if not problem["warning"]]
        self.problems = {f"{int(p['code'])} {p['title']}": int(p["rows"]) for p in errors}

    @property
    def rows_not_ok(self) -> int:
        """Rows invalid, rejected or failed."""
        return sum(n for status, n in self.statuses.items() if status not in GOOD_STATUSES)

    def as_json(self) -> dict[str, Any]:
        """This file as a ``summary.json`` entry."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "size": self.size,
            "status": self.status,
            "rows": self.rows,
            "statuses": self.statuses,
            "result_codes": self.result_codes,
            "warning_codes": self.warning_codes,
            "problems": self.problems,
            "out_dir": str(self.out_dir) if self.out_dir else None,
            "moved_to": str(self.moved_to) if self.moved_to else None,
            "message": self.message,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


@dataclass(kw_only=True)
class InboxResult(RunResult):
    """An inbox run: every file's outcome, the totals, the exit code and where the summary went.

    As every command's result, it carries the text to print (``summary``,
    filled in by :meth:`finish`) and the exit code.
    """

    inbox: Path
    out_root: Path
    dry_run: bool
    started_at: datetime
    finished_at: datetime
    files: list[InboxFile]
    ignored: list[str]
    taken_over: str | None = None  # the run whose stale lock this one took over
    summary_path: Path | None = None
    under_way: bool = False  # written after each file: what a run that dies leaves
    run_id: str = ""  # tells this run's own summary from an earlier one's started in the same second
    #: why the summary file (or one of the two) could not be written: the run then exits 2
    summary_failure: str = ""

    @property
    def duration_seconds(self) -> float:
        """Wall time of the run."""
        return round((self.finished_at - self.started_at).total_seconds(), 3)

    def totals(self) -> dict[str, Any]:
        """Files per status, rows, rows per status and per result code, over the whole run."""
        statuses: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        warnings: Counter[str] = Counter()
        problems: Counter[str] = Counter()
        for outcome in self.files:
            statuses.update(outcome.statuses)
            codes.update(outcome.result_codes)
            warnings.update(outcome.warning_codes)
            problems.update(outcome.problems)
        return {
            "files": dict(Counter(o.status for o in self.files)),
            "rows": sum(o.rows for o in self.files),
            "statuses": dict(statuses),
            "result_codes": dict(sorted(codes.items())),
            "warning_codes": dict(sorted(warnings.items())),
            "problems": dict(sorted(problems.items(), key=lambda item: (item[0].split(" ", 1)[0], -item[1]))),
        }

    def as_json(self) -> dict[str, Any]:
        """The whole run as written to ``summary.json``."""
        return {
            "format": SUMMARY_FORMAT,
            "version": __version__,
            "mode": "dry_run" if self.dry_run else "submit",
            "run_id": self.run_id,
            "inbox": str(self.inbox),
            "out": str(self.out_root),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_seconds": self.duration_seconds,
            "complete": not self.under_way,
            "exit_code": None if self.under_way else self.exit_code,
            "exit_meaning": self.exit_meaning,
            "stale_lock_taken_over": self.taken_over,
            "files": [o.as_json() for o in self.files],
            "ignored": self.ignored,
            "totals": self.totals(),
        }

    @property
    def exit_meaning(self) -> str:
        """What the exit code says of this run, in Chinese.

        An exit 2 with no file stopped at is a file that was done and could not
        leave the inbox: the run went on with the others, it did not stop.
        """
        if self.under_way:
            return MEANING_UNFINISHED
        stopped = any(outcome.status in (FILE_ERROR, FILE_INTERRUPTED) for outcome in self.files)
        if self.exit_code == EXIT_FATAL and not stopped:
            return MEANING_NO_SUMMARY if self.summary_failure else MEANING_NOT_MOVED
        return EXIT_MEANINGS.get(self.exit_code, "")

    @property
    def text(self) -> str:
        """The human summary (Chinese), for stdout."""
        return format_run(self)

    def finish(self) -> InboxResult:
        """Fill in the text to print and the summary file written, once the run is over."""
        self.summary = self.text
        if self.summary_path is not None:
            self.paths = {self.summary_path.name: self.summary_path}
        return self


def _status_counts_text(statuses: dict[str, int]) -> str:
    ordered = sorted(statuses.items(), key=lambda item: -item[1])
    return "，".join(f"{STATUS_LABELS.get(status, status)} {n}" for status, n in ordered)


def _file_line(outcome: InboxFile) -> str:
    label = FILE_STATUS_LABELS.get(outcome.status, outcome.status)
    line = f"  [{label}] {outcome.name}"
    if outcome.status == FILE_PROCESSED:
        line += f"：{outcome.rows} 行（{_status_counts_text(outcome.statuses) or '无数据行'}）"
        if outcome.message:  # done, but something about it needs the operator (it could not be moved)
            line += f"\n      注意：{outcome.message}"
    elif outcome.message:
        line += f"：{outcome.message}"
    if outcome.out_dir:
        line += f"\n      报告：{printable(str(outcome.out_dir))}"
    if outcome.moved_to:
        line += f"\n      文件已移到：{printable(str(outcome.moved_to))}"
    return line


def format_run(result: InboxResult) -> str:
    """The Chinese run summary: one line per file, the totals, the codes, the summary file, the exit code."""
    from schemas.result_codes import describe

    totals = result.totals()
    mode = "试运行：只校验，不发送、不移动文件" if result.dry_run else "正式提交"
    lines = [
        f"ehc 收件箱运行（{mode}）：{result.inbox}",
        f"开始 {_iso(result.started_at)}，结束 {_iso(result.finished_at)}，"
        f"用时 {result.duration_seconds:.1f} 秒",
    ]
    if result.taken_over:
        lines.append(f"注意：上一次运行（{result.taken_over}）没有正常结束，本次已接管运行锁并继续")
    if not result.files:
        lines.append("收件箱中没有新的登记表。")
    else:
        by_status = "，".join(f"{FILE_STATUS_LABELS.get(s, s)} {n}" for s, n in totals["files"].items())
        lines.append(f"文件 {len(result.files)} 个：{by_status}")
        lines += [_file_line(o) for o in result.files]
    if totals["rows"]:
        lines.append(f"合计 {totals['rows']} 行：{_status_counts_text(totals['statuses'])}")
    if totals["result_codes"]:
        # Each problem as ehc validate names it (10110 联系电话不正确); a code no problem names
        # (a file counted from before problems were kept) by the platform's own phrase.
        named = [(key.split(" ", 1)[0], f"{key} ×{n}") for key, n in totals["problems"].items()]
        titled = {code for code, _ in named}
        named += [(code, f"{code} {describe(int(code))} ×{n}") for code, n in totals["result_codes"].items()
                  if code.isdigit() and code not in titled]  # fmt: skip
        lines.append("返回代码：" + "；".join(text for _, text in sorted(named, key=lambda item: item[0])))
    if result.ignored:
        lines.append(f"忽略 {len(result.ignored)} 个非登记表文件：{'、'.join(result.ignored)}")
    if result.summary_failure:
        lines.append(f"注意：{result.summary_failure}")
    elif result.summary_path:
        lines.append(f"运行汇总：{result.summary_path}")
    lines.append(f"退出码 {result.exit_code}：{result.exit_meaning}")
    return "\n".join(lines)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically (a reader never sees half a file).

    An error names ``path``, not the temporary file beside it that failed.
    """
    try:
        write_atomically(path, json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from error


def _keep_earlier(summary: Path) -> None:
    """Rename an earlier run's summary of the same date to ``summary-<HHMMSS>.json``."""
    try:
        earlier = json.loads(summary.read_text(encoding="utf-8")).get("started_at") or ""
        stamp = datetime.fromisoformat(earlier).strftime("%H%M%S")
    except (OSError, ValueError, AttributeError):
        stamp = datetime.fromtimestamp(summary.stat().st_mtime).strftime("%H%M%S")
    name = numbered(f"summary-{stamp}", ExistingNames(summary.parent), separator="-", suffix=".json")
    os.replace(summary, summary.with_name(name))


def _of_this_run(summary: Path, run_id: str) -> bool:
    """Whether ``summary`` is this run's own, written before an earlier file (replaced, not kept)."""
    try:
        return bool(run_id) and json.loads(summary.read_text(encoding="utf-8")).get("run_id") == run_id
    except (OSError, ValueError, AttributeError):
        return False


def write_summary(result: InboxResult, day_dir: Path) -> Path:
    """Write the run's ``summary.json`` (in ``day_dir`` if any file was taken in) and ``last-summary.json``
    (a dry run's: ``last-dry-run-summary.json``).

    Returns the path of the summary that describes this run.  If either cannot
    be written, the other is still tried (monitoring may read either) and the
    first error is raised.
    """
    document = result.as_json()
    result.out_root.mkdir(parents=True, exist_ok=True)
    failure: OSError | None = None
    touched = any(o.status not in (FILE_WAITING,) for o in result.files)
    last = result.out_root / (LAST_DRY_RUN_SUMMARY_NAME if result.dry_run else LAST_SUMMARY_NAME)
    path = last
    day = day_dir / SUMMARY_NAME
    own = day.is_file() and _of_this_run(day, result.run_id)  # written while under way: replaced, even if
    if touched or own:  # every file it named vanished before it was read
        path = day
        try:
            day_dir.mkdir(parents=True, exist_ok=True)
            if path.is_file() and not own:
                _keep_earlier(path)
            _write_json(path, document)
        except OSError as error:
            failure = error
    try:
        _write_json(last, document)
    except OSError as error:
        failure = failure or error
    if failure is not None:
        raise failure
    return path
