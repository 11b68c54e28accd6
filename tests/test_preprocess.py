"""data_preprocess.py on a generated DFDC/Celeb-DF/FDF/FFHQ data set: outputs, resume, shards, read-only inputs."""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.helpers import file_size_limit, original_classifier_checkpoint, without_root_override
from utils.config import PROJECT_ROOT, load_config
from utils.demo.synthetic import (
    background,
    dataset_config,
    make_celeb_df,
    make_dfdc_dataset,
    make_image_folder,
    write_video,
)
from utils.errors import IntermediateError
from utils.fileio import png_complete, read_csv_intermediate, read_rgb, sha256
from utils.infer.provenance import csv_source

STEPS = ["--extract_landmarks", "--crop_faces", "--gen_mri_dataset", "--gen_deepfake_metadata"]
# every test runs data_preprocess.py, or reads the outputs of the run shared by the module (pipeline)
pytestmark = pytest.mark.slow


def tree_hashes(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root (hidden partial files included, so leftovers show)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def numbers(entry) -> np.ndarray:
    """Every number of a landmarks JSON value ([boxes or null, landmarks or null]) as one flat array."""
    return np.array([value for part in entry if part is not None for value in np.ravel(part)], dtype=float)


def make_data(root: Path, videos_per_split=2, n_frames=20, extras=True) -> Path:
    make_dfdc_dataset(root / "dfdc", videos_per_split=videos_per_split, n_frames=n_frames, seed=5)
    if extras:
        make_celeb_df(root / "celeb", seed=5)
        make_image_folder(root / "fdf", 3, 128, seed=1)
        make_image_folder(root / "ffhq", 2, 256, seed=2)
    return root


def write_config(data: Path, out: Path, **sections) -> Path:
    overlay = dataset_config(data, out)
    for key, value in sections.items():
        overlay.setdefault(key, {}).update(value)
    path = out / "config.yml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(overlay))
    return path


def preprocess(config: Path, *args, check=True, timeout=600, **popen):
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "data_preprocess.py"), "--config", str(config),
                             "--workers", "1", *args], capture_output=True, text=True, timeout=timeout, **popen)
    if check:
        assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Every step once on the generated data; input hashes taken before and after."""
    root = tmp_path_factory.mktemp("pre")
    data = make_data(root / "data")
    before = tree_hashes(data)
    # every DFDC video is kept, so the MRI pairs of both fakes are computed (at the shipped 0.5 the left-out half is
    # never processed: tests/test_datasets.py)
    config = write_config(data, root / "out", mri={"dfdc_fraction": 1.0})
    result = preprocess(config, *STEPS)
    return {"data": data, "out": root / "out", "config": config, "before": before, "result": result,
            "cfg": load_config(config)}


def test_inputs_are_untouched(pipeline):
    assert tree_hashes(pipeline["data"]) == pipeline["before"]


def test_landmarks_json_has_every_sampled_frame(pipeline):
    landmarks = pipeline["out"] / "features/dfdc/landmarks/train"
    files = sorted(landmarks.glob("*.json"))
    assert len(files) == 4
    record = json.loads(files[0].read_text())
    assert sorted(record, key=int) == ["0", "10"]  # 20 frames, every 10th
    boxes, points = record["0"]
    assert len(boxes) == 1 and len(boxes[0]) == 4 and len(points[0]) == 5


def test_crops_are_named_and_sized_like_the_original(pipeline):
    crops = pipeline["out"] / "features/dfdc/crop_faces/valid"
    videos = sorted(p for p in crops.iterdir())
    assert len(videos) == 4
    for video in videos:
        names = sorted(p.name for p in video.iterdir())
        assert names == ["0_0.png", "10_0.png"]
        landmarks = json.loads((pipeline["out"] / "features/dfdc/landmarks/valid" / f"{video.name}.json").read_text())
        x1, y1, x2, y2 = (int(v) for v in landmarks["0"][0][0])
        image = cv2.imread(str(video / "0_0.png"))
        pad_w, pad_h = int(0.1 * (x2 - x1)), int(0.1 * (y2 - y1))
        assert image.shape[1] == min(x2 + pad_w, 320) - max(x1 - pad_w, 0)
        assert image.shape[0] == min(y2 + pad_h, 240) - max(y1 - pad_h, 0)
    assert sorted(p.name for p in (pipeline["out"] / "features/fdf/crops").iterdir()) == \
        ["00000_0.png", "00001_0.png", "00002_0.png"]


def test_mri_targets_light_up_for_fakes_and_reals_get_the_blank(pipeline):
    cfg = pipeline["cfg"]
    pairs = pd.read_csv(cfg.asset("features.dfdc.mri_metadata_csv"))
    assert {"real_image", "fake_image", "mri_image", "real_video", "fake_video"} <= set(pairs.columns)
    assert len(pairs) == 4  # 2 fakes x 2 sampled frames
    for row in pairs.itertuples():
        real, fake, mri = (cv2.imread(p) for p in (row.real_image, row.fake_image, row.mri_image))
        assert real.shape == fake.shape  # the same box cut both frames
        assert mri.shape == (256, 256, 3)
        assert mri.mean() > 10  # the swapped face shows
        assert Path(row.real_image).parent.name == row.real_video
        assert Path(row.mri_image).parent.name == row.fake_video == Path(row.fake_image).parent.name
    reals = pd.concat([pd.read_csv(cfg.asset(f"features.mri_dataset_real_{s}_csv")) for s in ("train", "test")])
    fakes = pd.concat([pd.read_csv(cfg.asset(f"features.mri_dataset_fake_{s}_csv")) for s in ("train", "test")])
    assert list(reals.columns[:3]) == ["face_image", "mri_image", "class"]
    assert set(reals["class"]) == {"real"} and set(fakes["class"]) == {"fake"}
    assert not cv2.imread(reals["mri_image"].iloc[0]).any()  # the target of a real face is black
    assert reals["face_image"].str.contains("/fdf/crops/").any() and reals["face_image"].str.contains("/ffhq/").any()


def test_split_is_by_video_group_and_keeps_pairs_together(pipeline):
    cfg = pipeline["cfg"]
    tables = {(kind, split): pd.read_csv(cfg.asset(f"features.mri_dataset_{kind}_{split}_csv"))
              for kind in ("real", "fake") for split in ("train", "test")}
    train_groups = set(tables["real", "train"]["group"]) | set(tables["fake", "train"]["group"])
    test_groups = set(tables["real", "test"]["group"]) | set(tables["fake", "test"]["group"])
    assert train_groups and test_groups and not train_groups & test_groups
    assert len(tables["fake", "test"]) > 0 and len(tables["fake", "train"]) > 0
    for kind in ("real", "fake"):
        train_videos = set(tables[kind, "train"]["video_id"])
        assert not train_videos & set(tables[kind, "test"]["video_id"])


def test_frame_label_csvs_keep_the_original_columns(pipeline):
    cfg = pipeline["cfg"]
    frames = pd.read_csv(cfg.asset("data_path.dfdc.valid_frame_labels_csv_filename"))
    assert list(frames.columns) == ["video_id", "frame", "label"]
    assert len(frames) == 8 and set(frames["label"]) == {0, 1}
    frame_labels = str(cfg.asset("data_path.dfdc.valid_frame_labels_csv_filename"))
    videos = pd.read_csv(frame_labels.replace(".csv", "_videos.csv"))
    assert list(videos.columns) == ["video_id", "label", "n_faces", "status"]
    assert (videos["n_faces"] == 2).all()


def test_re_running_skips_finished_work_and_changes_nothing(pipeline, tmp_path):
    features = pipeline["out"] / "features"
    before = tree_hashes(features)
    result = preprocess(pipeline["config"], *STEPS)
    assert "0 done" in result.stdout and "already done" in result.stdout
    assert tree_hashes(features) == before


def test_bad_videos_are_logged_and_the_step_goes_on(tmp_path):
    data = make_data(tmp_path / "data", extras=False)
    valid = data / "dfdc/valid/data"
    (valid / "broken.mp4").write_text("not a video")
    rng = np.random.default_rng(0)
    write_video(valid / "noface.mp4", [background(160, 120, rng) for _ in range(12)])
    labels = valid / "labels.csv"
    labels.write_text(labels.read_text() + "broken.mp4,1\nnoface.mp4,0\n")
    config = write_config(data, tmp_path / "out")
    result = preprocess(config, "--extract_landmarks", "--crop_faces", "--gen_deepfake_metadata")
    assert "landmarks dfdc_valid: 6 items: 5 done, 0 already done, 1 failed" in result.stdout
    assert "--extract_landmarks: 1 of 14 items failed" in result.stdout  # some failed: said, and exit code 0
    runs = sorted((tmp_path / "out/logs").iterdir())
    failures = pd.read_csv(runs[-1] / "preprocess" / "extract_landmarks_dfdc_valid_failures.csv")
    reasons = dict(zip(failures["item"].map(lambda p: Path(p).name), failures["reason"]))
    assert "not a video file" in reasons["broken.mp4"]
    assert reasons["noface.mp4"] == "no face in any sampled frame"
    cfg = load_config(config)
    frame_labels = str(cfg.asset("data_path.dfdc.valid_frame_labels_csv_filename"))
    videos = pd.read_csv(frame_labels.replace(".csv", "_videos.csv"))
    status = dict(zip(videos["video_id"], videos["status"]))
    assert status["noface"] == "no_face" and status["broken"] == "not_processed"


def test_missing_inputs_name_the_config_key(tmp_path):
    config = write_config(tmp_path / "nothing", tmp_path / "out")
    result = preprocess(config, "--extract_landmarks", check=False)
    assert result.returncode == 2
    assert "config key 'data_path.dfdc.train'" in result.stderr
    result = preprocess(config, "--crop_faces", "--datasets", "celeb_df_v2", check=False)
    assert result.returncode == 2 and "data_path.celeb_df_v2.real" in result.stderr


def test_slurm_array_shards_and_workers_give_the_same_files_as_one_run(tmp_path):
    data = make_data(tmp_path / "data", extras=False)
    steps = ["--extract_landmarks", "--crop_faces", "--gen_mri_dataset"]
    single = write_config(data, tmp_path / "single")
    preprocess(single, *steps)
    sharded = write_config(data, tmp_path / "sharded")

    def array_task(task: int, *args: str) -> subprocess.CompletedProcess:  # the SLURM array script, run by hand
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "2", "PYTHON": sys.executable}
        return subprocess.run(["bash", "cluster/preprocess.sbatch", *args, "--config", str(sharded)],
                              cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)

    refused = array_task(0, *steps)  # one step per array: a shard may need every shard of the step before
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "one step per array" in refused.stderr
    for step in steps:  # each step a 2-task array, after the array of the step before
        for task in range(2):
            result = array_task(task, step)
            assert result.returncode == 0, result.stderr
            assert f"shard {task + 1}/2" in result.stdout
    pooled = write_config(data, tmp_path / "pooled")
    subprocess.run([sys.executable, str(PROJECT_ROOT / "data_preprocess.py"), "--config", str(pooled), *steps,
                    "--workers", "2"], check=True, capture_output=True, timeout=600)
    reference = tree_hashes(tmp_path / "single/features")
    assert len(reference) > 20
    assert tree_hashes(tmp_path / "sharded/features") == reference
    # Worker processes run torch with 1 thread each; on CPUs where oneDNN then picks other kernels (e.g. AMX),
    # detector coordinates differ in the last float digits. Crops and MRIs must still be identical, and the
    # landmark JSONs equal to 1e-3 px.
    pooled = tree_hashes(tmp_path / "pooled/features")
    assert pooled.keys() == reference.keys()
    assert {k: v for k, v in pooled.items() if not k.endswith(".json")} == \
        {k: v for k, v in reference.items() if not k.endswith(".json")}
    for name in (k for k in reference if k.endswith(".json")):
        ours, theirs = (json.loads((tmp_path / run / "features" / name).read_text()) for run in ("pooled", "single"))
        assert ours.keys() == theirs.keys(), name
        for frame in theirs:
            assert np.allclose(numbers(ours[frame]), numbers(theirs[frame]), atol=1e-3), (name, frame)


def test_killed_run_resumes_to_the_same_files(tmp_path):
    data = make_data(tmp_path / "data", videos_per_split=4, n_frames=30, extras=False)
    steps = ["--extract_landmarks", "--crop_faces"]
    reference_config = write_config(data, tmp_path / "reference")
    preprocess(reference_config, *steps)
    config = write_config(data, tmp_path / "killed")
    landmarks = tmp_path / "killed/features/dfdc/landmarks/train"
    process = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "data_preprocess.py"), "--config", str(config),
                                "--workers", "1", *steps], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (landmarks.is_dir() and any(landmarks.glob("*.json"))):
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    partial = tree_hashes(tmp_path / "killed/features")
    reference = tree_hashes(tmp_path / "reference/features")
    assert 0 < len(partial) < len(reference)  # it really stopped half-way
    preprocess(config, *steps)
    assert tree_hashes(tmp_path / "killed/features") == reference


def test_augmentation_writes_a_separate_seeded_copy(tmp_path):
    data = make_data(tmp_path / "data", videos_per_split=6, n_frames=12, extras=False)
    before = tree_hashes(data)
    config = write_config(data, tmp_path / "out", data_path={
        "dfdc": {**dataset_config(data, tmp_path / "out")["data_path"]["dfdc"], "train_source": "augmented"}})
    sample = next((data / "dfdc/valid/data").glob("*.mp4"))
    result = preprocess(config, "--apply_aug_to_sample", "--sample_video", str(sample), "--gen_aug_plan",
                        "--apply_aug_to_all", "--extract_landmarks", "--datasets", "dfdc")
    assert tree_hashes(data) == before
    cfg = load_config(config)
    plan = json.loads(cfg.asset("data_path.dfdc.data_augmentation.plan_pkl_filename").read_text())
    assert plan["population"] == 12 and len(plan["entries"]) == 2  # S = int(0.3 * 12) = 3 -> groups of 1 and 1
    augmented_root = cfg.path("data_path.dfdc.data_augmentation.output_path") / "dfdc_train_part_0"
    videos = sorted(augmented_root.glob("*.mp4"))
    assert len(videos) == 12 and (augmented_root / "metadata.json").is_file()
    planned = {Path(e["video"]).name for e in plan["entries"]}
    assert {v.name for v in videos if not v.is_symlink()} == planned
    records = sorted((cfg.path("assets") / "aug_metadata").glob("*.json"))
    assert len(records) == 2
    landmarks = cfg.path("features.dfdc.landmarks_path.train")
    assert len(list(landmarks.glob("*.json"))) == 12  # the landmark step read the augmented copy
    assert len(list((cfg.path("assets") / "sample_augmentation").glob("*.mp4"))) == 19
    # the plan is seeded: drawing it again gives the same JSON
    first = cfg.asset("data_path.dfdc.data_augmentation.plan_pkl_filename").read_text()
    preprocess(config, "--gen_aug_plan", "--datasets", "dfdc")
    assert cfg.asset("data_path.dfdc.data_augmentation.plan_pkl_filename").read_text() == first
    assert "augment: 12 items" in result.stdout


@pytest.fixture(scope="module")
def dfdc_mris(pipeline):
    """A small seeded generator at MRI_GAN.weights, run by --gen_dfdc_mri --gen_deepfake_metadata."""
    import torch

    from models.mri_gan import Generator, init_weights

    torch.manual_seed(0)
    generator = Generator(ngf=8)
    generator.apply(init_weights)
    weights = pipeline["cfg"].asset("MRI_GAN.weights")
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"generator_state_dict": generator.state_dict()}, weights)
    preprocess(pipeline["config"], "--gen_dfdc_mri", "--gen_deepfake_metadata")
    return pipeline


def test_gen_dfdc_mri_predicts_one_mri_per_crop(dfdc_mris):
    pipeline = dfdc_mris
    cfg = pipeline["cfg"]
    for split in ("train", "valid", "test"):
        crops = cfg.path(f"features.dfdc.crop_faces.{split}")
        mris = cfg.path(f"features.dfdc.{split}_mrip2p_faces")
        for video in crops.iterdir():
            names = sorted(p.name for p in video.iterdir())
            assert sorted(p.name for p in (mris / video.name).iterdir()) == names
            images = [cv2.imread(str(mris / video.name / n)) for n in names]
            assert all(i.shape == (256, 256, 3) for i in images)
            # each crop's own MRI (docs/differences.md#mri-prediction-eval-mode)
            assert not np.array_equal(images[0], images[1])
        plain = pd.read_csv(cfg.asset(f"data_path.dfdc.{split}_frame_labels_csv_filename"))
        mri = pd.read_csv(cfg.asset(f"features.dfdc.{split}_mriframe_label"))
        assert plain.equals(mri)
    assert tree_hashes(pipeline["data"]) == pipeline["before"]


# --- faults: exit codes, failed writes, corrupt intermediates, signals ---------------------------------------

DFDC_OUTPUTS = ("dfdc/landmarks/", "dfdc/crop_faces/")


def subtree(hashes: dict[str, str], *prefixes: str) -> dict[str, str]:
    return {path: digest for path, digest in hashes.items() if path.startswith(prefixes)}


def started_from(pipeline, out: Path, *parts: str) -> Path:
    """A config writing to `out` whose features start as a copy of the pipeline's `parts` (e.g. dfdc/landmarks)."""
    config = write_config(pipeline["data"], out)
    for part in parts:
        shutil.copytree(pipeline["out"] / "features" / part, out / "features" / part)
    return config


