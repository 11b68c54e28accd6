"""DataLoader workers under a scheduler's signals: a SIGTERM from anyone but their rank leaves them working (the rank
stops at a step boundary), while the loader, the rank's exit and the rank's death still end them. Real workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from torch.utils.data import Dataset

from utils.config import PROJECT_ROOT

ITEMS, BATCH = 16, 2


class SlowItems(Dataset):
    """Items that take a moment each, so the workers are busy when signalled; each names the worker's pid."""

    def __len__(self):
        return ITEMS

    def __getitem__(self, index):
        time.sleep(0.05)
        return {"index": index, "pid": os.getpid()}


def ended(pid: int) -> bool:
    """Whether process `pid` has ended (gone, or a zombie nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def wait_until_ended(pids: set[int], timeout: float) -> set[int]:
    """The pids still running after `timeout` seconds (empty once all have ended)."""
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = {pid for pid in pids if not ended(pid)}
        time.sleep(0.05)
    return pids


# In a fresh process, as a rank is: a loader whose two workers are signalled from another process, then finishes.
SIGNALLED_WORKERS = """
import subprocess, sys
sys.path.insert(0, sys.argv[1])
from tests.test_loaders import BATCH, ITEMS, SlowItems
from utils.train.distributed import DistContext
from utils.train.loaders import make_loader

iterator = iter(make_loader(SlowItems(), BATCH, DistContext(), seed=0, workers=2))
batches = [next(iterator), next(iterator)]
workers = {int(pid) for batch in batches for pid in batch["pid"]}
subprocess.run(["kill", "-TERM", *map(str, workers)], check=True)
batches += list(iterator)
assert sorted(int(i) for batch in batches for i in batch["index"]) == list(range(ITEMS))
print(*workers, flush=True)
"""


@pytest.mark.slow  # starts a process
def test_workers_keep_working_through_a_sigterm_from_another_process_and_the_loader_still_ends_them():
    # a fresh process: threads that the test runner's own process left in forked workers would change which thread
    # the kernel hands the signal to
    result = subprocess.run([sys.executable, "-c", SIGNALLED_WORKERS, str(PROJECT_ROOT)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    workers = {int(pid) for pid in result.stdout.split()}
    assert len(workers) == 2
    assert wait_until_ended(workers, timeout=2) == set()


# A rank with a loader mid-epoch whose workers were signalled by another process; then, by argv[1]: "exit" returns
# from the script with the iterator alive (multiprocessing ends the workers at exit, with SIGTERM from the rank),
# "killed" dies by SIGKILL (the workers' watchdog notices their parent is gone).
RANK = """
import os, signal, subprocess, sys
sys.path.insert(0, sys.argv[2])
from tests.test_loaders import BATCH, SlowItems
from utils.train.distributed import DistContext
from utils.train.loaders import make_loader

iterator = iter(make_loader(SlowItems(), BATCH, DistContext(), seed=0, workers=2))
workers = {int(pid) for pid in next(iterator)["pid"]} | {int(pid) for pid in next(iterator)["pid"]}
subprocess.run(["kill", "-TERM", *map(str, workers)], check=True)
next(iterator)
print(*workers, flush=True)
if sys.argv[1] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow  # a python process with DataLoader workers
# at exit the rank ends its workers before it returns; a dead rank's workers see it within the watchdog's 5 s poll
@pytest.mark.parametrize("how, code, seconds", [("exit", 0, 1), ("killed", -signal.SIGKILL, 15)])
def test_workers_end_when_their_rank_exits_or_dies(how, code, seconds):
    result = subprocess.run([sys.executable, "-c", RANK, how, str(PROJECT_ROOT)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == code, result.stderr[-2000:]
    workers = {int(pid) for pid in result.stdout.split()}
    assert len(workers) == 2
    assert wait_until_ended(workers, timeout=seconds) == set()


# A worker in which a thread started before sigterm_from_parent_only (so it does not block SIGTERM) is handed a
# SIGTERM: directed at that thread here, as the kernel may choose it for a signal sent to the process.
EARLY_THREAD = """
import signal, sys, threading, time
sys.path.insert(0, sys.argv[1])
from utils.train.loaders import sigterm_from_parent_only

blocked = threading.Event()
def started_earlier():
    blocked.wait()
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
    time.sleep(30)

threading.Thread(target=started_earlier, daemon=True).start()
sigterm_from_parent_only()
blocked.set()
time.sleep(30)
"""


@pytest.mark.slow  # starts a process
def test_a_sigterm_handed_to_a_thread_started_earlier_ends_the_worker_instead_of_being_lost():
    # Lost (SIG_IGN), it would leave a parent that ends its workers with one SIGTERM at exit waiting for ever.
    result = subprocess.run([sys.executable, "-c", EARLY_THREAD, str(PROJECT_ROOT)], timeout=25)
    assert result.returncode == -signal.SIGTERM
