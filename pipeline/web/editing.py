"""Fixing a cell in the grid: the row is re-normalised and re-validated at once, with the same schema.

A row's faults depend on the row alone, except "this ID number was on an
earlier row" (10115), which depends on every row with the same ID number.
So an edit re-checks, in one call of the dry run's own normaliser and
validator, the edited row together with every row that shares its old ID
number (and, if the new ID number is found elsewhere, those rows too): the
rows whose 10115 may appear or go away.  Their faults, statuses and the
job's counts are replaced in one transaction, with the edit itself (who,
when, old value, new value).

Rows a submission enrolled are never changed: what the platform answered
stands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.web import engine
from pipeline.web.checking import edits_frame, fault_sources
from pipeline.web.jobfiles import JobFiles
from pipeline.web.store import (
    NEEDS_MAPPING,
    READY_STATES,
    UNREADABLE,
    Job,
    RowState,
    RowUpdate,
    Store,
    User,
)

#: Longest value a cell may be given.
MAX_VALUE_CHARS = 200
#: The field every row takes from the centre, whatever the register or an edit says.
CENTRE_FIELD = "orgCode"
#: Tries when another edit of the same job lands between reading and writing.
ATTEMPTS = 3


class EditRefused(Exception):
    """An edit that cannot be made; ``str()`` is the Chinese reason."""


@dataclass
class EditResult:
    """What an edit changed: the row's new state and faults, and any other row whose status changed."""

    row: RowState
    value: str
    faults: list[tuple[str, str, int, str, str]]  # field, source, code, severity, message
    changed: dict[int, str]  # other rows whose status changed -> new status
    version: int
    #: Every other row checked again (those sharing the old or new ID number) -> (status, faults):
    #: a 10115 may have appeared or gone on them whether or not their status changed.
    others: dict[int, tuple[str, list[tuple[str, str, int, str, str]]]] = field(default_factory=dict)


def _offsets(job: Job) -> list[range]:
    offsets, start = [], 0
    for info in job.tables:
        offsets.append(range(start, start + int(info["rows"])))
        start += int(info["rows"])
    return offsets


def row_sources(job: Job, states: dict[int, RowState]) -> pd.DataFrame:
    """Where each of these rows is in the clerk's file (``source_file``, ``source_sheet``, ``source_row``)."""
    row_ids = sorted(states)
    offsets = _offsets(job)
    sheets = [
        next((str(job.tables[t]["sheet"]) for t, rows in enumerate(offsets) if row_id in rows), "")
        for row_id in row_ids
    ]
    return pd.DataFrame(
        {
            "source_file": pd.Series(job.file_name, index=row_ids, dtype="str"),
            "source_sheet": pd.Series(sheets, index=row_ids, dtype="str"),
            "source_row": pd.Series([states[r].source_row for r in row_ids], index=row_ids, dtype="int64"),
        }
    )


def current_values(store: Store, files: JobFiles, job: Job, row_ids: list[int]) -> pd.DataFrame:
    """The fields of ``row_ids`` as the clerk's file holds them now: as read, with every edit applied."""
    originals = files.read_originals(row_ids)
    return engine.apply_edits(originals, edits_frame(store.edits(job.id, row_ids)))


def recheck(
    job: Job,
    values: pd.DataFrame,
    edit: tuple[int, str, str],
    settings: engine.Settings,
    org_code: str,
    today: date,
    places: pd.DataFrame | None = None,
) -> list[RowUpdate]:
    """The new state of the rows of ``values`` (their current cells) with ``edit`` (row_id, field, value)
    applied: one call of the dry run's normaliser and validator.  ``places`` (:func:`row_sources`)
    lets a repeated ID number name the row it first appeared on."""
    edited = engine.apply_edits(values, edits_frame([edit]))
    rows, faults = engine.check_rows(edited, settings, org_code, today, places)
    outcome = engine.outcome_of(rows.index, faults)
    sources = fault_sources(faults, job.tables, _offsets(job))
    fault_rows = faults["row_id"].to_numpy(dtype=np.int64)
    updates = []
    for row_id in rows.index:
        mine = fault_rows == row_id
        updates.append(
            RowUpdate(
                row_id=int(row_id),
                status=str(outcome.at[row_id, "status"]),
                sfzhm=str(rows.at[row_id, "sfzhm"]),
                result_code=str(outcome.at[row_id, "result_code"]),
                message=str(outcome.at[row_id, "message"]),
                faults=list(
                    zip(
                        faults["field"][mine].tolist(), sources[mine].tolist(),
                        faults["code"][mine].astype(int).tolist(), faults["severity"][mine].tolist(),
                        faults["message"][mine].tolist(), strict=True,
                    )
                ),
            )
        )  # fmt: skip
    return updates


