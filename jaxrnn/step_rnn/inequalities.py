"""Exact feasibility of strict and non-strict linear inequalities (Fourier–Motzkin).

A system of rows ``a . p + c > 0`` (strict) or ``a . p + c >= 0`` over rationals is
decided in ``fractions.Fraction`` arithmetic, never with a floating tolerance. Eliminating
variable k pairs every row with a_k > 0 with every row with a_k < 0::

    (-a'_k) (a . p + c) + a_k (a' . p + c')      (strict if either row is strict)

which cancels p_k; rows without p_k are kept. After the last variable each row reads
``c > 0`` or ``c >= 0``; the system is infeasible iff one of them is false (c < 0, or
c = 0 and strict). Each derived row carries its non-negative multipliers over the original
rows, so a false row is a Motzkin certificate: a non-negative combination of the rows that
is identically ``0 > 0`` (or ``c > 0`` with c < 0). When the system is feasible, a point is
found by back-substitution, taking in each variable's interval the integer of smallest
magnitude, or else the midpoint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from fractions import Fraction


@dataclasses.dataclass(frozen=True)
class Inequality:
    """``sum_i coeffs[i] p_i + const > 0`` if ``strict`` else ``>= 0``, with rational numbers."""

    coeffs: tuple[Fraction, ...]
    const: Fraction = Fraction(0)
    strict: bool = False

    def __post_init__(self):
        object.__setattr__(self, "coeffs", tuple(Fraction(a) for a in self.coeffs))
        object.__setattr__(self, "const", Fraction(self.const))

    def value(self, point: Sequence[Fraction]) -> Fraction:
        """The left-hand side at ``point``."""
        return sum((a * p for a, p in zip(self.coeffs, point, strict=True)), self.const)

    def holds(self, point: Sequence[Fraction]) -> bool:
        value = self.value(point)
        return value > 0 if self.strict else value >= 0


@dataclasses.dataclass(frozen=True)
class _Row:
    inequality: Inequality
    multipliers: tuple[Fraction, ...]  # over the original rows: this row is their combination


def _is_contradiction(ineq: Inequality) -> bool:
    return all(a == 0 for a in ineq.coeffs) and (
        ineq.const < 0 or (ineq.const == 0 and ineq.strict)
    )


def _is_tautology(ineq: Inequality) -> bool:
    return all(a == 0 for a in ineq.coeffs) and not _is_contradiction(ineq)


def _combine(pos: _Row, neg: _Row, k: int) -> _Row:
    """``(-neg_k) pos + pos_k neg``: a row without variable k (pos_k > 0 > neg_k)."""
    s, t = -neg.inequality.coeffs[k], pos.inequality.coeffs[k]
    p, n = pos.inequality, neg.inequality
    ineq = Inequality(
        tuple(s * a + t * b for a, b in zip(p.coeffs, n.coeffs, strict=True)),
        s * p.const + t * n.const,
        p.strict or n.strict,
    )
    multipliers = tuple(
        s * a + t * b for a, b in zip(pos.multipliers, neg.multipliers, strict=True)
    )
    return _Row(ineq, multipliers)


def _normalised(row: _Row) -> _Row:
    """Scale by a positive number so that the largest |coefficient| (or |const|) is 1."""
    ineq = row.inequality
    scale = max((abs(a) for a in ineq.coeffs + (ineq.const,)), default=Fraction(0))
    if scale == 0:
        return row
    return _Row(
        Inequality(tuple(a / scale for a in ineq.coeffs), ineq.const / scale, ineq.strict),
        tuple(m / scale for m in row.multipliers),
    )


def _eliminate(rows: list[_Row], k: int) -> list[_Row]:
    """The rows of the system with variable k eliminated (deduplicated, tautologies dropped)."""
    pos = [r for r in rows if r.inequality.coeffs[k] > 0]
    neg = [r for r in rows if r.inequality.coeffs[k] < 0]
    out = [r for r in rows if r.inequality.coeffs[k] == 0]
    out += [_combine(p, n, k) for p in pos for n in neg]
    unique: dict[Inequality, _Row] = {}
    for row in map(_normalised, out):
        if not _is_tautology(row.inequality):
            unique.setdefault(row.inequality, row)
    return list(unique.values())


def _check_system(system: Sequence[Inequality]) -> int:
    if not system:
        raise ValueError("system: expected at least one inequality, got none")
    sizes = {len(ineq.coeffs) for ineq in system}
    if len(sizes) != 1:
        raise ValueError(
            f"system: every inequality needs the same number of variables, got {sizes}"
        )
    return sizes.pop()


def _stages(system: Sequence[Inequality]) -> tuple[list[list[_Row]], tuple[Fraction, ...] | None]:
    """Systems after eliminating variables 0, 1, ...; and the certificate if infeasible."""
    n_vars = _check_system(system)
    m = len(system)
    rows = [
        _Row(ineq, tuple(Fraction(int(i == j)) for j in range(m))) for i, ineq in enumerate(system)
    ]
    stages = [rows]
    for k in range(n_vars + 1):
        for row in rows:
            if _is_contradiction(row.inequality):
                return stages, row.multipliers
        if k < n_vars:
            rows = _eliminate(rows, k)
            stages.append(rows)
    return stages, None


def certificate(system: Sequence[Inequality]) -> tuple[Fraction, ...] | None:
    """Non-negative multipliers proving the system infeasible, or None if it is feasible.

    With multipliers m: ``sum_i m_i coeffs_i = 0`` and ``sum_i m_i const_i`` is < 0, or is 0
    with m_i > 0 for some strict row; then ``sum_i m_i (row_i)`` reads ``c > 0`` or ``c >= 0``
    with c false, so no point satisfies every row.
    """
    return _stages(system)[1]


def is_feasible(system: Sequence[Inequality]) -> bool:
    """True iff some rational point satisfies every inequality."""
    return certificate(system) is None


def _pick(lower, upper) -> Fraction:
    """A value in the interval given by (bound, strict) pairs or None.

    The integer of smallest magnitude in the interval if there is one, else its midpoint
    (or its single point).
    """

    def inside(v):
        above = lower is None or v > lower[0] or (v == lower[0] and not lower[1])
        below = upper is None or v < upper[0] or (v == upper[0] and not upper[1])
        return above and below

    candidates = [0]
    for bound in (b for b in (lower, upper) if b is not None):
        candidates += [
            math.floor(bound[0]),
            math.ceil(bound[0]),
            math.floor(bound[0]) + 1,
            math.ceil(bound[0]) - 1,
        ]
    integers = [Fraction(v) for v in candidates if inside(v)]
    if integers:
        return min(integers, key=lambda v: (abs(v), v))
    return (lower[0] + upper[0]) / 2


def feasible_point(system: Sequence[Inequality]) -> tuple[Fraction, ...] | None:
    """A rational point satisfying every inequality, or None if there is none.

    Back-substitution through the elimination stages: variable k is chosen from the rows of
    the stage in which it is the first remaining variable, given the later variables.
    """
    stages, cert = _stages(system)
    if cert is not None:
        return None
    n_vars = len(system[0].coeffs)
    point = [Fraction(0)] * n_vars
    for k in reversed(range(n_vars)):
        lower, upper = None, None  # (bound, strict), the tightest so far
        for row in stages[k]:
            ineq = row.inequality
            a = ineq.coeffs[k]
            if a == 0:
                continue
            rest = ineq.const + sum(ineq.coeffs[j] * point[j] for j in range(k + 1, n_vars))
            bound = -rest / a
            if a > 0 and (lower is None or (bound, ineq.strict) > lower):
                lower = (bound, ineq.strict)
            if a < 0 and (upper is None or (bound, not ineq.strict) < (upper[0], not upper[1])):
                upper = (bound, ineq.strict)
        point[k] = _pick(lower, upper)
    result = tuple(point)
    if not all(ineq.holds(result) for ineq in system):
        raise RuntimeError("feasible_point: back-substitution broke a row (a bug, please report)")
    return result
