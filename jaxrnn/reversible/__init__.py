"""Exactly reversible momentum SGD and hypergradients (SPEC §7).

Parameters and velocity are 64-bit fixed-point words (pairs of ``uint32``; no x64 switch is
flipped), the multiplication by beta = n / 2^16 keeps its lost digits in an information
buffer of fixed-width words with a static spill schedule, so that :func:`reverse` undoes
:func:`forward` bit for bit (Maclaurin, Duvenaud & Adams, ICML 2015). :func:`hypergradient`
differentiates a validation loss with respect to the schedules, the initial parameters
and the loss's hyperparameters along the exactly reconstructed path.
"""

from jaxrnn.reversible.hypergrad import Hypergradients, hypergradient, sweep_memory
from jaxrnn.reversible.optax_transform import (
    ReversibleMomentum,
    ReversibleMomentumState,
    as_gradient_transformation,
    params_of,
    reversible_momentum,
    undo,
)
from jaxrnn.reversible.optax_transform import check as check_optimizer
from jaxrnn.reversible.sgd import (
    FixedPointOverflowError,
    State,
    TrajectoryMismatchError,
    buffer_is_empty,
    check,
    forward,
    information_bound,
    init,
    params,
    represented_betas,
    reverse,
    stored_bits,
    velocity,
)

__all__ = [
    "FixedPointOverflowError",
    "Hypergradients",
    "ReversibleMomentum",
    "ReversibleMomentumState",
    "as_gradient_transformation",
    "check_optimizer",
    "hypergradient",
    "params_of",
    "reversible_momentum",
    "undo",
    "State",
    "TrajectoryMismatchError",
    "buffer_is_empty",
    "check",
    "forward",
    "information_bound",
    "init",
    "params",
    "represented_betas",
    "reverse",
    "stored_bits",
    "sweep_memory",
    "velocity",
]