def partial_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".partial" in p.name or ".stale" in p.name]


def last_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_a_step_whose_every_item_failed_exits_1_after_writing_its_failures_csv(tmp_path):
    data = tmp_path / "data"
    make_dfdc_dataset(data / "dfdc", videos_per_split=1, n_frames=5, seed=5)
    videos = sorted(data.rglob("*.mp4"))
    for video in videos:
        video.write_bytes(b"not a video")
    result = preprocess(write_config(data, tmp_path / "out"), "--extract_landmarks", check=False)
    assert result.returncode == 1
    assert last_line(result).startswith(f"data_preprocess.py: --extract_landmarks: all {len(videos)} items failed")
    (run,) = (tmp_path / "out/logs").iterdir()
    failures = pd.concat(pd.read_csv(f) for f in (run / "preprocess").glob("extract_landmarks_*_failures.csv"))
    assert len(failures) == len(videos) and failures["reason"].str.contains("not a video file").all()


def test_a_failed_write_stops_the_step_at_once_and_the_rerun_ends_with_the_uninterrupted_files(pipeline, tmp_path):
    out = tmp_path / "out"
    config = started_from(pipeline, out, "dfdc/landmarks")

    # every crop PNG is larger than this limit; the run's config and log files are smaller
    limit = min(p.stat().st_size for p in (pipeline["out"] / "features/dfdc/crop_faces").rglob("*.png")) - 1
    result = preprocess(config, "--crop_faces", "--datasets", "dfdc", check=False, preexec_fn=file_size_limit(limit))
    assert result.returncode == 4
    assert re.fullmatch(r"data_preprocess.py: cannot write \S+/crop_faces/train/\S+\.png: File too large \(EFBIG\);.*",
                        last_line(result))
    assert "crops dfdc_train" not in result.stdout  # stopped at once, not after failing every later item
    assert not partial_files(out) and not list((out / "features/dfdc/crop_faces").rglob("*.png"))
    preprocess(config, "--crop_faces", "--datasets", "dfdc")
    assert subtree(tree_hashes(out / "features"), "dfdc/") == \
        subtree(tree_hashes(pipeline["out"] / "features"), *DFDC_OUTPUTS)


