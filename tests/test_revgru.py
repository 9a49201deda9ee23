"""The reversible GRU: exact forgetting against Python integers, the update against a NumPy
loop of SPEC §11, the inverse bit for bit, the destroyed bits against log|det| of the
Jacobian, and bad options refused by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn.cells import _forget, revgru
from jaxrnn.exact import fixed_point as fp

KEY = jax.random.PRNGKey(0)
APPLY, INVERSE = jax.jit(revgru.apply), jax.jit(revgru.inverse)  # compiled once per shape


def _words(values):
    u = np.asarray(values, np.int64).astype(np.uint64)
    return fp.Word(
        jnp.asarray((u >> 32).astype(np.uint32)), jnp.asarray((u & 0xFFFFFFFF).astype(np.uint32))
    )


def test_exact_forgetting_is_the_floor_and_its_inverse_against_python_integers():
    rng = np.random.default_rng(1)
    states = np.concatenate(
        [
            rng.integers(-(2**52), 2**52, 3000),
            rng.integers(-(2**17), 2**17, 3000),
            [0, -1, 65535, -65536],
        ]
    )
    n = rng.integers(2**8, 2**16, states.size).astype(np.uint32)
    n[:50], n[50:100], n[100:150] = 2**16, 2**16 - 1, 2**8  # z = 1 and the extremes
    words = rng.integers(0, 2**24, states.size).astype(np.uint32)
    new, pushed, full = jax.jit(_forget.forget)(_words(states), jnp.asarray(words), jnp.asarray(n))
    assert [int(v) for v in fp.to_int(new)] == [
        int(h) * int(k) // 2**16 for h, k in zip(states, n, strict=True)
    ]
    assert not bool(full.any())
    # the digit pushed is r - c0 in base K = number of residues r with floor(r n / 2^16) = s
    every_r = np.arange(2**16, dtype=np.int64)
    for h, k, w, b in list(zip(states, n, words, np.asarray(pushed), strict=True))[:200]:
        r = int(h) % 2**16
        same_s = np.flatnonzero(every_r * int(k) // 2**16 == r * int(k) // 2**16)
        assert int(b) == int(w) * same_s.size + int(np.searchsorted(same_s, r))
    back, popped = jax.jit(_forget.unforget)(new, pushed, jnp.asarray(n))
    np.testing.assert_array_equal(fp.to_int(back), states.astype(object))
    np.testing.assert_array_equal(np.asarray(popped), words)
    # a push that does not fit the word is flagged
    _, _, full = _forget.forget(
        _words([12345]), jnp.asarray([2**31], jnp.uint32), jnp.asarray([2**8], jnp.uint32)
    )
    assert bool(full[0])


def _params(dtype, hidden=8, in_dim=3, scale=0.6, seed=3):
    params = revgru.init(KEY, in_dim, hidden, dtype=dtype)
    noise = jax.random.split(jax.random.PRNGKey(seed), len(params))
    return {
        k: v + scale * jax.random.normal(nk, v.shape, dtype)
        for (k, v), nk in zip(params.items(), noise, strict=True)
    }


def _numpy_step(p, h, x, frac_bits, m):
    """SPEC §11 in float64 NumPy with Python-integer rounding (an independent reference)."""
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    half = h.shape[-1] // 2
    h = h.copy()
    for k, (mine, other) in enumerate(
        ((slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))), 1
    ):
        g = lambda name, k=k: (p[f"W_{name}{k}"], p[f"U_{name}{k}"], p[f"b_{name}{k}"])  # noqa: E731
        W, U, b = g("z")
        z = 2.0**-m + (1 - 2.0**-m) * sig(x @ W.T + h[..., other] @ U.T + b)
        W, U, b = g("r")
        r = sig(x @ W.T + h[..., other] @ U.T + b)
        W, U, b = g("n")
        cand = np.tanh(x @ W.T + b + r * (h[..., other] @ U.T + p[f"b_hn{k}"]))
        n = np.clip(np.rint(z * 2**16), 2 ** (16 - m), 2**16 - 1).astype(np.int64)
        big = np.rint(h[..., mine] * 2.0**frac_bits).astype(np.int64)
        kept = (big * n) // 2**16  # floor: exact in int64 for |h| < 2^(62 - 16 - F)
        h[..., mine] = (kept + np.rint((1 - n / 2**16) * cand * 2.0**frac_bits)) * 2.0**-frac_bits
    return h


def test_apply_follows_spec_and_stays_on_the_grid():
    params = _params(jnp.float64)
    carry = revgru.to_carry(0.5 * jax.random.normal(KEY, (4, 8)), frac_bits=30)
    xs = jax.random.normal(jax.random.PRNGKey(5), (12, 4, 3))
    p = {k: np.asarray(v) for k, v in params.items()}
    h = np.asarray(carry.h)
    for x in xs:
        carry, y = APPLY(params, carry, x)
        h = _numpy_step(p, h, np.asarray(x), 30, 2)
        # equal up to one unit of the grid (tanh in JAX and NumPy may round differently)
        np.testing.assert_allclose(carry.h, h, atol=1.01 * 2.0**-30, rtol=0)
        np.testing.assert_array_equal(y, carry.h)
        assert np.all(np.asarray(carry.h) * 2**30 == np.round(np.asarray(carry.h) * 2**30))
        h = np.asarray(carry.h)  # follow the cell's own trajectory


@pytest.mark.parametrize(
    "dtype, bias", [(jnp.float32, 0.0), (jnp.float32, 6.0), (jnp.float32, -6.0)]
)
def test_inverse_gives_back_every_state_bit_for_bit(dtype, bias):
    params = _params(dtype)
    params = {
        k: v + bias if k.startswith("b_z") else v for k, v in params.items()
    }  # z near 1 or 2^-m
    carry = revgru.to_carry(
        0.9 * jnp.tanh(jax.random.normal(KEY, (3, 8), dtype)), max_forget_bits=3
    )
    xs = 2 * jax.random.normal(jax.random.PRNGKey(7), (9, 3, 3), dtype)
    states = [carry]
    for x in xs:  # 9 steps of at most 3 bits: within one 32-bit word
        states.append(APPLY(params, states[-1], x)[0])
    back = states[-1]
    for t in reversed(range(len(xs))):
        back = INVERSE(params, back, xs[t])
        np.testing.assert_array_equal(back.h, states[t].h)
        np.testing.assert_array_equal(back.word, states[t].word)
    assert int(jnp.max(states[-1].word)) > 0


def test_destroyed_bits_are_minus_log2_det_of_the_step_jacobian():
    params = _params(jnp.float64, hidden=6, scale=1.0)
    carry = revgru.to_carry(0.3 * jax.random.normal(KEY, (6,)))
    x = jax.random.normal(jax.random.PRNGKey(9), (3,))
    jac = jax.jit(
        jax.jacfwd(
            lambda h: (
                revgru.apply(
                    params, revgru.Carry(h, carry.word, carry.frac_bits, carry.max_forget_bits), x
                )[0].h
            )
        )
    )(carry.h)
    sign, logdet = np.linalg.slogdet(np.asarray(jac))
    assert sign > 0
    bits = float(jax.jit(revgru.destroyed_bits)(params, carry, x))
    assert bits == pytest.approx(-logdet / np.log(2), rel=1e-9)
    assert 0 < bits <= 6 * carry.max_forget_bits


def test_bad_options_and_carries_are_refused_by_name():
    with pytest.raises(ValueError, match="max_forget_bits: expected an integer in \\[1, 8\\]"):
        revgru.init_carry(2, 4, max_forget_bits=9)
    with pytest.raises(ValueError, match="max_forget_bits"):
        revgru.init_carry(2, 4, max_forget_bits=0)
    with pytest.raises(
        ValueError, match="frac_bits: expected an integer in \\[16, 23\\] for float32"
    ):
        revgru.init_carry(2, 4, jnp.float32, frac_bits=24)
    with pytest.raises(ValueError, match="hidden: expected an even size"):
        revgru.init(KEY, 3, 5)
    with pytest.raises(ValueError, match="h: expected finite values with \\|h\\| < 2\\^1"):
        revgru.to_carry(jnp.array([0.5, 3.0], jnp.float32))  # float32, F = 22: |h| < 2
    with pytest.raises(ValueError, match="carry: expected a revgru.Carry"):
        revgru.apply(_params(jnp.float32), jnp.zeros((2, 8)), jnp.zeros((2, 3)))
    carry = revgru.init_carry(2, 8)
    bad = revgru.Carry(
        carry.h, carry.word.astype(jnp.int32), carry.frac_bits, carry.max_forget_bits
    )
    with pytest.raises(ValueError, match="carry.word: expected uint32"):
        revgru.inverse(_params(jnp.float32), bad, jnp.zeros((2, 3)))


def test_a_non_finite_input_makes_the_state_nan_from_that_step_on():
    params = _params(jnp.float32)
    carry = revgru.to_carry(jnp.zeros((3, 8), jnp.float32), max_forget_bits=3)
    x = jnp.array([[0.1, 0.2, jnp.nan], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0]], jnp.float32)
    carry, _ = APPLY(params, carry, x)
    assert bool(jnp.all(jnp.isnan(carry.h[0]))) and bool(jnp.all(jnp.isfinite(carry.h[1:])))
    carry, _ = APPLY(params, carry, jnp.zeros((3, 3), jnp.float32))
    assert bool(jnp.all(jnp.isnan(carry.h[0]))) and bool(jnp.all(jnp.isfinite(carry.h[1:])))
