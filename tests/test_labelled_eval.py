"""detect_deepfake_app.py --input_dir DIR --labels FILE: the label formats, matching, metrics equal to the classifier
test's on the same probabilities, resume after SIGKILL, the MRI-GAN leakage guard and its exclusion switch."""
from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import make_face_video
from utils.config import PROJECT_ROOT, load_config
from utils.demo.synthetic import background, face_frames, make_celeb_df, swapped_photo, write_video
from utils.errors import ConfigError
from utils.evaluation.classifier_report import video_report
from utils.evaluation.label_files import match_videos, read_labels
from utils.evaluation.metrics import frame_metrics
from utils.infer.rule import Thresholds
from utils.preprocess.mri_dataset import pair_groups


def app(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "detect_deepfake_app.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


# --- label formats ----------------------------------------------------------------------------------------


def test_csv_labels_take_real_fake_words_or_numbers(tmp_path):
    words = tmp_path / "words.csv"
    words.write_text("filename,label\na.mp4,REAL\nsub/b.mp4,FAKE\n")
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("path,is_fake\n./a.mp4,0\nsub/b.mp4,1\n")
    for path in (words, numbers):
        labels = read_labels(path)
        assert labels.format == "csv" and labels.by_key == {"a.mp4": 0, "sub/b.mp4": 1}


def test_celeb_df_test_list_writes_1_for_real_and_0_for_fake(tmp_path):
    listed = tmp_path / "List_of_testing_videos.txt"
    listed.write_text("1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n1 YouTube-real/00170.mp4\n")
    labels = read_labels(listed)
    assert labels.format == "celeb_df_v2_test_list"
    assert labels.by_key == {"Celeb-real/id0_0000.mp4": 0, "Celeb-synthesis/id0_id1_0000.mp4": 1,
                             "YouTube-real/00170.mp4": 0}


def test_dfdc_metadata_json_labels(tmp_path):
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"aaa.mp4": {"label": "FAKE", "original": "bbb.mp4", "split": "train"},
                                "bbb.mp4": {"label": "REAL", "split": "train"}}))
    labels = read_labels(meta)
    assert labels.format == "dfdc_metadata" and labels.by_key == {"aaa.mp4": 1, "bbb.mp4": 0}


@pytest.mark.parametrize("content", ["just some text\n", "path,score\na.mp4,0.3\n", "filename,label\na.mp4,maybe\n",
                                     '{"a.mp4": 1}'])
def test_a_file_in_no_known_format_is_one_config_error_naming_it(tmp_path, content):
    path = tmp_path / "labels.txt"
    path.write_text(content)
    with pytest.raises(ConfigError, match="labels.txt"):
        read_labels(path)


