"""The run of a training: its position, the epoch/step loop with periodic checkpoints, exact resume and the
per-step log, and what makes a resume inexact. Only rank 0 writes files and shows bars.

Faults a long run meets are handled here, once for both trainers: SIGTERM/SIGINT save a checkpoint at the
next step boundary (every rank agrees on the step) and exit 143/130; a non-finite loss stops the run before
anything is saved; a resume that cannot be exact says why."""
from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from utils.checkpoint import load_state, save_checkpoint
from utils.csv_log import CsvLog
from utils.errors import CheckpointError, Interrupted, NonFiniteLoss
from utils.fileio import write_json
from utils.names import PERIODIC
from utils.runtime import Precision
from utils.signals import StopRequest, signal_name, stop_on_signals
from utils.train.distributed import DistContext, barrier, mean_over_ranks, unwrap
from utils.train.loaders import progress
from utils.train.precision import MixedPrecision
from utils.train.rng import derive_seed, rng_state, set_rng_state, torch_rng_of_every_rank

log = logging.getLogger(__name__)


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

    `step_log` is the (file name, columns) of the per-step log rank 0 keeps in the run folder (see `open_logs`);
    `on_step(losses, step)` runs on rank 0 after each step; `extra` holds fixed checkpoint entries and
    `checkpoint_entries()` the ones that change during the run (e.g. the thresholds of the last validation).
    """

    def __init__(self, ctx: DistContext, run_dir: Path | None, modules: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], *, config: dict, checkpoint_every: int,
                 loss_keys: Sequence[str], periodic_name: str = PERIODIC, extra: dict | None = None,
                 precision: MixedPrecision | None = None, step_log: tuple[str, Sequence[str]] | None = None,
                 on_step: Callable[[dict[str, float], int], None] | None = None,
                 checkpoint_entries: Callable[[], dict] | None = None):
        self.ctx, self.run_dir = ctx, run_dir
        self.modules, self.optimizers = modules, optimizers
        self.precision = precision or MixedPrecision(Precision("fp32", ctx.device.type, "no precision given"))
        self.scaler = self.precision.scaler
        self.config, self.extra = config, dict(extra or {})
        self.checkpoint_every, self.periodic_name, self.loss_keys = checkpoint_every, periodic_name, tuple(loss_keys)
        self.step_log_spec, self.on_step, self.checkpoint_entries = step_log, on_step, checkpoint_entries
        self.position = Position()
        self.step_log: CsvLog | None = None  # opened by open_logs, on rank 0
        self._rng_to_restore: tuple[dict, list | None] | None = None
        self.last_checkpoint: tuple[str, int] | None = None  # (path, step) of the last periodic checkpoint
        self.resume_record: dict | None = None  # where this run was resumed from, and why it is not exact

    # logs

    def open_logs(self, history_dir: str | None) -> None:
        """Open the per-step log on rank 0, trimmed to the restored position (see resumed_log)."""
        if self.ctx.is_main and self.step_log_spec is not None:
            name, columns = self.step_log_spec
            self.step_log = resumed_log(self.run_dir, history_dir, name, columns, "step", self.position)

    def close_logs(self) -> None:
        if self.step_log is not None:
            self.step_log.close()

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
        if self.checkpoint_entries is not None:
            state.update(self.checkpoint_entries())
        return state

    def save(self, name: str) -> None:
        state = self.state_dict()  # every rank takes part (RNG gather); rank 0 writes
        if self.ctx.is_main:
            save_checkpoint(self.run_dir / name, state)
        # No rank returns before the file is complete: a rank that stops here and exits at once could otherwise end
        # the job (srun --kill-on-bad-exit, a launcher tearing down) while rank 0 is still writing.
        barrier(self.ctx)
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
                    if self.on_step is not None and self.ctx.is_main:
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
            # one write of the whole line: print() writes the text and its newline apart, which unbuffered output
            # (PYTHONUNBUFFERED) turns into two writes that the other ranks' lines can come between
            sys.stdout.write(f"rank {self.ctx.rank}: stopped by {signal_name(signum)} at step {position.step}\n")
            sys.stdout.flush()
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


def resumed_log(run_dir: Path, history_dir: str | None, name: str, columns: Sequence[str], column: str,
                position: Position) -> CsvLog:
    """A run's CSV log <run_dir>/<name> whose 1-based `column` ("step" or "epoch") counts the run's progress. A
    resumed run keeps only the rows up to its checkpoint's position, read from `history_dir` (the run it was
    resumed from) when it continues in a new folder, so each step and epoch is logged once. Floats are written
    with 6 significant digits."""
    done = position.step if column == "step" else position.epoch
    resumed = position.step > 0 or position.epoch > 0
    keep = (lambda row: int(row[column]) <= done) if resumed else None
    source = Path(history_dir) / name if history_dir else None
    return CsvLog(run_dir / name, columns, keep=keep, source=source, float_format="{:.6g}")
