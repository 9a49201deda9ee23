"""Exactly reversible momentum SGD and hypergradients (SPEC §7).

Parameters and velocity are 64-bit fixed-point words (pairs of ``uint32``; no x64 switch is
flipped), the multiplication by beta = n / 2^16 keeps its lost digits in an information
buffer of fixed-width words with a static spill schedule, so that :func:`reverse` undoes
:func:`forward` bit for bit (Maclaurin, Duvenaud & Adams, ICML 2015). :func:`hypergradient`
differentiates a validation loss with respect to the schedules, the initial parameters
and the loss's hyperparameters along the exactly reconstructed path.

Modules, read top to bottom: :mod:`~jaxrnn.reversible.schedules` (the schedules and each
step's inputs), :mod:`~jaxrnn.reversible.step` (one exact step and its inverse over a
pytree of words), :mod:`~jaxrnn.reversible.state` (the state, its failures),
:mod:`~jaxrnn.reversible.sgd` (T steps forward and back), :mod:`~jaxrnn.reversible.
hypergrad` (the reverse sweep), :mod:`~jaxrnn.reversible.optax_transform` (the optax
transformation and undo); :mod:`~jaxrnn.reversible.xla_cpu` tunes the compilation.
"""

from jaxrnn.reversible.deprecated import check, check_optimizer
from jaxrnn.reversible.hypergrad import Hypergradients, hypergradient, sweep_memory
from jaxrnn.reversible.optax_transform import (
    ReversibleMomentum,
    ReversibleMomentumState,
    as_gradient_transformation,
    params_of,
    reversible_momentum,
    undo,
)
from jaxrnn.reversible.schedules import information_bound, represented_betas
from jaxrnn.reversible.sgd import forward, reverse
from jaxrnn.reversible.state import (
    FixedPointOverflowError,
    State,
    TrajectoryMismatchError,
    buffer_is_empty,
    init,
    params,
    raise_if_failed,
    stored_bits,
    velocity,
)

__all__ = [
    "FixedPointOverflowError",
    "Hypergradients",
    "ReversibleMomentum",
    "ReversibleMomentumState",
    "State",
    "TrajectoryMismatchError",
    "as_gradient_transformation",
    "buffer_is_empty",
    "check",
    "check_optimizer",
    "forward",
    "hypergradient",
    "information_bound",
    "init",
    "params",
    "params_of",
    "raise_if_failed",
    "represented_betas",
    "reverse",
    "reversible_momentum",
    "stored_bits",
    "sweep_memory",
    "undo",
    "velocity",
]
