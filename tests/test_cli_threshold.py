"""The `jaxrnn adder` and `jaxrnn step-rnn` subcommands, run in-process; numbers re-checked."""

import re

import pytest
from test_step_rnn import numpy_run

from jaxrnn.cli import main


def test_adder_verify_hand_weights(capsys):
    assert main(["adder", "verify", "--bits", "4"]) == 0
    out = capsys.readouterr().out
    assert "4-bit adder: 256 pairs checked, 0 wrong" in out
    assert re.search(r"time: [\d.]+ s with compilation, [\d.]+ ms compiled", out)


def test_adder_verify_with_a_wrong_weight_prints_a_true_counterexample(capsys):
    assert main(["adder", "verify", "--bits", "4", "--set", "W[1,1]=0"]) == 1
    out = capsys.readouterr().out
    assert "W   = [0 1 0; 0 0 0; 0 1 0]" in out
    a, b, want, got = map(
        int, re.search(r"e\.g\. (\d+) \+ (\d+) = (\d+), the network says (\d+)", out).groups()
    )
    assert want == a + b != got
    # The printed step table must add up to the printed (wrong) sum.
    bits = [int(m) for m in re.findall(r"^\s+\d+\s+[01] [01] \| [01 ]+\| ([01])$", out, re.M)]
    assert len(bits) == 5 and sum(bit << t for t, bit in enumerate(bits)) == got
    assert f"sum = {got}" in out


def test_adder_add_shows_steps(capsys):
    assert main(["adder", "add", "5", "7", "--bits", "4"]) == 0
    out = capsys.readouterr().out
    assert "sum = 12" in out  # 5 + 7


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["verify", "--set", "Q[0,0]=1"],
            "argument --set: expected one of the weights U, W, b_h, V, b_y, got 'Q'",
        ),
        (
            ["verify", "--set", "W[5,0]=1"],
            "argument --set: expected an index into W of shape (3, 3), got index [5, 0]",
        ),
        (
            ["verify", "--set", "W=1"],
            "argument --set: expected NAME[i,j]=VALUE such as W[1,1]=0, got 'W=1'",
        ),
        (["verify", "--set", "W[1,1]=x"], "argument --set: expected a number after '=', got 'x'"),
        (["verify", "--bits", "13"], "argument --bits: expected an integer from 1 to 12, got 13"),
        (
            ["add", "16", "1", "--bits", "4"],
            "argument a: expected an integer from 0 to 2^4 - 1 = 15 (--bits 4), got 16",
        ),
        (
            ["add", "40", "11", "--bits", "5"],
            "argument a: expected an integer from 0 to 2^5 - 1 = 31 (--bits 5), got 40",
        ),
        (
            ["add", "3", "-1", "--bits", "5"],
            "argument b: expected an integer from 0 to 2^5 - 1 = 31 (--bits 5), got -1",
        ),
        (
            ["add", "40", "50", "--bits", "5"],
            "arguments a and b: expected integers from 0 to 2^5 - 1 = 31 (--bits 5), got 40 and 50",
        ),
        (
            ["add", "1", "1", "--bits", "31"],
            "argument --bits: expected an integer from 1 to 30, got 31",
        ),
        (
            ["train", "--learning-rate", "0"],
            "argument --learning-rate: expected a positive number, got 0",
        ),
        (
            ["train", "--verify-bits", "0"],
            "argument --verify-bits: expected an integer from 1 to 12, got 0",
        ),
    ],
)
def test_adder_errors_name_the_option_and_what_it_accepts(argv, message, capsys):
    assert main(["adder", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == f"jaxrnn adder {argv[0]}: error: {message}"


def test_step_rnn_solve_feasible_prints_weights_that_work(capsys):
    xs, ys = [0, 0, 0, 1, 0, 1, 0], [0, 0, 0, 1, 1, 1, 1]
    assert main(["step-rnn", "solve", "--x", "0001010", "--y", "0,0,0,1,1,1,1"]) == 0
    out = capsys.readouterr().out
    w1, w2, b = map(int, re.search(r"w1 = (-?\d+), w2 = (-?\d+), b = (-?\d+)", out).groups())
    assert numpy_run((w1, w2, b), xs) == ys


def test_step_rnn_solve_impossible_names_the_steps(capsys):
    assert main(["step-rnn", "solve", "--x", "00010010", "--y", "11100011"]) == 0
    out = capsys.readouterr().out
    assert "No (w1, w2, b) exists: steps 1 and 5 cannot hold together." in out


def test_step_rnn_solve_several_sequences(capsys):
    argv = ["step-rnn", "solve", "--x", "1", "--y", "1", "--x", "0", "--y", "0"]
    argv += ["--x", "11", "--y", "10", "--x", "10", "--y", "11"]
    assert main(argv) == 0
    assert "step 2 of sequence 3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["solve", "--x", "0,0,1", "--y", "0,2,1"],
            "argument --y: expected bits such as 0,0,1 or 001, got '0,2,1'",
        ),
        (
            ["solve", "--x", "0,0,1", "--x", "1", "--y", "0,0,1"],
            "argument --y: expected as many --y as --x (2), got 1",
        ),
        (
            ["solve", "--x", "001", "--y", "01"],
            "argument --y: expected 3 bits, as many as --x, got 2",
        ),
        (
            ["solve", "--x", "1", "--y", "1", "--x", "01", "--y", "1"],
            "argument --y: expected 2 bits, as many as --x (sequence 2), got 1",
        ),
        (
            ["run", "--params", "1,1,1", "--x", "01", "--s0", "3"],
            "argument --s0: expected 0 or 1, got 3",
        ),
        (
            ["run", "--params", "1,1", "--x", "01"],
            "argument --params: expected three numbers w1,w2,b such as 2,2,-1, got '1,1'",
        ),
        (
            ["run", "--params", "1,inf,1", "--x", "01"],
            "argument --params: expected three numbers w1,w2,b such as 2,2,-1, got '1,inf,1'",
        ),
        (
            ["run", "--params", "1,1,1", "--x", ""],
            "argument --x: expected bits such as 0,0,1 or 001, got ''",
        ),
    ],
)
def test_step_rnn_bad_input_names_the_option(argv, message, capsys):
    assert main(["step-rnn", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == f"jaxrnn step-rnn {argv[0]}: error: {message}"


def test_step_rnn_run(capsys):
    assert main(["step-rnn", "run", "--params", "2,2,-1", "--x", "0001010"]) == 0
    assert capsys.readouterr().out.strip() == "y = 0,0,0,1,1,1,1"  # (a)'s target


def test_tour_section(capsys):
    from jaxrnn.cli import threshold

    lines = list(threshold.tour())
    assert "200 + 100 = 300, 255 + 255 = 510" in lines[0]
    assert "65536 pairs of 8-bit numbers, 0 wrong" in lines[1]
    a, b, want, got = map(
        int, re.search(r"(\d+) \+ (\d+) = (\d+), the network says (\d+)", lines[2]).groups()
    )
    assert want == a + b != got


def test_adder_train_reports_the_exhaustive_check(capsys):
    argv = ["adder", "train", "--key", "0", "--bits", "2", "--hidden", "2", "--steps", "20"]
    code = main(argv + ["--verify-bits", "2"])
    out = capsys.readouterr().out
    failures = int(re.search(r"2-bit adder: 16 pairs checked, (\d+) wrong", out).group(1))
    assert code == (0 if failures == 0 else 1)
    assert "trained key 0, H = 2, 20 steps on 2-bit pairs" in out
    assert re.search(r"^  U   = \[\S+ \S+; \S+ \S+\]$", out, re.M)  # H = 2 rows of 2 inputs
