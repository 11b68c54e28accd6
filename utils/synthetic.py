"""Synthetic test media made from face photos that ship inside installed packages.

Used by the tests (and later the demo): small face videos with smooth motion, and broken files.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# Head-and-shoulders regions (x1, y1, x2, y2) of the shipped photos, chosen so the face fills a good share.
_HEAD_REGIONS = {
    "astronaut": (120, 20, 330, 250),
    "grace_hopper": (110, 50, 420, 420),
}


def face_photo(name: str) -> np.ndarray:
    """An RGB uint8 head-and-shoulders photo: 'astronaut' (scikit-image) or 'grace_hopper' (matplotlib)."""
    if name == "astronaut":
        import skimage.data

        image = skimage.data.astronaut()
    elif name == "grace_hopper":
        import matplotlib.cbook

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    else:
        raise ValueError(f"unknown face photo {name!r}; choose from {sorted(_HEAD_REGIONS)}")
    x1, y1, x2, y2 = _HEAD_REGIONS[name]
    return np.ascontiguousarray(image[y1:y2, x1:x2])


def background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth two-colour gradient with mild texture, RGB uint8."""
    top, bottom = rng.integers(30, 220, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    image = (1 - ramp) * top + ramp * bottom
    image = np.broadcast_to(image, (height, width, 3)).astype(np.float32)
    texture = cv2.GaussianBlur(rng.normal(0, 12, size=(height, width, 3)).astype(np.float32), (0, 0), 3)
    return np.clip(image + texture, 0, 255).astype(np.uint8)


def face_frames(photo: np.ndarray, width: int, height: int, n_frames: int, seed: int = 0,
                face_height: float = 0.7):
    """Yield (frame RGB, placement (x, y, w, h)) with the photo gliding and breathing over a background."""
    rng = np.random.default_rng(seed)
    base = background(width, height, rng)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    for i in range(n_frames):
        t = i / max(n_frames - 1, 1)
        zoom = 1.0 + 0.08 * np.sin(2 * np.pi * t + phase[0])
        h = max(8, int(round(face_height * height * zoom)))
        w = max(8, int(round(h * photo.shape[1] / photo.shape[0])))
        w, h = min(w, width), min(h, height)
        tile = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
        span_x, span_y = width - w, height - h
        x = int(round(span_x * (0.5 + 0.4 * np.sin(2 * np.pi * t + phase[1]))))
        y = int(round(span_y * (0.5 + 0.3 * np.cos(2 * np.pi * t))))
        gain = 1.0 + 0.06 * np.sin(4 * np.pi * t)  # slow lighting drift
        frame = base.copy()
        frame[y:y + h, x:x + w] = np.clip(tile.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        yield frame, (x, y, w, h)


def write_video(path: str | Path, frames, fps: float = 10.0, fourcc: str = "mp4v") -> Path:
    """Write RGB frames to `path` (codec `fourcc`), atomically: a temp file renamed when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = None
    try:
        for frame in frames:
            if writer is None:
                height, width = frame.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write {fourcc} video to {tmp}")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError("write_video needs at least one frame")
    tmp.replace(path)
    return path


def make_face_video(path: str | Path, face: str = "astronaut", width: int = 320, height: int = 240,
                    n_frames: int = 30, fps: float = 10.0, seed: int = 0, face_height: float = 0.7) -> Path:
    """A small video of one face photo moving over a background; returns its path."""
    frames = (frame for frame, _ in face_frames(face_photo(face), width, height, n_frames, seed, face_height))
    return write_video(path, frames, fps)


def make_broken_files(folder: str | Path, good_video: str | Path) -> dict[str, Path]:
    """Files that must be rejected cleanly: empty, truncated (half of `good_video`), text named .mp4."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = Path(good_video).read_bytes()
    files = {
        "empty": folder / "empty.mp4",
        "truncated": folder / "truncated.mp4",
        "text": folder / "text.mp4",
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["text"].write_text("this is not a video\n" * 20, encoding="utf-8")
    return files
