"""Hand-derived BPTT of the GRU (SPEC §8) as one reverse ``lax.scan``.

Forward (``jaxrnn.cells.gru``), for t = 1..T with h_0 = 0::

    r_t = sigma(W_r x_t + U_r h_{t-1} + b_r)      z_t = sigma(W_z x_t + U_z h_{t-1} + b_z)
    m_t = U_n h_{t-1} + b_hn                      n_t = tanh(W_n x_t + b_n + r_t * m_t)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

The loss L is any function whose direct derivative w.r.t. h_t is ``dL_dh[t]`` (v̄ = dL/dv,
total derivative). Backward, for t = T..1, with every "t+1" term zero at t = T::

    h̄_t = dL_dh_t + h̄prev_{t+1}                       total dL/dh_t, direct term included
    n̄_t = h̄_t * (1 - z_t)          z̄_t = h̄_t * (h_{t-1} - n_t)
    ā_n = n̄_t * (1 - n_t^2)        r̄_t = ā_n * m_t          m̄_t = ā_n * r_t
    ā_r = r̄_t * r_t (1 - r_t)      ā_z = z̄_t * z_t (1 - z_t)
    h̄prev_t = h̄_t * z_t + U_r^T ā_r + U_z^T ā_z + U_n^T m̄_t     dL/dh_{t-1} through step t
    x̄_t     = W_r^T ā_r + W_z^T ā_z + W_n^T ā_n                   dL/dx_t
    W̄_q = sum_t ā_q x_t^T (q = r, z, n)     Ū_r = sum_t ā_r h_{t-1}^T    Ū_z = sum_t ā_z h_{t-1}^T
    Ū_n = sum_t m̄_t h_{t-1}^T     b̄_q = sum_t ā_q     b̄_hn = sum_t m̄_t

(ā_q are the pre-activation adjoints; m̄_t is the adjoint of the reset gate's operand
U_n h_{t-1} + b_hn.)
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
from jaxrnn.cells import gru as cell

#: Per-step names in the order the backward pass computes them within one step.
STEP_NAMES = ("h", "n", "z", "n_pre", "r", "m", "r_pre", "z_pre", "x", "h_prev")

#: Name -> its formula, for the checker's report ([t], [t+1], [t-1] mark the steps;
#: ā_q are the pre-activation adjoints).
FORMULAS = {
    "h": "h̄_[t] = dL/dh_[t] + h̄_[t+1] ⊙ z_[t+1] + U_r^T ā_r + U_z^T ā_z + U_n^T m̄_[t+1], "
    "with the ā of step [t+1]",
    "n": "n̄_[t] = h̄_[t] ⊙ (1 - z_[t])",
    "z": "z̄_[t] = h̄_[t] ⊙ (h_[t-1] - n_[t])",
    "n_pre": "ā_n at step [t] = n̄_[t] ⊙ (1 - n_[t]²)",
    "r": "r̄_[t] = ā_n ⊙ m_[t], m_[t] = U_n h_[t-1] + b_hn",
    "m": "m̄_[t] = ā_n ⊙ r_[t]",
    "r_pre": "ā_r at step [t] = r̄_[t] ⊙ r_[t] ⊙ (1 - r_[t])",
    "z_pre": "ā_z at step [t] = z̄_[t] ⊙ z_[t] ⊙ (1 - z_[t])",
    "x": "x̄_[t] = W_r^T ā_r + W_z^T ā_z + W_n^T ā_n, with the ā of step [t]",
    "h_prev": "dL/dh_[t-1] through step [t] = h̄_[t] ⊙ z_[t] + U_r^T ā_r + U_z^T ā_z + U_n^T m̄_[t]",
    **{f"W_{q}": f"W̄_{q} = Σ_t ā_{q} x_t^T" for q in "rzn"},
    "U_r": "Ū_r = Σ_t ā_r h_{t-1}^T",
    "U_z": "Ū_z = Σ_t ā_z h_{t-1}^T",
    "U_n": "Ū_n = Σ_t m̄_t h_{t-1}^T",
    **{f"b_{q}": f"b̄_{q} = Σ_t ā_{q}" for q in "rzn"},
    "b_hn": "b̄_hn = Σ_t m̄_t",
}


def gates(params: dict, h_prev, x):
    """The post-activation gates and the reset gate's operand ``(r, z, m, n)``, each (*batch, H)."""
    p = params

    def pre(gate):
        return x @ p[f"W_{gate}"].T + h_prev @ p[f"U_{gate}"].T + p[f"b_{gate}"]

    r, z = jax.nn.sigmoid(pre("r")), jax.nn.sigmoid(pre("z"))
    m = h_prev @ p["U_n"].T + p["b_hn"]
    n = jnp.tanh(x @ p["W_n"].T + p["b_n"] + r * m)
    return r, z, m, n


