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
