"""The training-side subcommands of ``microgesture``: train, eval (and its zero-shot and
ensemble variants), ensemble, eval-online, ablate and export.

Their options and runners; ``microgesture.cli`` registers them. Each runner imports its
implementation lazily (torch only when the command runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from microgesture.core.errors import MicrogestureError


# ---------------------------------------------------------------- train / eval / ablate
def _train_extra(module: str):
    """Import a module of the training side, or a one-line error naming the extra it needs."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in ("torch", "torchvision", "open_clip", "safetensors", "matplotlib", "tqdm"):
            raise MicrogestureError(f"this command needs the training extra ({top} is not installed): "
                                    "pip install 'microgesture[train]'") from None
        raise


def _train_options_from(args: argparse.Namespace):
    TrainOptions = _train_extra("microgesture.training.trainer").TrainOptions

    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise MicrogestureError(f"--set needs KEY=VALUE, got {item!r} (e.g. --set gate=false)")
        overrides[key] = _parse_value(value)
    if not args.model:
        raise MicrogestureError("--model is required (see microgesture models), "
                                "or continue a run with --resume RUN")
    if not args.data or not args.out:
        raise MicrogestureError("--data DIR and --out RUN are required for a new run")
    if getattr(args, "text_from", None):  # PoseC3D's text-alignment targets (a config field)
        if not Path(args.text_from).exists():
            raise MicrogestureError(f"--text-from {args.text_from}: no such run folder or checkpoint; give a "
                                    "trained miga24-vclip run")
        overrides["text_from"] = str(Path(args.text_from).resolve())
    subjects = tuple(s for s in (args.test_subjects or "").split(",") if s) or None
    return TrainOptions(model=args.model, data=args.data, out=args.out, epochs=args.epochs,
                        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                        accumulate=args.accumulate, device=args.device, workers=args.workers,
                        seed=args.seed, clip_weights=args.clip_weights, amp=not args.no_amp,
                        test_subjects=subjects, test_fraction=args.test_fraction,
                        strict=args.strict, overrides=overrides, keep=getattr(args, "keep", "best"),
                        token_cache=getattr(args, "token_cache", 0))


def _parse_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def run_train(args: argparse.Namespace) -> int:
    trainer = _train_extra("microgesture.training.trainer")
    TrainOptions, train = trainer.TrainOptions, trainer.train

    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in ("model", "data", "out", "epochs", "batch_size",
                                                      "lr", "optimizer", "clip_weights", "set", "text_from")
                 if getattr(args, k)]
        if given:
            raise MicrogestureError(f"--resume continues a run with its own options; drop "
                                    f"{', '.join(given)} (or start a new run with --out)")
        summary = train(TrainOptions(model="", data="", out=args.resume), resume=True,
                        progress=not args.quiet, stop_after=args.stop_after)
    else:
        summary = train(_train_options_from(args), progress=not args.quiet,
                        stop_after=args.stop_after)
    print(json.dumps(summary))
    return 0


def _common_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name (microgesture models)")
    p.add_argument("--data", help="dataset folder: own clips, synthetic, iMiGUE raw or challenge")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--epochs", type=int, help="default: the model's recipe")
    p.add_argument("--batch-size", type=int, help="per process; default: the model's recipe")
    p.add_argument("--lr", type=float, help="peak learning rate; default: the model's recipe")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), help="default: the model's recipe")
    p.add_argument("--accumulate", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--workers", type=int, default=2, help="DataLoader decoding workers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip-weights", default=None,
                   help="random, pretrained (the config's open_clip tag, downloads), another open_clip "
                        "tag, or a local file (an open_clip checkpoint, or OpenAI's ViT-B-16.pt); "
                        "default: pretrained for the paper-sized models, random for clip-mg-tiny")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--test-subjects", help="comma-separated held-out subjects "
                                           "(default: the dataset's split, else --test-fraction)")
    p.add_argument("--test-fraction", type=float, default=0.3,
                   help="fraction of subjects held out when the data has no split")
    p.add_argument("--strict", action="store_true", help="fail on a corrupt or missing clip "
                                                         "instead of skipping it")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, e.g. --set gate=false --set pose.sigma=2")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run exactly")
    p.add_argument("--stop-after", type=int, metavar="EPOCH",
                   help="stop once this many epochs are done (continue later with --resume)")
    p.add_argument("--token-cache", type=int, default=0, metavar="VIEWS",
                   help="cache the frozen CLIP blocks' tokens of VIEWS augmented views per clip, "
                        "so each step runs only the trainable part (0: no cache; e.g. 4)")
    p.add_argument("--keep", choices=("best", "last"), default="best",
                   help="the epoch eval and export use: best (highest validation top-1, then "
                        "lowest validation loss; best.safetensors) or last (last.safetensors)")
    p.add_argument("--text-from", metavar="RUN",
                   help="miga24-posec3d models: a trained miga24-vclip run whose class text embeddings "
                        "the skeleton features are aligned to (without it, text alignment is off)")
    _common_train_options(p)


