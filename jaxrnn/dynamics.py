"""Gradient flow through time: Jacobian chains, eigen-powers, vanishing and exploding (SPEC §5).

Elman RNN h_t = sigma(z_t), z_t = W h_{t-1} + U x_t + b. Its step Jacobian is
(SPEC §5(a))::

    dh_t/dh_{t-1} = diag(sigma'(z_t)) W,     dh_t/dh_k = prod_{j=t..k+1} diag(sigma'(z_j)) W

so over a distance t - k the gradient is multiplied by t - k such factors. Where sigma' is
about constant, this is about a power of W, and M^n = Q Λ^n Q^-1 (SPEC §5(c)) shows that the
eigenvalues decide: spectral radius rho < 1 vanishes like rho^n, rho > 1 explodes (until the
nonlinearity saturates), rho = 1 keeps the norm. The LSTM's cell path c_t = f_t c_{t-1} +
i_t g_t has dc_t/dc_{t-1} = diag(f_t) plus terms through h, which vanish when f = 1 and i = 0:
the constant error carousel (SPEC §5(d)).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_matrix, check_params, is_concrete, is_int, is_number, shape_of
from jaxrnn._scan import scan
from jaxrnn.cells import elman

#: sigma'(z) written through the output h = sigma(z).
ACTIVATION_SLOPES = {"tanh": lambda h: 1 - h**2, "sigmoid": lambda h: h * (1 - h)}

#: SPEC §5(c): Q (orthogonal) and Λ of the example W = Q Λ Q^-1.
SPEC_5C_Q = np.array([[0.8, -0.6], [0.6, 0.8]])
SPEC_5C_EIGENVALUES = np.array([0.4, 0.9])


def activation_slope(activation: str, h):
    """sigma'(z) from h = sigma(z): ``1 - h^2`` for tanh, ``h (1 - h)`` for the sigmoid."""
    if not isinstance(activation, str) or activation not in ACTIVATION_SLOPES:
        raise ValueError(
            f"activation: expected one of {sorted(ACTIVATION_SLOPES)} (a derivative is needed), "
            f"got {activation!r}"
        )
    return ACTIVATION_SLOPES[activation](h)


def elman_states(params: dict, xs, *, activation: str = "tanh"):
    """h_1..h_T of the Elman RNN from h_0 = 0, shape (T, *batch, H), and h_0 (*batch, H).

    Reference loop::

        h = h0 = zeros((*batch, H)); hs = []
        for x in xs:
            h = sigma(W @ h + U @ x + b); hs.append(h)

    Args:
      params: ``{"W": (H, H), "U": (H, D), "b": (H,)}``; xs: (T, *batch, D);
      activation: ``"tanh"`` or ``"sigmoid"``.
    """
    hidden, in_dim = check_matrix(params, "U")
    check_params(params, elman.param_shapes(in_dim, hidden))
    activation_slope(activation, 0.0)  # validates the name
    shape = shape_of(xs)
    if len(shape) < 2 or shape[0] < 1:
        raise ValueError(f"xs: expected shape (T, *batch, {in_dim}) with T >= 1, got {shape}")
    dtype = jnp.result_type(*[jnp.asarray(v).dtype for v in params.values()], jnp.asarray(xs))
    h0 = elman.init_carry(shape[1:-1], hidden, dtype=dtype)
    cell = partial(elman.apply, activation=activation)
    return scan(cell, params, h0, xs)[1], h0


def elman_step_jacobians(params: dict, xs, *, activation: str = "tanh"):
    """A_t = dh_t/dh_{t-1} = diag(sigma'(z_t)) W for t = 1..T (SPEC §5(a)), by the formula.

    Args:
      params: Elman parameters ``{"W": (H, H), "U": (H, D), "b": (H,)}``.
      xs: (T, *batch, D).
      activation: ``"tanh"`` or ``"sigmoid"``.

    Returns:
      (T, *batch, H, H); entry [t-1] is A_t.
    """
    hs, _ = elman_states(params, xs, activation=activation)
    return activation_slope(activation, hs)[..., :, None] * params["W"]


def jacobian_chain(step_jacobians, t: int, k: int):
    """dh_t/dh_k = A_t A_{t-1} ... A_{k+1} (SPEC §5(b)); the identity when k = t.

    Reference loop::

        J = eye(H)
        for j in range(k + 1, t + 1):
            J = step_jacobians[j - 1] @ J

    Args:
      step_jacobians: (T, *batch, H, H) from :func:`elman_step_jacobians`.
      t, k: steps with 0 <= k <= t <= T (1-based steps; 0 is the initial state).

    Returns:
      (*batch, H, H).
    """
    shape = shape_of(step_jacobians)
    if len(shape) < 3 or shape[-1] != shape[-2]:
        raise ValueError(f"step_jacobians: expected shape (T, *batch, H, H), got {shape}")
    for name, value in (("t", t), ("k", k)):
        if not is_int(value):
            raise ValueError(f"{name}: expected an int, got {value!r}")
    if not 0 <= k <= t <= shape[0]:
        raise ValueError(f"t, k: expected 0 <= k <= t <= T = {shape[0]}, got t = {t}, k = {k}")
    chain = jnp.broadcast_to(jnp.eye(shape[-1], dtype=step_jacobians.dtype), shape[1:])
    for j in range(k + 1, t + 1):
        chain = step_jacobians[j - 1] @ chain
    return chain


