"""The platform's behaviour behind the sandbox's HTTP front: envelope, signs, the four calls.

Checks run in the platform's order: the app id (10101), the envelope's
required keys and the timestamp window (10110), the sign (getWorkKey: 10103
for a wrong secret; other calls: 10105, which also covers an expired or
replaced work key), then the call's own fields (syncCardInfo: 10149 for a
``peopleInfo`` or ``cardInfo`` absent, null or all blank, then
:mod:`pipeline.sandbox.checks`),
then the state (10115 ID enrolled already, 10116 card number used, 10108 no
card, 10109 no such card).  A new ``getWorkKey`` invalidates the app's previous
key, as the real platform may.  Answers reproduce the quirks of the document's
examples (``" virtualCardNum "`` with spaces, ``getImg`` unwrapped with
``qRCode``) unless ``quirks=False``.  Fields are text, as the document's
tables declare them; the one number its examples send, syncCardInfo's
``"type": 1``, is taken too (signed over ``1``, its check vector).
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import segno

from pipeline.platform.signing import bind_card_sign, img_sign, md5_sign, sync_card_sign, work_key_sign
from pipeline.sandbox import checks
from pipeline.sandbox.store import Card, SandboxStore
from pipeline.text.idnumber import is_valid_id_number
from schemas.result_codes import ResultCode, describe
from schemas.rules import FIELD_TABLES, rule_for
from schemas.tables import code_table

METHODS: tuple[str, ...] = ("getWorkKey", "syncCardInfo", "bindCardInfo", "getImg")
#: A request's timestamp may differ from the sandbox's clock by this much.
TIMESTAMP_WINDOW_SECONDS = 600.0
#: A timestamp as the document gives it: milliseconds, thirteen ASCII digits (``1426817510111``).
_TIMESTAMP = re.compile(r"[0-9]{13}")

#: The QR code types the document writes: ``0`` (dynamic QR code, every table's only value) and
#: ``1`` (its syncCardInfo example and check vector).  Any other is a parameter error.
QR_TYPES = frozenset({"0", "1"})

_APP_KEYS = ("termId", "version", "appVersion", "appPackageName", "digestType", "encType")


class _Refused(Exception):
    """A request refused with a platform result code."""

    def __init__(self, code: ResultCode) -> None:
        super().__init__(code)
        self.code = code


def _raw(value: object) -> str | None:
    """A scalar JSON value exactly as sent (what the client signed)."""
    # Every field is declared String: a number is a parameter error (10110), as the document's tables say.
    return value if isinstance(value, str) else None


def _optional(value: object) -> str | None:
    """A 选填 String as sent, ``""`` when absent or null, None when it is no text (a number is not
    "not sent": it is a parameter error)."""
    return "" if value is None else _raw(value)


def _qr_type(value: object, *, number: bool = False) -> str | None:
    """The QR code ``type`` as sent, or None when it is no text.

    ``number``: also a whole number, as the interface document's syncCardInfo
    example sends it (``"type": 1``, signed over ``1``: its check vector); the
    bindCardInfo and getImg examples send text, as every table declares it.
    """
    if number and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _raw(value)


@dataclass(frozen=True, slots=True)
class _Request:
    """A request that passed the envelope checks: its app, ``data`` object, timestamp and sign."""

    app_id: str
    data: dict[str, Any]
    timestamp: str
    sign: str
    now: float


class PlatformLogic:
    """Answers one parsed request the way the platform would; thread-safe (the store serialises)."""

    def __init__(self, store: SandboxStore, *, workkey_ttl: float = 86400.0, quirks: bool = True) -> None:
        self.store = store
        self.workkey_ttl = workkey_ttl
        self.quirks = quirks
        self._today = (0.0, date.today())
        self._methods: dict[str, Callable[[_Request], tuple[int, dict[str, str]]]] = {
            "getWorkKey": self._get_work_key,
            "syncCardInfo": self._sync_card_info,
            "bindCardInfo": self._bind_card_info,
            "getImg": self._get_img,
        }

    def handle(self, method: str, document: object, now: float) -> tuple[int, bytes]:
        """The result code and the answer body for a request to ``method`` (``document``: parsed JSON)."""
        try:
            if not isinstance(document, dict):
                raise _Refused(ResultCode.PARAMETER_ERROR)
            code, fields = self._process(method, document, now)
        except _Refused as refused:
            code, fields = refused.code, {}
        return code, self.answer(method, code, fields)

    def answer(self, method: str, code: int, fields: Mapping[str, str]) -> bytes:
        """An answer body with ``code``, its message and ``fields``."""
        data: dict[str, Any] = {"resultCode": code, "message": describe(code), **fields}
        if self.quirks and "virtualCardNum" in data:
            data[" virtualCardNum "] = " " + data.pop("virtualCardNum")
        if self.quirks and method == "getImg":
            if "qrCode" in data:
                data["qRCode"] = data.pop("qrCode")
            return json.dumps(data, ensure_ascii=False).encode()
        return json.dumps({"data": data}, ensure_ascii=False).encode()

    def _today_date(self, now: float) -> date:
        checked, today = self._today
        if now - checked > 60:
            today = date.fromtimestamp(now)
            self._today = (now, today)
        return today

    def _process(self, method: str, document: dict[str, Any], now: float) -> tuple[int, dict[str, str]]:
        app_id = _raw(document.get("appId"))
        app = document.get("app")
        data = document.get("data")
        if app_id is None or not isinstance(app, dict) or not isinstance(data, dict):
            raise _Refused(ResultCode.PARAMETER_ERROR)
        if self.store.app_secret(app_id) is None:
            raise _Refused(ResultCode.INVALID_ORG_CODE)
        if any(_raw(app.get(key)) is None for key in _APP_KEYS):  # each 必填 and declared String
            raise _Refused(ResultCode.PARAMETER_ERROR)
        timestamp, sign = _raw(data.get("timestamp")), _raw(data.get("sign"))
        # str.isdigit would take "²" (which int() refuses) and a thousand digits (which float() refuses).
        if timestamp is None or not sign or not _TIMESTAMP.fullmatch(timestamp):
            raise _Refused(ResultCode.PARAMETER_ERROR)
        if abs(int(timestamp) / 1000.0 - now) > TIMESTAMP_WINDOW_SECONDS:
            raise _Refused(ResultCode.PARAMETER_ERROR)
        return self._methods[method](_Request(app_id, data, timestamp, sign, now))

    def _work_key(self, app_id: str, now: float) -> str:
        current = self.store.work_key(app_id)
        if current is None or now - current[1] > self.workkey_ttl:
            raise _Refused(ResultCode.INVALID_WORK_KEY)
        return current[0]

    def _get_work_key(self, request: _Request) -> tuple[int, dict[str, str]]:
        secret = self.store.app_secret(request.app_id) or ""
        if request.sign != work_key_sign(request.app_id, secret, request.timestamp):
            return ResultCode.INVALID_PASSWORD, {}
        return ResultCode.SUCCESS, {"workKey": self.store.issue_work_key(request.app_id, request.now)}

    def _sync_card_info(self, request: _Request) -> tuple[int, dict[str, str]]:
        data = request.data
        qr_type = _qr_type(data.get("type"), number=True)
        if qr_type is None:
            raise _Refused(ResultCode.PARAMETER_ERROR)
        key = self._work_key(request.app_id, request.now)
        if request.sign != sync_card_sign(request.app_id, key, request.timestamp, qr_type):
            raise _Refused(ResultCode.INVALID_WORK_KEY)
        if qr_type.strip() not in QR_TYPES:
            raise _Refused(ResultCode.PARAMETER_ERROR)
        people_info, card_info = data.get("peopleInfo"), data.get("cardInfo")
        if checks.is_empty_object(people_info) or checks.is_empty_object(card_info):
            return ResultCode.EMPTY_OBJECT, {}
        people = checks.as_text_fields(people_info, checks.REQUIRED_PEOPLE)
        card = checks.as_text_fields(card_info, checks.REQUIRED_CARD)
        if people is None or card is None:
            raise _Refused(ResultCode.PARAMETER_ERROR)
        today = self._today_date(request.now)
        code = checks.check_people(people, today) or checks.check_card(card, today)
        if code is not None:
            return code, {}
        code, enrolled = self.store.enrol(request.app_id, people, card, request.now)
        if code != ResultCode.SUCCESS:
            return code, {}
        return code, _card_fields(enrolled)

    def _bind_card_info(self, request: _Request) -> tuple[int, dict[str, str]]:
        names = ("zjlx", "zjhm", "xm", "brdh", "bindType", "bindZjlx", "bindZjhm")
        raw = {name: _raw(request.data.get(name)) for name in names}
        raw["type"] = _qr_type(request.data.get("type"))
        if any(value is None for value in raw.values()):
            raise _Refused(ResultCode.PARAMETER_ERROR)
        key = self._work_key(request.app_id, request.now)
        expected = bind_card_sign(
            request.app_id, key, request.timestamp, raw["zjlx"] or "", raw["zjhm"] or ""
        )
        if request.sign != expected:
            raise _Refused(ResultCode.INVALID_WORK_KEY)
        fields = {name: (value or "").strip() for name, value in raw.items()}
        if fields["type"] not in QR_TYPES:
            return ResultCode.PARAMETER_ERROR, {}
        if fields["zjlx"] not in code_table(FIELD_TABLES["zjlx"]):
            return rule_for("zjlx").code, {}
        if not fields["xm"]:  # 必填 in the interface document, as for syncCardInfo
            return ResultCode.NAME_EMPTY, {}
        if not fields["zjhm"] or not fields["brdh"] or fields["bindType"] not in ("1", "2"):
            return ResultCode.PARAMETER_ERROR, {}
        if fields["bindType"] == "2" and not (fields["bindZjlx"] and fields["bindZjhm"]):
            return ResultCode.PARAMETER_ERROR, {}
        today = self._today_date(request.now)
        code = _document_failure(fields["zjlx"], fields["zjhm"], today)
        code = code or _document_failure(fields["bindZjlx"], fields["bindZjhm"], today)
        if code is not None:
            return code, {}
        card = self.store.find_by_document(fields["zjlx"], fields["zjhm"])
        if card is None:
            return ResultCode.NO_CARD_FOR_ID, {}
        if fields["xm"] != card.xm or fields["brdh"] != card.brdh:
            return ResultCode.BINDING_MISMATCH, {}
        self.store.record_binding(
            request.app_id, card.ehealth_card_id, fields["bindType"], fields["bindZjlx"], fields["bindZjhm"],
            request.now,
        )  # fmt: skip
        return ResultCode.SUCCESS, _card_fields(card)

    def _get_img(self, request: _Request) -> tuple[int, dict[str, str]]:
        data = request.data
        qr_type = _qr_type(data.get("type"))
        card_id, card_num = _optional(data.get("ehealthCardId")), _optional(data.get("virtualCardNum"))
        if qr_type is None or card_id is None or card_num is None:
            raise _Refused(ResultCode.PARAMETER_ERROR)
        key = self._work_key(request.app_id, request.now)
        if request.sign != img_sign(request.app_id, key, request.timestamp, card_id, card_num):
            raise _Refused(ResultCode.INVALID_WORK_KEY)
        if qr_type.strip() not in QR_TYPES or (not card_id.strip() and not card_num.strip()):
            return ResultCode.PARAMETER_ERROR, {}
        card = self.store.find_card(card_id.strip(), card_num.strip())
        if card is None:
            return ResultCode.NO_SUCH_CARD, {}
        content = (
            f"{card.ehealth_card_id}:{qr_type.strip()}:{md5_sign(card.ehealth_card_id, request.timestamp)}"
        )
        return ResultCode.SUCCESS, {"qrCode": content, "img": qr_png_base64(content)}


def _document_failure(zjlx: str, zjhm: str, today: date) -> ResultCode | None:
    """The code a document (type CV02.01.101, number) fails, as syncCardInfo checks ``zjlx`` and an ID
    number: 10134 for a type outside the table, 10111 for a resident ID (01) whose number is not one.
    An empty type passes: ``bindZjlx`` may be empty when one binds oneself."""
    if not zjlx:
        return None
    if zjlx not in code_table(FIELD_TABLES["zjlx"]):
        return rule_for("zjlx").code
    if zjlx == "01" and zjhm and not is_valid_id_number(zjhm, today):
        return rule_for("sfzhm").code
    return None


def _card_fields(card: Card) -> dict[str, str]:
    return {"ehealthCardId": card.ehealth_card_id, "virtualCardNum": card.virtual_card_num}


def qr_png_base64(content: str) -> str:
    """A QR code PNG encoding ``content``, in base64."""
    buffer = io.BytesIO()
    segno.make(content, error="m").save(buffer, kind="png", scale=4, border=2)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
