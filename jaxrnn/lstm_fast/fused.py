"""The LSTM weights fused into three arrays, so that one step needs two matmuls.

With the gates stacked in the order (i, f, o, g) (the three sigmoid gates first, then the
tanh candidate, SPEC §4's W_c / U_c / b_c)::

    W = [W_i; W_f; W_o; W_c]^T   (D, 4H)      U = [U_i; U_f; U_o; U_c]^T   (H, 4H)
    b = [b_i, b_f, b_o, b_c]     (4H,)
    z_t = x_t W + h_{t-1} U + b = [pre_i, pre_f, pre_o, pre_g]   (B, 4H)

Fusing is a concatenation and a transpose: differentiable, so gradients with respect to
the fused arrays flow back to the dict of :mod:`jaxrnn.cells.lstm` unchanged.
"""

from __future__ import annotations

import jax.numpy as jnp

FUSED_ORDER = ("i", "f", "o", "c")


def fuse(params: dict):
    """``params`` of :mod:`jaxrnn.cells.lstm` -> ``(W (D, 4H), U (H, 4H), b (4H,))``."""
    W = jnp.concatenate([params[f"W_{g}"] for g in FUSED_ORDER], axis=0).T
    U = jnp.concatenate([params[f"U_{g}"] for g in FUSED_ORDER], axis=0).T
    b = jnp.concatenate([params[f"b_{g}"] for g in FUSED_ORDER], axis=0)
    return W, U, b


def unfuse(W, U, b) -> dict:
    """The inverse of :func:`fuse`: ``(W (D, 4H), U (H, 4H), b (4H,))`` -> a cells.lstm dict."""
    hidden = U.shape[0]
    params = {}
    for k, gate in enumerate(FUSED_ORDER):
        cols = slice(k * hidden, (k + 1) * hidden)
        params[f"W_{gate}"] = W[:, cols].T
        params[f"U_{gate}"] = U[:, cols].T
        params[f"b_{gate}"] = b[cols]
    return params
