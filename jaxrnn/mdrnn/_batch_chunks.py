"""A batch of grids run a few at a time: the wavefront's per-step arrays kept small.

A wavefront step works on one anti-diagonal of every grid of the batch at once: arrays of
about L·B·hidden numbers (L = min(H, W), the longest diagonal). While they fit in a
core's first-level cache, a larger batch costs proportionally more; past it, each step
waits on memory. Measured on a 2-core x86_64 CPU (G = 128, hidden = 32, float32, batch 8,
one device): 33–38 ms for the whole batch in one wavefront, 22–25 ms for four wavefronts
of two grids run one after the other by ``lax.map``; at G ≤ 64 the whole batch is as fast
as any split. :func:`chunk_size` splits the batch so that one diagonal of a chunk holds
about :data:`DIAGONAL_BYTES`; ``bench/mdrnn.py`` measures the result against the rasters.

Chunks run one after the other, so a batch of n chunks takes n (H+W-1) sequential steps
(``mdrnn.sequential_steps`` counts them). That pays on a CPU only: on other backends
:func:`default_chunk` keeps the whole batch in one wavefront.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

DIAGONAL_BYTES = 32 * 1024  # a first-level data cache of one core


def chunk_size(height: int, width: int, hidden: int, dtype) -> int:
    """Grids per wavefront: the most whose longest diagonal fits in DIAGONAL_BYTES (>= 1)."""
    diagonal = min(height, width) * hidden * np.dtype(dtype).itemsize
    return max(1, DIAGONAL_BYTES // max(diagonal, 1))


def default_chunk(grid_shape: tuple, hidden: int, dtype) -> int:
    """:func:`chunk_size` on a CPU, else the whole batch; ``grid_shape`` (*batch, H, W)."""
    *batch, height, width = grid_shape
    if jax.default_backend() == "cpu":
        return chunk_size(height, width, hidden, dtype)
    return max(1, math.prod(batch))


def over_chunks(fn, chunk: int, *arrays):
    """``fn(*arrays)`` computed ``chunk`` rows of the leading (batch) axis at a time.

    Equal to ``fn(*arrays)`` when ``fn`` treats the rows independently: the batch is
    zero-padded to a multiple of ``chunk``, split, run chunk after chunk by ``lax.map``,
    and the padding cut from the outputs (a pytree of arrays with the batch axis first).
    """
    n_rows = arrays[0].shape[0]
    if n_rows <= chunk:
        return fn(*arrays)
    n_chunks = -(-n_rows // chunk)
    extra = n_chunks * chunk - n_rows

    def split(a):
        a = jnp.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1)) if extra else a
        return a.reshape((n_chunks, chunk, *a.shape[1:]))

    outputs = jax.lax.map(lambda parts: fn(*parts), tuple(split(a) for a in arrays))
    return jax.tree.map(lambda o: o.reshape((n_chunks * chunk, *o.shape[2:]))[:n_rows], outputs)
