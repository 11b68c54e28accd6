"""Load and validate config.yml: the one configuration every script reads.

The shipped config.yml holds every default. A user file (``--config``) and ``--set key=value`` overrides
are layered on top. Every key is checked against SCHEMA; any problem raises ConfigError naming the key.
"""
from __future__ import annotations

import copy
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from utils.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config.yml"


@dataclass(frozen=True)
class Spec:
    """What one config key may hold.

    kind: 'str', 'int', 'float', 'bool', 'path' (resolved against the file that set it),
    'choice' (one of `choices`), 'list' (of `item` kind), or 'weights' (a choice or a path).
    """

    kind: str
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    item: str | None = None


STR, BOOL, PATH = Spec("str"), Spec("bool"), Spec("path")


def _int(minimum=None, maximum=None):
    return Spec("int", minimum=minimum, maximum=maximum)


def _float(minimum=None, maximum=None):
    return Spec("float", minimum=minimum, maximum=maximum)


def _choice(*choices):
    return Spec("choice", choices=choices)


def _list(item, minimum=None, maximum=None):
    return Spec("list", item=item, minimum=minimum, maximum=maximum)


UNIT = _float(0.0, 1.0)

SCHEMA: dict[str, Spec] = {
    "assets": PATH,
    # data sets (inputs, read-only)
    "data_path.dfdc.train": PATH,
    "data_path.dfdc.train_source": _choice("augmented", "original"),
    "data_path.dfdc.valid": PATH,
    "data_path.dfdc.test": PATH,
    "data_path.dfdc.train_labels_csv_filename": STR,
    "data_path.dfdc.valid_labels_csv_filename": STR,
    "data_path.dfdc.test_labels_csv_filename": STR,
    "data_path.dfdc.train_frame_labels_csv_filename": STR,
    "data_path.dfdc.valid_frame_labels_csv_filename": STR,
    "data_path.dfdc.test_frame_labels_csv_filename": STR,
    "data_path.dfdc.data_augmentation.plan_pkl_filename": STR,
    "data_path.dfdc.data_augmentation.metadata": STR,
    "data_path.dfdc.data_augmentation.output_path": PATH,
    "data_path.celeb_df_v2.real": PATH,
    "data_path.celeb_df_v2.fake": PATH,
    "data_path.celeb_df_v2.real_fake_mapping": STR,
    "data_path.celeb_df_v2.exclude_from_mri_gan": Spec("weights", choices=("none",)),
    "data_path.fdf.data_path": PATH,
    "data_path.ffhq.data_path": PATH,
    # derived features (outputs)
    "features.dfdc.landmarks_path.train": PATH,
    "features.dfdc.landmarks_path.valid": PATH,
    "features.dfdc.landmarks_path.test": PATH,
    "features.dfdc.crop_faces.train": PATH,
    "features.dfdc.crop_faces.valid": PATH,
    "features.dfdc.crop_faces.test": PATH,
    "features.dfdc.mri_metadata_csv": STR,
    "features.dfdc.mri_path": PATH,
    "features.dfdc.mri_faces_path": PATH,
    "features.dfdc.train_mrip2p_faces": PATH,
    "features.dfdc.valid_mrip2p_faces": PATH,
    "features.dfdc.test_mrip2p_faces": PATH,
    "features.dfdc.train_mriframe_label": STR,
    "features.dfdc.valid_mriframe_label": STR,
    "features.dfdc.test_mriframe_label": STR,
    "features.celeb_df_v2.landmarks_path.train": PATH,
    "features.celeb_df_v2.crop_faces.train": PATH,
    "features.celeb_df_v2.mri_metadata_csv": STR,
    "features.celeb_df_v2.mri_path": PATH,
    "features.celeb_df_v2.mri_faces_path": PATH,
    "features.fdf.json_filename": PATH,
    "features.fdf.crops_path": PATH,
    "features.ffhq.json_filename": PATH,
    "features.ffhq.crops_path": PATH,
    "features.mri_dataset_real_train_csv": STR,
    "features.mri_dataset_real_test_csv": STR,
    "features.mri_dataset_fake_train_csv": STR,
    "features.mri_dataset_fake_test_csv": STR,
    "features.mri_dataset_csv": STR,
    "features.blank_png": STR,
    # MRI-GAN
    "MRI_GAN.weights": STR,
    "MRI_GAN.model_params.n_epochs": _int(1),
    "MRI_GAN.model_params.batch_size": _int(1),
    "MRI_GAN.model_params.lambda_pixel": _float(0.0),
    "MRI_GAN.model_params.b1": UNIT,
    "MRI_GAN.model_params.b2": UNIT,
    "MRI_GAN.model_params.lr": _float(0.0),
    "MRI_GAN.model_params.tau": UNIT,
    "MRI_GAN.model_params.imsize": _int(32),
    "MRI_GAN.model_params.model_name": STR,
    "MRI_GAN.model_params.test_sample_size": _int(1),
    "MRI_GAN.model_params.chkpt_freq": _int(1),
    "MRI_GAN.model_params.sample_gen_freq": _int(1),
    "MRI_GAN.model_params.frac": _float(0.0, 1.0),
    "MRI_GAN.model_params.losses_file": STR,
    "MRI_GAN.model_params.metadata_file": STR,
    "MRI_GAN.model_params.ssim_report_file": STR,
    "MRI_GAN.model_params.ngf": _int(1),
    "MRI_GAN.model_params.ndf": _int(1),
    # classifier
    "cnn_encoder.default": _choice("tf_efficientnet_b0_ns", "tf_efficientnet_b7_ns"),
    "deep_fake.training.train_size": _float(0.0, 1.0),
    "deep_fake.training.valid_size": _float(0.0, 1.0),
    "deep_fake.training.test_size": _float(0.0, 1.0),
    "deep_fake.training.model_params.model_name": STR,
    "deep_fake.training.model_params.label_smoothing": _float(0.0, 0.5),
    "deep_fake.training.model_params.train_transform": _choice("simple", "complex"),
    "deep_fake.training.model_params.batch_format": _choice("simple"),
    "deep_fake.training.model_params.epochs": _int(1),
    "deep_fake.training.model_params.learning_rate": _float(0.0),
    "deep_fake.training.model_params.batch_size": _int(1),
    "deep_fake.training.model_params.fp16": BOOL,
    "deep_fake.training.model_params.opt_level": _choice("O0", "O1", "O2", "O3"),
    "deep_fake.training.model_params.dataset": _choice("plain", "mri"),
    "deep_fake.training.model_params.encoder_weights": Spec("weights", choices=("imagenet", "none")),
    "deep_fake.training.model_params.chkpt_freq": _int(1),
    "deep_fake.evaluation.fake_threshold": UNIT,
    "deep_fake.evaluation.fake_fraction": UNIT,
    "deep_fake.evaluation.grid_fake_threshold": _list("float", 0.0, 1.0),
    "deep_fake.evaluation.grid_fake_fraction": _list("float", 0.0, 1.0),
    # logging
    "logging.root_log_dir": PATH,
    "logging.line_len": _int(1),
    "logging.model_info_log": STR,
    "logging.model_loss_info_log": STR,
    "logging.model_acc_info_log": STR,
    "logging.model_conf_matrix_csv": STR,
    "logging.model_conf_matrix_png": STR,
    "logging.model_conf_matrix_normalized_csv": STR,
    "logging.model_conf_matrix_normalized_png": STR,
    "logging.model_accuracy_png": STR,
    "logging.model_loss_png": STR,
    "logging.all_samples_pred_csv": STR,
    "logging.model_roc_png": STR,
    # run time (new)
    "runtime.device": _choice("auto", "cpu", "cuda"),
    "runtime.precision": _choice("auto", "fp32", "bf16", "fp16"),
    "runtime.seed": _int(0),
    "runtime.workers": _int(0),
    "runtime.loader_workers": _int(0),
    "runtime.workers_per_gpu": _int(1),
    "runtime.deterministic": BOOL,
    # frames and faces (new)
    "faces.frame_step": _int(1),
    "faces.detector_thresholds": _list("float", 0.0, 1.0),
    "faces.min_face_size": _int(1),
    "faces.scale_factor": _float(0.1, 0.99),
    "faces.crop_margin": _float(0.0, 1.0),
    "faces.batch_size": _int(1),
    "faces.detect_max_side": _int(0),
    "faces.video_extensions": _list("str"),
    # MRI targets (new)
    "mri.size": _int(16),
    "mri.aligned_pairs": BOOL,
    "mri.dfdc_fraction": UNIT,
    "mri.test_split": _float(0.0, 0.9),
}


