"""Exactly reversible momentum SGD as an optax ``GradientTransformation``, with undo.

The state keeps theta, v and the information buffer as fixed-point words, pytrees like
params, and each update takes the exact step of :func:`step.forward_step`

    v(k+1) = beta v(k) - alpha_k g_k,   theta(k+1) = theta(k) + v(k+1)

returning ``updates = float(theta(k+1)) - params``, so that ``optax.apply_updates`` lands
on theta(k+1) to one rounding (on ``float(theta(k))`` instead of params when update gets
none). The spill schedule of the buffer is computed once for ``max_steps`` steps
(constant beta), so the state has static shapes and ``update`` runs under ``jit``. For
exact undo, compute each gradient at ``params_of(opt, state)`` (the exact parameters) with
the same compiled gradient function each time. :func:`undo` takes a step back
(:func:`step.inverse_step`):

    theta(k) = theta(k+1) - v(k+1),   v(k) = (v(k+1) + alpha_k ∇J(theta(k))) / beta

Each update is one pass over each leaf. In a user's loop XLA:CPU also copies the words of
the state after every update (a one-pass loop cannot overwrite its inputs, and the user's
loop does not alternate two sets of buffers as :func:`jaxrnn.reversible.forward` does), so
a loop of exact steps is fastest as ``forward`` (``bench/RESULTS.md``).

Reference loop:

    opt = reversible_momentum(0.1, 0.9, max_steps=T)
    state = opt.init(params)
    for k in range(T):
        updates, state = opt.update(grad(loss)(params_of(opt, state)), state)
    for k in range(T):
        state = undo(opt, state, grad(loss))   # params_of(opt, state) == params, bit for bit
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn._checks import check_positive_int
from jaxrnn._deprecated import alias
from jaxrnn.exact import buffer
from jaxrnn.reversible import schedules
from jaxrnn.reversible import step as exact_step
from jaxrnn.reversible.state import (
    DEFAULT_FRAC_BITS,
    FixedPointOverflowError,
    TrajectoryMismatchError,
    raise_if_failed,
    validate_frac_bits,
)


class ReversibleMomentumState(NamedTuple):
    """Words per parameter leaf (pytrees like params), the step count and the undo check."""

    theta: Any  # fixed_point.Word per leaf
    velocity: Any  # fixed_point.Word per leaf
    word: Any  # uint32 buffer word per leaf
    slots: Any  # (S, *shape) uint8 per leaf: the bytes max_steps steps spill
    dtypes: Any  # pytree like params of empty arrays carrying each leaf's float dtype
    step: Any  # int32: steps taken
    fingerprint: Any  # uint32: step.fingerprint of the words at step 0
    mismatch_step: Any  # int32: the step an undo found a different gradient at, else -1

    @property
    def bad_step(self) -> jax.Array:
        """The first step whose values left the fixed-point range (int32), -1 if none."""
        return exact_step.failed_step(self.theta)


class ReversibleMomentum(NamedTuple):
    """An optax ``GradientTransformation`` (``init``, ``update``) plus its static schedule."""

    init: Any
    update: Any
    alphas: Any  # (max_steps,) the tabulated step sizes
    numerator: int
    frac_bits: int
    spill: Any
    slot: Any


def reversible_momentum(
    learning_rate, momentum: float, *, max_steps: int, frac_bits: int = DEFAULT_FRAC_BITS
) -> ReversibleMomentum:
    """Exact, undoable momentum SGD for a standard optax loop.

    Args:
      learning_rate: alpha > 0, or an optax schedule ``count -> alpha``.
      momentum: beta in (0, 1), used as n / 2^16.
      max_steps: the most steps the state can take (sizes the buffer's spill slots); a
        step beyond fails (see :func:`raise_if_failed`).
      frac_bits: fractional bits of the fixed-point words.
    Returns:
      a :class:`ReversibleMomentum`, usable wherever an optax ``GradientTransformation``
      is (it has ``init`` and ``update``); pass it to :func:`undo`.
    """
    check_positive_int(max_steps, name="max_steps")
    max_steps, frac_bits = int(max_steps), validate_frac_bits(frac_bits)
    # The step sizes are tabulated once, so that update and undo use identical alpha_k.
    if callable(learning_rate):
        alphas = np.asarray(jax.vmap(learning_rate)(jnp.arange(max_steps)))
    else:
        alphas = np.full(max_steps, learning_rate, dtype=np.asarray(learning_rate).dtype)
    scalar = jax.tree_util.tree_structure(0)
    schedules.validate_schedules(scalar, alphas, np.full(max_steps, momentum))
    n = buffer.numerator(momentum)
    spill, slot, _ = buffer.spill_schedule(0, [n] * max_steps)
    n_slots = int(spill.sum())
    tables = (jnp.asarray(alphas), n, jnp.asarray(spill), jnp.asarray(slot))

    def init_fn(params):
        # Arrays typed like params (inside shard_map: varying over the same axes).
        words = exact_step.words_of(params, frac_bits)
        slots = lambda p: jnp.broadcast_to(jnp.zeros_like(p, jnp.uint8), (n_slots, *p.shape))
        fingerprint = exact_step.fingerprint(words)
        return ReversibleMomentumState(
            theta=words.theta,
            velocity=words.velocity,
            word=words.word,
            slots=jax.tree.map(slots, params),
            dtypes=jax.tree.map(lambda p: jnp.zeros((0,), p.dtype), params),
            step=jnp.zeros((), jnp.int32),
            fingerprint=fingerprint,
            mismatch_step=jnp.full_like(fingerprint, -1, jnp.int32),
        )

    def update_fn(updates, state, params=None):
        dtypes = jax.tree.map(lambda like: like.dtype, state.dtypes)
        if params is None:
            params = exact_step.floats_of(state.theta, frac_bits, dtypes)
        words = exact_step.Words(state.theta, state.velocity, state.word, state.slots)
        inputs = _inputs_at(tables, state.step, state.dtypes)
        taken = exact_step.forward_step(words, updates, inputs, frac_bits, dtypes, params)
        new = taken.words
        return taken.floats, state._replace(
            theta=new.theta, velocity=new.velocity, word=new.word, slots=new.slots,
            step=state.step + 1,
        )  # fmt: skip

    return ReversibleMomentum(init_fn, update_fn, tables[0], n, frac_bits, *tables[2:])


def params_of(opt: ReversibleMomentum, state: ReversibleMomentumState):
    """The exact current parameters theta(k) as floats (compute gradients here for undo)."""
    dtypes = jax.tree.map(lambda like: like.dtype, state.dtypes)
    return exact_step.floats_of(state.theta, opt.frac_bits, dtypes)


def undo(opt: ReversibleMomentum, state: ReversibleMomentumState, grad_fn):
    """Undo the last update exactly: ``grad_fn(params) -> grads`` is evaluated at theta(k).

    Returns the previous state (bit for bit, when ``grad_fn`` computes exactly the gradient
    used forward: use the same compiled function, e.g. one ``jax.jit(jax.grad(loss))``, both
    ways, since eager and fused evaluation may round differently). On reaching step 0 the
    words are compared with a fingerprint of those of ``init``: a gradient that differed at
    any step shows there (the inverse step is injective) and sets ``mismatch_step``, as
    does an undo past step 0 (which leaves the state as it is); :func:`raise_if_failed`
    raises.
    """
    k = state.step - 1
    dtypes = jax.tree.map(lambda like: like.dtype, state.dtypes)
    words = exact_step.Words(state.theta, state.velocity, state.word, state.slots)

    def back(words):
        tables = (opt.alphas, opt.numerator, opt.spill, opt.slot)
        inputs = _inputs_at(tables, k, state.dtypes)
        words = exact_step.inverse_step(words, grad_fn, inputs, opt.frac_bits, dtypes).words
        at_start = jax.lax.cond(
            k == 0, lambda: exact_step.fingerprint(words) != state.fingerprint, lambda: False
        )
        return words, at_start

    words, mismatch = jax.lax.cond(k < 0, lambda words: (words, True), back, words)
    step = jnp.maximum(k, 0)
    return state._replace(
        theta=words.theta,
        velocity=words.velocity,
        word=words.word,
        step=step,
        mismatch_step=jnp.where((state.mismatch_step < 0) & mismatch, step, state.mismatch_step),
    )


def _inputs_at(tables, k, like) -> schedules.StepInputs:
    """The inputs of step k, the same for every leaf of ``like``.

    ``tables``: the (max_steps,) step sizes, the numerator, the (max_steps,) spill flags and
    slots. Past max_steps the step size is NaN: the step fails, and says so.
    """
    alphas, numerator, spill, slot = tables
    i = jnp.clip(k, 0, alphas.shape[0] - 1)
    alpha = jnp.where(k < alphas.shape[0], alphas[i], jnp.nan).astype(alphas.dtype)
    shared = (alpha, jnp.uint32(numerator), spill[i], slot[i])
    return schedules.StepInputs(k, *(jax.tree.map(lambda _, x=x: x, like) for x in shared))


@raise_if_failed.register
def _(state: ReversibleMomentumState):
    bad, mismatch = int(state.bad_step), int(state.mismatch_step)
    if bad >= 0:
        raise FixedPointOverflowError(
            f"reversible_momentum: a value left the fixed-point range, a gradient was not "
            f"finite or max_steps was exceeded at step {bad}"
        )
    if mismatch >= 0:
        raise TrajectoryMismatchError(
            f"undo: the gradient given at step {mismatch} differs from the one used forward "
            "(or there was no step to undo)"
        )
    return state


def as_gradient_transformation(opt: ReversibleMomentum) -> optax.GradientTransformation:
    """The plain ``optax.GradientTransformation(init, update)`` of ``opt``."""
    return optax.GradientTransformation(opt.init, opt.update)


check = alias(
    raise_if_failed,
    "jaxrnn.reversible.optax_transform.check",
    "jaxrnn.reversible.raise_if_failed",
)
