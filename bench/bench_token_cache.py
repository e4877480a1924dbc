"""Training speed with and without the frozen-token cache (``train --token-cache``), in one
process, the two kinds of step interleaved so both see the same machine load.

For a model (default ``clip-mg-b32``, random CLIP weights: weights do not change the
cost) on a synthetic set: the cache of VIEWS views per clip is built (timed), then
ROUNDS pairs of training steps run on the same batches: a whole-model step (decode,
all ViT blocks, pose encoder, head, backward) and a cached step (heatmaps only, the
trainable blocks, pose encoder, head, backward). Prints clips/s of each, the
speed-up per step, and the speed-up of E epochs counting the cache's build time.

    python bench/bench_token_cache.py                       # b32, batch 8, 4 views
    python bench/bench_token_cache.py --model clip-mg-tiny --rounds 20
    python bench/bench_token_cache.py --json token_cache.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="clip-mg-b32")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--rounds", type=int, default=6, help="pairs of timed steps")
    p.add_argument("--epochs", type=int, default=30, help="for the end-to-end estimate")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)

    import torch

    from microgesture.core.models import create_model
    from microgesture.training import token_cache
    from microgesture.training.datasets import open_dataset
    from microgesture.training.synth import write_synthetic
    from microgesture.training.trainer import build_optimizer
    from microgesture.training.transforms import ClipDataset, make_loader

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench_token_cache_"))
    clips = args.batch_size * (args.rounds + 1)
    classes = 4
    write_synthetic(root / "set", subjects=2, clips_per_class=-(-clips // (2 * classes)), classes=classes,
                    seed=0, frames=40, size=(128, 128), progress=False)
    index = open_dataset(root / "set")
    model = create_model(args.model, {"num_classes": classes}, seed=0)
    config = model.config
    optimizer = build_optimizer(model, config, 1e-5, "adamw")
    criterion = torch.nn.CrossEntropyLoss()
    plain = ClipDataset(index, config, train=True, seed=0)
    t0 = time.perf_counter()
    cached = token_cache.build(model, ClipDataset(index, config, train=True, seed=0),
                               root / "cache", "train", args.views, args.batch_size, workers=0,
                               progress=False)
    build_s = time.perf_counter() - t0
    model.train()

    def step(batch) -> None:
        logits = token_cache.forward(model, batch)
        loss = criterion(logits.float(), batch["label"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    timing = {"whole": [], "cached": []}
    plain_iter = iter(make_loader(plain, args.batch_size, train=False))
    cached_iter = iter(make_loader(cached, args.batch_size, train=False))
    for r in range(args.rounds + 1):   # round 0 warms up
        for kind, it in (("whole", plain_iter), ("cached", cached_iter)):
            t = time.perf_counter()
            step(next(it))    # data loading included: decoding is part of a whole step
            if r:
                timing[kind].append(time.perf_counter() - t)
    whole = args.batch_size / float(np.median(timing["whole"]))
    fast = args.batch_size / float(np.median(timing["cached"]))
    n_train = 1000
    e2e = (args.epochs * n_train / whole) / (build_s / clips * n_train + args.epochs * n_train / fast)
    result = {"model": args.model, "batch_size": args.batch_size, "views": args.views,
              "threads": args.threads, "rounds": args.rounds, "cpu": platform.processor(),
              "load_average": os.getloadavg(), "whole_clips_per_s": round(whole, 3),
              "cached_clips_per_s": round(fast, 3), "step_speedup": round(fast / whole, 2),
              "cache_build_clip_views_per_s": round(args.views * clips / build_s, 3),
              "epochs": args.epochs, "speedup_with_build": round(e2e, 2)}
    print(f"{args.model}, batch {args.batch_size}, {args.threads} thread(s), load average "
          f"{result['load_average'][0]:.1f}:")
    print(f"  whole-model steps  {whole:7.2f} clips/s")
    print(f"  cached steps       {fast:7.2f} clips/s   ({fast / whole:.1f}x)")
    print(f"  cache build        {result['cache_build_clip_views_per_s']:7.2f} clip-views/s "
          f"({args.views} views)")
    print(f"  {args.epochs} epochs including the build: {e2e:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
