"""Cost of keypoints -> heatmaps on this machine, against a naive full-grid baseline.

    python bench/bench_heatmaps.py [--repeats 30] [--json FILE]

Per window = one call for a 32-frame clip (training, and a streaming window);
per frame = one call for a single frame (streaming draws each frame as it
arrives). Keypoints are a synthetic person in 1920x1080 pixels, mapped through
the clip's compact_box as in training. Baselines, run in the same process on
the same input: "naive" evaluates exp over the full grid, joint by joint (or
limb by limb), without separability or windows; "mmaction2" is
GeneratePoseTarget's loop over frames and joints, drawing a square patch each.
Every baseline's output is checked against ours before it is timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from microgesture.core.heatmaps import box_to_output, compact_box, joint_heatmaps, limb_heatmaps
from microgesture.core.layouts import get_layout

FRAMES = 32
CASES = [  # name, layout, kind, size (H, W), sigma
    ("PoseC3D joints", "coco17", "joints", (56, 56), 0.6),
    ("PoseC3D limbs", "coco17", "limbs", (56, 56), 0.6),
    ("CLIP-MG joints", "coco18", "joints", (256, 256), 2.5),
    ("MiGA joints", "imigue22", "joints", (64, 64), 0.6),
    ("MiGA limbs", "imigue22", "limbs", (64, 64), 0.6),
]


def synthetic_clip(num_joints: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(T, V, 2) keypoints of a seated person in 1920x1080 moving a little, and (T, V) scores in [0.5, 1)."""
    rng = np.random.default_rng(seed)
    rest = rng.uniform((760, 240), (1160, 840), (num_joints, 2))
    drift = np.cumsum(rng.normal(0, 3, (FRAMES, num_joints, 2)), axis=0)
    return rest + drift, rng.uniform(0.5, 1.0, (FRAMES, num_joints))


def naive_joints(kp, sc, size, sigma):
    """Full-grid exp per joint, vectorised over frames; kp (T, V, 2) in output pixels."""
    h, w = size
    y, x = np.mgrid[:h, :w]
    out = np.empty((kp.shape[1], kp.shape[0], h, w), np.float32)
    for v in range(kp.shape[1]):
        d2 = (x - kp[:, v, 0, None, None]) ** 2 + (y - kp[:, v, 1, None, None]) ** 2
        out[v] = sc[:, v, None, None] * np.exp(-d2 / (2 * sigma**2)) * (d2 <= 9 * sigma**2)
    return out


def naive_limbs(kp, sc, limbs, size, sigma):
    """Full-grid distance to each segment (clamped projection), vectorised over frames."""
    h, w = size
    y, x = np.mgrid[:h, :w]
    out = np.empty((len(limbs), kp.shape[0], h, w), np.float32)
    for k, (i, j) in enumerate(limbs):
        a, ab = kp[:, i, :, None, None], (kp[:, j] - kp[:, i])[:, :, None, None]
        u = np.clip(((x - a[:, 0]) * ab[:, 0] + (y - a[:, 1]) * ab[:, 1]) / np.maximum((ab**2).sum(1), 1e-12), 0, 1)
        d2 = (x - a[:, 0] - u * ab[:, 0]) ** 2 + (y - a[:, 1] - u * ab[:, 1]) ** 2
        value = np.minimum(sc[:, i], sc[:, j])[:, None, None]
        out[k] = value * np.exp(-d2 / (2 * sigma**2)) * (d2 <= 9 * sigma**2)
    return out


