"""core.video: images, videos, image folders; corrupt frames are skipped and counted."""

import cv2
import numpy as np
import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.core.video import (DEFAULT_IMAGE_FPS, MediaFrame, natural_key, open_media,
                                     validate_frame)


def frame_bgr(i: int, size=(64, 48)) -> np.ndarray:
    """A frame whose brightness encodes its index, with a pure blue (BGR) square."""
    w, h = size
    img = np.full((h, w, 3), 10 * i, np.uint8)
    img[4:20, 4:20] = (255, 0, 0)   # blue in BGR
    return img


def write_video(path, n=20, fps=10.0, fourcc="MJPG", size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"cannot write {path} with {fourcc}"
    for i in range(n):
        writer.write(frame_bgr(i, size))
    writer.release()
    return path


def corrupt_mjpeg_frame(path, k):
    """Zero the JPEG data of frame k of an MJPG AVI: that frame cannot be decoded."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    end = data.index(b"\xff\xd9", starts[k]) + 2   # the frame's end-of-image marker
    data[starts[k]:end] = bytes(end - starts[k])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("fourcc,ext", [("MJPG", "avi"), ("mp4v", "mp4")])
def test_video_frames_times_and_properties(tmp_path, fourcc, ext):
    path = write_video(tmp_path / f"clip.{ext}", n=12, fps=10.0, fourcc=fourcc)
    with open_media(path) as reader:
        assert (reader.kind, reader.width, reader.height) == ("video", 64, 48)
        assert reader.fps == pytest.approx(10.0) and reader.frame_count == 12
        frames = list(reader)
    assert [f.index for f in frames] == list(range(12))
    assert [f.time_s for f in frames] == pytest.approx([i / 10 for i in range(12)], abs=1e-3)
    for f in frames:
        assert isinstance(f, MediaFrame)
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
    r, g, b = frames[0].image[12, 12].astype(int)
    assert b > 200 and r < 60, "frames must be RGB (the blue square is blue)"
    assert reader.skipped == [] and reader.num_skipped == 0 and reader.end_reason is None


def test_media_frame_is_frozen(tmp_path):
    path = write_video(tmp_path / "clip.avi", n=2)
    frame = next(iter(open_media(path)))
    with pytest.raises(AttributeError):
        frame.index = 5


def test_reader_iterates_once(tmp_path):
    reader = open_media(write_video(tmp_path / "clip.avi", n=3))
    list(reader)
    with pytest.raises(MicrogestureError, match="iterated once"):
        list(reader)


def test_corrupt_video_frame_is_skipped_and_counted(tmp_path):
    path = write_video(tmp_path / "clip.avi", n=20)
    corrupt_mjpeg_frame(path, 7)
    reader = open_media(path)
    frames = list(reader)
    assert [f.index for f in frames] == [i for i in range(20) if i != 7]
    assert frames[7].index == 8 and frames[7].time_s == pytest.approx(0.8, abs=1e-3)
    assert reader.num_skipped == 1
    assert reader.skipped[0].index == 7 and "decode" in reader.skipped[0].reason


def test_truncated_video_ends_early_and_counts_missing_frames(tmp_path):
    full = write_video(tmp_path / "full.avi", n=20)
    cut = tmp_path / "cut.avi"
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    reader = open_media(cut)
    frames = list(reader)   # no exception
    assert 0 < len(frames) < 20
    assert len(frames) + reader.num_skipped == 20
    assert "truncated" in reader.end_reason and "20 frames" in reader.end_reason


def test_fps_override_for_video(tmp_path):
    reader = open_media(write_video(tmp_path / "clip.avi", n=4, fps=10.0), fps=20.0)
    assert reader.fps == 20.0
    assert [f.time_s for f in reader] == pytest.approx([0, 0.05, 0.1, 0.15])


def test_image_file(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    reader = open_media(str(path))
    assert (reader.kind, reader.frame_count, reader.width, reader.height) == ("image", 1, 40, 30)
    assert reader.fps == DEFAULT_IMAGE_FPS
    frames = list(reader)
    assert len(frames) == 1 and frames[0].index == 0 and frames[0].time_s == 0.0
    np.testing.assert_array_equal(frames[0].image, rgb)   # PNG is lossless: exact RGB


def test_folder_natural_order_with_a_corrupt_image(tmp_path):
    for name, value in (("f1.png", 10), ("f10.png", 100), ("f2.png", 20)):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), value, np.uint8))
    (tmp_path / "f3.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (tmp_path / "notes.txt").write_text("ignored")
    reader = open_media(tmp_path, fps=5.0)
    assert reader.kind == "folder" and reader.frame_count == 4   # f1 f2 f3 f10
    frames = list(reader)
    assert [f.image[0, 0, 0] for f in frames] == [10, 20, 100]
    assert [f.index for f in frames] == [0, 1, 3]
    assert [f.time_s for f in frames] == pytest.approx([0, 0.2, 0.6])
    assert reader.num_skipped == 1
    assert reader.skipped[0].index == 2 and "f3.png" in reader.skipped[0].reason


def test_natural_key():
    names = ["img10.png", "img2.png", "IMG1.png", "img2b.png"]
    assert sorted(names, key=natural_key) == ["IMG1.png", "img2.png", "img2b.png", "img10.png"]


@pytest.mark.parametrize("make,match", [
    (lambda d: d / "missing.mp4", "does not exist"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no image files"),
])
def test_sources_that_cannot_be_opened(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(MicrogestureError, match=match) as e:
        open_media(path)
    assert str(path) in str(e.value)


def test_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is text, not a video\n" * 50)
    with pytest.raises(MicrogestureError, match="not a video or image") as e:
        open_media(path)
    assert str(path) in str(e.value)


def test_unreadable_image_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(MicrogestureError, match="not an image OpenCV can read") as e:
        open_media(path)
    assert "broken.jpg" in str(e.value)


def test_folder_of_only_corrupt_images(tmp_path):
    (tmp_path / "a.png").write_bytes(b"nope")
    with pytest.raises(MicrogestureError, match="none of the 1 images"):
        open_media(tmp_path)


def test_missing_camera():
    with pytest.raises(MicrogestureError, match="cannot open camera 97"):
        open_media("97")


def test_validate_frame():
    ok = np.zeros((4, 5, 3), np.uint8)
    assert validate_frame(ok) is ok
    cases = [
        (np.zeros((4, 5), np.uint8), r"shape \(H, W, 3\).*got shape \(4, 5\).*grayscale"),
        (np.zeros((4, 5, 4), np.uint8), "RGBA"),
        (np.zeros((3, 4, 5), np.uint8), "channels-first"),
        (np.zeros((4, 5, 3), np.float32), "dtype uint8, got float32.*255"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array.*got list"),
    ]
    for image, match in cases:
        with pytest.raises(MicrogestureError, match=match):
            validate_frame(image)
