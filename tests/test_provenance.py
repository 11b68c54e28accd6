"""utils/infer/provenance.py: folders of MRIs record their generator and refuse another one; the record travels to
the frame-label CSV, the MRI classifier's checkpoint, its export, and the warnings of the app and the test; the
rendering an MRI classifier gets (its record, the original authors' layout, the flag)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import original_classifier_checkpoint
from utils.checkpoint import read_checkpoint
from utils.config import load_config
from utils.errors import ConfigError
from utils.fileio import sha256
from utils.infer.detect import Detector
from utils.infer.export import export
from utils.infer.provenance import (
    RECORD_FILE,
    RENDERING_FILE,
    RENDERING_KEY,
    SHA_KEY,
    UNKNOWN,
    check_folder,
    classifier_rendering,
    copy_record,
    csv_source,
    generator_source,
    mismatch_warning,
    preprocess_rendering,
    record_folder,
    recorded_source,
    rendering_warning,
)
from utils.train.classifier_training import model_params

KEY = "features.dfdc.train_mrip2p_faces"


def claim_folder(folder, source, set_key):
    """What --gen_dfdc_mri does to each split's folder before making its MRIs."""
    check_folder(folder, source, set_key)
    record_folder(folder, source)


def generator_file(path, tau=None, value=0.0):
    """A small stand-in for a generator checkpoint: what matters here is its bytes and its recorded config."""
    state = {"generator_state_dict": {"w": torch.full((2,), value)}}
    if tau is not None:
        state["config"] = {"MRI_GAN": {"model_params": {"tau": tau}}}
    torch.save(state, path)
    return path


def test_a_new_folder_records_the_generator_sha256_tau_and_rendering(tmp_path):
    weights = generator_file(tmp_path / "g.chkpt", tau=0.3)
    claim_folder(tmp_path / "mris", generator_source(weights, "original"), KEY)
    recorded = recorded_source(tmp_path / "mris")
    assert (recorded.sha256, recorded.tau, recorded.rendering) == (sha256(weights), 0.3, "original")
    assert (tmp_path / "mris" / RENDERING_FILE).read_text().strip() == "original"


def test_a_generator_without_its_run_config_records_tau_unknown(tmp_path):
    assert generator_source(generator_file(tmp_path / "g.chkpt"), "default").tau == UNKNOWN


def test_the_same_generator_is_accepted_again(tmp_path):
    source = generator_source(generator_file(tmp_path / "g.chkpt", tau=0.3), "default")
    claim_folder(tmp_path / "mris", source, KEY)
    claim_folder(tmp_path / "mris", source, KEY)
    assert recorded_source(tmp_path / "mris") == source


def test_another_generator_is_refused_naming_the_folder_both_generators_and_the_key(tmp_path):
    old = generator_source(generator_file(tmp_path / "old.chkpt", tau=0.3), "default")
    new = generator_source(generator_file(tmp_path / "new.chkpt", tau=0.5, value=1.0), "default")
    claim_folder(tmp_path / "mris", old, KEY)
    with pytest.raises(ConfigError) as refused:
        claim_folder(tmp_path / "mris", new, KEY)
    message = str(refused.value)
    assert "\n" not in message and str(tmp_path / "mris") in message
    assert old.sha256[:12] in message and new.sha256[:12] in message and f"--set {KEY}=DIR" in message
    assert recorded_source(tmp_path / "mris") == old  # the record is not overwritten


def test_another_rendering_is_refused(tmp_path):
    weights = generator_file(tmp_path / "g.chkpt")
    claim_folder(tmp_path / "mris", generator_source(weights, "default"), KEY)
    with pytest.raises(ConfigError, match="rendered the default way"):
        claim_folder(tmp_path / "mris", generator_source(weights, "original"), KEY)


def test_a_folder_with_only_the_old_rendering_marker_keeps_its_generator_unknown(tmp_path):
    folder = tmp_path / "mris"
    folder.mkdir()
    (folder / RENDERING_FILE).write_text("default\n")
    claim_folder(folder, generator_source(generator_file(tmp_path / "g.chkpt"), "default"), KEY)
    assert recorded_source(folder).sha256 == UNKNOWN and not (folder / RECORD_FILE).exists()
    with pytest.raises(ConfigError, match="rendered the default way"):
        claim_folder(folder, generator_source(tmp_path / "g.chkpt", "original"), KEY)


def test_a_corrupt_record_is_one_line_naming_it(tmp_path):
    (tmp_path / RECORD_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=f"{RECORD_FILE}: not a generator record"):
        recorded_source(tmp_path)


