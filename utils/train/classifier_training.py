"""The deepfake classifier's training on top of the shared Trainer (utils.train.trainer) and run sequence
(utils.train.run): Adam on the balanced BCE, and an end-of-epoch validation that tunes the video thresholds on
validation only (docs/differences.md#thresholds-on-validation and docs/differences.md#counted-videos-and-one-rule).
deep_fake_detect.py calls `train`."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import torch

from models.classifier import DeepFakeClassifier
from utils.checkpoint import read_checkpoint
from utils.config import Config
from utils.csv_log import CsvLog
from utils.datasets import frame_label_csvs
from utils.errors import CheckpointError
from utils.evaluation.classifier_report import tune_thresholds, video_report
from utils.fileio import write_csv
from utils.infer.classifier_weights import build_classifier
from utils.infer.export import CRITERION
from utils.infer.provenance import RENDERING_KEY, SHA_KEY, csv_source
from utils.infer.rule import Thresholds
from utils.names import CLASSIFIER_KEY, CLASSIFIER_TASK, HIGHEST_ACC, LOWEST_LOSS, PERIODIC
from utils.plotting import plot_curves
from utils.train.classifier_data import SplitData, balanced_bce_parts, build_transform, frame_loader, read_split
from utils.train.classifier_testing import frame_report, predict
from utils.train.distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_buffers,
    broadcast_object,
    on_every_rank,
    once_per_node,
    wrap_model,
)
from utils.train.precision import classifier_precision
from utils.train.rng import seed_process
from utils.train.run import per_process_batch, run_training
from utils.train.tensorboard import CLASSIFIER_EPOCH_TAGS, TensorBoardLog
from utils.train.trainer import Trainer, resumed_log

STEP_LOG, EPOCH_LOG = "train_steps.csv", "epochs.csv"
STEP_COLUMNS = ["epoch", "batch", "step", "loss", "accuracy", "fake_loss", "real_loss", "n", "n_fake", "n_real"]
EPOCH_COLUMNS = ["epoch", "step", "train_loss", "train_fake_loss", "train_real_loss", "train_accuracy",
                 "valid_loss", "valid_fake_loss", "valid_real_loss", "valid_accuracy", "valid_auc",
                 "valid_video_accuracy", "fake_threshold", "fake_fraction", "highest_acc", "lowest_loss",
                 "train_seconds", "valid_seconds"]


def model_params(cfg: Config, model: DeepFakeClassifier) -> dict:
    """What the checkpoint records about the model: the config's model_params plus encoder_name and imsize,
    as the original did (the test step and the app rebuild the network from these); for MRIs, which generator made
    the training MRIs and how they were rendered (docs/pipeline.md#mri-provenance)."""
    params = {**cfg.to_dict()["deep_fake"]["training"]["model_params"], "encoder_name": model.encoder_name,
              "imsize": model.input_size}
    if params["dataset"] == "mri":
        source = csv_source(frame_label_csvs(cfg, "train", "mri")[1])
        params[SHA_KEY], params[RENDERING_KEY] = source.sha256, source.rendering
    return params


class ClassifierTraining:
    """The classifier on top of the shared Trainer: Adam, the balanced BCE on clip-smoothed labels, one step per
    batch, and an end-of-epoch validation that tunes the video thresholds and keeps the best checkpoints:
    highest_acc.chkpt (validation frame accuracy, strictly higher) and lowest_loss.chkpt (validation loss)."""

    def __init__(self, cfg: Config, ctx: DistContext, run_dir: Path | None, data: dict[str, SplitData],
                 model: DeepFakeClassifier):
        self.cfg, self.ctx, self.run_dir = cfg, ctx, run_dir
        self.seed, self.workers = cfg["runtime.seed"], cfg["runtime.loader_workers"]
        batch_key = "deep_fake.training.model_params.batch_size"
        self.batch_size = per_process_batch(cfg[batch_key], ctx.world_size, batch_key)
        self.train_data, self.valid_data = data["train"], data["valid"]
        self.train_transform = build_transform(cfg["deep_fake.training.model_params.train_transform"], model.input_size)
        self.valid_loader = frame_loader(self.valid_data, build_transform("eval", model.input_size), self.batch_size,
                                         ctx, self.seed, self.workers)
        # The encoder's own 1000-way head is kept only so checkpoints match the original's keys; it never gets a
        # gradient, which DDP would take for a bug. Frozen, it is skipped by DDP and Adam alike.
        model.encoder.get_classifier().requires_grad_(False)
        self.model = wrap_model(model, ctx)
        learning_rate = cfg["deep_fake.training.model_params.learning_rate"]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
        self.precision = classifier_precision(cfg, ctx.device)
        extra = {"model_params": model_params(cfg, model), "criterion": CRITERION, "log_dir": str(run_dir),
                 "model_class_name": type(model).__name__}
        # the video rule's pair the last validation chose (or the resumed checkpoint carried), and where from
        self.thresholds: Thresholds | None = None
        self.thresholds_source: str | None = None
        self.trainer = Trainer(ctx, run_dir, {CLASSIFIER_KEY: self.model}, {"optimizer_state_dict": self.optimizer},
                               config=cfg.to_dict(), checkpoint_every=cfg["deep_fake.training.model_params.chkpt_freq"],
                               loss_keys=("loss",), periodic_name=PERIODIC, extra=extra, precision=self.precision,
                               step_log=(STEP_LOG, STEP_COLUMNS), checkpoint_entries=self.checkpoint_entries)
        self.epoch_log: CsvLog | None = None
        self.tensorboard: TensorBoardLog | None = None
        self.epoch_started = time.perf_counter()

    def restore(self, checkpoint: dict, source: str) -> None:
        """Continue from a checkpoint of this trainer, with the thresholds its last validation chose."""
        self.trainer.restore(checkpoint, source)
        self.thresholds = Thresholds.stored_in(checkpoint)
        self.thresholds_source = checkpoint.get("thresholds_source")

    def checkpoint_entries(self) -> dict:
        """Saved with every checkpoint: the thresholds tuned for its weights, once a validation has chosen them."""
        entries = {} if self.thresholds is None else {"thresholds": self.thresholds.as_dict()}
        if self.thresholds_source is not None:
            entries["thresholds_source"] = self.thresholds_source
        return entries

    def open_logs(self, history_dir: str | None = None) -> None:
        if self.ctx.is_main:
            position = self.trainer.position
            self.epoch_log = resumed_log(self.run_dir, history_dir, EPOCH_LOG, EPOCH_COLUMNS, "epoch", position)
            # per-epoch tags, indexed by the 1-based epoch; a resumed run rewrites the epoch in progress
            self.tensorboard = TensorBoardLog(self.run_dir, position.epoch + 1 if position.step else None)

    def close_logs(self) -> None:
        if self.ctx.is_main:
            self.epoch_log.close()
            self.tensorboard.close()

    def epoch_loader(self, epoch: int, skip_batches: int):
        self.epoch_started = time.perf_counter()
        return frame_loader(self.train_data, self.train_transform, self.batch_size, self.ctx, self.seed, self.workers,
                            label_smoothing=self.cfg["deep_fake.training.model_params.label_smoothing"], epoch=epoch,
                            skip_batches=skip_batches, training=True)

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One Adam step on the balanced BCE; returns the global batch's losses, accuracy and class counts."""
        device = self.ctx.device
        images = batch["image"].to(device, non_blocking=True)
        targets = batch["label"].to(device, non_blocking=True)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            logits = self.model(images)
        loss, fake_loss, real_loss = balanced_bce_parts(logits.float(), targets)
        self.precision.backward(loss)
        self.precision.step(self.optimizer)
        self.precision.update()
        return batch_stats(logits.detach(), targets, fake_loss, real_loss, self.ctx)

    def end_epoch(self, epoch: int) -> None:
        """Validate, tune the video thresholds on validation, keep the best checkpoints, log and plot."""
        train_seconds = time.perf_counter() - self.epoch_started
        started = time.perf_counter()
        broadcast_buffers(self.model, self.ctx)  # every shard scored with the statistics the checkpoint keeps
        frames = predict(self.model, self.valid_loader, self.ctx, self.precision, desc=f"valid {epoch + 1}")
        frame = frame_report(frames)
        thresholds, grid = tune_thresholds(frames, self.cfg)
        _, video = video_report(frames, self.valid_data.videos, thresholds)
        # every checkpoint saved from now on carries the pair tuned for its weights
        self.thresholds, self.thresholds_source = thresholds, f"validation grid search after epoch {epoch + 1}"
        best_acc = self.trainer.improved("valid_accuracy", frame["accuracy"], higher_is_better=True)
        best_loss = self.trainer.improved("valid_loss", frame["loss"], higher_is_better=False)
        for improved, name in ((best_acc, HIGHEST_ACC), (best_loss, LOWEST_LOSS)):
            if improved:
                self.trainer.save(name)
        if not self.ctx.is_main:
            return
        write_csv(self.run_dir / "validation" / f"grid_search_epoch_{epoch + 1:03d}.csv", grid)
        row = {"epoch": epoch + 1, "step": self.trainer.position.step,
               **train_summary(self.trainer.step_log.path, epoch + 1),
               "valid_loss": frame["loss"], "valid_fake_loss": frame["fake_loss"],
               "valid_real_loss": frame["real_loss"], "valid_accuracy": frame["accuracy"],
               "valid_auc": frame["roc_auc"], "valid_video_accuracy": video["accuracy"],
               **thresholds.as_dict(), "highest_acc": int(best_acc), "lowest_loss": int(best_loss),
               "train_seconds": train_seconds,
               "valid_seconds": time.perf_counter() - started}
        self.epoch_log.append(row)
        self.tensorboard.scalars({tag: row[column] for tag, column in CLASSIFIER_EPOCH_TAGS.items()}, epoch + 1)
        marks = "".join(f" [{name}]" for improved, name in ((best_acc, "highest_acc"), (best_loss, "lowest_loss"))
                        if improved)
        print(f"epoch {epoch + 1}/{self.cfg['deep_fake.training.model_params.epochs']}: train loss "
              f"{row['train_loss']:.4f} acc {row['train_accuracy']:.3f} | valid loss {frame['loss']:.4f} acc "
              f"{frame['accuracy']:.3f} AUC {frame['roc_auc']:.3f}, video acc {video['accuracy']:.3f} at "
              f"fake_threshold {thresholds.fake_threshold} fake_fraction {thresholds.fake_fraction}{marks} "
              f"({train_seconds:.1f} s + {row['valid_seconds']:.1f} s)", flush=True)
        self.write_plots()

    def write_plots(self) -> None:
        plots = self.run_dir / "plots"
        plot_curves(self.trainer.step_log.path, plots / "train_steps.png",
                    {"loss": ["loss", "fake_loss", "real_loss"], "accuracy": ["accuracy"]})
        plot_curves(self.epoch_log.path, plots / "epochs.png",
                    {"loss": ["train_loss", "valid_loss"],
                     "accuracy": ["train_accuracy", "valid_accuracy", "valid_video_accuracy"],
                     "validation AUC": ["valid_auc"]}, x="epoch")


def batch_stats(logits: torch.Tensor, targets: torch.Tensor, fake_loss: torch.Tensor | None,
                real_loss: torch.Tensor | None, ctx: DistContext) -> dict[str, torch.Tensor]:
    """loss, accuracy, fake_loss, real_loss, n, n_fake, n_real of the batch of all processes together: each
    class loss is the mean over that class's samples (nan when the batch has none), loss the mean of the
    class losses present, i.e. the balanced BCE of the whole batch."""
    is_fake = targets > 0.5  # smoothed labels (0.1 / 0.9) count as their class
    zero = logits.new_zeros(())
    n_fake, n_real = is_fake.sum().float(), (~is_fake).sum().float()
    sums = torch.stack([zero if fake_loss is None else fake_loss.detach() * n_fake, n_fake,
                        zero if real_loss is None else real_loss.detach() * n_real, n_real,
                        ((logits > 0) == is_fake).sum().float()])
    fake_sum, n_fake, real_sum, n_real, correct = all_reduce_sum(sums, ctx)
    fake_mean = torch.where(n_fake > 0, fake_sum / n_fake.clamp(min=1), math.nan)
    real_mean = torch.where(n_real > 0, real_sum / n_real.clamp(min=1), math.nan)
    return {"loss": torch.nanmean(torch.stack([fake_mean, real_mean])), "accuracy": correct / (n_fake + n_real),
            "fake_loss": fake_mean, "real_loss": real_mean, "n": n_fake + n_real, "n_fake": n_fake, "n_real": n_real}


def train_summary(step_log: Path, epoch: int) -> dict:
    """An epoch's training loss and accuracy from its rows in the step log (1-based epoch): each batch weighted
    by its size, the class losses by their class counts (never a mean of batch means,
    docs/differences.md#classifier-training-fixes). The log is the record kept across resumes; under torchrun its rows
    describe the batches of all processes."""
    rows = pd.read_csv(step_log)
    rows = rows[rows["epoch"] == epoch]

    def weighted(column: str, weight: str) -> float:
        total = rows[weight].sum()
        return float((rows[column].fillna(0) * rows[weight]).sum() / total) if total else math.nan

    return {"train_loss": weighted("loss", "n"), "train_accuracy": weighted("accuracy", "n"),
            "train_fake_loss": weighted("fake_loss", "n_fake"), "train_real_loss": weighted("real_loss", "n_real")}


def train(cfg: Config, ctx: DistContext, resume_path: str | None = None, checkpoint: dict | None = None,
          max_steps: int | None = None) -> tuple[Path | None, str | None]:
    """Train from scratch, or continue exactly from `resume_path`. Returns (run folder on rank 0, else None;
    the checkpoint to test, on every process: this run's highest_acc.chkpt, or None when max_steps stopped
    the run early, as if it had been interrupted)."""
    if resume_path and checkpoint is None:
        checkpoint = read_checkpoint(resume_path)
    if checkpoint is not None and CLASSIFIER_KEY not in checkpoint:
        raise CheckpointError(f"{resume_path}: not a classifier checkpoint (no {CLASSIFIER_KEY})")
    kind, epochs = cfg["deep_fake.training.model_params.dataset"], cfg["deep_fake.training.model_params.epochs"]
    # data errors come first; a split missing on one node stops every process with one line
    data = on_every_rank(lambda: {split: read_split(cfg, split, kind) for split in ("train", "valid")}, ctx)
    seed_process(cfg["runtime.seed"], ctx)
    # a resumed model gets its weights from the checkpoint; encoder weight errors also come before the run folder,
    # and ImageNet weights are fetched once per node
    weights = None if checkpoint is not None else cfg["deep_fake.training.model_params.encoder_weights"]
    model = once_per_node(lambda: build_classifier(cfg["cnn_encoder.default"], weights), ctx)
    if ctx.is_main:
        print(f"deep_fake data: dataset {kind}, " + ", ".join(
            f"{name} {len(split.frames)} faces of {split.frames['video_id'].nunique()} videos"
            for name, split in data.items()), flush=True)
    task, run_dir, history_dir, finished = run_training(
        cfg, ctx, CLASSIFIER_TASK, "deep_fake", epochs,
        lambda folder: ClassifierTraining(cfg, ctx, folder, data, model), resume_path, checkpoint, max_steps)
    best = None
    if ctx.is_main:
        position = task.trainer.position
        print(f"deep_fake {'finished' if finished else 'stopped'} at epoch {position.epoch}/{epochs}, "
              f"step {position.step}; best validation accuracy "
              f"{position.best.get('valid_accuracy', math.nan):.4f}", flush=True)
        if finished:
            best = str(checkpoint_to_test(run_dir, history_dir))
    return run_dir, broadcast_object(best, ctx)


def checkpoint_to_test(run_dir: Path, history_dir: str | None) -> Path:
    """This run's highest_acc.chkpt; a run resumed into a new folder that never beat the accuracy it resumed
    with has none, and then the run it was resumed from holds it; failing both, the last periodic checkpoint."""
    for folder in (run_dir, Path(history_dir) if history_dir else None):
        if folder is not None and (folder / HIGHEST_ACC).is_file():
            return folder / HIGHEST_ACC
    return run_dir / PERIODIC
