"""Backprop through time without storing states: exactly reversible cells run backwards.

``reversible_scan(cell, params, carry, xs)`` has the values of ``jaxrnn.scan(cell.apply,
...)``; its backward pass rebuilds each carry from the next one with ``cell.inverse``
(SPEC §11) instead of reading stored residuals, and differentiates that step with
``jax.vjp``. It keeps only what the cell forgot: the carry's buffer words, whose high bytes
move to a preallocated ``uint8`` memory on the fixed schedule of
:func:`jaxrnn.exact.buffer.spill_schedule` (every unit at most m bits per step, so one byte
every 8 / m steps), plus one 32-bit fingerprint per step.

    forward, step p (t = p, or T - 1 - p under reverse):
        B, memory = spill(B, memory, p)                    # if the schedule says so
        fingerprints[p] = fingerprint(carry, p)
        carry, ys[t] = cell.apply(params, carry, xs[t])     # only where t < lengths
    backward, p = T - 1, ..., 0:
        carry = cell.inverse(params, carry, xs[t])          # only where t < lengths
        check fingerprint(carry, p) == fingerprints[p]
        grads += vjp(cell.apply at carry, xs[t])(cotangents)
        B = restore(B, memory, p)

Checks: a value leaving the fixed-point range (or not finite) in the forward pass raises
:class:`FixedPointOverflowError` naming the step; a reconstruction that differs from the
forward pass (a cell whose inverse is not exact, or inputs other than the forward pass's)
raises :class:`TrajectoryMismatchError` naming the first step (from the end) where it
differs: the errors of :mod:`jaxrnn.reversible`. Under ``jit`` values cannot raise: the
state is NaN from an overflowing step on, and the gradients are NaN after a mismatch.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_lengths, describe, is_concrete, shape_of
from jaxrnn._step_vjp import cotangent_leaves, float_leaves, is_float, step_vjp, with_floats
from jaxrnn._varying import sum_like, vary_like
from jaxrnn.exact import buffer
from jaxrnn.exact import fixed_point as fp
from jaxrnn.reversible import FixedPointOverflowError, TrajectoryMismatchError

__all__ = [
    "FixedPointOverflowError",
    "Tape",
    "TrajectoryMismatchError",
    "allocated_bits",
    "forward",
    "reconstruct",
    "reversible_scan",
]


class Tape(NamedTuple):
    """What the forward pass keeps for the backward pass (its size does not depend on H·T
    beyond the buffer).

    Attributes:
      carry: the final carry (with its buffer words).
      ys: the outputs (T, *batch, ...).
      memory: (S, *word shape) ``uint8``: the bytes spilled from the buffer words.
      fingerprints: (T,) ``uint32``, one digest of the carry before each step.
      bad_step: int32, the first step whose state left the fixed-point range, -1 if none.
    """

    carry: Any
    ys: Any
    memory: Any
    fingerprints: Any
    bad_step: Any


class _Plan(NamedTuple):
    """Static per-step inputs, in time order: spill flags and slots; and the step order."""

    n_steps: int
    reverse: bool
    spill: Any  # (T,) bool, numpy
    slot: Any  # (T,) int32, numpy
    n_slots: int


def _cell_functions(cell):
    apply, inverse = getattr(cell, "apply", None), getattr(cell, "inverse", None)
    if not (callable(apply) and callable(inverse)):
        raise ValueError(
            f"cell: expected a module or object with apply(params, carry, x) and "
            f"inverse(params, carry, x), e.g. jaxrnn.cells.revgru, got {describe(cell)}"
        )
    return apply, inverse


def _check_carry(carry):
    word = getattr(carry, "word", None)
    bits = getattr(carry, "max_forget_bits", None)
    if word is None or bits is None or jnp.dtype(getattr(word, "dtype", None)) != jnp.uint32:
        raise ValueError(
            "carry: expected the carry of a reversible cell, with a uint32 buffer `word` and "
            f"`max_forget_bits` (e.g. jaxrnn.cells.revgru.init_carry), got {describe(carry)}"
        )
    return int(bits)


@functools.lru_cache(maxsize=32)
def _plan(n_steps: int, max_forget_bits: int, reverse: bool) -> _Plan:
    # A push multiplies the word by K <= 2^m and adds a digit below K: B' <= (B + 1) 2^m - 1,
    # below buffer's bound floor(B / n) 2^16 + 2^16 - 1 for n = 2^(16 - m), so the schedule
    # computed for that n keeps every word below 2^32. The start bound is the largest word:
    # the carry may hold digits of an earlier call.
    n_min = buffer.DENOMINATOR >> max_forget_bits
    spill, slot, _ = buffer.spill_schedule(buffer.WORD_LIMIT - 1, (n_min,) * n_steps)
    if reverse:  # the schedule is in the order the steps run; the scans index time
        spill, slot = spill[::-1].copy(), slot[::-1].copy()
    return _Plan(n_steps, reverse, spill, slot, int(spill.sum()))


def _masked(active, new, old):
    if active is None:
        return new
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(active.reshape(active.shape + (1,) * (a.ndim - active.ndim)), a, b),
        new,
        old,
    )


def _step(apply, params, carry, x, active):
    """One step as jaxrnn.scan runs it: padding steps see zeros and keep the carry."""
    if active is not None:
        x = _masked(active, x, jax.tree_util.tree_map(jnp.zeros_like, x))
    new, y = apply(params, carry, x)
    if active is None:
        return new, y
    y = _masked(active, y, jax.tree_util.tree_map(jnp.zeros_like, y))
    return _masked(active, new, carry), y


def _unstep(inverse, params, carry, x, active):
    if active is not None:
        x = _masked(active, x, jax.tree_util.tree_map(jnp.zeros_like, x))
    return _masked(active, inverse(params, carry, x), carry)


def _fingerprint(carry, step):
    """A uint32 digest of every bit of the carry at ``step`` (:func:`fixed_point.fingerprint`)."""
    total = jnp.uint32(0)
    for leaf in jax.tree_util.tree_leaves(carry):
        bits = leaf if leaf.dtype == jnp.uint32 else jax.lax.bitcast_convert_type(leaf, jnp.uint32)
        total = total + fp.fingerprint(fp.Word(bits, bits), step)
    return total


def _active(lengths, t):
    return None if lengths is None else t < lengths


def _with_word(carry, word):
    return dataclasses.replace(carry, word=word)


def _forward_scan(apply, plan: _Plan, params, carry, xs, lengths):
    memory = jnp.zeros((plan.n_slots, *carry.word.shape), buffer.SLOT_DTYPE)
    times = np.arange(plan.n_steps, dtype=np.int32)

    def body(state, inputs):
        carry, memory, bad = state
        x, t, flag, slot = inputs
        word, memory = buffer.spill(carry.word, memory, flag, slot)
        carry = _with_word(carry, word)
        digest = _fingerprint(carry, t)
        carry, y = _step(apply, params, carry, x, _active(lengths, t))
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in float_leaves(carry)]))
        bad = jnp.where((bad < 0) & ~finite, t, bad)
        return (carry, memory, bad), (y, digest)

    # inside jax.shard_map the memory and the flag vary as the carry does
    state0 = (carry, *vary_like((memory, jnp.asarray(-1, jnp.int32)), carry))
    (carry, memory, bad), (ys, digests) = jax.lax.scan(
        body, state0, (xs, times, plan.spill, plan.slot), reverse=plan.reverse
    )
    return Tape(carry, ys, memory, digests, bad)


def _backward_scan(apply, inverse, plan, params, tape, xs, lengths, cotangents=None):
    """Rebuild the carries from the end; with ``cotangents`` also accumulate gradients.

    Returns ``(initial carry, mismatch step, grads)``; grads = (params, carry, xs) cotangent
    leaves (floating leaves only; None without cotangents).
    """
    times = np.arange(plan.n_steps, dtype=np.int32)
    carry_ct, ys_ct, x_wanted = cotangents if cotangents is not None else (None, None, False)

    def body(state, inputs):
        carry, mismatch, grads = state
        x, t, flag, slot, digest, y_ct = inputs
        active = _active(lengths, t)
        carry = _unstep(inverse, params, carry, x, active)
        differs = _fingerprint(carry, t) != digest
        d_x = None
        if cotangents is not None:
            param_acc, c_ct = grads
            step = lambda c, x, p: _step(apply, p, c, x, active)  # noqa: E731
            d_params, c_ct, d_x = step_vjp(step, [params], carry, x, c_ct, y_ct, x_wanted)
            grads = ([a + d for a, d in zip(param_acc, d_params, strict=True)], c_ct)
        word, lost = buffer.restore(carry.word, tape.memory, flag, slot)
        mismatch = jnp.where((mismatch < 0) & (differs | jnp.any(lost)), t, mismatch)
        return (_with_word(carry, word), mismatch, grads), d_x

    grads0 = None
    if cotangents is not None:  # each sum typed as its primal (see checkpointed)
        zeros = [vary_like(jnp.zeros_like(p), p) for p in float_leaves(params)]
        leaves = float_leaves(tape.carry)
        carry_ct = [vary_like(c, leaf) for c, leaf in zip(carry_ct, leaves, strict=True)]
        grads0 = (zeros, carry_ct)
    mismatch0 = vary_like(jnp.asarray(-1, jnp.int32), tape.carry)  # varies as the carry
    state0 = (tape.carry, mismatch0, grads0)
    (carry, mismatch, grads), d_xs = jax.lax.scan(
        body,
        state0,
        (xs, times, plan.spill, plan.slot, tape.fingerprints, ys_ct),
        reverse=not plan.reverse,
    )
    return carry, mismatch, grads, d_xs


def _prepare(cell, carry, xs, lengths, reverse):
    apply, inverse = _cell_functions(cell)
    bits = _check_carry(carry)
    leaves = jax.tree_util.tree_leaves(xs)
    if not leaves or any(len(shape_of(leaf)) < 1 for leaf in leaves):
        raise ValueError(f"xs: expected arrays with a leading time axis T, got {describe(xs)}")
    n_steps = shape_of(leaves[0])[0]
    if not isinstance(reverse, (bool, np.bool_)):
        raise ValueError(f"reverse: expected True or False, got {reverse!r}")
    if lengths is not None:
        check_lengths(lengths, xs, n_steps)
        lengths = jnp.asarray(lengths)
    return apply, inverse, _plan(n_steps, bits, bool(reverse)), lengths


def _check_step_types(apply, params, carry, xs):
    """cell.apply must return a carry of the structure, shapes and dtypes it was given."""
    x0 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(shape_of(a)[1:], a.dtype), xs)
    new = jax.eval_shape(apply, params, carry, x0)[0]
    given = [(shape_of(a), jnp.dtype(a.dtype)) for a in jax.tree_util.tree_leaves(carry)]
    got = [(a.shape, jnp.dtype(a.dtype)) for a in jax.tree_util.tree_leaves(new)]
    if jax.tree_util.tree_structure(new) != jax.tree_util.tree_structure(carry) or got != given:
        raise ValueError(
            f"carry: cell.apply maps a carry of leaves {given} to {got}; give params, carry and "
            "xs one float dtype and the carry the batch shape of xs"
        )


_MESSAGES = {
    FixedPointOverflowError: (
        "the state left the range of its fixed-point grid or was not finite at step {step} "
        "(fewer frac_bits give more range; a NaN or infinite input or parameter is never "
        "finite); the steps from there on are NaN"
    ),
    TrajectoryMismatchError: (
        "the state rebuilt before step {step} differs from the forward pass (checksum): the "
        "inputs or parameters differ from the forward pass's, or the cell's inverse is not "
        "exact"
    ),
}


def _raise_at(step, error):
    """Raise ``error`` naming ``step`` when it is known (outside jit) and not -1."""
    if is_concrete(step) and int(step) >= 0:
        raise error("reversible_scan: " + _MESSAGES[error].format(step=int(step)))


def forward(cell, params, carry, xs, *, lengths=None, reverse: bool = False) -> Tape:
    """The forward pass of :func:`reversible_scan`, returning its :class:`Tape`.

    Raises :class:`FixedPointOverflowError` naming the first bad step (outside ``jit``).
    """
    apply, _, plan, lengths = _prepare(cell, carry, xs, lengths, reverse)
    _check_step_types(apply, params, carry, xs)
    carry = vary_like(carry, params, xs, lengths)  # a carry made inside jax.shard_map
    tape = _forward_scan(apply, plan, params, carry, xs, lengths)
    _raise_at(tape.bad_step, FixedPointOverflowError)
    return tape


def reconstruct(cell, params, tape: Tape, xs, *, lengths=None, reverse: bool = False):
    """Run ``cell.inverse`` from the tape's final carry back to the initial carry.

    Returns the initial carry, bit for bit; raises :class:`TrajectoryMismatchError`
    naming the step where the rebuilt state differs from the forward pass's (e.g. when
    ``params`` or ``xs`` are not those of the forward pass), outside ``jit``.
    """
    _, inverse, plan, lengths = _prepare(cell, tape.carry, xs, lengths, reverse)
    carry, mismatch, _, _ = _backward_scan(None, inverse, plan, params, tape, xs, lengths)
    _raise_at(mismatch, TrajectoryMismatchError)
    return carry


def allocated_bits(tape: Tape) -> float:
    """Bits of buffer per unit of the carry's word: 32 for the word plus 8 per spilled byte."""
    return float(buffer.WORD_BITS + buffer.SLOT_BITS * tape.memory.shape[0])


