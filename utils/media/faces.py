"""Face detection (facenet-pytorch MTCNN), landmark records and face crops, with the original's settings.

Large frames are down-scaled for detection only; boxes and landmarks are mapped back to full resolution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch

from utils.media.video import VideoReader


@dataclass(frozen=True)
class Face:
    """One detected face, in full-resolution pixel coordinates of its frame.

    box: (x1, y1, x2, y2) floats, may run past the frame edges (as MTCNN returns them).
    landmarks: five (x, y) points in MTCNN order: left eye, right eye, nose, left and right mouth corner.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(x2 - x1, 0.0) * max(y2 - y1, 0.0)


def order_faces(faces: Sequence[Face]) -> list[Face]:
    """Largest box first (the original's select_largest order); ties broken by position, so order is stable."""
    return sorted(faces, key=lambda f: (-f.area, f.box[0], f.box[1]))


class FaceDetector:
    """MTCNN with the original's stage thresholds, run in batches of equally sized frames.

    Scale rule: a frame whose longer side exceeds `detect_max_side` is resized (area interpolation) so that
    its longer side equals `detect_max_side`; MTCNN runs on that copy and boxes/landmarks are divided by
    the scale. `min_face_size` applies to the copy, so at scale s the smallest face found in the full
    frame is min_face_size / s pixels (40 px for 1920x1080 frames at detect_max_side 960).
    `detect_max_side=0` always detects at full resolution.
    """

    def __init__(self, device: str | torch.device = "cpu", thresholds=(0.85, 0.95, 0.95), min_face_size: int = 20,
                 scale_factor: float = 0.709, detect_max_side: int = 960, batch_size: int = 4):
        from facenet_pytorch import MTCNN  # heavy import, only when a detector is built

        self.device = torch.device(device)
        self.min_face_size = min_face_size
        self.detect_max_side = detect_max_side
        self.batch_size = batch_size
        self._mtcnn = MTCNN(keep_all=True, select_largest=True, margin=0, min_face_size=min_face_size,
                            thresholds=list(thresholds), factor=scale_factor, post_process=False,
                            device=self.device)

    @classmethod
    def from_config(cls, cfg, device: str | torch.device = "cpu") -> "FaceDetector":
        return cls(device=device, thresholds=cfg["faces.detector_thresholds"],
                   min_face_size=cfg["faces.min_face_size"], scale_factor=cfg["faces.scale_factor"],
                   detect_max_side=cfg["faces.detect_max_side"], batch_size=cfg["faces.batch_size"])

    def detection_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the copy MTCNN sees for a frame of this size."""
        longest = max(width, height)
        if self.detect_max_side <= 0 or longest <= self.detect_max_side:
            return width, height
        scale = self.detect_max_side / longest
        return max(1, round(width * scale)), max(1, round(height * scale))

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces of each RGB uint8 frame (largest first). Frames may differ in size; equal sizes are batched."""
        results: list[list[Face]] = [[] for _ in frames]
        by_shape: dict[tuple, list[int]] = {}
        for i, frame in enumerate(frames):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"frame {i}: expected an RGB uint8 image, got shape {frame.shape} {frame.dtype}")
            by_shape.setdefault(frame.shape, []).append(i)
        for (height, width, _), indices in by_shape.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                for i, faces in zip(chunk, self._detect_same_size([frames[i] for i in chunk], width, height)):
                    results[i] = faces
        return results

    def _detect_same_size(self, frames: list[np.ndarray], width: int, height: int) -> list[list[Face]]:
        det_w, det_h = self.detection_size(width, height)
        if min(det_w, det_h) < self.min_face_size:
            return [[] for _ in frames]  # smaller than the smallest face MTCNN looks for
        if (det_w, det_h) != (width, height):
            frames = [cv2.resize(f, (det_w, det_h), interpolation=cv2.INTER_AREA) for f in frames]
        sx, sy = width / det_w, height / det_h
        boxes, probs, points = self._mtcnn.detect(np.stack(frames), landmarks=True)
        out = []
        for frame_boxes, frame_probs, frame_points in zip(boxes, probs, points):
            faces = []
            if frame_boxes is not None:
                for box, prob, pts in zip(frame_boxes, frame_probs, frame_points):
                    x1, y1, x2, y2 = (float(v) for v in box)
                    faces.append(Face(box=(x1 * sx, y1 * sy, x2 * sx, y2 * sy), score=float(prob),
                                      landmarks=tuple((float(x) * sx, float(y) * sy) for x, y in pts)))
            out.append(order_faces(faces))
        return out

    def detect_video(self, path: str | Path, step: int) -> Iterator[tuple[int, np.ndarray, list[Face]]]:
        """Yield (frame_index, RGB frame, faces) for every `step`-th frame, detecting in batches."""
        with VideoReader(path) as reader:
            yield from self.detect_frames(reader.frames(step))

    def detect_frames(self, frames: Iterable[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray, list[Face]]]:
        """Yield (frame_index, RGB frame, faces) for (frame_index, RGB frame) items, detecting in batches."""
        batch: list[tuple[int, np.ndarray]] = []
        for item in frames:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield from self._detect_batch(batch)
                batch = []
        if batch:
            yield from self._detect_batch(batch)

    def _detect_batch(self, batch):
        faces = self.detect([frame for _, frame in batch])
        for (index, frame), frame_faces in zip(batch, faces):
            yield index, frame, frame_faces


def landmarks_entry(faces: Sequence[Face]) -> list:
    """The original's per-frame JSON value: [boxes or null, five-point landmarks or null]."""
    if not faces:
        return [None, None]
    return [[list(f.box) for f in faces], [[list(p) for p in f.landmarks] for f in faces]]


def faces_from_entry(entry) -> list[Face]:
    """Faces back from a landmarks JSON value (the inverse of landmarks_entry); scores are unknown (nan)."""
    boxes, points = (entry + [None, None])[:2] if entry else (None, None)
    if not boxes:
        return []
    points = points or [[] for _ in boxes]
    return [Face(box=tuple(float(v) for v in box), score=math.nan,
                 landmarks=tuple(tuple(float(v) for v in p) for p in pts)) for box, pts in zip(boxes, points)]


def crop_box(box: Sequence[float], width: int, height: int, margin: float = 0.10):
    """The original's crop rectangle (x1, y1, x2, y2), clamped to the frame; None if nothing is left.

    Coordinates are truncated to int, then int(margin * w) and int(margin * h) pixels are added on
    each side, as the original did; unlike the original, both ends are clamped explicitly.
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    pad_w, pad_h = int(margin * (x2 - x1)), int(margin * (y2 - y1))
    left, top = max(x1 - pad_w, 0), max(y1 - pad_h, 0)
    right, bottom = min(x2 + pad_w, width), min(y2 + pad_h, height)
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def crop_face(frame: np.ndarray, box: Sequence[float], margin: float = 0.10) -> np.ndarray | None:
    """The face crop (a copy) of `frame` for `box` with the margin rule of crop_box; None if empty."""
    rect = crop_box(box, frame.shape[1], frame.shape[0], margin)
    if rect is None:
        return None
    left, top, right, bottom = rect
    return frame[top:bottom, left:right].copy()


def crop_name(frame_index: int, face_index: int) -> str:
    """The original's crop file name: <frame>_<face>.png (face 0 is the largest)."""
    return f"{frame_index}_{face_index}.png"
