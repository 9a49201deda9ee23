"""Memory of backprop through time, read from the compiled program (``memory_analysis``).

Four ways to get the gradient of a loss on the final state of a GRU over T steps (SPEC
§10-11), each a function ``loss(params, carry, xs)`` from :func:`final_state_loss`:

- ``"autodiff"``: ``jax.grad`` of :func:`jaxrnn.scan`: residuals of all T steps.
- ``"remat"``: the same with the cell under ``jax.checkpoint``: one carry per step kept,
  the step recomputed once in the backward pass.
- ``"checkpoints"``: :func:`jaxrnn.scan` with ``checkpoints=k``: k carries, binomial
  recomputation.
- ``"reversible"``: :func:`jaxrnn.reversible_scan` of :mod:`jaxrnn.cells.revgru`: no
  carries, the buffer's bits.

:func:`gradient_memory` compiles ``jax.grad`` of one of them for given shapes without
running it (nothing is allocated), so it can ask about any T.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_positive_int
from jaxrnn._scan import scan
from jaxrnn.cells import gru, revgru
from jaxrnn.reversible_rnn import reversible_scan

METHODS = ("autodiff", "remat", "checkpoints", "reversible")


class MemoryUse(NamedTuple):
    """Bytes of a compiled program: temporaries, arguments and outputs."""

    temp: int
    arguments: int
    outputs: int

    @property
    def total(self) -> int:
        return self.temp + self.arguments + self.outputs


def compiled_memory(fn, *args) -> MemoryUse:
    """The memory of ``jax.jit(fn)`` compiled for ``args`` (arrays or ShapeDtypeStructs)."""
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    return MemoryUse(
        int(analysis.temp_size_in_bytes),
        int(analysis.argument_size_in_bytes),
        int(analysis.output_size_in_bytes),
    )


def _check_method(method, checkpoints):
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if method == "checkpoints":
        check_positive_int(checkpoints, name="checkpoints")
    elif checkpoints is not None:
        raise ValueError(f"checkpoints: only for method 'checkpoints', got {checkpoints!r}")


def final_state_loss(method: str, *, checkpoints: int | None = None):
    """``loss(params, carry, xs) = sum(h_T)`` computed by ``method`` (module docstring).

    The cells' outputs are not kept (only the final state enters the loss), so what grows
    with T is what the gradient needs. ``params`` and ``carry`` are those of
    :mod:`jaxrnn.cells.gru`, or of :mod:`jaxrnn.cells.revgru` for ``"reversible"``.
    """
    _check_method(method, checkpoints)
    if method == "reversible":
        return lambda params, carry, xs: jnp.sum(reversible_scan(revgru, params, carry, xs)[0].h)
    cell = lambda p, c, x: (gru.apply(p, c, x)[0], None)  # noqa: E731 - no outputs kept
    if method == "remat":
        cell = jax.checkpoint(cell)

    def loss(params, carry, xs):
        return jnp.sum(scan(cell, params, carry, xs, checkpoints=checkpoints)[0])

    return loss


def problem(method: str, *, batch: int, hidden: int, in_dim: int, key=None, dtype=jnp.float32):
    """``(params, carry)`` of the cell that ``method`` runs (GRU, or RevGRU for reversible)."""
    key = jax.random.PRNGKey(0) if key is None else key
    if method == "reversible":
        return revgru.init(key, in_dim, hidden, dtype=dtype), revgru.init_carry(
            batch, hidden, dtype
        )
    return gru.init(key, in_dim, hidden, dtype=dtype), gru.init_carry(batch, hidden, dtype)


def gradient_memory(
    method: str,
    n_steps: int,
    *,
    batch: int = 32,
    hidden: int = 256,
    in_dim: int = 2,
    checkpoints: int | None = None,
    dtype=jnp.float32,
) -> MemoryUse:
    """Compiled memory of ``jax.grad`` (w.r.t. params) of :func:`final_state_loss`.

    Args:
      method: one of :data:`METHODS`; checkpoints: k for ``"checkpoints"``.
      n_steps: T; batch, hidden, in_dim: B, H, D of xs (T, B, D) and the cell.
    Returns:
      a :class:`MemoryUse` (arguments include xs: T·B·D values).
    """
    check_positive_int(n_steps, name="n_steps")
    loss = final_state_loss(method, checkpoints=checkpoints)
    params, carry = problem(method, batch=batch, hidden=hidden, in_dim=in_dim, dtype=dtype)
    xs = jax.ShapeDtypeStruct((n_steps, batch, in_dim), jnp.dtype(dtype))
    return compiled_memory(jax.grad(loss), params, carry, xs)


def largest_fitting(budget_bytes: float, steps_and_totals) -> int:
    """The largest T whose total stays within ``budget_bytes``, by the line through the two
    largest measured (T, total bytes) pairs (totals grow linearly in T for every method)."""
    (t1, m1), (t2, m2) = sorted(steps_and_totals)[-2:]
    slope = (m2 - m1) / (t2 - t1)
    return int(t2 + (budget_bytes - m2) / slope) if slope > 0 else -1
