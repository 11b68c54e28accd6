"""Which generator made a set of MRIs, and how they were rendered (docs/pipeline.md#mri-provenance).

A new generator (another tau, a retrained MRI-GAN) must not silently reuse the old one's MRIs: each split folder of
--gen_dfdc_mri records its generator's sha256, tau and rendering; --gen_deepfake_metadata copies that record next
to the MRI frame-label CSV; the MRI classifier's checkpoint keeps the sha256 and the rendering
(model_params.mri_generator_sha256, model_params.mri_rendering); its test and the app compare them with the MRIs
they score. The rendering an MRI classifier gets is chosen here too (docs/pipeline.md#mri-rendering)."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from utils.checkpoint import read_checkpoint
from utils.errors import ConfigError
from utils.fileio import sha256, write_json, write_text
from utils.names import ORIGINAL_CLASSIFIER_CLASS, RENDERINGS

log = logging.getLogger(__name__)
RECORD_FILE = "mri_generator.json"  # per split folder of MRIs: {"sha256", "tau", "rendering"}
RENDERING_FILE = "mri_rendering.txt"  # the older marker ("default" or "original"), still written and read
UNKNOWN = "unknown"
SHA_KEY = "mri_generator_sha256"  # in the MRI classifier's model_params
RENDERING_KEY = "mri_rendering"  # in the MRI classifier's model_params: the rendering of its training MRIs
DEFAULT, ORIGINAL = RENDERINGS


@dataclass(frozen=True)
class MriSource:
    sha256: str
    tau: float | str  # UNKNOWN when the checkpoint does not record it (the original's)
    rendering: str  # "default" or "original"

    @property
    def short(self) -> str:
        return short(self.sha256)


def short(digest: str) -> str:
    return digest if digest == UNKNOWN else digest[:12]


def generator_source(weights: Path, rendering: str) -> MriSource:
    """The record of the generator in `weights` rendered `rendering`: its sha256 and the tau of the run that trained
    it (our MRI-GAN checkpoints keep the run's config; the original's do not)."""
    checkpoint = read_checkpoint(weights, mmap=True)
    config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    tau = ((config or {}).get("MRI_GAN") or {}).get("model_params", {}).get("tau", UNKNOWN)
    return MriSource(sha256(weights), tau, rendering)


def read_record(path: Path, fix: str) -> MriSource | None:
    """A generator record file, None if absent; one line naming it and `fix` if it is not one."""
    if not path.is_file():
        return None
    try:
        return MriSource(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: not a generator record; {fix}") from None


def recorded_source(folder: Path) -> MriSource | None:
    """The folder's record; for folders made before the record, the rendering marker with the generator unknown."""
    recorded = read_record(folder / RECORD_FILE, f"delete it if {folder} holds no MRIs")
    if recorded is not None:
        return recorded
    marker = folder / RENDERING_FILE
    if marker.is_file():
        return MriSource(UNKNOWN, UNKNOWN, marker.read_text(encoding="utf-8").strip())
    return None


def check_folder(folder: Path, source: MriSource, set_key: str) -> None:
    """Refuse (one line) a folder that holds MRIs of another generator or rendering than `source`, since finished
    items there are skipped, not redone. A folder made before the record passes if its rendering matches."""
    recorded = recorded_source(folder)
    if recorded is None:
        return
    if recorded.rendering != source.rendering:
        raise ConfigError(f"{folder} holds MRIs rendered the {recorded.rendering} way; to render them the "
                          f"{source.rendering} way, delete it or write elsewhere with --set {set_key}=DIR")
    if recorded.sha256 not in (UNKNOWN, source.sha256):
        raise ConfigError(f"{folder} holds MRIs of generator {recorded.short} (tau {recorded.tau}), not of the "
                          f"current {source.short} (tau {source.tau}); delete it or write elsewhere with "
                          f"--set {set_key}=DIR")


def record_folder(folder: Path, source: MriSource) -> None:
    """Write `source` as the folder's record (after check_folder has passed). A folder made before the record keeps only
    its rendering marker: its generator cannot be known, and recording the current one would be a guess."""
    recorded = recorded_source(folder)
    if recorded is not None and recorded.sha256 == UNKNOWN:
        return
    write_text(folder / RENDERING_FILE, source.rendering + "\n")
    write_json(folder / RECORD_FILE, asdict(source))


def sidecar(csv: Path) -> Path:
    """The provenance file next to a frame-label CSV (the CSV itself is unchanged for its readers)."""
    return csv.with_name(f"{csv.stem}_{RECORD_FILE}")


def copy_record(folder: Path, csv: Path) -> None:
    """Carry a folder's generator record next to the frame-label CSV made from it (or remove a stale one)."""
    recorded = recorded_source(folder)
    target = sidecar(csv)
    if recorded is None:
        target.unlink(missing_ok=True)
    else:
        write_json(target, asdict(recorded))


