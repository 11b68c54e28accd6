"""Several trained MRI-GAN generators on the same held-out faces (compare_MRI_GANs.py): a picture with one
column per generator and a CSV of their test scores. The original's script for this crashed (README,
"Reproducing the paper")."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from utils.checkpoint import read_checkpoint
from utils.config import Config
from utils.errors import CheckpointError
from utils.fileio import write_csv
from utils.infer.generator import IMSIZE, eval_mode, load_generator, to_uint8
from utils.names import GENERATOR_KEY
from utils.train.loop import DistContext, make_loader, progress, save_image_grid
from utils.train.mri_gan import per_image_ssim
from utils.train.mri_gan_data import MRIDataset, draw_epoch, load_split, sample_items

P = "MRI_GAN.model_params."
CSV_COLUMNS = ["generator", "tau", "test_ssim", "test_pixel_mse", "mean_mri_real", "mean_mri_fake", "n_real", "n_fake"]


def generator_tau(path: str | Path) -> float:
    """The τ a generator checkpoint was trained with (its model_params), nan when it does not say; a file that
    holds no generator is a CheckpointError naming it."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or GENERATOR_KEY not in checkpoint:
        raise CheckpointError(f"{path}: not an MRI-GAN generator checkpoint (no '{GENERATOR_KEY}')")
    params = checkpoint.get("model_params") or {}
    return float(params["tau"]) if "tau" in params else float("nan")


def score_generator(generator: torch.nn.Module, loader, device: torch.device) -> dict:
    """Over a test loader: mean SSIM between generated and target MRI (as the training's test score), mean pixel
    MSE in [-1, 1], and the mean brightness (0-255) of the generated MRIs of the real and of the fake faces."""
    sums = {"ssim": 0.0, "pixel": 0.0, "bright_real": 0.0, "bright_fake": 0.0, "n_real": 0, "n_fake": 0}
    with eval_mode(generator), torch.inference_mode():
        for batch in loader:
            face, target, fake = batch["A"].to(device), batch["B"].to(device), batch["fake"].bool()
            generated = generator(face)
            sums["ssim"] += per_image_ssim(generated, target).sum().item()
            sums["pixel"] += ((generated - target) ** 2).mean(dim=(1, 2, 3)).sum().item()
            brightness = ((generated.float().cpu() + 1) / 2 * 255).clamp(0, 255).mean(dim=(1, 2, 3))
            sums["bright_real"] += brightness[~fake].sum().item()
            sums["bright_fake"] += brightness[fake].sum().item()
            sums["n_real"] += int((~fake).sum())
            sums["n_fake"] += int(fake.sum())
    n = max(sums["n_real"] + sums["n_fake"], 1)
    return {"test_ssim": sums["ssim"] / n, "test_pixel_mse": sums["pixel"] / n,
            "mean_mri_real": sums["bright_real"] / sums["n_real"] if sums["n_real"] else float("nan"),
            "mean_mri_fake": sums["bright_fake"] / sums["n_fake"] if sums["n_fake"] else float("nan"),
            "n_real": sums["n_real"], "n_fake": sums["n_fake"]}


def compare_generators(cfg: Config, generators: Sequence[str | Path], out_png: str | Path,
                       device: torch.device) -> tuple[Path, Path]:
    """Run each generator on the MRI-GAN test split (the rows training scores on: the config's seed and frac).

    Writes `out_png`: rows of the same test faces (test_sample_size/2 reals, then as many fakes), columns face,
    target MRI and each generator's MRI, titled with its τ and mean test SSIM; and a CSV beside it with
    CSV_COLUMNS. A file that holds no generator is a CheckpointError naming it, raised before any work.
    """
    taus = [generator_tau(path) for path in generators]  # every file is checked before anything runs
    table = draw_epoch(*load_split(cfg, "test"), cfg[P + "frac"], cfg["runtime.seed"], 0)
    dataset = MRIDataset(table, IMSIZE, cfg["runtime.seed"], 0, flip=False)
    ctx = DistContext(device=device)
    loader = make_loader(dataset, cfg[P + "batch_size"], ctx, seed=cfg["runtime.seed"], training=False,
                         workers=cfg["runtime.loader_workers"])
    faces, targets, labels = sample_items(dataset, max(1, cfg[P + "test_sample_size"] // 2))
    columns = [to_uint8(faces), to_uint8(targets)]
    titles, rows = ["face", "target MRI"], []
    for path, tau in zip(generators, taus):
        generator = load_generator(path, device)
        scores = score_generator(generator, progress(loader, ctx, desc=Path(path).name), device)
        with eval_mode(generator), torch.inference_mode():
            columns.append(to_uint8(generator(faces.to(device))))
        titles.append(f"tau {tau:g}, SSIM {scores['test_ssim']:.3f}")
        rows.append({"generator": str(Path(path).resolve()), "tau": tau, **scores})
    out_png = Path(out_png)
    picture = save_image_grid(out_png, [list(images) for images in zip(*columns)], titles, labels, tile=160)
    csv_path = write_csv(out_png.with_suffix(".csv"), pd.DataFrame(rows, columns=CSV_COLUMNS))
    return picture, csv_path
