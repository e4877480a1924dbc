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
