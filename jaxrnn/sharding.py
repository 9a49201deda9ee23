"""Data parallelism with ``jax.sharding``: a 1-D device mesh over the batch axis.

The batch is split across the devices of a :class:`jax.sharding.Mesh` along its batch axis
(``NamedSharding(mesh, P(..., "batch", ...))``), the parameters and optimizer state are
replicated (``NamedSharding(mesh, P())``), and the training step is the same ``jax.jit``
function as on one device: XLA partitions it and sums the gradients across devices. With
a mean over the batch in the loss, N devices compute the single-device loss and gradients
up to the order of floating-point sums.

    mesh = data_mesh()                                    # every device, axis "batch"
    params = replicate(params, mesh)
    xs, ys = shard_batch((xs, ys), mesh, batch_axis=(1, 0))  # xs (T, B, D), ys (B, 1)

On one host with one CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set
before jax is imported) makes 4 CPU devices to try this on. Across hosts, run the same
program in one process per host after ``jax.distributed.initialize(...)``: ``jax.devices()``
and so :func:`data_mesh` then span every host, and each process either computes the same
global batch (``shard_batch``) or only its own rows (``shard_batch(..., process_local=True)``).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrnn._checks import shape_of

AXIS = "batch"


def data_mesh(devices=None, *, axis_name: str = AXIS) -> Mesh:
    """A 1-D mesh named ``axis_name`` over ``devices`` (default: all of ``jax.devices()``).

    Args:
      devices: the devices, in mesh order (default ``jax.devices()``, which spans every
        process after ``jax.distributed.initialize``).
      axis_name: the name of the mesh axis the batch is split along.

    Returns:
      a ``jax.sharding.Mesh`` of shape ``(len(devices),)``.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices: expected at least one device, got none")
    for device in devices:
        if not isinstance(device, jax.Device):
            raise ValueError(f"devices: expected jax.Device objects, got {device!r}")
    if not isinstance(axis_name, str):
        raise ValueError(f"axis_name: expected a string, got {axis_name!r}")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def _check_mesh(mesh) -> str:
    """The name of the mesh's single axis (raises unless ``mesh`` is a 1-D Mesh)."""
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
        raise ValueError(
            f"mesh: expected a 1-D jax.sharding.Mesh (see jaxrnn.sharding.data_mesh), got {mesh!r}"
        )
    return mesh.axis_names[0]


def replicated(mesh) -> NamedSharding:
    """The sharding that puts a full copy of an array on every device of ``mesh``."""
    _check_mesh(mesh)
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree, mesh):
    """Copy every leaf of ``tree`` (params, optimizer state) to every device of ``mesh``.

    Args:
      tree: a pytree of arrays, the same in every process.
      mesh: a 1-D mesh, e.g. from :func:`data_mesh`.

    Returns:
      ``tree`` with each leaf a ``jax.Array`` of the same shape, fully replicated on ``mesh``.
    """
    return jax.device_put(tree, replicated(mesh))


def batch_shardings(batch, mesh, batch_axis=1, *, process_local: bool = False):
    """The ``NamedSharding`` of each leaf of ``batch``, split along its batch axis.

    Args:
      batch: a pytree of arrays (or of ``jax.ShapeDtypeStruct``).
      mesh: a 1-D mesh, e.g. from :func:`data_mesh`.
      batch_axis: the batch axis of every leaf (1 for time-major (T, B, D) data), or a
        pytree prefix of ``batch`` giving one axis per subtree, e.g. ``(1, 0)`` for
        ``(xs (T, B, D), ys (B, 1))``.
      process_local: ``batch`` is this process's part only, to be split over the mesh's
        devices in this process (see :func:`shard_batch`).

    Returns:
      a pytree of ``NamedSharding`` with the structure of ``batch``.
    """
    name = _check_mesh(mesh)
    n_devices = len(mesh.local_devices) if process_local else mesh.devices.size
    try:
        axes = jax.tree_util.tree_map(
            lambda axis, subtree: jax.tree_util.tree_map(lambda _: axis, subtree),
            batch_axis,
            batch,
        )
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"batch_axis: expected an int or a pytree prefix of the batch, got {batch_axis!r} "
            f"({error})"
        ) from None

    def sharding(path, leaf, axis):
        shape = shape_of(leaf)
        where = f"batch{jax.tree_util.keystr(path)}"
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ValueError(f"batch_axis: expected an integer axis for {where}, got {axis!r}")
        if not -len(shape) <= axis < len(shape):
            raise ValueError(
                f"batch_axis: axis {axis} is out of range for {where} of shape {shape}"
            )
        axis = axis % len(shape)
        if shape[axis] % n_devices:
            raise ValueError(
                f"{where}: the batch axis {axis} of shape {shape} has {shape[axis]} entries, "
                f"which does not split evenly over {n_devices} devices"
            )
        spec = [None] * len(shape)
        spec[axis] = name
        return NamedSharding(mesh, PartitionSpec(*spec))

    return jax.tree_util.tree_map_with_path(sharding, batch, axes)


def shard_batch(batch, mesh, batch_axis=1, *, process_local: bool = False):
    """Split every leaf of ``batch`` across the devices of ``mesh`` along its batch axis.

    On one host, or when every process holds the same global batch (as the generators of
    :mod:`jaxrnn.tasks` give, being pure functions of the step), ``batch`` is the global
    batch. With ``process_local=True`` each of P processes passes only its own part (B / P
    rows of the batch axis, in process order) and the global batch is assembled with
    ``jax.make_array_from_process_local_data``: no process holds the whole batch.

    Args: as for :func:`batch_shardings`. Returns: the global ``batch`` placed on the mesh.
    """
    shardings = batch_shardings(batch, mesh, batch_axis, process_local=process_local)
    if not process_local:
        return jax.device_put(batch, shardings)
    return jax.tree_util.tree_map(
        lambda sharding, leaf: jax.make_array_from_process_local_data(sharding, leaf),
        shardings,
        batch,
    )
