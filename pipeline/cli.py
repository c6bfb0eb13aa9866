"""The ``ehc`` command line: parse options, call the library, map errors to exit codes.

Exit codes (also in README and docs/operations.md):
0 every row fine · 1 some rows invalid, rejected or failed · 2 fatal (unreadable
input, missing columns, bad options or configuration, platform unusable) ·
3 another run holds the lock · 130 interrupted (reports were written).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar
from urllib.parse import urlsplit

from loguru import logger

from pipeline import __version__
from pipeline.config import CONCURRENCY_LIMIT, MAX_RATE, Settings, load_settings
from pipeline.errors import (
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_ROWS_NOT_OK,
    ConfigError,
    EhcError,
    PlatformUnreachable,
    caused_by_interrupt,
)
from pipeline.files import private_dir
from pipeline.logs import mask_text, register_secret, setup_logging
from pipeline.memory import collect_garbage_less_often, opt_out_of_huge_pages, switch_threads_more_often
from pipeline.model import ReadOptions, RunResult

EXIT_CODES_HELP = """退出码：
  0    全部行通过校验（检查），或全部申领成功、已办理过（提交）
  1    有行未通过校验、被平台拒绝或发送失败
  2    致命错误：文件无法读取、缺少列、参数或配置有误、平台不可用
  3    另一个 ehc run 或 ehc submit 正在运行（状态目录已锁定）
  130  被中断（Ctrl-C）；提交时已完成部分的报告已写出，检查（validate）不留下报告"""

# Each command lists the codes it can return: a dry run and a QR code export take no run lock (never 3).
_VALIDATE_EXIT_CODES_HELP = """退出码：
  0    全部行通过校验
  1    有行未通过校验
  2    致命错误：文件无法读取、缺少列、参数或配置有误
  130  被中断（Ctrl-C）；检查不完整，不留下报告，请重新运行"""

_SUBMIT_EXIT_CODES_HELP = """退出码：
  0    全部行申领成功或已办理过
  1    有行未通过校验、被平台拒绝或发送失败
  2    致命错误：文件无法读取、缺少列、参数或配置有误、平台不可用
  3    另一个 ehc run 或 ehc submit 正在运行（状态目录已锁定）
  130  被中断（Ctrl-C）；已完成部分的报告已写出"""

_RUN_EXIT_CODES_HELP = """退出码：
  0    一切正常：全部行申领成功或已办理过（--dry-run：全部通过校验），或没有新文件
  1    有行未通过校验、被平台拒绝或发送失败，或有文件无法读取（已移到 failed/）
  2    致命错误：参数或配置有误、平台不可用、提交日志或结果目录无法写入
  3    另一个 ehc run 或 ehc submit 正在运行（状态目录已锁定；--dry-run 不受影响）
  130  被中断（Ctrl-C）；已完成部分的报告已写出"""

_QRCODE_EXIT_CODES_HELP = """退出码：
  0    每位申领成功的居民的二维码都已保存
  1    有居民的二维码未能获取（原因见屏幕和 qrcodes.csv）
  2    致命错误：--from 无法读取、参数或配置有误、平台不可用
  130  被中断（Ctrl-C）"""

_SHORT_EXIT_CODES_HELP = """退出码：
  0    成功
  2    致命错误：参数或配置有误、平台不可用
  130  被中断（Ctrl-C）"""

#: argparse's own messages (English) and how they read in Chinese; the first pattern that matches wins.
_ARGPARSE_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.S), chinese)
    for pattern, chinese in (
        (r"the following arguments are required: (?P<a>.+)", "缺少必需的参数 {a}"),
        (r"unrecognized arguments: (?P<a>.+)", "无法识别的参数 {a}"),
        (
            r"argument (?P<a>\S+): invalid choice: '?(?P<v>[^']*?)'?(?:,.*?)? \(choose from (?P<c>.+)\)",
            "{a} 的值“{v}”无效，可选：{c}",
        ),
        (r"argument (?P<a>\S+): expected one argument", "{a} 后面需要一个值"),
        (r"argument (?P<a>\S+): expected at least one argument", "{a} 后面至少需要一个值"),
        (r"argument (?P<a>\S+): expected at most one argument", "{a} 后面最多一个值"),
        (r"argument (?P<a>\S+): expected (?P<n>\d+) arguments?", "{a} 后面需要 {n} 个值"),
        (r"argument (?P<a>\S+): not allowed with argument (?P<b>\S+)", "{a} 不能与 {b} 同时使用"),
        (r"argument (?P<a>\S+): invalid int value: '?(?P<v>[^']*)'?", "{a} 的值“{v}”应为整数"),
        (r"argument (?P<a>\S+): invalid float value: '?(?P<v>[^']*)'?", "{a} 的值“{v}”应为数字"),
        (r"argument (?P<a>\S+): invalid \S+ value: '?(?P<v>[^']*)'?", "{a} 的值“{v}”无效"),
        (r"argument (?P<a>\S+): ignored explicit argument '?(?P<v>[^']*)'?", "{a} 不接受值（“{v}”）"),
        (r"one of the arguments (?P<a>.+) is required", "必须给出以下参数之一：{a}"),
        (r"ambiguous option: (?P<a>\S+) could match (?P<b>.+)", "选项 {a} 有歧义，可能是：{b}"),
        (r"argument (?P<a>\S+): (?P<m>.+)", "{a}：{m}"),
    )
)


def chinese_argparse_message(message: str) -> str:
    """argparse's English error message in Chinese (messages already in Chinese pass through)."""
    for pattern, chinese in _ARGPARSE_MESSAGES:
        found = pattern.fullmatch(message.strip())
        if found:
            return chinese.format(**{k: v.replace("'", "") for k, v in found.groupdict().items()})
    return message


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help in Chinese: ``用法：`` for ``usage:``, the description and epilog as written."""

    def add_usage(self, usage: str | None, actions: Any, groups: Any, prefix: str | None = None) -> None:
        super().add_usage(usage, actions, groups, "用法：" if prefix is None else prefix)


class _Parser(argparse.ArgumentParser):
    """argparse in Chinese: one-line errors (exit code 2), Chinese help with examples and exit codes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs["add_help"] = False
        super().__init__(*args, **kwargs)
        # The default sections, so that any argument added to the parser is listed under a Chinese title.
        self._positionals.title = "参数"
        self._optionals.title = "选项"
        self.options = self._optionals
        self.options.add_argument("-h", "--help", action="help", help="显示本帮助并退出")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        # Kept for error(): a file whose name starts with "-" is taken for an option.
        self.given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        text = chinese_argparse_message(message) + _dash_file_hint(getattr(self, "given", []))
        # argparse quotes what was typed, which may be an ID number or a phone typed in the wrong place.
        line = mask_text(f"错误：命令行参数有误：{text}。运行 `{self.prog} --help` 查看用法")
        if "--log-json" in getattr(self, "given", []):  # a collector reads every line of stderr as JSON
            setup_logging(json=True)
            logger.bind(fatal=True).error("{}", line)
        else:
            emit(line, sys.stderr)
        raise SystemExit(EXIT_FATAL)


