"""The command line: help, option checks and their one error form, the tour section of the
foundation, and `jaxrnn cells`."""

import argparse
import re

import pytest

from jaxrnn.cli import _options, build_parser, capabilities, main


def test_help_lists_tour_and_every_capability_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "tour" in out and "cells" in out
    for module in capabilities():
        assert hasattr(module, "TITLE")


def _commands(parser, path=()):
    """(path, parser) of every command that runs something."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, parser
        return
    for name, sub in groups[0].choices.items():
        yield from _commands(sub, (*path, name))


def test_every_option_has_help_showing_its_default(capsys):
    commands = dict(_commands(build_parser()))
    assert len(commands) == 13
    for path, parser in commands.items():
        assert main([*path, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())  # help wraps lines
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (path, action.dest)
            if action.option_strings and action.default not in (None, False):
                assert f"(default: {action.default})" in text, (path, action.dest)
            elif action.option_strings and action.default is None and not action.required:
                assert "(default: " in action.help, (path, action.dest)  # said in words
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--steps STEPS total training steps, resumed ones included (default: 1000)" in text
    assert (
        "--length LENGTH adding: the sequence length T (at least 2); copy: how many symbols to "
        "copy (30 is hard, try 5); addition: not used (default: 30)"
    ) in text


@pytest.mark.parametrize(
    "command, argv, message",
    [
        ("cells", ["--in-dim", "0"], "argument --in-dim: expected a positive integer, got 0"),
        ("cells", ["--hidden", "2.5"], "argument --hidden: expected a positive integer, got '2.5'"),
        ("lstm", ["--repeats", "0"], "argument --repeats: expected a positive integer, got 0"),
        (
            "reversible demo",
            ["--steps", "0"],
            "argument --steps: expected a positive integer, got 0",
        ),
        (
            "reversible demo",
            ["--beta", "1"],
            "argument --beta: expected a momentum in [2^-8, 1 - 2^-16] = [0.00390625, "
            "0.9999847] (used as n/2^16), got 1",
        ),
        (
            "reversible demo",
            ["--beta", "0.001"],
            "argument --beta: expected a momentum in [2^-8, 1 - 2^-16] = [0.00390625, "
            "0.9999847] (used as n/2^16), got 0.001",
        ),
        (
            "reversible demo",
            ["--alpha", "0"],
            "argument --alpha: expected a positive number, got 0",
        ),
        (
            "reversible demo",
            ["--alpha", "nan"],
            "argument --alpha: expected a positive number, got nan",
        ),
        ("reversible demo", ["--dim", "-3"], "argument --dim: expected a positive integer, got -3"),
        (
            "parallel depth",
            ["--min-exp", "10", "--max-exp", "6"],
            "argument --max-exp: expected an integer >= --min-exp (10), got 6",
        ),
        (
            "parallel depth",
            ["--min-exp", "-1"],
            "argument --min-exp: expected a non-negative integer, got -1",
        ),
        ("mdrnn steps", ["--max-g", "0"], "argument --max-g: expected a positive integer, got 0"),
        ("bptt check", ["--steps", "0"], "argument --steps: expected a positive integer, got 0"),
        (
            "bptt check",
            ["--loss-until", "9"],
            "argument --loss-until: expected an integer from 1 to --steps (8), got 9",
        ),
        (
            "train",
            ["adding", "--length", "1"],
            "argument --length: expected at least 2 for adding (two marked numbers), got 1",
        ),
        ("train", ["copy", "--delay", "0"], "argument --delay: expected a positive integer, got 0"),
        (
            "train",
            ["addition", "--n-bits", "31"],
            "argument --n-bits: expected an integer from 1 to 30, got 31",
        ),
        (
            "train",
            ["adding", "--lr", "-0.001"],
            "argument --lr: expected a positive number, got -0.001",
        ),
        (
            "train",
            ["adding", "--eval-every", "0"],
            "argument --eval-every: expected a positive integer, got 0",
        ),
    ],
)
def test_bad_options_exit_2_with_one_message_naming_the_option(command, argv, message, capsys):
    assert main([*command.split(), *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing run, not even a table's header
    assert err.startswith(f"usage: jaxrnn {command} ")
    assert err.splitlines()[-1] == f"jaxrnn {command}: error: {message}"


def test_a_library_refusal_ends_in_the_same_form(tmp_path, capsys):
    damaged = tmp_path / "run.npz"
    damaged.write_bytes(b"not a checkpoint")
    assert main(["train", "adding", "--checkpoint", str(damaged), "--no-progress"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"jaxrnn train: error: checkpoint {str(damaged)!r}")


def test_option_types_describe_what_they_accept():
    assert _options.integer(1)("3") == 3
    assert _options.number(0, 1)("0.5") == 0.5
    cases = [
        (_options.integer(1), "0", "expected a positive integer, got 0"),
        (_options.integer(0), "x", "expected a non-negative integer, got 'x'"),
        (_options.integer(2), "1", "expected an integer >= 2, got 1"),
        (_options.integer(1, 12), "13", "expected an integer from 1 to 12, got 13"),
        (_options.integer(0, 1), "2", "expected 0 or 1, got 2"),
        (_options.number(0, open_low=True), "0", "expected a positive number, got 0"),
        (_options.number(0, 1, open_high=True), "1", "expected a number in [0, 1), got 1"),
        (_options.number(), "inf", "expected a number, got inf"),
        (_options.number(None, 2), "3", "expected a number <= 2, got 3"),
    ]
    for convert, text, message in cases:
        with pytest.raises(argparse.ArgumentTypeError, match=f"^{re.escape(message)}$"):
            convert(text)
    error = _options.OptionError(("a", "b"), "integers from 0 to 3", "4 and 5")
    assert str(error) == "arguments a and b: expected integers from 0 to 3, got 4 and 5"


def test_tour_of_cells_prints_measured_numbers(capsys):
    assert main(["tour", "--only", "cells"]) == 0
    out = capsys.readouterr().out
    diffs = [float(v) for v in re.findall(r"max \|scan - Python loop\| = ([0-9.e+-]+)", out)]
    assert len(diffs) == 5 and max(diffs) < 1e-5
    assert "sequential steps measured from the traced scan over T = 20: 20" in out
    assert "outputs past its length are 0" in out


def test_cells_command_lists_shapes(capsys):
    assert main(["cells", "--in-dim", "2", "--hidden", "3"]) == 0
    out = capsys.readouterr().out
    assert "W_i (3, 2)" in out and "U_i (3, 3)" in out and "w_gh ()" in out


def test_unknown_section_is_refused(capsys):
    assert main(["tour", "--only", "nonexistent"]) == 2
    assert "jaxrnn tour: error: argument --only: invalid choice: 'nonexistent'" in (
        capsys.readouterr().err
    )