def test_a_read_only_output_folder_stops_the_step_in_one_line(pipeline, tmp_path):
    out = tmp_path / "out"
    config = started_from(pipeline, out, "dfdc/landmarks")
    read_only = out / "features/dfdc/crop_faces/train"
    read_only.mkdir(parents=True)
    read_only.chmod(0o555)
    try:
        result = preprocess(config, "--crop_faces", "--datasets", "dfdc", check=False, preexec_fn=without_root_override)
    finally:
        read_only.chmod(0o755)
    assert result.returncode == 4, result.stderr
    assert re.fullmatch(rf"data_preprocess.py: cannot write {read_only}/\w+: Permission denied \(EACCES\);.*",
                        last_line(result))
    assert not partial_files(out) and not any(read_only.iterdir())


def test_corrupt_intermediates_are_named_and_rerunning_their_step_rebuilds_only_them(pipeline, tmp_path):
    out = tmp_path / "out"
    config = started_from(pipeline, out, "dfdc/landmarks", "dfdc/crop_faces")
    cut_json = sorted((out / "features/dfdc/landmarks/train").glob("*.json"))[0]
    cut_json.write_text(cut_json.read_text()[:40])
    shutil.rmtree(out / "features/dfdc/crop_faces/train" / cut_json.stem)
    cut_png = sorted((out / "features/dfdc/crop_faces/valid").glob("*/0_0.png"))[0]
    cut_png.write_bytes(cut_png.read_bytes()[:300])

    result = preprocess(config, "--crop_faces", "--datasets", "dfdc")
    assert "--crop_faces: 1 of 12 items failed" in result.stdout
    assert "crops dfdc_valid: 4 items: 1 done, 3 already done" in result.stdout  # the truncated PNG's folder
    run = max((out / "logs").iterdir())
    (reason,) = pd.read_csv(run / "preprocess" / "crop_faces_dfdc_train_failures.csv")["reason"]
    assert reason.startswith(f"{cut_json} is corrupt (not valid JSON")
    assert reason.endswith("re-run data_preprocess.py --extract_landmarks to rebuild it")

    result = preprocess(config, "--extract_landmarks", "--crop_faces", "--datasets", "dfdc")
    assert "landmarks dfdc_train: 4 items: 1 done, 3 already done" in result.stdout
    assert "crops dfdc_train: 4 items: 1 done, 3 already done" in result.stdout
    assert subtree(tree_hashes(out / "features"), "dfdc/") == \
        subtree(tree_hashes(pipeline["out"] / "features"), *DFDC_OUTPUTS)


