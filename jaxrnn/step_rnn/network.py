"""The scalar step RNN of SPEC §2, run as one scan.

s(t) = step(w1 x(t) + w2 s(t-1) + b),   y(t) = s(t),   step(z) = 1 iff z > 0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import dtype_of, is_concrete, is_real, shape_of
from jaxrnn._scan import scan
from jaxrnn.cells.threshold import step


def _cell(params, s, x):
    w1, w2, b = params
    s = step(w1 * x + w2 * s + b)
    return s, s


@jax.jit
def _run(params, carry, xs):
    return scan(_cell, params, carry, xs)[1]


def check_step_params(params, *, name: str = "params"):
    """``(w1, w2, b)``: three real scalars; returned as a tuple of floating arrays."""
    given = params
    if hasattr(params, "shape"):
        params = list(params) if shape_of(params) == (3,) else None
    if not isinstance(params, (tuple, list)) or len(params) != 3:
        raise ValueError(f"{name}: expected three numbers (w1, w2, b), got {given!r}")
    out = []
    for label, value in zip(("w1", "w2", "b"), params, strict=True):
        if shape_of(value) != () or not is_real(dtype_of(value)):
            raise ValueError(f"{name}: expected {label} to be a real scalar, got {value!r}")
        out.append(value)
    dtype = jnp.result_type(*out, jnp.float32)
    return tuple(jnp.asarray(v, dtype) for v in out)


def run(params, xs, s0=0):
    """Outputs of the step RNN for inputs ``xs``: one ``lax.scan``.

    Reference loop::

        s = s0
        for t in range(T):
            s = 1 if w1 * xs[t] + w2 * s + b > 0 else 0
            ys[t] = s

    Args:
      params: ``(w1, w2, b)``, real scalars.
      xs: inputs of shape (T, *batch), T >= 1: real numbers (bits, or any others).
      s0: the state s(0), 0 or 1, a scalar or of shape (*batch,).

    Returns:
      ys of shape (T, *batch), values 0 and 1, in the floating dtype of the weights.
    """
    params = check_step_params(params)
    dtype = params[0].dtype
    shape = shape_of(xs)
    if len(shape) < 1 or shape[0] < 1:
        raise ValueError(f"xs: expected shape (T, *batch) with T >= 1, got {shape}")
    if not (is_real(dtype_of(xs)) or dtype_of(xs) == np.bool_):
        raise ValueError(f"xs: expected real numbers, got dtype {dtype_of(xs)}")
    s0_shape = shape_of(s0)
    if s0_shape not in ((), shape[1:]):
        raise ValueError(f"s0: expected a scalar or shape {shape[1:]} (the batch), got {s0_shape}")
    if is_concrete(s0) and not np.isin(np.asarray(s0), (0, 1)).all():
        raise ValueError(f"s0: expected 0 or 1, got {s0!r}")
    carry = jnp.broadcast_to(jnp.asarray(s0, dtype), shape[1:])
    return _run(params, carry, jnp.asarray(xs, dtype))
