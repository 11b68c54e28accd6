"""config.yml and utils/config.py: defaults of the original, validation errors that name the key."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from utils.config import DEFAULT_CONFIG, PROJECT_ROOT, SCHEMA, load_config
from utils.errors import ConfigError


def test_default_config_holds_every_schema_key_and_no_other():
    tree = yaml.safe_load(DEFAULT_CONFIG.read_text())

    def keys(node, prefix=""):
        for name, value in node.items():
            if isinstance(value, dict):
                yield from keys(value, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    assert set(keys(tree)) == set(SCHEMA)


@pytest.mark.parametrize("key, value", [
    ("MRI_GAN.model_params.n_epochs", 100), ("MRI_GAN.model_params.batch_size", 128),
    ("MRI_GAN.model_params.lambda_pixel", 100), ("MRI_GAN.model_params.b1", 0.5),
    ("MRI_GAN.model_params.b2", 0.999), ("MRI_GAN.model_params.lr", 0.0002), ("MRI_GAN.model_params.tau", 0.3),
    ("MRI_GAN.model_params.imsize", 256), ("MRI_GAN.model_params.chkpt_freq", 500),
    ("MRI_GAN.model_params.sample_gen_freq", 200), ("MRI_GAN.model_params.test_sample_size", 16),
    ("MRI_GAN.model_params.model_name", "MRI_GAN"), ("cnn_encoder.default", "tf_efficientnet_b0_ns"),
    ("deep_fake.training.model_params.label_smoothing", 0.1), ("deep_fake.training.model_params.epochs", 20),
    ("deep_fake.training.model_params.learning_rate", 0.001), ("deep_fake.training.model_params.batch_size", 192),
    ("deep_fake.training.model_params.dataset", "mri"), ("deep_fake.training.model_params.train_transform", "simple"),
    ("deep_fake.training.model_params.model_name", "DeepFakeDetectModel"),
    ("features.blank_png", "blank.png"), ("MRI_GAN.weights", "weights/MRI_GAN_weights.chkpt"),
    ("faces.frame_step", 10), ("faces.crop_margin", 0.1), ("faces.detector_thresholds", [0.85, 0.95, 0.95]),
    ("deep_fake.evaluation.fake_threshold", 0.5), ("deep_fake.evaluation.fake_fraction", 0.5),
    ("logging.line_len", 80), ("mri.size", 256),
])
def test_defaults_are_the_originals(key, value):
    assert load_config()[key] == value


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    cfg = load_config()
    assert cfg.path("assets") == PROJECT_ROOT / "assets"
    assert cfg.asset("features.blank_png") == PROJECT_ROOT / "assets" / "blank.png"
    user = tmp_path / "mine.yml"
    user.write_text("assets: my_assets\nfaces:\n  frame_step: 5\n")
    monkeypatch.chdir(tmp_path.parent)
    cfg = load_config(user, ["logging.root_log_dir=runs"])
    assert cfg.path("assets") == tmp_path / "my_assets"
    assert cfg.path("logging.root_log_dir") == tmp_path.parent / "runs"  # --set: relative to the cwd
    assert cfg["faces.frame_step"] == 5
    assert cfg["faces.crop_margin"] == 0.1  # keys the user file does not name keep their defaults


def test_absolute_asset_names_are_kept():
    cfg = load_config(overrides=["features.blank_png=/elsewhere/blank.png"])
    assert cfg.asset("features.blank_png") == Path("/elsewhere/blank.png")


@pytest.mark.parametrize("text, key, value", [
    ("faces.frame_step=5", "faces.frame_step", 5),
    ("MRI_GAN.model_params.tau=0.7", "MRI_GAN.model_params.tau", 0.7),
    ("MRI_GAN.model_params.frac=1", "MRI_GAN.model_params.frac", 1.0),
    ("deep_fake.training.model_params.fp16=false", "deep_fake.training.model_params.fp16", False),
    ("faces.detector_thresholds=[0.6, 0.7, 0.7]", "faces.detector_thresholds", [0.6, 0.7, 0.7]),
    ("MRI_GAN.model_params.model_name=123", "MRI_GAN.model_params.model_name", "123"),
    ("runtime.device=cpu", "runtime.device", "cpu"),
])
def test_overrides_are_typed_by_the_schema(text, key, value):
    cfg = load_config(overrides=[text])
    assert cfg[key] == value
    assert type(cfg[key]) is type(value)


@pytest.mark.parametrize("overrides, fragment", [
    (["faces.frame_stpe=5"], "unknown config key 'faces.frame_stpe' in --set (did you mean 'faces.frame_step'?)"),
    (["faces.frame_step=five"], "config key 'faces.frame_step': expected an integer"),
    (["faces.frame_step=0"], "config key 'faces.frame_step': expected a value >= 1"),
    (["faces.frame_step=2.5"], "config key 'faces.frame_step': expected an integer"),
    (["MRI_GAN.model_params.tau=1.5"], "config key 'MRI_GAN.model_params.tau': expected a value <= 1.0"),
    (["deep_fake.training.model_params.dataset=video"],
     "'deep_fake.training.model_params.dataset': expected one of plain, mri"),
    (["deep_fake.training.model_params.fp16=yes please"],
     "'deep_fake.training.model_params.fp16': expected true or false"),
    (["runtime.device=tpu"], "'runtime.device': expected one of auto, cpu, cuda"),
    (["faces.detector_thresholds=[0.6, 0.7]"], "'faces.detector_thresholds': expected three values"),
    (["faces.detector_thresholds=[0.6, 2, 0.7]"], "'faces.detector_thresholds[1]': expected a value <= 1.0"),
    (["faces.frame_step"], "--set expects dotted.key=value"),
    (["faces=3"], "'faces' in --set: is a section"),
])
def test_bad_values_raise_one_line_naming_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_user_file_errors_name_the_key_and_the_file(tmp_path):
    user = tmp_path / "bad.yml"
    user.write_text("MRI_GAN:\n  model_params:\n    batchsize: 4\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'MRI_GAN.model_params.batchsize' in .*bad.yml "
                                          r"\(did you mean 'MRI_GAN.model_params.batch_size'\?\)"):
        load_config(user)
    user.write_text("faces: [1, 2]\n")
    with pytest.raises(ConfigError, match="'faces' in .*bad.yml: is a section"):
        load_config(user)
    user.write_text("faces:\n  frame_step: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yml line \d+: not valid YAML"):
        load_config(user)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yml")


def test_require_exists_names_the_key_to_fix(tmp_path):
    cfg = load_config(overrides=[f"data_path.dfdc.train={tmp_path / 'nowhere'}", f"data_path.dfdc.valid={tmp_path}"])
    cfg.require_exists("data_path.dfdc.valid")
    with pytest.raises(ConfigError, match=r"config key 'data_path.dfdc.train': .*nowhere does not exist "
                                          r"\(edit config.yml or pass --set data_path.dfdc.train=PATH\)"):
        cfg.require_exists("data_path.dfdc.valid", "data_path.dfdc.train")


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(overrides=["faces.frame_step=7"])
    dumped = tmp_path / "resolved.yml"
    dumped.write_text(cfg.to_yaml())
    again = load_config(dumped)
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.slow  # runs the scripts
def test_scripts_report_config_errors_in_one_line_with_exit_code_2():
    result = subprocess.run([sys.executable, "data_preprocess.py", "--crop_faces", "--set", "faces.frame_stpe=3"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("data_preprocess.py: error: unknown config key 'faces.frame_stpe' in --set "
                                     "(did you mean 'faces.frame_step'?)")
