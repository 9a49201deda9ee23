"""Sequential scan against parallel-in-time evaluation, on CPU, with a GPU estimate.

    python bench/parallel.py [--no-write] [--quick]

For T in {10^3, 10^4, 10^5} and H in {1, 4, 16} (float32, jit-compiled, medians after
warm-up):

- a linear recurrence h_t = A_t h_{t-1} + b_t with full (T, H, H) transitions: a
  ``lax.scan`` loop against ``jaxrnn.parallel.linear_recurrence`` (associative scan);
- an Elman RNN: ``jaxrnn.scan`` against ``jaxrnn.parallel.deer`` with full Jacobians and
  with diagonal ones (quasi-DEER), with the Newton iterations each ran.

The depths are measured from the traced programs (``jaxrnn.steps.parallel_depth``). The
GPU estimate is a model, not a measurement; its assumptions are printed with it. Writes
the section "parallel" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _results import machine_line, markdown_table, median_time, write_section  # noqa: E402

import jaxrnn  # noqa: E402
from jaxrnn.cells import elman  # noqa: E402
from jaxrnn.parallel import deer, linear_recurrence  # noqa: E402
from jaxrnn.steps import parallel_depth  # noqa: E402

IN_DIM = 4
# GPU model (assumptions, stated in the output): every stage of the critical path costs at
# least one kernel launch; wide work runs SPEEDUP times faster than on this CPU.
LAUNCH_SECONDS = 5e-6
SPEEDUP = 50.0


def timed(fn, *args, big: bool):
    """Median seconds of the compiled ``fn(*args)``."""
    compiled = jax.jit(fn)
    run = lambda: jax.block_until_ready(compiled(*args))
    return median_time(run, repeats=3 if big else 7, warmup=1 if big else 2)


def sequential_linear(A, b, h0):
    step = lambda h, ab: (jnp.einsum("...ij,...j->...i", ab[0], h) + ab[1],) * 2
    return jax.lax.scan(step, h0, (A, b))[1]


def gpu_estimate(cpu_seconds: float, stages: int) -> float:
    """depth x max(launch latency, CPU cost per stage / SPEEDUP)."""
    return stages * max(LAUNCH_SECONDS, cpu_seconds / stages / SPEEDUP)


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def measure(n_steps: int, hidden: int):
    big = n_steps * hidden * hidden >= 10**6
    key_a, key_b, key_p, key_x = jax.random.split(jax.random.PRNGKey(0), 4)
    A = 0.9 * jax.random.normal(key_a, (n_steps, hidden, hidden)) / math.sqrt(hidden)
    A = A / jnp.maximum(1.0, jnp.linalg.norm(A, ord=2, axis=(-2, -1)))[:, None, None]
    b = jax.random.normal(key_b, (n_steps, hidden))
    h0 = jnp.zeros(hidden)
    linear = {
        "scan": (
            timed(sequential_linear, A, b, h0, big=big),
            parallel_depth(sequential_linear, A, b, h0),
        ),
        "assoc": (
            timed(linear_recurrence, A, b, h0, big=big),
            parallel_depth(linear_recurrence, A, b, h0),
        ),
    }

    params = elman.init(key_p, IN_DIM, hidden)
    carry = elman.init_carry((), hidden)
    xs = jax.random.normal(key_x, (n_steps, IN_DIM))
    run_scan = functools.partial(jaxrnn.scan, elman.apply)
    _, want = run_scan(params, carry, xs)
    rnn = {
        "scan": (
            timed(run_scan, params, carry, xs, big=big),
            parallel_depth(run_scan, params, carry, xs),
            None,
            0.0,
        )
    }
    for name in ("full", "diagonal"):
        run = functools.partial(deer, elman.apply, jacobian=name, max_iters=200)
        _, ys, info = jax.jit(run)(params, carry, xs)
        iterations = int(info.iterations)
        error = float(jnp.max(jnp.abs(ys - want)))
        quiet = functools.partial(run, on_failure="ignore")
        depth = parallel_depth(quiet, params, carry, xs, while_iterations=iterations)
        seconds = timed(lambda p, c, x, r=quiet: r(p, c, x)[:2], params, carry, xs, big=big)
        rnn[name] = (seconds, depth, iterations, error)
    return linear, rnn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--quick", action="store_true", help="T = 10^3 only (a smoke run)")
    args = parser.parse_args(argv)
    lengths = (1000,) if args.quick else (1000, 10_000, 100_000)
    linear_rows, rnn_rows, gpu_rows = [], [], []
    for n_steps in lengths:
        for hidden in (1, 4, 16):
            linear, rnn = measure(n_steps, hidden)
            (t_scan, d_scan), (t_assoc, d_assoc) = linear["scan"], linear["assoc"]
            linear_rows.append(
                [
                    n_steps,
                    hidden,
                    fmt(t_scan),
                    fmt(t_assoc),
                    f"{t_assoc / t_scan:.1f}x",
                    d_scan,
                    d_assoc,
                    f"{t_scan / n_steps * 1e6:.2f} us",
                    f"{t_assoc / d_assoc * 1e6:.1f} us",
                ]
            )
            t_rnn, d_rnn = rnn["scan"][:2]
            row = [n_steps, hidden, fmt(t_rnn)]
            for name in ("full", "diagonal"):
                seconds, depth, iterations, error = rnn[name]
                row += [fmt(seconds), f"{seconds / t_rnn:.1f}x", iterations, f"{error:.0e}"]
            rnn_rows.append(row)
            scan_estimate = gpu_estimate(t_rnn, n_steps)  # one fused launch per step
            gpu = [n_steps, hidden, n_steps, d_rnn, fmt(scan_estimate)]
            for name in ("full", "diagonal"):
                seconds, depth = rnn[name][:2]
                estimate = gpu_estimate(seconds, depth)
                gpu += [depth, fmt(estimate), f"{scan_estimate / estimate:.1f}x"]
            gpu_rows.append(gpu)
            print(linear_rows[-1], rnn_rows[-1], gpu_rows[-1], flush=True)

    body = "\n\n".join(
        [
            "## Parallel in time (`python bench/parallel.py`)",
            machine_line(),
            "Linear recurrence h_t = A_t h_{t-1} + b_t, full (T, H, H) transitions, float32: a "
            "`lax.scan` loop against `linear_recurrence` (associative scan). Depth = stages on "
            "the critical path of the traced program (`parallel_depth`); per-stage cost = time / "
            "depth.",
            markdown_table(
                [
                    "T",
                    "H",
                    "lax.scan",
                    "associative",
                    "assoc / scan",
                    "scan depth",
                    "assoc depth",
                    "scan per step",
                    "assoc per stage",
                ],
                linear_rows,
            ),
            "Elman RNN (in_dim 4, PyTorch-style init), float32: `jaxrnn.scan` against `deer` "
            "(full Jacobians) and quasi-DEER (diagonal), default tol 1e-5; iterations = Newton "
            "iterations run; error = max |DEER - scan| over all outputs.",
            markdown_table(
                [
                    "T",
                    "H",
                    "scan",
                    "DEER",
                    "DEER / scan",
                    "iters",
                    "error",
                    "quasi-DEER",
                    "quasi / scan",
                    "iters",
                    "error",
                ],
                rnn_rows,
            ),
            f"GPU estimate (a model, not a measurement): time = stages x max(launch latency "
            f"{LAUNCH_SECONDS * 1e6:g} us, CPU cost per stage / {SPEEDUP:g}), the CPU cost per "
            "stage being the measured time above over the stages. The scan gets the benefit of "
            "the doubt: T stages, its whole step fused into one launch (its measured depth is "
            "larger, T x the cell's depth); DEER pays for every stage of its measured depth, "
            "iterations x (linearise + associative solve + check), each stage wide over T.",
            markdown_table(
                [
                    "T",
                    "H",
                    "scan stages",
                    "scan depth",
                    "scan (est.)",
                    "DEER depth",
                    "DEER (est.)",
                    "scan / DEER",
                    "quasi depth",
                    "quasi (est.)",
                    "scan / quasi",
                ],
                gpu_rows,
            ),
        ]
    )
    print(body)
    if not args.no_write:
        write_section("parallel", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
