"""Items produced ahead on a thread of their own, so that making the next overlaps using this one.

Reading a register's next chunk while this one is checked, and laying out a
sheet's next rows as XML while these are compressed: in both, the producer's
heavy parts (Arrow's parser and kernels, zlib) release the GIL, so on two
cores the two sides really run at once.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Prefetched(Generic[T]):
    """``items``, produced ``depth`` ahead on a thread of their own from the moment this is made.

    The thread makes an item only while fewer than ``depth`` wait to be
    taken: it never holds one made and another being made beside the queue,
    so with ``depth`` 1 memory holds the item in use and the next.

    Iterating gives them in order (an error of ``items`` is raised there, in
    its place); :meth:`close` stops the thread, whether or not anything was
    taken.
    """

    def __init__(self, items: Iterator[T], depth: int = 1, *, name: str = "ehc-ahead") -> None:
        self._slots: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
        # One credit per item the thread may make before the consumer has taken the one before.
        self._credits = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._items = items
        # Produces only: safe to drop at exit.
        self._worker = threading.Thread(target=self._produce, name=name, daemon=True)
        self._worker.start()

    def _put(self, entry: tuple[str, object]) -> bool:
        while not self._stop.is_set():
            try:
                self._slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        items = self._items
        try:
            while True:
                if not self._wait_for_credit():
                    return
                try:
                    item = next(items)
                except StopIteration:
                    break
                if not self._put(("item", item)):
                    return
                del item
            self._put(("end", None))
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(("error", error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _wait_for_credit(self) -> bool:
        while not self._stop.is_set():
            if self._credits.acquire(timeout=0.1):
                return True
        return False

    @property
    def ready(self) -> bool:
        """Whether the next item (or the end) is already produced and waiting to be taken."""
        return not self._slots.empty()

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                kind, value = self._slots.get()
                self._credits.release()
                if kind == "item":
                    yield value  # type: ignore[misc]
                elif kind == "error":
                    assert isinstance(value, BaseException)
                    raise value
                else:
                    return
        finally:
            self.close()

    def close(self) -> None:
        """Stop producing and wait for the thread (idempotent)."""
        self._stop.set()
        while self._worker.is_alive():
            with contextlib.suppress(queue.Empty):
                self._slots.get(timeout=0.1)
        self._worker.join()
