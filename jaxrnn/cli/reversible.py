"""Tour section and ``jaxrnn reversible``: exactly reversible momentum SGD (SPEC §7)."""

from __future__ import annotations

from jaxrnn.cli._options import command, integer, number

TITLE = "Momentum SGD run backwards bit for bit; hypergradients by exact reversal"
ORDER = 60


def _problem(dim: int):
    """A noisy quadratic in ``dim`` parameters; the noise of step k comes from k."""
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (dim, dim), jnp.float32)
    a = a @ a.T / dim + jnp.eye(dim, dtype=jnp.float32)
    params = jax.random.normal(jax.random.fold_in(key, 1), (dim,), jnp.float32)

    def grad_fn(p, k):
        return a @ p + 0.1 * jax.random.normal(jax.random.fold_in(key, k), (dim,), jnp.float32)

    return params, grad_fn


def roundtrip(steps: int, beta: float, dim: int, alpha: float = 0.05):
    """Forward then reverse; returns a dict of what was checked and measured."""
    import time

    import jax
    import numpy as np

    from jaxrnn import reversible

    params, grad_fn = _problem(dim)
    alphas, betas = np.full(steps, alpha, np.float32), np.full(steps, beta)
    start = reversible.init(params)
    t0 = time.perf_counter()
    end = reversible.forward(start, grad_fn, alphas, betas)
    jax.block_until_ready(end.theta)
    t1 = time.perf_counter()
    back = reversible.reverse(end, grad_fn, alphas, betas)
    jax.block_until_ready(back.theta)
    t2 = time.perf_counter()
    return {
        "moved": float(np.max(np.abs(reversible.params(end) - params))),
        "exact": bool(np.array_equal(reversible.params(back), params))
        and not np.any(reversible.velocity(back)),
        "empty": reversible.buffer_is_empty(back),
        "stored": reversible.stored_bits(end),
        "bound": reversible.information_bound(betas, dim),
        "forward_s": t1 - t0,
        "reverse_s": t2 - t1,
    }


def naive_reversal_error(steps: int, alpha: float = 0.3, beta: float = 0.8) -> float:
    """Max error after ``steps`` float32 steps undone by the float inverse formulas."""
    import jax
    import jax.numpy as jnp

    c = jnp.array([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]], jnp.float32)
    grad = lambda th: c @ th - jnp.sin(th)

    def fwd(s, _):
        th, p = s
        p = beta * p - alpha * grad(th)
        return (th + p, p), None

    def bwd(s, _):
        th, p = s
        th = th - p
        return (th, (p + alpha * grad(th)) / beta), None

    s0 = (jnp.array([1.0, -0.5, 0.25], jnp.float32), jnp.zeros(3, jnp.float32))
    end = jax.lax.scan(fwd, s0, None, length=steps)[0]
    back = jax.lax.scan(bwd, end, None, length=steps)[0]
    return float(jnp.max(jnp.abs(back[0] - s0[0])))


