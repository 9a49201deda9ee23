"""linear_recurrence against NumPy loops written here: full and diagonal, forward and reverse."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

from jaxrnn.parallel import linear_recurrence


def reference(A, b, h0, reverse=False):
    """The plain loop h_t = A_t h_{t-1} + b_t (matrices) or A_t * h_{t-1} + b_t (diagonals)."""
    A, b, h = np.asarray(A), np.asarray(b), np.array(h0)
    full = A.ndim == b.ndim + 1
    hs = np.zeros_like(b)
    order = range(len(b) - 1, -1, -1) if reverse else range(len(b))
    for t in order:
        h = (np.einsum("...ij,...j->...i", A[t], h) if full else A[t] * h) + b[t]
        hs[t] = h
    return hs


def random_problem(seed, n_steps, batch, hidden, full, scale=0.9):
    """Well-conditioned: every transition has spectral norm (or |diagonal|) <= scale."""
    rng = np.random.default_rng(seed)
    if full:
        A = rng.normal(size=(n_steps, *batch, hidden, hidden))
        A *= scale / np.linalg.norm(A, ord=2, axis=(-2, -1), keepdims=True)
    else:
        A = rng.uniform(-scale, scale, size=(n_steps, *batch, hidden))
    b = rng.normal(size=(n_steps, *batch, hidden))
    h0 = rng.normal(size=(*batch, hidden))
    return A, b, h0


def relative_error(got, want):
    return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_matches_loop_float64(full, reverse, batch):
    A, b, h0 = random_problem(0, 37, batch, 4, full)
    hs = linear_recurrence(A, b, h0, reverse=reverse)
    assert hs.shape == b.shape and hs.dtype == jnp.float64
    assert relative_error(hs, reference(A, b, h0, reverse)) <= 1e-12


@given(
    n_steps=st.sampled_from([1, 2, 3, 5, 16, 33]),
    full=st.booleans(),
    reverse=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_matches_loop_any_length(n_steps, full, reverse, seed):
    """Odd lengths and powers of two (few distinct shapes: each one compiles)."""
    A, b, h0 = random_problem(seed, n_steps, (2,), 3, full)
    hs = linear_recurrence(A, b, h0, reverse=reverse)
    assert relative_error(hs, reference(A, b, h0, reverse)) <= 1e-12


def test_order_of_noncommuting_products():
    """A_2 A_1 != A_1 A_2 here, so composing the maps in the wrong order would show."""
    A = np.array([[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]])
    b = np.zeros((2, 2))
    h0 = np.array([1.0, 2.0])
    # by hand: h_1 = A_1 h_0 = (2, 0); h_2 = A_2 h_1 = (0, 2). Reverse: h_2' = A_2 h0 = (0, 1),
    # h_1' = A_1 h_2' = (1, 0).
    np.testing.assert_array_equal(linear_recurrence(A, b, h0), [[2.0, 0.0], [0.0, 2.0]])
    np.testing.assert_array_equal(
        linear_recurrence(A, b, h0, reverse=True), [[1.0, 0.0], [0.0, 1.0]]
    )


def test_diagonal_equals_full_with_diagonal_matrices():
    A, b, h0 = random_problem(1, 50, (2,), 3, full=False)
    full = np.einsum("...i,ij->...ij", A, np.eye(3))
    np.testing.assert_allclose(
        linear_recurrence(A, b, h0), linear_recurrence(full, b, h0), rtol=1e-13, atol=1e-13
    )


def test_float32_stays_float32():
    A, b, h0 = (x.astype(np.float32) for x in random_problem(2, 200, (2,), 3, full=True))
    hs = jax.jit(linear_recurrence)(A, b, h0)
    assert hs.dtype == jnp.float32
    assert relative_error(hs, reference(A, b, h0)) <= 1e-5


def test_gradient_matches_sequential_scan():
    """Gradients through the associative scan equal those through a lax.scan loop."""
    A, b, h0 = random_problem(3, 25, (2,), 3, full=True)

    def sequential(A, b, h0):
        step = lambda h, ab: ((ab[0] @ h[..., None])[..., 0] + ab[1],) * 2
        return jax.lax.scan(step, h0, (A, b))[1]

    def loss(fn):
        return lambda A, b, h0: jnp.sum(jnp.sin(fn(A, b, h0)))

    got = jax.jit(jax.grad(loss(linear_recurrence), argnums=(0, 1, 2)))(A, b, h0)
    want = jax.jit(jax.grad(loss(sequential), argnums=(0, 1, 2)))(A, b, h0)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(
    ("A_shape", "b_shape", "h0_shape", "name", "fragment"),
    [
        ((5, 3, 3), (5, 3), (3,), None, None),  # the valid case, as a control
        ((5, 3, 2), (5, 3), (3,), "A", "(T, *batch, 3, 3)"),
        ((5, 2), (5, 3), (3,), "A", "(T, *batch, 3)"),
        ((4, 3), (5, 3), (3,), "A", "leading"),
        ((5, 1, 3, 3, 3), (5, 3), (3,), "A", "(T, *batch, H, H)"),
        ((5,), (5,), (), "b", "(T, *batch, H)"),
        ((5, 3), (5, 3), (2,), "h0", "(3,)"),
        ((5, 2, 3), (5, 2, 3), (3,), "h0", "(2, 3)"),
    ],
)
def test_bad_shapes_raise(A_shape, b_shape, h0_shape, name, fragment):
    args = (np.ones(A_shape), np.ones(b_shape), np.ones(h0_shape))
    if name is None:
        assert linear_recurrence(*args).shape == b_shape
        return
    with pytest.raises(ValueError, match=rf"^{name}:") as error:
        linear_recurrence(*args)
    assert fragment in str(error.value)


def test_bad_dtype_and_reverse_raise():
    with pytest.raises(ValueError, match="^A: expected a floating dtype"):
        linear_recurrence(np.ones((4, 2), np.int32), np.ones((4, 2)), np.ones(2))
    with pytest.raises(ValueError, match="^h0: expected a floating dtype"):
        linear_recurrence(np.ones((4, 2)), np.ones((4, 2)), np.ones(2, np.int32))
    with pytest.raises(ValueError, match="^reverse: expected a bool"):
        linear_recurrence(np.ones((4, 2)), np.ones((4, 2)), np.ones(2), reverse="yes")
