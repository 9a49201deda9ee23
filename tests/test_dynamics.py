"""Gradient flow (SPEC §5): Jacobian chains, eigen-powers, spectral radius, the carousel."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import dynamics
from jaxrnn.cells import elman, lstm


def normal(seed, shape):
    """Float64 N(0, 1) samples from NumPy (jax.random would compile a sampler per shape)."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


def elman_problem(seed, n_steps, batch=(), in_dim=2, hidden=3, scale=1.5):
    params = elman.init(jax.random.PRNGKey(seed), in_dim, hidden, dtype=jnp.float64)
    params["W"] = scale * params["W"]
    params["b"] = 0.2 * normal(seed + 1000, (hidden,))
    return params, normal(seed, (n_steps, *batch, in_dim))


def symmetric_elman(rho, hidden=4, n_steps=25):
    """W = Q diag(rho, ...) Q^T with |eigenvalues| <= rho, no bias, zero inputs: h stays 0."""
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(hidden, hidden)))
    eigenvalues = rho * np.array([1.0, -0.7, 0.5, 0.2])[:hidden]
    params = {
        "W": jnp.asarray(q @ np.diag(eigenvalues) @ q.T),
        "U": jnp.ones((hidden, 1)),
        "b": jnp.zeros(hidden),
    }
    return params, jnp.zeros((n_steps, 1))


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("t, k", [(6, 0), (6, 2), (5, 4), (3, 3)])
def test_jacobian_chain_formula_equals_jax_jacobian(activation, t, k):
    params, xs = elman_problem(0, 6)
    chain = dynamics.jacobian_chain(
        dynamics.elman_step_jacobians(params, xs, activation=activation), t, k
    )
    cell = partial(elman.apply, activation=activation)
    auto = dynamics.state_jacobian(cell, params, jnp.zeros(3), xs, t, k)
    np.testing.assert_allclose(chain, auto, rtol=1e-12, atol=1e-15)
    if t == k:
        np.testing.assert_array_equal(chain, np.eye(3))


def test_one_step_jacobian_is_diag_slope_times_W_by_hand():
    # SPEC §5(a): from h_0 = 0, h_1 = tanh(U x_1 + b), dh_1/dh_0 = diag(1 - h_1^2) W.
    params, xs = elman_problem(1, 1)
    h1 = np.tanh(np.asarray(params["U"]) @ np.asarray(xs[0]) + np.asarray(params["b"]))
    want = np.diag(1 - h1**2) @ np.asarray(params["W"])
    np.testing.assert_allclose(dynamics.elman_step_jacobians(params, xs)[0], want, rtol=1e-14)


def test_batched_chains_are_per_sequence():
    params, xs = elman_problem(2, 5, batch=(2,))
    both = dynamics.jacobian_chain(dynamics.elman_step_jacobians(params, xs), 5, 1)
    for n in range(2):
        one = dynamics.jacobian_chain(dynamics.elman_step_jacobians(params, xs[:, n]), 5, 1)
        np.testing.assert_allclose(both[n], one, rtol=1e-13)


def test_spec_5c_example_W_to_the_30():
    W = dynamics.spec_5c_matrix()
    result = dynamics.matrix_power_eig(W, 30)
    np.testing.assert_allclose(result.power, np.linalg.matrix_power(W, 30), rtol=1e-12)
    # By hand: W = 0.4 q1 q1^T + 0.9 q2 q2^T, q2 = (-0.6, 0.8), and 0.4^30 ≈ 1.2e-12, so
    # W^30 ≈ 0.9^30 [[0.36, -0.48], [-0.48, 0.64]], 0.9^30 = 0.0423911582752162.
    assert 0.9**30 == pytest.approx(0.0424, abs=5e-5)
    by_hand = 0.0423911582752162 * np.array([[0.36, -0.48], [-0.48, 0.64]])
    np.testing.assert_allclose(result.power, by_hand, atol=2e-12)
    assert sorted(np.real(result.eigenvalues)) == pytest.approx([0.4, 0.9], abs=1e-14)
    assert result.residual < 1e-14 and result.spectral_radius == pytest.approx(0.9)
    # Q Λ Q^T by hand: 0.4 [[.64, .48], [.48, .36]] + 0.9 [[.36, -.48], [-.48, .64]]
    np.testing.assert_allclose(W, [[0.58, -0.24], [-0.24, 0.72]], atol=1e-15)


