"""An associative scan whose time axis is split over the devices of a 1-D mesh.

Every parallel-in-time solver here is one ``jax.lax.associative_scan`` over T elements
combined by an associative operator (affine maps for linear recurrences, Kalman filter
elements for damped Newton). With a ``mesh`` of P devices the T axis is cut into P chunks
of T / P steps (SPEC §13):

1. each device scans its own chunk: prefixes e_{c,1}, e_{c,1} . e_{c,2}, ... and the
   chunk's composed element E_c (its last prefix);
2. the P composed elements are gathered on every device (P small arrays, one
   ``all_gather``) and scanned there: device c reads E_1 . ... . E_{c-1}, the composition of
   every chunk before its own;
3. each device combines that with each of its prefixes: the corrected prefixes are the
   prefixes of the whole sequence (or only what the solver reads of them: the states of a
   linear recurrence are A_prefix h_in + b_prefix, one matrix-vector product per step).

Step 1 is the bulk of the work and runs on all devices at once; step 2 is P elements;
step 3 is one more combine per step. Written with ``jax.shard_map``, so it runs unchanged
on CPU devices, GPUs or TPUs, and inside ``jit``, ``vmap`` and ``grad``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

try:
    from jax import shard_map
except ImportError:  # JAX releases before jax.shard_map was public
    from jax.experimental.shard_map import shard_map


def check_time_mesh(mesh) -> str:
    """The name of the mesh's single axis (raises ``ValueError`` unless a 1-D Mesh)."""
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
        raise ValueError(
            f"mesh: expected None or a 1-D jax.sharding.Mesh to split the time axis over "
            f"(e.g. jaxrnn.sharding.data_mesh()), got {mesh!r}"
        )
    return mesh.axis_names[0]


def _pad_time(tree, n_steps: int, multiple: int):
    """Append zero elements so that T is a multiple of ``multiple``."""
    extra = -n_steps % multiple
    if not extra:
        return tree
    return jax.tree_util.tree_map(
        lambda leaf: jnp.concatenate([leaf, jnp.zeros((extra, *leaf.shape[1:]), leaf.dtype)]),
        tree,
    )


def split_associative_scan(combine, elems, mesh, *, reverse: bool = False, read=None):
    """``jax.lax.associative_scan(combine, elems, reverse=reverse)`` with T split over ``mesh``.

    Args:
      combine: the associative operator, ``combine(earlier, later)`` in the order the scan
        meets the elements (as for ``lax.associative_scan``); it must broadcast an element
        without the time axis against a chunk of them.
      elems: a pytree of arrays with leading axis T.
      mesh: a 1-D ``jax.sharding.Mesh``. T need not divide evenly: the last chunk is
        padded with all-zero elements after step T. Forward, nothing reads them; in reverse
        the scan meets them first, so the caller's elements must not mind a zero element
        before them (an affine map does not: (A, b) o (0, 0) = (0, b) has the same offset).
      reverse: scan from step T down to 1.
      read: ``read(incoming, prefixes)``, what to return from each chunk's prefixes and the
        composition of the chunks before it (default ``combine``: the prefixes of the whole
        sequence). The first chunk has none: it gets the all-zero element, which suits
        solvers that read offsets (affine maps: A 0 + b = b) and a cheaper ``read`` saves
        work (the states of affine maps are A_prefix b_incoming + b_prefix, a matrix-vector
        product where ``combine`` multiplies matrices).

    Returns:
      ``read(incoming, prefixes)`` (by default the inclusive prefixes, suffixes when
      ``reverse``), with leading axis T.
    """
    axis = check_time_mesh(mesh)
    read = combine if read is None else read
    n_devices = mesh.devices.size
    n_steps = jax.tree_util.tree_leaves(elems)[0].shape[0]
    chunk_spec = PartitionSpec(axis)

    def scan_chunk(chunk):
        prefixes = jax.lax.associative_scan(combine, chunk, reverse=reverse)
        composed = jax.tree_util.tree_map(lambda x: x[0] if reverse else x[-1], prefixes)
        every = jax.tree_util.tree_map(lambda x: jax.lax.all_gather(x, axis), composed)
        running = jax.lax.associative_scan(combine, every, reverse=reverse)
        index = jax.lax.axis_index(axis)
        before = index + 1 if reverse else index - 1
        has_before = (index < n_devices - 1) if reverse else (index > 0)
        incoming = jax.tree_util.tree_map(
            lambda x: jnp.where(has_before, x[jnp.clip(before, 0, n_devices - 1)], 0), running
        )
        return read(incoming, prefixes)

    padded = _pad_time(elems, n_steps, n_devices)
    out = shard_map(scan_chunk, mesh=mesh, in_specs=(chunk_spec,), out_specs=chunk_spec)(padded)
    return jax.tree_util.tree_map(lambda x: x[:n_steps], out)
