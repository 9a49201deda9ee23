"""sequential_steps reads loop trip counts from the traced program."""

import jax
import jax.numpy as jnp
import pytest

import jaxrnn
from jaxrnn.cells import elman
from jaxrnn.steps import sequential_steps


def test_single_scan_counts_its_length():
    params = elman.init(jax.random.PRNGKey(0), 2, 3)
    xs = jnp.zeros((11, 2), jnp.float32)
    run = lambda xs: jaxrnn.scan(elman.apply, params, elman.init_carry((), 3), xs)
    assert sequential_steps(run, xs) == 11


def test_nested_scans_multiply_and_consecutive_scans_add():
    def nested(x):
        def outer(c, _):
            c, _ = jax.lax.scan(lambda c, _: (c + 1.0, None), c, None, length=4)
            return c, None

        c, _ = jax.lax.scan(outer, x, None, length=3)
        c, _ = jax.lax.scan(lambda c, _: (c * 2.0, None), c, None, length=5)
        return c

    assert float(nested(0.0)) == 12.0 * 32  # the program really runs 3*4 then 5 steps
    assert sequential_steps(nested, 0.0) == 3 * 4 + 5


def test_no_loops_is_zero_and_jit_and_cond_are_followed():
    assert sequential_steps(lambda x: jnp.sin(x) * 2, 1.0) == 0

    @jax.jit
    def inner(x):
        return jax.lax.scan(lambda c, _: (c + 1, None), x, None, length=6)[0]

    def branchy(x, flag):
        return jax.lax.cond(flag, inner, lambda x: x, x)

    assert sequential_steps(inner, 1.0) == 6
    assert sequential_steps(branchy, 1.0, True) == 6


def test_fori_loop_with_static_bounds_is_a_scan_and_while_loop_is_refused():
    fori = lambda x: jax.lax.fori_loop(0, 9, lambda i, c: c + i, x)
    assert sequential_steps(fori, 0) == 9
    looping = lambda x: jax.lax.while_loop(lambda c: c < 10, lambda c: c + 1, x)
    with pytest.raises(ValueError, match="while_loop"):
        sequential_steps(looping, 0)
    with pytest.raises(ValueError, match="fn: expected a callable"):
        sequential_steps(3, 0)
