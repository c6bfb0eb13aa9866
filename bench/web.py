"""The workspace's figures (``python bench/run.py web``): ``ehc serve`` measured over loopback HTTP.

* an upload of a large xlsx to the first page of its results, against
  ``ehc validate`` of the same file;
* server time of grid pages (first, deep, filtered) and of the job list on
  that job, against the login page (the framework's own floor);
* server time of one edit (the row re-normalised and re-validated), against
  the library's normalise + validate of one row in this process;
* twenty clerks uploading 5,000-row registers at once while a submission
  runs at ``--rate 50`` against a sandbox answering after 100 ms: every dry
  run finishes, before the submission does, and the submission's rate over
  that window (from the sandbox's arrival timestamps).

Server times come from the ``Server-Timing`` header every response carries.
"""

from __future__ import annotations

import os
import re
import select
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests

from bench.measure import ROOT, Measured, Sandbox, ehc, ehc_env

PASSWORD = "bench-password-0"
ORG = "455400000"
#: How many times each page is fetched; the median is the figure.
REPEATS = 7
EDITS = 20


def server_ms(response: requests.Response) -> float:
    """The server's own time for a response, from its Server-Timing header."""
    found = re.search(r"dur=([0-9.]+)", response.headers.get("server-timing", ""))
    return float(found.group(1)) if found else float("nan")


