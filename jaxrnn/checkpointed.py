"""Backprop through a scan holding at most k carries: binomial checkpointing (revolve).

``jax.grad`` of a scan keeps the residuals of all T steps. With ``checkpoints=k`` the
forward pass keeps only k carries (x_0 among them) and the backward pass recomputes the
others from the nearest kept one, by the schedule of Griewank's *revolve* (Griewank 1992;
Griewank & Walther 2000), which needs the fewest forward steps possible with k stored
carries. In SPEC §10's notation, with the repetition number

    r(T, k) = min { r : C(k + r, k) >= T },          C the binomial coefficient,

reversing T steps from k checkpoints takes (Griewank 1992)

    P(T, k) = r T - C(k + r, k + 1)

forward steps without residuals (*advances*), the minimum over all schedules. The schedule
is recursive: to reverse n steps from a carry kept in one of s free slots, advance m steps,
keep the carry reached in the next slot, reverse the last n - m steps with s - 1 slots, then
the first m with s; with one slot, advance to each step in turn. An optimal m is

    m(n, s) = min( C(s + r - 1, s),  n - C(s + r - 2, s - 1) ),    r = r(n, s).

Here the forward pass must reach x_T before any cotangent exists, so it runs all T steps,
keeping the checkpoints of the first descent of the recursion and the carry before the
last step (the one revolve turns at); the backward pass then runs the rest of the schedule
in one ``lax.while_loop`` over an explicit stack of (start, length, slots) tasks, with one
``jax.vjp`` of the step per time step. In all, P(T, k) + 1 advances and T steps with a vjp
(:func:`schedule_cost`), against T and T for plain autodiff and 2T and T for per-step
``jax.checkpoint``; memory is k + 1 carries, one step's residuals and the cotangents, for
any T (besides xs, the outputs ys and their cotangents, which the caller holds anyway).
"""

from __future__ import annotations

import functools
from math import comb
from typing import NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_positive_int, shape_of
from jaxrnn._step_vjp import cotangent_leaves, float_leaves, step_vjp, with_floats
from jaxrnn._varying import vary_like


class ScheduleCost(NamedTuple):
    """Cell steps of the checkpointed backward pass for T steps and k checkpoints.

    Attributes:
      repetitions: r(T, k), the most times any one step is advanced.
      advances: forward steps run without residuals, P(T, k) + 1 for T >= 1 (the forward
        pass's T steps included); the minimum possible with k carries, P(T, k), plus the
        last step, which revolve runs only once, with its vjp.
      recomputed: advances beyond the T steps of the forward pass, P(T, k) + 1 - T.
      vjp_steps: steps run under ``jax.vjp`` in the backward pass, T.
    """

    repetitions: int
    advances: int
    recomputed: int
    vjp_steps: int


def repetitions(n_steps: int, checkpoints: int) -> int:
    """r(T, k) = min { r : C(k + r, k) >= T }: the repetition number of revolve."""
    r = 0
    while comb(checkpoints + r, checkpoints) < n_steps:
        r += 1
    return r


def minimal_advances(n_steps: int, checkpoints: int) -> int:
    """P(T, k) = r T - C(k + r, k + 1): the fewest advances that reverse T steps with k carries.

    The minimum over all checkpointing schedules (Griewank 1992), for T >= 1; e.g.
    T (T - 1) / 2 with one carry, T - 1 with k >= T.
    """
    check_positive_int(n_steps, name="n_steps")
    check_positive_int(checkpoints, name="checkpoints")
    r = repetitions(n_steps, checkpoints)
    return r * n_steps - comb(checkpoints + r, checkpoints + 1)


def schedule_cost(n_steps: int, checkpoints: int) -> ScheduleCost:
    """What ``scan(..., checkpoints=k)`` computes for T steps (see :class:`ScheduleCost`)."""
    if n_steps == 0:
        return ScheduleCost(0, 0, 0, 0)
    advances = minimal_advances(n_steps, checkpoints) + 1
    return ScheduleCost(repetitions(n_steps, checkpoints), advances, advances - n_steps, n_steps)


