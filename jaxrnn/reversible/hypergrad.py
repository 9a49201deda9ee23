"""Hypergradients through exactly reversed momentum SGD (SPEC §7; Maclaurin et al. 2015).

Training runs T steps of v(k+1) = beta_k v(k) - alpha_k g_k, theta(k+1) = theta(k) +
v(k+1), with g_k = ∇_theta J(theta(k), lam, k) for a training loss J with hyperparameters
lam. For a validation loss f(theta(T), lam) the reverse sweep walks k = T-1, ..., 0 along
the exactly reconstructed path (:func:`jaxrnn.reversible.reverse`'s steps) and carries the
adjoints theta_bar = df/dtheta(k+1), v_bar = df/dv(k+1):

    w          = v_bar + theta_bar              (theta(k+1) = theta(k) + v(k+1))
    alpha_bar_k = -<w, g_k>                      beta_bar_k = <w, v(k)>
    theta_bar <- theta_bar - alpha_k (∂g_k/∂theta)^T w       (one jax.vjp of the gradient)
    lam_bar   <- lam_bar   - alpha_k (∂g_k/∂lam)^T w
    v_bar     <- beta_k w

ending with theta_bar = df/dtheta(0). Memory: the words of one state, the adjoints and the
buffer, whatever T (autodiff through the unrolled loop stores all T states).

Reference loop (floats; ``grad_J(theta, lam, k)`` the training gradient):

    theta_bar, lam_bar = grad(f, (0, 1))(theta[T], lam); v_bar = 0
    for k in reversed(range(T)):
        theta_k = theta[k + 1] - v[k + 1]          # exact, from the fixed-point words
        g, vjp = jax.vjp(lambda p, l: grad_J(p, l, k), theta_k, lam)
        v[k] = (v[k + 1] + alpha[k] * g) / beta[k]  # exact, from the buffer
        w = v_bar + theta_bar
        alpha_bar[k], beta_bar[k] = -w @ g, w @ v[k]
        d_theta, d_lam = vjp(-alpha[k] * w)
        theta_bar, lam_bar, v_bar = theta_bar + d_theta, lam_bar + d_lam, beta[k] * w
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._checks import is_concrete
from jaxrnn.exact import fixed_point as fp
from jaxrnn.reversible import schedules, sgd, xla_cpu
from jaxrnn.reversible import step as exact_step
from jaxrnn.reversible.state import DEFAULT_FRAC_BITS, init, params, raise_if_failed, stored_bits


class Hypergradients(NamedTuple):
    """df/d(hyperparameters): schedules shaped like the given ones, the rest like their inputs."""

    alphas: Any
    betas: Any
    params0: Any
    hyper: Any


@functools.lru_cache(maxsize=64)
def _train_grad(train_loss):
    return lambda p, k, lam: jax.grad(train_loss)(p, lam, k)


@functools.lru_cache(maxsize=64)
def _val_grad(val_loss):
    return jax.jit(jax.value_and_grad(val_loss, argnums=(0, 1)))


class Sweep(NamedTuple):
    """What the reverse sweep returns."""

    words: Any  # step.Words rebuilt at step 0
    adjoints: Any  # (df/dtheta(0), df/dv(0), df/dlam), per leaf where per parameter
    fingerprint: Any  # step.fingerprint of the rebuilt words
    alpha_bars: Any  # per leaf (T,): df/dalpha_k
    beta_bars: Any  # per leaf (T,): df/dbeta_k


@functools.partial(jax.jit, static_argnames=("train_loss", "treedef", "dtypes", "frac_bits"))
def _sweep(train_loss, treedef, dtypes, frac_bits, words, adjoints, inputs, betas, hyper):
    """The reverse sweep along the exactly rebuilt path (the reference loop above)."""
    dtypes = list(dtypes)

    def body(carry, x):
        words, (theta_bar, v_bar, lam_bar) = carry
        inputs, betas = x

        def grad_and_vjp(floats):
            train_grad = lambda p, lam: treedef.flatten_up_to(
                jax.grad(train_loss)(treedef.unflatten(p), lam, inputs.k)
            )
            return jax.vjp(train_grad, floats, hyper)

        back = exact_step.inverse_step(words, grad_and_vjp, inputs, frac_bits, dtypes, has_aux=True)
        a_bar, b_bar, cotangent = [], [], []
        for i, dt in enumerate(dtypes):
            total = v_bar[i] + theta_bar[i]  # w = v_bar + theta_bar
            a_bar.append(-jnp.sum(total * back.grads[i].astype(dt)))
            b_bar.append(jnp.sum(total * fp.to_float(back.words.velocity[i], frac_bits, dt)))
            cotangent.append(-jnp.asarray(inputs.alpha[i]).astype(dt) * total)
            v_bar[i] = betas[i].astype(dt) * total
        d_theta, d_lam = back.aux(cotangent)
        theta_bar = [tb + dtb.astype(tb.dtype) for tb, dtb in zip(theta_bar, d_theta, strict=True)]
        lam_bar = jax.tree_util.tree_map(jnp.add, lam_bar, d_lam)
        return (back.words, (theta_bar, v_bar, lam_bar)), (a_bar, b_bar)

    shapes, xs, init = [t.hi.shape for t in words.theta], (inputs, betas), (words, adjoints)
    (words, adjoints), (a_bar, b_bar) = xla_cpu.scan_steps(body, init, xs, shapes, reverse=True)
    return Sweep(words, adjoints, exact_step.fingerprint(words), a_bar, b_bar)


def _like_schedule(per_leaf, schedule, treedef):
    """Per-leaf (T,) adjoints, shaped like the schedule (summed over leaves if shared)."""
    if schedules.is_per_leaf(schedule, treedef):
        return jax.tree_util.tree_unflatten(treedef, per_leaf)
    return sum(per_leaf[1:], per_leaf[0])


class _Trained(NamedTuple):
    """What :func:`_prepare` returns."""

    start: Any  # the State at step 0
    end: Any  # the State after training
    value: Any  # f(theta(T))
    sweep_args: tuple  # the arguments of _sweep


def _prepare(train_loss, val_loss, params0, alphas, betas, hyper, frac_bits) -> _Trained:
    """Train forward; the start and end states, f(theta(T)) and the sweep's arguments."""
    frac_bits = DEFAULT_FRAC_BITS if frac_bits is None else frac_bits
    hyper = () if hyper is None else hyper
    start = init(params0, frac_bits=frac_bits)
    end = sgd.forward_with(start, _train_grad(train_loss), hyper, alphas, betas)
    value, (theta_bar, lam_bar) = _val_grad(val_loss)(params(end), hyper)
    treedef, dtypes = start.treedef, start.dtypes
    schedule = schedules.validate_schedules(treedef, alphas, betas)
    inputs = schedules.plan_call(start.step, schedule, start.bounds).inputs
    betas_used = [jnp.asarray(n / 2.0**16) for n in schedule.numerators]
    zeros = [jnp.zeros(w.hi.shape, dt) for w, dt in zip(end.theta, dtypes, strict=True)]
    adjoints = (treedef.flatten_up_to(theta_bar), zeros, lam_bar)
    words = exact_step.Words(end.theta, end.velocity, end.word, end.slot_blocks[-1])
    args = (train_loss, treedef, dtypes, start.frac_bits, words, adjoints, inputs, betas_used)
    return _Trained(start, end, value, (*args, hyper))


