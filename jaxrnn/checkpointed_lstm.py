"""The LSTM layer with binomial checkpointing: ``lstm_layer(..., checkpoints=k)``.

The fused step of :mod:`jaxrnn.lstm_fast` (two matmuls per step, gates in the order
i, f, o, g; SPEC §4)::

    z_t = x_t W + h_{t-1} U + b                    (B, 4H)
    i_t, f_t, o_t = sigma(z_t[:3H]),  g_t = tanh(z_t[3H:])
    c_t = f_t * c_{t-1} + i_t * g_t                h_t = o_t * tanh(c_t)

run by :func:`jaxrnn.scan` with ``checkpoints=k`` (:mod:`jaxrnn.checkpointed`, SPEC §10):
the backward pass keeps at most k carries (c, h) and differentiates each step with
``jax.vjp`` of this step, instead of storing the local derivatives of all T steps as the
hand BPTT of :func:`jaxrnn.lstm_layer` does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._scan import scan
from jaxrnn.lstm_fast.fused import fuse


def fused_step(fused, carry, x):
    """One LSTM step on the fused weights ``(W (D, 4H), U (H, 4H), b (4H,))``.

    Returns ``((c_t, h_t), h_t)`` from ``carry = (c_{t-1}, h_{t-1})`` and x_t (*batch, D).
    """
    W, U, b = fused
    c_prev, h_prev = carry
    hidden = c_prev.shape[-1]
    z = x @ W + h_prev @ U + b
    i, f, o = jnp.split(jax.nn.sigmoid(z[..., : 3 * hidden]), 3, axis=-1)
    c = f * c_prev + i * jnp.tanh(z[..., 3 * hidden :])
    h = o * jnp.tanh(c)
    return (c, h), h


def lstm_layer(params: dict, carry, xs, *, lengths, reverse: bool, dtype, checkpoints: int):
    """:func:`jaxrnn.lstm_layer` with ``checkpoints=k``; its arguments already checked.

    ``dtype`` is the parameters' dtype, to which the carry and xs are cast.
    """
    carry = (jnp.asarray(carry[0], dtype), jnp.asarray(carry[1], dtype))
    return scan(
        fused_step,
        fuse(params),
        carry,
        jnp.asarray(xs, dtype),
        lengths=lengths,
        reverse=reverse,
        checkpoints=checkpoints,
    )
