"""Card ids the platform holds but this machine lacks, found again with ``bindCardInfo`` where allowed.

A resident is enrolled without card ids when the platform answered 10115
(ID number already enrolled) instead of the ids: after an answer lost on its
way back (the resend meets the enrolment it made), or after an enrolment
elsewhere.  ``syncCardInfo`` never gives the ids twice and ``getImg`` needs
them; of the four calls only ``bindCardInfo`` returns them for an ID number,
and it binds the card to the calling app's user, an effect on the platform.
So the ids are looked up only where the configuration allows it
(``--lookup-existing`` / ``[submit] lookup_existing``), and then for the
rows of a batch that the journal answers as enrolled without ids.  The
interface document requires the resident's name and phone in
``bindCardInfo``, and the journal keeps neither: a resident of another
register is looked up when that register is submitted again.  Ids found go
into the journal at once, so ``ehc qrcode`` finds them too.  Without lookup,
the rows say why their ids are missing and how to get them.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

import pandas as pd
from loguru import logger

from pipeline.batch import MESSAGE_FROM_JOURNAL, update_outcome
from pipeline.model import PEOPLE_FIELDS, STATUS_ALREADY_ENROLLED, Batch
from pipeline.submission.pool import PoolSize, run_pool
from pipeline.submission.sender import MESSAGE_IDS_NOT_LOOKED_UP, ResidentSender, Task

MESSAGE_LOOKUP_NOT_DONE = "卡号查询未完成（运行已停止）；再次运行同一命令会继续查询"


def _lacking_ids(row_ids: pd.Index, ids: pd.Series, known: pd.DataFrame) -> pd.Index:
    """The rows among ``row_ids`` whose resident the journal holds without any card id."""
    if not len(row_ids):
        return row_ids
    entries = known.loc[ids.loc[row_ids].to_numpy()]
    blank = (entries["ehealth_card_id"].fillna("") == "") & (entries["virtual_card_num"].fillna("") == "")
    return row_ids[blank.to_numpy()]


def recover_card_ids(
    batch: Batch,
    from_journal: pd.Index,
    ids: pd.Series,
    known: pd.DataFrame,
    sender: ResidentSender,
    *,
    lookup: bool,
    size: PoolSize,
    stop: threading.Event,
) -> BaseException | None:
    """Look up the card ids missing from the journal (see the module docstring); the fault that stopped it.

    ``from_journal`` are the batch's rows answered from the journal, ``ids``
    the ID number of every valid row, ``known`` the journal's entries for them.
    """
    rows = _lacking_ids(from_journal, ids, known)
    if not lookup:
        if len(rows):
            update_outcome(batch, rows, {"message": f"{MESSAGE_FROM_JOURNAL}；{MESSAGE_IDS_NOT_LOOKED_UP}"})
        return None
    if stop.is_set():
        return None
    first_rows = ids.loc[rows].drop_duplicates()
    tasks = [_task(batch, row_id, str(id_number)) for row_id, id_number in first_rows.items()]
    if not tasks:
        return None
    logger.info("查询卡号：{} 名已办理的居民在提交日志中没有卡号，用 bindCardInfo 查询", len(tasks))
    pool = run_pool(tasks, sender.recover, size=size, stop=stop, on_tick=sender.flush)
    pairs = zip(tasks, pool.outcomes, strict=True)
    found = {task.id_number: outcome for task, outcome in pairs if outcome is not None}
    if len(rows):
        outcomes = [found.get(i) for i in ids.loc[rows]]
        update_outcome(
            batch, rows,
            {
                "status": STATUS_ALREADY_ENROLLED,
                "message": [
                    f"{MESSAGE_FROM_JOURNAL}；{o.message if o else MESSAGE_LOOKUP_NOT_DONE}" for o in outcomes
                ],
                "ehealthCardId": [o.ehealth_card_id if o else "" for o in outcomes],
                "virtualCardNum": [o.virtual_card_num if o else "" for o in outcomes],
            },
        )  # fmt: skip
    recovered = sum(1 for o in found.values() if o.ehealth_card_id or o.virtual_card_num)
    logger.info("查询卡号：查得 {} 人，未查得 {} 人", recovered, len(tasks) - recovered)
    return pool.fatal


def _task(batch: Batch, row_id: Hashable, id_number: str) -> Task:
    values = batch.rows.loc[[row_id], list(PEOPLE_FIELDS)].fillna("").astype(str).iloc[0]
    return Task(id_number, "", None, {str(k): str(v) for k, v in values.items()}, {})
