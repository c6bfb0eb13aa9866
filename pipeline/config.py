"""Settings: one TOML file, overridden by environment variables.

Every key and its default is documented in ``docs/configuration.md``; the
example file is ``docs/ehc.example.toml``.  The app secret may (and should)
come from ``EHC_APP_SECRET`` only.  ``Settings`` never prints the secret.

Numbers are finite and within sane bounds (``--rate nan`` would switch the
limiter off); a platform address with plain ``http://`` to a host that is not
this machine is refused here, for every command, unless ``[platform]
allow_insecure_http = true`` or ``EHC_ALLOW_INSECURE_HTTP=1`` says it is a
test network.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import ConfigError
from pipeline.files import read_toml

PRODUCTION_BASE_URL = "https://live.fswsj.gov.cn/jkfs-dzjkk/dzjkk/websvi/"

#: What every run keeps in the state directory (docs/operations.md lists them for operators).
JOURNAL_FILE = "journal.sqlite"
LOCK_FILE = "ehc.lock"
WORKKEY_DIR = "workkeys"
LOG_DIR = "logs"
SANDBOX_FILE = "sandbox.sqlite"


@dataclass(frozen=True)
class PlatformSettings:
    """How to reach and sign for the platform."""

    base_url: str = PRODUCTION_BASE_URL
    app_id: str = ""
    app_secret: str = field(default="", repr=False)
    app_package_name: str = "ehc"
    term_id: str = ""
    version: str = "v1.1"
    app_version: str = "1.1"
    digest_type: str = ""
    enc_type: str = ""
    qr_type: str = "0"
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    max_retry_seconds: float = 120.0
    allow_insecure_http: bool = False  # plain http to a host other than this machine: test networks only


@dataclass(frozen=True)
class SubmitSettings:
    """How fast and how wide to submit."""

    rate: float = 5.0
    concurrency: int = 0  # 0: derived from rate and observed latency
    lookup_existing: bool = False


@dataclass(frozen=True)
class DefaultValues:
    """Values filled into empty cells before validation."""

    org_code: str = ""
    dzsf: str = ""
    dzs: str = ""
    klx: str = "3"
    is_real_name: str = "0"
    dzlb: str = "2"
    fksj: str = ""  # empty: the day of the run


@dataclass(frozen=True)
class LogSettings:
    """Where and how to log."""

    level: str = "INFO"
    rotation: str = "10 MB"
    retention: str = "30 days"
    json: bool = False


@dataclass(frozen=True)
class InboxSettings:
    """Nightly inbox runs: when a file is settled, and what reading one file may cost (0: no limit)."""

    settle_seconds: float = 2.0
    read_memory_mb: int = 4096
    read_timeout_seconds: float = 600.0
    all_sheets: bool = False  # every sheet that looks like a register, not only the first


@dataclass(frozen=True)
class WebSettings:
    """The web workspace (``ehc serve``)."""

    max_upload_mb: float = 50.0
    max_rows: int = 200_000  # rows of one upload: more are refused, for the command line
    session_idle_minutes: float = 30.0
    session_hours: float = 12.0
    secure_cookies: bool = False  # true behind a TLS reverse proxy
    check_workers: int = 2  # processes running dry runs of uploads
    login_attempts: int = 5  # failed logins per user name before that name pauses
    # Failed logins from one client address before it pauses: the clerks of a centre often share
    # one NAT address, so this is well above ``login_attempts`` (their typos add up here).
    login_attempts_per_address: int = 50
    lockout_minutes: float = 15.0
    read_memory_mb: int = 4096  # what reading one upload may cost (0: no limit), as in [inbox]
    read_timeout_seconds: float = 600.0
    queued_per_centre: int = 40  # uploads of one centre waiting for their dry run at once
    min_free_disk_mb: int = 1024  # uploads stop while the state folder's disk has less free


def default_state_dir(env: dict[str, str] | None = None, platform: str = sys.platform) -> Path:
    """Where state lives by the platform's convention.

    Linux and other Unixes: ``$XDG_STATE_HOME/ehc`` (``~/.local/state/ehc``);
    Windows: ``%LOCALAPPDATA%\\ehc``; macOS: ``~/Library/Application Support/ehc``.
    """
    environment = os.environ if env is None else env
    if platform not in ("win32", "cygwin", "darwin"):
        base = environment.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "ehc"
    import platformdirs

    return Path(platformdirs.user_state_dir("ehc", appauthor=False))


#: Largest value a number setting may take: beyond these a value is a typing mistake.
MAX_RATE = 1000.0
#: Most calls in flight a setting or ``--concurrency`` may ask for.
CONCURRENCY_LIMIT = 256
_UPPER_BOUNDS: dict[str, float] = {
    "rate": MAX_RATE, "concurrency": CONCURRENCY_LIMIT, "connect_timeout": 3600, "read_timeout": 3600,
    "max_attempts": 100, "max_retry_seconds": 86_400, "settle_seconds": 86_400,
    "read_memory_mb": 1 << 20, "read_timeout_seconds": 86_400, "max_rows": 10_000_000,
}  # fmt: skip
#: Smallest cap on reading one file's memory, in MB, but 0 (no cap): the reading process needs about
#: 300 MB of address space before it reads a byte (Python, pandas, its libraries' threads); below it
#: every register was refused as if it were too big, with advice to the clerk to save it again.
MIN_READ_MEMORY_MB = 512
#: Settings that must be above 0: a timeout of 0 or no attempt at all cannot send anything, and a
#: login limit of 0 would refuse every login for good.
_POSITIVE = frozenset(
    {"connect_timeout", "read_timeout", "max_attempts", "login_attempts", "login_attempts_per_address"}
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: The password of an address's ``user:password@`` (found in the text: a malformed address does not parse).
_URL_PASSWORD = re.compile(r"^(\s*[A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#]*@")


def without_password(url: str) -> str:
    """``url`` as it may be shown or kept: a password written into it (a proxy's) becomes ``***``."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


def check_base_url(url: str, *, allow_insecure_http: bool, where: str = "平台地址") -> None:
    """Refuse (ConfigError) a malformed platform address, or a clear-text one to another host unless allowed.

    Malformed: not http(s), no host, a bracket left open, a port that is not
    0-65535, spaces; such an address was an internal error or retried as a
    fault of the network.
    """
    try:
        parts = urlsplit(url.strip())
        well_formed = parts.scheme.lower() in {"http", "https"} and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        well_formed = False
    shown = without_password(url)  # refused before the password is known as a secret to mask
    if not well_formed or any(character.isspace() for character in url.strip()):
        raise ConfigError(
            f"{where} {shown!r} 不是有效网址：应形如 https://主机/jkfs-dzjkk/dzjkk/websvi/。请改正平台地址"
        )
    if parts.scheme.lower() != "http" or allow_insecure_http:
        return
    if parts.hostname and is_loopback(parts.hostname):
        return
    raise ConfigError(
        f"{where} {shown} 使用不加密的 http：只允许 https（本机测试平台 127.0.0.1 / localhost 除外）。"
        "请改用 https 地址；仅在测试网络中可设置 [platform] allow_insecure_http = true "
        "或环境变量 EHC_ALLOW_INSECURE_HTTP=1"
    )


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, after file and environment are merged."""

    platform: PlatformSettings = PlatformSettings()
    submit: SubmitSettings = SubmitSettings()
    defaults: DefaultValues = DefaultValues()
    logging: LogSettings = LogSettings()
    inbox: InboxSettings = InboxSettings()
    web: WebSettings = WebSettings()
    state_dir: Path = field(default_factory=default_state_dir)
    log_dir: Path | None = None
    #: user column aliases: clerk's header -> field code
    column_aliases: dict[str, str] = field(default_factory=dict)
    source: str = ""  # the config file read, for messages
    #: what is unsafe about the configuration without stopping a run, one Chinese sentence each
    warnings: tuple[str, ...] = ()

    def with_base_url(self, url: str) -> Settings:
        """These settings with the platform at ``url`` (``--base-url``), refused like the file's own."""
        check_base_url(url, allow_insecure_http=self.platform.allow_insecure_http, where="--base-url")
        return replace(self, platform=replace(self.platform, base_url=url))

    def with_json_log(self) -> Settings:
        """These settings logging one JSON object per line (``--log-json``), in every process they start."""
        return replace(self, logging=replace(self.logging, json=True))

    def with_debug_log(self) -> Settings:
        """These settings logging debug lines too (``--debug``), in every process they start."""
        return replace(self, logging=replace(self.logging, level="DEBUG"))

    @property
    def effective_log_dir(self) -> Path:
        """The log directory: ``log_dir`` or ``<state_dir>/logs``."""
        return self.log_dir or self.state_dir / LOG_DIR

    @property
    def journal_path(self) -> Path:
        """The submission journal shared by every run: ``<state_dir>/journal.sqlite``."""
        return self.state_dir / JOURNAL_FILE

    @property
    def lock_path(self) -> Path:
        """The run lock: ``<state_dir>/ehc.lock``."""
        return self.state_dir / LOCK_FILE

    @property
    def workkey_dir(self) -> Path:
        """Where the day's work keys are cached: ``<state_dir>/workkeys``."""
        return self.state_dir / WORKKEY_DIR

    @property
    def sandbox_path(self) -> Path:
        """The sandbox's default state file: ``<state_dir>/sandbox.sqlite``."""
        return self.state_dir / SANDBOX_FILE


_SECTIONS: dict[str, type] = {
    "platform": PlatformSettings,
    "submit": SubmitSettings,
    "defaults": DefaultValues,
    "logging": LogSettings,
    "inbox": InboxSettings,
    "web": WebSettings,
}

#: environment variable -> (section, key)
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "EHC_APP_ID": ("platform", "app_id"),
    "EHC_APP_SECRET": ("platform", "app_secret"),
    "EHC_BASE_URL": ("platform", "base_url"),
    "EHC_ORG_CODE": ("defaults", "org_code"),
    "EHC_RATE": ("submit", "rate"),
    "EHC_ALLOW_INSECURE_HTTP": ("platform", "allow_insecure_http"),
}


