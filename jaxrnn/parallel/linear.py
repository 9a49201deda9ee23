"""Linear recurrences h_t = A_t h_{t-1} + b_t in O(log T) depth by an associative scan.

The step t is the affine map h -> A_t h + b_t. Affine maps compose associatively,

    (A_2, b_2) o (A_1, b_1) = (A_2 A_1, A_2 b_1 + b_2),

so all prefixes (A_t ... A_1, h_t) come out of ``jax.lax.associative_scan`` in about
2 log2 T levels instead of T sequential steps (Martin & Cundy, ICLR 2018). The initial
state is folded into the first step, b_1 <- A_1 h_0 + b_1, so that the prefix offsets are
the states themselves.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrnn._checks import dtype_of, shape_of


def _matvec(a, v):
    """a @ v over leading batch axes: a (..., H, H), v (..., H) -> (..., H)."""
    return jnp.einsum("...ij,...j->...i", a, v)


def _combine_full(earlier, later):
    """(A_2, b_2) o (A_1, b_1) = (A_2 A_1, A_2 b_1 + b_2) with full matrices."""
    a1, b1 = earlier
    a2, b2 = later
    return a2 @ a1, _matvec(a2, b1) + b2


def _combine_diagonal(earlier, later):
    """(a_2, b_2) o (a_1, b_1) = (a_2 * a_1, a_2 * b_1 + b_2) with diagonal matrices."""
    a1, b1 = earlier
    a2, b2 = later
    return a2 * a1, a2 * b1 + b2


def _check_floating(x, name: str):
    if not jnp.issubdtype(dtype_of(x), jnp.floating):
        raise ValueError(f"{name}: expected a floating dtype, got {dtype_of(x)}")


def transition_kind(A, b) -> str:
    """``"full"`` if A holds (T, *batch, H, H) matrices, ``"diagonal"`` if (T, *batch, H).

    Raises ``ValueError`` when the shapes of ``A`` and ``b`` (T, *batch, H) do not fit.
    """
    a_shape, b_shape = shape_of(A), shape_of(b)
    if len(b_shape) < 2:
        raise ValueError(f"b: expected shape (T, *batch, H), got {b_shape}")
    size = b_shape[-1]
    if len(a_shape) == len(b_shape) + 1:
        if a_shape[-2:] != (size, size):
            raise ValueError(
                f"A: expected full matrices of shape (T, *batch, {size}, {size}) to match "
                f"b {b_shape}, got {a_shape}"
            )
        kind, a_lead = "full", a_shape[:-2]
    elif len(a_shape) == len(b_shape):
        if a_shape[-1] != size:
            raise ValueError(
                f"A: expected diagonals of shape (T, *batch, {size}) to match b {b_shape}, "
                f"got {a_shape}"
            )
        kind, a_lead = "diagonal", a_shape[:-1]
    else:
        raise ValueError(
            f"A: expected shape (T, *batch, H, H) (full) or (T, *batch, H) (diagonal) for b "
            f"of shape {b_shape}, got {a_shape}"
        )
    if a_lead != b_shape[:-1]:
        raise ValueError(
            f"A: expected the leading (T, *batch) axes of b, {b_shape[:-1]}, got {a_lead} "
            f"(A of shape {a_shape})"
        )
    return kind


def linear_recurrence(A, b, h0, *, reverse: bool = False):
    """All states of h_t = A_t h_{t-1} + b_t, t = 1..T, by one associative scan.

    Forward (``reverse=False``) and reverse (``reverse=True``, the form of an adjoint
    recursion: h_t = A_t h_{t+1} + b_t from t = T down to 1, with h_{T+1} = h0) mean::

        def linear_recurrence(A, b, h0, reverse=False):
            h, hs = h0, [None] * T
            for t in (reversed(range(T)) if reverse else range(T)):
                h = A[t] @ h + b[t]          # A[t] * h + b[t] for diagonals
                hs[t] = h
            return stack(hs)

    The sequential loop has T steps; the associative scan has about 2 log2 T levels of
    matrix products (see ``jaxrnn.steps.parallel_depth``) and does more total work: each
    level multiplies matrices, (T, H, H) @ (T, H, H), where the loop needs matrix-vector
    products only. Pass diagonals when A is diagonal: every product is then elementwise.

    Args:
      A: transitions, full matrices of shape (T, *batch, H, H) or their diagonals
        (T, *batch, H).
      b: offsets, shape (T, *batch, H).
      h0: initial state, shape (*batch, H).
      reverse: run from t = T down to 1 (states stay aligned with A and b).

    Returns:
      hs, shape (T, *batch, H), with hs[t] = A[t] @ hs[t - 1] + b[t] (forward; hs[-1] read
      as h0) or hs[t] = A[t] @ hs[t + 1] + b[t] (reverse; hs[T] read as h0).
    """
    kind = transition_kind(A, b)
    expected = shape_of(b)[1:]
    if shape_of(h0) != expected:
        raise ValueError(f"h0: expected shape (*batch, H) = {expected}, got {shape_of(h0)}")
    for value, name in ((A, "A"), (b, "b"), (h0, "h0")):
        _check_floating(value, name)
    if not isinstance(reverse, bool):
        raise ValueError(f"reverse: expected a bool, got {reverse!r}")
    dtype = jnp.result_type(A, b, h0)
    return _solve(*(jnp.asarray(v, dtype) for v in (A, b, h0)), kind=kind, reverse=reverse)


@functools.partial(jax.jit, static_argnames=("kind", "reverse"))
def _solve(A, b, h0, *, kind: str, reverse: bool):
    """The associative scan behind :func:`linear_recurrence` (inputs already checked)."""
    first = -1 if reverse else 0
    if kind == "full":
        combine, apply = _combine_full, _matvec
    else:
        combine, apply = _combine_diagonal, jnp.multiply
    b = b.at[first].add(apply(A[first], h0))
    _, hs = jax.lax.associative_scan(combine, (A, b), reverse=reverse)
    return hs
