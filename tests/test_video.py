"""utils/media/video.py on generated videos: frames read at the right indices and colours, broken files named."""
import logging
import time

import numpy as np
import pytest
from conftest import VIDEO_FPS, VIDEO_FRAMES, VIDEO_H, VIDEO_W

from tests.helpers import make_face_video, sampled_frames
from utils.demo.synthetic import face_frames, face_photo
from utils.errors import VideoError
from utils.media.video import ReadAhead, SampledFrames, VideoReader, list_videos, probe


def test_probe_reports_count_fps_and_size(face_video):
    info = probe(face_video)
    assert (info.frame_count, info.width, info.height) == (VIDEO_FRAMES, VIDEO_W, VIDEO_H)
    assert info.fps == pytest.approx(VIDEO_FPS)
    assert info.duration == pytest.approx(VIDEO_FRAMES / VIDEO_FPS)


@pytest.mark.parametrize("step, expected", [(10, [0, 10, 20]), (7, [0, 7, 14, 21, 28]), (1, list(range(30)))])
def test_every_kth_frame_is_yielded_with_its_stream_index(face_video, step, expected):
    with VideoReader(face_video) as reader:
        indices = [index for index, _ in reader.frames(step)]
        assert reader.frames_read == VIDEO_FRAMES
        assert not reader.truncated
    assert indices == expected


def test_frames_are_rgb_and_match_what_was_written(face_video):
    written = [frame for frame, _ in face_frames(face_photo("astronaut"), VIDEO_W, VIDEO_H, VIDEO_FRAMES, seed=1)]
    for index, frame in sampled_frames(face_video, 10):
        assert frame.shape == (VIDEO_H, VIDEO_W, 3) and frame.dtype == np.uint8
        error = np.abs(frame.astype(int) - written[index]).mean()
        swapped = np.abs(frame[..., ::-1].astype(int) - written[index]).mean()
        assert error < 6, f"frame {index} differs from the written frame by {error:.1f} on average"
        assert swapped > 2 * error  # channel order really is RGB


def test_max_frames_stops_early_without_calling_it_truncation(face_video):
    with VideoReader(face_video) as reader:
        assert [i for i, _ in reader.frames(step=2, max_frames=3)] == [0, 2, 4]
        assert not reader.truncated


def test_a_reader_is_iterated_once(face_video):
    with VideoReader(face_video) as reader:
        list(reader.frames(10))
        with pytest.raises(RuntimeError, match="open the video again"):
            list(reader.frames(10))


def test_one_frame_video(one_frame_video):
    assert [i for i, _ in sampled_frames(one_frame_video, 10)] == [0]
    assert probe(one_frame_video).frame_count == 1


@pytest.mark.parametrize("name, reason", [
    ("empty", "file is empty"),
    ("truncated", "cannot be decoded (truncated or corrupt video file)"),
    ("text", "not a video file (unrecognised format)"),
])
def test_broken_files_raise_one_line_naming_the_file(broken_files, name, reason):
    path = broken_files[name]
    with pytest.raises(VideoError) as info:
        probe(path)
    assert str(info.value) == f"{path}: {reason}"


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(VideoError, match=f"^{tmp_path / 'gone.mp4'}: file not found$"):
        VideoReader(tmp_path / "gone.mp4")
    with pytest.raises(VideoError, match="is a folder, not a video file"):
        VideoReader(tmp_path)


def test_stream_cut_in_the_middle_is_marked_truncated(tmp_path, caplog):
    # AVI keeps its frames readable up to the cut, unlike mp4 whose index sits at the end.
    from utils.demo.synthetic import write_video

    frames = [frame for frame, _ in face_frames(face_photo("grace_hopper"), 160, 120, 40, seed=2)]
    whole = write_video(tmp_path / "whole.avi", frames, fps=10)
    cut = tmp_path / "cut.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING), VideoReader(cut) as reader:
        indices = [i for i, _ in reader.frames(1)]
        assert reader.truncated
    assert 0 < len(indices) < 40
    assert indices == list(range(len(indices)))
    assert "truncated, decoding stopped at frame" in caplog.text


