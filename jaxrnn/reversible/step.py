"""One exact momentum step and its inverse, over whole pytrees of fixed-point words (SPEC §7).

    forward (step k):                            inverse (step k):
      v(k+1)     = beta_k v(k) - q(alpha_k g_k)      theta(k) = theta(k+1) - v(k+1)
      theta(k+1) = theta(k) + v(k+1)                 g_k      = ∇J(theta(k))
                                                     v(k)     = (v(k+1) + q(alpha_k g_k)) / beta_k

with g_k = ∇J(theta(k)), ``q`` rounding to the grid 2^-F once (the same way both ways, so
the additions are exact) and the multiplication by beta_k = n_k / 2^16 made exact by the
information buffer (:func:`jaxrnn.exact.buffer.mul_ratio`, spilling a byte to a slot first
where the static schedule says so). theta and v are 64-bit words (:mod:`jaxrnn.exact.
fixed_point`); theta must stay within ±2^62 units, v and q(alpha g) within ±2^61, which
rules out any wrap-around. Reference loop, with Python integers (one leaf):

    theta, v, B = words
    if spill[k]: slots[slot[k]], B = B >> 24, B & (2**24 - 1)
    v, B = buffer.mul_ratio(v, B, n[k])             # v <- beta_k v, lost digits into B
    v = v - round(alpha[k] * g * 2**F)
    theta = theta + v

A step that leaves a guard range, or whose alpha_k g_k is not finite, does not stop the
loop: the entries where it happened are *marked* (theta's high word set to 2^31, outside
any theta in range, its low word to k) and stay marked, so that :func:`failed_step` finds
the first failed step after a whole run of steps, with no check inside the loop.

Each leaf's step is one pass over its entries (:func:`xla_cpu.one_pass`), which also emits
the float parameters the next gradient is evaluated at.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.exact import buffer
from jaxrnn.exact import fixed_point as fp
from jaxrnn.reversible import xla_cpu

THETA_BITS, VELOCITY_BITS = 62, 61  # guard ranges (integer bits of the 64-bit words)
FAILED = np.uint32(1 << 31)  # theta's high word of a marked entry (NumPy: no JAX at import)


class Words(NamedTuple):
    """The exact state of a parameter pytree; each field has the parameters' structure."""

    theta: Any  # fixed_point.Word per leaf
    velocity: Any  # fixed_point.Word per leaf
    word: Any  # uint32 buffer word per leaf
    slots: Any  # (S, *shape) uint8 per leaf: the bytes a run of steps spills (or restores)


class ForwardStep(NamedTuple):
    """Result of :func:`forward_step`."""

    words: Words  # theta(k+1), v(k+1), the buffer after step k
    floats: Any  # float(theta(k+1)) per leaf, minus ``relative_to`` when that is given


class InverseStep(NamedTuple):
    """Result of :func:`inverse_step`."""

    words: Words  # theta(k), v(k), the buffer before step k
    params: Any  # float(theta(k)) per leaf: where the gradient was evaluated
    grads: Any  # g_k, as ``grad_fn`` returned it
    aux: Any  # what ``grad_fn`` returned besides (``has_aux``), else None


