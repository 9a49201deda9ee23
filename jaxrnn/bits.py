"""Integers to bit sequences and back, least significant bit first (time step 0 = bit 0)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_positive_int, dtype_of, is_concrete


def to_bits(values, n_bits: int, *, dtype=jnp.float32):
    """Bits of non-negative integers, LSB first.

    Args:
      values: non-negative integer array of any shape (*batch,) (checked when concrete).
      n_bits: how many bits to emit; higher bits are dropped.

    Returns:
      array (*batch, n_bits) with ``bits[..., k] = (values >> k) & 1``.
    """
    check_positive_int(n_bits, name="n_bits")
    if not jnp.issubdtype(dtype_of(values), jnp.integer):
        raise ValueError(f"values: expected an integer dtype, got {dtype_of(values)}")
    if is_concrete(values) and np.size(values) and np.min(values) < 0:
        raise ValueError(f"values: expected non-negative integers, got min {np.min(values)}")
    values = jnp.asarray(values)
    shifts = jnp.arange(n_bits, dtype=values.dtype)
    return ((values[..., None] >> shifts) & 1).astype(dtype)


def from_bits(bits, *, dtype=jnp.int32):
    """Integers from bits, LSB first: ``sum_k bits[..., k] * 2**k``.

    Args:
      bits: array (*batch, n_bits) of 0/1 values (checked when concrete).
      dtype: integer dtype of the result; it must hold n_bits bits.
    """
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"dtype: expected an integer dtype, got {jnp.dtype(dtype).name}")
    if is_concrete(bits) and not np.isin(np.asarray(bits), (0, 1)).all():
        raise ValueError(f"bits: expected 0/1 values, got {np.unique(np.asarray(bits)).tolist()}")
    bits = jnp.asarray(bits)
    if bits.ndim < 1:
        raise ValueError(f"bits: expected shape (*batch, n_bits), got {bits.shape}")
    n_bits = bits.shape[-1]
    if n_bits > jnp.iinfo(dtype).bits - 1:
        raise ValueError(
            f"bits: {n_bits} bits do not fit in {jnp.dtype(dtype).name}; pass a wider dtype"
        )
    weights = jnp.left_shift(jnp.ones((), dtype), jnp.arange(n_bits, dtype=dtype))
    return jnp.sum(bits.astype(dtype) * weights, axis=-1)
