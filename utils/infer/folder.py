"""The app's folder mode: one CSV row per video, on standard output and appended to a file that lets a killed run
resume (videos already in it are skipped); with labels, each row also carries the label and every face's
probability, which utils.evaluation.labelled turns into metrics."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from utils.errors import ConfigError
from utils.fileio import atomic_path
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


class RowLog:
    """The per-video CSV: rows already written (complete lines only; a line cut by a kill is dropped and redone)
    and an append-only writer that flushes each row."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        self.rows: list[dict] = []
        if path.is_file() and path.stat().st_size:
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if reader.fieldnames != columns:
                    raise ConfigError(f"--output_csv {path}: written by another kind of run (columns "
                                      f"{reader.fieldnames}); choose a new file")
                self.rows = [row for row in reader if None not in row.values() and row["status"]]
        path.parent.mkdir(parents=True, exist_ok=True)
        # rewritten without a line cut by a kill, atomically: a kill now loses none of the finished rows
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        self._handle = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=columns)

    def done(self) -> set[str]:
        return {row["path"] for row in self.rows}

    def append(self, row: dict) -> None:
        self._writer.writerow(row)
        self._handle.flush()
        self.rows.append({key: str(value) for key, value in row.items()})  # as a re-run reads them back

    def close(self) -> None:
        self._handle.close()





def score_folder(detector: Detector, videos: list[Path], labels: dict[Path, int] | None = None,
                 out_csv: Path | None = None, save_mri: Path | None = None) -> tuple[list[dict], list[dict]]:
    """Classify every video not yet in `out_csv`; print each row as CSV and append it to `out_csv`.
    With `labels`, only the labelled videos are scored. Returns (every row, old and new; this run's results)."""
    columns = LABELLED_COLUMNS if labels is not None else APP_COLUMNS
    log = RowLog(out_csv, columns) if out_csv else None
    done = log.done() if log else set()
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
    return (log.rows if log else rows), results
