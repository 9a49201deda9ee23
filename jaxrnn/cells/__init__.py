"""Recurrent cells. Each module has ``init``, ``init_carry`` and ``apply``; ``apply`` has the
``lax.scan`` signature ``apply(params, carry, x) -> (carry, y)``."""

from jaxrnn.cells import elman, gru, lstm, lstm_scalar, revgru, threshold

__all__ = ["elman", "gru", "lstm", "lstm_scalar", "revgru", "threshold"]
