"""Worker processes forked once, taking a run's chunks in order, so checking uses every core.

Normalising and validating hold the GIL for much of their time, so threads
over chunks gain nothing; processes do.  Workers are forked (never spawned):
they start with every module the parent imported and the state it built
(schemas, code tables, the report writer's settings), at no cost.  Forking is
only safe before any thread starts, so :func:`fork_workers` declines (returns
None: the caller checks in its own process) when the process already has a
thread, has no ``fork`` (Windows), has a single core, or is a daemon
process.

Each worker takes one task at a time and answers with its result.  A task may
ask the parent questions while it runs (:func:`ask`, saying which is its
last); the parent answers them in task order, each after the questions of every earlier task:
this is how a rule needing every earlier row (a repeated ID number) stays
exact while the chunks are checked side by side.  Results come back in task
order.  A worker that dies stops the run with :class:`WorkerCrashed`; an
exception a task raises is raised again in the parent.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

from pipeline.errors import EhcError

T = TypeVar("T")
R = TypeVar("R")

#: The question of the task running in this (worker) process, answered by the parent.
_asker: Callable[[Any, bool], Any] | None = None


class WorkerCrashed(EhcError):
    """A worker process ended without finishing its task (killed, out of memory)."""


def ask(question: Any, *, last: bool = True) -> Any:
    """Ask the parent ``question`` from a task and wait for its answer.

    The parent answers the tasks' questions in task order: a later task's
    wait until this task's ``last`` question (or its end).  A task that will
    ask again says ``last=False``.
    """
    if _asker is None:
        raise RuntimeError("ask() is only available inside a worker's task")
    return _asker(question, last)


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    """Whether worker processes can be forked safely here and now."""
    return (
        "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1
        and not multiprocessing.current_process().daemon
    )


#: A message whose buffers hold more than this goes through a file in memory, not through the pipe.
_FILE_BYTES = 1 << 18


class _Channel:
    """Messages over a pipe; the large buffers of a message (Arrow columns) through a file in memory.

    Through a pipe, a chunk's tens of megabytes take thousands of small
    writes, each giving up and taking back the GIL while the reading thread
    holds it: seconds per chunk.  Pickled with their buffers apart, they are
    written to one file (in ``/dev/shm`` where there is one) with a few
    writes, and the other side maps the file and reads the buffers in place.
    """

    def __init__(self, connection: Connection, folder: str) -> None:
        self.connection = connection
        self.folder = folder
        self._sent = 0

    def send(self, message: Any) -> None:
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
        views = [buffer.raw() for buffer in buffers]
        sizes = [view.nbytes for view in views]
        if sum(sizes) <= _FILE_BYTES:
            inline = [bytes(view) for view in views]
            self.connection.send_bytes(pickle.dumps((data, None, inline), protocol=5))
            return
        self._sent += 1
        path = os.path.join(self.folder, f"{os.getpid()}-{self._sent}")
        with open(path, "wb") as handle:
            for view in views:
                handle.write(view)
        self.connection.send_bytes(pickle.dumps((data, path, sizes), protocol=5))

    def recv(self) -> Any:
        data, path, buffers = pickle.loads(self.connection.recv_bytes())
        if path is None:
            return pickle.loads(data, buffers=buffers)
        with open(path, "rb") as handle:
            # Copy on write: the pages are shared until something writes to them (rarely).
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY) if sum(buffers) else b""
        os.unlink(path)
        view = memoryview(mapped)
        offsets = [0, *itertools.accumulate(buffers)]
        return pickle.loads(data, buffers=[view[a:b] for a, b in itertools.pairwise(offsets)])


def _serve(connection: Connection, folder: str, task: Callable[[Any], Any]) -> None:
    """A worker's loop: take a task, run it, answer; until the parent says goodbye or goes."""
    global _asker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent ends a worker it no longer needs
    channel = _Channel(connection, folder)

    def asked(question: Any, last: bool) -> Any:
        channel.send(("ask", (question, last)))
        return channel.recv()

    _asker = asked
    while True:
        try:
            item = channel.recv()
        except (EOFError, OSError):
            return
        if item is None:  # the parent's goodbye (its end of the pipe may live on in a sibling)
            return
        try:
            result = task(item)
        except BaseException as error:  # handed to the parent, which raises it
            try:
                channel.send(("error", error))
            except Exception:  # not picklable: its text will do
                channel.send(("error", RuntimeError(f"{type(error).__name__}: {error}")))
            continue
        channel.send(("done", result))


