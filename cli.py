"""The ``microgesture`` command: one entry point, one typed parser per subcommand.

Each subcommand declares its own options here and imports its implementation
lazily, so ``microgesture --help`` stays fast and the streaming install never
imports torch. User mistakes end in a one-line message and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from collections.abc import Callable, Sequence

from microgesture import __version__
from microgesture.core.errors import MicrogestureError, did_you_mean

class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends every option's text with its default, when it has one (not None,
    not an off switch) and the text does not state it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS
                or "default" in text or (not action.option_strings and action.nargs != "?")):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})".lstrip()


class Parser(argparse.ArgumentParser):
    """argparse that names the nearest valid option for an unknown one and shows
    every option's default in ``--help``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        default = kwargs.get("default")
        if not kwargs.get("help") and default is not None and default is not False:
            shown = (" ".join(map(str, default)) if isinstance(default, (list, tuple))
                     else "%(default)s")
            kwargs["help"] = f"default: {shown}"   # argparse skips options without help
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse's hook
        known = {s for a in self._actions for s in a.option_strings}
        unknown = [w.split("=")[0] for w in _ARGV
                   if w.startswith("--") and w.split("=")[0] not in known | {"--help"}]
        if message.startswith("unrecognized arguments:") or unknown:
            for word in unknown:
                message += f"; unknown option {word}.{did_you_mean(word, known)}"
        if "invalid choice:" in message:
            word = message.split("invalid choice:", 1)[1].split("'")[1]
            choices = [c for a in self._actions if a.choices for c in a.choices]
            message += did_you_mean(word, choices)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


_ARGV: list[str] = []
_VERBOSE_HELP = ("show the native libraries' own log lines (OpenCV, FFmpeg, MediaPipe) and "
                 "INFO logging; silenced otherwise")
SUBPARSERS: dict[str, Parser] = {}


def build_parser() -> Parser:
    parser = Parser(prog="microgesture",
                    description="Real-time micro-gesture recognition for live video.",
                    epilog="Run 'microgesture COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"microgesture {__version__}")
    parser.add_argument("--verbose", action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (help_text, build, _run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        build(p)
        if "--verbose" not in p._option_string_actions:  # also after the command
            p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                           help=_VERBOSE_HELP)
        SUBPARSERS[name] = p
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    _ARGV[:] = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(_ARGV)
    if extra:  # report them from the subcommand's parser, which knows its own options
        target = SUBPARSERS.get(args.command, parser)
        target.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.print_help()
        return 2
    from microgesture.core.quiet import quiet_native_logs

    # filtering fd 2 is for the real command line, not for main() called in a test
    quiet_native_logs(verbose=bool(getattr(args, "verbose", False)), filter_stderr=argv is None)
    try:
        return int(COMMANDS[args.command][2](args) or 0)
    except MicrogestureError as exc:
        from microgesture.core.redact import redact_text

        print(f"microgesture {args.command}: error: {redact_text(cli_words(str(exc), args.command))}",
              file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"microgesture {args.command}: interrupted", file=sys.stderr)
        return 130


# The Python names whose CLI option is spelled differently (the rest follow from dest).
_PYTHON_NAMES = {"min_duration_s": "--min-duration", "heartbeat_s": "--heartbeat",
                 "span_s": "--span", "skip_bad=True": "leaving out --strict"}


def _actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _actions(child)
        elif action.option_strings:
            yield action


def cli_words(message: str, command: str | None) -> str:
    """``message`` with the Python names of a command's options replaced by the options
    themselves (``strict=True`` -> ``--strict``, ``max_frames`` -> ``--max-frames``)."""
    import re

    names = dict(_PYTHON_NAMES)
    parser = SUBPARSERS.get(command or "")
    for action in _actions(parser) if parser is not None else ():
        option = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            names[f"{action.dest}=True"] = option
            names[f"{action.dest}=False"] = f"without {option}"
        if "_" in action.dest:
            names.setdefault(action.dest, option)
    if not names:
        return message
    pattern = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.sub(rf"(?<![\w.-])({pattern})(?![\w=])", lambda m: names[m.group(1)], message)


# ---------------------------------------------------------------- models
def run_models(args: argparse.Namespace) -> int:
    from microgesture.core.config import MODELS, get_config

    if args.name:
        print(json.dumps(get_config(args.name).to_dict(), indent=2))
        return 0
    rows = [(n, c.arch, c.description) for n, c in sorted(MODELS.items())]
    if args.json:
        print(json.dumps([{"name": n, "arch": a, "description": d} for n, a, d in rows], indent=2))
        return 0
    width = max(len(n) for n, _, _ in rows)
    for n, a, d in rows:
        print(f"{n:<{width}}  {a:<8}  {d}")
    return 0


def _models_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="print this model's full configuration as JSON")
    p.add_argument("--json", action="store_true", help="machine-readable list")


# ---------------------------------------------------------------- pose
def run_pose(args: argparse.Namespace) -> int:
    from microgesture.core.pose import extract_skeletons
    from microgesture.core.pose_folder import extract_folder, folder_videos

    if folder_videos(args.source):   # a folder of videos: one .jsonl per video in --out
        s = extract_folder(args.source, args.out, layout=args.layout, estimator=args.estimator,
                           max_frames=args.max_frames, progress=not args.quiet)
        failed = "".join(f"\n  skipped {f['video']}: {f['reason']}" for f in s["failed"])
        print(json.dumps(s) if args.json else
              f"wrote {s['written']} of {s['videos']} videos' skeletons to {args.out} "
              f"({s['frames']} frames, {s['frames_with_person']} with a person; "
              f"{len(s['failed'])} videos skipped){failed}")
        return 0
    summary = extract_skeletons(args.source, args.out, layout=args.layout,
                                estimator=args.estimator, max_frames=args.max_frames,
                                progress=not args.quiet)
    print(json.dumps(summary) if args.json else
          f"wrote {summary['frames']} frames to {args.out} "
          f"({summary.get('skipped', 0)} skipped, {summary.get('ms_per_frame', 0):.1f} ms/frame)")
    return 0


def _pose_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="image, video file, folder of images, folder of videos, or "
                                  "camera index (0)")
    p.add_argument("--out", required=True, help="output JSONL file; for a folder of videos, an "
                                                "output folder (one NAME.jsonl per video)")
    p.add_argument("--layout", default="coco18",
                   help="joint layout to write (coco18, coco17, imigue22, imigue35, mediapipe33, ...)")
    p.add_argument("--estimator", default="mediapipe",
                   help="mediapipe (pose+hands), mediapipe-pose, tasks:MODEL.task, recorded:FILE")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


