"""The paper's evaluation protocol, computed beside ours, and the confusion matrices of a test.

Ours (utils/evaluation/metrics.py): video thresholds tuned on validation, videos without a face counted as
real, metrics from raw counts. The paper's (docs/reproducing.md#two-protocols): the grid searched on the test
split itself, videos without a face dropped, and the notebook's rates read off the row-normalised confusion
matrix.
Only ours is an unbiased estimate (docs/differences.md#thresholds-on-validation and
docs/differences.md#counted-videos-and-one-rule).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from utils.evaluation.metrics import grid_search, video_verdicts

CLASS_NAMES = ("Real", "Fake")  # rows: actual class; columns: predicted class (the original's layout)


def confusion_matrices(labels: Sequence[int], predictions: Sequence[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(raw counts, row-normalised) 2x2 tables, rows the actual class (Real, Fake), columns the predicted one.
    A row with no sample is nan when normalised."""
    labels, predictions = np.asarray(labels, dtype=int), np.asarray(predictions, dtype=int)
    counts = np.array([[np.sum((labels == actual) & (predictions == predicted)) for predicted in (0, 1)]
                       for actual in (0, 1)])
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = counts / counts.sum(axis=1, keepdims=True)
    names = {"index": [f"actual {c}" for c in CLASS_NAMES], "columns": [f"predicted {c}" for c in CLASS_NAMES]}
    return pd.DataFrame(counts, **names), pd.DataFrame(normalised, **names)


def notebook_rates(normalised: pd.DataFrame | np.ndarray) -> dict:
    """The notebook's rates, computed its way from the row-normalised matrix m (rows actual Real, Fake; columns
    predicted Real, Fake), with Real as its "positive" class and its cells taken as
    tp = m[0,0], fp = m[0,1], fn = m[1,0], tn = m[1,1]:

    tpr = tp/(tp+fn), fnr = fn/(tp+fn), fpr = fp/(fp+tn), tnr = specificity = tn/(fp+tn),
    acc = (tp+tn)/(tp+fp+fn+tn) = the mean of the two class recalls (the rows sum to 1),
    balanced_accuracy = (tpr+tnr)/2, precision = tp/(tp+fp) = m[0,0] (the recall of the reals),
    f1 = 2·precision·tpr/(precision+tpr).

    These are not the textbook rates of a fake detector (docs/differences.md#counted-videos-and-one-rule); they are
    kept so that our numbers can be laid next to the paper's Table.
    """
    m = np.asarray(normalised, dtype=float)
    tp, fp, fn, tn = m[0, 0], m[0, 1], m[1, 0], m[1, 1]

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b and math.isfinite(b) else math.nan

    tpr, tnr, precision = ratio(tp, tp + fn), ratio(tn, fp + tn), ratio(tp, tp + fp)
    return {"acc": ratio(tp + tn, tp + fp + fn + tn), "balanced_accuracy": (tpr + tnr) / 2, "tpr": tpr,
            "fnr": ratio(fn, tp + fn), "fpr": ratio(fp, fp + tn), "tnr": tnr,
            "f1": ratio(2 * precision * tpr, precision + tpr), "precision": precision, "specificity": tnr}


def paper_protocol(frame_table: pd.DataFrame, thresholds: Sequence[float], fractions: Sequence[float],
                   n_without_face: int = 0) -> tuple[dict, pd.DataFrame]:
    """The paper's protocol on a test split's faces (columns video_id, probability, label; one row per
    face crop).

    Videos without a face are not in the table, so they are dropped, as the original did. The video rule's grid
    is searched on these same test videos by plain video accuracy (thresholds-major, first best), and at the
    winning pair the notebook's rates (see notebook_rates) and the AUC of the video scores (mean p of the fake
    faces) are computed. `n_without_face` (the split's videos where no face was found) is recorded as dropped.
    Returns (report, one row per video at the winning pair).
    """
    fake_threshold, fake_fraction, grid = grid_search(frame_table, thresholds, fractions)
    videos = video_verdicts(frame_table, fake_threshold, fake_fraction)
    raw, normalised = confusion_matrices(videos["label"], videos["verdict"])
    labels = videos["label"].to_numpy(dtype=int)
    auc = float(roc_auc_score(labels, videos["fake_prob"])) if 0 < labels.sum() < labels.size else math.nan
    report = {
        "protocol": "the paper's: video thresholds searched on this test split, videos without a face dropped, "
                    "rates read off the row-normalised confusion matrix with Real as positive (notebook)",
        "thresholds": {"fake_threshold": fake_threshold, "fake_fraction": fake_fraction,
                       "source": "grid search on the test split (the paper's protocol)"},
        "n_videos": int(len(videos)), "n_dropped_no_face": int(n_without_face),
        "grid_accuracy": float(grid["accuracy"].max()),  # plain accuracy of the winning pair, the search's score
        **notebook_rates(normalised), "auc": auc,
        "confusion_matrix": raw.to_numpy().tolist(),
        "confusion_matrix_normalized": [[v if math.isfinite(v) else None for v in row]
                                        for row in normalised.to_numpy().tolist()],
    }
    return report, videos
