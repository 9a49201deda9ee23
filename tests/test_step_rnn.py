"""Tests of jaxrnn.step_rnn: run against a NumPy loop, solve against hand answers and theory."""

import itertools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxrnn import step_rnn
from jaxrnn.step_rnn.inequalities import Inequality, certificate, feasible_point, is_feasible


def numpy_run(params, xs, s0=0):
    """Reference: s(t) = 1 iff w1 x(t) + w2 s(t-1) + b > 0, as a plain loop."""
    w1, w2, b = params
    s, ys = s0, []
    for x in xs:
        s = 1 if w1 * x + w2 * s + b > 0 else 0
        ys.append(s)
    return ys


def steps_of(pairs, s0):
    """(x(t), s(t-1), y(t)) for every step, with s(t-1) = y(t-1) and s(0) = s0."""
    return [(x, s, y) for xs, ys in pairs for x, s, y in zip(xs, (s0, *ys[:-1]), ys, strict=True)]


def truth_table(steps):
    """The demanded f(x, s) = y, or None when two steps demand opposite values at one (x, s)."""
    table = {}
    for x, s, y in steps:
        if table.setdefault((x, s), y) != y:
            return None
    return table


def table_feasible(steps):
    """Theory, independent of the solver: each step asks f(x(t), s(t-1)) = y(t) of
    f(x, s) = step(w1 x + w2 s + b). Such an f exists iff the demands are consistent and
    the four points, if all present, are not labelled as XOR or XNOR: these are the only
    two of the 16 Boolean functions of two inputs that are not linearly separable; the
    other 14 are separable with a margin (so step(0) = 0 does not matter), and any
    labelling of at most 3 points (affinely independent) is separable."""
    table = truth_table(steps)
    xor = {(x, s): x ^ s for x, s in itertools.product((0, 1), repeat=2)}
    xnor = {k: 1 - v for k, v in xor.items()}
    return table is not None and table not in (xor, xnor)


def reference_feasible(pairs, s0=0):
    return table_feasible(steps_of(pairs, s0))


binary = st.lists(st.integers(0, 1), min_size=1, max_size=9)


@st.composite
def sequence_pair(draw):
    xs = draw(binary)
    ys = draw(st.lists(st.integers(0, 1), min_size=len(xs), max_size=len(xs)))
    return xs, ys


# ---------------------------------------------------------------- run


# XLA on CPU flushes subnormal floats to zero (NumPy does not), so a subnormal bias such as
# 4e-45 would make step(b) differ between the two. Weights are 0 or at least 1e-30 in size:
# then every sum of them is 0 or a multiple of an ulp >= 1e-37, never subnormal.
weight = st.floats(-3, 3, width=32).filter(lambda v: v == 0 or abs(v) >= 1e-30)


@given(
    st.tuples(weight, weight, weight),
    binary,
    st.integers(0, 1),
)
def test_run_matches_numpy_loop(params, xs, s0):
    # float32 weights; the reference loop computes (w1 x + w2 s) + b in float32 too, in the
    # same order, so that rounding (e.g. 1 + 2^-30 - 1 = 0) is the same on both sides.
    params = tuple(np.float32(p) for p in params)
    ys = step_rnn.run(params, np.asarray(xs, np.float32), s0=s0)
    assert ys.dtype == jnp.float32
    assert np.asarray(ys).tolist() == numpy_run(params, np.asarray(xs, np.float32), s0)


def test_run_batched_with_per_sequence_s0_and_under_jit():
    xs = np.array([[0, 1, 1], [1, 0, 1], [0, 0, 0], [1, 1, 0]])  # (T=4, batch=3)
    s0 = np.array([0, 1, 1])
    params = (1.0, -2.0, 0.5)
    ys = jax.jit(step_rnn.run)(jnp.array(params), xs, s0)
    want = [numpy_run(params, xs[:, n], s0[n]) for n in range(3)]
    assert np.asarray(ys).T.tolist() == want


def test_run_accepts_boolean_inputs():
    xs = np.array([True, False, True, True])
    ys = step_rnn.run((1.0, -2.0, 0.5), xs)
    assert np.asarray(ys).tolist() == numpy_run((1.0, -2.0, 0.5), xs.astype(int)) == [1, 0, 1, 0]


