"""Packed sequences for any cell: ``jaxrnn.scan`` with segment starts (``resets``).

Several short sequences packed end to end in one row of a batch, with ``resets[t]`` True
at the first step of each, run as if each were alone: the carry starts again from the
initial one at every segment start. This is the sequential meaning of the ``resets`` of
:func:`jaxrnn.parallel.linear_recurrence` and :func:`jaxrnn.parallel.scan_associative`
(SPEC §12), for every cell, linear or not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._checks import dtype_of, shape_of
from jaxrnn._scan import scan


def check_resets(resets, xs):
    """``resets``: a boolean (T, *batch) mask, its batch axes the leading ones of xs after T."""
    if dtype_of(resets) != jnp.bool_:
        raise ValueError(f"resets: expected a boolean mask, got dtype {dtype_of(resets)}")
    shape = shape_of(resets)
    for leaf in jax.tree_util.tree_leaves(xs):
        leading = shape_of(leaf)[: len(shape)]
        if len(shape) < 1 or leading != shape or len(shape) >= len(shape_of(leaf)):
            raise ValueError(
                f"resets: expected shape (T, *batch), the leading axes of xs before its "
                f"feature axis (xs leaf of shape {shape_of(leaf)}), got {shape}"
            )


def _restarting(cell):
    """The cell on carries ``(initial, current)`` and inputs ``(start, x)``: where ``start``
    is True the step runs from ``initial`` instead of ``current``."""

    def step(params, carries, start_and_x):
        initial, current = carries
        start, x = start_and_x

        def restart(first, now):
            return jnp.where(
                start.reshape(start.shape + (1,) * (now.ndim - start.ndim)), first, now
            )

        current = jax.tree_util.tree_map(restart, initial, current)
        current, y = cell(params, current, x)
        return (initial, current), y

    return step


def scan_with_resets(cell, params, carry, xs, resets, *, lengths=None, reverse: bool = False):
    """``jaxrnn.scan`` in which a new segment starts from ``carry`` wherever ``resets`` is True.

    The plain-Python meaning, per sequence n (L = its length, T without ``lengths``)::

        def scan_with_resets(cell, params, carry, xs, resets, lengths, reverse):
            ys = [zeros_like_output] * T
            steps = reversed(range(L)) if reverse else range(L)
            h = carry
            for t in steps:
                if resets[t] (forward) or resets[t + 1] (reverse, t + 1 < L):
                    h = carry                     # a segment starts at this step
                h, ys[t] = cell(params, h, xs[t])
            return h, stack(ys)

    ``resets`` marks the first step of each segment in time order; in reverse each segment
    runs from its own last step down to its first, so one mask serves both directions
    (and ``bidirectional`` runs: forward with ``reverse=False``, backward with ``True``).
    Everything else is ``jaxrnn.scan``'s: ``lengths``, padding that reaches nothing, and
    the final carry, here the carry at the end of the last segment run.

    Args:
      cell: ``cell(params, carry, x) -> (carry, y)``, any cell.
      params: the cell's parameters.
      carry: the initial carry of every segment; leaves (*batch, ...).
      xs: inputs (T, *batch, D) or a pytree of them.
      resets: boolean (T, *batch) (or (T, *leading batch axes)): True where a segment starts.
      lengths: optional (*batch,) integer lengths, as in ``jaxrnn.scan``.
      reverse: run each sequence backwards within its length, as in ``jaxrnn.scan``.

    Returns:
      ``(final_carry, ys)``, as ``jaxrnn.scan``.
    """
    check_resets(resets, xs)
    if isinstance(reverse, bool) and reverse:
        resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])])
    (_, final), ys = scan(
        _restarting(cell), params, (carry, carry), (resets, xs), lengths=lengths, reverse=reverse
    )
    return final, ys
