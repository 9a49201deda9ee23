"""Exactly reversible momentum SGD in fixed point (SPEC §7).

    v(k+1)     = beta_k v(k) - alpha_k ∇J(theta(k))        (momentum step)
    theta(k+1) = theta(k) + v(k+1)
    reverse:     theta(k) = theta(k+1) - v(k+1)
                 v(k)     = (v(k+1) + alpha_k ∇J(theta(k))) / beta_k

theta and v are 64-bit fixed-point words (``frac_bits`` fractional bits, two ``uint32``
arrays each, no x64 needed; see :mod:`fixed_point`). alpha_k ∇J is rounded to the grid
once per step, the same way forward and backward, so additions are exact; the
multiplication by beta_k = n_k / 2^16 is made exact by the information buffer
(:mod:`buffer`). Hence :func:`reverse` after :func:`forward` gives back theta(0) and v(0)
bit for bit, provided ``grad_fn`` is deterministic (it is evaluated at the same float
parameters, with the same step index k; derive batches and randomness from k). Both
passes evaluate it inside one ``lax.scan`` each, under ``jit``; avoid mixing eager and
compiled evaluation of the gradient, whose roundings may differ.

Reference loop (Python integers; ``q`` rounds to the grid, ``mul_ratio`` as in
:mod:`buffer`):

    for k in range(T):
        g = grad_fn(theta * 2.0**-F, k)
        v, B = mul_ratio(v, B, n[k])            # v <- beta_k v, lost digits into B
        v = v - q(alpha[k] * g)
        theta = theta + v

Checks: a value leaving its guard range (theta within ±2^(62-F), v and alpha_k ∇J within
±2^(61-F), which rules out any wrap-around of the 64-bit words) or a non-finite gradient
sets the first bad step; a reverse pass whose recomputed gradients differ is detected by
the buffer's spill check and by a checksum of the velocities v(k) it reconstructs, which
the forward pass computed too. Called
outside ``jit``, forward and reverse raise at once; inside ``jit`` the flags travel in
the state: call :func:`check` on the result.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import is_concrete
from jaxrnn.exact import buffer
from jaxrnn.exact import fixed_point as fp

DEFAULT_FRAC_BITS = 44


class FixedPointOverflowError(ValueError):
    """A value left the 64-bit fixed-point range (or a gradient was not finite)."""


class TrajectoryMismatchError(ValueError):
    """The reverse pass recomputed a different gradient than the forward pass."""


class Segment(NamedTuple):
    """What one forward call pushed, so that reverse can undo exactly that call."""

    n_steps: int
    start_bounds: tuple  # per leaf: the buffer bound before the call
    betas_digest: int  # hash of the per-leaf numerators
    new_slots: tuple  # per leaf: slots appended by the call


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class State:
    """Exact state of reversible momentum SGD (a pytree; static parts in the tree structure).

    Leaves are per parameter leaf: ``theta``, ``velocity`` (signed words), ``word`` (the
    buffer word, uint32); ``slot_blocks``, one entry per forward call not yet reversed,
    each a list of per-leaf (S, *shape) uint8 arrays (the bytes that call spilled: a call
    appends its block and never copies the earlier ones); ``checksums`` (one uint32 per
    forward call not yet reversed); ``bad_step`` (int32, first overflow step, -1 if none);
    ``mismatch_step`` (int32, first step where reverse detected a different gradient).
    """

    theta: list
    velocity: list
    word: list
    slot_blocks: tuple
    checksums: tuple
    bad_step: Any
    mismatch_step: Any
    treedef: Any = None
    dtypes: tuple = ()
    frac_bits: int = DEFAULT_FRAC_BITS
    step: int = 0
    bounds: tuple = ()
    segments: tuple = ()

    def tree_flatten(self):
        children = (
            self.theta,
            self.velocity,
            self.word,
            self.slot_blocks,
            self.checksums,
            self.bad_step,
            self.mismatch_step,
        )
        aux = (self.treedef, self.dtypes, self.frac_bits, self.step, self.bounds, self.segments)
        return children, aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    @property
    def slots(self) -> list:
        """Per leaf, every spilled byte so far: (S, *shape) uint8, oldest first (a copy)."""
        if not self.slot_blocks:
            return [jnp.zeros((0, *w.shape), buffer.SLOT_DTYPE) for w in self.word]
        return [jnp.concatenate(blocks) for blocks in zip(*self.slot_blocks, strict=True)]


def init(params, *, frac_bits: int = DEFAULT_FRAC_BITS) -> State:
    """Fixed-point state of ``params`` with zero velocity and an empty buffer.

    Args:
      params: any pytree of float32/float64 arrays.
      frac_bits: F, the number of fractional bits: values are multiples of 2^-F; theta
        must stay within ±2^(62-F), v and alpha·grad within ±2^(61-F) (guard ranges that
        rule out any wrap-around). The exact multiplication by beta = n / 2^16 perturbs v
        by less than n · 2^-F (the digits it takes back from the buffer), so F trades
        range for precision; the default F = 44 gives theta within ±262144, resolution
        5.7e-14 and a perturbation below 3.7e-9 per step.
    Returns:
      the :class:`State`; ``params(init(p))`` is p rounded to the grid.
    """
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, (int, np.integer)):
        raise ValueError(f"frac_bits: expected an integer in [0, 62], got {frac_bits!r}")
    if not 0 <= frac_bits <= 62:
        raise ValueError(f"frac_bits: expected an integer in [0, 62], got {frac_bits}")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if not leaves:
        raise ValueError("params: expected a pytree with at least one array, got no leaves")
    dtypes = []
    for i, leaf in enumerate(leaves):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"params leaf {i}: expected a float array, got {type(leaf).__name__}"
                f" of dtype {dtype}"
            )
        dtypes.append(jnp.dtype(dtype))
    theta, bad = [], jnp.zeros((), bool)
    for i, leaf in enumerate(leaves):
        word, overflow = fp.from_float(leaf, int(frac_bits), THETA_BITS)
        if is_concrete(overflow) and bool(overflow.any()):
            raise FixedPointOverflowError(
                f"params leaf {i}: values outside the fixed-point range ±2^{62 - frac_bits} "
                f"(frac_bits = {frac_bits}) or not finite"
            )
        theta.append(word)
        bad = bad | overflow.any()
    shapes = [leaf.shape for leaf in leaves]
    return State(
        theta=theta,
        velocity=[fp.zeros(s) for s in shapes],
        word=[jnp.zeros(s, jnp.uint32) for s in shapes],
        slot_blocks=(),
        checksums=(),
        bad_step=jnp.where(bad, 0, -1).astype(jnp.int32),
        mismatch_step=jnp.asarray(-1, jnp.int32),
        treedef=treedef,
        dtypes=tuple(dtypes),
        frac_bits=int(frac_bits),
        step=0,
        bounds=(0,) * len(leaves),
        segments=(),
    )


def _floats(state: State, words) -> Any:
    leaves = [
        fp.to_float(w, state.frac_bits, dt) for w, dt in zip(words, state.dtypes, strict=True)
    ]
    return jax.tree_util.tree_unflatten(state.treedef, leaves)


def params(state: State):
    """The parameters theta as a pytree of floats (their original dtypes)."""
    return _floats(state, state.theta)


def velocity(state: State):
    """The velocity v as a pytree of floats (the parameters' dtypes)."""
    return _floats(state, state.velocity)


def stored_bits(state: State) -> int:
    """Bits the buffer holds: a 32-bit word plus 8 bits per spilled slot, per parameter."""
    spilled = [
        sum(block[i].shape[0] for block in state.slot_blocks) for i in range(len(state.word))
    ]
    return sum(
        int(np.prod(w.shape, dtype=np.int64)) * (buffer.WORD_BITS + buffer.SLOT_BITS * n)
        for w, n in zip(state.word, spilled, strict=True)
    )


def information_bound(betas, n_params: int) -> float:
    """D · sum_k log2(1 / beta_k), with beta_k as represented (n_k / 2^16): the bits lost."""
    numerators = np.array([buffer.numerator(b) for b in np.ravel(betas)], np.float64)
    return float(n_params * np.sum(np.log2(buffer.DENOMINATOR / numerators)))


def buffer_is_empty(state: State) -> bool:
    """True when no slot is spilled and every buffer word is 0."""
    empty = all(s.shape[0] == 0 for block in state.slot_blocks for s in block)
    return empty and all(bool(jnp.all(w == 0)) for w in state.word)


def check(state: State) -> State:
    """Raise if the state records an overflow or a reverse-pass mismatch; else return it."""
    bad = int(state.bad_step)
    if bad >= 0:
        raise FixedPointOverflowError(
            f"a value left the fixed-point range (theta within ±2^{62 - state.frac_bits}, "
            f"v and alpha·grad within ±2^{61 - state.frac_bits}; frac_bits = "
            f"{state.frac_bits}) or a gradient was not finite at step {bad}; use smaller "
            "step sizes or fewer fractional bits"
        )
    mismatch = int(state.mismatch_step)
    if mismatch >= 0:
        raise TrajectoryMismatchError(
            f"reverse: the gradient recomputed at step {mismatch} differs from the forward "
            "pass (grad_fn must be a deterministic function of (params, k)); the "
            "reconstructed state is not the original one"
        )
    return state


# ----------------------------------------------------------------------------- schedules


def is_per_leaf(schedule, treedef) -> bool:
    """True when ``schedule`` is a pytree like params (one schedule per leaf)."""
    if treedef == jax.tree_util.tree_structure(0) or isinstance(
        schedule, (np.ndarray, jax.Array, float, int, np.generic)
    ):
        return False  # an array or a number is one leaf: a schedule shared by all leaves
    try:
        treedef.flatten_up_to(schedule)
    except (ValueError, TypeError):
        return False
    return True


def _leafwise(value, treedef) -> list:
    """A schedule given for all leaves at once or as a pytree like params, as one per leaf."""
    if is_per_leaf(value, treedef):
        return treedef.flatten_up_to(value)
    return [value] * treedef.num_leaves


def _schedule_length(value, name: str) -> int:
    shape = np.shape(value) if not hasattr(value, "shape") else tuple(value.shape)
    if len(shape) != 1 or shape[0] < 1:
        raise ValueError(f"{name}: expected a schedule of shape (T,) with T >= 1, got {shape}")
    return shape[0]


def _check_schedules(state: State, alphas, betas):
    """Validate the schedules; returns (T, alpha leaves, numerator arrays per leaf)."""
    alpha_leaves = _leafwise(alphas, state.treedef)
    beta_leaves = _leafwise(betas, state.treedef)
    lengths = {_schedule_length(a, "alphas") for a in alpha_leaves}
    lengths |= {_schedule_length(b, "betas") for b in beta_leaves}
    if len(lengths) != 1:
        raise ValueError(
            f"alphas, betas: expected schedules of one length T, got lengths {sorted(lengths)}"
        )
    n_steps = lengths.pop()
    for a in _distinct(alpha_leaves):
        if is_concrete(a):
            a = np.asarray(a, np.float64)
            if not np.all(np.isfinite(a) & (a > 0)):
                k = int(np.argmin(np.isfinite(a) & (a > 0)))
                raise ValueError(f"alphas: expected step sizes > 0, got {a[k]} at step {k}")
    numerators, seen = [], {}
    for b in beta_leaves:
        if id(b) in seen:  # the same schedule object for several leaves: checked once
            numerators.append(seen[id(b)])
            continue
        key = id(b)
        if not is_concrete(b):
            raise ValueError(
                "betas: expected a concrete schedule (known at trace time; the exact "
                "rational n/2^16 and the spill schedule are computed from it), got a tracer"
            )
        b = np.asarray(b, np.float64)
        ok = np.isfinite(b) & (b > 0) & (b < 1)
        if not ok.all():
            k = int(np.argmin(ok))
            raise ValueError(f"betas: expected momentum in (0, 1), got {b[k]} at step {k}")
        n = np.rint(b * buffer.DENOMINATOR)
        low, high = buffer.MIN_NUMERATOR, buffer.DENOMINATOR - 1
        if n.min() < low or n.max() > high:
            k = int(np.argmax((n < low) | (n > high)))
            raise ValueError(
                f"betas: beta = {b[k]} at step {k} is outside the supported range: beta is "
                f"used as n / 2^16 with 2^8 <= n < 2^16, so {buffer.SUPPORTED_BETAS}"
            )
        seen[key] = n.astype(np.uint32)
        numerators.append(seen[key])
    alpha_leaves = [a if isinstance(a, jax.Array) else np.asarray(a) for a in alpha_leaves]
    return n_steps, alpha_leaves, numerators


def _distinct(items: list) -> list:
    """``items`` without repeats of the same object (schedules shared by all leaves)."""
    return list({id(item): item for item in items}.values())


def represented_betas(betas):
    """The momentum values actually used: n / 2^16 with n = round(beta · 2^16)."""
    b = np.asarray(betas, np.float64)
    return np.rint(b * buffer.DENOMINATOR) / buffer.DENOMINATOR


# ------------------------------------------------------------------------- one leaf, one step


THETA_BITS, VELOCITY_BITS = 62, 61  # guard ranges (integer bits of the 64-bit words)


def velocity_leaf(theta, vel, word, slots, alpha_g, n, flag, slot, frac_bits, k):
    """The velocity half of :func:`forward_leaf`: all of it except theta(k+1) = theta(k) + v(k+1).

    Returns ``(v, word, slots, fingerprint, bad_input)``: ``fingerprint`` that of v(k) at
    step ``k`` (:func:`fixed_point.fingerprint`; the reverse pass recomputes it), and
    ``bad_input`` True if theta(k) or v(k) is outside its guard range. A step alpha_k g
    outside its range or not finite is not flagged here: it is replaced by 2^62 units,
    which puts v(k+1) outside the guard range of v (no wrap: |beta v| < 2^61), so the next
    check reports step k. This keeps the per-step reduction to the words it reads anyway.
    The buffer word cannot overflow: the spill schedule bounds it (:mod:`buffer`).
    """
    bad_input = ~fp.fits(theta, THETA_BITS) | ~fp.fits(vel, VELOCITY_BITS)
    digest, bad = _sum_and_any(fp.fingerprint_terms(vel, k), jnp.ravel(bad_input))
    scaled, word, slots, step_word, bad_float, _ = _momentum(
        vel, word, slots, alpha_g, n, flag, slot, frac_bits
    )
    step_word = fp.where(bad_float, POISON, step_word)
    return fp.sub(scaled, step_word), word, slots, digest, bad


def _momentum(vel, word, slots, alpha_g, n, flag, slot, frac_bits):
    """beta_k v(k) exactly (spilling first if the schedule says so) and the rounded step.

    Returns ``(beta v, word, slots, step_word, bad_float, word_overflow)``: v(k+1) is
    beta v - step_word; the flags are elementwise.
    """
    word, slots = buffer.spill(word, slots, flag, slot)
    scaled, word, word_overflow = buffer.mul_ratio(vel, word, n)
    step_word, bad_float = fp.from_float(alpha_g, frac_bits, VELOCITY_BITS)
    return scaled, word, slots, step_word, bad_float, word_overflow


# A step that drives v out of its guard range without wrapping: 2^62 units (NumPy scalars,
# so that importing the library does not start a JAX backend).
POISON = fp.Word(np.uint32(1 << 30), np.uint32(0))


def buffer_digest(words, step):
    """The fingerprint of the buffer words at a call's first ``step``.

    The checksum of a call adds it to the fingerprints of v(k), k = first..last: a
    recomputed step alpha_k g that differs changes v(k) or the buffer word the reverse
    pass reconstructs (the inverse step is injective in it), and a changed word shows in
    v(k - 1) or, at the call's first step, here.
    """
    return sum((fp.fingerprint(fp.Word(w, w), step) for w in words), jnp.uint32(0))


def _sum_and_any(terms, flags):
    """(wrapping sum of ``terms``, any of ``flags``) of two flat arrays, in one pass.

    Reduced in two stages, first within R rows, then across them: XLA:CPU splits the first
    stage over its threads (a single reduction to a scalar runs on one).
    """
    rows = next((r for r in (256, 64, 16) if terms.size >= 4096 and terms.size % r == 0), 1)
    init = (jnp.uint32(0), jnp.uint8(0))
    combine = lambda a, b: (a[0] + b[0], a[1] | b[1])
    parts = (terms.reshape(rows, -1), flags.astype(jnp.uint8).reshape(rows, -1))
    partial = jax.lax.reduce(parts, init, combine, (1,))
    total, any_flag = jax.lax.reduce(partial, init, combine, (0,))
    return total, any_flag != 0


def forward_leaf(theta, vel, word, slots, alpha_g, n, flag, slot, frac_bits):
    """One exact forward step of one leaf.

    Returns ``(theta, v, word, slots, step_word, bad_input, bad_step)``. Overflow is ruled
    out by guard ranges checked on the *inputs* (cheap: no second pass over the buffer
    arithmetic): with |theta| < 2^62, |v| < 2^61 and |alpha g| < 2^61 (in units of 2^-F)
    no sum can wrap. ``bad_input`` (theta or v outside its guard range: produced by the
    previous step) and ``bad_step`` (alpha g outside its range or not finite, or a buffer
    word beyond its bound) are scalars.
    """
    bad_input = ~fp.fits(theta, THETA_BITS) | ~fp.fits(vel, VELOCITY_BITS)
    scaled, word, slots, step_word, bad_float, word_overflow = _momentum(
        vel, word, slots, alpha_g, n, flag, slot, frac_bits
    )
    new_vel = fp.sub(scaled, step_word)
    new_theta = fp.add(theta, new_vel)
    bad_step = jnp.any(bad_float | word_overflow)
    return new_theta, new_vel, word, slots, step_word, jnp.any(bad_input), bad_step


def out_of_range(theta, vel):
    """True if any theta or v word is outside its guard range (a scalar)."""
    return jnp.any(~fp.fits(theta, THETA_BITS) | ~fp.fits(vel, VELOCITY_BITS))


def undo_position(theta, vel):
    """theta(k) = theta(k+1) - v(k+1), exactly."""
    return fp.sub(theta, vel)


def undo_velocity_leaf(vel, word, slots, alpha_g, n, flag, slot, frac_bits):
    """v(k) = (v(k+1) + alpha_k g) / beta_k exactly, the digits popped from the buffer."""
    step_word, bad_float = fp.from_float(alpha_g, frac_bits)
    vel, word = buffer.unmul_ratio(fp.add(vel, step_word), word, n)
    word, mismatch = buffer.restore(word, slots, flag, slot)
    return vel, word, step_word, jnp.any(mismatch | bad_float)


def alpha_times(alpha, grad, dtype):
    return jnp.asarray(alpha).astype(dtype) * jnp.asarray(grad).astype(dtype)


def checked_grads(grad_fn, params_tree, k, extra, treedef, shapes):
    """Call ``grad_fn`` and check that it returns one array per parameter leaf, same shapes."""
    grads = grad_fn(params_tree, k, extra)
    try:
        leaves = treedef.flatten_up_to(grads)
    except (ValueError, TypeError):
        raise ValueError(
            f"grad_fn: expected a gradient with the structure of params ({treedef}), got "
            f"{jax.tree_util.tree_structure(grads)}"
        ) from None
    for i, (g, s) in enumerate(zip(leaves, shapes, strict=True)):
        if tuple(jnp.shape(g)) != tuple(s):
            raise ValueError(f"grad_fn: leaf {i}: expected shape {tuple(s)}, got {jnp.shape(g)}")
    return leaves


# ----------------------------------------------------------------------------- the scans


@functools.lru_cache(maxsize=64)
def _two_arg(grad_fn):
    return lambda p, k, _extra: grad_fn(p, k)


def _forward_scan(grad_fn, treedef, dtypes, frac_bits, words, xs, extra):
    shapes = [w.hi.shape for w in words[0]]

    # The loop carries theta(k-1) and v(k) and forms theta(k) = theta(k-1) + v(k) at the
    # start of step k (exact: the words wrap mod 2^64, so theta(-1) = theta(0) - v(0) is
    # undone bit for bit). The new velocity then feeds only the carry, which keeps XLA
    # from recomputing its whole chain inside a separate loop for theta.
    def body(carry, x):
        previous, vel, word, slots, bad, checksum = carry
        # v first: the carry of the low words is found from v's, so that the low word of
        # theta(k-1) is dead once read and its buffer is updated in place (no copy).
        theta = [fp.add(v, t) for t, v in zip(previous, vel, strict=True)]
        floats = [fp.to_float(t, frac_bits, dt) for t, dt in zip(theta, dtypes, strict=True)]
        p_tree = jax.tree_util.tree_unflatten(treedef, floats)
        grads = checked_grads(grad_fn, p_tree, x["k"], extra, treedef, shapes)
        out, bad_input = [[], [], []], jnp.zeros((), bool)
        for i, dt in enumerate(dtypes):
            v, w, s, digest, bad_in = velocity_leaf(
                theta[i], vel[i], word[i], slots[i], alpha_times(x["alpha"][i], grads[i], dt),
                x["n"][i], x["spill"][i], x["slot"][i], frac_bits, x["k"],
            )  # fmt: skip
            for lst, item in zip(out, (v, w, s), strict=True):
                lst.append(item)
            bad_input = bad_input | bad_in
            checksum = checksum + digest
        bad = jnp.where((bad < 0) & bad_input, x["k"] - 1, bad)
        return (theta, *out, bad, checksum), None

    theta0, vel0, word0, slots0 = words
    previous0 = [fp.sub(t, v) for t, v in zip(theta0, vel0, strict=True)]
    checksum0 = buffer_digest(word0, xs["k"][0])
    init = (previous0, vel0, word0, slots0, jnp.asarray(-1, jnp.int32), checksum0)
    (previous, vel, word, slots, bad, checksum), _ = jax.lax.scan(body, init, xs)
    theta = [fp.add(t, v) for t, v in zip(previous, vel, strict=True)]
    last_bad = jnp.any(jnp.stack([out_of_range(t, v) for t, v in zip(theta, vel, strict=True)]))
    bad = jnp.where((bad < 0) & last_bad, xs["k"][-1], bad)
    return (theta, vel, word, slots), bad, checksum


def _reverse_scan(grad_fn, treedef, dtypes, frac_bits, words, xs, extra):
    shapes = [w.hi.shape for w in words[0]]

    def body(carry, x):
        theta, vel, word, slots, bad, checksum = carry
        theta = [undo_position(t, v) for t, v in zip(theta, vel, strict=True)]
        floats = [fp.to_float(t, frac_bits, dt) for t, dt in zip(theta, dtypes, strict=True)]
        p_tree = jax.tree_util.tree_unflatten(treedef, floats)
        grads = checked_grads(grad_fn, p_tree, x["k"], extra, treedef, shapes)
        new_vel, new_word, any_mismatch = [], [], jnp.zeros((), bool)
        for i, dt in enumerate(dtypes):
            v, w, _, mismatch = undo_velocity_leaf(
                vel[i],
                word[i],
                slots[i],
                alpha_times(x["alpha"][i], grads[i], dt),
                x["n"][i],
                x["spill"][i],
                x["slot"][i],
                frac_bits,
            )
            new_vel.append(v)
            new_word.append(w)
            any_mismatch = any_mismatch | mismatch
            checksum = checksum + fp.fingerprint(v, x["k"])  # v(k), as forward saw it
        bad = jnp.where((bad < 0) & any_mismatch, x["k"], bad)
        return (theta, new_vel, new_word, slots, bad, checksum), None

    init = (*words, jnp.asarray(-1, jnp.int32), jnp.asarray(0, jnp.uint32))
    (theta, vel, word, slots, bad, checksum), _ = jax.lax.scan(body, init, xs, reverse=True)
    checksum = checksum + buffer_digest(word, xs["k"][0])
    return (theta, vel, word, slots), bad, checksum


_STATIC = ("grad_fn", "treedef", "dtypes", "frac_bits")
# XLA:CPU's region-based copy insertion keeps the loop-carried words in place instead of
# copying some of them every step. Compiler options apply to top-level jits only, so
# calls traced inside a user's jit use the plain version.
_CPU_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}
_SCANS = {
    (name, tuned): jax.jit(
        fun, static_argnames=_STATIC, **({"compiler_options": _CPU_OPTIONS} if tuned else {})
    )
    for name, fun in (("forward", _forward_scan), ("reverse", _reverse_scan))
    for tuned in (False, True)
}


