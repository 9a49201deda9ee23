"""Tour section and ``jaxrnn mdrnn steps``: a G x G grid in 2G-1 wavefront steps."""

from __future__ import annotations

from jaxrnn.cli._options import command, integer

TITLE = "MDRNN: a G x G grid in 2G-1 anti-diagonal steps instead of G², measured"
ORDER = 30


def measured_steps(side: int) -> tuple[int, int]:
    """(wavefront, raster) sequential steps read from the traced programs for a G x G grid."""
    import jax
    import jax.numpy as jnp

    from jaxrnn import mdrnn

    params = mdrnn.init(jax.random.PRNGKey(0), 1, 1)
    x = jnp.zeros((side, side, 1), jnp.float32)
    wave = mdrnn.sequential_steps(lambda a: mdrnn.wavefront(params, a), x)
    raster = mdrnn.sequential_steps(lambda a: mdrnn.raster(params, a), x)
    return wave, raster


def tour():
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxrnn import mdrnn

    key = jax.random.PRNGKey(0)
    dim = hidden = 32
    side = 16
    wave, raster = measured_steps(side)
    yield (
        f"G = {side}: measured sequential steps: wavefront {wave} (2G-1 = {2 * side - 1}), "
        f"raster {raster} (G² = {side * side})"
    )
    yield (
        f"D = hidden = {dim}: {mdrnn.n_weights(dim, hidden)} weights (D·H + 2H²), "
        f"{mdrnn.n_flops(side, side, dim, hidden) / 1e6:.2f} MFLOP for a {side}x{side} grid "
        "(2·G²·(D·H + 2H²))"
    )
    params = mdrnn.init(key, dim, hidden)
    x = jax.random.normal(key, (2, side, side, dim), jnp.float32)
    both = jax.jit(lambda p, a: (mdrnn.wavefront(p, a), mdrnn.raster(p, a)))(params, x)
    diff = float(jnp.max(jnp.abs(both[0] - both[1])))
    yield f"wavefront equals the raster scan on a batch of 2 grids: max |diff| = {diff:.1e}"

    side = 32
    x = jax.random.normal(key, (1, side, side, dim), jnp.float32)
    times = {}
    for name, run in (("raster_fast", mdrnn.raster_fast), ("wavefront", mdrnn.wavefront)):
        fn = jax.jit(run)
        fn(params, x).block_until_ready()
        start = time.perf_counter()
        for _ in range(5):
            fn(params, x).block_until_ready()
        times[name] = (time.perf_counter() - start) / 5
    yield (
        f"G = {side}, batch 1, forward: raster_fast {1e3 * times['raster_fast']:.2f} ms, "
        f"wavefront {1e3 * times['wavefront']:.2f} ms "
        f"({times['raster_fast'] / times['wavefront']:.1f}x; see bench/RESULTS.md)"
    )

    small = mdrnn.init(key, 2, 3)
    grid = jax.random.normal(key, (6, 6, 2), jnp.float32)
    jac = jax.jit(jax.jacrev(lambda a: mdrnn.wavefront(small, a)[3, 4]))(grid)
    seen = np.abs(np.asarray(jac)).sum(axis=(0, 3)) > 0
    yield (
        f"receptive field by jax.grad: h(3,4) of a 6x6 grid depends on {int(seen.sum())} inputs "
        f"= the quadrant i' <= 3, j' <= 4 ({4 * 5}); nothing else: "
        f"{bool(seen[:4, :5].all() and seen.sum() == 20)}"
    )

    four = mdrnn.init_four(key, 2, 3)
    lstm = mdrnn.mdlstm.init(key, 2, 3)
    cube = mdrnn.grid3d.init(key, 2, 3)
    steps4 = mdrnn.sequential_steps(lambda a: mdrnn.four_directions(four, a), grid)
    steps_lstm = mdrnn.sequential_steps(lambda a: mdrnn.mdlstm.wavefront(lstm, a), grid)
    steps3 = mdrnn.sequential_steps(
        lambda a: mdrnn.grid3d.wavefront(cube, a), jnp.zeros((4, 5, 6, 2), jnp.float32)
    )
    yield (
        f"6x6 grid: four scan directions in {steps4} steps, MD-LSTM in {steps_lstm}; "
        f"4x5x6 grid in 3-D: {steps3} steps (n1+n2+n3-2 = 13)"
    )


def print_steps(args) -> int:
    print(f"{'G':>5} {'2G-1':>6} {'wavefront':>10} {'G²':>7} {'raster':>8}   (measured)")
    for side in range(1, args.max_g + 1):
        wave, raster = measured_steps(side)
        print(f"{side:>5} {2 * side - 1:>6} {wave:>10} {side * side:>7} {raster:>8}")
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("mdrnn", help="multidimensional RNN: wavefront steps")
    sub = parser.add_subparsers(dest="mdrnn_command", metavar="SUBCOMMAND", required=True)
    steps = command(
        sub,
        "steps",
        print_steps,
        help="print G, 2G-1, G² and the measured sequential steps of both orders",
    )
    steps.add_argument(
        "--max-g", type=integer(1), default=8, help="largest grid side G, one row per G from 1"
    )
