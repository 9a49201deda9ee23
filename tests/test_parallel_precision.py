"""Every matrix product of the parallel solvers asks for full precision.

A CPU computes float32 products in full whatever is asked, so the numbers cannot show it
here; on a GPU JAX's default float32 product is TF32, and DEER's Newton iterations did not
converge in float32 with it (bench/RESULTS.md, "accelerator"). These tests read the
traced programs instead: each ``dot_general`` must carry ``Precision.HIGHEST`` for both
operands. The cells used have no products of their own (elementwise carries), so every
product in the program belongs to the solver.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn.parallel import deer, linear_recurrence
from jaxrnn.parallel.kalman import damped_newton_step
from jaxrnn.steps import _sub_jaxprs  # the walker sequential_steps uses (tests/test_steps.py)

HIGHEST = jax.lax.Precision.HIGHEST


def dot_precisions(fn, *args) -> list:
    """The ``precision`` of every dot_general in the traced program of fn(*args)."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.append(eqn.params["precision"])
            for sub in _sub_jaxprs(eqn.params):
                walk(sub)

    # the suite asks for float32 products everywhere (conftest); the library must ask itself
    with jax.default_matmul_precision("default"):
        walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def all_highest(precisions) -> bool:
    return all(p is not None and tuple(p) == (HIGHEST, HIGHEST) for p in precisions)


def problem(n_steps=9, hidden=3, seed=0):
    rng = np.random.default_rng(seed)
    A = jnp.asarray(0.3 * rng.normal(size=(n_steps, hidden, hidden)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(n_steps, hidden)), jnp.float32)
    return A, b, jnp.zeros(hidden, jnp.float32)


def test_the_reader_sees_a_default_precision_product():
    """Planted: a hand-written recurrence with a plain ``@`` must be caught."""
    A, b, h0 = problem()

    def by_hand(A, b, h0):
        return jax.lax.scan(lambda h, ab: (ab[0] @ h + ab[1],) * 2, h0, (A, b))[1]

    precisions = dot_precisions(by_hand, A, b, h0)
    assert precisions and not all_highest(precisions)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_linear_recurrence_and_its_gradient(reverse, with_lengths):
    A, b, h0 = problem()
    lengths = jnp.array(6) if with_lengths else None

    def states(A, b, h0):
        return linear_recurrence(A, b, h0, lengths=lengths, reverse=reverse)

    def loss(A, b, h0):
        return jnp.sum(states(A, b, h0) ** 2)

    for fn in (states, jax.grad(loss, argnums=(0, 1, 2))):
        precisions = dot_precisions(fn, A, b, h0)
        assert precisions and all_highest(precisions)


def test_the_kalman_step_of_elk():
    A, b, h0 = problem()
    guess = jnp.ones_like(b)
    precisions = dot_precisions(
        lambda A, b, g: damped_newton_step(A, b, h0, g, 1e-3, kind="full"), A, b, guess
    )
    assert precisions and all_highest(precisions)


def elementwise_cell(params, carry, x):
    """h' = tanh(w * h + x): a full Jacobian (diagonal in value) and no matrix product."""
    new = jnp.tanh(params * carry + x)
    return new, new


@pytest.mark.parametrize("damping", [None, 1e-3])
def test_deer_and_elk_solves_and_their_gradients(damping):
    xs = jnp.asarray(np.random.default_rng(1).normal(size=(12, 4)), jnp.float32)
    w, h0 = jnp.full(4, 0.5, jnp.float32), jnp.zeros(4, jnp.float32)

    def run(w, h0, xs):
        return deer(elementwise_cell, w, h0, xs, damping=damping, on_failure="ignore")[1]

    def loss(w, h0, xs):
        return jnp.sum(run(w, h0, xs) ** 2)

    for fn in (run, jax.grad(loss, argnums=(0, 1, 2))):
        precisions = dot_precisions(fn, w, h0, xs)
        assert precisions and all_highest(precisions)
