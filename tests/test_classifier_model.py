"""Specification tests for models/classifier.py (architecture numbers, original checkpoint keys) and for
utils/infer/classifier_weights.py, the one place that resolves encoder weights (none, local file, ImageNet cache,
offline error)."""

import copy
import time

import pytest
import timm
import torch
from torch import nn

from models.classifier import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DeepFakeClassifier,
    input_size,
    timm_name,
)
from utils.errors import ConfigError, EncoderWeightsError
from utils.infer.classifier_weights import build_classifier, load_encoder_weights

B0 = "tf_efficientnet_b0.ns_jft_in1k"
WEIGHTS_FLAG = "--set deep_fake.training.model_params.encoder_weights="


@pytest.fixture(scope="module")
def model():
    """The default classifier (random init), built once for the module."""
    return DeepFakeClassifier().eval()


@pytest.fixture
def fresh(model):
    """A private copy, for tests that load weights into it."""
    return copy.deepcopy(model)


def random_like(state_dict):
    """Same keys and shapes, new values (integer buffers such as num_batches_tracked kept)."""
    return {k: torch.randn_like(v) if v.is_floating_point() else v.clone() for k, v in state_dict.items()}


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_default_parameter_counts_match_the_original(model):
    assert count(model) == 5_452_645
    assert count(model.encoder) == 5_288_548
    assert count(model.encoder.classifier) == 1_281_000  # timm's unused 1000-way head, kept
    assert count(model.classifier) == 164_097


def test_head_layout_is_the_original(model):
    head = model.classifier
    assert isinstance(model.avg_pool, nn.AdaptiveAvgPool2d) and model.avg_pool.output_size == 1
    assert [type(m) for m in head] == [nn.Linear, nn.Dropout, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features) == (1280, 128)
    assert head[1].p == 0.5
    assert (head[3].in_features, head[3].out_features) == (128, 1)


def test_forward_gives_one_logit_per_image(model):
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 224, 224))
    assert logits.shape == (2,)
    assert torch.isfinite(logits).all()


def test_timm_classifier_is_not_used(fresh):
    x = torch.randn(1, 3, 64, 64)  # the encoder is fully convolutional; small is enough here
    with torch.no_grad():
        before = fresh(x)
        fresh.encoder.classifier.weight.add_(1.0)
        after = fresh(x)
    torch.testing.assert_close(before, after)


def test_original_checkpoint_keys_load_strictly(fresh):
    encoder = timm.create_model(B0, pretrained=False)
    original = {f"encoder.{k}": v for k, v in random_like(encoder.state_dict()).items()}
    original.update({
        "classifier.0.weight": torch.randn(128, 1280), "classifier.0.bias": torch.randn(128),
        "classifier.3.weight": torch.randn(1, 128), "classifier.3.bias": torch.randn(1),
    })
    assert len(original) == 360 + 4
    fresh.load_state_dict(original, strict=True)
    torch.testing.assert_close(fresh.classifier[3].bias, original["classifier.3.bias"])
    torch.testing.assert_close(fresh.encoder.conv_stem.weight, original["encoder.conv_stem.weight"])


def test_encoder_names_map_to_timm_and_input_sizes():
    assert timm_name("tf_efficientnet_b0_ns") == B0
    assert timm_name("tf_efficientnet_b7_ns") == "tf_efficientnet_b7.ns_jft_in1k"
    assert timm_name(B0) == B0
    assert input_size("tf_efficientnet_b0_ns") == 224
    assert input_size("tf_efficientnet_b7_ns") == 600
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    with pytest.raises(ValueError, match="unknown encoder"):
        input_size("resnet50")


@pytest.mark.parametrize("spec", [None, "none", "None"])
def test_no_weights_keeps_the_random_init(fresh, spec):
    before = copy.deepcopy(fresh.encoder.state_dict())
    load_encoder_weights(fresh, spec)
    for key, value in fresh.encoder.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model_state_dict"])
