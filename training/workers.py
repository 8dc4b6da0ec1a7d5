"""DataLoader workers that end with the process that started them.

Workers start from a ``forkserver`` (Linux), so their parent is the fork server, not the
trainer: killed with ``kill -9``, the trainer leaves them to torch's own watchdog, which
notices only when the worker next waits for work, and workers blocked handing over a batch
lingered for minutes. :func:`worker_init` (a DataLoader ``worker_init_fn``) makes each worker
exit at once when the trainer is gone: on Linux the kernel signals it when its parent (the
fork server, which exits when the trainer's end of its pipe closes) dies (``PR_SET_PDEATHSIG``),
and everywhere a daemon thread checks the trainer's process id every second.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

CHECK_EVERY_S = 1.0
_PR_SET_PDEATHSIG = 1


def exit_with(pid: int) -> Callable[[int], None]:
    """A picklable ``worker_init_fn`` whose workers exit when process ``pid`` is gone."""
    return functools.partial(worker_init, pid)


def worker_init(owner_pid: int, worker_id: int = 0) -> None:
    """In a DataLoader worker: exit as soon as ``owner_pid`` (the trainer) has died."""
    _die_with_parent()
    threading.Thread(
        target=_watch, args=(owner_pid,), name="terracorpus-owner-watch", daemon=True
    ).start()


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the watch thread still covers it


def _watch(owner_pid: int) -> None:
    while _alive(owner_pid):
        time.sleep(CHECK_EVERY_S)
    os._exit(0)  # nothing to flush: the batches had nowhere to go


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
