"""Exactly reversible momentum SGD in fixed point: T steps forward, and back (SPEC §7).

    v(k+1)     = beta_k v(k) - alpha_k ∇J(theta(k))        (momentum step)
    theta(k+1) = theta(k) + v(k+1)
    reverse:     theta(k) = theta(k+1) - v(k+1)
                 v(k)     = (v(k+1) + alpha_k ∇J(theta(k))) / beta_k

theta and v are 64-bit fixed-point words (``frac_bits`` fractional bits, two ``uint32``
arrays each, no x64 needed; see :mod:`jaxrnn.exact.fixed_point`). alpha_k ∇J is rounded to
the grid once per step, the same way forward and backward, so additions are exact; the
multiplication by beta_k = n_k / 2^16 is made exact by the information buffer
(:mod:`jaxrnn.exact.buffer`). Hence :func:`reverse` after :func:`forward` gives back
theta(0) and v(0) bit for bit, provided ``grad_fn`` is deterministic (it is evaluated at
the same float parameters, with the same step index k; derive batches and randomness from
k). Both passes evaluate it inside one ``lax.scan`` each, under ``jit``; avoid mixing eager
and compiled evaluation of the gradient, whose roundings may differ.

Reference loop (Python integers; ``q`` rounds to the grid, ``mul_ratio`` as in
:mod:`jaxrnn.exact.buffer`; the step itself is :func:`step.forward_step`):

    for k in range(T):
        g = grad_fn(theta * 2.0**-F, k)
        v, B = mul_ratio(v, B, n[k])            # v <- beta_k v, lost digits into B
        v = v - q(alpha[k] * g)
        theta = theta + v

Checks: a value leaving its guard range (theta within ±2^(62-F), v and alpha_k ∇J within
±2^(61-F), which rules out any wrap-around of the 64-bit words) or a non-finite gradient
records the first bad step; a reverse pass whose recomputed gradients differ reconstructs
other words than the forward call started from, which a fingerprint of those words, taken
by the forward call, shows. Called outside ``jit``, forward and reverse raise at once;
inside ``jit`` the steps travel in the state: call :func:`raise_if_failed` on the result.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import is_concrete
from jaxrnn._deprecated import alias
from jaxrnn.exact import buffer
from jaxrnn.reversible import schedules, xla_cpu
from jaxrnn.reversible import step as exact_step
from jaxrnn.reversible.state import Segment, State, raise_if_failed


def forward(state: State, grad_fn, alphas, betas) -> State:
    """Run T exact momentum steps (SPEC §7) in one ``lax.scan``.

    Args:
      state: from :func:`init` or a previous call.
      grad_fn: ``grad_fn(params, k) -> grads`` (a pytree like params), deterministic in its
        arguments; k is the global step index (an int32 scalar).
      alphas: (T,) step sizes > 0, or a pytree like params of (T,) schedules (per leaf).
      betas: (T,) momentum values in (0, 1), or per leaf; concrete (not traced). Each is
        used as n / 2^16 with n = round(beta · 2^16) (see :func:`represented_betas`).
    Returns:
      the new state, with T more steps, the buffer grown by the bits the steps destroyed.
    Raises:
      ValueError for bad schedules; FixedPointOverflowError (a ValueError) naming the
      first step where a value left the fixed-point range (outside jit; inside jit the
      step is kept in the state, see :func:`raise_if_failed`).
    """
    return forward_with(state, with_extra(grad_fn), None, alphas, betas)


def reverse(state: State, grad_fn, alphas, betas) -> State:
    """Exactly undo the most recent :func:`forward` call (same ``grad_fn`` and schedules).

    Runs the inverse steps theta(k) = theta(k+1) - v(k+1), v(k) = (v(k+1) + alpha_k
    ∇J(theta(k))) / beta_k for k = T-1, ..., 0 in one ``lax.scan``, popping the buffer.

    Returns:
      the state before that call, bit for bit (its buffer words and slots included).
    Raises:
      ValueError when there is no forward call to undo or the schedules differ from it;
      TrajectoryMismatchError (a ValueError) when a recomputed gradient differs from the
      forward pass (outside jit; inside jit it is kept in the state, see
      :func:`raise_if_failed`).
    """
    start, schedule = undo_target(state, alphas, betas)
    plan = schedules.plan_call(start.step, schedule, state.segments[-1].start_bounds)
    words = exact_step.Words(state.theta, state.velocity, state.word, state.slot_blocks[-1])
    static = (with_extra(grad_fn), state.treedef, state.dtypes, state.frac_bits)
    words, fingerprint = _reverse_scan(*static, words, plan.inputs, None)
    return undone(state, start, words, fingerprint)


def forward_with(state: State, grad_fn, extra, alphas, betas) -> State:
    """:func:`forward` with ``grad_fn(params, k, extra)``: ``extra`` is passed through (traced)."""
    schedule = schedules.validate_schedules(state.treedef, alphas, betas)
    plan = schedules.plan_call(state.step, schedule, state.bounds)
    fresh = [  # the slots this call fills (empty ones as NumPy: no device work at all)
        (jnp if n else np).zeros((n, *w.shape), buffer.SLOT_DTYPE)
        for w, n in zip(state.word, plan.new_slots, strict=True)
    ]
    words = exact_step.Words(state.theta, state.velocity, state.word, fresh)
    static = (grad_fn, state.treedef, state.dtypes, state.frac_bits)
    call = _forward_scan(*static, words, plan.inputs, extra)
    digest = schedules.digest(schedule.numerators)
    segment = Segment(schedule.n_steps, state.bounds, digest, plan.new_slots)
    new = dataclasses.replace(
        state,
        theta=call.words.theta,
        velocity=call.words.velocity,
        word=call.words.word,
        slot_blocks=(*state.slot_blocks, call.words.slots),
        fingerprints=(*state.fingerprints, call.start_fingerprint),
        bad_step=jnp.where(state.bad_step >= 0, state.bad_step, call.bad_step),
        step=state.step + schedule.n_steps,
        bounds=plan.end_bounds,
        segments=(*state.segments, segment),
    )
    if is_concrete(new.bad_step):
        raise_if_failed(new)
    return new


def undo_target(state: State, alphas, betas):
    """Check that (alphas, betas) are those of the last forward call of ``state``.

    Returns ``(start, schedules)``: ``start`` has the state's static parts as before that
    call (its arrays are still those of ``state``).
    """
    if not state.segments:
        raise ValueError("state: expected a state after forward(); there is no step to reverse")
    schedule = schedules.validate_schedules(state.treedef, alphas, betas)
    segment = state.segments[-1]
    if schedule.n_steps != segment.n_steps or (
        schedules.digest(schedule.numerators) != segment.betas_digest
    ):
        raise ValueError(
            f"alphas, betas: reverse undoes the last forward call, which ran "
            f"{segment.n_steps} steps; expected its beta schedule, got {schedule.n_steps} steps"
            + ("" if schedule.n_steps != segment.n_steps else " with different betas")
        )
    return dataclasses.replace(state, step=state.step - segment.n_steps), schedule


def undone(state: State, start: State, words, fingerprint) -> State:
    """The state before the last forward call, from the words a reverse pass rebuilt."""
    mismatch = jnp.where(fingerprint != state.fingerprints[-1], start.step, -1)
    new = dataclasses.replace(
        start,
        theta=words.theta,
        velocity=words.velocity,
        word=words.word,
        slot_blocks=state.slot_blocks[:-1],
        fingerprints=state.fingerprints[:-1],
        mismatch_step=jnp.where(state.mismatch_step >= 0, state.mismatch_step, mismatch),
        bounds=state.segments[-1].start_bounds,
        segments=state.segments[:-1],
    )
    if is_concrete(new.mismatch_step) and is_concrete(new.bad_step):
        raise_if_failed(new)
    return new


@functools.lru_cache(maxsize=64)
def with_extra(grad_fn):
    """``grad_fn(params, k)`` as ``grad_fn(params, k, extra)`` (the same object per grad_fn)."""
    return lambda p, k, _extra: grad_fn(p, k)


def checked_grads(grad_fn, params_tree, k, extra, treedef, shapes):
    """Call ``grad_fn`` and check that it returns one array per parameter leaf, same shapes."""
    grads = grad_fn(params_tree, k, extra)
    try:
        leaves = treedef.flatten_up_to(grads)
    except (ValueError, TypeError):
        raise ValueError(
            f"grad_fn: expected a gradient with the structure of params ({treedef}), got "
            f"{jax.tree_util.tree_structure(grads)}"
        ) from None
    for i, (g, s) in enumerate(zip(leaves, shapes, strict=True)):
        if tuple(jnp.shape(g)) != tuple(s):
            raise ValueError(f"grad_fn: leaf {i}: expected shape {tuple(s)}, got {jnp.shape(g)}")
    return leaves


_STATIC = ("grad_fn", "treedef", "dtypes", "frac_bits")


class ForwardCall(NamedTuple):
    """What the forward scan returns."""

    words: exact_step.Words  # after the call
    bad_step: jax.Array  # the first step that failed (int32), -1 if none
    start_fingerprint: jax.Array  # step.fingerprint of the words the call started from


def _forward(grad_fn, treedef, dtypes, frac_bits, words, inputs, extra) -> ForwardCall:
    """The forward scan of a call."""
    dtypes, shapes = list(dtypes), [t.hi.shape for t in words.theta]

    # The carry holds float(theta(k)), emitted by the previous step's pass over the words.
    def body(carry, x):
        words, floats = carry
        grads = checked_grads(grad_fn, treedef.unflatten(floats), x.k, extra, treedef, shapes)
        result = exact_step.forward_step(words, grads, x, frac_bits, dtypes)
        return (result.words, result.floats), None

    floats = exact_step.floats_of(words.theta, frac_bits, dtypes)
    # The fresh slots typed like the buffer words (inside shard_map: varying like them).
    slots = [s | jnp.zeros_like(w, s.dtype) for s, w in zip(words.slots, words.word, strict=True)]
    words = words._replace(slots=slots)
    (end, _), _ = xla_cpu.scan_steps(body, (words, floats), inputs, shapes)
    return ForwardCall(end, exact_step.failed_step(end.theta), exact_step.fingerprint(words))


def _reverse(grad_fn, treedef, dtypes, frac_bits, words, inputs, extra):
    """The reverse scan: (words before the call, their fingerprint)."""
    dtypes, shapes = list(dtypes), [t.hi.shape for t in words.theta]

    def body(words, x):
        def grads(floats):
            return checked_grads(grad_fn, treedef.unflatten(floats), x.k, extra, treedef, shapes)

        return exact_step.inverse_step(words, grads, x, frac_bits, dtypes).words, None

    start, _ = xla_cpu.scan_steps(body, words, inputs, shapes, reverse=True)
    return start, exact_step.fingerprint(start)


_forward_scan = jax.jit(_forward, static_argnames=_STATIC)
_reverse_scan = jax.jit(_reverse, static_argnames=_STATIC)

check = alias(raise_if_failed, "jaxrnn.reversible.sgd.check", "jaxrnn.reversible.raise_if_failed")
