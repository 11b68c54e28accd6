"""Trained weights written where the next steps and the app read them. A classifier checkpoint: checking that a
file is one (ours or the original's), the images it was trained on, and `export`, which writes its weights and
tuned thresholds where the app looks. The MRI-GAN: `export_generator`, which copies a run's best generator to
MRI_GAN.weights."""
from __future__ import annotations

import shutil
from pathlib import Path, PurePath

from utils.checkpoint import read_checkpoint, save_checkpoint
from utils.config import Config
from utils.errors import CheckpointError
from utils.fileio import atomic_path, sha256
from utils.infer.rule import Thresholds
from utils.names import BEST_G, CLASSIFIER_FILES, CLASSIFIER_KEY, METHOD_OF_DATASET

CRITERION = "BCEWithLogitsLoss"  # the original's test step insists on this string in the checkpoint


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
    dataset = (checkpoint.get("model_params") or {}).get("dataset", cfg["deep_fake.training.model_params.dataset"])
    if dataset not in METHOD_OF_DATASET:
        raise CheckpointError(f"{path}: model_params.dataset is {dataset!r}, expected plain or mri")
    return dataset


def app_classifier_file(cfg: Config, method: str) -> Path:
    """Where the app reads the classifier of `method` unless given --weights_dir, and where `export` writes it:
    <assets>/weights/ under the app's name (deepfake_plain_frames_weights.chkpt or deepfake_MRI_weights.chkpt)."""
    return cfg.path("assets") / "weights" / CLASSIFIER_FILES[method]


def export(checkpoint_path: str | Path, cfg: Config) -> dict:
    """Write a classifier checkpoint's weights where the app reads them (app_classifier_file of its dataset's
    method), with model_params, the validation-tuned thresholds, the criterion and the model's class name (which
    tells the original's checkpoints from ours, docs/pipeline.md#mri-rendering); no optimizer or training state.
    Written atomically; an existing file is replaced. Returns what was written."""
    checkpoint = read_classifier_checkpoint(checkpoint_path)
    kind = checkpoint_dataset(checkpoint, checkpoint_path, cfg)
    source = Path(checkpoint_path).resolve()
    params = {key: str(value) if isinstance(value, PurePath) else value
              for key, value in (checkpoint.get("model_params") or {}).items()}
    weights = {CLASSIFIER_KEY: checkpoint[CLASSIFIER_KEY], "model_params": params, "criterion": CRITERION,
               "source_checkpoint": str(source), "source_sha256": sha256(source)}
    if "model_class_name" in checkpoint:
        weights["model_class_name"] = checkpoint["model_class_name"]
    thresholds = Thresholds.stored_in(checkpoint)
    if thresholds is not None:
        weights["thresholds"] = thresholds.as_dict()
        weights["thresholds_source"] = checkpoint.get("thresholds_source", "validation grid search")
    method = METHOD_OF_DATASET[kind]
    target = app_classifier_file(cfg, method)
    replaced = target.is_file()
    save_checkpoint(target, weights)
    return {"path": str(target), "source": str(source), "method": method, "replaced": replaced,
            "thresholds": weights.get("thresholds")}


def export_generator(run_dir: str | Path, cfg: Config) -> dict:
    """Copy an MRI-GAN run's best generator (<run>/checkpoint_best_G.chkpt: the epoch with the highest test SSIM)
    to MRI_GAN.weights, where --gen_dfdc_mri and the app read it. Written atomically; an existing file is
    replaced. Returns what was written."""
    source = (Path(run_dir) / BEST_G).resolve()
    target = cfg.asset("MRI_GAN.weights")
    if not source.is_file():  # a run resumed into a new folder from a checkpoint whose best no epoch improved on
        raise CheckpointError(f"{source} not found: no epoch of this run improved the test SSIM it started from; "
                              f"copy the {BEST_G} of the run it continued to {target}")
    replaced = target.is_file()
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return {"path": str(target), "source": str(source), "replaced": replaced}
