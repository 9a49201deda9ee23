"""MDRNN: the anti-diagonal wavefront (H+W-1 steps) against the fastest raster (H·W steps).

    python bench/mdrnn.py [--runs 3] [--no-write]

Writes the section "mdrnn" of bench/RESULTS.md. Each run is a fresh process configured as
the README tells a user to (``jax.config.update("jax_num_cpu_devices", os.cpu_count())``,
one CPU device per core); the figures are the median and the range over the runs.

Baselines: every raster of ``bench/_rasters.py`` (the library's ``raster_fast``, two dots
in nested scans, the row above hoisted), each on one device and with its batch split
over the devices (``jaxrnn.sharding.batch_parallel``) where the batch divides; the
wavefront likewise. A speed-up is the fastest raster's time over the fastest wavefront's,
per size and pass, both named in the table. Floors: a bare ``lax.scan`` of the same number
of steps doing one matmul of a step's shapes and a tanh (the wavefront's average diagonal,
the raster's single cell), measured in the same run: what a step costs on XLA:CPU before
any of the recurrence's own work.

All grids G x G, D = hidden = 32, float32, CPU; times are medians of interleaved rounds
after a warm-up (each round runs every contender once, so load hits all of them alike).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

SIDES = tuple(int(s) for s in os.environ.get("MDRNN_SIDES", "16,32,64,128").split(","))
BATCHES = (1, 8)
DIM = HIDDEN = 32


def _bare_scan_floor(jax, jnp, steps: int, rows: int, cols: int, measure) -> float:
    """Seconds per step of a bare scan doing (rows, HIDDEN) @ (HIDDEN, cols) and a tanh."""
    weight = jnp.full((HIDDEN, cols), 0.01, jnp.float32)

    def loop(h):
        def step(carry, _):
            out = jnp.tanh(carry @ weight)
            return out[:, :HIDDEN], None

        return jax.lax.scan(step, h, None, length=steps)[0]

    run = jax.jit(loop)
    h = jnp.ones((rows, HIDDEN), jnp.float32)
    return measure({"floor": lambda: run(h).block_until_ready()})["floor"] / steps


def measure() -> dict:
    """Every timing of one run, JSON-able."""
    import jax

    jax.config.update("jax_num_cpu_devices", os.cpu_count())
    import jax.numpy as jnp
    from _rasters import RASTERS
    from _results import adaptive_medians

    from jaxrnn import mdrnn, sharding

    n_devices = len(jax.devices())
    key = jax.random.PRNGKey(0)
    params = mdrnn.init(key, DIM, HIDDEN)
    rows = []
    for side in SIDES:
        for batch in BATCHES:
            x = jax.random.normal(key, (batch, side, side, DIM), jnp.float32)
            steps_r = mdrnn.sequential_steps(lambda a: mdrnn.raster_fast(params, a), x)
            steps_w = mdrnn.sequential_steps(lambda a: mdrnn.wavefront(params, a), x)
            runners = {**{f"raster: {k}": v for k, v in RASTERS.items()}}
            runners["wavefront"] = mdrnn.wavefront
            if n_devices > 1 and batch % n_devices == 0:
                for name, fn in list(runners.items()):
                    runners[f"{name}, batch over {n_devices} devices"] = sharding.batch_parallel(
                        fn, in_axes=(None, 0), out_axes=0
                    )
            diagonal_rows = max(1, round(batch * side * side / (2 * side - 1)))
            floors = {
                "floor_wavefront": _bare_scan_floor(
                    jax, jnp, 2 * side - 1, diagonal_rows, 2 * HIDDEN, adaptive_medians
                ),
                "floor_raster": _bare_scan_floor(
                    jax, jnp, side * side, batch, HIDDEN, adaptive_medians
                ),
            }
            for label in ("fwd", "fwd+bwd"):
                if label == "fwd":
                    compiled = {k: jax.jit(f) for k, f in runners.items()}
                else:
                    compiled = {
                        k: jax.jit(
                            jax.grad(lambda p, a, f=f: jnp.sum(f(p, a) ** 2), argnums=(0, 1))
                        )
                        for k, f in runners.items()
                    }
                calls = {
                    k: (lambda f=f, x=x: jax.block_until_ready(f(params, x)))
                    for k, f in compiled.items()
                }
                times = adaptive_medians(calls)
                rasters = {k: t for k, t in times.items() if k.startswith("raster")}
                waves = {k: t for k, t in times.items() if k.startswith("wavefront")}
                best_r = min(rasters, key=rasters.get)
                best_w = min(waves, key=waves.get)
                rows.append(
                    {
                        "side": side,
                        "batch": batch,
                        "pass": label,
                        "steps_raster": steps_r,
                        "steps_wavefront": steps_w,
                        "times": times,
                        "best_raster": best_r,
                        "best_wavefront": best_w,
                        **floors,
                    }
                )
                print(side, batch, label, best_r, best_w, file=sys.stderr, flush=True)
    return {"devices": n_devices, "rows": rows, "load": os.getloadavg()[0]}


def _table(results: list) -> tuple[str, list]:
    """The table over runs, and the acceptance rows (G, batch, pass, speed-ups per run)."""
    from _results import median_and_range

    first = results[0]["rows"]
    header = [
        "G", "batch", "pass", "steps raster / wavefront (measured)", "fastest raster",
        "its ms", "fastest wavefront", "its ms", "speed-up over runs", "raster µs/step",
        "floor µs/step (1 cell)", "wavefront µs/step", "floor µs/step (1 diagonal)",
    ]  # fmt: skip
    lines, speedups = [], []
    for index, row in enumerate(first):
        per_run = [r["rows"][index] for r in results]
        ratios = [r["times"][r["best_raster"]] / r["times"][r["best_wavefront"]] for r in per_run]
        speedups.append((row["side"], row["batch"], row["pass"], ratios))
        ms = lambda name, runs=per_run: statistics.median(r["times"][name] for r in runs) * 1e3
        best_r = statistics.mode(r["best_raster"] for r in per_run)
        best_w = statistics.mode(r["best_wavefront"] for r in per_run)
        floor_w = f"{1e6 * statistics.median(r['floor_wavefront'] for r in per_run):.1f}"
        floor_r = f"{1e6 * statistics.median(r['floor_raster'] for r in per_run):.2f}"
        lines.append([
            row["side"], row["batch"], row["pass"],
            f"{row['steps_raster']} / {row['steps_wavefront']}",
            best_r.removeprefix("raster: "), f"{ms(best_r):.2f}",
            best_w, f"{ms(best_w):.2f}",
            f"**{median_and_range(ratios)}×**",
            f"{1e3 * ms(best_r) / row['steps_raster']:.2f}", floor_r,
            f"{1e3 * ms(best_w) / row['steps_wavefront']:.1f}", floor_w,
        ])  # fmt: skip
    from _results import markdown_table

    return markdown_table(header, lines), speedups


def _verdicts(speedups: list) -> list[str]:
    """The acceptance of each target, on the median over runs."""
    median = {(g, b, p): statistics.median(r) for g, b, p, r in speedups}
    worst = {(g, b, p): min(r) for g, b, p, r in speedups}
    lines = []
    for batch, target in ((1, 1.5), (8, 1.2)):
        for label in ("fwd", "fwd+bwd"):
            if (128, batch, label) not in median:
                continue
            value = median[(128, batch, label)]
            verdict = "met" if value >= target else "NOT met"
            lines.append(
                f"- G = 128, batch {batch}, {label}: >= {target}x the fastest raster: "
                f"**{verdict}** (median {value:.2f}x, lowest run {worst[(128, batch, label)]:.2f}x)"
            )
    slower = [f"G={g} b={b} {p}: {v:.2f}x" for (g, b, p), v in median.items() if g >= 32 and v < 1]
    lines.append(
        "- never slower at G >= 32: "
        + ("**met**" if not slower else "**NOT met** (" + "; ".join(slower) + ")")
    )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="separate runs (processes)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    from _results import machine_line, separate_runs, write_section

    results = separate_runs(__file__, args.runs)
    table, speedups = _table(results)
    loads = ", ".join(f"{r['load']:.1f}" for r in results)
    body = "\n".join(
        [
            "## MDRNN: wavefront (H+W-1 steps) vs the fastest raster (H·W steps) — "
            "`python bench/mdrnn.py`",
            "",
            machine_line(),
            "",
            f"G x G grids, D = hidden = {DIM}, float32, CPU, {results[0]['devices']} CPU "
            f"devices (one per core, as the README configures). {args.runs} separate runs "
            "(fresh processes); times are medians over the runs of each run's median of "
            "interleaved rounds; the speed-up is the median and (range) over the runs of the "
            "fastest raster's time over the fastest wavefront's, each chosen per size, pass "
            "and run among: the rasters of `bench/_rasters.py` and the wavefront, on one "
            "device and with the batch split over the devices (`sharding.batch_parallel`). "
            "Steps are measured from the traced programs (`mdrnn.sequential_steps`). Floors: "
            "a bare `lax.scan` of one step's matmul and a tanh (the raster's single cell; the "
            "wavefront's average diagonal, B·G²/(2G-1) rows, with [W_W, W_N]), per step, "
            f"measured in the same run. 1-minute load average at the end of each run: {loads}.",
            "",
            "Acceptance (median over runs):",
            "",
            *_verdicts(speedups),
            "",
            table,
        ]
    )
    if not args.no_write:
        write_section("mdrnn", body)
    print(body)
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        print(json.dumps(measure()))
    else:
        sys.exit(main())
