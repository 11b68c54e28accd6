"""Processes of a training run: where this process sits (DistContext), the torchrun/srun/mpirun set-up, DDP
wrapping and the collective calls the trainers make (sums, gathers, broadcasts, agreeing on an error)."""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from utils.errors import ConfigError
from utils.runtime import choose_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank among `world_size` processes and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# Where launchers put a process's rank on its node: torchrun, then srun, then Open MPI's mpirun.
LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK")


def launched_world_size(env: Mapping[str, str] = os.environ) -> int:
    """The number of processes a launcher started (WORLD_SIZE; 1 without a launcher)."""
    return _env_int(env, "WORLD_SIZE", "1")


def local_rank_from_env(env: Mapping[str, str], world_size: int, device_type: str) -> int:
    """This process's rank on its node: LOCAL_RANK, else SLURM_LOCALID, else OMPI_COMM_WORLD_LOCAL_RANK. Without any
    of them several processes on CUDA cannot tell which GPU is theirs: a one-line error (on the CPU it is 0)."""
    for name in LOCAL_RANK_VARIABLES:
        if name in env:
            return _env_int(env, name)
    if world_size > 1 and device_type == "cuda":
        raise ConfigError(f"WORLD_SIZE is {world_size} but no local rank is set ({', '.join(LOCAL_RANK_VARIABLES)}): "
                          "cannot tell which GPU this process should use; launch with torchrun, srun or mpirun, or "
                          "export LOCAL_RANK")
    return 0


def _env_int(env: Mapping[str, str], name: str, default: str | None = None) -> int:
    value = env.get(name, default)
    if value is None:
        raise ConfigError(f"environment variable {name} is not set (needed when WORLD_SIZE > 1)")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a whole number, got {value!r}") from None


@contextmanager
def distributed_context(device_name: str = "auto") -> Iterator[DistContext]:
    """One process, or one of several started by a launcher (WORLD_SIZE > 1; torchrun, or srun/mpirun exporting
    RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT): init_process_group with nccl on CUDA, gloo on CPU, each process
    on the GPU of its local rank (gpu_of_local_rank). The group is destroyed on exit, after a barrier when the block
    ended normally, so that no process tears its connections down while another still uses them (a rank that left
    first was once seen to abort at exit, "terminate called without an active exception", failing a finished job)."""
    world_size = launched_world_size()
    device = choose_device(device_name)
    if world_size <= 1:
        yield DistContext(device=device)
        return
    rank, local_rank = _env_int(os.environ, "RANK"), local_rank_from_env(os.environ, world_size, device.type)
    if device.type == "cuda":
        device = gpu_of_local_rank(local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield DistContext(rank, world_size, local_rank, device)
        dist.barrier()  # only after a normal end: after an error another process may never come
    finally:
        dist.destroy_process_group()


def gpu_of_local_rank(local_rank: int) -> torch.device:
    """The GPU this process computes on. A process that sees one GPU uses it whatever its local rank: srun
    --gpus-per-task=1 (or a per-task CUDA_VISIBLE_DEVICES) gives each process its own GPU, always as cuda:0. With
    several visible, local rank k takes cuda:k, and a local rank beyond them is a one-line error."""
    visible = torch.cuda.device_count()
    if visible == 1:
        return torch.device("cuda", 0)
    if local_rank >= visible:
        raise ConfigError(f"local rank {local_rank} has no GPU: only {visible} visible on {socket.gethostname()} "
                          "(start at most that many processes per node)")
    return torch.device("cuda", local_rank)


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Move `model` to the device; under torchrun wrap it in DistributedDataParallel."""
    model = model.to(ctx.device)
    if not ctx.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def no_sync(model: nn.Module):
    """Skip DDP's gradient all-reduce (for gradients that are thrown away, e.g. D's during the G step)."""
    return model.no_sync() if isinstance(model, DistributedDataParallel) else nullcontext()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        dist.all_reduce(tensor)
    return tensor


def barrier(ctx: DistContext) -> None:
    """Collective: return once every process has reached this call (e.g. after rank 0 wrote a file); nothing in one
    process."""
    if ctx.distributed:
        dist.barrier(device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def gather_objects(value: Any, ctx: DistContext) -> list:
    """Every process's `value` (picklable), in rank order, on every process; [value] in one process."""
    if not ctx.distributed:
        return [value]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: Any, ctx: DistContext) -> Any:
    """Rank 0's `value` (picklable) on every process, e.g. a path only rank 0 knows."""
    if not ctx.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def raise_if_any_failed(error: ConfigError | None, ctx: DistContext) -> None:
    """Collective: when any process had `error`, every process raises it, as one line naming the first process
    that had it. A process that stopped alone would leave the others waiting in their next collective call."""
    if not ctx.distributed:
        if error is not None:
            raise error
        return
    reports = gather_objects(None if error is None else (socket.gethostname(), str(error)), ctx)
    for rank, report in enumerate(reports):
        if report is not None:
            raise ConfigError(f"rank {rank} on {report[0]}: {report[1]}")


def on_every_rank(fn: Callable[[], Any], ctx: DistContext) -> Any:
    """fn() in every process; a ConfigError (bad data, a missing file) in any of them stops them all."""
    try:
        result, error = fn(), None
    except ConfigError as exc:
        result, error = None, exc
    raise_if_any_failed(error, ctx)
    return result


def from_rank0(fn: Callable[[], Any], ctx: DistContext) -> Any:
    """fn() on rank 0 only, its result sent to every process: e.g. a checkpoint that only rank 0's node can see."""
    return broadcast_object(on_every_rank(fn if ctx.is_main else lambda: None, ctx), ctx)


def once_per_node(fn: Callable[[], Any], ctx: DistContext) -> Any:
    """fn() on the first process of each node, then on the others: whatever fn downloads into the node's cache
    (e.g. ImageNet weights) is fetched once per node, not once per process."""
    first = ctx.local_rank == 0
    result = on_every_rank(fn if first else lambda: None, ctx)
    later = on_every_rank(lambda: None if first else fn(), ctx)
    return result if first else later


def broadcast_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics). DDP sends them only at the start of a
    training forward, so after an epoch's last step each process holds its own; evaluation must score every shard
    with the buffers the checkpoint keeps (rank 0's)."""
    if ctx.distributed:
        for buffer in unwrap(model).buffers():
            dist.broadcast(buffer.data, src=0)


def mean_over_ranks(values: dict[str, torch.Tensor], ctx: DistContext) -> dict[str, float]:
    """Scalar tensors averaged over all processes (one all-reduce), as python floats for logging."""
    stacked = torch.stack([value.detach().float().reshape(()) for value in values.values()])
    stacked = all_reduce_sum(stacked, ctx) / ctx.world_size
    return dict(zip(values, stacked.tolist()))

