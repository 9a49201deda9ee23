"""Hand-derived BPTT of the univariate LSTM (SPEC §3) as one reverse ``lax.scan``.

Forward (``jaxrnn.cells.lstm_scalar``), t = 1..T, c(0) = h(0) = 0::

    i(t) = sigma(w_ix x(t) + w_ih h(t-1))      f(t) = sigma(w_fx x(t) + w_fh h(t-1))
    o(t) = sigma(w_ox x(t) + w_oh h(t-1))      g(t) = tanh(w_gx x(t) + w_gh h(t-1))
    c(t) = f(t) c(t-1) + i(t) g(t)             h(t) = o(t) tanh(c(t))

Backward, t = T..1 (v̄ = dL/dv total; every (t+1) term is zero at t = T)::

    h̄(t) = dL/dh(t) + w_ih ī(t+1) i(t+1)(1-i(t+1)) + w_fh f̄(t+1) f(t+1)(1-f(t+1))
                    + w_oh ō(t+1) o(t+1)(1-o(t+1)) + w_gh ḡ(t+1) (1-g(t+1)^2)
    ō(t) = h̄(t) tanh(c(t))
    c̄(t) = h̄(t) o(t) (1 - tanh^2(c(t))) + c̄(t+1) f(t+1)
    f̄(t) = c̄(t) c(t-1)        ī(t) = c̄(t) g(t)        ḡ(t) = c̄(t) i(t)
    w̄_ix = sum_t ī(t) i(t)(1-i(t)) x(t)          w̄_ih = sum_t ī(t) i(t)(1-i(t)) h(t-1)

and likewise for the f, o and g weights (for g the slope is 1 - g(t)^2). These are the
H = D = 1 case, without biases, of the vector recursions of :mod:`jaxrnn.bptt.lstm`, which
compute them here.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxrnn._checks import check_params
from jaxrnn.bptt._forward import check_sequences, state_dtype
from jaxrnn.bptt._lstm import PARAM_SUFFIX
from jaxrnn.bptt._lstm import lstm as vector_lstm
from jaxrnn.cells import lstm_scalar as cell

#: Per-step names in the order the backward pass computes them within one step.
STEP_NAMES = ("h", "o", "c", "f", "i", "g")

_SLOPE = {q: f"{q}(t)(1-{q}(t))" for q in "ifo"} | {"g": "(1-g(t)²)"}
_BAR = {"i": "ī", "f": "f̄", "o": "ō", "g": "ḡ"}

#: Name -> its formula, for the checker's report ([t], [t+1], [t-1] mark the steps).
FORMULAS = {
    "h": "h̄([t]) = dL/dh([t]) + w_ih ī([t+1]) i([t+1])(1-i([t+1])) "
    "+ w_fh f̄([t+1]) f([t+1])(1-f([t+1])) + w_oh ō([t+1]) o([t+1])(1-o([t+1])) "
    "+ w_gh ḡ([t+1]) (1-g([t+1])²)",
    "o": "ō([t]) = h̄([t]) tanh(c([t]))",
    "c": "c̄([t]) = h̄([t]) o([t]) (1 - tanh²(c([t]))) + c̄([t+1]) f([t+1])",
    "f": "f̄([t]) = c̄([t]) c([t-1])",
    "i": "ī([t]) = c̄([t]) g([t])",
    "g": "ḡ([t]) = c̄([t]) i([t])",
    **{f"w_{q}x": f"w̄_{q}x = Σ_t {_BAR[q]}(t) {_SLOPE[q]} x(t)" for q in "ifog"},
    **{f"w_{q}h": f"w̄_{q}h = Σ_t {_BAR[q]}(t) {_SLOPE[q]} h(t-1)" for q in "ifog"},
}


def lstm_scalar(params: dict, xs, dL_dh) -> dict:
    """The total adjoints of the univariate LSTM per step, and its eight weight gradients.

    Reference loop (plain Python, one sequence; ``s_q = q(1-q)`` for a sigmoid gate and
    ``s_g = 1 - g^2``)::

        h_next = c_next = f_next = 0.0          # terms from step t+1
        for t in reversed(range(T)):
            h_bar[t] = dL_dh[t] + h_next
            o_bar[t] = h_bar[t] * tanh(c[t])
            c_bar[t] = h_bar[t] * o[t] * (1 - tanh(c[t])**2) + c_next * f_next
            f_bar[t], i_bar[t], g_bar[t] = c_bar[t] * c[t-1], c_bar[t] * g[t], c_bar[t] * i[t]
            h_next = sum(w[f"w_{q}h"] * q_bar[t] * s_q[t] for q in "ifog")
            c_next, f_next = c_bar[t], f[t]
        w_bar[f"w_{q}x"] = sum(q_bar * s_q * x);  w_bar[f"w_{q}h"] = sum(q_bar * s_q * h_prev)

    Args:
      params: the eight scalar weights of ``jaxrnn.cells.lstm_scalar``.
      xs: x(1..T), shape (T,) (or (T, *batch): independent sequences, weights summed).
      dL_dh: the direct derivatives dL/dh(t), same shape as ``xs``.

    Returns:
      A dict: ``"h"``, ``"c"``, ``"o"``, ``"f"``, ``"i"``, ``"g"`` of the shape of ``xs``,
      entry [t-1] for step t (h̄ including the direct term; gates post-activation), and the
      scalars ``"w_ix"``, ``"w_ih"``, ..., ``"w_gh"`` (dL/dw).
    """
    check_params(params, {name: () for name in cell.WEIGHTS})
    xs, dL_dh = check_sequences(xs, dL_dh, in_dim=None, hidden=None)
    dtype = state_dtype(params, xs, dL_dh)
    vector_params = {}
    for q, suffix in PARAM_SUFFIX.items():
        vector_params[f"W_{suffix}"] = jnp.reshape(params[f"w_{q}x"], (1, 1))
        vector_params[f"U_{suffix}"] = jnp.reshape(params[f"w_{q}h"], (1, 1))
        vector_params[f"b_{suffix}"] = jnp.zeros((1,), dtype)
    adjoints = vector_lstm(vector_params, xs[..., None], dL_dh[..., None])
    result = {name: adjoints[name][..., 0] for name in STEP_NAMES}
    for q, suffix in PARAM_SUFFIX.items():
        result[f"w_{q}x"] = adjoints[f"W_{suffix}"][0, 0]
        result[f"w_{q}h"] = adjoints[f"U_{suffix}"][0, 0]
    return result
