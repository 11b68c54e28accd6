"""Data sets as downloaded: FFHQ's thousands folders and flat folders, FDF's size folders, and folders that hold
the wrong thing (an error naming the folder, what it should hold and what it holds)."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from utils.config import PROJECT_ROOT, load_config
from utils.datasets import dfdc_train_videos, image_files, image_folder_files, image_key
from utils.demo.synthetic import dataset_config, make_celeb_df, make_dfdc_dataset, make_image_folder
from utils.errors import ConfigError
from utils.preprocess.common import image_sets, video_sets
from utils.preprocess.mri_dataset import pair_groups


def ffhq_as_downloaded(root: Path) -> Path:
    """FFHQ's images1024x1024/ layout: thousands folders; here two folders whose files share names."""
    make_image_folder(root / "01000", n_images=2, size=64, seed=2)
    make_image_folder(root / "00000", n_images=2, size=64, seed=1)
    return root


def config_for(data: Path, out: Path, datasets: dict | None = None, **sections) -> Path:
    overlay = dataset_config(data, out)
    for key, value in (datasets or {}).items():
        overlay["data_path"][key] = value
    for key, value in sections.items():
        overlay.setdefault(key, {}).update(value)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yml").write_text(yaml.safe_dump(overlay))
    return out / "config.yml"


def test_images_in_thousands_folders_are_listed_by_sorted_relative_path(tmp_path):
    root = ffhq_as_downloaded(tmp_path / "images1024x1024")
    (root / ".cache").mkdir()
    shutil.copy(root / "00000/00000.png", root / ".cache/00000.png")  # hidden folders are not data
    listed = [p.relative_to(root).as_posix() for p in image_files(root)]
    assert listed == ["00000/00000.png", "00000/00001.png", "01000/00000.png", "01000/00001.png"]


def test_a_flat_folder_keeps_its_file_names_as_keys(tmp_path):
    root = make_image_folder(tmp_path / "fdf", n_images=3, size=64)
    assert [image_key(root, p) for p in image_files(root)] == ["00000.png", "00001.png", "00002.png"]


def test_same_named_images_in_sub_folders_get_distinct_keys(tmp_path):
    root = ffhq_as_downloaded(tmp_path / "ffhq")
    keys = [image_key(root, p) for p in image_files(root)]
    assert len(set(keys)) == len(keys) == 4


def test_an_image_folder_holding_only_videos_is_an_error_saying_what_it_holds(tmp_path):
    make_dfdc_dataset(tmp_path / "dfdc", videos_per_split=1, n_frames=2)
    folder = tmp_path / "dfdc/valid/data"
    with pytest.raises(ConfigError) as error:
        image_folder_files(folder, "data_path.ffhq.data_path")
    message = str(error.value)
    assert f"'data_path.ffhq.data_path': {folder} should hold face images" in message
    assert "found 2 .mp4 files, 1 .csv file" in message


def test_an_fdf_licence_folder_with_one_folder_per_size_asks_for_one_size(tmp_path):
    root = tmp_path / "fdf/cc-by-nc-sa-2"
    for size in (8, 16, 128):  # FDF's archives: the same image numbers at every size
        make_image_folder(root / str(size), n_images=2, size=size)
    with pytest.raises(ConfigError, match=r"one folder per image size \(8, 16, 128\).*e\.g\. \S+/cc-by-nc-sa-2/128"):
        image_folder_files(root, "data_path.fdf.data_path")
    assert len(image_folder_files(root / "128", "data_path.fdf.data_path")) == 2


def test_a_dfdc_train_root_without_part_folders_says_what_it_found(tmp_path):
    make_dfdc_dataset(tmp_path / "dfdc", videos_per_split=1, n_frames=2)
    with pytest.raises(ConfigError, match=r"should hold DFDC part folders .*found 2 .mp4 files, 1 .csv file$"):
        dfdc_train_videos(tmp_path / "dfdc/valid/data")


