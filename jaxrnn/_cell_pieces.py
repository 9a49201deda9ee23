"""Pieces every cell module uses: weight initialisation, activations, carry creation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxrnn._checks import batch_shape_tuple, check_key, check_positive_int

ACTIVATIONS = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}


def resolve_activation(activation, *, name: str = "activation"):
    """Map ``"tanh"`` / ``"sigmoid"`` to the function; a callable passes through."""
    if callable(activation):
        return activation
    if activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(
        f"{name}: expected one of {sorted(ACTIVATIONS)} or a callable, got {activation!r}"
    )


def uniform_weights(key, names_shapes, hidden: int, dtype):
    """Draw each named weight from U(-1/sqrt(hidden), 1/sqrt(hidden)), as PyTorch does."""
    check_key(key)
    bound = 1.0 / math.sqrt(hidden)
    keys = jax.random.split(key, len(names_shapes))
    return {
        name: jax.random.uniform(k, shape, dtype, -bound, bound)
        for k, (name, shape) in zip(keys, names_shapes.items(), strict=True)
    }


def gate_shapes(gates, in_dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """Shapes of per-gate weights: ``W_g`` (H, D), ``U_g`` (H, H) and ``b_g`` (H,) per gate g."""
    shapes = {}
    for gate in gates:
        shapes[f"W_{gate}"] = (hidden, in_dim)
        shapes[f"U_{gate}"] = (hidden, hidden)
        shapes[f"b_{gate}"] = (hidden,)
    return shapes


def check_sizes(in_dim, hidden):
    check_positive_int(in_dim, name="in_dim")
    check_positive_int(hidden, name="hidden")


def zeros_carry(batch_shape, hidden: int, dtype):
    """A zero state of shape (*batch_shape, hidden)."""
    check_positive_int(hidden, name="hidden")
    return jnp.zeros(batch_shape_tuple(batch_shape) + (hidden,), dtype)
