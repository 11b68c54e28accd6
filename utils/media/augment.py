"""Augmentation and distraction of training videos: a seeded JSON plan, and augmented copies written from it.

Kinds, parameter ranges and plan proportions are the original's without its bugs
(docs/differences.md#seeded-records-no-pickles and docs/differences.md#augmentation-copies).
"""
from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
from skimage.util import random_noise

from utils.errors import VideoError
from utils.media.video import VideoReader, write_video

NOISE_TYPES = ("gaussian", "speckle", "s&p", "pepper", "salt", "poisson", "localvar")
AUGMENTATIONS = ("blur", "contrast", "brightness", "rotation", "flip_horizontal", "rescale")
DISTRACTIONS = ("static_text", "rolling_text", "spontaneous_text", "static_shape", "rolling_shape",
                "spontaneous_shape")
KINDS = {"distraction": DISTRACTIONS, "noise": NOISE_TYPES, "augmentation": AUGMENTATIONS}

# scikit-image's random_noise defaults, written out so each plan entry records exactly what was applied.
NOISE_PARAMS = {
    "gaussian": {"mean": 0.0, "var": 0.01},
    "speckle": {"mean": 0.0, "var": 0.01},
    "s&p": {"amount": 0.05, "salt_vs_pepper": 0.5},
    "pepper": {"amount": 0.05},
    "salt": {"amount": 0.05},
    "poisson": {},
    "localvar": {"local_vars": 0.01},  # one constant variance, expanded to the frame's shape when applied
}
# The original's BGR colours (255,0,0), (0,255,0), (0,0,255), white and black, in the RGB order of our frames.
COLOURS = ((0, 0, 255), (0, 255, 0), (255, 0, 0), (255, 255, 255), (0, 0, 0))
SHAPE_SIZES = {"xsmall": 0.005, "small": 0.05, "medium": 0.08, "large": 0.12}
RESCALE_SIZES = ((800, 600), (1280, 720))  # (width, height)
# Unit moves of rolling distractions, (dx, dy) in pixels of ROLL_STEP.
DIRECTIONS = {"l_to_r": (1, 0), "r_to_l": (-1, 0), "t_to_b": (0, 1), "b_to_t": (0, -1)}
ROLL_STEP = 10

PLAN_FRACTION = 0.30
# (steps in order, share of the selected videos), drawn one group after another as in the original.
PLAN_GROUPS = (
    (("distraction",), 0.35),
    (("distraction", "noise"), 0.35),
    (("distraction", "noise", "augmentation"), 0.15),
    (("noise",), 0.05),
    (("augmentation", "noise"), 0.05),
    (("augmentation",), 0.05),
)

Step = dict
FrameFn = Callable[[np.ndarray, int], np.ndarray]  # (RGB frame, frame position) -> RGB frame


# ---------------------------------------------------------------- drawing parameters (plan time)

def _location(rng: random.Random) -> dict:
    # Fractions of width and height, so one plan fits any frame size (the original drew pixels at frame 0).
    return {"x": round(rng.random(), 4), "y": round(rng.random(), 4)}


def _text_params(rng: random.Random) -> dict:
    return {"text": "".join(rng.choices(string.ascii_letters + string.digits, k=8)),
            "color": list(rng.choice(COLOURS)), "thickness": rng.randint(1, 3), "font_scale": rng.randint(1, 6),
            **_location(rng)}


def _shape_params(rng: random.Random) -> dict:
    return {"shape": rng.choice(("circle", "rectangle")), "size": rng.choice(list(SHAPE_SIZES)),
            "color": list(rng.choice(COLOURS)), **_location(rng)}


def _distraction_params(name: str, rng: random.Random) -> dict:
    if name.startswith("spontaneous"):
        # A percent chance per frame; the original compared random() <= rate and so fired on every frame.
        return {"rate": rng.randint(10, 50)}
    params = _text_params(rng) if name.endswith("_text") else _shape_params(rng)
    if name.startswith("rolling"):
        params["direction"] = rng.choice(list(DIRECTIONS))
    return params


_AUGMENTATION_DRAWS = {
    "blur": lambda rng: {"kernel": rng.randint(7, 12)},
    "contrast": lambda rng: {"contrast": rng.randint(-20, 20)},
    "brightness": lambda rng: {"brightness": rng.randint(-20, 20)},  # its own draw; the original reused contrast's
    "rotation": lambda rng: {"angle": rng.randint(-15, 15)},
    "flip_horizontal": lambda rng: {},
    "rescale": lambda rng: {"size": list(rng.choice(RESCALE_SIZES))},
}


