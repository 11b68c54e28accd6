"""utils/infer/provenance.py: folders of MRIs record their generator and refuse another one; the record travels to
the frame-label CSV, the MRI classifier's checkpoint, its export, and the warning of the app and the test."""
from __future__ import annotations

import logging
import shutil

import pytest
import torch

from utils.config import load_config
from utils.errors import ConfigError
from utils.fileio import sha256
from utils.infer.detect import Detector
from utils.infer.export import export
from utils.infer.provenance import (
    RECORD_FILE,
    RENDERING_FILE,
    SHA_KEY,
    UNKNOWN,
    check_folder,
    copy_record,
    csv_generator_sha256,
    generator_source,
    mismatch_warning,
    record_folder,
    recorded_source,
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
    claim_folder(tmp_path / "mris", generator_source(weights, original_rendering=True), KEY)
    recorded = recorded_source(tmp_path / "mris")
    assert (recorded.sha256, recorded.tau, recorded.rendering) == (sha256(weights), 0.3, "original")
    assert (tmp_path / "mris" / RENDERING_FILE).read_text().strip() == "original"


def test_a_generator_without_its_run_config_records_tau_unknown(tmp_path):
    assert generator_source(generator_file(tmp_path / "g.chkpt"), False).tau == UNKNOWN


def test_the_same_generator_is_accepted_again(tmp_path):
    source = generator_source(generator_file(tmp_path / "g.chkpt", tau=0.3), False)
    claim_folder(tmp_path / "mris", source, KEY)
    claim_folder(tmp_path / "mris", source, KEY)
    assert recorded_source(tmp_path / "mris") == source


def test_another_generator_is_refused_naming_the_folder_both_generators_and_the_key(tmp_path):
    old = generator_source(generator_file(tmp_path / "old.chkpt", tau=0.3), False)
    new = generator_source(generator_file(tmp_path / "new.chkpt", tau=0.5, value=1.0), False)
    claim_folder(tmp_path / "mris", old, KEY)
    with pytest.raises(ConfigError) as refused:
        claim_folder(tmp_path / "mris", new, KEY)
    message = str(refused.value)
    assert "\n" not in message and str(tmp_path / "mris") in message
    assert old.sha256[:12] in message and new.sha256[:12] in message and f"--set {KEY}=DIR" in message
    assert recorded_source(tmp_path / "mris") == old  # the record is not overwritten


def test_another_rendering_is_refused(tmp_path):
    weights = generator_file(tmp_path / "g.chkpt")
    claim_folder(tmp_path / "mris", generator_source(weights, False), KEY)
    with pytest.raises(ConfigError, match="rendered the default way"):
        claim_folder(tmp_path / "mris", generator_source(weights, True), KEY)


def test_a_folder_with_only_the_old_rendering_marker_keeps_its_generator_unknown(tmp_path):
    folder = tmp_path / "mris"
    folder.mkdir()
    (folder / RENDERING_FILE).write_text("default\n")
    claim_folder(folder, generator_source(generator_file(tmp_path / "g.chkpt"), False), KEY)
    assert recorded_source(folder).sha256 == UNKNOWN and not (folder / RECORD_FILE).exists()
    with pytest.raises(ConfigError, match="rendered the default way"):
        claim_folder(folder, generator_source(tmp_path / "g.chkpt", True), KEY)


def test_a_corrupt_record_is_one_line_naming_it(tmp_path):
    (tmp_path / RECORD_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=f"{RECORD_FILE}: not a generator record"):
        recorded_source(tmp_path)


def test_the_frame_label_csv_carries_the_folders_generator(tmp_path):
    source = generator_source(generator_file(tmp_path / "g.chkpt"), False)
    claim_folder(tmp_path / "mris", source, KEY)
    csv = tmp_path / "train_mriframe_labels.csv"
    copy_record(tmp_path / "mris", csv)
    assert csv_generator_sha256(csv) == source.sha256
    copy_record(tmp_path / "no_record", csv)  # a folder without a record leaves no stale one behind
    assert csv_generator_sha256(csv) == UNKNOWN


class Model:
    encoder_name, input_size = "tf_efficientnet_b0_ns", 224


def test_the_mri_classifier_records_the_generator_of_its_training_mris(tmp_path):
    cfg = load_config(None, [f"assets={tmp_path}", "deep_fake.training.model_params.dataset=mri"])
    claim_folder(tmp_path / "mris", generator_source(generator_file(tmp_path / "g.chkpt"), False), KEY)
    copy_record(tmp_path / "mris", cfg.asset("features.dfdc.train_mriframe_label"))
    assert model_params(cfg, Model())[SHA_KEY] == sha256(tmp_path / "g.chkpt")


def test_export_keeps_the_generator_record(tmp_path):
    cfg = load_config(None, [f"assets={tmp_path}"])
    params = {"dataset": "mri", "encoder_name": "tf_efficientnet_b0_ns", SHA_KEY: "ab" * 32}
    torch.save({"model_state_dict": {}, "model_params": params}, tmp_path / "c.chkpt")
    written = torch.load(export(tmp_path / "c.chkpt", cfg)["path"], weights_only=True)
    assert written["model_params"][SHA_KEY] == "ab" * 32


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
