"""The fused GRU over a sequence: forward ``lax.scan``, backward the hand BPTT of SPEC §8.

Forward, per step (gates in the fused order r, z, n; see :mod:`.fused`)::

    p_t = x_t W + b,   q_t = h_{t-1} U                         (B, 3H) each
    r_t, z_t = sigma(p_t[:2H] + q_t[:2H])                      (B, H) each
    m_t = q_t[2H:] + b_hn,   n_t = tanh(p_t[2H:] + r_t * m_t)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

With a mask m_t (``t < length``), a masked-off step keeps the carry: ``h_t = h_{t-1}``.

Backward (bars are adjoints; ``hbar_t`` includes the direct term of the output h_t)::

    nbar = hbar_t (1 - z_t),   zbar = hbar_t (h_{t-1} - n_t)
    abar_n = nbar (1 - n_t^2),  rbar = abar_n m_t,  mbar = abar_n r_t
    abar_r = rbar r_t (1 - r_t),  abar_z = zbar z_t (1 - z_t)
    pbar_t = [abar_r, abar_z, abar_n],   qbar_t = [abar_r, abar_z, mbar]
    hbar_{t-1} = hbar_t z_t + qbar_t U^T (+ the output's own adjoint)
    Wbar = sum_t x_t^T pbar_t,  Ubar = sum_t h_{t-1}^T qbar_t,  bbar = sum_t pbar_t,
    b_hn bar = sum_t mbar,  xbar_t = pbar_t W^T

The forward pass stores the local derivatives, with A_t = (1 - z_t)(1 - n_t^2),
G_t = [A_t m_t r_t (1 - r_t), (h_{t-1} - n_t) z_t (1 - z_t), A_t] (B, 3H), A_t r_t and z_t,
so that a backward step is ``pbar_t = G_t * [hbar_t] * 3;  mbar = hbar_t A_t r_t`` and
nothing is recomputed. Only the recursion of hbar is sequential; the weight and input
gradients are sums over all steps, accumulated in the reverse scan by default or, as a
choice, computed as single matmuls after it. Under a mask, a masked-off step has G_t = 0,
A_t r_t = 0 and z_t = 1: it passes hbar through unchanged and adds nothing to the sums.

How each step is computed is a :class:`Choices`. The defaults were measured on XLA:CPU
(``python bench/lstm.py gru``): unrolling 2 or 4 steps was no faster within the noise of a
shared machine and took about 2x and 3x as long to compile, and hoisting the input
projection out of the loop was slower (it writes a (T, B, 3H) array first).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._varying import sum_like, vary_like


class Choices(NamedTuple):
    """How the fused GRU kernel is computed (all results are equal up to rounding).

    Attributes:
      unroll: steps per compiled loop body of the forward scan.
      backward_unroll: the same for the reverse scan of the backward pass.
      sigmoid_via_tanh: compute sigma(a) as 0.5 tanh(a / 2) + 0.5 (one fused tanh).
      hoist_input: compute p_t = x_t W + b for all t as one matmul before the forward scan.
      grads_after_scan: weight and input gradients as single matmuls after the reverse
        scan (True), or accumulated inside it step by step (False).
    """

    unroll: int = 1
    backward_unroll: int = 1
    sigmoid_via_tanh: bool = True
    hoist_input: bool = False
    grads_after_scan: bool = False


def _sigmoid(a, via_tanh: bool):
    return 0.5 * jnp.tanh(0.5 * a) + 0.5 if via_tanh else jax.nn.sigmoid(a)


def _forward(choices: Choices, W, U, b, b_hn, h0, xs, mask, *, keep: bool):
    """Run the forward scan; ``keep`` also returns the local derivatives (G, A r, z).

    A masked-off step gets G = 0, A r = 0, z = 1: its backward step passes hbar on.
    """
    hidden = h0.shape[-1]
    inputs = xs @ W + b if choices.hoist_input else xs

    def step(h_prev, t_inputs):
        x, active = t_inputs
        p = x if choices.hoist_input else x @ W + b
        q = h_prev @ U
        rz = _sigmoid(p[..., : 2 * hidden] + q[..., : 2 * hidden], choices.sigmoid_via_tanh)
        r, z = rz[..., :hidden], rz[..., hidden:]
        m = q[..., 2 * hidden :] + b_hn
        n = jnp.tanh(p[..., 2 * hidden :] + r * m)
        h = n + z * (h_prev - n)
        if active is not None:
            h = jnp.where(active, h, h_prev)
        if not keep:
            return h, h
        A = (1 - z) * (1 - n * n)
        G = jnp.concatenate([A * m * r * (1 - r), (h_prev - n) * z * (1 - z), A], axis=-1)
        Ar = A * r
        if active is not None:
            G, Ar, z = jnp.where(active, G, 0), jnp.where(active, Ar, 0), jnp.where(active, z, 1)
        return h, (h, G, Ar, z)

    return jax.lax.scan(step, h0, (inputs, mask), unroll=choices.unroll)[1]


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def gru_scan(choices: Choices, W, U, b, b_hn, h0, xs, mask):
    """The fused GRU over ``xs``: returns hs (T, B, H), the carry after every step.

    Reference loop (``mask`` None means every step is active)::

        h = h0
        for t in range(T):
            h_new = step(W, U, b, b_hn, h, xs[t])
            h = h_new if mask is None or mask[t] else h
            hs[t] = h
        return hs

    Args:
      choices: a :class:`Choices` (static).
      W: (D, 3H); U: (H, 3H); b: (3H,) in the fused gate order (r, z, n); b_hn: (H,).
      h0: (B, H) initial carry.
      xs: (T, B, D).
      mask: None, or a boolean (T, B, 1): step t of sequence n runs iff mask[t, n].
    """
    return _forward(choices, W, U, b, b_hn, h0, xs, mask, keep=False)


def _gru_scan_fwd(choices, W, U, b, b_hn, h0, xs, mask):
    hs, Gs, Ars, zs = _forward(choices, W, U, b, b_hn, h0, xs, mask, keep=True)
    return hs, (W, U, b, b_hn, h0, xs, hs, Gs, Ars, zs)


def _gru_scan_bwd(choices, residuals, dhs):
    W, U, b, b_hn, h0, xs, hs, Gs, Ars, zs = residuals
    hs_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)  # h_{t-1} for each t
    U_T = U.T
    hidden = U.shape[0]
    accumulate = not choices.grads_after_scan

    def step(carry, t_inputs):
        dh_next, *sums = carry
        dh_out, G, Ar, z, x, h_prev = t_inputs
        dh = dh_next + dh_out
        dp = G * jnp.concatenate([dh, dh, dh], axis=-1)
        dm = dh * Ar
        dq = jnp.concatenate([dp[..., : 2 * hidden], dm], axis=-1)
        dh_prev = dh * z + dq @ U_T
        if accumulate:
            dW, dU, db, db_hn = sums
            sums = [dW + x.T @ dp, dU + h_prev.T @ dq, db + dp.sum(0), db_hn + dm.sum(0)]
            return (dh_prev, *sums), dp @ W.T
        return (dh_prev,), (dp, dq)

    init = (jnp.zeros_like(h0),)
    if accumulate:
        init += (jnp.zeros_like(W), jnp.zeros_like(U), jnp.zeros(U.shape[1], U.dtype))
        init += (jnp.zeros(hidden, U.dtype),)
    init = vary_like(init, dhs, Gs, xs)  # inside shard_map: as the per-step terms vary
    carry, per_step = jax.lax.scan(
        step,
        init,
        (dhs, Gs, Ars, zs) + ((xs, hs_prev) if accumulate else (None, None)),
        reverse=True,
        unroll=choices.backward_unroll,
    )
    if accumulate:
        dh0, dW, dU, db, db_hn = carry
        dxs = per_step
    else:
        (dh0,) = carry
        dps, dqs = per_step
        n_steps, batch, gates3 = dps.shape
        dp_flat, dq_flat = dps.reshape(n_steps * batch, gates3), dqs.reshape(-1, gates3)
        dW = xs.reshape(n_steps * batch, -1).T @ dp_flat
        dU = hs_prev.reshape(n_steps * batch, hidden).T @ dq_flat
        db = dp_flat.sum(0)
        db_hn = dq_flat[:, 2 * hidden :].sum(0)
        dxs = dps @ W.T
    # inside shard_map: the gradients of replicated inputs are summed over the devices
    cotangents = sum_like((dW, dU, db, db_hn, dh0, dxs), (W, U, b, b_hn, h0, xs))
    return (*cotangents, None)


gru_scan.defvjp(_gru_scan_fwd, _gru_scan_bwd)
