"""The checker blames planted derivation mistakes on the right quantity and the right step.

Set-up used throughout: T = 8 steps, the loss reaches h(t) only at steps 1..K = 5
(dL_dh = 0 at steps 6..8). Then every adjoint at steps 6..8 is exactly 0 for any formula
of the right shape, and the backward pass (t = 8, 7, ..., 1) first meets a nonzero value at
step K. Where a mistake first shows is worked out in each test.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_bptt_elman as elman_tests
import test_bptt_lstm as lstm_tests
import test_bptt_lstm_scalar as scalar_tests

from jaxrnn import bptt

T, K = 8, 5


def loss_until_K(dL_dh):
    return dL_dh.at[K:].set(0.0)


def scalar_problem(seed=0):
    params, xs, dL_dh = scalar_tests.make_problem(seed, T)
    return params, xs, loss_until_K(dL_dh)


def planted(mistake):
    """A scalar-LSTM hand BPTT (the NumPy loop of the tests) with one planted mistake."""
    return lambda p, xs, dL_dh: scalar_tests.numpy_bptt(p, xs, dL_dh, mistake=mistake)


def test_correct_formulas_pass():
    report = bptt.check(planted(None), "lstm_scalar", *scalar_problem())
    assert report.ok and report.blame is None
    assert all(q.ok and q.first_step is None for q in report.quantities.values())
    assert len(report.quantities) == 14
    assert report["c"].max_abs_error < 1e-14
    assert "0 of 14 quantities differ" in str(report)


@pytest.mark.parametrize("model", ["lstm_scalar", "lstm", "elman"])
def test_the_librarys_own_formulas_pass(model):
    if model == "lstm_scalar":
        args = scalar_problem()
    elif model == "lstm":
        args = lstm_tests.make_problem(0, T, (2,))
    else:
        args = elman_tests.make_problem(0, T, (2,))
    report = bptt.check(getattr(bptt, model), model, *args)
    assert report.ok, str(report)


def test_index_shift_t_plus_1_for_t_minus_1_is_blamed_on_f_at_step_K():
    # f̄(t) = c̄(t) c(t+1) instead of c̄(t) c(t-1). Steps 6..8: c̄ = 0, so f̄ = 0 either way.
    # Step 5: h̄(5) = dL/dh(5) (nothing from step 6), ō, c̄ right, but f̄(5) = c̄(5) c(6)
    # != c̄(5) c(4): f is the first wrong value, at 5. It then reaches h̄(4) through
    # w_fh f̄(5) f(5)(1-f(5)), so h and c are first wrong at step 4.
    params, xs, dL_dh = scalar_problem()
    report = bptt.check(planted("index_shift"), "lstm_scalar", params, xs, dL_dh)
    assert not report.ok
    assert report.blame == ("f", 5)
    assert report["f"].first_step == 5 and report["f"].wrong_steps == (1, 2, 3, 4, 5)
    assert report["h"].first_step == 4 and report["c"].first_step == 4
    assert not report["w_fx"].ok and report["w_fx"].first_step is None
    # The error is exactly what the planted formula changes, computed independently:
    right, wrong = planted(None)(params, xs, dL_dh), planted("index_shift")(params, xs, dL_dh)
    assert report["f"].max_abs_error == pytest.approx(np.max(np.abs(right["f"] - wrong["f"])))
    assert "blame: 'f' at step 5" in str(report)


def test_tanh_where_its_derivative_belongs_is_blamed_on_c_at_step_K():
    # c̄(t) = h̄ o tanh(c) instead of h̄ o (1 - tanh²(c)). At step 5 h̄(5) = dL/dh(5) and
    # ō(5) are right, c̄(5) is the first wrong value; h̄ and ō first go wrong at step 4.
    report = bptt.check(planted("tanh_for_derivative"), "lstm_scalar", *scalar_problem())
    assert report.blame == ("c", 5)
    assert report["c"].first_step == 5
    assert report["h"].first_step == 4 and report["o"].first_step == 4
    assert report["f"].first_step == 5 and report["i"].first_step == 5  # follow from c̄(5)


def test_dropped_direct_term_is_blamed_on_h_at_step_K():
    # h̄(t) without dL/dh(t): at step 5 the recurrent part is 0 (nothing after step 5
    # reaches the loss), so the hand h̄(5) = 0 != dL/dh(5); h is wrong wherever the loss
    # is, steps 1..5, and right (0 = 0) at 6..8.
    report = bptt.check(planted("dropped_direct"), "lstm_scalar", *scalar_problem())
    assert report.blame == ("h", 5)
    assert report["h"].wrong_steps == (1, 2, 3, 4, 5)
    assert report["c"].first_step == 5  # c̄(5) = h̄(5) o ... follows from h̄(5)


def test_wrong_gate_in_the_c_recursion_is_blamed_on_c_at_step_K_minus_1():
    # c̄(t) = ... + c̄(t+1) i(t+1) instead of c̄(t+1) f(t+1). At step 5 the term is
    # c̄(6) i(6) = 0 = c̄(6) f(6): still right. At step 4 it is c̄(5) i(5) != c̄(5) f(5):
    # c̄(4) is the first wrong value. h̄(4) uses step-5 adjoints only, which are right,
    # so h first goes wrong at step 3; f̄, ī, ḡ(4) follow from c̄(4).
    report = bptt.check(planted("wrong_gate"), "lstm_scalar", *scalar_problem())
    assert report.blame == ("c", 4)
    assert report["c"].first_step == 4 and report["h"].first_step == 3
    assert report["f"].first_step == 4 and report["o"].first_step == 3


def test_a_mistake_in_a_weight_gradient_only_is_blamed_on_that_weight():
    # w̄_ih = sum ī i(1-i) h(t+1) instead of h(t-1): every per-step adjoint is right.
    report = bptt.check(planted("weight_index_shift"), "lstm_scalar", *scalar_problem())
    assert report.blame == ("w_ih", None)
    assert [name for name, q in report.quantities.items() if not q.ok] == ["w_ih"]


def test_vector_lstm_missing_transpose_is_blamed_on_h_prev_at_step_K():
    # dL/dh_{t-1} through step t written U a instead of U^T a. At step 5 h̄, c̄, the gates
    # and their pre-activations are right; h_prev[5] = sum U_q a_q(5) is the first wrong
    # value; h̄(4) = dL/dh(4) + h_prev[5] follows.
    params, xs, dL_dh = lstm_tests.make_problem(1, T, ())
    dL_dh = loss_until_K(dL_dh)

    def hand(p, xs, dL_dh):
        return lstm_tests.numpy_bptt(p, xs, dL_dh, mistake="U_not_transposed")

    report = bptt.check(hand, "lstm", params, xs, dL_dh)
    assert report.blame == ("h_prev", 5)
    assert report["h"].first_step == 4 and report["x"].first_step == 4
    assert report["i_pre"].first_step == 4


@pytest.mark.parametrize(
    "mistake, blame", [("W_not_transposed", ("h", 4)), ("activation_for_slope", ("z", 5))]
)
def test_elman_mistakes_are_blamed(mistake, blame):
    # W z̄ for W^T z̄ in h̄_{t-1}: h̄(5) has no step-6 term and is right; h̄(4) = dL/dh(4)
    # + W z̄(5) is the first wrong value. sigma(z) for sigma'(z): z̄(5) = h̄(5) sigma(z_5)
    # is wrong at once, after the right h̄(5).
    params, xs, dL_dh = elman_tests.make_problem(2, T, ())
    dL_dh = loss_until_K(dL_dh)

    def hand(p, xs, dL_dh):
        return elman_tests.numpy_bptt(p, xs, dL_dh, mistake=mistake)

    report = bptt.check(hand, "elman", params, xs, dL_dh)
    assert report.blame == blame


def test_elman_options_reach_both_sides():
    params, xs, dL_dh = elman_tests.make_problem(3, T, ())

    def hand(p, xs, dL_dh, activation):
        return elman_tests.numpy_bptt(p, xs, dL_dh, activation=activation)

    assert bptt.check(hand, "elman", params, xs, dL_dh, activation="sigmoid").ok
    # The tanh formulas do not pass as sigmoid ones:
    wrong = bptt.check(
        lambda p, x, d, activation: elman_tests.numpy_bptt(p, x, d, "tanh"),
        "elman",
        params,
        xs,
        dL_dh,
        activation="sigmoid",
    )
    assert wrong.blame == ("z", T)  # sigma(z) for sigma'(z) is wrong at once, at t = T


def test_a_subset_of_names_is_checked_alone():
    params, xs, dL_dh = scalar_problem()

    def only_c(p, xs, dL_dh):
        return {"c": planted("wrong_gate")(p, xs, dL_dh)["c"]}

    report = bptt.check(only_c, "lstm_scalar", params, xs, dL_dh)
    assert list(report.quantities) == ["c"] and report.blame == ("c", 4)


def test_the_reference_never_calls_the_librarys_hand_formulas(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the checker used a hand formula")

    monkeypatch.setattr(importlib.import_module("jaxrnn.bptt._lstm"), "_lstm", boom)
    monkeypatch.setattr(importlib.import_module("jaxrnn.bptt._elman"), "_elman", boom)
    with pytest.raises(AssertionError, match="hand formula"):  # the patch is in effect
        bptt.lstm_scalar(*scalar_problem())
    assert bptt.check(planted(None), "lstm_scalar", *scalar_problem()).ok
    assert not bptt.check(planted("wrong_gate"), "lstm_scalar", *scalar_problem()).ok
    params, xs, dL_dh = elman_tests.make_problem(2, T, ())
    assert bptt.check(elman_tests.numpy_bptt, "elman", params, xs, dL_dh).ok


def test_nan_is_a_difference():
    params, xs, dL_dh = scalar_problem()

    def hand(p, xs, dL_dh):
        out = planted(None)(p, xs, dL_dh)
        out["g"][2] = np.nan
        return out

    report = bptt.check(hand, "lstm_scalar", params, xs, dL_dh)
    assert not report["g"].ok and report["g"].wrong_steps == (3,)


def test_float32_library_formulas_pass_at_float32_tolerance():
    p64, xs, dL_dh = scalar_problem()
    p32 = {k: v.astype(jnp.float32) for k, v in p64.items()}
    report = bptt.check(
        bptt.lstm_scalar, "lstm_scalar", p32, xs.astype(jnp.float32), dL_dh.astype(jnp.float32)
    )
    assert report.ok and report.dtype == "float32" and report.rtol == 1e-4


@pytest.mark.parametrize(
    "hand, model, match",
    [
        (planted(None), "mingru", "model"),
        (planted(None), ["lstm"], "model"),
        (lambda p, x, d: {"h": [[0.0]] * (T - 1) + [[0.0, 1.0]]}, "lstm_scalar", "'h' of shape"),
        (lambda p, x, d: {"h": np.zeros(T, complex)}, "lstm_scalar", "'h' of dtype complex"),
        ("not a function", "lstm_scalar", "hand"),
        (lambda p, x, d: [1.0], "lstm_scalar", "hand: expected .* dict"),
        (lambda p, x, d: {}, "lstm_scalar", "non-empty dict"),
        (lambda p, x, d: {"c": np.zeros(T), "c_bar": np.zeros(T)}, "lstm_scalar", "c_bar"),
        (lambda p, x, d: {"h": np.zeros(T - 1)}, "lstm_scalar", "'h' of shape"),
        (lambda p, x, d: {"w_ix": np.zeros(T)}, "lstm_scalar", "'w_ix' of shape"),
    ],
)
def test_bad_use_raises_value_error_naming_it(hand, model, match):
    with pytest.raises(ValueError, match=match):
        bptt.check(hand, model, *scalar_problem())


def test_bad_rtol_and_bad_inputs_raise_value_error():
    params, xs, dL_dh = scalar_problem()
    with pytest.raises(ValueError, match="rtol"):
        bptt.check(planted(None), "lstm_scalar", params, xs, dL_dh, rtol=2.0)
    with pytest.raises(ValueError, match="rtol"):
        bptt.check(planted(None), "lstm_scalar", params, xs, dL_dh, rtol=True)
    assert bptt.check(planted(None), "lstm_scalar", params, xs, dL_dh, rtol=np.float32(1e-6)).ok
    with pytest.raises(ValueError, match="xs: expected real numbers"):
        bptt.check(planted(None), "lstm_scalar", params, xs.astype(complex), dL_dh)
    with pytest.raises(ValueError, match="dL_dh"):
        bptt.check(planted(None), "lstm_scalar", params, xs, dL_dh[:3])
    with pytest.raises(ValueError, match="xs"):
        bptt.check(bptt.lstm, "lstm", *lstm_tests.make_problem(0, 3, ())[:1], jnp.ones(3), None)


def test_report_string_lists_every_name_with_its_numbers():
    report = bptt.check(planted("wrong_gate"), "lstm_scalar", *scalar_problem())
    text = str(report)
    for name in report.quantities:
        assert f"  {name} " in text
    assert "differs at" in text and "blame: 'c' at step 4" in text
    assert jax.numpy.isfinite(report["c"].max_rel_error)


def test_report_string_shows_the_blamed_formula_in_general_and_at_its_step():
    # The wrong-gate mistake is in c̄(t) = ... + c̄(t+1) f(t+1), first wrong at t = 4.
    text = str(bptt.check(planted("wrong_gate"), "lstm_scalar", *scalar_problem()))
    assert "Check this formula at t = 4:" in text
    assert "c̄(t) = h̄(t) o(t) (1 - tanh²(c(t))) + c̄(t+1) f(t+1)" in text
    assert "c̄(4) = h̄(4) o(4) (1 - tanh²(c(4))) + c̄(5) f(5)" in text
    # Vector notation: dL/dh_{t-1} through step t, blamed at step 5 (see above).
    params, xs, dL_dh = lstm_tests.make_problem(1, T, ())
    hand = lambda p, x, d: lstm_tests.numpy_bptt(p, x, d, mistake="U_not_transposed")  # noqa: E731
    text = str(bptt.check(hand, "lstm", params, xs, loss_until_K(dL_dh)))
    assert "dL/dh_{t-1} through step t = U_i^T ā_i" in text and "dL/dh_4 through step 5" in text
    # A parameter gradient: its formula, no step.
    text = str(bptt.check(planted("weight_index_shift"), "lstm_scalar", *scalar_problem()))
    assert "blame: 'w_ih', a parameter gradient" in text
    assert "w̄_ih = Σ_t ī(t) i(t)(1-i(t)) h(t-1)" in text
    # At the last step, the step-T+1 terms are said to be 0.
    params, xs, dL_dh = scalar_problem()
    text = str(bptt.check(planted("index_shift"), "lstm_scalar", params, xs, dL_dh.at[:].set(1.0)))
    assert (
        f"at t = {T} (every step-T+1 term is 0)" in text and f"f̄({T}) = c̄({T}) c({T - 1})" in text
    )


def test_options_are_checked_and_double_sum_reaches_the_reference():
    params, xs, dL_dh = elman_tests.make_problem(3, T, ())
    report = bptt.check(bptt.elman, "elman", params, xs, dL_dh, double_sum=False)
    assert report.ok and "W_double_sum" not in report.quantities
    with pytest.raises(
        ValueError, match=r"options: 'lstm_scalar' takes no options, got \['activation'\]"
    ):
        bptt.check(planted(None), "lstm_scalar", *scalar_problem(), activation="tanh")
    with pytest.raises(ValueError, match="double_sum: expected True or False"):
        bptt.check(bptt.elman, "elman", params, xs, dL_dh, double_sum=1)


def test_cli_bptt_check_catches_its_planted_mistake(capsys):
    from jaxrnn.cli import main

    assert main(["bptt", "check", "--mistake", "index-shift"]) == 0
    out = capsys.readouterr().out
    assert "blame: 'f' at step 5" in out  # loss at steps 1..5: worked out above
    assert out.count("ok = True") == 4  # the fixed student code and the library's 3 models


@pytest.mark.parametrize(
    "argv, message",
    [(["--steps", "0"], "argument --steps: expected a positive integer, got 0"),
     (["--loss-until", "9"],
      "argument --loss-until: expected an integer from 1 to --steps (8), got 9")],
)  # fmt: skip
def test_cli_bptt_check_refuses_bad_sizes(argv, message, capsys):
    from jaxrnn.cli import main

    assert main(["bptt", "check", *argv]) == 2
    assert message in capsys.readouterr().err


def test_tour_section_reports_measured_numbers():
    from jaxrnn.cli import bptt as section

    lines = list(section.tour())
    text = "\n".join(lines)
    assert "ok = True" in text
    assert "blamed on ('c', 4)" in text and "blamed on ('f', 5)" in text
    assert "measured 0.00124, predicted rho^30 = 0.00124" in text  # 0.8^30 = 0.001238
    assert "measured 237, predicted rho^30 = 237" in text  # 1.2^30 = 237.4
    assert "equals the identity exactly: True" in text


def test_the_reference_itself_equals_jax_grad_through_the_cells():
    # The reference's forward passes re-state c and h to add perturbations; at e = 0 its
    # parameter and input gradients must be jax.grad through the cells run by jaxrnn.scan.
    from jaxrnn.bptt import reference

    params, xs, dL_dh = scalar_problem()
    ref = reference.lstm_scalar(params, xs, dL_dh)
    auto = jax.grad(scalar_tests.loss_by_autodiff)(params, xs, dL_dh)
    for name in params:
        assert float(ref[name]) == pytest.approx(float(auto[name]), rel=1e-12, abs=1e-15)

    params, xs, dL_dh = lstm_tests.make_problem(0, T, (2,))
    ref = reference.lstm(params, xs, dL_dh)
    d_params, d_h0, d_xs = lstm_tests.grads_by_autodiff(params, jnp.zeros((2, 4)), xs, dL_dh)
    for name in params:
        np.testing.assert_allclose(ref[name], d_params[name], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ref["x"], d_xs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ref["h_prev"][0], d_h0, rtol=1e-12, atol=1e-15)

    params, xs, dL_dh = elman_tests.make_problem(0, T, (2,))
    ref = reference.elman(params, xs, dL_dh, activation="sigmoid")
    d_params, d_xs = elman_tests.grads_by_autodiff(params, xs, dL_dh, "sigmoid")
    for name in params:
        np.testing.assert_allclose(ref[name], d_params[name], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ref["x"], d_xs, rtol=1e-12, atol=1e-15)
