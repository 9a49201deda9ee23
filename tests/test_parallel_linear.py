"""linear_recurrence against loops written here: full and diagonal, forward and reverse, padded
and packed sequences (lengths, resets), complex diagonals, gradients."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

from jaxrnn.parallel import final_state, linear_recurrence


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
    with pytest.raises(ValueError, match="^A: expected a floating or complex dtype, got int32"):
        linear_recurrence(np.ones((4, 2), np.int32), np.ones((4, 2)), np.ones(2))
    with pytest.raises(ValueError, match="^h0: expected a floating or complex dtype"):
        linear_recurrence(np.ones((4, 2)), np.ones((4, 2)), np.ones(2, np.int32))
    with pytest.raises(ValueError, match="^reverse: expected a bool"):
        linear_recurrence(np.ones((4, 2)), np.ones((4, 2)), np.ones(2), reverse="yes")


# --- padded and packed sequences: lengths and resets -------------------------------------


def segment_reference(A, b, h0, lengths=None, resets=None, reverse=False, xp=np):
    """The loop of the docstring, one sequence at a time; ``xp=jnp`` makes it differentiable.

    Returns ``(hs, final)``: states zero past each length, and the state at the length.
    """
    n_steps, batch = b.shape[0], b.shape[1:-1]
    full = A.ndim == b.ndim + 1
    if lengths is None:
        lengths = np.full(batch, n_steps)
    lengths = np.asarray(lengths).reshape(
        np.shape(lengths) + (1,) * (len(batch) - np.ndim(lengths))
    )
    lengths = np.broadcast_to(lengths, batch)
    sequences, finals = [], []
    for n in np.ndindex(*batch):
        order = list(range(int(lengths[n])))
        order = order[::-1] if reverse else order
        h, hs = h0[n], [xp.zeros_like(h0[n])] * n_steps
        for t in order:
            follower = t + 1 if reverse else t  # the step whose reset flag starts step t
            if t == order[0] or (resets is not None and follower < n_steps and resets[follower][n]):
                h = h0[n]
            transition = A[t][n]
            h = (transition @ h if full else transition * h) + b[t][n]
            hs[t] = h
        sequences.append(xp.stack(hs))
        finals.append(h)
    shape = (n_steps, *batch, b.shape[-1])
    return xp.stack(sequences, axis=1).reshape(shape), xp.stack(finals).reshape(shape[1:])


def packed_problem(full, dtype=np.float64, seed=4):
    """Batch (2, 3): lengths 0..T with NaN in every padded A and b, random segment starts."""
    n_steps, hidden = 11, 2
    A, b, h0 = random_problem(seed, n_steps, (2, 3), hidden, full)
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.complexfloating):
        A = A * np.exp(1j * rng.uniform(0, np.pi, A.shape))
        b, h0 = b + 1j * rng.normal(size=b.shape), h0 - 1j * rng.normal(size=h0.shape)
    lengths = np.array([[11, 0, 4], [1, 7, 11]])
    resets = rng.random((n_steps, 2, 3)) < 0.3
    padding = np.arange(n_steps)[:, None, None] >= lengths
    A = np.where(padding.reshape(padding.shape + (1,) * (A.ndim - 3)), np.nan, A).astype(dtype)
    b = np.where(padding[..., None], np.nan, b).astype(dtype)
    return A, b, h0.astype(dtype), lengths, resets


def test_resets_by_hand():
    """T = 3, h_t = 2 h_(t-1) + 1 from h0 = 0, a new segment at step 1: segments [0], [1, 2]."""
    A, b, h0 = np.full((3, 1), 2.0), np.ones((3, 1)), np.zeros(1)
    resets = np.array([False, True, False])
    forward = linear_recurrence(A, b, h0, resets=resets)
    np.testing.assert_array_equal(forward[:, 0], [1.0, 1.0, 3.0])  # 1; restart: 1, 2 + 1
    backward = linear_recurrence(A, b, h0, resets=resets, reverse=True)
    np.testing.assert_array_equal(backward[:, 0], [1.0, 3.0, 1.0])  # [1, 2] backwards: 1, 3
    padded = linear_recurrence(A, b, h0, lengths=np.array(2), reverse=True)
    np.testing.assert_array_equal(padded[:, 0], [3.0, 1.0, 0.0])  # step 1 first, from h0


@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_and_resets_match_loop(full, reverse):
    A, b, h0, lengths, resets = packed_problem(full)
    hs = linear_recurrence(A, b, h0, lengths=lengths, resets=resets, reverse=reverse)
    want, want_final = segment_reference(A, b, h0, lengths, resets, reverse)
    assert relative_error(hs, want) <= 1e-12
    padding = np.arange(11)[:, None, None] >= lengths
    assert np.all(np.asarray(hs)[padding] == 0.0)
    final = final_state(hs, h0, lengths=lengths, reverse=reverse)
    np.testing.assert_allclose(final, want_final, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(final[0, 1], h0[0, 1])  # length 0: the initial state


@pytest.mark.parametrize("reverse", [False, True])
def test_complex_diagonals_with_segments_and_gradients(reverse):
    """LRU-style complex diagonals; jax.grad of a real loss against jax.grad of the loop."""
    A, b, h0, lengths, resets = packed_problem(False, np.complex128)
    hs = linear_recurrence(A, b, h0, lengths=lengths, resets=resets, reverse=reverse)
    assert hs.dtype == jnp.complex128
    want, _ = segment_reference(A, b, h0, lengths, resets, reverse)
    assert relative_error(hs, want) <= 1e-12
    weights = np.arange(1.0, 12.0)[:, None, None, None]

    def loss(run):
        return lambda A, b, h0: jnp.sum(weights * jnp.abs(jnp.sin(run(A, b, h0))) ** 2)

    def run_scan(A, b, h0):
        return linear_recurrence(A, b, h0, lengths=lengths, resets=resets, reverse=reverse)

    def run_loop(A, b, h0):
        return segment_reference(A, b, h0, lengths, resets, reverse, xp=jnp)[0]

    got = jax.grad(loss(run_scan), argnums=(0, 1, 2))(A, b, h0)
    want = jax.jit(jax.grad(loss(run_loop), argnums=(0, 1, 2)))(A, b, h0)
    for g, w in zip(got, want, strict=True):
        assert bool(jnp.all(jnp.isfinite(g)))  # NaN padding reaches no gradient
        np.testing.assert_allclose(g, jnp.nan_to_num(w), rtol=1e-10, atol=1e-12)


def test_real_gradients_with_segments_under_jit():
    """Full matrices, traced lengths and resets; gradients are zero on the NaN padding."""
    A, b, h0, lengths, resets = packed_problem(True)
    weights = np.arange(1.0, 12.0)[:, None, None, None]

    def loss(A, b, h0, lengths, resets):
        hs = linear_recurrence(A, b, h0, lengths=lengths, resets=resets, reverse=True)
        final = final_state(hs, h0, lengths=lengths, reverse=True)
        return jnp.sum(weights * jnp.sin(hs)) + jnp.sum(final**2)

    def loop_loss(A, b, h0):
        hs, final = segment_reference(A, b, h0, lengths, resets, True, xp=jnp)
        return jnp.sum(weights * jnp.sin(hs)) + jnp.sum(final**2)

    got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(A, b, h0, lengths, resets)
    want = jax.jit(jax.grad(loop_loss, argnums=(0, 1, 2)))(A, b, h0)
    padding = np.arange(11)[:, None, None] >= lengths
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, jnp.nan_to_num(w), rtol=1e-10, atol=1e-12)
    assert np.all(np.asarray(got[0])[padding] == 0.0) and np.all(np.asarray(got[1])[padding] == 0)


def test_lengths_broadcast_and_clip_under_jit():
    """lengths (2,) for batch (2, 3) as in jaxrnn.scan; traced values out of range clip."""
    A, b, h0 = random_problem(5, 9, (2, 3), 2, full=False)
    run = jax.jit(lambda n: linear_recurrence(A, b, h0, lengths=n))
    for passed, meant in (([4, 9], [4, 9]), ([12, -2], [9, 0])):
        want = segment_reference(A, b, h0, np.array(meant))[0]
        np.testing.assert_allclose(run(jnp.array(passed)), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        (dict(lengths=np.array([3.0, 4.0])), "^lengths: expected an integer dtype"),
        (dict(lengths=np.array([3, 4, 5])), r"^lengths: expected the batch shape of xs, \(2,\)"),
        (dict(lengths=np.ones((2, 2), int)), r"^lengths: expected the batch shape of b, \(2,\)"),
        (dict(lengths=np.array([3, 6])), r"^lengths: expected values in \[0, T\] = \[0, 5\]"),
        (dict(resets=np.ones((5,), bool)), r"^resets: expected shape \(T, \*batch\) = \(5, 2\)"),
        (dict(resets=np.ones((5, 2), int)), "^resets: expected a boolean mask, got dtype int"),
        (dict(mesh="cpu"), "^mesh: expected None or a 1-D jax.sharding.Mesh"),
    ],
)
def test_bad_segments_raise(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        linear_recurrence(np.ones((5, 2, 2)), np.ones((5, 2, 2)), np.ones((2, 2)), **options)


def test_final_state_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"^hs, h0: expected hs of shape \(T, \*batch, H\)"):
        final_state(np.ones((5, 2, 3)), np.ones((3,)))
