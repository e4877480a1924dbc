"""--help states every default; errors name CLI options, not Python arguments."""

import argparse

import pytest

from microgesture.cli import SUBPARSERS, _actions, build_parser, cli_words, main


def _parsers():
    build_parser()
    for name, parser in SUBPARSERS.items():
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs:
            for child_name, child in subs[0].choices.items():
                yield f"{name} {child_name}", child
        else:
            yield name, parser


@pytest.mark.parametrize("name,parser", list(_parsers()), ids=lambda x: x if isinstance(x, str) else "")
def test_help_shows_every_default(name, parser):
    for action in parser._actions:
        default = action.default
        if (not action.option_strings or default is None or default is False
                or default is argparse.SUPPRESS):
            continue
        formatter = parser._get_formatter()
        formatter.add_argument(action)      # this option's own lines of --help
        text = " ".join(formatter.format_help().split())
        shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
        assert "default" in text, f"{name} {action.option_strings[-1]}: no default in {text!r}"
        assert shown in text, f"{name}: {shown} not in {text!r}"


def test_help_states_a_default_value_exactly(capsys):
    with pytest.raises(SystemExit):
        main(["stream", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--heartbeat HEARTBEAT seconds between heartbeats (default: 1.0)" in out
    assert "--silence-report SECONDS" in out and "only when the stream ends) (default: 60.0)" in out
    # smoothing defaults come from the bundle when eval-online --tune stored them
    assert ("--start-threshold START_THRESHOLD smoothed score that starts a gesture (default: the "
            "bundle's tuned value from eval-online --tune, else 0.5)") in out
    assert "--smooth-windows SMOOTH_WINDOWS windows averaged (default: the bundle's tuned value" in out


def test_messages_name_cli_options():
    build_parser()
    message = ("pass strict=True to fail instead; max_frames must be at least 1; thresholds must "
               "satisfy 0 <= end_threshold < start_threshold; min_duration_s must be >= 0")
    assert cli_words(message, "data") .startswith("pass --strict to fail instead")
    stream = cli_words(message, "stream")
    assert "--max-frames must" in stream and "--end-threshold < --start-threshold" in stream
    assert "--min-duration must" in stream
    assert "max_frames" not in cli_words("max_frames must be at least 1", "pose")
    assert cli_words("the data_dir is gone", "pose") == "the data_dir is gone"


def test_a_python_argument_in_an_error_reaches_the_user_as_its_option(capsys):
    code = main(["pose", "missing-folder-xyz.mp4", "--out", "x.jsonl", "--max-frames", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--max-frames" in err and "max_frames" not in err


def test_every_option_of_every_command_is_reachable_for_translation():
    build_parser()
    options = {a.option_strings[-1] for a in _actions(SUBPARSERS["data"])}
    assert {"--strict", "--clips-per-class"} <= options


# ---------------------------------------------------------------- options named in messages

import ast  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

import microgesture  # noqa: E402

PACKAGE = Path(microgesture.__file__).resolve().parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# "microgesture export --formats engine": the command, a possible action word, then the rest of
# the phrase (up to a backquote, ";", ",", ")", " or ", the line's end or the next command)
COMMAND_PHRASE = re.compile(r"(?=\bmicrogesture ([a-z][a-z-]*)((?: [a-z][a-z-]*)?)([^`;\n]*))")
PHRASE_END = re.compile(r"\bmicrogesture\b|\bor\b|[),]")


def _package_sources():
    for sub in ("core", "training", "export", "stream"):  # not .venv/ or build/ inside a checkout
        yield from sorted((PACKAGE / sub).rglob("*.py"))
    yield from sorted(PACKAGE.glob("*.py"))


def _texts(node):
    """The literal text of a string expression (f-strings: their literal parts)."""
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _all_options():
    build_parser()
    return {o for parser in SUBPARSERS.values() for a in _actions(parser) for o in a.option_strings}


def _error_flags(source: str, where: str) -> list[tuple[str, str]]:
    """``(place, --flag)`` for every option named in an exception raised by the code."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
                and (getattr(node.func, "id", None) or node.func.attr).endswith("Error")):
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                for text in _texts(arg):
                    found += [(f"{where}:{node.lineno}", f) for f in FLAG.findall(text)]
    return found


def _command_flags(source: str, where: str) -> list[tuple[str, str, str]]:
    """``(place, command, --flag)`` for every ``microgesture COMMAND ... --flag`` in any string
    (messages, help, docstrings): the option must be one of that command's."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for m in COMMAND_PHRASE.finditer(node.value):
                command, rest = m.group(1), m.group(2) + m.group(3)
                if m.group(2) and _command_parser(command + m.group(2)) is not _command_parser(command):
                    command, rest = command + m.group(2), m.group(3)   # "data synth"
                rest = PHRASE_END.split(rest)[0]
                found += [(f"{where}:{node.lineno}", command, f) for f in FLAG.findall(rest)]
    return found


def _command_parser(command: str):
    build_parser()
    top, _, sub = command.partition(" ")
    parser = SUBPARSERS.get(top)
    if parser is not None and sub:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and sub in action.choices:
                return action.choices[sub]
    return parser


def test_every_option_an_error_names_exists():
    options = _all_options()
    named = [f for path in _package_sources()
             for f in _error_flags(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE)))]
    assert len(named) > 20      # the reader sees the messages
    missing = [(place, flag) for place, flag in named if flag not in options]
    assert not missing, f"error messages name options no command has: {missing}"


def test_every_microgesture_command_line_in_the_code_uses_that_commands_options():
    bad = []
    for path in _package_sources():
        for place, command, flag in _command_flags(path.read_text(encoding="utf-8"),
                                                    str(path.relative_to(PACKAGE))):
            parser = _command_parser(command)
            if parser is None:
                bad.append((place, f"microgesture {command}: no such command"))
            elif flag not in {o for a in parser._actions for o in a.option_strings} | {
                    o for a in _actions(parser) for o in a.option_strings}:
                bad.append((place, f"microgesture {command} {flag}"))
    assert not bad, f"command lines in messages and docs with options that do not exist: {bad}"


def test_the_option_checks_catch_a_wrong_option():
    code = ('def f(x):\n    raise MicrogestureError(f"rebuild {x} with microgesture export --tensorrt")\n'
            'HELP = "see `microgesture stream --bundle B --max-batch 4`"\n')
    assert ("--tensorrt" not in _all_options()
            and _error_flags(code, "x.py") == [("x.py:2", "--tensorrt")])
    found = _command_flags(code, "x.py")
    assert ("x.py:2", "export", "--tensorrt") in found and ("x.py:3", "stream", "--max-batch") in found
    assert "--max-batch" not in {o for a in _command_parser("stream")._actions for o in a.option_strings}