# ---------------------------------------------------------------- data
def run_data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        from microgesture.training.synth import make_long_video, write_synthetic

        if args.long_videos:
            from microgesture.training.long_synth import write_long_videos

            r = write_long_videos(args.out, args.long_videos, args.seconds, seed=args.seed,
                                  size=tuple(args.size), fps=args.fps, workers=args.workers,
                                  progress=not args.quiet)
            print(f"wrote {r['videos']} long videos ({r['gestures']} gestures; splits {r['splits']}) "
                  f"to {r['out_dir']} in {r['seconds']:.1f} s")
        elif args.long:
            r = make_long_video(args.out, args.long, seed=args.seed, size=tuple(args.size),
                                fps=args.fps, progress=not args.quiet)
            print(f"wrote {r['video']}: {r['frames']} frames, {len(r['gestures'])} gestures")
        else:
            r = write_synthetic(args.out, args.subjects, args.clips_per_class, args.classes,
                                args.seed, args.frames, tuple(args.size), args.fps,
                                progress=not args.quiet, workers=args.workers)
            print(f"wrote {r['clips']} clips to {r['out_dir']} in {r['seconds']:.1f} s")
        return 0
    if args.data_command == "check":
        from microgesture.training import data_check

        report = data_check.check_dataset(args.path, args.out)
        print(json.dumps(report, indent=2) if args.json else data_check.format_report(report))
        return 0
    from microgesture.training.datasets import open_dataset

    index = open_dataset(args.path, strict=args.strict)
    counts = index.class_counts()
    info = {"path": str(index.root), "kind": index.kind, "layout": index.layout,
            "clips": len(index.records), "classes": len(index.classes),
            "subjects": len(index.subjects()), "splits": list(index.splits()),
            "clips_per_split": {s: sum(r.split == s for r in index.records) for s in index.splits()},
            "skipped": [{"path": str(p), "reason": r} for p, r in index.skipped],
            "clips_per_class": dict(zip(index.classes, counts))}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key in ("path", "kind", "layout", "clips", "classes", "subjects", "clips_per_split"):
            print(f"{key:>9}: {info[key]}")
        print(f"  skipped: {len(index.skipped)}")
        for p, r in index.skipped[:10]:
            print(f"           {p}: {r}")
        width = max(len(c) for c in index.classes)
        for name, n in info["clips_per_class"].items():
            print(f"  {name:<{width}}  {n}")
    return 0


