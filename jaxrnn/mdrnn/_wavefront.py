"""The anti-diagonal wavefront: an H x W grid in H+W-1 sequential steps (SPEC §6).

Cell (i, j) needs only h(i-1, j) and h(i, j-1), both on the anti-diagonal i + j = d - 1,
so all cells of diagonal d can be computed together once diagonal d - 1 is known.
Reference loop::

    h = zeros((H, W, hidden))
    for d in range(H + W - 1):                        # sequential
        for i in range(max(0, d - W + 1), min(d, H - 1) + 1):   # together, one matmul
            j = d - i
            west = h[i - 1, j] if i > 0 else 0
            north = h[i, j - 1] if j > 0 else 0
            h[i, j] = phi(W_in.T @ x[i, j] + W_W.T @ west + W_N.T @ north)

How it is made fast: W_in^T x is computed for every cell by one matmul before the loop;
only valid cells are computed (a skewed square grid would double the work with padding):
diagonals of similar length are grouped into a few ``lax.scan`` s of static shape, so the
total number of sequential steps stays H+W-1; each step does one matmul of the stacked
neighbours [h(i-1,j), h(i,j-1)] with [W_W; W_N]. The previous diagonal is carried by
position along the diagonal; its neighbours are two static slices of it (the diagonal's
first row is 0 while d < W, and moves down by one row per step afterwards).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell_pieces import resolve_activation
from jaxrnn._checks import check_positive_int, dtype_of, is_concrete, is_number, shape_of
from jaxrnn._varying import sum_like, vary_like
from jaxrnn.mdrnn import cell
from jaxrnn.mdrnn._batch_chunks import default_chunk, over_grid_chunks


@dataclass(frozen=True)
class Group:
    """Diagonals ``first, ..., first + count - 1``, each padded to ``length`` cells.

    ``shifted``: the first row of each of these diagonals is one below the previous
    diagonal's (d >= W), so cell k's neighbours are entries k and k + 1 of the previous
    diagonal instead of k - 1 and k.
    """

    first: int
    count: int
    length: int
    shifted: bool


def diagonal_rows(d: int, height: int, width: int) -> tuple[int, int]:
    """First and last row of anti-diagonal d (the cells (i, d - i) inside the grid)."""
    return max(0, d - width + 1), min(d, height - 1)


def plan(height: int, width: int, *, min_length: int = 8, fill: float = 0.75) -> list[Group]:
    """Group the H+W-1 diagonals into scans of static shape.

    Consecutive diagonals share a group while the shortest is at least ``fill`` times the
    longest (or the longest has at most ``min_length`` cells), and the neighbour pattern
    (``shifted``) is the same. ``fill`` bounds the work spent on padding.
    """
    groups: list[Group] = []
    for d in range(height + width - 1):
        lo, hi = diagonal_rows(d, height, width)
        n, shifted = hi - lo + 1, d >= width
        if groups:
            last = groups[-1]
            lengths = [n] + [
                diagonal_rows(e, height, width)[1] - diagonal_rows(e, height, width)[0] + 1
                for e in (last.first, last.first + last.count - 1)
            ]
            longest, shortest = max(lengths), min(lengths)
            if last.shifted == shifted and (longest <= min_length or shortest >= fill * longest):
                groups[-1] = Group(last.first, last.count + 1, longest, shifted)
                continue
        groups.append(Group(d, 1, n, shifted))
    return groups


def _group_indices(group: Group, height: int, width: int):
    """Flat cell index i*W + j and validity, each (count, length), for a group's diagonals."""
    index = np.zeros((group.count, group.length), np.int32)
    valid = np.zeros((group.count, group.length), bool)
    for t in range(group.count):
        d = group.first + t
        lo, hi = diagonal_rows(d, height, width)
        rows = np.arange(lo, hi + 1)
        index[t, : rows.size] = rows * width + (d - rows)
        valid[t, : rows.size] = True
    return index, valid


def _resize(state, size: int):
    """Cut or zero-pad the leading axis of every leaf to ``size``."""

    def one(leaf):
        if leaf.shape[0] >= size:
            return leaf[:size]
        return jnp.pad(leaf, [(0, size - leaf.shape[0])] + [(0, 0)] * (leaf.ndim - 1))

    return jax.tree_util.tree_map(one, state)


