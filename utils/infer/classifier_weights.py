"""Build the deepfake classifier with trained or pretrained weights: from a checkpoint (ours or the
original's), or fresh with its encoder's weights resolved in one place (ImageNet, a local file, or none)."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Dict, Optional, Union
from urllib.parse import urlparse

import timm
import torch
from torch import Tensor, nn

from models.classifier import DeepFakeClassifier
from utils.checkpoint import load_state, read_checkpoint, state_dict_in
from utils.errors import EncoderWeightsError
from utils.names import CLASSIFIER_KEY

WEIGHTS_KEY = "deep_fake.training.model_params.encoder_weights"  # the config key named in error messages
_HUB_PROBE_TIMEOUT_S = 3.0

WeightsSpec = Optional[Union[str, Path]]


def classifier_from_checkpoint(checkpoint: Any, source: str | Path, default_encoder: str) -> DeepFakeClassifier:
    """The classifier stored under 'model_state_dict' (ours or the original's), built with the checkpoint's
    model_params.encoder_name (else `default_encoder`) and loaded strictly; on the CPU, in train mode."""
    params = (checkpoint.get("model_params") or {}) if isinstance(checkpoint, dict) else {}
    model = DeepFakeClassifier(params.get("encoder_name", default_encoder))
    load_state(model, checkpoint, CLASSIFIER_KEY, source=source)
    return model


def build_classifier(encoder_name: str, encoder_weights: WeightsSpec = None) -> DeepFakeClassifier:
    """A new classifier whose encoder holds `encoder_weights`: None or "none" (random init), "imagenet", or a
    local state dict file (see load_encoder_weights)."""
    model = DeepFakeClassifier(encoder_name)
    load_encoder_weights(model, encoder_weights)
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
        raise EncoderWeightsError(f"{path}: encoder weights file not found (config key {WEIGHTS_KEY})")
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
    how_to = (f"pass a local weights file with --set {WEIGHTS_KEY}=PATH (e.g. model.safetensors from "
              f"huggingface.co/{cfg.get('hf_hub_id')}), or choose --set {WEIGHTS_KEY}=none (random init)")
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
