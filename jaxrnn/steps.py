"""Sequential steps, measured from the traced program rather than asserted from a formula.

``sequential_steps(fn, *args)`` traces ``fn`` to a jaxpr and counts the iterations of its
loops: a ``scan`` of length n whose body runs k sequential steps contributes n * max(k, 1);
loops one after another add; ``cond`` takes its longest branch; calls (``jit``,
``custom_vjp``, ``remat``, ...) are followed into. A program without loops runs 0 loop steps.
"""

from __future__ import annotations

import jax
from jax.extend import core as jex_core


def _sub_jaxprs(params: dict):
    """The jaxprs held in an equation's params (closed or open, single or in lists)."""
    for value in params.values():
        values = value if isinstance(value, (tuple, list)) else (value,)
        for item in values:
            if isinstance(item, jex_core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jex_core.Jaxpr):
                yield item


def _jaxpr_steps(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "scan":
            inner = _jaxpr_steps(eqn.params["jaxpr"].jaxpr)
            total += eqn.params["length"] * max(inner, 1)
        elif name == "while":
            raise ValueError(
                "fn: contains a while_loop, whose trip count depends on values and cannot be "
                "read from the traced program; use lax.scan or fori_loop with static bounds"
            )
        elif name == "cond":
            total += max(_jaxpr_steps(branch.jaxpr) for branch in eqn.params["branches"])
        else:
            total += sum(_jaxpr_steps(sub) for sub in _sub_jaxprs(eqn.params))
    return total


def sequential_steps(fn, *args, **kwargs) -> int:
    """Trace ``fn(*args, **kwargs)`` and return the number of sequential loop iterations.

    Example: a row-major scan over an H x W grid gives H * W; an anti-diagonal wavefront
    gives H + W - 1, however its diagonals are grouped into scans.

    Raises ``ValueError`` if ``fn`` contains a ``while_loop`` (its trip count is not static).
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    return _jaxpr_steps(closed.jaxpr)
