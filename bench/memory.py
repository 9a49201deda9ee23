"""Backprop through time in bounded memory: compiled memory and time against T.

    python bench/memory.py [--max-exp 6] [--time-steps 500] [--rounds 9] [--large-t 1000000]
                           [--large-json FILE]

For a loss on the final state of a GRU (B = 32, H = 256, D = 2, float32), the memory of
``jax.jit(jax.grad(loss))`` read from the compiled program (``memory_analysis()``:
temporaries + arguments + outputs; compiling allocates nothing, so any T can be asked)
for T = 10^2 ... 10^max-exp, and the time of one forward+backward, for:

- autodiff of ``jaxrnn.scan`` (the baseline a user writes), per-step ``jax.checkpoint``,
  ``checkpoints=k`` (binomial) for several k, on the GRU;
- ``jaxrnn.reversible_scan`` of the reversible GRU (same H), and autodiff of
  ``jaxrnn.scan`` over that same cell, to separate the cost of the cell from the cost of
  reversal.

The largest T that fits in 16 GiB is read off the line through the two largest compiled
sizes. One real forward+backward of the reversible GRU at ``--large-t`` steps runs in a
fresh process, with its wall time and peak resident memory. Times are medians of
interleaved rounds, ratios the medians of per-round ratios to autodiff of the GRU.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))
from _results import interleaved_times, machine_line, markdown_table, write_section  # noqa: E402

import jaxrnn  # noqa: E402
from jaxrnn import checkpointed, memory  # noqa: E402
from jaxrnn.cells import revgru  # noqa: E402

B, H, D = 32, 256, 2
BUDGET = 16 * 2**30
KS = (8, 32, 128)
BASELINE = "autodiff"


def methods():
    """name -> (problem kind, k, loss(params, carry, xs), cell evaluations per step).

    Evaluations count forward runs of the cell, the inverse and those inside each step's
    vjp included: autodiff 1 (its vjp reads residuals), per-step remat 2, binomial
    checkpoints (P(T, k) + 1 + T) / T (filled in by :func:`time_table`), reversal 3.
    """
    table = {
        "autodiff": ("autodiff", None, 1.0),
        "remat per step": ("remat", None, 2.0),
        **{f"checkpoints={k}": ("checkpoints", k, None) for k in KS},
        "reversible_scan (RevGRU)": ("reversible", None, 3.0),
    }
    table = {
        name: (method, k, memory.final_state_loss(method, checkpoints=k), evaluations)
        for name, (method, k, evaluations) in table.items()
    }
    same_cell = lambda p, c, x: (revgru.apply(p, c, x)[0], None)  # noqa: E731
    table["autodiff (RevGRU)"] = (
        "reversible",
        None,
        lambda p, c, xs: jnp.sum(jaxrnn.scan(same_cell, p, c, xs)[0].h),
        1.0,
    )
    return table


def memory_table(max_exp: int):
    steps = [10**e for e in range(2, max_exp + 1)]
    rows, fits = [], {}
    for name, (method, _, loss, _) in methods().items():
        params, carry = memory.problem(method, batch=B, hidden=H, in_dim=D)
        totals = []
        for n_steps in steps:
            xs = jax.ShapeDtypeStruct((n_steps, B, D), jnp.float32)
            use = memory.compiled_memory(jax.grad(loss), params, carry, xs)
            totals.append((n_steps, use.total))
            print(f"  {name:26s} T={n_steps:>8}: {use.total / 2**20:10.1f} MiB", flush=True)
        fits[name] = memory.largest_fitting(BUDGET, totals)
        rows.append([name] + [_mib(total) for _, total in totals] + [_steps(fits[name])])
    header = ["method"] + [f"T = 10^{e}" for e in range(2, max_exp + 1)] + ["largest T in 16 GiB"]
    return markdown_table(header, rows), fits


def _mib(nbytes):
    return f"{nbytes / 2**20:,.1f} MiB" if nbytes < 2**30 else f"{nbytes / 2**30:,.2f} GiB"


def _steps(n):
    return f"{n:.2e}".replace("e+0", "e").replace("e+", "e") if n > 0 else "any"


def time_table(n_steps: int, rounds: int):
    key = jax.random.PRNGKey(1)
    xs = 0.5 * jax.random.normal(key, (n_steps, B, D), jnp.float32)
    fns = {}
    for name, (method, _, loss, _) in methods().items():
        params, carry = memory.problem(method, batch=B, hidden=H, in_dim=D)
        grad = jax.jit(jax.grad(loss))
        fns[name] = lambda grad=grad, params=params, carry=carry: jax.block_until_ready(
            grad(params, carry, xs)
        )
    times = interleaved_times(fns, rounds=rounds, warmup=1)
    rows = []
    for name, (method, k, _, steps) in methods().items():
        ratio = statistics.median(t / b for t, b in zip(times[name], times[BASELINE], strict=True))
        if method == "checkpoints":
            cost = checkpointed.schedule_cost(n_steps, k)
            steps = (cost.advances + cost.vjp_steps) / n_steps
        rows.append(
            [name, f"{statistics.median(times[name]) / n_steps * 1e3:.3f} ms", f"{ratio:.2f}x",
             f"{steps:.2f}"]
        )  # fmt: skip
    header = [
        "method",
        "forward+backward per step",
        f"time / {BASELINE}",
        "cell evaluations per step",
    ]
    ratios = {
        name: statistics.median(t / b for t, b in zip(times[name], times[BASELINE], strict=True))
        for name in times
    }
    return markdown_table(header, rows), ratios


def destroyed_bits(n_steps: int) -> float:
    """Bits per unit and step the reversible GRU destroys here (mean of log2 1/z)."""
    params, carry = memory.problem("reversible", batch=B, hidden=H, in_dim=D)
    xs = 0.5 * jax.random.normal(jax.random.PRNGKey(1), (n_steps, B, D), jnp.float32)

    @jax.jit
    def run(params, carry, xs):
        def body(c, x):
            return revgru.apply(params, c, x)[0], jnp.mean(revgru.destroyed_bits(params, c, x))

        return jnp.mean(jax.lax.scan(body, carry, xs)[1]) / H

    return float(run(params, carry, xs))


def large_run(n_steps: int) -> dict:
    """One forward+backward of the reversible GRU at T = n_steps, in this process (at
    T = 10^6 about half an hour on 2 cores: ``--large-only`` prints its JSON, which
    ``--large-json`` takes back)."""
    params, carry = memory.problem("reversible", batch=B, hidden=H, in_dim=D)
    loss = memory.final_state_loss("reversible")
    xs = 0.5 * jax.random.normal(jax.random.PRNGKey(2), (n_steps, B, D), jnp.float32)
    grad = jax.jit(jax.grad(loss))
    compiled = grad.lower(params, carry, xs).compile()
    start = time.perf_counter()
    grads = jax.block_until_ready(compiled(params, carry, xs))
    seconds = time.perf_counter() - start
    finite = all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    analysis = compiled.memory_analysis()
    total = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
    return {
        "n_steps": n_steps,
        "seconds": seconds,
        "peak_rss": peak,
        "compiled": total,
        "finite": finite,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-exp", type=int, default=6, help="largest T = 10^max-exp")
    parser.add_argument("--time-steps", type=int, default=500, help="T of the timed runs")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds")
    parser.add_argument("--large-t", type=int, default=1_000_000, help="T of the real run")
    parser.add_argument(
        "--large-json",
        help="the JSON a previous `--large-only` run printed, instead of running it again",
    )
    parser.add_argument("--large-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.large_only:
        print(json.dumps(large_run(args.large_t)))
        return
    print("compiled memory of jax.grad, B=32, H=256, float32:")
    memory_md, fits = memory_table(args.max_exp)
    print(memory_md)
    timing_md, ratios = time_table(args.time_steps, args.rounds)
    print(timing_md)
    bits = destroyed_bits(args.time_steps)
    if args.large_json:
        large = json.loads(Path(args.large_json).read_text())
    else:
        command = [sys.executable, __file__, "--large-only", "--large-t", str(args.large_t)]
        run = subprocess.run(command, capture_output=True, text=True, check=True)
        large = json.loads(run.stdout)
    print(large)
    rev = "reversible_scan (RevGRU)"
    body = f"""## Backprop through time in bounded memory (`python bench/memory.py`)

