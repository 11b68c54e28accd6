"""Processes under a launcher: local rank from torchrun, srun or mpirun variables and the GPU it takes; one process's
error stops all of them in one line; work done once per node; no rank leaves a save before rank 0's file is written.
Real gloo process groups on 127.0.0.1."""
from __future__ import annotations

import socket
import sys

import pytest
import torch

from tests.helpers import free_port, run_together, srun_environment
from utils.config import PROJECT_ROOT
from utils.errors import ConfigError
from utils.train.distributed import gpu_of_local_rank, local_rank_from_env


@pytest.mark.parametrize("env, expected", [
    ({"LOCAL_RANK": "1", "SLURM_LOCALID": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "3"}, 1),  # torchrun
    ({"SLURM_LOCALID": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "3"}, 2),  # srun
    ({"OMPI_COMM_WORLD_LOCAL_RANK": "3"}, 3),  # mpirun
])
def test_local_rank_comes_from_torchrun_then_srun_then_mpirun(env, expected):
    assert local_rank_from_env(env, world_size=4, device_type="cuda") == expected


def test_no_local_rank_is_a_one_line_error_on_cuda_and_rank_0_of_its_node_on_the_cpu():
    with pytest.raises(ConfigError, match="no local rank is set") as error:
        local_rank_from_env({"RANK": "3", "WORLD_SIZE": "4"}, world_size=4, device_type="cuda")
    assert "\n" not in str(error.value)
    assert local_rank_from_env({}, world_size=4, device_type="cpu") == 0
    assert local_rank_from_env({}, world_size=1, device_type="cuda") == 0
    with pytest.raises(ConfigError, match="SLURM_LOCALID must be a whole number"):
        local_rank_from_env({"SLURM_LOCALID": "first"}, world_size=2, device_type="cuda")


def test_a_process_that_sees_one_gpu_uses_it_whatever_its_local_rank(monkeypatch):
    """srun --gpus-per-task=1: every process sees its own GPU as the only one."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert gpu_of_local_rank(0) == gpu_of_local_rank(3) == torch.device("cuda", 0)


def test_with_several_visible_gpus_local_rank_k_takes_gpu_k_and_beyond_them_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [gpu_of_local_rank(k) for k in range(4)] == [torch.device("cuda", k) for k in range(4)]
    with pytest.raises(ConfigError, match="local rank 4 has no GPU: only 4 visible") as error:
        gpu_of_local_rank(4)
    assert "\n" not in str(error.value)


# Each process: its local rank; BatchNorm statistics of its own batch, then rank 0's (broadcast_buffers);
# once_per_node (each call logs start and end); then a ConfigError that only rank 1 meets, inside on_every_rank.
# utils.cli.run turns errors into one line and an exit code.
PROBE = """
import sys, time
import torch
from utils.cli import run
from utils.errors import ConfigError
from utils.train.distributed import broadcast_buffers, distributed_context, on_every_rank, once_per_node

def main():
    log = sys.argv[1]
    with distributed_context("cpu") as ctx:
        print(f"rank {ctx.rank} local {ctx.local_rank}", flush=True)
        norm = torch.nn.BatchNorm1d(2)
        norm(torch.tensor([[0.0, 1.0], [2.0, 3.0]]) + 10 * ctx.rank)  # a training step on this rank's batch
        before = [round(value, 4) for value in norm.running_mean.tolist()]
        broadcast_buffers(norm, ctx)
        print(f"running mean {before} -> {[round(value, 4) for value in norm.running_mean.tolist()]}", flush=True)

        def fetch():
            with open(log, "a") as handle:
                handle.write(f"start {ctx.rank}\\n")
            time.sleep(0.5)
            with open(log, "a") as handle:
                handle.write(f"end {ctx.rank}\\n")

        once_per_node(fetch, ctx)

        def read():
            if ctx.rank == 1:
                raise ConfigError("data/valid.csv not found")

        on_every_rank(read, ctx)
    return 0

run(main)
"""


@pytest.mark.slow  # 2 processes
def test_srun_style_launch_takes_slurm_localid_runs_once_per_node_first_and_stops_every_rank_in_one_line(tmp_path):
    """Two processes started as srun does (RANK, WORLD_SIZE, SLURM_LOCALID; no LOCAL_RANK): local ranks from SLURM;
    both end up with rank 0's BatchNorm statistics (what validation under DDP scores with); local rank 0 finishes
    its fetch before the other starts; rank 1's error ends both processes with exit 2."""
    log, port = tmp_path / "fetch.log", free_port()
    results = run_together([([sys.executable, "-c", PROBE, str(log)], PROJECT_ROOT, srun_environment(rank, 2, port))
                            for rank in (0, 1)], timeout=120)
    for rank, result in enumerate(results):
        assert result.returncode == 2, result.stderr
        ranks, statistics = result.stdout.strip().splitlines()
        assert ranks == f"rank {rank} local {rank}"
        own = [0.1, 0.2] if rank == 0 else [1.1, 1.2]  # momentum 0.1 times this rank's batch mean
        assert statistics == f"running mean {own} -> [0.1, 0.2]"
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"rank 1 on {socket.gethostname()}: data/valid.csv not found" in result.stderr
    assert log.read_text().split("\n")[:-1] == ["start 0", "end 0", "start 1", "end 1"]


# Both ranks save a checkpoint through the Trainer; rank 0's write is slowed by 2 s. Each prints whether the file
# existed (complete: it is written under a temporary name, then renamed) when its save returned.
SLOW_SAVE = """
import os, sys, time
import torch
from utils.train import trainer
from utils.train.distributed import distributed_context

write = trainer.save_checkpoint

def slow_write(path, state):
    time.sleep(2)
    write(path, state)

trainer.save_checkpoint = slow_write
run_dir = sys.argv[1]
with distributed_context("cpu") as ctx:
    model = torch.nn.Linear(2, 1)
    run = trainer.Trainer(ctx, trainer.Path(run_dir), {"model_state_dict": model},
                          {"optimizer_state_dict": torch.optim.SGD(model.parameters(), lr=0.1)},
                          config={}, checkpoint_every=1, loss_keys=())
    run.save("checkpoint.chkpt")
    print(f"rank {ctx.rank} returned; file written: {os.path.exists(os.path.join(run_dir, 'checkpoint.chkpt'))}")
"""


@pytest.mark.slow  # 2 processes
def test_no_rank_returns_from_a_save_before_rank_0_has_written_the_checkpoint(tmp_path):
    port = free_port()
    results = run_together([([sys.executable, "-c", SLOW_SAVE, str(tmp_path)], PROJECT_ROOT,
                             srun_environment(rank, 2, port)) for rank in (0, 1)], timeout=120)
    for rank, result in enumerate(results):
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == f"rank {rank} returned; file written: True"