def test_truncated_images_and_csvs_are_reported_as_corrupt_with_the_step_that_rebuilds_them(pipeline, tmp_path):
    crop = next((pipeline["out"] / "features/dfdc/crop_faces/train").glob("*/0_0.png"))
    cut = tmp_path / "0_0.png"
    cut.write_bytes(crop.read_bytes()[:300])
    assert png_complete(crop) and not png_complete(cut)
    with pytest.raises(IntermediateError, match=rf"^{cut} is corrupt \(.*\); re-run data_preprocess.py "
                                                r"--crop_faces to rebuild it$"):
        read_rgb(cut, "--crop_faces")
    table = pipeline["cfg"].asset("features.mri_dataset_real_train_csv")
    cut_table = tmp_path / "real_train.csv"
    cut_table.write_text(table.read_text()[:-30])
    with pytest.raises(IntermediateError, match="is corrupt \\(truncated: the last row is cut short\\); re-run "
                                                "data_preprocess.py --gen_mri_dataset to rebuild it"):
        read_csv_intermediate(cut_table, "--gen_mri_dataset")
    with pytest.raises(IntermediateError, match="absent.csv not found; run data_preprocess.py --gen_mri_dataset"):
        read_csv_intermediate(tmp_path / "absent.csv", "--gen_mri_dataset")


