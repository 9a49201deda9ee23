"""Hand-derived BPTT of the vector LSTM (SPEC §4) as one reverse ``lax.scan``.

Forward (``jaxrnn.cells.lstm``), for t = 1..T with c_0 = h_0 = 0::

    i_t = sigma(W_i x_t + U_i h_{t-1} + b_i)    f_t = sigma(W_f x_t + U_f h_{t-1} + b_f)
    o_t = sigma(W_o x_t + U_o h_{t-1} + b_o)    g_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
    c_t = f_t * c_{t-1} + i_t * g_t             h_t = o_t * tanh(c_t)

The loss L is any function whose direct derivative w.r.t. h_t is ``dL_dh[t]`` (v̄ = dL/dv,
total derivative). Backward, for t = T..1, with every "t+1" term zero at t = T::

    h̄_t = dL_dh_t + h̄prev_{t+1}                          total dL/dh_t, direct term included
    ō_t = h̄_t * tanh(c_t)                                 post-activation gate adjoints
    c̄_t = h̄_t * o_t * (1 - tanh(c_t)^2) + c̄_{t+1} * f_{t+1}
    f̄_t = c̄_t * c_{t-1}     ī_t = c̄_t * g_t     ḡ_t = c̄_t * i_t
    ā_i = ī_t i_t (1 - i_t)  ā_f = f̄_t f_t (1 - f_t)  ā_o = ō_t o_t (1 - o_t)  ā_g = ḡ_t (1 - g_t^2)
    h̄prev_t = U_i^T ā_i + U_f^T ā_f + U_o^T ā_o + U_c^T ā_g      dL/dh_{t-1} through step t
    x̄_t     = W_i^T ā_i + W_f^T ā_f + W_o^T ā_o + W_c^T ā_g      dL/dx_t
    W̄_* = sum_t ā_* x_t^T     Ū_* = sum_t ā_* h_{t-1}^T     b̄_* = sum_t ā_*

(ā_* are the pre-activation adjoints; the parameter of the candidate g is named ``*_c``.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_matrix, check_params
from jaxrnn.bptt._forward import (
    carry_sequence,
    check_sequences,
    shift_in,
    state_dtype,
    sum_over_leading,
)
from jaxrnn.cells import lstm as cell

#: Per-step names in the order the backward pass computes them within one step.
STEP_NAMES = ("h", "o", "c", "f", "i", "g", "o_pre", "f_pre", "i_pre", "g_pre", "x", "h_prev")
#: Gate name -> the suffix of its parameters (the candidate g uses W_c, U_c, b_c).
PARAM_SUFFIX = {"i": "i", "f": "f", "o": "o", "g": "c"}

_SUM_U = "U_i^T ā_i + U_f^T ā_f + U_o^T ā_o + U_c^T ā_g"
_SUM_W = "W_i^T ā_i + W_f^T ā_f + W_o^T ā_o + W_c^T ā_g"
_SLOPE = {q: f"{q}_[t] ⊙ (1 - {q}_[t])" for q in "ifo"} | {"g": "(1 - g_[t]²)"}
_BAR = {"i": "ī", "f": "f̄", "o": "ō", "g": "ḡ"}

#: Name -> its formula, for the checker's report ([t], [t+1], [t-1] mark the steps;
#: ā_q are the pre-activation adjoints).
FORMULAS = {
    "h": f"h̄_[t] = dL/dh_[t] + {_SUM_U}, with the ā of step [t+1]",
    "o": "ō_[t] = h̄_[t] ⊙ tanh(c_[t])",
    "c": "c̄_[t] = h̄_[t] ⊙ o_[t] ⊙ (1 - tanh²(c_[t])) + c̄_[t+1] ⊙ f_[t+1]",
    "f": "f̄_[t] = c̄_[t] ⊙ c_[t-1]",
    "i": "ī_[t] = c̄_[t] ⊙ g_[t]",
    "g": "ḡ_[t] = c̄_[t] ⊙ i_[t]",
    **{f"{q}_pre": f"ā_{q} at step [t] = {_BAR[q]}_[t] ⊙ {_SLOPE[q]}" for q in "ifog"},
    "x": f"x̄_[t] = {_SUM_W}, with the ā of step [t]",
    "h_prev": f"dL/dh_[t-1] through step [t] = {_SUM_U}, with the ā of step [t]",
    **{f"W_{s}": f"W̄_{s} = Σ_t ā_{q} x_t^T" for q, s in PARAM_SUFFIX.items()},
    **{f"U_{s}": f"Ū_{s} = Σ_t ā_{q} h_{{t-1}}^T" for q, s in PARAM_SUFFIX.items()},
    **{f"b_{s}": f"b̄_{s} = Σ_t ā_{q}" for q, s in PARAM_SUFFIX.items()},
}


def lstm(params: dict, xs, dL_dh) -> dict:
    """Every adjoint of the vector LSTM by the hand recursions above (zero initial state).

    Reference loop (one sequence; ``a[*]`` the pre-activation adjoints)::

        h_bar_next = zeros(H); c_bar_next = zeros(H); f_next = zeros(H)
        for t in reversed(range(T)):
            h_bar[t] = dL_dh[t] + h_bar_next
            o_bar[t] = h_bar[t] * tanh(c[t])
            c_bar[t] = h_bar[t] * o[t] * (1 - tanh(c[t])**2) + c_bar_next * f_next
            f_bar[t], i_bar[t], g_bar[t] = c_bar[t] * c[t-1], c_bar[t] * g[t], c_bar[t] * i[t]
            a = {q: q_bar[t] * slope_q[t] for q in "ifog"}
            h_prev[t] = sum(U[q].T @ a[q] for q in "ifog")
            x_bar[t] = sum(W[q].T @ a[q] for q in "ifog")
            h_bar_next, c_bar_next, f_next = h_prev[t], c_bar[t], f[t]

    Args:
      params: ``jaxrnn.cells.lstm`` parameters, W_* (H, D), U_* (H, H), b_* (H,).
      xs: inputs x_1..x_T, shape (T, *batch, D).
      dL_dh: the direct derivatives dL/dh_t, shape (T, *batch, H).

    Returns:
      A dict. Per step, each (T, *batch, H) except ``"x"`` (T, *batch, D), entry [t-1] for
      step t: ``"h"`` total dL/dh_t (direct term included), ``"c"`` total dL/dc_t, ``"i"``,
      ``"f"``, ``"o"``, ``"g"`` dL/d(post-activation gate), ``"i_pre"``, ``"f_pre"``,
      ``"o_pre"``, ``"g_pre"`` dL/d(pre-activation), ``"x"`` dL/dx_t, ``"h_prev"``
      dL/dh_{t-1} through step t only (so h̄_{t-1} = dL_dh_{t-1} + h_prev[t]; h_prev[0] is
      dL/dh_0). And dL/dparam under every parameter name, summed over batch.
    """
    hidden, in_dim = check_matrix(params, "W_i")
    check_params(params, cell.param_shapes(in_dim, hidden))
    xs, dL_dh = check_sequences(xs, dL_dh, in_dim=in_dim, hidden=hidden)
    return _lstm(params, xs, dL_dh)


@jax.jit
def _lstm(params, xs, dL_dh):
    hidden = dL_dh.shape[-1]
    carry0 = cell.init_carry(xs.shape[1:-1], hidden, dtype=state_dtype(params, xs, dL_dh))
    cs, hs = carry_sequence(cell.apply, params, carry0, xs)
    c_prev, h_prev = shift_in(carry0[0], cs), shift_in(carry0[1], hs)
    i, f, o, g = cell.gates(params, h_prev, xs)
    f_next = jnp.concatenate([f[1:], jnp.zeros_like(f[:1])], axis=0)

    def back(q, adjoint):
        """U_q^T a (or W_q^T a) for a batch of row vectors a: a @ M."""
        return adjoint @ params[q]

    def step(future, inputs):
        h_bar_future, c_bar_future = future
        direct, c, c_before, i_t, f_t, o_t, g_t, f_after = inputs
        tanh_c = jnp.tanh(c)
        h_bar = direct + h_bar_future
        o_bar = h_bar * tanh_c
        c_bar = h_bar * o_t * (1 - tanh_c**2) + c_bar_future * f_after
        f_bar, i_bar, g_bar = c_bar * c_before, c_bar * g_t, c_bar * i_t
        pre = {
            "o": o_bar * o_t * (1 - o_t),
            "f": f_bar * f_t * (1 - f_t),
            "i": i_bar * i_t * (1 - i_t),
            "g": g_bar * (1 - g_t**2),
        }
        to_h_prev = sum(back(f"U_{PARAM_SUFFIX[q]}", pre[q]) for q in "ifog")
        x_bar = sum(back(f"W_{PARAM_SUFFIX[q]}", pre[q]) for q in "ifog")
        out = {"h": h_bar, "o": o_bar, "c": c_bar, "f": f_bar, "i": i_bar, "g": g_bar}
        out.update({f"{q}_pre": pre[q] for q in "ofig"})
        out.update(x=x_bar, h_prev=to_h_prev)
        return (to_h_prev, c_bar), out

    zeros = jnp.zeros_like(dL_dh[0], dtype=cs.dtype)
    inputs = (dL_dh, cs, c_prev, i, f, o, g, f_next)
    _, adjoints = jax.lax.scan(step, (zeros, zeros), inputs, reverse=True)
    lead = xs.ndim - 1  # time and batch axes
    for q, suffix in PARAM_SUFFIX.items():
        pre = adjoints[f"{q}_pre"]
        adjoints[f"W_{suffix}"] = sum_over_leading(pre[..., :, None] * xs[..., None, :], lead)
        adjoints[f"U_{suffix}"] = sum_over_leading(pre[..., :, None] * h_prev[..., None, :], lead)
        adjoints[f"b_{suffix}"] = sum_over_leading(pre, lead)
    return adjoints
