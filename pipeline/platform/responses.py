"""Reading the platform's answers tolerantly, and the per-call outcome value.

The interface document's own examples disagree with its tables (notes 2-4 of
``platform-api.md``), so an answer is read this way:

* ``resultCode`` may be a number or a string, and 4-digit codes (1010, 1040)
  exist beside the 5-digit ones;
* keys are matched after stripping spaces and ignoring case
  (``" virtualCardNum "``, ``qRCode``, ``QrCode`` all count), values are stripped;
* the fields may sit inside ``{"data": {...}}`` or at the top level.

Each HTTP attempt becomes an :class:`Answer` (with whether it is worth
retrying); a whole call, retries included, becomes a :class:`CallResult`.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.logs import without_secrets
from schemas.result_codes import ResultCode, describe

#: Codes the platform gives for a transient fault of its own: retried.
TRANSIENT_CODES = frozenset({ResultCode.NETWORK_ERROR})

#: Canonical spelling of every response field we read, by its folded form.
_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in ("resultCode", "message", "ehealthCardId", "virtualCardNum", "qrCode", "img", "workKey")
}


@dataclass(frozen=True)
class CallResult:
    """The outcome of one platform call, retries included; never an exception.

    ``result_code`` is ``None`` when no usable answer came back after the
    retries (network fault, malformed answer); ``message`` is then a Chinese
    description of the last error, else the platform's own message (or the
    code's description when the platform gave none).  ``attempts`` counts the
    requests actually sent, a work-key refresh's retry included; 0 means none
    was (the client was interrupted first).  ``uncertain`` says that an
    attempt before the last one may have reached the platform and been acted
    upon although its answer never came back (dropped connection, timeout,
    HTTP 5xx, garbled answer): a later "already enrolled" (10115) may then be
    the platform's memory of that very attempt.  ``unanswered`` says the same
    of any attempt, the last included: without a verdict, whether the
    platform acted on the call is unknown.
    """

    result_code: int | None
    message: str
    data: dict[str, str]
    attempts: int
    uncertain: bool = False
    unanswered: bool = False

    @property
    def ok(self) -> bool:
        """Whether the platform answered 10000 (操作成功)."""
        return self.result_code == ResultCode.SUCCESS


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one HTTP attempt."""

    result_code: int | None
    message: str
    data: dict[str, str]
    transient: bool
    retry_after: float | None = None
    #: the request may have reached the platform and been acted upon, though no usable answer came back
    arrived: bool = False
    #: HTTP 429: the platform turned the request away unread, asking us to slow down
    throttled: bool = False

    @property
    def silent(self) -> bool:
        """Worth retrying and nothing usable heard from the platform (not even "slow down")."""
        return self.transient and self.result_code is None and not self.throttled


def logged_reason(result_code: int | None, message: str) -> str:
    """Why a call did not succeed, as the log may say it: a code's own words, never the platform's text.

    A platform's message may quote the resident (name, address, an ID number
    run into letters); the reports carry it, the log does not.  Without a
    code the message is the client's own description of the fault.
    """
    if result_code is None:
        return message.strip() or "平台无应答"
    return describe(result_code)


#: Most characters of the platform's own message kept: the reports quote it in a cell and on one line.
MAX_MESSAGE_CHARS = 200
_CHINESE = re.compile(r"[\u4e00-\u9fff]")


def platform_message(code: int, text: str) -> str:
    """The platform's ``message`` as the reports may quote it: one line, at most
    :data:`MAX_MESSAGE_CHARS` characters, secrets removed, and in Chinese — a
    message without a Chinese word (``java.lang.NullPointerException``) follows
    the code's own description.  An empty one is the code's description.
    """
    text = " ".join(without_secrets(text).split())  # line breaks and tabs too
    text = "".join(ch for ch in text if ch.isprintable())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    if not text:
        return describe(code)
    if not _CHINESE.search(text):
        return f"{describe(code)}（平台原文：{text}）"
    return text


def fold_key(key: str) -> str:
    """A response key in canonical spelling: spaces stripped, case folded onto the spec's names."""
    stripped = key.strip()
    return _CANONICAL.get(stripped.lower(), stripped)


