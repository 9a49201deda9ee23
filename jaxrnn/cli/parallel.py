"""Tour section and ``jaxrnn parallel depth``: recurrences in O(log T) parallel depth."""

from __future__ import annotations

from jaxrnn.cli._options import OptionError, command, integer

TITLE = (
    "Parallel in time: linear recurrences and linear cells by associative scan, RNNs by "
    "Newton (DEER, damped: ELK)"
)
ORDER = 70

HEADER = (
    "T",
    "scan steps",
    "scan depth",
    "linear depth (full A)",
    "linear depth (diag A)",
    "DEER iters",
    "DEER depth/iter",
    "DEER depth",
    "quasi-DEER iters",
    "quasi depth/iter",
    "quasi-DEER depth",
)


def depth_rows(exponents, hidden: int):
    """Yield the measured :class:`jaxrnn.parallel.depth.DepthRow` for T = 2^k."""
    from jaxrnn.parallel.depth import measure_depths

    for k in exponents:
        yield measure_depths(2**k, hidden=hidden)


def print_depth_table(args) -> int:
    if args.min_exp > args.max_exp:
        raise OptionError("--max-exp", f"an integer >= --min-exp ({args.min_exp})", args.max_exp)
    exponents = range(args.min_exp, args.max_exp + 1)
    print(
        f"parallel depth (stages on the critical path of the traced program) of an Elman RNN, "
        f"H = {args.hidden}, for T = 2^{args.min_exp} ... 2^{args.max_exp}; DEER's iterations "
        f"are counted by running it (float32, default tol)"
    )
    widths = [max(len(h), 7) for h in HEADER]
    print("  ".join(h.rjust(w) for h, w in zip(HEADER, widths, strict=True)), flush=True)
    for row in depth_rows(exponents, args.hidden):
        print("  ".join(str(v).rjust(w) for v, w in zip(row, widths, strict=True)), flush=True)
    return 0