def sweep_memory(train_loss, val_loss, params0, alphas, betas, hyper=None, *, frac_bits=None):
    """Memory of :func:`hypergradient`'s reverse sweep, from the compiled program.

    Same arguments as :func:`hypergradient` (training runs once, forward). Returns a dict:
    ``temp_bytes`` (the compiled sweep's temporaries), ``argument_bytes`` (its inputs: the
    exact state, the buffer and the schedules) and ``buffer_bytes`` (the buffer alone).
    Compare with ``jax.jit(jax.grad(f)).lower(...).compile().memory_analysis()`` of autodiff
    through the unrolled loop, which keeps all T intermediate states.
    """
    trained = _prepare(train_loss, val_loss, params0, alphas, betas, hyper, frac_bits)
    analysis = _sweep.lower(*trained.sweep_args).compile().memory_analysis()
    return {
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "buffer_bytes": stored_bits(trained.end) // 8,
    }


def hypergradient(train_loss, val_loss, params0, alphas, betas, hyper=None, *, frac_bits=None):
    """Validation loss after T exact momentum steps and its gradient w.r.t. the hyperparameters.

    Args:
      train_loss: ``train_loss(params, hyper, k) -> scalar``, the loss of step k (derive the
        batch from k); its gradient drives training and is recomputed exactly in reverse.
      val_loss: ``val_loss(params, hyper) -> scalar``, evaluated at theta(T).
      params0: pytree of float arrays, theta(0) (rounded to the fixed-point grid); v(0) = 0.
      alphas: (T,) step sizes or per-leaf schedules (may be traced).
      betas: (T,) momentum values in (0, 1) or per leaf, concrete; used as n / 2^16.
      hyper: pytree of float arrays (e.g. an L2 weight) or None.
      frac_bits: fractional bits of the fixed-point words (default 44).
    Returns:
      ``(f, Hypergradients(alphas, betas, params0, hyper))``: f = val_loss(theta(T), hyper)
      and its derivatives (alphas and betas shaped like the given schedules; for an initial
      scale s with theta(0) = s · u, df/ds = <params0 gradient, u>).
    Raises:
      TrajectoryMismatchError if the reverse sweep does not reconstruct theta(0) exactly.
    """
    trained = _prepare(train_loss, val_loss, params0, alphas, betas, hyper, frac_bits)
    sweep = _sweep(*trained.sweep_args)
    rebuilt = dataclasses.replace(
        trained.start,
        theta=sweep.words.theta,
        velocity=sweep.words.velocity,
        word=sweep.words.word,
        mismatch_step=jnp.where(sweep.fingerprint != trained.end.fingerprints[-1], 0, -1),
    )
    if is_concrete(rebuilt.mismatch_step):
        raise_if_failed(rebuilt)
    treedef = trained.start.treedef
    theta_bar, _, lam_bar = sweep.adjoints
    grads = Hypergradients(
        alphas=_like_schedule(sweep.alpha_bars, alphas, treedef),
        betas=_like_schedule(sweep.beta_bars, betas, treedef),
        params0=jax.tree_util.tree_unflatten(treedef, theta_bar),
        hyper=None if isinstance(lam_bar, tuple) and not lam_bar else lam_bar,
    )
    return trained.value, grads
