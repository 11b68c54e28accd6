"""The command-line scripts: --help works, the original flags are accepted, bad input gives one line."""
import subprocess
import sys

import pytest

from utils.config import PROJECT_ROOT

SCRIPTS = ["data_preprocess.py", "train_MRI_GAN.py", "deep_fake_detect.py", "detect_deepfake_app.py", "demo.py",
           "gen_plots.py", "compare_MRI_GANs.py"]


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_runs(script):
    result = _run(script, "--help")
    assert result.returncode == 0
    assert "--config" in result.stdout and "--set" in result.stdout


def test_original_flags_are_accepted():
    help_text = _run("data_preprocess.py", "--help").stdout
    for flag in ["--apply_aug_to_sample", "--gen_aug_plan", "--apply_aug_to_all", "--extract_landmarks",
                 "--crop_faces", "--gen_mri_dataset", "--gen_dfdc_mri", "--gen_deepfake_metadata"]:
        assert flag in help_text
    assert "--test_saved_model" in _run("deep_fake_detect.py", "--help").stdout
    app_help = _run("detect_deepfake_app.py", "--help").stdout
    assert "--input_videofile" in app_help and "plain_frames" in app_help


def test_missing_step_flag_is_a_usage_error():
    result = _run("data_preprocess.py")
    assert result.returncode == 2
    assert "choose at least one step flag" in result.stderr


@pytest.mark.parametrize("name", ["empty", "truncated", "text"])
def test_app_rejects_broken_videos_in_one_line(broken_files, name):
    result = _run("detect_deepfake_app.py", "--input_videofile", str(broken_files[name]), "--method", "MRI")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(broken_files[name]) in lines[0]
    assert "Traceback" not in result.stderr


def test_app_missing_file(tmp_path):
    result = _run("detect_deepfake_app.py", "--input_videofile", str(tmp_path / "nope.mp4"), "--method", "MRI")
    assert result.returncode == 2
    assert result.stderr.strip().endswith("nope.mp4: file not found")