def test_sigterm_and_sigint_stop_between_items_and_the_rerun_resumes(pipeline, tmp_path):
    out = tmp_path / "out"
    config = write_config(pipeline["data"], out)
    landmarks = out / "features/dfdc/landmarks"

    def count() -> int:
        return len(list(landmarks.rglob("*.json")))

    def interrupt(signum: int, workers: int) -> subprocess.CompletedProcess:
        """Start the step, send `signum` once one more video is done, and wait for the process to end."""
        before = count()
        process = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "data_preprocess.py"), "--config", str(config),
                                    "--extract_landmarks", "--datasets", "dfdc", "--workers", str(workers)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while count() == before and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=300)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    stopped = interrupt(signal.SIGTERM, workers=1)
    assert stopped.returncode == 143
    assert re.fullmatch(r"data_preprocess.py: stopped by SIGTERM during 'landmarks dfdc_\w+' after \d+ of 4 items; "
                        r"finished outputs are kept: re-run the same command to resume", last_line(stopped))
    first = count()
    assert 0 < first < 12 and not partial_files(out)

    stopped = interrupt(signal.SIGINT, workers=2)  # the process pool: items in progress finish, then it stops
    assert stopped.returncode == 130 and "stopped by SIGINT" in last_line(stopped)
    assert first < count() < 12 and not partial_files(out)

    preprocess(config, "--extract_landmarks", "--datasets", "dfdc")
    ours, reference = out / "features/dfdc/landmarks", pipeline["out"] / "features/dfdc/landmarks"
    assert tree_hashes(ours).keys() == tree_hashes(reference).keys()
    for path in reference.rglob("*.json"):  # pool workers run MTCNN on 1 thread: float noise in the last digits
        mine, theirs = json.loads((ours / path.relative_to(reference)).read_text()), json.loads(path.read_text())
        assert mine.keys() == theirs.keys(), path.name
        for frame in theirs:
            assert np.allclose(numbers(mine[frame]), numbers(theirs[frame]), atol=1e-3), (path.name, frame)


