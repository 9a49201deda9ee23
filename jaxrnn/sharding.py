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

On one host with one CPU, ``jax.config.update("jax_num_cpu_devices", 4)`` (before JAX
computes anything) makes 4 CPU devices to try this on; with one device per core,
:func:`batch_parallel` runs a recurrence's batch on every core (a step's small matmuls
otherwise run on one core). Across hosts, run the same
program in one process per host after ``jax.distributed.initialize(...)``: ``jax.devices()``
and so :func:`data_mesh` then span every host, and each process either computes the same
global batch (``shard_batch``) or only its own rows (``shard_batch(..., process_local=True)``).
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrnn._checks import is_int, shape_of

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
        if not is_int(axis):
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


def _axes_tree(axes, tree, name: str):
    """Broadcast a vmap-style ``axes`` prefix (int, None or a pytree of them) over ``tree``."""
    try:
        return jax.tree_util.tree_map(
            lambda axis, subtree: jax.tree_util.tree_map(lambda _: axis, subtree),
            axes,
            tree,
            is_leaf=lambda a: a is None,
        )
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{name}: expected None, an int or a pytree prefix of the arguments, got "
            f"{axes!r} ({error})"
        ) from None


def _spec(axis, ndim: int, mesh_axis: str, name: str) -> PartitionSpec:
    if axis is None:
        return PartitionSpec()
    if not is_int(axis):
        raise ValueError(f"{name}: expected None or an integer axis, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for an array of {ndim} axes")
    spec = [None] * ndim
    spec[axis % ndim] = mesh_axis
    return PartitionSpec(*spec)


def batch_parallel(fn, *, in_axes, out_axes, mesh: Mesh | None = None):
    """``fn`` run with its batch split over the devices of ``mesh``, one shard per device.

    Like ``jax.vmap``'s axes: ``in_axes`` says for each positional argument which axis is
    the batch (``None``: the argument, e.g. the parameters, is copied to every device),
    ``out_axes`` the batch axis of each output. Each device runs ``fn`` on its rows of the
    batch, with the same code (``jax.shard_map``); nothing is exchanged between devices,
    except that gradients with respect to the copied arguments are summed over them. So
    ``fn`` must treat the rows of its batch independently (every recurrence over a batch
    of sequences does), and then::

        batch_parallel(fn, in_axes=..., out_axes=...)(*args) == fn(*args)

    up to the order of floating-point sums. Carries made inside ``fn`` (``init_carry``)
    work with every runner of this library.

    On a CPU with several cores, one device per core (``jax.config.update(
    "jax_num_cpu_devices", os.cpu_count())`` before JAX computes anything) makes each core
    run its share of the batch; ``bench/lstm.py`` and ``bench/mdrnn.py`` measure what that
    gives.

    Args:
      fn: ``fn(*args) -> outputs`` (a pytree of arrays).
      in_axes: one entry per positional argument (or one for all): None, an int, or a
        pytree prefix of that argument.
      out_axes: None, an int or a pytree prefix of the outputs. An output with axis None
        must be the same on every device.
      mesh: a 1-D mesh (default: :func:`data_mesh` over every device).

    Returns:
      a jit-compiled function with the signature of ``fn``. The batch size must divide
      evenly over the devices (a ``ValueError`` says which argument does not).
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {fn!r}")
    mesh = data_mesh() if mesh is None else mesh
    axis_name = _check_mesh(mesh)
    n_devices = mesh.devices.size

    def in_specs_for(args):
        per_arg = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        if len(per_arg) != len(args):
            raise ValueError(
                f"in_axes: expected one entry per positional argument ({len(args)}), got "
                f"{len(per_arg)}"
            )
        specs = []
        for index, (axes, arg) in enumerate(zip(per_arg, args, strict=True)):
            tree = _axes_tree(axes, arg, "in_axes")

            def leaf_spec(path, axis, leaf, index=index):
                where = f"args[{index}]{jax.tree_util.keystr(path)}"
                shape = shape_of(leaf)
                spec = _spec(axis, len(shape), axis_name, f"in_axes for {where}")
                if axis is not None and shape[axis] % n_devices:
                    raise ValueError(
                        f"{where}: the batch axis {axis} of shape {shape} has "
                        f"{shape[axis]} entries, which does not split evenly over "
                        f"{n_devices} devices"
                    )
                return spec

            specs.append(
                jax.tree_util.tree_map_with_path(leaf_spec, tree, arg, is_leaf=lambda a: a is None)
            )
        return tuple(specs)

    def out_specs_for(args):
        shapes = jax.eval_shape(fn, *args)
        tree = _axes_tree(out_axes, shapes, "out_axes")
        return jax.tree_util.tree_map(
            lambda axis, leaf: _spec(axis, leaf.ndim, axis_name, "out_axes"),
            tree,
            shapes,
            is_leaf=lambda a: a is None,
        )

    @jax.jit
    @functools.wraps(fn)
    def run(*args):
        # traced once per signature of the arguments: the specs follow their shapes
        mapped = jax.shard_map(
            fn, mesh=mesh, in_specs=in_specs_for(args), out_specs=out_specs_for(args)
        )
        return mapped(*args)

    return run
