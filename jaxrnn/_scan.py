"""Run a cell over a sequence: one ``lax.scan``, with variable lengths, reverse and both ways.

A cell is any function ``cell(params, carry, x) -> (carry, y)``, e.g. ``jaxrnn.cells.lstm.apply``
(bind options with ``functools.partial``). Sequences are time-major: ``xs`` has shape
(T, *batch, D), or is a pytree whose leaves all have the leading axis T.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import checkpointed
from jaxrnn._checks import check_lengths, dtype_of, is_int, shape_of
from jaxrnn._varying import vary_like


def _sequence_length(xs) -> int:
    leaves = jax.tree_util.tree_leaves(xs)
    if not leaves:
        raise ValueError("xs: expected an array of shape (T, *batch, D), got an empty pytree")
    shapes = [shape_of(leaf) for leaf in leaves]
    if any(len(s) < 1 for s in shapes):
        raise ValueError(f"xs: expected arrays with a leading time axis T, got shapes {shapes}")
    lengths = {s[0] for s in shapes}
    if len(lengths) != 1:
        raise ValueError(f"xs: every leaf must have the same leading T, got shapes {shapes}")
    return shapes[0][0]


def _batch_major(cell, params, carry, xs) -> bool:
    """Whether the cell would accept one step of xs with its first two axes swapped."""
    if any(len(shape_of(leaf)) < 3 for leaf in jax.tree_util.tree_leaves(xs)):
        return False
    x0 = jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct((shape_of(leaf)[0], *shape_of(leaf)[2:]), dtype_of(leaf)),
        xs,
    )
    try:
        jax.eval_shape(cell, params, carry, x0)
    except Exception:  # noqa: BLE001 - any failure: the swap would not help
        return False
    return True


def _check_carry_type(cell, params, carry, xs):
    """The cell must return a carry of the same structure, shapes and dtypes it was given."""
    x0 = jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(shape_of(leaf)[1:], dtype_of(leaf)), xs
    )  # one step's input, without indexing (T may be 0)
    try:
        out = jax.eval_shape(cell, params, carry, x0)
    except ValueError as error:
        if not _batch_major(cell, params, carry, xs):
            raise
        shapes = [shape_of(leaf) for leaf in jax.tree_util.tree_leaves(xs)]
        xs_shape = shapes[0] if len(shapes) == 1 else shapes
        raise ValueError(
            f"{error} [scan feeds the cell one time step x = xs[t] of xs {xs_shape}, read "
            "as time-major (T, *batch, D): if xs is batch-major, pass jnp.swapaxes(xs, 0, 1); "
            "otherwise give the carry the batch shape of xs]"
        ) from None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError(
            f"cell: expected cell(params, carry, x) to return a pair (carry, y), got "
            f"{jax.tree_util.tree_structure(out)}"
        )
    new_carry = out[0]
    given = jax.tree_util.tree_structure(carry)
    returned = jax.tree_util.tree_structure(new_carry)
    if given != returned:
        raise ValueError(f"carry: the cell returns a carry of structure {returned}, got {given}")
    old_leaves = jax.tree_util.tree_leaves(carry)
    for old, new in zip(old_leaves, jax.tree_util.tree_leaves(new_carry), strict=True):
        if shape_of(old) != new.shape:
            raise ValueError(
                f"carry: the cell maps a carry leaf of shape {shape_of(old)} to shape "
                f"{new.shape}; create the carry with the cell's init_carry(batch_shape, hidden) "
                f"for the batch shape of xs"
            )
        if jnp.dtype(dtype_of(old)) != new.dtype:
            xs_dtypes = sorted(
                {str(jnp.dtype(dtype_of(leaf))) for leaf in jax.tree_util.tree_leaves(xs)}
            )
            raise ValueError(
                f"carry: the cell maps a carry leaf of dtype {dtype_of(old)} to dtype "
                f"{new.dtype} (xs has dtype {', '.join(xs_dtypes)}); give params, carry and xs "
                f"one dtype: the carry from init_carry(batch_shape, hidden, dtype=...) and "
                f"xs.astype(...)"
            )


def _broadcast_mask(mask, leaf):
    """Reshape a (*batch,) mask to broadcast against a (*batch, ...) leaf."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def scan(
    cell,
    params,
    carry,
    xs,
    *,
    lengths=None,
    reverse: bool = False,
    unroll: int | bool = 1,
    checkify_lengths: bool = False,
    checkpoints: int | None = None,
):
    """Run ``cell`` along the leading axis of ``xs`` with one ``jax.lax.scan``.

    Type signature (``c`` the carry, ``a`` one input step, ``b`` one output step)::

        scan(cell: (P, c, a) -> (c, b), params: P, carry: c, xs: [T, a], *,
             lengths: [*batch] int | None, reverse: bool, unroll: int | bool,
             checkpoints: int | None) -> (c, [T, b])

    With ``lengths`` (right-padded sequences), sequence n runs over its first
    ``lengths[n]`` steps only: its carry stops changing after them, its outputs past them
    are zero and the returned carry is the carry at its length. With ``reverse=True`` each
    sequence is run backwards *within its own length* (from step ``lengths[n] - 1`` down to
    0), and ``ys[t]`` stays aligned with ``xs[t]``. The values of the padding never matter,
    not even NaN, in the outputs or in gradients. The plain-Python meaning, per sequence n::

        def scan(cell, params, carry, xs, lengths, reverse):
            T = len(xs)
            L = lengths[n] if lengths is not None else T
            ys = [zeros_like_output] * T
            for t in (reversed(range(L)) if reverse else range(L)):
                carry, ys[t] = cell(params, carry, xs[t])
            return carry, stack(ys)

    Args:
      cell: ``cell(params, carry, x) -> (carry, y)``.
      params: the cell's parameters (any pytree).
      carry: the initial carry; leaves of shape (*batch, ...).
      xs: inputs of shape (T, *batch, D), or a pytree of arrays with leading axis T.
      lengths: optional integer array of shape (*batch,) with values in [0, T]. Values are
        checked when known at trace time; under ``jit`` they cannot be, and a value outside
        [0, T] behaves like the nearest bound (below 0: no step; above T: all T steps),
        unless ``checkify_lengths``.
      reverse: run from t = T - 1 (or the sequence's last step) down to 0.
      unroll: how many steps the compiled loop body holds, as ``lax.scan``'s ``unroll``:
        a positive integer, or True (all T steps) / False (one step).
      checkify_lengths: check traced ``lengths`` too, as a ``checkify.check``: run the
        jitted function under ``jax.experimental.checkify.checkify`` and ``err.throw()``
        raises for a value outside [0, T]::

            f = checkify.checkify(jax.jit(lambda L: scan(..., lengths=L, checkify_lengths=True)))
            err, out = f(lengths);  err.throw()
      checkpoints: None (the gradient keeps every step's residuals, as ``lax.scan``), or k:
        the gradient keeps at most k carries and recomputes the rest by binomial
        checkpointing, the fewest recomputations possible with k (SPEC §10,
        :mod:`jaxrnn.checkpointed`); same values and, up to rounding, the same gradients.

    Returns:
      ``(final_carry, ys)``, with ys of shape (T, *batch, ...).
    """
    if not callable(cell):
        raise ValueError(f"cell: expected a callable cell(params, carry, x), got {cell!r}")
    n_steps = _sequence_length(xs)
    if not isinstance(unroll, (bool, np.bool_)) and not (is_int(unroll) and unroll >= 1):
        raise ValueError(f"unroll: expected a positive integer or a bool, got {unroll!r}")
    if not isinstance(reverse, (bool, np.bool_)):
        raise ValueError(f"reverse: expected True or False, got {reverse!r}")
    _check_carry_type(cell, params, carry, xs)
    carry = vary_like(carry, params, xs, lengths)  # a carry made inside jax.shard_map
    loop = jax.lax.scan
    if checkpoints is not None:
        loop = functools.partial(checkpointed.scan, checkpoints=checkpoints)
    if lengths is None:
        return loop(lambda c, x: cell(params, c, x), carry, xs, reverse=reverse, unroll=unroll)
    lengths = jnp.asarray(check_lengths(lengths, xs, n_steps, checkify_values=checkify_lengths))

    def masked_step(c, t_and_x):
        t, x = t_and_x
        active = t < lengths
        # The cell also runs on padding; it sees zeros there, so that NaN or huge padding
        # cannot reach the gradient through the discarded branch of the where below.
        x = jax.tree_util.tree_map(
            lambda leaf: jnp.where(_broadcast_mask(active, leaf), leaf, jnp.zeros_like(leaf)), x
        )
        new_c, y = cell(params, c, x)
        new_c = jax.tree_util.tree_map(
            lambda new, old: jnp.where(_broadcast_mask(active, new), new, old), new_c, c
        )
        y = jax.tree_util.tree_map(
            lambda leaf: jnp.where(_broadcast_mask(active, leaf), leaf, jnp.zeros_like(leaf)), y
        )
        return new_c, y

    # Forward: padded steps come after a sequence's end and leave its carry alone.
    # Reverse: they come first, so the carry is still the initial one at step L - 1.
    return loop(masked_step, carry, (jnp.arange(n_steps), xs), reverse=reverse, unroll=unroll)


