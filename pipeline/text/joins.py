"""Texts of the same row joined into one cell, for every row at once.

A row's faults become one result code cell (``10110;10123``) and one message
cell in the outcome, the reports and the annotated copies.  Faults are a few
per cent of the rows but tens of thousands in a long register: joined as
Python strings they cost tens of milliseconds a chunk, so Arrow joins them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.text.arrow import text_array


def join_texts_by_key(
    keys: np.ndarray, texts: pa.Array, separator: str, *, distinct: bool = False
) -> tuple[np.ndarray, pa.Array]:
    """Join ``texts`` of equal consecutive ``keys`` (already sorted): (distinct keys, joined texts).

    With ``distinct``, a text repeated under the same key is joined once
    (where it first appears).  The texts are never Python objects: the
    groups become a list array over them, which Arrow joins.
    """
    texts = text_array(texts)
    keys = np.asarray(keys)
    if len(keys) == 0:
        return keys[:0], pa.array([], pa.large_string())
    if distinct and (keys[1:] == keys[:-1]).any():
        codes = pc.dictionary_encode(texts).indices.to_numpy(zero_copy_only=False)
        order = np.lexsort((codes, keys))  # stable: a repeat comes after its first appearance
        sorted_keys, sorted_codes = keys[order], codes[order]
        repeat = np.r_[False, (sorted_keys[1:] == sorted_keys[:-1]) & (sorted_codes[1:] == sorted_codes[:-1])]
        if repeat.any():
            kept = np.ones(len(keys), dtype=bool)
            kept[order[repeat]] = False
            keys, texts = keys[kept], texts.filter(pa.array(kept))
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    groups = pa.LargeListArray.from_arrays(pa.array(np.r_[starts, len(keys)].astype(np.int64)), texts)
    return keys[starts], pc.binary_join(groups, pa.scalar(separator, pa.large_string()))
