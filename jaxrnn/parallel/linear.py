"""Linear recurrences h_t = A_t h_{t-1} + b_t in O(log T) depth by an associative scan.

The step t is the affine map h -> A_t h + b_t. Affine maps compose associatively,

    (A_2, b_2) o (A_1, b_1) = (A_2 A_1, A_2 b_1 + b_2),

so all prefixes (A_t ... A_1, h_t) come out of ``jax.lax.associative_scan`` in about
2 log2 T levels instead of T sequential steps (Martin & Cundy, ICLR 2018). The initial
state is folded into the first step, b_1 <- A_1 h_0 + b_1, so that the prefix offsets are
the states themselves.

Segments (packed sequences) and padding need no other operator (SPEC §12): a step that
starts a segment from h_0 is the constant map (0, A_t h_0 + b_t), and a padding step the
constant map (0, 0). A constant map c is a left zero of composition, c o m = c for every
m, so it cuts the scan: nothing before it reaches it or anything after it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_lengths, dtype_of, shape_of
from jaxrnn.parallel.segments import check_resets
from jaxrnn.parallel.timesplit import check_time_mesh, split_associative_scan

# The solvers' products run at full precision. On a GPU, JAX's default float32 product is
# TF32 (about three significant digits): its error compounds through the log T levels of
# matrix products, and in DEER it enters the offsets f(s) - J s directly. With it, DEER in
# float32 did not converge within 100 iterations on an H200 where quasi-DEER (no matrix
# products) did (bench/RESULTS.md, "accelerator"). A CPU computes float32 products in
# full anyway.
PRECISION = jax.lax.Precision.HIGHEST


def matvec(a, v):
    """a @ v over leading batch axes: a (..., H, H), v (..., H) -> (..., H), at PRECISION."""
    return jnp.einsum("...ij,...j->...i", a, v, precision=PRECISION)


def matmul(a, c):
    """a @ c over leading batch axes: (..., H, H) @ (..., H, H), at PRECISION."""
    return jnp.matmul(a, c, precision=PRECISION)


def _combine_full(earlier, later):
    """(A_2, b_2) o (A_1, b_1) = (A_2 A_1, A_2 b_1 + b_2) with full matrices."""
    a1, b1 = earlier
    a2, b2 = later
    return matmul(a2, a1), matvec(a2, b1) + b2


def _combine_diagonal(earlier, later):
    """(a_2, b_2) o (a_1, b_1) = (a_2 * a_1, a_2 * b_1 + b_2) with diagonal matrices."""
    a1, b1 = earlier
    a2, b2 = later
    return a2 * a1, a2 * b1 + b2


def _check_inexact(x, name: str):
    if not jnp.issubdtype(dtype_of(x), jnp.inexact):
        raise ValueError(f"{name}: expected a floating or complex dtype, got {dtype_of(x)}")


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


def check_segments(lengths, resets, sequence, *, name: str):
    """Validate ``lengths`` ((*batch,) or its leading axes) and ``resets`` ((T, *batch) bool)
    for a ``sequence`` (T, *batch, H) passed as argument ``name``."""
    shape = shape_of(sequence)
    n_steps, batch = shape[0], shape[1:-1]
    if lengths is not None:
        if len(shape_of(lengths)) > len(batch):
            raise ValueError(
                f"lengths: expected the batch shape of {name}, {batch} (or its leading axes), "
                f"got {shape_of(lengths)}"
            )
        check_lengths(lengths, sequence, n_steps)
    if resets is not None:
        check_resets(resets, sequence)
        if shape_of(resets) != (n_steps, *batch):
            raise ValueError(
                f"resets: expected shape (T, *batch) = {(n_steps, *batch)}, got {shape_of(resets)}"
            )


def _per_step(mask, leaf):
    """Reshape a (T, *batch) mask to broadcast against a (T, *batch, ...) leaf."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def _clamped_lengths(lengths, n_steps: int, batch: tuple[int, ...]):
    """``lengths`` clipped to [0, T] and broadcast over trailing batch axes to ``batch``."""
    lengths = jnp.clip(jnp.asarray(lengths), 0, n_steps)
    lengths = lengths.reshape(lengths.shape + (1,) * (len(batch) - lengths.ndim))
    return jnp.broadcast_to(lengths, batch)


