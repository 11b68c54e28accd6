"""Classify one video: faces on every k-th frame, optional MRIs, classifier scores, and the shared video rule.

Used by detect_deepfake_app.py; every model is loaded once per Detector and reused for every video.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from utils.checkpoint import read_checkpoint
from utils.config import Config
from utils.errors import CheckpointError, VideoError
from utils.fileio import sha256, write_png
from utils.infer.provenance import DEFAULT, ORIGINAL, classifier_rendering, warn_on_other_mris
from utils.infer.rule import Thresholds, video_rule
from utils.media.faces import FaceDetector, crop_face, crop_name
from utils.media.video import ReadAhead, SampledFrames
from utils.names import BEST_G, CLASSIFIER_FILES, DATASET_OF_METHOD, GENERATOR_FILE, METHODS
from utils.runtime import Precision, choose_precision

if TYPE_CHECKING:  # imported when a Detector is made: see from_weights
    from models.classifier import DeepFakeClassifier
    from models.mri_gan import Generator

FACE_BATCH = 8  # faces per generator and classifier call (docs/performance.md#face-batch)
FACES_AHEAD = 32  # faces detected and cropped ahead of the generator and classifier, by a background thread
MONTAGE_FACES, MONTAGE_TILE = 16, 128


@dataclass
class FaceRecord:
    frame: int
    timestamp: float
    face: int
    box: list[float]
    landmarks: list[list[float]]
    fake_probability: float | None = None


@dataclass
class VideoResult:
    path: str
    status: str = "ok"          # ok | no_face | error
    verdict: str | None = None  # fake | real
    probability: float | None = None  # of the verdict, in [0, 1], as the original app printed it
    fake_probability: float | None = None  # mean p of the faces judged fake (0 when none)
    n_faces: int = 0
    n_fake: int = 0
    error: str = ""
    faces: list[FaceRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def verdict_line(self) -> str:
        """The original app's wording (probability in percent, rounded to 4 decimals)."""
        percent = round(self.probability * 100, 4)
        if self.verdict == "fake":
            return f"The video is DEEP-FAKE, probability={percent}%"
        return f"The video is REAL, probability={percent}%"

    def to_dict(self) -> dict:
        return asdict(self)


