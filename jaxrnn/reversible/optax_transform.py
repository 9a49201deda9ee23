"""Exactly reversible momentum SGD as an optax ``GradientTransformation``, with undo.

The transformation keeps theta, v and the information buffer as fixed-point words in its
state and performs the exact step of :mod:`jaxrnn.reversible.sgd`

    v(k+1) = beta v(k) - alpha_k g_k,   theta(k+1) = theta(k) + v(k+1)

returning ``updates = float(theta(k+1)) - float(theta(k))``. The spill schedule of the
buffer is computed once for ``max_steps`` steps (constant beta), so the state has static
shapes and ``update`` runs under ``jit``. For exact undo, compute each gradient at
``params_of(state)`` (the exact parameters; ``optax.apply_updates`` agrees with them to
rounding) with the same compiled gradient function each time. :func:`undo` steps back:

    theta(k) = theta(k+1) - v(k+1),   v(k) = (v(k+1) + alpha_k ∇J(theta(k))) / beta

Reference loop:

    opt = reversible_momentum(0.1, 0.9, max_steps=T)
    state = opt.init(params)
    for k in range(T):
        updates, state = opt.update(grad(loss)(params_of(state)), state)
    for k in range(T):
        state = undo(opt, state, grad(loss))   # params_of(state) == params, bit for bit
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn.exact import buffer
from jaxrnn.exact import fixed_point as fp
from jaxrnn.reversible import sgd


class ReversibleMomentumState(NamedTuple):
    """Words per parameter leaf (pytrees like params), the step count and the check flags."""

    theta: Any
    velocity: Any
    word: Any
    slots: Any
    dtypes: Any  # pytree like params of empty arrays carrying each leaf's float dtype
    step: Any
    bad_step: Any
    mismatch_step: Any
    checksum: Any  # sum of fingerprints of the rounded steps taken (uint32); 0 at step 0


def _is_word(x) -> bool:
    return isinstance(x, fp.Word)


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
    learning_rate, momentum: float, *, max_steps: int, frac_bits: int = sgd.DEFAULT_FRAC_BITS
):
    """Exact, undoable momentum SGD for a standard optax loop.

    Args:
      learning_rate: alpha > 0, or an optax schedule ``count -> alpha``.
      momentum: beta in (0, 1), used as n / 2^16.
      max_steps: the most steps the state can take (sizes the buffer's spill slots).
      frac_bits: fractional bits of the fixed-point words.
    Returns:
      a :class:`ReversibleMomentum`, usable wherever an optax ``GradientTransformation``
      is (it has ``init`` and ``update``); pass it to :func:`undo`.
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)):
        raise ValueError(f"max_steps: expected a positive integer, got {max_steps!r}")
    if max_steps < 1:
        raise ValueError(f"max_steps: expected a positive integer, got {max_steps}")
    # The step sizes are tabulated once, so that update and undo use identical alpha_k.
    if callable(learning_rate):
        alphas = np.asarray(jax.vmap(learning_rate)(jnp.arange(max_steps)))
    else:
        alphas = np.full(max_steps, learning_rate, dtype=np.asarray(learning_rate).dtype)
    sgd._check_schedules(
        sgd.init(jnp.zeros(()), frac_bits=frac_bits), alphas, np.full(max_steps, momentum)
    )
    alpha_table = jnp.asarray(alphas)
    n = buffer.numerator(momentum)
    spill, slot, _ = buffer.spill_schedule(0, [n] * int(max_steps))
    n_slots = int(spill.sum())
    spill_arr, slot_arr = jnp.asarray(spill), jnp.asarray(slot)

    def alpha_at(step):
        return alpha_table[jnp.clip(step, 0, max_steps - 1)]

    def init_fn(params):
        start = sgd.init(params, frac_bits=frac_bits)
        tree = start.treedef.unflatten
        return ReversibleMomentumState(
            theta=tree(start.theta),
            velocity=tree(start.velocity),
            word=tree(start.word),
            slots=tree([jnp.zeros((n_slots, *w.shape), buffer.SLOT_DTYPE) for w in start.word]),
            dtypes=tree([jnp.zeros((0,), dt) for dt in start.dtypes]),
            step=jnp.zeros((), jnp.int32),
            bad_step=start.bad_step,
            mismatch_step=jnp.asarray(-1, jnp.int32),
            checksum=jnp.zeros((), jnp.uint32),
        )

    def update_fn(updates, state, params=None):
        del params
        treedef = jax.tree_util.tree_structure(updates)
        grads = treedef.flatten_up_to(updates)
        k = state.step
        flag, slot_k = (
            spill_arr[jnp.minimum(k, max_steps - 1)],
            slot_arr[jnp.minimum(k, max_steps - 1)],
        )
        parts = [treedef.flatten_up_to(x) for x in state[:5]]
        out, delta, overflow, bad_input = [[], [], [], []], [], k >= max_steps, False
        checksum = state.checksum
        for theta, vel, word, slots, like, g in zip(*parts, grads, strict=True):
            dt = like.dtype
            new = sgd.forward_leaf(
                theta, vel, word, slots, sgd.alpha_times(alpha_at(k), g, dt),
                jnp.uint32(n), flag, slot_k, frac_bits,
            )  # fmt: skip
            for lst, item in zip(out, new[:4], strict=True):
                lst.append(item)
            overflow = overflow | new[6]
            bad_input = bad_input | new[5]
            checksum = checksum + fp.fingerprint(new[4], k)
            delta.append(fp.to_float(new[0], frac_bits, dt) - fp.to_float(theta, frac_bits, dt))
        bad = jnp.where((state.bad_step < 0) & bad_input, k - 1, state.bad_step)
        bad = jnp.where((bad < 0) & overflow, k, bad)
        new_state = state._replace(
            theta=treedef.unflatten(out[0]),
            velocity=treedef.unflatten(out[1]),
            word=treedef.unflatten(out[2]),
            slots=treedef.unflatten(out[3]),
            step=k + 1,
            bad_step=bad.astype(jnp.int32),
            checksum=checksum,
        )
        return treedef.unflatten(delta), new_state

    return ReversibleMomentum(init_fn, update_fn, alpha_table, n, frac_bits, spill_arr, slot_arr)