def concat_outputs(y_forward, y_backward):
    """The default ``merge`` of :func:`bidirectional`: concatenate on the last axis."""
    return jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b], axis=-1), y_forward, y_backward
    )


def bidirectional(
    cells,
    params,
    carries,
    xs,
    *,
    lengths=None,
    merge=concat_outputs,
    unroll: int | bool = 1,
    checkify_lengths: bool = False,
):
    """Run one cell forward and one backward over ``xs`` and merge their outputs per step.

        (c_fw, ys_fw) = scan(cell_fw, params_fw, carry_fw, xs, lengths=lengths)
        (c_bw, ys_bw) = scan(cell_bw, params_bw, carry_bw, xs, lengths=lengths, reverse=True)
        ys[t] = merge(ys_fw[t], ys_bw[t])

    Under padding the backward pass starts at each sequence's own last step, never at the
    padding, and outputs past a sequence's length are zero in both directions.

    Args:
      cells: a cell used for both directions, or a pair ``(cell_fw, cell_bw)``.
      params: a pair ``(params_fw, params_bw)``.
      carries: a pair ``(carry_fw, carry_bw)``.
      xs: (T, *batch, D).
      lengths: optional (*batch,) integer lengths.
      merge: ``merge(y_fw, y_bw) -> y``; default concatenates on the last axis.
      unroll, checkify_lengths: as for :func:`scan`.

    Returns:
      ``((final_carry_fw, final_carry_bw), ys)``.
    """
    if not isinstance(cells, (tuple, list)):
        cells = (cells, cells)
    for name, value in (("cells", cells), ("params", params), ("carries", carries)):
        if not (isinstance(value, (tuple, list)) and len(value) == 2):
            raise ValueError(f"{name}: expected a pair (forward, backward), got {type(value)}")
    cell_fw, cell_bw = cells
    if not (callable(cell_fw) and callable(cell_bw)):
        raise ValueError("cells: expected a callable cell or a pair of callable cells")
    options = {"lengths": lengths, "unroll": unroll, "checkify_lengths": checkify_lengths}
    carry_fw, ys_fw = scan(cell_fw, params[0], carries[0], xs, **options)
    carry_bw, ys_bw = scan(cell_bw, params[1], carries[1], xs, reverse=True, **options)
    return (carry_fw, carry_bw), merge(ys_fw, ys_bw)
