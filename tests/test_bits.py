import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxrnn.bits import from_bits, to_bits


def test_hand_examples_lsb_first():
    np.testing.assert_array_equal(to_bits(jnp.array(6), 4), [0, 1, 1, 0])
    np.testing.assert_array_equal(to_bits(jnp.array([1, 8]), 4), [[1, 0, 0, 0], [0, 0, 0, 1]])
    assert int(from_bits(jnp.array([1, 0, 1, 1]))) == 13


@given(st.lists(st.integers(0, 2**20 - 1), min_size=1, max_size=10))
def test_round_trip(values):
    bits = to_bits(jnp.array(values), 20)
    np.testing.assert_array_equal(from_bits(bits), values)
    np.testing.assert_array_equal(bits, [[(v >> k) & 1 for k in range(20)] for v in values])


def test_errors():
    with pytest.raises(ValueError, match="values: expected an integer dtype"):
        to_bits(jnp.array([1.5]), 4)
    with pytest.raises(ValueError, match="n_bits: expected a positive integer"):
        to_bits(jnp.array([1]), 0)
    with pytest.raises(ValueError, match="do not fit in int32"):
        from_bits(jnp.ones(40))
    with pytest.raises(ValueError, match="bits: expected shape"):
        from_bits(jnp.array(1))
    # silently wrong before: -1 gave the bits 1111, and a 2 counted as 2 * 2^k
    with pytest.raises(ValueError, match="values: expected non-negative integers, got min -1"):
        to_bits(jnp.array([3, -1]), 4)
    with pytest.raises(ValueError, match=r"bits: expected 0/1 values, got \[0, 1, 2\]"):
        from_bits(jnp.array([1, 0, 2]))
    with pytest.raises(ValueError, match="dtype: expected an integer dtype, got float32"):
        from_bits(jnp.array([1, 0]), dtype=jnp.float32)


def test_traced_values_are_not_checked_but_convert():
    import jax

    bits = jax.jit(lambda v: to_bits(v, 3))(jnp.array([5, 2]))
    np.testing.assert_array_equal(bits, [[1, 0, 1], [0, 1, 0]])
    assert int(jax.jit(from_bits)(bits[0])) == 5
