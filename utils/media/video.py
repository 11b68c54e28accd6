"""Video input: open a file robustly and read every k-th frame without holding the video in memory.

All decoding in the project goes through VideoReader; frames come out as RGB uint8 arrays.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

# FFmpeg and OpenCV print their own complaints about broken files on stderr; we report them ourselves.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
import cv2  # noqa: E402

if hasattr(cv2, "utils") and hasattr(cv2.utils, "logging"):
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

import numpy as np  # noqa: E402

from utils.errors import OutputError, VideoError  # noqa: E402
from utils.fileio import atomic_path  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
_CONTAINER_MAGIC = (b"ftyp", b"RIFF", b"\x1aE\xdf\xa3", b"moov", b"mdat", b"free")


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    frame_count: int  # as reported by the container; may be approximate for some formats
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def _looks_like_container(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(12)
    return any(magic in head for magic in _CONTAINER_MAGIC)


class VideoReader:
    """An open video. Use as a context manager; iterate sampled frames with `frames(step)`.

    Raises VideoError on open for a missing, empty, unreadable, truncated or frameless file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise VideoError(f"{self.path}: file not found")
        if self.path.is_dir():
            raise VideoError(f"{self.path}: is a folder, not a video file")
        if self.path.stat().st_size == 0:
            raise VideoError(f"{self.path}: file is empty")
        self._capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not self._capture.isOpened():
            self._capture.release()
            if _looks_like_container(self.path):
                raise VideoError(f"{self.path}: cannot be decoded (truncated or corrupt video file)")
            raise VideoError(f"{self.path}: not a video file (unrecognised format)")
        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if width <= 0 or height <= 0:
            self.close()
            raise VideoError(f"{self.path}: no video stream (no frame size reported)")
        self.info = VideoInfo(self.path, max(count, 0), fps if fps > 0 else 0.0, width, height)
        self.frames_read = 0  # frames decoded so far (including the ones skipped without conversion)
        self.truncated = False
        self._used = False

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._capture.release()

    def frames(self, step: int = 1, max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame_index, RGB frame) for frames 0, step, 2*step, ...; skipped frames are grabbed, not converted.

        Frame indices are positions in the stream, so a frame that fails to convert does not shift the
        ones after it. Decoding that stops before the container's frame count marks the video
        `truncated` (a warning is logged). A video that yields no frame at all raises VideoError.
        One pass per reader: open a new VideoReader to read again.
        """
        if step < 1:
            raise ValueError("step must be >= 1")
        if self._used:
            raise RuntimeError("VideoReader.frames() can be iterated once; open the video again")
        self._used = True
        yielded = 0
        index = -1
        while max_frames is None or yielded < max_frames:
            if not self._capture.grab():
                break
            index += 1
            self.frames_read = index + 1
            if index % step:
                continue
            ok, bgr = self._capture.retrieve()
            if not ok or bgr is None:
                log.warning("%s: frame %d could not be decoded; skipped", self.path, index)
                continue
            yielded += 1
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.frames_read == 0:
            raise VideoError(f"{self.path}: no frame could be decoded")
        stopped_early = max_frames is None or yielded < max_frames
        if stopped_early and self.frames_read < self.info.frame_count - 1:
            self.truncated = True
            log.warning("%s: truncated, decoding stopped at frame %d of %d", self.path, self.frames_read,
                        self.info.frame_count)


def probe(path: str | Path) -> VideoInfo:
    """Frame count, fps and size of a video, after checking that its first frame decodes."""
    with VideoReader(path) as reader:
        for _ in reader.frames(step=1, max_frames=1):
            pass
        return reader.info


class ReadAhead:
    """Iterate over `items` while a background thread, started at once, produces up to `size` of them ahead.

    For frames: decoding overlaps the caller's work (OpenCV and PyTorch release the GIL). `keep_ahead(n)`
    changes the bound; items already produced stay. An error in the producer is raised here, at its place in
    the sequence. `close()` (or leaving a `with` block) stops the producer and returns once it has finished,
    so the video can then be closed safely.
    """

    _DONE = object()

    def __init__(self, items: Iterable, size: int):
        self._items: deque = deque()
        self._size = max(size, 1)
        self._changed = threading.Condition()  # an item in or out, the bound changed, or stop
        self._stop = False
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(items,), name="read_ahead", daemon=True)
        self._thread.start()

    def _offer(self, entry, bounded: bool = True) -> bool:
        with self._changed:
            while bounded and len(self._items) >= self._size and not self._stop:
                self._changed.wait()
            if self._stop:
                return False
            self._items.append(entry)
            self._changed.notify_all()
            return True

    def _produce(self, items: Iterable) -> None:
        try:
            for item in items:
                if not self._offer((item, None)):
                    return
            self._offer((self._DONE, None), bounded=False)
        except BaseException as exc:  # handed to the consumer, raised there
            self._offer((self._DONE, exc), bounded=False)

    def __iter__(self) -> "ReadAhead":
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        with self._changed:
            while not self._items:
                self._changed.wait()
            item, error = self._items.popleft()
            self._changed.notify_all()
        if item is self._DONE:
            self._finished = True
            if error is not None:
                raise error
            raise StopIteration
        return item

    def keep_ahead(self, size: int) -> None:
        """From now on, produce at most `size` items ahead of the caller."""
        with self._changed:
            self._size = max(size, 1)
            self._changed.notify_all()

    def close(self) -> None:
        self._finished = True
        with self._changed:
            self._stop = True
            self._changed.notify_all()
        self._thread.join()

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SampledFrames:
    """(index, RGB frame) of frames 0, step, 2*step, ... of a video, decoded by a background thread from the
    moment this is made, up to `ahead` frames in advance. Use as a context manager: leaving it stops the
    thread, then closes the video. Opening raises VideoError as VideoReader does."""

    def __init__(self, path: str | Path, step: int, ahead: int):
        self.step = step
        self._reader = VideoReader(path)
        self.info = self._reader.info
        self._frames = ReadAhead(self._reader.frames(step), ahead)

    def __iter__(self) -> ReadAhead:
        return self._frames

    def keep_ahead(self, frames: int) -> None:
        """From now on, decode at most `frames` frames ahead of the caller."""
        self._frames.keep_ahead(frames)

    def close(self) -> None:
        self._frames.close()
        self._reader.close()

    def __enter__(self) -> "SampledFrames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def frames_within(info: VideoInfo, budget_bytes: int) -> int:
    """How many decoded RGB frames of this video fit in `budget_bytes` (at least one)."""
    return max(1, budget_bytes // max(1, info.width * info.height * 3))


def list_videos(folder: str | Path, extensions: Iterable[str] = DEFAULT_EXTENSIONS,
                recursive: bool = False) -> list[Path]:
    """Video files in `folder` by extension (case-insensitive), sorted by path so every run agrees."""
    folder = Path(folder)
    wanted = {ext.lower() for ext in extensions}
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in wanted
                  and not p.name.startswith("."))


def write_video(path: str | Path, frames, fps: float = 10.0, fourcc: str = "mp4v") -> Path:
    """Write RGB frames to `path` (codec `fourcc`), atomically: a temp file renamed when complete."""
    path = Path(path)
    writer, count = None, 0
    with atomic_path(path) as tmp:
        try:
            for frame in frames:
                if writer is None:
                    height, width = frame.shape[:2]
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
                    if not writer.isOpened():
                        raise OutputError(f"cannot write {path}: OpenCV cannot open a {fourcc} video writer there")
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                count += 1
        finally:
            if writer is not None:
                writer.release()
        if writer is None:
            raise ValueError("write_video needs at least one frame")
        # OpenCV's writer never reports a failed write (disk full, file-size limit): count what landed.
        check = cv2.VideoCapture(str(tmp))
        landed = int(check.get(cv2.CAP_PROP_FRAME_COUNT)) if check.isOpened() else 0
        check.release()
        if landed != count:
            raise OutputError(f"cannot write {path}: the video writer stopped after {landed} of {count} frames "
                              f"({tmp.stat().st_size if tmp.exists() else 0} bytes written; disk full, quota or "
                              "file-size limit?)")
    return path