def make_step(kind: str, rng: random.Random, name: str | None = None) -> Step:
    """One plan step of `kind` with every parameter drawn from `rng`; `name` is drawn uniformly when None."""
    _check_step(kind, name)
    name = name or rng.choice(KINDS[kind])
    if kind == "noise":
        params = dict(NOISE_PARAMS[name])
    elif kind == "augmentation":
        params = _AUGMENTATION_DRAWS[name](rng)
    else:
        params = _distraction_params(name, rng)
    return {"kind": kind, "type": name, "params": params}


def _check_step(kind: str, name: str | None) -> None:
    """ValueError for an unknown kind or type (a hand-edited plan); name None means 'any type of kind'."""
    if kind not in KINDS:
        raise ValueError(f"unknown step kind {kind!r}; expected one of {sorted(KINDS)}")
    if name is not None and name not in KINDS[kind]:
        raise ValueError(f"unknown {kind} type {name!r}; expected one of {list(KINDS[kind])}")


def make_plan(videos: Sequence[str], seed: int) -> list[dict]:
    """The augmentation plan: 30 % of `videos` in six disjoint groups, every parameter resolved, JSON-ready.

    Each entry is {"video", "seed", "steps"}; the entry seed drives both its parameters and, later, the
    per-frame randomness, so an entry can be re-run on its own with identical output.
    """
    rng = random.Random(seed)
    order = list(videos)
    rng.shuffle(order)
    selected = int(PLAN_FRACTION * len(order))
    plan, start = [], 0
    for kinds, share in PLAN_GROUPS:
        size = int(share * selected)
        for video in order[start:start + size]:
            entry_seed = rng.randrange(2**32)
            entry_rng = random.Random(entry_seed)
            plan.append({"video": video, "seed": entry_seed,
                         "steps": [make_step(kind, entry_rng) for kind in kinds]})
        start += size
    return plan


# ---------------------------------------------------------------- applying steps to frames

def _contrast(frame: np.ndarray, contrast: int) -> np.ndarray:
    if contrast == 0:
        return frame
    factor = 131 * (contrast + 127) / (127 * (131 - contrast))
    return cv2.addWeighted(frame, factor, frame, 0, 127 * (1 - factor))  # saturating, like the original


def _brightness(frame: np.ndarray, brightness: int) -> np.ndarray:
    if brightness == 0:
        return frame
    if brightness > 0:
        alpha, gamma = (255 - brightness) / 255, brightness
    else:
        alpha, gamma = (255 + brightness) / 255, 0
    return cv2.addWeighted(frame, alpha, frame, 0, gamma)


def _rotate(frame: np.ndarray, angle: float) -> np.ndarray:
    height, width = frame.shape[:2]
    # OpenCV wants the centre as (x, y); the original passed (rows/2, cols/2). (w-1)/2 is the pixel grid's centre.
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
    return cv2.warpAffine(frame, matrix, (width, height), borderMode=cv2.BORDER_CONSTANT, borderValue=0)


_AUGMENTATION_FNS = {
    "blur": lambda frame, p: cv2.blur(frame, (p["kernel"], p["kernel"])),
    "contrast": lambda frame, p: _contrast(frame, p["contrast"]),
    "brightness": lambda frame, p: _brightness(frame, p["brightness"]),
    "rotation": lambda frame, p: _rotate(frame, p["angle"]),
    "flip_horizontal": lambda frame, p: cv2.flip(frame, 1),
    "rescale": lambda frame, p: cv2.resize(frame, tuple(p["size"]), interpolation=cv2.INTER_AREA),
}


def _noise_fn(name: str, params: dict, generator: np.random.Generator) -> FrameFn:
    def apply(frame: np.ndarray, position: int) -> np.ndarray:
        kwargs = dict(params)
        if name == "localvar":
            kwargs["local_vars"] = np.full(frame.shape, params["local_vars"])
        noisy = random_noise(frame, mode=name, rng=generator, clip=True, **kwargs)
        return (noisy * 255).astype(np.uint8)  # truncated, not rounded, as the original
    return apply


def _position(params: dict, frame: np.ndarray, position: int) -> tuple[int, int]:
    """Pixel location of a distraction in this frame; rolling ones move ROLL_STEP px a frame and wrap around."""
    height, width = frame.shape[:2]
    x, y = int(params["x"] * width), int(params["y"] * height)
    dx, dy = DIRECTIONS.get(params.get("direction"), (0, 0))
    return (x + dx * ROLL_STEP * position) % width, (y + dy * ROLL_STEP * position) % height


def _draw_text(frame: np.ndarray, params: dict, x: int, y: int) -> None:
    cv2.putText(frame, params["text"], (x, y), cv2.FONT_HERSHEY_SIMPLEX, params["font_scale"],
                tuple(params["color"]), params["thickness"], cv2.LINE_AA)