class Clerk:
    """A logged-in browser, as requests sees it."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.http = requests.Session()
        page = self.http.get(f"{url}/login", timeout=30)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, "no login token"
        answer = self.http.post(
            f"{url}/login", data={"name": name, "password": PASSWORD, "csrf_token": token.group(1)},
            allow_redirects=False, timeout=60,
        )  # fmt: skip
        assert answer.status_code == 303, answer.text[:300]
        found = re.search(r'name="csrf_token" value="([^"]+)"', self.http.get(f"{url}/jobs", timeout=30).text)
        assert found
        self.csrf = found.group(1)

    def upload(self, path: Path) -> str:
        """Upload a register; the job id."""
        with open(path, "rb") as handle:
            answer = self.http.post(
                f"{self.url}/jobs", data={"csrf_token": self.csrf}, files={"files": (path.name, handle)},
                headers={"accept": "application/json"}, timeout=600,
            )  # fmt: skip
        answer.raise_for_status()
        return str(answer.json()["jobs"][0]).rsplit("/", 1)[-1]

    def state(self, job_id: str) -> dict[str, Any]:
        """The job's state as its page polls it."""
        found: dict[str, Any] = self.http.get(
            f"{self.url}/jobs/{job_id}/state", headers={"accept": "application/json"}, timeout=60
        ).json()
        return found

    def wait(
        self, job_id: str, until: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 900
    ) -> dict[str, Any]:
        """Poll (as the page does, a few times a second) until ``until`` (default: not busy)."""
        until = until or (lambda state: not state["busy"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(job_id)
            if until(state):
                return state
            time.sleep(0.1)
        raise RuntimeError(f"job {job_id} did not get there: {state}")

    def get(self, path: str) -> requests.Response:
        """A page."""
        answer = self.http.get(f"{self.url}{path}", timeout=120)
        answer.raise_for_status()
        return answer

    def post(self, path: str, data: dict[str, Any], json: bool = True) -> requests.Response:
        """A form post with the session's CSRF token."""
        headers = {"accept": "application/json"} if json else {}
        return self.http.post(
            f"{self.url}{path}", data={"csrf_token": self.csrf, **data}, headers=headers,
            allow_redirects=False, timeout=120,
        )  # fmt: skip


class Workspace:
    """``ehc serve`` in its own process on a fresh state directory, with ``clerks`` users."""

    def __init__(
        self, folder: Path, *, clerks: int = 1, sandbox: Sandbox | None = None, rate: float = 50
    ) -> None:
        from pipeline.web import accounts

        state = folder / "state"
        state.mkdir(parents=True, exist_ok=True)
        store = accounts.open_store(state)
        for c in range(max(1, clerks // 5)):
            accounts.add_centre(store, f"{ORG[:-2]}{c:02d}", f"中心{c}")
        for k in range(clerks):
            accounts.add_user(store, f"clerk{k}", f"{ORG[:-2]}{k % max(1, clerks // 5):02d}", PASSWORD)
        store.close()
        env = sandbox.submit_env(state) if sandbox is not None else ehc_env(state)
        env["EHC_RATE"] = f"{rate:g}"
        command = ehc("serve", "--port", "0")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 120)
        line = self.process.stdout.readline() if ready else ""
        found = re.search(r"http://[0-9.:]+", line)
        if not found:
            self.stop()
            raise RuntimeError(f"ehc serve did not start: {line!r}")
        self.url = found.group(0)

    def stop(self) -> None:
        """Stop the server."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _median_ms(clerk: Clerk, path: str) -> float:
    return statistics.median(server_ms(clerk.get(path)) for _ in range(REPEATS))


def _library_row_ms() -> float:
    """The library's normalise + validate of one row, in this process (the floor of an edit)."""
    from datetime import date

    import pandas as pd

    from pipeline.config import Settings
    from pipeline.model import INPUT_FIELDS
    from pipeline.web import engine

    row = dict.fromkeys(INPUT_FIELDS, "")
    row.update(
        xm="张三",
        sfzhm="440604198001010013",
        mzdm="汉族",
        brdh="13912345678",
        ylfyzffs="城镇职工基本医疗保险",
    )
    frame = pd.DataFrame({k: pd.Series([v], dtype="str") for k, v in row.items()})
    settings, today = Settings(), date.today()
    engine.check_rows(frame, settings, ORG, today)
    times = []
    for _ in range(EDITS):
        started = time.perf_counter()
        engine.check_rows(frame, settings, ORG, today)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def figures_upload(
    path: Path, validate: Measured, folder: Path, rows: int, figure: Callable[..., Any]
) -> list[Any]:
    """Upload to first page, grid and list pages, edits: on one large job."""
    found = []
    with Workspace(folder) as workspace:
        clerk = Clerk(workspace.url, "clerk0")
        started = time.perf_counter()
        job_id = clerk.upload(path)
        state = clerk.wait(job_id)
        clerk.get(f"/jobs/{job_id}")
        wall = time.perf_counter() - started
        assert state["state"] == "checked", state
        label = f"upload {rows:,}-row xlsx to first page of results"
        note = "vs ehc validate of the same file"
        found.append(figure(label, wall, validate.wall, "s", "≤ 1.3×", wall <= 1.3 * validate.wall, note))
        floor = _median_ms(clerk, "/login")
        pages = {
            "first": f"/jobs/{job_id}", "page 20": f"/jobs/{job_id}?page=20",
            "code 10111": f"/jobs/{job_id}?code=10111",
            "column sfzhm p2": f"/jobs/{job_id}?column=sfzhm&page=2",
            "warnings": f"/jobs/{job_id}?severity=warning",
        }  # fmt: skip
        times = {name: _median_ms(clerk, page) for name, page in pages.items()}
        worst = max(times, key=lambda name: times[name])
        note = f"slowest: {worst}; " + ", ".join(f"{k} {v:.0f}" for k, v in times.items())
        label = f"result grid page, {rows:,}-row job: server time"
        found.append(figure(label, times[worst], floor, "ms", "< 100 ms", times[worst] < 100, note))
        listing = _median_ms(clerk, "/jobs")
        label = f"job list with the {rows:,}-row job: server time"
        found.append(
            figure(label, listing, floor, "ms", "< 100 ms", listing < 100, "baseline: the login page")
        )
        page = clerk.get(f"/jobs/{job_id}?code=10114").text
        targets = re.findall(r'<tr data-row="(\d+)"', page)[:EDITS]
        edit_times = []
        statuses = []
        for row_id in targets:
            answer = clerk.post(f"/jobs/{job_id}/edit", {"row_id": row_id, "field": "xm", "value": "张三"})
            answer.raise_for_status()
            edit_times.append(server_ms(answer))
            statuses.append(answer.json()["status"])
        edit = statistics.median(edit_times) if edit_times else float("nan")
        note = (
            f"{len(edit_times)} edits, {statuses.count('valid')} rows turned valid; "
            "baseline: the library's normalise + validate of one row"
        )
        library = _library_row_ms()
        label = "re-validate one edited row: server time"
        found.append(figure(label, edit, library, "ms", "< 50 ms", edit < 50, note))
        if edit_times:
            label = "re-validate one edited row: the job's first edit"
            note = "before the workspace has seen any of the row's values (the median above: the 20 edits)"
            found.append(figure(label, edit_times[0], library, "ms", "", None, note))
    return found


def figures_concurrent(
    register: Callable[..., Path],
    folder: Path,
    figure: Callable[..., Any],
    clerks: int = 20,
    rows: int = 5000,
) -> list[Any]:
    """Twenty clerks' dry runs while a submission runs at 50/s against 100 ms latency."""
    small = register("xlsx", rows, 7, 0.02)
    sending = register("csv", 2000, 3, 0.0)
    rate = 50.0
    with Sandbox(folder / "sandbox", latency_ms=100) as sandbox, \
            Workspace(folder, clerks=clerks + 1, sandbox=sandbox, rate=rate) as workspace:  # fmt: skip
        people = [Clerk(workspace.url, f"clerk{k}") for k in range(clerks + 1)]
        submitter = people[-1]
        alone_started = time.perf_counter()
        people[0].wait(people[0].upload(small))
        alone = time.perf_counter() - alone_started
        job = submitter.upload(sending)
        submitter.wait(job)
        assert submitter.post(f"/jobs/{job}/submit", {}, json=False).status_code == 303
        submitter.wait(job, lambda state: state["sending"].get("done", 0) >= 20)
        walls: list[float] = [float("nan")] * clerks
        states: list[str] = [""] * clerks

        def one(k: int) -> None:
            started = time.perf_counter()
            final = people[k].wait(people[k].upload(small))
            walls[k], states[k] = time.perf_counter() - started, final["state"]

        window_start = time.time()
        threads = [threading.Thread(target=one, args=(k,)) for k in range(clerks)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        window_end = time.time()
        still_sending = submitter.state(job)["state"] == "submitting"
        submitter.post(f"/jobs/{job}/cancel", {})
        submitter.wait(job)
        arrivals = sandbox.arrivals()
    inside = arrivals[(arrivals >= window_start) & (arrivals <= window_end)]
    achieved = (len(inside) - 1) / (inside[-1] - inside[0]) if len(inside) > 1 else 0.0
    done = states.count("checked")
    label = f"{clerks} clerks upload {rows:,}-row xlsx during a submission"
    return [
        figure(f"{label}: dry runs finished", done, clerks, "jobs", f"{clerks}, before the submission ends",
               done == clerks and still_sending,
               f"submission still sending after the last: {still_sending}; states {dict(Counter(states))}"),
        figure(f"{label}: slowest dry run", float(np.nanmax(walls)), alone, "s", "", None,
               f"baseline: one upload alone; median {statistics.median(walls):.1f} s"),
        figure(f"{label}: submission rate meanwhile", achieved, rate, "/s", "≥ 95%", achieved >= 0.95 * rate,
               f"{len(inside)} calls in the {window_end - window_start:.0f} s window, sandbox timestamps"),
    ]  # fmt: skip


def environment_note() -> str:
    """Cores of this machine, for the notes."""
    return f"{os.cpu_count()} cores"
