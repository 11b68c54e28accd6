"""Specification tests for utils/metrics.py on small examples whose values are worked out by hand:
frame metrics, EER, the video rule, video metrics with face-less videos, the grid search, ROC PNGs."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn import metrics as skm

from utils.config import load_config
from utils.evaluation.metrics import (
    eer,
    frame_metrics,
    grid_search,
    json_safe,
    roc_png,
    video_metrics,
    video_rule,
    video_verdicts,
)

LABELS = [0, 0, 1, 1]
PROBS = [0.2, 0.6, 0.6, 0.9]


def test_frame_metrics_by_hand():
    m = frame_metrics(LABELS, PROBS)
    # predicted fake (p > 0.5): [0, 1, 1, 1] -> tp 2, fp 1, tn 1, fn 0
    assert (m["tp"], m["fp"], m["tn"], m["fn"], m["n"]) == (2, 1, 1, 0, 4)
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["recall"] == 1.0 and m["fnr"] == 0.0
    assert m["specificity"] == 0.5 and m["fpr"] == 0.5
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 5)
    # fake-real pairs ranked right: 0.6>0.2, 0.6=0.6 (half), 0.9>0.2, 0.9>0.6 -> 3.5 of 4
    assert m["roc_auc"] == pytest.approx(0.875)
    # ranking 0.9 (P 1, R 1/2), then 0.6 (P 2/3, R 1): AP = 1/2 * 1 + 1/2 * 2/3
    assert m["average_precision"] == pytest.approx(0.5 + 1 / 3)
    assert m["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.4) + math.log(0.6) + math.log(0.9)) / 4)
    assert m["eer"] == pytest.approx(0.25)


def test_frame_is_fake_only_strictly_above_the_threshold():
    m = frame_metrics([0, 1], [0.5, 0.5])
    assert (m["tp"], m["fn"], m["tn"]) == (0, 1, 1)
    assert frame_metrics([1], [0.71], threshold=0.7)["tp"] == 1
    assert frame_metrics([1], [0.7], threshold=0.7)["fn"] == 1


def test_frame_metrics_agree_with_scikit_learn_on_raw_counts():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(0.35 * labels + rng.uniform(0, 0.65, 200), 0, 1)
    m = frame_metrics(labels, probs, threshold=0.5)
    predicted = (probs > 0.5).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, predicted))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, predicted))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, predicted))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, predicted))
    assert m["specificity"] == pytest.approx(skm.recall_score(labels, predicted, pos_label=0))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, probs))


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0]])
def test_one_class_input_gives_nan_not_a_crash(labels):
    m = frame_metrics(labels, [0.9, 0.2, 0.6])
    assert math.isnan(m["roc_auc"]) and math.isnan(m["eer"])
    assert m["accuracy"] == pytest.approx(2 / 3 if labels[0] == 1 else 1 / 3)
    assert math.isfinite(m["log_loss"])
    if labels[0] == 1:
        assert math.isnan(m["specificity"]) and m["balanced_accuracy"] == pytest.approx(2 / 3)
    else:
        assert math.isnan(m["recall"]) and math.isnan(m["average_precision"])


@pytest.mark.parametrize(
    "labels, scores, expected",
    [
        ([0, 1], [0.1, 0.9], 0.0),  # perfect ranking
        ([0, 1], [0.9, 0.1], 1.0),  # inverted ranking
        ([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5),  # ROC point (FPR 1/2, FNR 1/2) exactly
        # FNR drops 1 -> 0 at FPR 1/3 (vertical ROC step): crossing at FPR = FNR = 1/3
        ([0, 0, 0, 1], [0.1, 0.2, 0.8, 0.7], 1 / 3),
        # diagonal ROC segment from (FPR 0, FNR 1/2) to (FPR 1/2, FNR 0): crossing at 1/4
        (LABELS, PROBS, 0.25),
        ([0, 1], [0.5, 0.5], 0.5),  # a tie: the chance diagonal
    ],
)
def test_eer_by_hand(labels, scores, expected):
    assert eer(labels, scores) == pytest.approx(expected)


# Three videos: a real one, and two fakes; per-face P(fake).
FACES = {
    "a": (0, [0.2, 0.7, 0.1, 0.1]),
    "b": (1, [0.95, 0.85, 0.3]),
    "c": (1, [0.55, 0.4]),
}


def frame_table(with_labels=True):
    rows = [{"video_id": vid, "probability": p, "label": label} for vid, (label, probs) in FACES.items() for p in probs]
    table = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must not matter
    return table if with_labels else table.drop(columns="label")


def test_video_rule_by_hand():
    assert video_rule(FACES["a"][1], 0.5, 0.5) == (False, 0.7, 1)  # 1 of 4 fake < 50 %
    assert video_rule(FACES["b"][1], 0.5, 0.5) == (True, pytest.approx(0.9), 2)
    assert video_rule(FACES["c"][1], 0.5, 0.5) == (True, 0.55, 1)  # 1 of 2 is at least 50 %
    assert video_rule(FACES["c"][1], 0.6, 0.5) == (False, 0.0, 0)  # no fake face: fake_prob 0


def test_video_rule_threshold_is_strict_and_fraction_inclusive():
    assert video_rule([0.8, 0.8], 0.8, 0.1) == (False, 0.0, 0)
    three_of_ten = [0.9] * 3 + [0.1] * 7
    assert video_rule(three_of_ten, 0.5, 0.3)[0]  # 0.3 * 10 is 3.0000000000000004 in floats
    assert video_rule([0.9] * 7 + [0.1] * 3, 0.5, 0.7)[0]
    assert not video_rule([0.9] * 2 + [0.1] * 8, 0.5, 0.3)[0]


def test_video_rule_refuses_a_video_without_faces():
    with pytest.raises(ValueError, match="at least one face"):
        video_rule([], 0.5, 0.5)


def test_video_verdicts_table_by_hand():
    table = video_verdicts(frame_table(), 0.5, 0.5).set_index("video_id")
    assert list(table.index) == ["a", "b", "c"]
    assert list(table["n_faces"]) == [4, 3, 2]
    assert list(table["n_fake"]) == [1, 2, 1]
    assert list(table["verdict"]) == [0, 1, 1]
    assert list(table["label"]) == [0, 1, 1]
    np.testing.assert_allclose(table["fake_fraction_observed"], [0.25, 2 / 3, 0.5])
    np.testing.assert_allclose(table["mean_prob"], [0.275, 0.7, 0.475])
    np.testing.assert_allclose(table["fake_prob"], [0.7, 0.9, 0.55])


def test_video_verdicts_without_labels():
    table = video_verdicts(frame_table(with_labels=False), 0.8, 0.5)
    assert "label" not in table.columns
    assert list(table["verdict"]) == [0, 1, 0]


def test_a_video_with_mixed_frame_labels_is_an_error():
    table = frame_table()
    table.loc[table["video_id"] == "a", "label"] = [0, 1, 0, 0]
    with pytest.raises(ValueError, match="'a'"):
        video_verdicts(table, 0.5, 0.5)


def test_video_metrics_by_hand():
    videos = video_verdicts(frame_table(), 0.8, 0.5)
    # verdicts a 0, b 1, c 0; fake_prob a 0 (no face above 0.8), b 0.9, c 0
    m = video_metrics(videos)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 0, 1, 1)
    assert m["accuracy"] == pytest.approx(2 / 3)
    # fakes b (0.9) and c (0) against real a (0): one win and one tie (1/2)
    assert m["roc_auc"] == pytest.approx(0.75)
    # log loss on the mean face probabilities 0.275 (real a), 0.7 (fake b), 0.475 (fake c)
    assert m["log_loss"] == pytest.approx(-(math.log(1 - 0.275) + math.log(0.7) + math.log(0.475)) / 3)
    assert m["n_no_face"] == 0 and m["no_face_videos"] == []


def test_videos_without_faces_are_counted_and_scored_real():
    videos = video_verdicts(frame_table(), 0.8, 0.5)
    m = video_metrics(videos, no_face_labels=pd.Series({"d": 1, "e": 0}))
    assert m["n"] == 5 and m["n_no_face"] == 2 and m["no_face_videos"] == ["d", "e"]
    # d (fake) becomes a miss, e (real) a correct rejection
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 0, 2, 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["log_loss"] == pytest.approx(-(math.log(1 - 0.275) + math.log(0.7) + math.log(0.475)
                                            + 2 * math.log(0.5)) / 5)
    assert video_metrics(videos, no_face_labels={"d": 1})["n_no_face"] == 1
    with pytest.raises(ValueError, match="both with faces and without"):
        video_metrics(videos, no_face_labels={"a": 0})


def test_grid_search_by_hand_first_best_wins():
    best_threshold, best_fraction, table = grid_search(frame_table(), [0.5, 0.6, 0.8], [0.3, 0.5, 0.7])
    assert list(table.columns) == ["fake_threshold", "fake_fraction", "accuracy"]
    assert list(zip(table["fake_threshold"], table["fake_fraction"]))[:4] == [(0.5, 0.3), (0.5, 0.5),
                                                                             (0.5, 0.7), (0.6, 0.3)]
    np.testing.assert_allclose(table["accuracy"], [1, 1, 1 / 3, 2 / 3, 2 / 3, 1 / 3, 2 / 3, 2 / 3, 1 / 3])
    assert (best_threshold, best_fraction) == (0.5, 0.3)  # (0.5, 0.5) ties; the first one wins


def test_grid_search_covers_the_configured_42_settings():
    cfg = load_config()
    thresholds = cfg["deep_fake.evaluation.grid_fake_threshold"]
    fractions = cfg["deep_fake.evaluation.grid_fake_fraction"]
    best_threshold, best_fraction, table = grid_search(frame_table(), thresholds, fractions)
    assert len(table) == 42
    assert table["accuracy"].max() == 1.0
    # a (1 fake face of 4) is called fake at fractions 0.1 and 0.2; 0.3 is the first all-correct setting
    assert (best_threshold, best_fraction) == (0.5, 0.3)


def test_grid_search_needs_labels():
    with pytest.raises(ValueError, match="label"):
        grid_search(frame_table(with_labels=False), [0.5], [0.5])


def test_json_safe_writes_null_for_nan():
    m = json_safe(frame_metrics([1, 1], [0.9, 0.8]))
    text = json.dumps(m, allow_nan=False)
    assert json.loads(text)["roc_auc"] is None


@pytest.mark.parametrize("labels", [LABELS, [1, 1, 1, 1]])
def test_roc_png_is_written_atomically(tmp_path, labels):
    path = roc_png(labels, PROBS, tmp_path / "roc" / "roc.png", "Validation frames")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (500, 500)
    assert sorted(p.name for p in path.parent.iterdir()) == ["roc.png"]  # no partial file left
