"""A training command's run around its loop: the configuration of a new or resumed run and its processes
(`run_context`), its run folder, the per-process batch, and `run_training`, the one fresh/resume/torchrun
sequence both trainers follow. A resumed run uses the configuration stored in its checkpoint (--set may change
keys, e.g. more epochs)."""
from __future__ import annotations

import argparse
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator, Protocol

import yaml

from utils.checkpoint import read_checkpoint
from utils.cli import config_from_args, runtime_overrides
from utils.config import Config, load_config
from utils.errors import CheckpointError, ConfigError
from utils.names import PERIODIC
from utils.runtime import new_run_dir, record_run, set_deterministic
from utils.train.distributed import DistContext, distributed_context, launched_world_size, raise_if_any_failed
from utils.train.trainer import Trainer, continue_in_place


def config_for_resume(checkpoint_path: str, overrides: list[str]) -> tuple[Config, dict]:
    """The configuration stored in a training checkpoint, with --set overrides on top (e.g. more epochs)."""
    checkpoint = read_checkpoint(checkpoint_path)
    stored = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    if not isinstance(stored, dict) or "rng" not in checkpoint:
        raise CheckpointError(f"{checkpoint_path}: not a training checkpoint written by this project's trainers "
                              "(no stored configuration or training state)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yml"
        path.write_text(yaml.safe_dump(stored), encoding="utf-8")
        return load_config(path, overrides), checkpoint


def run_config(args: argparse.Namespace, resume_path: str | None) -> tuple[Config, dict | None]:
    """(configuration, checkpoint or None) for a script's flags: a new run reads --config/--set/--device/--precision;
    a resumed run reads the checkpoint's stored configuration, with --set/--device/--precision on top."""
    if not resume_path:
        return config_from_args(args), None
    if args.config:
        raise ConfigError("--config cannot be combined with --train_resume: the run's configuration is stored in "
                          "the checkpoint; change keys with --set")
    return config_for_resume(resume_path, list(args.overrides) + runtime_overrides(args))


@contextmanager
def run_context(args: argparse.Namespace, resume_path: str | None) -> Iterator[tuple[Config, dict | None, DistContext]]:
    """(configuration, checkpoint or None, process context) of a trainer's command: run_config, then
    distributed_context, then runtime.deterministic applied before any CUDA work.

    Every process reads the configuration and the resume checkpoint itself. Under a launcher, one that cannot (e.g.
    the checkpoint is missing on its node) still joins the process group, on --device or auto, so that every
    process stops with that one line instead of the others waiting for it until their timeout."""
    cfg, checkpoint, error = None, None, None
    try:
        cfg, checkpoint = run_config(args, resume_path)
    except ConfigError as exc:
        if launched_world_size() <= 1:
            raise
        error = exc
    with distributed_context(cfg["runtime.device"] if cfg is not None else args.device or "auto") as ctx:
        raise_if_any_failed(error, ctx)
        set_deterministic(cfg["runtime.deterministic"], ctx.device)
        yield cfg, checkpoint, ctx


def prepare_run_dir(cfg: Config, ctx: DistContext, task: str, periodic_name: str, resume_path: str | None,
                    checkpoint: dict | None) -> tuple[Path | None, str | None]:
    """(run folder, folder whose logs to carry over), on rank 0 only. A run resumed from its periodic checkpoint
    continues in place (the resume is recorded under <run>/resumed/); from any other file it gets a new
    logs/<time>/<task> folder, so the file resumed from is never overwritten."""
    if not ctx.is_main:
        return None, None
    if checkpoint is not None and continue_in_place(resume_path, checkpoint.get("log_dir"), periodic_name):
        run_dir = Path(resume_path).resolve().parent
        record = run_dir.parent / "resumed" / datetime.now().strftime("%Y%m%d_%H%M%S_%f")
        record.mkdir(parents=True)
        record_run(record, cfg)
        return run_dir, None
    return new_run_dir(cfg, task), checkpoint.get("log_dir") if checkpoint else None


def per_process_batch(batch_size: int, world_size: int, key: str) -> int:
    """The config's batch size is the global batch; under torchrun each process takes an equal share."""
    if batch_size % world_size:
        raise ConfigError(f"config key '{key}': {batch_size} cannot be split over {world_size} processes")
    return batch_size // world_size


class TrainingTask(Protocol):
    """What a trainer hands `run_training`: its Trainer, and the hooks the loop calls."""

    trainer: Trainer

    def restore(self, checkpoint: dict, source: str) -> None: ...

    def open_logs(self, history_dir: str | None) -> None:
        """The task's own logs (the Trainer opens the per-step log)."""

    def close_logs(self) -> None:
        """Close what open_logs opened."""

    def epoch_loader(self, epoch: int, skip_batches: int): ...

    def train_step(self, batch) -> dict: ...

    def end_epoch(self, epoch: int) -> None: ...


def run_training(cfg: Config, ctx: DistContext, task_name: str, label: str, epochs: int,
                 build_task: Callable[[Path | None], TrainingTask], resume_path: str | None,
                 checkpoint: dict | None,
                 max_steps: int | None = None) -> tuple[TrainingTask, Path | None, str | None, bool]:
    """The sequence both trainers follow, fresh or resumed, in one process or under torchrun: make the run folder
    (rank 0, under logs/<time>/<task_name>/), build the task in it, restore the checkpoint, open the logs, train,
    close the logs. `label` names the run in what is printed.

    Everything that can fail on bad data or weights belongs in `build_task`'s caller, before this runs, so no run
    folder is made for a run that cannot start. Returns (task, run folder on rank 0, folder whose history was
    carried over, whether every epoch finished; False when max_steps stopped the run as if it were interrupted).
    """
    run_dir, history_dir = prepare_run_dir(cfg, ctx, task_name, PERIODIC, resume_path, checkpoint)
    task = build_task(run_dir)
    if checkpoint is not None:
        task.restore(checkpoint, resume_path)
    task.trainer.open_logs(history_dir)
    task.open_logs(history_dir)
    if ctx.is_main:
        print(f"{label} run folder: {run_dir} (device {ctx.device}, {ctx.world_size} process(es), "
              f"seed {cfg['runtime.seed']})", flush=True)
    finished = task.trainer.run(epochs, task.epoch_loader, task.train_step, task.end_epoch, max_steps)
    task.trainer.close_logs()
    task.close_logs()
    return task, run_dir, history_dir, finished
