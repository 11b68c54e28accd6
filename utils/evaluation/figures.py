"""Figures and tables like the original's: confusion matrices of a test, the curves of several MRI-GAN runs
(gen_plots.py --mri_gan_runs) and the side-by-side results of classifier tests (gen_plots.py --classifier_tests)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import roc_auc_score, roc_curve

from utils.errors import ConfigError
from utils.evaluation.protocols import CLASS_NAMES, confusion_matrices
from utils.fileio import write_csv, write_text
from utils.names import METHOD_OF_DATASET
from utils.plotting import new_figure, save_png

EWM_ALPHA = 0.01  # the original's smoothing of every curve


def draw_confusion(axes, matrix: np.ndarray, title: str, normalised: bool) -> None:
    """One confusion matrix as an annotated heat map (rows actual, columns predicted)."""
    matrix = np.asarray(matrix, dtype=float)
    shade = np.nan_to_num(matrix if normalised else matrix / max(np.nanmax(matrix), 1))
    axes.imshow(shade, cmap="Blues", vmin=0, vmax=1)
    for (row, column), value in np.ndenumerate(matrix):
        text = "n/a" if not math.isfinite(value) else f"{value:.2f}" if normalised else f"{int(value)}"
        axes.text(column, row, text, ha="center", va="center", fontsize=12,
                  color="white" if shade[row, column] > 0.5 else "black")
    axes.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES,
             xlabel="predicted", ylabel="actual")
    axes.set_title(title, fontsize=10)


def write_confusion(out_dir: Path, prefix: str, labels: Sequence[int], predictions: Sequence[int],
                    names: dict[str, str], title: str) -> list[Path]:
    """Write the raw and row-normalised confusion matrices as CSV and PNG into `out_dir`, each named
    `<prefix>_<name>` with the logging.model_conf_matrix[_normalized]_{csv,png} names from the config."""
    raw, normalised = confusion_matrices(labels, predictions)
    written = []
    for table, kind, is_normalised in ((raw, "", False), (normalised, "_normalized", True)):
        csv_path = out_dir / f"{prefix}_{names[f'model_conf_matrix{kind}_csv']}"
        png_path = out_dir / f"{prefix}_{names[f'model_conf_matrix{kind}_png']}"
        written.append(write_csv(csv_path, table, index=True))
        figure = new_figure(4, 3.6)
        subtitle = "row-normalised" if is_normalised else "counts"
        draw_confusion(figure.add_subplot(), table.to_numpy(), f"{title}\n{subtitle}", is_normalised)
        written.append(save_png(figure, png_path))
    return written


# --- MRI-GAN runs -----------------------------------------------------------------------------------


@dataclass
class MRIGANRun:
    """One training run's logs: its folder, τ, per-step losses and per-epoch test scores."""

    folder: Path
    tau: float
    steps: pd.DataFrame
    epochs: pd.DataFrame

    @property
    def label(self) -> str:
        return f"τ = {self.tau:g}"


def read_mri_gan_run(folder: str | Path) -> MRIGANRun:
    """An MRI-GAN run folder (logs/<time>/<model_name>, or logs/<time> holding one) with the config.yml its run
    recorded; a folder that is not one is a ConfigError naming it."""
    folder = Path(folder)
    config_file = folder / "config.yml" if (folder / "config.yml").is_file() else folder.parent / "config.yml"
    if not config_file.is_file():
        raise ConfigError(f"{folder}: not an MRI-GAN run folder (no config.yml in it or beside it)")
    params = (yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}).get("MRI_GAN", {}).get("model_params")
    if not isinstance(params, dict) or "tau" not in params:
        raise ConfigError(f"{config_file}: holds no MRI_GAN.model_params.tau: not an MRI-GAN run's config")
    if config_file.parent == folder:
        folder = folder / params.get("model_name", "MRI_GAN")
    tables = []
    for key in ("losses_file", "ssim_report_file"):
        path = folder / params[key]
        try:
            tables.append(pd.read_csv(path))
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ConfigError(f"{path}: cannot read the run's log ({str(exc).splitlines()[0]})") from None
    return MRIGANRun(folder, float(params["tau"]), tables[0], tables[1])


# (file, y label, table, column): the original's five figures; its "SSIM loss" plotted the pixel column, fixed here
MRI_GAN_CURVES = (
    ("ssim_score_plot.png", "mean test SSIM", "epochs", "test_ssim"),
    ("loss_G_plot.png", "generator loss (total)", "steps", "loss_G"),
    ("loss_D_plot.png", "discriminator loss (total)", "steps", "loss_D"),
    ("ssim_loss_plot.png", "SSIM loss sqrt(1 - SSIM + ε)", "steps", "loss_ssim"),
    ("L2_loss_plot.png", "pixel loss (MSE)", "steps", "loss_pixel"),
)


