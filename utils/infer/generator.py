"""Run a trained MRI-GAN generator: face crops in, MRI images out (uint8).
Eval mode, no gradients, each batch its own images (docs/differences.md#mri-prediction-eval-mode)."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from models.mri_gan import Generator
from utils.checkpoint import load_state, read_checkpoint
from utils.errors import CheckpointError
from utils.media.mri import MRI_SIZE
from utils.names import GENERATOR_KEY
from utils.runtime import Precision


def load_generator(path: str | Path, device: torch.device | str, ngf: int | None = None,
                   mmap: bool = False) -> Generator:
    """The generator stored under 'generator_state_dict' (ours or the original's), in eval mode on `device`.

    The width ngf is read from the weights unless given; mmap: see utils.checkpoint.read_checkpoint.
    """
    checkpoint = read_checkpoint(path, mmap)
    state = checkpoint.get(GENERATOR_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "down1.model.0.weight" not in state:
        raise CheckpointError(f"{path}: holds no MRI-GAN generator ('{GENERATOR_KEY}')")
    with torch.device("meta"):  # no random initialisation of 54 M weights that the checkpoint replaces
        generator = Generator(ngf=ngf or int(state["down1.model.0.weight"].shape[0]))
    load_state(generator, checkpoint, GENERATOR_KEY, source=path, assign=True)
    return generator.float().to(device).eval()


def to_uint8(images: torch.Tensor, original_rendering: bool = False) -> list[np.ndarray]:
    """Generator outputs (B, 3, H, W) in [-1, 1] -> B RGB uint8 arrays (H, W, 3).

    Default: round((x + 1) / 2 * 255). original_rendering=True renders as the original did (torchvision
    save_image of the raw tanh output: x * 255 + 0.5 clamped to [0, 255], so negatives turn black); the
    released MRI classifier was trained on such images.
    """
    images = images.detach().float().cpu()
    if original_rendering:
        pixels = (images * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    else:
        pixels = ((images + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8)
    return list(pixels.permute(0, 2, 3, 1).numpy())


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode (dropout off) for the block, then restore each one's previous mode."""
    was_training = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, was_training):
            module.train(mode)


def image_tensor(image: Image.Image, imsize: int) -> torch.Tensor:
    """(3, imsize, imsize) float tensor in [-1, 1]: PIL bilinear resize, then mean/std 0.5 normalisation,
    the MRI-GAN input (and target) preprocessing of the original."""
    if image.size != (imsize, imsize):
        image = image.resize((imsize, imsize), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy((array - 0.5) / 0.5).permute(2, 0, 1).contiguous()


def face_batch(faces: Sequence[np.ndarray]) -> torch.Tensor:
    """RGB uint8 crops of any size -> (B, 3, 256, 256) in [-1, 1], preprocessed as the original."""
    tensors = []
    for index, face in enumerate(faces):
        if not (isinstance(face, np.ndarray) and face.dtype == np.uint8 and face.ndim == 3 and face.shape[2] == 3):
            raise ValueError(f"face {index}: expected an RGB uint8 HxWx3 array, got "
                             f"{getattr(face, 'dtype', type(face).__name__)} {getattr(face, 'shape', '')}")
        tensors.append(image_tensor(Image.fromarray(face), MRI_SIZE))
    return torch.stack(tensors)


def predict_mris(generator: nn.Module, faces: Sequence[np.ndarray], device: torch.device | str,
                 batch_size: int = 8, original_rendering: bool = False,
                 precision: Precision | None = None) -> list[np.ndarray]:
    """The MRI (uint8 256x256x3) of each face crop, in input order, batch by batch (fp32 unless `precision`)."""
    mris: list[np.ndarray] = []
    autocast = precision.autocast() if precision is not None else nullcontext()
    with eval_mode(generator), torch.inference_mode(), autocast:
        for start in range(0, len(faces), batch_size):
            batch = face_batch(faces[start:start + batch_size]).to(device)
            mris.extend(to_uint8(generator(batch), original_rendering))
    return mris
