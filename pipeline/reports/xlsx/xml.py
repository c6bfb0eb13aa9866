"""Arrow string kernels that write XML text: literals, escaping, contiguous bytes.

Shared by the cell writer and the comment writer of :mod:`pipeline.reports.xlsx.writer`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_INVALID_XML = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
_NEEDS_ESCAPE = r"[&<>\x00-\x08\x0b\x0c\x0e-\x1f\x{FFFE}\x{FFFF}]|_x[0-9A-Fa-f]{4}_"
# Anything that needs escaping or xml:space="preserve": one scan rules out both for most columns.
NEEDS_CARE = r"[&<>\x00-\x1f\x{FFFE}\x{FFFF}]|_x[0-9A-Fa-f]{4}_|^\s|\s$"
_NONCHARACTERS = r"[\x{FFFE}\x{FFFF}]"
_ESCAPE_LOOKALIKE = r"_(x[0-9A-Fa-f]{4}_)"  # Excel decodes _xHHHH_ in strings: keep it literal
NEEDS_PRESERVE = r"^\s|\s$|\n"


def _may_need_care(data: np.ndarray) -> bool:
    """Whether UTF-8 ``data`` holds a byte or sequence :data:`NEEDS_CARE` can match, bar the spaces at
    either end of a value: ``&<>``, a control character, ``_x`` (of ``_xHHHH_``), U+FFFE or U+FFFF."""
    if (
        (data < 0x20).any()
        or (data == ord("&")).any()
        or (data == ord("<")).any()
        or (data == ord(">")).any()
    ):
        return True
    underscores = np.flatnonzero(data[:-1] == ord("_"))
    if len(underscores) and (data[underscores + 1] == ord("x")).any():
        return True
    # U+FFFE and U+FFFF are EF BF BE and EF BF BF; full-width punctuation (，（）) also leads with EF.
    leads = np.flatnonzero(data[:-2] == 0xEF)
    return bool(len(leads) and ((data[leads + 1] == 0xBF) & (data[leads + 2] >= 0xBE)).any())


def needs_care(text: pa.Array) -> bool:
    """Whether any value of a large_string array (no nulls) matches :data:`NEEDS_CARE`.

    Read from the bytes: a column whose bytes hold nothing such a match can
    begin with, and none of whose values starts or ends with a space, needs
    no regular expression (the scan cost most of a text column's cells).
    """
    if not len(text):
        return False
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + len(text) + 1]
    buffer = text.buffers()[2]
    if buffer is None or offsets[-1] == offsets[0]:
        return False
    base = int(offsets[0])
    data = np.frombuffer(buffer, dtype=np.uint8)[base : int(offsets[-1])]
    if _may_need_care(data):
        return bool(pc.any(pc.match_substring_regex(text, NEEDS_CARE)).as_py())
    filled = np.flatnonzero(offsets[1:] > offsets[:-1])
    # A space at either end of a value (the other white space is a control character, caught above).
    return bool(
        (data[offsets[filled] - base] == 0x20).any() or (data[offsets[filled + 1] - base - 1] == 0x20).any()
    )


def lit(text: str) -> pa.Scalar:
    """A large_string scalar, for joining with large_string arrays."""
    return pa.scalar(text, pa.large_string())


EMPTY = lit("")


def escaped(text: pa.Array) -> pa.Array:
    """XML-escape a large_string array, with Excel's _xHHHH_ for characters XML forbids."""
    if not pc.any(pc.match_substring_regex(text, _NEEDS_ESCAPE)).as_py():
        return text
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        text = pc.replace_substring(text, char, entity)
    text = pc.replace_substring_regex(text, _ESCAPE_LOOKALIKE, r"_x005F_\1")
    if pc.any(pc.match_substring_regex(text, _INVALID_XML)).as_py():
        for code in [*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]:
            text = pc.replace_substring(text, chr(code), f"_x{code:04X}_")
    return pc.replace_substring_regex(text, _NONCHARACTERS, "")


def contiguous_bytes(text: pa.Array) -> memoryview:
    """The UTF-8 bytes of every value of an Arrow large_string array, concatenated (no copy)."""
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + len(text) + 1]
    data = text.buffers()[2]
    return memoryview(data)[int(offsets[0]) : int(offsets[-1])] if data is not None else memoryview(b"")
