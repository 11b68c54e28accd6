"""The classifier's test: a checkpoint scored on the test split with the video thresholds chosen on validation, in
one process or under torchrun, and the per-face prediction (and its metrics) that validation shares with it.
deep_fake_detect.py --test_saved_model calls `test`; the report's files are utils.evaluation.classifier_report's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from utils.config import Config
from utils.datasets import frame_label_csvs
from utils.evaluation.classifier_report import tune_thresholds, write_test_report
from utils.evaluation.metrics import frame_metrics
from utils.fileio import sha256
from utils.infer.classifier_weights import classifier_from_checkpoint
from utils.infer.export import checkpoint_dataset, read_classifier_checkpoint
from utils.infer.provenance import csv_source, warn_on_other_mris
from utils.infer.rule import Thresholds
from utils.names import CLASSIFIER_TASK
from utils.runtime import fresh_folder, new_run_dir
from utils.train.classifier_data import EpochMeter, balanced_bce_parts, build_transform, frame_loader, read_split
from utils.train.distributed import DistContext, broadcast_object, from_rank0, gather_objects, on_every_rank, unwrap
from utils.train.loaders import progress
from utils.train.precision import MixedPrecision, classifier_precision
from utils.train.run import per_process_batch


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


def thresholds_for_test(cfg: Config, ctx: DistContext, checkpoint: dict, model, kind: str, batch_size: int,
                        precision: MixedPrecision) -> tuple[Thresholds, str]:
    """(the video rule's pair, where it comes from): the pair the checkpoint's validation chose; for a
    checkpoint without one (e.g. the original's), a grid search on the validation split now; without a
    validation split, the config's pair. Never tuned on the test split (docs/differences.md#thresholds-on-validation).
    Under torchrun, rank 0 decides whether there is a validation split (the search is collective: every process must
    agree)."""
    stored = Thresholds.stored_in(checkpoint)
    if stored is not None:
        return stored, f"{checkpoint.get('thresholds_source', 'validation grid search')}, stored in the checkpoint"
    if broadcast_object(frame_label_csvs(cfg, "valid", kind)[1].is_file(), ctx):
        valid = on_every_rank(lambda: read_split(cfg, "valid", kind), ctx)
        loader = frame_loader(valid, build_transform("eval", model.input_size), batch_size, ctx, cfg["runtime.seed"],
                              cfg["runtime.loader_workers"])
        tuned, _ = tune_thresholds(predict(model, loader, ctx, precision, "valid"), cfg)
        return tuned, "validation grid search run at test time; none was stored in the checkpoint"
    return (Thresholds.from_config(cfg),
            "config deep_fake.evaluation; none was stored in the checkpoint and there is no validation split")


def test(cfg: Config, ctx: DistContext, checkpoint_path: str | Path, out_dir: Path | None = None) -> dict | None:
    """Score a classifier checkpoint on the test split with the video thresholds chosen on validation, and write
    the report's files (utils.evaluation.classifier_report.write_test_report) into `out_dir` (default: a new
    logs/<time>/deep_fake/test folder). Returns the report (rank 0; None elsewhere). Under torchrun the checkpoint
    is read by rank 0 and sent to the others, so it need only exist on rank 0's node (e.g. the highest_acc.chkpt
    rank 0 has just written into its log folder)."""
    checkpoint = from_rank0(lambda: read_classifier_checkpoint(checkpoint_path), ctx)
    kind = checkpoint_dataset(checkpoint, checkpoint_path, cfg)
    if kind == "mri" and ctx.is_main:
        test_mris = csv_source(frame_label_csvs(cfg, "test", "mri")[1])
        warn_on_other_mris(checkpoint, test_mris.sha256, test_mris.rendering, "the test MRIs' generator",
                           "the test MRIs")
    test_data = on_every_rank(lambda: read_split(cfg, "test", kind), ctx)
    model = classifier_from_checkpoint(checkpoint, checkpoint_path, cfg["cnn_encoder.default"]).to(ctx.device)
    batch_key = "deep_fake.training.model_params.batch_size"
    batch_size = per_process_batch(cfg[batch_key], ctx.world_size, batch_key)
    precision = classifier_precision(cfg, ctx.device)
    thresholds, source = thresholds_for_test(cfg, ctx, checkpoint, model, kind, batch_size, precision)
    if ctx.is_main:
        out_dir = fresh_folder(Path(out_dir)) if out_dir else new_run_dir(cfg, CLASSIFIER_TASK, "test")
    loader = frame_loader(test_data, build_transform("eval", model.input_size), batch_size, ctx, cfg["runtime.seed"],
                          cfg["runtime.loader_workers"])
    frames = predict(model, loader, ctx, precision, desc="test")
    if not ctx.is_main:
        return None
    path = Path(checkpoint_path).resolve()
    identity = {"path": str(path), "sha256": sha256(path), "epoch": checkpoint.get("epoch"),  # 0-based
                "batch_in_epoch": checkpoint.get("batch_in_epoch"), "global_step": checkpoint.get("global_step")}
    return write_test_report(cfg, out_dir, kind, frames, frame_report(frames), test_data.videos, thresholds, source,
                             identity)
