"""Shared fixtures: small face videos and broken files, generated at test time from shipped photos."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from tests.helpers import make_broken_files, make_face_video
from utils.config import PROJECT_ROOT
from utils.demo.synthetic import face_frames, face_photo, write_video

VIDEO_W, VIDEO_H, VIDEO_FRAMES, VIDEO_FPS = 320, 240, 30, 10.0


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def face_video(media):
    """30 frames, 320x240 at 10 fps: the astronaut's head gliding over a background."""
    return make_face_video(media / "astronaut.mp4", "astronaut", VIDEO_W, VIDEO_H, VIDEO_FRAMES, VIDEO_FPS, seed=1)


@pytest.fixture(scope="session")
def face_video_placements():
    """The (x, y, w, h) of the photo in each frame of `face_video` (same generator, same seed)."""
    return [place for _, place in face_frames(face_photo("astronaut"), VIDEO_W, VIDEO_H, VIDEO_FRAMES, seed=1)]


@pytest.fixture(scope="session")
def broken_files(media, face_video):
    return make_broken_files(media / "broken", face_video)


@pytest.fixture(scope="session")
def two_face_frame():
    """A 480x320 RGB frame with a large Grace Hopper on the left and a smaller astronaut on the right."""
    rng = np.random.default_rng(3)
    frame = np.full((320, 480, 3), 90, np.uint8) + rng.integers(0, 20, (320, 480, 3), dtype=np.uint8)
    import cv2

    big = cv2.resize(face_photo("grace_hopper"), (230, 274), interpolation=cv2.INTER_AREA)
    small = cv2.resize(face_photo("astronaut"), (150, 164), interpolation=cv2.INTER_AREA)
    frame[20:294, 10:240] = big
    frame[100:264, 300:450] = small
    return frame


@pytest.fixture(scope="session")
def detector():
    from utils.media.faces import FaceDetector

    return FaceDetector(device="cpu")


@pytest.fixture(scope="session")
def one_frame_video(media):
    frame = next(face_frames(face_photo("grace_hopper"), 160, 120, 1))[0]
    return write_video(media / "one_frame.mp4", [frame], fps=25)


@pytest.fixture(scope="session")
def app_weights(tmp_path_factory):
    """Random-weight classifiers for both methods (the second with exported thresholds) and a narrow generator."""
    from models.classifier import DeepFakeClassifier
    from models.mri_gan import Generator, init_weights

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    state = DeepFakeClassifier().state_dict()
    params = {"encoder_name": "tf_efficientnet_b0_ns"}
    torch.save({"model_state_dict": state, "model_params": params}, folder / "deepfake_plain_frames_weights.chkpt")
    torch.save({"model_state_dict": state, "model_params": params,
                "thresholds": {"fake_threshold": 0.7, "fake_fraction": 0.3}}, folder / "deepfake_MRI_weights.chkpt")
    generator = Generator(ngf=8)
    generator.apply(init_weights)
    torch.save({"generator_state_dict": generator.state_dict()}, folder / "MRI_GAN_weights.chkpt")
    return folder


@pytest.hookimpl(trylast=True)  # after `-m "not gpu"` has deselected them in a default run
def pytest_collection_modifyitems(config, items):
    """`pytest -m gpu` on a machine without a usable GPU skips the GPU tests with the reason, instead of failing."""
    from utils.runtime import cuda_problem

    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    reason = None if torch.cuda.is_available() else "no CUDA device"
    reason = cuda_problem() or reason
    if reason:
        for item in gpu_tests:
            item.add_marker(pytest.mark.skip(reason=f"GPU test: {reason}"))


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM (munged, slurmctld, slurmd) started by cluster/local_slurm.sh for the session, or
    the one already running in LOCAL_SLURM_DIR; the environment for sbatch & co. (SLURM_CONF). Without Debian's
    slurm-wlm and munge the `slurm` tests are skipped, except under CI=true, where that is a failure."""
    if not (shutil.which("slurmctld") and shutil.which("munged")):
        message = "SLURM is not installed (apt-get install slurm-wlm munge)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    folder = os.environ.get("LOCAL_SLURM_DIR", "/tmp/mri_gan_slurm")
    env = {**os.environ, "LOCAL_SLURM_DIR": folder}
    script = ["bash", str(PROJECT_ROOT / "cluster" / "local_slurm.sh")]
    was_running = subprocess.run([*script, "status"], env=env, capture_output=True).returncode == 0
    started = subprocess.run([*script, "start"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    yield {**env, "SLURM_CONF": f"{folder}/slurm.conf"}
    if not was_running:
        subprocess.run([*script, "stop"], env=env, capture_output=True, timeout=120)
