"""Specification tests for utils/classifier_data.py on real face crops written to a temporary folder:
CSV reading, video subsets, transforms, the dataset, unreadable files, the balanced loss, epoch accuracy."""

import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader
from torchvision import transforms as T

from models.classifier import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import balanced_bce
from utils.demo.synthetic import face_photo
from utils.errors import FrameReadError
from utils.fileio import write_png
from utils.train.classifier_data import (
    EpochMeter,
    FrameDataset,
    RandomBoxBlur,
    RandomStrengthJitter,
    balanced_bce_parts,
    build_transform,
    read_frame_labels,
    subset_videos,
)

# video id -> (label, photo); "0042" checks that numeric-looking ids stay strings
# (docs/differences.md#video-ids-and-face-less-videos)
VIDEOS = {"0042": (0, "astronaut"), "fakevid": (1, "grace_hopper")}
CROP_SIZES = [(150, 170), (300, 260)]  # (width, height): one smaller and one larger than 224


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """<root>/<video_id>/<frame>.png face crops and their frame-label CSV."""
    root = tmp_path_factory.mktemp("crops")
    rows = []
    for video_id, (label, photo) in VIDEOS.items():
        for index, (width, height) in enumerate(CROP_SIZES):
            frame = f"{index * 10}_0.png"
            write_png(root / video_id / frame, np.asarray(Image.fromarray(face_photo(photo)).resize((width, height))))
            rows.append({"video_id": video_id, "frame": frame, "label": label})
    csv_path = root / "frame_labels.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return root, csv_path


