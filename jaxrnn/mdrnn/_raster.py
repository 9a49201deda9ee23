"""Row-major (raster) scans of the MDRNN grid: H·W sequential cell steps.

``raster`` is the reference: one ``lax.scan`` over the H·W cells in row-major order, one
call of the grid cell per step. ``raster_fast`` is the same order of evaluation written for
speed (the input projection hoisted out of the loop, the row above's product with W_W one
matmul per row, a scan over columns nested in a scan over rows); it is one of the baselines
the wavefront is measured against (``bench/mdrnn.py`` divides by the fastest).
Reference loop for both::

    h = zeros((H, W, hidden))
    for i in range(H):
        for j in range(W):
            west = h[i - 1, j] if i > 0 else 0
            north = h[i, j - 1] if j > 0 else 0
            h[i, j] = phi(W_in.T @ x[i, j] + W_W.T @ west + W_N.T @ north)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._cell_pieces import resolve_activation
from jaxrnn._varying import vary_like
from jaxrnn.mdrnn import cell


def _grid_first(a, n_batch: int):
    """(*batch, H, W, k) -> (H, W, *batch, k)."""
    return jnp.moveaxis(a, (n_batch, n_batch + 1), (0, 1))


def _grid_back(a, n_batch: int):
    """(H, W, *batch, k) -> (*batch, H, W, k)."""
    return jnp.moveaxis(a, (0, 1), (n_batch, n_batch + 1))


def raster(params: dict, x, *, activation="tanh", unroll: int | bool = 1):
    """All hidden activations by one row-major scan of H·W grid-cell steps (the reference).

    Step k handles cell (i, j) = (k // W, k % W). The carry is the last row of states (row
    entry j holds h(i-1, j) until it is overwritten by h(i, j)) and h(i, j-1).

    Args:
      params: grid-cell params (:func:`jaxrnn.mdrnn.init`).
      x: inputs x(i,j), shape (H, W, D) or (*batch, H, W, D).
      activation: phi, ``"tanh"``, ``"sigmoid"`` or a callable.
      unroll: passed to ``lax.scan``.

    Returns:
      h, shape (*batch, H, W, hidden).
    """
    in_dim, hidden = cell.validate_params(params)
    batch, height, width = cell.check_grid(x, in_dim)
    phi = resolve_activation(activation)
    dtype = cell.result_dtype(params, x)
    cells = _grid_first(jnp.asarray(x, dtype), len(batch)).reshape((height * width, *batch, in_dim))
    zeros = vary_like(jnp.zeros((*batch, hidden), dtype), params, x)  # (jax.shard_map)

    def step(carry, inputs):
        row, h_north = carry
        k, x_ij = inputs
        j = k % width
        h_north = jnp.where(j > 0, h_north, zeros)
        h = cell.apply(params, row[j], h_north, x_ij, activation=phi)
        return (row.at[j].set(h), h), h

    init = (jnp.zeros_like(zeros, shape=(width, *batch, hidden)), zeros)
    _, hs = jax.lax.scan(step, init, (jnp.arange(height * width), cells), unroll=unroll)
    return _grid_back(hs.reshape((height, width, *batch, hidden)), len(batch))


def raster_fast(params: dict, x, *, activation="tanh"):
    """The raster order written for speed: same result and H·W steps as :func:`raster`.

    W_in^T x(i,j) [+ b] is computed for all cells by one matmul before the loop. A scan over
    the H rows carries the row above; per row, W_W^T h(i-1, j) for the whole row is one
    matmul, and a scan over the W columns carrying h(i, j-1) does only W_N^T h(i, j-1) per
    step (H·W sequential steps in all). Of the raster forms ``bench/mdrnn.py`` times (one
    stacked [W_W; W_N] product per step, two products per step, this one) this is the
    fastest or level with the fastest at every size measured.

    Args and Returns as :func:`raster`.
    """
    in_dim, hidden = cell.validate_params(params)
    batch, height, width = cell.check_grid(x, in_dim)
    phi = resolve_activation(activation)
    dtype = cell.result_dtype(params, x)
    projected = _grid_first(cell.project_input(params, jnp.asarray(x, dtype)), len(batch))
    W_W, W_N = params["W_W"].astype(dtype), params["W_N"].astype(dtype)
    zeros = vary_like(jnp.zeros((*batch, hidden), dtype), params, x)  # (jax.shard_map)

    def row_step(row_above, projected_row):
        from_above = projected_row + row_above @ W_W  # (W, *batch, hidden), one matmul

        def cell_step(h_north, from_above_ij):
            h = phi(from_above_ij + h_north @ W_N)
            return h, h

        _, row = jax.lax.scan(cell_step, zeros, from_above)
        return row, row

    _, hs = jax.lax.scan(row_step, jnp.zeros_like(projected[0]), projected)
    return _grid_back(hs, len(batch))
