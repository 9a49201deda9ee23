"""64-bit fixed-point words built from pairs of ``uint32`` arrays.

A value x is stored as the signed 64-bit integer X = round(x · 2^F) (F = ``frac_bits``), in
two's complement, split into two ``uint32`` arrays: X mod 2^64 = hi · 2^32 + lo. All
arithmetic is written with ``uint32`` operations (wrapping add, subtract, multiply, shifts),
so it runs identically with or without ``jax_enable_x64`` and never flips that switch: JAX
without x64 would silently truncate ``int64`` to ``int32``.

Division of a word by a 16-bit n (the reverse of the buffer's multiplication) works on
16-bit *limbs*, most significant first, each held in a ``uint32`` so that a remainder
followed by a limb still fits one.

Rounding is deterministic: float -> word rounds half to even (``jnp.round``); word -> float
converts the magnitude, so the result is a fixed function of the word.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

U32 = jnp.uint32
MASK16 = 0xFFFF


class Word(NamedTuple):
    """A signed (or, for the buffer, unsigned) 64-bit integer: value = hi · 2^32 + lo."""

    hi: jnp.ndarray
    lo: jnp.ndarray


def zeros(shape) -> Word:
    return Word(jnp.zeros(shape, U32), jnp.zeros(shape, U32))


def const(value: int, shape=()) -> Word:
    """The word of the Python integer ``value`` (taken mod 2^64)."""
    value %= 1 << 64
    return Word(jnp.full(shape, value >> 32, U32), jnp.full(shape, value & 0xFFFFFFFF, U32))


def to_int(word: Word, *, signed: bool = True):
    """The Python integers of a concrete word (for tests and host-side checks)."""
    import numpy as np

    hi = np.asarray(word.hi, dtype=np.uint64).astype(object)
    lo = np.asarray(word.lo, dtype=np.uint64).astype(object)
    value = np.asarray(hi * (1 << 32) + lo, dtype=object)  # 0-d too: Python integers
    if signed:
        value = np.where(value >= (1 << 63), value - (1 << 64), value)
    return value


def is_negative(a: Word):
    return (a.hi >> 31) == 1


def add(a: Word, b: Word) -> Word:
    """a + b mod 2^64 (a carry from the low to the high word)."""
    lo = a.lo + b.lo
    return Word(a.hi + b.hi + (lo < a.lo).astype(U32), lo)


def sub(a: Word, b: Word) -> Word:
    """a - b mod 2^64 (a borrow from the high word)."""
    return Word(a.hi - b.hi - (a.lo < b.lo).astype(U32), a.lo - b.lo)


def neg(a: Word) -> Word:
    """-a mod 2^64, as ~a + 1."""
    lo = ~a.lo + U32(1)
    return Word(~a.hi + (lo == 0).astype(U32), lo)


def add_overflows(a: Word, b: Word, total: Word):
    """True where the signed sum a + b = total left the 64-bit range (same signs in, other out)."""
    sa, sb, st = is_negative(a), is_negative(b), is_negative(total)
    return (sa == sb) & (st != sa)


def sub_overflows(a: Word, b: Word, diff: Word):
    """True where the signed difference a - b = diff left the 64-bit range."""
    sa, sb, sd = is_negative(a), is_negative(b), is_negative(diff)
    return (sa != sb) & (sd != sa)


def fits(a: Word, bits: int):
    """True where the signed word lies in [-2^bits, 2^bits), for 32 <= bits <= 63."""
    # -2^(bits-32) <= signed hi < 2^(bits-32), as one unsigned comparison.
    return (a.hi + U32(1 << (bits - 32))) < U32(1 << (bits - 31)) if bits < 63 else a.hi == a.hi


def where(cond, a: Word, b: Word) -> Word:
    return Word(jnp.where(cond, a.hi, b.hi), jnp.where(cond, a.lo, b.lo))


def from_float(x, frac_bits: int, limit_bits: int = 63):
    """Round ``x · 2^frac_bits`` to the nearest integer word (half to even).

    Returns ``(word, overflow)``: ``overflow`` is True where x is not finite or |x| · 2^F >=
    2^limit_bits; there the word is 0 (never a silent wrap-around; the caller reports it).
    The magnitude m is split exactly: hi = floor(m / 2^32) and lo = m - hi · 2^32 are both
    exact in the float dtype of x (scaling by powers of two and keeping a subset of m's bits).
    """
    x = jnp.asarray(x)
    exact = x * jnp.asarray(2.0**frac_bits, x.dtype)
    scaled = jnp.round(exact)
    magnitude = jnp.abs(scaled)
    # Tested before rounding (fewer operations, the same answer): no float lies in
    # (2^limit - 1/2, 2^limit) for limit_bits >= 53; NaN and ±inf compare False.
    overflow = ~(jnp.abs(exact) < jnp.asarray(2.0**limit_bits, x.dtype))
    magnitude = jnp.where(overflow, jnp.zeros_like(magnitude), magnitude)
    hi = jnp.floor(magnitude * jnp.asarray(2.0**-32, x.dtype))
    lo = magnitude - hi * jnp.asarray(2.0**32, x.dtype)
    word = Word(hi.astype(U32), lo.astype(U32))
    return where(scaled < 0, neg(word), word), overflow


def to_float(word: Word, frac_bits: int, dtype):
    """The float of a signed word: sign · (|hi| · 2^32 + |lo|) · 2^-F, rounded in ``dtype``."""
    negative = is_negative(word)
    magnitude = where(negative, neg(word), word)
    value = magnitude.hi.astype(dtype) * jnp.asarray(2.0**32, dtype) + magnitude.lo.astype(dtype)
    value = value * jnp.asarray(2.0**-frac_bits, dtype)
    return jnp.where(negative, -value, value)


def shift_right_16(a: Word) -> Word:
    """floor(a / 2^16) for a signed word (arithmetic shift)."""
    hi_signed = lax.bitcast_convert_type(a.hi, jnp.int32) >> 16
    return Word(lax.bitcast_convert_type(hi_signed, U32), (a.lo >> 16) | (a.hi << 16))


def shift_left_16_or(a: Word, low16) -> Word:
    """a · 2^16 + low16 mod 2^64, for 0 <= low16 < 2^16."""
    return Word((a.hi << 16) | (a.lo >> 16), (a.lo << 16) | low16)


def mul_small(a: Word, n, addend=None) -> Word:
    """a · n + addend mod 2^64 for 0 <= n < 2^16 and 0 <= addend < max(n, 1)."""
    p0 = (a.lo & MASK16) * n
    if addend is not None:
        p0 = p0 + addend  # (2^16 - 1) n + n - 1 < 2^32: no wrap
    p1 = (a.lo >> 16) * n
    lo = p0 + (p1 << 16)
    return Word(a.hi * n + (p1 >> 16) + (lo < p0).astype(U32), lo)


def limbs(a: Word) -> list:
    """The four 16-bit limbs of an unsigned word, most significant first."""
    return [a.hi >> 16, a.hi & MASK16, a.lo >> 16, a.lo & MASK16]


def from_limbs(four: list) -> Word:
    """The word of four 16-bit limbs, most significant first."""
    return Word((four[0] << 16) | four[1], (four[2] << 16) | four[3])


def divmod_small(cur, n, inv_n):
    """(cur // n, cur % n) for uint32 ``cur`` < n · 2^16 and 1 <= n < 2^16.

    The quotient is estimated in float32 with ``inv_n`` = float32(1/n) · (1 - 2^-20):
    the bias makes the estimate fall below cur / n by less than 0.1 (three roundings of
    2^-24 each, q < 2^16), so floor(estimate) is q or q - 1 and one correction makes it
    exact. This keeps the division elementwise and vectorisable (no integer divide).
    """
    q = jnp.floor(cur.astype(jnp.float32) * inv_n).astype(U32)
    r = cur - q * n
    high = r >= n
    return jnp.where(high, q + U32(1), q), jnp.where(high, r - n, r)


def reciprocal_estimate(n):
    """float32(1/n) · (1 - 2^-20), the biased reciprocal :func:`divmod_small` expects."""
    return (1.0 / n.astype(jnp.float32)) * jnp.float32(1.0 - 2.0**-20)


def long_divmod(digits: list, n):
    """Divide an unsigned number given as 16-bit limbs (most significant first) by n < 2^16.

    Returns ``(quotient_limbs, remainder)``: schoolbook long division, one limb at a time,
    each partial dividend rem · 2^16 + limb < n · 2^16 fitting a ``uint32``.
    """
    n = jnp.asarray(n, U32)
    inv_n = reciprocal_estimate(n)
    rem = jnp.zeros_like(digits[0])
    quotient = []
    for limb in digits:
        q, rem = divmod_small((rem << 16) | limb, n, inv_n)
        quotient.append(q)
    return quotient, rem


def floor_divmod_signed(a: Word, n):
    """(floor(a / n), a mod n) for a signed word and 1 <= n < 2^16, remainder in [0, n)."""
    negative = is_negative(a)
    magnitude = where(negative, neg(a), a)
    q_limbs, rem = long_divmod(limbs(magnitude), n)
    q = from_limbs(q_limbs)
    # a < 0: a = -(q n + rem) = (-q - 1) n + (n - rem) when rem > 0; -q - 1 = ~q.
    exact = rem == 0
    q_neg = where(exact, neg(q), Word(~q.hi, ~q.lo))
    rem_neg = jnp.where(exact, rem, jnp.asarray(n, U32) - rem)
    return where(negative, q_neg, q), jnp.where(negative, rem_neg, rem)


def mix(x):
    """A 32-bit integer hash (xorshift-multiply), used to salt trajectory checksums."""
    x = x ^ (x >> 16)
    x = x * U32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * U32(0x846CA68B)
    return x ^ (x >> 16)


def fingerprint(word: Word, step) -> jnp.ndarray:
    """A uint32 digest of all entries of ``word`` at ``step``: sum_i (lo_i ^ s) c_i + hi_i.

    c_i = (2i + 1) · 0x9E3779B1 is odd, so changing any one entry's lo (or hi) changes the
    sum; the position factor also catches entries that trade places. Cheap (a few
    elementwise ops and one sum), since it runs on every parameter at every step.
    """
    return jnp.sum(fingerprint_terms(word, step), dtype=U32)


def fingerprint_terms(word: Word, step) -> jnp.ndarray:
    """The summands of :func:`fingerprint` (flat), to fuse its sum with other reductions."""
    salt = mix(jnp.asarray(step).astype(U32) + U32(1))
    lo, hi = jnp.ravel(word.lo), jnp.ravel(word.hi)
    odd = (lax.broadcasted_iota(U32, lo.shape, 0) * U32(2) + U32(1)) * U32(0x9E3779B1)
    return (lo ^ salt) * odd + (hi ^ (salt >> 7))
