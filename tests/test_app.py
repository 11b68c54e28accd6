"""detect_deepfake_app.py with small random-weight models saved as checkpoints: verdicts, JSON, folders, errors."""
import csv
import io
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import VIDEO_H, VIDEO_W

from tests.helpers import original_classifier_checkpoint
from utils.config import PROJECT_ROOT, load_config
from utils.demo.synthetic import background, write_video
from utils.infer.detect import Detector, FaceStream
from utils.infer.generator import predict_mris
from utils.media.faces import crop_face
from utils.media.video import SampledFrames
from utils.runtime import choose_precision

VERDICT = re.compile(r"^The video is (REAL|DEEP-FAKE), probability=\d+(\.\d+)?%  \[(plain_frames|MRI): "
                     r"\d+ of \d+ faces fake; fake_threshold [\d.]+, fake_fraction [\d.]+ \(.+\)\]$")


@pytest.fixture(scope="module")
def weights(app_weights):
    return app_weights


@pytest.fixture(scope="module")
def mri_detector(weights):
    return Detector.from_weights(load_config(), "MRI", torch.device("cpu"), weights)


def app(*args):
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "detect_deepfake_app.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # runs detect_deepfake_app.py
@pytest.mark.parametrize("method, precision", [("plain_frames", "fp32"), ("MRI", None)])
def test_verdict_line_and_json(weights, face_video, tmp_path, method, precision):
    report = tmp_path / "report.json"
    result = app("--input_videofile", face_video, "--method", method, "--weights_dir", weights,
                 "--output_json", report, *(["--precision", precision] if precision else []))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and VERDICT.match(lines[0]), lines
    data = json.loads(report.read_text())
    assert data["method"] == method and data["status"] == "ok"
    assert data["verdict"] in ("fake", "real") and 0 <= data["probability"] <= 1
    assert set(data["models"]) == ({"classifier", "generator"} if method == "MRI" else {"classifier"})
    assert all(len(m["sha256"]) == 64 for m in data["models"].values())
    assert {"import_s", "model_load_s", "faces_s", "classify_s", "total_s"} <= set(data["timings"])
    assert data["precision"]["name"] == (precision or choose_precision("auto", "cpu").name)
    assert [f["frame"] for f in data["faces"]] == [0, 10, 20]  # every 10th of 30 frames, one face each
    for face in data["faces"]:
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= VIDEO_W and 0 <= y1 < y2 <= VIDEO_H
        assert face["timestamp"] == pytest.approx(face["frame"] / 10.0)
        assert len(face["landmarks"]) == 5 and 0 <= face["fake_probability"] <= 1
    if method == "MRI":  # thresholds exported with the classifier win over the config
        assert data["thresholds"]["fake_threshold"] == 0.7
        assert data["thresholds"]["fake_threshold_source"].startswith("validation-tuned")
    else:
        assert data["thresholds"]["fake_threshold_source"] == "config"


def test_verdict_follows_the_shared_video_rule(mri_detector, face_video):
    result = mri_detector.classify(face_video)
    probs = np.array([f.fake_probability for f in result.faces])
    n_fake = int((probs > 0.7).sum())
    assert result.n_fake == n_fake
    assert result.verdict == ("fake" if n_fake >= 0.3 * len(probs) else "real")
    if result.verdict == "fake":
        assert result.probability == round(float(probs[probs > 0.7].mean()), 4)
        assert result.verdict_line().startswith("The video is DEEP-FAKE, probability=")
    else:
        assert result.probability == round(1 - float(probs[probs <= 0.7].mean()), 4)


@pytest.mark.slow  # detects and classifies every frame (~5 s)
def test_streaming_in_small_batches_gives_the_whole_video_results(weights, face_video, tmp_path, monkeypatch):
    """30 faces flow through in batches of 6, detected at most 2 faces ahead (MTCNN in batches of 4 frames): the
    same records, MRIs and probabilities as detecting every frame, then generating and classifying all faces."""
    import utils.infer.detect as detect

    cfg = load_config(overrides=["runtime.precision=fp32", "faces.frame_step=1", "faces.batch_size=4"])
    detector = Detector.from_weights(cfg, "MRI", torch.device("cpu"), weights)
    monkeypatch.setattr(detect, "FACE_BATCH", 6)
    with (SampledFrames(face_video, 1, ahead=1) as frames,
          FaceStream(detector.face_detector, frames, 0.1, ahead=2) as faces):
        result = detector.classify(face_video, save_mri=tmp_path / "mri", faces=faces)

    records, crops = [], []
    for index, frame, found in detector.face_detector.detect_video(face_video, 1):
        for face_index, face in enumerate(found):
            crops.append(crop_face(frame, face.box))
            records.append((index, face_index, [round(v, 2) for v in face.box]))
    mris = predict_mris(detector.generator, crops, "cpu", 6)  # the generator's batches as streamed
    probs = detector._scores(mris)
    assert len(records) == 30 and [(f.frame, f.face, f.box) for f in result.faces] == records
    assert [f.fake_probability for f in result.faces] == pytest.approx(probs.tolist(), abs=1e-6)
    for (frame, face, _), mri in zip(records, mris):  # written as they came, identical to the whole-video MRIs
        assert np.array_equal(cv2.imread(str(tmp_path / "mri" / f"{frame}_{face}.png"))[..., ::-1], mri)
    assert cv2.imread(str(tmp_path / "mri" / "montage.png")).shape == (256, 128 * 16, 3)  # the first 16 faces