def _data_options(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True,
                           parser_class=Parser)
    synth = sub.add_parser("synth", help="write the synthetic micro-gesture set (or a long video)")
    synth.add_argument("out", help="output folder (a set, or with --long-videos a long-video set), or an "
                                   ".mp4 path with --long")
    synth.add_argument("--subjects", type=int, default=12)
    synth.add_argument("--clips-per-class", type=int, default=12)
    synth.add_argument("--classes", type=int, default=32, help="the first N iMiGUE classes")
    synth.add_argument("--frames", type=int, default=40, help="frames per clip")
    synth.add_argument("--size", type=int, nargs=2, default=[128, 128], metavar=("W", "H"))
    synth.add_argument("--fps", type=float, default=15.0)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=1,
                       help="processes writing clips (the files do not depend on it)")
    synth.add_argument("--long", type=float, metavar="SECONDS",
                       help="write one long video of one subject performing several gestures, "
                            "with its skeleton JSONL and ground-truth CSV")
    synth.add_argument("--long-videos", type=int, metavar="N",
                       help="write a set of N long videos (one subject each, several gestures with rest "
                            "between them, split into train/val/test subjects) for eval-online")
    synth.add_argument("--seconds", type=float, default=60.0,
                       help="length of each --long-videos video")
    synth.add_argument("--quiet", action="store_true")
    info = sub.add_parser("info", help="check a dataset folder and count its clips")
    info.add_argument("path", help="dataset folder")
    info.add_argument("--strict", action="store_true", help="fail on the first bad clip")
    info.add_argument("--json", action="store_true")
    check = sub.add_parser("check", help="what a dataset holds and what is wrong with it, and a PNG per "
                                         "split of one frame with its joints named and limbs drawn")
    check.add_argument("path", help="dataset folder")
    check.add_argument("--out", default="data-check", help="folder for check.json and <split>.png")
    check.add_argument("--json", action="store_true", help="print the report as JSON")


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


# ---------------------------------------------------------------- stream / listen / demo
def _install_stop_signals():
    import signal
    import threading

    stop = threading.Event()

    def handler(signum, frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop


def run_stream_command(args: argparse.Namespace) -> int:
    from microgesture.stream.pipeline import StreamOptions, run_stream, smoothing_for

    options = StreamOptions(
        bundle=args.bundle, sources=_with_credentials(args, args.source), stream_ids=args.stream_id,
        publish=args.publish, allow_remote=args.allow_remote, pose=args.pose,
        curve_secret_key=args.curve_secret_key, curve_clients=args.curve_clients,
        precision=args.precision, device=args.device, threads=args.threads, hop=args.hop,
        span_s=args.span, realtime=args.realtime, events_log=args.events_log, sampling=args.sampling,
        heartbeat_s=args.heartbeat, publish_windows=args.publish_windows,
        smoothing=smoothing_for(args.bundle, window=args.smooth_windows, start_threshold=args.start_threshold,
                                end_threshold=args.end_threshold, min_duration_s=args.min_duration),
        silence_report_s=args.silence_report,
        max_frames=args.max_frames, save_video=args.save_video, show=args.show,
        triton=args.triton, source_options=_source_options(args))

    def ready(address, workers):
        if not args.quiet:
            print(f"publishing on {address}: microgesture listen --connect {address}",
                  file=sys.stderr, flush=True)

    summary = run_stream(options, stop=_install_stop_signals(), on_ready=ready)
    print(json.dumps(summary, default=str))
    fatal = [s["fatal"] for s in summary["streams"].values() if s.get("fatal")]
    if fatal:
        from microgesture.core.redact import redact_text

        print(f"microgesture stream: error: {redact_text(cli_words(str(fatal[0]), 'stream'))}",
              file=sys.stderr)
        return 2
    return 0


def _source_options(args: argparse.Namespace) -> dict:
    """open_source's stall limit and reconnect backoff from --stall-timeout,
    --reconnect-min and --reconnect-max."""
    from microgesture.stream.sources import Backoff

    return {"stall_s": args.stall_timeout,
            "reconnect": Backoff(base_s=args.reconnect_min, max_s=args.reconnect_max)}


def _with_credentials(args: argparse.Namespace, sources: list[str]) -> list[str]:
    """Network sources with the user:password of --credentials-env / --credentials-file
    put in (in memory only: never on the command line, where ps shows it)."""
    from microgesture.core.redact import load_credentials, with_credentials

    userinfo = load_credentials(args.credentials_env, args.credentials_file)
    return [with_credentials(s, userinfo) for s in sources]


def _credentials_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--credentials-env", metavar="VAR",
                   help="environment variable holding user:password for rtsp:// and http(s):// "
                        "sources without credentials in their URL (keeps them out of ps)")
    p.add_argument("--credentials-file", metavar="FILE",
                   help="file whose first line is user:password, for the same (chmod 600 it)")