def split(n: int, s: int) -> int:
    """m(n, s): where an optimal schedule keeps its next carry (n >= 2 steps, s >= 2 slots)."""
    r = repetitions(n, s)
    return min(comb(s + r - 1, s), n - comb(s + r - 2, s - 1))


class _Plan(NamedTuple):
    """The static part of a schedule (hashable): the first descent and the split table."""

    n_steps: int
    checkpoints: int
    positions: tuple  # steps whose input carries the forward pass keeps, slot j = k - s
    stack: tuple  # the tasks (start, length, slots) left after the first descent
    binomials: tuple  # binomials[s][r] = C(s + r, s), saturated at 2^31 - 1


@functools.lru_cache(maxsize=64)
def _plan(n_steps: int, checkpoints: int) -> _Plan:
    start, n, s = 0, n_steps, checkpoints
    positions, stack = [0], []
    while n > 1 and s > 1:
        m = split(n, s)
        stack.append((start, m, s))
        start, n, s = start + m, n - m, s - 1
        positions.append(start)
    if n > 1:  # the last task lost its last step: the forward pass runs it with its vjp
        stack.append((start, n - 1, s))
    width = repetitions(n_steps, min(checkpoints, 2)) + 2
    limit = 2**31 - 1
    binomials = tuple(
        tuple(min(comb(row + r, row), limit) for r in range(width))
        for row in range(checkpoints + 1)
    )
    return _Plan(n_steps, checkpoints, tuple(positions), tuple(stack), binomials)


# --------------------------------------------------------------------------- helpers


def _index(tree, i):
    return jax.tree_util.tree_map(
        lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), tree
    )


# --------------------------------------------------------------------------- the scan


