"""What a fast layer does around its kernel: checks, one flat batch axis, masks, reversal.

A fast layer (:func:`jaxrnn.gru_layer`) runs a kernel on ``(T, N, D)`` inputs with one batch
axis of N = prod(batch) sequences and an optional boolean mask ``m[t, n] = t < L_n``. This
module turns ``xs`` (T, *batch, D) and ``lengths`` (*batch,) into that form and the
kernel's outputs back, with ``jaxrnn.scan``'s meaning of ``lengths`` and ``reverse``:

    padding steps (t >= L_n) see zeros (so NaN padding reaches neither outputs nor
    gradients), keep the carry and output zeros; with ``reverse`` each sequence's first
    L_n steps are reversed before the kernel and its outputs are reversed back.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_lengths, dtype_of, is_int, shape_of


class FlatBatch(NamedTuple):
    """Sequences as the kernel takes them.

    Attributes:
      xs: (T, N, D) in the layer's dtype, padding steps zero.
      mask: None (every step active) or boolean (T, N, 1), ``mask[t, n] = t < L_n``.
      lengths: None or (N,) integer lengths, clipped to [0, T].
      batch: the batch shape the N sequences came from.
    """

    xs: object
    mask: object
    lengths: object
    batch: tuple


def check_layer_inputs(params: dict, carries: dict, xs) -> object:
    """Shapes a fast layer needs beyond its cell's checks; returns the params' one dtype.

    ``xs`` must be (T, *batch, D) and every carry leaf (named in ``carries``) must have the
    batch shape of ``xs``; the params must all have one floating dtype.
    """
    xs_shape = shape_of(xs)
    if len(xs_shape) < 2:
        raise ValueError(f"xs: expected shape (T, *batch, D), got {xs_shape}")
    dtypes = {jnp.dtype(dtype_of(v)) for v in params.values()}
    if len(dtypes) != 1:
        raise ValueError(f"params: expected one floating dtype for all entries, got {dtypes}")
    batch = xs_shape[1:-1]
    for name, leaf in carries.items():
        if shape_of(leaf)[:-1] != batch:
            raise ValueError(
                f"{name}: expected shape {batch + shape_of(leaf)[-1:]} (the batch shape of xs "
                f"{xs_shape}), got {shape_of(leaf)}"
            )
    return dtypes.pop()


def check_choices(choices, kind: type, positive: tuple[str, ...]):
    """``choices`` must be a ``kind`` whose fields ``positive`` are positive integers."""
    if not isinstance(choices, kind):
        public = kind.__module__.rsplit(".", 1)[0]  # the package that exports it
        raise ValueError(f"choices: expected a {public}.{kind.__name__}, got {choices!r}")
    for name in positive:
        value = getattr(choices, name)
        if not is_int(value) or value < 1:
            raise ValueError(f"choices.{name}: expected a positive integer, got {value!r}")


def check_reverse(reverse) -> None:
    if not isinstance(reverse, (bool, np.bool_)):
        raise ValueError(f"reverse: expected True or False, got {reverse!r}")


def reverse_within_lengths(a, lengths):
    """``a`` (T, N, ...) with each sequence's first ``lengths[n]`` steps in reverse order.

    ``out[t, n] = a[L_n - 1 - t, n]`` for ``t < L_n`` and ``a[t, n]`` (padding stays put)
    otherwise, ``L_n = lengths[n]`` (T for every n if ``lengths`` is None). The map is its
    own inverse, and a permutation: its gradient is the same reordering, exactly.
    """
    if lengths is None:
        return a[::-1]
    t = jnp.arange(a.shape[0])[:, None]
    source = jnp.where(t < lengths, lengths - 1 - t, t)
    return jnp.take_along_axis(a, source.reshape(source.shape + (1,) * (a.ndim - 2)), axis=0)


def flatten(xs, lengths, dtype, *, reverse: bool, checkify_lengths: bool = False) -> FlatBatch:
    """``xs`` (T, *batch, D) and ``lengths`` -> a :class:`FlatBatch` ready for the kernel.

    ``lengths`` (checked here) may cover only the leading batch axes, as in ``jaxrnn.scan``;
    under ``jit`` a value outside [0, T] cannot be rejected and acts as the nearest bound,
    unless ``checkify_lengths`` makes the check a ``checkify.check`` (see ``jaxrnn.scan``).
    """
    xs_shape = shape_of(xs)
    n_steps, batch, in_dim = xs_shape[0], xs_shape[1:-1], xs_shape[-1]
    if lengths is not None:
        lengths = check_lengths(lengths, xs, n_steps, checkify_values=checkify_lengths)
    n_seq = math.prod(batch)
    xs_flat = jnp.asarray(xs, dtype).reshape(n_steps, n_seq, in_dim)
    mask = flat_lengths = None
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        lengths = lengths.reshape(lengths.shape + (1,) * (len(batch) - lengths.ndim))
        flat_lengths = jnp.clip(jnp.broadcast_to(lengths, batch).reshape(n_seq), 0, n_steps)
        mask = (jnp.arange(n_steps)[:, None] < flat_lengths)[..., None]
        xs_flat = jnp.where(mask, xs_flat, 0)
    if reverse:  # steps t < L_n stay at t < L_n, so the mask needs no reordering
        xs_flat = reverse_within_lengths(xs_flat, flat_lengths)
    return FlatBatch(xs_flat, mask, flat_lengths, tuple(batch))


def unflatten_outputs(ys, flat: FlatBatch, *, reverse: bool):
    """The kernel's per-step outputs (T, N, H) -> (T, *batch, H), zero past each length."""
    if flat.mask is not None:
        ys = jnp.where(flat.mask, ys, 0)
    if reverse:
        ys = reverse_within_lengths(ys, flat.lengths)
    return ys.reshape(ys.shape[0], *flat.batch, ys.shape[-1])