def mmaction2_joints(kp, sc, size, sigma):
    """GeneratePoseTarget's loop: one square patch per (frame, joint); differs from ours in the square's corners."""
    h, w = size
    out = np.zeros((kp.shape[1], kp.shape[0], h, w), np.float32)
    for t, v in np.ndindex(*sc.shape):
        (mx, my), value = kp[t, v], sc[t, v]
        x0, x1 = max(int(mx - 3 * sigma), 0), min(int(mx + 3 * sigma) + 1, w)
        y0, y1 = max(int(my - 3 * sigma), 0), min(int(my + 3 * sigma) + 1, h)
        if x0 < x1 and y0 < y1:
            xs, ys = np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32)[:, None]
            patch = np.exp(-((xs - mx) ** 2 + (ys - my) ** 2) / 2 / sigma**2) * value
            out[v, t, y0:y1, x0:x1] = np.maximum(out[v, t, y0:y1, x0:x1], patch)
    return out


def timed(fn, repeats: int) -> dict:
    """Median and p90 wall time of fn() in ms, after two warm-up calls."""
    fn(), fn()
    ms = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        ms.append((time.perf_counter_ns() - start) / 1e6)
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "repeats": repeats}


def run_case(name, layout_name, kind, size, sigma, repeats) -> dict:
    layout = get_layout(layout_name)
    kp, sc = synthetic_clip(layout.num_joints)
    box = compact_box(kp, sc, (1920, 1080))
    out_kp = box_to_output(kp, box, size)
    if kind == "joints":
        ours = lambda k, s: joint_heatmaps(k, s, size, sigma, box=box)  # noqa: E731
        baselines = {"naive": lambda: naive_joints(out_kp, sc, size, sigma),
                     "mmaction2": lambda: mmaction2_joints(out_kp, sc, size, sigma)}
    else:
        ours = lambda k, s: limb_heatmaps(k, s, layout, size, sigma, box=box)  # noqa: E731
        baselines = {"naive": lambda: naive_limbs(out_kp, sc, layout.limbs, size, sigma)}
    reference = ours(kp, sc)
    np.testing.assert_allclose(baselines["naive"](), reference, atol=1e-5)
    if "mmaction2" in baselines:  # same peaks; only the square's corners (< exp(-4.5)) differ
        np.testing.assert_allclose(baselines["mmaction2"](), reference, atol=float(np.exp(-4.5)) + 1e-6)
    frames = iter(range(10**9))

    def per_frame():  # streaming: one frame per call, a different one each time
        t = next(frames) % FRAMES
        return ours(kp[t:t + 1], sc[t:t + 1])

    slow = max(1, repeats // 5) if size[0] > 128 else repeats  # the full-grid baselines at 256x256 are slow
    row = {"case": name, "layout": layout_name, "kind": kind, "channels": reference.shape[0], "frames": FRAMES,
           "size": list(size), "sigma": sigma, "window": timed(lambda: ours(kp, sc), repeats),
           "frame": timed(per_frame, repeats * 4),
           **{base: timed(fn, slow) for base, fn in baselines.items()}}
    row["speedup_vs_naive"] = row["naive"]["median_ms"] / row["window"]["median_ms"]
    return row


def table(rows) -> str:
    def cell(stats):
        return f"{stats['median_ms']:8.2f} / {stats['p90_ms']:<8.2f}" if stats else f"{'-':>8}   {'':<8}"

    head = (f"{'case':<15} {'input':<22} {'ours/window p50/p90':>20} {'ours/frame p50/p90':>20} "
            f"{'naive/window':>20} {'mmaction2/window':>20} {'x naive':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = f"{r['channels']}x{r['frames']}x{r['size'][0]}x{r['size'][1]} s{r['sigma']}"
        lines.append(f"{r['case']:<15} {shape:<22} {cell(r['window']):>20} {cell(r['frame']):>20} "
                     f"{cell(r['naive']):>20} {cell(r.get('mmaction2')):>20} {r['speedup_vs_naive']:8.1f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per window measurement (default 30)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    rows = [run_case(*case, repeats=args.repeats) for case in CASES]
    machine = platform.processor() or platform.machine()
    print(f"heatmaps, milliseconds (median / p90); numpy {np.__version__}, {machine}")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"numpy": np.__version__, "machine": platform.machine(), "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
