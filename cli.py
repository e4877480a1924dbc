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
from collections.abc import Callable, Sequence

from microgesture import __version__
from microgesture.core.errors import MicrogestureError, did_you_mean

class Parser(argparse.ArgumentParser):
    """argparse that names the nearest valid option for an unknown one."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

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
SUBPARSERS: dict[str, Parser] = {}


def build_parser() -> Parser:
    parser = Parser(prog="microgesture",
                    description="Real-time micro-gesture recognition for live video.",
                    epilog="Run 'microgesture COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"microgesture {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (help_text, build, _run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        build(p)
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
    try:
        return int(COMMANDS[args.command][2](args) or 0)
    except MicrogestureError as exc:
        print(f"microgesture {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"microgesture {args.command}: interrupted", file=sys.stderr)
        return 130


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

    summary = extract_skeletons(args.source, args.out, layout=args.layout,
                                estimator=args.estimator, max_frames=args.max_frames,
                                progress=not args.quiet)
    print(json.dumps(summary) if args.json else
          f"wrote {summary['frames']} frames to {args.out} "
          f"({summary.get('skipped', 0)} skipped, {summary.get('ms_per_frame', 0):.1f} ms/frame)")
    return 0


def _pose_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="image, video file, folder of images, or camera index (0)")
    p.add_argument("--out", required=True, help="output JSONL file")
    p.add_argument("--layout", default="coco18",
                   help="joint layout to write (coco18, coco17, imigue22, imigue35, mediapipe33, ...)")
    p.add_argument("--estimator", default="mediapipe",
                   help="mediapipe (pose+hands), mediapipe-pose, tasks:MODEL.task, recorded:FILE")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


# name -> (help, options builder, runner); the order is the order in --help.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                          Callable[[argparse.Namespace], int]]] = {
    "models": ("List the model architectures and their configurations.",
               _models_options, run_models),
    "pose": ("Extract skeletons (JSONL, one object per frame) from an image, a video, "
             "an image folder or a camera.", _pose_options, run_pose),
}