def test_a_dfdc_part_folder_given_as_the_train_root_is_recognised(tmp_path):
    make_dfdc_dataset(tmp_path / "dfdc", videos_per_split=1, n_frames=2)
    with pytest.raises(ConfigError, match="this is one part folder: point the key at the folder holding it"):
        dfdc_train_videos(tmp_path / "dfdc/train/dfdc_train_part_0")


def dfdc_with(tmp_path: Path, change=None):
    """A generated DFDC set (one real and one fake per split), changed by `change(dfdc root)`, and its config."""
    make_dfdc_dataset(tmp_path / "data/dfdc", videos_per_split=1, n_frames=2)
    if change:
        change(tmp_path / "data/dfdc")
    return load_config(config_for(tmp_path / "data", tmp_path / "out"))


def remove_videos(folder: Path) -> None:
    for video in folder.glob("*.mp4"):
        video.unlink()


def test_a_dfdc_test_folder_without_its_labels_file_is_an_error(tmp_path):
    cfg = dfdc_with(tmp_path, lambda dfdc: (dfdc / "test/data/labels.csv").rename(dfdc / "test/labels.csv"))
    with pytest.raises(ConfigError, match=r"'data_path.dfdc.test': \S+ should hold labels.csv .* beside its 2 videos"):
        video_sets(cfg, ["dfdc"])


def test_a_dfdc_valid_folder_without_videos_is_an_error(tmp_path):
    cfg = dfdc_with(tmp_path, lambda dfdc: remove_videos(dfdc / "valid/data"))
    with pytest.raises(ConfigError, match=r"'data_path.dfdc.valid': \S+ should hold the DFDC valid videos .*"
                                          r"found 1 .csv file$"):
        video_sets(cfg, ["dfdc"])