def _coerce(value: Any, like: Any, where: str) -> Any:
    number = _coerce_value(value, like, where)
    key = where.rsplit(" ", 1)[-1]
    upper = _UPPER_BOUNDS.get(key) or _UPPER_BOUNDS.get(_ENV_KEYS.get(key, ""))
    if (
        upper is not None
        and isinstance(number, (int, float))
        and not isinstance(number, bool)
        and number > upper
    ):
        fix = "请改正环境变量" if where.startswith("环境变量") else "请改正配置文件"
        raise ConfigError(f"配置项 {where} 不能大于 {upper:g}（实际为 {value!r}）。{fix}")
    if (key in _POSITIVE or _ENV_KEYS.get(key, "") in _POSITIVE) and number <= 0:
        fix = "请改正环境变量" if where.startswith("环境变量") else "请改正配置文件"
        raise ConfigError(f"配置项 {where} 应大于 0（实际为 {value!r}）。{fix}")
    if key == "read_memory_mb" and 0 < number < MIN_READ_MEMORY_MB:
        fix = "请改正环境变量" if where.startswith("环境变量") else "请改正配置文件"
        raise ConfigError(
            f"配置项 {where} 为 {value!r}，太低：读取程序本身就要约 300 MB，每个文件都会因内存不足被拒绝。"
            f"应不小于 {MIN_READ_MEMORY_MB}（MB），或为 0（不设上限）。{fix}"
        )
    return number