def step_masks(n_steps: int, batch: tuple[int, ...], lengths, resets, reverse: bool):
    """``(active, fresh)``, each (T, *batch) bool: step t runs (t < L); step t starts from h0.

    Forward, a segment starts at step 0 and wherever ``resets`` is True. In reverse the
    same segments run backwards, so each starts at its last step: t = L - 1 (or T - 1), or
    t with ``resets[t + 1]`` True. ``active`` is None without ``lengths``.
    """
    steps = jnp.arange(n_steps).reshape((n_steps,) + (1,) * len(batch))
    last = n_steps - 1
    active = None
    if lengths is not None:
        lengths = _clamped_lengths(lengths, n_steps, batch)
        active = steps < lengths
        last = lengths - 1
    fresh = jnp.broadcast_to(steps == (last if reverse else 0), (n_steps, *batch))
    if resets is not None:
        if reverse:
            resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])])
        fresh = fresh | resets
    return active, fresh


def segment_elements(A, b, h0, active, fresh, *, kind: str):
    """The scan's elements: (A_t, b_t), or (0, A_t h0 + b_t) where ``fresh``, (0, 0) where
    not ``active``. Padding values are replaced before use, so NaN there reaches nothing."""
    apply = matvec if kind == "full" else jnp.multiply
    if active is not None:
        A = jnp.where(_per_step(active, A), A, jnp.zeros_like(A))
        b = jnp.where(_per_step(active, b), b, jnp.zeros_like(b))
    start = apply(A, h0)
    A = jnp.where(_per_step(fresh, A), jnp.zeros_like(A), A)
    b = jnp.where(_per_step(fresh, b), b + start, b)
    return A, b


def linear_recurrence(A, b, h0, *, lengths=None, resets=None, reverse: bool = False, mesh=None):
    """All states of h_t = A_t h_{t-1} + b_t, t = 1..T, by one associative scan.

    Forward (``reverse=False``) and reverse (``reverse=True``, the form of an adjoint
    recursion: h_t = A_t h_{t+1} + b_t from t = T down to 1, with h_{T+1} = h0) mean, per
    sequence of the batch (L = its length, T without ``lengths``)::

        def linear_recurrence(A, b, h0, lengths, resets, reverse):
            hs = [zeros(H)] * T
            h = h0
            for t in (reversed(range(L)) if reverse else range(L)):
                if starts_segment(t):  # t == first step, or resets[t] (reverse: resets[t+1])
                    h = h0
                h = A[t] @ h + b[t]          # A[t] * h + b[t] for diagonals
                hs[t] = h
            return stack(hs)

    So ``lengths`` has ``jaxrnn.scan``'s meaning: states past a length are zero, the values
    of A and b there (NaN too) reach neither the states nor gradients, and ``reverse`` runs
    each sequence from its own step L - 1 down to 0. The state at the length (what
    ``jaxrnn.scan`` returns as its final carry) is :func:`final_state`. ``resets[t]`` True
    marks step t as the first step of a new segment (packed sequences), which starts again
    from h0; in reverse each segment runs backwards from its own last step, so one mask
    serves both directions.

    The sequential loop has T steps; the associative scan has about 2 log2 T levels of
    matrix products (see ``jaxrnn.steps.parallel_depth``) and does more total work: each
    level multiplies matrices, (T, H, H) @ (T, H, H), where the loop needs matrix-vector
    products only. Pass diagonals when A is diagonal: every product is then elementwise,
    and complex diagonals (LRU, SPEC §12) are welcome. Matrix products run at
    ``jax.lax.Precision.HIGHEST``: a GPU's default float32 product (TF32) would lose
    digits at every level (:data:`PRECISION`).

    With ``mesh`` (a 1-D ``jax.sharding.Mesh`` of P devices) the T steps are split into P
    chunks: each device scans its chunk, the P chunks' composed maps are combined on every
    device, and each device corrects its chunk with the map of all chunks before it
    (:func:`jaxrnn.parallel.timesplit.split_associative_scan`, SPEC §13). The states are the
    same as on one device up to rounding.

    Args:
      A: transitions, full matrices of shape (T, *batch, H, H) or their diagonals
        (T, *batch, H); floating or complex.
      b: offsets, shape (T, *batch, H).
      h0: initial state, shape (*batch, H).
      lengths: optional integers, shape (*batch,) (or its leading axes, broadcast over the
        rest), values in [0, T]; checked when known at trace time, clipped to [0, T] under
        ``jit``.
      resets: optional boolean mask of shape (T, *batch): True where a segment starts.
      reverse: run from t = T down to 1 (states stay aligned with A and b).
      mesh: optional 1-D mesh over which to split the T axis.

    Returns:
      hs, shape (T, *batch, H), in the result dtype of A, b and h0.
    """
    kind = transition_kind(A, b)
    expected = shape_of(b)[1:]
    if shape_of(h0) != expected:
        raise ValueError(f"h0: expected shape (*batch, H) = {expected}, got {shape_of(h0)}")
    for value, name in ((A, "A"), (b, "b"), (h0, "h0")):
        _check_inexact(value, name)
    if not isinstance(reverse, bool):
        raise ValueError(f"reverse: expected a bool, got {reverse!r}")
    check_segments(lengths, resets, b, name="b")
    if mesh is not None:
        check_time_mesh(mesh)
    dtype = jnp.result_type(A, b, h0)
    return _solve(
        *(jnp.asarray(v, dtype) for v in (A, b, h0)),
        lengths,
        resets,
        kind=kind,
        reverse=reverse,
        mesh=mesh,
    )


