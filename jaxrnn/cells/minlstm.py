"""minLSTM cell (Feng et al. 2024, "Were RNNs All We Needed?"), in its log-space form (SPEC §12).

    f_t = sigma(W_f x_t + b_f)     i_t = sigma(W_i x_t + b_i)     h~_t = g(W_h x_t + b_h)
    f'_t = f_t / (f_t + i_t)       i'_t = i_t / (f_t + i_t)       (normalised gates)
    h_t = f'_t * h_{t-1} + i'_t * h~_t,       y_t = h_t

with g of :mod:`jaxrnn.cells.mingru`. The gates depend on x_t alone, so h_t = a_t h_{t-1}
+ b_t is a linear recurrence, with the paper's log-space coefficients (k_f, k_i the gate
pre-activations):

    d_t = softplus(-k_f) - softplus(-k_i)    (= log i_t - log f_t)
    log a_t = -softplus(d_t)    (= log f'_t)       log b_t = -softplus(-d_t) + log g(v_t)

Shapes: W_f, W_i, W_h (H, D); b_f, b_i, b_h (H,); x (*batch, D); carry h (*batch, H).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._cell_pieces import check_sizes, uniform_weights
from jaxrnn.cells import mingru
from jaxrnn.cells.mingru import linear_step, log_positive

GATES = ("f", "i", "h")


def param_shapes(in_dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for gate in GATES:
        shapes[f"W_{gate}"] = (hidden, in_dim)
        shapes[f"b_{gate}"] = (hidden,)
    return shapes


def init(key, in_dim: int, hidden: int, *, dtype=jnp.float32) -> dict:
    """Weights from U(-1/sqrt(H), 1/sqrt(H)), biases zero.

    Returns ``W_g`` (H, D) and ``b_g`` (H,) for g in f, i, h.
    """
    check_sizes(in_dim, hidden)
    weights = {f"W_{gate}": (hidden, in_dim) for gate in GATES}
    params = uniform_weights(key, weights, hidden, dtype)
    return {**params, **{f"b_{gate}": jnp.zeros((hidden,), dtype) for gate in GATES}}


#: The zero state h_0, shape (*batch_shape, H), as for minGRU.
init_carry = mingru.init_carry

#: The outputs from the states, as for minGRU.
readout = mingru.readout


def validate(params, x, *, carry=None):
    """Validate the names and shapes of ``params``, ``x`` (*, D) and the ``carry`` (*, H)."""
    mingru.validate(params, x, carry=carry, shapes=param_shapes)


def log_coefficients(params: dict, x):
    """``(log a, log b)`` of h_t = a_t * h_{t-1} + b_t, each (*lead, H) for x (*lead, D)."""
    validate(params, x)
    x = jnp.asarray(x)

    def pre(gate):
        return x @ params[f"W_{gate}"].T + params[f"b_{gate}"]

    d = jax.nn.softplus(-pre("f")) - jax.nn.softplus(-pre("i"))
    return -jax.nn.softplus(d), -jax.nn.softplus(-d) + log_positive(pre("h"))


def coefficients(params: dict, x):
    """``(a, b)`` = exp of :func:`log_coefficients`: one step, or every step of a sequence."""
    log_a, log_b = log_coefficients(params, x)
    return jnp.exp(log_a), jnp.exp(log_b)


def apply(params: dict, carry, x):
    """One step: ``(h_{t-1}, x_t) -> (h_t, h_t)`` with h_t = a_t * h_{t-1} + b_t and
    (a_t, b_t) from :func:`coefficients`; shapes as in :func:`jaxrnn.cells.mingru.apply`,
    ``params`` as made by :func:`init`."""
    validate(params, x, carry=carry)
    return linear_step(coefficients, params, carry, x)
