"""Binomial checkpointing: the schedule's cost against a dynamic programme, gradients
against jax.grad of the plain scan (float64, <= 1e-12 relative) with lengths, reverse, jit
and vmap, and compiled temporaries that do not grow with T."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import checkpointed, memory
from jaxrnn.cells import elman, gru, lstm

KEY = jax.random.PRNGKey(0)


@functools.cache
def fewest_advances(n, s):
    """The optimum by exhaustive recursion: advance m, keep, reverse the two parts."""
    if n == 1:
        return 0
    if s == 1:
        return n * (n - 1) // 2
    return min(m + fewest_advances(n - m, s - 1) + fewest_advances(m, s) for m in range(1, n))


def test_griewank_formula_equals_the_dynamic_programme_and_its_edges():
    for k in range(1, 6):
        for n in range(1, 41):
            assert checkpointed.minimal_advances(n, k) == fewest_advances(n, k), (n, k)
    assert checkpointed.minimal_advances(50, 1) == 50 * 49 // 2
    assert checkpointed.minimal_advances(50, 50) == 49
    cost = checkpointed.schedule_cost(1000, 10)
    assert cost.repetitions == 4  # C(13, 10) = 286 < 1000 <= C(14, 10) = 1001
    assert cost.advances == checkpointed.minimal_advances(1000, 10) + 1
    assert cost.recomputed == cost.advances - 1000


def _dp_split_is_optimal(n, s):
    m = checkpointed.split(n, s)
    return m + fewest_advances(n - m, s - 1) + fewest_advances(m, s) == fewest_advances(n, s)


def test_split_is_an_optimal_first_checkpoint():
    assert all(_dp_split_is_optimal(n, s) for s in range(2, 6) for n in range(2, 60))


def test_the_scan_runs_exactly_the_optimal_number_of_cell_steps():
    calls = []
    params = elman.init(KEY, 2, 3)

    def cell(p, c, x):
        jax.debug.callback(lambda: calls.append(1))
        return elman.apply(p, c, x)

    for n_steps, k in ((9, 1), (23, 3)):
        xs = jax.random.normal(KEY, (n_steps, 2))
        calls.clear()
        final = lambda h, xs=xs, k=k: jnp.sum(jaxrnn.scan(cell, params, h, xs, checkpoints=k)[0])
        grad = jax.grad(final)(jnp.zeros(3))
        jax.block_until_ready(grad)
        # forward steps without a vjp (the DP optimum, plus the last step) and T vjp steps
        assert len(calls) == fewest_advances(n_steps, k) + 1 + n_steps, (n_steps, k)


def _setup(cell_module, n_steps=13, batch=3, in_dim=2, hidden=4):
    keys = jax.random.split(KEY, 4)
    params = cell_module.init(keys[0], in_dim, hidden, dtype=jnp.float64)
    params = {k: v + 0.2 * jax.random.normal(keys[1], v.shape) for k, v in params.items()}
    xs = jax.random.normal(keys[2], (n_steps, batch, in_dim))
    carry = jax.tree_util.tree_map(
        lambda a: jax.random.normal(keys[3], a.shape), cell_module.init_carry((batch,), hidden)
    )
    return params, carry, xs


def _loss(cell, params, carry, xs, lengths, reverse, checkpoints):
    final, ys = jaxrnn.scan(
        cell, params, carry, xs, lengths=lengths, reverse=reverse, checkpoints=checkpoints
    )
    weights = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree_util.tree_leaves(final)) + jnp.sum(
        weights * ys
    )


def _assert_close(got, want, rtol):
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        scale = float(jnp.max(jnp.abs(w)))
        assert float(jnp.max(jnp.abs(g - w))) <= rtol * scale, (g, w)


def test_gradients_equal_the_plain_scan_with_lengths_under_jit():
    params, carry, xs = _setup(gru)
    lengths = jnp.array([13, 5, 0])
    xs = xs.at[7:, 1].set(jnp.nan)  # padding never reaches a gradient
    grad = jax.value_and_grad(_loss, argnums=(1, 2, 3))

    @jax.jit
    def both(params, carry, xs):
        return [grad(gru.apply, params, carry, xs, lengths, False, k) for k in (None, 3)]

    (value, want), (got_value, got) = both(params, carry, xs)
    _assert_close(got[:2], want[:2], 1e-12)
    _assert_close(got[2][:, 0], want[2][:, 0], 1e-12)
    _assert_close(got[2][:5, 1], want[2][:5, 1], 1e-12)
    assert float(got_value) == pytest.approx(float(value), rel=1e-14)


def test_under_vmap_and_with_an_integer_carry_leaf_and_a_closed_over_weight():
    params, h0, xs = _setup(elman, n_steps=11)
    scale = jnp.float64(0.7)

    def cell(p, carry, x):  # a step counter in the carry; a weight reached by closure
        h, count = carry
        h, y = elman.apply(p, h, scale * x)
        return (h, count + 1), y

    def loss(p, scale_value, h, xs, checkpoints):
        nonlocal scale
        scale = scale_value
        (h, count), ys = jaxrnn.scan(cell, p, (h, jnp.int32(0)), xs, checkpoints=checkpoints)
        return jnp.sum(h**3) + jnp.sum(ys * ys) + 0 * count

    grad = jax.grad(loss, argnums=(0, 1, 2, 3))
    per_sequence = jax.vmap(grad, in_axes=(None, None, 0, 1, None))
    want = per_sequence(params, 0.7, h0, xs, None)
    got = jax.jit(per_sequence, static_argnums=4)(params, 0.7, h0, xs, 2)
    _assert_close(got, want, 1e-12)


def test_compiled_temporaries_do_not_grow_with_the_sequence_length():
    def temp(method, n_steps, k=None):
        return memory.gradient_memory(method, n_steps, batch=4, hidden=32, checkpoints=k).temp

    assert temp("autodiff", 1000) / temp("autodiff", 125) > 6  # residuals grow with T
    assert temp("checkpoints", 1000, 4) / temp("checkpoints", 125, 4) < 1.05


def test_lstm_layer_with_checkpoints_equals_its_hand_bptt():
    params, carry, xs = _setup(lstm, n_steps=9)
    lengths = jnp.array([9, 4, 1])

    def loss(params, carry, xs, checkpoints):
        (c, h), ys = jaxrnn.lstm_layer(
            params, carry, xs, lengths=lengths, reverse=True, checkpoints=checkpoints
        )
        return jnp.sum(jnp.sin(c)) + jnp.sum(h * h) + jnp.sum(jnp.cos(ys))

    both = jax.jit(
        lambda *args: [jax.value_and_grad(loss, argnums=(0, 1, 2))(*args, k) for k in (None, 2)]
    )
    want, got = both(params, carry, xs)
    _assert_close(got, want, 1e-12)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "3"])
def test_bad_checkpoints_are_refused_by_name(bad):
    params, h0, xs = _setup(elman, n_steps=3)
    with pytest.raises(ValueError, match="checkpoints: expected a positive integer"):
        jaxrnn.scan(elman.apply, params, h0, xs, checkpoints=bad)
    with pytest.raises(ValueError, match="checkpoints"):
        jaxrnn.lstm_layer(*_setup(lstm, n_steps=3), checkpoints=bad)


def test_zero_steps_and_more_checkpoints_than_steps():
    params, h0, xs = _setup(elman, n_steps=4)
    final, ys = jaxrnn.scan(elman.apply, params, h0, xs[:0], checkpoints=3)
    np.testing.assert_array_equal(final, h0)
    assert ys.shape == (0, 3, 4)
    final, ys = jaxrnn.scan(elman.apply, params, h0, xs, checkpoints=100)
    want = jaxrnn.scan(elman.apply, params, h0, xs)
    np.testing.assert_array_equal(final, want[0])
    np.testing.assert_array_equal(ys, want[1])
    assert checkpointed.schedule_cost(4, 100).recomputed == 0
