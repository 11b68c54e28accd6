"""utils/faces.py: MTCNN on generated frames and videos, the scale rule, landmark records and crops."""
import json

import cv2
import numpy as np
import pytest

from tests.helpers import sampled_frames
from utils.demo.synthetic import background, face_photo
from utils.media.faces import Face, FaceDetector, crop_box, crop_face, crop_name, faces_from_entry, landmarks_entry


def _inside(point, rect):
    x, y = point
    left, top, width, height = rect
    return left <= x <= left + width and top <= y <= top + height


@pytest.mark.slow  # ~1.8 s of face detection
def test_faces_found_in_every_sampled_frame_where_the_photo_is(detector, face_video, face_video_placements):
    seen = []
    for index, frame, faces in detector.detect_video(face_video, step=10):
        seen.append(index)
        assert len(faces) == 1, f"frame {index}: {len(faces)} faces"
        face = faces[0]
        x1, y1, x2, y2 = face.box
        placement = face_video_placements[index]
        assert _inside(((x1 + x2) / 2, (y1 + y2) / 2), placement)
        assert 0.25 < (x2 - x1) / placement[2] < 0.6  # the face, not the whole photo
        assert face.score > 0.95
        assert len(face.landmarks) == 5
        left_eye, right_eye, nose = face.landmarks[:3]
        assert left_eye[0] < nose[0] < right_eye[0]
    assert seen == [0, 10, 20]


def test_crop_is_the_box_plus_ten_percent_margin(detector, face_video):
    index, frame, faces = next(detector.detect_video(face_video, step=10))
    box = faces[0].box
    crop = crop_face(frame, box, margin=0.10)
    x1, y1, x2, y2 = (int(v) for v in box)
    expected_w = min(x2 + int(0.1 * (x2 - x1)), frame.shape[1]) - max(x1 - int(0.1 * (x2 - x1)), 0)
    expected_h = min(y2 + int(0.1 * (y2 - y1)), frame.shape[0]) - max(y1 - int(0.1 * (y2 - y1)), 0)
    assert crop.shape == (expected_h, expected_w, 3)
    left, top, right, bottom = crop_box(box, frame.shape[1], frame.shape[0])
    assert np.array_equal(crop, frame[top:bottom, left:right])
    assert crop_name(index, 0) == "0_0.png"


@pytest.mark.slow  # ~3 s of face detection
def test_all_faces_are_returned_largest_first(detector, two_face_frame):
    faces = detector.detect([two_face_frame])[0]
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].box[0] < 240 < faces[1].box[0]  # Grace Hopper (left, larger) first
    assert detector.detect([two_face_frame])[0] == faces  # same input, same order


@pytest.mark.slow  # ~2 s of face detection
def test_batches_mix_frame_sizes_and_empty_frames(detector, two_face_frame):
    blank = np.full((200, 300, 3), 128, np.uint8)
    tiny = np.full((10, 10, 3), 128, np.uint8)
    results = detector.detect([two_face_frame, blank, tiny, two_face_frame])
    assert [len(r) for r in results] == [2, 0, 0, 2]
    with pytest.raises(ValueError, match="expected an RGB uint8 image"):
        detector.detect([blank.astype(np.float32)])


@pytest.mark.slow  # ~4.5 s of face detection
def test_batch_size_changes_neither_faces_nor_boxes(face_video):
    frames = [frame for _, frame in sampled_frames(face_video, 3)]
    one_batch = FaceDetector(batch_size=len(frames)).detect(frames)
    small_batches = FaceDetector(batch_size=4).detect(frames)
    assert [len(f) for f in small_batches] == [len(f) for f in one_batch] and sum(map(len, one_batch)) == 10
    for faces_a, faces_b in zip(one_batch, small_batches):
        for a, b in zip(faces_a, faces_b):
            assert np.abs(np.subtract(a.box, b.box)).max() < 1e-3
            assert np.abs(np.subtract(a.landmarks, b.landmarks)).max() < 1e-3


def _wide_frame(seed):
    frame = background(1280, 720, np.random.default_rng(seed))
    for name, (x, y, h) in [("astronaut", (100 + 40 * seed, 80, 420 + 20 * seed)),
                            ("grace_hopper", (800, 200 + 10 * seed, 250 - 30 * seed))]:
        photo = face_photo(name)
        w = int(h * photo.shape[1] / photo.shape[0])
        frame[y:y + h, x:x + w] = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
    return frame


@pytest.mark.slow  # ~8 s of face detection
def test_downscaled_detection_maps_back_to_full_resolution():
    full_res = FaceDetector(detect_max_side=0)
    half = FaceDetector(detect_max_side=640)
    assert half.detection_size(1280, 720) == (640, 360)
    assert full_res.detection_size(1280, 720) == (1280, 720)
    for seed in range(4):
        frame = _wide_frame(seed)
        reference, scaled = full_res.detect([frame])[0], half.detect([frame])[0]
        assert len(reference) == len(scaled) == 2
        for a, b in zip(reference, scaled):
            ref_crop, crop = np.array(crop_box(a.box, 1280, 720)), np.array(crop_box(b.box, 1280, 720))
            face_width = a.box[2] - a.box[0]
            # Measured: corners move at most 12 px (7 % of a 165 px face); landmarks at most 2.3 px.
            assert np.abs(ref_crop - crop).max() <= max(4, 0.08 * face_width)
            assert np.abs(np.subtract(a.landmarks, b.landmarks)).max() <= 4


def test_landmark_entries_round_trip_through_json():
    faces = [Face((10.5, 20.25, 60.0, 90.0), 0.99, ((20, 40), (45, 41), (33, 55), (22, 70), (44, 71))),
             Face((-3.0, 5.0, 20.0, 30.0), 0.97, ((1, 10), (10, 10), (5, 15), (2, 20), (9, 20)))]
    entry = json.loads(json.dumps(landmarks_entry(faces)))
    assert entry[0][0] == [10.5, 20.25, 60.0, 90.0]
    assert len(entry[1][1]) == 5
    back = faces_from_entry(entry)
    assert [f.box for f in back] == [f.box for f in faces]
    assert [f.landmarks for f in back] == [tuple(tuple(float(v) for v in p) for p in f.landmarks) for f in faces]
    assert landmarks_entry([]) == [None, None]
    assert faces_from_entry([None, None]) == []


@pytest.mark.parametrize("box, expected", [
    ((100.9, 50.2, 200.7, 170.0), (90, 38, 210, 182)),      # int() then 10 % of w=100, h=120
    ((-20.0, -10.0, 40.0, 30.0), (0, 0, 46, 34)),           # clamped at the left and top
    ((300.0, 200.0, 380.0, 260.0), (292, 194, 320, 240)),   # clamped at the right and bottom
    ((400.0, 300.0, 500.0, 400.0), None),                   # wholly outside the 320x240 frame
    ((50.0, 50.0, 50.0, 80.0), None),                       # zero width
])
def test_crop_box_margin_and_clamping(box, expected):
    assert crop_box(box, 320, 240, margin=0.10) == expected


def test_crop_face_returns_none_for_an_empty_crop():
    frame = np.zeros((240, 320, 3), np.uint8)
    assert crop_face(frame, (400.0, 300.0, 500.0, 400.0)) is None
    assert crop_face(frame, (10.0, 10.0, 50.0, 60.0)).shape == (60, 48, 3)  # h=50 -> 5 px each side, w=40 -> 4 px
