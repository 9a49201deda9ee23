"""Hypergradients by exact reversal against jax.grad through the unrolled float64 loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import reversible

K = jax.random.split(jax.random.PRNGKey(0), 6)
X = jax.random.normal(K[0], (4, 16, 3))
Y = jax.random.normal(K[1], (4, 16))
XV = jax.random.normal(K[2], (16, 3))
YV = jax.random.normal(K[3], (16,))
P0 = {
    "w1": 0.5 * jax.random.normal(K[4], (3, 5)),
    "w2": 0.5 * jax.random.normal(K[5], (5,)),
    "b": jnp.array(0.1),
}
LAM = {"l2": jnp.array(0.01)}
T = 40


def model(p, x):
    return jnp.tanh(x @ p["w1"]) @ p["w2"] + p["b"]


def train_loss(p, lam, k):
    x, y = X[k % 4], Y[k % 4]
    return jnp.mean((model(p, x) - y) ** 2) + lam["l2"] * jnp.sum(p["w1"] ** 2)


def val_loss(p, lam):
    return jnp.mean((model(p, XV) - YV) ** 2)


def unrolled(alphas, betas, p0, lam):
    """Training in float64, written out as the SPEC's two lines, differentiated by jax.grad."""

    def step(carry, x):
        p, v = carry
        a, b, k = x
        g = jax.grad(train_loss)(p, lam, k)
        a = a if isinstance(a, dict) else jax.tree.map(lambda _: a, p)
        v = jax.tree.map(lambda v, g, a: b * v - a * g, v, g, a)
        return (jax.tree.map(jnp.add, p, v), v), None

    v0 = jax.tree.map(jnp.zeros_like, p0)
    (p, _), _ = jax.lax.scan(step, (p0, v0), (alphas, betas, jnp.arange(T)))
    return val_loss(p, lam)


def flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def rel_err(a, b):
    a, b = flat(a), flat(b)
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_hypergradient_equals_autodiff_through_the_unrolled_loop():
    alphas = jnp.linspace(0.02, 0.08, T)
    betas = reversible.represented_betas(np.linspace(0.5, 0.95, T))  # exactly n / 2^16
    value, hg = reversible.hypergradient(train_loss, val_loss, P0, alphas, betas, LAM, frac_bits=48)
    ref_value, ref = jax.value_and_grad(unrolled, argnums=(0, 1, 2, 3))(
        alphas, jnp.asarray(betas), P0, LAM
    )
    assert float(value) == pytest.approx(float(ref_value), rel=1e-9)
    assert hg.alphas.shape == (T,) and hg.betas.shape == (T,)
    for got, want in zip(hg, ref, strict=True):
        assert rel_err(got, want) <= 1e-6
    assert float(jnp.abs(hg.hyper["l2"])) > 0  # the L2 weight really matters


def test_per_leaf_step_sizes_give_per_leaf_hypergradients():
    alphas = {"w1": jnp.full(T, 0.05), "w2": jnp.full(T, 0.03), "b": jnp.full(T, 0.01)}
    betas = np.full(T, 0.875)
    _, hg = reversible.hypergradient(train_loss, val_loss, P0, alphas, betas, LAM, frac_bits=48)
    ref = jax.grad(unrolled)(alphas, jnp.asarray(betas), P0, LAM)
    assert set(hg.alphas) == {"w1", "w2", "b"}
    assert rel_err(hg.alphas, ref) <= 1e-6


def test_initial_scale_by_the_chain_rule_matches_autodiff():
    alphas, betas = jnp.full(T, 0.05), np.full(T, 0.75)

    def loss_of_scale(scale):
        p0 = jax.tree.map(lambda x: scale * x, P0)
        return unrolled(alphas, jnp.asarray(betas), p0, LAM)

    scale = 1.5
    p0 = jax.tree.map(lambda x: scale * x, P0)
    _, hg = reversible.hypergradient(train_loss, val_loss, p0, alphas, betas, LAM, frac_bits=48)
    d_scale = sum(
        jnp.sum(g * u)
        for g, u in zip(jax.tree.leaves(hg.params0), jax.tree.leaves(P0), strict=True)
    )
    assert float(d_scale) == pytest.approx(float(jax.grad(loss_of_scale)(scale)), rel=1e-6)


def test_hypergradient_in_float32_without_hyperparameters():
    p32 = jax.tree.map(lambda x: x.astype(jnp.float32), P0)
    train = lambda p, lam, k: train_loss(p, {"l2": 0.0}, k).astype(jnp.float32)
    val = lambda p, lam: val_loss(p, None).astype(jnp.float32)
    alphas, betas = jnp.full(T, 0.05, jnp.float32), np.full(T, 0.875)
    value, hg = reversible.hypergradient(train, val, p32, alphas, betas)
    assert hg.hyper is None and hg.alphas.dtype == jnp.float32
    ref = jax.grad(unrolled)(alphas.astype(jnp.float64), jnp.asarray(betas), P0, {"l2": 0.0})
    assert rel_err(hg.alphas, ref) <= 1e-3  # float32 gradients, float32 adjoints


def test_sweep_memory_reports_the_buffer_and_the_compiled_sweep():
    alphas, betas = jnp.full(T, 0.05), np.full(T, 0.5)
    mem = reversible.sweep_memory(train_loss, val_loss, P0, alphas, betas, LAM)
    end = reversible.forward(
        reversible.init(P0), lambda p, k: jax.grad(train_loss)(p, LAM, k), alphas, betas
    )
    # 21 parameters, 40 bits destroyed each: a 32-bit word and spilled bytes
    spills = end.slots[0].shape[0]
    assert spills >= 1 and all(s.shape[0] == spills for s in end.slots)
    assert mem["buffer_bytes"] == reversible.stored_bits(end) // 8 == 21 * (32 + 8 * spills) // 8
    assert mem["temp_bytes"] > 0 and mem["argument_bytes"] >= mem["buffer_bytes"]


def test_a_bare_array_hyperparameter_gets_its_gradient():
    def train_bare(p, lam, k):
        return train_loss(p, {"l2": lam}, k)

    alphas, betas = jnp.full(T, 0.05), reversible.represented_betas(np.full(T, 0.9))
    _, hg = reversible.hypergradient(train_bare, lambda p, lam: val_loss(p, {"l2": lam}), P0,
                                     alphas, betas, LAM["l2"])  # fmt: skip
    want = jax.grad(unrolled, argnums=3)(alphas, jnp.asarray(betas), P0, LAM)
    assert jnp.shape(hg.hyper) == () and rel_err(hg.hyper, want["l2"]) <= 1e-6


def test_a_mismatch_at_the_first_step_is_detected_by_the_sweep():
    traces = []

    def flaky(p, lam, k):  # traced by the forward pass first, then by the sweep
        traces.append(k)
        bump = jnp.where(k == 0, 1e-6 * (len(traces) > 1), 0.0)
        return train_loss(p, lam, k) + bump * jnp.sum(p["w1"])

    # The sweep's gradient differs from the forward pass's only at step 0, by 54 units of
    # 2^-30 (< n): the reconstructed buffer words, not v(0), show it.
    with pytest.raises(reversible.TrajectoryMismatchError):
        reversible.hypergradient(
            flaky, val_loss, P0, jnp.full(T, 0.05), np.full(T, 0.9), LAM, frac_bits=30
        )