def _coerce_value(value: Any, like: Any, where: str) -> Any:
    fix = "请改正环境变量" if where.startswith("环境变量") else "请改正配置文件"
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "0", "false", "no"}:
            return value.strip().lower() in {"1", "true", "yes"}
        raise ConfigError(f"配置项 {where} 应为 true 或 false，实际为 {value!r}。{fix}")
    if isinstance(like, (int, float)) and not isinstance(like, bool):
        if isinstance(value, bool):  # TOML's true is no number (float(True) would be 1)
            raise ConfigError(f"配置项 {where} 应为数字，实际为 {str(value).lower()}。{fix}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"配置项 {where} 应为数字，实际为 {value!r}。{fix}") from None
        if not math.isfinite(number) or number < 0:
            raise ConfigError(f"配置项 {where} 应为不小于 0 的有限数字（{value!r}）。{fix}")
        return int(number) if isinstance(like, int) else number
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value).strip()
    # Never echo what was meant as the secret, however it was mistyped.
    shown = "（值不显示）" if where.endswith(("app_secret", "EHC_APP_SECRET")) else repr(value)
    raise ConfigError(f"配置项 {where} 应为文字（加引号），实际为 {shown}。{fix}")


_ENV_KEYS = {variable: key for variable, (_, key) in ENV_OVERRIDES.items()}


def _section(cls: type, values: dict[str, Any], name: str, from_env: dict[str, str]) -> Any:
    instance = cls()
    known = {f.name for f in fields(cls)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"配置文件中 [{name}] 下有未知的配置项 {key}。可用的有：{', '.join(sorted(known))}"
            )
        where = f"环境变量 {from_env[key]}" if key in from_env else f"[{name}] {key}"
        changes[key] = _coerce(value, getattr(instance, key), where)
    if name == "logging":
        changes["level"] = _log_level(changes.get("level", instance.level))
    return replace(instance, **changes)


_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(
            f"配置项 [logging] level 应为 {'、'.join(_LOG_LEVELS)} 之一，实际为 {value!r}。请改正配置文件"
        )
    return level


