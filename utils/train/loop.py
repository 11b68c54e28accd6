"""Training skeleton shared by the trainers: torchrun/DDP set-up, seeded loaders, RNG capture, checkpoints,
exact resume, CSV logs, curves and progress bars. Only rank 0 writes files and shows bars.

Faults a long run meets are handled here, once for both trainers: SIGTERM/SIGINT save a checkpoint at the
next step boundary (every rank agrees on the step) and exit 143/130; a non-finite loss stops the run before
anything is saved; a resume that cannot be exact says why."""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import signal
import socket
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler
from tqdm import tqdm

from utils.checkpoint import load_state
from utils.errors import CheckpointError, ConfigError, Interrupted, NonFiniteLoss
from utils.fileio import atomic_path, write_json, write_png, write_stream, writing
from utils.names import PERIODIC
from utils.runtime import (Precision, StopRequest, choose_device, choose_precision, seed_everything, signal_name,
                           stop_on_signals)

log = logging.getLogger(__name__)


# --- processes ------------------------------------------------------------------------------------


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
    on the GPU of its local rank (local_rank_from_env). The group is destroyed on exit."""
    world_size = launched_world_size()
    device = choose_device(device_name)
    if world_size <= 1:
        yield DistContext(device=device)
        return
    rank, local_rank = _env_int(os.environ, "RANK"), local_rank_from_env(os.environ, world_size, device.type)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible on "
                              f"{socket.gethostname()} (start at most that many processes per node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield DistContext(rank, world_size, local_rank, device)
    finally:
        dist.destroy_process_group()


def seed_process(seed: int, ctx: DistContext) -> None:
    """Seed python, numpy and torch; ranks differ so their dropout masks do (DDP syncs the weights)."""
    seed_everything(seed + ctx.rank)


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (e.g. run seed, epoch), the same on every process."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> 1)


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Move `model` to the device; under torchrun wrap it in DistributedDataParallel."""
    model = model.to(ctx.device)
    if not ctx.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def no_sync(model: nn.Module):
    """Skip DDP's gradient all-reduce (for gradients that are thrown away, e.g. D's during the G step)."""
    return model.no_sync() if isinstance(model, DistributedDataParallel) else nullcontext()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        dist.all_reduce(tensor)
    return tensor


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


# --- data -----------------------------------------------------------------------------------------


