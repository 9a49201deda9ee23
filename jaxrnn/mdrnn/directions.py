"""All four scan directions of a 2-D MDRNN in the same H+W-1 wavefront steps.

Direction k starts from one corner of the grid: with (r, s) = ``DIRECTIONS[k]``, rows are
read in reverse when r and columns when s. Its recurrence is the grid cell of SPEC §6 on
the flipped grid, with its own parameters::

    h_k(i,j) = phi(W_in,k^T x(i,j) + W_W,k^T h_k(i -+ 1, j) + W_N,k^T h_k(i, j -+ 1))

The four flipped grids are batched (``vmap``) through one wavefront, so the four
directions share each of the H+W-1 sequential steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._cell_pieces import resolve_activation
from jaxrnn._checks import shape_of
from jaxrnn.mdrnn import cell
from jaxrnn.mdrnn._wavefront import check_grouping, check_sizes_arg, masked_wavefront, size_mask

DIRECTIONS = ((False, False), (False, True), (True, False), (True, True))


def init_four(key, in_dim: int, hidden: int, *, bias: bool = False, dtype=jnp.float32) -> dict:
    """Four independent grid cells, stacked: every entry has a leading axis of 4."""
    keys = jax.random.split(key, len(DIRECTIONS))
    each = [cell.init(k, in_dim, hidden, bias=bias, dtype=dtype) for k in keys]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *each)


def _flip(a, rows: bool, cols: bool, n_batch: int):
    axes = [n_batch + ax for ax, on in ((0, rows), (1, cols)) if on]
    return jnp.flip(a, axes) if axes else a


def four_directions(
    params: dict, x, *, activation="tanh", sizes=None, min_length: int = 8, fill: float = 0.75
):
    """h_k for the four directions of ``DIRECTIONS``, computed in H+W-1 sequential steps.

    Args:
      params: as made by :func:`init_four` (each entry with a leading axis of 4).
      x: shape (H, W, D) or (*batch, H, W, D).
      activation: phi, as for :func:`jaxrnn.mdrnn.wavefront`.
      sizes: optional (*batch, 2) grid sizes: grid b is the top-left (H_b, W_b) block; each
        direction starts from its corner of that block.

    Returns:
      shape (*batch, H, W, 4, hidden); entry k on the second-last axis is direction k.
    """
    shapes = {k: shape_of(v) for k, v in params.items()} if isinstance(params, dict) else None
    if not shapes or any(len(s) < 1 or s[0] != len(DIRECTIONS) for s in shapes.values()):
        raise ValueError(
            f"params: expected a dict of arrays with a leading axis of 4 (init_four), got "
            f"{shapes if shapes is not None else type(params).__name__}"
        )
    in_dim, _ = cell.validate_params(jax.tree_util.tree_map(lambda a: a[0], params))
    batch, height, width = cell.check_grid(x, in_dim)
    check_grouping(min_length, fill)
    phi = resolve_activation(activation)
    mask = jnp.ones((*batch, height, width), bool)
    if sizes is not None:
        check_sizes_arg(sizes, batch, height, width)
        mask = size_mask(sizes, height, width)
    n = len(batch)
    xs = jnp.stack([_flip(jnp.asarray(x), r, c, n) for r, c in DIRECTIONS])
    masks = jnp.stack([_flip(mask, r, c, n) for r, c in DIRECTIONS])
    run = lambda p, a, m: masked_wavefront(p, a, m, phi, min_length=min_length, fill=fill)
    hs = jax.vmap(run)(params, xs, masks)
    outs = [_flip(hs[k], r, c, n) for k, (r, c) in enumerate(DIRECTIONS)]
    return jnp.stack(outs, axis=-2)
