"""The dry run of an upload, run by a worker process: read, map, normalise, validate, store.

It is ``ehc validate`` without the report files (those are written when a
clerk downloads them): the same reader, column mapping, normaliser and
schema, with the centre's column mapping and organisation code.  What it
finds goes into the job's rows and faults in the database, and the fields
as read into the job's folder, so that pages page through them and an edit
re-checks one row without reading the register again.  Edits the clerk
made earlier (a job checked again after its column mapping changed) are
applied before the check.

The worker writes its stage into the job as it goes, which is what the
progress bar on the page shows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from pipeline.web import engine
from pipeline.web.jobfiles import JobFiles
from pipeline.web.shown import file_name as shown_name
from pipeline.web.shown import for_clerk
from pipeline.web.store import CHECKED, CHECKING, NEEDS_MAPPING, QUEUED, UNREADABLE, Job, Store

#: Characters of a sample cell shown on the mapping page.
SAMPLE_CHARS = 20
SAMPLES = 2
#: An upload longer than ``[web] max_rows``: what the page says.
TOO_MANY_ROWS = (
    "{name} 共 {rows:,} 行，超过网页工作台每个登记表 {limit:,} 行的上限。"
    "请把登记表拆分为几个文件分别上传，或请运维人员在服务器上用命令行 ehc validate / ehc submit 处理"
)


def worker_setup(settings: engine.Settings, nice: int) -> None:
    """Start a dry-run worker process: log (masked) like the server, run below it, import the stages."""
    engine.setup_logging(
        level=settings.logging.level,
        log_dir=settings.effective_log_dir,
        rotation=settings.logging.rotation,
        retention=settings.logging.retention,
        json=settings.logging.json,
    )
    engine.register_secret(settings.platform.app_secret)
    if nice:
        os.nice(nice)
    engine.preload()


def table_info(
    raw: engine.RawTable, mapped: engine.MappedTable | None, aliases: dict[str, str]
) -> dict[str, Any]:
    """What the mapping page shows of a table: where its header is, each column and its field."""
    headers = [str(h) for h in raw.headers]
    if mapped is not None:
        by_header = {header: code for code, header in mapped.field_headers.items()}
        fields = [by_header.get(h, "") for h in headers]
    else:
        fields = engine.guess_fields(headers, aliases)
    samples = []
    for i in range(len(headers)):
        column = raw.data.iloc[:SAMPLES, i].astype(str).tolist() if i < raw.data.shape[1] else []
        samples.append([value[:SAMPLE_CHARS] for value in column if value.strip()])  # blanks show nothing
    return {
        "sheet": raw.sheet,
        "header_row": int(raw.header_row),
        "headers": headers,
        "positions": [int(p) for p in raw.column_positions],
        "fields": fields,
        "field_headers": dict(mapped.field_headers) if mapped is not None else {},
        "samples": samples,
        "rows": len(raw.data),
    }


def fault_sources(faults: pd.DataFrame, tables: list[dict[str, Any]], offsets: list[range]) -> np.ndarray:
    """For each fault, the input field its value came from (a column of the clerk's sheet, or itself)."""
    sources = faults["field"].to_numpy(dtype=object).copy()
    if not len(faults):
        return sources
    starts = np.array([r.start for r in offsets], dtype=np.int64)
    which = np.searchsorted(starts, faults["row_id"].to_numpy(dtype=np.int64), side="right") - 1
    for t, info in enumerate(tables):
        for field in pd.unique(faults["field"][which == t]):
            if field:
                here = (which == t) & (faults["field"].to_numpy() == field)
                sources[here] = engine.source_column(info["field_headers"], str(field))[1]
    return sources


def row_tuples(
    source_row: np.ndarray, outcome: pd.DataFrame, id_numbers: pd.Series
) -> Iterator[tuple[int, int, str, str, str, str, str, str]]:
    """Rows as the store takes them: (row_id, source_row, status, sfzhm, result_code, message, card ids)."""
    return zip(
        outcome.index.tolist(),
        source_row.tolist(),
        outcome["status"].tolist(),
        id_numbers.tolist(),
        outcome["result_code"].tolist(),
        outcome["message"].tolist(),
        outcome["ehealthCardId"].tolist(),
        outcome["virtualCardNum"].tolist(),
        strict=True,
    )


def fault_tuples(
    faults: pd.DataFrame, sources: np.ndarray
) -> Iterator[tuple[int, int, str, str, int, str, str]]:
    """Faults as the store takes them: (row_id, seq in the row, field, source, code, severity, message)."""
    row_ids = faults["row_id"].to_numpy(dtype=np.int64)
    seq = pd.Series(row_ids).groupby(row_ids).cumcount().to_numpy()
    return zip(
        row_ids.tolist(),
        seq.tolist(),
        faults["field"].tolist(),
        sources.tolist(),
        faults["code"].astype(int).tolist(),
        faults["severity"].tolist(),
        faults["message"].tolist(),
        strict=True,
    )


def edits_frame(edits: list[tuple[int, str, str]]) -> pd.DataFrame:
    """The store's latest edits as the frame :func:`engine.apply_edits` takes."""
    # Built column by column: a frame of tuples then retyped cost a millisecond of each edit.
    row_ids, fields, values = zip(*edits, strict=True) if edits else ((), (), ())
    return pd.DataFrame(
        {
            "row_id": np.asarray(row_ids, dtype=np.int64),
            "field": pd.Series(fields, dtype="str"),
            "value": pd.Series(values, dtype="str"),
        }
    )


def said(error: Exception, files: JobFiles, job: Job) -> str:
    """A library error about the job's register as the page says it (the clerk's file name, no path)."""
    return for_clerk(
        str(error), (files.upload(job.stored_name), job.file_name), (job.stored_name, job.file_name)
    )


#: What the job page says of an upload that is an annotated copy (one with a 问题说明 column).
ANNOTATED_AGAIN = (
    "这个文件像是上次检查生成的标注副本：新的标注副本按内容重新生成，只标出这次的结果，"
    "上次的标记已清除，但原有格式没有保留。想保留格式，请在原登记表中改正后上传原登记表"
)


def check_job(state_dir: Path, job_id: str, settings: engine.Settings, today: date | None = None) -> str:
    """The dry run of job ``job_id`` (in a worker process); returns the state it ends in."""
    store = Store(state_dir)
    try:
        return _check(store, state_dir, job_id, settings, today or date.today())
    finally:
        store.close()


def _check(store: Store, state_dir: Path, job_id: str, settings: engine.Settings, today: date) -> str:
    if not store.claim_job(job_id, [QUEUED], CHECKING, stage="读取文件", progress=0.05, message=""):
        return ""
    job = store.job_any(job_id)
    centre = store.centre(job.centre_id) if job else None
    if job is None or centre is None:
        return ""
    files = JobFiles(state_dir, job_id)
    aliases = {**settings.column_aliases, **store.centre_columns(centre.id)}
    try:
        with engine.warnings_while_reading() as warned:
            raws = engine.read_raw_tables(files.upload(job.stored_name), settings.web)
    except engine.InputError as error:
        store.update_job(job_id, state=UNREADABLE, stage="", message=said(error, files, job))
        logger.info("网页上传 {} 无法读取", job_id)
        return UNREADABLE
    read = sum(len(raw.data) for raw in raws)
    if read > settings.web.max_rows:
        message = TOO_MANY_ROWS.format(name=shown_name(job.file_name), rows=read, limit=settings.web.max_rows)
        store.update_job(job_id, state=UNREADABLE, stage="", message=message)
        logger.info("网页上传 {} 行数 {} 超过上限 {}", job_id, read, settings.web.max_rows)
        return UNREADABLE
    store.update_job(job_id, stage="识别列", progress=0.45)
    tables, infos, problems = [], [], []
    for raw in raws:
        try:
            mapped = engine.map_table(raw, aliases)
        except engine.InputError as error:
            infos.append(table_info(raw, None, aliases))
            problems.append(said(error, files, job))
            continue
        tables.append(mapped)
        infos.append(table_info(raw, mapped, aliases))
    if problems:
        store.update_job(
            job_id, state=NEEDS_MAPPING, stage="", message=problems[0], tables=infos, aliases=aliases
        )
        return NEEDS_MAPPING
    store.update_job(job_id, stage="规范化与校验", progress=0.55)
    offsets, sources, original, _ = engine.stack_tables(tables)
    sources["source_file"] = job.file_name  # what a message naming another table quotes
    edited = engine.apply_edits(original, edits_frame(store.edits(job_id)))
    rows, faults = engine.check_rows(edited, settings, centre.org_code, today, sources)
    outcome = engine.outcome_of(rows.index, faults)
    store.update_job(job_id, stage="保存结果", progress=0.85)
    files.write_originals(original)
    source_row = sources["source_row"].to_numpy(dtype=np.int64)
    store.replace_rows(
        job_id,
        row_tuples(source_row, outcome, rows["sfzhm"].astype(str)),
        fault_tuples(faults, fault_sources(faults, infos, offsets)),
        state=CHECKED,
        row_count=len(rows),
        tables=infos,
        aliases=aliases,
    )
    notices = [ANNOTATED_AGAIN] if engine.annotated_copy_among(raws) else []
    notices += [said(Exception(line), files, job) for line in warned]
    if notices:
        store.update_job(job_id, message=" ".join(notices))
    logger.info("网页上传 {} 检查完成：{} 行", job_id, len(rows))
    return CHECKED
