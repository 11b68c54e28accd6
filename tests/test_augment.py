"""utils/augment.py: the seeded plan (sizes, groups, ranges, JSON), every step's effect, and augmented copies."""
import hashlib
import json
import random
import resource
from collections import Counter

import numpy as np
import pytest

from tests.helpers import make_face_video
from utils.demo.synthetic import face_frames, face_photo
from utils.errors import OutputError
from utils.media.augment import (
    AUGMENTATIONS,
    DISTRACTIONS,
    NOISE_PARAMS,
    NOISE_TYPES,
    apply_steps,
    augment_video,
    make_plan,
    make_step,
    sample_all,
)
from utils.media.video import VideoReader, probe

WHITE = [255, 255, 255]
TEXT = {"text": "Ab3dE5gH", "color": WHITE, "thickness": 2, "font_scale": 1, "x": 0.1, "y": 0.5}
SHAPE = {"shape": "rectangle", "size": "medium", "color": WHITE, "x": 0.3, "y": 0.3}

# One concrete step of every type, with parameters that must visibly change a frame.
EVERY_STEP = (
    [("noise", name, NOISE_PARAMS[name]) for name in NOISE_TYPES]
    + [("augmentation", "blur", {"kernel": 7}), ("augmentation", "contrast", {"contrast": 20}),
       ("augmentation", "brightness", {"brightness": -20}), ("augmentation", "brightness", {"brightness": 20}),
       ("augmentation", "rotation", {"angle": 10}), ("augmentation", "flip_horizontal", {}),
       ("augmentation", "rescale", {"size": [800, 600]})]
    + [("distraction", "static_text", TEXT), ("distraction", "rolling_text", {**TEXT, "direction": "t_to_b"}),
       ("distraction", "spontaneous_text", {"rate": 100}), ("distraction", "static_shape", SHAPE),
       ("distraction", "rolling_shape", {**SHAPE, "shape": "circle", "direction": "r_to_l"}),
       ("distraction", "spontaneous_shape", {"rate": 100})]
)


def step(kind, name, params):
    return {"kind": kind, "type": name, "params": params}


def videos(n):
    return [f"part_{i % 3}/{i:04d}.mp4" for i in range(n)]


@pytest.fixture(scope="module")
def frame():
    return next(face_frames(face_photo("astronaut"), 160, 120, 1, seed=2))[0]


@pytest.fixture(scope="module")
def source_video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("augment")
    return make_face_video(folder / "4000.mp4", width=160, height=120, n_frames=8, fps=12.5)


def apply_one(frames, one_step, seed=0):
    return list(apply_steps(frames, [one_step], seed))


# ---------------------------------------------------------------- the plan

def test_plan_has_the_original_group_sizes_and_no_video_twice():
    plan = make_plan(videos(100), seed=1)
    groups = Counter(tuple(s["kind"] for s in entry["steps"]) for entry in plan)
    assert groups == {("distraction",): 10, ("distraction", "noise"): 10,
                      ("distraction", "noise", "augmentation"): 4, ("noise",): 1,
                      ("augmentation", "noise"): 1, ("augmentation",): 1}
    chosen = [entry["video"] for entry in plan]
    assert len(set(chosen)) == len(chosen) == 27 and set(chosen) <= set(videos(100))


@pytest.mark.parametrize("n, expected", [(0, 0), (7, 0), (20, 4)])
def test_small_populations_give_empty_groups_without_error(n, expected):
    assert len(make_plan(videos(n), seed=1)) == expected


def test_plan_is_deterministic_per_seed_and_differs_across_seeds():
    assert make_plan(videos(100), seed=5) == make_plan(videos(100), seed=5)
    assert make_plan(videos(100), seed=5) != make_plan(videos(100), seed=6)


def test_plan_survives_json_round_trip_with_every_parameter_resolved():
    plan = make_plan(videos(100), seed=3)
    text = json.dumps(plan)
    assert json.loads(text) == plan
    assert "RANDOM" not in text
    assert all(isinstance(entry["seed"], int) for entry in plan)