def _path(value: Any, where: str) -> Path | None:
    # Blank means unset, as for every other variable; a path is stripped like every text value.
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"配置项 {where} 应为文字（目录路径，加引号），实际为 {value!r}。请改正配置文件")
    return Path(os.path.expanduser(value.strip()))


def _exposed_secret(source: str, document: dict[str, Any]) -> str:
    """A warning if the configuration file holds the app secret and every local user may read it, else "".

    The secret signs for the whole district: a file of the usual mode 0644
    hands it to anyone with a shell on the server (the environment's
    ``EHC_APP_SECRET`` overriding it hides nothing).  Windows has no such
    mode bits to look at.
    """
    platform = document.get("platform", {})
    if not source or os.name != "posix" or not str(platform.get("app_secret", "")).strip():
        return ""
    try:
        mode = os.stat(source).st_mode
    except OSError:
        return ""
    if not mode & 0o004:
        return ""
    return (
        f"配置文件 {source} 中写有应用密钥，且本机所有用户都能读取（权限 {mode & 0o777:04o}）："
        "请把密钥移到环境变量 EHC_APP_SECRET（见 docs/operations.md）并从文件中删去，"
        f"或执行 chmod 600 {source}"
    )


def _relative_state_dir(state_dir: Path) -> str:
    """A warning if the state folder is a relative path, else "".

    Each run would look for it under the folder it was started in (cron's,
    systemd's, the operator's own): another folder, another journal, and the
    residents enrolled from the first would be sent again.
    """
    if state_dir.is_absolute():
        return ""
    return (
        f"状态目录 {state_dir} 是相对路径，随运行时的当前目录而变（现为 {state_dir.absolute()}）："
        "在别的目录运行会用另一份提交记录，已办理的居民会被再次发送。"
        "请在 [paths] state_dir 或环境变量 EHC_STATE_DIR 中写绝对路径"
    )


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read the TOML file at ``path`` (if any), apply ``env`` overrides, return Settings.

    Raises :class:`ConfigError` with a Chinese one-line message on any problem.
    """
    env = dict(os.environ if env is None else env)
    document: dict[str, Any] = {}
    source = ""
    if path is not None:
        source = str(path)
        document = read_toml(path, "配置文件")

    sections: dict[str, Any] = {}
    for name in _SECTIONS:
        raw = document.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"配置文件中 [{name}] 应为一个表（section）。请改正配置文件")
        sections[name] = dict(raw)
    from_env: dict[str, dict[str, str]] = {name: {} for name in _SECTIONS}
    for variable, (section, key) in ENV_OVERRIDES.items():
        if env.get(variable, "").strip():
            sections[section][key] = env[variable]
            from_env[section][key] = variable

    built = {name: _section(cls, sections[name], name, from_env[name]) for name, cls in _SECTIONS.items()}

    paths = document.get("paths", {})
    if not isinstance(paths, dict):
        raise ConfigError("配置文件中 [paths] 应为一个表（section）。请改正配置文件")
    unknown_paths = set(paths) - {"state_dir", "log_dir"}
    if unknown_paths:
        raise ConfigError(
            f"配置文件中 [paths] 下有未知的配置项 {', '.join(sorted(unknown_paths))}。"
            "可用的有：log_dir, state_dir"
        )
    state_dir = (
        _path(env.get("EHC_STATE_DIR"), "环境变量 EHC_STATE_DIR")
        or _path(paths.get("state_dir"), "[paths] state_dir")
        or default_state_dir(env)
    )
    log_dir = _path(env.get("EHC_LOG_DIR"), "环境变量 EHC_LOG_DIR") or _path(
        paths.get("log_dir"), "[paths] log_dir"
    )

    aliases = document.get("columns", {})
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise ConfigError('配置文件中 [columns] 应为 "表头" = "字段代码" 的形式。请改正配置文件')

    unknown = set(document) - set(_SECTIONS) - {"paths", "columns"}
    if unknown:
        raise ConfigError(
            f"配置文件中有未知的部分 [{', '.join(sorted(unknown))}]。"
            f"可用的有：{', '.join(sorted([*_SECTIONS, 'paths', 'columns']))}"
        )

    check_base_url(
        built["platform"].base_url,
        allow_insecure_http=built["platform"].allow_insecure_http,
        where="环境变量 EHC_BASE_URL" if "base_url" in from_env["platform"] else "[platform] base_url",
    )
    return Settings(
        state_dir=state_dir,
        log_dir=log_dir,
        column_aliases={str(k).strip(): v.strip() for k, v in aliases.items()},
        source=source,
        warnings=tuple(filter(None, [_exposed_secret(source, document), _relative_state_dir(state_dir)])),
        **built,
    )
