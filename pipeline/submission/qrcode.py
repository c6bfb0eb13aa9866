"""``ehc qrcode``: fetch the QR code picture of every enrolled resident with ``getImg``.

The residents come from a results folder (its ``results.csv``: rows
``enrolled`` or ``already_enrolled``) or from the journal itself (a
``.sqlite`` file: residents enrolled).  Each picture is written as one PNG
named after the source row and the masked ID number, e.g.
``row0012_420123xxxxxxxx4516.png`` (``x`` rather than ``*``, which Windows
forbids in file names); ``qrcodes.csv`` beside them lists every resident with
what became of it.

``getImg`` needs a card id.  A resident enrolled without one (the platform
answered 10115, e.g. after an answer lost on its way back) is looked up in
the journal, where a later ``ehc submit --lookup-existing`` stores the ids it
recovers; a resident still without ids is not silently skipped: it is
listed as not exported, with how to recover its ids, and the command exits 1.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import segno
from loguru import logger

from pipeline.errors import EhcError, InputError, PlatformError
from pipeline.files import numbered, os_errors, write_atomically
from pipeline.logs import mask_id
from pipeline.model import STATUS_ALREADY_ENROLLED, STATUS_ENROLLED, STATUS_INVALID, STATUS_VALID
from pipeline.platform.responses import logged_reason
from pipeline.reports.results_csv import neutralised
from pipeline.state.journal import STATE_ENROLLED, Journal, is_journal, visible_card_ids

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SQLITE_MAGIC = b"SQLite format 3\x00"
RESULTS_CSV = "results.csv"
INDEX_CSV = "qrcodes.csv"
#: getImg calls in parallel; the client's rate limit still applies across them.
WORKERS = 4


@dataclass(frozen=True)
class Holder:
    """One resident whose QR code is wanted."""

    file_stem: str  # the register's name, when a results folder spans several
    source_row: int | None
    id_number: str
    ehealth_card_id: str
    virtual_card_num: str
    #: the journal no longer holds the resident as enrolled (the card ids a report gave were not theirs)
    withdrawn: bool = False
    #: the centre (``orgCode``) of the row in the results folder: the journal shows it its own cards only
    org_code: str = ""

    def file_name(self) -> str:
        """``[stem_]row0012_420123xxxxxxxx4516.png`` (rowless sources: the masked ID alone)."""
        masked = mask_id(self.id_number).replace("*", "x") if self.id_number else self.ehealth_card_id[:16]
        name = masked if self.source_row is None else f"row{self.source_row:04d}_{masked}"
        return f"{self.file_stem}_{name}.png" if self.file_stem else f"{name}.png"

    @property
    def has_ids(self) -> bool:
        """Whether a card id is known (``getImg`` needs one)."""
        return bool(self.ehealth_card_id or self.virtual_card_num)

    def label(self) -> str:
        """How the clerk finds this resident: register, row, masked ID number."""
        where = f"{self.file_stem} " if self.file_stem else ""
        if self.source_row is not None:
            where += f"第 {self.source_row} 行 "
        return f"{where}{mask_id(self.id_number)}"


#: Why a resident enrolled without card ids gets no picture, and how to change that.
MESSAGE_NO_CARD_IDS = (
    "卡号未知（平台答复已办理，但没有给出卡号），无法获取二维码。"
    "处理办法：用 ehc submit --lookup-existing 重新提交该登记表查询卡号（会在平台上绑定该卡），"
    "再运行 ehc qrcode"
)

#: Why a resident of a results folder gets no picture once the journal has withdrawn their card ids.
MESSAGE_WITHDRAWN = (
    "提交日志显示此人的申领结果未知（报告中的卡号经查询属于另一位居民），无法获取二维码。"
    "处理办法：重新运行 ehc submit 提交该登记表，再运行 ehc qrcode"
)

#: Why a resident gets no picture when getImg answered with the QR code of another card.
MESSAGE_ANOTHER_CARD = (
    "getImg 答复的二维码属于另一张电子健康卡（不是所查询的卡），未保存。"
    "处理办法：稍后重新运行 ehc qrcode；仍然如此请联系平台"
)

#: Why a resident has no picture when the export was stopped before its turn.
MESSAGE_INTERRUPTED = "未获取：导出被中断。重新运行 ehc qrcode 即可补齐（已保存的图片会重新获取）"
MESSAGE_STOPPED = "未获取：平台无法访问，导出已停止。平台恢复后重新运行 ehc qrcode 即可补齐"
MESSAGE_HALTED = "未获取：导出因错误停止（原因见屏幕上的错误）。改正后重新运行 ehc qrcode 即可补齐"


#: Reasons no new getImg call can change: the resident has no card ids to ask with.
MESSAGES_WITHOUT_CALL = frozenset({MESSAGE_NO_CARD_IDS, MESSAGE_WITHDRAWN})


@dataclass(frozen=True)
class QrExport:
    """What an export did: the pictures written, and every resident without one with the reason."""

    written: list[Path]
    failed: list[tuple[Holder, str]]

    @property
    def retryable(self) -> int:
        """Residents without a picture whom another export may give one (getImg failed; card ids known)."""
        return sum(reason not in MESSAGES_WITHOUT_CALL for _, reason in self.failed)


def _from_results(folder: Path) -> list[Holder]:
    path = folder / RESULTS_CSV
    if not path.is_file():
        raise InputError(
            f"文件夹中没有 {RESULTS_CSV}",
            file=str(folder),
            fix="请指定 ehc submit 的 --out 结果文件夹，或提交日志文件",
        )
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(
            "不是 ehc 写出的 UTF-8 文件（可能被 Excel 另存过）",
            file=str(path),
            fix="请重新运行 ehc submit 生成",
        ) from None
    except (OSError, ValueError) as error:
        raise InputError(
            f"无法读取（{type(error).__name__}）", file=str(path), fix="请重新运行 ehc submit 生成"
        ) from None
    needed = {"status", "ehealthCardId"}
    if not needed <= set(table.columns):
        raise InputError(
            f"缺少列 {', '.join(sorted(needed - set(table.columns)))}",
            file=str(path),
            fix="请使用 ehc submit 生成的 results.csv",
        )
    if len(table) and set(table["status"]) <= {STATUS_VALID, STATUS_INVALID}:
        raise InputError(
            "这是检查（ehc validate）的结果，其中没有提交过的居民",
            file=str(path),
            fix="请指定 ehc submit 的 --out 结果文件夹，或状态目录下的 journal.sqlite",
        )
    for column in ("source_file", "source_row", "sfzhm", "virtualCardNum", "orgCode"):
        if column not in table.columns:
            table[column] = ""
    chosen = table[table["status"].isin([STATUS_ENROLLED, STATUS_ALREADY_ENROLLED])]
    several_files = chosen["source_file"].nunique() > 1
    rows = pd.to_numeric(chosen["source_row"], errors="coerce")
    return [
        Holder(
            file_stem=Path(str(name)).stem if several_files else "",
            source_row=None if pd.isna(row) else int(row),
            id_number=str(id_number),
            ehealth_card_id=str(card_id).strip(),
            virtual_card_num=str(virtual).strip(),
            org_code=str(org_code).strip(),
        )
        for name, row, id_number, card_id, virtual, org_code in zip(
            chosen["source_file"], rows, chosen["sfzhm"], chosen["ehealthCardId"], chosen["virtualCardNum"],
            chosen["orgCode"], strict=True,
        )
    ]  # fmt: skip


def _from_journal(path: Path) -> list[Holder]:
    with Journal(path) as journal:
        enrolled = journal.residents(STATE_ENROLLED)
    return [
        Holder("", None, str(id_number), str(card_id), str(virtual))
        for id_number, card_id, virtual in zip(
            enrolled.index, enrolled["ehealth_card_id"], enrolled["virtual_card_num"], strict=True
        )
    ]


def _with_ids_from_journal(holders: list[Holder], journal_path: Path | None) -> list[Holder]:
    """Holders with the card ids the journal now has for them: it is newer than a results folder.

    Ids a later run recovered fill the ones missing; a resident the journal no
    longer holds as enrolled (a later lookup found their card to be another
    resident's: the answer they were recorded from was not theirs) keeps none.
    """
    wanted = [h.id_number for h in holders if h.id_number]
    if not wanted or journal_path is None or not Path(journal_path).is_file():
        return holders
    with Journal(journal_path) as journal:
        known = journal.lookup_many(
            wanted, columns=("state", "ehealth_card_id", "virtual_card_num", "org_code")
        )
    # One row per holder (the journal's entry for its ID number, or none), the card ids as its centre
    # may see them: the whole list at once, not a lookup per resident.
    entries = known.reindex([h.id_number for h in holders])
    cards = visible_card_ids(entries.fillna(""), [h.org_code for h in holders])
    checked = []
    for holder, state, card_id, virtual in zip(
        holders, entries["state"], cards["ehealth_card_id"], cards["virtual_card_num"], strict=True
    ):
        if isinstance(state, str) and state != STATE_ENROLLED:
            holder = replace(holder, ehealth_card_id="", virtual_card_num="", withdrawn=True)
        elif isinstance(state, str) and (card_id or virtual):
            holder = replace(holder, ehealth_card_id=str(card_id), virtual_card_num=str(virtual))
        checked.append(holder)
    return checked


def read_holders(source: Path, journal_path: Path | None = None) -> list[Holder]:
    """The residents to fetch from ``source``: a results folder or a journal file.

    For a results folder, card ids missing there are taken from the journal at
    ``journal_path`` when it has them.
    """
    source = Path(source)
    # Even asking what it is fails for a name too long or a folder not to be entered.
    with os_errors("读取", source, kind=InputError):
        is_folder = source.is_dir()
        is_file = not is_folder and source.is_file()
        if is_file:
            with open(source, "rb") as handle:
                magic = handle.read(len(SQLITE_MAGIC))
    if is_folder:
        return _with_ids_from_journal(_from_results(source), journal_path)
    if not is_file:
        raise InputError(
            "找不到该文件或文件夹", file=str(source), fix="请指定 ehc submit 的结果文件夹或提交日志文件"
        )
    if magic != SQLITE_MAGIC or not is_journal(source):
        raise InputError(
            "既不是结果文件夹，也不是提交日志（SQLite）文件", file=str(source),
            fix="请指定 ehc submit 的 --out 结果文件夹，或状态目录下的 journal.sqlite",
        )  # fmt: skip
    return _from_journal(source)


#: A PNG's last chunk, whole: an answer cut short, or garbage after the magic, lacks it.
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _whole_png(raw: bytes) -> bool:
    """Whether ``raw`` is framed as a PNG: the magic, an intact IHDR chunk first, IEND last."""
    if not raw.startswith(PNG_MAGIC) or len(raw) < len(PNG_MAGIC) + 25 + len(PNG_END):
        return False
    header = raw[8:33]  # length (13), "IHDR", 13 bytes of data, CRC over type and data
    if header[:8] != b"\x00\x00\x00\x0dIHDR":
        return False
    return zlib.crc32(header[4:21]) == int.from_bytes(header[21:], "big") and raw.endswith(PNG_END)


def decode_png(img: str) -> bytes | None:
    """The PNG bytes of a base64 ``img`` (a ``data:`` prefix allowed), or None if it is not a whole PNG.

    Only the magic would let through a picture cut short or garbage behind
    it, written as a file that no viewer opens and listed as exported.
    """
    text = img.strip()
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if _whole_png(raw) else None


def _names_another_card(qr_text: str, ehealth_card_id: str) -> bool:
    """Whether getImg answered the QR text (``<ehealthCardId>:0:<32 hex>``) of a card other than asked.

    Only a text whose first field has the shape of the card id asked (its
    length) is judged, so a platform writing the QR text otherwise loses no
    picture; such a text naming another id answered some other request (a
    proxy or the platform mixing answers up): its picture is another
    resident's card.
    """
    first, colon, _ = qr_text.partition(":")
    if not colon or not ehealth_card_id or len(first) != len(ehealth_card_id):
        return False
    return first.casefold() != ehealth_card_id.casefold()


def _fetch(client: Any, holder: Holder, path: Path) -> tuple[str, str]:
    """Fetch and write one picture; ``("", "")`` on success, else the Chinese reason and its log form.

    The log form names a platform's refusal by its code's own words: the
    platform's message may quote the resident, and qrcodes.csv keeps it.
    """
    if holder.withdrawn:
        return MESSAGE_WITHDRAWN, MESSAGE_WITHDRAWN
    if not holder.has_ids:
        return MESSAGE_NO_CARD_IDS, MESSAGE_NO_CARD_IDS
    result = client.get_img(ehealth_card_id=holder.ehealth_card_id, virtual_card_num=holder.virtual_card_num)
    if not result.ok:
        code = "无应答" if result.result_code is None else str(result.result_code)
        logged = logged_reason(result.result_code, result.message)
        return f"getImg 未成功（{code}）：{result.message}", f"getImg 未成功（{code}）：{logged}"
    qr_text = str(result.data.get("qrCode", ""))
    if _names_another_card(qr_text, holder.ehealth_card_id):
        return MESSAGE_ANOTHER_CARD, MESSAGE_ANOTHER_CARD
    png = decode_png(str(result.data.get("img", ""))) or drawn_png(qr_text)
    if png is None:
        reason = (
            f"getImg 答复成功（{result.result_code}），但既没有有效的 PNG 图片，也没有可用的二维码原始数据"
        )
        return reason, reason
    with os_errors("保存二维码图片", path):  # a full disk: the export stops, told in one line
        write_atomically(path, png)
    return "", ""


def drawn_png(qr_text: str) -> bytes | None:
    """The PNG of the QR code holding ``qr_text`` (the answer's 二维码原始数据), or None without one.

    The interface document's own example answers ``"img": ""`` beside the
    ``qRCode`` text: the picture is then drawn here, as the platform would.
    """
    if not qr_text:
        return None
    try:
        code = segno.make(qr_text, error="m")
    except segno.DataOverflowError:  # more than a QR code holds: the platform's answer is no QR text
        return None
    buffer = io.BytesIO()
    code.save(buffer, kind="png", scale=4, border=2)
    return buffer.getvalue()


def export_qrcodes(
    source: Path,
    out_dir: Path,
    client: Any,
    journal_path: Path | None = None,
    on_progress: Callable[[int, int], object] | None = None,
) -> QrExport:
    """Write one QR code PNG per enrolled resident of ``source`` into ``out_dir``.

    Residents whose picture cannot be fetched (card ids unknown included) are
    logged, listed in ``qrcodes.csv`` with the reason and returned in
    :attr:`QrExport.failed`; they do not stop the others.  ``journal_path``
    supplies card ids a results folder lacks.  Run-stopping faults of the
    client (authentication, unreachable) propagate.  ``on_progress(done,
    total)`` is called once the residents are known (``done`` 0) and after
    each resident, one call at a time.
    """
    holders = read_holders(source, journal_path)
    out_dir = Path(out_dir)
    with os_errors("创建输出文件夹", out_dir, kind=InputError):
        out_dir.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    targets = []
    for holder in holders:
        # Two residents with the same row and masked ID: keep both.
        name = numbered(Path(holder.file_name()).stem, names, suffix=".png")
        names.add(name)
        targets.append(out_dir / name)
    _refuse_folders_in_the_way([*targets, out_dir / INDEX_CSV])
    logger.info("获取二维码：{} 人", len(holders))
    counted = _Counter(len(holders), on_progress)
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ehc-qr") as pool:
        futures = [pool.submit(_fetch, client, h, t) for h, t in zip(holders, targets, strict=True)]
        for future in futures:
            future.add_done_callback(counted.one)
        try:
            for future in futures:
                future.result()
        except BaseException as error:  # Ctrl-C, the platform gone: no new call starts, calls in flight end
            client.interrupt()
            for future in futures:
                future.cancel()
            wait(futures)
            stopped = (
                MESSAGE_INTERRUPTED
                if isinstance(error, KeyboardInterrupt)
                else MESSAGE_STOPPED
                if isinstance(error, PlatformError)
                else MESSAGE_HALTED
            )
            _write_index(out_dir, holders, targets, [_outcome(f, stopped)[0] for f in futures])
            raise
    fetched = [future.result() for future in futures]  # every fetch is done
    reasons = [reason for reason, _ in fetched]
    _write_index(out_dir, holders, targets, reasons)
    written = [path for path, reason in zip(targets, reasons, strict=True) if not reason]
    for holder, (reason, logged) in zip(holders, fetched, strict=True):
        if reason:
            logger.warning("{} 的二维码未能获取：{}", mask_id(holder.id_number), logged)
    logger.info(
        "二维码已保存：{} 个，未成功 {} 个，目录 {}", len(written), len(holders) - len(written), out_dir
    )
    failed = [(holder, reason) for holder, reason in zip(holders, reasons, strict=True) if reason]
    return QrExport(written, failed)


class _Counter:
    """Residents done so far, told to ``on_progress`` one call at a time (fetches end on several threads)."""

    def __init__(self, total: int, on_progress: Callable[[int, int], object] | None) -> None:
        self._lock = threading.Lock()
        self._done = 0
        self._total = total
        self._on_progress = on_progress
        if on_progress is not None:
            on_progress(0, total)

    def one(self, _: object) -> None:
        """One more resident done (a future's done callback)."""
        if self._on_progress is None:
            return
        with self._lock:
            self._done += 1
            self._on_progress(self._done, self._total)


def _refuse_folders_in_the_way(paths: list[Path]) -> None:
    """Refuse, before the platform is asked, an export whose picture or list has a folder's name."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            raise EhcError(
                f"无法保存 {path}：输出目录中已有同名的文件夹。"
                "处理办法：把这个文件夹改名或移走，或换一个 --out 目录，再重新运行"
            )


def _outcome(future: Future[tuple[str, str]], otherwise: str) -> tuple[str, str]:
    """A fetch's (reason, logged reason); ``otherwise`` for one never done (the export was stopped)."""
    if future.done() and not future.cancelled() and future.exception() is None:
        return future.result()
    return otherwise, otherwise


def _write_index(out_dir: Path, holders: list[Holder], targets: list[Path], reasons: list[str]) -> None:
    """``qrcodes.csv``: every resident, its picture or why there is none (text that no spreadsheet runs)."""
    ids = neutralised(pa.array([holder.ehealth_card_id for holder in holders], pa.large_string())).to_pylist()
    texts = neutralised(pa.array(reasons, pa.large_string())).to_pylist()
    index = out_dir / INDEX_CSV
    with os_errors("写入", index, kind=InputError), open(index, "w", newline="", encoding="utf-8-sig") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "source_row", "id_masked", "ehealthCardId", "status", "message"])
        lines = zip(holders, targets, reasons, ids, texts, strict=True)
        for holder, target, reason, card_id, text in lines:
            writer.writerow([
                target.name if not reason else "", "" if holder.source_row is None else holder.source_row,
                mask_id(holder.id_number), card_id, "failed" if reason else "ok", text,
            ])  # fmt: skip


#: Residents named per reason in the summary; the rest are counted (all are in qrcodes.csv).
NAMED_PER_REASON = 200


def describe_export(export: QrExport, out_dir: Path) -> str:
    """The lines ``ehc qrcode`` prints: pictures written, then every resident without one, by reason."""
    lines = [f"已保存 {len(export.written)} 个二维码图片到 {out_dir}"]
    if not export.failed:
        return lines[0]
    lines.append(f"未能导出 {len(export.failed)} 人的二维码（逐人原因见 {Path(out_dir) / INDEX_CSV}）：")
    by_reason: dict[str, list[Holder]] = {}
    for holder, reason in export.failed:
        by_reason.setdefault(reason, []).append(holder)
    for reason, holders in by_reason.items():
        names = "、".join(holder.label() for holder in holders[:NAMED_PER_REASON])
        if len(holders) > NAMED_PER_REASON:
            names += f" 等 {len(holders)} 人"
        lines.append(f"- {reason}：{names}")
    return "\n".join(lines)