def test_the_frame_label_csv_carries_the_folders_generator_and_rendering(tmp_path):
    source = generator_source(generator_file(tmp_path / "g.chkpt"), "original")
    claim_folder(tmp_path / "mris", source, KEY)
    csv = tmp_path / "train_mriframe_labels.csv"
    copy_record(tmp_path / "mris", csv)
    assert csv_source(csv) == source
    copy_record(tmp_path / "no_record", csv)  # a folder without a record leaves no stale one behind
    assert (csv_source(csv).sha256, csv_source(csv).rendering) == (UNKNOWN, UNKNOWN)


class Model:
    encoder_name, input_size = "tf_efficientnet_b0_ns", 224


@pytest.mark.parametrize("rendering", ["default", "original"])
def test_the_mri_classifier_records_the_generator_and_rendering_of_its_training_mris(tmp_path, rendering):
    cfg = load_config(None, [f"assets={tmp_path}", "deep_fake.training.model_params.dataset=mri"])
    claim_folder(tmp_path / "mris", generator_source(generator_file(tmp_path / "g.chkpt"), rendering), KEY)
    copy_record(tmp_path / "mris", cfg.asset("features.dfdc.train_mriframe_label"))
    params = model_params(cfg, Model())
    assert (params[SHA_KEY], params[RENDERING_KEY]) == (sha256(tmp_path / "g.chkpt"), rendering)


def test_an_mri_classifier_trained_without_a_record_says_unknown(tmp_path):
    cfg = load_config(None, [f"assets={tmp_path}", "deep_fake.training.model_params.dataset=mri"])
    params = model_params(cfg, Model())
    assert (params[SHA_KEY], params[RENDERING_KEY]) == (UNKNOWN, UNKNOWN)


def test_export_keeps_the_record_and_the_model_class_name(tmp_path):
    cfg = load_config(None, [f"assets={tmp_path}"])
    params = {"dataset": "mri", "encoder_name": "tf_efficientnet_b0_ns", SHA_KEY: "ab" * 32, RENDERING_KEY: "original"}
    torch.save({"model_state_dict": {}, "model_params": params, "model_class_name": "DeepFakeClassifier"},
               tmp_path / "c.chkpt")
    written = torch.load(export(tmp_path / "c.chkpt", cfg)["path"], weights_only=True)
    assert (written["model_params"][SHA_KEY], written["model_params"][RENDERING_KEY]) == ("ab" * 32, "original")
    assert written["model_class_name"] == "DeepFakeClassifier"


def test_the_export_of_the_original_authors_classifier_is_still_theirs(tmp_path):
    cfg = load_config(None, [f"assets={tmp_path}"])
    written = read_checkpoint(export(original_classifier_checkpoint(tmp_path / "c.chkpt", {}), cfg)["path"])
    assert classifier_rendering(written, None, tmp_path / "exported.chkpt") == "original"


def test_mismatch_warning_is_none_for_the_same_generator_and_names_both_otherwise():
    assert mismatch_warning({"model_params": {SHA_KEY: "a" * 64}}, "a" * 64) is None
    warning = mismatch_warning({"model_params": {SHA_KEY: "a" * 64}}, "b" * 64)
    assert "a" * 12 in warning and "b" * 12 in warning and "a" * 13 not in warning


def test_a_checkpoint_without_the_record_is_plainly_unknown():
    assert "(unknown)" in mismatch_warning({"model_params": {}}, "b" * 64)


@pytest.mark.parametrize("recorded, warned", [(None, "(unknown)"), ("other", "trained on MRIs of generator"),
                                              ("same", None)])
def test_the_app_warns_once_when_its_mri_classifier_was_trained_on_another_generators_mris(
        app_weights, tmp_path, caplog, recorded, warned):
    weights = tmp_path / "weights"
    shutil.copytree(app_weights, weights)
    classifier = weights / "deepfake_MRI_weights.chkpt"
    checkpoint = torch.load(classifier, weights_only=True)
    if recorded is not None:
        generator = sha256(weights / "MRI_GAN_weights.chkpt")
        checkpoint["model_params"][SHA_KEY] = generator if recorded == "same" else "c" * 64
        torch.save(checkpoint, classifier)
    with caplog.at_level(logging.WARNING, logger="utils.infer.provenance"):
        Detector.from_weights(load_config(), "MRI", torch.device("cpu"), weights, face_detector=object())
    messages = [record.getMessage() for record in caplog.records if record.name == "utils.infer.provenance"]
    assert len(messages) == (0 if warned is None else 1) and all(warned in message for message in messages)


def provenance_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "utils.infer.provenance"]


def ours(rendering=None) -> dict:
    """Our MRI classifier's checkpoint entries, with a rendering record unless None (trained before the record)."""
    params = {"dataset": "mri", "encoder_name": "tf_efficientnet_b0_ns"}
    if rendering is not None:
        params[RENDERING_KEY] = rendering
    return {"model_state_dict": {}, "model_params": params, "model_class_name": "DeepFakeClassifier"}


