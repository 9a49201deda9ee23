"""Tour section and ``jaxrnn cells``: the cell contract and the scan runner."""

from __future__ import annotations

from jaxrnn.cli._options import command, integer

TITLE = "Cells are scan functions; a sequence is one lax.scan"
ORDER = 0


def _cell_modules():
    from jaxrnn.cells import elman, gru, lstm, lstm_scalar, threshold

    return {
        "elman": elman,
        "lstm": lstm,
        "lstm_scalar": lstm_scalar,
        "gru": gru,
        "threshold": threshold,
    }


def tour():
    import jax
    import jax.numpy as jnp

    import jaxrnn

    key = jax.random.PRNGKey(0)
    n_steps, batch, in_dim, hidden = 20, 3, 4, 8
    xs = jax.random.normal(key, (n_steps, batch, in_dim), jnp.float32)
    for name, module in _cell_modules().items():
        if name == "lstm_scalar":
            params, carry, seq = module.init(key), module.init_carry((batch,)), xs[..., 0]
        else:
            params = module.init(key, in_dim, hidden)
            carry, seq = module.init_carry((batch,), hidden), xs
        final, ys = jax.jit(lambda p, c, s, m=module: jaxrnn.scan(m.apply, p, c, s))(
            params, carry, seq
        )
        loop_carry = carry
        for t in range(n_steps):
            loop_carry, y_t = module.apply(params, loop_carry, seq[t])
        diff = float(jnp.max(jnp.abs(ys[-1] - y_t)))
        n_params = sum(p.size for p in jax.tree_util.tree_leaves(params))
        yield (
            f"{name}: {n_params} parameters, ys {tuple(ys.shape)} from one lax.scan; "
            f"max |scan - Python loop| = {diff:.1e}"
        )
    from jaxrnn.cells import lstm

    params = lstm.init(key, in_dim, hidden)
    lengths = jnp.array([20, 7, 1])
    (c, h), ys = jaxrnn.scan(
        lstm.apply, params, lstm.init_carry((batch,), hidden), xs, lengths=lengths
    )
    alone = jaxrnn.scan(lstm.apply, params, lstm.init_carry((), hidden), xs[:7, 1])[0][1]
    yield (
        f"lengths {lengths.tolist()}: carry of sequence 2 equals running it alone to "
        f"{float(jnp.max(jnp.abs(h[1] - alone))):.1e}; outputs past its length are "
        f"{float(jnp.abs(ys[7:, 1]).max()):.0f}"
    )
    steps = jaxrnn.steps.sequential_steps(
        lambda s: jaxrnn.scan(lstm.apply, params, lstm.init_carry((batch,), hidden), s), xs
    )
    yield f"sequential steps measured from the traced scan over T = {n_steps}: {steps}"


def list_cells(args) -> int:
    import jax

    key = jax.random.PRNGKey(0)
    print(f"cells for in_dim = {args.in_dim}, hidden = {args.hidden}:")
    for name, module in _cell_modules().items():
        if name == "lstm_scalar":
            params = module.init(key)
        else:
            params = module.init(key, args.in_dim, args.hidden)
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in params.items())
        print(f"  {name:12s} {shapes}")
    return 0


def add_commands(subparsers) -> None:
    parser = command(
        subparsers, "cells", list_cells, help="list the cells and their parameter shapes"
    )
    parser.add_argument("--in-dim", type=integer(1), default=2, help="input size D")
    parser.add_argument("--hidden", type=integer(1), default=3, help="hidden size H")
