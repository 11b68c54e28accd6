"""deep_fake_detect.py end to end on a tiny classifier data set: training, validation-tuned thresholds, test files,
exact resume, --test_saved_model, --export for the app, one-line errors, and runs over two processes and two
"nodes" (gloo on 127.0.0.1). Random-init EfficientNet-B0, CPU."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import (
    free_port,
    rehearse_on_two_nodes,
    run_folders,
    run_script,
    run_together,
    set_flags,
    srun_environment,
    torchrun_two_processes,
)
from utils.checkpoint import read_checkpoint
from utils.config import PROJECT_ROOT, load_config
from utils.demo.synthetic import PEOPLE, face_photo, swapped_photo
from utils.errors import Interrupted, exit_code
from utils.evaluation.metrics import grid_search
from utils.fileio import write_json, write_png
from utils.infer.provenance import RENDERING_KEY, SHA_KEY, sidecar
from utils.media.mri import compute_mri
from utils.train.classifier_training import train
from utils.train.distributed import DistContext
from utils.train.tensorboard import CLASSIFIER_EPOCH_TAGS

SCRIPT, RUN_FOLDER = "deep_fake_detect.py", "deep_fake"
SIDE = 72  # image side on disk; the classifier resizes to 224
FRAMES = {"train": 3, "valid": 2, "test": 2}  # face images per video with faces
TINY = ["deep_fake.training.model_params.encoder_weights=none", "deep_fake.training.model_params.batch_size=4",
        "deep_fake.training.model_params.epochs=2", "deep_fake.training.model_params.chkpt_freq=2",
        "runtime.loader_workers=0", "runtime.device=cpu"]
MRI_CSVS = {f"features.dfdc.{split}_mriframe_label": f"{split}_mriframe_labels.csv" for split in FRAMES}
OUTPUTS = ("metrics.json", "video_predictions.csv", "frame_predictions.csv", "roc_frame.png", "roc_video.png")
# every test trains, runs deep_fake_detect.py, or reads the outputs of a training shared by the module (plain_run)
pytestmark = pytest.mark.slow


# --- a tiny data set, in the layout data_preprocess.py --gen_deepfake_metadata writes ------------------------


def face_image(person: int, fake: bool, seed: int) -> np.ndarray:
    """A face crop: the real person's photo, or the same photo with the other person's face swapped in."""
    rng = np.random.default_rng(seed)
    target, source = PEOPLE[person], PEOPLE[1 - person]
    photo = swapped_photo(target, source, seed) if fake else face_photo(target)
    image = cv2.resize(photo, (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    return np.clip(image * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)


def write_split(folder: Path, split: str, seed: int) -> None:
    """Two real and two fake videos with faces, plus one fake video where no face was found. Plain crops go to
    crops/<split>/<video>/<frame>.png, their MRIs (SSIM difference to the real face) to mri/<split>/..., and each
    kind gets a frame-label CSV and a per-video CSV under assets/."""
    frames, videos = [], []
    for index in range(4):
        fake, person = index % 2 == 1, (index // 2) % 2
        video_id = f"{split}_{'fake' if fake else 'real'}_{index}"
        for number in range(FRAMES[split]):
            name, image_seed = f"{number * 10}_0.png", seed * 100 + index * 10 + number
            image, real = face_image(person, fake, image_seed), face_image(person, False, image_seed)
            write_png(folder / "crops" / split / video_id / name, image)
            write_png(folder / "mri" / split / video_id / name, compute_mri(real, image))
            frames.append((video_id, name, int(fake)))
        videos.append((video_id, int(fake), FRAMES[split], "ok"))
    videos.append((f"{split}_noface", 1, 0, "no_face"))
    for kind, csv_name in (("plain", f"{split}_frame_labels"), ("mri", f"{split}_mriframe_labels")):
        (folder / "crops" / split / f"{split}_noface").mkdir(parents=True, exist_ok=True)
        (folder / "mri" / split / f"{split}_noface").mkdir(parents=True, exist_ok=True)
        pd.DataFrame(frames, columns=["video_id", "frame", "label"]).to_csv(folder / "assets" / f"{csv_name}.csv",
                                                                            index=False)
        pd.DataFrame(videos, columns=["video_id", "label", "n_faces", "status"]).to_csv(
            folder / "assets" / f"{csv_name}_videos.csv", index=False)


def make_classifier_data(folder: Path) -> Path:
    """Every split of write_split under `folder`, and its assets/ folder; returns `folder`."""
    (folder / "assets").mkdir()
    for seed, split in enumerate(FRAMES):
        write_split(folder, split, seed)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_classifier_data(tmp_path_factory.mktemp("classifier_data"))


def settings(data: Path, logs: Path, *extra: str) -> list[str]:
    paths = [f"assets={data / 'assets'}", f"logging.root_log_dir={logs}"]
    for split in FRAMES:
        paths += [f"features.dfdc.crop_faces.{split}={data / 'crops' / split}",
                  f"features.dfdc.{split}_mrip2p_faces={data / 'mri' / split}"]
    return [*paths, *TINY, *extra]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def plain_run(data, tmp_path_factory) -> Path:
    """--train_from_scratch on plain crops: 2 epochs of 3 steps, periodic checkpoint every 2 steps."""
    logs = tmp_path_factory.mktemp("plain_logs")
    result = run_script(SCRIPT, "--train_from_scratch",
                        *set_flags(settings(data, logs, "deep_fake.training.model_params.dataset=plain")),
                        timeout=600)  # a shared, loaded CI machine can take minutes
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = run_folders(logs, RUN_FOLDER)
    return run_dir


# --- training and test outputs ---------------------------------------------------------------------------


def test_run_folder_holds_logs_curves_and_checkpoints(plain_run):
    for name in ("checkpoint.chkpt", "highest_acc.chkpt", "lowest_loss.chkpt", "train_steps.csv", "epochs.csv",
                 "plots/train_steps.png", "plots/epochs.png", "validation/grid_search_epoch_002.csv",
                 *(f"test/{output}" for output in OUTPUTS)):
        assert (plain_run / name).is_file(), name
    assert (plain_run.parent / "config.yml").is_file()
    assert json.loads((plain_run.parent / "versions.json").read_text())["seed"] == 42
    steps = pd.read_csv(plain_run / "train_steps.csv")
    assert list(steps["step"]) == list(range(1, 7)) and set(steps["n"]) == {4}  # 12 faces, batch 4, 2 epochs
    epochs = pd.read_csv(plain_run / "epochs.csv")
    assert list(epochs["epoch"]) == [1, 2]
    assert epochs[["train_loss", "valid_loss", "valid_accuracy", "valid_auc"]].notna().all().all()
    assert not list(plain_run.rglob("*.pkl"))


def test_checkpoint_holds_the_originals_keys_and_the_validation_thresholds(plain_run):
    checkpoint = load(plain_run / "highest_acc.chkpt")
    for key in ("model_state_dict", "optimizer_state_dict", "model_params", "log_dir", "epoch", "config", "rng"):
        assert key in checkpoint, key
    assert checkpoint["criterion"] == "BCEWithLogitsLoss" and checkpoint["log_dir"] == str(plain_run)
    params = checkpoint["model_params"]
    assert (params["encoder_name"], params["imsize"], params["dataset"]) == ("tf_efficientnet_b0_ns", 224, "plain")
    epochs = pd.read_csv(plain_run / "epochs.csv")
    best = epochs[epochs["highest_acc"] == 1].iloc[-1]  # the last strict improvement
    assert checkpoint["thresholds"] == {name: best[name] for name in ("fake_threshold", "fake_fraction")}
    assert checkpoint["best"]["valid_accuracy"] == pytest.approx(best["valid_accuracy"], abs=1e-6)


def test_test_uses_the_validation_thresholds_and_counts_faceless_videos(plain_run):
    metrics = json.loads((plain_run / "test" / "metrics.json").read_text())
    tested = plain_run / "highest_acc.chkpt"
    assert metrics["checkpoint"]["path"] == str(tested) and len(metrics["checkpoint"]["sha256"]) == 64
    thresholds = load(tested)["thresholds"]
    assert {k: metrics["thresholds"][k] for k in thresholds} == thresholds
    assert "validation" in metrics["thresholds"]["source"] and "test" not in metrics["thresholds"]["source"]
    assert not list((plain_run / "test").glob("*grid*"))  # nothing is tuned on the test split
    frame, video = metrics["frame"], metrics["video"]
    assert frame["n"] == 8 and video["n"] == 5 and video["no_face_videos"] == ["test_noface"]
    for key in ("accuracy", "roc_auc", "f1", "log_loss", "average_precision", "eer"):
        assert frame[key] is None or 0 <= frame[key] <= (np.inf if key == "log_loss" else 1), key
    assert 0 <= video["accuracy"] <= 1 and video["fn"] >= 1  # the face-less fake is a miss

    videos = pd.read_csv(plain_run / "test" / "video_predictions.csv", dtype={"video_id": str})
    assert list(videos.columns[:6]) == ["video_id", "label", "n_faces", "fake_fraction", "mean_probability", "verdict"]
    noface = videos.set_index("video_id").loc["test_noface"]
    assert (noface["n_faces"], noface["verdict"], noface["status"]) == (0, 0, "no_face")
    frames = pd.read_csv(plain_run / "test" / "frame_predictions.csv")
    assert list(frames.columns) == ["video_id", "frame", "label", "probability"] and len(frames) == 8
    assert frames["probability"].between(0, 1).all()


def test_test_reports_the_papers_protocol_beside_ours(plain_run):
    test_dir = plain_run / "test"
    metrics = json.loads((test_dir / "metrics.json").read_text())
    video, paper = metrics["video"], metrics["paper"]
    # the paper's pair is the grid's first best on the TEST faces (ours came from validation)
    frames = pd.read_csv(test_dir / "frame_predictions.csv", dtype={"video_id": str})
    cfg = load_config()
    threshold, fraction, _ = grid_search(frames, cfg["deep_fake.evaluation.grid_fake_threshold"],
                                         cfg["deep_fake.evaluation.grid_fake_fraction"])
    assert (paper["thresholds"]["fake_threshold"], paper["thresholds"]["fake_fraction"]) == (threshold, fraction)
    assert "test split" in paper["thresholds"]["source"]
    assert video["n"] == 5 and paper["n_videos"] == 4 and paper["n_dropped_no_face"] == 1  # face-less fake dropped
    assert sum(sum(paper["confusion_matrix"], [])) == 4
    normalised = paper["confusion_matrix_normalized"]  # 2 real and 2 fake videos with faces: both rows defined
    assert paper["acc"] == pytest.approx((normalised[0][0] + normalised[1][1]) / 2)  # the mean class recall
    for level in ("frame", "video", "paper_video"):
        for name in ("confusion_matrix.csv", "confusion_matrix.png", "confusion_matrix_normalized.csv",
                     "confusion_matrix_normalized.png"):
            assert (test_dir / f"{level}_{name}").is_file(), f"{level}_{name}"
    ours = pd.read_csv(test_dir / "video_confusion_matrix.csv", index_col=0).to_numpy().tolist()
    assert ours == [[video["tn"], video["fp"]], [video["fn"], video["tp"]]]  # rows actual Real, Fake
    theirs = pd.read_csv(test_dir / "paper_video_confusion_matrix.csv", index_col=0).to_numpy().tolist()
    assert theirs == paper["confusion_matrix"]
    frame_counts = pd.read_csv(test_dir / "frame_confusion_matrix.csv", index_col=0).to_numpy()
    assert frame_counts.sum() == 8 and frame_counts[1].sum() == 4  # 8 faces, 4 of fake videos
    printed = (test_dir / "model_info_and_results.log").read_text()  # logging.model_info_log
    assert "paper's protocol" in printed and "only the first table is unbiased" in printed


def test_tensorboard_holds_the_originals_eight_epoch_tags(plain_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(plain_run / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == sorted(CLASSIFIER_EPOCH_TAGS)
    epochs = pd.read_csv(plain_run / "epochs.csv")
    for tag, column in CLASSIFIER_EPOCH_TAGS.items():
        scalars = events.Scalars(tag)
        assert [scalar.step for scalar in scalars] == [1, 2], tag
        assert [scalar.value for scalar in scalars] == pytest.approx(list(epochs[column]), rel=1e-4), tag


def test_gen_plots_lays_classifier_tests_side_by_side(plain_run, tmp_path):
    result = run_script("gen_plots.py", "--classifier_tests", str(plain_run / "test"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in ("roc.png", "confusion_matrices.png", "metrics_table.md", "metrics_table.csv"):
        assert (tmp_path / name).is_file(), name
    metrics = json.loads((plain_run / "test" / "metrics.json").read_text())
    table = pd.read_csv(tmp_path / "metrics_table.csv").set_index("protocol")
    assert list(table.index) == ["ours", "paper"] and set(table["method"]) == {"plain_frames"}
    assert table.loc["ours", "acc"] == pytest.approx(metrics["video"]["accuracy"])
    assert table.loc["ours", "fake_threshold"] == metrics["thresholds"]["fake_threshold"]
    assert table.loc["paper", "fake_fraction"] == metrics["paper"]["thresholds"]["fake_fraction"]
    assert table.loc["paper", "n_videos"] == 4
    assert "| plain_frames | paper |" in (tmp_path / "metrics_table.md").read_text()
    missing = run_script("gen_plots.py", "--classifier_tests", str(tmp_path / "nothing"), "--out", str(tmp_path))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "nothing" in missing.stderr


def test_mri_run_trains_on_mri_images_then_exports_for_the_mri_method(data, tmp_path):
    result = run_script(SCRIPT, "--train_from_scratch", "--export", *set_flags(settings(
        data, tmp_path, "deep_fake.training.model_params.dataset=mri", "deep_fake.training.model_params.epochs=1",
        f"assets={tmp_path / 'assets'}", *(f"{key}={data / 'assets' / name}" for key, name in MRI_CSVS.items()))))
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = run_folders(tmp_path, RUN_FOLDER)
    metrics = json.loads((run_dir / "test" / "metrics.json").read_text())
    assert metrics["dataset"] == "mri" and all((run_dir / "test" / name).is_file() for name in OUTPUTS)
    assert load(run_dir / "highest_acc.chkpt")["model_params"]["dataset"] == "mri"
    out = result.stdout
    assert "epoch 1/1:" in out and "thresholds: fake_threshold" in out and "\nvideo " in out
    exported = read_checkpoint(tmp_path / "assets" / "weights" / "deepfake_MRI_weights.chkpt")
    assert exported["thresholds"] == load(run_dir / "highest_acc.chkpt")["thresholds"]


# --- resume, saved models, export ----------------------------------------------------------------------


def test_interrupted_then_resumed_run_ends_with_the_uninterrupted_weights(data, tmp_path, plain_run):
    cfg = load_config(None, settings(data, tmp_path, "deep_fake.training.model_params.dataset=plain"))
    run_dir, best = train(cfg, DistContext(), max_steps=5)  # killed one step after the step-4 checkpoint
    assert best is None
    periodic = run_dir / "checkpoint.chkpt"
    assert load(periodic)["global_step"] == 4 and len(pd.read_csv(run_dir / "train_steps.csv")) == 5

    assert run_script(SCRIPT, "--train_resume", str(periodic)).returncode == 0
    assert run_folders(tmp_path, RUN_FOLDER) == [run_dir]  # continued in place
    ours, reference = load(periodic), load(plain_run / "checkpoint.chkpt")
    assert ours["global_step"] == reference["global_step"] == 6
    for key, tensor in reference["model_state_dict"].items():
        assert torch.allclose(ours["model_state_dict"][key].float(), tensor.float(), atol=1e-6, rtol=0), key
    columns = ["train_loss", "valid_loss", "valid_accuracy", "fake_threshold", "fake_fraction"]
    ours_epochs, reference_epochs = (pd.read_csv(p / "epochs.csv") for p in (run_dir, plain_run))
    assert np.allclose(ours_epochs[columns], reference_epochs[columns], rtol=1e-4)
    assert list(pd.read_csv(run_dir / "train_steps.csv")["step"]) == list(range(1, 7))
    assert (run_dir / "test" / "metrics.json").is_file()


def test_sigint_saves_a_checkpoint_at_the_next_step_and_stops_with_exit_code_130(data, tmp_path):
    cfg = load_config(None, settings(data, tmp_path, "deep_fake.training.model_params.dataset=plain"))

    def press_ctrl_c_after_the_first_step():
        deadline = time.time() + 120
        while time.time() < deadline and not any(len(p.read_text().splitlines()) > 1
                                                 for p in tmp_path.glob("*/deep_fake/train_steps.csv")):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # a real signal, handled by the training loop in the main thread

    threading.Thread(target=press_ctrl_c_after_the_first_step, daemon=True).start()
    with pytest.raises(Interrupted) as stopped:
        train(cfg, DistContext())
    (run_dir,) = run_folders(tmp_path, RUN_FOLDER)
    step = load(run_dir / "checkpoint.chkpt")["global_step"]
    assert exit_code(stopped.value) == 130 and f"stopped by SIGINT at step {step}" in str(stopped.value)
    assert 0 < step < 6 and len(pd.read_csv(run_dir / "train_steps.csv")) == step
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "stopped by SIGINT"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the loop gave Ctrl-C back


def test_resume_from_a_best_checkpoint_with_more_epochs_starts_a_new_folder(data, tmp_path, plain_run):
    best = plain_run / "lowest_loss.chkpt"
    before = best.read_bytes()
    assert run_script(SCRIPT, "--train_resume", str(best), "--set", "deep_fake.training.model_params.epochs=3",
                  "--set", f"logging.root_log_dir={tmp_path}").returncode == 0
    (run_dir,) = run_folders(tmp_path, RUN_FOLDER)
    assert best.read_bytes() == before
    assert list(pd.read_csv(run_dir / "train_steps.csv")["step"]) == list(range(1, 10))  # history carried over
    assert list(pd.read_csv(run_dir / "epochs.csv")["epoch"])[-1] == 3
    tested = json.loads((run_dir / "test" / "metrics.json").read_text())["checkpoint"]["path"]
    assert tested in (str(run_dir / "highest_acc.chkpt"), str(plain_run / "highest_acc.chkpt"))


def test_saved_model_is_tested_into_a_new_folder_with_the_same_results(data, tmp_path, plain_run):
    before = (plain_run / "test" / "metrics.json").read_text()
    assert run_script(SCRIPT, "--test_saved_model", str(plain_run / "highest_acc.chkpt"),
                      *set_flags(settings(data, tmp_path))).returncode == 0
    (test_dir,) = tmp_path.glob("*/deep_fake/test")
    assert (plain_run / "test" / "metrics.json").read_text() == before
    ours, reference = (json.loads((d / "metrics.json").read_text()) for d in (test_dir, plain_run / "test"))
    assert ours["dataset"] == "plain"  # from the checkpoint, although the config says mri
    assert ours["thresholds"] == reference["thresholds"]
    assert ours["frame"] == pytest.approx(reference["frame"])
    assert ours["video"]["accuracy"] == reference["video"]["accuracy"]


def test_saved_mri_model_tested_on_another_generators_and_renderings_mris_warns_in_one_line_each(data, tmp_path):
    from models.classifier import DeepFakeClassifier

    params = {"dataset": "mri", "encoder_name": "tf_efficientnet_b0_ns", SHA_KEY: "c" * 64, RENDERING_KEY: "original"}
    torch.save({"model_state_dict": DeepFakeClassifier().state_dict(), "model_params": params,
                "thresholds": {"fake_threshold": 0.5, "fake_fraction": 0.1}}, tmp_path / "mri.chkpt")
    csvs = {key: data / "assets" / name for key, name in MRI_CSVS.items()}
    write_json(sidecar(csvs["features.dfdc.test_mriframe_label"]), {"sha256": "d" * 64, "tau": 0.3,
                                                                     "rendering": "default"})
    try:
        result = run_script(SCRIPT, "--test_saved_model", str(tmp_path / "mri.chkpt"), *set_flags(settings(
            data, tmp_path, *(f"{key}={path}" for key, path in csvs.items()))))
    finally:
        sidecar(csvs["features.dfdc.test_mriframe_label"]).unlink()  # the module's data set stays as it was
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "trained on MRIs of generator" in line]
    assert len(warnings) == 1 and "c" * 12 in warnings[0] and "d" * 12 in warnings[0]
    warnings = [line for line in result.stderr.splitlines() if "trained on MRIs rendered the" in line]
    assert len(warnings) == 1
    assert "rendered the original way, but the test MRIs are rendered the default way" in warnings[0]


def test_export_writes_the_apps_weights_file_which_the_app_loads(data, tmp_path, plain_run):
    assets = tmp_path / "assets"
    result = run_script(SCRIPT, "--export", str(plain_run / "highest_acc.chkpt"), "--set", f"assets={assets}")
    assert result.returncode == 0, result.stderr[-2000:]
    target = assets / "weights" / "deepfake_plain_frames_weights.chkpt"
    assert str(target) in result.stdout
    exported = read_checkpoint(target)
    assert "optimizer_state_dict" not in exported and "rng" not in exported
    assert exported["thresholds"] == load(plain_run / "highest_acc.chkpt")["thresholds"]

    from utils.infer.detect import Detector

    # fp32: in bf16 the app keeps its convolution weights in bf16 (Precision.cast_for_inference)
    detector = Detector.from_weights(load_config(None, [f"assets={assets}", "runtime.precision=fp32"]),
                                     "plain_frames", torch.device("cpu"))
    assert detector.thresholds["fake_threshold"] == exported["thresholds"]["fake_threshold"]
    assert detector.thresholds["fake_threshold_source"].startswith("validation-tuned")
    state = load(plain_run / "highest_acc.chkpt")["model_state_dict"]
    assert all(torch.equal(value, state[key]) for key, value in detector.classifier.state_dict().items())


# --- errors ------------------------------------------------------------------------------------------------


def one_line_error(result: subprocess.CompletedProcess, after_progress_bars: bool = False) -> str:
    """The error line of a run that failed with exit code 2 and no traceback; stderr holds nothing else, except
    the progress bars of a run that failed mid-training."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and lines[-1].startswith("deep_fake_detect.py: error: "), result.stderr
    assert len(lines) == 1 or after_progress_bars, result.stderr
    return lines[-1]


