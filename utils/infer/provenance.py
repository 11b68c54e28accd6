"""Which generator made a set of MRIs (docs/pipeline.md#mri-provenance).

A new generator (another tau, a retrained MRI-GAN) must not silently reuse the old one's MRIs: each split folder of
--gen_dfdc_mri records its generator's sha256, tau and rendering; --gen_deepfake_metadata copies that record next
to the MRI frame-label CSV; the MRI classifier's checkpoint keeps the sha256 (model_params.mri_generator_sha256);
its test and the app compare it with the generator they load."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from utils.checkpoint import read_checkpoint
from utils.errors import ConfigError
from utils.fileio import sha256, write_json, write_text

log = logging.getLogger(__name__)
RECORD_FILE = "mri_generator.json"  # per split folder of MRIs: {"sha256", "tau", "rendering"}
RENDERING_FILE = "mri_rendering.txt"  # the older marker ("default" or "original"), still written and read
UNKNOWN = "unknown"
SHA_KEY = "mri_generator_sha256"  # in the MRI classifier's model_params


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


def generator_source(weights: Path, original_rendering: bool) -> MriSource:
    """The record of the generator in `weights`: its sha256 and the tau of the run that trained it (our MRI-GAN
    checkpoints keep the run's config; the original's do not)."""
    checkpoint = read_checkpoint(weights, mmap=True)
    config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    tau = ((config or {}).get("MRI_GAN") or {}).get("model_params", {}).get("tau", UNKNOWN)
    return MriSource(sha256(weights), tau, "original" if original_rendering else "default")


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


def csv_generator_sha256(csv: Path) -> str:
    """The sha256 of the generator behind a frame-label CSV's MRIs, UNKNOWN without a record."""
    recorded = read_record(sidecar(csv), "rerun --gen_deepfake_metadata")
    return recorded.sha256 if recorded is not None else UNKNOWN


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


def warn_on_other_generator(checkpoint: dict, generator_sha256: str, generator: str = "the generator loaded") -> None:
    """Log mismatch_warning's line (a warning, not an error: the scores are still computed)."""
    warning = mismatch_warning(checkpoint, generator_sha256, generator)
    if warning:
        log.warning(warning)
