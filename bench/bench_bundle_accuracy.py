"""Top-1 of a bundle's precisions against PyTorch on a run's held-out clips.

The export checks 8 clips; this runs the same check (``export.verify.verify_bundle``:
the stages chained in ONNX Runtime as streaming runs them, against the run's
PyTorch model on the same windows) on as many held-out clips as asked, and
reports the accuracy of every precision the bundle has:

    python bench/bench_bundle_accuracy.py runs/tiny bundles/tiny --clips 768 --json acc.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from microgesture.core.bundle import read_manifest, stage_precisions
from microgesture.core.checkpoint import load_checkpoint
from microgesture.core.errors import MicrogestureError
from microgesture.export.verify import load_clips, verify_bundle


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
    manifest = read_manifest(args.bundle)
    stages = manifest["stages"]
    precisions = [q for q in ("fp32", "int8", "fp16")
                  if all(q in stage_precisions(manifest, s) for s in stages)]
    out = {"run": str(run), "bundle": str(args.bundle), "clips": int(len(real["labels"])),
           "held_out_subjects": clips["held_out_subjects"]}
    reference: dict = {}  # the PyTorch outputs, computed once for every precision
    for q in precisions:
        report = verify_bundle(model, args.bundle, stages, q, real, raise_on_failure=False,
                               cache=reference)
        acc = report["accuracy"]
        out["top1_pytorch_fp32"] = acc["top1_pytorch_fp32"]
        out[f"top1_onnx_{q}"] = acc[f"top1_onnx_{q}"]
        out[f"agreement_{q}"] = acc["top1_agreement"]
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