def gru(params: dict, xs, dL_dh) -> dict:
    """Every adjoint of the GRU by the hand recursions above (zero initial state).

    Reference loop (one sequence; ``a[*]`` the pre-activation adjoints)::

        h_bar_next = zeros(H)
        for t in reversed(range(T)):
            h_bar[t] = dL_dh[t] + h_bar_next
            n_bar[t] = h_bar[t] * (1 - z[t])
            z_bar[t] = h_bar[t] * (h[t-1] - n[t])
            a_n = n_bar[t] * (1 - n[t]**2)
            r_bar[t], m_bar[t] = a_n * m[t], a_n * r[t]
            a_r, a_z = r_bar[t] * r[t] * (1 - r[t]), z_bar[t] * z[t] * (1 - z[t])
            h_prev[t] = h_bar[t] * z[t] + U_r.T @ a_r + U_z.T @ a_z + U_n.T @ m_bar[t]
            x_bar[t] = W_r.T @ a_r + W_z.T @ a_z + W_n.T @ a_n
            h_bar_next = h_prev[t]

    Args:
      params: ``jaxrnn.cells.gru`` parameters, W_* (H, D), U_* (H, H), b_* (H,), b_hn (H,).
      xs: inputs x_1..x_T, shape (T, *batch, D).
      dL_dh: the direct derivatives dL/dh_t, shape (T, *batch, H).

    Returns:
      A dict. Per step, each (T, *batch, H) except ``"x"`` (T, *batch, D), entry [t-1] for
      step t: ``"h"`` total dL/dh_t (direct term included), ``"r"``, ``"z"``, ``"n"``
      dL/d(post-activation gate), ``"r_pre"``, ``"z_pre"``, ``"n_pre"`` dL/d(pre-activation),
      ``"m"`` dL/d(U_n h_{t-1} + b_hn), ``"x"`` dL/dx_t, ``"h_prev"`` dL/dh_{t-1} through
      step t only (so h̄_{t-1} = dL_dh_{t-1} + h_prev[t]; h_prev[0] is dL/dh_0). And
      dL/dparam under every parameter name, summed over batch.
    """
    hidden, in_dim = check_matrix(params, "W_r")
    check_params(params, cell.param_shapes(in_dim, hidden))
    xs, dL_dh = check_sequences(xs, dL_dh, in_dim=in_dim, hidden=hidden)
    return _gru(params, xs, dL_dh)


@jax.jit
def _gru(params, xs, dL_dh):
    hidden = dL_dh.shape[-1]
    h0 = cell.init_carry(xs.shape[1:-1], hidden, dtype=state_dtype(params, xs, dL_dh))
    hs = carry_sequence(cell.apply, params, h0, xs)
    h_prev = shift_in(h0, hs)
    r, z, m, n = gates(params, h_prev, xs)

    def step(h_bar_future, inputs):
        direct, h_before, r_t, z_t, m_t, n_t = inputs
        h_bar = direct + h_bar_future
        n_bar = h_bar * (1 - z_t)
        z_bar = h_bar * (h_before - n_t)
        a_n = n_bar * (1 - n_t**2)
        r_bar, m_bar = a_n * m_t, a_n * r_t
        a_r, a_z = r_bar * r_t * (1 - r_t), z_bar * z_t * (1 - z_t)
        to_h_prev = h_bar * z_t + a_r @ params["U_r"] + a_z @ params["U_z"] + m_bar @ params["U_n"]
        x_bar = a_r @ params["W_r"] + a_z @ params["W_z"] + a_n @ params["W_n"]
        out = {"h": h_bar, "n": n_bar, "z": z_bar, "n_pre": a_n, "r": r_bar, "m": m_bar}
        out.update(r_pre=a_r, z_pre=a_z, x=x_bar, h_prev=to_h_prev)
        return to_h_prev, out

    _, adjoints = jax.lax.scan(
        step, jnp.zeros_like(hs[0]), (dL_dh, h_prev, r, z, m, n), reverse=True
    )
    lead = xs.ndim - 1  # time and batch axes

    def outer_sum(a, b):
        return sum_over_leading(a[..., :, None] * b[..., None, :], lead)

    for q in "rzn":
        pre = adjoints[f"{q}_pre"]
        adjoints[f"W_{q}"] = outer_sum(pre, xs)
        adjoints[f"b_{q}"] = sum_over_leading(pre, lead)
    adjoints["U_r"] = outer_sum(adjoints["r_pre"], h_prev)
    adjoints["U_z"] = outer_sum(adjoints["z_pre"], h_prev)
    adjoints["U_n"] = outer_sum(adjoints["m"], h_prev)
    adjoints["b_hn"] = sum_over_leading(adjoints["m"], lead)
    return adjoints
