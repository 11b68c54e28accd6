"""The classifier's input transform at inference: the one every evaluation and the app use."""
from __future__ import annotations

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from models.classifier import IMAGENET_MEAN, IMAGENET_STD


def eval_steps(size: int = 224) -> list:
    """PIL RGB image -> normalised (3, size, size) tensor: bilinear resize, to tensor, ImageNet normalise."""
    return [
        T.Resize((size, size), interpolation=InterpolationMode.BILINEAR),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]


def eval_transform(size: int = 224) -> T.Compose:
    return T.Compose(eval_steps(size))