def _dash_file_hint(given: Sequence[str]) -> str:
    """How to name a file whose name starts with "-" (argparse takes it for an option), or ""."""
    for token in given:
        if token == "--":
            break
        if token.startswith("-") and len(token) > 1 and Path(token).is_file():
            return f"（文件“{token}”的名字以“-”开头，被当成了选项：请写成 ./{token}）"
    return ""


def emit(text: str, stream: TextIO | None = None) -> None:
    """Write ``text`` and a newline to ``stream`` (stdout) whatever the console can encode.

    A GBK console and a file name it cannot encode get ``?`` for the
    character rather than an error after the reports were written; a closed
    pipe (``ehc validate … | head``) is not an error either.
    """
    stream = stream if stream is not None else sys.stdout
    try:
        try:
            stream.write(text + "\n")
        except UnicodeEncodeError:
            encoding = getattr(stream, "encoding", None) or "ascii"
            stream.write((text + "\n").encode(encoding, errors="replace").decode(encoding))
        stream.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass


def _tolerant_console() -> None:
    """Let stdout and stderr replace what the console cannot encode instead of failing the run.

    A Windows console redirected to a file writes GBK; a file name or a
    resident's name outside GBK must come out as ``?`` (stdout) or an escape
    (stderr, as Python does by default), in the summary and in the log lines.
    """
    for stream, errors in ((sys.stdout, "replace"), (sys.stderr, "backslashreplace")):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", "strict") == "strict":
            with contextlib.suppress(ValueError, OSError, io.UnsupportedOperation):
                reconfigure(errors=errors)


