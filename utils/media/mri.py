"""The MRI target: a per-channel SSIM dissimilarity image of a real face crop and its fake, as uint8.

MRI = clip(round(255 * (1 - S))), S the full local SSIM map (Gaussian window, sigma 1.5, data range 255).
"""
from __future__ import annotations

import cv2
import numpy as np

MRI_SIZE = 256  # the side of an MRI and of the face the MRI-GAN reads: its U-Net halves it eight times to 1x1
SIGMA = 1.5
RADIUS = int(3.5 * SIGMA + 0.5)  # scipy's gaussian_filter truncates at 3.5 sigma: radius 5, 11 taps
DATA_RANGE = 255.0
C1 = (0.01 * DATA_RANGE) ** 2  # 6.5025
C2 = (0.03 * DATA_RANGE) ** 2  # 58.5225


def resize_for_mri(image: np.ndarray, size: int = MRI_SIZE) -> np.ndarray:
    """Resize a uint8 HxWx3 crop to size x size with area interpolation, as the original did."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


_KERNEL = cv2.getGaussianKernel(2 * RADIUS + 1, SIGMA, cv2.CV_64F).astype(np.float32)


def _gaussian(image: np.ndarray) -> np.ndarray:
    # Same weights and border as scipy.ndimage.gaussian_filter(sigma=1.5, truncate=3.5, mode='reflect'),
    # which scikit-image uses: OpenCV's BORDER_REFLECT repeats the edge pixel exactly like 'reflect'.
    return cv2.sepFilter2D(image, cv2.CV_32F, _KERNEL, _KERNEL, borderType=cv2.BORDER_REFLECT)


def ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Full local SSIM map (HxWxC float32) of two equally sized uint8 images, channels independent.

    Gaussian-weighted means, population (co)variances, K1=0.01, K2=0.03, data range 255, borders kept:
    scikit-image's structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=255, full=True) map. Computed in float32 with OpenCV (about 5x faster than scikit-image);
    pixels are centred on 128 first so that E[x^2] - E[x]^2 loses no precision. The result differs from
    scikit-image's float64 map by far less than one grey level of the MRI.
    """
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    x = x.astype(np.float32)
    x -= 128.0
    y = y.astype(np.float32)
    y -= 128.0
    mu_x, mu_y = _gaussian(x), _gaussian(y)
    # In-place OpenCV arithmetic: fresh 256x256x3 float arrays per step cost more than the filtering.
    cov_term = _gaussian(cv2.multiply(x, y))  # -> 2 * cov_xy + C2
    cov_term -= cv2.multiply(mu_x, mu_y)
    cov_term *= 2.0
    cov_term += C2
    var_term = _gaussian(cv2.multiply(x, x))  # -> var_x + var_y + C2
    var_term += _gaussian(cv2.multiply(y, y))
    var_term -= cv2.multiply(mu_x, mu_x)
    var_term -= cv2.multiply(mu_y, mu_y)
    var_term += C2
    mu_x += 128.0
    mu_y += 128.0
    numerator = cv2.multiply(mu_x, mu_y)
    numerator *= 2.0
    numerator += C1
    numerator *= cov_term
    denominator = cv2.multiply(mu_x, mu_x)
    denominator += cv2.multiply(mu_y, mu_y)
    denominator += C1
    denominator *= var_term
    return cv2.divide(numerator, denominator).reshape(x.shape)


def mri_from_ssim(ssim: np.ndarray) -> np.ndarray:
    """255 * (1 - S), rounded and clipped to [0, 255] (the original cast straight to uint8 and wrapped)."""
    return np.clip(np.rint((1.0 - ssim) * DATA_RANGE), 0, 255).astype(np.uint8)


def compute_mri(real: np.ndarray, fake: np.ndarray, size: int = MRI_SIZE) -> np.ndarray:
    """The MRI of a (real, fake) pair of uint8 HxWx3 crops: a size x size x 3 uint8 image.

    Each crop is resized on its own (area interpolation); channel c of the result is the dissimilarity
    of channel c of the inputs, so the channel order (RGB or BGR) is whatever the inputs use.
    Identical inputs give an all-zero image.
    """
    return mri_from_ssim(ssim_map(resize_for_mri(real, size), resize_for_mri(fake, size)))


def compute_mri_reference(real: np.ndarray, fake: np.ndarray, size: int = MRI_SIZE) -> np.ndarray:
    """The same MRI computed the straightforward way with scikit-image (slow; for tests and benchmarks)."""
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(
        resize_for_mri(real, size), resize_for_mri(fake, size), channel_axis=2, gaussian_weights=True,
        sigma=SIGMA, use_sample_covariance=False, data_range=DATA_RANGE, full=True,
    )
    return mri_from_ssim(full)
