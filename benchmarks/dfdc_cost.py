"""Benchmark: what preprocessing and training DFDC cost, projected from measured times on this machine.

Measures (1) each preprocessing step per video, with the real data_preprocess.py (--workers 1) on generated
DFDC-like 10 s 1920x1080 30 fps videos (real and face-swapped); (2) seconds per training step of the MRI-GAN and of
the classifier at the paper's widths, with the trainers' own step functions. Projects them to DFDC's training set
(119,154 videos: 19,154 real, 100,000 fake), the paper's 100 MRI-GAN and 20 classifier epochs, one machine and
N SLURM array tasks. Writes benchmarks/results/dfdc_cost.json. Every figure carries the load average it ran under.
Usage: python benchmarks/dfdc_cost.py [--reals 2] [--frames 300] [--mri_gan_batch 8] [--classifier_batch 16]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import finish, time_calls  # noqa: E402
from mri_gan_step_speed import tiny_tables  # noqa: E402

from models.mri_gan import Generator, init_weights  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.demo.synthetic import dataset_config, make_dfdc_dataset  # noqa: E402
from utils.fileio import write_png  # noqa: E402
from utils.infer.classifier_weights import build_classifier  # noqa: E402
from utils.media.mri import MRI_SIZE  # noqa: E402
from utils.train.classifier_data import SplitData  # noqa: E402
from utils.train.classifier_training import ClassifierTraining  # noqa: E402
from utils.train.distributed import DistContext  # noqa: E402
from utils.train.mri_gan import MRIGANTraining  # noqa: E402

# DFDC's training set (Dolhansky et al. 2020) and the paper's schedule (config.yml's defaults).
DFDC_VIDEOS, DFDC_REALS, DFDC_FAKES = 119_154, 19_154, 100_000
FACES_PER_VIDEO = 30  # frames 0, 10, ..., 290 of a 300-frame video, one face each
MRI_GAN = {"epochs": 100, "batch": 128, "dfdc_fraction": 0.5, "test_split": 0.2}
CLASSIFIER = {"epochs": 20, "batch": 192}
STEPS = ("extract_landmarks", "crop_faces", "gen_mri_dataset", "gen_dfdc_mri")
ARRAY_TASKS = (1, 16, 64, 256)


def preprocess_step(config: Path, step: str) -> dict:
    """Run one step; its own time (summary.json, without start-up) and the command's wall time."""
    load = os.getloadavg()[0]
    result = subprocess.run([sys.executable, str(ROOT / "data_preprocess.py"), "--config", str(config), f"--{step}",
                             "--datasets", "dfdc", "--workers", "1"], capture_output=True, text=True, check=True)
    run_folder = Path(result.stdout.strip().splitlines()[-1].removeprefix("run folder: "))
    summaries = json.loads((run_folder / "preprocess" / "summary.json").read_text())
    return {"seconds": sum(s["seconds"] for s in summaries), "items": sum(s["done"] for s in summaries),
            "load_1min": load}


def measure_preprocessing(folder: Path, reals: int, frames: int) -> dict:
    make_dfdc_dataset(folder / "data" / "dfdc", videos_per_split={"train": reals, "valid": 1, "test": 1},
                      n_frames=frames, size=(1920, 1080), fps=30.0, seed=0)
    config = folder / "config.yml"
    config.write_text(yaml.safe_dump(dataset_config(folder / "data", folder / "out")))
    weights = load_config(config).asset("MRI_GAN.weights")  # a paper-width generator: its speed, not its skill
    generator = Generator()
    generator.apply(init_weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"generator_state_dict": generator.state_dict()}, weights)
    steps = {step: preprocess_step(config, step) for step in STEPS}
    # items: videos for landmarks, crops and DFDC MRIs; real training videos (one fake each) for the MRI data set,
    # whose time per fake includes its real's detection
    per_video = {step: info["seconds"] / info["items"] for step, info in steps.items()}
    return {"real_and_fake_videos": 2 * (reals + 2), "size": "1920x1080", "frames": frames, "fps": 30,
            "steps": steps, "seconds_per_video": per_video}


