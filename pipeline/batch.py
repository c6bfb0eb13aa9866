"""Writing a submission's results into the batch: outcome columns and platform rejections.

Outcome columns are rebuilt whole rather than set cell by cell: setting 100k
cells of an Arrow string column in place costs a hundred times more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from pipeline.model import FAULT_COLUMNS, STATUS_ALREADY_ENROLLED, STATUS_ENROLLED, Batch
from pipeline.submission.sender import Outcome
from schemas.result_codes import ResultCode

MESSAGE_FROM_JOURNAL = "此前已申领成功（据提交日志），本次未重复发送"
MESSAGE_REPEATED = "同一身份证号在本批次中已发送过，未重复发送"


def update_outcome(batch: Batch, row_ids: Sequence[Any] | pd.Index, columns: dict[str, Any]) -> None:
    """Set ``columns`` of ``batch.outcome`` at ``row_ids`` (values: one per row, or one for all)."""
    outcome = batch.outcome
    positions = outcome.index.get_indexer(pd.Index(row_ids))
    for name, values in columns.items():
        column = outcome[name].to_numpy(dtype=object, copy=True)
        column[positions] = values
        outcome[name] = pd.Series(column, index=outcome.index, dtype=outcome[name].dtype)


def set_outcomes(batch: Batch, row_ids: Sequence[Any], outcomes: Sequence[Outcome]) -> None:
    """Write one :class:`Outcome` per row into ``batch.outcome``."""
    if not len(row_ids):
        return
    columns = {
        "status": [o.status for o in outcomes],
        "result_code": [o.result_code for o in outcomes],
        "message": [o.message for o in outcomes],
        "ehealthCardId": [o.ehealth_card_id for o in outcomes],
        "virtualCardNum": [o.virtual_card_num for o in outcomes],
    }
    update_outcome(batch, row_ids, columns)


def append_rejections(batch: Batch, row_ids: Sequence[Any], outcomes: Sequence[Outcome]) -> None:
    """Add a fault row (severity error, no field, the platform's code and message) per rejected row."""
    faults = [
        (row_id, "", o.fault_code, "error", o.message)
        for row_id, o in zip(row_ids, outcomes, strict=True)
        if o.fault_code is not None
    ]
    if not faults:
        return
    new = pd.DataFrame(faults, columns=list(FAULT_COLUMNS))
    dtypes = {column: batch.faults[column].dtype for column in FAULT_COLUMNS if column in batch.faults}
    new = new.astype(dtypes)
    batch.faults = pd.concat([batch.faults, new], ignore_index=True) if len(batch.faults) else new


def fill_from_journal(batch: Batch, row_ids: pd.Index, ids: pd.Series, known: pd.DataFrame) -> None:
    """Rows of residents the journal knows as enrolled: ``already_enrolled``, card ids from the journal."""
    if not len(row_ids):
        return
    entries = known.loc[ids.loc[row_ids].to_numpy()]
    update_outcome(
        batch, row_ids,
        {
            "status": STATUS_ALREADY_ENROLLED, "result_code": "", "message": MESSAGE_FROM_JOURNAL,
            "ehealthCardId": entries["ehealth_card_id"].fillna("").astype(str).to_numpy(),
            "virtualCardNum": entries["virtual_card_num"].fillna("").astype(str).to_numpy(),
        },
    )  # fmt: skip


def follow_first(first: Outcome) -> Outcome:
    """The outcome of a repeated ID number in the same batch, given the first row's outcome."""
    if first.status in (STATUS_ENROLLED, STATUS_ALREADY_ENROLLED):
        return Outcome(
            STATUS_ALREADY_ENROLLED, str(ResultCode.ALREADY_ENROLLED), MESSAGE_REPEATED,
            first.ehealth_card_id, first.virtual_card_num,
        )  # fmt: skip
    return Outcome(first.status, first.result_code, first.message, fault_code=first.fault_code)
