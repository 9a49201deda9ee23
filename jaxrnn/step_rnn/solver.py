"""Which input/output maps can the scalar step RNN realise? Decided exactly (SPEC §2).

Because y = s, the target outputs fix s(t-1) = y(t-1) (s(0) = s0), and each time step t
is one linear inequality in (w1, w2, b) with z(t) = w1 x(t) + w2 s(t-1) + b::

    z(t) > 0   where y(t) = 1          z(t) <= 0   where y(t) = 0   (step(0) = 0)

The system is decided by exact Fourier–Motzkin elimination (:mod:`.inequalities`).
With binary x and s there are at most 8 distinct inequalities, so a smallest conflicting
set of steps is found by trying subsets in order of size.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from fractions import Fraction

import numpy as np

from jaxrnn.step_rnn.inequalities import Inequality, certificate, feasible_point, is_feasible
from jaxrnn.step_rnn.network import run

_NAMES = ("w1", "w2", "b")


@dataclasses.dataclass(frozen=True)
class _Step:
    """Time step t (1-based) of sequence k (1-based) and the inequality it imposes."""

    sequence: int
    t: int
    x: int
    s_prev: int
    y: int

    @property
    def form(self) -> tuple[int, int, int]:
        """Coefficients of z(t) in (w1, w2, b)."""
        return (self.x, self.s_prev, 1)

    def label(self, several: bool) -> str:
        return f"step {self.t} of sequence {self.sequence}" if several else f"step {self.t}"

    def requirement(self) -> str:
        z = _format_form(self.form)
        return (
            f"x = {self.x}, s({self.t - 1}) = {self.s_prev}, y = {self.y}  needs  "
            f"{z} {'>' if self.y else '<='} 0"
        )


def _format_form(coeffs) -> str:
    """``w1 x + w2 s + b`` with given integer coefficients, e.g. ``w1 + 2 b``."""
    terms = []
    for c, name in zip(coeffs, _NAMES, strict=True):
        if c == 0:
            continue
        size = "" if abs(c) == 1 else f"{abs(c)} "
        sign = "-" if c < 0 else "+"
        terms.append((sign, f"{size}{name}"))
    if not terms:
        return "0"
    text = ("-" if terms[0][0] == "-" else "") + terms[0][1]
    return text + "".join(f" {sign} {term}" for sign, term in terms[1:])


def _format_number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else str(value)


@dataclasses.dataclass(frozen=True)
class Solution:
    """Result of :func:`solve`.

    Attributes:
      feasible: whether some (w1, w2, b) reproduces every target output.
      params: (w1, w2, b) as floats when feasible (checked by running them), else None.
      exact_params: the same as integers (Fractions), else None.
      margin: min over steps of z(t) (y = 1) and -z(t) (y = 0) at ``exact_params``.
      certificate: when infeasible, a smallest set of conflicting time steps, 1-based
        (``(sequence, step)`` pairs when several sequences were given), else None.
      explanation: a short derivation, in words and inequalities.
    """

    feasible: bool
    params: tuple[float, float, float] | None
    exact_params: tuple[Fraction, Fraction, Fraction] | None
    margin: Fraction | None
    certificate: tuple | None
    explanation: str

    def __str__(self) -> str:
        return self.explanation


def _as_binary(value, name: str) -> tuple[int, ...]:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a sequence of 0/1 values, got {value!r}") from None
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of 0/1 values, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: expected a non-empty sequence, got an empty one")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"{name}: expected 0/1 values, got dtype {array.dtype}")
    bad = [v for v in array.tolist() if v not in (0, 1)]
    if bad:
        raise ValueError(f"{name}: expected binary values 0/1, got {bad[0]!r} in {array.tolist()}")
    return tuple(int(v) for v in array.tolist())


def _is_several(value) -> bool:
    """A list of sequences (or a 2-D array) rather than one sequence."""
    if hasattr(value, "shape"):
        return len(value.shape) == 2
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(v, (list, tuple)) or getattr(v, "ndim", 0) >= 1 for v in value)
    )


def _pairs(xs, ys) -> tuple[list[tuple[tuple[int, ...], tuple[int, ...]]], bool]:
    several = _is_several(xs)
    if several != _is_several(ys):
        raise ValueError(
            "xs, ys: expected both to be one sequence or both a list of sequences, got "
            f"{'a list' if several else 'one sequence'} for xs and the other for ys"
        )
    if not several:
        xs, ys = [xs], [ys]
    if len(xs) == 0:
        raise ValueError("xs: expected at least one sequence, got none")
    if len(xs) != len(ys):
        raise ValueError(f"xs, ys: expected as many sequences, got {len(xs)} and {len(ys)}")
    pairs = []
    for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
        suffix = f"[{k}]" if several else ""
        x, y = _as_binary(x, f"xs{suffix}"), _as_binary(y, f"ys{suffix}")
        if len(x) != len(y):
            raise ValueError(
                f"xs{suffix}, ys{suffix}: expected the same length, got {len(x)} and {len(y)}"
            )
        pairs.append((x, y))
    return pairs, several


def _steps(pairs, s0: int) -> list[_Step]:
    steps = []
    for k, (x, y) in enumerate(pairs, 1):
        previous = (s0,) + y[:-1]
        steps += [_Step(k, t, x[t - 1], previous[t - 1], y[t - 1]) for t in range(1, len(x) + 1)]
    return steps


def _inequality(form, y: int, margin: int = 0) -> Inequality:
    """y = 1: z >= margin (strict if margin = 0); y = 0: -z >= margin."""
    sign = 1 if y else -1
    return Inequality(tuple(sign * c for c in form), -margin, strict=(y == 1 and margin == 0))


def _groups(steps: list[_Step]) -> dict[tuple[int, int, int], list[_Step]]:
    """Steps grouped by (x, s(t-1), y), which fixes their inequality; first-seen order."""
    groups: dict[tuple[int, int, int], list[_Step]] = {}
    for step in steps:
        groups.setdefault((step.x, step.s_prev, step.y), []).append(step)
    return groups


def _smallest_conflict(groups) -> list[list[_Step]]:
    """A smallest infeasible subset of the distinct inequalities (their groups of steps)."""
    items = list(groups.values())
    for size in range(1, len(items) + 1):
        for subset in itertools.combinations(items, size):
            if not is_feasible([_inequality(g[0].form, g[0].y) for g in subset]):
                return list(subset)
    raise RuntimeError("solve: no conflicting subset in an infeasible system (a bug)")


def _join_steps(steps: list[_Step], several: bool) -> str:
    """``steps 1 and 5``; ``steps 1, 2, 3 and 4``; with several sequences, full labels."""
    names = [s.label(several) for s in steps] if several else [str(s.t) for s in steps]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return text if several else ("step " if len(names) == 1 else "steps ") + text


def _integer_multipliers(multipliers) -> list[int]:
    scale = math.lcm(*(m.denominator for m in multipliers))
    ints = [int(m * scale) for m in multipliers]
    divisor = math.gcd(*ints)
    return [i // divisor for i in ints]


def _explain_conflict(conflict: list[_Step], several: bool) -> str:
    multipliers = _integer_multipliers(certificate([_inequality(s.form, s.y) for s in conflict]))
    lines = [f"No (w1, w2, b) exists: {_join_steps(conflict, several)} cannot hold together."]
    width = max(len(s.label(several)) for s in conflict)
    lines += [f"  {s.label(several):{width}s}: {s.requirement()}" for s in conflict]

    def side(y):
        parts = []
        for s, m in zip(conflict, multipliers, strict=True):
            if s.y == y and m:
                parts.append(("" if m == 1 else f"{m}") + f"({_format_form(s.form)})")
        return " + ".join(parts)

    if len(conflict) == 2 and conflict[0].form == conflict[1].form:
        lines.append(
            f"Both steps see the same x and s(t-1), so z = {_format_form(conflict[0].form)} is "
            "the same number at both; it cannot be > 0 and <= 0."
        )
    else:
        total = [0, 0, 0]
        for s, m in zip(conflict, multipliers, strict=True):
            if s.y == 1:
                total = [t + m * c for t, c in zip(total, s.form, strict=True)]
        lines.append(
            f"For every (w1, w2, b): {side(1)} = {side(0)} = {_format_form(total)}; the left "
            "side is a sum of terms that must be > 0, the right side a sum of terms that must "
            "be <= 0, so it would be both > 0 and <= 0."
        )
    return "\n".join(lines)


def _point_with_margin(groups) -> tuple[Fraction, ...]:
    """A solution with every z(t) >= 1 (y = 1) and -z(t) >= 1 (y = 0) where possible.

    The y = 0 rows are tightened one by one, each kept only if the system stays feasible
    (a row that cannot be tightened is an implicit equality, z = 0 in every solution).
    """
    forms = [(group[0].form, group[0].y) for group in groups.values()]
    system = [_inequality(form, 1, margin=1) for form, y in forms if y]
    for form, y in forms:
        if not y:
            tight = _inequality(form, 0, margin=1)
            system.append(tight if is_feasible(system + [tight]) else _inequality(form, 0))
    point = feasible_point(system)
    scale = math.lcm(*(p.denominator for p in point))
    ints = [int(p * scale) for p in point]
    divisor = math.gcd(*ints) or 1
    return tuple(Fraction(i // divisor) for i in ints)


def _explain_solution(params, margin, groups, several: bool) -> str:
    values = ", ".join(f"{n} = {_format_number(v)}" for n, v in zip(_NAMES, params, strict=True))
    lines = [f"Feasible: {values} reproduces every output (margin {_format_number(margin)})."]
    for (x, s, y), group in groups.items():
        form = (x, s, 1)
        z = sum(c * p for c, p in zip(form, params, strict=True))
        where = _join_steps(group, several)
        lines.append(
            f"  {_format_form(form)} {'>' if y else '<='} 0  ({where}): z = {_format_number(z)}"
        )
    return "\n".join(lines)


def solve(xs, ys, s0: int = 0) -> Solution:
    """Decide exactly whether some (w1, w2, b) maps ``xs`` to ``ys``; give them or a proof.

    Each step t requires z(t) = w1 x(t) + w2 y(t-1) + b > 0 if y(t) = 1, <= 0 if y(t) = 0
    (y(0) = s0). Feasibility is decided in rational arithmetic. When feasible, the
    returned integer weights have a margin (every y = 0 step gets z <= -margin unless it
    is forced to z = 0) and are checked by :func:`run`; when not, the certificate is a
    smallest set of steps whose inequalities contradict each other, with a derivation.

    Args:
      xs: a binary sequence (T,), or a list of binary sequences that must all hold.
      ys: the target outputs, same structure and lengths as ``xs``.
      s0: s(0), 0 or 1, shared by all sequences.

    Returns:
      :class:`Solution`.
    """
    if isinstance(s0, bool) or np.ndim(s0) != 0 or s0 not in (0, 1):
        raise ValueError(f"s0: expected 0 or 1, got {s0!r}")
    pairs, several = _pairs(xs, ys)
    groups = _groups(_steps(pairs, int(s0)))
    system = [_inequality(g[0].form, g[0].y) for g in groups.values()]
    if not is_feasible(system):
        conflict = [group[0] for group in _smallest_conflict(groups)]
        cert = tuple((s.sequence, s.t) if several else s.t for s in conflict)
        return Solution(False, None, None, None, cert, _explain_conflict(conflict, several))
    exact = _point_with_margin(groups)
    margin = min(
        (1 if y else -1) * sum(c * p for c, p in zip((x, s, 1), exact, strict=True))
        for x, s, y in groups
    )
    params = tuple(float(v) for v in exact)
    for x, y in pairs:
        if np.asarray(run(params, np.asarray(x), s0)).tolist() != list(y):
            raise RuntimeError(f"solve: {params} do not reproduce {y} when run (a bug)")
    explanation = _explain_solution(exact, margin, groups, several)
    return Solution(True, params, exact, Fraction(margin), None, explanation)
