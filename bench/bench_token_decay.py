"""What token decay saves: memory and time of the MiGA 2024 video CLIP student on this CPU.

    python bench/bench_token_decay.py [--model miga24-vclip-b16] [--batches 1 2] [--iters 3]
                                      [--rounds 1] [--threads 1] [--json FILE]

One training step of the student's image tower: VCLIP attention in every
block, 8 frames at 224 px, random weights, fp32, forward + cross-entropy on
cosine logits against fixed class embeddings + backward (the text tower and
the FROSTER teacher are left out: they do not depend on token decay). Each
setting (batch, decay on or off) runs in a fresh Python process so that its
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its
own; ``step MB`` is that peak minus the resident memory just before the first
step (model, optimiser-free, and inputs already built), so it counts what a
step allocates: activations kept for backward, gradients, temporaries.
Times are the median of ``--iters`` steps after one warm-up step; with
``--rounds`` every setting runs again, off/on order alternating, and the
table shows medians over rounds.

"Decay on" is the config's schedule (keep 0.7 after the attention of blocks
3, 6, 9 of 12); "off" is the same model with no decay blocks. The paper's
figure (GPU, its batch): 1.88 -> 1.28 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def token_layers(config, blocks: int, patches: int) -> float:
    """Fraction of (token x block) work the decay schedule keeps, CLS included, a block's attention
    and MLP halves counted equally."""
    from microgesture.core.vclip import kept_count

    kept, total, p = 0.0, 0.0, patches
    for b in range(blocks):
        # the attention of a decay block still sees every token; its MLP sees the kept ones
        before = 1 + p
        if b in config.decay_blocks:
            p = kept_count(p, config.decay_keep)
        kept += (before + 1 + p) / 2
        total += 1 + patches
    return kept / total


def child(args) -> dict:
    import torch
    import torch.nn.functional as F

    from microgesture.core.miga24 import create_vclip
    from microgesture.core.miga24_config import get_miga24_config

    torch.set_num_threads(args.threads)
    overrides = {} if args.decay == "on" else {"decay_blocks": ()}
    config = get_miga24_config(args.model, overrides, distill_visual=0.0, distill_text=0.0)
    model = create_vclip(config, seed=0, teacher=False).train()
    size, frames = config.clip.image_size, config.rgb_frames
    x = torch.randn(args.batch, frames, 3, size, size)
    y = torch.arange(args.batch) % config.num_classes
    text = F.normalize(torch.randn(config.num_classes, model.dim), dim=-1)

    def step():
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model.logits(model.encode_video(x), text), y)
        loss.backward()

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    before, peak_before = rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for i in range(args.iters + 1):
        t0 = time.perf_counter()
        step()
        if i:
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"model": args.model, "batch": args.batch, "decay": args.decay, "threads": args.threads,
            "frames": frames, "blocks": len(model.clip.visual.transformer.resblocks),
            "patches": model.clip.visual.positional_embedding.shape[0] - 1, "step_s": statistics.median(times), "times_s": times,
            "peak_rss_mb": peak, "rss_before_step_mb": before,
            "step_mb": peak - before, "build_peak_exceeds_step": peak_before >= peak}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="miga24-vclip-b16")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="repeat every setting, alternating the order")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--decay", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return

    from microgesture.core.miga24_config import get_miga24_config

    config = get_miga24_config(args.model)
    runs = []
    for r in range(args.rounds):  # alternate the order so that a busy machine slows both alike
        for batch in args.batches:
            for decay in (("off", "on") if r % 2 == 0 else ("on", "off")):
                cmd = [sys.executable, __file__, "--child", "--model", args.model, "--batch", str(batch),
                       "--decay", decay, "--iters", str(args.iters), "--threads", str(args.threads)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                x = runs[-1]
                print(f"round {r} batch {batch} decay {decay:3}: step {x['step_s']:.2f} s, peak RSS "
                      f"{x['peak_rss_mb']:.0f} MB, step adds {x['step_mb']:.0f} MB", flush=True)

    def summary(batch, decay, key):
        values = [x[key] for x in runs if x["batch"] == batch and x["decay"] == decay]
        return statistics.median(values)

    blocks, grid = runs[0]["blocks"], runs[0]["patches"]
    kept = token_layers(config, blocks, grid)
    print(f"\n{args.model}: {config.rgb_frames} frames, {grid} patches/frame, decay keep {config.decay_keep} "
          f"at blocks {config.decay_blocks} of {blocks}; token-block work kept: {kept:.2f}; "
          f"medians over {args.rounds} round(s)")
    print(f"{'batch':>5} {'step s off':>10} {'on':>6} {'ratio':>6} {'step MB off':>12} {'on':>7} {'ratio':>6}")
    for batch in args.batches:
        t0, t1 = summary(batch, "off", "step_s"), summary(batch, "on", "step_s")
        m0, m1 = summary(batch, "off", "step_mb"), summary(batch, "on", "step_mb")
        print(f"{batch:>5} {t0:>10.2f} {t1:>6.2f} {t1 / t0:>6.2f} {m0:>12.0f} {m1:>7.0f} {m1 / m0:>6.2f}")
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_average": os.getloadavg(), "token_layers_kept": kept, "runs": runs}
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
