"""The ``microgesture`` command: one entry point, one typed parser per subcommand.

Each subcommand declares its own options (here, in ``cli_train`` for the training side and
in ``cli_stream`` for the streaming side) and imports its implementation
lazily, so ``microgesture --help`` stays fast and the streaming install never
imports torch. User mistakes end in a one-line message and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from microgesture import __version__
from microgesture.cli_stream import (_bench_options, _demo_options, _listen_options, _serve_options,
                                     _stream_options, run_bench_command, run_demo_command,
                                     run_listen, run_serve, run_stream_command)
from microgesture.cli_train import (_ablate_options, _ensemble_options, _eval_online_options,
                                    _eval_options, _export_options, _train_options, run_ablate,
                                    run_ensemble, run_eval, run_eval_online, run_export, run_train)
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


# ---------------------------------------------------------------- keys
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