def forward_step(words: Words, grads, inputs, frac_bits: int, dtypes, relative_to=None):
    """Step k forward: theta(k), v(k), buffer -> theta(k+1), v(k+1), buffer.

    Args:
      words: the state at step k.
      grads: g_k = ∇J(theta(k)) per leaf (any float dtype; used in the leaf's dtype).
      inputs: :class:`~jaxrnn.reversible.schedules.StepInputs` of step k, per-leaf fields
        with the parameters' structure.
      frac_bits: F.
      dtypes: the float dtype of each leaf.
      relative_to: optional floats per leaf, subtracted from float(theta(k+1)).
    Returns:
      a :class:`ForwardStep`.
    """
    per_leaf = [words.theta, words.velocity, words.word, words.slots, grads, dtypes, *inputs[1:]]
    per_leaf += [] if relative_to is None else [relative_to]

    def leaf(theta, vel, word, slots, grad, dtype, alpha, n, spill, slot, base=None):
        word, slots = buffer.spill(word, slots, spill, slot)
        alpha = jnp.asarray(alpha).astype(dtype)

        def kernel(theta_hi, theta_lo, v_hi, v_lo, word, grad, *base):
            theta, vel = fp.Word(theta_hi, theta_lo), fp.Word(v_hi, v_lo)
            step_word, bad = fp.from_float(alpha * grad.astype(dtype), frac_bits, VELOCITY_BITS)
            scaled, word, _ = buffer.mul_ratio(vel, word, n)
            vel = fp.sub(scaled, step_word)
            new = fp.add(theta, vel)
            failed = bad | ~fp.fits(vel, VELOCITY_BITS) | ~fp.fits(new, THETA_BITS)
            new = _mark(theta, new, failed, inputs.k)
            floats = fp.to_float(new, frac_bits, dtype)
            return [new.hi, new.lo, vel.hi, vel.lo, word, floats - base[0] if base else floats]

        extra = () if base is None else (base,)
        out = xla_cpu.one_pass(kernel, theta.hi, theta.lo, vel.hi, vel.lo, word, grad, *extra)
        return _PerLeaf(fp.Word(*out[:2]), fp.Word(*out[2:4]), out[4], slots, out[5])

    *fields, floats = _unzip(jax.tree.map(leaf, *per_leaf, is_leaf=_is_word), 5)
    return ForwardStep(Words(*fields), floats)


def inverse_step(
    words: Words, grad_fn, inputs, frac_bits: int, dtypes, *, has_aux: bool = False
) -> InverseStep:
    """Step k backward: theta(k+1), v(k+1), buffer -> theta(k), v(k), buffer.

    Args:
      words: the state after step k.
      grad_fn: ``grad_fn(params) -> grads`` (or ``(grads, aux)`` with ``has_aux``), params
        and grads with the structure of ``words.theta``; evaluated once, at theta(k).
      inputs, frac_bits, dtypes: as for :func:`forward_step`.
    Returns:
      an :class:`InverseStep`. Where the slots give back a byte, the byte is XORed into
      the buffer word (whose high byte is 0 when the gradient recomputes exactly), so that
      the inverse stays injective and a different gradient shows in the words it returns.
    """

    def position(theta, vel, dtype):
        def kernel(theta_hi, theta_lo, v_hi, v_lo):
            theta = fp.sub(fp.Word(theta_hi, theta_lo), fp.Word(v_hi, v_lo))
            return [theta.hi, theta.lo, fp.to_float(theta, frac_bits, dtype)]

        hi, lo, floats = xla_cpu.one_pass(kernel, theta.hi, theta.lo, vel.hi, vel.lo)
        return _PerLeaf(fp.Word(hi, lo), floats)

    moved = jax.tree.map(position, words.theta, words.velocity, dtypes, is_leaf=_is_word)
    theta, params = _unzip(moved, 2)
    grads, aux = grad_fn(params) if has_aux else (grad_fn(params), None)

    def velocity(vel, word, slots, grad, dtype, alpha, n, spill, slot):
        alpha = jnp.asarray(alpha).astype(dtype)

        def kernel(v_hi, v_lo, word, grad, slots):
            step_word, _ = fp.from_float(alpha * grad.astype(dtype), frac_bits, VELOCITY_BITS)
            vel, word = buffer.unmul_ratio(fp.add(fp.Word(v_hi, v_lo), step_word), word, n)
            word, _ = buffer.restore(word, slots, spill, slot)
            return [vel.hi, vel.lo, word]

        hi, lo, word = xla_cpu.one_pass(kernel, vel.hi, vel.lo, word, grad, slots)
        return _PerLeaf(fp.Word(hi, lo), word)

    per_leaf = [words.velocity, words.word, words.slots, grads, dtypes, *inputs[1:]]
    velocity_words, word = _unzip(jax.tree.map(velocity, *per_leaf, is_leaf=_is_word), 2)
    return InverseStep(Words(theta, velocity_words, word, words.slots), params, grads, aux)


