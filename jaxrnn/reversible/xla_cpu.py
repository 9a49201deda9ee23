"""XLA:CPU tuning of the exact steps: one loop per step, and loop words kept in place.

Everything here changes how XLA compiles the steps, never what they compute.

- :func:`one_pass`. XLA:CPU emits one loop per output of an elementwise fusion (it has no
  multi-output loop fusion), so the five words and the float parameters an exact step
  writes would each recompute the step's arithmetic in a loop of their own, reading its
  inputs again. A variadic ``lax.reduce`` is the one operation whose fused loop writes
  several outputs: OR-reducing each output (as unsigned integers of its width), padded
  with a zero along a new trailing axis of size 2, computes every output of an element in
  one loop iteration, its shared subexpressions once. Other backends fuse the outputs
  themselves and take them as they are (``lax.platform_dependent``).
- :func:`scan_unroll`. The outputs of such a loop cannot overwrite its inputs, so a
  ``lax.scan`` carrying the words would copy all of them after every step; two steps per
  iteration alternate between two sets of buffers instead. Large words only: the copies
  cost nothing on small ones, and unrolling doubles the compile time of the step.
- :func:`jit`. Copy insertion with region analysis keeps the remaining loop-carried words
  in place. Compiler options apply to top-level jits only, so a call traced inside a user's
  ``jit`` (or ``eval_shape``, ``shard_map``...) uses the plain compilation.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

CPU_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}
UNROLL_MIN_WORDS = 1 << 16  # parameters from which two steps per loop iteration pay


def one_pass(kernel, *arrays) -> list:
    """``kernel(*arrays)``, a list of same-shaped elementwise results, computed in one loop.

    ``kernel`` maps arrays of one shape (and scalars it closes over) elementwise to a list
    of arrays of that shape.
    """
    return lax.platform_dependent(
        *arrays, cpu=functools.partial(_variadic_reduce, kernel), default=kernel
    )


def _variadic_reduce(kernel, *arrays) -> list:
    # Each output as unsigned integers of its width (floats bitcast, so that every bit,
    # the sign of zero included, passes unchanged), OR-reduced with a padding 0.
    outs = kernel(*arrays)
    words = [_as_bits(o) for o in outs]
    padded = [jnp.stack([jnp.ravel(w), jnp.zeros(w.size, w.dtype)], axis=1) for w in words]
    zeros = [jnp.zeros((), w.dtype) for w in words]
    ors = lax.reduce(padded, zeros, lambda a, b: [x | y for x, y in zip(a, b, strict=True)], (1,))
    return [_from_bits(w.reshape(o.shape), o.dtype) for w, o in zip(ors, outs, strict=True)]


def _as_bits(x):
    if jnp.issubdtype(x.dtype, jnp.unsignedinteger):
        return x
    return lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))


def _from_bits(bits, dtype):
    return bits if bits.dtype == dtype else lax.bitcast_convert_type(bits, dtype)


def scan_unroll(shapes) -> int:
    """Steps per ``lax.scan`` iteration for words of these shapes: 2 on CPU when large."""
    size = sum(math.prod(s) for s in shapes)
    return 2 if jax.default_backend() == "cpu" and size >= UNROLL_MIN_WORDS else 1


def jit(fun, *, static_argnames):
    """``jax.jit(fun)``, compiled with :data:`CPU_OPTIONS` when called at top level on CPU."""
    plain = jax.jit(fun, static_argnames=static_argnames)
    tuned = jax.jit(fun, static_argnames=static_argnames, compiler_options=CPU_OPTIONS)

    @functools.wraps(fun)
    def call(*args, **kwargs):
        use = tuned if _at_top_level(args, kwargs) and _options_supported() else plain
        return use(*args, **kwargs)

    call.lower = plain.lower
    return call


def _at_top_level(args, kwargs) -> bool:
    """True when on CPU, no argument is a tracer and no ``jit``-like trace is under way.

    Under any staging trace (jit, eval_shape, shard_map, a scan's body) every operation
    yields a tracer, also one on constants; grad and vmap of concrete values do not stage.
    """
    if jax.default_backend() != "cpu" or isinstance(lax.full((), 0), jax.core.Tracer):
        return False
    leaves = jax.tree_util.tree_leaves((args, kwargs))
    return not any(isinstance(x, jax.core.Tracer) for x in leaves)


@functools.lru_cache(maxsize=1)
def _options_supported() -> bool:
    """Whether this XLA knows :data:`CPU_OPTIONS` (else the default compilation is used)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(1.0).compile()
    except Exception:  # noqa: BLE001 - any failure means: do not use the options
        return False
    return True