def select_rows(x, index: np.ndarray):
    """``x[index]`` along axis 0, where ``index == len(x)`` reads a row of zeros.

    Every row of ``x`` must be read at most once (a static, partial permutation), so the
    gradient is a gather too, by the inverse permutation, never a scatter-add (which
    XLA:CPU runs one row at a time).
    """
    n_rows = x.shape[0]
    inverse = np.full(n_rows, len(index), np.int64)
    real = index < n_rows
    if np.unique(index[real]).size != int(real.sum()):
        raise ValueError("index: expected every row to be read at most once")
    inverse[index[real]] = np.flatnonzero(real)

    def with_zero_row(a):
        return jnp.concatenate([a, jnp.zeros_like(a[:1])], axis=0)

    @jax.custom_vjp
    def select(a):
        return jnp.take(with_zero_row(a), index, axis=0)

    def select_fwd(a):
        return select(a), None

    def select_bwd(_, cotangent):
        return (jnp.take(with_zero_row(cotangent), inverse, axis=0),)

    select.defvjp(select_fwd, select_bwd)
    return select(x)


def run_diagonals(
    step,
    projected,
    state_sizes,
    height: int,
    width: int,
    *,
    mask=None,
    mix=None,
    min_length: int = 8,
    fill: float = 0.75,
):
    """Run a grid recurrence over anti-diagonals: the engine under every wavefront here.

    Args:
      step: ``step(west, north, projected_cells) -> (state, y)``: the cell on a whole
        diagonal. ``west``/``north`` are the neighbour states (pytrees of (L, *lead, k)
        arrays, zeros outside the grid), ``projected_cells`` (L, *lead, P); with ``mix``
        they are the neighbours' entries of ``mix(previous diagonal)`` instead.
      projected: the hoisted per-cell inputs, shape (H*W, *lead, P), row-major cells.
      state_sizes: pytree of (k, dtype) pairs, one per state array (e.g. h, or (c, h)).
      height, width: the grid.
      mask: optional boolean (H*W, *lead): cells where it is False get state 0 and y 0.
      mix: optional ``mix(state) -> pytree`` applied to the whole previous diagonal (its
        zero padding included) once per step, row by row, e.g. ``h @ [W_W, W_N]``: one
        matmul serves both neighbours, which are then two shifted slices of its result.
      min_length, fill: the grouping of diagonals (:func:`plan`).

    Returns:
      y for every cell, (H*W, *lead, hidden), row-major.
    """
    lead = projected.shape[1:-1]
    n_cells = height * width
    groups = plan(height, width, min_length=min_length, fill=fill)
    # where each group's diagonal slots read their cell (padding slots read a zero row)
    slots = [_group_indices(group, height, width) for group in groups]
    cell_of_slot = np.concatenate([np.where(v, i, n_cells).reshape(-1) for i, v in slots])
    all_cells = select_rows(projected, cell_of_slot)
    keep_all = jnp.asarray(cell_of_slot < n_cells).reshape((-1,) + (1,) * len(lead))
    if mask is not None:
        keep_all = keep_all & select_rows(mask, cell_of_slot)
    is_size = lambda s: isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], int)
    state = jax.tree_util.tree_map(
        lambda s: jnp.zeros((groups[0].length + 2, *lead, s[0]), s[1]),
        state_sizes,
        is_leaf=is_size,
    )
    state = vary_like(state, projected, mask)  # inside jax.shard_map: vary as the inputs do
    outputs, offset = [], 0
    for group in groups:
        size = group.length
        rows = slice(offset, offset + group.count * size)
        cells = all_cells[rows].reshape((group.count, size, *lead, projected.shape[-1]))
        keep = keep_all[rows].reshape((group.count, size, *keep_all.shape[1:]))[..., None]
        offset += group.count * size

        def diagonal(prev, inputs, size=size, shifted=group.shifted):
            cells_d, keep_d = inputs
            first = 1 if shifted else 0
            mixed = prev if mix is None else mix(prev)
            west = jax.tree_util.tree_map(lambda q: q[first : first + size], mixed)
            north = jax.tree_util.tree_map(lambda q: q[first + 1 : first + 1 + size], mixed)
            new, y = step(west, north, cells_d)
            # zero outside the grid, one zero row either side: the next diagonal's neighbours
            pad = lambda a: jnp.pad(jnp.where(keep_d, a, 0), [(1, 1)] + [(0, 0)] * (a.ndim - 1))
            return jax.tree_util.tree_map(pad, new), pad(y)

        state, ys = jax.lax.scan(diagonal, _resize(state, size + 2), (cells, keep))
        outputs.append(ys[:, 1:-1].reshape((group.count * size, *ys.shape[2:])))
    # each cell's output slot (the padding slots are read by no cell)
    slot_of_cell = np.empty(n_cells, np.int64)
    slot_of_cell[cell_of_slot[cell_of_slot < n_cells]] = np.flatnonzero(cell_of_slot < n_cells)
    return select_rows(jnp.concatenate(outputs, axis=0), slot_of_cell)


