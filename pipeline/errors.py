"""Faults that stop a run, and the exit codes they map to.

Per-row problems are never exceptions: they are values (fault rows, call
outcomes).  What stops a run is one of these::

    EhcError                      exit 2 unless noted
    ├── InputError                unreadable file, bad encoding, missing columns
    ├── ConfigError               bad config file, options or credentials
    ├── PlatformError
    │   ├── AuthenticationRefused the platform refused the app (10101/10102/10103/10105)
    │   └── PlatformUnreachable   no answer from the platform after retries
    ├── LockHeld                  another run holds the lock (exit 3)
    └── Interrupted               Ctrl-C or SIGTERM; reports were written (exit 130)

Each carries a one-line Chinese message for clerks (``str(error)``), saying
what went wrong, where, and how to fix it; whatever built it, the message is
masked (ID and phone numbers) and kept on one line before anyone sees it.  Foreign exceptions (OSError,
requests, zipfile, calamine, tomllib ...) are translated into these at the
edges that touch files and sockets; nothing else raises them.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ROWS_NOT_OK = 1
EXIT_FATAL = 2
EXIT_LOCKED = 3
EXIT_INTERRUPTED = 130


class EhcError(Exception):
    """Base of every fault that stops a run; ``str()`` is the clerk's message."""

    exit_code = EXIT_FATAL
    #: the counts of the reports the run still wrote before it stopped (``RunResult.counts``), if it did
    counts: dict[str, object] | None = None

    def __init__(self, message: str) -> None:
        from pipeline.logs import safe_text  # logs imports files, which imports this module

        message = safe_text(message)
        super().__init__(message)
        self.message = message


class InputError(EhcError):
    """A register cannot be read or understood (file, sheet, row, column named)."""

    def __init__(
        self,
        what: str,
        *,
        file: str = "",
        sheet: str = "",
        row: int | None = None,
        column: str = "",
        fix: str = "",
    ) -> None:
        where = []
        if file:
            where.append(f"文件 {file}")
        if sheet:
            where.append(f"工作表 {sheet}")
        if row is not None:
            where.append(f"第 {row} 行")
        if column:
            where.append(f"列 {column}")
        text = what
        if where:
            text = f"{'，'.join(where)}：{what}"
        if fix:
            text = f"{text}。处理办法：{fix}"
        super().__init__(text)
        self.file, self.sheet, self.row, self.column, self.fix = file, sheet, row, column, fix


class ConfigError(EhcError):
    """The configuration file, an option or a credential is wrong or missing."""


class PlatformError(EhcError):
    """The platform cannot be used for this run."""


class AuthenticationRefused(PlatformError):
    """The platform refused our app id, secret or work key."""

    def __init__(self, message: str, result_code: int | None = None) -> None:
        super().__init__(message)
        self.result_code = result_code


class PlatformUnreachable(PlatformError):
    """The platform did not answer, after every retry.

    ``finding`` is what was seen (without what the run does about it), for a
    command that words the consequence its own way.
    """

    def __init__(self, message: str, finding: str = "") -> None:
        from pipeline.logs import safe_text  # as in EhcError: logs imports files, which imports this

        super().__init__(message)
        self.finding = safe_text(finding) if finding else self.message


class LockHeld(EhcError):
    """Another run holds the lock on the state directory."""

    exit_code = EXIT_LOCKED


class Interrupted(EhcError):
    """The run was stopped by Ctrl-C or SIGTERM after writing its reports."""

    exit_code = EXIT_INTERRUPTED


def caused_by_interrupt(error: BaseException) -> bool:
    """Whether ``error`` is a Ctrl-C, or an error Python raised because one struck.

    A Ctrl-C while a class is made (a dataclass field's ``__set_name__``, as a
    module is imported) reaches the caller as a ``RuntimeError`` whose cause is
    the ``KeyboardInterrupt``: still a clerk's Ctrl-C, not a fault of the program.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