def test_videos_without_labels_and_labels_without_videos_are_listed_not_guessed(tmp_path):
    for name in ("real/a.mp4", "fake/b.mp4", "extra/c.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    labels_file = tmp_path / "labels.csv"
    labels_file.write_text("path,label\nreal/a.mp4,0\nb.mp4,1\nfake/gone.mp4,1\n")
    videos = sorted(tmp_path.rglob("*.mp4"))
    matched = match_videos(videos, tmp_path, read_labels(labels_file))
    assert {v.relative_to(tmp_path).as_posix(): label for v, label in matched.labels.items()} == \
        {"real/a.mp4": 0, "fake/b.mp4": 1}  # a bare file name matches when it is unique
    assert [v.name for v in matched.unlabelled] == ["c.mp4"] and matched.missing == ["fake/gone.mp4"]


# --- the app on a labelled folder -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """2 real and 2 fake face videos, a face-less 'real' video, a video without a label, a label without a video."""
    root = tmp_path_factory.mktemp("labelled")
    rows = []
    for i, face in enumerate(("astronaut", "grace_hopper")):
        make_face_video(root / "real" / f"r{i}.mp4", face, 160, 120, n_frames=12, seed=i)
        rows.append((f"real/r{i}.mp4", "REAL"))
    for i, (target, source) in enumerate((("astronaut", "grace_hopper"), ("grace_hopper", "astronaut"))):
        photo = swapped_photo(target, source, seed=i)
        frames = [frame for frame, _ in face_frames(photo, 160, 120, 12, seed=10 + i)]
        write_video(root / "fake" / f"f{i}.mp4", frames)
        rows.append((f"fake/f{i}.mp4", "FAKE"))
    rng = np.random.default_rng(0)
    write_video(root / "real" / "empty_room.mp4", [background(160, 120, rng) for _ in range(12)])
    rows.append(("real/empty_room.mp4", "REAL"))
    make_face_video(root / "unlabelled" / "u.mp4", "astronaut", 160, 120, n_frames=12, seed=5)
    rows.append(("fake/not_here.mp4", "FAKE"))
    labels = root.parent / f"{root.name}_labels.csv"
    labels.write_text("path,label\n" + "".join(f"{path},{label}\n" for path, label in rows))
    return root, labels


@pytest.fixture(scope="module")
def scored(folder, app_weights, tmp_path_factory):
    root, labels = folder
    out = tmp_path_factory.mktemp("scored")
    result = app("--input_dir", root, "--labels", labels, "--method", "plain_frames", "--weights_dir", app_weights,
                 "--device", "cpu", "--output_json", out / "metrics.json", "--output_csv", out / "videos.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.slow  # scored: runs detect_deepfake_app.py
def test_labelled_run_writes_rows_counts_and_both_levels_of_metrics(scored):
    out, result = scored
    report = json.loads((out / "metrics.json").read_text())
    assert report["labels"]["format"] == "csv"
    assert report["videos"]["labelled"] == report["videos"]["scored"] == 5
    assert report["videos"]["unlabelled"] == 1 and report["videos"]["missing_videos"] == ["fake/not_here.mp4"]
    assert report["video"]["n"] == 5 and report["video"]["n_no_face"] == 1
    assert [Path(path).name for path in report["video"]["no_face_videos"]] == ["empty_room.mp4"]
    for level in ("frame", "video"):
        assert {"accuracy", "balanced_accuracy", "roc_auc", "average_precision", "f1", "log_loss", "eer", "tp",
                "fp", "tn", "fn"} <= set(report[level])
    assert report["thresholds"]["fake_threshold_source"] == "config"  # never tuned on this set
    paper = report["paper"]  # the paper's protocol beside ours: tuned on this set, the face-less video dropped
    assert paper["n_videos"] == 4 and paper["n_dropped_no_face"] == 1 and "not a held-out one" in paper["note"]
    assert paper["thresholds"]["source"].startswith("grid search on the test split")
    rows = list(csv.DictReader((out / "videos.csv").open()))
    assert [Path(row["path"]).name for row in rows] == ["f0.mp4", "f1.mp4", "empty_room.mp4", "r0.mp4", "r1.mp4"]
    empty = next(row for row in rows if row["path"].endswith("empty_room.mp4"))
    assert (empty["status"], empty["n_faces"], empty["face_probabilities"]) == ("no_face", "0", "")
    lines = result.stderr.strip().splitlines()
    assert lines[-2].split()[:3] == ["method", "videos", "no_face"]
    assert lines[-1].split()[:3] == ["plain_frames", "5", "1"]


@pytest.mark.slow  # scored: runs detect_deepfake_app.py
def test_metrics_equal_the_classifier_tests_on_the_same_probabilities(scored):
    """The same per-face probabilities through deep_fake_detect.py --test_saved_model's own report functions."""
    out, _ = scored
    report = json.loads((out / "metrics.json").read_text())
    rows = pd.read_csv(out / "videos.csv", keep_default_na=False)
    faces = pd.DataFrame([(row.path, int(row.label), float(p)) for row in rows.itertuples()
                          for p in str(row.face_probabilities).split()], columns=["video_id", "label", "probability"])
    videos = pd.DataFrame({"video_id": rows["path"], "label": rows["label"].astype(int),
                           "n_faces": rows["n_faces"].astype(int), "status": rows["status"]})
    thresholds = report["thresholds"]
    _, expected_video = video_report(faces, videos, Thresholds(thresholds["fake_threshold"],
                                                               thresholds["fake_fraction"]))
    expected_frame = frame_metrics(faces["label"], faces["probability"])
    for ours, expected in ((report["video"], expected_video), (report["frame"], expected_frame)):
        for key, value in expected.items():
            if isinstance(value, float) and math.isnan(value):
                assert ours[key] is None, key
            elif isinstance(value, float):
                assert ours[key] == pytest.approx(value, abs=1e-9), key
            else:
                assert ours[key] == value, key


@pytest.mark.slow  # runs detect_deepfake_app.py
def test_a_run_killed_mid_way_resumes_to_the_same_csv(folder, app_weights, scored, tmp_path):
    root, labels = folder
    partial = tmp_path / "videos.csv"
    args = [sys.executable, str(PROJECT_ROOT / "detect_deepfake_app.py"), "--input_dir", str(root), "--labels",
            str(labels), "--method", "plain_frames", "--weights_dir", str(app_weights), "--device", "cpu",
            "--output_csv", str(partial)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if partial.is_file() and len(partial.read_text().splitlines()) >= 3:  # header and two videos done
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = len(partial.read_text().splitlines()) - 1
    resumed = app(*args[2:])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{done} video(s) already in" in resumed.stderr
    reference = (scored[0] / "videos.csv").read_text()
    assert partial.read_text() == reference


@pytest.mark.slow  # runs detect_deepfake_app.py
def test_celeb_df_test_videos_in_the_mri_gans_training_data_are_reported_loudly(app_weights, tmp_path):
    root = tmp_path / "Celeb-DF-v2"
    make_celeb_df(root, n_frames=6, size=(160, 120), seed=3)
    test_list = root / "List_of_testing_videos.txt"
    test_list.write_text("1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n")
    pairs = tmp_path / "mri_dataset_fake_train.csv"
    pairs.write_text("face_image,mri_image,class,video_id,group\nx.png,y.png,fake,id0_id1_0000,celeb_df_v2:id0\n")
    result = app("--input_dir", root, "--labels", test_list, "--method", "plain_frames", "--weights_dir", app_weights,
                 "--device", "cpu", "--mri_gan_pairs", pairs, "--output_json", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "WARNING: LEAKAGE: 1 of the 2 Celeb-DF-v2 test videos" in result.stderr
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["mri_gan_leakage"]["in_mri_gan_training"] == 1
    assert report["videos"]["labelled"] == 2 and report["videos"]["unlabelled"] == 2


def test_gen_mri_dataset_can_leave_the_celeb_df_test_list_out(tmp_path):
    dirs = make_celeb_df(tmp_path / "celeb", n_frames=2, size=(64, 48), seed=1)
    test_list = tmp_path / "List_of_testing_videos.txt"
    test_list.write_text("1 Celeb-real/id0_0000.mp4\n")  # a listed real takes its fakes out with it
    base = [f"data_path.celeb_df_v2.real={dirs['real']}", f"data_path.celeb_df_v2.fake={dirs['fake']}",
            f"assets={tmp_path / 'assets'}"]
    every = pair_groups(load_config(None, base), ["celeb_df_v2"])
    kept = pair_groups(load_config(None, [*base, f"data_path.celeb_df_v2.exclude_from_mri_gan={test_list}"]),
                       ["celeb_df_v2"])
    names = lambda groups: {p.name for g in groups for p in (g.real, *g.fakes)}  # noqa: E731
    assert names(every) == {"id0_0000.mp4", "id0_id1_0000.mp4", "id1_0000.mp4", "id1_id0_0000.mp4"}
    assert names(kept) == {"id1_0000.mp4", "id1_id0_0000.mp4"}
    bad = tmp_path / "not_a_list.txt"
    bad.write_text("hello\n")
    with pytest.raises(ConfigError, match="exclude_from_mri_gan"):
        pair_groups(load_config(None, [*base, f"data_path.celeb_df_v2.exclude_from_mri_gan={bad}"]), ["celeb_df_v2"])
