"""A 3-D MDRNN: an n1 x n2 x n3 grid in n1+n2+n3-2 wavefront steps.

    h(i,j,k) = phi( W_in^T x(i,j,k) + W_1^T h(i-1,j,k) + W_2^T h(i,j-1,k) + W_3^T h(i,j,k-1) ),
    h outside the grid = 0.

Cells on the plane i + j + k = d depend only on plane d - 1, so one ``lax.scan`` over the
n1+n2+n3-2 planes computes the grid. Reference loop::

    h = zeros((n1, n2, n3, hidden))
    for d in range(n1 + n2 + n3 - 2):                       # sequential
        for (i, j, k) in cells with i + j + k == d:        # together
            h[i, j, k] = phi(W_in.T @ x[i, j, k] + W_1.T @ h[i - 1, j, k]
                             + W_2.T @ h[i, j - 1, k] + W_3.T @ h[i, j, k - 1])

Each step gathers the three neighbours of the plane's cells from the state of the whole
grid and writes the plane back (planes are padded to the largest one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell_pieces import check_sizes, resolve_activation, uniform_weights
from jaxrnn._checks import check_matrix, check_params, shape_of
from jaxrnn.mdrnn.cell import result_dtype


def param_shapes(in_dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    square = (hidden, hidden)
    return {"W_in": (in_dim, hidden), "W_1": square, "W_2": square, "W_3": square}


def init(key, in_dim: int, hidden: int, *, dtype=jnp.float32) -> dict:
    """Weights from U(-1/sqrt(3 hidden), 1/sqrt(3 hidden)), no bias."""
    check_sizes(in_dim, hidden)
    return uniform_weights(key, param_shapes(in_dim, hidden), 3 * hidden, dtype)


def _planes(shape: tuple[int, int, int]):
    """Per plane d: flat indices of its cells and of their 3 neighbours, padded.

    Padding cells write to the slot N + 1 (never read); neighbours outside the grid read the
    slot N (always 0). Returns cells (S, P) and neighbours (S, 3, P), S = n1+n2+n3-2.
    """
    n1, n2, n3 = shape
    n = n1 * n2 * n3
    i, j, k = np.meshgrid(np.arange(n1), np.arange(n2), np.arange(n3), indexing="ij")
    i, j, k = i.ravel(), j.ravel(), k.ravel()
    plane = i + j + k
    n_planes = n1 + n2 + n3 - 2
    width = np.bincount(plane, minlength=n_planes).max()
    cells = np.full((n_planes, width), n + 1, np.int32)
    neighbours = np.full((n_planes, 3, width), n, np.int32)
    flat = np.arange(n)
    strides = (n2 * n3, n3, 1)
    for d in range(n_planes):
        members = flat[plane == d]
        cells[d, : members.size] = members
        for axis, (coord, stride) in enumerate(zip((i, j, k), strides, strict=True)):
            inside = coord[members] > 0
            neighbours[d, axis, : members.size] = np.where(inside, members - stride, n)
    return cells, neighbours


def wavefront(params: dict, x, *, activation="tanh"):
    """All hidden activations of a 3-D grid in n1+n2+n3-2 sequential steps.

    Args:
      params: as made by :func:`init`.
      x: shape (n1, n2, n3, D) or (*batch, n1, n2, n3, D).
      activation: phi, ``"tanh"``, ``"sigmoid"`` or a callable.

    Returns:
      h, shape (*batch, n1, n2, n3, hidden).
    """
    in_dim, hidden = check_matrix(params, "W_in")
    check_params(params, param_shapes(in_dim, hidden))
    shape = shape_of(x)
    if len(shape) < 4 or shape[-1] != in_dim or min(shape[-4:-1]) < 1:
        raise ValueError(f"x: expected shape (*batch, n1, n2, n3, {in_dim}), got {shape}")
    phi = resolve_activation(activation)
    dtype = result_dtype(params, x)
    batch, grid = shape[:-4], shape[-4:-1]
    n = int(np.prod(grid))
    cells, neighbours = _planes(grid)
    projected = jnp.asarray(x, dtype).reshape((-1, n, in_dim)) @ params["W_in"].astype(dtype)
    projected = jnp.moveaxis(projected, 1, 0)  # (N, B, hidden)
    lead = projected.shape[1:-1]
    planes_in = jnp.take(projected, np.minimum(cells, n - 1), axis=0)
    recurrent = jnp.concatenate([params[f"W_{a}"] for a in (1, 2, 3)], 0).astype(dtype)

    def plane_step(state, inputs):
        cells_d, neighbours_d, projected_d = inputs
        around = jnp.take(state, neighbours_d, axis=0)  # (3, P, B, hidden)
        stacked = jnp.concatenate(list(around), axis=-1)
        h = phi(projected_d + stacked @ recurrent)
        return state.at[cells_d].set(h), None

    state = jnp.zeros((n + 2, *lead, hidden), dtype)
    state, _ = jax.lax.scan(plane_step, state, (cells, neighbours, planes_in))
    out = jnp.moveaxis(state[:n], 0, 1)
    return out.reshape((*batch, *grid, hidden))