class Detector:
    """The models of one method, loaded once (`from_weights`) and reused for every video: `classify(path)` returns
    a VideoResult. The models run at `precision`, resolved for `device` (utils.runtime.choose_precision).

    `models` is what the JSON records about the weights (path and SHA-256 of each file); `step` and `margin` are
    the frame sampling and the crop margin (faces.frame_step and faces.crop_margin); `mri_rendering` how MRIs
    become images (utils.names.RENDERINGS).
    """

    def __init__(self, method: str, face_detector: FaceDetector, classifier: DeepFakeClassifier,
                 generator: Generator | None, device: torch.device, precision: Precision, thresholds: dict,
                 models: dict, step: int, margin: float, mri_rendering: str = DEFAULT):
        from utils.infer.transforms import eval_transform  # it imports timm: not before the models load

        check_method(method)
        if method == "MRI" and generator is None:
            raise ValueError("method MRI classifies MRIs: it needs the MRI-GAN generator")
        self.method, self.face_detector, self.classifier, self.generator = method, face_detector, classifier, generator
        self.device, self.precision, self.thresholds, self.models = device, precision, thresholds, models
        self.step, self.margin, self.mri_rendering = step, margin, mri_rendering
        self.transform = eval_transform(classifier.input_size)

    @classmethod
    def from_weights(cls, cfg: Config, method: str, device: torch.device, weights_dir: Path | None = None,
                     fake_threshold: float | None = None, fake_fraction: float | None = None,
                     need_generator: bool = False, mri_rendering: str | None = None,
                     face_detector: FaceDetector | None = None) -> Detector:
        """The Detector of `method` with the exported weights: the classifier's from `weights_dir` (default
        <assets>/weights), and the generator's when the method or `need_generator` asks for it. Each file is read
        once and hashed for the JSON. The face detector is built from the config unless given. MRIs are rendered
        `mri_rendering` (--mri_rendering) when given; else, for method MRI, as its classifier needs
        (utils.infer.provenance.classifier_rendering); else ours."""
        # Model code (timm, the U-Net) is imported here, so a bad input fails before paying for those imports.
        from utils.infer.classifier_weights import classifier_from_checkpoint
        from utils.infer.export import app_classifier_file
        from utils.infer.generator import load_generator

        check_method(method)
        precision = choose_precision(cfg["runtime.precision"], device)
        classifier_path = (weights_dir / CLASSIFIER_FILES[method] if weights_dir else
                           app_classifier_file(cfg, method)).resolve()
        generator_path = (weights_dir / GENERATOR_FILE if weights_dir else cfg.asset("MRI_GAN.weights")).resolve()
        check_weights(classifier_path, "train and export them with deep_fake_detect.py --train_from_scratch "
                      f"--export (dataset {DATASET_OF_METHOD[method]})")
        checkpoint = read_checkpoint(classifier_path)
        classifier = classifier_from_checkpoint(checkpoint, classifier_path, cfg["cnn_encoder.default"])
        rendering = (classifier_rendering(checkpoint, mri_rendering, classifier_path) if method == "MRI" else
                     mri_rendering or DEFAULT)
        # channels-last memory layout: about a third faster for EfficientNet on CPU (measured), same weights
        classifier.to(device, memory_format=torch.channels_last).eval()
        precision.cast_for_inference(classifier)
        models = {"classifier": {"path": str(classifier_path), "sha256": sha256(classifier_path),
                                 "encoder": classifier.encoder_name}}
        generator = None
        if method == "MRI" or need_generator:
            check_weights(generator_path, "train the MRI-GAN (train_MRI_GAN.py) and copy its "
                          f"{BEST_G} to {GENERATOR_FILE}")
            # In bf16/fp16 the 218 MB of float32 weights are only read once, to cast them: mapped, not copied. In fp32
            # they are read, so that the process keeps no mapping of a file that may be overwritten meanwhile.
            generator = load_generator(generator_path, device, mmap=precision.name != "fp32")
            generator = precision.cast_for_inference(generator)
            models["generator"] = {"path": str(generator_path), "sha256": sha256(generator_path),
                                   "rendering": rendering}
            if method == "MRI":
                warn_on_other_mris(checkpoint, models["generator"]["sha256"], rendering, "the generator loaded",
                                   "the app's MRIs")
        thresholds = cls._thresholds(cfg, checkpoint, fake_threshold, fake_fraction)
        face_detector = face_detector or FaceDetector.from_config(cfg, device)
        return cls(method, face_detector, classifier, generator, device, precision, thresholds, models,
                   cfg["faces.frame_step"], cfg["faces.crop_margin"], rendering)

    @staticmethod
    def _thresholds(cfg: Config, checkpoint, fake_threshold, fake_fraction) -> dict:
        """Command line first, then the validation-tuned pair exported with the classifier, then config."""
        tuned, configured = Thresholds.stored_in(checkpoint), Thresholds.from_config(cfg)
        chosen = {}
        for name, given in (("fake_threshold", fake_threshold), ("fake_fraction", fake_fraction)):
            if given is not None:
                chosen[name], source = float(given), "command line"
            elif tuned is not None:
                chosen[name], source = getattr(tuned, name), "validation-tuned (exported with the classifier)"
            else:
                chosen[name], source = getattr(configured, name), "config"
            chosen[f"{name}_source"] = source
        return chosen

    def classify(self, path: str | Path, save_mri: Path | None = None, faces: FaceStream | None = None) -> VideoResult:
        """Stream the video's faces through MRI and classifier, FACE_BATCH faces at a time.

        Only the per-face records and probabilities are kept, so memory does not grow with the length of the
        video; with `save_mri` each MRI is written as soon as it exists (the montage shows the first 16).
        `faces`: the video's FaceStream, already detecting (the app starts it before loading the models);
        by default one is started here.
        """
        if faces is None:
            with (SampledFrames(path, self.step, self.face_detector.batch_size) as frames,
                  FaceStream(self.face_detector, frames, self.margin) as stream):
                return self.classify(path, save_mri, stream)
        if faces.step != self.step:
            raise ValueError(f"faces detected every {faces.step} frames, the detector samples every {self.step}")
        result = VideoResult(str(path))
        timings = result.timings
        start = time.perf_counter()
        saver = MRISaver(save_mri) if save_mri is not None and self.generator is not None else None
        probs = []
        for batch in batched(timed(faces, timings, "faces_s"), FACE_BATCH):
            records, crops = [record for record, _ in batch], [crop for _, crop in batch]
            mris = None
            if self.generator is not None:
                from utils.infer.generator import predict_mris

                with stage(timings, "mri_s"):
                    mris = predict_mris(self.generator, crops, self.device, FACE_BATCH,
                                        self.mri_rendering == ORIGINAL, self.precision)
            with stage(timings, "classify_s"):
                probs.append(self._scores(mris if self.method == "MRI" else crops))
            result.faces.extend(records)
            if saver is not None:
                saver.add(records, crops, mris)
        if probs:
            probs = np.concatenate(probs)
            for record, prob in zip(result.faces, probs):
                record.fake_probability = float(prob)
            self._decide(result, probs)
            if saver is not None:
                saver.finish()
        else:
            result.status = "no_face"
        timings["total_s"] = time.perf_counter() - start
        return result

    @torch.inference_mode()
    def _scores(self, images: list[np.ndarray]) -> np.ndarray:
        """The classifier's fake probability of each image, FACE_BATCH images per call."""
        probs = []
        for start in range(0, len(images), FACE_BATCH):
            batch = torch.stack([self.transform(Image.fromarray(image)) for image in images[start:start + FACE_BATCH]])
            batch = batch.to(self.device, memory_format=torch.channels_last)
            with self.precision.autocast():
                logits = self.classifier(batch)
            probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        return np.concatenate(probs)

    def _decide(self, result: VideoResult, probs: np.ndarray) -> None:
        is_fake, fake_prob, n_fake = video_rule(probs, self.thresholds["fake_threshold"],
                                                self.thresholds["fake_fraction"])
        result.n_faces, result.n_fake = len(probs), n_fake
        result.fake_probability = round(fake_prob, 4)
        if is_fake:
            result.verdict, result.probability = "fake", round(fake_prob, 4)
        else:
            # The original reported 1 - mean p of the faces not judged fake.
            real = probs[probs <= self.thresholds["fake_threshold"]]
            result.verdict = "real"
            result.probability = round(1 - float(real.mean()), 4) if real.size else 0.0