def run_eval(args: argparse.Namespace) -> int:
    if args.zero_shot or args.classes:
        return run_eval_zero_shot(args)
    from microgesture.core.ensemble import is_ensemble_run

    if is_ensemble_run(args.run):
        return run_eval_ensemble(args)
    evaluate = _train_extra("microgesture.training.evaluate").evaluate

    report = evaluate(args.run, data=args.data, clips=args.clips, flip=args.flip,
                      all_subjects=args.all_subjects, batch_size=args.batch_size,
                      workers=args.workers, out=args.out, progress=not args.quiet)
    keys = ("top1", "top5", "macro_f1", "mean_class_accuracy", "clips", "views", "checkpoint",
            "trained_epoch")
    print(json.dumps({k: report[k] for k in keys} | {"plots": report["plots"]}))
    return 0


def _eval_variant(args: argparse.Namespace, module: str, what: str, keys: tuple[str, ...], *lead) -> int:
    """``eval`` of a zero-shot class list or of an ensemble run: ``module.<evaluate>(RUN, *lead, ...)``."""
    if args.clips != 1 or args.flip:
        raise MicrogestureError(f"--clips and --flip are not supported {what}")
    module, _, function = module.rpartition(".")
    evaluate = getattr(_train_extra(module), function)
    report = evaluate(args.run, *lead, data=args.data, all_subjects=args.all_subjects,
                      batch_size=args.batch_size, workers=args.workers, out=args.out, progress=not args.quiet)
    print(json.dumps({k: report[k] for k in keys}))
    return 0


def run_eval_zero_shot(args: argparse.Namespace) -> int:
    if not (args.zero_shot and args.classes):
        raise MicrogestureError("zero-shot evaluation needs both --zero-shot and --classes FILE (one class "
                                "name per line)")
    return _eval_variant(args, "microgesture.training.zero_shot.evaluate_zero_shot", "with --zero-shot",
                         ("top1", "top5", "macro_f1", "mean_class_accuracy", "clips", "unseen_classes",
                          "checkpoint"), args.classes)


def run_eval_ensemble(args: argparse.Namespace) -> int:
    return _eval_variant(args, "microgesture.training.ensemble_run.evaluate_ensemble", "for an ensemble run",
                         ("top1", "top5", "macro_f1", "mean_class_accuracy", "clips", "members", "weights"))


def run_ensemble(args: argparse.Namespace) -> int:
    make_ensemble = _train_extra("microgesture.training.ensemble_run").make_ensemble

    info = make_ensemble(args.runs, args.out, data=args.data, step=args.step, batch_size=args.batch_size,
                         workers=args.workers, progress=not args.quiet)
    print(json.dumps({"out": args.out, "val_top1": info["val_top1"],
                      "weights": {m["name"]: m["weight"] for m in info["members"]},
                      "members_val_top1": {m["name"]: m["val_top1"] for m in info["members"]}}))
    return 0


def _ensemble_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="trained run folders (same classes, data and held-out subjects)")
    p.add_argument("--data", help="dataset folder (default: each run's)")
    p.add_argument("--out", required=True, help="ensemble run folder to create (eval and export take it)")
    p.add_argument("--step", type=float, default=0.05, help="weight grid step (weights sum to 1)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quiet", action="store_true")


def run_eval_online(args: argparse.Namespace) -> int:
    from microgesture.stream.online_eval import evaluate_online, format_report

    report = evaluate_online(args.bundle, args.data, args.out, split=args.split, tune=args.tune,
                             tune_split=args.tune_split, pose=args.pose, precision=args.precision,
                             plots=not args.no_plots, progress=not args.quiet)
    print(format_report(report))
    print(f"wrote {Path(args.out) / 'metrics_online.json'}")
    return 0


def _eval_online_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="exported bundle folder (microgesture export)")
    p.add_argument("--data", required=True,
                   help="folder of long videos: intervals.csv (own or data synth --long-videos) or "
                        "iMiGUE raw (<video>_label.csv)")
    p.add_argument("--out", default="online-eval",
                   help="folder for metrics_online.json, timelines/ and events/ (default: online-eval)")
    p.add_argument("--split", default="auto",
                   help="videos to score: auto (test if any, else val, else all), train, val, test or "
                        "all (default: auto)")
    p.add_argument("--tune", action="store_true",
                   help="first search the smoothing (thresholds, minimum duration, windows, hop) on the "
                        "validation videos for the best F1 and store it in the bundle (smoothing.json), "
                        "where stream uses it as its defaults")
    p.add_argument("--tune-split", default="val", help="videos to tune on (default: val)")
    p.add_argument("--pose", default="auto",
                   help="auto (replay the dataset's skeletons, else mediapipe), or as for stream "
                        "(default: auto)")
    p.add_argument("--precision", default="auto", help="as for stream (default: auto)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG timelines")
    p.add_argument("--quiet", action="store_true")


