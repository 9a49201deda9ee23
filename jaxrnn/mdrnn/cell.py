"""The MDRNN grid cell of SPEC §6, its parameters and its counts.

    h(i,j) = phi( W_in^T x(i,j) + W_W^T h(i-1,j) + W_N^T h(i,j-1) [+ b] ),
    h outside the grid = 0.

Grid indices: ``x`` has shape (*batch, H, W, D) and ``x[..., i, j, :]`` is x(i,j), so ``i``
runs over the H rows (axis -3) and ``j`` over the W columns (axis -2). SPEC's names are kept:
``W_W`` multiplies the neighbour h(i-1,j) and ``W_N`` the neighbour h(i,j-1).

Shapes: W_in (D, hidden), W_W (hidden, hidden), W_N (hidden, hidden), optional b (hidden,).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._cell_pieces import check_sizes, resolve_activation, uniform_weights
from jaxrnn._checks import check_matrix, check_params, check_positive_int, dtype_of, shape_of
from jaxrnn._deprecated import alias


def param_shapes(in_dim: int, hidden: int, *, bias: bool = False) -> dict[str, tuple[int, ...]]:
    shapes = {"W_in": (in_dim, hidden), "W_W": (hidden, hidden), "W_N": (hidden, hidden)}
    if bias:
        shapes["b"] = (hidden,)
    return shapes


def init(key, in_dim: int, hidden: int, *, bias: bool = False, dtype=jnp.float32) -> dict:
    """Weights from U(-1/sqrt(2 hidden), 1/sqrt(2 hidden)); no bias unless ``bias=True`` (zero).

    The bound counts both recurrent inputs, so a cell's two neighbours together have the
    scale one neighbour has in a 1-D RNN.

    Returns ``{"W_in": (D, hidden), "W_W": (hidden, hidden), "W_N": (hidden, hidden)}``
    plus ``"b": (hidden,)`` when ``bias``.
    """
    check_sizes(in_dim, hidden)
    params = uniform_weights(key, param_shapes(in_dim, hidden), 2 * hidden, dtype)
    if bias:
        params["b"] = jnp.zeros((hidden,), dtype)
    return params


def validate_params(params) -> tuple[int, int]:
    """Validate grid-cell params; returns ``(in_dim, hidden)``. Raises ``ValueError``."""
    in_dim, hidden = check_matrix(params, "W_in")
    check_params(params, param_shapes(in_dim, hidden, bias="b" in params))
    return in_dim, hidden


def check_grid(x, in_dim: int, *, name: str = "x") -> tuple[tuple[int, ...], int, int]:
    """Check ``x`` of shape (*batch, H, W, in_dim) with H, W >= 1; returns (batch, H, W)."""
    shape = shape_of(x)
    if len(shape) < 3 or shape[-1] != in_dim:
        raise ValueError(f"{name}: expected shape (*batch, H, W, {in_dim}), got {shape}")
    if shape[-3] < 1 or shape[-2] < 1:
        raise ValueError(f"{name}: expected a grid with H >= 1 and W >= 1, got shape {shape}")
    if not jnp.issubdtype(dtype_of(x), jnp.floating):
        raise ValueError(f"{name}: expected a floating dtype, got {dtype_of(x)}")
    return tuple(shape[:-3]), shape[-3], shape[-2]


def project_input(params: dict, x):
    """The hoisted input term W_in^T x(i,j) [+ b] for every cell at once: (..., hidden)."""
    xw = x @ params["W_in"]
    return xw + params["b"] if "b" in params else xw


def apply(params: dict, h_west, h_north, x, *, activation="tanh"):
    """One grid cell: ``h(i,j) = phi(W_in^T x(i,j) + W_W^T h(i-1,j) + W_N^T h(i,j-1) [+ b])``.

    Args:
      params: as made by :func:`init`.
      h_west: h(i-1,j), shape (*batch, hidden) (zeros outside the grid).
      h_north: h(i,j-1), shape (*batch, hidden).
      x: x(i,j), shape (*batch, D).
      activation: phi, ``"tanh"``, ``"sigmoid"`` or a callable.

    Returns:
      h(i,j), shape (*batch, hidden).
    """
    phi = resolve_activation(activation)
    return phi(project_input(params, x) + h_west @ params["W_W"] + h_north @ params["W_N"])


def n_weights(in_dim: int, hidden: int, *, bias: bool = False) -> int:
    """D·H + 2·H² weights (SPEC §6), plus H with a bias."""
    check_sizes(in_dim, hidden)
    return in_dim * hidden + 2 * hidden * hidden + (hidden if bias else 0)


def n_multiply_adds(height: int, width: int, in_dim: int, hidden: int) -> int:
    """Multiply-adds for all hidden activations of an H x W grid: H·W·(D·hidden + 2·hidden²)."""
    for value, name in ((height, "height"), (width, "width")):
        check_positive_int(value, name=name)
    return height * width * (n_weights(in_dim, hidden))


def n_flops(height: int, width: int, in_dim: int, hidden: int) -> int:
    """Floating-point operations of the matrix products, 2 per multiply-add:
    2·H·W·(D·hidden + 2·hidden²). Activations and the two additions per cell are not counted.
    """
    return 2 * n_multiply_adds(height, width, in_dim, hidden)


def result_dtype(params: dict, x):
    return jnp.result_type(*jax.tree_util.tree_leaves(params), x)


check = alias(
    validate_params, "jaxrnn.mdrnn.cell.check", "jaxrnn.mdrnn.cell.validate_params"
)  # one release (CHANGELOG.md)
