"""The platform's sign rules, including the interface document's own check vector."""

from __future__ import annotations

import hashlib
import time

from pipeline.platform.signing import (
    bind_card_sign,
    img_sign,
    md5_sign,
    sync_card_sign,
    timestamp_ms,
    work_key_sign,
)

APP_ID = "39bf0ca6e9b340659852808173fdf705"
WORK_KEY = "C328F4AAD4E81346EB260E9E3C7A70D2"
TIMESTAMP = "1520921936155"


def _upper_md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest().upper()


def test_check_vector_from_the_document() -> None:
    assert md5_sign(APP_ID, WORK_KEY, TIMESTAMP, "1") == "64FB6C3D2C5DD329533895FA694ABC75"
    assert sync_card_sign(APP_ID, WORK_KEY, TIMESTAMP, "1") == "64FB6C3D2C5DD329533895FA694ABC75"


def test_sync_sign_covers_the_type_string_sent() -> None:
    assert sync_card_sign(APP_ID, WORK_KEY, TIMESTAMP, "0") != sync_card_sign(
        APP_ID, WORK_KEY, TIMESTAMP, "1"
    )
    assert sync_card_sign(APP_ID, WORK_KEY, TIMESTAMP, "0") == _upper_md5(
        f"{APP_ID}|{WORK_KEY}|{TIMESTAMP}|0"
    )


def test_work_key_sign_uses_the_secret() -> None:
    assert work_key_sign(APP_ID, "SECRET", TIMESTAMP) == _upper_md5(f"{APP_ID}|SECRET|{TIMESTAMP}")


def test_bind_sign_covers_document_type_and_number() -> None:
    expected = _upper_md5(f"{APP_ID}|{WORK_KEY}|{TIMESTAMP}|01|420123196205184516")
    assert bind_card_sign(APP_ID, WORK_KEY, TIMESTAMP, "01", "420123196205184516") == expected


def test_img_sign_prefers_the_card_id_over_the_virtual_number() -> None:
    card_id, number = "A881C185" * 8, "13499170350361045507"
    by_id = _upper_md5(f"{APP_ID}|{WORK_KEY}|{TIMESTAMP}|{card_id}")
    by_number = _upper_md5(f"{APP_ID}|{WORK_KEY}|{TIMESTAMP}|{number}")
    assert img_sign(APP_ID, WORK_KEY, TIMESTAMP, card_id, number) == by_id
    assert img_sign(APP_ID, WORK_KEY, TIMESTAMP, card_id, "") == by_id
    assert img_sign(APP_ID, WORK_KEY, TIMESTAMP, "", number) == by_number


def test_signs_are_upper_case_hex_of_utf8() -> None:
    sign = md5_sign("应用", "密钥", "1")
    assert sign == _upper_md5("应用|密钥|1")
    assert len(sign) == 32 and sign == sign.upper()


def test_timestamp_is_milliseconds_as_text() -> None:
    assert timestamp_ms(1520921936.155) == "1520921936155"
    now = timestamp_ms()
    assert now.isdigit() and abs(int(now) - time.time() * 1000) < 60_000
