"""Benchmark: --extract_landmarks + --crop_faces throughput (faces/s) with --workers 1 and --workers 2.

Both runs use the same generated DFDC-format folder, in one process; writes benchmarks/results/preprocess_speed.json.
Usage: python benchmarks/preprocess_speed.py [--videos 8] [--frames 100] [--width 640 --height 360]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import finish  # noqa: E402

from utils.demo.synthetic import dataset_config, make_dfdc_dataset  # noqa: E402

TARGET_SPEEDUP = 1.6


def run(config: Path, workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "data_preprocess.py"), "--config", str(config), "--datasets", "dfdc",
                    "--extract_landmarks", "--crop_faces", "--workers", str(workers)],
                   check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    crops = yaml.safe_load(config.read_text())["features"]["dfdc"]["crop_faces"]
    faces = sum(1 for split in crops.values() for _ in Path(split).rglob("*.png"))
    return seconds, faces


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8, help="real videos per split (each gets one fake)")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "preprocess_speed.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dfdc_dataset(tmp / "data" / "dfdc", videos_per_split=args.videos, n_frames=args.frames,
                          size=(args.width, args.height), seed=0)
        results = {}
        for workers in (1, 2):
            config = tmp / f"workers{workers}.yml"
            config.write_text(yaml.safe_dump(dataset_config(tmp / "data", tmp / f"out{workers}")))
            seconds, faces = run(config, workers)
            results[workers] = {"seconds": round(seconds, 2), "faces": faces, "faces_per_s": round(faces / seconds, 2)}
    speedup = results[2]["faces_per_s"] / results[1]["faces_per_s"]
    result = {"benchmark": "preprocess_speed", "steps": "--extract_landmarks --crop_faces",
              "videos": 6 * args.videos, "frames_per_video": args.frames, "size": f"{args.width}x{args.height}",
              "workers_1": results[1], "workers_2": results[2], "speedup": round(speedup, 2),
              "target_speedup": TARGET_SPEEDUP, "passed": speedup >= TARGET_SPEEDUP,
              "note": "wall time of the whole command, including process start-up and model loading"}
    return finish(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