def classify_videos(detector: Detector, videos: list[Path], save_mri: Path | None = None) -> Iterator[VideoResult]:
    """Each video's result, in order, under a progress bar with an ETA; an unreadable file gives a result with
    status 'error' and its reason, and the run goes on. MRIs go to <save_mri>/<video stem>/ when asked."""
    for video in tqdm(videos, desc="videos", unit="video", file=sys.stderr, disable=None, dynamic_ncols=True):
        try:
            yield detector.classify(video, save_mri / video.stem if save_mri else None)
        except (VideoError, OSError) as exc:  # one bad file never stops the batch
            yield VideoResult(str(video), status="error", error=str(exc))


class FaceStream:
    """(FaceRecord, RGB crop) of every face of a video's sampled frames, in frame order and largest face first,
    detected by a background thread from the moment this is made, up to `ahead` faces ahead of the caller.

    Detection needs only the face detector: the app starts the stream before it loads the classifier and the
    generator, and afterwards detection of the next faces overlaps their work (MTCNN, the U-Net and
    EfficientNet release the GIL). From here on the frames are decoded one MTCNN batch ahead of detection.
    Leaving the `with` block stops the thread; the frames are the caller's to close.
    """

    def __init__(self, face_detector: FaceDetector, frames: SampledFrames, margin: float, ahead: int = FACES_AHEAD):
        self.step = frames.step
        frames.keep_ahead(face_detector.batch_size)
        self._faces = ReadAhead(detected_faces(face_detector, frames, margin), ahead)

    def __iter__(self) -> ReadAhead:
        return self._faces

    def close(self) -> None:
        self._faces.close()

    def __enter__(self) -> "FaceStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detected_faces(face_detector: FaceDetector, frames: SampledFrames,
                   margin: float) -> Iterator[tuple[FaceRecord, np.ndarray]]:
    """(record, crop) of every face of every sampled frame; faces whose crop is empty are skipped."""
    fps = frames.info.fps
    for index, frame, faces in face_detector.detect_frames(frames):
        for face_index, face in enumerate(faces):
            crop = crop_face(frame, face.box, margin)
            if crop is None:
                continue
            yield (FaceRecord(index, round(index / fps, 4) if fps else 0.0, face_index,
                              [round(v, 2) for v in face.box],
                              [[round(x, 2), round(y, 2)] for x, y in face.landmarks]), crop)


class MRISaver:
    """Writes each MRI as <frame>_<face>.png as it comes, and montage.png at the end: the first
    MONTAGE_FACES faces on the top row, their MRIs below (only those small tiles are kept)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.top: list[np.ndarray] = []
        self.bottom: list[np.ndarray] = []

    def add(self, records: list[FaceRecord], crops: list[np.ndarray], mris: list[np.ndarray]) -> None:
        for record, crop, mri in zip(records, crops, mris):
            write_png(self.folder / crop_name(record.frame, record.face), mri)
            if len(self.top) < MONTAGE_FACES:
                self.top.append(cv2.resize(crop, (MONTAGE_TILE, MONTAGE_TILE), interpolation=cv2.INTER_AREA))
                self.bottom.append(cv2.resize(mri, (MONTAGE_TILE, MONTAGE_TILE), interpolation=cv2.INTER_AREA))

    def finish(self) -> Path:
        return write_png(self.folder / "montage.png", np.vstack([np.hstack(self.top), np.hstack(self.bottom)]))


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` consecutive items (the last one shorter), pulled from `items` as needed."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@contextmanager
def stage(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the time spent in the block to timings[name]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def timed(items: Iterable, timings: dict[str, float], name: str) -> Iterator:
    """Yield from `items`, adding the time spent producing each item to timings[name]."""
    iterator = iter(items)
    while True:
        with stage(timings, name):
            item = next(iterator, _END)
        if item is _END:
            return
        yield item


_END = object()


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose {' or '.join(METHODS)}")


def check_weights(path: Path, how: str) -> None:
    """A missing weights file is a one-line error that names it and says how to produce it."""
    if not path.is_file():
        raise CheckpointError(f"{path}: weights not found; {how}, or pass --weights_dir")