# Keys of the original that this project accepts but does not use (docs/configuration.md#compatibility-keys); setting
# one to another value than the shipped default prints a warning, so nobody expects it to change anything.
COMPATIBILITY_KEYS = (
    "data_path.dfdc.train_labels_csv_filename",  # the original never read it either
    "features.mri_dataset_csv",  # the original never read it either
    "deep_fake.training.model_params.model_name",  # runs go to deep_fake/, checkpoints are named by kind
    "deep_fake.training.model_params.batch_format",  # only "simple" existed and exists
    "logging.line_len",
    "logging.model_loss_info_log",  # losses and accuracies per epoch are in epochs.csv
    "logging.model_acc_info_log",
    "logging.model_accuracy_png",  # the curves are plots/epochs.png
    "logging.model_loss_png",
    "logging.all_samples_pred_csv",  # predictions are frame_predictions.csv and video_predictions.csv
    "logging.model_roc_png",  # ROC curves are roc_frame.png and roc_video.png
)


def _warn_inert_keys(values: dict[str, Any], defaults: dict[str, Any]) -> None:
    """One line on stderr for each compatibility key given a value other than its shipped default."""
    for key in COMPATIBILITY_KEYS:
        if values[key] != defaults[key]:
            print(f"warning: config key '{key}' is kept for compatibility with the original and has no effect "
                  f"here (got {values[key]!r})", file=sys.stderr)


