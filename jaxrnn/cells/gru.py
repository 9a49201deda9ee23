"""Gated recurrent unit, the variant of PyTorch ``nn.GRU``, cuDNN and flax ``GRUCell``.

    r_t = sigma(W_r x_t + U_r h_{t-1} + b_r)
    z_t = sigma(W_z x_t + U_z h_{t-1} + b_z)
    n_t = tanh(W_n x_t + b_n + r_t * (U_n h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1},     y_t = h_t

The reset gate multiplies ``U_n h_{t-1} + b_hn`` after the matrix product (Cho et al.'s
original applies it before, ``U_n (r_t * h_{t-1})``); this variant is the one whose weights
other libraries exchange. Shapes: W_* (H, D), U_* (H, H), b_* (H,); carry h (*batch, H).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._cell_pieces import check_sizes, gate_shapes, uniform_weights, zeros_carry
from jaxrnn._checks import check_batches_broadcast, check_last_dim, check_matrix, check_params

GATES = ("r", "z", "n")


def param_shapes(in_dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {**gate_shapes(GATES, in_dim, hidden), "b_hn": (hidden,)}


def init(key, in_dim: int, hidden: int, *, dtype=jnp.float32) -> dict:
    """Weights from U(-1/sqrt(H), 1/sqrt(H)), biases zero."""
    check_sizes(in_dim, hidden)
    shapes = param_shapes(in_dim, hidden)
    params = uniform_weights(
        key, {k: s for k, s in shapes.items() if not k.startswith("b_")}, hidden, dtype
    )
    params.update({k: jnp.zeros(s, dtype) for k, s in shapes.items() if k.startswith("b_")})
    return params


def init_carry(batch_shape, hidden: int, dtype=jnp.float32):
    """The zero state h_0, shape (*batch_shape, H)."""
    return zeros_carry(batch_shape, hidden, dtype)


def apply(params: dict, carry, x):
    """One step: ``(h_{t-1}, x_t) -> (h_t, h_t)``.

    Args:
      params: ``W_g`` (H, D), ``U_g`` (H, H), ``b_g`` (H,) for g in r, z, n, and ``b_hn``
        (H,), as made by :func:`init`.
      carry: h_{t-1}, shape (*batch, H).
      x: x_t, shape (*batch, D).

    Returns:
      ``(h_t, h_t)``, each of shape (*batch, H).
    """
    hidden, in_dim = check_matrix(params, "W_r")
    check_params(params, param_shapes(in_dim, hidden))
    check_last_dim(carry, hidden, name="carry")
    check_last_dim(x, in_dim, name="x")
    check_batches_broadcast({"carry": carry, "x": x})
    carry, x = jnp.asarray(carry), jnp.asarray(x)
    p = params
    r = jax.nn.sigmoid(x @ p["W_r"].T + carry @ p["U_r"].T + p["b_r"])
    z = jax.nn.sigmoid(x @ p["W_z"].T + carry @ p["U_z"].T + p["b_z"])
    n = jnp.tanh(x @ p["W_n"].T + p["b_n"] + r * (carry @ p["U_n"].T + p["b_hn"]))
    h = (1 - z) * n + z * carry
    return h, h
