"""A job's report files as the workspace hands them out, and which version of the job they show.

The library's writers write them (as ``ehc validate`` and ``ehc submit``
do); then one thing differs: ``results.csv``.  For the command line it is
a machine's record, every value exactly as written.  Here a clerk downloads
it from a browser and double-clicks it: Excel and LibreOffice take a cell
starting with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return
before one) for a formula, and ``=HYPERLINK(…)`` or ``+cmd|…`` from a
register would run on the clerk's PC.  Such a cell gets an apostrophe in
front, the mark Excel itself uses for "text, not a formula"; plain numbers
(``-1``, ``+86139…``) are left as they are, a spreadsheet reads them as
numbers.

A marker file says which version of the job the folder shows, so a
download after an edit or a submission writes them again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.web import engine
from pipeline.web.jobfiles import JobFiles
from pipeline.web.store import Job

VERSION_FILE = ".version"
#: A cell a spreadsheet would take for a formula: a formula sign (after any tabs, carriage returns
#: or spaces), unless the whole cell is a plain number.
_FORMULA = r"^[\t\r ]*[=+\-@]|^[\t\r]"
_NUMBER = r"^[+-]?[0-9]+(\.[0-9]+)?$"
_BOM = b"\xef\xbb\xbf"


def write_reports(batch: engine.Batch, files: JobFiles, version: int, *, submitted: bool) -> None:
    """The job's reports as the library writes them, ``results.csv`` made safe to open, and the version."""
    engine.write_reports(batch, files.reports, submitted=submitted)
    csv_path = files.reports / engine.REPORT_FILES["csv"]
    if csv_path.is_file():
        neutralise_formulas(csv_path)
    (files.reports / VERSION_FILE).write_text(str(version), encoding="utf-8")


def reports_current(files: JobFiles, job: Job) -> bool:
    """Whether the job's report folder shows the job as it is now."""
    marker = files.reports / VERSION_FILE
    try:
        return marker.read_text(encoding="utf-8").strip() == str(job.version)
    except OSError:
        return False


def report_path(files: JobFiles, job: Job, kind: str) -> Path | None:
    """The file of a download kind (``annotated``, ``errors``, ``results``, ``csv``) in the report folder."""
    if kind == "annotated":
        found = sorted(files.reports.glob("annotated_*.xlsx"))
        return found[0] if found else None
    name = engine.REPORT_FILES.get(kind)
    return files.reports / name if name else None


def _safe(column: pa.ChunkedArray) -> pa.ChunkedArray:
    text = pc.fill_null(column, "")
    formula = pc.and_(
        pc.match_substring_regex(text, _FORMULA), pc.invert(pc.match_substring_regex(text, _NUMBER))
    )
    if not pc.any(formula).as_py():
        return column
    return pc.if_else(formula, pc.binary_join_element_wise("'", text, ""), text)


def neutralise_formulas(path: Path) -> None:
    """Put an apostrophe before every cell of the CSV at ``path`` that a spreadsheet would evaluate."""
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(encoding="utf-8", block_size=16 << 20),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=_all_text(path), strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )
    safe = pa.table([_safe(column) for column in table.columns], names=_safe_names(table.column_names))
    partial = path.with_name(f".{path.name}.part")
    with open(partial, "wb") as sink:
        sink.write(_BOM)
        pacsv.write_csv(safe, sink, pacsv.WriteOptions(quoting_style="needed"))
    os.replace(partial, path)


def _safe_names(names: list[str]) -> list[str]:
    safe = _safe(pa.chunked_array([pa.array(names, pa.string())]))
    return [str(name) for name in safe.to_pylist()]


def _all_text(path: Path) -> dict[str, pa.DataType]:
    """Every column of the CSV at ``path`` read as text (a number stays as it was written)."""
    head = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(encoding="utf-8", block_size=1 << 20),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
    )
    return {name: pa.string() for name in head.schema.names}