def _live_source_options(p: argparse.ArgumentParser) -> None:
    _credentials_options(p)
    p.add_argument("--stall-timeout", type=float, default=5.0, metavar="S",
                   help="a live source that sends nothing for S seconds is reported lost and "
                        "reconnected")
    p.add_argument("--reconnect-min", type=float, default=0.5, metavar="S",
                   help="first reconnect delay; doubles per failed attempt")
    p.add_argument("--reconnect-max", type=float, default=30.0, metavar="S",
                   help="longest reconnect delay")


def _stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="exported bundle folder (microgesture export)")
    p.add_argument("--source", action="append", required=True,
                   help="camera index (0), rtsp:// or http:// URL, video file or image folder; "
                        "repeat for several streams")
    p.add_argument("--stream-id", action="append", help="name of each stream (default: derived)")
    p.add_argument("--publish", default="tcp://127.0.0.1:5555",
                   help="ZeroMQ PUB address (loopback unless --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow binding to a non-loopback address (encrypt with --curve-secret-key)")
    p.add_argument("--curve-secret-key", metavar="FILE",
                   help="encrypt events with CurveZMQ using this server key pair (NAME.key_secret "
                        "from microgesture keys)")
    p.add_argument("--curve-clients", metavar="DIR",
                   help="with --curve-secret-key: folder of the subscribers' public keys "
                        "(NAME.key); only they receive events")
    p.add_argument("--pose", default="mediapipe",
                   help="mediapipe, mediapipe-pose, tasks:MODEL.task or recorded:FILE.jsonl")
    p.add_argument("--precision", default="auto", help="auto (int8 if the bundle has it), int8, "
                                                        "fp32, fp16, engine")
    p.add_argument("--device", default="cpu", help="cpu, cuda or tensorrt")
    p.add_argument("--threads", type=int, default=1, help="threads per inference session")
    p.add_argument("--hop", type=int, help="frames between windows (default: the bundle's tuned hop "
                                           "from eval-online --tune, else span / RGB frames)")
    p.add_argument("--span", type=float, help="seconds a window covers (default: the bundle's)")
    p.add_argument("--sampling", choices=("frames", "grid"), default="frames",
                   help="grid: windows on a sampling grid fixed in stream time, pose estimated only "
                        "on the frames windows sample (default frames: sampled from the frames there)")
    p.add_argument("--realtime", action="store_true", help="pace a file at its frame rate")
    p.add_argument("--events-log", help="also append every event to this JSONL file")
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--publish-windows", action="store_true",
                   help="also publish every window's raw scores")
    tuned = " (default: the bundle's tuned value from eval-online --tune, else %s)"
    p.add_argument("--smooth-windows", type=int, help="windows averaged" + tuned % 4)
    p.add_argument("--start-threshold", type=float, help="smoothed score that starts a gesture" + tuned % 0.5)
    p.add_argument("--end-threshold", type=float, help="smoothed score under which it ends" + tuned % 0.3)
    p.add_argument("--min-duration", type=float, help="seconds a gesture must last" + tuned % 0.3)
    p.add_argument("--silence-report", type=float, default=60.0, metavar="SECONDS",
                   help="live: say why after this many seconds without a gesture event, and again "
                        "every as many (0: only when the stream ends)")
    p.add_argument("--max-frames", type=int, help="stop each stream after this many frames")
    p.add_argument("--save-video", help="write an annotated video browsers play: .webm (VP8) or "
                                        ".mp4 (H.264; VP8 .webm beside it when this OpenCV has "
                                        "no H.264 encoder); skeleton, top class and score")
    p.add_argument("--show", action="store_true", help="show annotated frames (needs a display)")
    p.add_argument("--triton", metavar="URL",
                   help="run the stages on this Triton server (http://HOST:8000 or "
                        "grpc://HOST:8001, see microgesture serve) instead of in process")
    _live_source_options(p)
    p.add_argument("--quiet", action="store_true")


