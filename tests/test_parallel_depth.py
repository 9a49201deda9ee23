"""parallel_depth: hand-counted critical paths of small programs, then scans and DEER."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn.cells import elman
from jaxrnn.parallel import deer, linear_recurrence, measure_depths
from jaxrnn.steps import parallel_depth, sequential_steps

X = jnp.ones((8,), jnp.float32)


def spec(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def test_a_chain_adds_and_independent_ops_share_a_stage():
    assert parallel_depth(lambda x: jnp.tanh(jnp.tanh(jnp.tanh(x))), X) == 3
    assert parallel_depth(lambda x: (jnp.sin(x), jnp.cos(x), jnp.exp(x)), X) == 1
    assert parallel_depth(lambda x: x * 2 + jnp.sin(x), X) == 2  # mul, sin || then add


def test_data_movement_is_free():
    moves = lambda x: jnp.broadcast_to(x.reshape(2, 4).T[1:], (5, 3, 2)).astype(jnp.float64)
    assert parallel_depth(moves, X) == 0
    assert parallel_depth(lambda x: moves(x) + 1, X) == 1


def test_matrix_products_cost_one_stage_whatever_their_size():
    assert parallel_depth(lambda a, b, c: (a @ b) @ c, spec(4, 4), spec(4, 4), spec(4, 4)) == 2
    batched = lambda a, v: jnp.einsum("tij,tj->ti", a, v)
    assert parallel_depth(batched, spec(4096, 16, 16), spec(4096, 16)) == 1


def test_scan_multiplies_its_body_by_its_length():
    def run(w, xs):
        body = lambda c, x: (jnp.tanh(c * w + x), None)  # mul, add, tanh: depth 3
        return jax.lax.scan(body, jnp.zeros(()), xs)[0] + 1

    assert parallel_depth(run, spec(), spec(10)) == 10 * 3 + 1
    assert parallel_depth(run, spec(), spec(1000)) == 1000 * 3 + 1
    assert sequential_steps(run, spec(), spec(1000)) == 1000


def test_while_loop_needs_its_iteration_count():
    def run(x):
        cond = lambda s: s[0] < 5  # depth 1
        body = lambda s: (s[0] + 1, s[1] * 2 + 1)  # depth 2 on the x path
        return jax.lax.while_loop(cond, body, (0, x))[1]

    with pytest.raises(ValueError, match="^fn: contains a while_loop.*while_iterations"):
        parallel_depth(run, X)
    assert parallel_depth(run, X, while_iterations=4) == 4 * (1 + 2) + 1
    assert parallel_depth(run, X, while_iterations=0) == 1


def test_cond_takes_the_deepest_branch():
    def run(x):
        predicate = jnp.sum(x) > 0  # reduce_sum, gt: ready at depth 2
        shallow = lambda v: v + 1
        deep = lambda v: jnp.tanh(jnp.tanh(jnp.tanh(v)))
        return jax.lax.cond(predicate, deep, shallow, x)

    assert parallel_depth(run, X) == 2 + 3
    # lax.switch clamps its index first: one more stage before the branches can start
    switch = lambda x: jax.lax.switch((jnp.sum(x) > 0).astype(int), [jnp.sin, jnp.cos], x)
    assert parallel_depth(switch, X) == 2 + 1 + 1


def test_calls_are_followed_input_by_input():
    """Through a jit call the deep input and the deep computation stay on separate paths."""
    inner = jax.jit(lambda a, b: (jnp.tanh(jnp.tanh(jnp.tanh(a))), b))
    run = lambda x: inner(x, jnp.tanh(jnp.tanh(x)))
    assert parallel_depth(run, X) == 3  # not 2 + 3: b only passes through


def test_custom_vjp_is_followed():
    @jax.custom_vjp
    def twice(x):
        return jnp.sin(jnp.sin(x))

    twice.defvjp(lambda x: (twice(x), x), lambda x, g: (g,))
    assert parallel_depth(lambda x: twice(x) * 3, X) == 3


def test_hand_written_prefix_sum_has_log2_depth():
    """Hillis-Steele: log2 T rounds of x[t] += x[t - 2^k]; the shifts are data movement."""

    def prefix_sum(x):
        shift = 1
        while shift < x.shape[0]:
            x = x + jnp.pad(x, (shift, 0))[: x.shape[0]]
            shift *= 2
        return x

    for n in (8, 1024, 65536):
        x = jnp.arange(n, dtype=jnp.float32)
        np.testing.assert_array_equal(prefix_sum(x[:8]), np.cumsum(np.arange(8)))
        assert parallel_depth(prefix_sum, x) == int(math.log2(n))
        assert sequential_steps(prefix_sum, x) == 0


def test_associative_scan_grows_by_a_constant_per_doubling():
    def depth(n_steps, full):
        a_shape = (n_steps, 2, 2) if full else (n_steps, 2)
        return parallel_depth(linear_recurrence, spec(*a_shape), spec(n_steps, 2), spec(2))

    for full in (True, False):
        depths = [depth(2**k, full) for k in range(4, 12)]
        steps = np.diff(depths)
        assert np.all(steps == steps[0]) and 2 <= steps[0] <= 8  # c log2 T, c = 2 * 2..4
    assert sequential_steps(linear_recurrence, spec(4096, 2), spec(4096, 2), spec(2)) == 0


def test_deer_depth_is_iterations_times_a_log_depth_body():
    def depth(n_steps, iterations):
        run = functools.partial(deer, elman.apply, on_failure="ignore")
        params = jax.eval_shape(lambda: elman.init(jax.random.PRNGKey(0), 2, 3))
        return parallel_depth(run, params, spec(3), spec(n_steps, 2), while_iterations=iterations)

    def solve_depth(n_steps):
        return parallel_depth(linear_recurrence, spec(n_steps, 3, 3), spec(n_steps, 3), spec(3))

    small = [depth(64, k) for k in (1, 2, 3)]
    per_iteration = small[1] - small[0]
    assert small[2] - small[1] == per_iteration  # affine in the iterations run
    large = depth(1024, 2) - depth(1024, 1)
    # one more linear solve per iteration, and nothing else, grows with T
    assert large - per_iteration == solve_depth(1024) - solve_depth(64)
    assert per_iteration > solve_depth(64)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="^fn: expected a callable"):
        parallel_depth("not a function", X)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="^while_iterations: expected a non-negative int"):
            parallel_depth(jnp.sin, X, while_iterations=bad)


def test_measured_depth_row():
    row = measure_depths(64, hidden=2)
    assert row.n_steps == row.scan_steps == 64
    # one Elman step: W h and U x (parallel), + U x, + b, tanh: 4 stages
    assert row.scan_depth == 64 * 4
    spec_vector, spec_matrices = spec(64, 2), spec(64, 2, 2)
    assert row.linear_full == parallel_depth(linear_recurrence, spec_matrices, spec_vector, spec(2))
    assert row.linear_diagonal == parallel_depth(
        linear_recurrence, spec_vector, spec_vector, spec(2)
    )
    for iterations, per_iteration, total in (row[5:8], row[8:11]):
        assert 1 <= iterations <= 64
        assert per_iteration > row.linear_full
        assert 0 < total - iterations * per_iteration < per_iteration
    with pytest.raises(ValueError, match="^n_steps: expected a positive integer"):
        measure_depths(0)


def test_cli_prints_the_measured_table(capsys):
    from jaxrnn.cli import main

    assert main(["parallel", "depth", "--min-exp", "6", "--max-exp", "6", "--hidden", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split()[:3] == ["T", "scan", "steps"]
    values = [int(v) for v in lines[2].split()]
    assert values == list(measure_depths(64, hidden=2))
