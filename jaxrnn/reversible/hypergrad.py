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
from jaxrnn.reversible import sgd


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


@functools.partial(jax.jit, static_argnames=("train_loss", "treedef", "dtypes", "frac_bits"))
def _sweep(train_loss, treedef, dtypes, frac_bits, words, adjoints, xs, hyper):
    def body(carry, x):
        (theta, vel, word, slots), (theta_bar, v_bar, lam_bar), bad, checksum = carry
        theta = [sgd.undo_position(t, v) for t, v in zip(theta, vel, strict=True)]
        floats = [fp.to_float(t, frac_bits, dt) for t, dt in zip(theta, dtypes, strict=True)]
        p_tree = jax.tree_util.tree_unflatten(treedef, floats)
        grad_tree, vjp = jax.vjp(lambda p, lam: jax.grad(train_loss)(p, lam, x["k"]), p_tree, hyper)
        grads = treedef.flatten_up_to(grad_tree)
        new_vel, new_word, cotangent, a_bar, b_bar = [], [], [], [], []
        mismatch = jnp.zeros((), bool)
        for i, dt in enumerate(dtypes):
            alpha = jnp.asarray(x["alpha"][i]).astype(dt)
            v, w, _, bad_i = sgd.undo_velocity_leaf(
                vel[i], word[i], slots[i], sgd.alpha_times(alpha, grads[i], dt),
                x["n"][i], x["spill"][i], x["slot"][i], frac_bits,
            )  # fmt: skip
            new_vel.append(v)
            new_word.append(w)
            mismatch = mismatch | bad_i
            checksum = checksum + fp.fingerprint(v, x["k"])  # v(k), as forward saw it
            total = v_bar[i] + theta_bar[i]
            a_bar.append(-jnp.sum(total * grads[i].astype(dt)))
            b_bar.append(jnp.sum(total * fp.to_float(v, frac_bits, dt)))
            cotangent.append(-alpha * total)
            v_bar[i] = x["beta"][i].astype(dt) * total
        d_theta, d_lam = vjp(jax.tree_util.tree_unflatten(treedef, cotangent))
        d_theta = treedef.flatten_up_to(d_theta)
        theta_bar = [tb + dtb.astype(tb.dtype) for tb, dtb in zip(theta_bar, d_theta, strict=True)]
        lam_bar = jax.tree_util.tree_map(jnp.add, lam_bar, d_lam)
        bad = jnp.where((bad < 0) & mismatch, x["k"], bad)
        carry = (theta, new_vel, new_word, slots), (theta_bar, v_bar, lam_bar), bad, checksum
        return carry, (a_bar, b_bar)

    init = (words, adjoints, jnp.asarray(-1, jnp.int32), jnp.asarray(0, jnp.uint32))
    (words, adjoints, bad, checksum), (a_bar, b_bar) = jax.lax.scan(body, init, xs, reverse=True)
    checksum = checksum + sgd.buffer_digest(words[2], xs["k"][0])
    return words, adjoints, bad, checksum, a_bar, b_bar


def _like_schedule(per_leaf, schedule, treedef):
    """Per-leaf (T,) adjoints, shaped like the schedule (summed over leaves if shared)."""
    if sgd.is_per_leaf(schedule, treedef):
        return jax.tree_util.tree_unflatten(treedef, per_leaf)
    return sum(per_leaf[1:], per_leaf[0])


def _prepare(train_loss, val_loss, params0, alphas, betas, hyper, frac_bits):
    """Train forward; return the start and end states, f(theta(T)) and the sweep's arguments."""
    frac_bits = sgd.DEFAULT_FRAC_BITS if frac_bits is None else frac_bits
    hyper = () if hyper is None else hyper
    start = sgd.init(params0, frac_bits=frac_bits)
    end = sgd.forward(start, None, alphas, betas, _extra=hyper, _grad3=_train_grad(train_loss))
    value, (theta_bar, lam_bar) = _val_grad(val_loss)(sgd.params(end), hyper)
    treedef, dtypes = start.treedef, start.dtypes
    _, alpha_leaves, numerators = sgd._check_schedules(end, alphas, betas)
    xs, _, _ = sgd._segment_inputs(start, alpha_leaves, numerators, start.bounds)
    xs["beta"] = [jnp.asarray(n / 2.0**16) for n in numerators]
    zeros = [jnp.zeros(w.hi.shape, dt) for w, dt in zip(end.theta, dtypes, strict=True)]
    adjoints = (treedef.flatten_up_to(theta_bar), zeros, lam_bar)
    words = (end.theta, end.velocity, end.word, end.slot_blocks[-1])
    args = (train_loss, treedef, dtypes, start.frac_bits, words, adjoints, xs, hyper)
    return start, end, value, args


def sweep_memory(train_loss, val_loss, params0, alphas, betas, hyper=None, *, frac_bits=None):
    """Memory of :func:`hypergradient`'s reverse sweep, from the compiled program.

    Same arguments as :func:`hypergradient` (training runs once, forward). Returns a dict:
    ``temp_bytes`` (the compiled sweep's temporaries), ``argument_bytes`` (its inputs: the
    exact state, the buffer and the schedules) and ``buffer_bytes`` (the buffer alone).
    Compare with ``jax.jit(jax.grad(f)).lower(...).compile().memory_analysis()`` of autodiff
    through the unrolled loop, which keeps all T intermediate states.
    """
    _, end, _, args = _prepare(train_loss, val_loss, params0, alphas, betas, hyper, frac_bits)
    analysis = _sweep.lower(*args).compile().memory_analysis()
    return {
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "buffer_bytes": sgd.stored_bits(end) // 8,
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
    start, end, value, sweep_args = _prepare(
        train_loss, val_loss, params0, alphas, betas, hyper, frac_bits
    )
    words, (theta_bar, _, lam_bar), bad, checksum, a_bar, b_bar = _sweep(*sweep_args)
    treedef = start.treedef
    rebuilt = dataclasses.replace(start, theta=words[0], velocity=words[1])
    mismatch = jnp.where(bad >= 0, bad, jnp.where(checksum != end.checksums[-1], 0, -1))
    same = [
        jnp.all(a.hi == b.hi) & jnp.all(a.lo == b.lo)
        for a, b in zip(rebuilt.theta, start.theta, strict=True)
    ]
    mismatch = jnp.where((mismatch < 0) & ~jnp.all(jnp.stack(same)), 0, mismatch)
    if is_concrete(mismatch):
        sgd.check(dataclasses.replace(rebuilt, mismatch_step=mismatch))
    grads = Hypergradients(
        alphas=_like_schedule(a_bar, alphas, treedef),
        betas=_like_schedule(b_bar, betas, treedef),
        params0=jax.tree_util.tree_unflatten(treedef, theta_bar),
        hyper=None if isinstance(lam_bar, tuple) and not lam_bar else lam_bar,
    )
    return value, grads