def test_local_weights_file_round_trip(fresh, tmp_path, layout):
    weights = random_like(fresh.encoder.state_dict())
    saved = {
        "plain": weights,
        "state_dict": {"state_dict": weights, "epoch": 3},
        "model_state_dict": {"model_state_dict": weights},
    }[layout]
    path = tmp_path / "encoder.pth"
    torch.save(saved, path)
    load_encoder_weights(fresh, str(path))
    for key, value in fresh.encoder.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_constructor_loads_a_safetensors_file(model, tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    weights = random_like(model.encoder.state_dict())
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(weights, str(path))
    loaded = build_classifier("tf_efficientnet_b0_ns", path)
    torch.testing.assert_close(loaded.encoder.conv_head.weight, weights["conv_head.weight"])


@pytest.mark.parametrize("change, named", [("drop", "conv_head.weight"), ("reshape", "bn2.weight")])
def test_mismatched_weights_file_is_one_line_naming_the_file(fresh, tmp_path, change, named):
    weights = random_like(fresh.encoder.state_dict())
    if change == "drop":
        del weights["conv_head.weight"]
    else:
        weights["bn2.weight"] = torch.randn(7)
    path = tmp_path / "wrong.pth"
    torch.save(weights, path)
    with pytest.raises(ConfigError) as info:
        load_encoder_weights(fresh, path)
    message = str(info.value)
    assert "wrong.pth" in message and named in message and "\n" not in message


@pytest.mark.parametrize("content", ["missing", "garbage", "pickled_object", "no_tensors", "bad_safetensors"])
def test_unusable_weights_files_are_refused_clearly(fresh, tmp_path, content):
    path = tmp_path / ("bad.safetensors" if content == "bad_safetensors" else "bad.pth")
    if content in ("garbage", "bad_safetensors"):
        path.write_bytes(b"this is not a torch file")
    elif content == "pickled_object":
        torch.save({"state_dict": fresh.encoder.state_dict(), "extra": nn.ReLU()}, path)
    elif content == "no_tensors":
        torch.save({"epoch": 3}, path)
    with pytest.raises(ConfigError) as info:  # scripts print it as one line, exit code 2
        load_encoder_weights(fresh, path)
    assert path.name in str(info.value) and "\n" not in str(info.value)


@pytest.fixture
def no_cache(tmp_path, monkeypatch):
    """Empty Hugging Face and torch hub caches, so 'imagenet' has to go to the network."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    return tmp_path


def assert_offline_message(error):
    message = str(error)
    assert "\n" not in message
    assert f"{WEIGHTS_FLAG}PATH" in message and f"{WEIGHTS_FLAG}none" in message


def test_imagenet_with_unreachable_hub_fails_fast_with_the_way_out(fresh, no_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")  # .invalid never resolves
    start = time.monotonic()
    with pytest.raises(EncoderWeightsError) as info:
        load_encoder_weights(fresh, "imagenet")
    assert time.monotonic() - start < 10
    assert_offline_message(info.value)


def test_imagenet_under_hf_hub_offline_does_not_touch_the_network(fresh, no_cache, monkeypatch):
    from huggingface_hub import constants

    def no_network(*args, **kwargs):
        raise AssertionError("network contacted although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr("socket.create_connection", no_network)
    with pytest.raises(EncoderWeightsError) as info:
        build_classifier("tf_efficientnet_b0_ns", "imagenet")
    assert_offline_message(info.value)


def test_imagenet_loads_from_the_hugging_face_cache_without_network(fresh, no_cache, monkeypatch):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from huggingface_hub import constants

    snapshot = no_cache / "hf" / f"models--timm--{B0}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    weights = random_like(fresh.encoder.state_dict())
    safetensors_torch.save_file(weights, str(snapshot / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    load_encoder_weights(fresh, "imagenet")
    torch.testing.assert_close(fresh.encoder.conv_stem.weight, weights["conv_stem.weight"])