@pytest.fixture
def originals(tmp_path):
    """The original authors' MRI classifier, as its file reads."""
    return read_checkpoint(original_classifier_checkpoint(tmp_path / "deepfake_MRI_weights.chkpt", {}))


@pytest.mark.parametrize("recorded, flag, chosen", [("default", None, "default"), ("original", None, "original"),
                                                    (None, None, "default"), ("default", "original", "original"),
                                                    ("original", "default", "default")])
def test_our_classifier_gets_the_flag_else_its_recorded_rendering_else_ours_silently(caplog, recorded, flag, chosen):
    with caplog.at_level(logging.WARNING, logger="utils.infer.provenance"):
        assert classifier_rendering(ours(recorded), flag, Path("deepfake_MRI_weights.chkpt")) == chosen
    assert provenance_lines(caplog) == []


def test_the_original_authors_classifier_gets_the_original_rendering_said_in_one_line(caplog, originals, tmp_path):
    path = tmp_path / "deepfake_MRI_weights.chkpt"
    with caplog.at_level(logging.WARNING, logger="utils.infer.provenance"):
        assert classifier_rendering(originals, None, path) == "original"
    (line,) = provenance_lines(caplog)
    assert line.startswith(f"{path} is the original authors' MRI classifier: rendering MRIs the original way")
    assert "--mri_rendering default" in line and "\n" not in line


@pytest.mark.parametrize("flag", ["default", "original"])
def test_a_flag_overrides_the_original_authors_layout_silently(caplog, originals, flag):
    with caplog.at_level(logging.WARNING, logger="utils.infer.provenance"):
        assert classifier_rendering(originals, flag, Path("deepfake_MRI_weights.chkpt")) == flag
    assert provenance_lines(caplog) == []


def test_gen_dfdc_mri_renders_the_original_way_only_for_the_original_authors_classifier(tmp_path, caplog):
    path = tmp_path / "deepfake_MRI_weights.chkpt"
    assert preprocess_rendering(None, path) == "default"  # no MRI classifier
    torch.save(ours("original"), path)
    assert preprocess_rendering(None, path) == "default"  # our records do not count: the MRIs may train a new one
    assert provenance_lines(caplog) == []
    original_classifier_checkpoint(path, {})
    with caplog.at_level(logging.WARNING, logger="utils.infer.provenance"):
        assert preprocess_rendering("default", path) == "default"
        assert provenance_lines(caplog) == []
        assert preprocess_rendering(None, path) == "original"
    (line,) = provenance_lines(caplog)
    assert line.startswith(f"{path} is the original authors' MRI classifier")


@pytest.mark.parametrize("checkpoint, rendering, warned", [
    (ours("original"), "default", "trained on MRIs rendered the original way, but the test MRIs are rendered the "
                                  "default way"),
    (ours("default"), "original", "trained on MRIs rendered the default way, but the test MRIs are rendered the "
                                  "original way"),
    (ours("default"), "default", None), (ours("original"), "original", None),
    (ours(None), "original", None), (ours("original"), UNKNOWN, None),
    ({"model_class_name": "DeepFakeDetectModel"}, "default", "trained on MRIs rendered the original way"),
    ({"model_class_name": "DeepFakeDetectModel"}, "original", None)])
def test_rendering_warning_names_both_renderings_when_they_differ(checkpoint, rendering, warned):
    warning = rendering_warning(checkpoint, rendering, "the test MRIs")
    assert warning is None if warned is None else warned in warning


def test_the_app_renders_mris_the_original_way_for_the_original_authors_classifier(app_weights, tmp_path, caplog):
    weights = tmp_path / "weights"
    shutil.copytree(app_weights, weights)
    classifier = weights / "deepfake_MRI_weights.chkpt"
    original_classifier_checkpoint(classifier, torch.load(classifier, weights_only=True)["model_state_dict"])
    with caplog.at_level(logging.WARNING, logger="utils.infer.provenance"):
        detector = Detector.from_weights(load_config(), "MRI", torch.device("cpu"), weights, face_detector=object())
    assert detector.mri_rendering == detector.models["generator"]["rendering"] == "original"
    lines = provenance_lines(caplog)
    assert len([line for line in lines if "is the original authors' MRI classifier" in line]) == 1
    assert not any("rendered the" in line for line in lines)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="utils.infer.provenance"):
        detector = Detector.from_weights(load_config(), "MRI", torch.device("cpu"), weights, face_detector=object(),
                                         mri_rendering="default")
    assert detector.mri_rendering == "default"
    (mismatch,) = [line for line in provenance_lines(caplog) if "rendered the" in line]
    assert "trained on MRIs rendered the original way, but the app's MRIs are rendered the default way" in mismatch
