"""The app's folder mode: one CSV row per video, on standard output and appended to a file that lets a killed run
resume (videos already in it are skipped); with labels, each row also carries the label and every face's
probability, which utils.evaluation.labelled turns into metrics."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from utils.csv_log import CsvLog
from utils.errors import ConfigError
from utils.infer.detect import Detector, VideoResult, classify_videos

APP_COLUMNS = ["path", "verdict", "probability", "n_faces", "status", "error"]
LABELLED_COLUMNS = [*APP_COLUMNS, "label", "mean_probability", "n_fake", "face_probabilities"]


def app_row(result: VideoResult, label: int | None = None) -> dict:
    """One row of the app's folder CSV; with a label, also the label and the per-face evidence."""
    row = {"path": result.path, "verdict": result.verdict or "",
           "probability": "" if result.probability is None else result.probability, "n_faces": result.n_faces,
           "status": result.status, "error": result.error}
    if label is not None:
        probs = [face.fake_probability for face in result.faces if face.fake_probability is not None]
        row |= {"label": label, "mean_probability": f"{np.mean(probs):.6f}" if probs else "", "n_fake": result.n_fake,
                "face_probabilities": " ".join(f"{p:.9g}" for p in probs)}
    return row


def open_folder_log(path: Path, columns: list[str]) -> CsvLog:
    """The per-video CSV of a folder run, restarted with the rows a killed run finished (complete lines with a
    status; a line cut by a kill is dropped and its video redone)."""
    try:
        return CsvLog(path, columns, keep=lambda row: bool(row["status"]), strict_columns=True)
    except ConfigError as exc:
        raise ConfigError(f"--output_csv {exc}") from None


def score_folder(detector: Detector, videos: list[Path], labels: dict[Path, int] | None = None,
                 out_csv: Path | None = None, save_mri: Path | None = None) -> tuple[list[dict], list[dict]]:
    """Classify every video not yet in `out_csv`; print each row as CSV and append it to `out_csv`.
    With `labels`, only the labelled videos are scored. Returns (every row, old and new; this run's results)."""
    columns = LABELLED_COLUMNS if labels is not None else APP_COLUMNS
    log = open_folder_log(out_csv, columns) if out_csv else None
    done = log.done("path") if log else set()
    todo = [video for video in videos if str(video) not in done and (labels is None or video in labels)]
    if done:
        print(f"{len(done)} video(s) already in {out_csv}: skipped", file=sys.stderr)
    writer = csv.DictWriter(sys.stdout, fieldnames=columns)
    writer.writeheader()
    rows, results = [], []
    try:
        for result in classify_videos(detector, todo, save_mri):
            row = app_row(result, labels[Path(result.path)] if labels is not None else None)
            writer.writerow(row)
            sys.stdout.flush()
            if log:
                log.append(row)
            rows.append(row)
            results.append(result.to_dict())
    finally:
        if log:
            log.close()
    # every row as a re-run reads them back: the finished ones from the file, this run's as strings
    return ([*log.kept, *({key: str(value) for key, value in row.items()} for row in rows)] if log else rows), results
