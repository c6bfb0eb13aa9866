"""Editing one cell: the row and the rows sharing its ID number are re-checked as a full dry run would."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from pipeline.config import DefaultValues, Settings
from pipeline.dryrun import prepare_batch
from pipeline.web import accounts, checking, editing, engine
from pipeline.web.jobfiles import JobFiles, new_job_id
from pipeline.web.store import Job, Store, User
from tests.submit_helpers import make_id

TODAY = date(2026, 6, 1)
ORG = "455400001"


class Bench:
    """A checked job over a small CSV, and the means to edit it."""

    def __init__(self, tmp_path: Path, rows: list[tuple[str, str]]) -> None:
        self.state = tmp_path / "state"
        self.settings = Settings(state_dir=self.state)
        self.store = Store(self.state)
        accounts.add_centre(self.store, ORG, "甲中心")
        self.user: User = accounts.add_user(self.store, "clerk", ORG, "a-long-password-1")
        self.cells = [
            [name, "", "汉族", id_number, "13900001111", "城镇职工基本医疗保险"] for name, id_number in rows
        ]
        source = tmp_path / "名单.csv"
        self.write(source)
        self.job_id = new_job_id()
        files = JobFiles(self.state, self.job_id)
        files.create()
        shutil.copy(source, files.upload("名单.csv"))
        centre = self.store.centre_by_code(ORG)
        assert centre is not None
        self.store.add_job(
            self.job_id, centre.id, self.user.id, "名单.csv", "名单.csv", source.stat().st_size
        )
        assert checking.check_job(self.state, self.job_id, self.settings, TODAY) == "checked"

    def write(self, path: Path) -> None:
        """The register as it stands (with the edits :meth:`edit` made), as a CSV at ``path``."""
        lines = ["姓名,性别,民族,身份证号码,联系电话,医保类型", *(",".join(row) for row in self.cells)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def job(self) -> Job:
        job = self.store.job_any(self.job_id)
        assert job is not None
        return job

    def edit(self, row_id: int, field: str, value: str) -> editing.EditResult:
        self.cells[row_id][["xm", "xb", "mzdm", "sfzhm", "brdh", "ylfyzffs"].index(field)] = value
        return editing.edit_cell(
            self.store, self.state, self.job, row_id, field, value,
            user=self.user, settings=self.settings, org_code=ORG, today=TODAY,
        )  # fmt: skip

    def status(self, row_id: int) -> str:
        return self.store.rows(self.job_id, [row_id])[row_id].status

    def codes(self, row_id: int) -> set[int]:
        return {fault[4] for fault in self.store.faults_of(self.job_id, [row_id])}


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    x, y = make_id(1, "19800101", "440604"), make_id(2, "19810202", "440604")
    return Bench(tmp_path, [("甲", x), ("乙", x), ("丙", y), ("丁", "440604198001011234")])


def test_fixing_the_first_of_two_rows_frees_the_second(bench: Bench) -> None:
    assert bench.codes(1) == {10115} and bench.codes(3) == {10111}
    result = bench.edit(0, "sfzhm", make_id(3, "19820303", "440604"))
    assert result.row.status == "valid" and result.changed == {1: "valid"}
    assert bench.status(1) == "valid" and bench.codes(1) == set()


def test_an_edit_that_repeats_an_earlier_id_number_gets_10115_and_frees_it_again(bench: Bench) -> None:
    y = make_id(2, "19810202", "440604")
    result = bench.edit(3, "sfzhm", y)
    assert result.row.status == "invalid" and [f[2] for f in result.faults] == [10115]
    assert "与第 4 行重复" in result.faults[0][4]  # row 4 of the file (its header is row 1) holds it first
    assert result.others == {2: ("valid", [])}  # the row holding it first: checked again, unchanged
    freed = bench.edit(2, "sfzhm", make_id(4, "19830404", "440604"))
    assert bench.status(3) == "valid"
    assert freed.others[3] == ("valid", [])  # what the page shows on row 3's lines now


def test_the_edited_row_becomes_what_a_full_dry_run_of_the_edited_file_gives(bench: Bench) -> None:
    bench.edit(0, "sfzhm", make_id(3, "19820303", "440604"))
    bench.edit(3, "sfzhm", make_id(2, "19810202", "440604"))
    bench.edit(1, "xm", "")
    bench.edit(1, "xm", "乙二")
    bench.edit(2, "mzdm", "穿青人")
    job = bench.job
    files = JobFiles(bench.state, job.id)
    edits = checking.edits_frame(bench.store.edits(job.id))
    batch = engine.build_batch(
        files.upload(job.stored_name),
        job.aliases,
        edits,
        bench.settings,
        ORG,
        file_name=job.file_name,
        today=TODAY,
    )
    full = {(int(f.row_id), f.field, int(f.code), f.severity, f.message) for f in batch.faults.itertuples()}
    stored = {(r, f, c, s, m) for r, _, f, _, c, s, m in bench.store.faults_of(job.id)}
    assert stored == full
    assert [r.status for r in bench.store.all_rows(job.id)] == batch.outcome["status"].tolist()
    assert bench.store.counts(job.id)["status"] == batch.outcome["status"].value_counts().to_dict()
    history = bench.store.edit_history(job.id)
    assert len(history) == 5 and history[1][4:] == ("", "乙二")


def test_an_unchanged_value_changes_nothing(bench: Bench) -> None:
    version = bench.job.version
    result = bench.edit(2, "xm", "丙")
    assert result.version == version and not bench.store.edits(bench.job_id)


def test_enrolled_rows_and_busy_jobs_are_not_edited(bench: Bench) -> None:
    bench.store.set_outcomes(bench.job_id, [("enrolled", "", "申领成功", "CARD", "VIRTUAL", 2)])
    with pytest.raises(editing.EditRefused, match="申领成功"):
        bench.edit(2, "xm", "新名")
    bench.store.update_job(bench.job_id, state="submitting")
    with pytest.raises(editing.EditRefused, match="正在"):
        bench.edit(0, "xm", "新名")
    bench.store.update_job(bench.job_id, state="needs_mapping")  # says what to do, not "busy"
    with pytest.raises(editing.EditRefused, match="列对应关系"):
        bench.edit(0, "xm", "新名")
    bench.store.update_job(bench.job_id, state="unreadable")
    with pytest.raises(editing.EditRefused, match="无法读取"):
        bench.edit(0, "xm", "新名")


def test_every_row_after_a_run_of_edits_is_what_ehc_validate_of_the_edited_file_says(
    bench: Bench, tmp_path: Path
) -> None:
    x, y = make_id(1, "19800101", "440604"), make_id(2, "19810202", "440604")
    for row_id, field, value in [
        (3, "sfzhm", y),  # now repeats row 2's number: 10115 naming the row it first appears on
        (0, "sfzhm", y),  # the first row takes it too: rows 2 and 3 both repeat row 0
        (0, "sfzhm", "４４０６０４ １９８００１０１００１" + x[-1]),  # back to x (full-width, a space)
        (2, "sfzhm", make_id(5, "19850505", "440604")),
        (1, "xb", " 女 "),
        (1, "xb", "1"),
    ]:
        bench.edit(row_id, field, value)
        edited = tmp_path / "edited" / "名单.csv"
        edited.parent.mkdir(exist_ok=True)
        bench.write(edited)
        settings = Settings(state_dir=tmp_path / "cli", defaults=DefaultValues(org_code=ORG))
        outcome = prepare_batch([edited], settings, today=TODAY).outcome
        stored = bench.store.all_rows(bench.job_id)
        assert [(r.status, r.result_code, r.message) for r in stored] == list(
            zip(outcome["status"], outcome["result_code"], outcome["message"], strict=True)
        ), (row_id, field, value)
