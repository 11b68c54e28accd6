"""Benchmark: seconds per MRI-GAN training step (one G update, then one D update) at a given width.

Uses the real training step of the MRI-GAN trainer (utils/train/mri_gan.py) on 256x256 inputs; the default is the
paper's width (ngf = ndf = 64, 54.4 M + 2.8 M parameters). On CUDA the clock is read after the GPU has finished
(benchmarks/common.py, clock); --deterministic no measures what runtime.deterministic costs there.
Writes benchmarks/results/mri_gan_step_speed.json.
Usage: python benchmarks/mri_gan_step_speed.py [--batch_sizes 1 8] [--steps 3] [--width 64] [--device cpu|cuda]
       [--deterministic yes|no]
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import finish, time_calls  # noqa: E402

from utils.config import load_config  # noqa: E402
from utils.fileio import write_png  # noqa: E402
from utils.media.mri import MRI_SIZE  # noqa: E402
from utils.runtime import choose_device, set_deterministic  # noqa: E402
from utils.train.distributed import DistContext  # noqa: E402
from utils.train.mri_gan import MRIGANTraining  # noqa: E402


def tiny_tables(folder: Path) -> tuple:
    """Two face/MRI pairs per class on disk: the trainer reads its fixed sample rows from the test table."""
    rng = np.random.default_rng(0)
    rows = []
    for i, kind in enumerate(["real", "real", "fake", "fake"]):
        face, mri = folder / f"face_{i}.png", folder / f"mri_{i}.png"
        write_png(face, rng.integers(0, 256, (MRI_SIZE, MRI_SIZE, 3), dtype=np.uint8))
        write_png(mri, rng.integers(0, 256, (MRI_SIZE, MRI_SIZE, 3), dtype=np.uint8))
        rows.append({"face_image": str(face), "mri_image": str(mri), "class": kind})
    table = pd.DataFrame(rows)
    return (table[table["class"] == "real"], table[table["class"] == "fake"]), table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per batch size (after one warm-up)")
    parser.add_argument("--width", type=int, default=64, help="ngf = ndf")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--deterministic", choices=("yes", "no"), default="yes",
                        help="runtime.deterministic (CUDA only; training's default is yes)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "mri_gan_step_speed.json"))
    args = parser.parse_args()
    ctx = DistContext(device=choose_device(args.device))
    set_deterministic(args.deterministic == "yes", ctx.device)
    result = {"width": args.width, "device": str(ctx.device), "deterministic": args.deterministic == "yes",
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "seconds_per_step": {}}
    with tempfile.TemporaryDirectory() as folder:
        data = tiny_tables(Path(folder))
        for batch_size in args.batch_sizes:
            cfg = load_config(overrides=[f"MRI_GAN.model_params.ngf={args.width}",
                                         f"MRI_GAN.model_params.ndf={args.width}",
                                         f"MRI_GAN.model_params.batch_size={batch_size}",
                                         "MRI_GAN.model_params.test_sample_size=2", "runtime.loader_workers=0"])
            task = MRIGANTraining(cfg, ctx, None, data)
            result["parameters"] = {"generator": sum(p.numel() for p in task.G.parameters()),
                                    "discriminator": sum(p.numel() for p in task.D.parameters())}
            batch = {"face": torch.rand(batch_size, 3, MRI_SIZE, MRI_SIZE) * 2 - 1,
                     "mri": torch.rand(batch_size, 3, MRI_SIZE, MRI_SIZE) * 2 - 1}
            timing = time_calls(lambda: task.train_step(batch), args.steps, ctx.device)
            result["seconds_per_step"][str(batch_size)] = timing
            print(f"batch {batch_size}: median {timing['median']:.3f} s per step", flush=True)
    return finish(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
