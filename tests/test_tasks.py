"""Task generators: targets against NumPy computations, reproducibility, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import tasks

KEY = jax.random.key(0)


def test_adding_problem_target_is_the_sum_of_the_two_marked_values():
    xs, ys = tasks.adding_problem(KEY, 3, batch=64, length=11)
    xs, ys = np.asarray(xs), np.asarray(ys)
    assert xs.shape == (11, 64, 2) and ys.shape == (64, 1)
    assert xs.dtype == np.float32 and ys.dtype == np.float32
    values, markers = xs[..., 0], xs[..., 1]
    assert np.all((values >= 0) & (values < 1))
    assert set(np.unique(markers)) <= {0.0, 1.0}
    for n in range(64):
        marked = np.flatnonzero(markers[:, n])
        assert len(marked) == 2
        assert marked[0] < 11 // 2 <= marked[1]
        assert ys[n, 0] == pytest.approx(values[marked[0], n] + values[marked[1], n], rel=1e-6)


def test_adding_problem_markers_reach_every_position_of_each_half():
    xs, _ = tasks.adding_problem(KEY, 0, batch=512, length=8)
    positions = np.nonzero(np.asarray(xs[..., 1]).T)[1]
    assert set(positions) == set(range(8))


def test_adding_problem_dtype_and_a_constant_guess_has_error_near_one_sixth():
    _, ys = tasks.adding_problem(KEY, 1, batch=20000, length=10, dtype=jnp.float64)
    assert ys.dtype == jnp.float64
    assert np.mean((np.asarray(ys) - 1.0) ** 2) == pytest.approx(1 / 6, abs=0.01)


def test_copy_task_matches_a_numpy_construction():
    length, delay, k = 4, 3, 5
    xs, targets = tasks.copy_task(KEY, 2, batch=16, length=length, delay=delay, n_symbols=k)
    xs, targets = np.asarray(xs), np.asarray(targets)
    n_steps = 2 * length + delay
    assert xs.shape == (n_steps, 16, k + 2) and targets.shape == (n_steps, 16)
    symbols = np.argmax(xs[:length], axis=-1)  # (L, B)
    assert symbols.min() >= 1 and symbols.max() <= k
    expected_in = np.zeros((n_steps, 16), int)
    expected_in[:length] = symbols
    expected_in[length + delay - 1] = k + 1
    expected_out = np.zeros((n_steps, 16), int)
    expected_out[length + delay :] = symbols
    assert np.array_equal(xs, np.eye(k + 2, dtype=np.float32)[expected_in])
    assert np.array_equal(targets, expected_out)


def test_copy_task_with_delay_one_puts_the_cue_right_after_the_symbols():
    xs, targets = tasks.copy_task(KEY, 0, batch=2, length=3, delay=1, n_symbols=2)
    classes = np.argmax(np.asarray(xs), axis=-1)
    assert np.all(classes[3] == 3) and np.all(classes[4:] == 0)
    assert np.array_equal(np.asarray(targets[4:]), classes[:3])


def test_binary_addition_bits_add_up():
    n_bits = 6
    xs, ys = tasks.binary_addition(KEY, 5, batch=200, n_bits=n_bits)
    xs, ys = np.asarray(xs), np.asarray(ys)
    assert xs.shape == (n_bits + 1, 200, 2) and ys.shape == (n_bits + 1, 200, 1)
    powers = 2 ** np.arange(n_bits + 1)
    a = np.einsum("tb,t->b", xs[..., 0], powers).astype(int)
    b = np.einsum("tb,t->b", xs[..., 1], powers).astype(int)
    assert a.max() < 2**n_bits and b.max() < 2**n_bits and np.all(xs[-1] == 0)
    expected = (((a + b)[None, :] >> np.arange(n_bits + 1)[:, None]) & 1).astype(np.float32)
    assert np.array_equal(ys[..., 0], expected)
    assert (a + b).max() >= 2**n_bits  # some sums need the extra step


@pytest.mark.parametrize(
    "make",
    [
        lambda key, step: tasks.adding_problem(key, step, batch=4, length=6),
        lambda key, step: tasks.copy_task(key, step, batch=4, length=3, delay=2),
        lambda key, step: tasks.binary_addition(key, step, batch=4, n_bits=5),
    ],
)
def test_batches_are_pure_functions_of_key_and_step(make):
    first, again = make(KEY, 7), make(KEY, np.int64(7))
    for x, y in zip(first, again, strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(make(KEY, 8)[0], first[0])
    assert not np.array_equal(make(jax.random.key(1), 7)[0], first[0])
    raw = make(jax.random.PRNGKey(0), 7)  # old-style uint32 keys work too
    assert raw[0].shape == first[0].shape
    traced = jax.jit(lambda step: make(KEY, step))(jnp.int32(7))
    assert np.array_equal(traced[0], first[0])


def test_bad_arguments_raise():
    for key, got in (
        (3, "int$"),
        (jax.random.split(KEY, 2), r"of shape \(2,\) and dtype key"),
        (jnp.array([0, 0], jnp.int32), r"of shape \(2,\) and dtype int32"),  # raw keys: uint32
    ):
        with pytest.raises(ValueError, match=f"key: expected one jax.random key .*, got .*{got}"):
            tasks.adding_problem(key, 0, batch=2, length=4)
    for step in (
        -1,
        np.int64(-3),
        1.5,
        True,
        "3",
        None,
        jnp.array([1, 2]),
        jnp.array(-2),
        jnp.array(True),
        jnp.array(2.0),
    ):
        with pytest.raises(ValueError, match="step: expected a non-negative integer"):
            tasks.copy_task(KEY, step, batch=2, length=3, delay=1)
    with pytest.raises(ValueError, match="batch: expected a positive integer"):
        tasks.adding_problem(KEY, 0, batch=0, length=4)
    with pytest.raises(ValueError, match="length: expected at least 2"):
        tasks.adding_problem(KEY, 0, batch=2, length=1)
    with pytest.raises(ValueError, match="dtype: expected a floating dtype"):
        tasks.adding_problem(KEY, 0, batch=2, length=4, dtype=jnp.int32)
    with pytest.raises(ValueError, match="delay: expected a positive integer"):
        tasks.copy_task(KEY, 0, batch=2, length=3, delay=0)
    with pytest.raises(ValueError, match="n_symbols: expected a positive integer"):
        tasks.copy_task(KEY, 0, batch=2, length=3, delay=1, n_symbols=0)
    with pytest.raises(ValueError, match="n_bits: expected at most 30"):
        tasks.binary_addition(KEY, 0, batch=2, n_bits=31)
    with pytest.raises(ValueError, match="n_bits: expected a positive integer"):
        tasks.binary_addition(KEY, 0, batch=2, n_bits=0)
