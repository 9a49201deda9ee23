"""jaxrnn: a functional JAX library for recurrent computation.

Cells are pure functions with the ``lax.scan`` signature ``apply(params, carry, x) ->
(carry, y)``; a sequence is one ``lax.scan`` (:func:`scan`, :func:`bidirectional`).
"""

from jaxrnn import (  # noqa: E402  (the implementation modules)
    _lstm_layer,
    _scan,
    adder,
    bptt,
    cells,
    checkpoint,
    checkpointed,
    dynamics,
    interop,
    layers,
    mdrnn,
    memory,
    parallel,
    reversible,
    reversible_rnn,
    sharding,
    step_rnn,
    steps,
    tasks,
    train,
)
from jaxrnn._deprecated import alias_module
from jaxrnn._gru_layer import gru_layer
from jaxrnn._lstm_layer import lstm_layer
from jaxrnn._scan import bidirectional, scan
from jaxrnn.reversible_rnn import reversible_scan

# the old module paths, whose names are now the functions (one release; CHANGELOG.md)
alias_module("jaxrnn.scan", _scan, "jaxrnn.scan and jaxrnn.bidirectional (the functions)")
alias_module("jaxrnn.lstm_layer", _lstm_layer, "jaxrnn.lstm_layer (the function)")

__version__ = "0.1.0"

__all__ = [
    "adder",
    "bidirectional",
    "bptt",
    "cells",
    "checkpoint",
    "checkpointed",
    "dynamics",
    "gru_layer",
    "interop",
    "layers",
    "lstm_layer",
    "mdrnn",
    "memory",
    "parallel",
    "reversible",
    "reversible_rnn",
    "reversible_scan",
    "scan",
    "sharding",
    "step_rnn",
    "steps",
    "tasks",
    "train",
]
