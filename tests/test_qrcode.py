"""QR code export: residents from a results folder or the journal, one checked PNG each."""

from __future__ import annotations

import base64
import contextlib
import csv
import errno
import io
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import segno
from conftest import SandboxHandle, make_resident
from submit_helpers import make_id, write_register

from pipeline.config import DefaultValues, Settings, SubmitSettings
from pipeline.errors import EhcError, InputError, PlatformUnreachable
from pipeline.platform.client import PlatformClient
from pipeline.platform.responses import CallResult
from pipeline.state.journal import STATE_ENROLLED, Journal
from pipeline.submission.qrcode import PNG_MAGIC, decode_png, export_qrcodes, read_holders
from pipeline.submission.submit import run_submit


def _png(text: str) -> bytes:
    buffer = io.BytesIO()
    segno.make(text).save(buffer, kind="png", scale=2)
    return buffer.getvalue()


class ImgClient:
    """Answers getImg with a real PNG, except for the card ids in ``broken`` / ``refused``."""

    def __init__(
        self, broken: set[str] = frozenset(), refused: set[str] = frozenset(), blank: set[str] = frozenset()
    ) -> None:
        self.broken, self.refused, self.blank = broken, refused, blank
        self.calls: list[str] = []

    def get_img(self, *, ehealth_card_id: str = "", virtual_card_num: str = "") -> CallResult:
        self.calls.append(ehealth_card_id)
        if ehealth_card_id in self.refused:
            return CallResult(10108, "身份证未办卡", {}, 1)
        qr_text = f"{ehealth_card_id}:0:{'0' * 32}"
        if ehealth_card_id in self.broken:  # a picture that is no PNG, and no text to draw one from
            return CallResult(10000, "操作成功", {"img": base64.b64encode(b"GIF89a...").decode()}, 1)
        if ehealth_card_id in self.blank:  # as the interface document's example answers: the text alone
            return CallResult(10000, "操作成功", {"qrCode": qr_text, "img": ""}, 1)
        img = base64.b64encode(_png(ehealth_card_id))
        return CallResult(10000, "操作成功", {"qrCode": qr_text, "img": img.decode()}, 1)


