"""Run one preprocessing step's items: in-process or in a process pool, one shard of N, with a progress bar.

Each item is independent and writes its own outputs atomically, so a killed run resumes by skipping
finished items; problems with single items are collected (one CSV row each) and never stop the step.
"""
from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
from tqdm import tqdm

from utils.errors import ConfigError, ItemError
from utils.fileio import write_csv

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


def worker_state() -> dict[str, Any]:
    """Per-process objects built once by the step's initialiser (e.g. a face detector)."""
    return _WORKER_STATE


def _init_worker(init: Callable | None, init_args: tuple, threads: int) -> None:
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    _WORKER_STATE.clear()
    if init is not None:
        init(*init_args)


def _call(fn: Callable, item) -> Outcome:
    try:
        return fn(item)
    except (ItemError, OSError, ValueError) as exc:  # VideoError is a ValueError
        return Outcome(FAILED, problem=str(exc))


# The worker pool of the last parallel run, kept for the next run with the same set-up (e.g. the next split
# or data set of a step), so workers are spawned and their models built once per step, not once per folder.
_POOL: dict[str, Any] = {"key": None, "pool": None}


def _pool(workers: int, init: Callable | None, init_args: tuple, threads: int) -> ProcessPoolExecutor:
    key = repr((workers, init, init_args, threads))  # same function object and arguments: same set-up
    if _POOL["key"] != key:
        _close_pool()
        context = multiprocessing.get_context("spawn")  # safe with torch and CUDA, unlike fork
        _POOL["pool"] = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                            initargs=(init, init_args, threads))
        _POOL["key"] = key
    return _POOL["pool"]


def _close_pool(wait: bool = True) -> None:
    if _POOL["pool"] is not None:
        _POOL["pool"].shutdown(wait=wait, cancel_futures=True)
    _POOL.update(key=None, pool=None)


atexit.register(_close_pool)


def resolve_workers(workers: int) -> int:
    return workers if workers > 0 else (os.cpu_count() or 1)


def run_items(step: str, items: Sequence, fn: Callable[[Any], Outcome], key: Callable[[Any], str],
              workers: int = 1, init: Callable | None = None, init_args: tuple = (),
              failures_csv: Path | None = None) -> Summary:
    """Run `fn` on every item (in `workers` processes when > 1) and summarise; never raises for one item."""
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

    threads = max(1, (os.cpu_count() or 1) // workers)
    try:
        if workers == 1 or len(items) <= 1:
            _init_worker(init, init_args, threads)
            for item in items:
                record(item, _call(fn, item))
        else:
            pool = _pool(workers, init, init_args, threads)
            futures = {pool.submit(_call, fn, item): item for item in items}
            try:
                for future in as_completed(futures):
                    record(futures[future], future.result())
            except BaseException:
                _close_pool(wait=False)
                raise
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
        if failures_csv is not None and summary.problems:
            write_csv(failures_csv, pd.DataFrame(summary.problems, columns=["item", "status", "reason"]))
    return summary
