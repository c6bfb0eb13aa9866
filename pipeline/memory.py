"""Process-wide settings for a long run: memory (huge pages, garbage collection) and thread switching.

A run's column buffers come and go too fast for huge pages.

A dry run allocates and frees gigabytes of column buffers, chunk after chunk,
and Arrow's allocator gives freed memory back to the system and asks for it
again.  With the kernel's transparent huge pages, each region asked for again
is zeroed 2 MB at a time on first touch, however little of it is used: on the
1,000,000-row CSV of ``bench/`` that zeroing was 18 % of the run's CPU time
(``perf``: ``clear_page_erms`` under ``do_huge_pmd_anonymous_page``).  Opting
the process out (Linux's ``prctl(PR_SET_THP_DISABLE)``) took the run's system
time from 2.0 s to 0.8 s and its wall time from 5.2 s to 4.6 s.  Elsewhere
(Windows, macOS, a kernel without the call) nothing changes.

The same run made some 330 collections of Python's cyclic garbage collector
(0.10 s with every thread stopped): pandas makes and drops many small objects,
and each collection also walked the hundreds of thousands the imports left.
:func:`collect_garbage_less_often` cuts that to a handful (0.05 s).

A dry run keeps four threads busy (reading ahead, checking, feeding the
reports, writing results.csv), most of whose work is Arrow and numpy calls
that let go of the interpreter while they run and must take it back after.
Each such call waited for whichever thread held the interpreter to reach
Python's switch interval (5 ms); :func:`switch_threads_more_often` makes
that 1 ms.
"""

from __future__ import annotations

import ctypes
import gc
import sys

#: ``PR_SET_THP_DISABLE`` from ``<linux/prctl.h>``.
_PR_SET_THP_DISABLE = 41

#: Seconds a thread runs Python before one waiting for the interpreter takes its turn (Python: 0.005).
SWITCH_INTERVAL = 0.001

#: Allocations (less deallocations) between collections of the youngest generation (Python: 700).
YOUNG_COLLECTION_THRESHOLD = 50_000


def opt_out_of_huge_pages() -> bool:
    """Stop the kernel backing this process's memory with transparent huge pages; whether it took.

    Applies to the whole process, to memory already mapped and to memory
    mapped later, and is inherited by forked workers.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def collect_garbage_less_often() -> None:
    """Keep what is loaded so far out of the garbage collector's walks, and collect less often.

    For a process that has imported its modules: they live as long as it
    does, so no collection needs to look at them again (``gc.freeze``).
    Objects with no cycles are freed as before, when their last reference goes.
    Once per process: a later call (the tests run the command line many
    times in one process) changes nothing.
    """
    global _collecting_less_often
    if _collecting_less_often:
        return
    _collecting_less_often = True
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)


_collecting_less_often = False


def switch_threads_more_often() -> None:
    """Let a thread waiting for the interpreter take it after :data:`SWITCH_INTERVAL` of another's Python.

    The 1,000,000-row dry run of ``bench/``, 21 runs of each setting
    alternated in three sittings: faster at 1 ms than at 5 ms in 16, by a
    median 3 %, with less CPU time in each sitting (0.2 ms was no better).
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
