"""End to end: demo.py's quick profile runs every real script in order on generated data (the CI version of
`make demo`), writes its report, and a second run skips every finished step."""
import json
import subprocess
import sys

import pytest

from utils.config import PROJECT_ROOT
from utils.demo.steps import PROFILES, STEPS

pytestmark = pytest.mark.slow  # the whole chain of scripts, end to end


def _demo(out):
    return subprocess.run([sys.executable, "demo.py", "--profile", "quick", "--out", str(out), "--device", "cpu"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1200)


@pytest.mark.timeout(1200)
def test_quick_demo_runs_the_whole_chain_and_resumes(tmp_path):
    out = tmp_path / "demo"
    first = _demo(out)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "Traceback" not in first.stderr
    report = json.loads((out / "demo_results.json").read_text())
    assert list(report["step_seconds"]) == [step.name for step in STEPS]
    n_test_videos = 2 * PROFILES["quick"]["videos"]["test"]
    for method in ("plain_frames", "MRI"):
        info = report["methods"][method]
        assert info["app_videos"] == n_test_videos
        assert 0 <= info["app_correct"] <= n_test_videos - info["app_no_verdict"]
        video, paper = info["test"]["video"], info["test"]["paper"]
        assert 0.0 <= video["accuracy"] <= 1.0
        assert paper["n_videos"] + paper["n_dropped_no_face"] == video["n"]  # the paper's protocol beside ours
    evidence = json.loads((out / "app_one_video.json").read_text())
    assert evidence["verdict"] in ("real", "fake") and evidence["faces"]
    assert (out / "app_mri" / "montage.png").stat().st_size > 0
    assert "synthetic" in first.stdout and "test split" in first.stdout
    printed = first.stdout.split("=== demo results")[-1]  # the steps' own output comes before
    assert "both protocols" in printed and printed.count(" paper ") == 2  # one row per method

    second = _demo(out)  # everything is done: every step is skipped, the report is printed again
    assert second.returncode == 0, second.stderr[-4000:]
    assert second.stdout.count("skipped") == len(STEPS)

    # as if the demo had been killed during the two training steps: they resume from their periodic checkpoints
    state = json.loads((out / "demo_state.json").read_text())
    for name in ("mri_gan", "classifier_plain"):
        del state["seconds"][name]
    (out / "demo_state.json").write_text(json.dumps(state))
    third = _demo(out)
    assert third.returncode == 0, third.stdout[-4000:] + third.stderr[-4000:]
    assert third.stdout.count("resuming from") == 2 and third.stdout.count("skipped") == len(STEPS) - 2
    again = json.loads((out / "demo_results.json").read_text())
    assert again["methods"]["plain_frames"]["metrics_file"] != report["methods"]["plain_frames"]["metrics_file"]
    assert again["methods"]["plain_frames"]["test"]["frame"] == report["methods"]["plain_frames"]["test"]["frame"]
    assert len(list((out / "work" / "logs" / "mri_gan").glob("*/MRI_GAN"))) == 1  # continued in place