def classifier_step(folder: Path, batch_size: int) -> dict:
    """The classifier's real training step (EfficientNet-B0, 224x224, balanced BCE) on random images."""
    cfg = load_config(overrides=["deep_fake.training.model_params.encoder_weights=none", "runtime.loader_workers=0",
                                 f"deep_fake.training.model_params.batch_size={batch_size}"])
    write_png(folder / "v" / "0_0.png", np.zeros((64, 64, 3), np.uint8))
    frames = pd.DataFrame({"video_id": ["v", "v"], "frame": ["0_0.png"] * 2, "label": [0, 1]})
    videos = pd.DataFrame({"video_id": ["v"], "label": [1], "n_faces": [2], "status": ["ok"]})
    split = SplitData("valid", folder, frames, videos, "--crop_faces")
    task = ClassifierTraining(cfg, DistContext(), None, {"train": split, "valid": split},
                              build_classifier(cfg["cnn_encoder.default"], encoder_weights=None))
    batch = {"image": torch.rand(batch_size, 3, 224, 224), "label": torch.tensor([0.1, 0.9] * (batch_size // 2))}
    return {"batch": batch_size, **time_calls(lambda: task.train_step(batch), 2)}


def mri_gan_step(folder: Path, batch_size: int) -> dict:
    cfg = load_config(overrides=[f"MRI_GAN.model_params.batch_size={batch_size}", "runtime.loader_workers=0",
                                 "MRI_GAN.model_params.test_sample_size=2"])
    task = MRIGANTraining(cfg, DistContext(), None, tiny_tables(folder))
    images = (batch_size, 3, MRI_SIZE, MRI_SIZE)
    batch = {"face": torch.rand(images) * 2 - 1, "mri": torch.rand(images) * 2 - 1}
    return {"batch": batch_size, **time_calls(lambda: task.train_step(batch), 2)}


def project(preprocessing: dict, mri_gan: dict, classifier: dict) -> dict:
    """Hours for DFDC on this machine: preprocessing on 1 to 256 array tasks of this machine's size, training
    with the paper's batches (step time scaled linearly from the measured batch, as on a CPU)."""
    per_video = preprocessing["seconds_per_video"]
    preprocess_hours = {
        "extract_landmarks": per_video["extract_landmarks"] * DFDC_VIDEOS / 3600,
        "crop_faces": per_video["crop_faces"] * DFDC_VIDEOS / 3600,
        # only the kept share of the DFDC videos is processed (mri.dfdc_fraction is applied before the pairs)
        "gen_mri_dataset": per_video["gen_mri_dataset"] * DFDC_FAKES * MRI_GAN["dfdc_fraction"] / 3600,
        "gen_dfdc_mri": per_video["gen_dfdc_mri"] * DFDC_VIDEOS / 3600,
    }
    total = sum(preprocess_hours.values())
    real_rows = DFDC_REALS * MRI_GAN["dfdc_fraction"] * (1 - MRI_GAN["test_split"]) * FACES_PER_VIDEO
    mri_gan_steps = math.ceil(2 * real_rows / MRI_GAN["batch"]) * MRI_GAN["epochs"]
    mri_gan_step_s = mri_gan["median"] / mri_gan["batch"] * MRI_GAN["batch"]
    classifier_steps = math.ceil(DFDC_VIDEOS * FACES_PER_VIDEO / CLASSIFIER["batch"]) * CLASSIFIER["epochs"]
    classifier_step_s = classifier["median"] / classifier["batch"] * CLASSIFIER["batch"]
    return {
        "preprocessing_hours": preprocess_hours,
        "preprocessing_hours_total_by_array_tasks": {n: total / n for n in ARRAY_TASKS},
        "mri_gan": {"real_rows_per_epoch": real_rows, "steps": mri_gan_steps, "seconds_per_step": mri_gan_step_s,
                    "hours": mri_gan_steps * mri_gan_step_s / 3600},
        "classifier_per_method": {"faces_per_epoch": DFDC_VIDEOS * FACES_PER_VIDEO, "steps": classifier_steps,
                                  "seconds_per_step": classifier_step_s,
                                  "hours": classifier_steps * classifier_step_s / 3600},
        "assumptions": "one face per sampled frame; DFDC train only (valid/test sets add their share); "
                       "MRI-GAN rows from DFDC only (Celeb-DF, FDF and FFHQ add theirs); step time linear in the "
                       "batch (true on a CPU, pessimistic on a GPU); array tasks as large as this machine and "
                       "independent",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reals", type=int, default=2, help="real training videos (each gets one fake)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--mri_gan_batch", type=int, default=8)
    parser.add_argument("--classifier_batch", type=int, default=16)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "dfdc_cost.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        preprocessing = measure_preprocessing(tmp / "preprocess", args.reals, args.frames)
        print(json.dumps(preprocessing["seconds_per_video"]), flush=True)
        mri_gan = mri_gan_step(tmp, args.mri_gan_batch)
        print(f"MRI-GAN: {mri_gan['median']:.2f} s per step of {args.mri_gan_batch}", flush=True)
        classifier = classifier_step(tmp, args.classifier_batch)
        print(f"classifier: {classifier['median']:.2f} s per step of {args.classifier_batch}", flush=True)
    result = {"benchmark": "dfdc_cost", "device": "cpu", "threads": torch.get_num_threads(),
              "cpus": os.cpu_count(), "preprocessing": preprocessing, "mri_gan_step": mri_gan,
              "classifier_step": classifier, "projection": project(preprocessing, mri_gan, classifier)}
    return finish(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
