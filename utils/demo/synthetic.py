"""Synthetic media made from face photos that ship inside installed packages, for the demo, benchmarks and tests:
moving faces, face swaps, and small data sets in the DFDC, Celeb-DF and FDF/FFHQ layouts."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from utils.config import PROJECT_ROOT
from utils.media.video import write_video

# Head-and-shoulders regions (x1, y1, x2, y2) of the shipped photos, chosen so the face fills a good share.
_HEAD_REGIONS = {
    "astronaut": (120, 20, 330, 250),
    "grace_hopper": (110, 50, 420, 420),
}
# MTCNN's five landmarks (eyes, nose, mouth corners; x, y) in each head region above, rounded.
_LANDMARKS = {
    "astronaut": [(84.6, 81.7), (127.9, 84.8), (105.7, 109.6), (82.4, 120.3), (125.6, 122.7)],
    "grace_hopper": [(110.4, 140.7), (199.6, 136.5), (160.1, 188.4), (121.7, 229.6), (195.6, 225.3)],
}
PEOPLE = tuple(_HEAD_REGIONS)
SPLITS = ("train", "valid", "test")


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


def swapped_photo(target: str, source: str, seed: int = 0) -> np.ndarray:
    """`target`'s head photo with `source`'s face swapped in, the way a face-swap pipeline blends one.

    The source photo is aligned on the five landmarks (a similarity transform from its landmarks to the
    target's), warped, given a slight colour shift and blur, and blended in through a soft ellipse around
    the target's inner face (the self-blended-images recipe), so seams and texture differ from a real face.
    """
    rng = np.random.default_rng(seed)
    photo = face_photo(target).astype(np.float32)
    height, width = photo.shape[:2]
    points = np.array(_LANDMARKS[target], np.float32)
    matrix, _ = cv2.estimateAffinePartial2D(np.array(_LANDMARKS[source], np.float32), points, method=cv2.LMEDS)
    face = cv2.warpAffine(face_photo(source), matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    face = cv2.GaussianBlur(face, (0, 0), rng.uniform(0.6, 1.0)) * rng.uniform(0.9, 1.1, size=3)
    eye_distance = float(np.linalg.norm(points[1] - points[0]))
    centre = points.mean(axis=0) + (0.0, 0.1 * eye_distance)
    mask = np.zeros((height, width), np.float32)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(0.85 * eye_distance), int(1.1 * eye_distance)),
                0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(2.0, 0.12 * eye_distance))[..., None]
    return np.clip(mask * face + (1 - mask) * photo, 0, 255).astype(np.uint8)


def _video_name(rng: np.random.Generator, taken: set) -> str:
    while True:
        name = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=10)) + ".mp4"
        if name not in taken:
            taken.add(name)
            return name


def _person_video(path: Path, photo: np.ndarray, size: tuple[int, int], n_frames: int, fps: float, seed: int) -> Path:
    frames = (frame for frame, _ in face_frames(photo, size[0], size[1], n_frames, seed))
    return write_video(path, frames, fps)


def make_dfdc_dataset(root: str | Path, videos_per_split: int | dict[str, int] = 2, n_frames: int = 20,
                      size=(320, 240), fps: float = 10.0, seed: int = 0) -> dict:
    """A DFDC-format data set: train/dfdc_train_part_0 with metadata.json, valid/data and test/data with labels.csv.

    Each split has `videos_per_split` real videos (an int, or a count per split name; people alternate) and
    one fake per real: the same video (same motion, background and lighting) with the other person's face
    swapped in. Returns the paths.
    """
    counts = videos_per_split if isinstance(videos_per_split, dict) else dict.fromkeys(SPLITS, videos_per_split)
    root = Path(root)
    rng = np.random.default_rng(seed)
    taken: set = set()
    layout = {"train": root / "train" / "dfdc_train_part_0", "valid": root / "valid" / "data",
              "test": root / "test" / "data"}
    for split_index, (split, folder) in enumerate(layout.items()):
        records, labels = {}, []
        for i in range(counts[split]):
            person, other = PEOPLE[i % 2], PEOPLE[(i + 1) % 2]
            clip_seed = seed * 1000 + split_index * 100 + i
            real, fake = _video_name(rng, taken), _video_name(rng, taken)
            _person_video(folder / real, face_photo(person), size, n_frames, fps, clip_seed)
            _person_video(folder / fake, swapped_photo(person, other, clip_seed), size, n_frames, fps, clip_seed)
            records[real] = {"label": "REAL", "split": "train", "original": None}
            records[fake] = {"label": "FAKE", "split": "train", "original": real}
            labels += [(real, 0), (fake, 1)]
        if split == "train":
            (folder / "metadata.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
        else:
            rows = "".join(f"{name},{label}\n" for name, label in labels)
            (folder / "labels.csv").write_text("filename,label\n" + rows, encoding="utf-8")
    return {"train": root / "train", "valid": layout["valid"], "test": layout["test"]}


def make_celeb_df(root: str | Path, n_frames: int = 12, size=(240, 180), fps: float = 10.0, seed: int = 0) -> dict:
    """Celeb-DF-v2 naming: Celeb-real/id<A>_<NNNN>.mp4 and Celeb-synthesis/id<A>_id<B>_<NNNN>.mp4."""
    root = Path(root)
    real_dir, fake_dir = root / "Celeb-real", root / "Celeb-synthesis"
    for a, person in enumerate(PEOPLE):
        b = (a + 1) % len(PEOPLE)
        clip_seed = seed * 1000 + 500 + a
        _person_video(real_dir / f"id{a}_0000.mp4", face_photo(person), size, n_frames, fps, clip_seed)
        _person_video(fake_dir / f"id{a}_id{b}_0000.mp4", swapped_photo(person, PEOPLE[b], clip_seed), size,
                      n_frames, fps, clip_seed)
    return {"real": real_dir, "fake": fake_dir}


def make_image_folder(folder: str | Path, n_images: int = 3, size: int = 128, seed: int = 0) -> Path:
    """FDF/FFHQ-style real face images: head photos, lightly varied, size x size PNGs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        photo = face_photo(PEOPLE[i % len(PEOPLE)])
        image = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        image = np.clip(image * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder


def dataset_config(data_root: str | Path, out_root: str | Path) -> dict:
    """A config overlay pointing every data set key at `data_root` and every output at `out_root`.

    Matches the layout written by make_dfdc_dataset (data_root/dfdc), make_celeb_df (data_root/celeb)
    and make_image_folder (data_root/fdf, data_root/ffhq). Paths are absolute.
    """
    d, o = Path(data_root).resolve(), Path(out_root).resolve()
    feats = o / "features"
    return {
        "assets": str(o / "assets"),
        "data_path": {
            "dfdc": {"train": str(d / "dfdc/train"), "valid": str(d / "dfdc/valid/data"),
                     "test": str(d / "dfdc/test/data"), "train_source": "original",
                     "data_augmentation": {"output_path": str(o / "dfdc_train_aug")}},
            "celeb_df_v2": {"real": str(d / "celeb/Celeb-real"), "fake": str(d / "celeb/Celeb-synthesis")},
            "fdf": {"data_path": str(d / "fdf")},
            "ffhq": {"data_path": str(d / "ffhq")},
        },
        "features": {
            "dfdc": {
                "landmarks_path": {s: str(feats / "dfdc/landmarks" / s) for s in ("train", "valid", "test")},
                "crop_faces": {s: str(feats / "dfdc/crop_faces" / s) for s in ("train", "valid", "test")},
                "mri_path": str(feats / "dfdc/mri"), "mri_faces_path": str(feats / "dfdc/mri_faces"),
                **{f"{s}_mrip2p_faces": str(feats / "dfdc/mri_to_detect" / s) for s in ("train", "valid", "test")},
            },
            "celeb_df_v2": {
                "landmarks_path": {"train": str(feats / "celeb/landmarks")},
                "crop_faces": {"train": str(feats / "celeb/crop_faces")},
                "mri_path": str(feats / "celeb/mri"), "mri_faces_path": str(feats / "celeb/mri_faces"),
            },
            "fdf": {"json_filename": str(feats / "fdf/fdf.json"), "crops_path": str(feats / "fdf/crops")},
            "ffhq": {"json_filename": str(feats / "ffhq/ffhq.json"), "crops_path": str(feats / "ffhq/crops")},
            "blank_png": str(PROJECT_ROOT / "assets" / "blank.png"),
        },
        "logging": {"root_log_dir": str(o / "logs")},
    }