def test_list_videos_is_sorted_by_extension_and_skips_partial_files(tmp_path, face_video):
    for name in ["b.MP4", "a.avi", "notes.txt", ".c.partial.mp4", "labels.csv"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.mp4").write_bytes(b"x")
    assert [p.name for p in list_videos(tmp_path)] == ["a.avi", "b.MP4"]
    assert [p.name for p in list_videos(tmp_path, recursive=True)] == ["a.avi", "b.MP4", "d.mp4"]
    assert [p.name for p in list_videos(tmp_path, extensions=[".avi"])] == ["a.avi"]


def test_written_video_is_atomic(tmp_path):
    path = make_face_video(tmp_path / "v.mp4", n_frames=3, width=96, height=96)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    assert probe(path).frame_count == 3


def test_read_ahead_gives_the_frames_in_order(face_video):
    with VideoReader(face_video) as reader:
        ahead = [(index, frame) for index, frame in ReadAhead(reader.frames(7), 2)]
    direct = list(sampled_frames(face_video, 7))
    assert [i for i, _ in ahead] == [i for i, _ in direct] == [0, 7, 14, 21, 28]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(ahead, direct))


def counting(produced: list):
    """0, 1, 2, ... 999, each added to `produced` when it is produced."""
    for i in range(1000):
        produced.append(i)
        yield i


def test_sampled_frames_decode_before_they_are_asked_for_and_no_further_than_ahead(face_video, monkeypatch):
    """The app makes SampledFrames before loading its models: frames decode from then on, at most `ahead`."""
    decode = VideoReader.frames
    decoded = []

    def counted(reader, *args):
        for index, frame in decode(reader, *args):
            decoded.append(index)
            yield index, frame

    monkeypatch.setattr(VideoReader, "frames", counted)
    with SampledFrames(face_video, 7, ahead=3) as frames:
        deadline = time.monotonic() + 30
        while len(decoded) < 3 + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # time to overshoot, if the bound did not hold
        # 3 waiting, and the decoding thread holds the fourth until one is taken
        assert len(decoded) == 3 + 1 and frames.info.fps > 0
        got = list(frames)
    direct = list(sampled_frames(face_video, 7))
    assert [i for i, _ in got] == [i for i, _ in direct] == [0, 7, 14, 21, 28]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, direct))


def test_read_ahead_bound_can_be_lowered_after_a_head_start():
    """What the app does: many frames ahead while the models load, then one MTCNN batch while it detects."""
    produced = []

    def settle():
        deadline = time.monotonic() + 10
        last = -1
        while time.monotonic() < deadline and len(produced) != last:
            last = len(produced)
            time.sleep(0.1)

    with ReadAhead(counting(produced), 8) as stream:
        settle()
        assert len(produced) == 8 + 1  # 8 waiting, and the producer holds the next until one is taken
        stream.keep_ahead(2)
        assert [next(stream) for _ in range(6)] == list(range(6))
        settle()
        assert len(produced) == 6 + 2 + 1  # taken, 2 waiting, 1 held: nothing new while 2 were still waiting
        assert [next(stream) for _ in range(4)] == list(range(6, 10))
        settle()
        assert len(produced) == 10 + 2 + 1  # taken, 2 waiting, 1 held: topped up to the new bound, no further


def test_read_ahead_raises_a_producer_error_in_its_place():
    def items():
        yield from (1, 2)
        raise VideoError("clip.mp4: cannot be decoded")

    got = []
    with pytest.raises(VideoError, match="cannot be decoded"):
        for item in ReadAhead(items(), 8):
            got.append(item)
    assert got == [1, 2]


def test_read_ahead_stops_its_producer_when_the_caller_stops():
    produced = []

    stream = ReadAhead(counting(produced), 3)
    assert [next(stream) for _ in range(2)] == [0, 1]
    stream.close()  # returns only when the producer thread has finished
    count = len(produced)
    assert count <= 2 + 3 + 1  # consumed, buffered, and the one waiting to be buffered
    assert len(produced) == count
