"""Recurrent cells. Each module has ``init``, ``init_carry`` and ``apply``; ``apply`` has the
``lax.scan`` signature ``apply(params, carry, x) -> (carry, y)``.

The linear cells (``mingru``, ``minlstm``, ``lru``) also have ``coefficients(params, xs) ->
(a, b)`` and ``readout(params, hs, xs)``: their carry follows h_t = a_t * h_{t-1} + b_t, which
``jaxrnn.parallel.scan_associative`` evaluates in O(log T) depth."""

from jaxrnn.cells import elman, gru, lru, lstm, lstm_scalar, mingru, minlstm, revgru, threshold

__all__ = [
    "elman",
    "gru",
    "lru",
    "lstm",
    "lstm_scalar",
    "mingru",
    "minlstm",
    "revgru",
    "threshold",
]
