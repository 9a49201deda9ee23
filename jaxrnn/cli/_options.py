"""What every subcommand shares: its parser, option types that check values, one error form.

Option values are checked by the command line, so that a bad one is reported by the
option's name, never by the name of a library argument. Every error reads like argparse's
own, after the command's usage line on stderr, with exit status 2::

    jaxrnn reversible demo: error: argument --steps: expected a positive integer, got 0

Values are checked as they are parsed (:func:`integer`, :func:`number`); checks that involve
several options raise :class:`OptionError` from the command, which :func:`jaxrnn.cli.main`
reports in that same form (as it does any other ``ValueError``).
"""

from __future__ import annotations

import argparse
import math


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to each option's help, except where there is no value to show
    (a default of None, or a flag that is off): that help says in words what happens."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def command(subparsers, name: str, func, *, help: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand ``name`` running ``func(args) -> exit status``, its defaults in its help."""
    kwargs.setdefault("description", help)
    parser = subparsers.add_parser(name, help=help, formatter_class=HelpFormatter, **kwargs)
    parser.set_defaults(func=func, command_parser=parser)
    return parser


class OptionError(ValueError):
    """A bad option value found by the command: ``argument OPTION: expected ..., got ...``
    (``arguments A and B: ...`` for a tuple of options wrong together)."""

    def __init__(self, option: str | tuple[str, ...], expected: str, got) -> None:
        if isinstance(option, tuple):
            option = "s " + " and ".join(option) if len(option) > 1 else " " + option[0]
        else:
            option = " " + option
        super().__init__(f"argument{option}: expected {expected}, got {got}")


def describe_integer(minimum: int | None = None, maximum: int | None = None) -> str:
    """``"a positive integer"``, ``"an integer from 1 to 12"``, ``"0 or 1"``, ..."""
    if maximum is None:
        return {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
    if minimum is None:
        return f"an integer <= {maximum}"
    if maximum == minimum + 1:
        return f"{minimum} or {maximum}"
    return f"an integer from {minimum} to {maximum}"


SEED_MAX = 2**31 - 1 - 1_000_003  # seeds of jax.random keys; train adds 1_000_003 for its test data


def integer(minimum: int | None = None, maximum: int | None = None):
    """An argparse ``type``: an integer in [minimum, maximum] (either bound optional)."""
    expected = describe_integer(minimum, maximum)

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return convert


def number(low: float | None = None, high: float | None = None, *, open_low=False, open_high=False):
    """An argparse ``type``: a finite number between ``low`` and ``high`` (bounds optional,
    included unless ``open_low`` / ``open_high``)."""
    if low == 0 and open_low and high is None:
        expected = "a positive number"
    elif high is None or low is None:
        sign = (">" if open_low else ">=") if high is None else ("<" if open_high else "<=")
        bound = low if high is None else high
        expected = "a number" if bound is None else f"a number {sign} {bound:g}"
    else:
        left, right = "(" if open_low else "[", ")" if open_high else "]"
        expected = f"a number in {left}{low:g}, {high:g}{right}"

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        too_low = low is not None and (value <= low if open_low else value < low)
        too_high = high is not None and (value >= high if open_high else value > high)
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return convert
