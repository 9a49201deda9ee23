"""The MD-LSTM cell (Graves, Fernández & Schmidhuber 2007) on the anti-diagonal wavefront.

One forget gate per dimension; (c_W, h_W) is the state at (i-1, j), (c_N, h_N) at (i, j-1)::

    a_g = W_g^T x(i,j) + U_gW^T h_W + U_gN^T h_N + b_g      for g in i, fW, fN, o, c
    i = sigma(a_i)   f_W = sigma(a_fW)   f_N = sigma(a_fN)   o = sigma(a_o)   g = tanh(a_c)
    c(i,j) = f_W * c_W + f_N * c_N + i * g                   h(i,j) = o * tanh(c(i,j))

(c, h) = 0 outside the grid. No peephole connections. Shapes: W_g (D, hidden),
U_gW and U_gN (hidden, hidden), b_g (hidden,).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._cell_pieces import check_sizes, uniform_weights
from jaxrnn._checks import check_matrix, check_params
from jaxrnn._deprecated import alias
from jaxrnn.mdrnn import cell
from jaxrnn.mdrnn._wavefront import (
    check_grouping,
    check_sizes_arg,
    flatten_grid,
    run_diagonals,
    size_mask,
    unflatten_grid,
)

GATES = ("i", "fW", "fN", "o", "c")


def param_shapes(in_dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for gate in GATES:
        shapes[f"W_{gate}"] = (in_dim, hidden)
        shapes[f"U_{gate}W"] = (hidden, hidden)
        shapes[f"U_{gate}N"] = (hidden, hidden)
        shapes[f"b_{gate}"] = (hidden,)
    return shapes


def init(key, in_dim: int, hidden: int, *, forget_bias: float = 0.0, dtype=jnp.float32):
    """Weights from U(-1/sqrt(2 hidden), 1/sqrt(2 hidden)); biases 0, forget biases
    ``forget_bias``. Returns ``W_g`` (D, hidden), ``U_gW``, ``U_gN`` (hidden, hidden),
    ``b_g`` (hidden,) for g in i, fW, fN, o, c."""
    check_sizes(in_dim, hidden)
    shapes = param_shapes(in_dim, hidden)
    weights = {k: s for k, s in shapes.items() if not k.startswith("b_")}
    params = uniform_weights(key, weights, 2 * hidden, dtype)
    for gate in GATES:
        value = forget_bias if gate.startswith("f") else 0.0
        params[f"b_{gate}"] = jnp.full((hidden,), value, dtype)
    return params


def validate_params(params) -> tuple[int, int]:
    """Validate MD-LSTM params; returns ``(in_dim, hidden)``."""
    in_dim, hidden = check_matrix(params, "W_i")
    check_params(params, param_shapes(in_dim, hidden))
    return in_dim, hidden


def _fused(params):
    """Input weights (D, 5 hidden), bias (5 hidden,), stacked recurrent (2 hidden, 5 hidden)."""
    w = jnp.concatenate([params[f"W_{g}"] for g in GATES], axis=1)
    b = jnp.concatenate([params[f"b_{g}"] for g in GATES])
    u_west = jnp.concatenate([params[f"U_{g}W"] for g in GATES], axis=1)
    u_north = jnp.concatenate([params[f"U_{g}N"] for g in GATES], axis=1)
    return w, b, jnp.concatenate([u_west, u_north], axis=0)


def _update(pre, c_west, c_north):
    """(c, h) from the pre-activations of the 5 gates (..., 5 hidden)."""
    a_i, a_fw, a_fn, a_o, a_c = jnp.split(pre, 5, axis=-1)
    sig = jax.nn.sigmoid
    c = sig(a_fw) * c_west + sig(a_fn) * c_north + sig(a_i) * jnp.tanh(a_c)
    return c, sig(a_o) * jnp.tanh(c)


def apply(params: dict, west, north, x):
    """One MD-LSTM cell: ``((c_W, h_W), (c_N, h_N), x(i,j)) -> (c(i,j), h(i,j))``.

    Args: west, north: (c, h) pairs, each (*batch, hidden); x: (*batch, D).
    """
    w, b, u = _fused(params)
    pre = x @ w + b + jnp.concatenate([west[1], north[1]], -1) @ u
    return _update(pre, west[0], north[0])


def wavefront(params: dict, x, *, sizes=None, min_length: int = 8, fill: float = 0.75):
    """All (c, h) of the grid in H+W-1 sequential steps (see :func:`jaxrnn.mdrnn.wavefront`).

    The same reference loop as the grid cell's, with (c, h) in place of h and
    :func:`apply` as the cell.

    Args:
      params: as made by :func:`init`.
      x: shape (H, W, D) or (*batch, H, W, D).
      sizes: optional (*batch, 2) grid sizes, as in :func:`jaxrnn.mdrnn.wavefront`.

    Returns:
      h, shape (*batch, H, W, hidden).
    """
    in_dim, hidden = validate_params(params)
    batch, height, width = cell.check_grid(x, in_dim)
    check_grouping(min_length, fill)
    dtype = cell.result_dtype(params, x)
    w, b, u = (a.astype(dtype) for a in _fused(params))
    projected = flatten_grid(jnp.asarray(x, dtype) @ w + b, len(batch))
    mask = None
    if sizes is not None:
        check_sizes_arg(sizes, batch, height, width)
        mask = flatten_grid(size_mask(sizes, height, width)[..., None], len(batch))[..., 0]

    gates = 5 * hidden
    # [U_W, U_N] (hidden, 10 hidden): h @ it gives a cell's terms for both of its neighbours
    side_by_side = jnp.concatenate([u[:hidden], u[hidden:]], axis=1)

    def step(west, north, projected_cells):
        # west = (c(i-1, j), h(i-1, j) @ [U_W, U_N]), north likewise for (i, j-1)
        pre = projected_cells + west[1][..., :gates] + north[1][..., gates:]
        c, h = _update(pre, west[0], north[0])
        return (c, h), h

    hs = run_diagonals(
        step,
        projected,
        ((hidden, dtype), (hidden, dtype)),
        height,
        width,
        mask=mask,
        mix=lambda state: (state[0], state[1] @ side_by_side),
        min_length=min_length,
        fill=fill,
    )
    return unflatten_grid(hs, batch, height, width)


# the old name, for one release (CHANGELOG.md)
check = alias(validate_params, "jaxrnn.mdrnn.mdlstm.check", "jaxrnn.mdrnn.mdlstm.validate_params")
