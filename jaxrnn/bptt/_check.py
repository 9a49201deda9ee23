"""The checker: anyone's hand BPTT against autodiff, per quantity and per time step.

``check(hand, model, params, xs, dL_dh)`` runs ``hand`` and the autodiff reference of
:mod:`jaxrnn.bptt.reference` (never the library's own hand formulas) and reports, for every
name ``hand`` returns, the largest absolute and relative error and the first time step the
backward pass gets wrong. Since the backward pass runs from step T down to 1 and an error
spreads from where it is made to the earlier steps, the value computed wrong first (the
largest step, and within it the quantity computed first) is where the mistake is:
``report.blame``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import dtype_of, is_number, is_real
from jaxrnn.bptt import _elman, _gru, _lstm, _lstm_scalar, reference

#: model name -> (autodiff reference, per-step names in the order one backward step
#: computes them, formulas by name, keyword options). Every name not in the per-step names
#: is a parameter gradient, without a time axis.
MODELS = {
    "lstm_scalar": (
        reference.lstm_scalar,
        _lstm_scalar.STEP_NAMES,
        _lstm_scalar.FORMULAS,
        (),
    ),
    "lstm": (reference.lstm, _lstm.STEP_NAMES, _lstm.FORMULAS, ()),
    "elman": (
        reference.elman,
        _elman.STEP_NAMES,
        _elman.FORMULAS,
        ("activation", "double_sum"),
    ),
    "gru": (reference.gru, _gru.STEP_NAMES, _gru.FORMULAS, ()),
}

#: Default relative tolerance per dtype.
DEFAULT_RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4}


@dataclass(frozen=True)
class Quantity:
    """The comparison of one returned name with autodiff.

    An entry differs when |hand - ref| > atol + rtol |ref|, with atol = rtol max|ref| (the
    scale of that quantity). ``max_rel_error`` is max |hand - ref| / (|ref| + atol).
    ``wrong_steps`` are the 1-based steps with a differing entry (empty for parameter
    gradients and for agreement); ``first_step`` is the first of them the backward pass
    computes, i.e. the largest, or ``None``.
    """

    name: str
    per_step: bool
    max_abs_error: float
    max_rel_error: float
    ok: bool
    wrong_steps: tuple[int, ...] = ()

    @property
    def first_step(self) -> int | None:
        return max(self.wrong_steps) if self.wrong_steps else None


@dataclass(frozen=True)
class Report:
    """The result of :func:`check`: one :class:`Quantity` per returned name."""

    model: str
    n_steps: int
    dtype: str
    rtol: float
    quantities: dict
    step_order: tuple
    formulas: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(q.ok for q in self.quantities.values())

    def __getitem__(self, name: str) -> Quantity:
        return self.quantities[name]

    @property
    def blame(self) -> tuple[str, int | None] | None:
        """(name, step) of the first value the backward pass gets wrong; ``None`` if ok.

        The largest first wrong step wins; at equal steps, the quantity computed first in
        one backward step. Parameter gradients (step ``None``) are blamed only when every
        per-step quantity agrees.
        """
        wrong = [q for q in self.quantities.values() if not q.ok]
        if not wrong:
            return None
        stepped = [q for q in wrong if q.first_step is not None]
        if stepped:
            worst = max(stepped, key=lambda q: (q.first_step, -self.step_order.index(q.name)))
            return worst.name, worst.first_step
        return wrong[0].name, None

    def __str__(self) -> str:
        n_wrong = sum(not q.ok for q in self.quantities.values())
        lines = [
            f"BPTT check of {self.model!r} against autodiff (T = {self.n_steps}, {self.dtype}, "
            f"rtol {self.rtol:g}): {n_wrong} of {len(self.quantities)} quantities differ",
            f"  {'name':14s}{'max abs err':>13s}{'max rel err':>13s}  against autodiff",
        ]
        for q in self.quantities.values():
            if q.ok:
                verdict = "agrees"
            elif q.per_step:
                verdict = (
                    f"differs at {len(q.wrong_steps)} of {self.n_steps} steps "
                    f"(first: step {q.first_step})"
                )
            else:
                verdict = "differs (a parameter gradient, no steps)"
            lines.append(f"  {q.name:14s}{q.max_abs_error:13.2e}{q.max_rel_error:13.2e}  {verdict}")
        if any(q.per_step and not q.ok for q in self.quantities.values()):
            lines.append(
                "  (first: the first wrong step the backward pass reaches; it runs from "
                f"t = {self.n_steps} down to t = 1)"
            )
        blame = self.blame
        if blame is None:
            lines.append("all agree: the formulas match autodiff")
            return "\n".join(lines)
        name, step = blame
        template = self.formulas.get(name)
        if step is None:
            lines.append(f"blame: {name!r}, a parameter gradient; every per-step adjoint agrees.")
            if template is not None:
                lines.append(f"Check this formula:\n    {template}")
            return "\n".join(lines)
        lines.append(
            f"blame: {name!r} at step {step}, the first value the backward pass "
            f"(t = {self.n_steps}..1) gets wrong;\n"
            f"every value you return that it computes before this one agrees."
        )
        if template is not None:
            at_last = " (every step-T+1 term is 0)" if step == self.n_steps else ""
            lines.append(
                f"Check this formula at t = {step}{at_last}:\n"
                f"    {_render(template, None)}\n    {_render(template, step)}"
            )
        lines.append(f"Errors at steps before {step} and in other names may follow from it.")
        return "\n".join(lines)


def _render(template: str, step: int | None) -> str:
    """A formula with its step marks [t], [t+1], [t-1] written out, generally or at ``step``.

    ``"c̄([t]) = ... c̄([t+1])"`` -> ``"c̄(t) = ... c̄(t+1)"`` or ``"c̄(4) = ... c̄(5)"``;
    a subscript ``_[t+1]`` becomes ``_{t+1}`` in the general form.
    """

    def write(match):
        underscore, sign = match.group(1), match.group(2) or ""
        if step is not None:
            return f"{underscore}{step + {'': 0, '+1': 1, '-1': -1}[sign]}"
        return f"_{{t{sign}}}" if underscore and sign else f"{underscore}t{sign}"

    return re.sub(r"(_?)\[t([+-]1)?\]", write, template)


def _compare(name, got, ref, rtol, per_step) -> Quantity:
    got, ref = np.asarray(got, dtype=ref.dtype), np.asarray(ref)
    diff = np.abs(got - ref)
    atol = rtol * max(float(np.max(np.abs(ref), initial=0.0)), np.finfo(ref.dtype).tiny)
    bad = ~(diff <= atol + rtol * np.abs(ref))  # NaN counts as bad
    rel = diff / (np.abs(ref) + atol)
    steps = ()
    if per_step:
        bad_step = bad.reshape(bad.shape[0], -1).any(axis=1)
        steps = tuple(int(t) + 1 for t in np.flatnonzero(bad_step))
    return Quantity(
        name=name,
        per_step=per_step,
        max_abs_error=float(np.max(diff, initial=0.0)) if not np.isnan(diff).any() else np.nan,
        max_rel_error=float(np.max(rel, initial=0.0)) if not np.isnan(rel).any() else np.nan,
        ok=not bool(bad.any()),
        wrong_steps=steps,
    )


def check(hand, model: str, params, xs, dL_dh, *, rtol: float | None = None, **options):
    """Compare a hand BPTT with autodiff, per returned name and per time step.

    Args:
      hand: ``hand(params, xs, dL_dh, **options) -> dict``, the signature of the library's
        ``jaxrnn.bptt.<model>``, returning some or all of its names with the same shapes
        and meanings (per-step entries with step t at index t-1).
      model: ``"lstm_scalar"``, ``"lstm"``, ``"elman"`` or ``"gru"``.
      params, xs, dL_dh: as for ``jaxrnn.bptt.<model>``.
      rtol: relative tolerance; default 1e-9 in float64, 1e-4 in float32.
      options: passed to both; the Elman RNN takes ``activation`` and ``double_sum``.

    Returns:
      A :class:`Report`: ``report.ok``, ``report[name]`` (max errors, ``first_step``,
      ``ok``), ``report.blame`` and a readable ``str(report)``.

    Raises:
      ValueError: an unknown model or option, a bad ``rtol``, a non-callable ``hand``, a
        result that is not a dict, unknown names, wrong shapes or non-real values (naming
        them).
    """
    if not isinstance(model, str) or model not in MODELS:
        raise ValueError(f"model: expected one of {sorted(MODELS)}, got {model!r}")
    if not callable(hand):
        raise ValueError(f"hand: expected a function (params, xs, dL_dh) -> dict, got {hand!r}")
    reference_fn, step_names, formulas, known_options = MODELS[model]
    unknown = sorted(set(options) - set(known_options))
    if unknown:
        raise ValueError(
            f"options: {model!r} takes {list(known_options) or 'no options'}, got {unknown}"
        )
    if rtol is not None and not (is_number(rtol) and 0 < rtol < 1):
        raise ValueError(f"rtol: expected a number in (0, 1), got {rtol!r}")
    expected = reference_fn(params, xs, dL_dh, **options)
    got = hand(params, xs, dL_dh, **options)
    if not isinstance(got, Mapping) or not got:
        raise ValueError(
            f"hand: expected to return a non-empty dict of name -> array, got "
            f"{type(got).__name__} {got!r:.80}"
        )
    unknown = sorted(str(name) for name in got if name not in expected)
    if unknown:
        raise ValueError(
            f"hand: returned unknown names {unknown}; the names of {model!r} are {sorted(expected)}"
        )
    for name, value in got.items():
        try:
            shape = np.shape(value)
        except ValueError:  # a ragged nested list
            shape = "ragged"
        if shape != expected[name].shape:
            raise ValueError(
                f"hand: returned {name!r} of shape {shape}, expected {expected[name].shape}"
            )
        if not is_real(dtype_of(value)):
            raise ValueError(f"hand: returned {name!r} of dtype {dtype_of(value)}, expected reals")
    dtype = np.dtype(expected[next(iter(got))].dtype)
    if rtol is None:
        rtol = DEFAULT_RTOL.get(dtype, 1e-4)
    order = [name for name in step_names if name in got]
    order += [name for name in expected if name in got and name not in step_names]
    quantities = {
        name: _compare(name, got[name], np.asarray(expected[name]), rtol, name in step_names)
        for name in order
    }
    return Report(
        model=model,
        n_steps=int(jnp.shape(xs)[0]),
        dtype=str(dtype),
        rtol=float(rtol),
        quantities=quantities,
        step_order=tuple(step_names),
        formulas=dict(formulas),
    )