{machine_line()}

Gradient of a loss on the final state, GRU with B = {B}, H = {H}, D = {D}, float32. Memory
is `jax.jit(jax.grad(loss)).lower(...).compile().memory_analysis()`: temporaries +
arguments (xs is T·B·D floats) + outputs, without running; the largest T in 16 GiB is read
off the line through the two largest compiled sizes. The reversible GRU has the same H
(two halves of H/2, so fewer weights than the GRU); its buffer allocates
{revgru.DEFAULT_MAX_FORGET_BITS} bits per unit and step (forget factors z >= 1/4) plus a
4-byte fingerprint per step.

{memory_md}

Forward+backward at T = {args.time_steps}, medians of {args.rounds} interleaved rounds after
a warm-up; time ratios are medians of per-round ratios to autodiff of the GRU; cell
evaluations count runs of the cell per time step, the inverse and those inside each
step's vjp included (autodiff 1, per-step remat 2, binomial checkpoints (P(T,k) + 1 + T) /
T, reversal 3).

{timing_md}

Reversible GRU: {rev} takes {ratios[rev]:.2f}x the time of autodiff of the GRU and
{ratios[rev] / ratios["autodiff (RevGRU)"]:.2f}x that of autodiff of the same cell (the
cost of rebuilding the states). Its buffer allocates {revgru.DEFAULT_MAX_FORGET_BITS} bits
per unit and step (+ 32 per unit); the steps of this run destroyed {bits:.2f} bits per
unit and step (mean log2 1/z, random weights), the least any exact reversal must keep.

A real forward+backward of the reversible GRU at T = {large["n_steps"]:,} took
{large["seconds"]:.0f} s with a peak resident memory of {large["peak_rss"] / 2**30:.2f} GiB
for the whole process (compiled estimate for temporaries and arguments
{large["compiled"] / 2**30:.2f} GiB); gradients finite: {large["finite"]}. At
T = 10^{args.max_exp} the compiled estimate is {_mib(_reversible_total(args.max_exp))}
(largest T in 16 GiB: {_steps(fits[rev])}); autodiff of the GRU fits up to
T = {_steps(fits["autodiff"])}.
"""
    write_section("memory", body)


def _reversible_total(max_exp):
    return memory.gradient_memory("reversible", 10**max_exp).total


if __name__ == "__main__":
    main()
