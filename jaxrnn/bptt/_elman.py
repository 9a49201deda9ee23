"""Hand-derived BPTT of the Elman RNN (SPEC §5): an O(T) reverse recursion and the O(T^2)
textbook double sum with explicit Jacobian products.

Forward (``jaxrnn.cells.elman``), t = 1..T, h_0 = 0::

    z_t = W h_{t-1} + U x_t + b,     h_t = sigma(z_t)

Backward (v̄ = dL/dv total, the t+1 term zero at t = T)::

    h̄_t = dL_dh_t + W^T z̄_{t+1}       z̄_t = h̄_t * sigma'(z_t)       x̄_t = U^T z̄_t
    W̄ = sum_t z̄_t h_{t-1}^T            Ū = sum_t z̄_t x_t^T             b̄ = sum_t z̄_t

and the textbook form of the same W̄ (SPEC §5(b)), with dh_t/dh_k = prod_{j=t..k+1}
diag(sigma'(z_j)) W and dh_k/dW the immediate dependence of h_k on W::

    W̄ = sum_t sum_{k<=t} [ (dL_dh_t^T dh_t/dh_k) * sigma'(z_k) ] h_{k-1}^T
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_matrix, check_params
from jaxrnn.bptt._forward import check_sequences, shift_in, sum_over_leading
from jaxrnn.cells import elman as cell
from jaxrnn.dynamics import activation_slope, elman_states, elman_step_jacobians

#: Per-step names in the order the backward pass computes them within one step.
STEP_NAMES = ("h", "z", "x")

#: Name -> its formula, for the checker's report ([t], [t+1], [t-1] mark the steps).
FORMULAS = {
    "h": "h̄_[t] = dL/dh_[t] + W^T z̄_[t+1]",
    "z": "z̄_[t] = h̄_[t] ⊙ σ'(z_[t])",
    "x": "x̄_[t] = U^T z̄_[t]",
    "W": "W̄ = Σ_t z̄_t h_{t-1}^T",
    "W_double_sum": "W̄ = Σ_t Σ_{k<=t} ((dL/dh_t)^T dh_t/dh_k ⊙ σ'(z_k)) h_{k-1}^T, "
    "dh_t/dh_k = Π_{j=t..k+1} diag(σ'(z_j)) W",
    "U": "Ū = Σ_t z̄_t x_t^T",
    "b": "b̄ = Σ_t z̄_t",
}


def double_sum_dW(step_jacobians, slopes, h_prev, dL_dh):
    """W̄ = sum_t sum_{k<=t} ((dL_dh_t^T dh_t/dh_k) * sigma'(z_k)) h_{k-1}^T, O(T^2 H^3).

    dh_t/dh_k is built as an explicit matrix product, one factor A_j = diag(sigma'(z_j)) W
    at a time. Reference loop (one sequence)::

        dW = zeros((H, H))
        for t in range(T):
            J = eye(H)                                    # dh_t/dh_t
            for k in reversed(range(t + 1)):
                dW += outer((dL_dh[t] @ J) * slopes[k], h_prev[k])
                J = J @ step_jacobians[k]                 # dh_t/dh_{k-1}

    Args:
      step_jacobians: A_t, (T, *batch, H, H); slopes: sigma'(z_t), (T, *batch, H);
      h_prev: h_{t-1}, (T, *batch, H); dL_dh: (T, *batch, H).

    Returns:
      (H, H), summed over batch.
    """
    n_steps, hidden = dL_dh.shape[0], dL_dh.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(hidden, dtype=step_jacobians.dtype), step_jacobians.shape[1:])
    steps = jnp.arange(n_steps)

    def outer_term(t):
        def inner(J, inputs):
            k, A_k, slope_k, h_before = inputs
            active = k <= t
            row = jnp.einsum("...i,...ij->...j", dL_dh[t], J)  # dL_t/dh_t dh_t/dh_k
            term = (row * slope_k)[..., :, None] * h_before[..., None, :]
            term = sum_over_leading(jnp.where(active, term, 0), term.ndim - 2)
            return jnp.where(active, J @ A_k, J), term

        _, terms = jax.lax.scan(inner, eye, (steps, step_jacobians, slopes, h_prev), reverse=True)
        return jnp.sum(terms, axis=0)

    return jnp.sum(jax.lax.map(outer_term, steps), axis=0)


def elman(params: dict, xs, dL_dh, *, activation: str = "tanh", double_sum: bool = True) -> dict:
    """Every adjoint of the Elman RNN; dL/dW both by the recursion and by the double sum.

    Reference loop of the recursion (one sequence)::

        to_h = zeros(H)                           # W^T z̄_{t+1}
        for t in reversed(range(T)):
            h_bar[t] = dL_dh[t] + to_h
            z_bar[t] = h_bar[t] * slope[t]        # slope = sigma'(z_t), from h_t
            x_bar[t] = U.T @ z_bar[t]
            to_h = W.T @ z_bar[t]
        dW = sum(outer(z_bar[t], h[t-1])); dU = sum(outer(z_bar[t], x[t])); db = sum(z_bar)

    Args:
      params: ``{"W": (H, H), "U": (H, D), "b": (H,)}`` of ``jaxrnn.cells.elman``.
      xs: (T, *batch, D).
      dL_dh: the direct derivatives dL/dh_t, (T, *batch, H).
      activation: ``"tanh"`` (the cell's default) or ``"sigmoid"`` (SPEC §5's sigma).
      double_sum: also compute ``"W_double_sum"`` (O(T^2 H^3) work: for teaching and short
        sequences; pass ``False`` for long ones).

    Returns:
      A dict: per step ``"h"`` (total dL/dh_t, direct term included), ``"z"`` (dL/dz_t, the
      pre-activation), ``"x"`` (dL/dx_t), each (T, *batch, ·) with entry [t-1] for step t;
      ``"W"`` by the O(T) recursion, ``"W_double_sum"`` by the O(T^2) double sum (unless
      ``double_sum=False``), ``"U"``, ``"b"``, summed over batch.
    """
    hidden, in_dim = check_matrix(params, "U")
    check_params(params, cell.param_shapes(in_dim, hidden))
    xs, dL_dh = check_sequences(xs, dL_dh, in_dim=in_dim, hidden=hidden)
    activation_slope(activation, 0.0)  # validates the name
    if not isinstance(double_sum, bool):
        raise ValueError(f"double_sum: expected True or False, got {double_sum!r}")
    return _elman(params, xs, dL_dh, activation, double_sum)


@partial(jax.jit, static_argnums=(3, 4))
def _elman(params, xs, dL_dh, activation, double_sum):
    hs, h0 = elman_states(params, xs, activation=activation)
    slopes = activation_slope(activation, hs)
    h_prev = shift_in(h0, hs)

    def step(to_h, inputs):
        direct, slope = inputs
        h_bar = direct + to_h
        z_bar = h_bar * slope
        return z_bar @ params["W"], {"h": h_bar, "z": z_bar, "x": z_bar @ params["U"]}

    zeros = jnp.zeros_like(hs[0])
    _, adjoints = jax.lax.scan(step, zeros, (dL_dh, slopes), reverse=True)
    z_bar, lead = adjoints["z"], xs.ndim - 1
    adjoints["W"] = sum_over_leading(z_bar[..., :, None] * h_prev[..., None, :], lead)
    adjoints["U"] = sum_over_leading(z_bar[..., :, None] * xs[..., None, :], lead)
    adjoints["b"] = sum_over_leading(z_bar, lead)
    if double_sum:
        step_jacobians = elman_step_jacobians(params, xs, activation=activation)
        adjoints["W_double_sum"] = double_sum_dW(step_jacobians, slopes, h_prev, dL_dh)
    return adjoints