def tour():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxrnn import reversible

    r = roundtrip(steps=3000, beta=0.9, dim=8)
    yield (
        f"3000 steps of momentum SGD (beta 0.9, D = 8) moved theta by up to {r['moved']:.2f}; "
        f"reverse gives theta(0), v(0) bit for bit: {r['exact']}, buffer empty: {r['empty']}"
    )
    yield (
        f"buffer: {r['stored']} bits stored vs {r['bound']:.0f} destroyed "
        f"(D·Σ log2(1/beta_k)), ratio {r['stored'] / r['bound']:.3f} incl. the 32-bit words"
    )
    errors = {t: naive_reversal_error(t) for t in (10, 300)}
    yield "naive float32 inverse, max |theta error| after T steps: " + ", ".join(
        f"T={t}: {e:.1e}" for t, e in errors.items()
    )
    s = jnp.array([0.3, -1.0, 0.5, 0.1])

    def step(s, alpha=0.2, beta=0.9):
        th, p = s[:2], s[2:]
        p = beta * p - alpha * (jnp.sin(th) + th)
        return jnp.concatenate([th + p, p])

    logdet = float(jnp.linalg.slogdet(jax.jacfwd(step)(s))[1])
    yield f"log|det ∂s(k+1)/∂s(k)| = {logdet:.6f} vs D log beta = {2 * np.log(0.9):.6f} (D = 2)"

    x = jax.random.normal(jax.random.PRNGKey(2), (32, 4), jnp.float32)
    y = x @ jnp.array([1.0, -2.0, 0.5, 0.0], jnp.float32)

    def train(p, lam, k):  # minibatch k % 2 of the first 16 rows
        xb, yb = (jax.lax.dynamic_slice_in_dim(a, (k % 2) * 8, 8) for a in (x, y))
        return jnp.mean((xb @ p - yb) ** 2)

    val = lambda p, lam: jnp.mean((x[16:] @ p - y[16:]) ** 2)
    steps = 40
    alphas, betas = jnp.full(steps, 0.05, jnp.float32), np.full(steps, 0.875)
    p0 = jnp.zeros(4, jnp.float32)
    _, hg = reversible.hypergradient(train, val, p0, alphas, betas)

    def unrolled(alphas):
        def body(c, xs):
            p, v = c
            a, k = xs
            v = 0.875 * v - a * jax.grad(train)(p, None, k)
            return (p + v, v), None

        (p, _), _ = jax.lax.scan(body, (p0, p0), (alphas, jnp.arange(steps)))
        return val(p, None)

    ref = jax.grad(unrolled)(alphas)
    err = float(jnp.linalg.norm(hg.alphas - ref) / jnp.linalg.norm(ref))
    yield (
        f"hypergradient d val / d alpha_k over {steps} steps by one exact reverse sweep: "
        f"relative difference to jax.grad through the unrolled loop {err:.1e} (float32)"
    )


def _momentum(text: str) -> float:
    """An argparse ``type``: a momentum the exact reversal supports (n/2^16, 2^8 <= n < 2^16)."""
    import argparse
    import math

    from jaxrnn.exact import buffer

    low, high = buffer.MIN_NUMERATOR, buffer.DENOMINATOR - 1
    try:
        beta = float(text)
    except ValueError:
        beta = math.nan
    if not (math.isfinite(beta) and low <= round(beta * buffer.DENOMINATOR) <= high):
        raise argparse.ArgumentTypeError(
            f"expected a momentum in [2^-8, 1 - 2^-16] = [{low / buffer.DENOMINATOR:g}, "
            f"{high / buffer.DENOMINATOR:.7f}] (used as n/2^16), got {text}"
        )
    return beta


def demo(args) -> int:
    from jaxrnn import reversible

    r = roundtrip(args.steps, args.beta, args.dim, args.alpha)
    beta_used = float(reversible.represented_betas(args.beta))
    print(
        f"{args.steps} steps, beta = {args.beta} (used as n/2^16 = {beta_used:.8f}), "
        f"alpha = {args.alpha}, D = {args.dim}"
    )
    print(f"  forward {r['forward_s']:.2f} s, reverse {r['reverse_s']:.2f} s (incl. compile)")
    print(f"  theta moved by up to {r['moved']:.3g}")
    print(f"  bit-exact reversal of theta and v: {r['exact']}; buffer empty after: {r['empty']}")
    limit = 1.1 * r["bound"] + 96 * args.dim
    print(
        f"  stored bits {r['stored']} vs bound D·Σlog2(1/beta) = {r['bound']:.0f} "
        f"(ratio {r['stored'] / r['bound']:.3f}; acceptance 1.1·bound + 96·D = {limit:.0f})"
    )
    return 0 if r["exact"] and r["empty"] else 1


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "reversible", help="exactly reversible momentum SGD: run forward and back"
    )
    sub = parser.add_subparsers(dest="reversible_command", metavar="SUBCOMMAND", required=True)
    run = command(sub, "demo", demo, help="forward then reverse; bit-exactness and stored bits")
    run.add_argument("--steps", type=integer(1), default=10_000, help="optimisation steps T")
    run.add_argument(
        "--beta",
        type=_momentum,
        default=0.9,
        help="momentum beta in [2^-8, 1 - 2^-16], the same at every step",
    )
    run.add_argument("--alpha", type=number(0, open_low=True), default=0.05, help="step size alpha")
    run.add_argument("--dim", type=integer(1), default=8, help="number of parameters D")