@pytest.fixture
def detected(monkeypatch) -> list:
    """The record of each face as FaceStream's detection thread produces it."""
    import utils.infer.detect as detect

    produce = detect.detected_faces

    def counted(*args):
        for record, crop in produce(*args):
            produced.append(record)
            yield record, crop

    produced = []
    monkeypatch.setattr(detect, "detected_faces", counted)
    return produced


def test_faces_detected_before_the_models_give_the_same_result(mri_detector, face_video, detected):
    """The app starts detecting its video's faces before the classifier loads (FaceStream): faces detected
    ahead, before classify is called, give the very result of detecting as classify goes."""
    with (SampledFrames(face_video, mri_detector.step, ahead=64) as frames,
          FaceStream(mri_detector.face_detector, frames, mri_detector.margin) as faces):
        deadline = time.monotonic() + 60
        while len(detected) < 3 and time.monotonic() < deadline:  # the clip's 3 sampled frames, a face each
            time.sleep(0.05)
        assert len(detected) == 3  # detected with nobody asking
        ahead = mri_detector.classify(face_video, faces=faces)
    as_it_goes = mri_detector.classify(face_video)
    assert ahead.n_faces == 3 and ahead.faces == as_it_goes.faces
    assert (ahead.verdict, ahead.probability) == (as_it_goes.verdict, as_it_goes.probability)
    with (SampledFrames(face_video, mri_detector.step + 1, ahead=2) as frames,
          FaceStream(mri_detector.face_detector, frames, 0.1) as faces, pytest.raises(ValueError, match="every")):
        mri_detector.classify(face_video, faces=faces)


@pytest.mark.slow  # ~1.8 s of face detection
def test_face_stream_stays_within_its_bound(mri_detector, face_video, detected):
    with (SampledFrames(face_video, 1, ahead=1) as frames,
          FaceStream(mri_detector.face_detector, frames, 0.1, ahead=2) as faces):
        deadline = time.monotonic() + 60
        while len(detected) < 2 + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)  # time enough to detect many more of the 30 frames, were it allowed to
        assert len(detected) == 2 + 1  # 2 waiting, and the thread holds the third until one is taken
        assert len(list(faces)) == 30


@pytest.mark.slow  # a child Python process
def test_the_app_imports_no_torch_before_its_video_decodes():
    """A single video starts decoding before torch is imported: the app's own imports leave torch out."""
    code = "import sys, detect_deepfake_app; print('torch' in sys.modules, 'cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_no_weights_file_stays_mapped_once_the_models_are_loaded(weights, precision):
    """bf16 maps the generator's file only to cast its weights; fp32 reads it. Either way, nothing stays mapped
    to a file that a user may overwrite (cp onto it) while the app runs."""
    detector = Detector.from_weights(load_config(overrides=[f"runtime.precision={precision}"]), "MRI",
                                     torch.device("cpu"), weights)
    assert detector.generator is not None
    maps = Path("/proc/self/maps").read_text()
    assert not [name for name in weights.iterdir() if str(name.resolve()) in maps]


@pytest.mark.slow  # runs detect_deepfake_app.py
def test_command_line_thresholds_override(weights, face_video):
    result = app("--input_videofile", face_video, "--method", "plain_frames", "--weights_dir", weights,
                 "--fake_threshold", "0.999", "--fake_fraction", "0.5")
    assert result.returncode == 0
    assert result.stdout.startswith("The video is REAL")
    assert "fake_threshold 0.999, fake_fraction 0.5 (command line)" in result.stdout


def test_save_mri_writes_each_mri_and_a_montage(mri_detector, face_video, tmp_path):
    result = mri_detector.classify(face_video, save_mri=tmp_path / "mri")
    names = sorted(p.name for p in (tmp_path / "mri").iterdir())
    assert names == ["0_0.png", "10_0.png", "20_0.png", "montage.png"]
    montage = cv2.imread(str(tmp_path / "mri" / "montage.png"))
    assert montage.shape == (256, 128 * result.n_faces, 3)
    assert cv2.imread(str(tmp_path / "mri" / "0_0.png")).shape == (256, 256, 3)