def _check_value(key: str, spec: Spec, value: Any, base: Path) -> Any:
    """Return `value` converted to its kind (paths made absolute); raise ConfigError if it does not fit."""

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"config key '{key}': expected {expected}, got {value!r}")

    kind = spec.kind
    if kind in ("str", "path", "weights", "choice"):
        if not isinstance(value, str) or not value.strip():
            raise fail("a non-empty string" if kind != "choice" else "one of " + ", ".join(spec.choices))
        if kind == "choice" and value not in spec.choices:
            raise fail("one of " + ", ".join(spec.choices))
        if kind == "path" or (kind == "weights" and value not in spec.choices):
            return str((base / Path(value).expanduser()).resolve())
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if kind in ("int", "float"):
        ok = isinstance(value, int) or (kind == "float" and isinstance(value, float))
        if isinstance(value, bool) or not ok:
            raise fail("an integer" if kind == "int" else "a number")
        if spec.minimum is not None and value < spec.minimum:
            raise fail(f"a value >= {spec.minimum}")
        if spec.maximum is not None and value > spec.maximum:
            raise fail(f"a value <= {spec.maximum}")
        return float(value) if kind == "float" else value
    if kind == "list":
        if not isinstance(value, list) or not value:
            raise fail(f"a non-empty list of {spec.item} values")
        item_spec = Spec(spec.item, minimum=spec.minimum, maximum=spec.maximum)
        return [_check_value(f"{key}[{i}]", item_spec, v, base) for i, v in enumerate(value)]
    raise AssertionError(f"unknown spec kind {kind!r} for {key}")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            if not value:
                raise ConfigError(f"config key '{key}': empty section")
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _unknown_key_error(key: str, origin: str) -> ConfigError:
    close = difflib.get_close_matches(key, SCHEMA.keys(), n=1, cutoff=0.75)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    sections = {k.rsplit(".", 1)[0] for k in SCHEMA if "." in k}
    if key in sections:
        return ConfigError(f"config key '{key}' in {origin}: is a section, give one of its keys")
    return ConfigError(f"unknown config key '{key}' in {origin}{hint}")


