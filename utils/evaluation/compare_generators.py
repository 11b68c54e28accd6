"""Several trained MRI-GAN generators on the same held-out faces (compare_MRI_GANs.py): a picture with one
column per generator and a CSV of their test scores. The original's script for this crashed
(docs/differences.md#plots-and-comparison-scripts)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from tqdm import tqdm

from utils.checkpoint import read_checkpoint
from utils.errors import CheckpointError
from utils.evaluation.generator_scores import score_generator
from utils.fileio import write_csv
from utils.infer.generator import eval_mode, load_generator, to_uint8
from utils.media.grid import save_image_grid
from utils.names import GENERATOR_KEY

CSV_COLUMNS = ["generator", "tau", "test_ssim", "test_pixel_mse", "mean_mri_real", "mean_mri_fake", "n_real", "n_fake"]


def generator_tau(path: str | Path) -> float:
    """The τ a generator checkpoint was trained with (its model_params), nan when it does not say; a file that
    holds no generator is a CheckpointError naming it."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or GENERATOR_KEY not in checkpoint:
        raise CheckpointError(f"{path}: not an MRI-GAN generator checkpoint (no '{GENERATOR_KEY}')")
    params = checkpoint.get("model_params") or {}
    return float(params["tau"]) if "tau" in params else float("nan")


def compare_generators(generators: Sequence[str | Path], taus: Sequence[float], loader,
                       samples: tuple[torch.Tensor, torch.Tensor, list[str]], out_png: str | Path,
                       device: torch.device) -> tuple[Path, Path]:
    """Run each generator (trained with the τ in `taus`) on the MRI-GAN test split's `loader`.

    Writes `out_png`: rows of the `samples` (faces, their target MRIs and real/fake labels), columns face, target
    MRI and each generator's MRI, titled with its τ and mean test SSIM; and a CSV beside it with CSV_COLUMNS.
    """
    faces, targets, labels = samples
    columns = [to_uint8(faces), to_uint8(targets)]
    titles, rows = ["face", "target MRI"], []
    for path, tau in zip(generators, taus):
        generator = load_generator(path, device)
        scores = score_generator(generator, tqdm(loader, desc=Path(path).name, dynamic_ncols=True, leave=False),
                                 device)
        with eval_mode(generator), torch.inference_mode():
            columns.append(to_uint8(generator(faces.to(device))))
        titles.append(f"tau {tau:g}, SSIM {scores['ssim']:.3f}")
        rows.append({"generator": str(Path(path).resolve()), "tau": tau, "test_ssim": scores["ssim"],
                     "test_pixel_mse": scores["pixel_mse"], "mean_mri_real": scores["mean_mri_real"],
                     "mean_mri_fake": scores["mean_mri_fake"], "n_real": scores["n_real"], "n_fake": scores["n_fake"]})
    out_png = Path(out_png)
    picture = save_image_grid(out_png, [list(images) for images in zip(*columns)], titles, labels, tile=160)
    csv_path = write_csv(out_png.with_suffix(".csv"), pd.DataFrame(rows, columns=CSV_COLUMNS))
    return picture, csv_path
