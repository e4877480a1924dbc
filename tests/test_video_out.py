"""--save-video writes a file browsers play, with the top class and score on every frame;
the relevance plot picks a clip with a person (issue 14, item 6)."""

import re
from pathlib import Path

import numpy as np
import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.core.paths import DEMO_BUNDLE
from microgesture.stream import video_out
from microgesture.stream.pipeline import StreamOptions, run_stream

cv2 = pytest.importorskip("cv2")
BROWSER_CODECS = {"VP80": "VP8", "VP90": "VP9", "avc1": "H.264", "h264": "H.264", "H264": "H.264"}


def fourcc(path) -> str:
    cap = cv2.VideoCapture(str(path))
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return "".join(chr((code >> 8 * i) & 255) for i in range(4)), frames


@pytest.mark.parametrize("name", ["clip.mp4", "clip.webm"])
def test_video_file_is_in_a_codec_browsers_play(tmp_path, name):
    out = video_out.VideoFile(tmp_path / name, fps=15)
    for i in range(12):
        out.write(np.full((48, 64, 3), 20 * i, np.uint8))
    out.close()
    code, frames = fourcc(out.path)
    assert code in BROWSER_CODECS and frames == 12 and out.frames == 12
    assert out.codec == BROWSER_CODECS[code]
    if out.path.suffix == ".webm":    # an mp4 request falls back only when H.264 is missing
        assert out.path == (tmp_path / name).with_suffix(".webm")
    assert out.summary()["path"] == str(out.path)


def test_save_video_paths_are_checked_before_streaming(tmp_path):
    with pytest.raises(MicrogestureError, match="give an .mp4 or a .webm"):
        video_out.check_path(tmp_path / "out.avi")
    with pytest.raises(MicrogestureError, match="does not exist"):
        video_out.check_path(tmp_path / "missing" / "out.mp4")


def test_stream_save_video_shows_the_top_class_on_every_frame(tmp_path, monkeypatch):
    from microgesture.training.synth import make_long_video

    info = make_long_video(tmp_path / "long.mp4", 8, seed=2, size=(128, 128), progress=False)
    video = Path(info["video"])
    lines = []
    real = video_out.caption
    monkeypatch.setattr(video_out, "caption", lambda w: lines.append(real(w)) or lines[-1])
    options = StreamOptions(bundle=str(DEMO_BUNDLE), sources=[str(video)],
                            publish="tcp://127.0.0.1:*", pose=f"recorded:{video.with_suffix('.jsonl')}",
                            save_video=str(tmp_path / "annotated.mp4"))
    summary = run_stream(options)
    stats = next(iter(summary["streams"].values()))
    written = Path(summary["video"]["path"])
    code, frames = fourcc(written)
    assert code in BROWSER_CODECS and summary["video"]["codec"] == BROWSER_CODECS[code]
    assert frames == len(lines) == summary["video"]["frames"] > 0
    assert summary["windows_run"] > 0 and stats["frames_captured"] == frames
    top = [ln[0][0] for ln in lines]
    first = next(i for i, t in enumerate(top) if t.startswith("top: "))
    assert all(t == "waiting for the first window" for t in top[:first])
    labels = "|".join(re.escape(x) for x in __import__("json").loads(
        (DEMO_BUNDLE / "manifest.json").read_text())["labels"])
    assert all(re.fullmatch(rf"top: ({labels}) [01]\.\d\d", t) for t in top[first:])
    # the text is drawn: the caption band differs from the source video on every frame
    src, ann = cv2.VideoCapture(str(video)), cv2.VideoCapture(str(written))
    for _ in range(frames):
        ok_a, a = src.read()
        ok_b, b = ann.read()
        assert ok_a and ok_b
        assert np.abs(a[:20, :100].astype(int) - b[:20, :100]).max() > 100


def test_relevance_plot_uses_a_clip_with_a_person():
    import torch

    from microgesture.core.models import create_model
    from microgesture.training.evaluate import _forward

    model = create_model("clip-mg-tiny", seed=0).eval()
    cfg = model.config
    b, r, v = 3, cfg.rgb_frames, 18
    joints = torch.zeros(b, r, v, 3)
    joints[2, :, 0] = torch.tensor([0.5, 0.5, 1.0])     # only the third clip has a person
    batch = {"frames": torch.randn(b, r, 3, 32, 32), "joints": joints,
             "heatmaps": torch.zeros(b, v, cfg.pose_frames, 16, 16)}
    empty = {"frames": batch["frames"][:2], "joints": joints[:2], "heatmaps": batch["heatmaps"][:2]}
    collect = {}
    with torch.no_grad():
        _forward(model, empty, collect)
        assert "frames" not in collect and "no_person" in collect
        _forward(model, batch, collect)
    assert collect["person"] and collect["clip"] == 4
    assert torch.equal(collect["frames"], batch["frames"][2])
