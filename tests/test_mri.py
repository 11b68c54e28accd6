"""utils/mri.py: the fast MRI equals scikit-image's SSIM computation on real face crops, clipped not wrapped."""
import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from utils.demo.synthetic import face_photo
from utils.media.mri import compute_mri, compute_mri_reference, resize_for_mri, ssim_map


def _jpeg(image, quality):
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def _pairs():
    astronaut, hopper = face_photo("astronaut"), face_photo("grace_hopper")
    pasted = astronaut.copy()  # a crude "swap": another face pasted, blended, over the middle
    patch = cv2.resize(hopper, (90, 100), interpolation=cv2.INTER_AREA)
    pasted[60:160, 60:150] = (0.6 * patch + 0.4 * pasted[60:160, 60:150]).astype(np.uint8)
    return {
        "different people": (astronaut, hopper),
        "jpeg q30": (astronaut, _jpeg(astronaut, 30)),
        "blurred": (hopper, cv2.GaussianBlur(hopper, (7, 7), 2)),
        "pasted face": (astronaut, pasted),
        "inverted": (astronaut, 255 - astronaut),
        "small crops": (astronaut[50:110, 60:120], hopper[100:150, 120:175]),
    }


@pytest.mark.parametrize("name", list(_pairs()))
def test_fast_mri_matches_scikit_image_within_one_grey_level(name):
    real, fake = _pairs()[name]
    fast, reference = compute_mri(real, fake), compute_mri_reference(real, fake)
    assert fast.shape == (256, 256, 3) and fast.dtype == np.uint8
    assert np.abs(fast.astype(int) - reference.astype(int)).max() <= 1
    assert (fast != reference).mean() < 0.01


def test_reference_is_the_formula_of_the_original():
    real, fake = _pairs()["pasted face"]
    a, b = resize_for_mri(real), resize_for_mri(fake)
    _, full = structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=255, full=True)
    expected = np.clip(np.rint((1 - full) * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(compute_mri_reference(real, fake), expected)
    assert np.abs(ssim_map(a, b) - full).max() < 1e-3


def test_identical_crops_give_a_black_mri():
    face = face_photo("grace_hopper")
    assert not compute_mri(face, face.copy()).any()
    assert not compute_mri_reference(face, face.copy()).any()


def test_dissimilarity_above_one_is_clipped_not_wrapped():
    real = face_photo("astronaut")
    fake = 255 - real  # anticorrelated: SSIM < 0, so 255 * (1 - SSIM) > 255 in places
    a, b = resize_for_mri(real), resize_for_mri(fake)
    _, full = structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=255, full=True)
    beyond = (1 - full) * 255 > 256
    assert beyond.mean() > 0.1  # the case really occurs here
    mri = compute_mri(real, fake)
    assert (mri[beyond] == 255).all()
    wrapped = ((1 - full) * 255).astype(np.int64) % 256  # what the original stored
    assert (wrapped[beyond] < 255).any()


def test_mri_lights_up_only_where_the_face_was_changed():
    real, fake = _pairs()["pasted face"]
    mri = compute_mri(real, fake).max(axis=2).astype(float)
    # the paste covers rows 60:160, cols 60:150 of a 230x210 crop; map that into the 256x256 MRI
    rows = slice(int(60 * 256 / 230), int(160 * 256 / 230))
    cols = slice(int(60 * 256 / 210), int(150 * 256 / 210))
    inside = mri[rows, cols].mean()
    outside_mask = np.ones_like(mri, bool)
    outside_mask[max(rows.start - 8, 0):rows.stop + 8, max(cols.start - 8, 0):cols.stop + 8] = False
    assert inside > 60
    assert mri[outside_mask].max() == 0


def test_channels_are_independent():
    real = face_photo("astronaut")
    fake = real.copy()
    fake[..., 0] = cv2.GaussianBlur(real[..., 0], (9, 9), 3)
    mri = compute_mri(real, fake)
    assert mri[..., 0].mean() > 1
    assert not mri[..., 1:].any()


def test_output_size_and_input_checks():
    face = face_photo("astronaut")
    assert compute_mri(face, face, size=64).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="uint8"):
        compute_mri(face.astype(np.float32), face)
    with pytest.raises(ValueError, match="HxWx3"):
        compute_mri(face[..., 0], face)