def tour():
    import math

    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxrnn
    from jaxrnn.cells import elman, gru, lru
    from jaxrnn.parallel import deer, linear_recurrence, scan_associative, scan_with_resets
    from jaxrnn.steps import parallel_depth

    key_a, key_b, key_x, key_p = jax.random.split(jax.random.PRNGKey(0), 4)
    n_steps, hidden = 4096, 4
    A = 0.5 * jax.random.normal(key_a, (n_steps, hidden, hidden)) / math.sqrt(hidden)
    b = jax.random.normal(key_b, (n_steps, hidden))
    h0 = jnp.zeros(hidden)
    hs = linear_recurrence(A, b, h0)
    loop = jax.lax.scan(lambda h, ab: (ab[0] @ h + ab[1],) * 2, h0, (A, b))[1]
    depth = parallel_depth(linear_recurrence, A, b, h0)
    yield (
        f"linear_recurrence h_t = A_t h_(t-1) + b_t, T = {n_steps}, H = {hidden}: associative "
        f"scan = lax.scan loop to {float(jnp.max(jnp.abs(hs - loop))):.1e}; measured depth "
        f"{depth} (~{depth / math.log2(n_steps):.1f} log2 T) against {n_steps} loop steps"
    )

    n_steps = 1024
    xs = jax.random.normal(key_x, (n_steps, 3))
    params = gru.init(key_p, 3, hidden)
    carry = gru.init_carry((), hidden)
    final, ys, info = deer(gru.apply, params, carry, xs)
    _, want = jaxrnn.scan(gru.apply, params, carry, xs)
    iterations = int(info.iterations)
    run = lambda p, c, x: deer(gru.apply, p, c, x, on_failure="ignore")
    total = parallel_depth(run, params, carry, xs, while_iterations=iterations)
    per_iteration = total - parallel_depth(run, params, carry, xs, while_iterations=iterations - 1)
    scan_depth = parallel_depth(lambda *a: jaxrnn.scan(gru.apply, *a), params, carry, xs)
    norms = ", ".join(f"{v:.0e}" for v in info.update_norms[:iterations].tolist())
    yield (
        f"DEER on a GRU, T = {n_steps}: converged in {iterations} Newton iterations (updates "
        f"{norms}); max |DEER - scan| = {float(jnp.max(jnp.abs(ys - want))):.1e}"
    )
    rest = total - iterations * per_iteration
    yield (
        f"depth measured: DEER {iterations} x {per_iteration} (+{rest}) = {total} stages "
        f"against the scan's {scan_depth} ({n_steps} steps)"
    )

    n_steps = 128
    xs = jax.random.normal(key_x, (n_steps, 1))
    rows = {"DEER": [], "ELK (damping 1e-4)": []}
    for radius in (0.5, 1.0, 1.5, 3.0):
        params = elman.init(jax.random.PRNGKey(3), 1, hidden)
        eigen = jnp.max(jnp.abs(jnp.linalg.eigvals(params["W"])))
        params["W"] = params["W"] * radius / eigen
        carry = elman.init_carry((), hidden)
        _, want = jaxrnn.scan(elman.apply, params, carry, xs)
        for name, damping in (("DEER", None), ("ELK (damping 1e-4)", 1e-4)):
            _, ys, info = deer(
                elman.apply,
                params,
                carry,
                xs,
                max_iters=2 * n_steps,
                damping=damping,
                on_failure="ignore",
            )
            last = ys  # at rho 3 and with damping, compared with float64 below
            if info.converged:
                error = float(jnp.max(jnp.abs(ys - want)))
                outcome = f"{int(info.iterations)} iterations, max |ys - scan| {error:.0e}"
            else:
                outcome = f"no convergence (NaN after {int(info.iterations)} iteration(s))"
            rows[name].append(f"rho {radius}: {outcome}")
    # how far float32 rounding takes the scan itself at rho 3: against a float64 NumPy loop
    weights = {k: np.asarray(v, np.float64) for k, v in params.items()}
    h, exact = np.zeros(hidden), []
    for x in np.asarray(xs, np.float64):
        h = np.tanh(weights["W"] @ h + weights["U"] @ x + weights["b"])
        exact.append(h)
    scan_error = float(np.max(np.abs(np.asarray(want, np.float64) - np.array(exact))))
    elk_error = float(np.max(np.abs(np.asarray(last, np.float64) - np.array(exact))))
    yield (
        f"Elman RNN, T = {n_steps}, float32, by spectral radius (SPEC §5): DEER "
        + "; ".join(rows["DEER"])
        + " (its first solve multiplies T Jacobians J = W and overflows when they expand)"
    )
    yield (
        "damped Newton, deer(..., damping=1e-4) (ELK: Levenberg-Marquardt steps as a "
        "parallel Kalman filter, SPEC §14): "
        + "; ".join(rows["ELK (damping 1e-4)"])
        + f" (at rho 3 the chain is near neutral and float32 rounding grows along it: the "
        f"float32 scan is {scan_error:.0e} from a float64 loop, ELK {elk_error:.0e})"
    )

    n_steps, batch = 4096, 4
    params = lru.init(key_p, 2, 8)
    carry = lru.init_carry((batch,), 8)
    xs = jax.random.normal(key_x, (n_steps, batch, 2))
    resets = jax.random.bernoulli(key_a, 1 / 256, (n_steps, batch))
    lengths = jnp.array([4096, 3000, 17, 0])
    tree = scan_associative(lru, params, carry, xs, lengths=lengths, resets=resets)
    loop = scan_with_resets(lru.apply, params, carry, xs, resets, lengths=lengths)
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(tree, loop, strict=True))
    tree_depth = parallel_depth(
        lambda p, c, x: scan_associative(lru, p, c, x, resets=resets), params, carry, xs
    )
    loop_depth = parallel_depth(
        lambda p, c, x: scan_with_resets(lru.apply, p, c, x, resets), params, carry, xs
    )
    yield (
        f"LRU (complex diagonal, SPEC §12) over {batch} rows of T = {n_steps} packing "
        f"{int(resets.sum()) + batch} sequences (resets), lengths {lengths.tolist()}: "
        f"scan_associative = the sequential loop to {gap:.0e}; depth {tree_depth} "
        f"against {loop_depth}"
    )


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("parallel", help="parallel-in-time recurrences")
    commands = parser.add_subparsers(dest="parallel_command", metavar="COMMAND", required=True)
    depth = command(
        commands,
        "depth",
        print_depth_table,
        help="measured depth of scan, linear recurrence and DEER for T = 2^k",
    )
    depth.add_argument("--min-exp", type=integer(0), default=6, help="smallest k, T = 2^k")
    depth.add_argument("--max-exp", type=integer(0), default=16, help="largest k, T = 2^k")
    depth.add_argument("--hidden", type=integer(1), default=2, help="Elman hidden size H")
