"""Absurd skeleton coordinates never size an allocation: joints far outside the frame are
dropped in streaming, and a crop box far larger than the frame is never allocated."""

import json
import resource

import numpy as np

from microgesture.core.paths import DEMO_BUNDLE
from microgesture.core.preprocess import MAX_PAD_AREA, crop_resize
from microgesture.stream.pipeline import StreamOptions, run_stream
from microgesture.stream.presence import drop_far_joints

from test_no_person import EAGER, FPS, FRAMES, red_video


def test_far_joints_are_dropped():
    kp = np.array([[10, 10], [1e6, 5], [5, -1e7], [np.inf, 3], [100, 90]], np.float32)
    sc = np.full(5, 0.9, np.float32)
    out_kp, out_sc = drop_far_joints(kp, sc, (64, 48))
    assert (out_sc > 0).tolist() == [True, False, False, False, True]   # (100, 90): within a frame size
    assert np.isnan(out_kp[1:4]).all() and out_kp[0].tolist() == [10, 10]
    assert (sc > 0).all()                                    # the input is not changed


def test_a_huge_box_is_never_allocated():
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = crop_resize(image, (-1_000_000, -1_000_000, 1_000_000, 1_000_000), 32)  # was 12 TB
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert out.shape == (32, 32, 3) and grown_mb < 50
    assert not out.any()              # the frame is a speck in the middle of the box: rounds away
    out = crop_resize(image, (-640, -640, 704, 688), 64)     # 21x the frame, frame in the middle
    assert out[:, :28].max() == 0 and out[30:33, 30:33].any()


def test_a_big_box_from_the_visible_part_matches_the_padded_crop():
    """Reference: the padded crop (allocated) then resized with INTER_AREA. When the box
    maps the frame onto whole output pixels the result is identical; otherwise it differs
    only inside the frame's footprint (resampled at a slightly different scale: measured
    mean 16.7 grey levels on random pixels, tolerance 25), and is black elsewhere."""
    import cv2

    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8)
    for box, exact in (((-96, -112, 160, 144), True), ((-101, -117, 163, 147), False)):
        x0, y0, x1, y1 = box
        assert (x1 - x0) * (y1 - y0) > MAX_PAD_AREA * 64 * 48    # the bounded path
        padded = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        padded[-y0:-y0 + 48, -x0:-x0 + 64] = image
        reference = cv2.resize(padded, (64, 64), interpolation=cv2.INTER_AREA)
        got = crop_resize(image, box, 64)
        if exact:
            assert np.array_equal(got, reference)
            continue
        footprint = np.zeros((64, 64), bool)
        footprint[28:40, 24:40] = True
        diff = np.abs(got.astype(int) - reference).max(-1)
        assert not diff[~footprint].any() and diff[footprint].mean() < 25


def test_streaming_a_skeleton_with_absurd_coordinates(tmp_path):
    video = red_video(tmp_path / "red.mp4")
    rng = np.random.default_rng(0)
    with open(tmp_path / "s.jsonl", "w") as f:
        for i in range(FRAMES):
            kps = [[float(x), float(y), 0.9] for x, y in rng.uniform(16, 48, (18, 2))]
            kps[4] = [1e9, -1e9, 0.9]                        # a glitch: far outside the frame
            kps[7] = [4e5, 3e5, 0.9]
            f.write(json.dumps({"frame": i, "t": i / FPS, "layout": "coco18", "width": 64,
                                "height": 64, "keypoints": kps}) + "\n")
    options = StreamOptions(bundle=str(DEMO_BUNDLE), sources=[str(video)], stream_ids=["cam"],
                            publish="tcp://127.0.0.1:*", pose=f"recorded:{tmp_path / 's.jsonl'}",
                            precision="fp32", hop=4, smoothing=EAGER)
    stats = run_stream(options)["streams"]["cam"]
    assert stats["fatal"] is None and stats["inference_errors"] == 0
    assert stats["windows_run"] > 0 and stats["frames_processed"] == FRAMES