def _draw_shape(frame: np.ndarray, params: dict, x: int, y: int) -> None:
    height, width = frame.shape[:2]
    scale = SHAPE_SIZES[params["size"]]
    # At least one pixel, so an 'xsmall' shape does not vanish on a small frame.
    size_x, size_y = max(1, int(width * scale)), max(1, int(height * scale))
    colour = tuple(params["color"])
    if params["shape"] == "circle":
        cv2.circle(frame, (x, y), size_x, colour, thickness=-1)
    else:
        cv2.rectangle(frame, (x, y), (x + size_x, y + size_y), colour, thickness=-1)


def _distraction_fn(name: str, params: dict, generator: np.random.Generator) -> FrameFn:
    draw = _draw_text if name.endswith("_text") else _draw_shape
    if not name.startswith("spontaneous"):
        def apply(frame: np.ndarray, position: int) -> np.ndarray:
            frame = frame.copy()  # never draw on the caller's array
            draw(frame, params, *_position(params, frame, position))
            return frame
        return apply

    chooser = random.Random(int(generator.integers(2**63)))
    new_params = _text_params if name.endswith("_text") else _shape_params

    def apply_sometimes(frame: np.ndarray, position: int) -> np.ndarray:
        if chooser.random() * 100 >= params["rate"]:
            return frame
        drawn = new_params(chooser)  # a fresh text or shape each time it fires, as the original
        frame = frame.copy()
        draw(frame, drawn, *_position(drawn, frame, position))
        return frame
    return apply_sometimes


def _step_fn(step: Step, seed: int, index: int) -> FrameFn:
    kind, name, params = step["kind"], step["type"], step["params"]
    _check_step(kind, str(name))
    # Each step gets its own stream, so adding a step never changes the randomness of the others.
    generator = np.random.default_rng([seed, index])
    if kind == "noise":
        return _noise_fn(name, params, generator)
    if kind == "distraction":
        return _distraction_fn(name, params, generator)
    return lambda frame, position: _AUGMENTATION_FNS[name](frame, params)


def apply_steps(frames: Iterable[np.ndarray], steps: list[Step], seed: int) -> Iterator[np.ndarray]:
    """Apply every step of one plan entry to each RGB uint8 frame, in order, in a single pass.

    Same frames, steps and seed give identical output. Bad steps raise ValueError here, before any frame.
    """
    step_fns = [_step_fn(step, seed, index) for index, step in enumerate(steps)]

    def run() -> Iterator[np.ndarray]:
        for position, frame in enumerate(frames):
            for step_fn in step_fns:
                frame = step_fn(frame, position)
            yield frame
    return run()


# ---------------------------------------------------------------- videos

def augment_video(src: str | Path, dst: str | Path, steps: list[Step], seed: int) -> dict:
    """Write an augmented copy of `src` to `dst` (mp4v, atomically, at the source's exact fps); `src` is only read.

    Returns the record to log: input_file, out_file, width, height, fps, frames, seed, steps.
    """
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: the augmented copy would overwrite its source; choose another output path")
    written = {"frames": 0, "shape": None}

    def counted(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in frames:
            written["frames"] += 1
            written["shape"] = frame.shape
            yield frame

    with VideoReader(src) as reader:
        fps = reader.info.fps
        if fps <= 0:
            raise VideoError(f"{src}: the container reports no frame rate; cannot copy it at the same speed")
        source_frames = (frame for _, frame in reader.frames(1))
        write_video(dst, counted(apply_steps(source_frames, steps, seed)), fps=fps, fourcc="mp4v")
    height, width = written["shape"][:2]
    return {"input_file": str(src), "out_file": str(dst), "width": width, "height": height, "fps": fps,
            "frames": written["frames"], "seed": seed, "steps": steps}


def _sample_methods() -> Iterator[tuple[str, str, str]]:
    """(kind, type, file-name suffix) of every method shown by sample_all, in the original's order."""
    for name in AUGMENTATIONS:
        yield "augmentation", name, name
    for name in NOISE_TYPES:
        yield "noise", name, f"noise_{name}"
    for name in DISTRACTIONS:
        yield "distraction", name, name


def sample_all(src: str | Path, out_dir: str | Path, seed: int) -> list[Path]:
    """One copy of `src` per augmentation, noise type and distraction in `out_dir` (19 videos), seeded.

    Outputs that already exist are kept, so an interrupted run resumes; returns the paths written by this call.
    """
    src, out_dir = Path(src), Path(out_dir)
    rng = random.Random(seed)
    written = []
    for kind, name, suffix in _sample_methods():
        # Drawn even for outputs that exist, so a resumed run gives each method the same parameters.
        step = make_step(kind, rng, name)
        entry_seed = rng.randrange(2**32)
        dst = out_dir / f"{src.stem}_{suffix}.mp4"
        if not dst.exists():
            augment_video(src, dst, [step], entry_seed)
            written.append(dst)
    return written