def test_an_empty_ffhq_folder_is_an_error_not_zero_items(tmp_path):
    (tmp_path / "data/ffhq").mkdir(parents=True)
    cfg = load_config(config_for(tmp_path / "data", tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"'data_path.ffhq.data_path': \S+ should hold face images .* found nothing"):
        image_sets(cfg, ["ffhq"])


def test_dfdc_metadata_whose_videos_are_all_missing_is_an_error(tmp_path):
    cfg = dfdc_with(tmp_path, lambda dfdc: remove_videos(dfdc / "train/dfdc_train_part_0"))
    with pytest.raises(ConfigError, match="list 2 videos and none of them is beside its metadata.json"):
        video_sets(cfg, ["dfdc"])


def remove_the_fake(part: Path) -> None:
    fake = next(name for name, record in json.loads((part / "metadata.json").read_text()).items() if record["original"])
    (part / fake).unlink()


def test_dfdc_metadata_without_a_fake_of_a_present_original_has_no_mri_pair(tmp_path):
    cfg = dfdc_with(tmp_path, lambda dfdc: remove_the_fake(dfdc / "train/dfdc_train_part_0"))
    with pytest.raises(ConfigError, match="list no fake video whose original is on disk"):
        pair_groups(cfg, ["dfdc"])


def test_celeb_df_folders_without_a_real_fake_pair_are_an_error(tmp_path):
    make_celeb_df(tmp_path / "data/celeb", n_frames=2)
    for i, fake in enumerate(sorted((tmp_path / "data/celeb/Celeb-synthesis").glob("*.mp4"))):
        fake.rename(fake.with_name(f"clip{i}.mp4"))  # not named after a real
    cfg = load_config(config_for(tmp_path / "data", tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"no real id<A>_<NNNN>.mp4 .* found 2 .mp4 files and 2 .mp4 files$"):
        pair_groups(cfg, ["celeb_df_v2"])


# --- whole steps ---------------------------------------------------------------------------------------------------


def preprocess(config: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "data_preprocess.py"), "--config", str(config),
                           "--workers", "1", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # starts data_preprocess.py
def test_a_folder_of_the_wrong_layout_stops_the_command_in_one_line_with_exit_2(tmp_path):
    make_dfdc_dataset(tmp_path / "data/dfdc", videos_per_split=1, n_frames=2)
    config = config_for(tmp_path / "data", tmp_path / "out", {"ffhq": {"data_path": str(tmp_path / "data/dfdc/test")}})
    result = preprocess(config, "--extract_landmarks", "--datasets", "ffhq")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"data_preprocess.py: error: config key 'data_path.ffhq.data_path': {tmp_path}/data/dfdc/test should hold "
        "face images (.png .jpg .jpeg .bmp .webp), flat or in sub-folders; found 1 folder"]


@pytest.mark.slow  # runs face detection on 4 images in data_preprocess.py (about 10 s)
def test_ffhq_as_downloaded_gets_one_crop_per_face_in_its_own_sub_folder(tmp_path):
    root = ffhq_as_downloaded(tmp_path / "data/ffhq")
    config = config_for(tmp_path / "data", tmp_path / "out")
    result = preprocess(config, "--extract_landmarks", "--crop_faces", "--gen_mri_dataset", "--datasets", "ffhq")
    assert result.returncode == 0, result.stderr
    cfg = load_config(config)
    crops = cfg.path("features.ffhq.crops_path")
    assert [p.relative_to(crops).as_posix() for p in image_files(crops)] == \
        ["00000/00000_0.png", "00000/00001_0.png", "01000/00000_0.png", "01000/00001_0.png"]
    reals = pd.concat([pd.read_csv(cfg.asset(f"features.mri_dataset_real_{s}_csv")) for s in ("train", "test")])
    assert sorted(reals["group"]) == ["ffhq:00000/00000_0", "ffhq:00000/00001_0", "ffhq:01000/00000_0",
                                      "ffhq:01000/00001_0"]
    assert root.is_dir() and len(image_files(root)) == 4  # the input is untouched


@pytest.mark.slow  # runs --gen_mri_dataset twice on 4 real and 4 fake videos (about 30 s)
def test_dfdc_fraction_skips_the_left_out_videos_before_their_pairs_are_computed(tmp_path):
    data = tmp_path / "data"
    make_dfdc_dataset(data / "dfdc", videos_per_split={"train": 4, "valid": 1, "test": 1}, n_frames=11, seed=4)
    half = config_for(data, tmp_path / "half", mri={"dfdc_fraction": 0.5})
    whole = config_for(data, tmp_path / "whole", mri={"dfdc_fraction": 1.0})
    for config in (half, whole):
        result = preprocess(config, "--gen_mri_dataset", "--datasets", "dfdc")
        assert result.returncode == 0, result.stderr
    videos = dfdc_train_videos(data / "dfdc/train")
    fakes_of = {v.video_id: [f.video_id for f in videos if f.original == v.path.name] for v in videos if not v.label}
    # the rule of the CSV writer before (commit bc58e80): a seeded permutation of the sorted groups, rounded up
    groups = sorted(f"dfdc:{real}" for real in fakes_of)
    kept = sorted(g.split(":")[1] for g in np.random.default_rng(42).permutation(groups)[:math.ceil(0.5 * 4)])
    cfg = load_config(half)
    assert sorted(p.name for p in cfg.path("features.dfdc.mri_path").iterdir()) == \
        sorted(f for real in kept for f in fakes_of[real])
    assert sorted(p.name for p in cfg.path("features.dfdc.mri_faces_path").iterdir()) == \
        sorted(kept + [f for real in kept for f in fakes_of[real]])
    # the kept pairs are the same rows as when every video is computed
    ours = pd.read_csv(cfg.asset("features.dfdc.mri_metadata_csv")).replace(str(tmp_path / "half"), "", regex=True)
    everything = pd.read_csv(load_config(whole).asset("features.dfdc.mri_metadata_csv"))
    everything = everything.replace(str(tmp_path / "whole"), "", regex=True)
    assert ours.equals(everything[everything["real_video"].isin(kept)].reset_index(drop=True))
    fakes = pd.concat([pd.read_csv(cfg.asset(f"features.mri_dataset_fake_{s}_csv")) for s in ("train", "test")])
    assert sorted(set(fakes["group"])) == [f"dfdc:{real}" for real in kept]