def _run_scan(name: str, *args):
    """Run the jitted forward or reverse scan, with the CPU options when at top level."""
    # Outside any trace every argument is concrete (a jit needs no tracer check).
    tuned = jax.default_backend() == "cpu" and _outside_any_trace() and _cpu_options_supported()
    return _SCANS[name, tuned](*args)


def _outside_any_trace() -> bool:
    """True when no JAX transformation (jit, vmap, grad, eval_shape...) traces the caller.

    JAX has no public test for this; without its internal one, say False (the plain jit).
    """
    try:
        from jax._src.core import trace_state_clean
    except ImportError:
        return False
    return bool(trace_state_clean())


@functools.lru_cache(maxsize=1)
def _cpu_options_supported() -> bool:
    """Whether this XLA knows :data:`_CPU_OPTIONS` (else the default compilation is used)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS).lower(1.0).compile()
    except Exception:  # noqa: BLE001 - any failure means: do not use the options
        return False
    return True


def _segment_inputs(state: State, alpha_leaves, numerators, start_bounds):
    """Per-step scan inputs: step index, alphas, numerators, spill flags and slot indices.

    The slot indices count from the first slot of the call: the scans carry only the slots
    their call writes (forward) or reads (reverse), never the whole buffer.
    """
    # NumPy arrays (transferred by the jitted call itself, the cheapest way), alphas as given
    # (they may be traced, e.g. inside a hypergradient).
    xs = {"k": np.arange(state.step, state.step + len(numerators[0]), dtype=np.int32)}
    xs["alpha"], xs["n"], xs["spill"], xs["slot"] = list(alpha_leaves), list(numerators), [], []
    new_slots, end_bounds = [], []
    for n, bound in zip(numerators, start_bounds, strict=True):
        spill, slot, end = buffer.spill_schedule(bound, n)
        xs["spill"].append(spill)
        xs["slot"].append(slot)
        new_slots.append(int(spill.sum()))
        end_bounds.append(end)
    return xs, tuple(new_slots), tuple(end_bounds)


def _digest(numerators) -> int:
    return hash(tuple(n.tobytes() for n in numerators))


def forward(state: State, grad_fn, alphas, betas, *, _extra=None, _grad3=None) -> State:
    """Run T exact momentum steps (SPEC §7) in one ``lax.scan``.

    Args:
      state: from :func:`init` or a previous call.
      grad_fn: ``grad_fn(params, k) -> grads`` (a pytree like params), deterministic in its
        arguments; k is the global step index (an int32 scalar).
      alphas: (T,) step sizes > 0, or a pytree like params of (T,) schedules (per leaf).
      betas: (T,) momentum values in (0, 1), or per leaf; concrete (not traced). Each is
        used as n / 2^16 with n = round(beta · 2^16) (see :func:`represented_betas`).
    Returns:
      the new state, with T more steps, the buffer grown by the bits the steps destroyed.
    Raises:
      ValueError for bad schedules; FixedPointOverflowError (a ValueError) naming the
      first step where a value left the fixed-point range (outside jit; inside jit the
      step is kept in the state, see :func:`check`).
    """
    n_steps, alpha_leaves, numerators = _check_schedules(state, alphas, betas)
    xs, new_slots, end_bounds = _segment_inputs(state, alpha_leaves, numerators, state.bounds)
    fresh = [  # the slots this call fills (empty ones as NumPy: no device work at all)
        (jnp if n else np).zeros((n, *w.shape), buffer.SLOT_DTYPE)
        for w, n in zip(state.word, new_slots, strict=True)
    ]
    words = (state.theta, state.velocity, state.word, fresh)
    grad3 = _grad3 if _grad3 is not None else _two_arg(grad_fn)
    (theta, vel, word, filled), bad, checksum = _run_scan(
        "forward", grad3, state.treedef, state.dtypes, state.frac_bits, words, xs, _extra
    )
    segment = Segment(n_steps, tuple(state.bounds), _digest(numerators), new_slots)
    new = dataclasses.replace(
        state,
        theta=theta,
        velocity=vel,
        word=word,
        slot_blocks=(*state.slot_blocks, list(filled)),
        checksums=(*state.checksums, checksum),
        bad_step=jnp.where(state.bad_step >= 0, state.bad_step, bad),
        step=state.step + n_steps,
        bounds=end_bounds,
        segments=(*state.segments, segment),
    )
    if is_concrete(new.bad_step):
        check(new)
    return new


def reverse(state: State, grad_fn, alphas, betas, *, _extra=None, _grad3=None) -> State:
    """Exactly undo the most recent :func:`forward` call (same ``grad_fn`` and schedules).

    Runs the inverse steps theta(k) = theta(k+1) - v(k+1), v(k) = (v(k+1) + alpha_k
    ∇J(theta(k))) / beta_k for k = T-1, ..., 0 in one ``lax.scan``, popping the buffer.

    Returns:
      the state before that call, bit for bit (its buffer words and slots included).
    Raises:
      ValueError when there is no forward call to undo or the schedules differ from it;
      TrajectoryMismatchError (a ValueError) when a recomputed gradient differs from the
      forward pass (outside jit; inside jit it is kept in the state, see :func:`check`).
    """
    if not state.segments:
        raise ValueError("state: expected a state after forward(); there is no step to reverse")
    n_steps, alpha_leaves, numerators = _check_schedules(state, alphas, betas)
    segment = state.segments[-1]
    if n_steps != segment.n_steps or _digest(numerators) != segment.betas_digest:
        raise ValueError(
            f"alphas, betas: reverse undoes the last forward call, which ran "
            f"{segment.n_steps} steps; expected its beta schedule, got {n_steps} steps"
            + ("" if n_steps != segment.n_steps else " with different betas")
        )
    start = dataclasses.replace(state, step=state.step - n_steps)
    xs, _, _ = _segment_inputs(start, alpha_leaves, numerators, segment.start_bounds)
    words = (state.theta, state.velocity, state.word, state.slot_blocks[-1])
    grad3 = _grad3 if _grad3 is not None else _two_arg(grad_fn)
    (theta, vel, word, _), bad, checksum = _run_scan(
        "reverse", grad3, state.treedef, state.dtypes, state.frac_bits, words, xs, _extra
    )
    mismatch = jnp.where(
        bad >= 0, bad, jnp.where(checksum != state.checksums[-1], start.step, -1)
    ).astype(jnp.int32)
    new = dataclasses.replace(
        state,
        theta=theta,
        velocity=vel,
        word=word,
        slot_blocks=state.slot_blocks[:-1],
        checksums=state.checksums[:-1],
        mismatch_step=jnp.where(state.mismatch_step >= 0, state.mismatch_step, mismatch),
        step=start.step,
        bounds=segment.start_bounds,
        segments=state.segments[:-1],
    )
    if is_concrete(new.mismatch_step):
        check(new)
    return new