def plot_mri_gan_runs(run_folders: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """The original's gen_plots figures for several runs on shared axes, one colour per run labelled by its τ:
    each curve raw (thin) and exponentially weighted (α = 0.01, thick) against the global step. Also writes
    mri_gan_runs.csv: one row per run (folder, tau, epochs, steps, best and final test SSIM, final pixel MSE)."""
    runs = [read_mri_gan_run(folder) for folder in run_folders]
    out_dir = Path(out_dir)
    written = []
    for file_name, y_label, table_name, column in MRI_GAN_CURVES:
        figure = new_figure(7, 4.5)
        axes = figure.add_subplot()
        for index, run in enumerate(runs):
            table = getattr(run, table_name)
            colour = f"C{index}"
            axes.plot(table["step"], table[column], color=colour, alpha=0.3, linewidth=0.8)
            smooth = table[column].ewm(alpha=EWM_ALPHA).mean()
            axes.plot(table["step"], smooth, color=colour, linewidth=2, label=run.label)
        axes.set(xlabel="global step", ylabel=y_label, title=f"{y_label}: raw and EWM (α = {EWM_ALPHA})")
        axes.grid(alpha=0.3)
        axes.legend()
        written.append(save_png(figure, out_dir / file_name))
    summary = pd.DataFrame([{
        "run": str(run.folder), "tau": run.tau, "epochs": int(run.epochs["epoch"].max()),
        "steps": int(run.steps["step"].max()), "best_test_ssim": float(run.epochs["test_ssim"].max()),
        "final_test_ssim": float(run.epochs["test_ssim"].iloc[-1]),
        "final_test_pixel": float(run.epochs["test_pixel"].iloc[-1])} for run in runs])
    written.append(write_csv(out_dir / "mri_gan_runs.csv", summary))
    return written


# --- classifier tests -------------------------------------------------------------------------------


TABLE_COLUMNS = ["test", "method", "protocol", "fake_threshold", "fake_fraction", "n_videos", "acc",
                 "balanced_accuracy", "tpr", "fnr", "fpr", "tnr", "f1", "precision", "auc"]


@dataclass
class ClassifierTest:
    folder: Path
    metrics: dict
    videos: pd.DataFrame

    @property
    def method(self) -> str:
        return METHOD_OF_DATASET.get(self.metrics.get("dataset"), str(self.metrics.get("dataset")))


def read_classifier_test(folder: str | Path) -> ClassifierTest:
    """A test folder written by deep_fake_detect.py (metrics.json with a paper section, video_predictions.csv)."""
    folder = Path(folder)
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        videos = pd.read_csv(folder / "video_predictions.csv", dtype={"video_id": str})
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder}: not a classifier test folder ({str(exc).splitlines()[0]})") from None
    if "video" not in metrics or "paper" not in metrics:
        raise ConfigError(f"{folder}/metrics.json: no 'video' and 'paper' sections (re-test the checkpoint with "
                          "deep_fake_detect.py --test_saved_model)")
    return ClassifierTest(folder, metrics, videos)


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def table_rows(test: ClassifierTest, name: str) -> list[dict]:
    """Two rows for one test: our protocol (textbook rates, fake positive, from raw counts) and the paper's
    (the notebook's rates, see utils.evaluation.protocols.notebook_rates)."""
    video, paper = test.metrics["video"], test.metrics["paper"]
    ours = {"protocol": "ours", **test.metrics["thresholds"], "n_videos": video["n"], "acc": video["accuracy"],
            "balanced_accuracy": video["balanced_accuracy"], "tpr": video["recall"], "fnr": video["fnr"],
            "fpr": video["fpr"], "tnr": video["specificity"], "f1": video["f1"], "precision": video["precision"],
            "auc": video["roc_auc"]}
    theirs = {"protocol": "paper", **paper["thresholds"], "n_videos": paper["n_videos"],
              **{key: paper[key] for key in TABLE_COLUMNS[6:]}}
    rows = []
    for row in (ours, theirs):
        row = {"test": name, "method": test.method, **row}
        rows.append({column: row[column] if column in ("test", "method", "protocol") else _nan(row[column])
                     for column in TABLE_COLUMNS})
    return rows


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    body = "".join("| " + " | ".join(v if isinstance(v, str) else "n/a" if not math.isfinite(v) else f"{v:.4g}"
                                     for v in row) + " |\n" for row in table.itertuples(index=False))
    return header + body


def plot_classifier_tests(test_folders: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """For several tests (e.g. plain_frames and MRI): roc.png (each test's video ROC on one axes),
    confusion_matrices.png (row-normalised video matrices, our protocol above the paper's, one column per test)
    and metrics_table.md / metrics_table.csv (one row per test and protocol)."""
    tests = [read_classifier_test(folder) for folder in test_folders]
    names = [test.method if [t.method for t in tests].count(test.method) == 1 else f"{test.method} ({test.folder.name})"
             for test in tests]
    out_dir = Path(out_dir)
    figure = new_figure(5.5, 5)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for name, test in zip(names, tests):
        labels, scores = test.videos["label"].to_numpy(dtype=int), test.videos["fake_prob"].to_numpy(dtype=float)
        if 0 < labels.sum() < labels.size:
            fpr, tpr, _ = roc_curve(labels, scores)
            axes.plot(fpr, tpr, linewidth=2, label=f"{name}: AUC {roc_auc_score(labels, scores):.3f}")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate (real called fake)",
             ylabel="True positive rate (fake called fake)", title="Test videos: ROC (score = mean p of fake faces)")
    axes.legend(loc="lower right")
    written = [save_png(figure, out_dir / "roc.png")]

    figure = new_figure(3.6 * len(tests), 6.8)
    grid = figure.subplots(2, len(tests), squeeze=False)
    for column, (name, test) in enumerate(zip(names, tests)):
        video = test.metrics["video"]
        ours = np.array([[video["tn"], video["fp"]], [video["fn"], video["tp"]]], dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            ours = ours / ours.sum(axis=1, keepdims=True)
        draw_confusion(grid[0, column], ours, f"{name}: ours", normalised=True)
        draw_confusion(grid[1, column], test.metrics["paper"]["confusion_matrix_normalized"], f"{name}: paper's",
                       normalised=True)
    written.append(save_png(figure, out_dir / "confusion_matrices.png"))

    table = pd.DataFrame([row for name, test in zip(names, tests) for row in table_rows(test, name)],
                         columns=TABLE_COLUMNS)
    written.append(write_csv(out_dir / "metrics_table.csv", table))
    written.append(write_text(out_dir / "metrics_table.md", _markdown(table)))
    return written
