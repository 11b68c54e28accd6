"""Run one preprocessing step's items: in-process or in a process pool, one shard of N, with a progress bar.

Each item is independent and writes its own outputs atomically, so a killed run resumes by skipping
finished items; problems with single items are collected (one CSV row each) and never stop the step.
Faults of the machine do: a failed write (OutputError) stops the step at once, and SIGTERM/SIGINT stop it
between items (Interrupted, exit code 143/130).
On CUDA, worker k runs its models on GPU k mod N; an item that runs out of GPU memory is tried once more with
half the batch size (`batch_size`), then recorded as failed; any other CUDA error stops the step in one line.
"""
from __future__ import annotations

import atexit
import gc
import logging
import multiprocessing
import re
import signal
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from tqdm import tqdm

from utils.errors import ConfigError, DeviceError, Interrupted, ItemError, OutputError, StepFailed
from utils.fileio import write_csv
from utils.runtime import available_cpus
from utils.signals import signal_name, stop_on_signals

log = logging.getLogger(__name__)

DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass
class Outcome:
    """What one item produced. `problem` is reported in the failures CSV even when status is 'done'
    (e.g. a video with no face is done, with no crops)."""

    status: str
    count: int = 0
    problem: str = ""
    rows: list = field(default_factory=list)


@dataclass
class Summary:
    step: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    outputs: int = 0
    seconds: float = 0.0
    problems: list = field(default_factory=list)  # (item, status, reason)
    rows: list = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.step}: {self.total} items: {self.done} done, {self.skipped} already done, "
                f"{self.failed} failed, {len(self.problems)} with problems, {self.outputs} outputs "
                f"in {self.seconds:.1f}s")


def check_failures(flag: str, summaries: Sequence[Summary], run_dir: Path) -> None:
    """After a step (all its summaries): when every item failed, StepFailed (exit code 1, so a scheduler sees it;
    the failures CSVs are written by then); when only some did, one line saying how many."""
    total, failed = sum(s.total for s in summaries), sum(s.failed for s in summaries)
    if not failed:
        return
    where = f"the reasons are in {run_dir}/{flag}*_failures.csv"
    if failed == total:
        raise StepFailed(f"--{flag}: all {total} items failed; {where}")
    print(f"--{flag}: {failed} of {total} items failed; {where}", flush=True)


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' (1-based K) -> (K, N); a one-line ConfigError otherwise."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard expects K/N with whole numbers, e.g. 2/8, got {text!r}") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard {text}: K must be between 1 and N")
    return k, n


def select_shard(items: Sequence, shard: tuple[int, int]) -> list:
    """Items i with i % N == K-1: the N shards of a sorted list are disjoint and cover it."""
    k, n = shard
    return [item for i, item in enumerate(items) if i % n == k - 1]


_WORKER_STATE: dict[str, Any] = {}
# This process's place among the step's workers (0 in-process), and the divisor of batch sizes: 2 while an item
# is retried after running out of GPU memory.
_WORKER = {"index": 0, "batch_divisor": 1}


def worker_state() -> dict[str, Any]:
    """Per-process objects built once by the step's initialiser (e.g. a face detector)."""
    return _WORKER_STATE


def worker_device(device: str, index: int, gpu_count: int) -> str:
    """The device worker `index` runs models on: 'cuda' becomes cuda:(index mod gpu_count), so the workers spread
    over every GPU of the machine instead of sharing GPU 0; any other device is used as given."""
    return f"cuda:{index % gpu_count}" if device == "cuda" and gpu_count > 0 else device


def worker_index() -> int:
    """This process's place among the step's pool workers, in start order (0 when items run in-process)."""
    return _WORKER["index"]


def assigned_device(device: str) -> str:
    """This worker's device for the step's `device` (worker_device with its index and the visible GPU count)."""
    return worker_device(device, worker_index(), torch.cuda.device_count() if device == "cuda" else 0)