def _check_single_sequence(xs):
    shape = shape_of(xs)
    if len(shape) != 2 or shape[0] < 1:
        raise ValueError(f"xs: expected one sequence of shape (T, D) with T >= 1, got {shape}")


def state_jacobian(cell, params, carry, xs, t: int, k: int):
    """d carry_t / d carry_k by ``jax.jacobian`` (0 <= k <= t <= T; carry_0 = ``carry``).

    The carry after step k is taken as the input of a function that runs steps k+1..t.
    For the Elman cell this is dh_t/dh_k (H, H); for the LSTM a nested pair
    ``((dc_t/dc_k, dc_t/dh_k), (dh_t/dc_k, dh_t/dh_k))`` of (H, H) blocks.

    Reference loop (the Jacobian of ``run_from_k`` at the carry after step k)::

        for x in xs[:k]:
            carry, _ = cell(params, carry, x)          # carry_k

        def run_from_k(state):
            for x in xs[k:t]:
                state, _ = cell(params, state, x)
            return state                                # carry_t

        jax.jacobian(run_from_k)(carry)

    Args:
      cell: ``cell(params, carry, x) -> (carry, y)``, e.g. ``jaxrnn.cells.lstm.apply``.
      params: the cell's parameters.
      carry: the initial carry (leaves of shape (H,)); xs: one sequence (T, D).
      t, k: ints with 0 <= k <= t <= T.

    Returns:
      d carry_t / d carry_k: (H, H) for a single-array carry, else the nested blocks above.
    """
    _check_single_sequence(xs)
    n_steps = shape_of(xs)[0]
    for name, value in (("t", t), ("k", k)):
        if not is_int(value):
            raise ValueError(f"{name}: expected an int, got {value!r}")
    if not 0 <= k <= t <= n_steps:
        raise ValueError(f"t, k: expected 0 <= k <= t <= T = {n_steps}, got t = {t}, k = {k}")
    return _state_jacobian(cell, params, carry, xs, t=int(t), k=int(k))


@partial(jax.jit, static_argnames=("cell", "t", "k"))  # compiled once per cell, shapes, t, k
def _state_jacobian(cell, params, carry, xs, *, t, k):
    carry_k = scan(cell, params, carry, xs[:k])[0] if k > 0 else carry

    def run_from_k(state):
        return scan(cell, params, state, xs[k:t])[0] if t > k else state

    return jax.jacobian(run_from_k)(carry_k)


def gradient_norms(cell, params, carry, xs):
    """Measured ||dy_T / d carry_{T-d}||_2 for distances d = 1..T, by ``jax.jacobian``.

    A zero perturbation e_k is added to the carry after each step k = 0..T-1 and the
    Jacobian of the last output y_T w.r.t. all of them is taken at e = 0; its block for k,
    flattened over the carry's leaves to a matrix, has spectral norm ``norms[T-k-1]``.

    Reference loop (``e`` the zero perturbations, one per step)::

        def last_output(e):
            state = carry
            for k, x in enumerate(xs):
                state, y = cell(params, state + e[k], x)
            return y                                    # y_T

        J = jax.jacobian(last_output)(zeros)            # J[:, k]: dy_T / d carry_k
        norms[T - k - 1] = ||J[:, k]||_2                # distance d = T - k

    Args:
      cell: ``cell(params, carry, x) -> (carry, y)``; params: its parameters.
      carry: the initial carry (leaves of shape (H,)); xs: one sequence (T, D).

    Returns:
      (T,) array; entry [d-1] is the norm at distance d.
    """
    _check_single_sequence(xs)
    n_steps = shape_of(xs)[0]
    zeros = jax.tree_util.tree_map(
        lambda leaf: jnp.zeros((n_steps,) + jnp.shape(leaf), jnp.result_type(leaf)), carry
    )
    blocks = jax.tree_util.tree_leaves(_last_output_jacobian(cell, params, carry, xs, zeros))
    out = blocks[0].shape[0]
    per_k = jnp.concatenate([b.reshape(out, n_steps, -1) for b in blocks], axis=-1)
    norms = jnp.linalg.norm(jnp.moveaxis(per_k, 1, 0), ord=2, axis=(-2, -1))
    return norms[::-1]


