"""The scalar step RNN of SPEC §2: run it, and decide exactly which maps it can realise.

    s(t) = step(w1 x(t) + w2 s(t-1) + b),   y(t) = s(t),   s(0) = s0,   step(z) = 1 iff z > 0

:func:`run` computes the outputs; :func:`solve` finds (w1, w2, b) reproducing given target
outputs, or proves that none exist and names the conflicting time steps.
"""

from jaxrnn.step_rnn.network import run
from jaxrnn.step_rnn.solver import Solution, solve

__all__ = ["Solution", "run", "solve"]
