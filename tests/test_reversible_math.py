"""SPEC §7 checked: the inverse formulas, det = beta^D, and the naive float inverse failing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import reversible

D = 3
C = jnp.array([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]])


def grad_j(theta):
    """∇J for J(theta) = 1/2 theta C theta + sum(cos(theta)) (not quadratic: H varies)."""
    return C.astype(theta.dtype) @ theta - jnp.sin(theta)


def step(s, alpha, beta):
    theta, p = s[:D], s[D:]
    p = beta * p - alpha * grad_j(theta)
    return jnp.concatenate([theta + p, p])


def inverse_step(s, alpha, beta):
    """SPEC §7 (a): theta(k) = theta(k+1) - p(k+1), p(k) = (p(k+1) + alpha ∇J(theta(k))) / beta."""
    theta, p = s[:D] - s[D:], s[D:]
    return jnp.concatenate([theta, (p + alpha * grad_j(theta)) / beta])


def test_inverse_formulas_undo_one_step_in_float64():
    rng = np.random.default_rng(0)
    for _ in range(5):
        s = jnp.asarray(rng.normal(size=2 * D))
        alpha, beta = rng.uniform(0.01, 0.5), rng.uniform(0.3, 0.99)
        np.testing.assert_allclose(inverse_step(step(s, alpha, beta), alpha, beta), s, atol=1e-13)
        np.testing.assert_allclose(step(inverse_step(s, alpha, beta), alpha, beta), s, atol=1e-13)


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.999])
def test_log_abs_det_of_the_step_jacobian_is_d_log_beta(beta):
    s = jnp.array([0.3, -1.0, 2.0, 0.5, 0.1, -0.4])
    jac = jax.jacfwd(step)(s, 0.2, beta)
    sign, logdet = jnp.linalg.slogdet(jac)
    assert float(sign) == 1.0
    assert float(logdet) == pytest.approx(D * np.log(beta), abs=1e-12)
    # The step as two shears after a scaling (SPEC §7 (b)): each shear has det 1.
    eye, zero = np.eye(D), np.zeros((D, D))
    hess = jax.jacfwd(grad_j)(s[:D])
    scale = np.block([[eye, zero], [zero, beta * eye]])
    shear_p = np.block([[eye, zero], [-0.2 * hess, eye]])
    shear_theta = np.block([[eye, eye], [zero, eye]])
    np.testing.assert_allclose(jac, shear_theta @ shear_p @ scale, atol=1e-12)
    assert np.linalg.det(shear_p) == pytest.approx(1.0) == np.linalg.det(shear_theta)


def naive_reversal_error(n_steps, alpha=0.3, beta=0.8):
    """Run n_steps in float32, undo them with the float inverse formulas, max |error|."""
    s0 = jnp.array([1.0, -0.5, 0.25, 0.0, 0.0, 0.0], jnp.float32)

    def fwd(s, _):
        return step(s, jnp.float32(alpha), jnp.float32(beta)), None

    def bwd(s, _):
        return inverse_step(s, jnp.float32(alpha), jnp.float32(beta)), None

    end = jax.lax.scan(fwd, s0, None, length=n_steps)[0]
    back = jax.lax.scan(bwd, end, None, length=n_steps)[0]
    return float(jnp.max(jnp.abs(back - s0)))


def test_the_naive_float_inverse_diverges_while_exact_reversal_does_not():
    errors = [naive_reversal_error(t) for t in (10, 100, 300)]
    assert errors[0] < 1e-5  # a few steps undo fine
    assert errors[1] > 1000 * errors[0] and errors[2] > 100.0  # rounding errors blow up
    c32 = C.astype(jnp.float32)
    grads = lambda theta, k: c32 @ theta - jnp.sin(theta)
    theta0 = jnp.array([1.0, -0.5, 0.25], jnp.float32)
    sched = (np.full(300, 0.3), np.full(300, 0.8))
    end = reversible.forward(reversible.init(theta0), grads, *sched)
    back = reversible.params(reversible.reverse(end, grads, *sched))
    assert np.array_equal(np.asarray(back), np.asarray(theta0))