def test_run_step_of_zero_is_zero():
    # z = 0 everywhere with zero weights; step(0) = 0 so every output is 0.
    assert np.asarray(step_rnn.run((0.0, 0.0, 0.0), np.ones(4))).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(
    "params, xs, s0, message",
    [
        ((1.0, 2.0), [0, 1], 0, r"params: expected three numbers \(w1, w2, b\)"),
        (jnp.ones(4), [0, 1], 0, r"params: expected three numbers"),
        ((1.0, [2.0, 3.0], 0.0), [0, 1], 0, "expected w2 to be a real scalar"),
        ((1j, 2.0, 0.0), [0, 1], 0, "expected w1 to be a real scalar, got 1j"),
        (("a", 2.0, 0.0), [0, 1], 0, "expected w1 to be a real scalar, got 'a'"),
        ((1.0, None, 0.0), [0, 1], 0, "expected w2 to be a real scalar, got None"),
        ((1.0, 2.0, 0.0), np.array([1j, 0]), 0, "xs: expected real numbers, got dtype complex"),
        ((1.0, 2.0, 0.0), [], 0, r"xs: expected shape \(T, \*batch\) with T >= 1"),
        ((1.0, 2.0, 0.0), 1.0, 0, r"xs: expected shape \(T, \*batch\)"),
        ((1.0, 2.0, 0.0), np.array(["a"]), 0, "xs: expected real numbers"),
        ((1.0, 2.0, 0.0), [0, 1], 2, "s0: expected 0 or 1"),
        ((1.0, 2.0, 0.0), np.zeros((2, 3)), np.zeros(2), r"s0: expected a scalar or shape \(3,\)"),
    ],
)
def test_run_errors(params, xs, s0, message):
    with pytest.raises(ValueError, match=message):
        step_rnn.run(params, xs, s0=s0)


# ---------------------------------------------------------------- exact inequalities


def _witness_checks(system):
    """Check whichever witness comes back, exactly: a point, or Motzkin multipliers."""
    point, multipliers = feasible_point(system), certificate(system)
    assert (point is None) != (multipliers is None)
    if point is not None:
        assert all(ineq.holds(point) for ineq in system)
        return True
    assert all(m >= 0 for m in multipliers)
    n_vars = len(system[0].coeffs)
    for k in range(n_vars):
        assert sum(m * ineq.coeffs[k] for m, ineq in zip(multipliers, system, strict=True)) == 0
    const = sum(m * ineq.const for m, ineq in zip(multipliers, system, strict=True))
    some_strict = any(m > 0 and ineq.strict for m, ineq in zip(multipliers, system, strict=True))
    assert const < 0 or (const == 0 and some_strict)
    return False


rows = st.builds(
    Inequality,
    st.tuples(*[st.integers(-3, 3)] * 3),
    st.integers(-3, 3),
    st.booleans(),
)


@given(st.lists(rows, min_size=1, max_size=7))
def test_fourier_motzkin_answers_come_with_valid_witnesses(system):
    assert _witness_checks(system) == is_feasible(system)


def test_strictness_decides_hand_cases():
    p_pos = Inequality((1,), 0, strict=True)  # p > 0
    p_nonpos = Inequality((-1,), 0)  # -p >= 0
    assert certificate([p_pos, p_nonpos]) == (1, 1)  # adding them: 0 > 0
    assert feasible_point([Inequality((1,), 0), p_nonpos]) == (0,)  # p = 0 is the only one
    # 0 < p <= 1: the integer 1 is inside; 0 < p < 1: no integer, the midpoint 1/2.
    assert feasible_point([p_pos, Inequality((-1,), 1)]) == (1,)
    assert feasible_point([p_pos, Inequality((-1,), 1, strict=True)]) == (Fraction(1, 2),)
    # x - y > 0 and y - x >= 0 contradict; x - y >= 0 and y - x >= 0 mean x = y.
    assert not is_feasible([Inequality((1, -1), 0, True), Inequality((-1, 1), 0)])
    x, y = feasible_point([Inequality((1, -1), 0), Inequality((-1, 1), 0)])
    assert x == y


