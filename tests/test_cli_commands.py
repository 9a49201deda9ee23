"""What the subcommands say: the planted mistake of `bptt check` and its table, a resumed
`train`, `--all-devices` on one device, and the tour's Jordan block line."""

import re

import jax
import pytest

from jaxrnn import checkpoint
from jaxrnn.cli import bptt as bptt_section
from jaxrnn.cli import main


def test_bptt_check_says_which_mistake_it_plants_by_default(capsys):
    assert main(["bptt", "check", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: wrong-gate)" in text
    assert "wrong-gate (c̄(t) carries c̄(t+1) i(t+1) where f(t+1) belongs)" in text
    assert main(["bptt", "check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "A hand BPTT of the univariate LSTM (SPEC §3) with the planted mistake wrong-gate "
        "(the default; choose another with --mistake):\n"
        "  c̄(t) carries c̄(t+1) i(t+1) where f(t+1) belongs.\n"
    )
    assert main(["bptt", "check", "--mistake", "index-shift"]) == 0
    out = capsys.readouterr().out
    assert "planted mistake index-shift:\n  f̄(t) = c̄(t) c(t+1), a t+1 written for t-1." in out
    assert "the default" not in out


def test_bptt_check_table_counts_wrong_steps_and_names_the_first_one_reached(capsys):
    # wrong-gate, loss at steps 1..5 of 8: c̄(4) is the first value computed wrong (the
    # tour's blame ('c', 4)); c̄ then stays wrong down to step 1, so 4 of 8 steps differ,
    # and h̄(3) is the first h̄ to pick the error up (3 wrong steps, 3..1).
    assert main(["bptt", "check"]) == 0
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^  ([hocfig]) +\S+ +\S+  (.+)$", out, re.M))
    assert rows["c"] == "differs at 4 of 8 steps (first: step 4)"
    assert rows["h"] == "differs at 3 of 8 steps (first: step 3)"
    assert rows["f"] == "differs at 3 of 8 steps (first: step 4)"  # f̄(4) = c̄(4) c(3): 4..2
    assert (
        "  (first: the first wrong step the backward pass reaches; it runs from t = 8 down to "
        "t = 1)\nblame: 'c' at step 4"
    ) in out
    assert "DIFFERS" not in out


def test_bptt_check_table_of_three_steps(capsys):
    assert (
        main(["bptt", "check", "--steps", "3", "--loss-until", "3", "--mistake", "index-shift"])
        == 0
    )
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^  ([hocfig]) +\S+ +\S+  (.+)$", out, re.M))
    assert set(rows) == set("hocfig")
    assert rows["f"].startswith("differs at 3 of 3 steps (first: step 3)")
    assert "it runs from t = 3 down to t = 1" in out


def test_tour_prints_the_jordan_block_refusal_whole():
    lines = list(bptt_section.tour())
    jordan = [line for line in lines if "Jordan block" in line]
    assert len(jordan) == 1
    assert jordan[0].startswith(
        "Jordan block M = [[0.9, 1], [0, 0.9]] refused, not powered wrongly: M: Q Λ Q^-1 does "
        "not reproduce M"
    )
    assert "M is defective (not diagonalisable)" in jordan[0]
    assert jordan[0].endswith("M^n by eigendecomposition would be wrong")


def test_parallel_depth_refuses_min_above_max_before_printing(capsys):
    argv = ["parallel", "depth", "--min-exp", "10", "--max-exp", "6"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == (
        "jaxrnn parallel depth: error: argument --max-exp: expected an integer >= --min-exp "
        "(10), got 6"
    )


TRAIN = ["train", "addition", "--n-bits", "2", "--hidden", "2", "--batch", "4", "--no-progress"]


def test_train_says_when_it_resumes_and_when_nothing_is_left(tmp_path, capsys):
    path = str(tmp_path / "run.npz")
    assert main([*TRAIN, "--checkpoint", path, "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "resumed" not in out
    assert re.search(r"^addition: 2 steps, trained in [\d.]+ s on 1 device\(s\);", out, re.M)

    assert main([*TRAIN, "--checkpoint", path, "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"addition: resumed from step 2 of {path}; training steps 3 to 3\n")
    assert re.search(r"^addition: 3 steps, the last 1 trained in [\d.]+ s on 1 device", out, re.M)
    assert checkpoint.read_manifest(path)["step"] == 3

    assert main([*TRAIN, "--checkpoint", path, "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"addition: resumed from step 3 of {path}: nothing left to train (--steps 3); give a "
        "larger --steps to train on\naddition: 3 steps, all from the checkpoint; guessing"
    )
    assert " trained in " not in out
    assert len(re.findall(r"step \d: [\d.]+", out)) == 3  # the losses of the checkpoint
    assert checkpoint.read_manifest(path)["step"] == 3


def test_train_refuses_fewer_steps_than_its_checkpoint_has(tmp_path, capsys):
    path = str(tmp_path / "run.npz")
    assert main([*TRAIN, "--checkpoint", path, "--steps", "2"]) == 0
    capsys.readouterr()
    assert main([*TRAIN, "--checkpoint", path, "--steps", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == (
        f"jaxrnn train: error: argument --steps: expected at least 2, the step of --checkpoint "
        f"{path!r} (it resumes from it), got 1"
    )


@pytest.mark.skipif(
    len(jax.devices()) > 1 or jax.devices()[0].platform != "cpu",
    reason="the hint is for a single CPU device",
)
def test_all_devices_on_one_cpu_hints_at_xla_flags(capsys):
    assert main([*TRAIN, "--steps", "1", "--all-devices"]) == 0
    first, second = capsys.readouterr().out.splitlines()[:2]
    assert first == (
        "--all-devices: only 1 device is visible (cpu), so training runs on it; to split the "
        "CPU into N devices, set XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX "
        "starts, e.g. XLA_FLAGS=--xla_force_host_platform_device_count=4 jaxrnn train ..."
    )
    assert second.startswith("addition: 1 step, trained in ")


def test_no_device_hint_without_all_devices(capsys):
    assert main([*TRAIN, "--steps", "1"]) == 0
    assert "XLA_FLAGS" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [(["--checkpoint-every", "1"], "argument --checkpoint-every: expected to come with"),
     (["--seed", str(10**20)], "argument --seed: expected an integer from 0 to"),
     (["--checkpoint", "."], "argument --checkpoint: expected a file path (not a directory)")],
)  # fmt: skip
def test_train_options_that_the_library_would_name_otherwise(argv, message, capsys):
    assert main(["train", "adding", "--steps", "2", "--no-progress", *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_a_checkpoint_of_another_model_is_refused_before_anything_is_printed(tmp_path, capsys):
    path = str(tmp_path / "run.npz")
    common = ["train", "adding", "--steps", "2", "--batch", "4", "--length", "4", "--no-progress"]
    assert main([*common, "--hidden", "3", "--checkpoint", path]) == 0
    capsys.readouterr()
    assert main([*common, "--steps", "3", "--hidden", "5", "--checkpoint", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "written for other parameter shapes" in captured.err