def parse_result_code(value: Any) -> int | None:
    """``resultCode`` as an int, whether sent as number or string; ``None`` if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return int(text)
    return None


#: What a card id, a virtual card number or a QR code's text may look like (the spec's examples: 64 hex
#: characters, 20 digits, ``<ehealthCardId>:0:<32 hex>``).  Anything else (a formula, a 100 kB text) is
#: not kept: reports, the journal and ``qrcodes.csv`` write these as they are.
_CARD_TEXT = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.:-]{0,255}")
_CARD_FIELDS = ("ehealthCardId", "virtualCardNum", "qrCode")


class _Ambiguous(ValueError):
    """An answer naming one of the fields we read twice (``"resultCode": 10000, "resultCode": 10111``)."""


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict; raises :class:`_Ambiguous` if a field we read comes twice."""
    seen: set[str] = set()
    for key, _ in pairs:
        folded = fold_key(str(key))
        if folded in _CANONICAL.values() or folded == "data":
            if folded in seen:
                raise _Ambiguous(folded)
            seen.add(folded)
    return dict(pairs)


def _fields(document: Mapping[str, Any]) -> dict[str, Any]:
    folded = {fold_key(str(k)): v for k, v in document.items()}
    wrapped = folded.get("data")
    if isinstance(wrapped, Mapping):
        inner = {fold_key(str(k)): v for k, v in wrapped.items()}
        if "resultCode" in inner or "resultCode" not in folded:
            return inner
    return folded


def _document(content: bytes) -> Any:
    """The JSON document of an answer: UTF-8 (or UTF-16/32) as the interface document says, else GB18030.

    A platform on a Chinese system may answer in GBK whatever the document
    says (its header then says ``charset=GBK``, or nothing): read as UTF-8,
    every answer with a Chinese message would count as garbled, and every
    enrolment's card ids would be lost.  The codes are ASCII in either.
    """
    try:
        return json.loads(content, object_pairs_hook=_unique_fields)
    except UnicodeDecodeError:
        return json.loads(content.decode("gb18030"), object_pairs_hook=_unique_fields)


def parse_body(content: bytes) -> tuple[int, str, dict[str, str]] | None:
    """``(resultCode, message, other fields)`` from an answer body, or ``None`` if it is malformed."""
    try:
        document = _document(content)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nesting deeper than Python's stack
        return None  # _Ambiguous too: which of two result codes is the verdict cannot be told
    if not isinstance(document, Mapping):
        return None
    fields = _fields(document)
    code = parse_result_code(fields.pop("resultCode", None))
    if code is None:
        return None
    message = fields.pop("message", "")
    message = platform_message(code, message if isinstance(message, str) else "")
    data = {
        key: ("" if value is None else str(value).strip())
        for key, value in fields.items()
        if value is None or isinstance(value, (str, int, float))
    }
    for key in _CARD_FIELDS:
        if data.get(key) and not _CARD_TEXT.fullmatch(data[key]):
            data[key] = ""  # as if not given: an enrolment without card ids is looked up or reported so
    return code, message, data


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date)."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def answer_from_http(status: int, content: bytes, retry_after_header: str | None) -> Answer:
    """Classify one HTTP answer: final or worth retrying, with what it said."""
    if status == 429:
        retry_after = parse_retry_after(retry_after_header)
        return Answer(None, "平台请求过于频繁（HTTP 429）", {}, True, retry_after, throttled=True)
    if status >= 500:
        return Answer(None, f"平台服务器错误（HTTP {status}）", {}, True, arrived=True)
    if not 200 <= status < 300:
        # Whatever its body says, a redirect or a refusal of the request is no verdict on the resident
        # (a proxy's or a login page's "success"); whether the platform acted on it is unknown.
        return Answer(None, f"平台返回 HTTP {status}，请检查平台地址（base_url）", {}, False, arrived=True)
    parsed = parse_body(content)
    if parsed is None:
        garbled = "平台应答格式错误（不是有效的 JSON 或缺少 resultCode）"
        return Answer(None, garbled, {}, True, arrived=True)
    code, message, data = parsed
    transient = code in TRANSIENT_CODES
    return Answer(code, message, data, transient, arrived=transient)