def test_inequality_system_errors():
    with pytest.raises(ValueError, match="system: expected at least one inequality"):
        is_feasible([])
    with pytest.raises(ValueError, match="same number of variables"):
        is_feasible([Inequality((1,), 0), Inequality((1, 2), 0)])


# ---------------------------------------------------------------- solve: textbook questions


def test_question_a_has_weights_found_and_checked():
    # x = 0001010 -> y = 0001111. By hand, with s(t-1) = y(t-1):
    #   t = 1, 2, 3: x = 0, s = 0, y = 0  ->  b <= 0
    #   t = 4:       x = 1, s = 0, y = 1  ->  w1 + b > 0
    #   t = 5, 7:    x = 0, s = 1, y = 1  ->  w2 + b > 0
    #   t = 6:       x = 1, s = 1, y = 1  ->  w1 + w2 + b > 0
    # e.g. w1 = w2 = 1, b = -1/2 satisfies all of them.
    xs, ys = [0, 0, 0, 1, 0, 1, 0], [0, 0, 0, 1, 1, 1, 1]
    assert numpy_run((1, 1, -0.5), xs) == ys  # the hand answer works
    answer = step_rnn.solve(xs, ys)
    assert answer.feasible and answer.certificate is None
    w1, w2, b = answer.exact_params
    assert b <= 0 and w1 + b > 0 and w2 + b > 0 and w1 + w2 + b > 0
    assert answer.params == (float(w1), float(w2), float(b))
    assert numpy_run(answer.params, xs) == ys
    assert answer.margin == min(-b, w1 + b, w2 + b, w1 + w2 + b) >= 1


def test_question_b_is_impossible_with_the_conflicting_steps():
    # x = 00010010 -> y = 11100011. By hand: step 1 has x = 0, s(0) = 0, y = 1 -> b > 0;
    # steps 5 and 6 have x = 0, s = y(4) = 0 resp. y(5) = 0, y = 0 -> b <= 0. Same z = b,
    # opposite demands: {1, 5} and {1, 6} are the two-step conflicts (no single step is
    # impossible, since every z contains b); the earliest is {1, 5}.
    answer = step_rnn.solve([0, 0, 0, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0, 1, 1])
    assert not answer.feasible and answer.params is None
    assert answer.certificate in ((1, 5), (1, 6))
    assert "b > 0" in answer.explanation and "b <= 0" in answer.explanation
    assert f"steps {answer.certificate[0]} and {answer.certificate[1]}" in answer.explanation


def test_xor_in_one_sequence_needs_four_steps():
    # x = 1010, y = 1100: (x, s) = (1,0)->1, (0,1)->1, (1,1)->0, (0,0)->0 is XOR of x and s.
    # (w1 + b) + (w2 + b) > 0 but equals (w1 + w2 + b) + b <= 0: all four steps are needed.
    answer = step_rnn.solve([1, 0, 1, 0], [1, 1, 0, 0])
    assert not answer.feasible and answer.certificate == (1, 2, 3, 4)
    assert "(w1 + b) + (w2 + b) = (w1 + w2 + b) + (b) = w1 + w2 + 2 b" in answer.explanation


def test_several_sequences_must_hold_together():
    # Alone each is realisable; together they label (x, s) as XOR:
    # seq 1 step 1: (1,0)->1; seq 2 step 1: (0,0)->0; seq 3 step 2: (1,1)->0;
    # seq 4 step 2: (0,1)->1.
    xs = [[1], [0], [1, 1], [1, 0]]
    ys = [[1], [0], [1, 0], [1, 1]]
    for x, y in zip(xs, ys, strict=True):
        assert step_rnn.solve(x, y).feasible
    answer = step_rnn.solve(xs, ys)
    assert not answer.feasible
    assert answer.certificate == ((1, 1), (2, 1), (3, 2), (4, 2))
    assert "step 2 of sequence 3" in answer.explanation