def check_sizes_arg(sizes, batch: tuple[int, ...], height: int, width: int):
    """``sizes`` (*batch, 2) integer (H_b, W_b) with 0 <= H_b <= H and 0 <= W_b <= W."""
    shape = shape_of(sizes)
    if shape != (*batch, 2):
        raise ValueError(f"sizes: expected shape (*batch, 2) = {(*batch, 2)}, got {shape}")
    if not jnp.issubdtype(dtype_of(sizes), jnp.integer):
        raise ValueError(f"sizes: expected an integer dtype, got {dtype_of(sizes)}")
    if is_concrete(sizes):
        values = np.asarray(sizes).reshape(-1, 2)
        if values.size and (
            values.min() < 0 or values[:, 0].max() > height or values[:, 1].max() > width
        ):
            raise ValueError(
                f"sizes: expected 0 <= H_b <= {height} and 0 <= W_b <= {width}, got "
                f"{values.tolist()}"
            )


def size_mask(sizes, height: int, width: int):
    """Boolean (*batch, H, W): cell (i, j) lies inside its grid of size (H_b, W_b)."""
    sizes = jnp.asarray(sizes)
    rows = jnp.arange(height)[:, None] < sizes[..., 0, None, None]
    cols = jnp.arange(width)[None, :] < sizes[..., 1, None, None]
    return rows & cols


def flatten_grid(a, n_batch: int):
    """(*batch, H, W, k) -> (H*W, B, k), with B the product of the batch dims (1 if none)."""
    shape = a.shape
    batch, (height, width) = shape[:n_batch], shape[n_batch : n_batch + 2]
    flat = a.reshape((int(np.prod(batch, dtype=int)), height * width, *shape[n_batch + 2 :]))
    return jnp.moveaxis(flat, 1, 0)


def unflatten_grid(a, batch: tuple[int, ...], height: int, width: int):
    """(H*W, B, k) -> (*batch, H, W, k)."""
    return jnp.moveaxis(a, 0, 1).reshape((*batch, height, width, a.shape[-1]))


def wavefront(
    params: dict,
    x,
    *,
    activation="tanh",
    sizes=None,
    min_length: int = 8,
    fill: float = 0.75,
    batch_chunk: int | None = None,
):
    """All hidden activations of the grid in H+W-1 sequential steps, one per anti-diagonal.

    Equal to :func:`jaxrnn.mdrnn.raster` (which takes H·W steps).

    Args:
      params: grid-cell params (:func:`jaxrnn.mdrnn.init`).
      x: inputs x(i,j), shape (H, W, D) or (*batch, H, W, D).
      activation: phi, ``"tanh"``, ``"sigmoid"`` or a callable.
      sizes: optional integer (*batch, 2): grid b is the top-left (H_b, W_b) block of
        ``x[b]``; cells outside it are 0, as is h outside any grid, so a batch of grids of
        different sizes runs as one padded batch.
      min_length, fill: how diagonals are grouped into static-shaped scans (:func:`plan`);
        they change the speed, never the result.
      batch_chunk: grids per wavefront: a batch of more runs that many at a time, one
        chunk after the other (``lax.map``), forward and backward, in n_chunks (H+W-1)
        sequential steps. None (default): on a CPU, as many as keep a chunk's cells within
        about 2 MiB (:mod:`jaxrnn.mdrnn._batch_chunks`; at hidden = 32, float32: 1 grid at
        G = 128, 4 at G = 64, 16 at G = 32; the backward pass half as many), elsewhere the
        whole batch. Changes the speed, never the result.

    Returns:
      h, shape (*batch, H, W, hidden).
    """
    in_dim, hidden = cell.validate_params(params)
    batch, height, width = cell.check_grid(x, in_dim)
    check_grouping(min_length, fill)
    if batch_chunk is not None:
        check_positive_int(batch_chunk, name="batch_chunk")
    mask = None
    if sizes is not None:
        check_sizes_arg(sizes, batch, height, width)
        mask = size_mask(sizes, height, width)
    phi = resolve_activation(activation)
    return masked_wavefront(
        params, x, mask, phi, min_length=min_length, fill=fill, batch_chunk=batch_chunk
    )


