"""Top-1 of a bundle's precisions against PyTorch on a run's held-out clips.

The export checks 8 clips; this measures the accuracy change of int8 (and fp16)
on as many held-out clips as asked, the way streaming chains the stages (visual
and pose stages in ONNX Runtime, then the head), against the run's PyTorch model
on the same windows:

    python bench/bench_bundle_accuracy.py runs/tiny bundles/tiny --clips 768 --json acc.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from microgesture.core.bundle import read_manifest, stage_precisions
from microgesture.core.checkpoint import load_checkpoint
from microgesture.core.errors import MicrogestureError
from microgesture.export.verify import _chain, _session, load_clips


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="run folder (best.safetensors, run.json)")
    p.add_argument("bundle", help="bundle exported from that run")
    p.add_argument("--data", help="dataset folder (default: the run's)")
    p.add_argument("--clips", type=int, default=256, help="held-out clips to score")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    run = Path(args.run)
    info = json.loads((run / "run.json").read_text())
    data = args.data or info["options"]["data"]
    model, _ = load_checkpoint(run / "best.safetensors")
    model.eval()
    real, _, clips = load_clips(data, model.config, verify_clips=args.clips, calibration_clips=0,
                                test_subjects=info.get("split", {}).get("test_subjects"))
    if real["labels"] is None:
        raise MicrogestureError(f"the classes of {data} are not the model's: no accuracy to measure")
    window = {k: torch.as_tensor(real[k]) for k in ("frames", "heatmaps", "joints")}
    labels = np.asarray(real["labels"])
    manifest = read_manifest(args.bundle)
    stages = manifest["stages"]
    precisions = [q for q in ("fp32", "int8", "fp16")
                  if all(q in stage_precisions(manifest, s) for s in stages)]
    out = {"run": str(run), "bundle": str(args.bundle), "clips": int(len(labels)),
           "held_out_subjects": clips["held_out_subjects"]}
    for q in precisions:
        sessions = {n: _session(Path(args.bundle) / s["files"][q], precision=q) for n, s in stages.items()}
        _, (ref, got) = _chain(model, sessions, window)
        out["top1_pytorch_fp32"] = float((ref.argmax(-1) == labels).mean())
        out[f"top1_onnx_{q}"] = float((got.argmax(-1) == labels).mean())
        out[f"agreement_{q}"] = float((got.argmax(-1) == ref.argmax(-1)).mean())
    print(f"{out['clips']} held-out clips: PyTorch fp32 top-1 {out['top1_pytorch_fp32']:.4f}")
    for q in precisions:
        print(f"  ONNX {q:<5} top-1 {out[f'top1_onnx_{q}']:.4f}  agreement with PyTorch "
              f"{out[f'agreement_{q}']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MicrogestureError as exc:
        print(f"bench_bundle_accuracy: error: {exc}", file=sys.stderr)
        sys.exit(2)
