"""The damped Newton step of ELK (Gonzalez et al., NeurIPS 2024) as a parallel Kalman filter.

DEER's Newton step solves the linear recurrence s_t = F_t s_{t-1} + u_t exactly, wherever
its solution goes: through an expanding Jacobian chain it overflows (SPEC §5). The damped
step also asks to stay near the current guess y_t = s_t^(k), with weight ``damping`` = λ:

    minimise  sum_t |s_t - F_t s_{t-1} - u_t|^2 + λ sum_t |s_t - y_t|^2,     s_0 fixed,

the Levenberg–Marquardt objective. It is the log posterior of a linear-Gaussian state-space
model: dynamics s_t = F_t s_{t-1} + u_t + w_t, w_t ~ N(0, I), observations y_t = s_t + v_t,
v_t ~ N(0, I / λ). We take each state's *filtered* mean E[s_t | y_1..y_t], which solves
the objective over steps 1..t (SPEC §14): a state is corrected from the past only, as in
Newton's triangular system. (The smoothed mean, the objective's minimiser over all T,
also pulls early states towards wrong later guesses; on expanding dynamics it stalls in
self-consistent wrong trajectories.) The filter's covariance stays bounded, by about 1/λ,
whatever the dynamics: that is the damping. With λ -> 0 the step is DEER's.

The filter runs in O(log T) depth as an associative scan (Särkkä & García-Fernández 2021,
"Temporal parallelization of Bayesian smoothers"). With Q = I, H = I, R = I / λ every gain
is the scalar κ = λ / (1 + λ), and step t's element is

    A_t = (1 - κ) F_t      b_t = u_t + κ (y_t - u_t)      C_t = (1 - κ) I
    η_t = κ F_t^T (y_t - u_t)      J_t = κ F_t^T F_t

(the first step has F_1 = 0 and u_1 = f(s_0): the constant map of the fixed start). Two
elements, i then j, combine to

    M = I + C_i J_j
    A = A_j M^-1 A_i                  b = A_j M^-1 (b_i + C_i η_j) + b_j
    C = A_j M^-1 C_i A_j^T + C_j      η = A_i^T M^-T (η_j - J_j b_i) + η_i
    J = A_i^T M^-T J_j A_i + J_i

and the prefix b's are the filtered means. With diagonal F_t (quasi-ELK) every matrix is
diagonal and every product elementwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn.parallel.linear import matmul, matvec, segment_elements
from jaxrnn.parallel.timesplit import split_associative_scan


def _transpose(m):
    return jnp.swapaxes(m, -1, -2)


def _combine_full(earlier, later):
    """Two filter elements with full (H, H) matrices, ``earlier`` met first."""
    a_i, b_i, c_i, j_i, eta_i = earlier
    a_j, b_j, c_j, j_j, eta_j = later
    m = jnp.eye(a_i.shape[-1], dtype=a_i.dtype) + matmul(c_i, j_j)
    a_j_m = _transpose(jnp.linalg.solve(_transpose(m), _transpose(a_j)))  # A_j M^-1
    a_i_m = _transpose(jnp.linalg.solve(m, a_i))  # A_i^T M^-T
    return (
        matmul(a_j_m, a_i),
        matvec(a_j_m, b_i + matvec(c_i, eta_j)) + b_j,
        matmul(matmul(a_j_m, c_i), _transpose(a_j)) + c_j,
        matmul(matmul(a_i_m, j_j), a_i) + j_i,
        matvec(a_i_m, eta_j - matvec(j_j, b_i)) + eta_i,
    )


def _combine_diagonal(earlier, later):
    """Two filter elements with diagonal matrices (their diagonals, (..., H))."""
    a_i, b_i, c_i, j_i, eta_i = earlier
    a_j, b_j, c_j, j_j, eta_j = later
    m = 1 + c_i * j_j
    return (
        a_j * a_i / m,
        a_j * (b_i + c_i * eta_j) / m + b_j,
        a_j * a_j * c_i / m + c_j,
        a_i * a_i * j_j / m + j_i,
        a_i * (eta_j - j_j * b_i) / m + eta_i,
    )


def damped_newton_step(transitions, offsets, s0, guess, damping: float, *, kind: str, mesh=None):
    """The filtered means of the damped Newton system, all T at once.

    Args:
      transitions: F_t, (T, H, H) (``kind="full"``) or their diagonals (T, H).
      offsets: u_t, (T, H): the Newton recurrence is s_t = F_t s_{t-1} + u_t.
      s0: the fixed initial state, (H,).
      guess: the current iterate y_t = s_t^(k), (T, H).
      damping: λ > 0, the weight of staying near ``guess``.
      kind: ``"full"`` or ``"diagonal"``.
      mesh: optional 1-D mesh to split T over.

    Returns:
      the new iterate, (T, H).
    """
    n_steps = offsets.shape[0]
    first = (jnp.arange(n_steps) == 0).reshape((n_steps,) + (1,) * (offsets.ndim - 2))
    fresh = jnp.broadcast_to(first, offsets.shape[:-1])
    dynamics, inputs = segment_elements(transitions, offsets, s0, None, fresh, kind=kind)
    gain = damping / (1.0 + damping)
    innovation = guess - inputs
    if kind == "full":
        eye = jnp.eye(offsets.shape[-1], dtype=offsets.dtype)
        elements = (
            (1 - gain) * dynamics,
            inputs + gain * innovation,
            jnp.broadcast_to((1 - gain) * eye, dynamics.shape),
            gain * matmul(_transpose(dynamics), dynamics),
            gain * matvec(_transpose(dynamics), innovation),
        )
        combine = _combine_full
    else:
        elements = (
            (1 - gain) * dynamics,
            inputs + gain * innovation,
            jnp.full_like(dynamics, 1 - gain),
            gain * dynamics * dynamics,
            gain * dynamics * innovation,
        )
        combine = _combine_diagonal
    if mesh is None:
        return jax.lax.associative_scan(combine, elements)[1]
    return split_associative_scan(combine, elements, mesh, read=lambda i, p: combine(i, p)[1])
