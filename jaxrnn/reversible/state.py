"""The exact state of reversible momentum SGD, what it holds, and its failures (SPEC §7)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import is_concrete, is_int
from jaxrnn.exact import buffer
from jaxrnn.reversible import step as exact_step

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
    appends its block and never copies the earlier ones); ``fingerprints`` (per forward
    call not yet reversed, the :func:`step.fingerprint` of the words it started from);
    ``bad_step`` (int32, the first step whose values left the fixed-point range, -1 if
    none); ``mismatch_step`` (int32, the first step of a reversed call whose recomputed
    gradients differed, -1 if none).
    """

    theta: list
    velocity: list
    word: list
    slot_blocks: tuple
    fingerprints: tuple
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
            self.fingerprints,
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
    frac_bits = validate_frac_bits(frac_bits)
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
    words = exact_step.words_of(leaves, frac_bits)
    for i, theta in enumerate(words.theta):
        failed = jnp.any(theta.hi == exact_step.FAILED)
        if is_concrete(failed) and bool(failed):
            raise FixedPointOverflowError(
                f"params leaf {i}: values outside the fixed-point range ±2^{62 - frac_bits} "
                f"(frac_bits = {frac_bits}) or not finite"
            )
    return State(
        theta=words.theta,
        velocity=words.velocity,
        word=words.word,
        slot_blocks=(),
        fingerprints=(),
        bad_step=exact_step.failed_step(words.theta),
        mismatch_step=jnp.asarray(-1, jnp.int32),
        treedef=treedef,
        dtypes=tuple(dtypes),
        frac_bits=frac_bits,
        step=0,
        bounds=(0,) * len(leaves),
        segments=(),
    )


def validate_frac_bits(frac_bits) -> int:
    """``frac_bits`` as an int in [0, 62], or a ValueError naming it."""
    if not is_int(frac_bits):
        raise ValueError(f"frac_bits: expected an integer in [0, 62], got {frac_bits!r}")
    if not 0 <= frac_bits <= 62:
        raise ValueError(f"frac_bits: expected an integer in [0, 62], got {frac_bits}")
    return int(frac_bits)


def params(state: State):
    """The parameters theta as a pytree of floats (their original dtypes)."""
    floats = exact_step.floats_of(state.theta, state.frac_bits, list(state.dtypes))
    return state.treedef.unflatten(floats)


def velocity(state: State):
    """The velocity v as a pytree of floats (the parameters' dtypes)."""
    floats = exact_step.floats_of(state.velocity, state.frac_bits, list(state.dtypes))
    return state.treedef.unflatten(floats)


def stored_bits(state: State) -> int:
    """Bits the buffer holds: a 32-bit word plus 8 bits per spilled slot, per parameter."""
    spilled = [
        sum(block[i].shape[0] for block in state.slot_blocks) for i in range(len(state.word))
    ]
    return sum(
        int(np.prod(w.shape, dtype=np.int64)) * (buffer.WORD_BITS + buffer.SLOT_BITS * n)
        for w, n in zip(state.word, spilled, strict=True)
    )


def buffer_is_empty(state: State) -> bool:
    """True when no slot is spilled and every buffer word is 0."""
    empty = all(s.shape[0] == 0 for block in state.slot_blocks for s in block)
    return empty and all(bool(jnp.all(w == 0)) for w in state.word)


@functools.singledispatch
def raise_if_failed(state: State):
    """Raise the failure a state records, else return the state.

    Takes a :class:`State` or the state of :func:`reversible_momentum`. Inside ``jit`` a
    failure cannot raise; it travels in the state until this is called on the host.

    Raises:
      FixedPointOverflowError: a value left the fixed-point range, or a step alpha·grad
        was not finite, at the step named.
      TrajectoryMismatchError: reverse (or undo) recomputed a gradient that differs from
        the forward pass, so the state it reconstructed is not the original one.
    """
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
            f"reverse: a gradient recomputed in the call that started at step {mismatch} "
            "differs from the forward pass (grad_fn must be a deterministic function of "
            "(params, k)); the reconstructed state is not the original one"
        )
    return state
