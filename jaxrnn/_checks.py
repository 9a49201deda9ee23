"""Input validation shared by the public functions.

Every check runs at trace time on shapes and dtypes (never on traced values) and raises
``ValueError`` naming the argument, what was expected and what came, so that a user's
mistake never surfaces as an XLA traceback.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np


def shape_of(x) -> tuple[int, ...]:
    """The shape of an array-like (arrays, tracers, Python scalars, nested lists)."""
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else np.shape(x)


def dtype_of(x):
    """The dtype JAX would give ``x``; NumPy's where JAX refuses (strings, huge ints)."""
    dtype = getattr(x, "dtype", None)
    if dtype is not None:
        return dtype
    if isinstance(x, (str, bytes)):
        return np.asarray(x).dtype
    try:
        return jnp.asarray(x).dtype
    except (TypeError, ValueError, OverflowError):
        return np.asarray(x).dtype


def is_real(dtype) -> bool:
    """Integer or floating (not bool, not complex)."""
    return bool(jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating))


def is_concrete(x) -> bool:
    """True when the values of ``x`` are known at trace time (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def check_params(params, expected: Mapping[str, tuple[int, ...]], *, name: str = "params"):
    """Check that ``params`` is a dict with exactly the ``expected`` names and shapes.

    Raises ``ValueError`` for a non-mapping, a missing or unexpected entry, a wrong shape
    or a non-floating dtype.
    """
    if not isinstance(params, Mapping):
        raise ValueError(
            f"{name}: expected a dict of arrays with entries {sorted(expected)}, "
            f"got {type(params).__name__}"
        )
    missing = [k for k in expected if k not in params]
    if missing:
        raise ValueError(f"{name}: missing entries {missing}; expected {sorted(expected)}")
    extra = [k for k in params if k not in expected]
    if extra:
        raise ValueError(f"{name}: unexpected entries {extra}; expected {sorted(expected)}")
    for key, shape in expected.items():
        got = shape_of(params[key])
        if got != tuple(shape):
            raise ValueError(f"{name}[{key!r}]: expected shape {tuple(shape)}, got {got}")
        if not jnp.issubdtype(dtype_of(params[key]), jnp.floating):
            raise ValueError(
                f"{name}[{key!r}]: expected a floating dtype, got {dtype_of(params[key])}"
            )


def check_matrix(params, key: str, *, name: str = "params") -> tuple[int, int]:
    """Return the shape of the 2-D entry ``params[key]``, which defines a cell's sizes."""
    if not isinstance(params, Mapping) or key not in params:
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"{name}: expected a dict with a 2-D entry {key!r}, got {got}")
    shape = shape_of(params[key])
    if len(shape) != 2:
        raise ValueError(f"{name}[{key!r}]: expected a 2-D array, got shape {shape}")
    return shape


def check_last_dim(x, size: int, *, name: str):
    """Check that ``x`` has at least one axis and that its last axis has ``size`` entries."""
    shape = shape_of(x)
    if len(shape) < 1 or shape[-1] != size:
        raise ValueError(f"{name}: expected shape (*batch, {size}), got {shape}")
    if not is_real(dtype_of(x)):
        raise ValueError(f"{name}: expected real numbers (integer or floating), got {dtype_of(x)}")


def check_batches_broadcast(arrays: Mapping[str, object], *, feature_axis: bool = True):
    """Check that the batch shapes (all axes but the last) of the named arrays broadcast.

    A cell's carry and input must describe the same batch: (B, H) with (B, D), or an
    unbatched carry (H,) shared by every sequence of x (B, D). With ``feature_axis=False``
    every axis is a batch axis (the univariate cells): the whole shapes must broadcast.
    """
    drop = 1 if feature_axis else 0
    try:
        np.broadcast_shapes(
            *(shape_of(value)[: len(shape_of(value)) - drop] for value in arrays.values())
        )
    except ValueError:
        got = ", ".join(f"{name} of shape {shape_of(value)}" for name, value in arrays.items())
        expected = "the same batch shape (*batch, ...)" if feature_axis else "the batch shape of x"
        raise ValueError(
            f"{', '.join(arrays)}: expected {expected} (or shapes that broadcast), got {got}"
        ) from None


def describe(value) -> str:
    """How an error message names what came: an array's shape and dtype, else its type."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def check_key(key, *, name: str = "key"):
    """A typed key (shape ()) or a raw uint32 key (shape (2,)), as ``jax.random`` makes."""
    shape, dtype = getattr(key, "shape", None), getattr(key, "dtype", None)
    shape = tuple(shape) if shape is not None else None
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and shape == ()
    raw = dtype == jnp.uint32 and shape == (2,)
    if not (typed or raw):
        raise ValueError(
            f"{name}: expected one jax.random key (jax.random.key(0) or PRNGKey(0)), got "
            f"{describe(key)}"
        )


def is_int(value) -> bool:
    """A Python or NumPy integer, and not a bool (which Python counts as an int)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
    """A real Python or NumPy number (integer or floating), and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_positive_int(value, *, name: str):
    if not is_int(value) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def batch_shape_tuple(batch_shape, *, name: str = "batch_shape") -> tuple[int, ...]:
    """Normalise an int or a sequence of ints to a shape tuple."""
    if isinstance(batch_shape, (int, np.integer)) and not isinstance(batch_shape, bool):
        batch_shape = (batch_shape,)
    try:
        shape = tuple(int(d) for d in batch_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}: expected an int or a tuple of ints, got {batch_shape!r}"
        ) from None
    if any(d < 0 for d in shape):
        raise ValueError(f"{name}: expected non-negative sizes, got {shape}")
    return shape


def check_lengths(lengths, xs, n_steps: int, *, checkify_values: bool = False):
    """Validate ``lengths``: integer, shape = the batch shape of ``xs``, values in [0, T].

    Values are checked at trace time when they are known. Traced values (under ``jit``)
    cannot be; with ``checkify_values`` their range becomes a ``checkify.check``, which
    ``jax.experimental.checkify.checkify`` turns into an error value (and which JAX refuses
    to stage without it, saying so). Returns ``lengths`` (the checked one when checkified).
    """
    if not isinstance(checkify_values, (bool, np.bool_)):
        raise ValueError(f"checkify_lengths: expected True or False, got {checkify_values!r}")
    shape = shape_of(lengths)
    if not jnp.issubdtype(dtype_of(lengths), jnp.integer):
        raise ValueError(f"lengths: expected an integer dtype, got {dtype_of(lengths)}")
    for leaf in jax.tree_util.tree_leaves(xs):
        batch = shape_of(leaf)[1 : 1 + len(shape)]
        if batch != shape:
            raise ValueError(
                f"lengths: expected the batch shape of xs, {batch} (xs leaf of shape "
                f"{shape_of(leaf)}), got {shape}"
            )
    message = f"lengths: expected values in [0, T] = [0, {n_steps}], got min {{}} and max {{}}"
    if is_concrete(lengths):
        values = np.asarray(lengths)
        if values.size and (values.min() < 0 or values.max() > n_steps):
            raise ValueError(message.format(values.min(), values.max()))
    elif checkify_values and math.prod(shape) > 0:
        from jax.experimental import checkify

        lengths = jnp.asarray(lengths)
        within = jnp.all((lengths >= 0) & (lengths <= n_steps))
        checkify.check(within, message, jnp.min(lengths), jnp.max(lengths))
    return lengths
