"""Texts of the same row joined into one cell, for every row at once.

A row's faults become one result code cell (``10110;10123``) and one message
cell in the outcome, the reports and the annotated copies.  Faults are a few
per cent of the rows but tens of thousands in a long register: joining them
group by group in Python was a tenth of a second per million rows, so the
join loops over the place within a group (a handful) instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.text.arrow import text_array


def join_by_key(
    keys: np.ndarray, texts: np.ndarray, separator: str, *, distinct: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Join ``texts`` of equal consecutive ``keys`` (already sorted): (distinct keys, joined texts).

    With ``distinct``, a text repeated under the same key is joined once (where
    it first appears).  Loops over the rank within a group, never over the rows.
    """
    if len(keys) == 0:
        return keys[:0], np.array([], dtype=object)
    texts = np.asarray(texts, dtype=object)
    if distinct and (keys[1:] == keys[:-1]).any():  # a key with one text has nothing to repeat
        first = ~pd.DataFrame({"key": keys, "text": texts}).duplicated().to_numpy()
        keys, texts = keys[first], texts[first]
    starts_mask = np.r_[True, keys[1:] != keys[:-1]]
    group = np.cumsum(starts_mask) - 1
    starts = np.flatnonzero(starts_mask)
    rank = np.arange(len(keys)) - starts[group]
    joined = texts[starts].astype(object)
    for r in range(1, int(rank.max()) + 1):
        pick = rank == r
        joined[group[pick]] = joined[group[pick]] + separator + texts[pick]
    return keys[starts], joined


def join_texts_by_key(
    keys: np.ndarray, texts: pa.Array, separator: str, *, distinct: bool = False
) -> tuple[np.ndarray, pa.Array]:
    """:func:`join_by_key` with the texts in Arrow: (distinct keys, joined texts as ``large_string``).

    The texts are never Python objects: the groups become a list array over
    them, which Arrow joins.
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