def final_state(hs, h0, *, lengths=None, reverse: bool = False):
    """The state at each sequence's length: ``jaxrnn.scan``'s final carry for these states.

    Forward it is hs[L - 1], in reverse hs[0] (the last step run), and h0 for L = 0::

        final = h0 if L == 0 else (hs[0] if reverse else hs[L - 1])

    Args:
      hs: (T, *batch, H), as :func:`linear_recurrence` returns them.
      h0: (*batch, H), the initial state.
      lengths: as for :func:`linear_recurrence` (None: every sequence has length T).
      reverse: as for :func:`linear_recurrence`.

    Returns:
      the final states, shape (*batch, H).
    """
    hs_shape = shape_of(hs)
    if len(hs_shape) < 2 or shape_of(h0) != hs_shape[1:]:
        raise ValueError(
            f"hs, h0: expected hs of shape (T, *batch, H) and h0 of shape (*batch, H), got "
            f"{hs_shape} and {shape_of(h0)}"
        )
    if lengths is None:
        return hs[0] if reverse else hs[-1]
    check_segments(lengths, None, hs, name="hs")
    n_steps = hs_shape[0]
    lengths = _clamped_lengths(lengths, n_steps, hs_shape[1:-1])
    index = jnp.zeros_like(lengths) if reverse else jnp.maximum(lengths - 1, 0)
    last = jnp.take_along_axis(hs, index[None, ..., None], axis=0)[0]
    return jnp.where((lengths > 0)[..., None], last, h0)


@functools.partial(jax.jit, static_argnames=("kind", "reverse", "mesh"))
def _solve(A, b, h0, lengths, resets, *, kind: str, reverse: bool, mesh):
    """The associative scan behind :func:`linear_recurrence` (inputs already checked)."""
    combine = _combine_full if kind == "full" else _combine_diagonal
    if lengths is None and resets is None:
        apply = matvec if kind == "full" else jnp.multiply
        # b_first += A_first h0, elementwise over T: T stays split over a mesh's devices (a
        # concatenation would move the time axis between them, and an indexed update
        # was partitioned wrongly when vmapped under jit into the split scan, JAX 0.10.2)
        first = A[-1:] if reverse else A[:1]
        is_first = jnp.arange(b.shape[0]) == (b.shape[0] - 1 if reverse else 0)
        b = b + jnp.where(_per_step(is_first, b), apply(first, h0), jnp.zeros((), b.dtype))
    else:
        active, fresh = step_masks(b.shape[0], b.shape[1:-1], lengths, resets, reverse)
        A, b = segment_elements(A, b, h0, active, fresh, kind=kind)
    if mesh is None:
        return jax.lax.associative_scan(combine, (A, b), reverse=reverse)[1]
    apply = matvec if kind == "full" else jnp.multiply

    def states(incoming, prefixes):  # h_t = A_(prefix) h_in + b_(prefix)
        return apply(prefixes[0], incoming[1]) + prefixes[1]

    return split_associative_scan(combine, (A, b), mesh, reverse=reverse, read=states)
