"""Exact arithmetic shared by the reversible computations.

- :mod:`jaxrnn.exact.fixed_point`: 64-bit fixed-point words as pairs of ``uint32`` arrays
  (no x64 switch), with deterministic rounding, wrapping arithmetic and small divisions.
- :mod:`jaxrnn.exact.buffer`: the information buffer that stores exactly the digits a
  multiplication by a ratio n / 2^16 destroys, so that the multiplication can be undone.

Used by :mod:`jaxrnn.reversible` (momentum SGD run backwards, SPEC §7).
"""

from jaxrnn.exact import buffer, fixed_point

__all__ = ["buffer", "fixed_point"]
