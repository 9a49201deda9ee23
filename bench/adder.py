"""Exhaustive adder proof and exact step-RNN solver: how long they take.

    python bench/adder.py [--no-write]

The proof: ``jaxrnn.adder.verify`` (one jit-compiled vectorised call over all 4^n pairs)
against the same check vectorised in NumPy and against a plain Python loop per pair
(timed on a sample of pairs and scaled to all of them, as marked). The solver: the two
textbook questions of SPEC §2. Medians after warm-up; writes the section "adder" of
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from _results import machine_line, markdown_table, median_time, write_section  # noqa: E402

from jaxrnn import adder, step_rnn  # noqa: E402


def numpy_failures(params, n_bits):
    """The network over all pairs, vectorised in NumPy: the number of wrong sums."""
    p = {k: np.asarray(v, np.float32) for k, v in params.items()}
    a, b = np.meshgrid(np.arange(2**n_bits), np.arange(2**n_bits), indexing="ij")
    a, b = a.ravel(), b.ravel()
    h = np.zeros((a.size, p["U"].shape[0]), np.float32)
    total = np.zeros(a.size, np.int64)
    for t in range(n_bits + 1):
        x = np.stack([(a >> t) & 1, (b >> t) & 1], -1).astype(np.float32) * (t < n_bits)
        h = (x @ p["U"].T + h @ p["W"].T + p["b_h"] > 0).astype(np.float32)
        total += ((h @ p["V"].T + p["b_y"])[:, 0] > 0).astype(np.int64) << t
    return int((total != a + b).sum())


def python_pair(p, a, b, n_bits):
    """One pair through the network in plain Python lists."""
    hidden = len(p["b_h"])
    h, total = [0.0] * hidden, 0
    for t in range(n_bits + 1):
        x = [(a >> t) & 1, (b >> t) & 1] if t < n_bits else [0, 0]
        h = [
            float(
                sum(p["U"][k][i] * x[i] for i in range(2))
                + sum(p["W"][k][j] * h[j] for j in range(hidden))
                + p["b_h"][k]
                > 0
            )
            for k in range(hidden)
        ]
        total += int(sum(p["V"][0][j] * h[j] for j in range(hidden)) + p["b_y"][0] > 0) << t
    return total


def python_seconds(params, n_bits, sample=4096):
    """Seconds for all 4^n pairs in a Python loop, scaled from ``sample`` pairs."""
    p = {k: np.asarray(v, np.float64).tolist() for k, v in params.items()}
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 2**n_bits, size=(sample, 2)).tolist()
    start = time.perf_counter()
    for a, b in pairs:
        assert python_pair(p, a, b, n_bits) == a + b
    return (time.perf_counter() - start) * 4**n_bits / sample


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    params = adder.hand_params()
    rows = []
    for n_bits in (8, 10):
        start = time.perf_counter()
        assert adder.verify(params, n_bits).ok
        first = time.perf_counter() - start
        jax_time = median_time(lambda n=n_bits: adder.verify(params, n), repeats=5)
        numpy_time = median_time(lambda n=n_bits: numpy_failures(params, n), repeats=3, warmup=1)
        assert numpy_failures(params, n_bits) == 0
        python_time = python_seconds(params, n_bits)
        rows.append(
            [
                f"{n_bits} bits, {4**n_bits:,} pairs",
                f"{jax_time * 1e3:.1f} ms (first call {first:.2f} s)",
                f"{numpy_time * 1e3:.0f} ms ({numpy_time / jax_time:.0f}x)",
                f"{python_time:.1f} s, scaled from 4,096 pairs ({python_time / jax_time:.0f}x)",
            ]
        )
    proof = markdown_table(
        [
            "exhaustive check",
            "jaxrnn.adder.verify (jit, vectorised)",
            "NumPy, vectorised",
            "Python loop",
        ],
        rows,
    )
    questions = {
        "(a) 0001010 -> 0001111": ([0, 0, 0, 1, 0, 1, 0], [0, 0, 0, 1, 1, 1, 1]),
        "(b) 00010010 -> 11100011": ([0, 0, 0, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0, 1, 1]),
    }
    solver_rows = []
    for name, (xs, ys) in questions.items():
        answer = step_rnn.solve(xs, ys)
        seconds = median_time(lambda xs=xs, ys=ys: step_rnn.solve(xs, ys), repeats=7)
        if answer.feasible:
            found = "w1, w2, b = " + ", ".join(str(v) for v in answer.exact_params)
        else:
            found = f"impossible: steps {answer.certificate}"
        solver_rows.append([name, str(found), f"{seconds * 1e3:.1f} ms"])
    solver = markdown_table(
        ["SPEC §2 question", "answer", "solve (exact, incl. run check)"], solver_rows
    )
    body = (
        "### Threshold adder proof and step-RNN solver (`python bench/adder.py`)\n\n"
        f"{machine_line()} · load average {os.getloadavg()[0]:.1f} at the end of the run\n\n"
        f"{proof}\n\n{solver}\n"
    )
    print(body)
    if not args.no_write:
        write_section("adder", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