def batch_size(configured: int) -> int:
    """The batch size an item's model calls use now: `configured`, or half of it (at least 1) while the item is
    retried after running out of GPU memory."""
    return max(1, configured // _WORKER["batch_divisor"])


def _init_worker(init: Callable | None, init_args: tuple, threads: int, counter=None) -> None:
    import cv2

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    _WORKER_STATE.clear()
    if counter is not None:  # a pool worker: take the next index (0, 1, ... in start order)
        with counter.get_lock():
            _WORKER["index"], counter.value = counter.value, counter.value + 1
    if init is not None:
        init(*init_args)


def _init_pool_worker(init: Callable | None, init_args: tuple, threads: int, counter) -> None:
    """Pool workers ignore SIGINT (Ctrl-C reaches the whole process group): the main process lets them finish
    their items, then stops. SIGTERM keeps its default, so a pool can always be ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(init, init_args, threads, counter)


def _call(fn: Callable, item, name: str) -> Outcome:
    try:
        return _retry_out_of_memory(fn, item)
    except (ItemError, OSError, ValueError) as exc:  # VideoError is a ValueError
        return Outcome(FAILED, problem=str(exc))
    except RuntimeError as exc:
        if is_cuda_error(exc):
            raise DeviceError(f"CUDA error on {name}: {_first_line(exc)}; the step stops, since every further item "
                              "would fail too (finished outputs are kept: fix the GPU and re-run to resume)") from None
        raise


def _retry_out_of_memory(fn: Callable, item) -> Outcome:
    """fn(item); after an out-of-memory error, once more with halved batches (batch_size), then failed with the
    reason: the item, not the step, is what does not fit, and a re-run would hit it again."""
    try:
        return fn(item)
    except torch.OutOfMemoryError:
        pass  # retried below, outside this block, so that the failed attempt's tensors can be freed first
    _free_gpu_memory()
    _WORKER["batch_divisor"] = 2
    try:
        return fn(item)
    except torch.OutOfMemoryError as exc:
        reason = _first_line(exc)
    finally:
        _WORKER["batch_divisor"] = 1
    _free_gpu_memory()
    return Outcome(FAILED, problem=f"out of GPU memory, also with half the batch size ({reason})")


def is_cuda_error(exc: BaseException) -> bool:
    """A failure of the GPU or its libraries (torch.AcceleratorError, or a RuntimeError naming CUDA, cuDNN, cuBLAS
    or NCCL), as opposed to a problem of one item."""
    return isinstance(exc, torch.AcceleratorError) or (
        isinstance(exc, RuntimeError) and re.search(r"\bCUDA\b|cuDNN|CUBLAS|cublas|NCCL", str(exc)) is not None)


def _free_gpu_memory() -> None:
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# The worker pool of the last parallel run, kept for the next run with the same set-up (e.g. the next split
# or data set of a step), so workers are spawned and their models built once per step, not once per folder.
_POOL: dict[str, Any] = {"key": None, "pool": None}


def _pool(workers: int, init: Callable | None, init_args: tuple, threads: int) -> ProcessPoolExecutor:
    key = repr((workers, init, init_args, threads))  # same function object and arguments: same set-up
    if _POOL["key"] != key:
        _close_pool()
        context = multiprocessing.get_context("spawn")  # safe with torch and CUDA, unlike fork
        _POOL["pool"] = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_pool_worker,
                                            initargs=(init, init_args, threads, context.Value("i", 0)))
        _POOL["key"] = key
    return _POOL["pool"]


def _close_pool(wait: bool = True) -> None:
    if _POOL["pool"] is not None:
        _POOL["pool"].shutdown(wait=wait, cancel_futures=True)
    _POOL.update(key=None, pool=None)


atexit.register(_close_pool)


def resolve_workers(workers: int) -> int:
    return workers if workers > 0 else available_cpus()


def run_items(step: str, items: Sequence, fn: Callable[[Any], Outcome], key: Callable[[Any], str],
              workers: int = 1, init: Callable | None = None, init_args: tuple = (),
              failures_csv: Path | None = None) -> Summary:
    """Run `fn` on every item (in `workers` processes when > 1) and summarise; never raises for one item.

    Raises OutputError when an output cannot be written, and Interrupted when SIGTERM/SIGINT arrived (the items
    in progress are finished first); the failures CSV holds the problems met until then.
    """
    workers = resolve_workers(workers)
    summary = Summary(step, total=len(items))
    start = time.perf_counter()
    bar = tqdm(total=len(items), desc=step, unit="item", dynamic_ncols=True, disable=None)

    def record(item, outcome: Outcome) -> None:
        setattr(summary, outcome.status, getattr(summary, outcome.status) + 1)
        summary.outputs += outcome.count
        summary.rows.extend(outcome.rows)
        if outcome.problem:
            summary.problems.append((key(item), outcome.status, outcome.problem))
            log.warning("%s: %s: %s", step, key(item), outcome.problem)
        bar.update(1)
        bar.set_postfix(done=summary.done, skipped=summary.skipped, failed=summary.failed, refresh=False)

    threads = max(1, available_cpus() // workers)  # the task's CPUs, shared by its workers
    write_failures = True
    try:
        with stop_on_signals() as stop:
            if stop.signum:
                pass  # the signal arrived between two steps (see data_preprocess.py): this one does not start
            elif workers == 1 or len(items) <= 1:
                _init_worker(init, init_args, threads)
                for item in items:
                    if stop.signum:
                        break
                    record(item, _call(fn, item, key(item)))
            else:
                _run_in_pool(_pool(workers, init, init_args, threads), fn, items, key, record, stop)
        if stop.signum:
            raise Interrupted(stop.signum, f"stopped by {signal_name(stop.signum)} during '{step}' after "
                                           f"{summary.done + summary.skipped + summary.failed} of {summary.total} "
                                           "items; finished outputs are kept: re-run the same command to resume")
    except OutputError:
        write_failures = False  # the disk that refused an output would refuse the CSV too
        raise
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
        if write_failures and failures_csv is not None and summary.problems:
            write_csv(failures_csv, pd.DataFrame(summary.problems, columns=["item", "status", "reason"]))
    return summary


def _run_in_pool(pool: ProcessPoolExecutor, fn: Callable, items: Sequence, key: Callable[[Any], str],
                 record: Callable, stop) -> None:
    """Submit every item; on a stop request, cancel those not started and record those finishing."""
    futures = {pool.submit(_call, fn, item, key(item)): item for item in items}
    try:
        for future in as_completed(futures):
            if future.cancelled():
                continue
            record(futures[future], future.result())
            if stop.signum:
                for pending in futures:
                    pending.cancel()  # only items not yet started; the running ones finish
    except BrokenProcessPool:
        _close_pool(wait=False)
        if not stop.signum:
            raise
        # SIGTERM sent to every process (e.g. a scheduler's kill) ended the workers too: stop as asked. Their
        # unfinished items left only hidden partial outputs, which the re-run clears.
    except BaseException:
        _close_pool(wait=False)
        raise
