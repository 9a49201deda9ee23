"""Threshold (step) RNN cell of SPEC §1.

    z(t) = U x(t) + W h(t-1) + b_h        h(t) = phi(z(t))
    r(t) = V h(t) + b_y                   y(t) = phi(r(t))
    phi(z) = 1 if z > 0 else 0            (so phi(0) = 0)

Shapes: U (H, D), W (H, H), b_h (H,), V (K, H), b_y (K,); x (*batch, D); carry h (*batch, H);
y (*batch, K). ``activation`` replaces phi, e.g. by a sigmoid surrogate for training.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxrnn._cell_pieces import check_sizes, uniform_weights, zeros_carry
from jaxrnn._checks import (
    check_batches_broadcast,
    check_last_dim,
    check_matrix,
    check_params,
    check_positive_int,
)


def step(z):
    """phi(z) = 1 where z > 0, else 0 (strict: phi(0) = 0), in the dtype of ``z``."""
    return (z > 0).astype(z.dtype)


def param_shapes(in_dim: int, hidden: int, out_dim: int) -> dict[str, tuple[int, ...]]:
    return {
        "U": (hidden, in_dim),
        "W": (hidden, hidden),
        "b_h": (hidden,),
        "V": (out_dim, hidden),
        "b_y": (out_dim,),
    }


def init(key, in_dim: int, hidden: int, *, out_dim: int = 1, dtype=jnp.float32) -> dict:
    """Random weights from U(-1/sqrt(H), 1/sqrt(H)), biases zero."""
    check_sizes(in_dim, hidden)
    check_positive_int(out_dim, name="out_dim")
    shapes = param_shapes(in_dim, hidden, out_dim)
    params = uniform_weights(key, {k: shapes[k] for k in ("U", "W", "V")}, hidden, dtype)
    params["b_h"] = jnp.zeros((hidden,), dtype)
    params["b_y"] = jnp.zeros((out_dim,), dtype)
    return params


def init_carry(batch_shape, hidden: int, dtype=jnp.float32):
    """h(0) = 0, shape (*batch_shape, H)."""
    return zeros_carry(batch_shape, hidden, dtype)


def apply(params: dict, carry, x, *, activation=step):
    """One step: ``(h(t-1), x(t)) -> (h(t), y(t))``.

    Args:
      params: ``U`` (H, D), ``W`` (H, H), ``b_h`` (H,), ``V`` (K, H), ``b_y`` (K,).
      carry: h(t-1), shape (*batch, H).
      x: x(t), shape (*batch, D); integer bits are cast to the weights' dtype.
      activation: phi (default :func:`step`), or a smooth surrogate of it.

    Returns:
      ``(h(t), y(t))`` of shapes (*batch, H) and (*batch, K).
    """
    hidden, in_dim = check_matrix(params, "U")
    out_dim = check_matrix(params, "V")[0]
    check_params(params, param_shapes(in_dim, hidden, out_dim))
    check_last_dim(carry, hidden, name="carry")
    check_last_dim(x, in_dim, name="x")
    check_batches_broadcast({"carry": carry, "x": x})
    carry = jnp.asarray(carry)
    x = jnp.asarray(x).astype(params["U"].dtype)
    h = activation(x @ params["U"].T + carry @ params["W"].T + params["b_h"])
    y = activation(h @ params["V"].T + params["b_y"])
    return h, y
