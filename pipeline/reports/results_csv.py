"""results.csv: every row of the run, with stable English column names, for machines.

UTF-8 with a BOM (so Excel opens the Chinese text correctly), written by
Arrow's CSV writer: a million rows take about a second, where pandas
``to_csv`` takes many times that.

Values are written exactly as they are, with no quote or apostrophe put in
front of text starting with ``=``, ``+``, ``-`` or ``@``: this file is the
machine-readable record of the run and must round-trip unchanged (a phone
number ``+86…`` or a name must come back as written).  Clerks are pointed to
results.xlsx, where such text is always a plain text cell, never a formula.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.model import FIELDS, SOURCE_COLUMNS
from pipeline.reports.data import ReportData, column_of, extra_columns
from pipeline.text.arrow import text_array

#: Columns before the normalised fields.
LEAD_COLUMNS: tuple[str, ...] = (*SOURCE_COLUMNS, "status", "result_code", "message")

#: Card identifiers returned by the platform (empty in a dry run).
CARD_ID_COLUMNS: tuple[str, ...] = ("ehealthCardId", "virtualCardNum")

_BOM = b"\xef\xbb\xbf"


def _distinct_extra_names(extras: list[str], taken: set[str]) -> list[str]:
    """The clerk's headers, prefixed ``extra_`` where one repeats a stable column (a pinyin ``brdh``)."""
    distinct = []
    for name in extras:
        candidate = name
        while candidate in taken:
            candidate = f"extra_{candidate}"
        taken.add(candidate)
        distinct.append(candidate)
    return distinct


def write_results_csv(path: Path, data: ReportData) -> Path:
    """Write every row of the run to ``path`` in input order; returns ``path``.

    Columns: source_file, source_sheet, source_row, status, result_code,
    message, the normalised fields, ehealthCardId, virtualCardNum (empty in a
    dry run), then the clerk's unrecognised columns under their own headers.
    """
    rows, n = data.rows, data.n
    arrays = [column_of(rows, name, n) for name in SOURCE_COLUMNS]
    arrays += [text_array(data.status), text_array(data.result_codes), text_array(data.messages)]
    arrays += [column_of(rows, name, n) for name in FIELDS]
    arrays += [column_of(data.outcome, name, n) for name in CARD_ID_COLUMNS]
    extras = extra_columns(data.batch.extras, rows.index)
    arrays += [values for _, values in extras]
    names = [*LEAD_COLUMNS, *FIELDS, *CARD_ID_COLUMNS]
    names += _distinct_extra_names([name for name, _ in extras], set(names))
    table = pa.Table.from_arrays(arrays, names=names)
    with open(path, "wb") as sink:
        sink.write(_BOM)
        pacsv.write_csv(table, sink, pacsv.WriteOptions(quoting_style="needed"))
    return path
