"""Carries made inside ``jax.shard_map``: give them the mesh axes the inputs vary over.

Inside ``shard_map`` every value's type records the mesh axes over which it differs
between devices. An initial carry made inside the mapped function (``init_carry``,
``jnp.zeros``) varies over none; after one step that reads the inputs (split over the
batch, say) the carry varies over their axes, and ``lax.scan`` refuses a carry whose type
changes ("carry input and carry output must have equal types"). The runners here cast the
initial carry to the axes of everything the step reads before they scan, which is what
the step would make of it anyway. Outside ``shard_map`` nothing varies and this is a no-op.
"""

from __future__ import annotations

import jax


def varying_axes(tree) -> frozenset:
    """The mesh axes over which any leaf of ``tree`` varies (empty outside ``shard_map``)."""
    axes: set = set()
    for leaf in jax.tree_util.tree_leaves(tree):
        if not isinstance(leaf, jax.Array | jax.core.Tracer):
            continue
        aval = jax.typeof(leaf)
        manual = getattr(aval, "manual_axis_type", None)
        axes |= set(getattr(manual, "varying", None) or getattr(aval, "vma", None) or ())
    return frozenset(axes)


def _cast_to_varying(leaf, axes: tuple):
    if hasattr(jax.lax, "pcast"):
        return jax.lax.pcast(leaf, axes, to="varying")
    return jax.lax.pvary(leaf, axes)  # older JAX


def vary_like(tree, *others):
    """``tree`` with every leaf cast to vary over the mesh axes that ``others`` vary over.

    Args:
      tree: a pytree of arrays (an initial carry).
      others: pytrees the computation reads (inputs, parameters, lengths).

    Returns:
      ``tree`` with the same values; inside ``shard_map`` each leaf's type varies over
      the union of the axes of ``others`` (leaves that already do are left alone).
    """
    wanted = varying_axes(others)
    if not wanted:
        return tree

    def cast(leaf):
        missing = tuple(sorted(wanted - varying_axes(leaf), key=str))
        return _cast_to_varying(leaf, missing) if missing else leaf

    return jax.tree_util.tree_map(cast, tree)


def sum_like(cotangents, primals):
    """Each cotangent summed over the mesh axes it varies over and its primal does not.

    The gradient of a value used on every device (replicated parameters inside
    ``shard_map``) is the sum of the per-device gradients: what autodiff does for a cast
    to varying, and what a hand-written backward pass (``custom_vjp``) must do itself.

    Args:
      cotangents: a pytree of gradients.
      primals: a pytree of the same structure holding the values they are gradients of.

    Returns:
      ``cotangents``, each leaf ``psum``-med over the extra axes (unchanged outside
      ``shard_map``).
    """

    def reduce(cotangent, primal):
        extra = tuple(sorted(varying_axes(cotangent) - varying_axes(primal), key=str))
        return jax.lax.psum(cotangent, extra) if extra else cotangent

    return jax.tree_util.tree_map(reduce, cotangents, primals)