class Workers(Generic[T, R]):
    """Forked worker processes running ``task`` over items, results in item order (see the module)."""

    def __init__(self, task: Callable[[T], R], count: int) -> None:
        context = multiprocessing.get_context("fork")
        shared = "/dev/shm"
        self._folder = tempfile.mkdtemp(prefix="ehc-", dir=shared if os.path.isdir(shared) else None)
        self._channels: list[_Channel] = []
        self._processes: list[Any] = []
        try:
            for number in range(count):
                mine, theirs = context.Pipe(duplex=True)
                process = context.Process(
                    target=_serve, args=(theirs, self._folder, task), name=f"ehc-worker-{number}"
                )
                process.daemon = True  # never outlives the run
                process.start()
                theirs.close()
                self._channels.append(_Channel(mine, self._folder))
                self._processes.append(process)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self._processes)

    def run(
        self,
        items: Iterable[T],
        answer: Callable[[T, Any], Any],
        send: Callable[[T], T] | None = None,
    ) -> Iterator[tuple[T, R]]:
        """Each item with its result, in item order; ``answer(item, question)`` answers a task's question.

        ``send(item)`` is what goes to the worker (default: the item itself).

        At most one item per worker is out at a time (the memory of a run
        stays that of a few chunks); the next item is taken from ``items``
        as a worker becomes free.
        """
        source = iter(items)
        exhausted = False
        sent: dict[int, T] = {}  # number -> item, out or done but not yet handed back
        busy: dict[int, int] = {}  # worker -> number of the item it runs
        questions: dict[int, list[tuple[int, Any, bool]]] = {}  # number -> (worker, question, last) waiting
        asked_last: set[int] = set()  # items whose last question is answered
        finished: dict[int, R] = {}
        answered = 0  # items below this have had their last question answered (or finished)
        handed = 0
        taken = 0
        while True:
            for worker in range(len(self)):
                if exhausted or worker in busy:
                    continue
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                sent[taken], busy[worker] = item, taken
                self._channels[worker].send(send(item) if send is not None else item)
                taken += 1
            if not busy and handed == taken:
                return
            for worker, message in self._wait(busy):
                number = busy[worker]
                kind, value = message
                if kind == "ask":
                    questions.setdefault(number, []).append((worker, *value))
                elif kind == "done":
                    finished[number] = value
                    del busy[worker]
                else:
                    raise value
            while answered < taken:
                for worker, question, last in questions.pop(answered, []):
                    self._channels[worker].send(answer(sent[answered], question))
                    if last:
                        asked_last.add(answered)
                if answered not in asked_last and answered not in finished:
                    break  # it may ask again: the next items' questions wait
                asked_last.discard(answered)
                answered += 1
            while handed in finished:
                yield sent.pop(handed), finished.pop(handed)
                handed += 1

    def _wait(self, busy: dict[int, int]) -> list[tuple[int, Any]]:
        """The messages of the busy workers that have one; WorkerCrashed if one of them died."""
        by_connection = {self._channels[worker].connection: worker for worker in busy}
        by_sentinel = {self._processes[worker].sentinel: worker for worker in busy}
        ready = wait([*by_connection, *by_sentinel])
        messages = []
        for handle in ready:
            if isinstance(handle, Connection) and handle in by_connection:
                worker = by_connection[handle]
                try:
                    messages.append((worker, self._channels[worker].recv()))
                except (EOFError, OSError):
                    self._crashed(worker)
        for handle in ready:
            if isinstance(handle, int) and handle in by_sentinel:
                worker = by_sentinel[handle]
                if not any(w == worker for w, _ in messages):
                    self._crashed(worker)
        return messages

    def _crashed(self, worker: int) -> None:
        process = self._processes[worker]
        process.join(timeout=1)
        code = process.exitcode
        how = f"被信号 {-code} 终止" if code is not None and code < 0 else f"退出码 {code}"
        raise WorkerCrashed(
            f"校验子进程意外退出（{how}，可能是内存不足或被系统终止）。本次没有写入任何报告。"
            "处理办法：关闭其他占用内存的程序后重新运行；仍然出错请联系管理员（可加 --debug 查看详情）"
        )

    def close(self) -> None:
        """Stop every worker and remove what was passed through memory (idempotent; never raises)."""
        for channel in self._channels:
            with contextlib.suppress(OSError, ValueError):
                channel.connection.send_bytes(pickle.dumps((pickle.dumps(None), None, [])))
            with contextlib.suppress(OSError):
                channel.connection.close()
        for process in self._processes:
            process.join(timeout=2)
            if process.is_alive():
                process.terminate()
                process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join()
        self._channels, self._processes = [], []
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> Workers[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fork_workers(task: Callable[[T], R], count: int) -> Workers[T, R] | None:
    """``count`` workers running ``task``, or None where forking is not safe or not possible."""
    if count < 1 or not can_fork():
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    return Workers(task, count)