def params_of(opt: ReversibleMomentum, state: ReversibleMomentumState):
    """The exact current parameters theta(k) as floats (compute gradients here for undo)."""
    words = jax.tree_util.tree_leaves(state.theta, is_leaf=_is_word)
    likes = jax.tree_util.tree_leaves(state.dtypes)
    treedef = jax.tree_util.tree_structure(state.dtypes)
    return treedef.unflatten(
        [fp.to_float(w, opt.frac_bits, like.dtype) for w, like in zip(words, likes, strict=True)]
    )


def undo(opt: ReversibleMomentum, state: ReversibleMomentumState, grad_fn):
    """Undo the last update exactly: ``grad_fn(params) -> grads`` is evaluated at theta(k).

    Returns the previous state (bit for bit, when ``grad_fn`` computes exactly the gradient
    used forward: use the same compiled function, e.g. one ``jax.jit(jax.grad(loss))``, both
    ways, since eager and fused evaluation may round differently). A mismatch is detected
    where the buffer restores a spilled byte, and by the checksum of all steps on reaching
    step 0; it sets ``mismatch_step`` (as does an undo past step 0); :func:`check` raises.
    """
    treedef = jax.tree_util.tree_structure(state.dtypes)
    theta, vel, word, slots, likes = [treedef.flatten_up_to(x) for x in state[:5]]
    k = state.step - 1
    index = jnp.clip(k, 0, opt.spill.shape[0] - 1)
    flag, slot_k = opt.spill[index], opt.slot[index]
    theta = [sgd.undo_position(t, v) for t, v in zip(theta, vel, strict=True)]
    floats = [
        fp.to_float(t, opt.frac_bits, like.dtype) for t, like in zip(theta, likes, strict=True)
    ]
    grads = treedef.flatten_up_to(grad_fn(treedef.unflatten(floats)))
    alpha = opt.alphas[index]
    new_vel, new_word, mismatch, checksum = [], [], k < 0, state.checksum
    for i, like in enumerate(likes):
        v, w, step_word, bad = sgd.undo_velocity_leaf(
            vel[i], word[i], slots[i], sgd.alpha_times(alpha, grads[i], like.dtype),
            jnp.uint32(opt.numerator), flag, slot_k, opt.frac_bits,
        )  # fmt: skip
        new_vel.append(v)
        new_word.append(w)
        mismatch = mismatch | bad
        checksum = checksum - fp.fingerprint(step_word, k)
    mismatch = mismatch | ((k == 0) & (checksum != 0))
    previous = jnp.where((state.mismatch_step < 0) & mismatch, k, state.mismatch_step)
    return state._replace(
        theta=treedef.unflatten(theta),
        velocity=treedef.unflatten(new_vel),
        word=treedef.unflatten(new_word),
        step=jnp.maximum(k, 0),
        mismatch_step=previous.astype(jnp.int32),
        checksum=checksum,
    )


def check(state: ReversibleMomentumState) -> ReversibleMomentumState:
    """Raise if the optimizer state records an overflow or an undo mismatch; else return it."""
    bad, mismatch = int(state.bad_step), int(state.mismatch_step)
    words = [jax.tree_util.tree_leaves(x, is_leaf=_is_word) for x in (state.theta, state.velocity)]
    if bad < 0 and any(bool(sgd.out_of_range(t, v)) for t, v in zip(*words, strict=True)):
        bad = int(state.step) - 1  # produced by the last update
    if bad >= 0:
        raise sgd.FixedPointOverflowError(
            f"reversible_momentum: a value left the fixed-point range, a gradient was not "
            f"finite or max_steps was exceeded at step {bad}"
        )
    if mismatch >= 0:
        raise sgd.TrajectoryMismatchError(
            f"undo: the gradient given at step {mismatch} differs from the one used forward "
            "(or there was no step to undo)"
        )
    return state


def as_gradient_transformation(opt: ReversibleMomentum) -> optax.GradientTransformation:
    """The plain ``optax.GradientTransformation(init, update)`` of ``opt``."""
    return optax.GradientTransformation(opt.init, opt.update)
