"""Text from elsewhere as a clerk's page shows it: invisible characters made visible, the page's wording.

Values come from the clerk's register, messages from the library, names
from the clerk's file system; all of it reaches a page, a JSON answer or a
download name.  Three things are done to it here, once:

* characters that change how the text around them looks without showing
  themselves (right-to-left overrides, zero-width spaces, control
  characters) are shown as ``[U+202E]``: a value cannot turn the rest of
  its message around, and a clerk sees why a name that looks right was
  refused;
* the command line's advice ("再次运行同一命令", "用 --mapping 指定") becomes the
  page's ("再次提交", the column mapping page),
  and the platform's address and the server's folders are left out;
* a file name keeps only what a name needs (no control or direction
  characters), so that what the pages and downloads call a file is what
  the clerk sees in their own folder.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

#: Characters that act on the text around them without being seen: C0/C1 controls (but tab and
#: line breaks), direction marks, embeddings, overrides and isolates, zero-width characters, BOM.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)

#: How a browser writes a quote or a control character of a file name in a form.
_BROWSER_ESCAPES = re.compile("%(0[0-9A-Fa-f]|1[0-9A-Fa-f]|22|7[Ff])")

#: The command line's advice -> the page's.
_ADVICE = (
    ("请检查网络和平台状态后重新运行同一命令", "请稍后再次提交（仍无法访问时请联系运维人员）"),
    ("再次运行同一命令即可继续", "再次提交即可继续"),
    ("再次运行同一命令", "再次提交"),
    ("重新运行同一命令", "再次提交"),
    ("或用 --mapping 指定对应关系", "或在“列对应关系”页面为每一列选择对应的字段"),
    ("请加 --all-sheets，或把它另存为单独的文件", "请把它另存为单独的文件后另行上传"),
    ("请加 --all-sheets", "请把它们另存为单独的文件后另行上传"),
)
#: A web address in a message (the platform's): the clerk has no use for it.
_ADDRESS = re.compile(r"\s*https?://[^\s，。；：、）)]+\s*")


def visible(text: str) -> str:
    """``text`` with every invisible character shown as ``[U+XXXX]``."""
    if not _INVISIBLE.search(text):
        return text
    return _INVISIBLE.sub(lambda found: f"[U+{ord(found.group()):04X}]", text)


def finalize(value: Any) -> Any:
    """Jinja's ``finalize``: every plain string a template prints goes through :func:`visible`."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value)
    return value


def for_clerk(text: str, *hidden: tuple[str | Path, str]) -> str:
    """A message of the library as the page says it.

    ``hidden`` pairs (what, shown instead): the server's path of the
    clerk's file, say, becomes the file's name.
    """
    for what, instead in hidden:
        if str(what):
            text = text.replace(str(what), instead)
    for command_line, page in _ADVICE:
        text = text.replace(command_line, page)
    return visible(_ADDRESS.sub("", text))


def in_page_words(messages: pd.Series) -> pd.Series:
    """Report messages with the command line's advice in the page's words, as :func:`for_clerk` gives it.

    A job's downloads (results.xlsx, results.csv, the annotated copy) say
    what its page says: a row cut short by a cancel is sent again by 再次提交,
    not by a command the clerk never ran.
    """
    for command_line, page in _ADVICE:
        messages = messages.str.replace(command_line, page, regex=False)
    return messages


def file_name(name: str) -> str:
    """The last part of a clerk's file name, without control or direction characters (NFC).

    Browsers send a quote and control characters of a file name
    percent-encoded (``%22``, ``%0A``); those are decoded first.
    """
    name = _BROWSER_ESCAPES.sub(lambda found: chr(int(found.group(1), 16)), name)
    base = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    return " ".join(_INVISIBLE.sub("", base).split())
