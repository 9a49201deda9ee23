"""XLA:CPU tuning of the exact steps: one loop per step, and no copies of the loop's words.

Everything here changes how XLA compiles the steps, never what they compute.

- :func:`one_pass`. XLA:CPU emits one loop per output of an elementwise fusion (it has no
  multi-output loop fusion), so the five words and the float parameters an exact step
  writes would each recompute the step's arithmetic in a loop of their own, reading its
  inputs again. A variadic ``lax.reduce`` is the one operation whose fused loop writes
  several outputs: reducing each output, padded along a new trailing axis of size 2 with
  a value that changes no bit of it (x | 0, max(x, -inf)), computes every output of an
  element in one loop iteration, its shared subexpressions once. Other backends fuse the
  outputs themselves and take them as they are (``lax.platform_dependent``).
- :func:`scan_steps`. The outputs of such a loop cannot overwrite its inputs, so a
  ``lax.scan`` carrying the words would copy all of them after every step; two steps per
  iteration alternate between two sets of buffers instead. A loop started on its caller's
  arrays also copies them all before its first step (it may not overwrite them): the first
  step runs outside the loop, whose outputs the loop then owns. Large words only: the
  copies cost little on small ones, and each step outside the loop adds to compile time.
- :func:`sum_all`, :func:`min_all`. XLA:CPU splits a large reduction into stages and first
  writes out its elementwise input (a write and a read of every entry more); reducing rows
  of :data:`FUSED_ROW` entries first keeps that input inside the loop that reads the words.

Measured on the MLP of ``bench/reversible.py`` at batch 128 (CPU time of ``forward`` over
that of ``optax.sgd(momentum)``, in one run): 1.43 with one step per iteration, 1.24 with
two. The compiler option ``xla_cpu_copy_insertion_use_region_analysis``, used before to
keep loop words in place, changed nothing once the copies were gone (1.29 with it, 1.28
without), so it is not used, nor the test for a top-level call it needed. Per call of
``forward`` on that MLP (10^6 parameters, medians of 31 calls): the fingerprint of the
start words 0.79 -> 0.31 ms, ``failed_step`` 0.59 -> 0.43 ms, and the copy of the words
into the loop (0.97 ms) gone with the first step outside it.

Tried and measured slower on that MLP (update only, ms per step): the outputs as separate
fusions (each recomputing what it needs) 1.84 against 1.10 in one pass, also in a user's
optax loop where they could overwrite their inputs (4.2 against 2.7); the words stacked
in one array written by one fusion 4.6 against 1.1 (XLA splits it). Without arithmetic:
a ``fori_loop`` over blocks updating the words in place by ``dynamic_update_slice`` 2.0-3.0
against 1.2 (it runs on one core); two sets of words in an optax state, chosen by
``lax.cond``, 3.8 against 2.3 (XLA copies both sets).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

UNROLL_MIN_WORDS = 1 << 16  # parameters from which two steps per loop iteration pay
FUSED_ROW = 32  # entries per output of a first reduction stage that XLA:CPU fuses


def one_pass(kernel, *arrays) -> list:
    """``kernel(*arrays)``, a list of same-shaped elementwise results, computed in one loop.

    ``kernel`` maps arrays (and scalars it closes over) elementwise to a list of arrays of
    one shape.
    """
    return lax.platform_dependent(
        *arrays, cpu=functools.partial(_variadic_reduce, kernel), default=kernel
    )


def scan_unroll(shapes) -> int:
    """Steps per ``lax.scan`` iteration for words of these shapes: 2 on CPU when large."""
    size = sum(math.prod(s) for s in shapes)
    return 2 if jax.default_backend() == "cpu" and size >= UNROLL_MIN_WORDS else 1


def scan_steps(body, carry, xs, shapes, *, reverse: bool = False):
    """``lax.scan(body, carry, xs, reverse=reverse)`` over steps of words of these shapes.

    ``xs`` a pytree of arrays (T, ...); returns (carry, ys) with ys (T, ...), as ``lax.scan``.

    For large words on CPU (:func:`scan_unroll`), two steps per loop iteration and the first
    step (the last one with ``reverse``) outside the loop; the same results either way.
    """
    unroll = scan_unroll(shapes)
    if unroll == 1 or jax.tree.leaves(xs)[0].shape[0] < 2:
        return lax.scan(body, carry, xs, reverse=reverse, unroll=unroll)
    first, rest = (-1, slice(None, -1)) if reverse else (0, slice(1, None))
    carry, y = body(carry, jax.tree.map(lambda x: x[first], xs))
    xs = jax.tree.map(lambda x: x[rest], xs)
    carry, ys = lax.scan(body, carry, xs, reverse=reverse, unroll=unroll)
    y = jax.tree.map(lambda a: jnp.expand_dims(a, 0), y)
    return carry, jax.tree.map(lambda *a: jnp.concatenate(a), *((ys, y) if reverse else (y, ys)))


def sum_all(x) -> jax.Array:
    """sum_i x_i over all entries of ``x`` (any shape), a scalar of x's dtype, in one pass.

    Integers wrap as in their dtype (a uint32 sum is taken mod 2^32).
    """
    return _reduce_all(x, lax.add, 0)


def min_all(x) -> jax.Array:
    """min_i x_i over all entries of an integer array ``x`` (any shape), a scalar, in one pass.

    Raises ValueError for a non-integer ``x`` (its identity, the dtype's largest value,
    exists for integers only).
    """
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"x: expected an integer array, got dtype {dtype}")
    return _reduce_all(x, lax.min, jnp.iinfo(dtype).max)


def _reduce_all(x, op, identity):
    identity = jnp.asarray(identity, x.dtype)
    whole = lambda x: lax.reduce(jnp.ravel(x), identity, op, (0,))
    return lax.platform_dependent(x, cpu=functools.partial(_in_rows, op, identity), default=whole)


def _in_rows(op, identity, x):
    # XLA:CPU splits a large reduction into stages and materialises its elementwise input
    # first (a write and a read of every entry); rows of FUSED_ROW entries reduced first
    # keep that input in the fused loop; the barrier stops the two stages merging back.
    flat = jnp.ravel(x)
    flat = jnp.pad(flat, (0, -flat.size % FUSED_ROW), constant_values=identity)
    rows = lax.reduce(flat.reshape(-1, FUSED_ROW), identity, op, (1,))
    return lax.reduce(lax.optimization_barrier(rows), identity, op, (0,))


def _variadic_reduce(kernel, *arrays) -> list:
    outs = kernel(*arrays)
    # Inside shard_map one reduce would give all its outputs the union of their varying
    # axes (and a scan carrying them another type): outputs that vary over other axes go
    # through reduces of their own.
    groups = {}
    for i, o in enumerate(outs):
        groups.setdefault(_axes_key(o), []).append(i)
    reduced = [None] * len(outs)
    for indices in groups.values():
        for i, r in zip(indices, _reduce_padded([outs[i] for i in indices]), strict=True):
            reduced[i] = r
    return reduced


def _axes_key(x):
    """``x``'s type but for shape and dtype: inside shard_map, the axes it varies over."""
    try:
        return jax.typeof(x).update(shape=(), dtype=jnp.dtype(jnp.uint8), weak_type=False)
    except (TypeError, ValueError, AssertionError):  # a JAX without it: one group for all
        return None


def _reduce_padded(outs) -> list:
    pads = [_identity(o.dtype) for o in outs]
    padded = [
        jnp.stack([jnp.ravel(o), jnp.full(o.size, pad, o.dtype)], axis=1)
        for o, pad in zip(outs, pads, strict=True)
    ]
    inits = [jnp.asarray(pad, o.dtype) for o, pad in zip(outs, pads, strict=True)]
    reduced = lax.reduce(padded, inits, _combine, (1,))
    return [r.reshape(o.shape) for r, o in zip(reduced, outs, strict=True)]


def _identity(dtype):
    """The value that leaves every bit of any other one unchanged under :func:`_combine`."""
    return -jnp.inf if jnp.issubdtype(dtype, jnp.floating) else 0


def _combine(a, b):
    # max(x, -inf) is x to the bit (the sign of zero included), NaN stays NaN; x | 0 is x.
    return [
        jnp.maximum(x, y) if jnp.issubdtype(x.dtype, jnp.floating) else x | y
        for x, y in zip(a, b, strict=True)
    ]
