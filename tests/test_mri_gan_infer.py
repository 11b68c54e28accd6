"""utils/mri_gan_infer.py: face crops to MRIs with a trained generator (eval mode, no gradients, each batch its
own images, [-1, 1] -> [0, 255]) and the original's rendering behind a switch. Narrow real generators."""
from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from models.mri_gan import Generator
from utils.demo.synthetic import face_photo
from utils.errors import CheckpointError
from utils.infer.generator import face_batch, load_generator, predict_mris


@pytest.fixture(scope="module")
def generator() -> Generator:
    torch.manual_seed(0)
    return Generator(ngf=8).eval()


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    """Five different crops of different sizes (the U-Net input is always resized to 256)."""
    astronaut, hopper = face_photo("astronaut"), face_photo("grace_hopper")
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    return [astronaut, hopper, astronaut[20:180, 30:170], hopper[50:300, 40:260], mirrored]


def constant_generator(values) -> Generator:
    """A real generator whose output is tanh(bias) everywhere: final conv weights zeroed, bias atanh(v)."""
    generator = Generator(ngf=4).eval()
    with torch.no_grad():
        generator.final[2].weight.zero_()
        generator.final[2].bias.copy_(torch.tensor([math.atanh(v) for v in values]))
    return generator


@pytest.mark.slow  # ~5.5 s of MRI-GAN generator passes
def test_each_batch_uses_its_own_images_in_input_order(generator, faces):
    batched = predict_mris(generator, faces, "cpu", batch_size=2)
    one_by_one = [predict_mris(generator, [face], "cpu", batch_size=1)[0] for face in faces]
    assert len(batched) == len(faces)
    for mine, alone in zip(batched, one_by_one):
        assert mine.shape == (256, 256, 3) and mine.dtype == np.uint8
        assert np.abs(mine.astype(int) - alone.astype(int)).max() <= 1
    assert not np.array_equal(batched[2], batched[0]) and not np.array_equal(batched[4], batched[0])


@pytest.mark.slow  # ~2 s of MRI-GAN generator passes
def test_generation_is_deterministic_and_restores_the_callers_mode(faces):
    torch.manual_seed(1)
    model = Generator(ngf=8).train()  # dropout would make outputs random (docs/differences.md#mri-prediction-eval-mode)
    first = predict_mris(model, faces[:2], "cpu")
    second = predict_mris(model, faces[:2], "cpu")
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert model.training


def test_output_is_denormalised_from_tanh_range_with_rounding(faces):
    (mri,) = predict_mris(constant_generator([-0.5, 0.2, 0.35]), faces[:1], "cpu")
    # (x + 1) / 2 * 255 = 63.75, 153.0, 172.1 -> 64, 153, 172
    assert np.unique(mri.reshape(-1, 3), axis=0).tolist() == [[64, 153, 172]]


def test_original_rendering_clamps_negative_output_to_black(faces):
    (mri,) = predict_mris(constant_generator([-0.5, 0.2, 0.35]), faces[:1], "cpu", original_rendering=True)
    # torchvision save_image of the raw output: x * 255 + 0.5 = -127, 51.5, 89.75, clamped, truncated
    assert np.unique(mri.reshape(-1, 3), axis=0).tolist() == [[0, 51, 89]]


@pytest.mark.slow  # ~1.9 s of MRI-GAN generator passes
def test_original_rendering_equals_torchvision_save_image_of_the_raw_output(tmp_path, generator, faces):
    from torchvision.utils import save_image

    with torch.no_grad():
        save_image(generator(face_batch(faces[:1]))[0], tmp_path / "original.png")
    (mri,) = predict_mris(generator, faces[:1], "cpu", original_rendering=True)
    assert np.array_equal(mri, np.asarray(Image.open(tmp_path / "original.png").convert("RGB")))


def test_input_is_pil_bilinear_256_normalised_to_minus_one_one(faces):
    face = faces[2]
    expected = np.asarray(Image.fromarray(face).resize((256, 256), Image.Resampling.BILINEAR), np.float32)
    batch = face_batch([face])
    assert batch.shape == (1, 3, 256, 256)
    assert torch.allclose(batch[0].permute(1, 2, 0), torch.from_numpy(expected / 127.5 - 1), atol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32), "face.png"])
def test_faces_must_be_rgb_uint8_arrays(generator, bad):
    with pytest.raises(ValueError, match="face 0: expected an RGB uint8"):
        predict_mris(generator, [bad], "cpu")


@pytest.mark.slow  # ~1.9 s of MRI-GAN generator passes
def test_load_generator_reads_original_layout_infers_width_and_returns_eval_model(tmp_path, generator, faces):
    path = tmp_path / "MRI_GAN_weights.chkpt"
    torch.save({"epoch": 9, "log_dir": pathlib.PosixPath("/logs/x"), "model_params": {"tau": 0.3},
                "generator_state_dict": generator.state_dict()}, path)
    loaded = load_generator(path, "cpu")
    assert loaded.down1.model[0].out_channels == 8 and not loaded.training
    assert np.array_equal(predict_mris(loaded, faces[:1], "cpu")[0], predict_mris(generator, faces[:1], "cpu")[0])


def test_load_generator_refuses_a_checkpoint_without_generator(tmp_path):
    path = tmp_path / "classifier.chkpt"
    torch.save({"model_state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="classifier.chkpt: holds no MRI-GAN generator"):
        load_generator(path, "cpu")
