"""Benchmark: the fast MRI (OpenCV, float32) against the straightforward scikit-image computation.

Both run in one process on the same face-crop pairs; writes benchmarks/results/mri_speed.json.
Usage: python benchmarks/mri_speed.py [--pairs 40] [--repeats 3] [--output PATH]
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import finish  # noqa: E402

from utils.demo.synthetic import face_photo  # noqa: E402
from utils.media.mri import compute_mri, compute_mri_reference  # noqa: E402

TARGET_SPEEDUP = 3.0
MAX_GREY_LEVEL_DIFFERENCE = 1


def crop_pairs(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(real, fake) face crops of varied sizes: a face against a degraded or pasted-over version of it."""
    rng = np.random.default_rng(seed)
    photos = [face_photo("astronaut"), face_photo("grace_hopper")]
    pairs = []
    for i in range(count):
        real, other = photos[i % 2], photos[(i + 1) % 2]
        h, w = rng.integers(120, 400, size=2)
        real = cv2.resize(real, (int(w), int(h)), interpolation=cv2.INTER_AREA)
        fake = real.copy()
        ph, pw = h // 2, w // 2
        y, x = rng.integers(0, h - ph), rng.integers(0, w - pw)
        patch = cv2.resize(other, (int(pw), int(ph)), interpolation=cv2.INTER_AREA)
        alpha = rng.uniform(0.4, 0.9)
        fake[y:y + ph, x:x + pw] = (alpha * patch + (1 - alpha) * fake[y:y + ph, x:x + pw]).astype(np.uint8)
        pairs.append((real, cv2.GaussianBlur(fake, (3, 3), rng.uniform(0.3, 1.0))))
    return pairs


def time_per_pair(function, pairs, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for real, fake in pairs:
            function(real, fake)
        best = min(best, (time.perf_counter() - start) / len(pairs))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "mri_speed.json"))
    args = parser.parse_args()

    pairs = crop_pairs(args.pairs)
    compute_mri(*pairs[0]), compute_mri_reference(*pairs[0])  # warm-up
    fast = time_per_pair(compute_mri, pairs, args.repeats)
    reference = time_per_pair(compute_mri_reference, pairs, args.repeats)
    differences = [np.abs(compute_mri(r, f).astype(int) - compute_mri_reference(r, f)).max() for r, f in pairs]
    result = {
        "benchmark": "mri_speed",
        "pairs": args.pairs,
        "repeats": args.repeats,
        "fast_ms_per_pair": round(fast * 1e3, 3),
        "scikit_image_ms_per_pair": round(reference * 1e3, 3),
        "speedup": round(reference / fast, 2),
        "max_grey_level_difference": int(max(differences)),
        "target_speedup": TARGET_SPEEDUP,
        "passed": bool(reference / fast >= TARGET_SPEEDUP and max(differences) <= MAX_GREY_LEVEL_DIFFERENCE),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "opencv_threads": cv2.getNumThreads(), "cpu_count": __import__("os").cpu_count()},
    }
    return finish(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
