"""The deepfake classifier: a timm EfficientNet encoder plus the original two-layer head (one logit).
Attribute names match the original DeepFakeDetectModel checkpoints; encoder weights resolve in one place."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Dict, Optional, Union
from urllib.parse import urlparse

import timm
import torch
from torch import Tensor, nn

from utils.checkpoint import load_state, read_checkpoint, state_dict_in
from utils.config import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EncoderWeightsError",
    "DeepFakeClassifier",
    "timm_name",
    "input_size",
    "load_encoder_weights",
]

# Preprocessing of the original (and of the NoisyStudent weights): PIL bilinear resize, then these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The original's encoder names -> (timm >= 0.9 name, input side). The old names are deprecated aliases.
ENCODERS = {
    "tf_efficientnet_b0_ns": ("tf_efficientnet_b0.ns_jft_in1k", 224),
    "tf_efficientnet_b7_ns": ("tf_efficientnet_b7.ns_jft_in1k", 600),
}
_WEIGHTS_KEY = "deep_fake.training.model_params.encoder_weights"
_HUB_PROBE_TIMEOUT_S = 3.0

WeightsSpec = Optional[Union[str, Path]]


class EncoderWeightsError(ConfigError):
    """Encoder weights cannot be had; a one-line message naming the file or the way out. (A file that
    is refused or does not fit raises utils.checkpoint.CheckpointError, also a ConfigError.)"""


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
    `encoder_weights`: None or "none" (random init), "imagenet", or a local state dict file.
    """

    def __init__(self, encoder_name: str = "tf_efficientnet_b0_ns", encoder_weights: WeightsSpec = None,
                 drop_path_rate: float = 0.2):
        super().__init__()
        self.encoder_name = encoder_name
        self.input_size = input_size(encoder_name)
        # Always built without weights; load_encoder_weights is the one place that fetches them.
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
        load_encoder_weights(self, encoder_weights)

    def forward(self, x: Tensor) -> Tensor:
        features = self.avg_pool(self.encoder.forward_features(x)).flatten(1)
        return self.classifier(features).squeeze(1)


def classifier_from_checkpoint(checkpoint: Any, source: str | Path, default_encoder: str) -> DeepFakeClassifier:
    """The classifier stored under 'model_state_dict' (ours or the original's), built with the checkpoint's
    model_params.encoder_name (else `default_encoder`) and loaded strictly; on the CPU, in train mode."""
    params = (checkpoint.get("model_params") or {}) if isinstance(checkpoint, dict) else {}
    model = DeepFakeClassifier(params.get("encoder_name", default_encoder), encoder_weights=None)
    load_state(model, checkpoint, "model_state_dict", source=source)
    return model


def load_encoder_weights(model: DeepFakeClassifier, spec: WeightsSpec) -> None:
    """Fill model.encoder from `spec`: None/"none" keeps the random init; "imagenet" takes timm's
    pretrained weights (local cache first, then the hub); anything else is a state dict file.
    Raises EncoderWeightsError (one line) when the weights cannot be had; never falls back silently."""
    if spec is None or str(spec).lower() == "none":
        return
    if str(spec).lower() == "imagenet":
        _load_imagenet(model.encoder)
    else:
        _load_file(model.encoder, Path(spec))


def _load_file(encoder: nn.Module, path: Path) -> None:
    """Strictly load a state dict file: .safetensors, or a torch file read with weights_only=True
    (plain, or nested under 'state_dict' / 'model_state_dict'; see utils.checkpoint)."""
    if not path.is_file():
        raise EncoderWeightsError(f"{path}: encoder weights file not found (config key {_WEIGHTS_KEY})")
    if path.suffix == ".safetensors":
        state_dict = _read_safetensors(path)
    else:
        state_dict = state_dict_in(read_checkpoint(path), source=path)
    load_state(encoder, state_dict, source=path)


def _read_safetensors(path: Path) -> Dict[str, Tensor]:
    import safetensors.torch

    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise EncoderWeightsError(f"{path}: cannot read safetensors weights ({type(exc).__name__})") from None


def _load_imagenet(encoder: nn.Module) -> None:
    cfg = encoder.pretrained_cfg
    cached = _cached_pretrained_file(cfg)
    if cached is not None:
        _load_file(encoder, cached)  # offline-safe: the hub is not contacted at all
        return
    how_to = (f"pass a local weights file with --set {_WEIGHTS_KEY}=PATH (e.g. model.safetensors from "
              f"huggingface.co/{cfg.get('hf_hub_id')}), or choose --set {_WEIGHTS_KEY}=none (random init)")
    if not _hub_reachable():
        raise EncoderWeightsError(f"ImageNet weights for {cfg['architecture']}.{cfg.get('tag')} are not "
                                  f"cached and the model hub is unreachable (offline?): {how_to}")
    try:
        timm.models.load_pretrained(encoder, pretrained_cfg=cfg)
    except Exception as exc:  # network and hub errors come in many types; all end the same way
        raise EncoderWeightsError(f"could not fetch ImageNet weights for {cfg['architecture']} "
                                  f"({type(exc).__name__}): {how_to}") from None


def _cached_pretrained_file(cfg: dict) -> Optional[Path]:
    """The pretrained file if a previous download left it in the Hugging Face or torch hub cache."""
    import huggingface_hub

    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = huggingface_hub.try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str):  # may also be None or a "known missing" sentinel
                return Path(found)
    url = cfg.get("url")
    if url:
        legacy = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if legacy.is_file():
            return legacy
    return None


def _hub_reachable(timeout: float = _HUB_PROBE_TIMEOUT_S) -> bool:
    """False at once under HF_HUB_OFFLINE, else whether the hub accepts a TCP connection within
    `timeout`. Needed because huggingface_hub retries for about 45 s before giving up offline."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True