def test_complex_eigenvalues_give_a_real_power():
    angle = 0.3
    M = 0.95 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    result = dynamics.matrix_power_eig(M, 17)
    assert np.isrealobj(result.power)
    np.testing.assert_allclose(result.power, np.linalg.matrix_power(M, 17), atol=1e-14)
    assert result.spectral_radius == pytest.approx(0.95)


@pytest.mark.parametrize("M", [[[1.0, 1.0], [0.0, 1.0]], [[0.9, 1.0], [0.0, 0.9]]])
def test_a_defective_matrix_is_refused_with_its_residual(M):
    # A Jordan block: eig returns two (nearly) parallel eigenvectors; Q Λ Q^-1 is 0.9 I or
    # I, not M, and Q Λ^n Q^-1 would miss the n lambda^(n-1) term of M^n.
    with pytest.raises(ValueError, match=r"M: .*residual .* defective"):
        dynamics.matrix_power_eig(np.array(M), 5)


def test_a_nearly_defective_matrix_is_refused_when_the_power_would_be_wrong():
    # [[0.9, 1], [0, 0.9 + d]] is diagonalisable for d != 0, but its eigenvectors are at an
    # angle of about d: cond(Q) ~ 2/d. At d = 1e-4 Q Λ^30 Q^-1 is still right to ~1e-14; at
    # d = 1e-8 Q Λ Q^-1 misses M by more than tol, and the refusal says how ill-conditioned Q is.
    near = np.array([[0.9, 1.0], [0.0, 0.9 + 1e-4]])
    result = dynamics.matrix_power_eig(near, 30)
    np.testing.assert_allclose(result.power, np.linalg.matrix_power(near, 30), rtol=1e-12)
    with pytest.raises(ValueError, match=r"nearly defective .*cond\(Q\) = 2e\+08"):
        dynamics.matrix_power_eig(np.array([[0.9, 1.0], [0.0, 0.9 + 1e-8]]), 30)


@pytest.mark.parametrize(
    "M, n, match",
    [
        (np.ones((2, 3)), 2, "square"),
        (np.ones(3), 2, "square"),
        (np.eye(2), -1, "n"),
        (np.eye(2), 2.5, "n"),
        (np.array([[np.nan, 0], [0, 1]]), 2, "finite"),
    ],
)
def test_bad_matrix_power_arguments(M, n, match):
    with pytest.raises(ValueError, match=match):
        dynamics.matrix_power_eig(M, n)


@pytest.mark.parametrize("tol", [0.0, -1.0, "1e-9", True])
def test_a_bad_tolerance_is_refused_by_name(tol):
    with pytest.raises(ValueError, match="tol: expected a positive number"):
        dynamics.matrix_power_eig(np.eye(2), 2, tol=tol)


def test_eigen_analysis_under_jit_is_refused():
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda M: dynamics.matrix_power_eig(M, 2).power)(jnp.eye(2))


@pytest.mark.parametrize("rho", [0.8, 1.2])
def test_measured_gradient_norms_equal_the_spectral_prediction_at_rest(rho):
    # Zero input, zero bias: h stays 0, tanh'(0) = 1, so dh_T/dh_{T-d} = W^d exactly, and for
    # a symmetric W ||W^d||_2 = rho^d: vanishing for rho < 1, exploding for rho > 1.
    params, xs = symmetric_elman(rho)
    measured = dynamics.gradient_norms(elman.apply, params, jnp.zeros(4), xs)
    predicted = dynamics.predicted_norms(params["W"], 25)
    np.testing.assert_allclose(measured, predicted, rtol=1e-12)
    np.testing.assert_allclose(predicted, rho ** np.arange(1, 26), rtol=1e-12)
    assert dynamics.growth_rate(measured) == pytest.approx(rho, rel=1e-10)


def test_nonsymmetric_W_grows_at_the_rate_of_its_spectral_radius():
    # ||W^d||^(1/d) -> rho (Gelfand), although ||W|| > rho for a non-normal W.
    rng = np.random.default_rng(1)
    W = rng.normal(size=(5, 5))
    W = 0.9 * W / np.max(np.abs(np.linalg.eigvals(W)))
    params = {"W": jnp.asarray(W), "U": jnp.ones((5, 1)), "b": jnp.zeros(5)}
    measured = dynamics.gradient_norms(elman.apply, params, jnp.zeros(5), jnp.zeros((60, 1)))
    assert dynamics.spectral_radius(W) == pytest.approx(0.9)
    assert dynamics.growth_rate(measured[20:]) == pytest.approx(0.9, rel=0.02)


