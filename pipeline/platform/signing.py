"""The platform's request signs: upper-case MD5 hex of fields joined with ``|``.

One rule per call, exactly as the interface document gives them::

    getWorkKey    md5(appId|appSecret|timestamp)
    syncCardInfo  md5(appId|workKey|timestamp|type)
    bindCardInfo  md5(appId|workKey|timestamp|zjlx|zjhm)
    getImg        md5(appId|workKey|timestamp|ehealthCardId)   when ehealthCardId is sent
                  md5(appId|workKey|timestamp|virtualCardNum)  when only virtualCardNum is sent

The client signs with these and the sandbox verifies with the same functions,
so the document's own check vector (``tests/test_signing.py``) guards both.
A sign covers the strings exactly as they are sent: callers strip values
before signing, never after.
"""

from __future__ import annotations

import hashlib
import time


def md5_sign(*parts: str) -> str:
    """Upper-case MD5 hex of ``parts`` joined with ``|`` (UTF-8)."""
    return hashlib.md5("|".join(parts).encode("utf-8")).hexdigest().upper()


def timestamp_ms(now: float | None = None) -> str:
    """Milliseconds since the epoch as a string, the ``timestamp`` of every request."""
    return str(int((time.time() if now is None else now) * 1000))


def work_key_sign(app_id: str, app_secret: str, timestamp: str) -> str:
    """Sign of ``getWorkKey``: ``md5(appId|appSecret|timestamp)``."""
    return md5_sign(app_id, app_secret, timestamp)


def sync_card_sign(app_id: str, work_key: str, timestamp: str, qr_type: str) -> str:
    """Sign of ``syncCardInfo``: ``md5(appId|workKey|timestamp|type)``."""
    return md5_sign(app_id, work_key, timestamp, qr_type)


def bind_card_sign(app_id: str, work_key: str, timestamp: str, zjlx: str, zjhm: str) -> str:
    """Sign of ``bindCardInfo``: ``md5(appId|workKey|timestamp|zjlx|zjhm)``."""
    return md5_sign(app_id, work_key, timestamp, zjlx, zjhm)


def img_sign(app_id: str, work_key: str, timestamp: str, ehealth_card_id: str, virtual_card_num: str) -> str:
    """Sign of ``getImg``: over ``ehealthCardId`` when it is sent, else over ``virtualCardNum``."""
    return md5_sign(app_id, work_key, timestamp, ehealth_card_id or virtual_card_num)