def edit_cell(
    store: Store,
    state_dir: Path,
    job: Job,
    row_id: int,
    field: str,
    value: str,
    *,
    user: User,
    settings: engine.Settings,
    org_code: str,
    today: date | None = None,
) -> EditResult:
    """Set the cell ``field`` of row ``row_id`` to ``value`` and re-check what that changes.

    Raises :class:`EditRefused` (Chinese reason) for a job that is busy, a
    row the platform enrolled, an unknown field, the centre's organisation
    code or an overlong value;
    ``KeyError`` for a row the job does not have.
    """
    today = today or date.today()
    if field not in engine.INPUT_FIELDS:
        raise EditRefused("没有这一列")
    if field == CENTRE_FIELD:
        raise EditRefused(f"发卡机构代码是本中心的机构代码 {org_code}，每一行都按它提交，不能修改")
    if len(value) > MAX_VALUE_CHARS:
        raise EditRefused(f"内容过长：最多 {MAX_VALUE_CHARS} 个字")
    files = JobFiles(state_dir, job.id)
    for _ in range(ATTEMPTS):
        fresh = store.job(job.id, job.centre_id)
        if fresh is None:
            raise KeyError(row_id)
        if fresh.state == NEEDS_MAPPING:
            raise EditRefused("此文件的列还没有确认，还没有可修改的行：请先在“列对应关系”页面确认每一列")
        if fresh.state == UNREADABLE:
            raise EditRefused("此文件无法读取，没有可修改的行：请按提示修正文件后重新上传")
        if fresh.state not in READY_STATES:
            raise EditRefused("此任务正在检查或提交，暂时不能修改")
        before = store.rows(job.id, [row_id]).get(row_id)
        if before is None:
            raise KeyError(row_id)
        if before.status in engine.ENROLLED_STATUSES:
            raise EditRefused("这一行已申领成功，不能再修改")
        affected = sorted({row_id, *store.rows_with_ids(job.id, [before.sfzhm])})
        values = current_values(store, files, fresh, affected)
        old = str(values.at[row_id, field])
        if old == value:
            faults = [f[2:] for f in store.faults_of(job.id, [row_id])]
            return EditResult(before, value, faults, {}, fresh.version)
        edit = (row_id, field, value)
        previous = store.rows(job.id, affected)
        places = row_sources(fresh, previous) if len(affected) > 1 else None  # only a repeat names a row
        updates = recheck(fresh, values, edit, settings, org_code, today, places)
        new_id = next(u.sfzhm for u in updates if u.row_id == row_id)
        sharing = set(store.rows_with_ids(job.id, [new_id])) - set(affected)
        if sharing:
            affected = sorted({*affected, *sharing})
            values = current_values(store, files, fresh, affected)
            previous = store.rows(job.id, affected)
            updates = recheck(fresh, values, edit, settings, org_code, today, row_sources(fresh, previous))
        kept = {r for r, state in previous.items() if state.status in engine.ENROLLED_STATUSES}
        updates = [u for u in updates if u.row_id not in kept]
        version = store.update_rows(
            job.id, updates, edit=(row_id, field, old, value, user.id), expect_version=fresh.version
        )
        if version < 0:
            continue  # another edit of this job landed meanwhile: read again
        mine = next(u for u in updates if u.row_id == row_id)
        changed = {
            u.row_id: u.status
            for u in updates
            if u.row_id != row_id and u.status != previous[u.row_id].status
        }
        others = {u.row_id: (u.status, u.faults) for u in updates if u.row_id != row_id}
        row = RowState(
            row_id, before.source_row, mine.status, mine.sfzhm, mine.result_code, mine.message, "", ""
        )
        return EditResult(row, value, mine.faults, changed, version, others)
    raise EditRefused("此任务同时有其他修改，请刷新页面后再试")
