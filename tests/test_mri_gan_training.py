"""MRI-GAN training: the epoch data set, checkpoints and logs, exact resume, torchrun on one and two nodes, the
command line. Tiny networks (ngf = ndf = 8) on face crops generated from shipped photos; real components throughout."""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

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
from utils.config import PROJECT_ROOT, load_config
from utils.demo.synthetic import face_photo
from utils.errors import ConfigError, DataFileError, NonFiniteLoss, exit_code
from utils.evaluation.figures import plot_mri_gan_runs
from utils.fileio import write_png
from utils.media.mri import compute_mri
from utils.train.distributed import DistContext
from utils.train.loaders import make_loader
from utils.train.mri_gan import MRIGANTraining, read_data, train
from utils.train.mri_gan_data import MRIDataset, draw_epoch, load_split
from utils.train.run import config_for_resume

SCRIPT, RUN_FOLDER = "train_MRI_GAN.py", "MRI_GAN"
TINY = ["MRI_GAN.model_params.ngf=8", "MRI_GAN.model_params.ndf=8", "MRI_GAN.model_params.batch_size=2",
        "MRI_GAN.model_params.test_sample_size=4", "runtime.loader_workers=0", "runtime.device=cpu"]


# --- a tiny MRI-GAN data set, written as data_preprocess.py --gen_mri_dataset would --------------------


def jittered_crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A face crop as a detector would give it: shifted box, varied size and lighting."""
    h, w = photo.shape[:2]
    x, y = rng.integers(0, w // 10), rng.integers(0, h // 10)
    crop = photo[y:y + h - h // 10, x:x + w - w // 10]
    side = int(rng.integers(120, 200))
    crop = cv2.resize(crop, (side, int(side * crop.shape[0] / crop.shape[1])), interpolation=cv2.INTER_AREA)
    return np.clip(crop.astype(np.float32) * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)


def paste_face(original: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A face swap stand-in: the donor's central face region blended into the original at a varying place
    and size (so the MRI's bright region moves and only the seams tell where it is)."""
    h, w = original.shape[:2]
    size = rng.uniform(0.35, 0.55)
    y1, x1 = (int(rng.uniform(0.5 - size / 2 - 0.12, 0.5 - size / 2 + 0.12) * n) for n in (h, w))
    y2, x2 = y1 + int(size * h), x1 + int(size * w)
    patch = cv2.resize(donor[int(0.25 * donor.shape[0]):int(0.75 * donor.shape[0]),
                             int(0.25 * donor.shape[1]):int(0.75 * donor.shape[1])], (x2 - x1, y2 - y1))
    mask = cv2.GaussianBlur(np.pad(np.ones((y2 - y1 - 8, x2 - x1 - 8), np.float32), 4), (0, 0), 3)[..., None]
    fake = original.astype(np.float32)
    fake[y1:y2, x1:x2] = mask * patch + (1 - mask) * fake[y1:y2, x1:x2]
    return fake.astype(np.uint8)


def make_mri_gan_dataset(folder: Path, n_train: int = 4, n_test: int = 2, seed: int = 0) -> Path:
    """Write real crops, pasted-face fakes with their MRI targets and the four CSVs; return the assets folder."""
    rng = np.random.default_rng(seed)
    photos = [face_photo("astronaut"), face_photo("grace_hopper")]
    assets = folder / "assets"
    write_png(assets / "blank.png", np.zeros((224, 224, 3), np.uint8))
    for split, count in (("train", n_train), ("test", n_test)):
        reals, fakes = [], []
        for i in range(count):
            person = i % 2
            real = jittered_crop(photos[person], rng)
            fake = paste_face(real, jittered_crop(photos[1 - person], rng), rng)
            paths = {name: folder / split / f"{name}_{i}.png" for name in ("real", "fake", "mri")}
            write_png(paths["real"], jittered_crop(photos[person], rng))
            write_png(paths["fake"], fake)
            write_png(paths["mri"], compute_mri(real, fake))
            reals.append({"face_image": paths["real"], "mri_image": assets / "blank.png", "class": "real",
                          "video_id": f"r{i}"})
            fakes.append({"face_image": paths["fake"], "mri_image": paths["mri"], "class": "fake",
                          "video_id": f"f{i}"})
        pd.DataFrame(reals).to_csv(assets / f"mri_real_{split}_dataset.csv", index=False)
        pd.DataFrame(fakes).to_csv(assets / f"mri_fake_{split}_dataset.csv", index=False)
    return assets


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_mri_gan_dataset(tmp_path_factory.mktemp("mri_gan_data"))