@partial(jax.jit, static_argnames="cell")  # compiled once per cell and shapes
def _last_output_jacobian(cell, params, carry, xs, zeros):
    """d y_T / d e_k for zero perturbations e_k added to the carry before step k + 1."""

    def last_output(perturbations):
        def step(state, inputs):
            e, x = inputs
            state = jax.tree_util.tree_map(jnp.add, state, e)
            return cell(params, state, x)

        _, ys = jax.lax.scan(step, carry, (perturbations, xs))
        return ys[-1]

    return jax.jacobian(last_output)(zeros)


def spectral_radius(M) -> float:
    """max |lambda| over the eigenvalues of the square matrix M."""
    M = _square_matrix(M)
    return float(np.max(np.abs(np.linalg.eigvals(M))))


def predicted_norms(M, n_steps: int):
    """rho(M)^d for d = 1..n_steps: the growth the spectral radius predicts over distance d."""
    if not is_int(n_steps) or n_steps < 1:
        raise ValueError(f"n_steps: expected a positive integer, got {n_steps!r}")
    return spectral_radius(M) ** np.arange(1, n_steps + 1)


def growth_rate(norms) -> float:
    """The per-step factor r of a fit norms[d-1] ~ C r^d (least squares on log norms)."""
    norms = np.asarray(norms, dtype=float)
    if norms.ndim != 1 or norms.size < 2 or not np.all(norms > 0):
        raise ValueError(
            f"norms: expected a 1-D array of at least 2 positive values, got {norms!r}"
        )
    slope = np.polyfit(np.arange(1, norms.size + 1), np.log(norms), 1)[0]
    return float(np.exp(slope))


class EigenPower(NamedTuple):
    """M^n = Q Λ^n Q^-1 and the evidence that the decomposition reproduces M."""

    power: np.ndarray  # M^n
    eigenvalues: np.ndarray  # diagonal of Λ
    eigenvectors: np.ndarray  # Q, one eigenvector per column
    residual: float  # ||Q Λ Q^-1 - M||_F / ||M||_F
    spectral_radius: float  # max |lambda|


def _square_matrix(M) -> np.ndarray:
    if not is_concrete(M):
        raise ValueError("M: expected a concrete matrix (eigen-analysis runs outside jit)")
    M = np.asarray(M)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] == 0:
        raise ValueError(f"M: expected a square matrix (n, n), got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError("M: expected finite entries")
    return M


def matrix_power_eig(M, n: int, *, tol: float = 1e-9) -> EigenPower:
    """M^n by eigendecomposition, M = Q Λ Q^-1 => M^n = Q Λ^n Q^-1 (SPEC §5(c)).

    Refuses (``ValueError``, with the residual) when Q Λ Q^-1 does not reproduce M to the
    relative tolerance ``tol``: a defective (non-diagonalisable) M such as a Jordan block
    has no such Q, and Q Λ^n Q^-1 would silently be wrong.

    Args:
      M: a concrete square matrix (n, n), real or complex.
      n: a non-negative integer power.
      tol: the largest accepted ||Q Λ Q^-1 - M||_F / ||M||_F.
    """
    M = _square_matrix(M)
    if not is_int(n) or n < 0:
        raise ValueError(f"n: expected a non-negative integer, got {n!r}")
    if not is_number(tol) or not tol > 0:
        raise ValueError(f"tol: expected a positive number, got {tol!r}")
    eigenvalues, Q = np.linalg.eig(M)
    with np.errstate(all="ignore"):
        condition = float(np.linalg.cond(Q))
        try:
            Q_inv = np.linalg.inv(Q)
            rebuilt = (Q * eigenvalues) @ Q_inv
            residual = float(np.linalg.norm(rebuilt - M) / max(np.linalg.norm(M), 1e-300))
        except np.linalg.LinAlgError:
            residual = float("inf")
    if not residual <= tol:
        raise ValueError(
            f"M: Q Λ Q^-1 does not reproduce M (relative residual {residual:.3g} > tol {tol:g}); "
            f"M is defective (not diagonalisable), e.g. a Jordan block, or so nearly defective "
            f"that its eigenvectors are numerically parallel (cond(Q) = {condition:.3g}); "
            f"eigenvalues {np.round(eigenvalues, 6).tolist()}; M^n by eigendecomposition would "
            f"be wrong"
        )
    power = (Q * eigenvalues**n) @ Q_inv
    if np.isrealobj(M):
        power = power.real
    return EigenPower(power, eigenvalues, Q, residual, float(np.max(np.abs(eigenvalues))))


def spec_5c_matrix() -> np.ndarray:
    """The SPEC §5(c) example W = Q Λ Q^-1, Q = [[0.8, -0.6], [0.6, 0.8]], Λ = diag(0.4, 0.9)."""
    return SPEC_5C_Q @ np.diag(SPEC_5C_EIGENVALUES) @ np.linalg.inv(SPEC_5C_Q)