def _validated_layer(flat: dict[str, Any], base: Path, origin: str) -> dict[str, Any]:
    checked = {}
    for key, value in flat.items():
        if key not in SCHEMA:
            raise _unknown_key_error(key, origin)
        checked[key] = _check_value(key, SCHEMA[key], value, base)
    return checked


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of keys")
    return tree


def parse_override(text: str) -> tuple[str, Any]:
    """Split 'dotted.key=value'; the value is read as YAML unless the key holds text or paths."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    if key not in SCHEMA:
        raise _unknown_key_error(key, "--set")
    if SCHEMA[key].kind in ("str", "path", "weights", "choice"):
        return key, raw.strip()
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"config key '{key}': cannot read value {raw!r} given with --set") from None


class Config:
    """Validated configuration. Read values with ``cfg["dotted.key"]``; paths with ``path``/``asset``."""

    def __init__(self, values: dict[str, Any], sources: Sequence[str]):
        self._values = dict(values)
        self.sources = list(sources)

    def __getitem__(self, key: str) -> Any:
        if key not in self._values:
            raise KeyError(f"no config key '{key}'")
        return copy.deepcopy(self._values[key])

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def path(self, key: str) -> Path:
        """An absolute path held by a 'path' key."""
        if SCHEMA[key].kind not in ("path", "weights"):
            raise KeyError(f"config key '{key}' does not hold a path")
        return Path(self._values[key])

    def asset(self, key: str) -> Path:
        """A short file name joined onto `assets` (an absolute value is returned unchanged)."""
        return Path(self._values["assets"]) / self._values[key]

    def require_exists(self, *keys: str) -> None:
        """Raise ConfigError naming the first key whose path does not exist on disk."""
        for key in keys:
            if not self.path(key).exists():
                raise ConfigError(
                    f"config key '{key}': {self.path(key)} does not exist (edit config.yml or pass --set {key}=PATH)"
                )

    def to_dict(self) -> dict:
        """The resolved configuration as a nested dict (as config.yml is laid out)."""
        tree: dict = {}
        for key, value in self._values.items():
            node = tree
            *parents, leaf = key.split(".")
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = copy.deepcopy(value)
        return tree

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Load config.yml, then the user file `path` (if any) on top, then `overrides` ('key=value').

    Relative paths in a file are resolved against that file's folder; relative paths given as
    overrides against the current directory. Raises ConfigError (one line, naming the key).
    """
    values = _validated_layer(_flatten(_read_yaml(DEFAULT_CONFIG)), DEFAULT_CONFIG.parent, str(DEFAULT_CONFIG))
    missing = sorted(set(SCHEMA) - set(values))
    if missing:
        raise ConfigError(f"config key '{missing[0]}' is missing from {DEFAULT_CONFIG}")
    sources = [str(DEFAULT_CONFIG)]
    defaults = dict(values)
    if path is not None:
        user_path = Path(path).expanduser().resolve()
        if user_path != DEFAULT_CONFIG:
            layer = _flatten(_read_yaml(user_path))
            values.update(_validated_layer(layer, user_path.parent, str(user_path)))
            sources.append(str(user_path))
    cli = dict(parse_override(text) for text in overrides)
    if cli:
        values.update(_validated_layer(cli, Path.cwd(), "--set"))
        sources.extend(f"--set {text}" for text in overrides)
    if len(values["faces.detector_thresholds"]) != 3:
        raise ConfigError("config key 'faces.detector_thresholds': expected three values (P-, R-, O-net)")
    _warn_inert_keys(values, defaults)
    return Config(values, sources)