@pytest.mark.slow  # runs detect_deepfake_app.py twice
def test_the_original_authors_mri_classifier_gets_the_original_rendering_unless_told_otherwise(weights, face_video,
                                                                                               tmp_path):
    """Without a flag, the app renders MRIs the original way for a classifier in the original's layout and says so
    in one line; --mri_rendering default renders them ours, and the app warns that the classifier was trained on
    MRIs rendered the other way."""
    shutil.copytree(weights, tmp_path / "weights")
    classifier = tmp_path / "weights" / "deepfake_MRI_weights.chkpt"
    original_classifier_checkpoint(classifier, torch.load(classifier, weights_only=True)["model_state_dict"])
    runs = {}
    for rendering, flags in (("original", []), ("default", ["--mri_rendering", "default"])):
        result = app("--input_videofile", face_video, "--method", "MRI", "--weights_dir", tmp_path / "weights",
                     "--precision", "fp32", "--save_mri", tmp_path / rendering,
                     "--output_json", tmp_path / f"{rendering}.json", *flags)
        assert result.returncode == 0, result.stderr
        report = json.loads((tmp_path / f"{rendering}.json").read_text())
        assert report["models"]["generator"]["rendering"] == rendering
        runs[rendering] = result.stderr.splitlines()
    said = [line for line in runs["original"] if "original authors' MRI classifier" in line]
    assert len(said) == 1 and said[0].startswith(f"{classifier.resolve()} is the original authors' MRI classifier")
    assert not [line for line in runs["default"] if "original authors'" in line]
    assert len([line for line in runs["default"] if "trained on MRIs rendered the original way, but the app's MRIs "
                                                      "are rendered the default way" in line]) == 1
    for name in ("0_0.png", "10_0.png", "20_0.png"):
        ours = cv2.imread(str(tmp_path / "default" / name)).astype(int)
        theirs = cv2.imread(str(tmp_path / "original" / name)).astype(int)
        # ours = round((x + 1) / 2 * 255), theirs = x * 255 clamped at 0: theirs = 2 * ours - 255 clamped, within 2
        assert np.abs(theirs - np.clip(2 * ours - 255, 0, 255)).max() <= 2 and not np.array_equal(ours, theirs)


@pytest.mark.slow  # runs detect_deepfake_app.py
def test_folder_mode_scores_every_video_and_survives_broken_files(weights, face_video, broken_files, tmp_path):
    folder = tmp_path / "videos"
    (folder / "nested").mkdir(parents=True)
    (folder / "a.mp4").write_bytes(face_video.read_bytes())
    (folder / "nested" / "broken.mp4").write_bytes(broken_files["truncated"].read_bytes())
    (folder / "notes.txt").write_text("not a video, not listed")
    report = tmp_path / "all.json"
    result = app("--input_dir", folder, "--method", "plain_frames", "--weights_dir", weights, "--output_json", report)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["a.mp4", "broken.mp4"]
    assert rows[0]["status"] == "ok" and rows[0]["verdict"] in ("fake", "real") and rows[0]["n_faces"] == "3"
    assert rows[1]["status"] == "error" and "truncated or corrupt" in rows[1]["error"]
    assert len(json.loads(report.read_text())["videos"]) == 2
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # runs detect_deepfake_app.py
@pytest.mark.parametrize("name", ["empty", "truncated", "text"])
def test_broken_inputs_exit_2_in_one_line(weights, broken_files, name):
    result = app("--input_videofile", broken_files[name], "--method", "MRI", "--weights_dir", weights)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.slow  # runs detect_deepfake_app.py
def test_no_face_exits_3_with_status_in_json(weights, tmp_path):
    rng = np.random.default_rng(0)
    video = write_video(tmp_path / "empty_room.mp4", [background(160, 120, rng) for _ in range(12)])
    report = tmp_path / "r.json"
    result = app("--input_videofile", video, "--method", "plain_frames", "--weights_dir", weights,
                 "--output_json", report)
    assert result.returncode == 3
    assert result.stderr.strip() == f"detect_deepfake_app.py: no face found in any sampled frame of {video}"
    data = json.loads(report.read_text())
    assert data["status"] == "no_face" and data["verdict"] is None and data["faces"] == []


@pytest.mark.slow  # runs detect_deepfake_app.py
@pytest.mark.parametrize("args, message", [
    (["--weights_dir", "{tmp}/nowhere"], "deepfake_MRI_weights.chkpt: weights not found; train and export them "
                                         "with deep_fake_detect.py --train_from_scratch --export (dataset mri)"),
    (["--fake_threshold", "1.5"], "--fake_threshold must be between 0 and 1"),
])
def test_bad_settings_exit_2(face_video, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = app("--input_videofile", face_video, "--method", "MRI", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
