"""A batch of grids run a few at a time, so that a chunk's cells stay in cache.

A wavefront step works on one anti-diagonal of every grid of the batch at once, and over
the H+W-1 steps it reads each cell's inputs once and writes each cell's state once. With a
large batch those arrays outgrow the caches and each step waits on memory; run a few
grids at a time (``lax.map`` over chunks of the batch) and they stay close. Measured on a
2-core x86_64 CPU (1 MiB of second-level cache per core, hidden = 32, float32, batch 8,
medians of 21 interleaved rounds; "split" = batch over both cores' devices):

    G = 128, forward: chunks of 1: 19.2 ms split, 25.9 one device; of 2: 23.3, 25.3;
                      the whole batch on one device: 33–38 ms
    G = 64:  chunks of 1, 2, 4 (= the whole batch per core): 5.9, 5.2, 5.3 ms split;
             one device: 6.8, 6.2, 5.6 ms
    G = 32:  chunks of 2, 4, 8: 2.4, 2.1, 2.0 ms split; one device 2.1, 2.0, 1.6 ms

which :func:`chunk_size` follows: the most grids whose per-cell inputs fit
:data:`CHUNK_BYTES` (2 MiB: one grid of 128 x 128 x 32 float32 numbers). The backward pass
reads twice as many numbers per cell (dL/dh and the activation's slope), so its chunks are
half as large. ``bench/mdrnn.py`` measures the result against the rasters.

Chunks run one after the other, so a batch of n chunks takes n (H+W-1) sequential steps
(``mdrnn.sequential_steps`` counts them). That pays on a CPU only: on other backends
:func:`default_chunk` keeps the whole batch in one wavefront.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

CHUNK_BYTES = 2 * 1024 * 1024  # the second-level caches of the 2-core machine measured


def chunk_size(height: int, width: int, per_cell: int, dtype) -> int:
    """Grids per wavefront: the most whose H·W·per_cell numbers fit CHUNK_BYTES (>= 1)."""
    grid = height * width * per_cell * np.dtype(dtype).itemsize
    return max(1, CHUNK_BYTES // max(grid, 1))


def default_chunk(grid_shape: tuple, per_cell: int, dtype) -> int:
    """:func:`chunk_size` on a CPU, else the whole batch; ``grid_shape`` (*batch, H, W)."""
    *batch, height, width = grid_shape
    if jax.default_backend() == "cpu":
        return chunk_size(height, width, per_cell, dtype)
    return max(1, math.prod(batch))


def over_grid_chunks(fn, chunk: int, *grids):
    """``fn(*grids)`` for grids (*batch, H, W, ...), computed ``chunk`` grids at a time.

    Equal to ``fn(*grids)`` when ``fn`` treats the grids independently: the batch (the
    leading axes of the first array before its last three, flattened) is zero-padded to a
    multiple of ``chunk``, split, run chunk after chunk by ``lax.map``, and the padding cut
    from the output, an array (*batch, H, W, ...).
    """
    batch = grids[0].shape[:-3]
    n_grids = math.prod(batch)
    if not batch or n_grids <= chunk:
        return fn(*grids)
    n_chunks = -(-n_grids // chunk)
    extra = n_chunks * chunk - n_grids

    def split(a):
        a = a.reshape((n_grids, *a.shape[len(batch) :]))
        a = jnp.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1)) if extra else a
        return a.reshape((n_chunks, chunk, *a.shape[1:]))

    out = jax.lax.map(lambda parts: fn(*parts), tuple(split(a) for a in grids))
    return out.reshape((n_chunks * chunk, *out.shape[2:]))[:n_grids].reshape(
        (*batch, *out.shape[2:])
    )
