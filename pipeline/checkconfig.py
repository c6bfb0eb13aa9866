"""``ehc check-config``: validate the settings, log in to the platform, say where things live.

Two stages.  :func:`settings_problems` finds everything wrong with the merged
settings without touching the network (all problems at once, so an operator
fixes them in one go).  :func:`check_config` then fetches a fresh work key
through the real client, which proves the URL, the app id and the secret
together.  Neither ever shows the app secret or the work key.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from loguru import logger

from pipeline.config import Settings, without_password
from pipeline.errors import AuthenticationRefused, ConfigError
from pipeline.files import explain_os_error
from pipeline.logs import mask_app_id, register_secret, retention_days, rotation_bytes
from pipeline.model import INPUT_FIELDS
from pipeline.normalise import default_problem
from pipeline.platform.refusals import REFUSAL_ADVICE
from pipeline.platform.workkey import cache_path

#: loguru's built-in level names (case-sensitive there).
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_problems(url: str, allow_insecure_http: bool = False) -> list[str]:
    parts, shown = urlsplit(url), without_password(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return [
            f"平台地址 {shown!r} 不是有效网址：应形如 https://主机/jkfs-dzjkk/dzjkk/websvi/"
            "（[platform] base_url 或环境变量 EHC_BASE_URL）"
        ]
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not allow_insecure_http:
        loopback_only = "只允许 https（本机测试平台 127.0.0.1 / localhost 除外）"
        return [f"平台地址 {shown} 使用不加密的 http：{loopback_only}"]
    return []


def _writable_dir(path: Path) -> str | None:
    """None if ``path`` exists (or can be made) and is writable, else the reason."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return explain_os_error(error)[0]
    if not os.access(path, os.W_OK | os.X_OK):
        return "没有写权限"
    return None


def _log_option_problem(settings: Settings) -> str | None:
    """Whether the day's log file can be kept with these rotation and retention values.

    The retention is read as the log file reads it (days or weeks); a rotation
    that is not a size is a time value, which loguru parses only when a sink
    is added: add one briefly to find out.
    """
    from loguru import logger as probe

    try:
        retention_days(settings.logging.retention)
    except ValueError:
        return f"retention {settings.logging.retention!r}"
    with tempfile.TemporaryDirectory() as scratch:
        try:
            handler = probe.add(
                Path(scratch) / "probe.log",
                rotation=settings.logging.rotation,
                retention=settings.logging.retention,
                delay=True,
            )
        except (ValueError, TypeError):  # loguru's text is English: name the values instead
            return f"rotation {settings.logging.rotation!r}，retention {settings.logging.retention!r}"
        probe.remove(handler)
    return None


def settings_problems(settings: Settings) -> list[str]:
    """Every fatal problem with ``settings`` as one Chinese sentence each (empty: all fine)."""
    platform, problems = settings.platform, []
    if not platform.app_id:
        problems.append("未设置应用 ID：请在配置文件 [platform] app_id 中填写，或设置环境变量 EHC_APP_ID")
    if not platform.app_secret:
        problems.append("未设置应用密钥：请设置环境变量 EHC_APP_SECRET（不建议写进配置文件）")
    problems += _url_problems(platform.base_url, platform.allow_insecure_http)
    if platform.connect_timeout <= 0 or platform.read_timeout <= 0:
        problems.append("[platform] connect_timeout 与 read_timeout 应大于 0（秒）")
    if platform.max_attempts < 1:
        problems.append("[platform] max_attempts 应至少为 1")
    if settings.logging.level.upper() not in LOG_LEVELS:
        problems.append(
            f"[logging] level 应为 {' / '.join(LOG_LEVELS)} 之一，实际为 {settings.logging.level!r}"
        )
    bad_log_option = _log_option_problem(settings)
    if bad_log_option:
        problems.append(
            f"[logging] rotation / retention 无法识别（{bad_log_option}）："
            'rotation 写成如 "10 MB" 或 "1 day"，retention 写成如 "30 days" 或 "12 weeks"'
        )
    if problem := default_problem(settings.defaults):  # the same rule every run applies
        problems.append(problem)
    unknown = sorted({code for code in settings.column_aliases.values() if code not in INPUT_FIELDS})
    if unknown:
        problems.append(
            f"[columns] 中有不认识的字段代码 {', '.join(unknown)}；可用的有：{', '.join(INPUT_FIELDS)}"
        )
    state_problem = _writable_dir(settings.state_dir)
    if state_problem:
        problems.append(
            f"状态目录 {settings.state_dir} 不可用（{state_problem}）：请在 [paths] state_dir 或环境变量 "
            "EHC_STATE_DIR 中指定一个可写目录"
        )
    return problems


