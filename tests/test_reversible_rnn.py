"""reversible_scan: gradients equal jax.grad of jaxrnn.scan over the same fixed-point cell
(float64, <= 1e-10 relative), the initial carry rebuilt bit for bit, mismatches and
overflows reported with their step, and memory that grows only by the buffer's bits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import memory, reversible_rnn
from jaxrnn.cells import revgru
from jaxrnn.reversible import FixedPointOverflowError, TrajectoryMismatchError

KEY = jax.random.PRNGKey(0)
T, B, D, H = 40, 3, 2, 6


def _problem(dtype=jnp.float64):
    keys = jax.random.split(KEY, 4)
    params = revgru.init(keys[0], D, H, dtype=dtype)
    params = {k: v + 0.5 * jax.random.normal(keys[1], v.shape, dtype) for k, v in params.items()}
    carry = revgru.to_carry(0.5 * jax.random.normal(keys[2], (B, H), dtype))
    xs = jax.random.normal(keys[3], (T, B, D), dtype)
    return params, carry, xs


def _loss(runner, params, h0, xs, lengths, reverse):
    carry = revgru.to_carry(h0)
    if runner == "reversible":
        final, ys = jaxrnn.reversible_scan(
            revgru, params, carry, xs, lengths=lengths, reverse=reverse
        )
    else:
        final, ys = jaxrnn.scan(revgru.apply, params, carry, xs, lengths=lengths, reverse=reverse)
    weights = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return jnp.sum(jnp.sin(final.h)) + jnp.sum(weights * ys)


def _assert_close(got, want, rtol):
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert float(jnp.max(jnp.abs(g - w))) <= rtol * float(jnp.max(jnp.abs(w))), (g, w)


def test_gradients_equal_jax_grad_of_the_plain_scan_with_lengths_and_reverse():
    reverse = True
    params, carry, xs = _problem()
    lengths = jnp.array([T, 17, 0])

    @jax.jit
    def both(params, h0, xs):
        grad = jax.value_and_grad(_loss, argnums=(1, 2, 3))
        args = (params, h0, xs, lengths, reverse)
        return grad("plain", *args), grad("reversible", *args)

    (value, want), (got_value, got) = both(params, carry.h, xs)
    _assert_close(got, want, 1e-10)
    assert float(got_value) == float(value)


def test_the_initial_carry_is_rebuilt_bit_for_bit_through_many_spills():
    params, carry, xs = _problem(jnp.float32)
    carry = revgru.to_carry(carry.h, max_forget_bits=3)
    tape = reversible_rnn.forward(revgru, params, carry, xs)
    final, ys = jaxrnn.scan(revgru.apply, params, carry, xs)
    np.testing.assert_array_equal(tape.carry.h, final.h)
    np.testing.assert_array_equal(tape.ys, ys)
    # m = 3: a byte every 2 steps (a kept word of 24 bits takes two 3-bit pushes), one at step 0
    assert tape.memory.shape == (T // 2, B, H)
    back = reversible_rnn.reconstruct(revgru, params, tape, xs)
    np.testing.assert_array_equal(back.h, carry.h)
    np.testing.assert_array_equal(back.word, carry.word)
    assert reversible_rnn.allocated_bits(tape) == 32 + 8 * (T // 2)


def test_a_trajectory_recomputed_with_other_inputs_is_caught_with_its_step():
    params, carry, xs = _problem(jnp.float32)
    carry = revgru.to_carry(carry.h, max_forget_bits=3)
    tape = reversible_rnn.forward(revgru, params, carry, xs)
    with pytest.raises(TrajectoryMismatchError, match="before step 25 differs"):
        reversible_rnn.reconstruct(revgru, params, tape, xs.at[25, 1, 0].add(1e-3))
    other = dict(params, b_z2=params["b_z2"] + 1e-3)
    with pytest.raises(TrajectoryMismatchError, match=f"before step {T - 1} differs"):
        reversible_rnn.reconstruct(revgru, other, tape, xs)


@dataclasses.dataclass(frozen=True)
class _SlightlyWrongInverse:
    """revgru whose inverse is off by one unit of the grid in one entry (a planted bug)."""

    apply = staticmethod(revgru.apply)

    @staticmethod
    def inverse(params, carry, x):
        back = revgru.inverse(params, carry, x)
        return dataclasses.replace(back, h=back.h.at[..., 0].add(2.0**-carry.frac_bits))


def test_an_inexact_inverse_is_caught_in_the_gradient_and_poisons_it_under_jit():
    params, carry, xs = _problem()
    loss = lambda p, cell: jnp.sum(jaxrnn.reversible_scan(cell, p, carry, xs)[0].h)  # noqa: E731
    with pytest.raises(TrajectoryMismatchError, match=f"before step {T - 1} differs"):
        jax.grad(loss)(params, _SlightlyWrongInverse())
    grads = jax.jit(jax.grad(loss), static_argnums=1)(params, _SlightlyWrongInverse())
    assert all(bool(jnp.all(jnp.isnan(g))) for g in jax.tree_util.tree_leaves(grads))


def test_an_overflow_names_its_step():
    # frac_bits = 23 in float32 leaves |h| < 1; from h = -(1 - 2^-23), a step with z < 1 and
    # a candidate of exactly -1 lands on -1: the range is left at step 7 (z = 1 before it)
    params = {k: jnp.zeros_like(v) for k, v in revgru.init(KEY, 2, 2).items()}
    for half in ("1", "2"):
        params[f"b_z{half}"] = jnp.array([20.0], jnp.float32)
        params[f"W_z{half}"] = jnp.array([[0.0, 30.0]], jnp.float32)
        params[f"W_n{half}"] = jnp.array([[0.0, 100.0]], jnp.float32)
    carry = revgru.to_carry(jnp.full((1, 2), -(1 - 2.0**-23), jnp.float32), frac_bits=23)
    xs = jnp.zeros((10, 1, 2), jnp.float32).at[7, 0, 1].set(-1.0)
    with pytest.raises(FixedPointOverflowError, match="left the range .* at step 7"):
        jaxrnn.reversible_scan(revgru, params, carry, xs)
    params, carry, xs = _problem(jnp.float32)
    bad = xs.at[12, 0, 1].set(jnp.nan)
    with pytest.raises(FixedPointOverflowError, match="not finite at step 12"):
        jax.grad(lambda p: jnp.sum(jaxrnn.reversible_scan(revgru, p, carry, bad)[0].h))(params)
    final, _ = jax.jit(lambda xs: jaxrnn.reversible_scan(revgru, params, carry, xs))(bad)
    assert bool(jnp.all(jnp.isnan(final.h[0]))) and bool(jnp.all(jnp.isfinite(final.h[1:])))


def test_bad_cells_and_carries_are_refused_by_name():
    params, carry, xs = _problem(jnp.float32)
    with pytest.raises(ValueError, match="cell: expected a module or object with apply"):
        jaxrnn.reversible_scan(revgru.apply, params, carry, xs)
    with pytest.raises(ValueError, match="carry: expected the carry of a reversible cell"):
        jaxrnn.reversible_scan(revgru, params, carry.h, xs)
    wide = {k: v.astype(jnp.float64) for k, v in params.items()}
    with pytest.raises(ValueError, match="carry: cell.apply maps a carry of leaves"):
        jaxrnn.reversible_scan(revgru, wide, carry, xs)


def test_memory_grows_only_by_the_buffer_bits():
    batch, hidden = 4, 32
    small, big = (
        memory.gradient_memory("reversible", n, batch=batch, hidden=hidden, in_dim=D).temp
        for n in (400, 2000)
    )
    growth = (big - small) / 1600
    # per step: m = 2 bits per unit of buffer memory and a 4-byte fingerprint (a GRU's
    # autodiff keeps about 9 floats per unit: tests/test_checkpointed.py sees it grow)
    assert batch * hidden * 2 / 8 <= growth <= batch * hidden * 2 / 8 + 4 + 1