def test_drawn_parameters_stay_in_the_original_ranges():
    rng = random.Random(0)
    seen = Counter()
    for _ in range(300):
        for kind in ("augmentation", "distraction"):
            drawn = make_step(kind, rng)
            p = drawn["params"]
            seen[drawn["type"]] += 1
            checks = {
                "blur": lambda: 7 <= p["kernel"] <= 12,
                "contrast": lambda: -20 <= p["contrast"] <= 20,
                "brightness": lambda: -20 <= p["brightness"] <= 20,
                "rotation": lambda: -15 <= p["angle"] <= 15,
                "flip_horizontal": lambda: p == {},
                "rescale": lambda: p["size"] in ([800, 600], [1280, 720]),
            }
            if drawn["type"] in checks:
                assert checks[drawn["type"]](), drawn
            elif drawn["type"].startswith("spontaneous"):
                assert 10 <= p["rate"] <= 50
            else:
                assert 0 <= p["x"] < 1 and 0 <= p["y"] < 1
                assert p["color"] in ([0, 0, 255], [0, 255, 0], [255, 0, 0], WHITE, [0, 0, 0])
            if drawn["type"].endswith("_text") and "text" in p:
                assert len(p["text"]) == 8 and p["text"].isalnum()
                assert 1 <= p["thickness"] <= 3 and 1 <= p["font_scale"] <= 6
    assert set(seen) == set(AUGMENTATIONS) | set(DISTRACTIONS)


def test_brightness_has_its_own_draw_over_the_whole_range():
    """docs/differences.md#augmentation-copies: the original drew brightness with the contrast helper; here it is its
    own parameter."""
    rng = random.Random(4)
    values = {make_step("augmentation", rng, "brightness")["params"]["brightness"] for _ in range(200)}
    assert min(values) < -15 and max(values) > 15 and len(values) > 30


def test_unknown_step_is_rejected_before_any_frame():
    with pytest.raises(ValueError, match="unknown augmentation type 'sharpen'"):
        apply_steps([], [step("augmentation", "sharpen", {})], 0)
    with pytest.raises(ValueError, match="unknown step kind"):
        make_step("filter", random.Random(0))


# ---------------------------------------------------------------- each step on frames

@pytest.mark.parametrize("kind, name, params", EVERY_STEP, ids=lambda v: v if isinstance(v, str) else None)
def test_every_step_changes_the_frame_and_keeps_dtype(frame, kind, name, params):
    original = frame.copy()
    (out,) = apply_one([frame], step(kind, name, params))
    assert np.array_equal(frame, original)  # the input array is never drawn on
    expected_shape = (600, 800, 3) if name == "rescale" else frame.shape
    assert out.shape == expected_shape and out.dtype == np.uint8
    assert out.shape != frame.shape or not np.array_equal(out, frame)


@pytest.mark.parametrize("name", ["contrast", "brightness"])
def test_zero_contrast_or_brightness_leaves_the_frame_unchanged(frame, name):
    (out,) = apply_one([frame], step("augmentation", name, {name: 0}))
    assert np.array_equal(out, frame)


def test_contrast_follows_the_original_formula():
    pixels = np.array([[[0, 60, 127], [128, 200, 255]]], np.uint8)
    (out,) = apply_one([pixels], step("augmentation", "contrast", {"contrast": 20}))
    factor = 131 * (20 + 127) / (127 * (131 - 20))
    expected = np.clip(np.round(factor * pixels.astype(float) + 127 * (1 - factor)), 0, 255)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_brightness_follows_the_original_formula():
    pixels = np.array([[[0, 100, 255]]], np.uint8)
    (brighter,) = apply_one([pixels], step("augmentation", "brightness", {"brightness": 20}))
    (darker,) = apply_one([pixels], step("augmentation", "brightness", {"brightness": -20}))
    assert brighter.tolist() == [[[20, 112, 255]]]  # (235/255)*v + 20
    assert darker.tolist() == [[[0, 92, 235]]]  # (235/255)*v


def test_flipping_twice_gives_back_the_frame(frame):
    flip = step("augmentation", "flip_horizontal", {})
    assert np.array_equal(list(apply_steps([frame], [flip, flip], 0))[0], frame)


def test_rotation_turns_about_the_true_centre():
    """docs/differences.md#augmentation-copies: the original's centre had x and y swapped, which moves a centred blob
    off centre."""
    image = np.zeros((120, 160, 3), np.uint8)
    image[50:70, 70:90] = 255  # a square centred on the pixel grid's centre (row 59.5, column 79.5)
    (out,) = apply_one([image], step("augmentation", "rotation", {"angle": 15}))
    weight = out[..., 0].astype(float)
    rows, cols = np.indices(weight.shape)
    centre = ((rows * weight).sum() / weight.sum(), (cols * weight).sum() / weight.sum())
    assert centre == pytest.approx((59.5, 79.5), abs=0.05)
    assert not np.array_equal(out, image)


