"""Benchmark: MTCNN time per 1920x1080 frame at several `faces.detect_max_side` values, and box agreement.

Writes benchmarks/results/detect_speed.json. Usage: python benchmarks/detect_speed.py [--repeats 4]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import finish  # noqa: E402

from utils.demo.synthetic import background, face_photo  # noqa: E402
from utils.media.faces import FaceDetector  # noqa: E402

SIDES = (0, 1280, 960, 640)


def hd_frame() -> np.ndarray:
    """A 1920x1080 frame with a large and a medium face (about 260 and 150 px wide)."""
    frame = background(1920, 1080, np.random.default_rng(0))
    for name, (x, y, h) in [("astronaut", (200, 150, 700)), ("grace_hopper", (1100, 300, 300))]:
        photo = face_photo(name)
        w = int(h * photo.shape[1] / photo.shape[0])
        frame[y:y + h, x:x + w] = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
    return frame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "detect_speed.json"))
    args = parser.parse_args()
    frame = hd_frame()
    rows, reference = [], None
    for side in SIDES:
        detector = FaceDetector(detect_max_side=side)
        detector.detect([frame])  # warm-up
        start = time.perf_counter()
        for _ in range(args.repeats):
            faces = detector.detect([frame])[0]
        seconds = (time.perf_counter() - start) / args.repeats
        boxes = np.array([f.box for f in faces])
        if reference is None:
            reference = boxes
        shift = float(np.abs(boxes - reference).max()) if boxes.shape == reference.shape else None
        rows.append({"detect_max_side": side, "ms_per_frame": round(seconds * 1e3, 1), "faces": len(faces),
                     "max_box_shift_px_vs_full_resolution": None if shift is None else round(shift, 1)})
    result = {"benchmark": "detect_speed", "frame": "1920x1080", "repeats": args.repeats, "results": rows}
    return finish(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
