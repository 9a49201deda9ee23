"""jaxrnn: a functional JAX library for recurrent computation.

Cells are pure functions with the ``lax.scan`` signature ``apply(params, carry, x) ->
(carry, y)``; a sequence is one ``lax.scan`` (:func:`scan`, :func:`bidirectional`).
"""

from jaxrnn import (
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
from jaxrnn.gru_layer import gru_layer
from jaxrnn.lstm_layer import lstm_layer
from jaxrnn.reversible_rnn import reversible_scan
from jaxrnn.scan import bidirectional, scan

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