def test_missing_frame_label_csv_names_the_config_key(data, tmp_path):
    error = one_line_error(run_script(SCRIPT, "--train_from_scratch", *set_flags(settings(
        data, tmp_path / "logs", f"assets={tmp_path}", "deep_fake.training.model_params.dataset=plain"))))
    assert "data_path.dfdc.train_frame_labels_csv_filename" in error and "--gen_deepfake_metadata" in error
    assert not (tmp_path / "logs").exists()  # no empty run folder is left behind


@pytest.mark.parametrize("setting, expected", [
    ("deep_fake.training.model_params.dataset=frames", "deep_fake.training.model_params.dataset"),
    ("deep_fake.training.model_params.encoder_weights=/nowhere/b0.safetensors", "b0.safetensors"),
])
def test_bad_config_values_are_one_line_errors(data, tmp_path, setting, expected):
    error = one_line_error(run_script(SCRIPT, "--train_from_scratch", *set_flags(settings(data, tmp_path / "logs",
                                                                                         setting))))
    assert expected in error and not (tmp_path / "logs").exists()


def test_unreadable_image_is_one_line_error_naming_it(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    broken = copy / "crops" / "train" / "train_real_0" / "10_0.png"
    broken.write_bytes(b"not a png")
    error = one_line_error(run_script(SCRIPT, "--train_from_scratch", *set_flags(settings(
        copy, tmp_path / "logs", "deep_fake.training.model_params.dataset=plain", "runtime.loader_workers=1"))),
        after_progress_bars=True)
    assert str(broken) in error and "cannot read image" in error and "re-run data_preprocess.py --crop_faces" in error


# --- several processes and nodes ------------------------------------------------------------------------------

ONE_EPOCH = ("deep_fake.training.model_params.dataset=plain", "deep_fake.training.model_params.epochs=1")


@pytest.fixture(scope="module")
def torchrun_run(data, tmp_path_factory) -> Path:
    """torchrun --standalone --nproc_per_node 2 (gloo): one epoch of training, then the test of highest_acc.chkpt."""
    logs = tmp_path_factory.mktemp("torchrun_logs")
    result = torchrun_two_processes(SCRIPT, "--train_from_scratch", *set_flags(settings(data, logs, *ONE_EPOCH)),
                                    timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("deep_fake run folder") == 1
    (run_dir,) = run_folders(logs, RUN_FOLDER)
    return run_dir


def test_torchrun_trains_with_two_cpu_processes_and_scores_like_one_process(data, tmp_path, torchrun_run):
    """2 CPU processes (gloo): one run folder written by rank 0, steps of the global batch, and the sharded test
    gives the same scores as testing the same checkpoint in one process."""
    run_dir = torchrun_run
    checkpoint = load(run_dir / "checkpoint.chkpt")
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng_per_rank"]) == 2
    assert not any(key.startswith("module.") for key in checkpoint["model_state_dict"])
    steps = pd.read_csv(run_dir / "train_steps.csv")
    assert steps["step"].tolist() == [1, 2, 3] and steps["n"].sum() == 4 * FRAMES["train"]  # 12 faces, batch 4
    sharded = json.loads((run_dir / "test" / "metrics.json").read_text())
    tested = run_script(SCRIPT, "--test_saved_model", str(run_dir / "highest_acc.chkpt"),
                        *set_flags(settings(data, tmp_path / "single")))
    assert tested.returncode == 0
    (single,) = (tmp_path / "single").glob("*/deep_fake/test/metrics.json")
    single = json.loads(single.read_text())
    assert sharded["frame"]["n"] == single["frame"]["n"] == 4 * FRAMES["test"]
    assert sharded["thresholds"] == single["thresholds"]
    for key in ("accuracy", "roc_auc", "log_loss"):
        assert sharded["frame"][key] == pytest.approx(single["frame"][key], abs=1e-5)
        assert sharded["video"][key] == pytest.approx(single["video"][key], abs=1e-5)


def test_two_nodes_train_and_test_like_one_node_and_only_global_rank_0_writes(data, tmp_path, torchrun_run):
    """The multi-node rehearsal: two torchrun "nodes" (--nnodes 2 --node_rank 0|1, gloo on 127.0.0.1), each started
    in its own folder with its own log root, as on machines without a shared disk for logs. Node 1 writes nothing;
    rank 0's highest_acc.chkpt reaches node 1's test by broadcast; the numbers are the one-node run's."""
    logs = rehearse_on_two_nodes(PROJECT_ROOT / SCRIPT,
                                 lambda logs: ["--train_from_scratch", *set_flags(settings(data, logs, *ONE_EPOCH))],
                                 tmp_path,
                                 started="deep_fake run folder", finished="*/deep_fake/test/metrics.json")
    (run_dir,) = run_folders(logs, RUN_FOLDER)
    for name, columns in (("train_steps.csv", ["loss", "accuracy", "n"]),
                          ("epochs.csv", ["train_loss", "valid_loss", "valid_accuracy", "valid_auc"])):
        ours, reference = (pd.read_csv(folder / name) for folder in (run_dir, torchrun_run))
        assert np.allclose(ours[columns], reference[columns], rtol=1e-5, atol=1e-7), name
    ours, reference = (json.loads((folder / "test" / "metrics.json").read_text()) for folder in (run_dir, torchrun_run))
    assert ours["thresholds"] == reference["thresholds"]
    for level in ("frame", "video"):
        for key in ("accuracy", "roc_auc", "log_loss"):
            assert ours[level][key] == pytest.approx(reference[level][key], abs=1e-5), (level, key)


def test_a_file_missing_on_one_node_stops_every_process_with_one_line(data, tmp_path, torchrun_run):
    """--test_saved_model from an srun-style launch, where rank 1's node sees neither the checkpoint nor the
    validation split. The checkpoint is read by rank 0 and sent; whether to search thresholds on validation (a
    collective step) is rank 0's decision, so rank 1 fails to read the split, and both processes stop with that one
    line, instead of rank 1 skipping the search while rank 0 waits for it."""
    checkpoint = load(torchrun_run / "highest_acc.chkpt")
    del checkpoint["thresholds"], checkpoint["thresholds_source"]  # as the original's checkpoints: none stored
    torch.save(checkpoint, tmp_path / "untuned.chkpt")
    missing_csv = f"data_path.dfdc.valid_frame_labels_csv_filename={tmp_path / 'not_on_this_node.csv'}"
    node_args = [[str(tmp_path / "untuned.chkpt"), *set_flags(settings(data, tmp_path / "logs"))],
                 [str(tmp_path / "not_on_this_node.chkpt"), *set_flags(settings(data, tmp_path / "logs", missing_csv))]]
    port = free_port()
    results = run_together([([sys.executable, str(PROJECT_ROOT / SCRIPT), "--test_saved_model", *args],
                             PROJECT_ROOT, srun_environment(rank, 2, port)) for rank, args in enumerate(node_args)])
    for result in results:
        error = one_line_error(result)
        assert "rank 1 on " in error and "data_path.dfdc.valid_frame_labels_csv_filename" in error
    assert not (tmp_path / "logs").exists()
