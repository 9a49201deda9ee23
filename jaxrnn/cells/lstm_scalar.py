"""Univariate LSTM cell (SPEC §3): scalar input, scalar state, eight weights, no biases.

    i(t) = sigma(w_ix x(t) + w_ih h(t-1))      f(t) = sigma(w_fx x(t) + w_fh h(t-1))
    o(t) = sigma(w_ox x(t) + w_oh h(t-1))      g(t) = tanh(w_gx x(t) + w_gh h(t-1))
    c(t) = f(t) c(t-1) + i(t) g(t)             h(t) = o(t) tanh(c(t)),     y(t) = h(t)

Shapes: every weight is a scalar (); x has shape batch (``()`` for one sequence) and the
carry (c, h) the same shape: a sequence ``xs`` is (T,) or (T, *batch). As in the vector
cells, one step also takes shapes that broadcast: a carry of shape () is shared by every
sequence of x (B,), and c(t), h(t) take the broadcast shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._checks import (
    batch_shape_tuple,
    check_batches_broadcast,
    check_key,
    check_params,
    describe,
    dtype_of,
    is_number,
    is_real,
)

WEIGHTS = ("w_ix", "w_ih", "w_fx", "w_fh", "w_ox", "w_oh", "w_gx", "w_gh")


def init(key, in_dim: int = 1, hidden: int = 1, *, scale: float = 1.0, dtype=jnp.float32):
    """Eight scalar weights drawn from U(-scale, scale). ``in_dim`` and ``hidden`` must be 1."""
    if in_dim != 1 or hidden != 1:
        raise ValueError(
            f"in_dim, hidden: the univariate LSTM has in_dim = hidden = 1, got {in_dim}, {hidden}"
        )
    check_key(key)
    if not is_number(scale) or scale <= 0:
        raise ValueError(f"scale: expected a positive number, got {scale!r}")
    values = jax.random.uniform(key, (len(WEIGHTS),), dtype, -scale, scale)
    return {name: values[k] for k, name in enumerate(WEIGHTS)}


def init_carry(batch_shape=(), hidden: int = 1, dtype=jnp.float32):
    """The zero state (c(0), h(0)), each of shape ``batch_shape``."""
    if hidden != 1:
        raise ValueError(f"hidden: the univariate LSTM has hidden = 1, got {hidden}")
    shape = batch_shape_tuple(batch_shape)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


def gates(params: dict, h_prev, x):
    """The post-activation gates ``(i, f, o, g)``."""
    p = params
    return (
        jax.nn.sigmoid(p["w_ix"] * x + p["w_ih"] * h_prev),
        jax.nn.sigmoid(p["w_fx"] * x + p["w_fh"] * h_prev),
        jax.nn.sigmoid(p["w_ox"] * x + p["w_oh"] * h_prev),
        jnp.tanh(p["w_gx"] * x + p["w_gh"] * h_prev),
    )


def apply(params: dict, carry, x):
    """One step: ``((c(t-1), h(t-1)), x(t)) -> ((c(t), h(t)), h(t))``, elementwise over batch.

    Args:
      params: the eight scalar weights of :data:`WEIGHTS`, as made by :func:`init`.
      carry: ``(c(t-1), h(t-1))``, each of the batch shape of x, or of a shape that
        broadcasts with it (``()`` for one state shared by every sequence).
      x: x(t), shape batch (``()`` for one sequence).

    Returns:
      ``((c(t), h(t)), h(t))``, each of the broadcast shape of c(t-1), h(t-1) and x.
    """
    check_params(params, {name: () for name in WEIGHTS})
    if not (isinstance(carry, tuple) and len(carry) == 2):
        raise ValueError(f"carry: expected a tuple (c, h), got {describe(carry)}")
    parts = {"carry[0] (c)": carry[0], "carry[1] (h)": carry[1], "x": x}
    for name, value in parts.items():
        if not is_real(dtype_of(value)):
            raise ValueError(
                f"{name}: expected real numbers (integer or floating), got {dtype_of(value)}"
            )
    check_batches_broadcast(parts, feature_axis=False)  # every axis is a batch axis
    c_prev, h_prev, x = jnp.asarray(carry[0]), jnp.asarray(carry[1]), jnp.asarray(x)
    i, f, o, g = gates(params, h_prev, x)
    c = f * c_prev + i * g
    h = o * jnp.tanh(c)
    return (c, h), h
