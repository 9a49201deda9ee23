"""Per-step adjoints by autodiff, never by hand formulas: the reference of the checker.

Each forward pass below is the model's own forward computation with a zero perturbation
e added to every intermediate the hand BPTT names (h(t), c(t), the gates, ...). Since
the loss L = sum_t dL_dh[t] . h(t) depends on h(t) + e_h(t), c(t) + e_c(t), ...,

    dL/de_v(t) at e = 0  =  v̄(t), the total derivative of L w.r.t. v at step t,

and one ``jax.grad`` w.r.t. (params, xs, e) gives every adjoint at once. Where e enters
defines precisely what each name means; see each function.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_matrix, check_params
from jaxrnn.bptt._forward import check_sequences, state_dtype
from jaxrnn.cells import elman as elman_cell
from jaxrnn.cells import gru as gru_cell
from jaxrnn.cells import lstm as lstm_cell
from jaxrnn.cells import lstm_scalar as lstm_scalar_cell
from jaxrnn.dynamics import activation_slope

GATE_BIAS = {"i": "b_i", "f": "b_f", "o": "b_o", "g": "b_c"}


@partial(jax.jit, static_argnames=("gates", "with_pre"))
def _lstm_adjoints(gates, params, carry, xs, dL_dh, *, with_pre: bool):
    """Gradients of L = sum(dL_dh * h) w.r.t. params, xs and the LSTM perturbations.

    e["h"](t) is added to h(t) after it is computed, so it reaches the loss and step t+1:
    its gradient is the total h̄(t). e["h_prev"](t) is added to h(t-1) only where step t
    reads it: dL/dh(t-1) through step t. e["c"](t) is added to c(t) before
    h(t) = o(t) tanh(c(t)): the total c̄(t). e[q](t) is added to the post-activation gate
    q(t). With ``with_pre``, e[q + "_pre"](t) is added to the gate's bias at step t only,
    hence to its pre-activation: dL/d(pre-activation of q at t).
    """
    names = ("h", "c", "i", "f", "o", "g", "h_prev")
    if with_pre:
        names += tuple(f"{q}_pre" for q in "ifog")
    zeros = {n: jnp.zeros(xs.shape[:1] + carry[0].shape, carry[0].dtype) for n in names}

    def forward(p, xs, e):
        def step(state, inputs):
            c_prev, h_prev = state
            x, e_t = inputs
            step_p = p
            if with_pre:
                step_p = {**p, **{b: p[b] + e_t[f"{q}_pre"] for q, b in GATE_BIAS.items()}}
            i, f, o, g = gates(step_p, h_prev + e_t["h_prev"], x)
            i, f, o, g = i + e_t["i"], f + e_t["f"], o + e_t["o"], g + e_t["g"]
            c = f * c_prev + i * g + e_t["c"]
            h = o * jnp.tanh(c) + e_t["h"]
            return (c, h), h

        return jax.lax.scan(step, carry, (xs, e))[1]

    def loss(p, xs, e):
        return jnp.sum(dL_dh * forward(p, xs, e))

    return jax.grad(loss, argnums=(0, 1, 2))(params, xs, zeros)


def lstm(params: dict, xs, dL_dh) -> dict:
    """Autodiff adjoints of the vector LSTM: the names and meanings of ``jaxrnn.bptt.lstm``.

    Args:
      params: ``jaxrnn.cells.lstm`` parameters; xs: (T, *batch, D); dL_dh: (T, *batch, H).
    """
    hidden, in_dim = check_matrix(params, "W_i")
    check_params(params, lstm_cell.param_shapes(in_dim, hidden))
    xs, dL_dh = check_sequences(xs, dL_dh, in_dim=in_dim, hidden=hidden)
    carry = lstm_cell.init_carry(xs.shape[1:-1], hidden, dtype=state_dtype(params, xs, dL_dh))
    d_params, d_xs, d_e = _lstm_adjoints(lstm_cell.gates, params, carry, xs, dL_dh, with_pre=True)
    return {**d_e, "x": d_xs, **d_params}


def lstm_scalar(params: dict, xs, dL_dh) -> dict:
    """Autodiff adjoints of the univariate LSTM: the names of ``jaxrnn.bptt.lstm_scalar``.

    Args:
      params: the eight scalar weights; xs: (T, *batch); dL_dh: the shape of xs.
    """
    check_params(params, {name: () for name in lstm_scalar_cell.WEIGHTS})
    xs, dL_dh = check_sequences(xs, dL_dh, in_dim=None, hidden=None)
    carry = lstm_scalar_cell.init_carry(xs.shape[1:], dtype=state_dtype(params, xs, dL_dh))
    d_params, _, d_e = _lstm_adjoints(
        lstm_scalar_cell.gates, params, carry, xs, dL_dh, with_pre=False
    )
    return {**{n: d_e[n] for n in ("h", "c", "o", "f", "i", "g")}, **d_params}


def elman(params: dict, xs, dL_dh, *, activation: str = "tanh", double_sum: bool = True) -> dict:
    """Autodiff adjoints of the Elman RNN: the names and meanings of ``jaxrnn.bptt.elman``.

    e["h"](t) is added to h_t after the cell computes it (total h̄_t); e["z"](t) is added to
    the bias at step t only, hence to z_t (dL/dz_t). ``"W_double_sum"`` (left out when
    ``double_sum=False``) is dL/dW as well.
    """
    hidden, in_dim = check_matrix(params, "U")
    check_params(params, elman_cell.param_shapes(in_dim, hidden))
    xs, dL_dh = check_sequences(xs, dL_dh, in_dim=in_dim, hidden=hidden)
    activation_slope(activation, 0.0)  # only the activations the hand BPTT knows
    if not isinstance(double_sum, bool):
        raise ValueError(f"double_sum: expected True or False, got {double_sum!r}")
    adjoints = _elman(params, xs, dL_dh, activation)
    if not double_sum:
        del adjoints["W_double_sum"]
    return adjoints


@partial(jax.jit, static_argnums=3)
def _elman(params, xs, dL_dh, activation):
    hidden = dL_dh.shape[-1]
    cell = partial(elman_cell.apply, activation=activation)
    dtype = state_dtype(params, xs, dL_dh)

    def one_sequence(xs, dL_dh):
        """The gradients for one sequence (T, D), where a bias of shape (H,) can carry e_z."""
        h0 = elman_cell.init_carry((), hidden, dtype=dtype)
        zeros = {n: jnp.zeros(dL_dh.shape, dtype) for n in ("h", "z")}

        def forward(p, xs, e):
            def step(h_prev, inputs):
                x, e_t = inputs
                h, _ = cell({**p, "b": p["b"] + e_t["z"]}, h_prev, x)
                h = h + e_t["h"]
                return h, h

            return jax.lax.scan(step, h0, (xs, e))[1]

        def loss(p, xs, e):
            return jnp.sum(dL_dh * forward(p, xs, e))

        return jax.grad(loss, argnums=(0, 1, 2))(params, xs, zeros)

    # Batch dims: one sequence at a time (vmap over the flattened batch), params summed.
    batch = xs.shape[1:-1]
    flat_xs = xs.reshape(xs.shape[:1] + (-1,) + xs.shape[-1:])
    flat_dl = dL_dh.reshape(dL_dh.shape[:1] + (-1,) + dL_dh.shape[-1:])
    d_params, d_xs, d_e = jax.vmap(one_sequence, in_axes=1, out_axes=1)(flat_xs, flat_dl)
    d_params = {name: jnp.sum(value, axis=1) for name, value in d_params.items()}
    unflat = lambda a: a.reshape(a.shape[:1] + batch + a.shape[-1:])  # noqa: E731
    d_e = {name: unflat(value) for name, value in d_e.items()}
    return {**d_e, "x": unflat(d_xs), **d_params, "W_double_sum": d_params["W"]}


@jax.jit
def _gru_adjoints(params, carry, xs, dL_dh):
    """Gradients of L = sum(dL_dh * h) w.r.t. params, xs and the GRU perturbations.

    e["h"](t) is added to h(t) after it is computed (total h̄(t)); e["h_prev"](t) to h(t-1)
    wherever step t reads it (dL/dh(t-1) through step t); e[q](t) to the post-activation
    gate q(t) for q in r, z, n, and e["m"](t) to m(t) = U_n h(t-1) + b_hn; e[q + "_pre"](t)
    to the pre-activation of gate q.
    """
    names = ("h", "h_prev", "r", "z", "n", "m", "r_pre", "z_pre", "n_pre")
    zeros = {n: jnp.zeros(xs.shape[:1] + carry.shape, carry.dtype) for n in names}

    def forward(p, xs, e):
        def step(h_prev, inputs):
            x, e_t = inputs
            h_in = h_prev + e_t["h_prev"]
            a_r = x @ p["W_r"].T + h_in @ p["U_r"].T + p["b_r"] + e_t["r_pre"]
            a_z = x @ p["W_z"].T + h_in @ p["U_z"].T + p["b_z"] + e_t["z_pre"]
            r = jax.nn.sigmoid(a_r) + e_t["r"]
            z = jax.nn.sigmoid(a_z) + e_t["z"]
            m = h_in @ p["U_n"].T + p["b_hn"] + e_t["m"]
            n = jnp.tanh(x @ p["W_n"].T + p["b_n"] + r * m + e_t["n_pre"]) + e_t["n"]
            h = (1 - z) * n + z * h_in + e_t["h"]
            return h, h

        return jax.lax.scan(step, carry, (xs, e))[1]

    def loss(p, xs, e):
        return jnp.sum(dL_dh * forward(p, xs, e))

    return jax.grad(loss, argnums=(0, 1, 2))(params, xs, zeros)


def gru(params: dict, xs, dL_dh) -> dict:
    """Autodiff adjoints of the GRU: the names and meanings of ``jaxrnn.bptt.gru``.

    Args:
      params: ``jaxrnn.cells.gru`` parameters; xs: (T, *batch, D); dL_dh: (T, *batch, H).
    """
    hidden, in_dim = check_matrix(params, "W_r")
    check_params(params, gru_cell.param_shapes(in_dim, hidden))
    xs, dL_dh = check_sequences(xs, dL_dh, in_dim=in_dim, hidden=hidden)
    carry = gru_cell.init_carry(xs.shape[1:-1], hidden, dtype=state_dtype(params, xs, dL_dh))
    d_params, d_xs, d_e = _gru_adjoints(params, carry, xs, dL_dh)
    return {**d_e, "x": d_xs, **d_params}
