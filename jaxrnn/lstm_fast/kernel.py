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

The forward pass stores the local derivatives R_t = [g i(1-i), c_{t-1} f(1-f),
tanh(c_t) o(1-o), i (1-g^2)], C_t = o (1 - tanh(c_t)^2) and f_t, so that a backward step is
``cbar_t = cbar + hbar_t C_t;  zbar_t = R_t * [cbar_t, cbar_t, hbar_t, cbar_t]`` and nothing
is recomputed. Only the two recursions (cbar, hbar) are sequential; the weight and input
gradients are sums over all steps, accumulated in the reverse scan by default (off the
critical path of the recursion) or, as a choice, computed as single matmuls after it.
Under a mask, a masked-off step passes (cbar, hbar) through unchanged and has
zbar_t = 0 (its R_t = 0, C_t = 0, f_t = 1).

How each step is computed is a :class:`Choices`; the defaults are the fastest measured on
XLA:CPU (``bench/lstm.py`` records the table of choices).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._varying import sum_like, vary_like


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
      block: steps per iteration of the scans, whose inputs are projected by one matmul
        ``(block·B, D) @ (D, 4H)`` before the block's steps and whose weight and input
        gradients are one matmul per block after them (a T that is not a multiple is
        padded with masked-off steps). 1: per step, as ``unroll`` and ``hoist_input`` say.
        The default, 8, was the fastest forward and forward+backward measured on a 2-core
        CPU, on one device and with the batch over two (``bench/lstm.py``).
    """

    unroll: int = 4
    backward_unroll: int = 4
    sigmoid_via_tanh: bool = True
    hoist_input: bool = False
    one_matmul: bool = False
    grads_after_scan: bool = False
    batch_split: int = 1
    block: int = 8


def _sigmoid(z, via_tanh: bool):
    return 0.5 * jnp.tanh(0.5 * z) + 0.5 if via_tanh else jax.nn.sigmoid(z)


def _cell(choices: Choices, c_prev, z):
    """One step from the pre-activations z (B, 4H): returns (c_t, h_t, local derivatives).

    The local derivatives are what the backward step needs, computed here once::

        R = [g i(1-i), c_{t-1} f(1-f), tanh(c_t) o(1-o), i (1-g^2)]    (B, 4H)
        C = o (1 - tanh(c_t)^2),   f                                    (B, H) each

    so that zbar_t = R * [cbar_t, cbar_t, hbar_t, cbar_t] with cbar_t = cbar + hbar_t C.
    """
    hidden = c_prev.shape[-1]
    ifo = _sigmoid(z[..., : 3 * hidden], choices.sigmoid_via_tanh)
    g = jnp.tanh(z[..., 3 * hidden :])
    i, f, o = ifo[..., :hidden], ifo[..., hidden : 2 * hidden], ifo[..., 2 * hidden :]
    c = f * c_prev + i * g
    tanh_c = jnp.tanh(c)
    h = o * tanh_c
    R = jnp.concatenate(
        [g * i * (1 - i), c_prev * f * (1 - f), tanh_c * o * (1 - o), i * (1 - g * g)], axis=-1
    )
    return c, h, (R, o * (1 - tanh_c * tanh_c), f)


def _forward(choices: Choices, W, U, b, c0, h0, xs, mask, *, keep: bool):
    """Run the forward scan; ``keep`` also returns the local derivatives (R, C, f) for BPTT.

    A masked-off step gets R = 0, C = 0, f = 1: its backward step passes (cbar, hbar) on.
    """
    hoisted = choices.hoist_input or choices.block > 1
    inputs = xs @ W + b if choices.hoist_input and choices.block == 1 else xs
    WU = jnp.concatenate([W, U], axis=0) if choices.one_matmul else None

    def step(carry, t_inputs):
        c_prev, h_prev = carry
        x, m = t_inputs
        if hoisted:
            z = x + h_prev @ U
        elif choices.one_matmul:
            z = jnp.concatenate([x, h_prev], axis=-1) @ WU + b
        else:
            z = x @ W + h_prev @ U + b
        c, h, (R, C, f) = _cell(choices, c_prev, z)
        if m is not None:
            c = jnp.where(m, c, c_prev)
            h = jnp.where(m, h, h_prev)
            R, C, f = jnp.where(m, R, 0), jnp.where(m, C, 0), jnp.where(m, f, 1)
        outputs = (h, R, C, f) if keep else (h,)
        return (c, h), outputs

    if choices.block > 1:
        return _forward_blocked(choices, step, W, b, c0, h0, xs, mask)
    (c_last, _), outputs = jax.lax.scan(step, (c0, h0), (inputs, mask), unroll=choices.unroll)
    return c_last, outputs


def _pad_to_blocks(block: int, n_steps: int, mask, leaves: tuple, fills: tuple):
    """Pad (T, ...) leaves to a multiple of ``block`` steps, cut into (T / block, block, ...).

    Padding steps are masked off (``mask`` is made if it was None); ``fills`` gives each
    leaf's padding value. Returns ``(mask, leaves)`` in blocks.
    """
    extra = -n_steps % block
    if extra:
        if mask is None:
            batch = leaves[0].shape[1]
            mask = jnp.ones((n_steps, batch, 1), bool)
        mask = jnp.pad(mask, [(0, extra), (0, 0), (0, 0)])
        leaves = tuple(
            jnp.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1), constant_values=fill)
            for a, fill in zip(leaves, fills, strict=True)
        )
    cut = lambda a: None if a is None else a.reshape((-1, block) + a.shape[1:])
    return cut(mask), tuple(cut(a) for a in leaves)


def _forward_blocked(choices: Choices, step, W, b, c0, h0, xs, mask):
    """The forward scan over blocks of ``choices.block`` steps (see :class:`Choices`).

    ``step`` is the per-step body with the input projection hoisted (it adds h U to it).
    """
    n_steps = xs.shape[0]
    mask, (xs,) = _pad_to_blocks(choices.block, n_steps, mask, (xs,), (0,))

    def block_step(carry, block_inputs):
        x_block, m_block = block_inputs
        projected = x_block @ W + b  # (block, B, 4H): one matmul for the block's inputs
        outputs = []
        for j in range(choices.block):
            carry, out = step(carry, (projected[j], None if m_block is None else m_block[j]))
            outputs.append(out)
        return carry, tuple(jnp.stack(parts) for parts in zip(*outputs, strict=True))

    (c_last, _), outputs = jax.lax.scan(block_step, (c0, h0), (xs, mask))
    return c_last, tuple(a.reshape((-1,) + a.shape[2:])[:n_steps] for a in outputs)


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
    c_last, (hs, Rs, Cs, fs) = _forward(choices, W, U, b, c0, h0, xs, mask, keep=True)
    return (c_last, hs), (W, U, b, c0, h0, xs, mask, hs, Rs, Cs, fs)


def _lstm_scan_bwd(choices, residuals, cotangents):
    W, U, b, c0, h0, xs, mask, hs, Rs, Cs, fs = residuals
    dc_last, dhs = cotangents
    hidden = U.shape[0]
    hs_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)  # h_{t-1} for each t
    U_T = U.T
    accumulate = not choices.grads_after_scan and choices.block == 1

    def step(carry, t_inputs):
        dc_next, dh_next, *sums = carry
        dh_out, R, C, f, m, x, h_prev = t_inputs
        dh = dh_next + dh_out
        dc = dc_next + dh * C
        dz = R * jnp.concatenate([dc, dc, dh, dc], axis=-1)
        dc_prev = dc * f
        dh_prev = dz @ U_T
        if m is not None:
            dh_prev = dh_prev + jnp.where(m, 0, dh)
        if accumulate:
            dW, dU, db = sums
            sums = [dW + x.T @ dz, dU + h_prev.T @ dz, db + dz.sum(0)]
            return (dc_prev, dh_prev, *sums), dz @ W.T
        return (dc_prev, dh_prev), dz

    init = (dc_last, jnp.zeros_like(dc_last))
    if accumulate or choices.block > 1:
        init += (jnp.zeros_like(W), jnp.zeros_like(U), jnp.zeros(U.shape[1], U.dtype))
    init = vary_like(init, dhs, Rs, xs)  # inside jax.shard_map the sums vary as the steps do
    if choices.block > 1:
        dc0, dh0, dW, dU, db, dxs = _backward_blocked(
            choices.block, step, init, W, (dhs, Rs, Cs, fs, mask, xs, hs_prev)
        )
        grads = sum_like((dW, dU, db, dc0, dh0, dxs), (W, U, b, c0, h0, xs))
        return (*grads, None)
    carry, per_step = jax.lax.scan(
        step,
        init,
        (dhs, Rs, Cs, fs, mask) + ((xs, hs_prev) if accumulate else (None, None)),
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
    # replicated inputs inside jax.shard_map: their gradient sums over the devices
    grads = sum_like((dW, dU, db, dc0, dh0, dxs), (W, U, b, c0, h0, xs))
    return (*grads, None)


def _backward_blocked(block: int, step, init, W, per_step):
    """The reverse scan over blocks of ``block`` steps: (cbar, hbar) step by step, then the
    block's weight and input gradients as one matmul each (see :class:`Choices`).

    ``step`` is the per-step body that returns zbar_t; ``per_step`` holds the (T, ...)
    inputs (hbar of the outputs, R, C, f, mask, x, h_{t-1}). Returns
    ``(cbar_0, hbar_0, Wbar, Ubar, bbar, xbar)``.
    """
    dhs, Rs, Cs, fs, mask, xs, hs_prev = per_step
    n_steps = xs.shape[0]
    mask, blocks = _pad_to_blocks(
        block, n_steps, mask, (dhs, Rs, Cs, fs, xs, hs_prev), (0, 0, 0, 1, 0, 0)
    )

    def block_step(carry, block_inputs):
        dc, dh, dW, dU, db = carry
        (dh_out, R, C, f, x, h_prev), m = block_inputs
        dzs = [None] * block
        for j in reversed(range(block)):
            t_inputs = (dh_out[j], R[j], C[j], f[j], None if m is None else m[j], None, None)
            (dc, dh), dzs[j] = step((dc, dh), t_inputs)
        dz = jnp.stack(dzs)  # (block, B, 4H)
        rows = lambda a: a.reshape(-1, a.shape[-1])  # (block·B, ...)
        dW = dW + rows(x).T @ rows(dz)
        dU = dU + rows(h_prev).T @ rows(dz)
        return (dc, dh, dW, dU, db + rows(dz).sum(0)), dz @ W.T

    carry, dxs = jax.lax.scan(block_step, init, (blocks, mask), reverse=True)
    return (*carry, dxs.reshape((-1,) + dxs.shape[2:])[:n_steps])


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
