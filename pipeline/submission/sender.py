"""Sending one resident to the platform: claim, call, classify, record.

:class:`ResidentSender` claims a resident in the journal, sends its
``syncCardInfo``, turns the answer into an :class:`Outcome` and records it.
:func:`pipeline.submission.pool.run_pool` runs it on many threads.

The outcome in memory is the truth of what the platform answered, and it is
what the reports show.  If the journal cannot be written (a full disk, a
read-only state directory), the outcome is still returned, the fault is kept
in :attr:`ResidentSender.fault` and the stop event is set, so nothing more is
sent: a resident whose call may have left without its outcome recorded stays
``sending`` in the journal, and the next run sends it again safely (the
platform then answers 10115, read as below).

A 10115 (ID number already enrolled) is read against what this machine knows.
If an earlier attempt of the same call, or an earlier run, may have reached
the platform without its answer coming back, the 10115 is most likely the
platform's memory of that very attempt: the answer was lost, not the
enrolment elsewhere.  Either way the card ids are unknown; only
``bindCardInfo`` returns them, and binding has an effect on the platform, so
it is used only where the configuration allows it (``--lookup-existing`` /
``[submit] lookup_existing``): :meth:`ResidentSender.recover` serves the
residents that an earlier run left without card ids.  A 10000 whose answer
names no card (neither ``ehealthCardId`` nor ``virtualCardNum``) is an
enrolment all the same, treated like a 10115: the row says that the ids are
missing and how to get them, and a lookup, where allowed, finds them.  A 10000
naming a card that this run was given, or that the journal holds, for another
resident answers some other request (a proxy or the platform mixing answers
up, a cache replaying an old one): the card is not this resident's, whether
this call enrolled anyone is unknown, so the row is ``failed`` (and the next
run's resend reads a 10115 as an answer lost).  So is a result code the
interface document does not list (``-1 系统异常``): it is no refusal of the
resident's data, and may have followed an enrolment.  A 10143 (the ID number
holds several cards) is read like a 10115: the resident has a card and is
never sent again.

The log names a refusal by its code's own words, never by the platform's
message: that may quote the resident (name, address); the reports keep it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

from loguru import logger

from pipeline.errors import EhcError, PlatformUnreachable
from pipeline.logs import mask_id
from pipeline.messages import RESEND_SAFELY, RESEND_SAME_COMMAND
from pipeline.model import (
    STATUS_ALREADY_ENROLLED,
    STATUS_ENROLLED,
    STATUS_FAILED,
    STATUS_REJECTED,
    Outcome,
)
from pipeline.platform.responses import logged_reason
from pipeline.state.journal import (
    MESSAGE_CARD_OF_ANOTHER,
    STATE_ENROLLED,
    STATE_FAILED,
    STATE_REJECTED,
    STATE_SENDING,
    Journal,
)
from schemas.result_codes import ResultCode, describe

#: A 10115 answering a resident whose earlier send may have arrived unanswered.
MESSAGE_ANSWER_LOST = "平台答复已办理：上次发送可能已成功但答复丢失"
#: A 10115 answering a resident this machine never sent before.
MESSAGE_ENROLLED_ELSEWHERE = "平台答复身份证已经办理过：本机提交日志中没有此人的发送记录，应是在别处办理"
#: A 10115 answering a resident whose last send here the platform refused.
MESSAGE_ENROLLED_AFTER_REJECTION = (
    "平台答复身份证已经办理过：本机上次发送时平台拒绝了申领，应是此后在别处办理"
)
#: A call none of whose requests reached the platform (refused connection, unknown host).
MESSAGE_SEND_FAILED = "发送失败"
#: A call whose request may have reached the platform without a verdict coming back.
MESSAGE_OUTCOME_UNKNOWN = "发送结果未知（平台可能已收到并办理）"
#: A 10143: the ID number holds several cards already, so the resident needs none.
MESSAGE_SEVERAL_CARDS = "平台答复该身份证已办理过多张健康卡：已有健康卡，无需再申领"
#: A result code the interface document does not list: nothing known about the resident.
MESSAGE_UNDOCUMENTED_CODE = "平台返回了接口文档中没有的结果代码 {code}（{message}），申领结果未知"
#: The same in the log, without the platform's words (they may quote the resident).
LOGGED_UNDOCUMENTED_CODE = "平台返回了接口文档中没有的结果代码 {code}，申领结果未知"
#: How many of the run's latest card ids are remembered to catch an answer meant for another request
#: (answers get mixed up among the calls in flight and just before: a bounded memory, whatever the run).
RECENT_CARDS = 10_000
#: The codes the interface document lists; any other is no verdict on a resident.
_DOCUMENTED_CODES = frozenset(int(code) for code in ResultCode)
#: Why a resident enrolled has no card ids, and how to get them.
MESSAGE_IDS_NOT_LOOKED_UP = (
    "卡号未知，未查询（可加 --lookup-existing 或设置 [submit] lookup_existing 用 bindCardInfo 查询；"
    "查询会在平台上绑定该卡）"
)
MESSAGE_IDS_FOUND = "已通过 bindCardInfo 查得卡号"
#: A 10000 naming the card of another resident (answered in this run, or held in the journal): an answer
#: to some other request.
MESSAGE_ANSWER_OF_ANOTHER = "平台答复成功，但答复中的卡号属于另一位居民，不是对本次申领的答复：结果未知"
#: Codes saying that the resident holds a card already: enrolled, never sent again.
_ENROLLED_CODES = frozenset({ResultCode.ALREADY_ENROLLED, ResultCode.SEVERAL_CARDS_FOR_ID})
#: A resident first answered 10000 with a card that the platform then answered for another resident too.
MESSAGE_CARD_ANSWERED_TWICE = (
    "平台把此人的卡号也答复给了本次提交的另一位居民：哪一个答复属于此人不能确定，申领结果未知"
)
#: A 10000 that names no card: the resident is enrolled (the platform said so), the card ids are unknown.
MESSAGE_NO_IDS_ANSWERED = "申领成功，但平台答复中没有卡号"


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


def _logged_reason(result: CallResultLike) -> str:
    return logged_reason(result.result_code, result.message or "")


class ResidentSender:
    """Sends one resident: claim in the journal, call, classify, record."""

    def __init__(
        self,
        client: ClientLike,
        journal: Journal,
        *,
        lookup_existing: bool = False,
        stop: threading.Event | None = None,
        resend: str = RESEND_SAME_COMMAND,
    ) -> None:
        self.client = client
        self.journal = journal
        self.lookup_existing = lookup_existing
        #: what a row that failed to send says to do, as true of the command sending it (messages.py)
        self.resend = resend
        self.stop = stop or threading.Event()
        self.calls = 0  # platform calls made (syncCardInfo + bindCardInfo), for the summary
        #: residents whose syncCardInfo left for the platform (a stop can cut a call short before it does)
        self.sent = 0
        #: syncCardInfo calls the platform answered with a result code (any code)
        self.answered = 0
        #: the first run-stopping fault met once an outcome was known (journal unwritable, platform gone
        #: during a lookup): the outcome was kept, nothing more is sent, the caller raises it at the end
        self.fault: EhcError | None = None
        #: why the latest call without a verdict got none (the client's own words, never the platform's)
        self.last_unanswered = ""
        #: residents whose recorded card turned out to be in doubt (a lookup found it another's, or the
        #: platform answered it for another resident too), with why: their outcome is unknown again
        self.withdrawn: dict[str, str] = {}
        self._count_lock = threading.Lock()
        self._holders: dict[str, str] = {}  # card id -> the resident first answered with it, the recent ones
        self._disputed: dict[str, str] = {}  # card id -> its first holder, once answered for another too

    def _first_holder(self, card_id: str, id_number: str) -> bool:
        """Whether no other resident of this run (its recent answers) was answered with ``card_id``.

        When one was, the card is in dispute: which of the two answers was meant for whom cannot be told
        (the first to arrive may be the one mixed up), so :meth:`settle_disputes` takes it from the first
        holder too once the calls are done.
        """
        if not card_id:
            return True
        with self._count_lock:
            holder = self._holders.setdefault(card_id, id_number)
            while len(self._holders) > RECENT_CARDS:
                del self._holders[next(iter(self._holders))]
            if holder != id_number:
                self._disputed.setdefault(card_id, holder)
        return holder == id_number

    def settle_disputes(self) -> None:
        """Make unknown again the outcome of every resident first answered with a card answered to another
        resident of this run as well (see :meth:`_first_holder`); call it once no call is in flight."""
        with self._count_lock:
            disputed, self._disputed = self._disputed, {}
        for card_id, holder in disputed.items():
            try:
                withdrawn = self.journal.withdraw([holder], card_id, MESSAGE_CARD_ANSWERED_TWICE)
            except EhcError as error:
                self._stopped_by(error)
                return
            if withdrawn:
                self.withdrawn[holder] = f"{MESSAGE_CARD_ANSWERED_TWICE}；{self.resend}"
                logger.warning("{} {}", mask_id(holder), MESSAGE_CARD_ANSWERED_TWICE)

    def _count_call(self, attempts: int, *, resident: bool = False) -> None:
        """Count a call that left for the platform (a stop can cut one short before it does)."""
        if not attempts:
            return
        with self._count_lock:
            self.calls += 1
            if resident:
                self.sent += 1

    def _stopped_by(self, error: EhcError) -> None:
        with self._count_lock:
            if self.fault is None:
                self.fault = error
                logger.error("{}", error.message)
        self.stop.set()

    def _record(self, id_number: str, state: str, code: int | None, message: str, *ids: str) -> None:
        """Write an outcome to the journal; if it cannot be written, stop the run but keep the outcome."""
        try:
            self.journal.record(id_number, state, code, message, *ids)
        except EhcError as error:
            self._stopped_by(error)

    def flush(self) -> None:
        """Checkpoint the journal (see :meth:`Journal.flush`); a failure stops the run like a failed write."""
        try:
            self.journal.flush()
        except EhcError as error:
            self._stopped_by(error)

    def send(self, task: Task) -> Outcome | None:
        """Send ``task`` and return its outcome (``None``: not sent, the journal could not claim it).

        Run-stopping faults raised by the client propagate; the resident then
        stays ``sending`` in the journal and the next run sends it again.
        """
        try:
            self.journal.mark_sending(
                task.id_number, task.source_file, task.source_row, task.card.get("orgCode", "")
            )
        except EhcError as error:  # nothing may leave unrecorded
            self._stopped_by(error)
            return None
        try:
            result = self.client.sync_card_info(task.card, task.people)
        except PlatformUnreachable as error:
            # The client raises it only before any request of the call left (the breaker open): the run
            # stops, and this row was not sent.
            with self._count_lock:
                self.fault = self.fault or error
            self.stop.set()
            self._record(task.id_number, STATE_FAILED, None, f"未发送：{error.message}")
            return Outcome(STATUS_FAILED, "", f"未发送：{error.message}")
        self._count_call(result.attempts, resident=True)
        code = result.result_code
        if code is not None:
            with self._count_lock:
                self.answered += 1
        masked = mask_id(task.id_number)
        if result.ok:
            card_id, virtual = _card_ids(result.data)
            if not card_id and not virtual:
                return self._enrolled_without_ids(task)
            if not self._first_holder(card_id, task.id_number):
                return self._answer_of_another(task)
            message = _platform_message(result)
            if not self._record_enrolled(task.id_number, message, card_id, virtual):
                return self._answer_of_another(task)
            logger.debug("{} 申领成功", masked)
            return Outcome(STATUS_ENROLLED, "", "申领成功", card_id, virtual)
        if code in _ENROLLED_CODES:
            return self._already_enrolled(task, result)
        if code is None and self.stop.is_set() and result.message.startswith("已中断"):
            # The stop cut a backoff or a rate-limit wait short: an earlier attempt may have arrived.
            # Stopped by a fault of the run (the platform gone, the journal full), not by the operator.
            word = "已中断" if self.fault is None else "已停止"
            message = result.message.replace("已中断", word, 1)
            self._record(task.id_number, STATE_FAILED, None, message)
            # The run stops and its file stays where the same command takes it again (the inbox too).
            return Outcome(STATUS_FAILED, "", f"{message}；{RESEND_SAME_COMMAND}")
        # The platform's own "network error": the outcome is unknown, not a refusal of the data.
        if code is None or code == ResultCode.NETWORK_ERROR:
            message = _platform_message(result) or "平台无应答"
            self._record(task.id_number, STATE_FAILED, code, message)
            # A request that reached the platform unanswered may have enrolled the resident: not "failed".
            unknown = result.unanswered
            if code is None:
                self.last_unanswered = message
            said = MESSAGE_OUTCOME_UNKNOWN if unknown else MESSAGE_SEND_FAILED
            logger.warning("{} {}（已尝试 {} 次）：{}", masked, said, result.attempts, _logged_reason(result))
            text = f"{said}（已尝试 {result.attempts} 次）：{message}。{self.resend}{RESEND_SAFELY}"
            return Outcome(STATUS_FAILED, "" if code is None else str(code), text)
        message = _platform_message(result)
        if code not in _DOCUMENTED_CODES:
            # Not one of the document's answers ("-1 系统异常", "99999 系统维护"): no verdict on the resident.
            message = MESSAGE_UNDOCUMENTED_CODE.format(code=code, message=message)
            self._record(task.id_number, STATE_FAILED, code, message)
            logger.warning("{} {}", masked, LOGGED_UNDOCUMENTED_CODE.format(code=code))
            return Outcome(STATUS_FAILED, str(code), f"{message}；{self.resend}")
        self._record(task.id_number, STATE_REJECTED, code, message)
        logger.info("{} 平台拒绝（{}）：{}", masked, code, _logged_reason(result))
        return Outcome(STATUS_REJECTED, str(code), message, fault_code=code)

    def _record_enrolled(self, id_number: str, message: str, card_id: str, virtual: str) -> bool:
        """Record an enrolment (see :meth:`_record`); False when the journal holds the card for another
        resident (a cached or replayed answer: nothing written)."""
        try:
            return self.journal.record_enrolled(id_number, ResultCode.SUCCESS, message, card_id, virtual)
        except EhcError as error:
            self._stopped_by(error)
            return True  # the platform's answer stands; the journal could not take it

    def _already_enrolled(self, task: Task, result: CallResultLike) -> Outcome:
        several = result.result_code == ResultCode.SEVERAL_CARDS_FOR_ID
        code = ResultCode.SEVERAL_CARDS_FOR_ID if several else ResultCode.ALREADY_ENROLLED
        lost = bool(getattr(result, "uncertain", False)) or task.prior in (STATE_SENDING, STATE_FAILED)
        if several:
            message = MESSAGE_SEVERAL_CARDS
        elif lost:
            message = MESSAGE_ANSWER_LOST
        elif task.prior == STATE_REJECTED:
            message = MESSAGE_ENROLLED_AFTER_REJECTION
        else:
            message = MESSAGE_ENROLLED_ELSEWHERE
        self._record(task.id_number, STATE_ENROLLED, code, message)
        masked = mask_id(task.id_number)
        logger.info("{} 已办理过（{}）{}", masked, code, "，上次答复可能丢失" if lost else "")
        card_id = virtual = ""
        note = MESSAGE_IDS_NOT_LOOKED_UP
        if self.lookup_existing and not self.stop.is_set():
            card_id, virtual, note = self._look_up(task)
        return Outcome(STATUS_ALREADY_ENROLLED, str(code), f"{message}；{note}", card_id, virtual)

    def _answer_of_another(self, task: Task) -> Outcome:
        """A 10000 naming the card of another resident: not this call's answer, so its outcome is unknown."""
        self._record(task.id_number, STATE_FAILED, None, MESSAGE_ANSWER_OF_ANOTHER)
        logger.warning("{} {}", mask_id(task.id_number), MESSAGE_ANSWER_OF_ANOTHER)
        return Outcome(STATUS_FAILED, "", f"{MESSAGE_ANSWER_OF_ANOTHER}；{self.resend}")

    def _enrolled_without_ids(self, task: Task) -> Outcome:
        """A 10000 naming no card: enrolled, the ids to be found with a lookup where allowed."""
        self._record(task.id_number, STATE_ENROLLED, ResultCode.SUCCESS, MESSAGE_NO_IDS_ANSWERED)
        logger.warning("{} {}", mask_id(task.id_number), MESSAGE_NO_IDS_ANSWERED)
        card_id = virtual = ""
        note = MESSAGE_IDS_NOT_LOOKED_UP
        if self.lookup_existing and not self.stop.is_set():
            card_id, virtual, note = self._look_up(task)
        return Outcome(STATUS_ENROLLED, "", f"{MESSAGE_NO_IDS_ANSWERED}；{note}", card_id, virtual)

    def recover(self, task: Task) -> Outcome:
        """Card ids of a resident the journal holds as enrolled without them, through ``bindCardInfo``."""
        card_id, virtual, note = self._look_up(task)
        return Outcome(STATUS_ALREADY_ENROLLED, "", note, card_id, virtual)

    def _look_up(self, task: Task) -> tuple[str, str, str]:
        """Card ids of an enrolled resident through ``bindCardInfo``, recorded in the journal; and a note.

        A run-stopping fault of the client stops the run (kept in :attr:`fault`);
        the resident keeps its outcome, without card ids.
        """
        people = task.people
        zjlx, zjhm = people.get("zjlx") or "01", people.get("zjhm") or task.id_number
        try:
            result = self.client.bind_card_info(
                zjlx=zjlx, zjhm=zjhm, xm=people.get("xm", ""), brdh=people.get("brdh", ""),
                bind_type="1", bind_zjlx=zjlx, bind_zjhm=zjhm,
            )  # fmt: skip
        except EhcError as error:
            self._stopped_by(error)
            return "", "", "卡号查询未完成（运行已停止）；再次运行同一命令会继续查询"
        self._count_call(result.attempts)
        card_id, virtual = _card_ids(result.data) if result.ok else ("", "")
        if card_id or virtual:
            try:
                corrected = self.journal.set_card_ids(task.id_number, card_id, virtual)
                if corrected:
                    with self._count_lock:
                        self.withdrawn.update(dict.fromkeys(corrected, MESSAGE_CARD_OF_ANOTHER))
                    logger.warning(
                        "{} 查得的卡号在提交日志中记在 {} 名下：其申领结果改为未知，下次运行会重新发送",
                        mask_id(task.id_number), "、".join(mask_id(other) for other in corrected),
                    )  # fmt: skip
            except EhcError as error:
                self._stopped_by(error)
            logger.info("{} 已通过 bindCardInfo 查得卡号", mask_id(task.id_number))
            return card_id, virtual, MESSAGE_IDS_FOUND
        code = "无应答" if result.result_code is None else str(result.result_code)
        reason = _platform_message(result) if result.result_code is not None else result.message
        logged = _logged_reason(result)
        logger.warning("{} bindCardInfo 查询卡号未成功（{}：{}）", mask_id(task.id_number), code, logged)
        return "", "", f"bindCardInfo 查询卡号未成功（{code}：{reason}）；下次运行会再查询"
