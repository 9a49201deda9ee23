"""Reversible momentum SGD: step time vs optax, stored bits vs the bound, hypergradient memory.

    python bench/reversible.py

1. An MLP of about 10^6 parameters (784-1024-256-10, float32, batch 128 and 1024): time of
   ``optax.sgd(momentum=0.9)`` in a plain optax loop (init, update,
   ``optax.apply_updates``), of ``jaxrnn.reversible.forward`` / ``reverse`` with the same
   gradient, and of ``reversible_momentum`` in the same plain optax loop, all as one
   jitted ``lax.scan`` over the steps; also for a call that spills, and with a
   precomputed gradient (the update alone). Acceptance at batch 128: the reversible step
   <= 1.3x the optax step, through ``forward`` and through the optax transformation;
   reverse <= 2x.
2. Stored bits after T = 10^4 steps vs the information bound D·Σ log2(1/beta_k).
3. Compiled memory of the hypergradient's reverse sweep vs ``jax.grad`` through the
   unrolled loop, for growing T.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).parent))
from _results import interleaved_times, machine_line, markdown_table, write_section  # noqa: E402

from jaxrnn import reversible  # noqa: E402
from jaxrnn.reversible import xla_cpu  # noqa: E402

STEPS = 20
ROUNDS = 15
BATCHES = (128, 1024)
WARM_STEPS = 80  # the call after 80 steps spills a byte of every buffer word (beta 0.9)
SIZES = (784, 1024, 256, 10)
CONTENDERS = ("optax", "forward", "reverse", "transform")


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


def optax_loop(opt, grad_fn, params, *, first_step=0):
    """A plain optax loop of STEPS steps in one jitted ``lax.scan``; returns a blocking call."""

    @jax.jit
    def run(p, s):
        def body(c, k):
            p, s = c
            updates, s = opt.update(grad_fn(p, k), s, p)
            return (optax.apply_updates(p, updates), s), None

        return jax.lax.scan(body, (p, s), first_step + jnp.arange(STEPS))[0]

    state = opt.init(params)
    for _ in range(first_step // STEPS):  # advance the state (a transform that spills)
        params, state = run(params, state)
    return lambda: jax.block_until_ready(run(params, state))


class Timing(NamedTuple):
    per_step: dict  # contender -> median seconds per step
    ratios: dict  # contender -> median per-round ratio to optax
    quartiles: dict  # contender -> (first, third) quartile of the per-round ratios


def time_steps(params, grad_fn, alpha=0.01, beta=0.9, *, warm_steps=0):
    """Per-step seconds (medians over interleaved rounds) and the per-round ratios to optax.

    With ``warm_steps``, the reversible state first runs that many steps, so that the timed
    call starts with a non-empty buffer (and spills).
    """
    alphas, betas = np.full(STEPS, alpha, np.float32), np.full(STEPS, beta)
    start = reversible.init(params)
    for _ in range(warm_steps // STEPS):
        start = reversible.forward(start, grad_fn, alphas, betas)
    end = reversible.forward(start, grad_fn, alphas, betas)
    assert not warm_steps or all(end.segments[-1].new_slots), "expected a spilling call"
    transform = reversible.as_gradient_transformation(
        reversible.reversible_momentum(alpha, beta, max_steps=warm_steps + STEPS)
    )
    times = interleaved_times(
        {
            "optax": optax_loop(optax.sgd(alpha, momentum=beta), grad_fn, params),
            "forward": lambda: jax.block_until_ready(
                reversible.forward(start, grad_fn, alphas, betas).theta
            ),
            "reverse": lambda: jax.block_until_ready(
                reversible.reverse(end, grad_fn, alphas, betas).theta
            ),
            "transform": optax_loop(transform, grad_fn, params, first_step=warm_steps),
        },
        rounds=ROUNDS,
    )
    return summarise(times)


def summarise(times) -> Timing:
    per_step = {name: statistics.median(t) / STEPS for name, t in times.items()}
    per_round = {
        name: [t / o for t, o in zip(times[name], times["optax"], strict=True)] for name in times
    }
    ratios = {name: statistics.median(r) for name, r in per_round.items()}
    quartiles = {name: tuple(statistics.quantiles(r, n=4)[::2]) for name, r in per_round.items()}
    return Timing(per_step, ratios, quartiles)


def row(label, timing: Timing):
    ms = lambda name: f"{timing.per_step[name] * 1e3:.2f} ms" if name in timing.per_step else "-"
    ratio = lambda name: f"{timing.ratios[name]:.2f}" if name in timing.ratios else "-"
    return [label, *map(ms, CONTENDERS), *(ratio(name) for name in CONTENDERS[1:])]


def floor_transformation(alpha):
    """The transformation's arrays and passes with no arithmetic: its memory-traffic floor.

    Same state (five uint32 words per parameter), same reads (words, gradient, params),
    same writes (words, updates), through the same one-pass loop, in the same optax loop.
    """

    def init(params):
        words = lambda p: [jnp.zeros(p.shape, jnp.uint32) for _ in range(5)]
        return jax.tree.map(words, params)

    def update(grads, state, params):
        def leaf(words, g, p):
            kernel = lambda *a: [w + 1 for w in a[:5]] + [a[6] * 0 - alpha * a[5]]
            out = xla_cpu.one_pass(kernel, *words, g, p)
            return out[:5], out[5]

        out = jax.tree.map(leaf, state, grads, params, is_leaf=lambda x: isinstance(x, list))
        pick = lambda i: jax.tree.map(lambda o: o[i], out, is_leaf=lambda x: isinstance(x, tuple))
        return pick(1), pick(0)

    return optax.GradientTransformation(init, update)


def floor_forward(params, grad_fn):
    """``forward``'s loop with no arithmetic: its arrays, reads, writes and passes.

    Five uint32 words per parameter and the gradient read, five words and the float
    parameters written, one pass per leaf (:func:`xla_cpu.one_pass`), the steps scanned as
    ``forward`` scans them (:func:`xla_cpu.scan_steps`). Returns a blocking call.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    shapes = [p.shape for p in leaves]

    def kernel(*a):  # finite parameters for the gradient, from a word and the gradient
        return [w + 1 for w in a[:5]] + [(a[0] & 1).astype(a[5].dtype) * 1e-3 - 0.1 * a[5]]

    @jax.jit
    def run(words, floats):
        def body(carry, k):
            words, floats = carry
            grads = treedef.flatten_up_to(grad_fn(treedef.unflatten(floats), k))
            outs = [xla_cpu.one_pass(kernel, *w, g) for w, g in zip(words, grads, strict=True)]
            return ([o[:5] for o in outs], [o[5] for o in outs]), None

        return xla_cpu.scan_steps(body, (words, floats), jnp.arange(STEPS), shapes)[0]

    words = [[jnp.zeros(p.shape, jnp.uint32) for _ in range(5)] for p in leaves]
    return lambda: jax.block_until_ready(run(words, leaves))


