"""Logging through loguru, with personal data masked in every line.

ID numbers and phone numbers are masked wherever they appear in a message
(``420123********4516``, ``139****3273``); registered secrets (app secret,
work key) are replaced by ``***``.  Masking is a loguru *patcher*, so it
applies to every sink: stderr, the rotating file and JSON output.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from loguru import logger

from pipeline.files import explain_os_error

_ID18 = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[0-9Xx])(?![0-9A-Za-z])")
_ID15 = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{6}(\d{3})(?![0-9A-Za-z])")
_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")
_LANDLINE = re.compile(r"(?<!\d)(0\d{2,3})-?\d{3,4}(\d{4})(?!\d)")

_secrets: set[str] = set()


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


def mask_text(text: str) -> str:
    """Mask every ID number, phone number and registered secret in ``text``."""
    for secret in _secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    text = _ID18.sub(lambda m: m.group(1) + "********" + m.group(2)[-4:], text)
    text = _ID15.sub(lambda m: m.group(1) + "******" + m.group(2), text)
    text = _MOBILE.sub(lambda m: m.group(1) + "****" + m.group(2), text)
    text = _LANDLINE.sub(lambda m: m.group(1) + "****" + m.group(2), text)
    return text


def register_secret(value: str) -> None:
    """Never let ``value`` (an app secret or work key) reach a log line."""
    if value and len(value) >= 4:
        _secrets.add(value)


def _patch(record: Any) -> None:
    record["message"] = mask_text(record["message"])
    if record["exception"] is not None:
        record["extra"]["masked"] = True


def setup_logging(
    *,
    level: str = "INFO",
    log_dir: Path | None = None,
    rotation: str = "10 MB",
    retention: str = "30 days",
    json: bool = False,
    debug: bool = False,
) -> None:
    """Send masked log lines to stderr and, if ``log_dir`` is given, a rotating file.

    ``json`` makes both sinks emit one JSON object per line for collectors.
    Unwritable log directories are ignored with a warning on stderr: a run
    must not fail because its log cannot be kept.
    """
    logger.remove()
    logger.configure(patcher=_patch)
    stderr_level = "DEBUG" if debug else level
    human = "<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> {message}"
    logger.add(sys.stderr, level=stderr_level, format=human, serialize=json, backtrace=debug, diagnose=False)
    if log_dir is not None:
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            logger.add(
                log_dir / "ehc.log",
                level="DEBUG" if debug else level,
                rotation=rotation,
                retention=retention,
                serialize=json,
                encoding="utf-8",
                backtrace=False,
                diagnose=False,
                enqueue=False,
            )
        except (OSError, ValueError) as error:
            reason = explain_os_error(error)[0] if isinstance(error, OSError) else str(error)
            logger.warning("日志目录 {} 不可写，日志只输出到屏幕（{}）", log_dir, reason)
