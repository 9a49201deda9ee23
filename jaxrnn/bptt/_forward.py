"""What every hand BPTT needs before its reverse scan: checked inputs and the forward states."""

from __future__ import annotations

import jax.numpy as jnp

from jaxrnn._checks import dtype_of, is_real, shape_of
from jaxrnn._scan import scan


def check_sequences(xs, dL_dh, *, in_dim: int | None, hidden: int | None):
    """Check ``xs`` (T, *batch, D) and ``dL_dh`` (T, *batch, H); ``None`` sizes = scalar model.

    For the scalar model (``in_dim = hidden = None``) ``xs`` is (T, *batch) and ``dL_dh``
    must have the same shape. Both hold real numbers: integer or floating (bits as int32
    work, and are taken in the params' dtype); bool and complex are refused. Returns both
    as arrays.
    """
    xs_shape, dl_shape = shape_of(xs), shape_of(dL_dh)
    vector = in_dim is not None
    least = 2 if vector else 1
    if len(xs_shape) < least or xs_shape[0] < 1:
        wanted = f"(T, *batch, {in_dim})" if vector else "(T,) or (T, *batch)"
        raise ValueError(f"xs: expected shape {wanted} with T >= 1, got {xs_shape}")
    if vector and xs_shape[-1] != in_dim:
        raise ValueError(f"xs: expected shape (T, *batch, {in_dim}), got {xs_shape}")
    expected = xs_shape[:-1] + (hidden,) if vector else xs_shape
    if dl_shape != expected:
        raise ValueError(
            f"dL_dh: expected shape {expected} (one dL/dh per step of xs {xs_shape}), "
            f"got {dl_shape}"
        )
    for name, value in (("xs", xs), ("dL_dh", dL_dh)):
        if not is_real(dtype_of(value)):
            raise ValueError(
                f"{name}: expected real numbers (integer or floating), got {dtype_of(value)}"
            )
    return jnp.asarray(xs), jnp.asarray(dL_dh)


def carry_sequence(cell, params, carry, xs):
    """Run ``cell`` over ``xs`` and return the carry after every step, stacked on axis 0.

    carries = []
    for x in xs:
        carry, _ = cell(params, carry, x)
        carries.append(carry)
    """

    def keep_carry(p, c, x):
        new_carry, _ = cell(p, c, x)
        return new_carry, new_carry

    return scan(keep_carry, params, carry, xs)[1]


def shift_in(first, later):
    """``[first, later[0], ..., later[T-2]]``: the value at step t-1 for every step t."""
    return jnp.concatenate([first[None], later[:-1]], axis=0)


def sum_over_leading(x, n_axes: int):
    """Sum over the leading ``n_axes`` axes (time and batch)."""
    return jnp.sum(x, axis=tuple(range(n_axes)))


def state_dtype(params, *arrays):
    """The dtype of the recurrent state: the promotion of the params' and inputs' dtypes."""
    return jnp.result_type(*[jnp.asarray(leaf).dtype for leaf in params.values()], *arrays)
