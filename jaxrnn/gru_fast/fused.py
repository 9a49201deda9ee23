"""The GRU weights fused into four arrays, so that one step needs one matmul with h_{t-1}.

With the gates stacked in the order (r, z, n) (SPEC §8)::

    W = [W_r; W_z; W_n]^T   (D, 3H)      U = [U_r; U_z; U_n]^T   (H, 3H)
    b = [b_r, b_z, b_n]     (3H,)        b_hn                    (H,)
    x_t W + b = [a^x_r, a^x_z, a^x_n],   h_{t-1} U = [a^h_r, a^h_z, U_n h_{t-1}]   (B, 3H)

Fusing is a concatenation and a transpose: differentiable, so gradients with respect to
the fused arrays flow back to the dict of :mod:`jaxrnn.cells.gru` unchanged.
"""

from __future__ import annotations

import jax.numpy as jnp

FUSED_ORDER = ("r", "z", "n")


def fuse(params: dict):
    """``params`` of :mod:`jaxrnn.cells.gru` -> ``(W (D, 3H), U (H, 3H), b (3H,), b_hn (H,))``."""
    W = jnp.concatenate([params[f"W_{g}"] for g in FUSED_ORDER], axis=0).T
    U = jnp.concatenate([params[f"U_{g}"] for g in FUSED_ORDER], axis=0).T
    b = jnp.concatenate([params[f"b_{g}"] for g in FUSED_ORDER], axis=0)
    return W, U, b, params["b_hn"]


def unfuse(W, U, b, b_hn) -> dict:
    """The inverse of :func:`fuse`: the four fused arrays -> a cells.gru dict."""
    blocks = [jnp.split(a, len(FUSED_ORDER), axis=-1) for a in (W, U, b)]
    params = {"b_hn": b_hn}
    for gate, w, u, bias in zip(FUSED_ORDER, *blocks, strict=True):
        params.update({f"W_{gate}": w.T, f"U_{gate}": u.T, f"b_{gate}": bias})
    return params
