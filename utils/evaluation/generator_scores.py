"""The MRI-GAN generator's scores on held-out faces, as the training's per-epoch test and the comparison of
generators both report them: SSIM and pixel MSE against the target MRIs, the losses, the MRIs' brightness."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from models.mri_gan import MRIGANLoss, structural_similarity
from utils.infer.generator import eval_mode


def score_generator(generator: nn.Module, loader, device: torch.device, discriminator: nn.Module | None = None,
                    loss: MRIGANLoss | None = None,
                    sum_over_processes: Callable[[torch.Tensor], torch.Tensor] = lambda sums: sums) -> dict:
    """Means over a loader of {"face", "mri", "fake"} batches: "ssim" between generated and target MRI (data range
    255; the original's logged score used the wrong data range, docs/differences.md#ssim-loss-epsilon), "pixel_mse" in
    [-1, 1], "loss_G" and "loss_D" when a discriminator and loss are given, and "mean_mri_real" / "mean_mri_fake", the
    mean brightness (0-255) of the generated MRIs of real and of fake faces, with their counts "n_real" and
    "n_fake". `sum_over_processes` adds up the sums of every process's shard (e.g. an all-reduce)."""
    # ssim, pixel, loss_G, loss_D, brightness of real, brightness of fake, n_real, n_fake
    sums = [0.0] * 8
    with eval_mode(*[model for model in (generator, discriminator) if model is not None]), torch.inference_mode():
        for batch in loader:
            face, target, fake = batch["face"].to(device), batch["mri"].to(device), batch["fake"].bool()
            generated = generator(face)
            n = len(face)
            sums[0] += structural_similarity(generated, target, per_image=True).sum().item()
            sums[1] += ((generated - target) ** 2).mean(dim=(1, 2, 3)).sum().item()
            if discriminator is not None:
                scores = discriminator(torch.cat([generated, target]), torch.cat([face, face]))
                sums[2] += loss.generator_loss(scores[:n], generated, target)["total"].item() * n
                sums[3] += loss.discriminator_loss(scores[n:], scores[:n])[0].item() * n
            brightness = ((generated.float().cpu() + 1) / 2 * 255).clamp(0, 255).mean(dim=(1, 2, 3))
            sums[4] += brightness[~fake].sum().item()
            sums[5] += brightness[fake].sum().item()
            sums[6] += int((~fake).sum())
            sums[7] += int(fake.sum())
    totals = sum_over_processes(torch.tensor(sums, dtype=torch.float64, device=device)).tolist()
    ssim, pixel, loss_g, loss_d, bright_real, bright_fake, n_real, n_fake = totals
    count = max(n_real + n_fake, 1.0)
    scores = {"ssim": ssim / count, "pixel_mse": pixel / count}
    if discriminator is not None:
        scores |= {"loss_G": loss_g / count, "loss_D": loss_d / count}
    return scores | {"mean_mri_real": bright_real / n_real if n_real else float("nan"),
                     "mean_mri_fake": bright_fake / n_fake if n_fake else float("nan"),
                     "n_real": int(n_real), "n_fake": int(n_fake)}
