"""The deepfake classifier: a timm EfficientNet encoder plus the original two-layer head (one logit).
Attribute names match the original DeepFakeDetectModel checkpoints. Plain nn.Module: no file access, no config."""

from __future__ import annotations

import timm
from torch import Tensor, nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DeepFakeClassifier",
    "timm_name",
    "input_size",
]

# Preprocessing of the original (and of the NoisyStudent weights): PIL bilinear resize, then these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The original's encoder names -> (timm >= 0.9 name, input side). The old names are deprecated aliases.
ENCODERS = {
    "tf_efficientnet_b0_ns": ("tf_efficientnet_b0.ns_jft_in1k", 224),
    "tf_efficientnet_b7_ns": ("tf_efficientnet_b7.ns_jft_in1k", 600),
}


def _encoder_entry(encoder_name: str) -> tuple[str, int]:
    if encoder_name in ENCODERS:
        return ENCODERS[encoder_name]
    for timm_id, side in ENCODERS.values():
        if encoder_name == timm_id:
            return timm_id, side
    known = ", ".join(sorted(ENCODERS))
    raise ValueError(f"unknown encoder {encoder_name!r}; choose from {known}")


def timm_name(encoder_name: str) -> str:
    """The timm 1.x model name for an original encoder name (a timm name passes through)."""
    return _encoder_entry(encoder_name)[0]


def input_size(encoder_name: str) -> int:
    """Side of the square classifier input: 224 for B0, 600 for B7 (the original's table)."""
    return _encoder_entry(encoder_name)[1]


class DeepFakeClassifier(nn.Module):
    """EfficientNet encoder + the original head: (B, 3, S, S) normalised RGB -> (B,) logits, P(fake) =
    sigmoid(logit). S = input_size(encoder_name).

        x -> encoder.forward_features (B, 1280, S/32, S/32 for B0) -> avg_pool -> flatten
          -> classifier: [0] Linear 1280->128, [1] Dropout 0.5, [2] ReLU, [3] Linear 128->1

    `encoder` is the full timm model; its own 1000-way classifier is unused but kept, so the original
    checkpoints (keys encoder.*, classifier.0.*, classifier.3.*) load strictly. B0: 5,452,645 parameters.
    Built with random weights; utils.infer.classifier_weights.build_classifier fills the encoder (ImageNet, a file).
    """

    def __init__(self, encoder_name: str = "tf_efficientnet_b0_ns", drop_path_rate: float = 0.2):
        super().__init__()
        self.encoder_name = encoder_name
        self.input_size = input_size(encoder_name)
        # Always built without weights: utils.infer.classifier_weights.load_encoder_weights is the one place that
        # loads them.
        self.encoder = timm.create_model(timm_name(encoder_name), pretrained=False,
                                         drop_path_rate=drop_path_rate)
        num_features = self.encoder.num_features
        hidden = int(num_features * 0.10)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(num_features, hidden),
            nn.Dropout(0.5),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        features = self.avg_pool(self.encoder.forward_features(x)).flatten(1)
        return self.classifier(features).squeeze(1)
