"""The information buffer: exact multiplication of the velocity by beta = n / 2^16.

Multiplying an integer velocity v by beta < 1 destroys information; the buffer keeps
exactly the destroyed digits (Maclaurin, Duvenaud & Adams, ICML 2015). With d = 2^16 and
an unsigned buffer integer B (the *word*, one ``uint32`` per parameter), one step is

    forward (v, B) -> (v', B'):             reverse (v', B') -> (v, B):
      r2 = B mod n,  B1 = floor(B / n) (pop)   r1 = B' mod d, B1 = floor(B' / d)  (pop)
      r1 = v mod d,  q = floor(v / d)          r2 = v' mod n, q = floor(v' / n)
      B' = B1 · d + r1        (push r1)        B = B1 · n + r2      (push r2)
      v' = q · n + r2                          v = q · d + r1

Each line of the reverse column undoes one line of the forward column, so the pair is an
exact bijection of integers. v' = floor(v / d) · n + r2 differs from beta · v by less than
n units of the last place; the buffer grows by log2(d / n) = log2(1 / beta) bits per step
on average, exactly the information destroyed (SPEC §7: det = beta^D). Popping before
pushing costs one 32-bit division by n per step (the pushed digit is a shift).

The word has a fixed width of 32 bits. If B <= M before a step, then after it B' <=
floor(M / n) · d + d - 1 (the *bound*); the bound depends only on the beta schedule, so
the host computes it in advance. Before a step whose bound would reach 2^32, the high 8
bits of the word are *spilled* to a preallocated ``uint8`` slot and the word keeps its low
24 bits (bound 2^24 - 1 < n · d for n >= 2^8, so the step fits), which still feed the
next pops; the reverse pass restores them after undoing that step, and checks that the
high byte it finds there is 0 (a gradient that recomputes differently breaks this).
Above 2^24 the bound grows per step by at most log2(1 / beta) + n / (2^24 ln 2) bits
(B' <= (d / n)(B + n)), at most 0.006 bits more than the information destroyed, so the
stored bits stay close to D · sum_k log2(1 / beta_k), plus the 32-bit words.

Reference loop of the arithmetic with Python integers (what :func:`mul_ratio` computes):

    def mul_ratio(v, B, n):
        B, r2 = divmod(B, n)
        q, r1 = divmod(v, 2**16)
        return q * n + r2, B * 2**16 + r1
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from jaxrnn.exact import fixed_point as fp

BETA_BITS = 16
DENOMINATOR = 1 << BETA_BITS
WORD_BITS, SLOT_BITS = 32, 8
KEPT_BITS = WORD_BITS - SLOT_BITS  # the low bits a spill leaves in the word
WORD_LIMIT = 1 << WORD_BITS
KEPT_MASK = (1 << KEPT_BITS) - 1
SLOT_DTYPE = jnp.uint8
MIN_NUMERATOR = 1 << (KEPT_BITS - BETA_BITS)  # n >= 2^8: a kept word < n · 2^16 always fits


SUPPORTED_BETAS = "keep beta in [2^-8, 65535 / 2^16]"


def numerator(beta: float) -> int:
    """The n of beta ≈ n / 2^16 (nearest, half to even); supported: 2^8 <= n < 2^16."""
    n = int(np.rint(float(beta) * DENOMINATOR)) if np.isfinite(beta) else 0
    if not MIN_NUMERATOR <= n < DENOMINATOR:
        raise ValueError(
            f"beta: expected a momentum used as n / 2^16 with 2^8 <= n < 2^16 "
            f"({SUPPORTED_BETAS}), got {beta}"
        )
    return n


def mul_ratio(v: fp.Word, word, n):
    """(v', word', overflow): v' = v · n / 2^16 exactly, the lost digits kept in ``word``.

    ``word`` is a ``uint32`` array. ``overflow`` is True where the new word would not fit
    32 bits, i.e. where word >= n · 2^16 (cannot happen when the spill schedule was
    followed). One 32-bit division by n per step, done elementwise in float32
    (:func:`fixed_point.divmod_small`).
    """
    n = jnp.asarray(n, jnp.uint32)
    inv_n = fp.reciprocal_estimate(n)
    quotient, r2 = fp.divmod_small(word, n, inv_n)  # pop r2 (base n)
    new_word = (quotient << 16) | (v.lo & fp.MASK16)  # push r1 = v mod 2^16
    v_new = fp.mul_small(fp.shift_right_16(v), n, r2)
    return v_new, new_word, (word >> 16) >= n


def unmul_ratio(v_new: fp.Word, word, n):
    """The exact inverse of :func:`mul_ratio`: (v, word) from (v', word')."""
    q, r2 = fp.floor_divmod_signed(v_new, n)
    n = jnp.asarray(n, jnp.uint32)
    # (word >> 16) · n + r2 <= (2^16 - 1) n + n - 1 < 2^32: no wrap.
    return fp.shift_left_16_or(q, word & fp.MASK16), (word >> 16) * n + r2


def spill(word, slots, flag, slot):
    """Before a spilling step (``flag``): move the high byte of ``word`` to ``slots[slot]``.

    ``slots`` is a (S, *word.shape) ``uint8`` array; for other steps the slot is rewritten
    unchanged.
    """
    if slots.shape[0] == 0:
        return word, slots
    high = (word >> KEPT_BITS).astype(SLOT_DTYPE)
    slots = slots.at[slot].set(jnp.where(flag, high, slots[slot]))
    return jnp.where(flag, word & KEPT_MASK, word), slots


def restore(word, slots, flag, slot):
    """Undo :func:`spill`: (word, mismatch); ``mismatch`` is True where the high byte was not 0.

    The slot's byte is XORed into the high byte of ``word``. Where that byte is 0, as it is
    whenever the reverse computation repeats the forward one, this is the word :func:`spill`
    saw; elsewhere the difference is kept rather than dropped, so that undoing stays an
    injective map and a different computation also shows in the words it rebuilds.
    """
    if slots.shape[0] == 0:
        return word, jnp.zeros(word.shape, bool)
    mismatch = flag & ((word >> KEPT_BITS) != 0)
    restored = (slots[slot].astype(jnp.uint32) << KEPT_BITS) ^ word
    return jnp.where(flag, restored, word), mismatch


def _next_bound(bound: int, n: int) -> int:
    """The largest word after a step from a word <= ``bound``: floor(B / n) · 2^16 + 2^16 - 1."""
    return (bound // n) * DENOMINATOR + DENOMINATOR - 1


@functools.lru_cache(maxsize=256)
def _schedule(start_bound: int, numerators: tuple) -> tuple:
    bound, spills = start_bound, []
    for step, n in enumerate(numerators):
        if _next_bound(bound, n) >= WORD_LIMIT:
            spills.append(step)
            bound = min(bound, KEPT_MASK)
        bound = _next_bound(bound, n)
        if bound >= WORD_LIMIT:
            raise ValueError(
                f"betas: n = {n} at step {step} is below {MIN_NUMERATOR} (beta below 2^-8)"
            )
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
