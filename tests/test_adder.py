"""Tests of jaxrnn.adder against a NumPy reference network and hand-derived numbers."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import adder


def numpy_sums(params, a, b, n_bits):
    """Reference: the threshold network of SPEC §1 as a plain NumPy loop over n + 1 steps."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    h = np.zeros(a.shape + (p["U"].shape[0],))
    total = np.zeros(a.shape, np.int64)
    for t in range(n_bits + 1):
        bit_a = (a >> t) & 1 if t < n_bits else np.zeros_like(a)
        bit_b = (b >> t) & 1 if t < n_bits else np.zeros_like(b)
        x = np.stack([bit_a, bit_b], axis=-1).astype(np.float64)
        h = (x @ p["U"].T + h @ p["W"].T + p["b_h"] > 0).astype(np.float64)
        y = (h @ p["V"].T + p["b_y"] > 0)[..., 0]
        total += y.astype(np.int64) << t
    return total


def all_pairs(n_bits):
    a, b = np.meshgrid(np.arange(2**n_bits), np.arange(2**n_bits), indexing="ij")
    return a.ravel(), b.ravel()


def numpy_failures(params, n_bits):
    a, b = all_pairs(n_bits)
    wrong = numpy_sums(params, a, b, n_bits) != a + b
    return int(wrong.sum()), (list(zip(a[wrong], b[wrong], strict=True)) or [None])[0]


def test_hand_units_count_the_bits():
    # SPEC §1 design, checked on every (x1, x2, h(t-1)): with S = x1 + x2 + h_2(t-1),
    # unit k is on iff S >= k and the output is on iff S is 1 or 3 (S odd).
    p = {k: np.asarray(v, np.float64) for k, v in adder.hand_params().items()}
    for x1, x2, *h_prev in itertools.product((0, 1), repeat=5):
        total = x1 + x2 + h_prev[1]
        h = (p["U"] @ [x1, x2] + p["W"] @ h_prev + p["b_h"] > 0).astype(float)
        assert h.tolist() == [float(total >= k) for k in (1, 2, 3)]
        assert bool(p["V"] @ h + p["b_y"] > 0) == (total % 2 == 1)


def test_trace_of_5_plus_7_by_hand():
    # 5 = 101, 7 = 111 (LSB first). S(t) = a_t + b_t + carry: 2, 0+1+1 = 2, 1+1+1 = 3,
    # 0+0+1 = 1, 0 (last step, zero input). Units on iff S >= k; y = S odd -> 0,0,1,1,0;
    # sum = 4 + 8 = 12.
    steps = adder.trace(adder.hand_params(), 5, 7, 4)
    assert steps["x"].tolist() == [[1, 1], [0, 1], [1, 1], [0, 0], [0, 0]]
    assert steps["h"].tolist() == [[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert steps["y"].tolist() == [0, 0, 1, 1, 0]
    assert steps["sum"] == 12


def test_add_batched_matches_integer_sums():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**10, size=(4, 5))
    b = rng.integers(0, 2**10, size=(5,))
    got = adder.add(adder.hand_params(), a, b, 10)
    assert got.shape == (4, 5) and got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), a + b)


def test_add_under_jit():
    add = jax.jit(lambda a, b: adder.add(adder.hand_params(), a, b, 8))
    a, b = jnp.array([0, 255, 128], jnp.int32), jnp.array([0, 255, 127], jnp.int32)
    np.testing.assert_array_equal(np.asarray(add(a, b)), [0, 510, 255])


@pytest.mark.parametrize("n_bits", [1, 3, 8])
def test_hand_adder_is_proved_correct(n_bits):
    result = adder.verify(adder.hand_params(), n_bits)
    assert (result.ok, result.checked, result.failures) == (True, 4**n_bits, 0)
    assert result.counterexample is None
    assert numpy_failures(adder.hand_params(), min(n_bits, 6))[0] == 0


def test_random_weights_agree_with_numpy_reference():
    rng = np.random.default_rng(1)
    for hidden in (3, 3, 3, 5):
        params = {
            "U": rng.normal(size=(hidden, 2)),
            "W": rng.normal(size=(hidden, hidden)),
            "b_h": rng.normal(size=hidden),
            "V": rng.normal(size=(1, hidden)),
            "b_y": rng.normal(size=1),
        }
        a, b = all_pairs(4)
        np.testing.assert_array_equal(
            np.asarray(adder.add(params, a, b, 4)), numpy_sums(params, a, b, 4)
        )
        failures, first = numpy_failures(params, 4)
        result = adder.verify(params, 4)
        assert result.failures == failures
        if failures:
            assert tuple(result.counterexample[:2]) == first


