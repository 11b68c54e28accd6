"""Labels of a folder of videos, read by content from the formats data sets ship, and matched to the videos found.

Three formats (fake = 1 everywhere in the project):
- a CSV with a path or file-name column and a label column (REAL/FAKE, or 0/1 with 1 = fake);
- Celeb-DF-v2's List_of_testing_videos.txt: lines "<1|0> <folder>/<file>.mp4", where the dataset's own convention
  is 1 = real and 0 = fake (so our label is 1 minus its number);
- a DFDC metadata.json: {"<file>.mp4": {"label": "REAL"|"FAKE", ...}, ...}.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from utils.datasets import celeb_df_test_list
from utils.errors import ConfigError

CELEB_DF_TEST_LIST = "celeb_df_v2_test_list"
PATH_COLUMNS = ("path", "file", "filename", "file_name", "video", "video_path", "name")
LABEL_COLUMNS = ("label", "labels", "is_fake", "fake", "class", "target")
_WORDS = {"real": 0, "fake": 1, "0": 0, "1": 1}


@dataclass
class Labels:
    """Video key (a relative path with '/' or a bare file name) -> 0 real / 1 fake, and where they came from."""

    path: Path
    format: str  # csv | celeb_df_v2_test_list | dfdc_metadata
    by_key: dict[str, int] = field(default_factory=dict)


@dataclass
class Matched:
    """Which videos have a label, which have none, and which labels have no video."""

    labels: dict[Path, int]  # video path -> label, in the videos' order
    unlabelled: list[Path]
    missing: list[str]  # label keys with no video in the folder


def _label_value(text: str, where: str) -> int:
    value = _WORDS.get(str(text).strip().lower())
    if value is None:
        raise ConfigError(f"{where}: label {text!r} is neither REAL/FAKE nor 0/1")
    return value


def _key(text: str) -> str:
    """A label's video as written in the file, with '/' separators and no leading './'."""
    key = str(text).strip().replace("\\", "/")
    return key[2:] if key.startswith("./") else key


def read_labels(path: str | Path) -> Labels:
    """Read a labels file, recognising its format by content; any problem is one ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise ConfigError(f"--labels {path}: cannot read ({reason})") from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return _dfdc_metadata(path, text)
    test_list = celeb_df_test_list(text)
    if test_list is not None:
        return Labels(path, CELEB_DF_TEST_LIST, {_key(video): label for video, label in test_list.items()})
    return _csv_labels(path, text)


def _dfdc_metadata(path: Path, text: str) -> Labels:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--labels {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "label" in v for v in data.values()):
        raise ConfigError(f"--labels {path}: a JSON labels file must be a DFDC metadata.json "
                          "({\"<file>.mp4\": {\"label\": \"REAL\"|\"FAKE\"}, ...})")
    return Labels(path, "dfdc_metadata", {_key(name): _label_value(entry["label"], f"--labels {path} ({name})")
                                           for name, entry in data.items()})


def _csv_labels(path: Path, text: str) -> Labels:
    rows = list(csv.DictReader(text.splitlines()))
    columns = {name.strip().lower(): name for name in (rows[0].keys() if rows else [])}
    path_column = next((columns[c] for c in PATH_COLUMNS if c in columns), None)
    label_column = next((columns[c] for c in LABEL_COLUMNS if c in columns), None)
    if path_column is None or label_column is None:
        raise ConfigError(f"--labels {path}: not a labels file this project reads (a CSV with a path or file-name "
                          f"column and a label column, Celeb-DF-v2's List_of_testing_videos.txt, or a DFDC "
                          f"metadata.json)")
    labels = Labels(path, "csv")
    for number, row in enumerate(rows, start=2):
        labels.by_key[_key(row[path_column])] = _label_value(row[label_column], f"--labels {path} line {number}")
    return labels


def match_videos(videos: list[Path], root: Path, labels: Labels) -> Matched:
    """Give each video the label whose key is its path relative to `root` (or an absolute path, or, for a key
    without a folder, its file name when that name is unique among the videos). Nothing is guessed beyond that."""
    relative = {video: video.resolve().relative_to(root.resolve()).as_posix() for video in videos}
    by_relative = {rel: video for video, rel in relative.items()}
    names: dict[str, list[Path]] = {}
    for video in videos:
        names.setdefault(video.name, []).append(video)
    found: dict[Path, int] = {}
    missing = []
    for key, label in labels.by_key.items():
        video = by_relative.get(key)
        if video is None and Path(key).is_absolute():
            video = next((v for v in videos if v.resolve() == Path(key).resolve()), None)
        if video is None and "/" not in key and len(names.get(key, [])) == 1:
            video = names[key][0]
        if video is None:
            missing.append(key)
        else:
            found[video] = label
    return Matched({video: found[video] for video in videos if video in found},
                   [video for video in videos if video not in found], sorted(missing))