def settings(assets: Path, logs: Path, *extra: str) -> list[str]:
    return [f"assets={assets}", f"logging.root_log_dir={logs}", *TINY, *extra]


def tiny_config(assets: Path, logs: Path, *extra: str):
    return load_config(None, settings(assets, logs, *extra))


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def weights_equal(a: dict, b: dict, atol: float = 1e-6) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0) for k in a)


# --- the data set -------------------------------------------------------------------------------


def table(n: int, kind: str) -> pd.DataFrame:
    return pd.DataFrame({"face_image": [f"/{kind}{i}.png" for i in range(n)],
                         "mri_image": [f"/{kind}_mri{i}.png" for i in range(n)], "class": kind})


def test_epoch_draws_frac_of_reals_and_as_many_fakes_shuffled():
    epoch = draw_epoch(table(10, "real"), table(30, "fake"), frac=0.5, seed=1, epoch=0)
    assert (epoch["class"] == "real").sum() == 5 and (epoch["class"] == "fake").sum() == 5
    assert epoch["face_image"].is_unique
    assert list(epoch["class"]) != sorted(epoch["class"])  # shuffled, not reals then fakes


def test_epoch_draws_fakes_with_replacement_when_fewer_than_reals():
    epoch = draw_epoch(table(6, "real"), table(2, "fake"), frac=1.0, seed=1, epoch=0)
    assert (epoch["class"] == "fake").sum() == 6
    assert set(epoch.loc[epoch["class"] == "fake", "face_image"]) <= {"/fake0.png", "/fake1.png"}


def test_epoch_draw_is_seeded_and_differs_between_epochs():
    reals, fakes = table(20, "real"), table(40, "fake")
    first = draw_epoch(reals, fakes, 1.0, seed=3, epoch=0)
    assert first.equals(draw_epoch(reals, fakes, 1.0, seed=3, epoch=0))
    assert not first.equals(draw_epoch(reals, fakes, 1.0, seed=3, epoch=1))


def test_split_csvs_are_read_with_extra_columns_ignored(data, tmp_path):
    reals, fakes = load_split(tiny_config(data, tmp_path), "train")
    assert list(reals.columns) == ["face_image", "mri_image", "class"] and len(reals) == len(fakes) == 4


def test_missing_split_csv_is_a_config_error_naming_the_key(data, tmp_path):
    cfg = tiny_config(data, tmp_path, f"features.mri_dataset_fake_test_csv={tmp_path / 'absent.csv'}")
    with pytest.raises(ConfigError, match="features.mri_dataset_fake_test_csv.*absent.csv"):
        load_split(cfg, "test")


def test_items_are_normalised_256_pairs_flipped_together(data, tmp_path):
    reals, fakes = load_split(tiny_config(data, tmp_path), "train")
    rows = draw_epoch(reals, fakes, 1.0, seed=0, epoch=0)
    plain = MRIDataset(rows, 256, seed=0, epoch=0, flip=False)
    flipping = MRIDataset(rows, 256, seed=0, epoch=0, flip=True)
    flipped = []
    for index in range(len(rows)):
        a, b = plain[index], flipping[index]
        assert a["face"].shape == a["mri"].shape == (3, 256, 256) and -1 <= a["face"].min() and a["face"].max() <= 1
        face_flipped = torch.equal(b["face"], a["face"].flip(-1))
        assert face_flipped == torch.equal(b["mri"], a["mri"].flip(-1)) or a["fake"] == 0  # blank MRI is symmetric
        assert face_flipped or torch.equal(b["face"], a["face"])
        flipped.append(face_flipped)
    assert any(flipped) and not all(flipped)