def test_saturation_tempers_explosion_below_the_prediction():
    # With inputs, h leaves 0 and tanh' < 1: each factor diag(tanh') W has norm <= ||W||
    # = rho (W symmetric), so the measured norm is at most rho^d, and saturation makes it
    # far smaller over a long distance.
    params, _ = symmetric_elman(1.3, n_steps=25)
    xs = 2.0 * normal(3, (25, 1))
    measured = np.asarray(dynamics.gradient_norms(elman.apply, params, jnp.zeros(4), xs))
    predicted = dynamics.predicted_norms(params["W"], 25)
    assert np.all(measured <= predicted * (1 + 1e-12))
    assert measured[-1] < 1e-2 * predicted[-1]


def lstm_with_gate_biases(b_f, b_i, b_o, hidden=3, in_dim=2):
    params = lstm.init(jax.random.PRNGKey(4), in_dim, hidden, dtype=jnp.float64)
    return {**params, "b_f": jnp.full(hidden, b_f), "b_i": jnp.full(hidden, b_i),
            "b_o": jnp.full(hidden, b_o)}  # fmt: skip


def test_carousel_f_1_i_0_makes_dc_t_dc_k_exactly_the_identity():
    # sigmoid(800) == 1.0 and sigmoid(-800) == 0.0 in float64, and their slopes are 0:
    # dc_t/dc_{t-1} = diag(f_t) + (paths through h_{t-1} scaled by f', i, i') = I exactly.
    params = lstm_with_gate_biases(800.0, -800.0, 0.0)
    xs = normal(5, (12, 2))
    carry = (jnp.ones(3), jnp.zeros(3))
    (dc_dc, dc_dh), _ = dynamics.state_jacobian(lstm.apply, params, carry, xs, 12, 2)
    np.testing.assert_array_equal(dc_dc, np.eye(3))
    np.testing.assert_array_equal(dc_dh, np.zeros((3, 3)))


def test_carousel_f_near_1_i_o_near_0_keeps_the_c_path_and_kills_the_h_path():
    # f ≈ 1 - 4.5e-5, i ≈ o ≈ 4.5e-5: over 30 steps dc/dc ≈ f^30 I ≈ 0.9986 I (SPEC §3(c)),
    # while dh_t/dh_k passes through o ≈ 0 and is about 0.
    params = lstm_with_gate_biases(10.0, -10.0, -10.0)
    xs = normal(6, (31, 2))
    carry = lstm.init_carry((), 3, dtype=jnp.float64)
    (dc_dc, _), (_, dh_dh) = dynamics.state_jacobian(lstm.apply, params, carry, xs, 31, 1)
    np.testing.assert_allclose(dc_dc, np.eye(3), atol=2e-3)
    assert np.max(np.abs(dh_dh)) < 1e-6


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p, x, A: dynamics.jacobian_chain(A, 2, 3), "t, k"),
        (lambda p, x, A: dynamics.jacobian_chain(A, 9, 0), "t, k"),
        (lambda p, x, A: dynamics.jacobian_chain(A, 2.0, 0), "t"),
        (lambda p, x, A: dynamics.jacobian_chain(A[0, 0], 1, 0), "step_jacobians"),
        (lambda p, x, A: dynamics.elman_step_jacobians(p, x, activation="relu"), "activation"),
        (lambda p, x, A: dynamics.elman_step_jacobians(p, x, activation=["tanh"]), "activation"),
        (lambda p, x, A: dynamics.elman_step_jacobians({**p, "b": p["U"]}, x), "b"),
        (lambda p, x, A: dynamics.elman_step_jacobians(p, x[:, :1]), "x"),
        (lambda p, x, A: dynamics.state_jacobian(elman.apply, p, jnp.zeros(3), x[None], 1, 0),
         "xs"),
        (lambda p, x, A: dynamics.state_jacobian(elman.apply, p, jnp.zeros(3), x, 1, 2), "t, k"),
        (lambda p, x, A: dynamics.gradient_norms(elman.apply, p, jnp.zeros(3), x[0]), "xs"),
        (lambda p, x, A: dynamics.predicted_norms(p["W"], 0), "n_steps"),
        (lambda p, x, A: dynamics.growth_rate([1.0]), "norms"),
        (lambda p, x, A: dynamics.growth_rate([1.0, 0.0]), "norms"),
        (lambda p, x, A: dynamics.spectral_radius(p["U"]), "square"),
    ],
)  # fmt: skip
def test_bad_input_raises_value_error_naming_it(call, match):
    params, xs = elman_problem(0, 4)
    step_jacobians = dynamics.elman_step_jacobians(params, xs)
    with pytest.raises(ValueError, match=match):
        call(params, xs, step_jacobians)
