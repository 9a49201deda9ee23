"""Reversible momentum SGD: step time vs optax, stored bits vs the bound, hypergradient memory.

    python bench/reversible.py

1. An MLP of about 10^6 parameters (784-1024-256-10, float32, batch 128 and 1024): time of
   ``optax.sgd(momentum=0.9)`` and of ``jaxrnn.reversible.forward`` / ``reverse`` with the
   same gradient, both as one jitted ``lax.scan`` over the steps, also for a call that
   spills; and the same with a precomputed gradient (the update alone). Acceptance:
   forward step <= 2x the optax step.
2. Stored bits after T = 10^4 steps vs the information bound D·Σ log2(1/beta_k).
3. Compiled memory of the hypergradient's reverse sweep vs ``jax.grad`` through the
   unrolled loop, for growing T.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).parent))
from _results import interleaved_times, machine_line, markdown_table, write_section  # noqa: E402

from jaxrnn import reversible  # noqa: E402

STEPS = 20
ROUNDS = 15
BATCHES = (128, 1024)
WARM_STEPS = 80  # the call after 80 steps spills a byte of every buffer word (beta 0.9)
SIZES = (784, 1024, 256, 10)


def mlp_problem(batch):
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    params = {}
    for i, (m, n) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        params[f"w{i}"] = jax.random.normal(keys[i], (m, n), jnp.float32) / np.sqrt(m)
        params[f"b{i}"] = jnp.zeros((n,), jnp.float32)
    x = jax.random.normal(keys[5], (8, batch, SIZES[0]), jnp.float32)
    y = jax.random.randint(keys[6], (8, batch), 0, SIZES[-1])

    def loss(p, k):
        h = x[k % 8]
        for i in range(len(SIZES) - 1):
            h = h @ p[f"w{i}"] + p[f"b{i}"]
            if i < len(SIZES) - 2:
                h = jax.nn.relu(h)
        return optax.softmax_cross_entropy_with_integer_labels(h, y[k % 8]).mean()

    return params, jax.grad(loss)


def time_steps(params, grad_fn, alpha=0.01, beta=0.9, *, warm_steps=0):
    """Per-step seconds (medians over interleaved rounds) and the median per-round ratios.

    Returns ``(optax, forward, reverse, forward / optax, reverse / optax)``. With
    ``warm_steps``, the reversible state first runs that many steps, so that the timed
    call starts with a non-empty buffer (and may spill).
    """
    opt = optax.sgd(alpha, momentum=beta)

    @jax.jit
    def optax_run(p, s):
        def body(c, k):
            p, s = c
            updates, s = opt.update(grad_fn(p, k), s, p)
            return (optax.apply_updates(p, updates), s), None

        return jax.lax.scan(body, (p, s), jnp.arange(STEPS))[0]

    state0 = opt.init(params)
    alphas, betas = np.full(STEPS, alpha, np.float32), np.full(STEPS, beta)
    start = reversible.init(params)
    for _ in range(warm_steps // STEPS):
        start = reversible.forward(start, grad_fn, alphas, betas)
    end = reversible.forward(start, grad_fn, alphas, betas)
    assert not warm_steps or all(end.segments[-1].new_slots), "expected a spilling call"
    times = interleaved_times(
        {
            "optax": lambda: jax.block_until_ready(optax_run(params, state0)),
            "forward": lambda: jax.block_until_ready(
                reversible.forward(start, grad_fn, alphas, betas).theta
            ),
            "reverse": lambda: jax.block_until_ready(
                reversible.reverse(end, grad_fn, alphas, betas).theta
            ),
        },
        rounds=ROUNDS,
    )
    per_step = [statistics.median(times[name]) / STEPS for name in ("optax", "forward", "reverse")]
    per_round = {
        name: [t / o for t, o in zip(times[name], times["optax"], strict=True)]
        for name in ("forward", "reverse")
    }
    ratios = [statistics.median(per_round[name]) for name in ("forward", "reverse")]
    quartiles = statistics.quantiles(per_round["forward"], n=4)
    return (*per_step, *ratios, (quartiles[0], quartiles[2]))


def row(label, t_optax, t_fwd, t_rev, r_fwd, r_rev, _quartiles=None):
    ms = lambda t: f"{t * 1e3:.2f} ms"
    return [label, ms(t_optax), ms(t_fwd), ms(t_rev), f"{r_fwd:.2f}", f"{r_rev:.2f}"]


def bits_rows():
    rows, dim, n_steps = [], 16, 10_000
    params = jnp.linspace(-1.0, 1.0, dim, dtype=jnp.float32)
    grad_fn = lambda p, k: 0.5 * p + 0.01 * jnp.sin(k * 1.0 + p)
    for beta in (0.5, 0.9, 0.99):
        end = reversible.forward(
            reversible.init(params), grad_fn, np.full(n_steps, 0.05), np.full(n_steps, beta)
        )
        stored = reversible.stored_bits(end)
        bound = reversible.information_bound(np.full(n_steps, beta), dim)
        limit = 1.1 * bound + 96 * dim
        rows.append([beta, f"{bound:.0f}", stored, f"{stored / bound:.3f}", f"{limit:.0f}",
                     "yes" if stored <= limit else "NO"])  # fmt: skip
    return rows


def memory_rows():
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    p0 = {"w1": 0.3 * jax.random.normal(keys[0], (8, 64)), "w2": jnp.zeros(64)}
    x = jax.random.normal(keys[1], (4, 32, 8))
    y = jax.random.normal(keys[2], (4, 32))

    def train(p, lam, k):
        out = jnp.tanh(x[k % 4] @ p["w1"]) @ p["w2"]
        return jnp.mean((out - y[k % 4]) ** 2) + lam * jnp.sum(p["w1"] ** 2)

    def val(p, lam):
        return jnp.mean((jnp.tanh(x[0] @ p["w1"]) @ p["w2"] - y[0]) ** 2)

    def unrolled(alphas, betas, p, lam):
        def body(c, xs):
            p, v = c
            a, b, k = xs
            g = jax.grad(train)(p, lam, k)
            v = jax.tree.map(lambda v, g: b * v - a * g, v, g)
            return (jax.tree.map(jnp.add, p, v), v), None

        v0 = jax.tree.map(jnp.zeros_like, p)
        steps = jnp.arange(alphas.shape[0])
        return val(jax.lax.scan(body, (p, v0), (alphas, betas, steps))[0][0], lam)

    rows, lam = [], jnp.float32(1e-3)
    for n_steps in (100, 400, 1600, 6400):
        alphas, betas = jnp.full(n_steps, 0.05, jnp.float32), np.full(n_steps, 0.9)
        mem = reversible.sweep_memory(train, val, p0, alphas, betas, lam)
        grad = jax.jit(jax.grad(unrolled, argnums=(0, 1, 2, 3)))
        compiled = grad.lower(alphas, jnp.asarray(betas, jnp.float32), p0, lam).compile()
        unrolled_bytes = compiled.memory_analysis().temp_size_in_bytes
        kib = lambda b: f"{b / 1024:.1f}"
        rows.append(
            [n_steps, kib(mem["temp_bytes"]), kib(mem["buffer_bytes"]), kib(unrolled_bytes)]
        )
    return rows


def main():
    rows, ratios = [], {}
    for batch in BATCHES:
        params, grad_fn = mlp_problem(batch)
        timing = time_steps(params, grad_fn)
        ratios[f"batch {batch}"] = timing[3], timing[5]
        rows.append(row(f"MLP gradient, batch {batch}", *timing))
    params, grad_fn = mlp_problem(BATCHES[0])
    timing = time_steps(params, grad_fn, warm_steps=WARM_STEPS)
    ratios[f"batch {BATCHES[0]}, spilling"] = timing[3], timing[5]
    label = f"MLP gradient, batch {BATCHES[0]}, steps {WARM_STEPS}-{WARM_STEPS + STEPS - 1}"
    rows.append(row(label + " (a spill)", *timing))
    n_params = sum(p.size for p in jax.tree.leaves(params))
    fixed = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), params)
    rows.append(row("update only (fixed gradient)", *time_steps(params, lambda p, k: fixed)))
    timing = markdown_table(
        ["per step", "optax.sgd(momentum)", "reversible forward", "reversible reverse",
         "forward / optax", "reverse / optax"],
        rows,
    )  # fmt: skip
    verdict = "; ".join(
        f"{name}: {r:.2f}x (per-round quartiles {q1:.2f}-{q3:.2f}), "
        f"{'met' if r <= 2 else 'NOT met'}"
        for name, (r, (q1, q3)) in ratios.items()
    )
    bits = markdown_table(
        ["beta", "bound D·Σlog2(1/β)", "stored bits", "stored / bound", "1.1·bound + 96·D",
         "within"],
        bits_rows(),
    )  # fmt: skip
    memory = markdown_table(
        ["T", "reverse sweep temp (KiB)", "buffer (KiB)", "unrolled jax.grad temp (KiB)"],
        memory_rows(),
    )
    body = f"""## Reversible momentum SGD (`python bench/reversible.py`)

{machine_line()}

MLP {"-".join(map(str, SIZES))}, {n_params} float32 parameters, beta 0.9; {STEPS} steps
per jitted `lax.scan` call (host-side work included), medians of {ROUNDS} rounds after
warm-up, the contenders taking turns within each round; the ratios are medians of the
per-round ratios. 64-bit fixed-point words as `uint32` pairs (no x64); one division per
step (the buffer pops before it pushes). The spilling row starts after {WARM_STEPS} steps,
so that the timed call moves a byte of every buffer word to a slot. Acceptance (forward
step <= 2x optax step with the same gradient): **{verdict}**.

{timing}

Stored bits after T = 10^4 steps, D = 16 (32-bit word + 8-bit spilled bytes per
parameter):

{bits}

Compiled temporary memory of the hypergradient's reverse sweep vs `jax.grad` through the
unrolled loop (`memory_analysis()`, 576 parameters, beta 0.9; the sweep's inputs add the
exact state and the buffer, listed):

{memory}
"""
    print(body)
    write_section("reversible", body)


if __name__ == "__main__":
    main()