_N = TypeVar("_N", int, float)


def _number(
    kind: Callable[[str], _N], allowed: Callable[[_N], bool], wanted: str
) -> Callable[[str], _N]:
    """An argparse type: the text read with ``kind``, finite and ``allowed``, else "应为<wanted>：<text>"."""

    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"应为{wanted}：{text}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or not allowed(value):  # nan, inf
            raise argparse.ArgumentTypeError(f"应为{wanted}：{text}")
        return value

    return parse


_positive = _number(float, lambda v: 0 < v <= MAX_RATE, f"正数（有限，不超过 {MAX_RATE:g}）")
_lifetime = _number(float, lambda v: v > 0, "正数（有限）")
_non_negative = _number(float, lambda v: v >= 0, "不小于 0 的有限数")
#: A delay the sandbox sleeps: up to an hour (a longer one overflowed time.sleep in every request it hit).
_delay_ms = _number(float, lambda v: 0 <= v <= 3_600_000, "0 到 3600000（一小时）之间的毫秒数")
_count = _number(int, lambda v: 0 < v <= CONCURRENCY_LIMIT, f"正整数（不超过 {CONCURRENCY_LIMIT}）")
_non_negative_int = _number(int, lambda v: v >= 0, "不小于 0 的整数")
_port = _number(int, lambda v: 0 <= v <= 65535, "从 0 到 65535 的整数")


