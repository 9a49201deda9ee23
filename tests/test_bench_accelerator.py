"""bench/accelerator.py: the smoke run prints every table with real numbers; the timing
helpers survive failing, slow and over-budget contenders.

The smoke run is one subprocess (tiny sizes, CPU), in one test (so that parallel test workers
do not each start it). Its tables are read back and checked against what is known
independently: the step counts G² and 2G-1, the ratios against the printed times, the
errors of DEER and of the associative scan against the sequential runs.
"""

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import accelerator  # noqa: E402

FAILURE_WORDS = ("failed", "out of memory", "skipped", "Traceback")


def run_smoke(tmp_path):
    """(stdout, the RESULTS.md it wrote) of ``bench/accelerator.py --smoke``."""
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    env.pop("JAX_ENABLE_X64", None)
    # compilation dominates the smoke run: LLVM's cheapest optimisation makes it ~20% quicker
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    script = ROOT / "bench" / "accelerator.py"
    done = subprocess.run(
        [sys.executable, str(script), "--smoke", "--results", str(results)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, results.read_text()


def tables(text: str) -> dict:
    """``{title: [{column: cell}]}`` of the markdown tables under ``### title`` lines."""
    found, title = {}, None
    for line in text.splitlines():
        if line.startswith("### "):
            title, header = line[4:], None
            found[title] = []
        elif line.startswith("|") and title is not None:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(line) <= set("|-"):
                found[title].append(dict(zip(header, cells, strict=True)))
    return found


def table(text: str, start: str) -> list[dict]:
    (rows,) = [rows for title, rows in tables(text).items() if title.startswith(start)]
    assert rows, f"no rows under {start!r}"
    return rows


def number(cell: str) -> float:
    value = float(cell.strip("*×"))
    assert value > 0, cell
    return value


def assert_ratio(cell: str, numerator: str, denominator: str):
    """A printed ratio equals the ratio of the printed times (3 significant digits each)."""
    assert number(cell) == pytest.approx(number(numerator) / number(denominator), rel=0.02)


def test_smoke_run_prints_every_table_with_real_numbers(tmp_path):
    out, results = run_smoke(tmp_path)
    for word in FAILURE_WORDS:
        assert word not in out
    assert "<!-- other:start -->\nkept\n<!-- other:end -->" in results
    section = results.split("<!-- accelerator:start -->")[1].split("<!-- accelerator:end -->")[0]
    assert "smoke sizes: not a measurement" in section
    assert "jax " in section and "device: cpu" in section
    assert len(tables(section)) == len(accelerator.TABLES)
    check_mdrnn_table_times_every_raster_and_counts_the_steps(out)
    check_deer_table_converges_to_the_scan(out)
    check_linear_table_matches_the_sequential_loop(out)
    check_lstm_table_times_every_available_contender_in_both_dtypes(out)
    check_reversible_and_scan_tables(out)


def check_mdrnn_table_times_every_raster_and_counts_the_steps(out: str):
    rows = table(out, "MDRNN")
    assert {row["pass"] for row in rows} == {"fwd", "fwd+bwd"}
    for row in rows:
        side = int(row["G"])
        assert int(row["raster steps"]) == side * side
        assert int(row["wavefront steps"]) == int(row["MD-LSTM steps"]) == 2 * side - 1
        rasters = [number(cell) for cell in row[next(k for k in row if k.startswith("rasters"))]
                   .split(" / ")]  # fmt: skip
        assert len(rasters) == len(accelerator.RASTERS)
        fastest = list(accelerator.RASTERS)[rasters.index(min(rasters))]
        assert row["fastest raster"] == fastest
        assert_ratio(row["speed-up"], str(min(rasters)), row["wavefront ms"])
        assert_ratio(row["raster / MD-LSTM"], str(min(rasters)), row["MD-LSTM ms"])


def check_deer_table_converges_to_the_scan(out: str):
    rows = table(out, "DEER")
    assert [row["pass"] for row in rows] == ["fwd", "grad"]
    for row in rows:
        for name in ("DEER", "quasi-DEER"):
            assert_ratio(row[f"{name} speed-up"], row["scan ms"], row[f"{name} ms"])
            assert float(row[f"{name} error"]) < 1e-4
            if row["pass"] == "fwd":
                assert int(row[f"{name} iters"]) >= 1  # a '*' (not converged) fails here


def check_linear_table_matches_the_sequential_loop(out: str):
    rows = table(out, "Linear recurrence")
    assert [row["A"] for row in rows] == ["diagonal", "full"]
    for row in rows:
        assert float(row["error"]) < 1e-5
        assert_ratio(row["speed-up"], row["lax.scan ms"], row["associative ms"])
        per_step = number(row["lax.scan ms"]) * 1e3 / int(row["T"])
        assert number(row["lax.scan µs/step"]) == pytest.approx(per_step, rel=0.02)


def check_lstm_table_times_every_available_contender_in_both_dtypes(out: str):
    rows = table(out, "LSTM layer")
    assert {(row["dtype"], row["pass"]) for row in rows} == {
        (dtype, label) for dtype in ("float32", "bfloat16") for label in ("fwd", "fwd+bwd")
    }
    peers = ["PyTorch nn.LSTM"] if importlib.util.find_spec("torch") else []
    peers += ["flax RNN(LSTMCell)"] if importlib.util.find_spec("flax") else []
    for row in rows:
        for name in ["lstm_layer", "scan + autodiff", *peers]:
            number(row[name])
        assert row[accelerator.CUDNN] == "n/a: needs a GPU"  # a CPU run
        fastest = min(number(row[name]) for name in ["scan + autodiff", *peers])
        assert_ratio(row["lstm_layer / fastest other"], row["lstm_layer"], str(fastest))


def check_reversible_and_scan_tables(out: str):
    (row,) = table(out, "Reversible")
    assert_ratio(row["reversible / optax"], row["reversible.forward"], row["optax.sgd(momentum)"])
    (row,) = table(out, "`jaxrnn.scan` per step")
    for name in ("stacked", "final carry"):
        short, long = row[f"{name} µs/step"].split(" → ")
        assert_ratio(row[f"{name} growth"], long, short)
    assert row["verdict"] in ("linear in T", "unclear (noise?)", "grows with T: jax-ml/jax#40101")


# --- the timing helpers, with planted failures ---------------------------------------------


def clock(seconds):
    return accelerator.Clock(seconds, accelerator.SMOKE)


def test_measure_records_out_of_memory_and_errors_and_times_the_rest():
    def out_of_memory():
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 GiB")

    def broken():
        raise ValueError("x: expected shape (3,)\nmore detail")

    outcomes = accelerator.measure(
        {"oom": out_of_memory, "ok": lambda: time.sleep(0.002) or 7, "broken": broken}, clock(60)
    )
    assert outcomes["oom"] == accelerator.Outcome(None, "out of memory")
    assert outcomes["broken"].note == "failed: ValueError: x: expected shape (3,)"
    assert outcomes["ok"].seconds >= 0.002 and outcomes["ok"].value == 7
    assert list(outcomes) == ["oom", "ok", "broken"]


def test_measure_skips_what_does_not_fit_without_calling_it():
    calls = []
    record = {
        "quick": lambda: calls.append("quick") or time.sleep(0.3),
        "slow": lambda: calls.append("slow"),
    }
    slow = {"slow": accelerator.Estimate(call=10.0, compile=5.0)}  # 5 + 3 x 10 = 35 s
    # the row needs 35 s, 30 are left: nothing runs
    outcomes = accelerator.measure(record, clock(30), slow)
    assert {o.note for o in outcomes.values()} == {"skipped: ~35 s needed, 30 s left"}
    assert calls == []
    # 35.5 s are left for the row, but "quick" spends ~0.9 of them before "slow" would start
    outcomes = accelerator.measure(record, clock(35.5), slow)
    assert outcomes["slow"].note == "skipped: ~35 s needed" and "slow" not in calls
    assert outcomes["quick"].seconds >= 0.3 and calls == ["quick"] * 3  # compile, size, round
    outcomes = accelerator.measure(record, clock(-1))
    assert all(o.note == "skipped: table's time spent" for o in outcomes.values())
    assert calls == ["quick"] * 3


def test_rasters_much_slower_than_the_fastest_are_not_timed_again():
    names = list(accelerator.RASTERS)
    estimates = {
        name: accelerator.Estimate(call, 0.0)
        for name, call in zip(names[:3], (2.0, 1.0, 1.4), strict=True)
    }
    skipped = accelerator.slow_rasters(estimates)
    assert list(skipped) == [names[0]]  # 2x the fastest; 1.4x is still timed
    assert skipped[names[0]].note == "skipped: 2.0× the fastest at the last G"
    assert accelerator.slow_rasters({}) == {}


def test_budget_shares_by_weight_and_passes_unused_time_on():
    budget = accelerator.Budget(100.0, {"a": 1, "b": 3})
    first = budget.clock("a", accelerator.SMOKE)
    assert first.left() == pytest.approx(25.0, abs=0.5)
    second = budget.clock("b", accelerator.SMOKE)  # "a" used nothing: all that is left
    assert second.left() == pytest.approx(100.0, abs=0.5)


def test_guesses_scale_with_size_and_the_verdict_flags_a_quadratic_scan():
    guesses = accelerator.Guesses()
    measured = {"a": accelerator.Outcome(0.5, compile_seconds=3.0), "b": accelerator.Outcome(None)}
    guesses.record("k", 100, measured)
    assert guesses.guess("k", 400, ["a", "b"]) == {"a": accelerator.Estimate(2.0, 3.0)}
    step = lambda seconds: accelerator.Outcome(seconds)  # noqa: E731
    assert accelerator.scan_verdict([step(1e-6), step(1.1e-6)]) == "linear in T"
    assert "40101" in accelerator.scan_verdict([step(1e-6), step(9e-6)])  # quadratic: 10x/step
