"""Sequential steps, measured from the traced program rather than asserted from a formula.

``sequential_steps(fn, *args)`` traces ``fn`` to a jaxpr and counts the iterations of its
loops: a ``scan`` of length n whose body runs k sequential steps contributes n * max(k, 1);
loops one after another add; ``cond`` takes its longest branch; calls (``jit``,
``custom_vjp``, ``remat``, ...) are followed into. A program without loops runs 0 loop steps.

``parallel_depth(fn, *args)`` measures the critical path of the traced dataflow instead:
a loop of n steps costs n times its body, and an associative scan (no loop) its ~log2 T
levels of dependent operations.
"""

from __future__ import annotations

import jax
from jax.extend import core as jex_core

from jaxrnn._checks import is_int


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


# --- Parallel depth: the critical path through the traced program's dataflow -------------

#: Primitives that only move, reshape or relabel data. They cost no stage of depth; every
#: other primitive (arithmetic, comparisons, ``select_n``, ``dot_general``, reductions,
#: ``exp``/``tanh``/...) costs one stage, however large its operands: the convention of
#: SPEC §6, where any number of matrix-vector products run in one step.
DATA_MOVEMENT = frozenset(
    {
        "broadcast_in_dim",
        "concatenate",
        "convert_element_type",
        "copy",
        "copy_p",
        "device_put",
        "dynamic_slice",
        "dynamic_update_slice",
        "expand_dims",
        "gather",
        "iota",
        "pad",
        "reduce_precision",
        "reshape",
        "rev",
        "scatter",
        "slice",
        "split",
        "squeeze",
        "transpose",
    }
)


def _critical_path(jaxpr, while_iterations) -> int:
    """The depth of the deepest output of ``jaxpr`` when all its inputs are ready at 0."""
    outs = _output_depths(jaxpr, [0] * len(jaxpr.invars), while_iterations)
    return max(outs, default=0)


def _output_depths(jaxpr, in_depths, while_iterations) -> list[int]:
    """Propagate ready times through ``jaxpr``: each output's depth given its inputs'."""
    depth = dict(zip(jaxpr.invars, in_depths, strict=True))

    def read(var) -> int:
        return 0 if isinstance(var, jex_core.Literal) else depth.get(var, 0)

    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        start = max(ins, default=0)
        name = eqn.primitive.name
        subs = list(_sub_jaxprs(eqn.params))
        if name == "scan":
            body = _critical_path(eqn.params["jaxpr"].jaxpr, while_iterations)
            outs = [start + eqn.params["length"] * body] * len(eqn.outvars)
        elif name == "while":
            if while_iterations is None:
                raise ValueError(
                    "fn: contains a while_loop, whose trip count depends on values; pass "
                    "while_iterations=n (the iterations it actually ran) to count n of them"
                )
            cond = _critical_path(eqn.params["cond_jaxpr"].jaxpr, while_iterations)
            body = _critical_path(eqn.params["body_jaxpr"].jaxpr, while_iterations)
            outs = [start + while_iterations * (cond + body) + cond] * len(eqn.outvars)
        elif name == "cond":
            index, operands = ins[0], ins[1:]
            per_branch = [
                _output_depths(branch.jaxpr, [max(index, d) for d in operands], while_iterations)
                for branch in eqn.params["branches"]
            ]
            outs = [max(column) for column in zip(*per_branch, strict=True)]
        elif len(subs) == 1 and len(subs[0].invars) == len(eqn.invars):
            outs = _output_depths(subs[0], ins, while_iterations)  # jit, custom_vjp, remat...
        elif subs:
            inner = max(_critical_path(sub, while_iterations) for sub in subs)
            outs = [start + inner] * len(eqn.outvars)
        else:
            outs = [start + (0 if name in DATA_MOVEMENT else 1)] * len(eqn.outvars)
        depth.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def parallel_depth(fn, *args, while_iterations: int | None = None, **kwargs) -> int:
    """Trace ``fn(*args, **kwargs)`` and return its parallel depth: the number of stages
    on the longest dependency chain of its dataflow graph.

    Rules, applied to the jaxpr:

    - an operation waits for its inputs; it adds 1 stage, or 0 for pure data movement
      (:data:`DATA_MOVEMENT`: reshape, broadcast, slice, pad, concatenate, gather,
      convert, ...). Independent operations share stages, so an elementwise op or a
      batched matrix product over T items is one stage whatever T is;
    - a ``scan`` of length n whose body has depth d adds n * d (its steps are sequential);
    - a ``while_loop`` adds n * (d_cond + d_body) + d_cond for ``while_iterations = n``
      (its trip count is data-dependent, so the caller says how many ran; without it a
      ``while_loop`` raises ``ValueError``);
    - ``cond`` takes the deepest branch; ``jit``, ``custom_vjp``, ``remat``, ... calls
      are followed into, input by input.

    So a sequential scan over T steps measures ~c * T and ``jax.lax.associative_scan``,
    which traces to about 2 log2 T levels of slices and combines and no loop, measures
    ~c * log2 T.

    Args:
      fn: the function to trace.
      *args, **kwargs: its arguments (arrays or ``jax.ShapeDtypeStruct``).
      while_iterations: the number of iterations to count for every ``while_loop``.

    Returns:
      the depth, an int (0 for a program of pure data movement).
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
    if while_iterations is not None and (not is_int(while_iterations) or while_iterations < 0):
        raise ValueError(
            f"while_iterations: expected a non-negative int or None, got {while_iterations!r}"
        )
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    return _critical_path(closed.jaxpr, while_iterations)