def test_gen_dfdc_mri_renders_as_the_original_on_request(dfdc_mris, tmp_path):
    cfg = dfdc_mris["cfg"]
    splits = ("train", "valid", "test")
    elsewhere = [arg for split in splits for arg in ("--set", f"features.dfdc.{split}_mrip2p_faces={tmp_path / split}")]
    preprocess(dfdc_mris["config"], "--gen_dfdc_mri", "--original_mri_rendering", *elsewhere)
    for split in splits:
        default, original = cfg.path(f"features.dfdc.{split}_mrip2p_faces"), tmp_path / split
        assert (original / "mri_rendering.txt").read_text().strip() == "original"
        assert (default / "mri_rendering.txt").read_text().strip() == "default"
        for video in (p for p in default.iterdir() if p.is_dir()):
            for name in (p.name for p in video.iterdir()):
                ours = cv2.imread(str(video / name)).astype(int)
                theirs = cv2.imread(str(original / video.name / name)).astype(int)
                # same output x in [-1, 1]: ours = round((x + 1) / 2 * 255); the original's = x * 255 + 0.5
                # clamped to [0, 255] and truncated, i.e. 2 * ours - 255 clamped at 0, within rounding (2 levels)
                assert np.abs(theirs - np.clip(2 * ours - 255, 0, 255)).max() <= 2
    # MRIs of the other rendering are never mixed into a folder: one line, exit code 2
    mixed = preprocess(dfdc_mris["config"], "--gen_dfdc_mri", *elsewhere, check=False)
    errors = mixed.stderr.splitlines()
    assert mixed.returncode == 2 and len(errors) == 1 and "rendered the original way" in errors[0]
    # the original authors' MRI classifier where the app reads it: rendered the original way without the flag, said
    # in one line (its finished MRIs are skipped), unless --mri_rendering says otherwise
    classifier = cfg.path("assets") / "weights" / "deepfake_MRI_weights.chkpt"
    original_classifier_checkpoint(classifier, {})
    try:
        chosen = preprocess(dfdc_mris["config"], "--gen_dfdc_mri", *elsewhere)
        told = preprocess(dfdc_mris["config"], "--gen_dfdc_mri", "--mri_rendering", "default", *elsewhere,
                          check=False)
    finally:
        classifier.unlink()  # the module's data set stays as it was
    said = [line for line in chosen.stderr.splitlines() if "original authors'" in line]
    assert len(said) == 1
    assert f"{classifier} is the original authors' MRI classifier: rendering MRIs the original way" in said[0]
    errors = told.stderr.splitlines()
    assert told.returncode == 2 and len(errors) == 1 and "rendered the original way" in errors[0]