def reversible_scan(cell, params, carry, xs, *, lengths=None, reverse: bool = False):
    """``jaxrnn.scan(cell.apply, ...)`` whose gradient rebuilds states instead of storing them.

    Type signature as :func:`jaxrnn.scan`'s (module docstring for the two passes)::

        reversible_scan(cell: {apply, inverse}, params: P, carry: c, xs: [T, a], *,
                        lengths: [*batch] int | None, reverse: bool) -> (c, [T, b])

    Args:
      cell: a module or object with ``apply(params, carry, x) -> (carry, y)`` and its exact
        inverse ``inverse(params, carry, x) -> carry`` (e.g. :mod:`jaxrnn.cells.revgru`).
      params: the cell's parameters.
      carry: the cell's carry, with a ``uint32`` buffer ``word`` and ``max_forget_bits``.
      xs: (T, *batch, D), or a pytree of arrays with leading axis T.
      lengths: optional (*batch,) integer lengths, with :func:`jaxrnn.scan`'s meaning.
      reverse: run each sequence from its last step down to 0, as :func:`jaxrnn.scan`.

    Returns:
      ``(final_carry, ys)``, equal to ``jaxrnn.scan(cell.apply, ...)``; gradients equal
      ``jax.grad`` of that scan up to rounding.
    """
    apply, inverse, plan, lengths = _prepare(cell, carry, xs, lengths, reverse)
    _check_step_types(apply, params, carry, xs)
    carry = vary_like(carry, params, xs, lengths)  # a carry made inside jax.shard_map
    final, ys, bad_step = _reversible(apply, inverse, plan, params, carry, xs, lengths)
    _raise_at(bad_step, FixedPointOverflowError)
    return final, ys


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _reversible(apply, inverse, plan, params, carry, xs, lengths):
    tape = _forward_scan(apply, plan, params, carry, xs, lengths)
    return tape.carry, tape.ys, tape.bad_step