def describe_settings(settings: Settings) -> list[str]:
    """Where the run will send and keep things: the lines check-config prints (secret never shown)."""
    platform, submit = settings.platform, settings.submit
    concurrency = str(submit.concurrency) if submit.concurrency else "自动（按速率与平台响应时间）"
    return [
        f"配置文件：{settings.source or '（未指定，仅用环境变量与默认值）'}",
        f"平台地址：{platform.base_url}",
        f"应用 ID：{mask_app_id(platform.app_id)}",
        "应用密钥：已设置（不显示）" if platform.app_secret else "应用密钥：未设置",
        f"发送速率：{f'每秒最多 {submit.rate:g} 次' if submit.rate > 0 else '不限速'}；并发：{concurrency}",
        f"发卡机构代码（默认）：{settings.defaults.org_code or '未设置（须在登记表中提供）'}",
        f"状态目录：{settings.state_dir}",
        f"办理记录（journal）：{settings.journal_path}",
        f"运行锁：{settings.lock_path}",
        f"工作密钥缓存：{settings.state_dir / 'workkeys'}（文件权限 0600）",
        f"日志目录：{settings.effective_log_dir}（{_log_keeping(settings)}）",
    ]


def _log_keeping(settings: Settings) -> str:
    """How long log files are kept and when a day's file continues in another, in Chinese."""
    try:
        kept = f"保留 {retention_days(settings.logging.retention)} 天"
    except ValueError:
        kept = f"保留期 {settings.logging.retention!r} 无法识别"
    if rotation_bytes(settings.logging.rotation) is None:
        return f"{kept}，每天一个文件"
    return f"{kept}，每天一个文件，满 {settings.logging.rotation.strip()} 后接着写入下一个文件"


def _warnings(settings: Settings) -> list[str]:
    lines = [f"提示：{warning}" for warning in settings.warnings]
    if settings.submit.rate <= 0:
        lines.append("提示：[submit] rate = 0 表示不限速，只适用于本机测试平台；正式平台请设置每秒上限")
    if not settings.defaults.org_code:
        lines.append(
            "提示：未设置 [defaults] org_code / EHC_ORG_CODE；登记表没有“发卡机构代码”列的行会被平台拒绝"
        )
    log_problem = _writable_dir(settings.effective_log_dir)
    if log_problem:
        lines.append(
            f"提示：日志目录 {settings.effective_log_dir} 不可写（{log_problem}），日志将只输出到屏幕"
        )
    return lines


def check_config(settings: Settings) -> list[str]:
    """Validate ``settings``, fetch a fresh work key, and return the lines to print.

    Raises :class:`ConfigError` (settings wrong, every problem listed),
    :class:`AuthenticationRefused` (the platform refused the app: message
    says which credential to check) or :class:`PlatformUnreachable`.
    """
    from pipeline.platform.client import PlatformClient

    register_secret(settings.platform.app_secret)
    problems = settings_problems(settings)
    if problems:
        where = f"（配置文件 {settings.source}）" if settings.source else ""
        raise ConfigError(f"配置有 {len(problems)} 处问题{where}：" + "；".join(problems))
    lines = describe_settings(settings) + _warnings(settings)
    with PlatformClient(settings.platform, settings.state_dir, rate=settings.submit.rate) as client:
        # A key from the cache proves nothing about today's secret: log in afresh if one is cached
        # (without a cached key, the first fetch is already a fresh login).
        cached = cache_path(settings.state_dir, settings.platform.app_id.strip(), client.base_url).exists()
        try:
            work_key = client.work_key(refresh=cached)
        except AuthenticationRefused as error:
            if error.result_code not in REFUSAL_ADVICE:
                raise
            raise AuthenticationRefused(
                f"登录平台 {settings.platform.base_url} 失败：{error.message}", result_code=error.result_code
            ) from None
    register_secret(work_key)
    logger.info("check-config: getWorkKey 成功")
    lines.append("认证成功：平台 getWorkKey 返回了工作密钥（已缓存，不显示）")
    return lines
