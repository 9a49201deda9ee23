"""Raster baselines for the MDRNN benchmarks: the row-major order as competent users write it.

Every function here computes the grid of SPEC §6 in H·W sequential cell steps, with the
signature ``raster(params, x) -> h``, x (*batch, H, W, D) -> h (*batch, H, W, hidden), and
equals :func:`jaxrnn.mdrnn.raster`. The benchmarks time all of them and divide the
wavefront's time by the *fastest* per size, so that a speed-up is never claimed against a
raster chosen because it is slow.

- ``library``: :func:`jaxrnn.mdrnn.raster_fast` (the row above's product hoisted, as
  ``row_hoisted`` below, with the library's checks and activations).
- ``stacked_dot``: the input projection hoisted, nested scans, and one product per step of
  ``[h_up, h_left]`` with the stacked ``[W_W; W_N]`` (one concatenation per step).
- ``two_dots``: the input projection hoisted out of the loop, an outer ``lax.scan`` over
  rows carrying the previous row, an inner ``lax.scan`` over columns carrying h(i, j-1),
  and the two recurrent products as two dots (``h_up @ W_W + h_left @ W_N``), no
  concatenation per step.
- ``row_hoisted``: as ``two_dots``, but the product of the whole row above with W_W is
  one matmul per row, before the inner scan, which then does only ``h_left @ W_N``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn import mdrnn


def _grid_first(x):
    """(*batch, H, W, k) -> (H, W, *batch, k)."""
    return jnp.moveaxis(x, (-3, -2), (0, 1))


def _grid_back(h):
    """(H, W, *batch, k) -> (*batch, H, W, k)."""
    return jnp.moveaxis(h, (0, 1), (-3, -2))


def stacked_dot(params, x):
    projected = _grid_first(x @ params["W_in"])
    stacked = jnp.concatenate([params["W_W"], params["W_N"]], axis=0)  # (2 hidden, hidden)
    zeros = jnp.zeros_like(projected[0, 0])

    def row_step(row_above, projected_row):
        def cell_step(h_left, inputs):
            p, h_up = inputs
            h = jnp.tanh(p + jnp.concatenate([h_up, h_left], -1) @ stacked)
            return h, h

        _, row = jax.lax.scan(cell_step, zeros, (projected_row, row_above))
        return row, row

    _, h = jax.lax.scan(row_step, jnp.zeros_like(projected[0]), projected)
    return _grid_back(h)


def two_dots(params, x):
    projected = _grid_first(x @ params["W_in"])  # (H, W, *batch, hidden)
    W_W, W_N = params["W_W"], params["W_N"]
    zeros = jnp.zeros_like(projected[0, 0])

    def row_step(row_above, projected_row):
        def cell_step(h_left, inputs):
            p, h_up = inputs
            h = jnp.tanh(p + h_up @ W_W + h_left @ W_N)
            return h, h

        _, row = jax.lax.scan(cell_step, zeros, (projected_row, row_above))
        return row, row

    _, h = jax.lax.scan(row_step, jnp.zeros_like(projected[0]), projected)
    return _grid_back(h)


def row_hoisted(params, x):
    projected = _grid_first(x @ params["W_in"])
    W_W, W_N = params["W_W"], params["W_N"]
    zeros = jnp.zeros_like(projected[0, 0])

    def row_step(row_above, projected_row):
        from_above = projected_row + row_above @ W_W  # one matmul for the whole row

        def cell_step(h_left, p):
            h = jnp.tanh(p + h_left @ W_N)
            return h, h

        _, row = jax.lax.scan(cell_step, zeros, from_above)
        return row, row

    _, h = jax.lax.scan(row_step, jnp.zeros_like(projected[0]), projected)
    return _grid_back(h)


RASTERS = {
    "library raster_fast": mdrnn.raster_fast,
    "one stacked dot, nested scans": stacked_dot,
    "two dots, nested scans": two_dots,
    "row above hoisted": row_hoisted,
}