def _one_entry_changes():
    hand = {k: np.asarray(v) for k, v in adder.hand_params().items()}
    for name, value in hand.items():
        for index in np.ndindex(value.shape):
            for new in (value[index] - 1.0, -value[index], 0.3):
                yield name, index, float(new)


def test_every_single_entry_change_is_judged_like_the_numpy_check():
    # 22 weights x 3 changes; some are harmless (e.g. W[0,0] = 0.3 < 0.5 margin), so the
    # truth comes from the independent exhaustive NumPy check over 4-bit pairs.
    hand = adder.hand_params()
    caught = 0
    for name, index, new in _one_entry_changes():
        params = dict(hand, **{name: hand[name].at[index].set(new)})
        failures, first = numpy_failures(params, 4)
        result = adder.verify(params, 4)
        assert (result.ok, result.failures) == (failures == 0, failures), (name, index, new)
        if failures:
            caught += 1
            a, b, got, want = result.counterexample
            assert (a, b) == first and want == a + b
            assert got == numpy_sums(params, a, b, 4) != a + b
    assert caught >= 40


@pytest.mark.parametrize(
    "name, index, value",
    [
        ("W", (1, 1), 0.0),  # the carry unit forgets the carry: 1 + 1 = 2 -> t=1 has S = 1
        ("b_h", (0,), 0.5),  # unit 1 is on even for S = 0 (z = 0.5), so 0 + 0 outputs 1s
        ("V", (0, 1), 1.0),  # S = 2 gives output 1 instead of 0
        ("b_y", (0,), 0.5),  # S = 0 gives r = 0 + 0.5 > 0: output 1 where it should be 0
    ],
)
def test_planted_wrong_entry_gives_checked_counterexample(name, index, value):
    hand = adder.hand_params()
    params = dict(hand, **{name: hand[name].at[index].set(value)})
    result = adder.verify(params, 8)
    assert not result.ok and result.failures > 0
    a, b, got, want = result.counterexample
    assert 0 <= a < 256 and 0 <= b < 256
    assert want == a + b  # checked independently of the network
    assert got == int(numpy_sums(params, a, b, 8)) != want


def test_nan_weights_give_a_counterexample_not_a_crash():
    params = dict(adder.hand_params(), b_y=jnp.array([jnp.nan], jnp.float32))
    result = adder.verify(params, 2)
    # With b_y = NaN the output unit is never > 0, so only 0 + 0 = 0 is right.
    assert result.failures == 15 and result.counterexample == (0, 1, 0, 1)


def test_extra_dead_hidden_units_and_list_weights_are_accepted():
    hand = {k: np.asarray(v).tolist() for k, v in adder.hand_params().items()}
    padded = {
        "U": hand["U"] + [[0, 0], [0, 0]],
        "W": [row + [0, 0] for row in hand["W"]] + [[0] * 5, [0] * 5],
        "b_h": hand["b_h"] + [-1, -1],
        "V": [hand["V"][0] + [5, 5]],
        "b_y": hand["b_y"],
    }
    assert adder.verify(padded, 5).ok
    assert adder.verify({k: np.asarray(v, np.int64) * 0 for k, v in padded.items()}, 2).failures


def test_documented_key_learns_a_correct_adder():
    result = adder.train(jax.random.PRNGKey(adder.DOCUMENTED_KEY))
    assert result.ok and result.verification.checked == 65536
    assert result.losses.shape == (2000,) and result.losses[-1] < 0.01 < result.losses[0]
    # Independent proof of the hardened weights: the NumPy network on all 8-bit pairs.
    assert numpy_failures(result.params, 8)[0] == 0