def verdict(label, timing: Timing, name: str, limit: float) -> str:
    ratio, (q1, q3) = timing.ratios[name], timing.quartiles[name]
    met = "met" if ratio <= limit else "NOT met"
    return f"{label}: {ratio:.2f}x [{q1:.2f}-{q3:.2f}] (<= {limit}x: {met})"


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
    load = os.getloadavg()[0]
    rows, verdicts = [], []
    for batch in BATCHES:
        params, grad_fn = mlp_problem(batch)
        timing = time_steps(params, grad_fn)
        rows.append(row(f"MLP gradient, batch {batch}", timing))
        if batch == BATCHES[0]:
            verdicts = [
                verdict(f"forward, batch {batch}", timing, "forward", 1.3),
                verdict(f"optax transform, batch {batch}", timing, "transform", 1.3),
                verdict(f"reverse, batch {batch}", timing, "reverse", 2.0),
            ]
    params, grad_fn = mlp_problem(BATCHES[0])
    timing = time_steps(params, grad_fn, warm_steps=WARM_STEPS)
    label = f"MLP gradient, batch {BATCHES[0]}, steps {WARM_STEPS}-{WARM_STEPS + STEPS - 1}"
    rows.append(row(label + " (a spill)", timing))
    n_params = sum(p.size for p in jax.tree.leaves(params))
    fixed = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), params)
    rows.append(row("update only (fixed gradient)", time_steps(params, lambda p, k: fixed)))
    times = interleaved_times(
        {
            "optax": optax_loop(optax.sgd(0.01, momentum=0.9), grad_fn, params),
            "forward": floor_forward(params, grad_fn),
            "transform": optax_loop(floor_transformation(0.01), grad_fn, params),
        },
        rounds=ROUNDS,
    )
    floor = summarise(times)
    rows.append(row(f"batch {BATCHES[0]}, the same loops without arithmetic", floor))
    timing = markdown_table(
        ["per step", "optax.sgd(momentum)", "reversible forward", "reversible reverse",
         "optax transform", "forward / optax", "reverse / optax", "transform / optax"],
        rows,
    )  # fmt: skip
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

Load average when the run started: {load:.1f} on {os.cpu_count()} cores (other work on the
machine slows every contender alike within a round; the ratios are what compare).

MLP {"-".join(map(str, SIZES))}, {n_params} float32 parameters, beta 0.9; {STEPS} steps
per jitted `lax.scan` call (host-side work included), medians of {ROUNDS} rounds after
warm-up, the contenders taking turns within each round; the ratios are medians of the
per-round ratios. optax and the optax transform run in the same plain optax loop (init,
update, `optax.apply_updates`); `forward` and `reverse` scan the steps themselves. 64-bit
fixed-point words as `uint32` pairs (no x64); each step one pass over each leaf. The
spilling row starts after {WARM_STEPS} steps, so that the timed call moves a byte of every
buffer word to a slot. The last row runs `forward`'s loop and the optax transform with
the same arrays, reads, writes and passes but no arithmetic: the floor XLA:CPU allows each
(a one-pass loop cannot overwrite its inputs, so a user's loop copies the transform's
words after every step, where `forward` alternates two sets of buffers). Acceptance at
batch {BATCHES[0]} (per-round quartiles in brackets): **{"; ".join(verdicts)}**.

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