def words_of(params, frac_bits: int) -> Words:
    """The words of float ``params`` (a pytree) with v = 0 and an empty buffer.

    Entries outside the range of theta (or not finite) are marked as failed at step 0.
    """

    def leaf(x):
        theta, overflow = fp.from_float(x, frac_bits, THETA_BITS)
        theta = _mark(theta, theta, overflow, jnp.int32(0))
        zeros = jnp.zeros_like(x, jnp.uint32)  # typed like x (inside shard_map: its axes)
        slots = jnp.zeros((0, *x.shape), buffer.SLOT_DTYPE)
        return _PerLeaf(theta, fp.Word(zeros, zeros), zeros, slots)

    return Words(*_unzip(jax.tree.map(leaf, params), 4))


def floats_of(theta, frac_bits: int, dtypes):
    """float(theta) per leaf, in each leaf's dtype."""
    return jax.tree.map(
        lambda t, dt: fp.to_float(t, frac_bits, dt), theta, dtypes, is_leaf=_is_word
    )


def failed_step(theta) -> jax.Array:
    """The first step a marked entry of ``theta`` records (int32), -1 if none is marked."""
    limit = jnp.iinfo(jnp.int32).max

    def first(t):
        steps = jax.lax.bitcast_convert_type(t.lo, jnp.int32)
        return xla_cpu.min_all(jnp.where(t.hi == FAILED, steps, limit))

    earliest = jnp.min(jnp.stack(jax.tree.leaves(jax.tree.map(first, theta, is_leaf=_is_word))))
    return jnp.where(earliest == limit, -1, earliest).astype(jnp.int32)


def out_of_range(theta, velocity) -> jax.Array:
    """True if some theta or v word is outside its guard range or marked (a scalar)."""
    flags = jax.tree.map(
        lambda t, v: jnp.any(~fp.fits(t, THETA_BITS) | ~fp.fits(v, VELOCITY_BITS)),
        theta, velocity, is_leaf=_is_word,
    )  # fmt: skip
    return jnp.any(jnp.stack(jax.tree.leaves(flags)))


def fingerprint(words: Words) -> jax.Array:
    """A uint32 digest of theta, v and the buffer words (not the slots) of all leaves.

    Each word set is salted by its leaf and field (:func:`fixed_point.fingerprint`), so
    that entries trading places show. Reverse compares the state it reconstructs with the
    fingerprint the forward call took of its start: the inverse is injective, so a
    recomputed gradient that differs anywhere changes the reconstructed words.
    """
    leaves = zip(
        jax.tree.leaves(words.theta, is_leaf=_is_word),
        jax.tree.leaves(words.velocity, is_leaf=_is_word),
        jax.tree.leaves(words.word),
        strict=True,
    )
    total = jnp.uint32(0)
    for i, (theta, vel, word) in enumerate(leaves):
        sets = (theta, vel, fp.Word(word, word))
        terms = sum(fp.fingerprint_terms(w, 3 * i + j) for j, w in enumerate(sets))
        total = total + xla_cpu.sum_all(terms)  # one pass over the leaf's words
    return total


def _mark(theta, new, failed, k):
    """``new``, with the entries that fail now or were marked before marked (see above)."""
    before = theta.hi == FAILED
    step = jax.lax.bitcast_convert_type(jnp.asarray(k, jnp.int32), jnp.uint32)
    hi = jnp.where(before | failed, FAILED, new.hi)
    lo = jnp.where(before, theta.lo, jnp.where(failed, step, new.lo))
    return fp.Word(hi, lo)


def _is_word(x) -> bool:
    return isinstance(x, fp.Word)


class _PerLeaf:
    """The results of one leaf, kept together (as one pytree leaf) while mapping."""

    def __init__(self, *values):
        self.values = values


def _unzip(results, n: int) -> list:
    """A pytree of :class:`_PerLeaf` as ``n`` pytrees, one per result."""
    return [jax.tree.map(lambda r, i=i: r.values[i], results) for i in range(n)]
