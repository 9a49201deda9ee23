"""Hand-derived backpropagation through time, and a checker for anyone's formulas.

``lstm_scalar``, ``lstm``, ``elman`` and ``gru`` are the textbook BPTT recursions (SPEC §3,
§4, §5, §8) written as reverse ``lax.scan``s over the stored forward values; ``check``
compares any hand BPTT, yours included, with autodiff, per quantity and per time step.
"""

from jaxrnn.bptt.check import Report, check
from jaxrnn.bptt.elman import elman
from jaxrnn.bptt.gru import gru
from jaxrnn.bptt.lstm import lstm
from jaxrnn.bptt.lstm_scalar import lstm_scalar

__all__ = ["Report", "check", "elman", "gru", "lstm", "lstm_scalar"]