def test_bad_key_for_train_is_rejected_before_compiling():
    with pytest.raises(ValueError, match="key: expected one jax.random key"):
        adder.train(3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden": 0}, "hidden: expected a positive integer"),
        ({"steps": 1.5}, "steps: expected a positive integer"),
        ({"batch_size": -1}, "batch_size: expected a positive integer"),
        ({"learning_rate": 0.0}, "learning_rate: expected a positive number"),
        ({"temperature": 5.0}, r"temperature: expected a pair \(start, end\)"),
        ({"temperature": (1.0, -2.0)}, "temperature: expected a positive number"),
        ({"n_bits": 31}, "n_bits: expected at most 30"),
        ({"verify_bits": 13}, "verify_bits: expected at most 12"),
    ],
)
def test_train_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        adder.train(jax.random.PRNGKey(0), **kwargs)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: [1, 2], r"params: expected a dict with entries"),
        (lambda p: dict(p, V=[[1, 2], [3]]), r"params\['V'\]: expected an array of real"),
        (lambda p: dict(p, b_y=[1j]), r"params\['b_y'\]: expected an array of real"),
        (lambda p: {k: v for k, v in p.items() if k != "U"}, "expected a dict with entries"),
        (lambda p: {k: v for k, v in p.items() if k != "b_y"}, r"missing entries \['b_y'\]"),
        (lambda p: dict(p, U=jnp.ones((3, 3))), r"params\['U'\]: expected shape \(H, 2\)"),
        (lambda p: dict(p, W=jnp.ones((3, 2))), r"params\['W'\]: expected shape \(3, 3\)"),
        (lambda p: dict(p, V=jnp.ones((2, 3))), r"params\['V'\]: expected shape \(1, 3\)"),
        (lambda p: dict(p, extra=jnp.ones(3)), r"unexpected entries \['extra'\]"),
        (lambda p: dict(p, b_y=np.array(["a"])), r"params\['b_y'\]: expected an array of real"),
    ],
)
def test_bad_params_raise_value_error(change, message):
    params = change(adder.hand_params())
    with pytest.raises(ValueError, match=message):
        adder.verify(params, 2)
    with pytest.raises(ValueError, match=message):
        adder.add(params, 1, 1, 2)


def test_bad_addends_and_bit_counts():
    p = adder.hand_params()
    with pytest.raises(ValueError, match=r"a: expected values in \[0, 2\^4\) = \[0, 15\]"):
        adder.add(p, np.array([3, 16]), 1, 4)
    with pytest.raises(ValueError, match="b: expected values in"):
        adder.add(p, 1, -1, 4)
    with pytest.raises(ValueError, match="a: expected integers"):
        adder.add(p, 1.5, 1, 4)
    with pytest.raises(ValueError, match="n_bits: expected a positive integer"):
        adder.add(p, 1, 1, 0)
    with pytest.raises(ValueError, match="n_bits: expected at most 30"):
        adder.add(p, 1, 1, 31)
    with pytest.raises(ValueError, match="n_bits: expected at most 12"):
        adder.verify(p, 13)
    with pytest.raises(ValueError, match="n_bits: expected a positive integer"):
        adder.verify(p, True)
    with pytest.raises(ValueError, match="a: expected one integer"):
        adder.trace(p, [1, 2], 1, 4)
    with pytest.raises(ValueError, match="dtype: expected a floating dtype, got int32"):
        adder.hand_params(jnp.int32)  # would truncate the biases -1/2, -3/2, -5/2
    with pytest.raises(
        ValueError, match=r"a, b: expected shapes that broadcast .* \(3,\) and \(4,\)"
    ):
        adder.add(p, np.arange(3), np.arange(4), 4)
    with pytest.raises(ValueError, match=r"a: expected values in \[0, 2\^30\)"):
        adder.add(p, 2**40, 1, 30)  # too large for int32: named, not an OverflowError
    with pytest.raises(ValueError, match="a: expected integers, got dtype <U1"):
        adder.add(p, "a", 1, 4)
    with pytest.raises(ValueError, match="params: verify returns Python numbers"):
        jax.jit(lambda q: adder.verify(q, 2).ok)(p)
    with pytest.raises(ValueError, match=r"xs: expected shape \(\*batch, 2\), got \(5, 4, 3\)"):
        adder.output_bits(p, np.zeros((5, 4, 3)))
    with pytest.raises(ValueError, match=r"xs: expected input bits of shape \(T, \*batch, 2\)"):
        adder.output_bits(p, np.zeros(2))


def test_output_bits_of_lists_match_the_hand_trace():
    # 5 + 7 on 4 bits, as nested lists (T = 5, batch = 1, 2): the per-step units of
    # test_trace_of_5_plus_7_by_hand.
    xs = [[[1, 1]], [[0, 1]], [[1, 1]], [[0, 0]], [[0, 0]]]
    ys, hs = adder.output_bits(adder.hand_params(), xs)
    assert np.asarray(ys)[:, 0].tolist() == [0, 0, 1, 1, 0]
    assert np.asarray(hs)[:, 0].tolist() == [
        [1, 1, 0],
        [1, 1, 0],
        [1, 1, 1],
        [1, 0, 0],
        [0, 0, 0],
    ]
