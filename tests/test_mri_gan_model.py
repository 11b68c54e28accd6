"""Specification tests for models/mri_gan.py: architecture numbers, checkpoint keys, init, losses.
Default-width models are built once per module; everything else runs on narrow models."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from models.mri_gan import (
    DecoderBlock,
    Discriminator,
    Generator,
    MRIGANLoss,
    init_weights,
    ssim_loss,
)

# Parameter shapes of the original checkpoints, written out from the original's released checkpoints.
# Conv2d weights are (out, in, kH, kW); ConvTranspose2d weights are (in, out, kH, kW).
ORIGINAL_GENERATOR_SHAPES = OrderedDict(
    [
        ("down1.model.0.weight", (64, 3, 4, 4)),
        ("down2.model.0.weight", (128, 64, 4, 4)),
        ("down3.model.0.weight", (256, 128, 4, 4)),
        ("down4.model.0.weight", (512, 256, 4, 4)),
        ("down5.model.0.weight", (512, 512, 4, 4)),
        ("down6.model.0.weight", (512, 512, 4, 4)),
        ("down7.model.0.weight", (512, 512, 4, 4)),
        ("down8.model.0.weight", (512, 512, 4, 4)),
        ("up1.model.0.weight", (512, 512, 4, 4)),
        ("up2.model.0.weight", (1024, 512, 4, 4)),
        ("up3.model.0.weight", (1024, 512, 4, 4)),
        ("up4.model.0.weight", (1024, 512, 4, 4)),
        ("up5.model.0.weight", (1024, 256, 4, 4)),
        ("up6.model.0.weight", (512, 128, 4, 4)),
        ("up7.model.0.weight", (256, 64, 4, 4)),
        ("final.2.weight", (3, 128, 4, 4)),
        ("final.2.bias", (3,)),
    ]
)
ORIGINAL_DISCRIMINATOR_SHAPES = OrderedDict(
    [
        ("model.0.weight", (64, 6, 4, 4)),
        ("model.0.bias", (64,)),
        ("model.2.weight", (128, 64, 4, 4)),
        ("model.2.bias", (128,)),
        ("model.5.weight", (256, 128, 4, 4)),
        ("model.5.bias", (256,)),
        ("model.8.weight", (512, 256, 4, 4)),
        ("model.8.bias", (512,)),
        ("model.12.weight", (1, 512, 4, 4)),
    ]
)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def random_images(batch: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


@pytest.fixture(scope="module")
def default_generator() -> Generator:
    return Generator()


@pytest.fixture(scope="module")
def default_discriminator() -> Discriminator:
    return Discriminator()


# --- architecture -------------------------------------------------------------------------------


def test_default_generator_has_54_404_099_parameters(default_generator):
    assert count_params(default_generator) == 54_404_099


def test_default_discriminator_has_2_767_808_parameters(default_discriminator):
    assert count_params(default_discriminator) == 2_767_808


@pytest.mark.parametrize(
    "block, expected",
    [
        ("down1", 3_072),
        ("down2", 131_072),
        ("down4", 2_097_152),
        ("down8", 4_194_304),
        ("up1", 4_194_304),
        ("up2", 8_388_608),
        ("up5", 4_194_304),
        ("up7", 262_144),
        ("final", 6_147),
    ],
)
def test_generator_block_parameter_counts_match_original_table(default_generator, block, expected):
    assert count_params(getattr(default_generator, block)) == expected


def test_discriminator_layer_parameter_counts_match_original_table(default_discriminator):
    layers = default_discriminator.model
    counts = {index: count_params(layers[index]) for index in (0, 2, 5, 8, 11, 12)}
    assert counts == {0: 6_208, 2: 131_200, 5: 524_544, 8: 2_097_664, 11: 0, 12: 8_192}


def test_generator_state_dict_has_exactly_the_original_17_keys_and_shapes(default_generator):
    shapes = {key: tuple(value.shape) for key, value in default_generator.state_dict().items()}
    assert shapes == dict(ORIGINAL_GENERATOR_SHAPES)


def test_discriminator_state_dict_has_exactly_the_original_keys_and_shapes(default_discriminator):
    shapes = {key: tuple(value.shape) for key, value in default_discriminator.state_dict().items()}
    assert shapes == dict(ORIGINAL_DISCRIMINATOR_SHAPES)


@pytest.mark.parametrize(
    "fixture_name, shapes, probe_key",
    [
        ("default_generator", ORIGINAL_GENERATOR_SHAPES, "up4.model.0.weight"),
        ("default_discriminator", ORIGINAL_DISCRIMINATOR_SHAPES, "model.12.weight"),
    ],
)
def test_state_dict_with_original_key_names_loads_strictly(request, fixture_name, shapes,
                                                           probe_key):
    model = request.getfixturevalue(fixture_name)
    torch.manual_seed(0)
    checkpoint = OrderedDict((key, torch.randn(shape)) for key, shape in shapes.items())
    result = model.load_state_dict(checkpoint, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.state_dict()[probe_key], checkpoint[probe_key])


def test_generator_maps_256_face_to_3x256x256_within_tanh_range():
    generator = Generator(ngf=8).eval()
    with torch.no_grad():
        output = generator(random_images(2, 256, seed=1))
    assert output.shape == (2, 3, 256, 256)
    assert output.min() >= -1 and output.max() <= 1


def test_generator_output_channels_follow_out_channels():
    generator = Generator(in_channels=1, out_channels=2, ngf=4).eval()
    with torch.no_grad():
        output = generator(torch.zeros(1, 1, 256, 256))
    assert output.shape == (1, 2, 256, 256)


@pytest.mark.parametrize("ndf", [8, 64])
def test_discriminator_scores_256_pair_as_16x16_patches(ndf):
    discriminator = Discriminator(ndf=ndf)
    with torch.no_grad():
        scores = discriminator(random_images(2, 256, seed=2), random_images(2, 256, seed=3))
    assert scores.shape == (2, 1, 16, 16)


def test_discriminator_puts_img_a_in_first_input_channels():
    discriminator = Discriminator(ndf=4)
    first_conv = discriminator.model[0]
    with torch.no_grad():
        first_conv.weight[:, 3:] = 0  # the layer now sees only channels 0-2
        img_a = random_images(1, 64, seed=4)
        scores = discriminator(img_a, random_images(1, 64, seed=5))
        same_a = discriminator(img_a, random_images(1, 64, seed=6))
        other_a = discriminator(random_images(1, 64, seed=7), random_images(1, 64, seed=5))
    assert torch.allclose(scores, same_a, atol=1e-6)
    assert not torch.allclose(scores, other_a)


def test_decoder_block_concatenates_own_output_before_skip():
    block = DecoderBlock(8, 4)
    x = torch.randn(1, 8, 4, 4)
    skip = torch.randn(1, 6, 8, 8)
    with torch.no_grad():
        output = block(x, skip)
    assert output.shape == (1, 10, 8, 8)
    assert torch.equal(output[:, 4:], skip)


def test_generator_eval_mode_is_deterministic_and_train_mode_is_not():
    torch.manual_seed(0)
    generator = Generator(ngf=4)
    face = random_images(1, 256, seed=8)
    with torch.no_grad():
        generator.eval()
        first, second = generator(face), generator(face)
        generator.train()
        noisy_first, noisy_second = generator(face), generator(face)
    assert torch.equal(first, second)
    assert not torch.allclose(noisy_first, noisy_second)


def test_normalisation_layers_hold_no_parameters_or_buffers(default_generator):
    norms = [m for m in default_generator.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 6 + 7  # down2..down7 and up1..up7
    assert all(not list(m.parameters()) and not list(m.buffers()) for m in norms)


# --- weight initialisation ----------------------------------------------------------------------


def test_init_weights_draws_conv_weights_with_std_0_02():
    torch.manual_seed(0)
    models = [Generator(ngf=16), Discriminator(ndf=16)]
    for model in models:
        model.apply(init_weights)
    convs = [
        m for model in models for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    assert len(convs) == 16 + 5
    for conv in convs:
        weight = conv.weight.detach()
        if weight.numel() >= 1000:
            assert weight.std().item() == pytest.approx(0.02, rel=0.15)
            assert abs(weight.mean().item()) < 0.005


def test_init_weights_leaves_biases_at_pytorch_defaults():
    torch.manual_seed(0)
    generator, discriminator = Generator(ngf=4), Discriminator(ndf=4)
    biases_before = {
        "final": generator.final[2].bias.detach().clone(),
        **{i: discriminator.model[i].bias.detach().clone() for i in (0, 2, 5, 8)},
    }
    generator.apply(init_weights)
    discriminator.apply(init_weights)
    assert torch.equal(generator.final[2].bias, biases_before["final"])
    for index in (0, 2, 5, 8):
        assert torch.equal(discriminator.model[index].bias, biases_before[index])


# --- losses -------------------------------------------------------------------------------------


def test_identical_prediction_and_target_give_zero_pixel_and_near_zero_ssim_with_finite_grad():
    target = random_images(2, 32, seed=9)
    prediction = target.clone().requires_grad_(True)
    pred_fake = torch.full((2, 1, 2, 2), 0.5, requires_grad=True)
    losses = MRIGANLoss().generator_loss(pred_fake, prediction, target)
    assert losses["pixel"].item() == 0
    assert 0 <= losses["ssim"].item() < 1e-3
    losses["total"].backward()
    assert torch.isfinite(prediction.grad).all()
    assert torch.isfinite(pred_fake.grad).all()


def test_ssim_loss_grows_as_images_differ():
    target = random_images(2, 32, seed=10)
    slightly_off = (target + 0.05 * random_images(2, 32, seed=11)).clamp(-1, 1)
    unrelated = random_images(2, 32, seed=12)
    near, far = ssim_loss(slightly_off, target), ssim_loss(unrelated, target)
    assert 0 < near < far <= 1


def test_generator_total_is_gan_plus_weighted_pixel_and_ssim():
    loss = MRIGANLoss(lambda_pixel=100, tau=0.3)
    pred_fake = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(13))
    parts = loss.generator_loss(pred_fake, random_images(2, 32, 14), random_images(2, 32, 15))
    expected = parts["gan"] + 100 * (0.3 * parts["pixel"] + 0.7 * parts["ssim"])
    assert set(parts) == {"total", "gan", "pixel", "ssim"}
    assert torch.allclose(parts["total"], expected)
    assert torch.allclose(parts["gan"], ((pred_fake - 1) ** 2).mean())


def test_gan_term_is_least_squares_against_all_ones():
    loss = MRIGANLoss()
    images = random_images(1, 32, seed=16)
    assert loss.generator_loss(torch.ones(1, 1, 16, 16), images, images)["gan"].item() == 0
    assert loss.generator_loss(torch.zeros(1, 1, 16, 16), images, images)["gan"].item() == 1


def test_tau_one_drops_the_ssim_term_from_the_total():
    loss = MRIGANLoss(lambda_pixel=100, tau=1.0)
    parts = loss.generator_loss(torch.zeros(2, 1, 2, 2), random_images(2, 32, 17),
                                random_images(2, 32, 18))
    assert parts["ssim"].item() > 0.1
    assert torch.allclose(parts["total"], parts["gan"] + 100 * parts["pixel"])


def test_discriminator_loss_is_half_the_sum_of_real_and_fake_least_squares():
    total, real, fake = MRIGANLoss().discriminator_loss(
        pred_real=torch.full((2, 1, 16, 16), 0.8), pred_fake=torch.full((2, 1, 16, 16), 0.5)
    )
    assert real.item() == pytest.approx(0.04)
    assert fake.item() == pytest.approx(0.25)
    assert total.item() == pytest.approx(0.5 * (0.04 + 0.25))