def _fwd(apply, inverse, plan, params, carry, xs, lengths):
    values = [jax.tree_util.tree_map(lambda p: p.value, a) for a in (params, carry, xs, lengths)]
    x_wanted = any(p.perturbed for p in jax.tree_util.tree_leaves(xs) if is_float(p.value))
    params, carry, xs, lengths = values
    tape = _forward_scan(apply, plan, params, carry, xs, lengths)
    _raise_at(tape.bad_step, FixedPointOverflowError)
    residual_tape = tape._replace(ys=None)
    flag = () if x_wanted else None  # in the tree structure: static
    return (tape.carry, tape.ys, tape.bad_step), (params, carry, xs, lengths, residual_tape, flag)


def _bwd(apply, inverse, plan, residuals, cts):
    params, carry0, xs, lengths, tape, flag = residuals
    x_wanted = flag is not None
    carry_ct, ys_ct, _ = cts
    carry_cts = [
        jnp.zeros_like(leaf) if c is None else c
        for leaf, c in zip(float_leaves(carry0), cotangent_leaves(carry_ct, carry0), strict=True)
    ]
    x0 = jax.tree_util.tree_map(lambda a: a[0], xs)
    y_shape = jax.eval_shape(lambda: apply(params, carry0, x0)[1])
    ys_cts = cotangent_leaves(ys_ct, y_shape)  # (T, ...) per floating output leaf, or None
    rebuilt, mismatch, (d_params, d_carry), d_xs = _backward_scan(
        apply, inverse, plan, params, tape, xs, lengths, (carry_cts, ys_cts, x_wanted)
    )
    pairs = zip(jax.tree_util.tree_leaves(rebuilt), jax.tree_util.tree_leaves(carry0), strict=True)
    same = jnp.all(jnp.stack([jnp.all(a == b) for a, b in pairs]))
    first = plan.n_steps - 1 if plan.reverse else 0
    mismatch = jnp.where((mismatch < 0) & ~same, first, mismatch)
    _raise_at(mismatch, TrajectoryMismatchError)
    # inside jax.shard_map: a mismatch on any device poisons every gradient (a no-op outside)
    anywhere = sum_like((mismatch >= 0).astype(jnp.int32), jnp.int32(0)) > 0
    poison = lambda grads: [jnp.where(anywhere, jnp.nan, g) for g in grads]  # noqa: E731
    none = lambda tree: jax.tree_util.tree_map(lambda _: None, tree)  # noqa: E731
    params_ct = with_floats(params, poison(d_params))
    carry_ct_out = with_floats(carry0, poison(d_carry))
    xs_ct = with_floats(xs, poison(d_xs)) if x_wanted else none(xs)
    return params_ct, carry_ct_out, xs_ct, None if lengths is None else none(lengths)


_reversible.defvjp(_fwd, _bwd, symbolic_zeros=True)
