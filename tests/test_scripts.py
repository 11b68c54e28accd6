"""The command-line scripts: --help works, the original flags are accepted, bad input gives one line."""
import os
import subprocess
import sys

import pytest

from utils.config import PROJECT_ROOT

SCRIPTS = ["data_preprocess.py", "train_MRI_GAN.py", "deep_fake_detect.py", "detect_deepfake_app.py", "demo.py",
           "gen_plots.py", "compare_MRI_GANs.py"]
pytestmark = pytest.mark.slow  # every test runs a script or a Python program in a child process


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


FAST_EXIT_PROGRAM = """
import atexit, logging, sys
from pathlib import Path
from utils.cli import run
from utils.errors import NoFaceError

out = Path(sys.argv[1])

class Witness:  # freed only by the interpreter's teardown
    def __del__(self):
        (out / "teardown").write_text("ran")

WITNESS = Witness()

def main():
    atexit.register(lambda: (out / "atexit").write_text("ran"))
    logging.getLogger().addHandler(logging.FileHandler(out / "run.log"))
    logging.getLogger().warning("logged")
    print("x" * 100000)  # more than one buffer of stdout, still in the buffer when main returns
    raise NoFaceError("no face found")

run(main, fast_exit=sys.argv[2] == "fast")
"""


@pytest.mark.parametrize("mode", ["fast", "normal"])
def test_fast_exit_skips_only_the_teardown(tmp_path, mode):
    """The app ends with utils.cli.exit_now: same exit code, stdout and stderr delivered, atexit handlers and log
    files done; only the freeing of objects at teardown is skipped (what it saves is measured in
    docs/performance.md#start-up)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as in a pipe
    result = subprocess.run([sys.executable, "-c", FAST_EXIT_PROGRAM, str(tmp_path), mode], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 3
    assert result.stdout == "x" * 100000 + "\n"
    assert result.stderr == "-c: no face found\n"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "run.log").read_text() == "logged\n"
    assert (tmp_path / "teardown").exists() == (mode == "normal")