@pytest.mark.slow  # a DataLoader worker process
def test_unreadable_image_is_one_line_error_naming_it_even_from_a_worker(data, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    rows = pd.DataFrame({"face_image": [str(broken)], "mri_image": [str(data / "blank.png")], "class": ["real"]})
    loader = make_loader(MRIDataset(rows, 256, 0, 0), 1, DistContext(), seed=0, workers=1)
    with pytest.raises(DataFileError) as error:
        next(iter(loader))
    message = str(error.value)
    assert str(broken) in message and "cannot read image" in message and "\n" not in message


# --- training runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory) -> Path:
    """Two epochs of 4 steps, periodic checkpoint every 3 steps, a sample grid every 3 steps, never interrupted."""
    logs = tmp_path_factory.mktemp("full_logs")
    return train(tiny_config(data, logs, "MRI_GAN.model_params.n_epochs=2", "MRI_GAN.model_params.chkpt_freq=3",
                             "MRI_GAN.model_params.sample_gen_freq=3"), DistContext())


@pytest.mark.slow  # full_run: a training (~28 s)
def test_run_folder_holds_original_checkpoint_names_csv_logs_and_pictures(full_run):
    for name in ("checkpoint.chkpt", "checkpoint_best_G.chkpt", "checkpoint_best_D.chkpt", "losses.csv",
                 "ssim_report.csv", "mri_metadata.json", "generated_samples/epoch_001.png",
                 "generated_samples/epoch_002.png", "plots/losses.png", "plots/test_scores.png"):
        assert (full_run / name).is_file(), name
    assert (full_run.parent / "config.yml").is_file() and (full_run.parent / "versions.json").is_file()
    assert not list(full_run.rglob("*.pkl")) and not list(full_run.rglob(".*partial*"))
    steps = read_rows(full_run / "losses.csv")
    assert [int(row["step"]) for row in steps] == list(range(1, 9))
    assert [int(row["epoch"]) for row in read_rows(full_run / "ssim_report.csv")] == [1, 2]


@pytest.mark.slow  # full_run: a training
def test_checkpoint_loads_weights_only_with_model_optimizer_position_rng_and_config(full_run):
    checkpoint = torch.load(full_run / "checkpoint.chkpt", map_location="cpu", weights_only=True)
    for key in ("generator_state_dict", "discriminator_state_dict", "optimizer_G_state_dict",
                "optimizer_D_state_dict", "rng", "config", "model_params", "log_dir"):
        assert key in checkpoint, key
    assert (checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["global_step"]) == (2, 0, 8)
    assert checkpoint["config"]["MRI_GAN"]["model_params"]["ngf"] == 8
    assert checkpoint["log_dir"] == str(full_run)


@pytest.mark.slow  # full_run: a training
def test_best_generator_is_the_epoch_with_highest_test_ssim(full_run):
    report = read_rows(full_run / "ssim_report.csv")
    best = max(report, key=lambda row: float(row["test_ssim"]))
    checkpoint = torch.load(full_run / "checkpoint_best_G.chkpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == int(best["step"])
    assert checkpoint["best"]["test_ssim"] == pytest.approx(float(best["test_ssim"]), rel=1e-5)


@pytest.mark.slow  # full_run: a training
def test_sample_grid_has_title_band_and_one_row_per_sample(full_run):
    grid = np.asarray(Image.open(full_run / "generated_samples" / "epoch_002.png"))
    assert grid.shape == (24 + 4 * 128, 3 * 128, 3)  # 2 real + 2 fake rows of face | target | generated
    # sample_gen_freq 3: a grid at steps 3 and 6 as well (the original's samples every N steps)
    assert sorted(p.name for p in (full_run / "generated_samples").glob("step_*.png")) == \
        ["step_0000003.png", "step_0000006.png"]


def tensorboard_events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


@pytest.mark.slow  # full_run: a training
def test_tensorboard_holds_step_losses_test_scores_and_sample_grids(full_run):
    events = tensorboard_events(full_run)
    columns = ["loss_G", "loss_GAN", "loss_pixel", "loss_ssim", "loss_D", "loss_real", "loss_fake"]
    assert sorted(events.Tags()["scalars"]) == sorted([f"train/{c}" for c in columns] +
                                                      [f"test/test_{c}" for c in ("ssim", "pixel", "loss_G", "loss_D")])
    steps = pd.read_csv(full_run / "losses.csv")
    assert [s.step for s in events.Scalars("train/loss_G")] == list(steps["step"])
    assert [s.value for s in events.Scalars("train/loss_G")] == pytest.approx(list(steps["loss_G"]), rel=1e-4)
    report = pd.read_csv(full_run / "ssim_report.csv")
    assert [s.step for s in events.Scalars("test/test_ssim")] == list(report["step"])  # epoch ends: steps 4, 8
    assert [s.value for s in events.Scalars("test/test_ssim")] == pytest.approx(list(report["test_ssim"]), rel=1e-4)
    assert [image.step for image in events.Images("samples")] == [3, 4, 6, 8]  # every 3 steps and every epoch


@pytest.mark.slow  # full_run: a training
def test_gen_plots_draws_the_runs_curves_labelled_by_tau(full_run, tmp_path):
    other = full_run.parent  # a run may be named by its logs/<time> folder too
    written = plot_mri_gan_runs([full_run, other], tmp_path)
    for name in ("ssim_score_plot.png", "loss_G_plot.png", "loss_D_plot.png", "ssim_loss_plot.png",
                 "L2_loss_plot.png", "mri_gan_runs.csv"):
        assert tmp_path / name in written and (tmp_path / name).stat().st_size > 0, name
    summary = pd.read_csv(tmp_path / "mri_gan_runs.csv")
    report = pd.read_csv(full_run / "ssim_report.csv")
    assert list(summary["tau"]) == [0.3, 0.3] and list(summary["steps"]) == [8, 8]
    assert summary["best_test_ssim"].iloc[0] == pytest.approx(report["test_ssim"].max(), rel=1e-5)
    assert summary["final_test_pixel"].iloc[1] == pytest.approx(report["test_pixel"].iloc[-1], rel=1e-5)
    with pytest.raises(ConfigError, match="not an MRI-GAN run folder"):
        plot_mri_gan_runs([tmp_path / "nothing"], tmp_path)


@pytest.mark.slow  # full_run, then runs compare_MRI_GANs.py
def test_compare_mri_gans_scores_generators_on_the_same_test_faces(data, full_run, tmp_path):
    out = tmp_path / "compare.png"
    generators = [full_run / "checkpoint_best_G.chkpt", full_run / "checkpoint.chkpt"]
    result = run_script("compare_MRI_GANs.py", "--generators", *map(str, generators), "--out", str(out),
                        *set_flags(settings(data, tmp_path)), timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    picture = np.asarray(Image.open(out))
    assert picture.shape == (24 + 4 * 160, 4 * 160, 3)  # 2 real + 2 fake rows: face, target, two generators
    table = pd.read_csv(out.with_suffix(".csv"))
    assert list(table["tau"]) == [0.3, 0.3] and list(table["n_real"]) == [2, 2] and list(table["n_fake"]) == [2, 2]
    # the best generator's test SSIM is the one training logged for it (same test rows, same score)
    best = torch.load(generators[0], map_location="cpu", weights_only=True)["best"]["test_ssim"]
    assert table["test_ssim"].iloc[0] == pytest.approx(best, rel=1e-4)
    last = pd.read_csv(full_run / "ssim_report.csv").iloc[-1]
    assert table["test_pixel_mse"].iloc[1] == pytest.approx(last["test_pixel"], rel=1e-4)
    assert table[["mean_mri_real", "mean_mri_fake"]].apply(lambda c: c.between(0, 255)).all().all()

    not_a_generator = tmp_path / "losses.csv"
    not_a_generator.write_text("step\n1\n")
    bad = run_script("compare_MRI_GANs.py", "--generators", str(not_a_generator), "--out", str(tmp_path / "bad.png"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "losses.csv" in bad.stderr


def wait_for_rows(logs: Path, rows: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until the step log of the run under `logs` has `rows` data rows."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        found = list(logs.glob("*/MRI_GAN/losses.csv"))
        if found and len(found[0].read_text().splitlines()) > rows:
            return
        time.sleep(0.01)
    raise AssertionError(f"no {rows} rows in the step log under {logs} (exit code {process.poll()})")


@pytest.mark.slow  # runs train_MRI_GAN.py, then a training
def test_sigterm_saves_at_the_next_step_and_the_resumed_run_ends_with_the_uninterrupted_weights(
        data, tmp_path, full_run):
    process = subprocess.Popen([sys.executable, str(PROJECT_ROOT / SCRIPT), "--train_from_scratch",
                                *set_flags(settings(data, tmp_path, "MRI_GAN.model_params.n_epochs=2",
                                                    "MRI_GAN.model_params.chkpt_freq=3"))],
                               cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(tmp_path, 1, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    (run_dir,) = run_folders(tmp_path, RUN_FOLDER)
    periodic = run_dir / "checkpoint.chkpt"
    stopped_at = torch.load(periodic, weights_only=True)["global_step"]
    assert 0 < stopped_at < 8 and len(read_rows(run_dir / "losses.csv")) == stopped_at  # saved at the step it stopped
    last_line = stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr and f"stopped by SIGTERM at step {stopped_at}" in last_line
    assert f"--train_resume {periodic}" in last_line
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "stopped by SIGTERM"

    resumed_cfg, checkpoint = config_for_resume(str(periodic), [])
    assert train(resumed_cfg, DistContext(), str(periodic), checkpoint) == run_dir  # continues in place
    ours = torch.load(periodic, weights_only=True)
    reference = torch.load(full_run / "checkpoint.chkpt", weights_only=True)
    assert ours["global_step"] == reference["global_step"] == 8
    for key in ("generator_state_dict", "discriminator_state_dict"):
        assert weights_equal(ours[key], reference[key]), key
    assert weights_equal(ours["optimizer_G_state_dict"]["state"][0], reference["optimizer_G_state_dict"]["state"][0])
    # the step log holds each step once, with the uninterrupted run's losses
    ours_log, reference_log = (pd.read_csv(p / "losses.csv") for p in (run_dir, full_run))
    assert list(ours_log["step"]) == list(range(1, 9))
    assert np.allclose(ours_log["loss_G"], reference_log["loss_G"], rtol=1e-5)
    # TensorBoard too: step 4, written before the interruption and again after the resume, is shown once
    assert [s.step for s in tensorboard_events(run_dir).Scalars("train/loss_G")] == list(range(1, 9))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["exact"] and summary["resumes"][0]["at_step"] == stopped_at


@pytest.mark.slow  # a training
def test_diverging_loss_stops_naming_the_step_and_never_overwrites_the_good_checkpoint(data, tmp_path):
    # a learning rate of 1e20 sends the weights to ~1e20 after one Adam step: the next losses overflow
    cfg = tiny_config(data, tmp_path, "MRI_GAN.model_params.lr=1.0e+20", "MRI_GAN.model_params.chkpt_freq=1")
    with pytest.raises(NonFiniteLoss) as error:
        train(cfg, DistContext())
    (run_dir,) = run_folders(tmp_path, RUN_FOLDER)
    periodic = run_dir / "checkpoint.chkpt"
    good = torch.load(periodic, weights_only=True)
    bad_step = len(read_rows(run_dir / "losses.csv"))
    assert good["global_step"] == bad_step - 1  # the step whose loss was not finite was never saved
    assert all(torch.isfinite(t).all() for t in good["generator_state_dict"].values())
    message = str(error.value)
    assert "\n" not in message and f"at step {bad_step} " in message
    assert f"the last good checkpoint is {periodic} (step {bad_step - 1})" in message
    assert exit_code(error.value) == 1


@pytest.mark.slow  # full_run: a training
def test_resume_with_other_loader_workers_says_it_is_not_exact(full_run, tmp_path, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(full_run, copy)
    cfg, checkpoint = config_for_resume(str(copy / "checkpoint.chkpt"), [
        "runtime.loader_workers=1", f"logging.root_log_dir={tmp_path / 'logs'}"])
    with caplog.at_level(logging.WARNING):
        run_dir = train(cfg, DistContext(), str(copy / "checkpoint.chkpt"), checkpoint)  # 2 of 2 epochs: no step
    warning = "loader workers changed from 0 to 1"
    assert any(warning in record.getMessage() and "not exact" in record.getMessage() for record in caplog.records)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert not summary["exact"] and warning in summary["resumes"][0]["warnings"][0]


@pytest.mark.slow  # full_run, then a training
def test_resume_from_a_best_checkpoint_starts_a_new_folder_and_keeps_that_file(full_run, tmp_path):
    best = full_run / "checkpoint_best_D.chkpt"
    before = best.read_bytes()
    cfg, checkpoint = config_for_resume(str(best), ["MRI_GAN.model_params.n_epochs=3",
                                                    f"logging.root_log_dir={tmp_path}"])
    run_dir = train(cfg, DistContext(), str(best), checkpoint)
    assert run_dir != full_run and best.read_bytes() == before
    steps = [int(row["step"]) for row in read_rows(run_dir / "losses.csv")]
    assert steps == list(range(1, 13))  # history up to the checkpoint carried over, then on to epoch 3


@pytest.mark.slow  # full_run: a training
def test_checkpoints_record_the_precision_and_a_resume_that_changes_it_says_so(full_run, caplog):
    checkpoint = torch.load(full_run / "checkpoint.chkpt", weights_only=True)
    assert checkpoint["precision"] == "fp32"  # the paper's training precision, unless --precision says otherwise
    cfg, _ = config_for_resume(str(full_run / "checkpoint.chkpt"), [])
    task = MRIGANTraining(cfg, DistContext(), None, read_data(cfg))
    with caplog.at_level(logging.WARNING, logger="utils.train.trainer"):
        task.restore(checkpoint, "cpu_run/checkpoint.chkpt")
        assert not caplog.records and task.trainer.resume_record["exact"]
        task.restore({**checkpoint, "precision": "fp16"}, "gpu_run/checkpoint.chkpt")
    (record,) = caplog.records
    assert record.getMessage() == ("resume from gpu_run/checkpoint.chkpt is not exact: precision changed from fp16 "
                                   "to fp32: the steps from here compute in another precision")
    assert not task.trainer.resume_record["exact"]


# --- command line and torchrun ------------------------------------------------------------------


@pytest.mark.slow  # full_run, then runs train_MRI_GAN.py
def test_script_resumes_with_more_epochs_and_reports_bad_checkpoints_in_one_line(full_run, tmp_path):
    copy = tmp_path / "run" / "MRI_GAN"
    shutil.copytree(full_run, copy)
    result = run_script(SCRIPT, "--train_resume", str(copy / "checkpoint_best_G.chkpt"), "--set",
                        "MRI_GAN.model_params.n_epochs=3", "--set", f"logging.root_log_dir={tmp_path / 'logs'}")
    assert result.returncode == 0, result.stderr
    assert "finished at epoch 3/3" in result.stdout
    assert len(run_folders(tmp_path / "logs", RUN_FOLDER)) == 1

    text = tmp_path / "notes.chkpt"
    text.write_text("not a checkpoint")
    bad = run_script(SCRIPT, "--train_resume", str(text))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "notes.chkpt" in bad.stderr


@pytest.mark.slow  # runs train_MRI_GAN.py three times, a training
def test_export_copies_the_best_generator_after_training_and_nothing_after_an_interruption(data, tmp_path):
    """--export: nothing after SIGTERM; after the resumed run finishes, the run's best generator is at MRI_GAN.weights
    (atomically: no partial file), and a second export says it replaced the first."""
    logs, target = tmp_path / "logs", tmp_path / "weights" / "MRI_GAN_weights.chkpt"
    flags = set_flags(settings(data, logs, "MRI_GAN.model_params.n_epochs=2", f"MRI_GAN.weights={target}"))
    process = subprocess.Popen([sys.executable, str(PROJECT_ROOT / SCRIPT), "--train_from_scratch", "--export",
                                *flags], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(logs, 1, process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "exported" not in stdout and not target.parent.exists()

    (run_dir,) = run_folders(logs, RUN_FOLDER)
    best = run_dir / "checkpoint_best_G.chkpt"
    resumed = run_script(SCRIPT, "--train_resume", str(run_dir / "checkpoint.chkpt"), "--export")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"exported {best} -> {target}\n" in resumed.stdout and "replaced" not in resumed.stdout
    assert target.read_bytes() == best.read_bytes()
    assert sorted(path.name for path in target.parent.iterdir()) == [target.name]  # no partial file left

    again = run_script(SCRIPT, "--train_resume", str(run_dir / "checkpoint.chkpt"), "--export")  # finished: no step
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"exported {best} -> {target}; replaced the previous file\n" in again.stdout


@pytest.mark.slow  # runs train_MRI_GAN.py
def test_script_without_data_set_fails_in_one_line_naming_the_key(tmp_path):
    result = run_script(SCRIPT, "--train_from_scratch", "--set", f"assets={tmp_path}", "--set",
                        f"logging.root_log_dir={tmp_path / 'logs'}", "--device", "cpu")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "features.mri_dataset_real_train_csv" in result.stderr
    assert not (tmp_path / "logs").exists()  # no empty run folder is left behind


@pytest.mark.slow  # torchrun, 2 processes with 2 loader workers each
def test_sigterm_to_torchrun_with_loader_workers_saves_at_the_stop_step_and_the_run_resumes(data, tmp_path):
    """The default set-up on a cluster: loader workers, and SIGTERM to torchrun, which passes it on with killpg on
    each rank's whole session, so the workers get it too. They leave stopping to their rank: both ranks stop at one
    step, rank 0 saves there, and the run resumes to the end."""
    logs = tmp_path / "logs"
    flags = set_flags(settings(data, logs, "MRI_GAN.model_params.batch_size=4", "MRI_GAN.model_params.n_epochs=3",
                               "runtime.loader_workers=2"))
    torchrun = Path(sys.executable).with_name("torchrun")
    first = subprocess.Popen([str(torchrun), "--standalone", "--nproc_per_node", "2", SCRIPT, "--train_from_scratch",
                              *flags], cwd=PROJECT_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(logs, 1, first, timeout=180)
    first.send_signal(signal.SIGTERM)
    stdout, stderr = first.communicate(timeout=180)
    assert "DataLoader worker" not in stderr, stderr[-3000:]
    (run_dir,) = run_folders(logs, RUN_FOLDER)
    step = torch.load(run_dir / "checkpoint.chkpt", weights_only=True)["global_step"]
    assert sorted(re.findall(r"rank (\d): stopped by SIGTERM at step (\d+)", stdout)) == [("0", str(step)),
                                                                                       ("1", str(step))], stdout
    # Each rank ends as an interrupted run does: its one line, exit 143. torchrun itself reports the signal it got
    # and exits 1 (cluster/train.sbatch turns that into the job's 143).
    assert stderr.count(f"{SCRIPT}: stopped by SIGTERM at step {step} ") == 2, stderr[-3000:]
    assert first.returncode == 1 and "got signal: 15" in stderr, stderr[-3000:]
    assert 0 < step < 6 and len(read_rows(run_dir / "losses.csv")) == step  # saved at the step it stopped
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "stopped by SIGTERM"

    resumed = torchrun_two_processes(SCRIPT, "--train_resume", str(run_dir / "checkpoint.chkpt"), timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [int(row["step"]) for row in read_rows(run_dir / "losses.csv")] == list(range(1, 7))  # 8 items, batch 4
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["exact"]


TORCHRUN = ("MRI_GAN.model_params.batch_size=4", "MRI_GAN.model_params.n_epochs=1")


@pytest.fixture(scope="module")
def torchrun_run(data, tmp_path_factory) -> Path:
    """torchrun --standalone --nproc_per_node 2 (gloo): one epoch of 8 items at global batch 4, then --export, which
    only rank 0 does."""
    logs = tmp_path_factory.mktemp("torchrun_logs")
    target = logs / "exported" / "MRI_GAN_weights.chkpt"
    result = torchrun_two_processes(SCRIPT, "--train_from_scratch", "--export",
                                    *set_flags(settings(data, logs, *TORCHRUN, f"MRI_GAN.weights={target}")),
                                    timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("MRI-GAN run folder") == 1 and result.stdout.count("exported ") == 1
    (run_dir,) = run_folders(logs, RUN_FOLDER)
    assert target.read_bytes() == (run_dir / "checkpoint_best_G.chkpt").read_bytes()
    return run_dir


@pytest.mark.slow  # torchrun on two "nodes"
def test_two_nodes_train_like_one_node_and_only_global_rank_0_writes(data, tmp_path, torchrun_run):
    """The multi-node rehearsal: two torchrun "nodes" (--nnodes 2 --node_rank 0|1, gloo on 127.0.0.1), each started
    in its own folder with its own log root. Node 1 writes nothing; losses, test scores and weights are those of
    the one-node run with two processes."""
    logs = rehearse_on_two_nodes(PROJECT_ROOT / SCRIPT,
                                 lambda logs: ["--train_from_scratch", *set_flags(settings(data, logs, *TORCHRUN))],
                                 tmp_path,
                                 started="MRI-GAN run folder", finished="*/MRI_GAN/summary.json")
    (run_dir,) = run_folders(logs, RUN_FOLDER)
    for name in ("losses.csv", "ssim_report.csv"):
        ours, reference = (pd.read_csv(folder / name) for folder in (run_dir, torchrun_run))
        assert list(ours.columns) == list(reference.columns) and np.allclose(ours, reference, rtol=1e-5), name
    ours, reference = (torch.load(folder / "checkpoint.chkpt", weights_only=True) for folder in (run_dir, torchrun_run))
    for key in ("generator_state_dict", "discriminator_state_dict"):
        assert weights_equal(ours[key], reference[key], atol=1e-5), key


@pytest.mark.slow  # torchrun_run, then 2 processes
def test_resume_checkpoint_missing_on_one_node_stops_every_process_with_one_line(data, tmp_path, torchrun_run):
    """Every process reads the resume checkpoint (it holds the configuration); the one whose node lacks it still
    joins the process group, so both stop at once with its one line instead of rank 0 waiting for it."""
    port = free_port()
    paths = [torchrun_run / "checkpoint.chkpt", tmp_path / "not_on_this_node" / "checkpoint.chkpt"]
    results = run_together([([sys.executable, str(PROJECT_ROOT / SCRIPT), "--train_resume", str(path),
                              "--device", "cpu"], PROJECT_ROOT, srun_environment(rank, 2, port))
                            for rank, path in enumerate(paths)], timeout=120)
    for result in results:
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "rank 1 on " in result.stderr and f"{paths[1]}: checkpoint file not found" in result.stderr
