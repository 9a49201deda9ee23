"""The information buffer: exact multiplication of the velocity by beta = n / 2^16.

Multiplying an integer velocity v by beta < 1 destroys information; the buffer keeps
exactly the destroyed digits (Maclaurin, Duvenaud & Adams, ICML 2015). With d = 2^16 and
an unsigned buffer integer B (the *word*, one ``uint32`` per parameter), one step is

    forward (v, B) -> (v', B'):             reverse (v', B') -> (v, B):
      r1 = v mod d,  q = floor(v / d)          r2 = v' mod n,  q = floor(v' / n)
      B1 = B · d + r1        (push r1)         B1 = B' · n + r2     (push r2)
      r2 = B1 mod n, B' = floor(B1 / n) (pop)  r1 = B1 mod d, B = floor(B1 / d)  (pop)
      v' = q · n + r2                          v = q · d + r1

Each line of the reverse column undoes one line of the forward column, so the pair is an
exact bijection of integers. v' = floor(v / d) · n + r2 differs from beta · v by less than
n units of the last place; the buffer grows by log2(d / n) = log2(1 / beta) bits per step
on average, exactly the information destroyed (SPEC §7: det = beta^D).

The word has a fixed width of 32 bits. If B <= M before a step, then after it B' <=
floor((M · d + d - 1) / n) (the *bound*); the bound depends only on the beta schedule, so
the host computes it in advance. Before a step whose bound would reach 2^32, the high 16
bits of the word are *spilled* to a preallocated ``uint16`` slot and the word keeps its
low 16 bits (bound 2^16 - 1), which still feed the next pops; the reverse pass restores
them after undoing that step, and checks that the high half it finds there is 0 (a
gradient that recomputes differently breaks this). A spilled half holds at least
16 - log2(1/beta) bits of information, so the stored bits stay within 1/(16 - log2(1/beta))
of D · sum_k log2(1 / beta_k), plus the 32-bit words. The 32-bit word keeps the division
by n short (two 16-bit limbs: the top limb is < n by the schedule, so its quotient is 0).

Reference loop of the arithmetic with Python integers (what :func:`mul_ratio` computes):

    def mul_ratio(v, B, n):
        q, r1 = divmod(v, 2**16)
        B, r2 = divmod(B * 2**16 + r1, n)
        return q * n + r2, B
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrnn.reversible import fixed_point as fp

BETA_BITS = 16
DENOMINATOR = 1 << BETA_BITS
WORD_LIMIT = 1 << 32
HALF_WORD = (1 << 16) - 1
WORD_BITS, SLOT_BITS = 32, 16


def numerator(beta: float) -> int:
    """The n of beta ≈ n / 2^16 (nearest); beta must lie in (0, 1) and round to 1 <= n < 2^16."""
    n = int(round(float(beta) * DENOMINATOR))
    return min(max(n, 1), DENOMINATOR - 1)


def mul_ratio(v: fp.Word, word, n):
    """(v', word', overflow): v' = v · n / 2^16 exactly, the lost digits kept in ``word``.

    ``word`` is a ``uint32`` array. ``overflow`` is True where the new word would not fit
    32 bits, i.e. where its top 16-bit limb is >= n (cannot happen when the spill schedule
    was followed; then the top quotient limb is 0 and its division is skipped).
    """
    r1 = v.lo & fp.MASK16
    top = word >> 16
    n = jnp.asarray(n, jnp.uint32)
    (q_hi, q_lo), _ = fp.long_divmod([word & fp.MASK16, r1], n, rem=top)
    new_word = lax.optimization_barrier((q_hi << 16) | q_lo)
    # r2 = B1 - new_word * n < n: exact in wrapping uint32 arithmetic (B1 = word · 2^16 + r1).
    r2 = ((word << 16) | r1) - new_word * n
    v_new = fp.mul_small(fp.shift_right_16(v), n, r2)
    return v_new, new_word, top >= n


def unmul_ratio(v_new: fp.Word, word, n):
    """The exact inverse of :func:`mul_ratio`: (v, word) from (v', word')."""
    q, r2 = fp.floor_divmod_signed(v_new, n)
    b2, b1, r1 = fp.mul_add_limbs([word >> 16, word & fp.MASK16], n, r2)
    return fp.shift_left_16_or(q, r1), (b2 << 16) | b1


def spill(word, slots, flag, slot):
    """Before a spilling step (``flag``): move the high half of ``word`` to ``slots[slot]``.

    ``slots`` is a (S, *word.shape) ``uint16`` array; for other steps the slot is rewritten
    unchanged.
    """
    if slots.shape[0] == 0:
        return word, slots
    high = (word >> 16).astype(jnp.uint16)
    slots = slots.at[slot].set(jnp.where(flag, high, slots[slot]))
    return jnp.where(flag, word & fp.MASK16, word), slots


def restore(word, slots, flag, slot):
    """Undo :func:`spill`: (word, mismatch); ``mismatch`` is True where the high half was not 0."""
    if slots.shape[0] == 0:
        return word, jnp.zeros(word.shape, bool)
    mismatch = flag & ((word >> 16) != 0)
    restored = (slots[slot].astype(jnp.uint32) << 16) | (word & fp.MASK16)
    return jnp.where(flag, restored, word), mismatch


@functools.lru_cache(maxsize=256)
def _schedule(start_bound: int, numerators: tuple) -> tuple:
    bound, spills = start_bound, []
    for step, n in enumerate(numerators):
        if (bound * DENOMINATOR + DENOMINATOR - 1) // n >= WORD_LIMIT:
            spills.append(step)
            bound = min(bound, HALF_WORD)
        bound = (bound * DENOMINATOR + DENOMINATOR - 1) // n
    return tuple(spills), bound


def spill_schedule(start_bound: int, numerators) -> tuple[np.ndarray, np.ndarray, int]:
    """The static spill schedule of a run of steps, computed on the host from the betas.

    Args:
      start_bound: the largest value the word can hold before the first step.
      numerators: (T,) the n_k of beta_k = n_k / 2^16.
    Returns:
      (spill, slot, end_bound): ``spill`` (T,) bool, True before the steps that spill;
      ``slot`` (T,) int32, the slot (0, 1, ...) each spilling step writes (the last slot
      for the others, rewritten unchanged); ``end_bound``, the bound after the last step.
    """
    numerators = tuple(int(n) for n in numerators)
    steps, end_bound = _schedule(int(start_bound), numerators)
    spill = np.zeros(len(numerators), bool)
    spill[list(steps)] = True
    slot = np.cumsum(spill, dtype=np.int32) - 1
    slot = np.where(spill, slot, max(len(steps) - 1, 0)).astype(np.int32)
    return spill, slot, end_bound
