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
        (["adder", "verify", "--set", "Q[0,0]=1"], "no weight 'Q'"),
        (["adder", "verify", "--set", "W[5,0]=1"], r"W has shape \(3, 3\), got index \[5, 0\]"),
        (["adder", "verify", "--set", "W=1"], "expected NAME"),
        (["adder", "verify", "--bits", "13"], "n_bits: expected at most 12"),
        (["adder", "add", "16", "1", "--bits", "4"], r"a: expected values in \[0, 2\^4\)"),
    ],
)
def test_adder_verify_errors(argv, message):
    with pytest.raises(SystemExit, match=r"^adder (verify|add): .*" + message):
        main(argv)


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


def test_step_rnn_bad_input_exits_with_the_reason():
    with pytest.raises(SystemExit, match="ys: expected binary values 0/1, got 2"):
        main(["step-rnn", "solve", "--x", "0,0,1", "--y", "0,2,1"])
    with pytest.raises(SystemExit, match="step-rnn run: s0: expected 0 or 1"):
        main(["step-rnn", "run", "--params", "1,1,1", "--x", "01", "--s0", "3"])
    with pytest.raises(SystemExit, match="step-rnn solve: give as many --y as --x"):
        main(["step-rnn", "solve", "--x", "0,0,1", "--x", "1", "--y", "0,0,1"])


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
