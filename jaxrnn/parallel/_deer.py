"""Evaluate a nonlinear recurrence in parallel over time by Newton's method (DEER).

Write the trajectory of a cell as one unknown S = (s_1, ..., s_T), with s_t the carry
after step t (flattened to a vector) and s_0 the initial carry. It solves

    s_t = f(s_{t-1}, x_t),   t = 1..T.

Newton linearises f around the current guess S^(k) and solves the linear recurrence

    s_t^(k+1) = J_t s_{t-1}^(k+1) + [f(s_{t-1}^(k), x_t) - J_t s_{t-1}^(k)],
    J_t = df/ds (s_{t-1}^(k), x_t),

for all t at once with :func:`jaxrnn.parallel.linear_recurrence` (O(log T) depth); the
Jacobians of all T steps are evaluated in parallel too. (Lim et al., ICLR 2024, "DEER".)
With only the diagonal of J_t (quasi-DEER, Gonzalez et al., NeurIPS 2024) each solve is
elementwise; convergence is then linear rather than quadratic. Either way iteration k
makes s_1..s_k exact, so T iterations give the exact trajectory in exact arithmetic
(T + 1 to see the update vanish); DEER pays off
when far fewer do, which happens when the Jacobian chain contracts (SPEC §5): errors of
early steps then fade along the sequence instead of being amplified.

Padded batches (``lengths``) keep this form: a step t past a sequence's length L is the
identity map s_t = s_{t-1} (J_t = I, offset 0, the input unused), exactly the masked step of
``jaxrnn.scan``, so the padding copies s_L and adds nothing to the updates or the residual.
``reverse=True`` solves the same system on the time-flipped inputs (padding first).

Gradients do not differentiate through the iterations. At the fixed point, the adjoint
(lambda_t = dL/ds_t, with g_t the direct cotangent of s_t)

    lambda_T = g_T,     lambda_t = g_t + J_{t+1}^T lambda_{t+1},

is again a linear recurrence, solved in reverse by the same associative scan; then
dL/dtheta = sum_t lambda_t^T df/dtheta (s_{t-1}, x_t), dL/dx_t = lambda_t^T df/dx_t and
dL/ds_0 = J_1^T lambda_1 (implicit differentiation). The adjoint uses the full Jacobians
in both modes, so gradients are exact whichever ``jacobian`` ran forward.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxrnn._checks import (
    check_lengths,
    check_positive_int,
    dtype_of,
    is_concrete,
    is_int,
    is_number,
    shape_of,
)
from jaxrnn._scan import scan
from jaxrnn._varying import sum_like, vary_like
from jaxrnn.parallel.kalman import damped_newton_step
from jaxrnn.parallel.linear import linear_recurrence, matvec
from jaxrnn.parallel.timesplit import check_time_mesh

JACOBIANS = ("full", "diagonal")
ON_FAILURE = ("warn", "raise", "nan", "ignore")


class DeerInfo(NamedTuple):
    """What the Newton iterations did; fields have the batch shape (*batch,) first.

    Attributes:
      iterations: Newton iterations run (int).
      converged: whether the last update was at most ``tol`` (bool).
      update_norms: (*batch, max_iters): max |S^(k) - S^(k-1)| after iteration k
        (1-based k at index k - 1); NaN for iterations not run.
      residual: max_t |s_t - f(s_{t-1}, x_t)| of the returned trajectory.
    """

    iterations: jax.Array
    converged: jax.Array
    update_norms: jax.Array
    residual: jax.Array


class DeerNotConverged(RuntimeError):
    """Raised by ``deer(..., on_failure="raise")`` when Newton did not converge."""

    def __init__(self, message: str, info: DeerInfo):
        super().__init__(message)
        self.info = info


class DeerNotConvergedWarning(RuntimeWarning):
    """Warned by ``deer(..., on_failure="warn")`` when Newton did not converge."""


def _default_tol(dtype) -> float:
    return 1e-12 if jnp.finfo(dtype).bits >= 64 else 1e-5


def _shifted(s0, states):
    """(s_0, s_1, ..., s_{T-1}): the carries entering each step."""
    return jnp.concatenate([s0[None], states[:-1]], axis=0)


def _linearisation(step, params, s0, states, xs, jacobian: str):
    """Transitions A_t and offsets b_t of the Newton linear recurrence around ``states``."""
    prev = _shifted(s0, states)
    values = jax.vmap(step, (None, 0, 0))(params, prev, xs)
    jac = jax.vmap(jax.jacfwd(step, argnums=1), (None, 0, 0))(params, prev, xs)
    if jacobian == "diagonal":
        jac = jnp.diagonal(jac, axis1=-2, axis2=-1)
        return jac, values - jac * prev
    return jac, values - matvec(jac, prev)


def _residual(step, params, s0, states, xs):
    """max_t |s_t - f(s_{t-1}, x_t)|: how far ``states`` are from solving the recurrence."""
    values = jax.vmap(step, (None, 0, 0))(params, _shifted(s0, states), xs)
    return jnp.max(jnp.abs(states - values))


def _newton(step, params, s0, xs, *, max_iters: int, tol: float, jacobian: str, damping, mesh):
    """Newton (or quasi-Newton) iterations on the whole trajectory of one sequence.

    Undamped, each iteration solves the Newton recurrence exactly and stops once the update
    is at most ``tol``. Damped (ELK), each takes the Kalman-filtered step of
    :func:`jaxrnn.parallel.kalman.damped_newton_step` and stops once both the update and
    the residual max_t |s_t - f(s_{t-1}, x_t)| are at most ``tol`` (a damped step can be
    small far from the solution, so the update alone would not do).
    """
    n_steps = jax.tree_util.tree_leaves(xs)[0].shape[0]
    guess = jnp.broadcast_to(s0, (n_steps,) + s0.shape)
    history = jnp.full((max_iters,), jnp.nan, s0.dtype)
    inf = jnp.asarray(jnp.inf, s0.dtype)

    def converged(update, residual):
        return (update <= tol) & (residual <= tol)

    def keep_going(state):
        k, _, _, update, residual = state
        # False once the update is NaN: NaN compares False
        return (k < max_iters) & (update == update) & ~converged(update, residual)

    def iterate(state):
        k, states, history, _, _ = state
        transitions, offsets = _linearisation(step, params, s0, states, xs, jacobian)
        if damping is None:
            new = linear_recurrence(transitions, offsets, s0, mesh=mesh)
        else:
            new = damped_newton_step(
                transitions, offsets, s0, states, damping, kind=jacobian, mesh=mesh
            )
        update = jnp.max(jnp.abs(new - states))
        if damping is None:  # Newton stops on the update alone
            residual = jnp.zeros_like(update)
        else:
            residual = _residual(step, params, s0, new, xs)
        return k + 1, new, history.at[k].set(update), update, residual

    start = (jnp.asarray(0, jnp.int32), guess, history, inf, inf)
    start = vary_like(start, params, s0, xs)  # inside jax.shard_map: vary as the inputs do
    k, states, history, update, residual = jax.lax.while_loop(keep_going, iterate, start)
    return states, k, converged(update, residual), history


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _fixed_point(step, mesh, params, s0, xs, states):
    """Identity on the solved ``states``; its VJP is the implicit adjoint recurrence."""
    return states


def _fixed_point_fwd(step, mesh, params, s0, xs, states):
    return states, (params, s0, xs, states)


def _fixed_point_bwd(step, mesh, residuals, cotangent):
    params, s0, xs, states = residuals
    prev = _shifted(s0, states)
    jac = jax.vmap(jax.jacfwd(step, argnums=1), (None, 0, 0))(params, prev, xs)
    # lambda_t = g_t + J_{t+1}^T lambda_{t+1}: row t holds J_{t+1}^T (the last row meets 0).
    transitions = jnp.swapaxes(jnp.roll(jac, -1, axis=0), -1, -2)
    adjoint = linear_recurrence(transitions, cotangent, jnp.zeros_like(s0), reverse=True, mesh=mesh)
    _, pullback = jax.vjp(jax.vmap(step, (None, 0, 0)), params, prev, xs)
    params_bar, prev_bar, xs_bar = pullback(adjoint)
    grads = sum_like((params_bar, prev_bar[0], xs_bar), (params, s0, xs))
    return (*grads, vary_like(jnp.zeros_like(states), states))


_fixed_point.defvjp(_fixed_point_fwd, _fixed_point_bwd)


def _padded_step(cell, params, carry, active_and_x):
    """One step of ``jaxrnn.scan`` with lengths: ``cell`` where ``active``, else s -> s, y = 0.

    It is ``scan`` itself over the one-step sequence x[None] with length 1 (active) or 0,
    so padding is handled exactly as there: the cell sees zeros instead of the padding.
    """
    active, x = active_and_x
    xs = jax.tree_util.tree_map(lambda leaf: leaf[None], x)
    carry, ys = scan(cell, params, carry, xs, lengths=active.astype(jnp.int32), unroll=True)
    return carry, jax.tree_util.tree_map(lambda leaf: leaf[0], ys)


def _solve_one(cell, params, carry, xs, *, max_iters, tol, jacobian, padded, damping, mesh):
    """DEER for one sequence: carry leaves without batch axes, xs leaves (T, ...).

    With ``padded``, xs is ``(active, xs)`` and step t runs :func:`_padded_step`.
    """
    if padded:
        cell = functools.partial(_padded_step, cell)
    s0, unravel = ravel_pytree(carry)

    def step(p, s, x):
        return ravel_pytree(cell(p, unravel(s), x)[0])[0]

    frozen = jax.lax.stop_gradient((params, s0, xs))
    solved, iterations, converged, history = _newton(
        step, *frozen, max_iters=max_iters, tol=tol, jacobian=jacobian, damping=damping, mesh=mesh
    )
    states = _fixed_point(step, mesh, params, s0, xs, solved)
    carries, ys = jax.vmap(lambda s, x: cell(params, unravel(s), x))(_shifted(s0, states), xs)
    flat = jax.vmap(lambda c: ravel_pytree(c)[0])(carries)
    residual = jnp.max(jnp.abs(jax.lax.stop_gradient(flat - states)))
    final = jax.tree_util.tree_map(lambda leaf: leaf[-1], carries)
    return final, ys, DeerInfo(iterations, converged, history, residual)


def _activity(lengths, xs, batch_ndim: int):
    """active[t, ...] = t < lengths[...], shape (T, *lengths.shape) with at least the
    ``batch_ndim`` batch axes of xs (fewer axes of lengths broadcast over the trailing ones)."""
    first = jax.tree_util.tree_leaves(xs)[0]
    n_steps, batch = first.shape[0], first.shape[1 : 1 + batch_ndim]
    lengths = jnp.asarray(lengths)
    if lengths.ndim < batch_ndim:
        lengths = lengths.reshape(lengths.shape + (1,) * (batch_ndim - lengths.ndim))
        lengths = jnp.broadcast_to(lengths, batch)
    steps = jnp.arange(n_steps).reshape((n_steps,) + (1,) * lengths.ndim)
    return steps < lengths


def _flip_time(tree):
    return jax.tree_util.tree_map(lambda leaf: jnp.flip(leaf, axis=0), tree)


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("max_iters", "tol", "jacobian", "batch_ndim", "reverse", "mesh"),
)
def _solve_batch(
    cell,
    params,
    carry,
    xs,
    lengths,
    damping,
    *,
    max_iters,
    tol,
    jacobian,
    batch_ndim,
    reverse,
    mesh,
):
    """:func:`_solve_one` vmapped over ``batch_ndim`` leading batch axes, compiled once
    (for any ``damping`` value: only whether it is None changes the program)."""
    padded = lengths is not None
    if padded:
        xs = (_activity(lengths, xs, batch_ndim), xs)
    if reverse:
        xs = _flip_time(xs)  # padding first: identity steps that keep the initial carry
    solve = functools.partial(
        _solve_one,
        cell,
        max_iters=max_iters,
        tol=tol,
        jacobian=jacobian,
        padded=padded,
        damping=damping,
        mesh=mesh,
    )
    for _ in range(batch_ndim):
        solve = jax.vmap(solve, in_axes=(None, 0, 1), out_axes=(0, 1, 0))
    final, ys, info = solve(params, carry, xs)
    return final, _flip_time(ys) if reverse else ys, info


def _check_positive_float(value, *, name: str):
    """None, or a positive finite number."""
    if value is None:
        return
    if not is_number(value):
        raise ValueError(f"{name}: expected a positive float or None, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive finite float, got {value!r}")


def _check_arguments(
    cell,
    params,
    carry,
    xs,
    *,
    lengths,
    reverse,
    max_iters,
    tol,
    jacobian,
    batch_ndim,
    on_failure,
    damping,
    mesh,
):
    if not callable(cell):
        raise ValueError(f"cell: expected a callable cell(params, carry, x), got {cell!r}")
    check_positive_int(max_iters, name="max_iters")
    _check_positive_float(tol, name="tol")
    _check_positive_float(damping, name="damping")
    if mesh is not None:
        check_time_mesh(mesh)
    if jacobian not in JACOBIANS:
        raise ValueError(f"jacobian: expected one of {JACOBIANS}, got {jacobian!r}")
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure: expected one of {ON_FAILURE}, got {on_failure!r}")
    if not is_int(batch_ndim):
        raise ValueError(f"batch_ndim: expected a non-negative int, got {batch_ndim!r}")
    if batch_ndim < 0:
        raise ValueError(f"batch_ndim: expected a non-negative int, got {batch_ndim}")
    xs_shapes = [shape_of(leaf) for leaf in jax.tree_util.tree_leaves(xs)]
    if xs_shapes and all(len(s) >= 1 for s in xs_shapes) and xs_shapes[0][0] < 1:
        raise ValueError(f"xs: expected at least one time step, got shapes {xs_shapes}")
    # The sequential runner validates carry, xs, reverse and the cell's carry type; reuse it,
    # abstractly (lengths are checked here, where their values are still concrete).
    jax.eval_shape(lambda p, c, x: scan(cell, p, c, x, reverse=reverse), params, carry, xs)
    if lengths is not None:
        check_lengths(lengths, xs, xs_shapes[0][0])
    carry_shapes = [shape_of(leaf) for leaf in jax.tree_util.tree_leaves(carry)]
    batches = {s[:batch_ndim] for s in carry_shapes} | {s[1 : 1 + batch_ndim] for s in xs_shapes}
    too_short = any(len(s) < batch_ndim for s in carry_shapes) or any(
        len(s) < 1 + batch_ndim for s in xs_shapes
    )
    if too_short or len(batches) != 1:
        raise ValueError(
            f"batch_ndim: expected {batch_ndim} leading batch axes shared by every carry leaf "
            f"and every xs leaf after T, got carry shapes {carry_shapes} and xs shapes "
            f"{xs_shapes}"
        )
    for leaf in jax.tree_util.tree_leaves(carry):
        if not jnp.issubdtype(dtype_of(leaf), jnp.floating):
            raise ValueError(f"carry: expected floating leaves, got dtype {dtype_of(leaf)}")


def _not_converged_message(iterations, update) -> str:
    return (
        f"deer: Newton did not converge (iterations run: {iterations}, last update "
        f"max |dS| = {update:.3g}); the trajectory is not the cell's. Raise max_iters, "
        f"use jaxrnn.scan, or check the dynamics: an expanding Jacobian chain (spectral "
        f"radius > 1, SPEC §5) makes Newton on the whole trajectory slow or divergent; "
        f"damping=... (ELK, SPEC §14) keeps its steps bounded"
    )


def _warn_host(all_converged, iterations, update):
    if not bool(all_converged):
        warnings.warn(
            _not_converged_message(int(iterations), float(update)),
            DeerNotConvergedWarning,
            stacklevel=2,
        )


def _last_update(info: DeerInfo):
    """The last update norm of the worst batch element (NaN counts as the worst)."""
    index = jnp.maximum(info.iterations - 1, 0)[..., None]
    last = jnp.take_along_axis(info.update_norms, index, axis=-1)[..., 0]
    return jnp.max(jnp.where(jnp.isnan(last), jnp.inf, last))


def _poison(tree, converged, lead: int):
    """Replace the floating outputs of non-converged batch elements by NaN."""

    def poison(leaf):
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            return leaf
        mask = converged.reshape((1,) * lead + converged.shape)
        mask = mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))
        return jnp.where(mask, leaf, jnp.nan)

    return jax.tree_util.tree_map(poison, tree)


def deer(
    cell,
    params,
    carry,
    xs,
    *,
    lengths=None,
    reverse: bool = False,
    max_iters: int = 100,
    tol: float | None = None,
    jacobian: str = "full",
    batch_ndim: int = 0,
    on_failure: str = "warn",
    damping: float | None = None,
    mesh=None,
):
    """Run ``cell`` over ``xs`` by Newton iterations on the whole trajectory (DEER).

    Same result as ``jaxrnn.scan(cell, params, carry, xs, lengths=lengths, reverse=reverse)``
    once converged; the plain-Python meaning, per sequence (``f`` = the cell's carry map,
    ``s_0`` = the flattened carry), for ``lengths=None`` and ``reverse=False``::

        def deer(cell, params, carry, xs, max_iters, tol):
            S = [s_0] * T                                   # the guess: s_t = s_0
            for k in range(max_iters):
                prev = [s_0] + S[:-1]
                J = [df/ds(prev[t], xs[t]) for t in range(T)]          # or their diagonals
                b = [f(prev[t], xs[t]) - J[t] @ prev[t] for t in range(T)]
                S_new = linear_recurrence(J, b, s_0)                  # associative scan
                done = max|S_new - S| <= tol
                S = S_new
                if done: break
            carries, ys = [cell(params, prev_t, x_t) for prev_t, x_t in zip([s_0] + S[:-1], xs)]
            return carries[-1], ys, info

    With ``lengths``, sequence n runs its first L = ``lengths[n]`` steps, as in
    ``jaxrnn.scan``: for t > L the step is the identity, f(s_{t-1}, x_t) = s_{t-1}
    (J_t = I, b_t = 0; the cell sees zeros instead of x_t), so s_t = s_L, the final carry
    is s_L and ys[t] = 0 for t >= L (0-based). The padding copies s_L, so the updates,
    ``info.residual`` and convergence are those of the first L steps (L + 1 iterations
    at most, in exact arithmetic), and padding values, even NaN, reach neither outputs
    nor gradients. With ``reverse=True`` the system is solved on the inputs flipped in
    time, so each sequence runs from its step L - 1 down to 0 (padding first, as identity
    steps), and ys[t] stays aligned with xs[t].

    Every loop over t above runs in parallel (vmap); only the Newton iterations are
    sequential (a ``while_loop``). Cost per iteration: T Jacobians (H_c forward-mode passes
    each, H_c the carry size, e.g. 2H for an LSTM's (c, h)) and one associative scan over
    (T, H_c, H_c) matrices (``"full"``) or (T, H_c) diagonals (``"diagonal"``, which still
    forms each Jacobian by forward mode and keeps its diagonal: the saving is in the solve).

    An expanding Jacobian chain (SPEC §5) can overflow Newton's linear solve, most of all in
    float32: ``damping`` takes damped Newton steps instead (ELK, SPEC §14), which stay
    finite and converge where plain DEER fails. Non-convergence (too few iterations;
    NaN/inf from an expanding Jacobian chain) is never
    returned silently: ``info.converged`` is False and ``on_failure`` says what else happens:
    ``"warn"`` issues a :class:`DeerNotConvergedWarning` (works under ``jit``, through
    ``jax.debug.callback``); ``"raise"`` raises :class:`DeerNotConverged` (only outside
    ``jit``/``vmap``, where the result is concrete: a ``ValueError`` tells you so otherwise);
    ``"nan"`` replaces the outputs of the failing sequences by NaN (works everywhere);
    ``"ignore"`` leaves it to you to read ``info``.

    Gradients (``jax.grad`` through ``deer``) use implicit differentiation at the fixed
    point: one reverse associative scan for the adjoint (see the module docstring), not
    backpropagation through the iterations. They equal the gradients of ``jaxrnn.scan``.

    Args:
      cell: ``cell(params, carry, x) -> (carry, y)``, e.g. ``jaxrnn.cells.gru.apply``.
      params: the cell's parameters.
      carry: the initial carry; leaves (*batch, ...) with ``batch_ndim`` batch axes.
      xs: inputs (T, *batch, D) (or a pytree of arrays with leading axis T).
      lengths: optional integer array with the batch shape of xs (its leading axes after T;
        fewer axes than ``batch_ndim`` broadcast over the trailing batch axes), values in
        [0, T], as in ``jaxrnn.scan``. Values are checked when known at trace time; under
        ``jit`` they cannot be, and a value outside [0, T] behaves like the nearest bound.
      reverse: run each sequence backwards (within its length), as ``jaxrnn.scan``.
      max_iters: at most this many Newton iterations (a positive int).
      tol: converged when max |S^(k) - S^(k-1)| <= tol (absolute, on the carry); default
        1e-5 for float32 carries and 1e-12 for float64.
      jacobian: ``"full"`` (Newton: quadratic convergence near the solution) or
        ``"diagonal"`` (quasi-DEER: elementwise solves, linear convergence).
      batch_ndim: leading axes of the carry (axes 1.. of xs) that index independent
        sequences, each solved as its own Newton system (vmapped). With 0 the whole carry
        is one state: right, but its full Jacobian couples all batch elements.
      on_failure: ``"warn"`` (default), ``"raise"``, ``"nan"`` or ``"ignore"``.
      damping: None (Newton, DEER) or λ > 0: damped Newton (ELK; quasi-ELK with
        ``jacobian="diagonal"``). Each iteration then takes the Kalman-filtered step of
        :mod:`jaxrnn.parallel.kalman`, which stays near the current guess with weight λ,
        and so never overflows through an expanding Jacobian chain; it stops once both the
        update and the residual max_t |s_t - f(s_{t-1}, x_t)| are at most ``tol``. Small λ
        (1e-4 .. 1e-6) damps only where the chain expands and keeps Newton's pace where it
        contracts.
      mesh: optional 1-D ``jax.sharding.Mesh``: every linear solve (and the adjoint) splits
        T over its devices (SPEC §13); the elementwise work over T follows the sharding.

    Returns:
      ``(final_carry, ys, info)``: as ``jaxrnn.scan`` returns ``(final_carry, ys)``, and a
      :class:`DeerInfo` whose fields have shape (*batch,) (``update_norms``:
      (*batch, max_iters)).
    """
    _check_arguments(
        cell,
        params,
        carry,
        xs,
        lengths=lengths,
        reverse=reverse,
        max_iters=max_iters,
        tol=tol,
        jacobian=jacobian,
        batch_ndim=batch_ndim,
        on_failure=on_failure,
        damping=damping,
        mesh=mesh,
    )
    if tol is None:
        tol = _default_tol(jnp.result_type(*jax.tree_util.tree_leaves(carry)))
    final, ys, info = _solve_batch(
        cell,
        params,
        carry,
        xs,
        lengths,
        None if damping is None else float(damping),
        max_iters=max_iters,
        tol=float(tol),
        jacobian=jacobian,
        batch_ndim=int(batch_ndim),
        reverse=bool(reverse),
        mesh=mesh,
    )

    all_converged = jnp.all(info.converged)
    if on_failure == "raise":
        if not is_concrete(all_converged):
            raise ValueError(
                "on_failure: 'raise' needs concrete results and cannot raise inside jit or "
                "vmap; use 'warn', 'nan' or 'ignore' there and read info.converged"
            )
        if not bool(all_converged):
            message = _not_converged_message(
                int(jnp.max(info.iterations)), float(_last_update(info))
            )
            raise DeerNotConverged(message, info)
    elif on_failure == "warn":
        jax.debug.callback(_warn_host, all_converged, jnp.max(info.iterations), _last_update(info))
    elif on_failure == "nan":
        final = _poison(final, info.converged, 0)
        ys = _poison(ys, info.converged, 1)
    return final, ys, info
