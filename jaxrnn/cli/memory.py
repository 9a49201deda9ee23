"""Tour section: backprop through time in bounded memory (SPEC §10-11)."""

from __future__ import annotations

TITLE = "Backprop through time in bounded memory: binomial checkpoints, a reversible GRU"
ORDER = 65


def tour():
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxrnn
    from jaxrnn import checkpointed, reversible_rnn
    from jaxrnn.cells import gru, revgru

    n_steps = 10**6
    costs = ", ".join(
        f"k = {k}: {checkpointed.schedule_cost(n_steps, k).advances / n_steps:.2f}"
        for k in (8, 32, 128)
    )
    yield (
        f"binomial checkpointing, T = 10^6: forward cell steps per step (the minimum "
        f"P(T,k) + 1, Griewank) {costs}; autodiff 1, per-step remat 2"
    )

    start = time.perf_counter()
    key = jax.random.PRNGKey(0)
    batch, hidden, steps = 4, 8, 2000
    params = revgru.init(key, 2, hidden)
    carry = revgru.to_carry(0.5 * jax.random.normal(key, (batch, hidden)))
    xs = jax.random.normal(jax.random.fold_in(key, 1), (steps, batch, 2))
    tape = reversible_rnn.forward(revgru, params, carry, xs)
    back = reversible_rnn.reconstruct(revgru, params, tape, xs)
    exact = bool(np.array_equal(back.h, carry.h) and np.array_equal(back.word, carry.word))
    per_step = reversible_rnn.allocated_bits(tape) / steps
    moved = float(jnp.max(jnp.abs(tape.carry.h - carry.h)))
    yield (
        f"reversible GRU, {steps} steps (H = {hidden}): the state moved by up to {moved:.2f}; "
        f"rebuilt backwards by revgru.inverse bit for bit: {exact}; buffer {per_step:.2f} bits "
        f"per unit and step ({time.perf_counter() - start:.1f} s)"
    )

    kept = tape.memory.nbytes + tape.fingerprints.nbytes
    gru_params = gru.init(key, 2, hidden)
    loss = lambda p: jnp.sum(jaxrnn.scan(gru.apply, p, jnp.zeros((batch, hidden)), xs)[0])  # noqa: E731
    _, pullback = jax.vjp(loss, gru_params)
    residuals = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(pullback))
    yield (
        f"held between the forward and the backward pass over {steps} steps: autodiff of a GRU "
        f"(same H) {residuals / 1024:.0f} KiB of residuals, reversible_scan {kept / 1024:.1f} KiB "
        f"of buffer and fingerprints (bench/memory.py: B = 32, H = 256, T up to 10^6)"
    )