def _eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder (uses the checkpoint it kept, best.safetensors unless "
                               "trained with --keep last, and its split) or a checkpoint file")
    p.add_argument("--data", help="dataset folder (default: the run's)")
    p.add_argument("--clips", type=int, default=1, help="temporal samplings per clip (TTA)")
    p.add_argument("--flip", action="store_true", help="also average horizontally flipped views")
    p.add_argument("--all-subjects", action="store_true",
                   help="evaluate every clip, not only the run's held-out subjects")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", help="folder for metrics.json and plots (default: the run)")
    p.add_argument("--zero-shot", action="store_true",
                   help="score a text-prompted run (miga24-vclip) on the classes of --classes FILE, "
                        "which it need not have been trained on (writes metrics_zero_shot.json)")
    p.add_argument("--classes", metavar="FILE",
                   help="with --zero-shot: one class name per line; optional 'template: ... {} ...' lines")
    p.add_argument("--quiet", action="store_true")


def run_ablate(args: argparse.Namespace) -> int:
    run_ablations = _train_extra("microgesture.training.ablate").run_ablations

    names = [n for n in (args.only or "").split(",") if n] or None
    rows = run_ablations(_train_options_from(args), names, clips=args.clips,
                         progress=not args.quiet)
    print((Path(args.out) / "ablations.md").read_text())
    return 0 if rows else 1


def _ablate_options(p: argparse.ArgumentParser) -> None:
    _common_train_options(p)
    p.add_argument("--only", help="comma-separated subset of: full, no-pose-guidance, "
                                  "no-cross-attention, no-gate, visual-only, pose-only")
    p.add_argument("--clips", type=int, default=1, help="temporal samplings per test clip")


# ---------------------------------------------------------------- export
def run_export(args: argparse.Namespace) -> int:
    from microgesture.core.ensemble import is_ensemble_run
    from microgesture.export.exporter import export_bundle

    formats = tuple(f for f in args.formats.split(",") if f)
    if is_ensemble_run(args.run):
        from microgesture.export.ensemble_bundle import export_ensemble

        summary = export_ensemble(args.run, args.out, formats, verify=not args.no_verify, data=args.data,
                                  progress=not args.quiet, span_s=args.span,
                                  calibration_clips=args.calibration_clips, opset=args.opset)
        print(json.dumps(summary, default=str))
        return 0
    if getattr(args, "classes", None):  # a text-prompted model exported with another class list
        import tempfile

        from microgesture.core.open_vocab import checkpoint_with_classes

        with tempfile.TemporaryDirectory(prefix="microgesture-classes-") as tmp:
            source = checkpoint_with_classes(args.run, args.classes, tmp)
            summary = export_bundle(source, args.out, formats=formats, verify=not args.no_verify,
                                    data=args.data, calibration_clips=args.calibration_clips,
                                    opset=args.opset, progress=not args.quiet, span_s=args.span)
        print(json.dumps(summary, default=str))
        return 0
    summary = export_bundle(args.run, args.out, formats=formats, verify=not args.no_verify,
                            data=args.data, calibration_clips=args.calibration_clips,
                            opset=args.opset, progress=not args.quiet, span_s=args.span)
    print(json.dumps(summary, default=str))
    return 0


def _export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder (the checkpoint it kept: best.safetensors unless trained "
                               "with --keep last) or a checkpoint file (.safetensors or last.pt)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--formats", default="onnx",
                   help="comma-separated: onnx (always), int8 (CPU), fp16, engine (TensorRT, on "
                        "an NVIDIA GPU), triton (a Triton model repository)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip checking ONNX Runtime against PyTorch (not recommended)")
    p.add_argument("--data", help="dataset folder for real verification and calibration clips "
                                  "(default: the run's)")
    p.add_argument("--classes", metavar="FILE",
                   help="text-prompted models (miga24-vclip): recognise the classes of FILE instead of the "
                        "trained ones, without retraining (one name per line; optional 'template:' lines)")
    p.add_argument("--calibration-clips", type=int, default=16,
                   help="clips used to calibrate static int8")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--span", type=float,
                   help="seconds a streamed window covers (default: the training clips' median, "
                        "else 2.67, the synthetic set's median clip)")
    p.add_argument("--quiet", action="store_true")
