"""The vjp of one scan step for its floating leaves: shared by the custom derivatives of
:mod:`jaxrnn.checkpointed` and :mod:`jaxrnn.reversible_rnn`, which differentiate a scan one
step at a time.

Integer leaves (a step counter, fixed-point words) have no cotangent: they enter the step as
constants and leave it without one; symbolic zero cotangents are ``None``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero


def is_float(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return bool(jnp.issubdtype(jnp.result_type(leaf) if dtype is None else dtype, jnp.inexact))


def float_leaves(tree) -> list:
    return [leaf for leaf in jax.tree_util.tree_leaves(tree) if is_float(leaf)]


def cotangent_leaves(cts, like) -> list:
    """The cotangents of the floating leaves of ``like`` (None for symbolic zeros)."""
    is_zero = lambda c: isinstance(c, SymbolicZero)  # noqa: E731
    leaves = jax.tree_util.tree_leaves(cts, is_leaf=is_zero)
    return [
        None if is_zero(c) else c
        for c, leaf in zip(leaves, jax.tree_util.tree_leaves(like), strict=True)
        if is_float(leaf)
    ]


def with_floats(tree, floats):
    """``tree`` with its floating leaves replaced by ``floats`` and its others by None (the
    form a custom vjp returns for inputs without a cotangent)."""
    it = iter(floats)
    leaves = [next(it) if is_float(leaf) else None for leaf in jax.tree_util.tree_leaves(tree)]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), leaves)


def step_vjp(step, consts, carry, x, carry_ct, y_ct, x_wanted: bool):
    """Cotangents of ``step(carry, x, *consts) -> (carry, y)`` for its floating leaves.

    Args:
      carry_ct, y_ct: lists over the floating leaves of the new carry and of y (None: zero).
      x_wanted: whether x gets a cotangent.
    Returns:
      ``(d_consts, d_carry, d_x)``: lists over the floating leaves of consts, carry and x
      (``d_x`` empty without ``x_wanted``).
    """
    leaves, treedefs, floats = [], [], []
    for tree in (consts, carry, x):
        flat, treedef = jax.tree_util.tree_flatten(tree)
        leaves.append(flat)
        treedefs.append(treedef)
        floats.append([i for i, leaf in enumerate(flat) if is_float(leaf)])
    if not x_wanted:
        floats[2] = []

    def rebuild(which, values):
        flat = list(leaves[which])
        for i, v in zip(floats[which], values, strict=True):
            flat[i] = v
        return jax.tree_util.tree_unflatten(treedefs[which], flat)

    def float_step(c_consts, c_carry, c_x):
        new_carry, y = step(rebuild(1, c_carry), rebuild(2, c_x), *rebuild(0, c_consts))
        return float_leaves((new_carry, y))

    primals = [[leaves[w][i] for i in floats[w]] for w in range(3)]
    outs, pullback = jax.vjp(float_step, *primals)
    cts = [
        jnp.zeros_like(o) if c is None else c.astype(o.dtype)
        for o, c in zip(outs, list(carry_ct) + list(y_ct), strict=True)
    ]
    return pullback(cts)
