"""minGRU cell (Feng et al. 2024, "Were RNNs All We Needed?"), in its log-space form (SPEC §12).

    k_t = W_z x_t + b_z          v_t = W_h x_t + b_h
    z_t = sigma(k_t)             h~_t = g(v_t),   g(v) = v + 1/2 if v >= 0 else sigma(v)
    h_t = (1 - z_t) * h_{t-1} + z_t * h~_t,        y_t = h_t

The gate and the candidate depend on x_t alone, so the cell is the linear recurrence
h_t = a_t * h_{t-1} + b_t whose coefficients the paper computes in log space:

    log a_t = -softplus(k_t)   (= log(1 - z_t))       log b_t = -softplus(-k_t) + log g(v_t)

(1 - z_t is never formed as a difference, so it keeps its precision as z_t -> 1; g > 0
keeps every state positive from a positive h_0). :func:`coefficients` gives (a_t, b_t) for
one step or a whole sequence at once, which ``jaxrnn.parallel.scan_associative`` solves
by an associative scan; :func:`apply` is one step of the same formula, for ``jaxrnn.scan``.

Shapes: W_z, W_h (H, D); b_z, b_h (H,); x (*batch, D); carry h (*batch, H).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._cell_pieces import check_sizes, uniform_weights, zeros_carry
from jaxrnn._checks import check_batches_broadcast, check_last_dim, check_matrix, check_params


def param_shapes(in_dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {"W_z": (hidden, in_dim), "b_z": (hidden,), "W_h": (hidden, in_dim), "b_h": (hidden,)}


def init(key, in_dim: int, hidden: int, *, dtype=jnp.float32) -> dict:
    """Weights from U(-1/sqrt(H), 1/sqrt(H)), biases zero.

    Returns ``{"W_z": (H, D), "b_z": (H,), "W_h": (H, D), "b_h": (H,)}``.
    """
    check_sizes(in_dim, hidden)
    shapes = param_shapes(in_dim, hidden)
    params = uniform_weights(key, {"W_z": shapes["W_z"], "W_h": shapes["W_h"]}, hidden, dtype)
    return {**params, "b_z": jnp.zeros((hidden,), dtype), "b_h": jnp.zeros((hidden,), dtype)}


def init_carry(batch_shape, hidden: int, dtype=jnp.float32):
    """The zero state h_0, shape (*batch_shape, H)."""
    return zeros_carry(batch_shape, hidden, dtype)


def log_positive(v):
    """log g(v), g(v) = v + 1/2 for v >= 0 and sigma(v) below: continuous, positive, and
    linear for large v (the paper's replacement of tanh, so that log h exists)."""
    return jnp.where(v >= 0, jnp.log(jax.nn.relu(v) + 0.5), -jax.nn.softplus(-v))


def validate(params, x, *, carry=None, shapes=param_shapes):
    """Validate the names and shapes of ``params`` (``shapes(in_dim, hidden)``, read from
    ``W_h``), of ``x`` (*, D) and of the ``carry`` (*, H)."""
    hidden, in_dim = check_matrix(params, "W_h")
    check_params(params, shapes(in_dim, hidden))
    check_last_dim(x, in_dim, name="x")
    if carry is not None:
        check_last_dim(carry, hidden, name="carry")
        check_batches_broadcast({"carry": carry, "x": x})


def log_coefficients(params: dict, x):
    """``(log a, log b)`` of h_t = a_t * h_{t-1} + b_t, each (*lead, H) for x (*lead, D)."""
    validate(params, x)
    x = jnp.asarray(x)
    k = x @ params["W_z"].T + params["b_z"]
    v = x @ params["W_h"].T + params["b_h"]
    return -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_positive(v)


def coefficients(params: dict, x):
    """``(a, b)`` = exp of :func:`log_coefficients`: one step, or every step of a sequence."""
    log_a, log_b = log_coefficients(params, x)
    return jnp.exp(log_a), jnp.exp(log_b)


def readout(params: dict, hs, x):
    """y_t = h_t."""
    del params, x
    return hs


def linear_step(coefficients, params: dict, carry, x):
    """h_t = a_t * h_{t-1} + b_t with ``(a_t, b_t) = coefficients(params, x)``; the step's
    output is :func:`readout` of h_t (minGRU and minLSTM alike)."""
    a, b = coefficients(params, x)
    h = a * jnp.asarray(carry) + b
    return h, readout(params, h, x)


def apply(params: dict, carry, x):
    """One step: ``(h_{t-1}, x_t) -> (h_t, h_t)`` with h_t = a_t * h_{t-1} + b_t.

    Args:
      params: ``{"W_z", "b_z", "W_h", "b_h"}`` as made by :func:`init`.
      carry: h_{t-1}, shape (*batch, H).
      x: x_t, shape (*batch, D).

    Returns:
      ``(h_t, h_t)``, each of shape (*batch, H).
    """
    validate(params, x, carry=carry)
    return linear_step(coefficients, params, carry, x)
