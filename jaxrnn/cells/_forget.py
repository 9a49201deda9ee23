"""Exact forgetting: h <- floor(h · n / 2^16), the lost digit pushed onto a buffer word.

The reversible cells (SPEC §11) keep their state as integers H = h · 2^F on a grid that the
float dtype holds exactly, and multiply by a forget factor z = n / 2^16 with
2^(16 - m) <= n <= 2^16 (at most m bits forgotten per unit and step; n = 2^16 is z = 1,
which keeps H and pushes nothing). With d = 2^16 and H = q d + r (0 <= r < d):

    forward (H, B) -> (H', B'):                 inverse (H', B') -> (H, B):
      s  = floor(r n / d)                         q, s = floor(H' / n), H' mod n
      H' = q n + s        = floor(H n / d)        c0 = ceil(s d / n),  K as forward
      c0 = ceil(s d / n),  e = c0 n - s d         j = B' mod K,  B = floor(B' / K)
      K  = ceil((d - e) / n)                      H  = q d + c0 + j
      j  = r - c0,         B' = B K + j

The residues r with floor(r n / d) = s are exactly c0, ..., c0 + K - 1, so the digit
j < K is what the floor destroyed, and the buffer B (one ``uint32`` word per unit, a
mixed-radix number) grows by log2 K ≈ log2(1 / z) bits: the information the step
destroys (det ∂H'/∂H = z). H' is the exact floor of H z, so the state never depends on the
buffer, and its error is below one unit of 2^-F. K <= ceil(d / n) <= 2^m, so the word
holds its digits as long as B < 2^(32 - m) before a push; the scan that runs the cell
moves its high bytes to memory on a fixed schedule (:func:`jaxrnn.exact.buffer.spill`).

Uses the 64-bit words of :mod:`jaxrnn.exact.fixed_point` (the state may need more than 32
bits in float64). Reference loop with Python integers (``-(-a // b)`` is ceil(a / b))::

    def forget(H, B, n):
        q, r = divmod(H, 2**16)
        s = r * n // 2**16
        c0 = -(-s * 2**16 // n)
        K = -(-(2**16 - (c0 * n - s * 2**16)) // n)
        return q * n + s, B * K + r - c0
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxrnn.exact import fixed_point as fp

DENOMINATOR = 1 << 16
WORD_BITS = 32


def numerators(z, max_forget_bits: int):
    """n = round(z · 2^16), clipped to [2^(16 - m), 2^16], as ``uint32``."""
    low, high = DENOMINATOR >> max_forget_bits, DENOMINATOR
    scaled = jnp.round(z * jnp.asarray(DENOMINATOR, z.dtype))
    return jnp.clip(scaled, low, high).astype(jnp.uint32)


def _digits(s, n):
    """(c0, K): the first residue r with floor(r n / d) = s, and how many there are."""
    inv_n = fp.reciprocal_estimate(n)
    # s d + n - 1 < n d and d - e + n - 1 < n d (s < n, n >= 2): divmod_small's domain
    c0, _ = fp.divmod_small((s << 16) + n - 1, n, inv_n)
    excess = c0 * n - (s << 16)
    k, _ = fp.divmod_small(jnp.uint32(DENOMINATOR) - excess + n - 1, n, inv_n)
    return c0, k


def _below_one(n):
    """(n clipped below 2^16, where z = 1): the arithmetic runs with n < 2^16 (the domain of
    the fixed-point helpers); where z = 1 its result is replaced by the identity."""
    return jnp.minimum(n, DENOMINATOR - 1), n >= DENOMINATOR


def forget(state: fp.Word, word, n):
    """(floor(state · n / 2^16), word · K + j, full): the exact product, the digit pushed.

    ``full`` is True where the push wrapped the 32-bit word (B K + j >= 2^32), which the
    spill schedule of the scan rules out.
    """
    n, one = _below_one(n)
    q = fp.shift_right_16(state)
    r = state.lo & fp.MASK16
    s = (r * n) >> 16  # r n < 2^32
    c0, k = _digits(s, n)
    pushed = fp.mul_small(fp.Word(jnp.zeros_like(word), word), k, r - c0)
    kept = fp.where(one, state, fp.mul_small(q, n, s))
    return kept, jnp.where(one, word, pushed.lo), ~one & (pushed.hi != 0)


def unforget(state: fp.Word, word, n):
    """The exact inverse of :func:`forget`: (state, word) before the step."""
    n, one = _below_one(n)
    q, s = fp.floor_divmod_signed(state, n)
    c0, k = _digits(s, n)
    (high, low), j = fp.long_divmod([word >> 16, word & fp.MASK16], k)
    before = fp.shift_left_16_or(q, c0 + j)
    return fp.where(one, state, before), jnp.where(one, word, (high << 16) | low)


def information_bits(n, dtype=jnp.float32):
    """log2(2^16 / n) per unit: the bits a multiplication by n / 2^16 destroys."""
    return jnp.log2(jnp.asarray(DENOMINATOR, dtype) / n.astype(dtype))
