"""Stopping long loops on signals: inside `stop_on_signals`, SIGTERM (a scheduler's preemption notice) and SIGINT
(Ctrl-C) ask the loop to stop at its next safe point (between items, at a step boundary) instead of killing the
process."""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

# A SIGTERM repeated within this many seconds of the first is the same stop request, not "stop now": on a
# preemption SLURM signals every process of the job and the batch shell's relay through torchrun signals the ranks
# again, moments later. torchrun itself waits 30 s after its SIGTERM before it kills, so no copy from that chain
# arrives later than this; a SIGTERM after it (e.g. SLURM's at the time limit) stops at once.
REPEATED_SIGTERM_GRACE = 30.0


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@dataclass
class StopRequest:
    """The first stop signal received inside `stop_on_signals` (None until one arrives) and when (monotonic s)."""

    signum: int | None = None
    time: float = 0.0


_ACTIVE: list[StopRequest] = []  # the request of the outermost stop_on_signals block, while it runs


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Inside the block, SIGTERM and SIGINT only record a request that the caller checks at safe points; a
    second signal stops the process at once, except a SIGTERM after a SIGTERM within REPEATED_SIGTERM_GRACE
    seconds, which is the same request (see there). The previous handlers come back on exit. A nested block shares
    the outer block's request, so a signal that arrives between two loops stops the next one before it starts.
    Outside the main thread (where handlers cannot be set) the request never fires."""
    if _ACTIVE:
        yield _ACTIVE[0]
        return
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        now = time.monotonic()
        if request.signum is not None:
            if signum == request.signum == signal.SIGTERM and now - request.time < REPEATED_SIGTERM_GRACE:
                return  # the same preemption, signalled again by another process of the chain
            signal.signal(signum, signal.SIG_DFL)  # asked twice: stop now
            os.kill(os.getpid(), signum)
        request.signum, request.time = signum, now

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    _ACTIVE.append(request)
    try:
        yield request
    finally:
        _ACTIVE.clear()
        for signum, old in previous.items():
            signal.signal(signum, old)