def run_serve(args: argparse.Namespace) -> int:
    from microgesture.export.triton_serve import gpu_instructions, serve_bundle

    stop = _install_stop_signals()
    ports = (args.http_port, args.grpc_port, args.metrics_port)
    server = serve_bundle(args.bundle, repository=args.repository, precision=args.precision,
                          address=args.address, ports=ports, max_batch=args.max_batch,
                          instances=args.instances, onnx_threads=args.threads,
                          max_queue_delay_us=args.max_queue_delay_us,
                          allow_remote=args.allow_remote, log_path=args.log)
    try:
        print(f"Triton serves {args.bundle} ({server.precision}, CPU) on {server.http_url} and "
              f"{server.grpc_url}; metrics on http://{args.address}:{args.metrics_port}/metrics\n"
              f"  stream through it: microgesture stream --bundle {args.bundle} --precision "
              f"{server.precision} --triton {server.http_url} --source 0\n"
              f"{gpu_instructions(args.bundle, ports)}", flush=True)
        while not stop.is_set() and server.process.poll() is None:
            stop.wait(0.5)
    finally:
        code = server.stop()
        server.cleanup()
    if not stop.is_set():
        raise MicrogestureError(f"tritonserver exited with code {code}; its log "
                                f"({server.log_path}) ends:\n{server.log_tail()}")
    return 0


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="exported bundle folder (microgesture export)")
    p.add_argument("--precision", default="auto",
                   help="auto (int8 if the bundle has it), int8 or fp32: the files served")
    p.add_argument("--address", default="127.0.0.1",
                   help="IP address to bind (loopback unless --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow binding to a non-loopback address")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--max-batch", type=int, default=8, help="largest batch Triton forms")
    p.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="how long Triton waits to fill a batch (microseconds)")
    p.add_argument("--instances", type=int, default=1, help="model instances per stage")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per instance")
    p.add_argument("--repository", help="write the CPU model repository here (default: a "
                                        "temporary folder, removed on exit)")
    p.add_argument("--log", help="tritonserver's log file (default: in the temporary folder)")


def run_listen(args: argparse.Namespace) -> int:
    from microgesture.stream.client import listen

    types = tuple(t for t in args.types.split(",") if t)
    try:
        listen(args.connect, args.stream, args.json, types, count=args.count,
               timeout=args.timeout, curve_server_key=args.curve_server_key,
               curve_key=args.curve_key)
    except KeyboardInterrupt:
        pass
    return 0


def _listen_options(p: argparse.ArgumentParser) -> None:
    p.epilog = ("latency = publish time - capture time of the window's last frame. A file streamed "
                "without --realtime runs on the video's own clock (frame / fps from when it was "
                "opened), so its latency says how far ahead (negative) or behind that clock the "
                "pipeline ran, and its lines say 'video clock'; stream with --realtime to measure "
                "what a camera user waits.")
    p.add_argument("--connect", default="tcp://127.0.0.1:5555", help="the stream's PUB address")
    p.add_argument("--stream", action="append", help="only these stream ids (repeatable)")
    p.add_argument("--types", default="gesture,source",
                   help="event types: gesture, source, heartbeat, window")
    p.add_argument("--json", action="store_true", help="raw JSON, one event per line")
    p.add_argument("--count", type=int, help="exit after this many events")
    p.add_argument("--timeout", type=float, help="exit after this many idle seconds")
    p.add_argument("--curve-server-key", metavar="FILE",
                   help="the encrypting publisher's public key (SERVER.key, see microgesture keys)")
    p.add_argument("--curve-key", metavar="FILE",
                   help="your key pair (NAME.key_secret), whose NAME.key the publisher admits")


def run_demo_command(args: argparse.Namespace) -> int:
    from microgesture.demo import format_summary, run_demo, write_summary

    result = run_demo(duration_s=args.duration, seed=args.seed, bundle=args.bundle,
                      rebuild=args.rebuild, realtime=not args.fast, precision=args.precision,
                      progress=not args.quiet)
    print(format_summary(result))
    if args.json:
        write_summary(result, Path(args.json))
    return 0


def _demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=60.0, help="seconds of synthetic video")
    p.add_argument("--seed", type=int, default=0, help="which synthetic video")
    p.add_argument("--bundle", help="use this bundle instead of the shipped demo model")
    p.add_argument("--rebuild", action="store_true",
                   help="train and export the demo model again (needs the train extra)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--fast", action="store_true",
                   help="replay the video as fast as possible instead of at its frame rate")
    p.add_argument("--json", help="also write the summary as JSON to this file")
    p.add_argument("--quiet", action="store_true")


