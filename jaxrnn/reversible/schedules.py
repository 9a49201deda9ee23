"""Step-size and momentum schedules of exact momentum SGD, and the inputs of each step.

A schedule is a (T,) array shared by all parameter leaves, or a pytree like params of (T,)
arrays (one per leaf). beta_k is used as the exact rational n_k / 2^16 with n_k =
round(beta_k · 2^16) (:mod:`jaxrnn.exact.buffer`); the numerators must be known on the
host, because the buffer's spill schedule is computed from them. alpha_k may be traced.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from jaxrnn._checks import is_concrete, shape_of
from jaxrnn.exact import buffer


class Schedules(NamedTuple):
    """Validated schedules, one entry per parameter leaf."""

    n_steps: int
    alphas: list  # per leaf: (T,) step sizes (NumPy, or a JAX array when given as one)
    numerators: list  # per leaf: (T,) uint32 n_k (NumPy)


class StepInputs(NamedTuple):
    """What step k needs besides the words and the gradient.

    Stacked over the steps of a call (leading axis T) for ``lax.scan``; per-leaf fields are
    lists with one entry per parameter leaf.
    """

    k: Any  # int32: the global step index
    alpha: Any  # per leaf: alpha_k
    numerator: Any  # per leaf: uint32 n_k, beta_k = n_k / 2^16
    spill: Any  # per leaf: bool, the buffer word spills its high byte before step k
    slot: Any  # per leaf: int32, the slot that byte goes to (counted from the call's first)


class CallPlan(NamedTuple):
    """The steps of one forward call: their stacked inputs and what they do to the buffer."""

    inputs: StepInputs  # stacked over the call's T steps
    new_slots: tuple  # per leaf: the slots the call fills
    end_bounds: tuple  # per leaf: the buffer word's bound after the call


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


def leafwise(value, treedef) -> list:
    """A schedule given for all leaves at once or as a pytree like params, as one per leaf."""
    if is_per_leaf(value, treedef):
        return treedef.flatten_up_to(value)
    return [value] * treedef.num_leaves


def validate_schedules(treedef, alphas, betas) -> Schedules:
    """Check the schedules of a call over parameters of structure ``treedef``.

    Raises ValueError naming the schedule and the first bad step: lengths that differ, a
    shape other than (T,), a step size that is not > 0 (when concrete), a momentum outside
    (0, 1) or outside the supported range, a traced momentum.
    """
    alpha_leaves, beta_leaves = leafwise(alphas, treedef), leafwise(betas, treedef)
    lengths = {_length(a, "alphas") for a in alpha_leaves}
    lengths |= {_length(b, "betas") for b in beta_leaves}
    if len(lengths) != 1:
        raise ValueError(
            f"alphas, betas: expected schedules of one length T, got lengths {sorted(lengths)}"
        )
    for a in _distinct(alpha_leaves):
        if is_concrete(a):
            a = np.asarray(a, np.float64)
            ok = np.isfinite(a) & (a > 0)
            if not ok.all():
                k = int(np.argmin(ok))
                raise ValueError(f"alphas: expected step sizes > 0, got {a[k]} at step {k}")
    checked = {id(b): _numerators(b) for b in _distinct(beta_leaves)}
    return Schedules(
        n_steps=lengths.pop(),
        alphas=[a if isinstance(a, jax.Array) else np.asarray(a) for a in alpha_leaves],
        numerators=[checked[id(b)] for b in beta_leaves],
    )


def plan_call(first_step: int, schedules: Schedules, start_bounds) -> CallPlan:
    """The :class:`CallPlan` of a call from ``first_step`` with these buffer bounds.

    Slot indices count from the call's first slot: a scan carries only the slots its call
    writes (forward) or reads (reverse), never the whole buffer.
    """
    spill, slot, new_slots, end_bounds = [], [], [], []
    for n, bound in zip(schedules.numerators, start_bounds, strict=True):
        flags, slots, end = buffer.spill_schedule(bound, n)
        spill.append(flags)
        slot.append(slots)
        new_slots.append(int(flags.sum()))
        end_bounds.append(end)
    # NumPy arrays (transferred by the jitted call itself, the cheapest way), alphas as
    # given (they may be traced, e.g. inside a hypergradient).
    k = np.arange(first_step, first_step + schedules.n_steps, dtype=np.int32)
    inputs = StepInputs(k, list(schedules.alphas), list(schedules.numerators), spill, slot)
    return CallPlan(inputs, tuple(new_slots), tuple(end_bounds))


def represented_betas(betas):
    """The momentum values actually used: n / 2^16 with n = round(beta · 2^16)."""
    b = np.asarray(betas, np.float64)
    return np.rint(b * buffer.DENOMINATOR) / buffer.DENOMINATOR


def information_bound(betas, n_params: int) -> float:
    """D · sum_k log2(1 / beta_k), with beta_k as represented (n_k / 2^16): the bits lost."""
    numerators = np.array([buffer.numerator(b) for b in np.ravel(betas)], np.float64)
    return float(n_params * np.sum(np.log2(buffer.DENOMINATOR / numerators)))


def digest(numerators) -> int:
    """A hash of per-leaf numerators: reverse checks that it undoes the same schedule."""
    return hash(tuple(n.tobytes() for n in numerators))


def _length(schedule, name: str) -> int:
    shape = shape_of(schedule)
    if len(shape) != 1 or shape[0] < 1:
        raise ValueError(f"{name}: expected a schedule of shape (T,) with T >= 1, got {shape}")
    return shape[0]


def _numerators(betas) -> np.ndarray:
    """The uint32 numerators n_k of a concrete momentum schedule, checked."""
    if not is_concrete(betas):
        raise ValueError(
            "betas: expected a concrete schedule (known at trace time; the exact rational "
            "n/2^16 and the spill schedule are computed from it), got a tracer"
        )
    b = np.asarray(betas, np.float64)
    ok = np.isfinite(b) & (b > 0) & (b < 1)
    if not ok.all():
        k = int(np.argmin(ok))
        raise ValueError(f"betas: expected momentum in (0, 1), got {b[k]} at step {k}")
    n = np.rint(b * buffer.DENOMINATOR)
    outside = (n < buffer.MIN_NUMERATOR) | (n > buffer.DENOMINATOR - 1)
    if outside.any():
        k = int(np.argmax(outside))
        raise ValueError(
            f"betas: beta = {b[k]} at step {k} is outside the supported range: beta is used "
            f"as n / 2^16 with 2^8 <= n < 2^16, so {buffer.SUPPORTED_BETAS}"
        )
    return n.astype(np.uint32)


def _distinct(items: list) -> list:
    """``items`` without repeats of the same object (schedules shared by all leaves)."""
    return list({id(item): item for item in items}.values())
