"""Measured depth of the three ways to run a recurrence of length T: scan, linear, DEER.

Everything here is read from traced programs with :func:`jaxrnn.steps.parallel_depth`
(and :func:`jaxrnn.steps.sequential_steps` for the loop count); only DEER's iteration
count comes from running it, because its ``while_loop`` stops when the data says so.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_positive_int
from jaxrnn._scan import scan
from jaxrnn.cells import elman
from jaxrnn.parallel._deer import deer
from jaxrnn.parallel.linear import linear_recurrence
from jaxrnn.steps import parallel_depth, sequential_steps


class DepthRow(NamedTuple):
    """One row of the depth table, for sequences of length ``n_steps``."""

    n_steps: int
    scan_steps: int  # loop iterations of jaxrnn.scan (= T)
    scan_depth: int  # its critical path: T x (depth of one cell step)
    linear_full: int  # linear_recurrence with (T, H, H) transitions
    linear_diagonal: int  # linear_recurrence with (T, H) diagonals
    deer_iterations: int  # Newton iterations DEER ran on the test sequence
    deer_per_iteration: int  # depth of one iteration (linearise + solve + check)
    deer_depth: int  # the whole DEER run, with that many iterations
    quasi_iterations: int  # the same for quasi-DEER (diagonal Jacobians)
    quasi_per_iteration: int
    quasi_depth: int


def _deer_depths(run, args, iterations: int) -> tuple[int, int]:
    """(depth of one iteration, depth of the run with ``iterations`` of them)."""
    total = parallel_depth(run, *args, while_iterations=iterations)
    per_iteration = total - parallel_depth(run, *args, while_iterations=iterations - 1)
    return per_iteration, total


def measure_depths(n_steps: int, *, hidden: int = 2, seed: int = 0) -> DepthRow:
    """Measure every column of :class:`DepthRow` for an Elman RNN with ``hidden`` units.

    The cell has one input and PyTorch-style random weights (a contracting Jacobian chain);
    the inputs are standard normal. DEER runs for real (float32, default ``tol``) to count
    its iterations; every depth is read from the traced program.
    """
    check_positive_int(n_steps, name="n_steps")
    check_positive_int(hidden, name="hidden")
    key_params, key_xs = jax.random.split(jax.random.PRNGKey(seed))
    params = elman.init(key_params, 1, hidden)
    carry = elman.init_carry((), hidden)
    xs = jax.random.normal(key_xs, (n_steps, 1), jnp.float32)

    def spec(*shape):
        return jax.ShapeDtypeStruct(shape, jnp.float32)

    run_scan = functools.partial(scan, elman.apply)
    vector, matrices = spec(n_steps, hidden), spec(n_steps, hidden, hidden)
    depths = {}
    for name in ("full", "diagonal"):
        run = functools.partial(deer, elman.apply, jacobian=name, on_failure="warn")
        iterations = int(run(params, carry, xs)[2].iterations)
        depths[name] = (iterations, *_deer_depths(run, (params, carry, xs), iterations))
    return DepthRow(
        n_steps,
        sequential_steps(run_scan, params, carry, xs),
        parallel_depth(run_scan, params, carry, xs),
        parallel_depth(linear_recurrence, matrices, vector, spec(hidden)),
        parallel_depth(linear_recurrence, vector, vector, spec(hidden)),
        *depths["full"],
        *depths["diagonal"],
    )