def check_grouping(min_length, fill) -> None:
    check_positive_int(min_length, name="min_length")
    if not is_number(fill) or not 0.0 < fill <= 1.0:
        raise ValueError(f"fill: expected a number in (0, 1], got {fill!r}")


def masked_wavefront(
    params: dict,
    x,
    mask,
    phi,
    *,
    min_length: int = 8,
    fill: float = 0.75,
    batch_chunk: int | None = None,
):
    """:func:`wavefront` without validation; ``mask`` None or boolean (*batch, H, W).

    Its gradient is a wavefront too (:func:`_grid_wavefront_bwd`), not autodiff of the
    loop: the backward pass keeps no per-step residuals beyond the outputs h.
    """
    dtype = cell.result_dtype(params, x)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
    if mask is None:
        mask = jnp.ones(x.shape[:-1], bool)
    hidden = params["W_in"].shape[1]
    if batch_chunk is None:  # a cell's inputs: hidden numbers forward, 2 hidden backward
        chunks = [default_chunk(x.shape[:-1], n, dtype) for n in (hidden, 2 * hidden)]
    else:
        chunks = [batch_chunk, batch_chunk]
    grouping = (min_length, fill, *chunks)
    return _grid_wavefront(params, jnp.asarray(x, dtype), mask, phi, grouping)


def _run_grid_cell(params, x, mask, phi, min_length, fill):
    """h of every cell of the grid cell's recurrence, one anti-diagonal per step."""
    hidden = params["W_in"].shape[1]
    batch, (height, width) = x.shape[:-3], x.shape[-3:-1]
    projected = flatten_grid(cell.project_input(params, x), len(batch))
    # [W_W, W_N] (hidden, 2 hidden): h @ it gives a cell's terms for both of its neighbours
    side_by_side = jnp.concatenate([params["W_W"], params["W_N"]], axis=1)

    def step(west, north, projected_cells):
        # west = h(i-1, j) @ [W_W, W_N], north = h(i, j-1) @ [W_W, W_N]
        h = phi(projected_cells + west[..., :hidden] + north[..., hidden:])
        return h, h

    hs = run_diagonals(
        step,
        projected,
        (hidden, x.dtype),
        height,
        width,
        mask=flatten_grid(mask[..., None], len(batch))[..., 0],
        mix=lambda h: h @ side_by_side,
        min_length=min_length,
        fill=fill,
    )
    return unflatten_grid(hs, batch, height, width)


def _grid_cell_in_chunks(params, x, mask, phi, grouping):
    min_length, fill, chunk, _ = grouping
    run = lambda x, mask: _run_grid_cell(params, x, mask, phi, min_length, fill)
    return over_grid_chunks(run, chunk, x, mask)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _grid_wavefront(params, x, mask, phi, grouping):
    return _grid_cell_in_chunks(params, x, mask, phi, grouping)


def _grid_wavefront_fwd(params, x, mask, phi, grouping):
    h = _grid_cell_in_chunks(params, x, mask, phi, grouping)
    return h, (params, x, mask, h)