class ShardSampler(Sampler):
    """Indices `rank, rank + world, ...` with no padding: each item is seen exactly once over all ranks."""

    def __init__(self, length: int, ctx: DistContext):
        self.indices = list(range(ctx.rank, length, ctx.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class SkipSampler(Sampler):
    """A sampler's indices without the first `skip` (the batches a resumed run has already done)."""

    def __init__(self, base: Sampler, skip: int = 0):
        self.base, self.skip = base, skip

    def __iter__(self):
        return iter(list(self.base)[self.skip:])

    def __len__(self):
        return max(len(self.base) - self.skip, 0)


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: seed python and numpy from the per-worker torch seed the DataLoader derived. Loader
    workers ignore SIGINT (Ctrl-C reaches the whole process group): the main process stops at a step boundary
    and shuts them down. SIGTERM keeps its default, which the DataLoader uses to end stuck workers; schedulers
    must signal the main process only (cluster/train.sbatch: --signal=B:TERM, passed on by the batch shell)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, ctx: DistContext, *, seed: int, epoch: int = 0,
                workers: int = 0, shuffle: bool = False, training: bool = True, skip_batches: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader whose order depends only on (seed, epoch), not on global RNG state or worker count.

    training=True under torchrun: DistributedSampler (equal batch counts on every rank, so DDP never waits
    forever); training=False: ShardSampler (every item once, for exact evaluation sums).
    `batch_size` is per process. `skip_batches` drops the first batches of this epoch (exact resume).
    """
    if ctx.distributed and training:
        base = DistributedSampler(dataset, ctx.world_size, ctx.rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        base.set_epoch(epoch)
    elif ctx.distributed:
        base = ShardSampler(len(dataset), ctx)
    elif shuffle:
        base = RandomSampler(dataset, generator=torch.Generator().manual_seed(derive_seed(seed, epoch)))
    else:
        base = SequentialSampler(dataset)
    # The loader draws its worker base seed from `generator`; without one it would consume global RNG.
    return DataLoader(dataset, batch_size=batch_size, sampler=SkipSampler(base, skip_batches * batch_size),
                      num_workers=workers, worker_init_fn=seed_worker, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(derive_seed(seed, epoch, 1)),
                      pin_memory=ctx.device.type == "cuda")


def progress(iterable: Iterable, ctx: DistContext, **kwargs) -> tqdm:
    """A tqdm bar on rank 0; other ranks iterate silently."""
    return tqdm(iterable, disable=not ctx.is_main, dynamic_ncols=True, leave=False, **kwargs)


def training_precision(cfg, device: torch.device, fp16: bool = False, opt_level: str = "O0") -> Precision:
    """A trainer's precision. runtime.precision (--precision) fp32, bf16 or fp16 is used as given; with 'auto'
    (the default) training reproduces the paper: the original trained with apex, whose opt_level O0 is plain
    FP32 even with fp16: true, so only fp16 with O1/O2/O3 gives mixed precision (runtime 'auto': bf16 on a CPU
    with native bf16, mixed precision on CUDA). The MRI-GAN had no such keys: FP32."""
    requested = cfg["runtime.precision"]
    if requested != "auto":
        return choose_precision(requested, device)
    if fp16 and opt_level != "O0":
        return choose_precision("auto", device)
    choice = Precision("fp32", device.type, f"the paper's training precision (FP32; apex opt_level {opt_level})")
    log.info("training precision %s: %s", choice.name, choice.reason)
    return choice


class MixedPrecision:
    """Autocast and gradient scaling for training steps at a Precision: fp16 gets a gradient scaler, bf16 and
    fp32 need none. One object per trainer; its scaler is saved in the checkpoints."""

    def __init__(self, precision: Precision):
        self.precision = precision
        self.scaler = torch.amp.GradScaler(precision.device_type) if precision.name == "fp16" else None

    def autocast(self):
        return self.precision.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        """Once per training step, after every optimizer of the step has stepped."""
        if self.scaler is not None:
            self.scaler.update()


# --- random state ---------------------------------------------------------------------------------


def rng_state(device: torch.device | None = None) -> dict:
    """This process's python, numpy, torch and CUDA generator states, in weights_only-loadable types; on CUDA also
    the state of `device` (the one in use) on its own, which a resume restores whatever the GPU count."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if device is not None and device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore `rng_state`'s generators; the in-use CUDA generator goes to `device`, every other GPU's only when
    the GPU count is the one saved."""
    random.setstate(_as_tuple(state["python"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if device is not None and device.type == "cuda" and "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"], device)


def torch_rng_of_every_rank(ctx: DistContext) -> list[dict]:
    """The torch (and current CUDA device) generator state of every process: a collective call."""
    own = {"torch": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        own["cuda"] = torch.cuda.get_rng_state(ctx.device)
    gathered = {}
    for name, tensor in own.items():
        parts = [torch.empty_like(tensor, device=ctx.device) for _ in range(ctx.world_size)]
        dist.all_gather(parts, tensor.to(ctx.device))
        gathered[name] = [part.cpu() for part in parts]
    return [{name: gathered[name][rank] for name in gathered} for rank in range(ctx.world_size)]


def _as_tuple(value):
    # python's random state is nested tuples; keep it so even if a loader hands back lists
    return tuple(_as_tuple(item) for item in value) if isinstance(value, (list, tuple)) else value


# --- files ----------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """torch.save to a temporary name, then rename: a crash never leaves a half-written checkpoint, and a
    failed write (disk full, quota) is an OutputError naming the file."""
    return write_stream(path, lambda handle: torch.save(state, handle))


class CsvLog:
    """A CSV file that grows by one appended row per call (never rewritten per row).

    `keep` restarts the log from `source` (default: the file itself), keeping only rows it accepts; used
    once at resume time to drop rows written after the checkpoint, or to carry history into a new folder.
    """

    def __init__(self, path: str | Path, columns: Sequence[str], keep: Callable[[dict], bool] | None = None,
                 source: str | Path | None = None):
        self.path, self.columns = Path(path), list(columns)
        if keep is not None:
            self._restart(Path(source) if source else self.path, keep)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
            if new:
                self._writer.writeheader()

    def _restart(self, source: Path, keep: Callable[[dict], bool]) -> None:
        rows = []
        if source.is_file():
            with open(source, newline="", encoding="utf-8") as handle:
                # a killed writer can leave a short last line: rows missing fields are dropped
                rows = [row for row in csv.DictReader(handle) if None not in row.values() and keep(row)]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict) -> None:
        with writing(self.path):
            self._writer.writerow({key: _csv_value(value) for key, value in row.items()})
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def _csv_value(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def plot_curves(csv_path: str | Path, png_path: str | Path, panels: dict[str, Sequence[str]],
                x: str = "step") -> Path | None:
    """One subplot per panel title, each drawing the named CSV columns against `x`; written atomically.
    Returns None when the log has no rows yet."""
    from matplotlib.figure import Figure  # object API: no pyplot, no global backend state

    frame = pd.read_csv(csv_path)
    if frame.empty:
        return None
    figure = Figure(figsize=(6 * len(panels), 4), layout="constrained")
    for axis, (title, columns) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        for column in columns:
            axis.plot(frame[x], frame[column], label=column, linewidth=1)
        axis.set_title(title)
        axis.set_xlabel(x)
        axis.legend()
        axis.grid(alpha=0.3)
    with atomic_path(png_path) as tmp:
        figure.savefig(tmp, format="png", dpi=80)
    return Path(png_path)


def save_image_grid(path: str | Path, rows: Sequence[Sequence[np.ndarray]], column_titles: Sequence[str],
                    row_labels: Sequence[str], tile: int = 128) -> Path:
    """Write a PNG of RGB uint8 images, one list per row, each tile resized to `tile` px, with a title
    band on top and a label in each row's first tile."""
    band = np.full((24, tile * len(column_titles), 3), 255, np.uint8)
    for i, title in enumerate(column_titles):
        cv2.putText(band, title, (i * tile + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    lines = [band]
    for images, label in zip(rows, row_labels):
        tiles = [cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA) for image in images]
        cv2.putText(tiles[0], label, (4, tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
        lines.append(np.concatenate(tiles, axis=1))
    return write_png(path, np.concatenate(lines, axis=0))


# --- the loop -------------------------------------------------------------------------------------


@dataclass
class Position:
    """Where a run is: the epoch in progress (0-based), its batches done, optimisation steps done."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best: dict = field(default_factory=dict)  # best held-out scores so far, e.g. {"test_ssim": 0.8}


class Trainer:
    """Epoch/step loop with periodic checkpoints, exact resume and a per-step CSV log (epochs 1-based there).

    `modules` and `optimizers` map checkpoint keys to objects (e.g. {"model_state_dict": net}); the task
    supplies a loader per epoch, a step function returning scalar losses, and an end-of-epoch hook
    (evaluation, best checkpoints, pictures). `loss_keys` name the optimised losses among the step's values:
    a non-finite one stops training. Every method that saves is collective under torchrun.
    """

    def __init__(self, ctx: DistContext, run_dir: Path | None, modules: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], *, config: dict, checkpoint_every: int,
                 loss_keys: Sequence[str], periodic_name: str = PERIODIC, extra: dict | None = None,
                 precision: MixedPrecision | None = None):
        self.ctx, self.run_dir = ctx, run_dir
        self.modules, self.optimizers = modules, optimizers
        self.precision = precision or MixedPrecision(Precision("fp32", ctx.device.type, "no precision given"))
        self.scaler = self.precision.scaler
        self.config, self.extra = config, dict(extra or {})
        self.checkpoint_every, self.periodic_name, self.loss_keys = checkpoint_every, periodic_name, tuple(loss_keys)
        self.position = Position()
        self.step_log: CsvLog | None = None
        self.on_step: Callable[[dict[str, float], int], None] | None = None  # after each step: (losses, step)
        self._rng_to_restore: tuple[dict, list | None] | None = None
        self.last_checkpoint: tuple[str, int] | None = None  # (path, step) of the last periodic checkpoint
        self.resume_record: dict | None = None  # where this run was resumed from, and why it is not exact

    # checkpoints

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: weights, optimizers, position, RNG states, config."""
        state = {key: unwrap(module).state_dict() for key, module in self.modules.items()}
        state.update({key: optimizer.state_dict() for key, optimizer in self.optimizers.items()})
        if self.scaler is not None:
            state["scaler_state_dict"] = self.scaler.state_dict()
        position = self.position
        state.update(epoch=position.epoch, batch_in_epoch=position.batch, global_step=position.step,
                     best=dict(position.best), world_size=self.ctx.world_size, device=self.ctx.device.type,
                     precision=self.precision.precision.name, rng=rng_state(self.ctx.device),
                     rng_per_rank=torch_rng_of_every_rank(self.ctx) if self.ctx.distributed else None,
                     config=self.config, **self.extra)
        return state

    def save(self, name: str) -> None:
        state = self.state_dict()  # every rank takes part (RNG gather); rank 0 writes
        if self.ctx.is_main:
            save_checkpoint(self.run_dir / name, state)
        if name == self.periodic_name:
            self.last_checkpoint = (str(self.run_dir / name) if self.ctx.is_main else name, self.position.step)

    def restore(self, checkpoint: dict, source: str | Path) -> None:
        """Load a checkpoint written by `save`; RNG states are applied when `run` starts. What makes the
        continuation inexact (another world size, loader worker count, device or precision) is logged and
        kept for the run's summary."""
        missing = [key for key in [*self.modules, *self.optimizers, "global_step", "rng"] if key not in checkpoint]
        if missing:
            raise CheckpointError(f"{source}: not a training checkpoint of this trainer (no {missing[0]})")
        for key, module in self.modules.items():
            load_state(unwrap(module), checkpoint, key, source)
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(checkpoint[key])
        if self.scaler is not None and "scaler_state_dict" in checkpoint:
            self.scaler.load_state_dict(checkpoint["scaler_state_dict"])
        self.position = Position(checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["global_step"],
                                 dict(checkpoint.get("best", {})))
        per_rank = checkpoint.get("rng_per_rank")
        self._rng_to_restore = (checkpoint["rng"], per_rank if per_rank and len(per_rank) == self.ctx.world_size
                                else None)
        self.last_checkpoint = (str(source), self.position.step)
        reasons = inexact_resume_reasons(checkpoint, self.ctx, self.config["runtime"]["loader_workers"],
                                         self.precision.precision.name)
        self.resume_record = {"from": str(source), "at_step": self.position.step, "exact": not reasons,
                              "warnings": reasons, "time": datetime.now().isoformat(timespec="seconds")}
        if self.ctx.is_main:
            for reason in reasons:
                log.warning("resume from %s is not exact: %s", source, reason)

    def _apply_saved_rng(self) -> None:
        if self._rng_to_restore is None:
            return
        shared, per_rank = self._rng_to_restore
        set_rng_state(shared, self.ctx.device)
        if per_rank is not None:
            torch.set_rng_state(per_rank[self.ctx.rank]["torch"])
            if "cuda" in per_rank[self.ctx.rank] and self.ctx.device.type == "cuda":
                torch.cuda.set_rng_state(per_rank[self.ctx.rank]["cuda"], self.ctx.device)
        elif self.ctx.distributed:  # saved with another process count: ranks must still differ
            torch.manual_seed(derive_seed(self.ctx.rank, self.position.step, torch.initial_seed()))
        self._rng_to_restore = None

    def write_summary(self, status: str) -> None:
        """<run>/summary.json (rank 0): status, position, last checkpoint and every resume of this run folder
        with its warnings; rewritten at start, stop and end."""
        if not self.ctx.is_main:
            return
        path = self.run_dir / "summary.json"
        try:
            resumes = json.loads(path.read_text(encoding="utf-8"))["resumes"]  # earlier runs in this folder
        except (OSError, ValueError, KeyError, TypeError):
            resumes = []
        if self.resume_record is not None and self.resume_record not in resumes:
            resumes.append(self.resume_record)
        position = self.position
        write_json(path, {"status": status, "epoch": position.epoch, "batch_in_epoch": position.batch,
                          "global_step": position.step, "world_size": self.ctx.world_size,
                          "last_checkpoint": self.last_checkpoint and self.last_checkpoint[0],
                          "exact": all(record["exact"] for record in resumes), "resumes": resumes})

    # the loop

    def run(self, n_epochs: int, epoch_loader: Callable[[int, int], DataLoader],
            train_step: Callable[[Any], dict[str, torch.Tensor]], end_epoch: Callable[[int], None],
            max_steps: int | None = None) -> bool:
        """Train until `n_epochs` are done (True) or `max_steps` steps are (False, as if interrupted).

        epoch_loader(epoch, skip_batches) gives the epoch's batches; train_step(batch) returns scalar
        tensors logged per step (averaged over ranks); end_epoch(epoch) runs after each epoch, before the
        periodic checkpoint that closes it. SIGTERM/SIGINT save the periodic checkpoint at the next step
        boundary (or after the epoch's evaluation) and raise Interrupted; a non-finite loss raises
        NonFiniteLoss without saving.
        """
        self._apply_saved_rng()
        self.write_summary("running")
        position = self.position
        with stop_on_signals() as stop:
            while position.epoch < n_epochs:
                loader = epoch_loader(position.epoch, position.batch)
                n_batches = position.batch + len(loader)
                bar = progress(loader, self.ctx, total=n_batches, initial=position.batch,
                               desc=f"epoch {position.epoch + 1}/{n_epochs}")
                for batch in bar:
                    losses = mean_over_ranks(train_step(batch), self.ctx)
                    position.batch += 1
                    position.step += 1
                    if self.step_log is not None:
                        self.step_log.append({"epoch": position.epoch + 1, "batch": position.batch,
                                              "step": position.step, **losses})
                    if self.on_step is not None:
                        self.on_step(losses, position.step)
                    self._check_finite(losses)  # the same averaged values on every rank
                    bar.set_postfix({key: f"{value:.3g}" for key, value in list(losses.items())[:3]})
                    stopping = self._agreed_stop(stop)
                    if stopping or (position.step % self.checkpoint_every == 0 and position.batch < n_batches):
                        self.save(self.periodic_name)  # the epoch's last step is saved below, after end_epoch
                    if stopping:
                        raise self._interrupted(stopping)
                    if max_steps is not None and position.step >= max_steps:
                        return False
                end_epoch(position.epoch)
                position.epoch, position.batch = position.epoch + 1, 0
                self.save(self.periodic_name)
                stopping = self._agreed_stop(stop)
                if stopping:
                    raise self._interrupted(stopping)
        self.write_summary("finished")
        return True

    def _agreed_stop(self, stop: StopRequest) -> int:
        """The signal that stops the run at this step (0: go on). Under torchrun a signal seen by any rank stops
        every rank at the same step (one all-reduce), so they save one consistent checkpoint."""
        if not self.ctx.distributed:
            return stop.signum or 0
        flag = torch.tensor([float(stop.signum or 0)], device=self.ctx.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def _interrupted(self, signum: int) -> Interrupted:
        position = self.position
        self.write_summary(f"stopped by {signal_name(signum)}")
        path = self.last_checkpoint[0] if self.last_checkpoint else self.periodic_name
        if self.ctx.distributed:
            print(f"rank {self.ctx.rank}: stopped by {signal_name(signum)} at step {position.step}", flush=True)
        return Interrupted(signum, f"stopped by {signal_name(signum)} at step {position.step} (epoch "
                                   f"{position.epoch + 1}, batch {position.batch}); checkpoint saved: continue with "
                                   f"--train_resume {path}")

    def _check_finite(self, losses: dict[str, float]) -> None:
        bad = [key for key in self.loss_keys if not math.isfinite(losses[key])]
        if not bad:
            return
        position = self.position
        self.write_summary(f"stopped: {bad[0]} is {losses[bad[0]]} at step {position.step}")
        if self.last_checkpoint is None:
            last = "no checkpoint was saved before it"
        else:
            last = f"the last good checkpoint is {self.last_checkpoint[0]} (step {self.last_checkpoint[1]})"
        raise NonFiniteLoss(f"{bad[0]} is {losses[bad[0]]} at step {position.step} (epoch {position.epoch + 1}, "
                            f"batch {position.batch}): training stopped and nothing was saved; {last}")

    def improved(self, name: str, value: float, higher_is_better: bool) -> bool:
        """Record `value` as the best `name` if it beats the best so far; True when it does."""
        best = self.position.best.get(name)
        if best is not None and (value <= best if higher_is_better else value >= best):
            return False
        self.position.best[name] = value
        return True


def inexact_resume_reasons(checkpoint: dict, ctx: DistContext, loader_workers: int, precision: str) -> list[str]:
    """Why continuing from `checkpoint` in this set-up cannot repeat the uninterrupted run bit for bit."""
    reasons = []
    saved_world = checkpoint.get("world_size", 1)
    if saved_world != ctx.world_size:
        reasons.append(f"world size changed from {saved_world} to {ctx.world_size} processes: data shards and "
                       "per-process random states differ")
    # The CUDA generator of the device in use is restored whatever the GPU count (rng_state); only checkpoints
    # written before it was saved on its own depend on the count.
    saved_gpus, gpus = len(checkpoint["rng"].get("cuda", [])), torch.cuda.device_count()
    if ctx.device.type == "cuda" and "cuda_device" not in checkpoint["rng"] and saved_gpus != gpus:
        reasons.append(f"GPU count changed from {saved_gpus} to {gpus}: the CUDA random state is not restored")
    saved_workers = ((checkpoint.get("config") or {}).get("runtime") or {}).get("loader_workers", loader_workers)
    if saved_workers != loader_workers:
        reasons.append(f"loader workers changed from {saved_workers} to {loader_workers}: random augmentations "
                       "are drawn by other worker processes")
    saved_device = checkpoint.get("device", ctx.device.type)
    if saved_device != ctx.device.type:
        reasons.append(f"device changed from {saved_device} to {ctx.device.type}: other kernels and precision")
    saved_precision = checkpoint.get("precision", precision)  # not recorded before: taken as unchanged
    if saved_precision != precision:
        reasons.append(f"precision changed from {saved_precision} to {precision}: the steps from here compute in "
                       "another precision")
    return reasons


def continue_in_place(checkpoint_path: str | Path, stored_run_dir: str | None, periodic_name: str) -> bool:
    """Whether a resumed run continues in the folder of `checkpoint_path`: only from the run's own periodic
    checkpoint, which the run overwrites anyway. Any other file (a 'best' checkpoint, a copy elsewhere)
    starts a new run folder, so the file resumed from is never overwritten."""
    path = Path(checkpoint_path).resolve()
    return (path.name == periodic_name and stored_run_dir is not None
            and Path(stored_run_dir).resolve() == path.parent)