def run_bench_command(args: argparse.Namespace) -> int:
    from microgesture.stream.bench import format_report, run_bench

    precisions = [p for p in (args.precisions or "").split(",") if p] or None
    (source,) = _with_credentials(args, [args.source])
    report = run_bench(bundle=args.bundle, source=source, precisions=precisions, pose=args.pose,
                       duration_s=args.duration, size=args.size, fps=args.fps, hop=args.hop,
                       threads=args.threads, out=args.out, progress=not args.quiet,
                       naive=not args.no_naive)
    print(format_report(report))
    if args.json:
        slim = {**report, "results": [{k: v for k, v in r.items()
                                       if k not in ("samples", "window_latencies_ms")}
                                      for r in report["results"]]}
        print(json.dumps(slim, default=str))
    return 0


def _bench_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="exported bundle (default: the shipped demo model)")
    p.add_argument("--source", required=True,
                   help="video file (rendered to --size/--fps/--duration and paced like a camera), "
                        "camera index or rtsp:// URL")
    p.add_argument("--precisions", help="comma-separated, run one after the other "
                                        "(default: fp32,int8, the baseline first)")
    p.add_argument("--pose", default="mediapipe", help="as for stream")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per configuration")
    p.add_argument("--size", help="render a file source to WIDTHxHEIGHT (e.g. 640x480)")
    p.add_argument("--fps", type=float, help="render a file source at this frame rate")
    p.add_argument("--hop", type=int, help="frames between windows (default: the stream's)")
    p.add_argument("--threads", type=int, default=1, help="threads per inference session")
    p.add_argument("--out", default="bench-results", help="folder for bench.json and bench.png")
    p.add_argument("--json", action="store_true", help="also print the report as one JSON line")
    p.add_argument("--no-naive", action="store_true",
                   help="skip the naive baseline (whole-window forward per window, nothing reused)")
    _credentials_options(p)
    p.add_argument("--quiet", action="store_true")


def run_keys(args: argparse.Namespace) -> int:
    from microgesture.stream.curve import write_keypair

    public, secret = write_keypair(args.folder, args.name)
    print(f"wrote {public} (public: give it to the other side) and {secret} (secret, mode 600: "
          "keep it here)")
    return 0


def _keys_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="folder to write NAME.key and NAME.key_secret into")
    p.add_argument("--name", default="server",
                   help="key name: server for stream, a subscriber's name for listen/clients")


# name -> (help, options builder, runner); the order is the order in --help.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                          Callable[[argparse.Namespace], int]]] = {
    "models": ("List the model architectures and their configurations.",
               _models_options, run_models),
    "pose": ("Extract skeletons (JSONL, one object per frame) from an image, a video, "
             "an image folder or a camera.", _pose_options, run_pose),
    "data": ("Datasets: write the synthetic set (synth), count a dataset's clips (info), check its "
             "files, sides and alignment with pictures (check).",
             _data_options, run_data),
    "train": ("Train a model on a dataset (or --resume a run); torchrun for several GPUs.",
              _train_options, run_train),
    "eval": ("Evaluate a run on held-out subjects: metrics.json and PNG plots.",
             _eval_options, run_eval),
    "ensemble": ("Weight trained runs' softmax scores on their validation split (0.05 grid): an "
                 "ensemble run that eval and export take.", _ensemble_options, run_ensemble),
    "eval-online": ("Stream long videos through a bundle and score its gesture events (MiGA online "
                    "track F1); --tune the smoothing.", _eval_online_options, run_eval_online),
    "ablate": ("Train and evaluate the paper's ablation set; writes a markdown/JSON table.",
               _ablate_options, run_ablate),
    "export": ("Export a run to a bundle: ONNX stages, int8, TensorRT engines, Triton.",
               _export_options, run_export),
    "stream": ("Recognize micro-gestures live (camera, RTSP, file) and publish events over ZeroMQ.",
               _stream_options, run_stream_command),
    "serve": ("Serve a bundle with the pip Triton Inference Server (CPU) for stream --triton.",
              _serve_options, run_serve),
    "listen": ("Print the events a stream publishes.", _listen_options, run_listen),
    "keys": ("Write a CurveZMQ key pair for encrypted publishing (stream) and subscribing "
             "(listen, the Python client).", _keys_options, run_keys),
    "demo": ("The whole product on a synthetic video: stream, subscribe, and score it.",
             _demo_options, run_demo_command),
    "bench": ("Latency, throughput and memory of streaming, precisions side by side (JSON, PNG).",
              _bench_options, run_bench_command),
}