def _neighbours(h):
    """h(i-1, j) and h(i, j-1) for every cell, zero outside the grid: (*batch, H, W, k) each."""
    west = jnp.pad(h, [(0, 0)] * (h.ndim - 3) + [(1, 0), (0, 0), (0, 0)])[..., :-1, :, :]
    north = jnp.pad(h, [(0, 0)] * (h.ndim - 2) + [(1, 0), (0, 0)])[..., :-1, :]
    return west, north


def _grid_wavefront_bwd(phi, grouping, residuals, dh):
    """The adjoint recursion, run as a wavefront on the grid flipped in both directions.

    With z(i,j) the pre-activation and zbar = dL/dz, backprop through the grid cell is

        hbar(i,j) = dL/dh(i,j) + zbar(i+1,j) W_W^T + zbar(i,j+1) W_N^T
        zbar(i,j) = phi'(z(i,j)) * hbar(i,j)            (0 outside the grid and the mask)

    a grid recurrence from the bottom-right corner: flipped, (i+1, j) and (i, j+1) are the
    neighbours h(i-1, j) and h(i, j-1) of the forward cell, so the same engine runs it in
    H+W-1 steps with state zbar (in the forward's chunks of the batch). The weights'
    gradients are then sums over all cells, one matmul each: W_inbar = sum x^T zbar,
    W_Wbar = sum h(i-1,j)^T zbar, W_Nbar = sum h(i,j-1)^T zbar, bbar = sum zbar, and
    xbar = zbar W_in^T.
    """
    params, x, mask, h = residuals
    min_length, fill, _, chunk = grouping
    hidden = params["W_in"].shape[1]
    slope = _activation_slope(phi, h, lambda: project(params, x, *_neighbours(h)))
    # zbar @ [W_W^T, W_N^T]: a cell's terms for both of its (flipped) neighbours
    side_by_side = jnp.concatenate([params["W_W"].T, params["W_N"].T], axis=1)

    def step(west, north, cells_d):
        hbar = cells_d[..., :hidden] + west[..., :hidden] + north[..., hidden:]
        zbar = cells_d[..., hidden:] * hbar
        return zbar, zbar

    def adjoint(dh, slope, mask):
        batch, (height, width) = dh.shape[:-3], dh.shape[-3:-1]
        flip = lambda a: jnp.flip(a, axis=(len(batch), len(batch) + 1))
        zbar = run_diagonals(
            step,
            flatten_grid(flip(jnp.concatenate([dh, slope], axis=-1)), len(batch)),
            (hidden, dh.dtype),
            height,
            width,
            mask=flatten_grid(flip(mask)[..., None], len(batch))[..., 0],
            mix=lambda zbar: zbar @ side_by_side,
            min_length=min_length,
            fill=fill,
        )
        return flip(unflatten_grid(zbar, batch, height, width))

    zbar = over_grid_chunks(adjoint, chunk, dh, slope, mask)
    # sums over cells, one matmul each; W_W meets the pairs (h(i-1,j), zbar(i,j)), i >= 1
    over_cells = lambda a, b: a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])
    grads = {
        "W_in": over_cells(x, zbar),
        "W_W": over_cells(h[..., :-1, :, :], zbar[..., 1:, :, :]),
        "W_N": over_cells(h[..., :, :-1, :], zbar[..., :, 1:, :]),
    }
    if "b" in params:
        grads["b"] = zbar.reshape(-1, hidden).sum(0)
    grads, xbar = sum_like((grads, zbar @ params["W_in"].T), (params, x))
    return grads, xbar, None


_grid_wavefront.defvjp(_grid_wavefront_fwd, _grid_wavefront_bwd)


def project(params, x, west, north):
    """The pre-activation z(i,j) = W_in^T x(i,j) + W_W^T h(i-1,j) + W_N^T h(i,j-1) [+ b]."""
    return cell.project_input(params, x) + west @ params["W_W"] + north @ params["W_N"]


def _activation_slope(phi, h, pre_activation):
    """phi'(z) for every cell: from h = phi(z) for tanh and sigmoid, else from z itself.

    ``pre_activation()`` computes z (only called for other activations, which must act
    elementwise).
    """
    if phi is jnp.tanh:
        return 1 - h * h
    if phi is jax.nn.sigmoid:
        return h * (1 - h)
    z = pre_activation()
    return jax.jvp(phi, (z,), (jnp.ones_like(z),))[1]