def test_rolling_shape_moves_ten_pixels_a_frame_and_wraps_around():
    grey = np.full((64, 96, 3), 128, np.uint8)
    rolling = step("distraction", "rolling_shape",
                   {"shape": "rectangle", "size": "small", "color": [255, 0, 0], "x": 0.1, "y": 0.5,
                    "direction": "l_to_r"})
    outs = apply_one([grey] * 10, rolling)
    lefts = [int(np.nonzero((out != grey).any(axis=(0, 2)))[0].min()) for out in outs]
    assert lefts[:3] == [9, 19, 29]
    assert lefts[9] == (9 + 90) % 96  # left the right edge, came back on the left


def test_spontaneous_distraction_fires_on_about_rate_percent_of_frames():
    """docs/differences.md#augmentation-copies: the original fired on every frame; the rate is a percent chance per
    frame."""
    grey = np.full((32, 32, 3), 128, np.uint8)  # no distraction colour is grey, so every firing shows
    outs = apply_one([grey] * 200, step("distraction", "spontaneous_shape", {"rate": 30}), seed=11)
    fired = sum(not np.array_equal(out, grey) for out in outs)
    assert 35 <= fired <= 85


def test_same_seed_gives_identical_frames_and_another_seed_does_not(frame):
    steps = [step("distraction", "spontaneous_text", {"rate": 50}), step("noise", "gaussian", NOISE_PARAMS["gaussian"])]
    frames = [frame] * 4
    first, again = list(apply_steps(frames, steps, 9)), list(apply_steps(frames, steps, 9))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, apply_steps(frames, steps, 10)))
    assert not np.array_equal(first[0], first[1])  # noise is drawn fresh for every frame


# ---------------------------------------------------------------- videos

def test_augment_video_writes_a_copy_at_the_exact_fps_and_leaves_the_source(source_video, tmp_path):
    before = hashlib.sha256(source_video.read_bytes()).hexdigest()
    steps = [step("distraction", "static_text", TEXT), step("noise", "salt", NOISE_PARAMS["salt"]),
             step("augmentation", "rescale", {"size": [800, 600]})]
    dst = tmp_path / "out" / "4000.mp4"
    record = augment_video(source_video, dst, steps, seed=3)
    assert hashlib.sha256(source_video.read_bytes()).hexdigest() == before
    info = probe(dst)
    assert (info.frame_count, info.width, info.height) == (8, 800, 600)
    assert info.fps == pytest.approx(12.5)  # the original truncated it to 12
    assert {k: record[k] for k in ("width", "height", "fps", "frames")} == {
        "width": 800, "height": 600, "fps": 12.5, "frames": 8}
    assert record["input_file"] == str(source_video) and record["out_file"] == str(dst)
    json.dumps(record)
    with VideoReader(dst) as reader:
        assert sum(1 for _ in reader.frames(1)) == 8


def test_a_copy_cut_short_by_the_file_size_limit_is_an_output_error_and_leaves_nothing(source_video, tmp_path):
    """OpenCV's video writer never reports a failed write; the frame count of what landed does."""
    steps = [step("augmentation", "rescale", {"size": [800, 600]})]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))  # a real limit; python ignores SIGXFSZ: EFBIG
    try:
        with pytest.raises(OutputError, match=r"cannot write \S+4000.mp4: the video writer stopped after"):
            augment_video(source_video, tmp_path / "4000.mp4", steps, seed=3)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert list(tmp_path.iterdir()) == []


def test_augment_video_refuses_to_overwrite_its_source(source_video):
    with pytest.raises(ValueError, match="overwrite its source"):
        augment_video(source_video, source_video, [], seed=0)


def test_sample_all_writes_one_video_per_method_and_resumes(source_video, tmp_path):
    written = sample_all(source_video, tmp_path, seed=7)
    expected = ({f"4000_{name}.mp4" for name in AUGMENTATIONS + DISTRACTIONS}
                | {f"4000_noise_{name}.mp4" for name in NOISE_TYPES})
    assert len(expected) == 19
    assert {p.name for p in written} == expected == {p.name for p in tmp_path.iterdir()}
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert sample_all(source_video, tmp_path, seed=7) == []
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps
    assert probe(tmp_path / "4000_rescale.mp4").width in (800, 1280)
