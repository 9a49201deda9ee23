"""The optax transformation: the same exact step in a standard optax loop, and undo."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrnn import reversible
from jaxrnn.exact import fixed_point as fp

A = jnp.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.1], [0.0, 0.1, 0.4]], jnp.float32)
PARAMS = {"w": jnp.array([1.0, -2.0, 0.5], jnp.float32), "b": jnp.ones((2, 2), jnp.float32)}


def loss(p):
    return 0.5 * p["w"] @ A @ p["w"] + jnp.sum(jnp.cos(p["b"]) * p["b"] ** 2)


GRAD = jax.jit(jax.grad(loss))  # one compiled gradient, forward and in undo


def run(opt, n_steps, grad=None):
    grad = GRAD if grad is None else grad
    state = opt.init(PARAMS)
    update = jax.jit(opt.update)
    params = PARAMS
    for _ in range(n_steps):
        updates, state = update(grad(reversible.params_of(opt, state)), state)
        params = optax.apply_updates(params, updates)
    return state, params


def words_of(state):
    return jax.tree.leaves(state.theta) + jax.tree.leaves(state.velocity)


def test_undo_restores_the_initial_state_bit_for_bit():
    opt = reversible.reversible_momentum(0.1, 0.9, max_steps=400)
    start = opt.init(PARAMS)
    state, params = run(opt, 300)
    exact = reversible.params_of(opt, state)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(exact), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)  # apply_updates agrees to rounding
    undo = jax.jit(lambda s: reversible.undo(opt, s, GRAD))
    for _ in range(300):
        state = undo(state)
    reversible.raise_if_failed(state)
    assert int(state.step) == 0
    for got, want in zip(words_of(state), words_of(start), strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(want))
    assert all(not np.asarray(w).any() for w in jax.tree.leaves(state.word))


def test_the_step_follows_float64_momentum_sgd():
    opt = reversible.reversible_momentum(0.05, 0.875, max_steps=100)
    state, _ = run(opt, 100)
    ref = optax.sgd(0.05, momentum=0.875)
    p64 = jax.tree.map(lambda x: np.asarray(x, np.float64), PARAMS)
    ref_state = ref.init(p64)
    for _ in range(100):
        updates, ref_state = ref.update(jax.grad(loss)(p64), ref_state)
        p64 = optax.apply_updates(p64, updates)
    got = reversible.params_of(opt, state)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(p64), strict=True):
        np.testing.assert_allclose(g, w, atol=2e-5)


def test_a_learning_rate_schedule_and_optax_chain():
    schedule = optax.linear_schedule(0.1, 0.01, 50)
    opt = reversible.reversible_momentum(schedule, 0.6, max_steps=60)
    chained = optax.chain(reversible.as_gradient_transformation(opt))
    state, update = chained.init(PARAMS), jax.jit(chained.update)
    for _ in range(60):  # jitted both ways: the schedule's alpha_k must round the same
        _, state = update(GRAD(reversible.params_of(opt, state[0])), state)
    inner, undo = state[0], jax.jit(lambda s: reversible.undo(opt, s, GRAD))
    for _ in range(60):
        inner = undo(inner)
    reversible.raise_if_failed(inner)
    got = reversible.params_of(opt, inner)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(PARAMS), strict=True):
        assert np.array_equal(np.asarray(g), np.asarray(w))


def test_guards_and_checked_failures():
    with pytest.raises(ValueError, match="betas: expected momentum in"):
        reversible.reversible_momentum(0.1, 1.0, max_steps=10)
    with pytest.raises(ValueError, match="alphas: expected step sizes > 0"):
        reversible.reversible_momentum(0.0, 0.9, max_steps=10)
    with pytest.raises(ValueError, match=r"alphas: .* got 0.0 at step 5"):
        reversible.reversible_momentum(optax.linear_schedule(0.1, -0.1, 10), 0.9, max_steps=10)
    with pytest.raises(ValueError, match="max_steps: expected a positive integer"):
        reversible.reversible_momentum(0.1, 0.9, max_steps=0)
    opt = reversible.reversible_momentum(0.1, 0.9, max_steps=5)
    state, _ = run(opt, 6)  # one step more than the buffer was sized for
    with pytest.raises(reversible.FixedPointOverflowError, match="at step 5"):
        reversible.raise_if_failed(state)
    state, _ = run(opt, 3, grad=lambda p: jax.tree.map(lambda x: 1e9 * x, GRAD(p)))
    with pytest.raises(reversible.FixedPointOverflowError, match="at step 0"):
        reversible.raise_if_failed(state)
    opt = reversible.reversible_momentum(0.1, 0.5, max_steps=200)
    state, _ = run(opt, 200)
    wrong = jax.jit(lambda p: jax.tree.map(lambda g: g * 1.0001, GRAD(p)))
    undo = jax.jit(lambda s: reversible.undo(opt, s, wrong))
    for _ in range(200):
        state = undo(state)
    with pytest.raises(reversible.TrajectoryMismatchError, match="differs from the one"):
        reversible.raise_if_failed(state)
    # Before any spill only the checksum at step 0 can see a wrong gradient.
    opt = reversible.reversible_momentum(0.1, 0.99, max_steps=30)
    state, _ = run(opt, 30)
    undo = jax.jit(lambda s: reversible.undo(opt, s, wrong))
    for _ in range(30):
        state = undo(state)
    with pytest.raises(reversible.TrajectoryMismatchError, match="at step 0"):
        reversible.raise_if_failed(state)
    assert isinstance(
        jax.tree.leaves(state.theta, is_leaf=lambda x: isinstance(x, fp.Word))[0], fp.Word
    )


def test_updates_lead_from_the_params_given_to_the_exact_parameters():
    opt = reversible.reversible_momentum(0.1, 0.9, max_steps=3)
    start = opt.init(PARAMS)
    held = jax.tree.map(lambda p: p + 1e-3, PARAMS)  # what the user holds, off the grid
    updates, state = jax.jit(opt.update)(GRAD(PARAMS), start, held)
    exact = reversible.params_of(opt, state)
    for u, h, e in zip(*map(jax.tree.leaves, (updates, held, exact)), strict=True):
        assert np.array_equal(np.asarray(u), np.asarray(e) - np.asarray(h))
    updates, _ = opt.update(GRAD(PARAMS), start)  # without params: from theta(0)
    for u, p, e in zip(*map(jax.tree.leaves, (updates, PARAMS, exact)), strict=True):
        assert np.array_equal(np.asarray(u), np.asarray(e) - np.asarray(p))
    # An undo past step 0 leaves the words as they are and records the mistake.
    again = reversible.undo(opt, start, GRAD)
    assert int(again.mismatch_step) == 0 and int(again.step) == 0
    for got, want in zip(words_of(again), words_of(start), strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(want))
