"""Benchmark: the app on a 10 s 1080p30 face video against decoding alone and the original app's procedure.

One run times (a) decoding every frame, (b) the original's procedure (decode every frame, MTCNN with
the original settings on every full-resolution frame, in batches of 32), (c) our app per method, with
default-width models (random weights: speed does not depend on them). Writes benchmarks/results/app_speed.json.
Usage: python benchmarks/app_speed.py [--seconds 10] [--original_frames 60]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import finish  # noqa: E402

from utils.config import load_config  # noqa: E402
from utils.demo.synthetic import face_frames, face_photo, write_video  # noqa: E402
from utils.media.faces import FaceDetector  # noqa: E402
from utils.media.video import VideoReader  # noqa: E402

TARGETS = {"plain_frames_vs_decode": 3.0, "MRI_vs_decode": 8.0, "speedup_vs_original": 10.0}


def make_weights(folder: Path) -> None:
    from models.classifier import DeepFakeClassifier
    from models.mri_gan import Generator

    state = DeepFakeClassifier().state_dict()
    for method in ("plain_frames", "MRI"):
        torch.save({"model_state_dict": state}, folder / f"deepfake_{method}_weights.chkpt")
    torch.save({"generator_state_dict": Generator().state_dict()}, folder / "MRI_GAN_weights.chkpt")


def decode_only(video: Path) -> float:
    start = time.perf_counter()
    with VideoReader(video) as reader:
        for _ in reader.frames(1):
            pass
    return time.perf_counter() - start


def original_procedure(video: Path, max_frames: int | None) -> tuple[float, int]:
    """Decode every frame and run MTCNN (original thresholds, full resolution) on each, 32 at a time."""
    detector = FaceDetector(detect_max_side=0, batch_size=32)
    start = time.perf_counter()
    batch, frames = [], 0
    with VideoReader(video) as reader:
        for _, frame in reader.frames(1, max_frames=max_frames):
            batch.append(frame)
            frames += 1
            if len(batch) == 32:
                detector.detect(batch)
                batch = []
    if batch:
        detector.detect(batch)
    return time.perf_counter() - start, frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--original_frames", type=int, default=0,
                        help="time the original procedure on this many frames and extrapolate (0 = all)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "app_speed.json"))
    args = parser.parse_args()
    from utils.infer.detect import Detector

    torch.manual_seed(0)
    n_frames = int(round(args.seconds * 30))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = write_video(tmp / "hd.mp4", (f for f, _ in face_frames(face_photo("grace_hopper"), 1920, 1080,
                                                                          n_frames, seed=0, face_height=0.6)), fps=30)
        make_weights(tmp)
        decode_s = decode_only(video)
        measured_s, measured_frames = original_procedure(video, args.original_frames or None)
        original_s = measured_s * n_frames / measured_frames
        cfg = load_config()
        result = {"benchmark": "app_speed", "video": f"{args.seconds:g} s 1920x1080 at 30 fps ({n_frames} frames)",
                  "decode_only_s": round(decode_s, 2),
                  "original_procedure_s": round(original_s, 2),
                  "original_procedure_frames_timed": measured_frames, "methods": {}}
        for method in ("plain_frames", "MRI"):
            start = time.perf_counter()
            detector = Detector(cfg, method, torch.device("cpu"), tmp)
            load_s = time.perf_counter() - start
            outcome = detector.classify(video)
            total = outcome.timings["total_s"]
            result["methods"][method] = {
                "classify_s": round(total, 2), "model_load_s": round(load_s, 2), "faces": outcome.n_faces,
                "stages_s": {k: round(v, 2) for k, v in outcome.timings.items()},
                "ratio_vs_decode": round(total / decode_s, 2), "speedup_vs_original": round(original_s / total, 1)}
    methods = result["methods"]
    result["targets"] = TARGETS
    result["passed"] = bool(methods["plain_frames"]["ratio_vs_decode"] <= TARGETS["plain_frames_vs_decode"]
                            and methods["MRI"]["ratio_vs_decode"] <= TARGETS["MRI_vs_decode"]
                            and min(m["speedup_vs_original"] for m in methods.values()) >= TARGETS["speedup_vs_original"])
    return finish(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