def _folder(text: str) -> Path:
    """An argparse type for an output folder: any path but an empty one (``--out ""`` is no folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("应为一个目录的路径，不能为空（当前目录请写 .）")
    return Path(text)


def _common(parser: _Parser) -> None:
    options = parser.options
    options.add_argument(
        "--config", type=Path, metavar="文件", help="配置文件（TOML），各项见 docs/configuration.md"
    )
    options.add_argument("--debug", action="store_true", help="显示调试日志；出错时显示详细的错误堆栈")
    options.add_argument(
        "--log-json", action="store_true", help="日志每行输出一个 JSON 对象（供运维系统收集）"
    )


def _input_options(parser: _Parser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="登记表",
        help="居民登记表（xlsx、xlsm、xlsb、xls、ods、csv、tsv、txt），可给多个",
    )
    options = parser.options
    options.add_argument(
        "--out", type=_folder, required=True, metavar="目录", help="报告输出目录（不存在时自动创建）"
    )
    sheets = options.add_mutually_exclusive_group()
    sheets.add_argument("--sheet", metavar="工作表", help="只读取这个工作表（默认：第一个有数据的工作表）")
    sheets.add_argument(
        "--all-sheets", action="store_true", help="读取所有有数据的工作表（一个文件至多 500 个）"
    )
    options.add_argument(
        "--mapping",
        type=Path,
        metavar="文件",
        help='表头对应文件（TOML，每行 "表头" = "字段代码"），用于程序认不出的表头',
    )


_HELP: dict[str, tuple[str, str, str]] = {
    # command: (one-line help, description, example)
    "validate": (
        "检查登记表（不发送）：读取、规范化、校验，写出报告",
        "检查登记表，不发送任何数据：读取每个登记表，把名称换成平台代码，逐行校验，\n"
        "在输出目录写出 results.xlsx、errors.xlsx、results.csv\n"
        "和标注了问题的登记表副本 annotated_<文件名>.xlsx。",
        "  ehc validate 登记表.xlsx --out 检查结果\n"
        "  ehc validate 一月.xlsx 二月.csv --out 检查结果 --all-sheets",
    ),
    "submit": (
        "检查后提交：把通过校验的行用 syncCardInfo 发送到平台",
        "先像 ehc validate 一样检查，再把通过校验的行逐个发送到平台（限速、失败重试、可续传）。\n"
        "同一居民不会重复提交。提交前须设置应用 ID、密钥和发卡机构代码（环境变量 EHC_APP_ID、\n"
        "EHC_APP_SECRET、EHC_ORG_CODE，或配置文件）。",
        "  ehc submit 登记表.xlsx --out 提交结果\n"
        "  ehc submit 登记表.xlsx --out 提交结果 --config ehc.toml --rate 20",
    ),
    "run": (
        "夜间导入：处理收件目录中每个新的登记表",
        "处理收件目录中每个新的登记表：检查并提交，结果写到结果目录；处理过的文件移到 processed/，\n"
        "无法读取的移到 failed/ 并附原因。同一时间只允许一个运行。详见 docs/operations.md。",
        "  ehc run --inbox /data/ehc/inbox --config /etc/ehc/ehc.toml\n  ehc run --inbox 收件 --dry-run",
    ),
    "qrcode": (
        "为已申领成功的居民下载二维码图片",
        "为提交结果中每位申领成功的居民向平台获取电子健康卡二维码（getImg），每人一张 PNG 图片。",
        "  ehc qrcode --from 提交结果 --out 二维码",
    ),
    "check-config": (
        "检查配置并登录平台（getWorkKey）",
        "检查配置文件和环境变量，并登录平台（getWorkKey）；显示平台地址、脱敏后的应用 ID、速率、\n"
        "状态目录和日志目录。",
        "  ehc check-config --config /etc/ehc/ehc.toml",
    ),
    "serve": (
        "运行网页工作台（供各中心在浏览器中使用）",
        "运行网页工作台：各中心的办事员登录后上传登记表、在网页上改正问题并提交，只能看到本中心的数据。\n"
        "部署方法见 docs/web.md。",
        "  ehc serve --config /etc/ehc/ehc.toml\n  ehc serve --port 8080",
    ),
    "users": (
        "管理网页工作台的用户",
        "添加网页工作台的用户、重设其密码，或停用、启用用户；密码在提示时输入（或从标准输入读取），"
        "不写在命令行里。",
        "  ehc users add zhangsan --centre 455400000\n  ehc users passwd zhangsan\n"
        "  ehc users disable zhangsan",
    ),
    "users add": (
        "添加一个中心的用户",
        "添加网页工作台的用户，归属于一个中心；密码在提示时输入（或从标准输入读取）。",
        "  ehc users add zhangsan --centre 455400000\n  ehc users add admin --centre 455400000 --admin",
    ),
    "users passwd": (
        "重设用户的密码",
        "重设网页工作台用户的密码；新密码在提示时输入（或从标准输入读取）。",
        "  ehc users passwd zhangsan",
    ),
    "users disable": (
        "停用用户",
        "停用网页工作台的用户（如办事员离职）：其已登录的页面立即退出，不能再登录；记录保留。",
        "  ehc users disable zhangsan",
    ),
    "users enable": (
        "启用已停用的用户",
        "恢复已停用的网页工作台用户，使其可以再次登录。",
        "  ehc users enable zhangsan",
    ),
    "centres": (
        "管理网页工作台的中心",
        "添加使用网页工作台的社区卫生服务中心（按机构代码）。",
        "  ehc centres add 455400000 --name 示范社区卫生服务中心",
    ),
    "centres add": (
        "按机构代码添加一个中心",
        "添加一个社区卫生服务中心：机构代码和名称。",
        "  ehc centres add 455400000 --name 示范社区卫生服务中心",
    ),
    "sandbox": (
        "在本机运行自带的模拟平台（测试用）",
        "在 127.0.0.1 上运行自带的模拟平台，行为与平台接口规范一致，用于演示和测试。",
        "  ehc sandbox --port 8080 --app demo:0123456789ABCDEF",
    ),
}


def _command(commands: Any, name: str, exit_codes: str = EXIT_CODES_HELP, *, key: str = "") -> _Parser:
    summary, description, example = _HELP[key or name]
    parser: _Parser = commands.add_parser(
        name, help=summary, description=description, epilog=f"示例：\n{example}\n\n{exit_codes}"
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``ehc`` argument parser with every subcommand, its help and errors in Chinese."""
    parser = _Parser(
        prog="ehc",
        description="电子健康卡批量申领：检查居民登记表，把通过校验的居民提交到电子健康卡平台。\n"
        "每个命令的用法：ehc 命令 --help",
        epilog="示例：\n  ehc validate 登记表.xlsx --out 检查结果\n"
        "  ehc submit 登记表.xlsx --out 提交结果\n\n" + EXIT_CODES_HELP,
    )
    parser.options.add_argument(
        "--version", action="version", version=f"ehc {__version__}", help="显示版本号并退出"
    )
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, title="命令", metavar="命令"
    )

    validate = _command(commands, "validate", _VALIDATE_EXIT_CODES_HELP)
    _input_options(validate)
    _common(validate)

    submit = _command(commands, "submit", _SUBMIT_EXIT_CODES_HELP)
    _input_options(submit)
    options = submit.options
    options.add_argument(
        "--base-url", metavar="地址", help="平台地址（默认取环境变量 EHC_BASE_URL 或配置文件）"
    )
    options.add_argument("--rate", type=_positive, metavar="N", help="每秒最多发送 N 个请求")
    options.add_argument(
        "--concurrency", type=_count, metavar="N", help=f"同时发送的请求数（1–{CONCURRENCY_LIMIT}）"
    )
    options.add_argument(
        "--lookup-existing",
        action="store_true",
        help="平台没有给出卡号的居民（答复“已办理过”的，及提交日志中申领成功而没有卡号的），"
        "用 bindCardInfo 查询并绑定其电子健康卡号（会在平台上绑定）",
    )
    _common(submit)

    run = _command(commands, "run", _RUN_EXIT_CODES_HELP)
    run.options.add_argument("--inbox", type=Path, required=True, metavar="目录", help="收件目录")
    run.options.add_argument(
        "--out", type=_folder, metavar="目录", help="结果根目录（默认：<收件目录>-results）"
    )
    run.options.add_argument("--dry-run", action="store_true", help="只检查：不发送，也不移动文件")
    _common(run)

    qrcode = _command(commands, "qrcode", _QRCODE_EXIT_CODES_HELP)
    qrcode.options.add_argument(
        "--from", dest="source", type=Path, required=True, metavar="目录或日志",
        help="提交结果目录（ehc submit 的 --out）或提交日志文件",
    )  # fmt: skip
    qrcode.options.add_argument(
        "--out", type=_folder, required=True, metavar="目录", help="二维码图片保存目录"
    )
    qrcode.options.add_argument(
        "--base-url", metavar="地址", help="平台地址（默认取环境变量 EHC_BASE_URL 或配置文件）"
    )
    _common(qrcode)

    check = _command(commands, "check-config", _SHORT_EXIT_CODES_HELP)
    check.options.add_argument(
        "--base-url", metavar="地址", help="平台地址（默认取环境变量 EHC_BASE_URL 或配置文件）"
    )
    _common(check)

    serve = _command(commands, "serve", _SHORT_EXIT_CODES_HELP)
    serve.add_argument("--host", default="127.0.0.1", metavar="地址", help="监听地址（默认 127.0.0.1）")
    serve.add_argument(
        "--port", type=_port, default=8000, metavar="端口",
        help="端口（默认 8000；0 表示自动选择空闲端口）",
    )
    _common(serve)

    users = _command(commands, "users", _SHORT_EXIT_CODES_HELP)
    users_commands = users.add_subparsers(
        dest="users_command", required=True, parser_class=_Parser, title="子命令", metavar="子命令"
    )
    users_add = _command(users_commands, "add", _SHORT_EXIT_CODES_HELP, key="users add")
    users_add.add_argument("name", metavar="用户名", help="登录用的用户名")
    users_add.add_argument("--centre", required=True, metavar="机构代码", help="该用户所属中心的机构代码")
    users_add.add_argument(
        "--admin", action="store_true",
        help="管理员（区级运维人员）：可管理所有中心和用户、查看所有中心的审计日志；不要给社区中心的工作人员",
    )  # fmt: skip
    _common(users_add)
    users_passwd = _command(users_commands, "passwd", _SHORT_EXIT_CODES_HELP, key="users passwd")
    users_passwd.add_argument("name", metavar="用户名", help="要重设密码的用户")
    _common(users_passwd)
    for action, what in (("disable", "要停用的用户"), ("enable", "要启用的用户")):
        toggled = _command(users_commands, action, _SHORT_EXIT_CODES_HELP, key=f"users {action}")
        toggled.add_argument("name", metavar="用户名", help=what)
        _common(toggled)

    centres = _command(commands, "centres", _SHORT_EXIT_CODES_HELP)
    centres_commands = centres.add_subparsers(
        dest="centres_command", required=True, parser_class=_Parser, title="子命令", metavar="子命令"
    )
    centres_add = _command(centres_commands, "add", _SHORT_EXIT_CODES_HELP, key="centres add")
    centres_add.add_argument("org_code", metavar="机构代码", help="中心的机构代码（发卡机构代码）")
    centres_add.add_argument("--name", required=True, metavar="名称", help="中心的名称")
    _common(centres_add)

    sandbox = _command(commands, "sandbox", _SHORT_EXIT_CODES_HELP)
    options = sandbox.options
    options.add_argument("--host", default="127.0.0.1", metavar="地址", help="监听地址（默认 127.0.0.1）")
    options.add_argument(
        "--port", type=_port, default=0, metavar="端口", help="端口（0 表示自动选择空闲端口）"
    )
    options.add_argument("--state", type=Path, metavar="文件", help="状态文件（SQLite）")
    options.add_argument("--app", action="append", default=[], metavar="ID:密钥", help="注册一个应用，可重复")
    options.add_argument(
        "--latency-ms", type=_delay_ms, default=0.0, metavar="N", help="每个请求延迟 N 毫秒"
    )
    options.add_argument("--fault-rate", type=float, default=0.0, metavar="F", help="随机故障的比例（0–1）")
    options.add_argument("--seed", type=int, metavar="S", help="随机种子（故障可重现）")
    options.add_argument("--rate-limit", type=_positive, metavar="N", help="每个应用每秒最多 N 个请求")
    options.add_argument(
        "--workkey-ttl", type=_lifetime, default=86400.0, metavar="秒", help="认证字符串有效期（秒）"
    )
    options.add_argument(
        "--fault-kinds", metavar="种类",
        help="随机故障的种类，逗号分隔（默认只取平台前面的故障；另有 lost、huge、drip、rekey、down）",
    )  # fmt: skip
    options.add_argument(
        "--retry-after", type=_non_negative_int, default=1, metavar="秒",
        help="429 的 Retry-After（秒；限流时至少为此值）",
    )  # fmt: skip
    options.add_argument(
        "--drip-ms", type=_delay_ms, default=1000.0, metavar="N", help="drip：每字节间隔毫秒"
    )
    options.add_argument(
        "--huge-mb", type=_non_negative, default=64.0, metavar="N", help="huge：应答大小（MB）"
    )
    _common(sandbox)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    base_url = getattr(args, "base_url", None)
    if base_url:
        settings = settings.with_base_url(base_url)
    if getattr(args, "log_json", False):
        # In the settings, not only this process's log: ehc serve's workers set up their own from them.
        settings = settings.with_json_log()
    register_secret(settings.platform.app_secret)
    # A proxy's password written into the address (https://user:password@host/...) is a secret too.
    with contextlib.suppress(ValueError):
        register_secret(urlsplit(settings.platform.base_url).password or "")
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

    # Named from the folder itself: "--inbox ." has no name of its own, and its results went to a
    # folder "-results" inside the inbox.
    folder = Path(os.path.abspath(args.inbox))
    out = args.out or folder.parent / f"{folder.name}-results"
    return inbox.run_inbox(args.inbox, out, settings, dry_run=args.dry_run)


