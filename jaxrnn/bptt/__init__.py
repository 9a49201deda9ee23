"""Hand-derived backpropagation through time, and a checker for anyone's formulas.

``lstm_scalar``, ``lstm``, ``elman`` and ``gru`` are the textbook BPTT recursions (SPEC §3,
§4, §5, §8) written as reverse ``lax.scan``s over the stored forward values; ``check``
compares any hand BPTT, yours included, with autodiff, per quantity and per time step.
"""

from jaxrnn.bptt._check import Report, check
from jaxrnn.bptt._elman import elman
from jaxrnn.bptt._gru import gru
from jaxrnn.bptt._lstm import lstm
from jaxrnn.bptt._lstm_scalar import lstm_scalar

__all__ = ["Report", "check", "elman", "gru", "lstm", "lstm_scalar"]

from jaxrnn._deprecated import alias_module  # noqa: E402
from jaxrnn.bptt import _check, _elman, _lstm, _lstm_scalar  # noqa: E402

# the old module paths, whose names are now the functions (one release; CHANGELOG.md)
for _name, _module in (
    ("check", _check),
    ("elman", _elman),
    ("lstm", _lstm),
    ("lstm_scalar", _lstm_scalar),
):
    alias_module(f"jaxrnn.bptt.{_name}", _module, f"jaxrnn.bptt.{_name} (the function)")
