"""The paper's evaluation protocol (utils/evaluation/protocols.py) on hand-made predictions whose answer is worked
out by hand below, the confusion matrices, and the inert config keys' warning."""
import pandas as pd
import pytest

from utils.config import load_config
from utils.evaluation.protocols import confusion_matrices, notebook_rates, paper_protocol

# Face probabilities per video; label 0 = real, 1 = fake. A fake video without any face exists too: it is not in
# this table (no face, no row) and is passed as n_without_face=1.
VIDEOS = {
    ("r1", 0): [0.2, 0.3, 0.6],
    ("r2", 0): [0.1, 0.75],
    ("r3", 0): [0.4],
    ("r4", 0): [0.1, 0.2],
    ("f1", 1): [0.9, 0.8, 0.3],
    ("f2", 1): [0.65, 0.2, 0.2, 0.2],
    ("f3", 1): [0.3],
}


def frame_table() -> pd.DataFrame:
    return pd.DataFrame([{"video_id": video, "probability": p, "label": label}
                         for (video, label), probs in VIDEOS.items() for p in probs])


def test_paper_protocol_by_hand():
    report, videos = paper_protocol(frame_table(), thresholds=[0.5, 0.7], fractions=[0.3, 0.5], n_without_face=1)
    # Grid, thresholds-major. Fake faces (p > t) over faces, a video fake when that share >= the fraction:
    #   t 0.5: r1 1/3, r2 1/2, r3 0, r4 0, f1 2/3, f2 1/4, f3 0
    #          fraction 0.3 -> fake: r1 r2 f1        -> correct r3 r4 f1       = 3/7
    #          fraction 0.5 -> fake: r2 f1           -> correct r1 r3 r4 f1    = 4/7  (first best)
    #   t 0.7: r1 0, r2 1/2, f1 2/3, others 0
    #          fraction 0.3 and 0.5 -> fake: r2 f1   -> correct r1 r3 r4 f1    = 4/7  (ties come later: not chosen)
    assert report["thresholds"]["fake_threshold"] == 0.5 and report["thresholds"]["fake_fraction"] == 0.5
    assert "test split" in report["thresholds"]["source"]
    assert report["grid_accuracy"] == pytest.approx(4 / 7)  # plain accuracy, the search's score
    assert report["n_videos"] == 7 and report["n_dropped_no_face"] == 1  # the face-less fake is not counted
    # At (0.5, 0.5): reals r1 R, r2 F, r3 R, r4 R; fakes f1 F, f2 R, f3 R.
    assert report["confusion_matrix"] == [[3, 1], [2, 1]]
    assert sum(report["confusion_matrix_normalized"], []) == pytest.approx([3 / 4, 1 / 4, 2 / 3, 1 / 3])
    # The notebook's cells: tp = 3/4, fp = 1/4, fn = 2/3, tn = 1/3.
    assert report["acc"] == pytest.approx((3 / 4 + 1 / 3) / 2)  # 13/24 = 0.5417: the mean class recall ...
    assert report["acc"] != pytest.approx(report["grid_accuracy"])  # ... not the plain accuracy 4/7 = 0.5714
    assert report["tpr"] == pytest.approx(9 / 17)  # (3/4) / (3/4 + 2/3)
    assert report["fnr"] == pytest.approx(8 / 17)
    assert report["fpr"] == pytest.approx(3 / 7)  # (1/4) / (1/4 + 1/3)
    assert report["tnr"] == report["specificity"] == pytest.approx(4 / 7)
    assert report["balanced_accuracy"] == pytest.approx((9 / 17 + 4 / 7) / 2)
    assert report["precision"] == pytest.approx(3 / 4)  # (3/4) / (3/4 + 1/4)
    assert report["f1"] == pytest.approx(18 / 29)  # 2 * 3/4 * 9/17 / (3/4 + 9/17)
    # Video scores (mean p of the fake faces): reals 0.6, 0.75, 0, 0; fakes 0.85, 0.65, 0.
    # Fake above real, ties half: 0.85 beats 4; 0.65 beats 3; 0 ties two zeros (1) -> 8 of 12 pairs.
    assert report["auc"] == pytest.approx(2 / 3)
    assert list(videos["verdict"]) == [1, 0, 0, 0, 1, 0, 0]  # sorted ids: f1 f2 f3 r1 r2 r3 r4


def test_notebook_rates_reproduce_the_papers_table_from_its_matrices():
    # The paper's row-normalised video matrices (printed to two decimals) and its Table: plain frames, then MRI.
    keys = ("tpr", "fnr", "fpr", "tnr", "acc", "balanced_accuracy", "f1", "precision")
    plain = notebook_rates([[0.92, 0.076], [0.10, 0.90]])
    assert [plain[k] for k in keys] == pytest.approx([0.90, 0.10, 0.08, 0.92, 0.91, 0.91, 0.91, 0.92], abs=0.006)
    mri = notebook_rates([[0.85, 0.15], [0.38, 0.62]])
    assert [mri[k] for k in keys] == pytest.approx([0.69, 0.31, 0.19, 0.81, 0.74, 0.75, 0.77, 0.85], abs=0.008)


def test_confusion_matrices_rows_are_actual_columns_predicted():
    raw, normalised = confusion_matrices([0, 0, 0, 1], [0, 1, 1, 1])
    assert raw.to_numpy().tolist() == [[1, 2], [0, 1]]
    assert normalised.to_numpy()[0].tolist() == pytest.approx([1 / 3, 2 / 3])
    assert list(raw.index) == ["actual Real", "actual Fake"]
    assert list(raw.columns) == ["predicted Real", "predicted Fake"]
    _, empty_row = confusion_matrices([1, 1], [1, 0])
    assert empty_row.isna().to_numpy()[0].all()  # no real video: that row is undefined, not zero


def test_a_compatibility_key_set_to_another_value_warns_once(capsys):
    load_config(None, ["logging.line_len=120", "deep_fake.training.model_params.opt_level=O0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1  # opt_level O0 is the default: no warning
    assert "'logging.line_len'" in err[0] and "no effect" in err[0]
    load_config(None, ["MRI_GAN.model_params.sample_gen_freq=5"])  # a key that takes effect: silent
    assert capsys.readouterr().err == ""
