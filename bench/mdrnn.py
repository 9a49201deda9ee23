"""MDRNN: the anti-diagonal wavefront (H+W-1 steps) against a raster written for speed (H·W).

Run: ``python bench/mdrnn.py`` (writes the section "mdrnn" of bench/RESULTS.md).

The measurements run twice, each in a fresh process: with XLA's default CPU threading, and
with single-threaded Eigen matmuls (``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``). On
a busy machine a matmul split over threads waits for every thread to be scheduled, which
the wavefront's larger matmuls pay and the raster's tiny ones (never split) do not.

All grids G x G, D = hidden = 32, float32, CPU. Times are medians of interleaved runs
after a warm-up (each round runs every contender once, so load changes hit all of them).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))
from _results import (  # noqa: E402
    interleaved_times,
    machine_line,
    markdown_table,
    median_time,
    write_section,
)

from jaxrnn import mdrnn  # noqa: E402

SIDES = (16, 32, 64, 128)
BATCHES = (1, 8)
DIM = HIDDEN = 32
REPEATS = 9
GPU_STEP_US = 5.0  # assumed floor per sequential loop iteration on a GPU (launch + sync)
GPU_GFLOPS = 10_000.0  # assumed useful float32 throughput of a GPU on these small matmuls


def interleaved(fns: dict, args, repeats: int = REPEATS, budget: float = 0.5) -> dict:
    """Median seconds per call of each fn(*args), measured round-robin after warm-up.

    Fast calls are repeated more (up to ``budget`` seconds per contender, at most 101 runs),
    so that the medians of sub-millisecond calls are not at the mercy of one busy moment.
    """
    first = []
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        first.append(time.perf_counter() - start)
    repeats = max(repeats, min(101, int(budget / max(max(first), 1e-6))))
    calls = {name: (lambda fn=fn: jax.block_until_ready(fn(*args))) for name, fn in fns.items()}
    times = interleaved_times(calls, rounds=repeats, warmup=0)
    return {name: statistics.median(t) for name, t in times.items()}


def forward(run):
    return jax.jit(run)


def forward_backward(run):
    loss = lambda p, x: jnp.sum(run(p, x) ** 2)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def matmul_peak() -> float:
    """GFLOP/s of a 2048 x 2048 float32 matmul on this machine, now."""
    a = jax.random.normal(jax.random.PRNGKey(0), (2048, 2048), jnp.float32)
    f = jax.jit(lambda m: m @ m)
    return 2 * 2048**3 / median_time(lambda: f(a).block_until_ready(), repeats=5) / 1e9


CONFIGS = {
    "default XLA CPU threading": {},
    "single-threaded Eigen matmuls": {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"},
}
HEADER = [
    "G", "batch", "pass", "steps raster (measured)", "steps wavefront (measured)",
    "raster_fast ms", "wavefront ms", "speed-up", "raster µs/step", "wavefront µs/step",
    "wavefront GFLOP/s (% of peak)",
]  # fmt: skip


def measure() -> dict:
    """Every timing of one configuration, as JSON-able lists."""
    key = jax.random.PRNGKey(0)
    params = mdrnn.init(key, DIM, HIDDEN)
    peak = matmul_peak()
    rows, per_step = [], {}
    for side in SIDES:
        for batch in BATCHES:
            x = jax.random.normal(key, (batch, side, side, DIM), jnp.float32)
            steps_r = mdrnn.sequential_steps(lambda a: mdrnn.raster_fast(params, a), x)
            steps_w = mdrnn.sequential_steps(lambda a: mdrnn.wavefront(params, a), x)
            flops = batch * mdrnn.n_flops(side, side, DIM, HIDDEN)
            for label, wrap, factor in (("fwd", forward, 1), ("fwd+bwd", forward_backward, 3)):
                t = interleaved(
                    {"raster": wrap(mdrnn.raster_fast), "wave": wrap(mdrnn.wavefront)},
                    (params, x),
                )
                us_r, us_w = 1e6 * t["raster"] / steps_r, 1e6 * t["wave"] / steps_w
                per_step[f"{side},{batch},{label}"] = (us_r, us_w)
                gflops = factor * flops / t["wave"] / 1e9
                rows.append([
                    side, batch, label, steps_r, steps_w, f"{1e3 * t['raster']:.2f}",
                    f"{1e3 * t['wave']:.2f}", f"**{t['raster'] / t['wave']:.2f}×**",
                    f"{us_r:.2f}", f"{us_w:.1f}", f"{gflops:.1f} ({100 * gflops / peak:.0f}%)",
                ])  # fmt: skip
                print(rows[-1], file=sys.stderr, flush=True)

    # choices, one at a time, at G = 128 (forward)
    side = 128
    wave_options = {
        "wavefront, diagonals padded to G (skew: 2× FLOPs)": {"min_length": side},
        "wavefront, groups fill 0.5": {"fill": 0.5},
        "wavefront, groups fill 0.75 (default)": {},
        "wavefront, groups fill 0.9": {"fill": 0.9},
    }
    choices = {
        "raster (reference: cell per step, no hoisting)": mdrnn.raster,
        "raster_fast (hoisted W_in x, fused [W_W; W_N])": mdrnn.raster_fast,
    }
    for name, options in wave_options.items():
        choices[name] = lambda p, a, options=options: mdrnn.wavefront(p, a, **options)
    choice_rows = []
    for batch in BATCHES:
        x = jax.random.normal(key, (batch, side, side, DIM), jnp.float32)
        t = interleaved({name: jax.jit(run) for name, run in choices.items()}, (params, x), 5)
        for name, seconds in t.items():
            options = wave_options.get(name)
            scans = len(mdrnn.plan(side, side, **options)) if options is not None else 1
            choice_rows.append([batch, name, scans, f"{1e3 * seconds:.2f}"])
            print(choice_rows[-1], file=sys.stderr, flush=True)
    return {"peak": peak, "rows": rows, "per_step": per_step, "choices": choice_rows}


def gpu_estimate(result: dict) -> list:
    """Per GPU step: an assumed launch floor + the measured CPU work scaled by throughput."""
    peak, gpu_rows = result["peak"], []
    for side in SIDES:
        us_r, us_w = result["per_step"][f"{side},1,fwd"]
        steps_r, steps_w = side * side, 2 * side - 1
        gpu_r = steps_r * (GPU_STEP_US + us_r * peak / GPU_GFLOPS) / 1e3
        gpu_w = steps_w * (GPU_STEP_US + us_w * peak / GPU_GFLOPS) / 1e3
        gpu_rows.append([
            side, steps_r, steps_w, f"{us_r:.2f}", f"{us_w:.1f}", f"{gpu_r:.1f}", f"{gpu_w:.2f}",
            f"{gpu_r / gpu_w:.0f}×",
        ])  # fmt: skip
    return gpu_rows


def run_config(env: dict) -> dict:
    """Run :func:`measure` in a fresh process with ``env`` added (XLA flags are per process)."""
    done = subprocess.run(
        [sys.executable, __file__, "--child"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        check=True,
        text=True,
    )
    return json.loads(done.stdout)


def main() -> None:
    load_before = os.getloadavg()[0]
    results = {name: run_config(env) for name, env in CONFIGS.items()}
    load_after = os.getloadavg()[0]
    parts = [
        "## MDRNN: wavefront (H+W-1 steps) vs raster (H·W steps) — `python bench/mdrnn.py`",
        "",
        machine_line(),
        "",
        f"G x G grids, D = hidden = {DIM}, float32, CPU; medians of {REPEATS} to 101 interleaved "
        "runs after warm-up. Steps are measured from the traced programs "
        "(`mdrnn.sequential_steps`). GFLOP/s are useful flops (`n_flops`, ×3 for fwd+bwd) "
        "per second, against a 2048² float32 matmul measured in the same run. The raster is "
        "`raster_fast`: input projection hoisted out of the loop, [W_W; W_N] fused into one "
        "matmul per step, nested row/column scans. 1-minute load average "
        f"{load_before:.1f} before and {load_after:.1f} after the run on "
        f"{os.cpu_count()} cores (the machine was shared).",
    ]
    for name, result in results.items():
        parts += [
            "",
            f"### {name} ({' '.join(f'{k}={v}' for k, v in CONFIGS[name].items()) or 'no flags'}"
            f"; matmul peak {result['peak']:.0f} GFLOP/s)",
            "",
            markdown_table(HEADER, result["rows"]),
            "",
            "Choices, one at a time (G = 128, forward, ms):",
            "",
            markdown_table(["batch", "variant", "scans", "ms"], result["choices"]),
        ]
    first = next(iter(results))
    parts += [
        "",
        f"### GPU estimate (batch 1, forward; from the per-step costs of '{first}')",
        "",
        "A GPU step costs an assumed launch-and-sync floor of "
        f"{GPU_STEP_US:.0f} µs plus the measured CPU work of that step scaled by peak "
        f"throughput (CPU peak above, an assumed {GPU_GFLOPS / 1000:.0f} TFLOP/s on the GPU); "
        "time = steps × per-step cost. Estimates, not GPU measurements:",
        "",
        markdown_table(
            [
                "G",
                "raster steps",
                "wavefront steps",
                "CPU raster µs/step",
                "CPU wavefront µs/step",
                "GPU raster ms (est.)",
                "GPU wavefront ms (est.)",
                "GPU speed-up (est.)",
            ],
            gpu_estimate(results[first]),
        ),  # fmt: skip
    ]
    body = "\n".join(parts)
    write_section("mdrnn", body)
    print(body)


if __name__ == "__main__":
    if "--child" in sys.argv:
        print(json.dumps(measure()))
    else:
        main()