def test_gen_dfdc_mri_refuses_another_generator_before_writing_any_split(dfdc_mris, tmp_path):
    import torch

    from models.mri_gan import Generator

    cfg = dfdc_mris["cfg"]
    torch.manual_seed(1)
    other = tmp_path / "other_G.chkpt"
    torch.save({"generator_state_dict": Generator(ngf=8).state_dict()}, other)
    held = cfg.path("features.dfdc.test_mrip2p_faces")  # made by the fixture's generator
    before = tree_hashes(held)
    fresh = [arg for split in ("train", "valid") for arg in ("--set", f"features.dfdc.{split}_mrip2p_faces="
                                                                      f"{tmp_path / split}")]
    refused = preprocess(dfdc_mris["config"], "--gen_dfdc_mri", "--set", f"MRI_GAN.weights={other}", *fresh,
                         check=False)
    errors = refused.stderr.splitlines()
    assert refused.returncode == 2 and len(errors) == 1 and f"{held} holds MRIs of generator" in errors[0]
    assert "--set features.dfdc.test_mrip2p_faces=DIR" in errors[0]
    assert tree_hashes(held) == before and not (tmp_path / "train").exists() and not (tmp_path / "valid").exists()


def test_gen_deepfake_metadata_names_the_generator_of_the_mri_csvs(dfdc_mris):
    cfg = dfdc_mris["cfg"]
    for split in ("train", "valid", "test"):
        csv = cfg.asset(f"features.dfdc.{split}_mriframe_label")
        assert csv_source(csv).sha256 == sha256(cfg.asset("MRI_GAN.weights"))
