"""A pool of sending threads that grows until latency no longer caps the rate.

The rate limit lives in the client and is shared by every thread; the pool
only has to keep enough calls in flight.  It starts small, with threads one
send-interval apart, and adds threads (up to a maximum) while the calls
completed in the last second fall short of the rate.  Starting small and
spread out matters: a burst of new connections reaches the platform with
bunched arrival times, and idle surplus threads only add contention.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from loguru import logger

from pipeline.progress import terminal_bar

Task = TypeVar("Task")
Result = TypeVar("Result")

#: How often an unattended run (no progress bar) logs its progress.
PROGRESS_LOG_SECONDS = 30.0
#: How often ``on_tick`` runs (the journal uses it to checkpoint).
TICK_SECONDS = 5.0
_POLL_SECONDS = 0.05
#: Grow when the last second's completions fall below this share of the rate.
_GROW_BELOW = 0.9


@dataclass(frozen=True)
class PoolSize:
    """Start with ``initial`` threads; grow up to ``maximum`` while below ``rate`` (None: never grow)."""

    initial: int
    maximum: int
    rate: float | None = None

    @property
    def ramp_up(self) -> float:
        """Seconds between two thread starts: one send-interval."""
        return 1.0 / self.rate if self.rate else 0.0


@dataclass
class PoolResult(Generic[Result]):
    """What a pool run did: one result per task (``None``: not sent, or outcome unknown)."""

    outcomes: list[Result | None]
    #: positions whose call may have left but whose outcome is unknown: in flight when the
    #: pool was abandoned, or whose send raised the fatal fault
    unknown: set[int] = field(default_factory=set)
    #: the fault that stopped the run, if any
    fatal: BaseException | None = None
    #: a second Ctrl-C abandoned the calls in flight
    abandoned: bool = False
    elapsed: float = 0.0
    threads: int = 0


def _guarded(hook: Callable[[], object], result: PoolResult[Any], stop: threading.Event) -> None:
    """Run a hook of the calling thread; a fault it raises stops the run like a fault of ``send``."""
    try:
        hook()
    except Exception as error:
        if result.fatal is None:
            result.fatal = error
        stop.set()


def run_pool(
    tasks: Sequence[Task],
    send: Callable[[Task], Result],
    *,
    size: PoolSize,
    stop: threading.Event,
    progress: bool = False,
    on_stop: Callable[[], object] | None = None,
    on_tick: Callable[[], object] | None = None,
) -> PoolResult[Result]:
    """Run ``send`` over every task on a growing pool of threads until done or ``stop`` is set.

    Once ``stop`` is set no new task starts; the calls in flight finish.  A
    fault raised by ``send`` sets ``stop`` and is returned as ``fatal``.  A
    :class:`KeyboardInterrupt` in the calling thread (a second Ctrl-C)
    abandons the calls in flight: they are listed in ``unknown``.
    ``on_stop`` runs once when ``stop`` is first seen set; ``on_tick`` every
    few seconds; both in the calling thread, and a fault either raises is
    handled like one raised by ``send`` (the calls in flight still finish and
    keep their outcomes).
    """
    total = len(tasks)
    result: PoolResult[Result] = PoolResult(outcomes=[None] * total)
    if total == 0:
        return result
    positions = itertools.count()  # next() on a C iterator is atomic: no lock needed
    in_flight: set[int] = set()
    finished: list[int] = []  # one counter per thread, so no two threads write the same slot

    def worker(slot: int) -> None:
        while not stop.is_set():
            position = next(positions)
            if position >= total:
                return
            in_flight.add(position)
            try:
                result.outcomes[position] = send(tasks[position])
            except BaseException as error:  # any fault stops the run; the caller re-raises it
                result.unknown.add(position)
                if result.fatal is None:
                    result.fatal = error
                stop.set()
                return
            finally:
                in_flight.discard(position)
                finished[slot] += 1

    threads: list[threading.Thread] = []
    target = max(1, min(size.initial, size.maximum, total))
    started = last_change = last_tick = last_log = time.monotonic()
    next_start = started
    samples: deque[tuple[float, int]] = deque()
    stop_seen = False
    show_bar = progress and sys.stderr.isatty()
    bar = terminal_bar(
        total=total, desc="提交", unit="人", file=sys.stderr, disable=not show_bar, dynamic_ncols=True
    )
    try:
        while True:
            now = time.monotonic()
            done = sum(finished)
            remaining = total - done - len(in_flight)
            if stop.is_set() and not stop_seen:
                stop_seen = True
                if on_stop is not None:
                    _guarded(on_stop, result, stop)
            if not stop.is_set() and len(threads) < target and now >= next_start and remaining > 0:
                finished.append(0)
                slot = len(threads)
                thread = threading.Thread(target=worker, args=(slot,), name=f"ehc-send-{slot}", daemon=True)
                thread.start()
                threads.append(thread)
                next_start = now + size.ramp_up
            if not any(thread.is_alive() for thread in threads) and (stop.is_set() or remaining <= 0):
                break
            samples.append((now, done))
            while now - samples[0][0] > 1.0:
                samples.popleft()
            if (
                size.rate and len(threads) == target < size.maximum and remaining > target
                and now - last_change >= 1.0 + size.ramp_up * target and not stop.is_set()
            ):  # fmt: skip
                # Calls completed over the last second: short of the rate means latency caps it.
                since, done_then = samples[0]
                recent = (done - done_then) / max(now - since, _POLL_SECONDS)
                if recent < _GROW_BELOW * size.rate:
                    target = min(size.maximum, target + max(1, target // 2))
                    logger.debug("并发增至 {}（最近 {:.1f} 人/秒）", target, recent)
                last_change = now
            if on_tick is not None and now - last_tick >= TICK_SECONDS:
                last_tick = now
                _guarded(on_tick, result, stop)
            bar.update(done - bar.n)
            if not show_bar and now - last_log >= PROGRESS_LOG_SECONDS:
                last_log = now
                logger.info("已发送 {}/{}，{:.1f} 人/秒", done, total, done / (now - started))
            time.sleep(_POLL_SECONDS)
    except KeyboardInterrupt:
        stop.set()
        result.abandoned = True
        result.unknown.update(in_flight)
        logger.warning("立即停止：{} 个进行中的请求结果未知，下次运行会重新发送", len(in_flight))
    finally:
        bar.update(sum(finished) - bar.n)
        bar.close()
    if stop.is_set() and not stop_seen and on_stop is not None:
        _guarded(on_stop, result, stop)
    result.elapsed = time.monotonic() - started
    result.threads = len(threads)
    return result
