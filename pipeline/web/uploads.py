"""What may be uploaded: size, extension and content checked before a register is stored.

A request body larger than the limit is refused before it is read (by its
Content-Length) or as soon as it grows past the limit (a body without
one).  Each file must have an extension the reader takes (xlsx, xlsm, xls,
csv, txt, tsv) and content that matches it: a workbook container (zip or
OLE2, as the reader takes either under any workbook name, or a web page, as
a web system's "导出Excel" is) for xlsx, xlsm and xls, text for the others
(without NUL bytes unless it is UTF-16).
Files are stored in
the job's folder under a sanitised name; the reader then checks everything
else (encodings, sheets, header rows) as ``ehc validate`` does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pipeline.reading.delimited import WORKBOOK_SIGNATURES, utf16_codec
from pipeline.reading.html import looks_like_html
from pipeline.web.shown import file_name

#: Extensions taken, and the first bytes their content must start with (None: text).  A workbook's
#: container is taken under any workbook extension, as the reader takes it: an xls exported under
#: an .xlsx name is read, a protected xlsx is said to be protected.
MAGIC: dict[str, tuple[bytes, ...] | None] = {
    ".xlsx": WORKBOOK_SIGNATURES,
    ".xlsm": WORKBOOK_SIGNATURES,
    ".xls": WORKBOOK_SIGNATURES,
    ".csv": None,
    ".txt": None,  # Excel's and WPS's "Unicode text" (UTF-16, tab-delimited)
    ".tsv": None,
}
#: Bytes of a file looked at to tell its kind.
HEAD_BYTES = 65536
#: Files in one upload.
MAX_FILES = 20
#: Room for the multipart framing and the form's other fields beyond the files themselves.
FORM_OVERHEAD = 64 * 1024

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class UploadRefused(Exception):
    """A file that is not taken; ``str()`` is the Chinese reason, ``status`` the HTTP status (413, 415)."""

    def __init__(self, message: str, status: int = 415) -> None:
        super().__init__(message)
        self.status = status


class BodyTooLarge(Exception):
    """The request body grew past the limit."""


def limit_text(limit_bytes: int) -> str:
    """The limit as a clerk reads it: ``50 MB``."""
    megabytes = limit_bytes / (1024 * 1024)
    return f"{megabytes:g} MB" if megabytes >= 1 else f"{limit_bytes // 1024} KB"


def check_file(name: str, head: bytes) -> str:
    """The lower-case extension of an acceptable file, from its name and first bytes.

    Raises :class:`UploadRefused` naming the file and what to do.
    """
    shown = file_name(name) or "（无文件名）"
    suffix = "." + shown.rsplit(".", 1)[-1].lower() if "." in shown else ""
    if suffix not in MAGIC:
        raise UploadRefused(f"{shown}：不支持的文件类型，请上传 .xlsx、.xls、.csv 或 .txt 文件")
    if not head:
        raise UploadRefused(f"{shown}：文件是空的（0 字节），请确认文件已保存完整")
    magic = MAGIC[suffix]
    if magic is None:
        if b"\x00" in head and utf16_codec(head) is None:
            raise UploadRefused(f"{shown}：内容不是文本，不像 CSV 文件。请在 Excel 中另存为 .xlsx 或 .csv")
    elif not head.startswith(magic) and not looks_like_html(head):  # a web system's "导出Excel" is a page
        raise UploadRefused(f"{shown}：文件内容与扩展名 {suffix} 不符。请在 Excel 中重新另存为 .xlsx 后上传")
    return suffix


def limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises :class:`BodyTooLarge` once the body passes ``limit`` bytes."""
    seen = 0

    async def counting() -> MutableMapping[str, Any]:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
        return message

    return counting