def _cmd_qrcode(args: argparse.Namespace, settings: Settings) -> RunResult:
    from pipeline.platform.client import PlatformClient
    from pipeline.stopping import interrupt_on_signals
    from pipeline.submission import qrcode

    qrcode.read_holders(args.source)  # a wrong --from is named before anything else
    with (
        interrupt_on_signals(),
        PlatformClient(settings.platform, settings.state_dir, rate=settings.submit.rate) as client,
    ):
        try:
            export = qrcode.export_qrcodes(args.source, args.out, client, settings.journal_path)
        except PlatformUnreachable as error:
            raise PlatformUnreachable(
                f"{error.finding}。二维码导出已停止：已获取的图片已保存，未获取的居民列在 "
                f"{args.out / qrcode.INDEX_CSV} 中；请检查网络和平台状态后重新运行 ehc qrcode"
            ) from None
    exit_code = EXIT_ROWS_NOT_OK if export.failed else EXIT_OK
    return RunResult(exit_code, qrcode.describe_export(export, args.out))


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
    kinds: dict[str, Any] = {}
    if args.fault_kinds:
        kinds["fault_kinds"] = tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip())
    server.serve(
        **kinds,
        retry_after=args.retry_after,
        drip_ms=args.drip_ms,
        huge_mb=args.huge_mb,
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

    # Its dry-run workers and submissions log from the settings, as the server's own log is set up.
    logged = settings.with_debug_log() if args.debug else settings
    return RunResult(serve(logged, host=args.host, port=args.port))


def _cmd_users(args: argparse.Namespace, settings: Settings) -> RunResult:
    from pipeline.web import accounts
    from pipeline.web.serve import read_password

    store = accounts.open_store(settings.state_dir)
    if args.users_command == "add":
        accounts.new_user_centre(store, args.name, args.centre)  # before the password is typed
        user = accounts.add_user(store, args.name, args.centre, read_password(), admin=args.admin)
        return RunResult(
            EXIT_OK, f"已添加用户 {user.name}（中心 {args.centre}{'，管理员' if args.admin else ''}）"
        )
    if args.users_command in ("disable", "enable"):
        disabling = args.users_command == "disable"
        user = accounts.set_disabled(store, args.name, disabling)
        done = (
            "已停用用户 {}：其已登录的页面已退出，不能再登录" if disabling else "已启用用户 {}，可以重新登录"
        )
        return RunResult(EXIT_OK, done.format(user.name))
    accounts.existing_user(store, args.name)  # before the password is typed
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


def _json_log(args: argparse.Namespace, json_log: bool | None, debug: bool) -> bool:
    """Whether stderr speaks JSON, for the line that ends the command.

    A command stopped before its settings were read (a mistake in the
    configuration file) has no log yet: asked for ``--log-json``, it gets
    one on stderr now, since a collector reads every line of stderr as JSON.
    """
    if json_log is not None:
        return json_log
    if not getattr(args, "log_json", False):
        return False
    setup_logging(json=True, debug=debug)
    return True


def _show_traceback(json_log: bool) -> None:
    """``--debug``: the traceback of the error being handled, masked as every log line is.

    An error's text may quote a cell (an ID number, a phone number) or, from a
    library, whatever it was given.  With JSON logs it is one log record like
    every other line of stderr, which a collector reads line by line.
    """
    text = mask_text(traceback.format_exc())
    if json_log:
        logger.debug("{}", text)
    else:
        sys.stderr.write(text)


def _say_interrupted(json_log: bool) -> int:
    """Tell that Ctrl-C (or SIGTERM) stopped the command; its exit code."""
    if json_log:
        logger.bind(fatal=True).warning("已中断。")
    else:
        emit("已中断。", sys.stderr)
    return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ehc`` with ``argv``; return the exit code (never raises, but SystemExit from --help)."""
    _tolerant_console()
    opt_out_of_huge_pages()
    collect_garbage_less_often()
    switch_threads_more_often()
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    # loguru's default handler prints every level on stderr; until setup_logging, nothing is logged.
    logger.remove()
    json_log: bool | None = None  # the log is set up, one JSON object per line (None: not set up yet)
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
            json=settings.logging.json,
            debug=debug,
        )
        json_log = settings.logging.json
        if args.command != "check-config":  # which prints them among its own lines
            for warning in settings.warnings:
                logger.warning("{}", warning)
        result = _COMMANDS[args.command](args, settings)
    except EhcError as error:
        json_log = _json_log(args, json_log, debug)
        if debug:
            _show_traceback(json_log)
        logger.debug("stopped: {}", type(error).__name__)
        # In the day's log file too (and, in JSON, as stderr's line): why the night's run did nothing.
        logger.bind(fatal=True).error("错误：{}", error.message)
        if not json_log:
            emit(f"错误：{error.message}", sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return _say_interrupted(_json_log(args, json_log, debug))
    except Exception as error:  # the last line of defence: a clerk never sees a traceback
        json_log = _json_log(args, json_log, debug)
        if caused_by_interrupt(error):  # a Ctrl-C that Python wrapped: 已中断, not an internal error
            return _say_interrupted(json_log)
        if debug:
            _show_traceback(json_log)
        internal = f"错误：程序内部错误（{type(error).__name__}）。请加 --debug 重新运行并把输出交给技术支持"
        logger.bind(fatal=True).error("{}", internal)
        if not json_log:
            emit(internal, sys.stderr)
        return EXIT_FATAL
    # The run is done and its reports are written: printing the summary cannot fail it.
    if result.summary:
        emit(mask_text(result.summary))
    return result.exit_code
