"""Elman RNN cell.

    h_t = act(W h_{t-1} + U x_t + b),    y_t = h_t,    act = tanh (default) or sigmoid

Shapes: W (H, H), U (H, D), b (H,); x (*batch, D); carry h (*batch, H).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxrnn._cell_pieces import check_sizes, resolve_activation, uniform_weights, zeros_carry
from jaxrnn._checks import check_batches_broadcast, check_last_dim, check_matrix, check_params


def param_shapes(in_dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {"W": (hidden, hidden), "U": (hidden, in_dim), "b": (hidden,)}


def init(key, in_dim: int, hidden: int, *, dtype=jnp.float32) -> dict:
    """Weights from U(-1/sqrt(H), 1/sqrt(H)), bias zero.

    Returns ``{"W": (H, H), "U": (H, D), "b": (H,)}``.
    """
    check_sizes(in_dim, hidden)
    params = uniform_weights(key, {"W": (hidden, hidden), "U": (hidden, in_dim)}, hidden, dtype)
    params["b"] = jnp.zeros((hidden,), dtype)
    return params


def init_carry(batch_shape, hidden: int, dtype=jnp.float32):
    """The zero state h_0, shape (*batch_shape, H)."""
    return zeros_carry(batch_shape, hidden, dtype)


def apply(params: dict, carry, x, *, activation="tanh"):
    """One step: ``(h_{t-1}, x_t) -> (h_t, h_t)``.

    Args:
      params: ``{"W", "U", "b"}`` as made by :func:`init`.
      carry: h_{t-1}, shape (*batch, H).
      x: x_t, shape (*batch, D).
      activation: ``"tanh"``, ``"sigmoid"`` or a callable.

    Returns:
      ``(h_t, h_t)``, each of shape (*batch, H).
    """
    hidden, in_dim = check_matrix(params, "U")
    check_params(params, param_shapes(in_dim, hidden))
    check_last_dim(carry, hidden, name="carry")
    check_last_dim(x, in_dim, name="x")
    check_batches_broadcast({"carry": carry, "x": x})
    act = resolve_activation(activation)
    carry, x = jnp.asarray(carry), jnp.asarray(x)
    h = act(carry @ params["W"].T + x @ params["U"].T + params["b"])
    return h, h
