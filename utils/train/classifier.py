"""The deepfake classifier's training, validation, test and export, on top of the shared loop (utils.train.loop)
and run sequence (utils.train.setup). Thresholds are tuned on validation only; face-less videos are counted
(README, Differences #12 and #15). deep_fake_detect.py calls `train`, `test` and `export`."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
import torch

from models.classifier import DeepFakeClassifier
from utils.checkpoint import read_checkpoint
from utils.config import Config
from utils.datasets import frame_label_csvs, frame_label_keys
from utils.errors import CheckpointError, ConfigError
from utils.evaluation.figures import write_confusion
from utils.evaluation.metrics import frame_metrics, grid_search, json_safe, roc_png, video_metrics, video_verdicts
from utils.evaluation.protocols import paper_protocol
from utils.fileio import read_csv_intermediate, sha256, write_csv, write_json, write_text
from utils.infer.classifier import build_classifier, classifier_from_checkpoint
from utils.names import (
    CLASSIFIER_FILES,
    CLASSIFIER_KEY,
    CLASSIFIER_TASK,
    HIGHEST_ACC,
    LOWEST_LOSS,
    METHOD_OF_DATASET,
    PERIODIC,
)
from utils.runtime import new_run_dir
from utils.train.classifier_data import (
    EpochMeter,
    FrameDataset,
    balanced_bce_parts,
    build_transform,
    read_frame_labels,
    subset_videos,
)
from utils.train.loop import (
    CsvLog,
    DistContext,
    MixedPrecision,
    training_precision,
    Trainer,
    all_reduce_sum,
    broadcast_buffers,
    broadcast_object,
    from_rank0,
    gather_objects,
    make_loader,
    on_every_rank,
    once_per_node,
    plot_curves,
    progress,
    save_checkpoint,
    seed_process,
    unwrap,
    wrap_model,
)
from utils.train.setup import open_run_logs, per_process_batch, run_training
from utils.train.tensorboard import CLASSIFIER_EPOCH_TAGS, TensorBoardLog

P = "deep_fake.training.model_params."
E = "deep_fake.evaluation."
CRITERION = "BCEWithLogitsLoss"  # the original's test step insists on this string in the checkpoint
STEP_LOG, EPOCH_LOG = "train_steps.csv", "epochs.csv"
STEP_COLUMNS = ["epoch", "batch", "step", "loss", "accuracy", "fake_loss", "real_loss", "n", "n_fake", "n_real"]
EPOCH_COLUMNS = ["epoch", "step", "train_loss", "train_fake_loss", "train_real_loss", "train_accuracy",
                 "valid_loss", "valid_fake_loss", "valid_real_loss", "valid_accuracy", "valid_auc",
                 "valid_video_accuracy", "fake_threshold", "fake_fraction", "highest_acc", "lowest_loss",
                 "train_seconds", "valid_seconds"]
TABLE_METRICS = {"accuracy": "acc", "balanced_accuracy": "bal_acc", "roc_auc": "auc", "f1": "f1",
                 "log_loss": "log_loss", "average_precision": "ap", "eer": "eer"}
PAPER_METRICS = {"acc": "ACC", "tpr": "TPR", "fnr": "FNR", "fpr": "FPR", "tnr": "TNR", "f1": "F1",
                 "precision": "precision", "auc": "auc"}  # the notebook's rates (utils.evaluation.protocols)


# --- data -----------------------------------------------------------------------------------------


@dataclass
class SplitData:
    """One split of the classifier data set: the image root, its face images and every video of the split."""

    split: str
    root: Path
    frames: pd.DataFrame  # video_id, frame, label: one row per face image
    videos: pd.DataFrame  # video_id, label, n_faces, status: one row per video, with or without faces
    rebuilt_by: str  # the data_preprocess.py flag that writes its images


def read_split(cfg: Config, split: str, kind: str) -> SplitData:
    """A split as written by data_preprocess.py --gen_deepfake_metadata, subset to deep_fake.training.<split>_size
    of its videos (seeded, stratified). Missing files are a ConfigError naming the key to fix."""
    root, frames_csv, videos_csv = frame_label_csvs(cfg, split, kind)
    root_key, csv_key = frame_label_keys(split, kind)
    for path in (frames_csv, videos_csv):
        if not path.is_file():
            raise ConfigError(f"config key '{csv_key}': {path} not found (write it with data_preprocess.py "
                              f"--gen_deepfake_metadata, or pass --set {csv_key}=PATH)")
    cfg.require_exists(root_key)
    frames = read_frame_labels(frames_csv)
    videos = read_video_table(videos_csv)
    size = cfg[f"deep_fake.training.{split}_size"]
    if size < 1:
        videos = subset_videos(videos, size, cfg["runtime.seed"])  # one row per video: whole videos are kept
        frames = frames[frames["video_id"].isin(videos["video_id"])].reset_index(drop=True)
    if frames.empty:
        raise ConfigError(f"config key '{csv_key}': {frames_csv} lists no face image for the {split} split")
    return SplitData(split, root, frames, videos, "--crop_faces" if kind == "plain" else "--gen_dfdc_mri")


def read_video_table(csv_path: Path) -> pd.DataFrame:
    """The per-video CSV (video_id, label, n_faces, status) with string ids."""
    table = read_csv_intermediate(csv_path, "--gen_deepfake_metadata", dtype={"video_id": str, "status": str})
    missing = [c for c in ("video_id", "label", "n_faces", "status") if c not in table.columns]
    if missing:
        raise ConfigError(f"{csv_path}: missing column(s) {missing}; expected video_id, label, n_faces, status")
    return table.astype({"label": int, "n_faces": int})


def frame_loader(data: SplitData, transform, batch_size: int, ctx: DistContext, seed: int, workers: int, *,
                 label_smoothing: float = 0.0, epoch: int = 0, skip_batches: int = 0, training: bool = False):
    dataset = FrameDataset(data.frames, data.root, transform, label_smoothing=label_smoothing,
                           rebuilt_by=data.rebuilt_by)
    return make_loader(dataset, batch_size, ctx, seed=seed, epoch=epoch, workers=workers, shuffle=training,
                       training=training, skip_batches=skip_batches)


# --- evaluation -----------------------------------------------------------------------------------


def predict(model: torch.nn.Module, loader, ctx: DistContext, precision: MixedPrecision, desc: str) -> pd.DataFrame:
    """Per face: video_id, frame, label, logit, probability (= sigmoid(logit), P(fake)), sorted by video and
    frame. In eval mode without gradients; under torchrun each process scores its shard and every process
    gets the whole table."""
    model = unwrap(model)  # DDP's forward would wait for the other ranks' batches, whose counts may differ
    was_training = model.training
    model.eval()
    parts = []
    with torch.inference_mode():
        for batch in progress(loader, ctx, desc=desc):
            with precision.autocast():
                logits = model(batch["image"].to(ctx.device, non_blocking=True))
            parts.append(pd.DataFrame({"video_id": list(batch["video_id"]), "frame": list(batch["frame"]),
                                       "label": batch["label"].numpy().round().astype(int),
                                       "logit": logits.float().cpu().numpy().astype(np.float64)}))
    model.train(was_training)
    parts = [part for rank_parts in gather_objects(parts, ctx) for part in rank_parts]
    table = (pd.concat(parts, ignore_index=True) if parts else
             pd.DataFrame({"video_id": [], "frame": [], "label": [], "logit": []}))
    table = table.sort_values(["video_id", "frame"], kind="stable").reset_index(drop=True)
    table["probability"] = 1.0 / (1.0 + np.exp(-table["logit"].to_numpy(dtype=np.float64)))
    return table


def frame_report(frames: pd.DataFrame) -> dict:
    """Frame-level metrics (utils.evaluation.metrics.frame_metrics: a face is fake when p > 0.5) plus the balanced loss
    over the whole split: loss = mean of fake_loss and real_loss, each a mean over its own class."""
    logits = torch.as_tensor(frames["logit"].to_numpy(dtype=np.float32))
    labels = torch.as_tensor(frames["label"].to_numpy(dtype=np.float32))
    meter = EpochMeter()
    meter.update(logits, labels, balanced_bce_parts(logits, labels))
    losses = meter.summary()
    return {**frame_metrics(frames["label"], frames["probability"]),
            "loss": losses["loss"], "fake_loss": losses["fake_loss"], "real_loss": losses["real_loss"]}


def tune_thresholds(frames: pd.DataFrame, cfg: Config) -> tuple[float, float, pd.DataFrame]:
    """(fake_threshold, fake_fraction, every setting's video accuracy): the original's grid searched on
    VALIDATION faces. Videos without faces are scored the same under every setting, so they are left out."""
    return grid_search(frames.rename(columns={"probability": "prob"}), cfg[E + "grid_fake_threshold"],
                       cfg[E + "grid_fake_fraction"])


def video_report(frames: pd.DataFrame, data: SplitData, fake_threshold: float,
                 fake_fraction: float) -> tuple[pd.DataFrame, dict]:
    """(one row per video of the split, video-level metrics) under the one video rule (utils.evaluation.metrics.video_rule).
    Columns: video_id, label, n_faces, fake_fraction (share of its faces judged fake), mean_probability, verdict
    (1 = fake), n_fake, fake_prob (mean p of the fake faces: the ROC score), status.

    Videos of the split with no face image are kept: verdict real (0), fake_prob 0, status from the per-video
    CSV, and counted in the metrics (n_no_face, no_face_videos)."""
    verdicts = video_verdicts(frames.rename(columns={"probability": "prob"})[["video_id", "prob", "label"]],
                              fake_threshold, fake_fraction)
    faceless = data.videos[~data.videos["video_id"].isin(verdicts["video_id"])]
    metrics = video_metrics(verdicts, dict(zip(faceless["video_id"], faceless["label"])))
    with_faces = pd.DataFrame({
        "video_id": verdicts["video_id"], "label": verdicts["label"], "n_faces": verdicts["n_faces"],
        "fake_fraction": verdicts["fake_fraction_observed"], "mean_probability": verdicts["mean_prob"],
        "verdict": verdicts["verdict"], "n_fake": verdicts["n_fake"], "fake_prob": verdicts["fake_prob"],
        "status": "ok"})
    without_faces = pd.DataFrame({
        "video_id": faceless["video_id"], "label": faceless["label"], "n_faces": 0, "fake_fraction": math.nan,
        "mean_probability": math.nan, "verdict": 0, "n_fake": 0, "fake_prob": 0.0,
        "status": faceless["status"].where(faceless["status"] != "ok", "no_face")})
    parts = [part for part in (with_faces, without_faces) if not part.empty]
    table = pd.concat(parts, ignore_index=True).sort_values("video_id").reset_index(drop=True)
    return table, metrics


# --- training -------------------------------------------------------------------------------------


def model_params(cfg: Config, model: DeepFakeClassifier) -> dict:
    """What the checkpoint records about the model: the config's model_params plus encoder_name and imsize,
    as the original did (the test step and the app rebuild the network from these)."""
    return {**cfg.to_dict()["deep_fake"]["training"]["model_params"], "encoder_name": model.encoder_name,
            "imsize": model.input_size}


class ClassifierTraining:
    """The classifier on top of the shared Trainer: Adam, the balanced BCE on clip-smoothed labels, one step per
    batch, and an end-of-epoch validation that tunes the video thresholds and keeps the best checkpoints:
    highest_acc.chkpt (validation frame accuracy, strictly higher) and lowest_loss.chkpt (validation loss)."""

    def __init__(self, cfg: Config, ctx: DistContext, run_dir: Path | None, data: dict[str, SplitData],
                 model: DeepFakeClassifier):
        self.cfg, self.ctx, self.run_dir = cfg, ctx, run_dir
        self.seed, self.workers = cfg["runtime.seed"], cfg["runtime.loader_workers"]
        self.batch_size = per_process_batch(cfg[P + "batch_size"], ctx.world_size, P + "batch_size")
        self.train_data, self.valid_data = data["train"], data["valid"]
        self.train_transform = build_transform(cfg[P + "train_transform"], model.input_size)
        self.valid_loader = frame_loader(self.valid_data, build_transform("eval", model.input_size), self.batch_size,
                                         ctx, self.seed, self.workers)
        # The encoder's own 1000-way head is kept only so checkpoints match the original's keys; it never gets a
        # gradient, which DDP would take for a bug. Frozen, it is skipped by DDP and Adam alike.
        model.encoder.get_classifier().requires_grad_(False)
        self.model = wrap_model(model, ctx)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg[P + "learning_rate"])
        self.precision = classifier_precision(cfg, ctx.device)
        extra = {"model_params": model_params(cfg, model), "criterion": CRITERION, "log_dir": str(run_dir),
                 "model_class_name": type(model).__name__}
        self.trainer = Trainer(ctx, run_dir, {CLASSIFIER_KEY: self.model}, {"optimizer_state_dict": self.optimizer},
                               config=cfg.to_dict(), checkpoint_every=cfg[P + "chkpt_freq"], loss_keys=("loss",),
                               periodic_name=PERIODIC, extra=extra, precision=self.precision)
        self.epoch_log: CsvLog | None = None
        self.tensorboard: TensorBoardLog | None = None
        self.epoch_started = time.perf_counter()

    def restore(self, checkpoint: dict, source: str) -> None:
        """Continue from a checkpoint of this trainer, with the thresholds its last validation chose."""
        self.trainer.restore(checkpoint, source)
        for key in ("thresholds", "thresholds_source"):
            if key in checkpoint:
                self.trainer.extra[key] = checkpoint[key]

    def open_logs(self, history_dir: str | None = None) -> None:
        if self.ctx.is_main:
            position = self.trainer.position
            self.trainer.step_log, self.epoch_log = open_run_logs(self.run_dir, history_dir, position,
                                                                  (STEP_LOG, STEP_COLUMNS), (EPOCH_LOG, EPOCH_COLUMNS))
            # per-epoch tags, indexed by the 1-based epoch; a resumed run rewrites the epoch in progress
            self.tensorboard = TensorBoardLog(self.run_dir, position.epoch + 1 if position.step else None)

    def close_logs(self) -> None:
        if self.ctx.is_main:
            self.trainer.step_log.close()
            self.epoch_log.close()
            self.tensorboard.close()

    def epoch_loader(self, epoch: int, skip_batches: int):
        self.epoch_started = time.perf_counter()
        return frame_loader(self.train_data, self.train_transform, self.batch_size, self.ctx, self.seed, self.workers,
                            label_smoothing=self.cfg[P + "label_smoothing"], epoch=epoch, skip_batches=skip_batches,
                            training=True)

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
        fake_threshold, fake_fraction, grid = tune_thresholds(frames, self.cfg)
        _, video = video_report(frames, self.valid_data, fake_threshold, fake_fraction)
        # every checkpoint saved from now on carries the pair tuned for its weights
        self.trainer.extra["thresholds"] = {"fake_threshold": fake_threshold, "fake_fraction": fake_fraction}
        self.trainer.extra["thresholds_source"] = f"validation grid search after epoch {epoch + 1}"
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
               "fake_threshold": fake_threshold, "fake_fraction": fake_fraction, "highest_acc": int(best_acc),
               "lowest_loss": int(best_loss), "train_seconds": train_seconds,
               "valid_seconds": time.perf_counter() - started}
        self.epoch_log.append(row)
        self.tensorboard.scalars({tag: row[column] for tag, column in CLASSIFIER_EPOCH_TAGS.items()}, epoch + 1)
        marks = "".join(f" [{name}]" for improved, name in ((best_acc, "highest_acc"), (best_loss, "lowest_loss"))
                        if improved)
        print(f"epoch {epoch + 1}/{self.cfg[P + 'epochs']}: train loss {row['train_loss']:.4f} acc "
              f"{row['train_accuracy']:.3f} | valid loss {frame['loss']:.4f} acc {frame['accuracy']:.3f} AUC "
              f"{frame['roc_auc']:.3f}, video acc {video['accuracy']:.3f} at fake_threshold {fake_threshold} "
              f"fake_fraction {fake_fraction}{marks} ({train_seconds:.1f} s + {row['valid_seconds']:.1f} s)",
              flush=True)
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
    by its size, the class losses by their class counts (never a mean of batch means, README, Differences #14). The log
    is the record kept across resumes; under torchrun its rows describe the batches of all processes."""
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
    kind = cfg[P + "dataset"]
    # data errors come first; a split missing on one node stops every process with one line
    data = on_every_rank(lambda: {split: read_split(cfg, split, kind) for split in ("train", "valid")}, ctx)
    seed_process(cfg["runtime.seed"], ctx)
    # a resumed model gets its weights from the checkpoint; encoder weight errors also come before the run folder,
    # and ImageNet weights are fetched once per node
    weights = None if checkpoint is not None else cfg[P + "encoder_weights"]
    model = once_per_node(lambda: build_classifier(cfg["cnn_encoder.default"], weights), ctx)
    if ctx.is_main:
        print(f"deep_fake data: dataset {kind}, " + ", ".join(
            f"{name} {len(split.frames)} faces of {split.frames['video_id'].nunique()} videos"
            for name, split in data.items()), flush=True)
    task, run_dir, history_dir, finished = run_training(
        cfg, ctx, CLASSIFIER_TASK, "deep_fake", cfg[P + "epochs"],
        lambda folder: ClassifierTraining(cfg, ctx, folder, data, model), resume_path, checkpoint, max_steps)
    best = None
    if ctx.is_main:
        position = task.trainer.position
        print(f"deep_fake {'finished' if finished else 'stopped'} at epoch {position.epoch}/{cfg[P + 'epochs']}, "
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


# --- test and export ------------------------------------------------------------------------------


def read_classifier_checkpoint(path: str | Path) -> dict:
    """A classifier checkpoint (ours or the original's): a dict with model_state_dict and the original's loss."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(CLASSIFIER_KEY), dict):
        raise CheckpointError(f"{path}: not a classifier checkpoint (no {CLASSIFIER_KEY})")
    criterion = checkpoint.get("criterion", CRITERION)
    if criterion != CRITERION:
        raise CheckpointError(f"{path}: criterion is {criterion!r}; only {CRITERION} classifiers are supported")
    return checkpoint


def checkpoint_dataset(checkpoint: dict, path: str | Path, cfg: Config) -> str:
    """plain or mri: the images the classifier was trained on (the config's dataset if the checkpoint is silent)."""
    dataset = (checkpoint.get("model_params") or {}).get("dataset", cfg[P + "dataset"])
    if dataset not in METHOD_OF_DATASET:
        raise CheckpointError(f"{path}: model_params.dataset is {dataset!r}, expected plain or mri")
    return dataset


def thresholds_for_test(cfg: Config, ctx: DistContext, checkpoint: dict, model, kind: str, batch_size: int,
                        precision: MixedPrecision) -> tuple[float, float, str]:
    """(fake_threshold, fake_fraction, where they come from): the pair the checkpoint's validation chose; for a
    checkpoint without one (e.g. the original's), a grid search on the validation split now; without a
    validation split, the config's pair. Never tuned on the test split (README, Differences #12). Under torchrun,
    rank 0 decides whether there is a validation split (the search is collective: every process must agree)."""
    stored = checkpoint.get("thresholds")
    if isinstance(stored, dict) and {"fake_threshold", "fake_fraction"} <= set(stored):
        source = checkpoint.get("thresholds_source", "validation grid search")
        return float(stored["fake_threshold"]), float(stored["fake_fraction"]), f"{source}, stored in the checkpoint"
    if broadcast_object(frame_label_csvs(cfg, "valid", kind)[1].is_file(), ctx):
        valid = on_every_rank(lambda: read_split(cfg, "valid", kind), ctx)
        loader = frame_loader(valid, build_transform("eval", model.input_size), batch_size, ctx, cfg["runtime.seed"],
                              cfg["runtime.loader_workers"])
        fake_threshold, fake_fraction, _ = tune_thresholds(predict(model, loader, ctx, precision, "valid"), cfg)
        source = "validation grid search run at test time; none was stored in the checkpoint"
        return fake_threshold, fake_fraction, source
    return (cfg[E + "fake_threshold"], cfg[E + "fake_fraction"],
            "config deep_fake.evaluation; none was stored in the checkpoint and there is no validation split")


def fresh_folder(base: Path) -> Path:
    """`base`, or base_2, base_3, ... if taken: earlier results are never overwritten."""
    for attempt in range(1, 1000):
        folder = base if attempt == 1 else base.with_name(f"{base.name}_{attempt}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"no free folder name next to {base}")


def classifier_precision(cfg: Config, device: torch.device) -> MixedPrecision:
    """The original's apex keys decide (fp16: true with opt_level O0 is FP32, as the paper trained), unless
    --precision says otherwise; training and testing use the same."""
    return MixedPrecision(training_precision(cfg, device, cfg[P + "fp16"], cfg[P + "opt_level"]))


def test(cfg: Config, ctx: DistContext, checkpoint_path: str | Path, out_dir: Path | None = None) -> dict | None:
    """Score a classifier checkpoint on the test split with the video thresholds chosen on validation, and write
    metrics.json, frame_predictions.csv, video_predictions.csv, roc_frame.png, roc_video.png, the confusion
    matrices (frame_, video_ and paper_video_ + the logging.model_conf_matrix* names) and the printed report
    (logging.model_info_log) into `out_dir` (default: a new logs/<time>/deep_fake/test folder). metrics.json also
    holds the paper's protocol under "paper" (utils.evaluation.protocols). Returns the metrics (rank 0; None
    elsewhere). Under torchrun the checkpoint is read by rank 0 and sent to the others, so it need only exist on
    rank 0's node (e.g. the highest_acc.chkpt rank 0 has just written into its log folder)."""
    checkpoint = from_rank0(lambda: read_classifier_checkpoint(checkpoint_path), ctx)
    kind = checkpoint_dataset(checkpoint, checkpoint_path, cfg)
    test_data = on_every_rank(lambda: read_split(cfg, "test", kind), ctx)
    model = classifier_from_checkpoint(checkpoint, checkpoint_path, cfg["cnn_encoder.default"]).to(ctx.device)
    batch_size = per_process_batch(cfg[P + "batch_size"], ctx.world_size, P + "batch_size")
    precision = classifier_precision(cfg, ctx.device)
    fake_threshold, fake_fraction, source = thresholds_for_test(cfg, ctx, checkpoint, model, kind, batch_size,
                                                                precision)
    if ctx.is_main:
        out_dir = fresh_folder(Path(out_dir)) if out_dir else new_run_dir(cfg, CLASSIFIER_TASK, "test")
    loader = frame_loader(test_data, build_transform("eval", model.input_size), batch_size, ctx, cfg["runtime.seed"],
                          cfg["runtime.loader_workers"])
    frames = predict(model, loader, ctx, precision, desc="test")
    if not ctx.is_main:
        return None
    videos, video = video_report(frames, test_data, fake_threshold, fake_fraction)
    paper, paper_videos = paper_protocol(frames.rename(columns={"probability": "prob"})[["video_id", "prob", "label"]],
                                         cfg[E + "grid_fake_threshold"], cfg[E + "grid_fake_fraction"],
                                         n_without_face=video["n_no_face"])
    path = Path(checkpoint_path).resolve()
    report = {
        "split": "test", "dataset": kind, "results_dir": str(out_dir),
        "checkpoint": {"path": str(path), "sha256": sha256(path), "epoch": checkpoint.get("epoch"),  # 0-based
                       "batch_in_epoch": checkpoint.get("batch_in_epoch"),
                       "global_step": checkpoint.get("global_step")},
        "thresholds": {"fake_threshold": fake_threshold, "fake_fraction": fake_fraction, "source": source},
        "frame": json_safe(frame_report(frames)),
        "video": json_safe(video),
        "definitions": "fake is the positive class; a face is fake when p > 0.5 (frame level) or p > fake_threshold "
                       "(video rule); a video is fake when at least fake_fraction of its faces are fake; videos "
                       "without a face count as real with score 0; video ROC scores are the mean p of its fake faces",
        "paper": json_safe(paper),
    }
    write_csv(out_dir / "frame_predictions.csv", frames[["video_id", "frame", "label", "probability"]])
    write_csv(out_dir / "video_predictions.csv", videos)
    roc_png(frames["label"], frames["probability"], out_dir / "roc_frame.png", f"Test faces ({kind})")
    roc_png(videos["label"], videos["fake_prob"], out_dir / "roc_video.png", f"Test videos ({kind})")
    names = {key: cfg[f"logging.{key}"] for key in ("model_conf_matrix_csv", "model_conf_matrix_png",
                                                     "model_conf_matrix_normalized_csv",
                                                     "model_conf_matrix_normalized_png")}
    write_confusion(out_dir, "frame", frames["label"], frames["probability"] > 0.5, names, f"Test faces ({kind})")
    write_confusion(out_dir, "video", videos["label"], videos["verdict"], names, f"Test videos ({kind})")
    write_confusion(out_dir, "paper_video", paper_videos["label"], paper_videos["verdict"], names,
                    f"Test videos ({kind}), paper's protocol")
    write_json(out_dir / "metrics.json", report)
    write_text(out_dir / cfg["logging.model_info_log"], format_report(report) + "\n")
    return report


def format_report(report: dict) -> str:
    """A few lines for the terminal: counts, thresholds and the main frame and video metrics."""
    frame, video = report["frame"], report["video"]
    thresholds = report["thresholds"]
    lines = [f"test split ({report['dataset']}): {frame['n']} faces, {video['n']} videos "
             f"({video['n_no_face']} without a face, counted as real)",
             f"thresholds: fake_threshold {thresholds['fake_threshold']}, fake_fraction "
             f"{thresholds['fake_fraction']} ({thresholds['source']})",
             f"{'level':<6}" + "".join(f"{short:>10}" for short in TABLE_METRICS.values())]
    for level, metrics in (("frame", frame), ("video", video)):
        values = [metrics.get(name) for name in TABLE_METRICS]
        lines.append(f"{level:<6}" + "".join(f"{'n/a' if v is None else f'{v:.4f}':>10}" for v in values))
    paper = report["paper"]
    lines += [f"paper's protocol, for comparison with its Table only: fake_threshold "
              f"{paper['thresholds']['fake_threshold']}, fake_fraction {paper['thresholds']['fake_fraction']} "
              f"(searched on this test split), {paper['n_videos']} videos ({paper['n_dropped_no_face']} without a face "
              f"dropped)",
              f"{'level':<6}" + "".join(f"{short:>10}" for short in PAPER_METRICS.values()),
              f"{'video':<6}" + "".join(f"{'n/a' if paper.get(name) is None else f'{paper[name]:.4f}':>10}"
                                        for name in PAPER_METRICS),
              "they differ because the paper tuned the thresholds on the test split itself, dropped the videos "
              "without a face and took ACC as the mean of the class recalls: only the first table is unbiased",
              f"results: {report['results_dir']}"]
    return "\n".join(lines)


def export(checkpoint_path: str | Path, cfg: Config) -> dict:
    """Write a classifier checkpoint's weights where the app reads them: <assets>/weights/ under the app's name
    for its dataset (plain -> deepfake_plain_frames_weights.chkpt, mri -> deepfake_MRI_weights.chkpt), with
    model_params, the validation-tuned thresholds and the criterion; no optimizer or training state. Written
    atomically; an existing file is replaced. Returns what was written."""
    checkpoint = read_classifier_checkpoint(checkpoint_path)
    kind = checkpoint_dataset(checkpoint, checkpoint_path, cfg)
    source = Path(checkpoint_path).resolve()
    params = {key: str(value) if isinstance(value, PurePath) else value
              for key, value in (checkpoint.get("model_params") or {}).items()}
    weights = {CLASSIFIER_KEY: checkpoint[CLASSIFIER_KEY], "model_params": params, "criterion": CRITERION,
               "source_checkpoint": str(source), "source_sha256": sha256(source)}
    stored = checkpoint.get("thresholds")
    if isinstance(stored, dict):
        weights["thresholds"] = {name: float(stored[name]) for name in ("fake_threshold", "fake_fraction")}
        weights["thresholds_source"] = checkpoint.get("thresholds_source", "validation grid search")
    method = METHOD_OF_DATASET[kind]
    target = cfg.path("assets") / "weights" / CLASSIFIER_FILES[method]
    replaced = target.is_file()
    save_checkpoint(target, weights)
    return {"path": str(target), "source": str(source), "method": method, "replaced": replaced,
            "thresholds": weights.get("thresholds")}
