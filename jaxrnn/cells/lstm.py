"""Vector LSTM cell (SPEC §4).

    i_t = sigma(W_i x_t + U_i h_{t-1} + b_i)     f_t = sigma(W_f x_t + U_f h_{t-1} + b_f)
    o_t = sigma(W_o x_t + U_o h_{t-1} + b_o)     g_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
    c_t = f_t * c_{t-1} + i_t * g_t              h_t = o_t * tanh(c_t),     y_t = h_t

Shapes: W_* (H, D), U_* (H, H), b_* (H,); x (*batch, D); carry (c, h), each (*batch, H).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._cell_pieces import check_sizes, gate_shapes, uniform_weights, zeros_carry
from jaxrnn._checks import (
    check_batches_broadcast,
    check_last_dim,
    check_matrix,
    check_params,
    describe,
)
from jaxrnn._deprecated import alias

GATES = ("i", "f", "o", "c")


def param_shapes(in_dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return gate_shapes(GATES, in_dim, hidden)


def init(key, in_dim: int, hidden: int, *, forget_bias: float = 0.0, dtype=jnp.float32):
    """Weights from U(-1/sqrt(H), 1/sqrt(H)); biases zero except b_f = ``forget_bias``.

    Returns a dict with ``W_g`` (H, D), ``U_g`` (H, H), ``b_g`` (H,) for g in i, f, o, c.
    """
    check_sizes(in_dim, hidden)
    shapes = param_shapes(in_dim, hidden)
    params = uniform_weights(
        key, {k: s for k, s in shapes.items() if not k.startswith("b_")}, hidden, dtype
    )
    for gate in GATES:
        params[f"b_{gate}"] = jnp.zeros((hidden,), dtype)
    params["b_f"] = params["b_f"] + jnp.asarray(forget_bias, dtype)
    return params


def init_carry(batch_shape, hidden: int, dtype=jnp.float32):
    """The zero state (c_0, h_0), each of shape (*batch_shape, H)."""
    return zeros_carry(batch_shape, hidden, dtype), zeros_carry(batch_shape, hidden, dtype)


def gates(params: dict, h_prev, x):
    """The post-activation gates ``(i, f, o, g)``, each (*batch, H)."""

    def pre(gate):
        return x @ params[f"W_{gate}"].T + h_prev @ params[f"U_{gate}"].T + params[f"b_{gate}"]

    return (
        jax.nn.sigmoid(pre("i")),
        jax.nn.sigmoid(pre("f")),
        jax.nn.sigmoid(pre("o")),
        jnp.tanh(pre("c")),
    )


def validate(params: dict, carry, x) -> None:
    """Validate params, carry and input of the vector LSTM (raises ``ValueError``).

    Checks the entries and shapes of params, that the carry is a pair and the last axes
    (H for c and h, D for x); not the batch axes, so ``x`` may also be a sequence (T, *batch, D).
    """
    hidden, in_dim = check_matrix(params, "W_i")
    check_params(params, param_shapes(in_dim, hidden))
    if not (isinstance(carry, tuple) and len(carry) == 2):
        raise ValueError(f"carry: expected a tuple (c, h), got {describe(carry)}")
    check_last_dim(carry[0], hidden, name="carry[0] (c)")
    check_last_dim(carry[1], hidden, name="carry[1] (h)")
    check_last_dim(x, in_dim, name="x")


def apply(params: dict, carry, x):
    """One step: ``((c_{t-1}, h_{t-1}), x_t) -> ((c_t, h_t), h_t)``.

    Args:
      params: as made by :func:`init`.
      carry: ``(c_{t-1}, h_{t-1})``, each (*batch, H).
      x: x_t, shape (*batch, D).

    Returns:
      ``((c_t, h_t), h_t)``, each of shape (*batch, H).
    """
    validate(params, carry, x)
    check_batches_broadcast({"carry[0] (c)": carry[0], "carry[1] (h)": carry[1], "x": x})
    c_prev, h_prev, x = jnp.asarray(carry[0]), jnp.asarray(carry[1]), jnp.asarray(x)
    i, f, o, g = gates(params, h_prev, x)
    c = f * c_prev + i * g
    h = o * jnp.tanh(c)
    return (c, h), h


# the old name, for one release (CHANGELOG.md)
check = alias(validate, "jaxrnn.cells.lstm.check", "jaxrnn.cells.lstm.validate")