def scan(f, init, xs, *, checkpoints: int, reverse: bool = False, unroll: int | bool = 1):
    """``jax.lax.scan(f, init, xs, reverse=reverse)`` whose gradient keeps k carries.

    Same values as ``lax.scan``; the gradient equals that of ``lax.scan`` up to rounding,
    computed by binomial checkpointing with at most ``checkpoints`` = k carries kept
    (module docstring). The plain-Python meaning of the backward pass::

        def backward(f, xs, keep, ct):      # keep: the carries the forward pass kept
            tasks = first_descent(T, k)     # (start, n, s): reverse steps start..start+n-1
            while tasks:
                start, n, s = tasks.pop()
                c = keep[k - s]             # the carry before step `start`
                m = n - 1 if n == 1 or s == 1 else split(n, s)
                for t in range(start, start + m):
                    c = f(c, xs[t])[0]      # an advance
                if n == 1 or s == 1:        # the vjp of step start + m
                    ct = vjp(f, c, xs[start + m])(ct)
                    if n > 1: tasks.append((start, n - 1, 1))
                else:
                    keep[k - s + 1] = c
                    tasks += [(start, m, s), (start + m, n - m, s - 1)]

    Args:
      f: ``f(carry, x) -> (carry, y)``, as for ``lax.scan``; arrays it closes over may be
        differentiated or traced (they are passed to the custom derivative explicitly).
      init: the initial carry (any pytree; integer leaves get no cotangent).
      xs: a pytree of arrays with a leading axis T.
      checkpoints: k >= 1, the carries kept for the backward pass (x_0 included).
      reverse: run from t = T - 1 down to 0, as ``lax.scan``.
      unroll: the forward loop's ``unroll``, as ``lax.scan``'s.

    Returns:
      ``(final_carry, ys)``, as ``lax.scan``.
    """
    check_positive_int(checkpoints, name="checkpoints")
    leaves = jax.tree_util.tree_leaves(xs)
    n_steps = shape_of(leaves[0])[0] if leaves else 0
    if n_steps == 0:
        return jax.lax.scan(f, init, xs, reverse=reverse, unroll=unroll)
    x0 = jax.tree_util.tree_map(lambda a: a[0], xs)
    step, consts = _explicit_closure(f, init, x0)
    plan = _plan(n_steps, int(checkpoints))
    return _checkpointed(step, plan, bool(reverse), unroll, consts, init, xs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _checkpointed(step, plan, reverse, unroll, consts, init, xs):
    return jax.lax.scan(lambda c, x: step(c, x, *consts), init, xs, reverse=reverse, unroll=unroll)


def _zeros_like_each(leaves, values=None):
    """``values`` (zeros if None), each cast to vary over the mesh axes of its leaf in
    ``leaves`` (inside ``jax.shard_map``; a no-op outside)."""
    values = [jnp.zeros_like(leaf) for leaf in leaves] if values is None else values
    return [vary_like(v, leaf) for v, leaf in zip(values, leaves, strict=True)]


def _explicit_closure(f, init, x0):
    """``(step, consts)`` with ``step(c, x, *consts) == f(c, x)``: every array ``f`` reads
    besides its arguments (parameters, lengths, traced or not) becomes an argument.

    A custom derivative must receive all such values explicitly: one traced by an enclosing
    ``jit``, ``vmap`` or ``shard_map`` and merely closed over would leak into its backward
    pass, which is traced apart (``jax.closure_convert`` hoists only the differentiated ones).
    """
    closed, out_shape = jax.make_jaxpr(f, return_shape=True)(init, x0)
    out_tree = jax.tree_util.tree_structure(out_shape)

    def step(c, x, *consts):
        run = jax.extend.core.jaxpr_as_fun(jax.extend.core.ClosedJaxpr(closed.jaxpr, consts))
        return jax.tree_util.tree_unflatten(out_tree, run(*jax.tree_util.tree_leaves((c, x))))

    return step, list(closed.consts)


def _time(plan: _Plan, reverse: bool, p):
    """The time index of the p-th step run (p counts from 0 in the order of the scan)."""
    return plan.n_steps - 1 - p if reverse else p


def _forward(step, plan, reverse, unroll, primal_consts, primal_init, primal_xs):
    consts = jax.tree_util.tree_map(lambda p: p.value, primal_consts)
    init = jax.tree_util.tree_map(lambda p: p.value, primal_init)
    xs = jax.tree_util.tree_map(lambda p: p.value, primal_xs)
    x_wanted = any(p.perturbed for p in jax.tree_util.tree_leaves(primal_xs))
    n_steps, last = plan.n_steps, plan.n_steps - 1
    positions = jnp.asarray(plan.positions + (n_steps,), jnp.int32)  # a sentinel at the end
    slots = jax.tree_util.tree_map(
        lambda leaf: jnp.zeros((plan.checkpoints, *jnp.shape(leaf)), jnp.result_type(leaf)), init
    )
    slots = vary_like(slots, init, xs, consts)  # inside jax.shard_map: as the carries will

    def body(state, x):
        c, slots, j, turn, p = state  # p counts the steps run
        keep = p == positions[j]
        kept = jax.tree_util.tree_map(
            lambda s, leaf: jax.lax.dynamic_update_index_in_dim(
                s, jnp.where(keep, leaf, s[jnp.minimum(j, plan.checkpoints - 1)]),
                jnp.minimum(j, plan.checkpoints - 1), 0,
            ),
            slots, c,
        )  # fmt: skip
        turn = jax.tree_util.tree_map(lambda a, b: jnp.where(p == last, a, b), c, turn)
        c, y = step(c, x, *consts)
        return (c, kept, j + keep.astype(jnp.int32), turn, p + 1), y

    zero = jnp.asarray(0, jnp.int32)
    state0 = (init, slots, zero, init, zero)
    (c, slots, _, turn, _), ys = jax.lax.scan(body, state0, xs, reverse=reverse, unroll=unroll)
    # whether xs needs a cotangent, in the residuals' tree structure (static): () or None
    return (c, ys), (consts, xs, slots, turn, () if x_wanted else None)


def _backward(step, plan, reverse, unroll, residuals, cts):
    consts, xs, slots, turn, x_flag = residuals
    x_wanted = x_flag is not None
    carry_ct, ys_ct = cts
    k = plan.checkpoints
    y_shape = jax.eval_shape(lambda c, x: step(c, x, *consts)[1], turn, _index(xs, 0))
    ys_cts = cotangent_leaves(ys_ct, y_shape)  # (T, ...) per floating output leaf, or None

    def y_ct_at(t):
        return [
            None if c is None else jax.lax.dynamic_index_in_dim(c, t, keepdims=False)
            for c in ys_cts
        ]

    def youturn(p, c, carry_cts, const_acc, xs_acc):
        t = _time(plan, reverse, p)
        x = _index(xs, t)
        grads = step_vjp(step, consts, c, x, carry_cts, y_ct_at(t), x_wanted)
        d_consts, d_carry, d_x = grads
        const_acc = [a + d for a, d in zip(const_acc, d_consts, strict=True)]
        if x_wanted:
            xs_acc = [
                jax.lax.dynamic_update_index_in_dim(a, d.astype(a.dtype), t, 0)
                for a, d in zip(xs_acc, d_x, strict=True)
            ]
        return d_carry, const_acc, xs_acc

    carry_cts = [
        jnp.zeros_like(leaf) if c is None else c
        for leaf, c in zip(float_leaves(turn), cotangent_leaves(carry_ct, turn), strict=True)
    ]
    # each sum has the type of its primal: inside jax.shard_map, the vjp of a step already
    # sums a replicated input's cotangent over the devices (and varies where it varies)
    carry_cts = _zeros_like_each(float_leaves(turn), carry_cts)
    const_acc = _zeros_like_each(float_leaves(consts))
    xs_acc = _zeros_like_each(float_leaves(xs)) if x_wanted else []
    carry_cts, const_acc, xs_acc = youturn(plan.n_steps - 1, turn, carry_cts, const_acc, xs_acc)

    binomials = jnp.asarray(plan.binomials, jnp.int32)
    depth = k + 2
    stack = np.zeros((depth, 3), np.int32)
    if plan.stack:
        stack[: len(plan.stack)] = plan.stack
    state0 = (
        jnp.asarray(stack),
        jnp.asarray(len(plan.stack), jnp.int32),
        slots,
        carry_cts,
        const_acc,
        xs_acc,
    )

    def advance(c, start, count):
        def body(i, c):
            return step(c, _index(xs, _time(plan, reverse, start + i)), *consts)[0]

        return jax.lax.fori_loop(0, count, body, c)

    def task(state):
        stack, sp, slots, carry_cts, const_acc, xs_acc = state
        sp = sp - 1
        start, n, s = stack[sp, 0], stack[sp, 1], stack[sp, 2]
        turn_here = (n == 1) | (s == 1)
        r = jnp.sum(binomials[s] < n)
        m_split = jnp.minimum(
            binomials[s, jnp.maximum(r - 1, 0)], n - binomials[s - 1, jnp.maximum(r - 1, 0)]
        )
        m = jnp.where(turn_here, n - 1, m_split)
        c = advance(_index(slots, k - s), start, m)
        target = jnp.minimum(k - s + 1, k - 1)
        slots = jax.tree_util.tree_map(
            lambda a, leaf: jax.lax.dynamic_update_index_in_dim(
                a, jnp.where(turn_here, a[target], leaf), target, 0
            ),
            slots,
            c,
        )
        first = jnp.where(turn_here, jnp.stack([start, n - 1, 1]), jnp.stack([start, m, s]))
        second = jnp.stack([start + m, n - m, s - 1])
        stack = stack.at[sp].set(first).at[sp + 1].set(second)
        sp = sp + jnp.where(turn_here, (n > 1).astype(jnp.int32), 2)
        carry_cts, const_acc, xs_acc = jax.lax.cond(
            turn_here,
            lambda: youturn(start + m, c, carry_cts, const_acc, xs_acc),
            lambda: (carry_cts, const_acc, xs_acc),
        )
        return stack, sp, slots, carry_cts, const_acc, xs_acc

    _, _, _, carry_cts, const_acc, xs_acc = jax.lax.while_loop(lambda st: st[1] > 0, task, state0)

    xs_ct = with_floats(xs, xs_acc) if x_wanted else jax.tree_util.tree_map(lambda _: None, xs)
    return with_floats(consts, const_acc), with_floats(turn, carry_cts), xs_ct


_checkpointed.defvjp(_forward, _backward, symbolic_zeros=True)