def test_read_frame_labels_keeps_ids_as_strings(crops):
    table = read_frame_labels(crops[1])
    assert list(table.columns) == ["video_id", "frame", "label"]
    assert sorted(table["video_id"].unique()) == ["0042", "fakevid"]
    assert table["label"].tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("content, message", [
    ("video_id,label\nx,1\n", "missing column"),
    ("video_id,frame,label\nx,0_0.png,2\n", "must be 0"),
])
def test_read_frame_labels_rejects_bad_tables(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_frame_labels(path)


def video_table(n_real=10, n_fake=10, frames=3):
    rows = [{"video_id": f"{kind}{v:02d}", "frame": f"{f * 10}_0.png", "label": label}
            for kind, label, n in (("real", 0, n_real), ("fake", 1, n_fake)) for v in range(n) for f in range(frames)]
    return pd.DataFrame(rows)


def test_subset_keeps_a_seeded_stratified_share_of_whole_videos():
    table = video_table()
    subset = subset_videos(table, 0.3, seed=7)
    videos = subset.groupby("video_id")["label"].first()
    assert (videos == 0).sum() == 3 and (videos == 1).sum() == 3
    assert subset.groupby("video_id").size().eq(3).all()  # every frame of a kept video
    assert set(videos.index) != {"real00", "real01", "real02", "fake00", "fake01", "fake02"}  # not the first rows
    shuffled = table.sample(frac=1.0, random_state=1)
    assert set(subset_videos(shuffled, 0.3, seed=7)["video_id"]) == set(videos.index)  # order-independent
    assert subset_videos(table, 1.0, seed=7) is table


def test_subset_keeps_at_least_one_video_per_class():
    videos = subset_videos(video_table(n_real=10, n_fake=2), 0.1, seed=0).groupby("video_id")["label"].first()
    assert sorted(videos.tolist()) == [0, 1]


def test_eval_transform_is_bilinear_resize_and_imagenet_normalisation(crops):
    image = Image.open(crops[0] / "0042" / "0_0.png").convert("RGB")
    expected = np.asarray(image.resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255.0
    expected = (expected - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    out = build_transform("eval")(image)
    assert out.shape == (3, 224, 224)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_simple_transform_erases_about_thirty_percent(crops):
    image = Image.open(crops[0] / "fakevid" / "10_0.png").convert("RGB")
    plain = build_transform("eval", size=64)(image)  # small: erasing does not depend on the size
    simple = build_transform("simple", size=64)
    torch.manual_seed(0)
    erased = sum(not torch.equal(simple(image), plain) for _ in range(60))
    assert 8 <= erased <= 30  # p = 0.3 of 60 -> 18 expected


@pytest.mark.parametrize("kind", ["simple", "complex"])
def test_train_transforms_give_normalised_tensors_of_the_input_size(crops, kind):
    transform = build_transform(kind, size=224)
    random.seed(0)
    torch.manual_seed(0)
    for path in sorted(crops[0].glob("*/*.png")):
        out = transform(Image.open(path).convert("RGB"))
        assert out.shape == (3, 224, 224) and torch.isfinite(out).all()


def complex_crop():
    first_choice = build_transform("complex").transforms[0]
    return next(t for t in first_choice.transforms if isinstance(t, T.RandomCrop))


def test_complex_crop_pads_only_images_smaller_than_the_crop():
    crop = complex_crop()
    assert crop.padding is None and crop.pad_if_needed  # the original padded 224 px on every side
    torch.manual_seed(0)
    white = Image.new("RGB", (300, 300), (255, 255, 255))
    for _ in range(10):
        assert np.asarray(crop(white)).min() == 255  # never a black border from a large image
    small = np.asarray(crop(Image.new("RGB", (150, 150), (255, 255, 255))))
    assert small.shape == (224, 224, 3) and (small == 255).all(axis=2).sum() == 150 * 150


def test_jitter_strength_is_drawn_for_every_image(crops):
    image = Image.open(crops[0] / "0042" / "10_0.png").convert("RGB")
    jitter = RandomStrengthJitter("contrast")
    torch.manual_seed(0)
    spreads = [np.asarray(jitter(image), dtype=np.float32).std() for _ in range(30)]
    original = np.asarray(image, dtype=np.float32).std()
    assert len({round(s, 3) for s in spreads}) >= 25
    assert min(spreads) < original < max(spreads)
    torch.manual_seed(0)
    assert np.asarray(jitter(image), dtype=np.float32).std() == pytest.approx(spreads[0])  # seeded


def test_box_blur_radius_is_one_two_or_three(crops):
    image = Image.open(crops[0] / "0042" / "0_0.png").convert("RGB")
    allowed = [np.asarray(image.filter(ImageFilter.BoxBlur(r))) for r in (1, 2, 3)]
    blur = RandomBoxBlur()
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        out = np.asarray(blur(image))
        seen.add(next(r for r, a in zip((1, 2, 3), allowed) if np.array_equal(out, a)))
    assert seen == {1, 2, 3}


def test_dataset_items_and_clip_style_label_smoothing(crops):
    root, csv_path = crops
    table = read_frame_labels(csv_path)
    train = FrameDataset(table, root, build_transform("simple"), label_smoothing=0.1)
    assert len(train) == 4
    item = train[0]
    assert item["video_id"] == "0042" and item["frame"] == "0_0.png"
    assert item["image"].shape == (3, 224, 224)
    assert sorted(round(float(train[i]["label"]), 6) for i in range(4)) == [0.1, 0.1, 0.9, 0.9]
    valid = FrameDataset(table, root, build_transform("eval"))
    assert [float(valid[i]["label"]) for i in range(4)] == [0.0, 0.0, 1.0, 1.0]


def test_dataset_batches_keep_string_ids(crops):
    root, csv_path = crops
    loader = DataLoader(FrameDataset(read_frame_labels(csv_path), root, build_transform("eval")), batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 224, 224)
    assert batch["video_id"] == ["0042", "0042", "fakevid", "fakevid"]


@pytest.mark.parametrize("problem", ["missing", "not_an_image", "truncated"])
def test_unreadable_image_is_an_error_naming_the_file(crops, tmp_path, problem):
    source = crops[0] / "0042" / "10_0.png"
    video = tmp_path / "vid"
    video.mkdir()
    if problem == "not_an_image":
        (video / "0_0.png").write_text("not an image")
    elif problem == "truncated":
        (video / "0_0.png").write_bytes(source.read_bytes()[:2000])
    table = pd.DataFrame([{"video_id": "vid", "frame": "0_0.png", "label": 1}])
    dataset = FrameDataset(table, tmp_path, build_transform("eval"))
    with pytest.raises(FrameReadError, match=r"vid[/\\]0_0\.png: cannot read image"):
        dataset[0]


def softplus(x):
    return math.log1p(math.exp(x))


def test_balanced_bce_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5])
    targets = torch.tensor([1.0, 1.0, 0.0])
    loss, fake_loss, real_loss = balanced_bce_parts(logits, targets)
    # BCE-with-logits: softplus(-z) for target 1, softplus(z) for target 0
    expected_fake = (softplus(-2.0) + softplus(1.0)) / 2
    expected_real = softplus(0.5)
    assert float(fake_loss) == pytest.approx(expected_fake, rel=1e-6)
    assert float(real_loss) == pytest.approx(expected_real, rel=1e-6)
    assert float(loss) == pytest.approx((expected_fake + expected_real) / 2, rel=1e-6)
    assert float(balanced_bce(logits, targets)) == pytest.approx(float(loss))


def test_balanced_bce_with_one_class_is_not_halved():
    logits = torch.tensor([0.3, -0.2])
    smoothed_fakes = torch.tensor([0.9, 0.9])
    loss, fake_loss, real_loss = balanced_bce_parts(logits, smoothed_fakes)
    assert real_loss is None
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, smoothed_fakes)
    assert float(loss) == pytest.approx(float(expected)) and float(fake_loss) == pytest.approx(float(expected))


