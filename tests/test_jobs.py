"""The preprocessing job runner on GPUs: worker k on GPU k mod N, model workers bounded per GPU, an item that runs
out of GPU memory retried once with half the batch, any other CUDA error stopping the step in one line.

No GPU here: nothing on a CPU raises torch.OutOfMemoryError (the CPU allocator raises a plain RuntimeError) or
torch.AcceleratorError, so the jobs below raise the exception types (and messages) CUDA raises; the GPU test at the
end makes a real CUDA out-of-memory error."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from utils.config import load_config
from utils.errors import DeviceError
from utils.preprocess import jobs
from utils.preprocess.common import Options, detector, detector_settings, init_detector

CONFIGURED_BATCH = 8


def needs_memory(item) -> jobs.Outcome:
    """A model call whose batch fits only up to `largest` images; the batch comes from jobs.batch_size."""
    name, largest = item
    batch = jobs.batch_size(CONFIGURED_BATCH)
    if batch > largest:
        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {batch} GiB (GPU 0; 2 GiB free)")
    return jobs.Outcome(jobs.DONE, count=batch)


def test_worker_k_runs_on_gpu_k_mod_gpu_count():
    assert [jobs.worker_device("cuda", k, 3) for k in range(5)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert jobs.worker_device("cpu", 4, 3) == "cpu"


def record_worker(folder: str) -> None:
    """Pool initialiser: write this worker's index and the GPU it would take on a 2-GPU machine."""
    Path(folder, f"{os.getpid()}.txt").write_text(jobs.worker_device("cuda", jobs.worker_index(), 2))


@pytest.mark.slow  # a pool of 2 worker processes
def test_pool_workers_are_numbered_so_they_spread_over_the_gpus(tmp_path):
    items = [("a", 8), ("b", 8)]
    summary = jobs.run_items("spread", items, needs_memory, key=lambda it: it[0], workers=2, init=record_worker,
                             init_args=(str(tmp_path),))
    jobs._close_pool()  # waits until both workers have started (and run their initialiser)
    assert summary.done == 2
    assert sorted(path.read_text() for path in tmp_path.glob("*.txt")) == ["cuda:0", "cuda:1"]


def test_model_steps_use_at_most_workers_per_gpu():
    assert Options(workers=16, device="cuda", workers_per_gpu=2, gpu_count=3).model_workers() == 6
    assert Options(workers=4, device="cuda", workers_per_gpu=2, gpu_count=3).model_workers() == 4
    assert Options(workers=0, device="cuda", workers_per_gpu=1, gpu_count=1).model_workers() == 1  # 0 = per CPU
    assert Options(workers=16, device="cpu", workers_per_gpu=2, gpu_count=0).model_workers() == 16


def test_out_of_memory_item_is_retried_once_with_half_the_batch_then_recorded_as_failed(tmp_path):
    items = [("fits", 8), ("fits_at_half", 4), ("too_big", 2)]
    failures = tmp_path / "failures.csv"
    summary = jobs.run_items("oom", items, needs_memory, key=lambda it: it[0], failures_csv=failures)
    assert (summary.done, summary.failed, summary.outputs) == (2, 1, 8 + 4)
    (row,) = pd.read_csv(failures).to_dict("records")
    assert row["item"] == "too_big" and row["status"] == "failed"
    assert row["reason"].startswith("out of GPU memory, also with half the batch size (CUDA out of memory.")
    assert jobs.batch_size(CONFIGURED_BATCH) == CONFIGURED_BATCH  # the next item starts at full size again


def detector_batch(item) -> jobs.Outcome:
    size = detector().batch_size
    if size > 16:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
    return jobs.Outcome(jobs.DONE, count=size)


def test_the_face_detector_runs_the_retry_with_half_its_batch():
    settings = {**detector_settings(load_config(), "cpu"), "batch_size": 32}
    summary = jobs.run_items("detect", ["video"], detector_batch, key=str, init=init_detector, init_args=(settings,))
    assert (summary.done, summary.outputs) == (1, 16)


def gpu_failure(item) -> jobs.Outcome:
    raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered\n"
                                 "CUDA kernel errors might be asynchronously reported at some other API call")


def test_any_other_cuda_error_stops_the_step_in_one_line():
    with pytest.raises(DeviceError) as error:
        jobs.run_items("crash", ["clip.mp4", "next.mp4"], gpu_failure, key=str)
    message = str(error.value)
    assert message.startswith("CUDA error on clip.mp4: CUDA error: an illegal memory access was encountered;")
    assert "\n" not in message and "re-run to resume" in message


def allocate_on_gpu(item) -> jobs.Outcome:
    """Allocates (batch - 1) x 1 TiB on the GPU: batch 1 fits, anything larger cannot."""
    name, batch = item
    batch = jobs.batch_size(batch)
    torch.empty((batch - 1) * 2**40, dtype=torch.uint8, device="cuda")
    return jobs.Outcome(jobs.DONE, count=batch)


@pytest.mark.gpu
def test_gpu_real_out_of_memory_is_retried_with_half_the_batch():
    summary = jobs.run_items("oom", [("two", 2), ("four", 4)], allocate_on_gpu, key=lambda it: it[0])
    assert (summary.done, summary.failed, summary.outputs) == (1, 1, 1)
    assert summary.problems[0][0] == "four" and "out of GPU memory" in summary.problems[0][2]
