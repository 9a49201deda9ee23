"""The fused LSTM over a sequence: forward ``lax.scan``, backward the hand BPTT of SPEC §4.

Forward, per step (gates in the fused order i, f, o, g; see :mod:`.fused`)::

    z_t = x_t W + h_{t-1} U + b                    (B, 4H)
    i_t, f_t, o_t = sigma(z_t[:3H]),  g_t = tanh(z_t[3H:])
    c_t = f_t * c_{t-1} + i_t * g_t                h_t = o_t * tanh(c_t)

With a mask m_t (``t < length``), a masked-off step keeps the carry:
``c_t = c_{t-1}``, ``h_t = h_{t-1}``.

Backward (bars are adjoints; ``hbar_t`` includes the direct term of the output h_t)::

    obar_t = hbar_t * tanh(c_t)
    cbar_t += hbar_t * o_t * (1 - tanh(c_t)^2)
    ibar_t = cbar_t * g_t,   fbar_t = cbar_t * c_{t-1},   gbar_t = cbar_t * i_t
    zbar_t = [ibar i(1-i), fbar f(1-f), obar o(1-o), gbar (1-g^2)]      (pre-activation)
    cbar_{t-1} = cbar_t * f_t,      hbar_{t-1} = zbar_t U^T (+ the output's own adjoint)
    Wbar = sum_t x_t^T zbar_t,  Ubar = sum_t h_{t-1}^T zbar_t,  bbar = sum_t zbar_t,
    xbar_t = zbar_t W^T

Only the two recursions (cbar, hbar) are sequential; the weight and input gradients are
sums over all steps and run, by default, as single matmuls after the reverse scan.
Under a mask, a masked-off step passes (cbar, hbar) through unchanged and has zbar_t = 0.

How each step is computed is a :class:`Choices`; the defaults are the fastest measured on
XLA:CPU (``bench/lstm.py`` records the table of choices).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Choices(NamedTuple):
    """How the fused kernel is computed (all results are equal up to rounding).

    Attributes:
      unroll: steps per compiled loop body of the forward scan.
      backward_unroll: the same for the reverse scan of the backward pass.
      sigmoid_via_tanh: compute sigma(z) as 0.5 tanh(z / 2) + 0.5 (one fused tanh).
      hoist_input: compute x_t W + b for all t as one matmul before the forward scan.
      one_matmul: compute z_t as one matmul [x_t, h_{t-1}] [W; U] + b (when not hoisted).
      grads_after_scan: weight and input gradients as single matmuls after the reverse
        scan (True), or accumulated inside it step by step (False).
      batch_split: run the batch as this many independent scans (chunks of sequences), which
        XLA may execute concurrently on different cores; their weight gradients add up.
    """

    unroll: int = 4
    backward_unroll: int = 4
    sigmoid_via_tanh: bool = True
    hoist_input: bool = False
    one_matmul: bool = False
    grads_after_scan: bool = True
    batch_split: int = 1


def _sigmoid(z, via_tanh: bool):
    return 0.5 * jnp.tanh(0.5 * z) + 0.5 if via_tanh else jax.nn.sigmoid(z)


def _cell(choices: Choices, c_prev, z):
    """One step from the pre-activations z (B, 4H): returns (c_t, h_t, gates (B, 4H))."""
    hidden = c_prev.shape[-1]
    ifo = _sigmoid(z[..., : 3 * hidden], choices.sigmoid_via_tanh)
    g = jnp.tanh(z[..., 3 * hidden :])
    i, f, o = ifo[..., :hidden], ifo[..., hidden : 2 * hidden], ifo[..., 2 * hidden :]
    c = f * c_prev + i * g
    h = o * jnp.tanh(c)
    return c, h, jnp.concatenate([ifo, g], axis=-1)


def _forward(choices: Choices, W, U, b, c0, h0, xs, mask, *, keep: bool):
    """Run the forward scan; ``keep`` also returns the residuals (cs, gates) for BPTT."""
    inputs = xs @ W + b if choices.hoist_input else xs
    WU = jnp.concatenate([W, U], axis=0) if choices.one_matmul else None

    def step(carry, t_inputs):
        c_prev, h_prev = carry
        x, m = t_inputs
        if choices.hoist_input:
            z = x + h_prev @ U
        elif choices.one_matmul:
            z = jnp.concatenate([x, h_prev], axis=-1) @ WU + b
        else:
            z = x @ W + h_prev @ U + b
        c, h, gates = _cell(choices, c_prev, z)
        if m is not None:
            c = jnp.where(m, c, c_prev)
            h = jnp.where(m, h, h_prev)
        outputs = (h, c, gates) if keep else (h,)
        return (c, h), outputs

    (c_last, _), outputs = jax.lax.scan(step, (c0, h0), (inputs, mask), unroll=choices.unroll)
    return c_last, outputs


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def lstm_scan(choices: Choices, W, U, b, c0, h0, xs, mask):
    """The fused LSTM over ``xs``: returns ``(c_T, hs)`` with hs (T, B, H) the h carries.

    Reference loop (``mask`` None means every step is active)::

        c, h = c0, h0
        for t in range(T):
            c_new, h_new = step(W, U, b, c, h, xs[t])
            c, h = (c_new, h_new) if mask is None or mask[t] else (c, h)
            hs[t] = h
        return c, hs

    Args:
      choices: a :class:`Choices` (static).
      W: (D, 4H); U: (H, 4H); b: (4H,) in the fused gate order (i, f, o, g).
      c0, h0: (B, H) initial carry.
      xs: (T, B, D).
      mask: None, or a boolean (T, B, 1): step t of sequence n runs iff mask[t, n].
    """
    c_last, (hs,) = _forward(choices, W, U, b, c0, h0, xs, mask, keep=False)
    return c_last, hs


def _lstm_scan_fwd(choices, W, U, b, c0, h0, xs, mask):
    c_last, (hs, cs, gates) = _forward(choices, W, U, b, c0, h0, xs, mask, keep=True)
    return (c_last, hs), (W, U, c0, h0, xs, mask, hs, cs, gates)


def _shift_in(first, seq):
    """``[first, seq[0], ..., seq[T-2]]``: the value before each step."""
    return jnp.concatenate([first[None], seq[:-1]], axis=0)


def _lstm_scan_bwd(choices, residuals, cotangents):
    W, U, c0, h0, xs, mask, hs, cs, gates = residuals
    dc_last, dhs = cotangents
    hidden = U.shape[0]
    cs_prev = _shift_in(c0, cs)
    hs_prev = _shift_in(h0, hs)
    U_T = U.T
    accumulate = not choices.grads_after_scan

    def step(carry, t_inputs):
        dc_next, dh_next, *sums = carry
        dh_out, c, c_prev, gate, m, x, h_prev = t_inputs
        dh = dh_next + dh_out
        dc = dc_next
        if m is not None:
            dh_pass, dc_pass = jnp.where(m, 0, dh), jnp.where(m, 0, dc)
            dh, dc = jnp.where(m, dh, 0), jnp.where(m, dc, 0)
        i, f = gate[..., :hidden], gate[..., hidden : 2 * hidden]
        o, g = gate[..., 2 * hidden : 3 * hidden], gate[..., 3 * hidden :]
        tanh_c = jnp.tanh(c)
        do = dh * tanh_c
        dc = dc + dh * o * (1 - tanh_c * tanh_c)
        dz = jnp.concatenate(
            [
                dc * g * i * (1 - i),
                dc * c_prev * f * (1 - f),
                do * o * (1 - o),
                dc * i * (1 - g * g),
            ],
            axis=-1,
        )
        dc_prev = dc * f
        dh_prev = dz @ U_T
        if m is not None:
            dc_prev, dh_prev = dc_prev + dc_pass, dh_prev + dh_pass
        if accumulate:
            dW, dU, db = sums
            sums = [dW + x.T @ dz, dU + h_prev.T @ dz, db + dz.sum(0)]
            return (dc_prev, dh_prev, *sums), dz @ W.T
        return (dc_prev, dh_prev), dz

    init = (dc_last, jnp.zeros_like(dc_last))
    if accumulate:
        init += (jnp.zeros_like(W), jnp.zeros_like(U), jnp.zeros(U.shape[1], U.dtype))
    carry, per_step = jax.lax.scan(
        step,
        init,
        (dhs, cs, cs_prev, gates, mask) + ((xs, hs_prev) if accumulate else (None, None)),
        reverse=True,
        unroll=choices.backward_unroll,
    )
    if accumulate:
        dc0, dh0, dW, dU, db = carry
        dxs = per_step
    else:
        dc0, dh0 = carry
        dzs = per_step
        n_steps, batch, gates4 = dzs.shape
        dz_flat = dzs.reshape(n_steps * batch, gates4)
        dW = xs.reshape(n_steps * batch, -1).T @ dz_flat
        dU = hs_prev.reshape(n_steps * batch, hidden).T @ dz_flat
        db = dz_flat.sum(0)
        dxs = dzs @ W.T
    return dW, dU, db, dc0, dh0, dxs, None


lstm_scan.defvjp(_lstm_scan_fwd, _lstm_scan_bwd)


def lstm_scan_split(choices: Choices, W, U, b, c0, h0, xs, mask):
    """:func:`lstm_scan` over ``choices.batch_split`` chunks of the batch, concatenated.

    Same arguments and results as :func:`lstm_scan`; with one chunk it is that function.
    """
    n_seq = c0.shape[0]
    n_chunks = min(choices.batch_split, n_seq)
    if n_chunks <= 1:
        return lstm_scan(choices, W, U, b, c0, h0, xs, mask)
    bounds = [n_seq * k // n_chunks for k in range(n_chunks + 1)]
    results = [
        lstm_scan(
            choices,
            W,
            U,
            b,
            c0[lo:hi],
            h0[lo:hi],
            xs[:, lo:hi],
            None if mask is None else mask[:, lo:hi],
        )
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    c_last = jnp.concatenate([c for c, _ in results], axis=0)
    hs = jnp.concatenate([h for _, h in results], axis=1)
    return c_last, hs
