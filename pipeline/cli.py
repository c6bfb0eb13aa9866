"""The ``ehc`` command line: parse options, call the library, map errors to exit codes.

Exit codes (also in README and docs/operations.md):
0 every row fine · 1 some rows invalid, rejected or failed · 2 fatal (unreadable
input, missing columns, bad options or configuration, platform unusable) ·
3 another run holds the lock · 130 interrupted (reports were written).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from loguru import logger

from pipeline import __version__
from pipeline.config import MAX_RATE, Settings, load_settings
from pipeline.errors import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_ROWS_NOT_OK, ConfigError, EhcError
from pipeline.files import private_dir
from pipeline.logs import mask_text, register_secret, setup_logging
from pipeline.model import ReadOptions, RunResult


class _Parser(argparse.ArgumentParser):
    """argparse with one-line Chinese errors and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"错误：命令行参数有误（{message}）。运行 `{self.prog} --help` 查看用法\n")
        raise SystemExit(EXIT_FATAL)


def _positive(text: str) -> float:
    """A finite number above 0 and at most MAX_RATE (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"应为正数：{text}") from None
    if not math.isfinite(value) or value <= 0 or value > MAX_RATE:
        raise argparse.ArgumentTypeError(f"应为正数（有限，不超过 {MAX_RATE:g}）：{text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"应为正整数：{text}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"应为正整数：{text}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    parser.add_argument("--debug", action="store_true", help="show debug logs and tracebacks")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")


def _input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="registers (xlsx/xls/csv)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the reports")
    sheets = parser.add_mutually_exclusive_group()
    sheets.add_argument("--sheet", metavar="NAME", help="read this sheet (default: the first with data)")
    sheets.add_argument("--all-sheets", action="store_true", help="read every sheet that has data")
    parser.add_argument("--mapping", type=Path, metavar="FILE", help="TOML file: header = field code")


def build_parser() -> argparse.ArgumentParser:
    """The ``ehc`` argument parser with every subcommand."""
    parser = _Parser(prog="ehc", description="电子健康卡批量申领 / batch enrolment for the e-health card")
    parser.add_argument("--version", action="version", version=f"ehc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    validate = commands.add_parser("validate", help="dry run: read, normalise, validate, report")
    _input_options(validate)
    _common(validate)

    submit = commands.add_parser("submit", help="validate, then send valid rows with syncCardInfo")
    _input_options(submit)
    submit.add_argument("--base-url", metavar="URL", help="platform base URL (env EHC_BASE_URL)")
    submit.add_argument("--rate", type=_positive, metavar="N", help="at most N requests per second")
    submit.add_argument("--concurrency", type=_count, metavar="N", help="parallel requests")
    submit.add_argument(
        "--lookup-existing",
        action="store_true",
        help="fetch card ids of residents enrolled elsewhere with bindCardInfo (binds them)",
    )
    _common(submit)

    run = commands.add_parser("run", help="process every new register in an inbox folder")
    run.add_argument("--inbox", type=Path, required=True, metavar="DIR")
    run.add_argument("--out", type=Path, metavar="DIR", help="results root (default: <inbox>-results)")
    run.add_argument("--dry-run", action="store_true", help="validate only; send nothing, move nothing")
    _common(run)

    qrcode = commands.add_parser("qrcode", help="fetch QR code PNGs for enrolled residents")
    qrcode.add_argument("--from", dest="source", type=Path, required=True, metavar="DIR_OR_JOURNAL")
    qrcode.add_argument("--out", type=Path, required=True, metavar="DIR")
    qrcode.add_argument("--base-url", metavar="URL")
    _common(qrcode)

    check = commands.add_parser("check-config", help="check the configuration and the platform login")
    check.add_argument("--base-url", metavar="URL")
    _common(check)

    serve = commands.add_parser("serve", help="run the web workspace for the centres")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    _common(serve)

    users = commands.add_parser("users", help="workspace users (passwords are read from a prompt or stdin)")
    users_commands = users.add_subparsers(dest="users_command", required=True, parser_class=_Parser)
    users_add = users_commands.add_parser("add", help="add a user of a centre")
    users_add.add_argument("name", metavar="NAME")
    users_add.add_argument(
        "--centre", required=True, metavar="ORGCODE", help="the centre's organisation code"
    )
    users_add.add_argument(
        "--admin", action="store_true", help="may manage centres and users, read the audit log"
    )
    _common(users_add)
    users_passwd = users_commands.add_parser("passwd", help="set a user's password")
    users_passwd.add_argument("name", metavar="NAME")
    _common(users_passwd)

    centres = commands.add_parser("centres", help="workspace centres")
    centres_commands = centres.add_subparsers(dest="centres_command", required=True, parser_class=_Parser)
    centres_add = centres_commands.add_parser("add", help="add a centre with its organisation code")
    centres_add.add_argument("org_code", metavar="ORGCODE")
    centres_add.add_argument("--name", required=True, metavar="名称")
    _common(centres_add)

    sandbox = commands.add_parser("sandbox", help="run the bundled platform stand-in on loopback")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=0, help="0 picks a free port")
    sandbox.add_argument("--state", type=Path, metavar="FILE", help="SQLite state file")
    sandbox.add_argument("--app", action="append", default=[], metavar="ID:SECRET", help="register an app")
    sandbox.add_argument("--latency-ms", type=float, default=0.0, metavar="N")
    sandbox.add_argument("--fault-rate", type=float, default=0.0, metavar="F")
    sandbox.add_argument("--seed", type=int, metavar="S")
    sandbox.add_argument("--rate-limit", type=_positive, metavar="N", help="requests per second per app")
    sandbox.add_argument("--workkey-ttl", type=float, default=86400.0, metavar="S")
    _common(sandbox)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    base_url = getattr(args, "base_url", None)
    if base_url:
        settings = settings.with_base_url(base_url)
    register_secret(settings.platform.app_secret)
    return settings


def _progress_wanted() -> bool:
    return sys.stderr.isatty()


def _read_options(args: argparse.Namespace) -> ReadOptions:
    return ReadOptions(sheet=args.sheet, all_sheets=args.all_sheets, mapping_file=args.mapping)


def _cmd_validate(args: argparse.Namespace, settings: Settings) -> RunResult:
    from pipeline import dryrun

    return dryrun.run_validate(
        args.inputs, args.out, settings, _read_options(args), progress=_progress_wanted()
    )


def _cmd_submit(args: argparse.Namespace, settings: Settings) -> RunResult:
    from pipeline.state.lock import run_lock
    from pipeline.submission import submit

    # The journal is shared: two submissions at once could both claim and send one resident.
    with run_lock(settings.state_dir, command="ehc submit"):
        return submit.run_submit(
            args.inputs,
            args.out,
            settings,
            _read_options(args),
            rate=args.rate,
            concurrency=args.concurrency,
            lookup_existing=args.lookup_existing or None,
            progress=_progress_wanted(),
        )


def _cmd_run(args: argparse.Namespace, settings: Settings) -> RunResult:
    from pipeline.inbox import run as inbox

    out = args.out or args.inbox.parent / f"{args.inbox.name}-results"
    return inbox.run_inbox(args.inbox, out, settings, dry_run=args.dry_run)


def _cmd_qrcode(args: argparse.Namespace, settings: Settings) -> RunResult:
    from pipeline.platform.client import PlatformClient
    from pipeline.submission import qrcode

    wanted = len(qrcode.read_holders(args.source))
    with PlatformClient(settings.platform, settings.state_dir, rate=settings.submit.rate) as client:
        written = qrcode.export_qrcodes(args.source, args.out, client)
    lines = [f"已保存 {len(written)} 个二维码图片到 {args.out}"]
    if len(written) < wanted:
        lines.append(f"另有 {wanted - len(written)} 个未能获取，原因见 {args.out / qrcode.INDEX_CSV}")
    return RunResult(EXIT_OK if len(written) >= wanted else EXIT_ROWS_NOT_OK, "\n".join(lines))


def _cmd_check_config(args: argparse.Namespace, settings: Settings) -> RunResult:
    from pipeline import checkconfig

    return RunResult(EXIT_OK, "\n".join(checkconfig.check_config(settings)))


def _cmd_sandbox(args: argparse.Namespace, settings: Settings) -> RunResult:
    from pipeline.sandbox import server

    apps: dict[str, str] = {}
    for item in args.app:
        app_id, sep, secret = item.partition(":")
        if not sep or not app_id or not secret:
            raise ConfigError(f"--app 应写成 应用ID:密钥，实际为 {item.split(':')[0]}:…。请改正")
        apps[app_id] = secret
        register_secret(secret)
    if settings.platform.app_id and settings.platform.app_secret:
        apps.setdefault(settings.platform.app_id, settings.platform.app_secret)
    state = args.state or settings.sandbox_path
    server.serve(
        host=args.host,
        port=args.port,
        state=state,
        apps=apps,
        latency_ms=args.latency_ms,
        fault_rate=args.fault_rate,
        seed=args.seed,
        rate_limit=args.rate_limit,
        workkey_ttl=args.workkey_ttl,
    )
    return RunResult(EXIT_OK)


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> RunResult:
    from pipeline.web.serve import serve

    return RunResult(serve(settings, host=args.host, port=args.port))


def _cmd_users(args: argparse.Namespace, settings: Settings) -> RunResult:
    from pipeline.web import accounts
    from pipeline.web.serve import read_password

    store = accounts.open_store(settings.state_dir)
    if args.users_command == "add":
        user = accounts.add_user(store, args.name, args.centre, read_password(), admin=args.admin)
        return RunResult(
            EXIT_OK, f"已添加用户 {user.name}（中心 {args.centre}{'，管理员' if args.admin else ''}）"
        )
    user = accounts.set_password(store, args.name, read_password("新密码："))
    return RunResult(EXIT_OK, f"已修改用户 {user.name} 的密码；其已登录的页面需重新登录")


def _cmd_centres(args: argparse.Namespace, settings: Settings) -> RunResult:
    from pipeline.web import accounts

    centre = accounts.add_centre(accounts.open_store(settings.state_dir), args.org_code, args.name)
    return RunResult(EXIT_OK, f"已添加中心 {centre.name}（{centre.org_code}）")


_COMMANDS = {
    "validate": _cmd_validate,
    "submit": _cmd_submit,
    "run": _cmd_run,
    "qrcode": _cmd_qrcode,
    "check-config": _cmd_check_config,
    "sandbox": _cmd_sandbox,
    "serve": _cmd_serve,
    "users": _cmd_users,
    "centres": _cmd_centres,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ehc`` with ``argv``; return the exit code (never raises, but SystemExit from --help)."""
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    # loguru's default handler prints every level on stderr; until setup_logging, nothing is logged.
    logger.remove()
    try:
        settings = _settings(args)
        # The state folder holds the journal, the work key and the logs: private before anything is written.
        with contextlib.suppress(OSError):
            private_dir(settings.state_dir)
        setup_logging(
            level=settings.logging.level,
            log_dir=settings.effective_log_dir if args.command != "sandbox" else None,
            rotation=settings.logging.rotation,
            retention=settings.logging.retention,
            json=bool(args.log_json or settings.logging.json),
            debug=debug,
        )
        result = _COMMANDS[args.command](args, settings)
        if result.summary:
            print(mask_text(result.summary))
        return result.exit_code
    except EhcError as error:
        if debug:
            traceback.print_exc()
        logger.debug("stopped: {}", type(error).__name__)
        sys.stderr.write(f"错误：{error.message}\n")
        return error.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("已中断。\n")
        return EXIT_INTERRUPTED
    except Exception as error:  # the last line of defence: a clerk never sees a traceback
        if debug:
            traceback.print_exc()
        sys.stderr.write(
            f"错误：程序内部错误（{type(error).__name__}）。请加 --debug 重新运行并把输出交给技术支持\n"
        )
        return EXIT_FATAL
