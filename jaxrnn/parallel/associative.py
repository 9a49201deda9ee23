"""Run a linear cell (minGRU, minLSTM, LRU) over a sequence by one associative scan.

A linear cell's carry follows h_t = a_t * h_{t-1} + b_t with coefficients that depend on
x_t alone, ``(a, b) = cell.coefficients(params, xs)`` for all T steps at once, and its
output is ``cell.readout(params, hs, xs)``. So the whole sequence is one call of
:func:`jaxrnn.parallel.linear_recurrence` (O(log T) depth) between two maps over time.

Why a function and not an option of ``jaxrnn.scan``: ``scan`` runs any ``cell(params,
carry, x)``, knowing nothing of particular cells; the associative evaluation needs more
than that function (the coefficients of all steps at once and the readout, which only the
linear cells' modules provide), and takes arguments the sequential runner has no use for
(``resets``, ``mesh``). Here the cell is the module itself (``jaxrnn.cells.lru``), and the
result is the one ``jaxrnn.scan(cell.apply, ...)`` returns.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrnn._checks import describe
from jaxrnn._scan import scan
from jaxrnn.parallel.linear import check_segments, final_state, linear_recurrence, step_masks
from jaxrnn.parallel.timesplit import check_time_mesh

CELL_FUNCTIONS = ("apply", "coefficients", "readout")


def _check_arguments(cell, params, carry, xs, lengths, resets, reverse, mesh):
    if not all(callable(getattr(cell, name, None)) for name in CELL_FUNCTIONS):
        raise ValueError(
            f"cell: expected a linear cell's module with {', '.join(CELL_FUNCTIONS)} (e.g. "
            f"jaxrnn.cells.mingru, minlstm or lru), got {cell!r}"
        )
    for name, value in (("carry", carry), ("xs", xs)):
        if not hasattr(value, "shape"):
            raise ValueError(f"{name}: expected an array, got {describe(value)}")
    # The sequential runner checks params, carry, xs and reverse; reuse it, abstractly.
    jax.eval_shape(lambda p, c, x: scan(cell.apply, p, c, x, reverse=reverse), params, carry, xs)
    check_segments(lengths, resets, xs, name="xs")
    if mesh is not None:
        check_time_mesh(mesh)


def scan_associative(
    cell, params, carry, xs, *, lengths=None, resets=None, reverse: bool = False, mesh=None
):
    """``jaxrnn.scan(cell.apply, params, carry, xs, ...)`` by one associative scan.

    The plain-Python meaning, per sequence (L = its length, T without ``lengths``)::

        def scan_associative(cell, params, carry, xs, lengths, resets, reverse):
            a, b = cell.coefficients(params, xs)        # every step at once, (T, *batch, H)
            hs = [zeros(H)] * T
            h = carry
            for t in (reversed(range(L)) if reverse else range(L)):
                if t starts a segment:                  # as in linear_recurrence
                    h = carry
                h = a[t] * h + b[t]
                hs[t] = h
            ys = cell.readout(params, hs, xs)           # zero past each length
            return h, ys

    equal to ``jaxrnn.scan(cell.apply, ...)`` with the same ``lengths`` and ``reverse``
    (with ``resets``: to :func:`jaxrnn.parallel.scan_with_resets`), gradients included,
    and padding values (NaN too) reach neither outputs nor gradients: the coefficients
    are computed from zeros there.

    Args:
      cell: a linear cell's module: ``jaxrnn.cells.mingru``, ``minlstm`` or ``lru`` (or any
        object with ``apply``, ``coefficients`` and ``readout`` of that contract).
      params: the cell's parameters.
      carry: the initial state, (*batch, H) (complex for ``lru``).
      xs: inputs (T, *batch, D).
      lengths: optional integer lengths (*batch,), as in ``jaxrnn.scan``.
      resets: optional boolean (T, *batch): True at the first step of each packed segment.
      reverse: run each sequence backwards within its length.
      mesh: optional 1-D ``jax.sharding.Mesh`` to split T over (SPEC §13).

    Returns:
      ``(final_carry, ys)``: the state at each length (*batch, H) and the outputs
      (T, *batch, ...).
    """
    _check_arguments(cell, params, carry, xs, lengths, resets, reverse, mesh)
    return _run(cell, params, carry, xs, lengths, resets, reverse=bool(reverse), mesh=mesh)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("reverse", "mesh"))
def _run(cell, params, carry, xs, lengths, resets, *, reverse, mesh):
    xs = jnp.asarray(xs)
    active = None
    if lengths is not None:
        active, _ = step_masks(xs.shape[0], xs.shape[1:-1], lengths, None, reverse)
        xs = jnp.where(active[..., None], xs, jnp.zeros_like(xs))
    a, b = cell.coefficients(params, xs)
    hs = linear_recurrence(a, b, carry, lengths=lengths, resets=resets, reverse=reverse, mesh=mesh)
    ys = cell.readout(params, hs, xs)
    if active is not None:
        ys = jnp.where(active.reshape(active.shape + (1,) * (ys.ndim - active.ndim)), ys, 0)
    return final_state(hs, carry, lengths=lengths, reverse=reverse), ys
