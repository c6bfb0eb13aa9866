"""``make bench``: time ``ehc`` against raw baselines in the same run and print the ratios.

    .venv/bin/python bench/run.py [--quick] [--big] [--repeat N] [--only NAME ...] [NAME ...]

NAME: csv, xlsx, big, rate, cpu, rerun, web.

Synthetic registers are generated into ``bench/data/`` (kept across runs, named
by size, seed and a hash of the generator's source); reports go to
``bench/out/``.  Every command runs in its own process, measured with
``wait4`` (wall time, CPU time, peak RSS).  Timed figures are repeated
(``--repeat``, alternating with their baseline) and the medians compared; the
machine's load average is noted beside them.  ``--big`` adds the
10,000,000-row CSV (``make bench BIG=1``).  The table is printed at the end and
saved as ``bench/out/results.json``.  See ``bench/README.md`` for what each
figure means.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import clerk, synth
from bench.measure import ROOT, Measured, Sandbox, ehc, ehc_env, max_in_window, measure, python

DATA = ROOT / "bench" / "data"
OUT = ROOT / "bench" / "out"
BASELINES = str(ROOT / "bench" / "baselines.py")

#: Rows per figure: full run and ``--quick``.
SIZES = {
    "full": {
        "csv": 1_000_000, "xlsx": 100_000, "big": 10_000_000, "rate": 2_000, "cpu": 3_000, "rerun": 100_000,
        "web": 100_000,
    },
    "quick": {
        "csv": 100_000, "xlsx": 10_000, "big": 1_000_000, "rate": 300, "cpu": 1_000, "rerun": 5_000,
        "web": 10_000,
    },
}  # fmt: skip

#: Targets of the dry-run figures.
CSV_RATIO = 2.5  # 1M-row CSV dry run against a raw pandas/pyarrow read of it
XLSX_RATIO = 1.5  # 100k-row xlsx with every output against a calamine read + xlsxwriter write
BIG_RSS_MB = 3072  # 10M-row CSV dry run: peak memory
BIG_RATIO = 11.0  # 10M-row CSV dry run against the 1M-row one of the same run

#: Times each timed figure is measured (medians are compared); ``--repeat`` changes it.
REPEAT = 3
_OPTIONS = {"repeat": REPEAT}
RATE = 50.0
LATENCY_MS = 100.0
UNLIMITED = "1000"  # the highest --rate the command takes; above what one process reaches
WORKERS = "4"


@dataclass
class Figure:
    """One line of the table."""

    name: str
    value: float | None
    baseline: float | None
    unit: str
    target: str
    passed: bool | None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """value / baseline, when both are known."""
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


def _generator_key() -> str:
    sources = [ROOT / "bench" / f"{name}.py" for name in ("synth", "clerk", "places")]
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sources))
    return digest.hexdigest()[:8]


def register(kind: str, rows: int, seed: int, faults: float) -> Path:
    """A cached synthetic register: ``kind`` is ``csv`` (UTF-8, no title) or ``xlsx`` (title, date cells)."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{kind}-{rows}-s{seed}-f{faults:g}-{_generator_key()}.{kind}"
    if path.exists():
        return path
    if kind == "csv" and rows > 1_000_000:
        return _stacked_csv(path, rows, seed, faults)
    started = time.perf_counter()
    people = synth.generate(rows, seed, faults=faults)
    table = clerk.to_clerk(people.columns, "standard", seed=seed)
    partial = path.with_name(f".{path.name}.partial")
    if kind == "xlsx":
        clerk.write_xlsx(table, partial, title="XX社区卫生服务中心 电子健康卡申领登记表",
                         date_cells=np.random.default_rng(seed).random(rows) < 0.5)  # fmt: skip
    else:
        clerk.write_csv(table, partial)
    partial.rename(path)
    print(f"  generated {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def _stacked_csv(path: Path, rows: int, seed: int, faults: float) -> Path:
    """A CSV of ``rows`` rows made of 1,000,000-row parts (generated with their own seeds, then removed)."""
    started = time.perf_counter()
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as sink:
        for part in range(rows // 1_000_000):
            piece = register("csv", 1_000_000, seed * 1000 + part, faults)
            with open(piece, "rb") as source:
                header = source.readline()
                if part == 0:
                    sink.write(header)
                shutil.copyfileobj(source, sink, 1 << 24)
            piece.unlink()
    partial.rename(path)
    print(f"  stacked {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def compile_bytecode() -> None:
    """Compile ``pipeline`` and ``schemas`` as installing a wheel does.

    An editable install leaves them as source: where ``PYTHONDONTWRITEBYTECODE``
    is set, every ``ehc`` process would compile some forty modules again
    (about 0.08 s) before reading a byte, a cost no installed copy pays.
    """
    for package in ("pipeline", "schemas"):
        compileall.compile_dir(ROOT / package, quiet=1)


def load() -> str:
    """The machine's load averages (1, 5, 15 minutes), for the notes."""
    return "load {:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())


def fresh(name: str) -> Path:
    """An empty folder ``bench/out/<name>``."""
    folder = OUT / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def validate(path: Path, folder: Path) -> Measured:
    """``ehc validate`` of one register, every report written into ``folder/out``."""
    return measure(ehc("validate", str(path), "--out", str(folder / "out")), ehc_env(folder / "state")).check(
        (0, 1)
    )


def submit(path: Path, sandbox: Sandbox, folder: Path, state: Path, rate: str, workers: str) -> Measured:
    """``ehc submit`` of one register to ``sandbox``."""
    command = ehc("submit", str(path), "--out", str(folder), "--base-url", sandbox.base_url, "--rate", rate,
                  "--concurrency", workers)  # fmt: skip
    return measure(command, sandbox.submit_env(state)).check((0, 1))


# --- figures -----------------------------------------------------------------------------------


def _medians(runs: list[Measured]) -> tuple[float, float, float]:
    """Median wall time, CPU time and peak RSS of repeated runs."""
    return (
        statistics.median(m.wall for m in runs),
        statistics.median(m.cpu for m in runs),
        statistics.median(m.peak_mb for m in runs),
    )


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "info"}[passed]


#: The 1M-row dry run's median wall time in this run, for the 10M-row figure.
_MEASURED: dict[str, float] = {}


def figure_csv(rows: int) -> list[Figure]:
    """Dry run of a UTF-8 CSV against a raw pyarrow read of it, each measured ``REPEAT`` times alternately."""
    path = register("csv", rows, 1, 0.02)
    raws: list[Measured] = []
    runs: list[Measured] = []
    before = load()
    for _ in range(_OPTIONS["repeat"]):
        raws.append(measure(python(BASELINES, "read-csv", str(path))).check())
        runs.append(validate(path, fresh("csv")))
    raw_wall, raw_cpu, raw_peak = _medians(raws)
    wall, cpu, peak = _medians(runs)
    _MEASURED[f"csv-{rows}"] = wall
    label = f"validate {rows:,}-row CSV"
    spread = ", ".join(f"{m.wall:.2f}" for m in runs) + " vs " + ", ".join(f"{m.wall:.2f}" for m in raws)
    note = f"median of {len(runs)} ({spread} s); {before} before, {load()} after"
    return [
        Figure(
            f"{label}: wall", wall, raw_wall, "s", f"≤ {CSV_RATIO:g}×", wall <= CSV_RATIO * raw_wall, note
        ),
        Figure(f"{label}: CPU", cpu, raw_cpu, "s", "", None, "user + system, both cores"),
        Figure(f"{label}: peak RSS", peak, raw_peak, "MB", "", None),
    ]


def figure_big(rows: int) -> list[Figure]:
    """The 10M-row CSV dry run: flat memory, and time growing no faster than the rows."""
    small = rows // 10
    if f"csv-{small}" not in _MEASURED:
        figure_csv(small)
    path = register("csv", rows, 11, 0.02)
    before = load()
    run = validate(path, fresh("big"))
    baseline = _MEASURED[f"csv-{small}"]
    label = f"validate {rows:,}-row CSV"
    note = f"{before} before, {load()} after; CPU {run.cpu:.0f} s"
    return [
        Figure(f"{label}: peak RSS", run.peak_mb, BIG_RSS_MB, "MB", f"≤ {BIG_RSS_MB:,} MB",
               run.peak_mb <= BIG_RSS_MB),
        Figure(f"{label}: wall", run.wall, baseline, "s", f"≤ {BIG_RATIO:g}× the {small:,}-row run",
               run.wall <= BIG_RATIO * baseline, note),
    ]  # fmt: skip


def figure_xlsx(rows: int) -> list[Figure]:
    """Dry run of an xlsx with every report against a calamine read + xlsxwriter write of the rows."""
    path = register("xlsx", rows, 2, 0.02)
    folder = fresh("xlsx")
    before = load()
    raws = [measure(python(BASELINES, "copy-xlsx", str(path), str(folder / "copy.xlsx"))).check()]
    runs = [validate(path, folder)]
    raw_wall, _, raw_peak = _medians(raws)
    wall, _, peak = _medians(runs)
    label = f"validate {rows:,}-row xlsx"
    return [
        Figure(f"{label}: wall", wall, raw_wall, "s", f"≤ {XLSX_RATIO:g}×", wall <= XLSX_RATIO * raw_wall,
               f"vs calamine read + xlsxwriter write; {before} before, {load()} after"),
        Figure(f"{label}: peak RSS", peak, raw_peak, "MB", "", None),
    ]  # fmt: skip


def figure_rate(rows: int) -> list[Figure]:
    """Submission at --rate 50 to a sandbox answering after 100 ms: achieved rate and worst window."""
    path = register("csv", rows, 3, 0.0)
    folder = fresh("rate")
    with Sandbox(folder / "sandbox", latency_ms=LATENCY_MS) as sandbox:
        submit(path, sandbox, folder / "out", folder / "state", f"{RATE:g}", "8")
        arrivals = sandbox.arrivals()
    achieved = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    most = max_in_window(arrivals)
    label = f"submit {rows:,} rows, --rate {RATE:g}, {LATENCY_MS:g} ms latency"
    return [
        Figure(
            f"{label}: achieved rate",
            achieved,
            RATE,
            "/s",
            "≥ 95%",
            achieved >= 0.95 * RATE,
            f"{len(arrivals)} calls",
        ),
        Figure(
            f"{label}: most in 1 s", most, RATE, "calls", f"≤ {RATE:g}", most <= RATE, "sandbox timestamps"
        ),
    ]


def _bare_loop(command: list[str], home: Path) -> dict[str, Any]:
    """Run the bare requests.Session loop; its own report (calls, seconds, cpu, failures)."""
    found: dict[str, Any] = json.loads(
        measure(command, ehc_env(home)).check().stdout.strip().splitlines()[-1]
    )
    return found


def figure_cpu(rows: int) -> list[Figure]:
    """Client CPU per call and calls/s without a rate limit, against bare requests.Session posts."""
    path = register("csv", rows, 4, 0.0)
    folder = fresh("cpu")
    with Sandbox(folder / "sandbox") as sandbox:
        bare_command = python(
            BASELINES, "bare-post", sandbox.base_url, sandbox.app_id, sandbox.app_secret, str(rows)
        )
        # The bare loop runs before and after (other residents each time); the faster is the ceiling.
        loops = [_bare_loop([*bare_command, "5"], folder / "bare")]
        dry = validate(path, folder / "dry")
        run = submit(path, sandbox, folder / "out", folder / "state", UNLIMITED, WORKERS)
        arrivals = sandbox.arrivals()[-rows:]
        loops.append(_bare_loop([*bare_command, "7"], folder / "bare"))
    loop = max(loops, key=lambda found: found["calls"] / found["seconds"])
    calls = len(arrivals)
    span = float(arrivals[-1] - arrivals[0]) if calls > 1 else float("nan")
    per_call = (run.cpu - dry.cpu) / max(calls, 1) * 1000
    bare_per_call = loop["cpu"] / loop["calls"] * 1000
    rate, bare_rate = (calls - 1) / span, loop["calls"] / loop["seconds"]
    note = f"{calls} calls; submit CPU minus dry-run CPU; bare failures {loop['failures']}"
    return [
        Figure(
            "submit client CPU per call",
            per_call,
            bare_per_call,
            "ms",
            "≤ 1.5×",
            per_call <= 1.5 * bare_per_call,
            note,
        ),
        Figure(
            "submit calls/s, no limit, no latency",
            rate,
            bare_rate,
            "/s",
            "≥ 70%",
            rate >= 0.7 * bare_rate,
            f"--concurrency {WORKERS} vs one bare Session",
        ),
    ]


def figure_rerun(rows: int) -> list[Figure]:
    """A second submission of residents already in the journal: no calls, time near a dry run."""
    path = register("csv", rows, 6, 0.0)
    folder = fresh("rerun")
    state = folder / "state"
    with Sandbox(folder / "sandbox") as sandbox:
        first = submit(path, sandbox, folder / "first", state, UNLIMITED, WORKERS)
        before = len(sandbox.arrivals())
        again = submit(path, sandbox, folder / "again", state, UNLIMITED, WORKERS)
        calls = len(sandbox.arrivals()) - before
    dry = validate(path, folder / "dry")
    label = f"rerun {rows:,} journalled residents"
    return [
        Figure(
            f"{label}: calls",
            calls,
            None,
            "calls",
            "0",
            calls == 0,
            f"first submission {first.wall:.0f} s, {before} calls",
        ),
        Figure(
            f"{label}: wall", again.wall, dry.wall, "s", "≤ 2×", again.wall <= 2 * dry.wall, "vs ehc validate"
        ),
    ]


def figure_web(rows: int) -> list[Figure]:
    """The workspace (``ehc serve``): upload to first page, page and edit server times, 20 clerks at once."""
    from bench import web

    path = register("xlsx", rows, 2, 0.02)
    folder = fresh("web")
    dry = validate(path, folder / "validate")
    found = web.figures_upload(path, dry, folder / "upload", rows, Figure)
    return found + web.figures_concurrent(register, folder / "concurrent", Figure)


FIGURES: dict[str, Callable[[int], list[Figure]]] = {
    "csv": figure_csv, "big": figure_big, "xlsx": figure_xlsx, "rate": figure_rate, "cpu": figure_cpu,
    "rerun": figure_rerun, "web": figure_web,
}  # fmt: skip

#: Figures run by default (``--big`` adds ``big``).
DEFAULT_FIGURES = ("csv", "xlsx", "rate", "cpu", "rerun", "web")


# --- table -------------------------------------------------------------------------------------


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with numpy scalars turned into Python ones, for JSON."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in record.items()}


def _number(value: float | None, unit: str) -> str:
    if value is None or value != value:
        return "—"
    if float(value).is_integer() and unit in {"calls", "MB"}:
        return f"{int(value):,} {unit}"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return f"{text} {unit}"


def table(figures: list[Figure]) -> str:
    """The figures as an aligned text table."""
    header = ("figure", "value", "baseline", "ratio", "target", "result")
    lines = [header] + [
        (f.name, _number(f.value, f.unit), _number(f.baseline, f.unit),
         "—" if f.ratio is None else f"{f.ratio:.2f}×", f.target,
         _verdict(f.passed) if f.passed is not None or not f.note.startswith("error") else "ERROR")
        for f in figures
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {f.name}: {f.note}" for f in figures if f.note]
    return "\n".join([*rendered, "", "notes:", *notes])


def main(argv: list[str] | None = None) -> int:
    """Run the chosen figures; exit 0 when every target is met, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="bench/run.py", description="time ehc against raw baselines")
    parser.add_argument("--quick", action="store_true", help="smaller registers (a few minutes in all)")
    parser.add_argument("--big", action="store_true", help="add the 10,000,000-row CSV dry run")
    parser.add_argument(
        "--repeat", type=int, default=REPEAT, help=f"runs per timed figure (default {REPEAT})"
    )
    parser.add_argument("--only", action="append", choices=sorted(FIGURES), metavar="NAME",
                        help=f"run only this figure (repeatable): {', '.join(FIGURES)}")  # fmt: skip
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="figures to run, as with --only (e.g. `bench/run.py web`)")  # fmt: skip
    args = parser.parse_args(argv)
    _OPTIONS["repeat"] = max(1, args.repeat)
    unknown = sorted(set(args.names) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure {', '.join(unknown)} (choose from {', '.join(FIGURES)})")
    args.only = (args.only or []) + args.names or None
    sizes = SIZES["quick" if args.quick else "full"]
    figures: list[Figure] = []
    chosen = args.only or [*DEFAULT_FIGURES, *(["big"] if args.big else [])]
    print(f"{load()}; {os.cpu_count()} cores; {_OPTIONS['repeat']} runs per timed figure", flush=True)
    compile_bytecode()
    for name in chosen:
        print(f"[{name}] {sizes[name]:,} rows …", flush=True)
        started = time.perf_counter()
        try:
            found = FIGURES[name](sizes[name])
        except Exception as error:  # one broken figure must not hide the others
            traceback.print_exc()
            found = [Figure(name, None, None, "", "", None, f"error: {type(error).__name__}: {error}"[:300])]
        for figure in found:
            value, baseline = _number(figure.value, figure.unit), _number(figure.baseline, figure.unit)
            print(f"  {figure.name}: {value} (baseline {baseline})")
        print(f"  [{name}] took {time.perf_counter() - started:.0f} s", flush=True)
        figures.extend(found)
    print()
    print(table(figures))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(
        json.dumps([_plain({**asdict(f), "ratio": f.ratio}) for f in figures], ensure_ascii=False, indent=1),
        encoding="utf-8",
    )
    return (
        0 if all(f.passed is not False for f in figures) and all(f.value is not None for f in figures) else 1
    )


if __name__ == "__main__":
    sys.exit(main())