def csv_source(csv: Path) -> MriSource:
    """The generator and rendering behind a frame-label CSV's MRIs, every field UNKNOWN without a record."""
    recorded = read_record(sidecar(csv), "rerun --gen_deepfake_metadata")
    return recorded if recorded is not None else MriSource(UNKNOWN, UNKNOWN, UNKNOWN)


def mismatch_warning(checkpoint: dict, generator_sha256: str, generator: str = "the generator loaded") -> str | None:
    """One line when an MRI classifier checkpoint was trained on MRIs of another generator than `generator_sha256`
    (or does not say which, as the original's), else None. `generator` names where that sha256 comes from."""
    trained_on = (checkpoint.get("model_params") or {}).get(SHA_KEY, UNKNOWN)
    if trained_on == UNKNOWN:
        return (f"the MRI classifier does not record which generator made its training MRIs (unknown); "
                f"{generator} is {short(generator_sha256)}")
    if trained_on != generator_sha256:
        return (f"the MRI classifier was trained on MRIs of generator {short(trained_on)}, but {generator} is "
                f"{short(generator_sha256)}: its scores may not mean what they did in validation")
    return None


def is_original_classifier(checkpoint: dict) -> bool:
    """Whether a classifier checkpoint is in the original's layout: the original's save_checkpoint stored the model's
    class name, DeepFakeDetectModel, in every checkpoint; ours store DeepFakeClassifier, which --export keeps."""
    return checkpoint.get("model_class_name") == ORIGINAL_CLASSIFIER_CLASS


def recorded_rendering(checkpoint: dict) -> str:
    """The rendering of the MRIs an MRI classifier was trained on, as its checkpoint records it (else UNKNOWN)."""
    return (checkpoint.get("model_params") or {}).get(RENDERING_KEY, UNKNOWN)


def trained_rendering(checkpoint: dict) -> str:
    """The rendering of an MRI classifier's training MRIs: its record; for the original authors' classifier, the
    original way; else UNKNOWN."""
    recorded = recorded_rendering(checkpoint)
    if recorded == UNKNOWN and is_original_classifier(checkpoint):
        return ORIGINAL
    return recorded


def classifier_rendering(checkpoint: dict, flag: str | None, path: Path) -> str:
    """How to render MRIs for the MRI classifier in `path`: `flag` (--mri_rendering or --original_mri_rendering) when
    given; else the rendering its checkpoint records; else the original way for the original authors' classifier,
    saying so in one line; else ours (default)."""
    if flag is not None:
        return flag
    recorded = recorded_rendering(checkpoint)
    if recorded in RENDERINGS:
        return recorded
    return layout_rendering(checkpoint, path)


def preprocess_rendering(flag: str | None, classifier: Path) -> str:
    """How --gen_dfdc_mri renders its MRIs: `flag` when given; else the original way if `classifier` (the app's MRI
    classifier file) exists and is the original authors', saying so in one line; else ours. The records of our
    classifiers do not count: the MRIs may be meant to train a new one."""
    if flag is not None:
        return flag
    if not classifier.is_file():
        return DEFAULT
    checkpoint = read_checkpoint(classifier, mmap=True)
    return layout_rendering(checkpoint if isinstance(checkpoint, dict) else {}, classifier)


def layout_rendering(checkpoint: dict, path: Path) -> str:
    """The original way (said in one line) for a checkpoint in the original's layout, else ours."""
    if not is_original_classifier(checkpoint):
        return DEFAULT
    log.warning(f"{path} is the original authors' MRI classifier: rendering MRIs the original way, on which it was "
                f"trained (--original_mri_rendering); pass --mri_rendering default to render them our way")
    return ORIGINAL


def rendering_warning(checkpoint: dict, rendering: str, mris: str = "the MRIs") -> str | None:
    """One line when an MRI classifier was trained on MRIs rendered another way than `mris` are (`rendering`), else
    None; nothing is said when either is unknown."""
    trained = trained_rendering(checkpoint)
    if UNKNOWN in (trained, rendering) or trained == rendering:
        return None
    return (f"the MRI classifier was trained on MRIs rendered the {trained} way, but {mris} are rendered the "
            f"{rendering} way: its scores may not mean what they did in validation")


def warn_on_other_mris(checkpoint: dict, generator_sha256: str, rendering: str, generator: str, mris: str) -> None:
    """Log mismatch_warning's and rendering_warning's lines for MRIs of that generator and rendering (warnings, not
    errors: the scores are still computed). `generator` and `mris` name where the generator and the MRIs come
    from."""
    for warning in (mismatch_warning(checkpoint, generator_sha256, generator),
                    rendering_warning(checkpoint, rendering, mris)):
        if warning:
            log.warning(warning)