def _results(folder: Path, rows: list[tuple[str, int, str, str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=["source_file", "source_row", "status", "sfzhm", "ehealthCardId"])
    frame.insert(1, "source_sheet", "Sheet1")
    frame["virtualCardNum"] = ""
    frame.to_csv(folder / "results.csv", index=False, encoding="utf-8-sig")
    return folder


def test_decode_png_checks_the_magic() -> None:
    png = _png("hello")
    assert decode_png(base64.b64encode(png).decode()) == png
    assert decode_png("data:image/png;base64," + base64.b64encode(png).decode()) == png
    assert decode_png(base64.b64encode(b"not a png").decode()) is None
    assert decode_png("%%% not base64 %%%") is None


def test_export_from_results_folder(tmp_path: Path) -> None:
    a, b, c, d, e = (make_id(n) for n in range(5))
    folder = _results(
        tmp_path / "out",
        [
            ("reg.xlsx", 12, "enrolled", a, "A" * 64),
            ("reg.xlsx", 13, "already_enrolled", b, "B" * 64),
            ("reg.xlsx", 14, "already_enrolled", c, ""),  # enrolled elsewhere, ids unknown
            ("reg.xlsx", 15, "rejected", d, ""),
            ("reg.xlsx", 16, "enrolled", e, "E" * 64),
        ],
    )
    client = ImgClient(broken={"E" * 64})
    export = export_qrcodes(folder, tmp_path / "qr", client)
    written = export.written
    assert sorted(client.calls) == ["A" * 64, "B" * 64, "E" * 64]
    assert [p.name for p in written] == [
        f"row0012_{a[:6]}xxxxxxxx{a[-4:]}.png",
        f"row0013_{b[:6]}xxxxxxxx{b[-4:]}.png",
    ]
    for path in written:
        assert path.read_bytes().startswith(PNG_MAGIC)
    index = pd.read_csv(
        tmp_path / "qr" / "qrcodes.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig"
    )
    assert index["status"].tolist() == ["ok", "ok", "failed", "failed"]
    assert [(h.id_number, reason[:4]) for h, reason in export.failed] == [(c, "卡号未知"), (e, "getI")]
    assert a not in (tmp_path / "qr" / "qrcodes.csv").read_text(encoding="utf-8-sig"), "ID numbers are masked"
    assert not list((tmp_path / "qr").glob("*.part"))


def test_an_answer_with_the_qr_text_and_no_picture_is_drawn_as_the_document_shows(tmp_path: Path) -> None:
    a = make_id(1)
    folder = _results(tmp_path / "out", [("reg.xlsx", 12, "enrolled", a, "A" * 64)])
    export = export_qrcodes(folder, tmp_path / "qr", ImgClient(blank={"A" * 64}))
    (path,) = export.written
    assert not export.failed and path.read_bytes().startswith(PNG_MAGIC)


def test_qr_text_longer_than_a_qr_code_holds_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    # A misbehaving platform's qrCode of 5,000 characters: segno raised, and the export stopped for all.
    a, b = make_id(1), make_id(2)
    rows = [("reg.xlsx", 12, "enrolled", a, "A" * 64), ("reg.xlsx", 13, "enrolled", b, "B" * 64)]
    folder = _results(tmp_path / "out", rows)

    class Overlong(ImgClient):
        def get_img(self, *, ehealth_card_id: str = "", virtual_card_num: str = "") -> CallResult:
            if ehealth_card_id == "A" * 64:
                return CallResult(10000, "操作成功", {"qrCode": "x" * 5000, "img": ""}, 1)
            return super().get_img(ehealth_card_id=ehealth_card_id, virtual_card_num=virtual_card_num)

    export = export_qrcodes(folder, tmp_path / "qr", Overlong())
    [(holder, reason)] = export.failed
    assert holder.id_number == a and "没有有效的 PNG 图片" in reason
    assert len(export.written) == 1  # the other resident's picture is saved


def test_a_report_card_the_journal_has_since_withdrawn_is_not_exported(tmp_path: Path) -> None:
    a, b = make_id(1), make_id(2)
    folder = _results(
        tmp_path / "out",
        [("reg.xlsx", 12, "enrolled", a, "A" * 64), ("reg.xlsx", 13, "enrolled", b, "A" * 64)],
    )
    with Journal(tmp_path / "journal.sqlite") as journal:  # b's card turned out to be a's
        journal.record(b, STATE_ENROLLED, 10000, "操作成功", "A" * 64, "")
        journal.record(a, STATE_ENROLLED, 10115, "平台答复已办理")
        journal.set_card_ids(a, "A" * 64, "")
    client = ImgClient()
    export = export_qrcodes(folder, tmp_path / "qr", client, journal_path=tmp_path / "journal.sqlite")
    assert client.calls == ["A" * 64]  # one card, one picture: a's
    assert [(h.id_number, reason[:4]) for h, reason in export.failed] == [(b, "提交日志")]


class DyingClient(ImgClient):
    """Answers ``alive`` getImg calls, then the platform is gone (the client's breaker has opened)."""

    def __init__(self, alive: int) -> None:
        super().__init__(refused={"R" * 64})
        self.alive, self.interrupted = alive, False

    def get_img(self, *, ehealth_card_id: str = "", virtual_card_num: str = "") -> CallResult:
        if len(self.calls) >= self.alive:
            raise PlatformUnreachable("平台无法访问：已停止发送", "平台无法访问")
        return super().get_img(ehealth_card_id=ehealth_card_id, virtual_card_num=virtual_card_num)

    def interrupt(self) -> None:
        self.interrupted = True


def test_an_export_stopped_by_the_platform_lists_everyone_in_qrcodes_csv(tmp_path: Path) -> None:
    rows = [("reg.xlsx", 10 + n, "enrolled", make_id(n), chr(65 + n) * 64) for n in range(12)]
    folder = _results(tmp_path / "out", rows)
    client = DyingClient(alive=3)
    with pytest.raises(PlatformUnreachable):
        export_qrcodes(folder, tmp_path / "qr", client)
    assert client.interrupted
    index = pd.read_csv(tmp_path / "qr" / "qrcodes.csv", dtype=str, keep_default_na=False)
    assert len(index) == 12 and index["source_row"].tolist() == [str(10 + n) for n in range(12)]
    saved = index[index["status"] == "ok"]
    assert 1 <= len(saved) <= 3 and all((tmp_path / "qr" / name).exists() for name in saved["file"])
    assert (index.loc[index["status"] != "ok", "message"].str.contains("平台无法访问，导出已停止")).all()


@pytest.mark.parametrize("name", ["row0012_{masked}.png", "qrcodes.csv"])
def test_a_folder_named_like_a_picture_or_the_list_is_said_before_the_platform_is_asked(
    tmp_path: Path, name: str
) -> None:
    # A picture's name taken by a folder was an internal error (IsADirectoryError) after every call,
    # and qrcodes.csv blamed the platform; the list's said only 请给出文件的路径.
    a = make_id(1)
    folder = _results(tmp_path / "out", [("reg.xlsx", 12, "enrolled", a, "A" * 64)])
    (tmp_path / "qr" / name.format(masked=f"{a[:6]}xxxxxxxx{a[-4:]}")).mkdir(parents=True)
    client = ImgClient()
    with pytest.raises(EhcError) as stopped:
        export_qrcodes(folder, tmp_path / "qr", client)
    assert "同名的文件夹" in str(stopped.value) and "改名或移走" in str(stopped.value)
    assert client.calls == []


def test_a_picture_that_cannot_be_saved_stops_the_export_in_one_line_without_blaming_the_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.submission import qrcode

    rows = [("reg.xlsx", 10 + n, "enrolled", make_id(n), chr(65 + n) * 64) for n in range(3)]
    folder = _results(tmp_path / "out", rows)

    def disk_full(path: Path, data: bytes, **options: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(qrcode, "write_atomically", disk_full)
    with pytest.raises(EhcError) as stopped:
        export_qrcodes(folder, tmp_path / "qr", DyingClient(alive=99))
    assert "磁盘空间不足" in str(stopped.value) and "保存二维码图片" in str(stopped.value)
    index = pd.read_csv(tmp_path / "qr" / "qrcodes.csv", dtype=str, keep_default_na=False)
    assert len(index) == 3 and not index["message"].str.contains("平台无法访问").any()


def test_a_card_id_like_a_formula_from_an_old_results_csv_is_text_in_qrcodes_csv(tmp_path: Path) -> None:
    card_id = '=HYPERLINK("http://x","y")'
    folder = _results(tmp_path / "out", [("reg.xlsx", 12, "enrolled", make_id(1), card_id)])
    export_qrcodes(folder, tmp_path / "qr", ImgClient(refused={card_id}))
    [line] = list(csv.DictReader(io.StringIO((tmp_path / "qr" / "qrcodes.csv").read_text("utf-8-sig"))))
    assert line["ehealthCardId"] == "'" + card_id and line["status"] == "failed"


def test_export_from_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    a, b, c = make_id(1), make_id(2), make_id(3)
    with Journal(path) as journal:
        journal.record(a, STATE_ENROLLED, 10000, "", "A" * 64, "1" * 20)
        journal.record(b, STATE_ENROLLED, 10115, "")  # no card ids known
        journal.record(c, STATE_ENROLLED, 10000, "", "C" * 64, "3" * 20)
        journal.record(make_id(4), "rejected", 10124, "")
    client = ImgClient(refused={"C" * 64})
    export = export_qrcodes(path, tmp_path / "qr", client)
    assert [p.name for p in export.written] == [f"{a[:6]}xxxxxxxx{a[-4:]}.png"]
    assert sorted(h.id_number for h, _ in export.failed) == [b, c], "no resident is skipped silently"
    assert sorted(client.calls) == ["A" * 64, "C" * 64]


def test_several_registers_name_their_file(tmp_path: Path) -> None:
    a, b = make_id(1), make_id(2)
    folder = _results(
        tmp_path / "out",
        [("north.xlsx", 2, "enrolled", a, "A" * 64), ("south.csv", 2, "enrolled", b, "B" * 64)],
    )
    holders = read_holders(folder)
    assert [h.file_name() for h in holders] == [
        f"north_row0002_{a[:6]}xxxxxxxx{a[-4:]}.png",
        f"south_row0002_{b[:6]}xxxxxxxx{b[-4:]}.png",
    ]


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("missing", "找不到"), ("folder without results", "results.csv"), ("not sqlite", "SQLite"),
        ("a dry run's results", "ehc validate"), ("re-saved by Excel", "UTF-8"),
        ("another program's SQLite", "SQLite"),
    ],
)  # fmt: skip
def test_bad_sources_are_input_errors(tmp_path: Path, kind: str, said: str) -> None:
    source = tmp_path / "x"
    if kind == "folder without results":
        source.mkdir()
    elif kind == "not sqlite":
        source.write_text("hello", encoding="utf-8")
    elif kind == "a dry run's results":  # it would have said "0 saved", exit 0
        _results(source, [("r.xlsx", 2, "valid", make_id(1), ""), ("r.xlsx", 3, "invalid", make_id(2), "")])
    elif kind == "another program's SQLite":  # it said "0 saved", exit 0, and added our tables to it
        with contextlib.closing(sqlite3.connect(source)) as db:
            db.execute("CREATE TABLE visits (id INTEGER)")
            db.commit()
    elif kind == "re-saved by Excel":
        _results(source, [("登记表.xlsx", 2, "enrolled", make_id(1), "A" * 64)])
        (source / "results.csv").write_bytes((source / "results.csv").read_text("utf-8-sig").encode("gbk"))
    before = source.read_bytes() if source.is_file() else b""
    with pytest.raises(InputError, match=said):
        export_qrcodes(source, tmp_path / "qr", ImgClient())
    assert (source.read_bytes() if source.is_file() else b"") == before  # looked at, never changed


def test_export_against_the_sandbox(sandbox: SandboxHandle, tmp_path: Path) -> None:
    people = [make_resident(serial)[1] for serial in range(600, 603)]
    register = write_register(tmp_path / "reg.csv", people)
    settings = Settings(
        platform=sandbox.settings(), submit=SubmitSettings(rate=0.0),
        defaults=DefaultValues(org_code="455400000"), state_dir=tmp_path / "state",
    )  # fmt: skip
    result = run_submit([register], tmp_path / "out", settings)
    assert result.counts is not None and result.counts["by_status"] == {"enrolled": 3}
    with PlatformClient(sandbox.settings(), tmp_path / "state") as client:
        from_folder = export_qrcodes(tmp_path / "out", tmp_path / "qr", client).written
        journal_path = tmp_path / "state" / "journal.sqlite"
        from_journal = export_qrcodes(journal_path, tmp_path / "qr-journal", client).written
    assert sandbox.count("getImg") == 6
    with open(tmp_path / "out" / "results.csv", encoding="utf-8-sig", newline="") as handle:
        sources = [int(record["source_row"]) for record in csv.DictReader(handle)]
    assert [p.name[:7] for p in from_folder] == [f"row{row:04d}" for row in sources]
    assert len(from_journal) == 3
    for path in [*from_folder, *from_journal]:
        assert path.read_bytes().startswith(PNG_MAGIC)
    masked = [p.name[8:-4] for p in from_folder]
    assert masked == [f"{p['sfzhm'][:6]}xxxxxxxx{p['sfzhm'][-4:]}" for p in people]


def test_a_picture_cut_short_or_garbage_behind_the_magic_is_no_png() -> None:
    png = _png("hello")
    assert decode_png(base64.b64encode(png).decode()) == png
    assert decode_png(base64.b64encode(png[: len(png) // 2]).decode()) is None  # an answer cut short
    assert decode_png(base64.b64encode(PNG_MAGIC + b"garbage" * 100).decode()) is None
    broken_header = png[:20] + bytes([png[20] ^ 1]) + png[21:]
    assert decode_png(base64.b64encode(broken_header).decode()) is None


def test_a_qr_code_of_another_card_is_not_saved_for_this_resident(tmp_path: Path) -> None:
    """A mixed-up getImg answer: the QR text names another card; its picture would be another resident's."""
    a, b = make_id(1), make_id(2)
    rows = [("reg.xlsx", 12, "enrolled", a, "A" * 64), ("reg.xlsx", 13, "enrolled", b, "B" * 64)]
    folder = _results(tmp_path / "out", rows)

    class MixedUp(ImgClient):
        def get_img(self, *, ehealth_card_id: str = "", virtual_card_num: str = "") -> CallResult:
            if ehealth_card_id == "A" * 64:  # B's picture and text
                return super().get_img(ehealth_card_id="B" * 64)
            return super().get_img(ehealth_card_id=ehealth_card_id, virtual_card_num=virtual_card_num)

    export = export_qrcodes(folder, tmp_path / "qr", MixedUp())
    [(holder, reason)] = export.failed
    assert holder.id_number == a and "属于另一张电子健康卡" in reason
    assert [p.name for p in export.written] == [f"row0013_{b[:6]}xxxxxxxx{b[-4:]}.png"]


def test_a_qr_text_naming_the_card_in_another_case_or_shape_is_this_cards(tmp_path: Path) -> None:
    a = make_id(1)
    folder = _results(tmp_path / "out", [("reg.xlsx", 12, "enrolled", a, "ab" * 32)])

    class Quoting(ImgClient):
        def __init__(self, qr_text: str) -> None:
            super().__init__()
            self.qr_text = qr_text

        def get_img(self, *, ehealth_card_id: str = "", virtual_card_num: str = "") -> CallResult:
            return CallResult(10000, "操作成功", {"qrCode": self.qr_text, "img": ""}, 1)

    for n, qr_text in enumerate(["AB" * 32 + ":0:" + "0" * 32, "13499170350361045507:0:1", "no colon"]):
        assert not export_qrcodes(folder, tmp_path / f"qr{n}", Quoting(qr_text)).failed, qr_text
