"""Sending one resident to the platform: claim, call, classify, record.

:class:`ResidentSender` claims a resident in the journal, sends its
``syncCardInfo``, turns the answer into an :class:`Outcome` and records it.
:func:`pipeline.submission.pool.run_pool` runs it on many threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

from loguru import logger

from pipeline.logs import mask_id
from pipeline.model import (
    STATUS_ALREADY_ENROLLED,
    STATUS_ENROLLED,
    STATUS_FAILED,
    STATUS_REJECTED,
    Outcome,
)
from pipeline.state.journal import STATE_ENROLLED, STATE_FAILED, STATE_REJECTED, STATE_SENDING, Journal
from schemas.result_codes import ResultCode, describe


class CallResultLike(Protocol):
    """What the platform client returns for one call."""

    result_code: int | None
    message: str
    data: dict[str, str]
    attempts: int

    @property
    def ok(self) -> bool: ...


class ClientLike(Protocol):
    """The calls of the platform client that submission uses."""

    def sync_card_info(self, card_info: dict[str, str], people_info: dict[str, str]) -> Any: ...

    def bind_card_info(
        self, *, zjlx: str, zjhm: str, xm: str, brdh: str,
        bind_type: str = "1", bind_zjlx: str = "", bind_zjhm: str = "",
    ) -> Any: ...  # fmt: skip


@dataclass(frozen=True)
class Task:
    """One resident to send: where the row came from and the two objects of the call."""

    id_number: str
    source_file: str
    source_row: int | None
    people: dict[str, str]
    card: dict[str, str]
    #: the resident's journal state when the run was planned (None: unknown to the journal)
    prior: str | None = None


def _card_ids(data: dict[str, str]) -> tuple[str, str]:
    return str(data.get("ehealthCardId", "") or ""), str(data.get("virtualCardNum", "") or "")


def _platform_message(result: CallResultLike) -> str:
    code = result.result_code
    return (result.message or "").strip() or (describe(code) if code is not None else "")


class ResidentSender:
    """Sends one resident: claim in the journal, call, classify, record."""

    def __init__(
        self,
        client: ClientLike,
        journal: Journal,
        *,
        lookup_existing: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.lookup_existing = lookup_existing
        self.stop = stop or threading.Event()
        self.calls = 0  # platform calls made (syncCardInfo + bindCardInfo), for the summary
        self._count_lock = threading.Lock()

    def _count_call(self) -> None:
        with self._count_lock:
            self.calls += 1

    def send(self, task: Task) -> Outcome:
        """Send ``task`` and return its outcome; the journal holds the outcome when this returns.

        Run-stopping faults raised by the client propagate; the resident then
        stays ``sending`` in the journal and the next run sends it again.
        """
        self.journal.mark_sending(task.id_number, task.source_file, task.source_row)
        result = self.client.sync_card_info(task.card, task.people)
        self._count_call()
        code = result.result_code
        masked = mask_id(task.id_number)
        if result.ok:
            card_id, virtual = _card_ids(result.data)
            message = _platform_message(result)
            self.journal.record(task.id_number, STATE_ENROLLED, ResultCode.SUCCESS, message, card_id, virtual)
            logger.debug("{} 申领成功", masked)
            return Outcome(STATUS_ENROLLED, "", "申领成功", card_id, virtual)
        if code == ResultCode.ALREADY_ENROLLED:
            return self._already_enrolled(task, task.prior, result)
        if code is None and self.stop.is_set():
            # The stop cut a backoff or a rate-limit wait short: an earlier attempt may have arrived.
            message = result.message if result.message.startswith("已中断") else f"已中断（{result.message}）"
            self.journal.record(task.id_number, STATE_FAILED, None, message)
            return Outcome(STATUS_FAILED, "", f"{message}；再次运行同一命令会重新发送")
        # The platform's own "network error": the outcome is unknown, not a refusal of the data.
        if code is None or code == ResultCode.NETWORK_ERROR:
            message = _platform_message(result) or "平台无应答"
            self.journal.record(task.id_number, STATE_FAILED, code, message)
            logger.warning("{} 发送失败（已尝试 {} 次）：{}", masked, result.attempts, message)
            text = f"发送失败（已尝试 {result.attempts} 次）：{message}。再次运行同一命令会重新发送"
            return Outcome(STATUS_FAILED, "" if code is None else str(code), text)
        message = _platform_message(result)
        self.journal.record(task.id_number, STATE_REJECTED, code, message)
        logger.info("{} 平台拒绝（{}）：{}", masked, code, message)
        return Outcome(STATUS_REJECTED, str(code), message, fault_code=code)

    def _already_enrolled(self, task: Task, prior: str | None, result: CallResultLike) -> Outcome:
        code = ResultCode.ALREADY_ENROLLED
        if prior in (STATE_SENDING, STATE_FAILED):
            message = f"此前已发送但结果未知；平台答复身份证已经办理过（{code}），按已办理处理"
        else:
            message = f"平台答复身份证已经办理过（{code}），该居民已在别处办理"
        card_id = virtual = ""
        if self.lookup_existing:
            card_id, virtual, note = self._look_up(task)
        else:
            note = "卡号未查询（可加 --lookup-existing 查询）"
        self.journal.record(task.id_number, STATE_ENROLLED, code, _platform_message(result), card_id, virtual)
        logger.info("{} 已办理过（{}）", mask_id(task.id_number), code)
        return Outcome(STATUS_ALREADY_ENROLLED, str(code), f"{message}；{note}", card_id, virtual)

    def _look_up(self, task: Task) -> tuple[str, str, str]:
        """Card ids of an enrolled resident through ``bindCardInfo`` (``--lookup-existing``)."""
        people = task.people
        zjlx, zjhm = people.get("zjlx") or "01", people.get("zjhm") or task.id_number
        result = self.client.bind_card_info(
            zjlx=zjlx, zjhm=zjhm, xm=people.get("xm", ""), brdh=people.get("brdh", ""),
            bind_type="1", bind_zjlx=zjlx, bind_zjhm=zjhm,
        )  # fmt: skip
        self._count_call()
        if result.ok:
            card_id, virtual = _card_ids(result.data)
            return card_id, virtual, "已通过 bindCardInfo 查得卡号"
        code = "无应答" if result.result_code is None else str(result.result_code)
        return "", "", f"bindCardInfo 查询卡号未成功（{code}：{_platform_message(result)}）"