def test_initial_state_changes_the_answer():
    # x = 00, y = 10. s0 = 0: step 1 b > 0, step 2 (s = 1) w2 + b <= 0: feasible.
    # s0 = 1: step 1 w2 + b > 0, step 2 w2 + b <= 0: impossible, steps 1 and 2.
    feasible = step_rnn.solve([0, 0], [1, 0], s0=0)
    assert feasible.feasible and numpy_run(feasible.params, [0, 0], 0) == [1, 0]
    impossible = step_rnn.solve([0, 0], [1, 0], s0=1)
    assert impossible.certificate == (1, 2) and "w2 + b > 0" in impossible.explanation


@given(st.lists(sequence_pair(), min_size=1, max_size=3), st.integers(0, 1))
def test_solve_agrees_with_theory_and_its_answers_check(pairs, s0):
    several = len(pairs) > 1
    xs = [p[0] for p in pairs] if several else pairs[0][0]
    ys = [p[1] for p in pairs] if several else pairs[0][1]
    answer = step_rnn.solve(xs, ys, s0=s0)
    assert answer.feasible == reference_feasible(pairs, s0)
    if answer.feasible:
        for x, y in pairs:
            assert numpy_run(answer.params, x, s0) == y
        assert answer.margin >= 1
        return
    # The certificate alone is infeasible, dropping any one of its steps is not (minimal),
    # and it is smallest: 2 steps when two steps demand opposite values at one (x, s),
    # else 4 (XOR / XNOR).
    cert = [c if several else (1, c) for c in answer.certificate]

    def feasible(keep):
        return table_feasible([steps_of([pairs[k - 1]], s0)[t - 1] for k, t in keep])

    assert not feasible(cert)
    for drop in range(len(cert)):
        assert feasible(cert[:drop] + cert[drop + 1 :])
    assert len(cert) == (2 if truth_table(steps_of(pairs, s0)) is None else 4)


# ---------------------------------------------------------------- solve: bad input


@pytest.mark.parametrize(
    "xs, ys, s0, message",
    [
        ([0, 2, 1], [0, 1, 1], 0, r"xs: expected binary values 0/1, got 2"),
        ([0, 1], [0, 0.5], 0, r"ys: expected binary values 0/1, got 0.5"),
        (["a", "b"], [0, 1], 0, "xs: expected 0/1 values, got dtype"),
        ([0, 1, 1], [0, 1], 0, "xs, ys: expected the same length, got 3 and 2"),
        ([], [], 0, "xs: expected a non-empty sequence"),
        ([0, 1], [0, 1], 2, "s0: expected 0 or 1, got 2"),
        ([0, 1], [0, 1], True, "s0: expected 0 or 1, got True"),
        ([0, 1], [0, 1], np.array([0, 1]), r"s0: expected 0 or 1, got array\(\[0, 1\]\)"),
        ([[0, 1], [1]], [0, 1], 0, "xs, ys: expected both to be one sequence or both a list"),
        ([[0, 1], [1]], [[0, 1]], 0, "xs, ys: expected as many sequences, got 2 and 1"),
        ([[0, 1], [1]], [[0, 1], [1, 1]], 0, r"xs\[1\], ys\[1\]: expected the same length"),
        ([[0, 1], []], [[0, 1], []], 0, r"xs\[1\]: expected a non-empty sequence"),
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), 0, r"xs: expected a 1-D sequence"),
        (3, [1], 0, r"xs: expected a 1-D sequence of 0/1 values, got shape \(\)"),
    ],
)
def test_solve_errors(xs, ys, s0, message):
    with pytest.raises(ValueError, match=message):
        step_rnn.solve(xs, ys, s0=s0)


def test_solve_accepts_a_list_of_numpy_scalars_as_one_sequence():
    answer = step_rnn.solve(list(np.array([0, 1])), list(np.array([0, 1])))
    assert answer.feasible and answer.certificate is None
    assert numpy_run(answer.params, [0, 1]) == [0, 1]


def test_solve_accepts_arrays_and_booleans():
    answer = step_rnn.solve(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [1, 1]], bool))
    assert answer.feasible
    for x, y in (([0, 1], [0, 1]), ([1, 1], [1, 1])):
        assert numpy_run(answer.params, x) == y
