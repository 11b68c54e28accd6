"""GPU-only checks (`pytest -m gpu`; deselected by default, skipped where CUDA is unusable). They could not run
where this project was built, which has no GPU: they are the first thing to run on a GPU node (docs/gpus.md#gpu-tests).
Everything they rely on that a CPU can run is tested elsewhere."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import run_folders, set_flags
from tests.test_mri_gan_training import RUN_FOLDER, make_mri_gan_dataset, settings, tiny_config, weights_equal
from utils.config import PROJECT_ROOT
from utils.preprocess import jobs
from utils.train.distributed import DistContext
from utils.train.mri_gan import train
from utils.train.rng import rng_state, set_rng_state
from utils.train.run import config_for_resume

pytestmark = pytest.mark.gpu
CUDA = ["runtime.device=cuda"]
needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_mri_gan_dataset(tmp_path_factory.mktemp("gpu_mri_gan_data"))


def cuda_context() -> DistContext:
    return DistContext(device=torch.device("cuda"))


def test_cuda_generator_of_the_device_in_use_is_restored_whatever_the_gpu_count():
    device = torch.device("cuda")
    state = rng_state(device)
    expected = torch.rand(4, device=device)
    state["cuda"] = state["cuda"] + state["cuda"][:1]  # saved on a machine with one GPU more than this one
    torch.cuda.manual_seed(1234)
    set_rng_state(state, device)
    assert torch.equal(torch.rand(4, device=device), expected)


def test_deterministic_cuda_run_resumed_ends_with_the_uninterrupted_weights(data, tmp_path):
    """runtime.deterministic (the default) on CUDA with fp16 mixed precision: stop after step 4, resume from the
    step-3 checkpoint, and get the weights of the run that was never stopped."""
    overrides = ["MRI_GAN.model_params.n_epochs=2", "MRI_GAN.model_params.chkpt_freq=3", "runtime.precision=fp16",
                 *CUDA]
    full = train(tiny_config(data, tmp_path / "full", *overrides), cuda_context())
    run_dir = train(tiny_config(data, tmp_path / "stopped", *overrides), cuda_context(), max_steps=4)
    periodic = run_dir / "checkpoint.chkpt"
    cfg, checkpoint = config_for_resume(str(periodic), [])
    assert checkpoint["precision"] == "fp16" and "cuda_device" in checkpoint["rng"]
    train(cfg, cuda_context(), str(periodic), checkpoint)
    ours, reference = (torch.load(path / "checkpoint.chkpt", weights_only=True) for path in (run_dir, full))
    for key in ("generator_state_dict", "discriminator_state_dict"):
        assert weights_equal(ours[key], reference[key]), key


@needs_two_gpus
def test_torchrun_on_two_gpus_uses_nccl_and_one_gpu_per_process(data, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    flags = set_flags(settings(data, tmp_path, "MRI_GAN.model_params.batch_size=4", "MRI_GAN.model_params.n_epochs=1",
                               *CUDA))
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "train_MRI_GAN.py",
                             "--train_from_scratch", *flags],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "device cuda:0, 2 process(es)" in result.stdout
    (run_dir,) = run_folders(tmp_path, RUN_FOLDER)
    checkpoint = torch.load(run_dir / "checkpoint.chkpt", weights_only=True)
    assert [state["cuda"].numel() > 0 for state in checkpoint["rng_per_rank"]] == [True, True]


def record_assigned_device(folder: str) -> None:
    Path(folder, f"{os.getpid()}.txt").write_text(jobs.assigned_device("cuda"))


def idle(item) -> jobs.Outcome:
    return jobs.Outcome(jobs.DONE)


@needs_two_gpus
def test_preprocessing_workers_spread_over_the_gpus(tmp_path):
    jobs.run_items("spread", ["a", "b"], idle, key=str, workers=2, init=record_assigned_device,
                   init_args=(str(tmp_path),))
    jobs._close_pool()
    assert sorted(path.read_text() for path in tmp_path.glob("*.txt")) == ["cuda:0", "cuda:1"]


@pytest.mark.parametrize("deterministic", ["yes", "no"])
def test_step_benchmark_runs_on_cuda(tmp_path, deterministic):
    result = subprocess.run([sys.executable, "benchmarks/mri_gan_step_speed.py", "--device", "cuda", "--width", "8",
                             "--batch_sizes", "2", "--steps", "2", "--deterministic", deterministic,
                             "--output", str(tmp_path / "speed.json")],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"device": "cuda"' in (tmp_path / "speed.json").read_text()
