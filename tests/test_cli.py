"""The command line: help, the tour section of the foundation, and `jaxrnn cells`."""

import re

import pytest

from jaxrnn.cli import build_parser, capabilities, main


def test_help_lists_tour_and_every_capability_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "tour" in out and "cells" in out
    for module in capabilities():
        assert hasattr(module, "TITLE")


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


def test_bad_input_ends_with_the_message_not_a_traceback():
    with pytest.raises(
        SystemExit, match="^jaxrnn cells: in_dim: expected a positive integer, got 0$"
    ):
        main(["cells", "--in-dim", "0"])


def test_unknown_section_is_refused():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tour", "--only", "nonexistent"])