def test_balanced_bce_has_gradients():
    logits = torch.tensor([0.3, -0.2, 1.0], requires_grad=True)
    balanced_bce(logits, torch.tensor([0.9, 0.1, 0.1])).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_epoch_accuracy_counts_every_sample_once():
    meter = EpochMeter()
    batches = [
        (torch.tensor([1.0, -1.0, 1.0]), torch.tensor([0.9, 0.1, 0.1])),  # 2 of 3 right
        (torch.tensor([-1.0]), torch.tensor([0.9])),  # 0 of 1 right
    ]
    for logits, targets in batches:
        meter.update(logits, targets, balanced_bce_parts(logits, targets))
    summary = meter.summary()
    assert summary["n"] == 4
    assert summary["accuracy"] == pytest.approx(2 / 4)  # a mean of batch accuracies would say 1/3
    first, second = (balanced_bce_parts(logits, t) for logits, t in batches)
    assert summary["loss"] == pytest.approx((3 * float(first[0]) + 1 * float(second[0])) / 4)
    assert summary["fake_loss"] == pytest.approx((float(first[1]) + float(second[1])) / 2)
    assert summary["real_loss"] == pytest.approx(float(first[2]))


def test_an_augment_seed_makes_each_image_s_augmentation_depend_on_its_index_only(crops):
    """The basis of exact mid-epoch resume with loader workers: item i is augmented the same whether it is read
    first or after others, in a worker or not, and reading it leaves the process's generators untouched."""
    table = read_frame_labels(crops[1])
    dataset = FrameDataset(table, crops[0], build_transform("complex", size=64), augment_seed=7)
    torch.manual_seed(1)
    random.seed(1)
    before = torch.get_rng_state(), random.getstate()
    forward = [dataset[i]["image"] for i in range(len(dataset))]
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    backward = [dataset[i]["image"] for i in reversed(range(len(dataset)))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    other_seed = FrameDataset(table, crops[0], build_transform("complex", size=64), augment_seed=8)
    assert not all(torch.equal(a, other_seed[i]["image"]) for i, a in enumerate(forward))
