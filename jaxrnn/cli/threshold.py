"""Tour section and ``jaxrnn adder`` / ``jaxrnn step-rnn``: threshold networks (SPEC §1, §2)."""

from __future__ import annotations

import argparse
import math
import re
import time

from jaxrnn.cli._options import SEED_MAX, OptionError, command, integer, number

TITLE = "Threshold networks: a binary adder proved and learned; an exact step-RNN designer"
ORDER = 10

_ENTRY = re.compile(r"^\s*(\w+)\s*\[\s*(\d+)\s*(?:,\s*(\d+)\s*)?\]\s*=\s*(.+)$")


def _bits(text: str) -> list[int]:
    """``"0,0,1"`` or ``"001"`` -> [0, 0, 1]."""
    parts = [p.strip() for p in text.split(",")] if "," in text else list(text.strip())
    if not parts or any(p not in ("0", "1") for p in parts):
        raise argparse.ArgumentTypeError(f"expected bits such as 0,0,1 or 001, got {text!r}")
    return [int(p) for p in parts]


def _weights(text: str) -> list[float]:
    """``"2,2,-1"`` -> [2.0, 2.0, -1.0]: the three weights w1, w2, b."""
    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(
            f"expected three numbers w1,w2,b such as 2,2,-1, got {text!r}"
        )
    return values


def _set_entries(params: dict, assignments: list[str]) -> dict:
    """Apply ``NAME[i,j]=VALUE`` (or ``NAME[i]=VALUE``) edits to adder weights."""
    params = dict(params)
    for text in assignments:
        match = _ENTRY.match(text)
        if not match:
            raise OptionError("--set", "NAME[i,j]=VALUE such as W[1,1]=0", repr(text))
        name, i, j, value = match.groups()
        if name not in params:
            raise OptionError("--set", f"one of the weights {', '.join(params)}", repr(name))
        index = (int(i),) if j is None else (int(i), int(j))
        shape = params[name].shape
        if len(index) != len(shape) or any(k >= n for k, n in zip(index, shape, strict=True)):
            raise OptionError(
                "--set", f"an index into {name} of shape {shape}", f"index {list(index)}"
            )
        try:
            params[name] = params[name].at[index].set(float(value))
        except ValueError:
            raise OptionError("--set", "a number after '='", repr(value.strip())) from None
    return params


def _print_params(params) -> None:
    import numpy as np

    for name, value in params.items():
        rows = np.atleast_2d(np.asarray(value))
        text = "; ".join(" ".join(f"{v:g}" for v in row) for row in rows)
        print(f"  {name:3s} = [{text}]")


def _verify_timed(params, n_bits: int):
    """verify, and the time of a second (compiled) call."""
    from jaxrnn import adder

    start = time.perf_counter()
    result = adder.verify(params, n_bits)
    first = time.perf_counter() - start
    start = time.perf_counter()
    adder.verify(params, n_bits)
    return result, first, time.perf_counter() - start


def adder_verify(args) -> int:
    from jaxrnn import adder

    params = _set_entries(adder.hand_params(), args.set or [])
    if args.set:
        print(f"hand-set adder with {', '.join(args.set)}:")
        _print_params(params)
    result, first, compiled = _verify_timed(params, args.bits)
    print(result)
    print(f"time: {first:.2f} s with compilation, {compiled * 1e3:.1f} ms compiled")
    if result.counterexample is not None:
        a, b, _, _ = result.counterexample
        steps = adder.trace(params, a, b, args.bits)
        print(f"step by step for {a} + {b} (bits LSB first):")
        _print_trace(steps)
    return 0 if result.ok else 1


def _print_trace(steps) -> None:
    print("  t  a b | hidden | y")
    for t, (x, h, y) in enumerate(zip(steps["x"], steps["h"], steps["y"], strict=True)):
        print(f"  {t:<2d} {x[0]} {x[1]} | {' '.join(str(v) for v in h):6s} | {y}")
    print(f"  sum = {steps['sum']}")


def adder_add(args) -> int:
    from jaxrnn import adder

    top = 2**args.bits - 1
    bad = [(name, value) for name, value in (("a", args.a), ("b", args.b)) if not 0 <= value <= top]
    if bad:
        raise OptionError(
            tuple(name for name, _ in bad),
            f"{'integers' if len(bad) > 1 else 'an integer'} from 0 to 2^{args.bits} - 1 = "
            f"{top} (--bits {args.bits})",
            " and ".join(str(value) for _, value in bad),
        )
    steps = adder.trace(adder.hand_params(), args.a, args.b, args.bits)
    print(f"{args.a} + {args.b} with the hand-set adder, {args.bits} bits:")
    _print_trace(steps)
    return 0


def adder_train(args) -> int:
    import jax

    from jaxrnn import adder

    start = time.perf_counter()
    result = adder.train(
        jax.random.PRNGKey(args.key),
        n_bits=args.bits,
        hidden=args.hidden,
        steps=args.steps,
        learning_rate=args.learning_rate,
        verify_bits=args.verify_bits,
    )
    print(
        f"trained key {args.key}, H = {args.hidden}, {args.steps} steps on {args.bits}-bit "
        f"pairs in {time.perf_counter() - start:.1f} s; surrogate loss "
        f"{result.losses[0]:.3f} -> {result.losses[-1]:.2e}"
    )
    print(f"hardened to the step function: {result.verification}")
    _print_params(result.params)
    return 0 if result.ok else 1


def step_rnn_solve(args) -> int:
    from jaxrnn import step_rnn

    if len(args.x) != len(args.y):
        raise OptionError("--y", f"as many --y as --x ({len(args.x)})", len(args.y))
    for k, (x, y) in enumerate(zip(args.x, args.y, strict=True)):
        if len(x) != len(y):
            which = f" (sequence {k + 1})" if len(args.x) > 1 else ""
            raise OptionError("--y", f"{len(x)} bits, as many as --x{which}", len(y))
    xs, ys = (args.x[0], args.y[0]) if len(args.x) == 1 else (args.x, args.y)
    print(step_rnn.solve(xs, ys, s0=args.s0).explanation)
    return 0


def step_rnn_run(args) -> int:
    import numpy as np

    from jaxrnn import step_rnn

    ys = step_rnn.run(tuple(args.params), np.asarray(args.x), s0=args.s0)
    print("y = " + ",".join(str(int(v)) for v in np.asarray(ys)))
    return 0


def add_commands(subparsers) -> None:
    from jaxrnn.adder import DOCUMENTED_KEY, MAX_ADD_BITS, MAX_VERIFY_BITS

    group = subparsers.add_parser("adder", help="the threshold-RNN binary adder (SPEC §1)")
    sub = group.add_subparsers(dest="adder_command", metavar="ACTION", required=True)
    verify = command(
        sub, "verify", adder_verify, help="check the adder on every pair of n-bit numbers"
    )
    verify.add_argument(
        "--bits", type=integer(1, MAX_VERIFY_BITS), default=8, help="bits of each addend"
    )
    verify.add_argument(
        "--set",
        action="append",
        metavar="NAME[i,j]=VALUE",
        help="change one weight of the hand-set adder, e.g. W[1,1]=0; repeatable "
        "(default: none changed)",
    )
    add = command(sub, "add", adder_add, help="add two numbers, showing the hidden units per step")
    add.add_argument("a", type=int, help="first addend, from 0 to 2^bits - 1")
    add.add_argument("b", type=int, help="second addend, from 0 to 2^bits - 1")
    add.add_argument("--bits", type=integer(1, MAX_ADD_BITS), default=8, help="bits of each addend")
    train = command(sub, "train", adder_train, help="learn an adder, harden it and verify it")
    train.add_argument(
        "--key",
        type=integer(0, SEED_MAX),
        default=DOCUMENTED_KEY,
        help="seed of jax.random.PRNGKey (initial weights and data)",
    )
    train.add_argument(
        "--bits", type=integer(1, MAX_ADD_BITS), default=8, help="bits of the training addends"
    )
    train.add_argument("--hidden", type=integer(1), default=3, help="hidden units H")
    train.add_argument("--steps", type=integer(1), default=2000, help="Adam steps")
    train.add_argument(
        "--learning-rate", type=number(0, open_low=True), default=0.03, help="Adam step size"
    )
    train.add_argument(
        "--verify-bits",
        type=integer(1, MAX_VERIFY_BITS),
        default=8,
        help="the hardened adder is checked on every pair of numbers of this many bits",
    )

    step = subparsers.add_parser("step-rnn", help="the scalar step RNN (SPEC §2)")
    sub = step.add_subparsers(dest="step_rnn_command", metavar="ACTION", required=True)
    solve = command(
        sub,
        "solve",
        step_rnn_solve,
        help="find (w1, w2, b) mapping x to y, or prove there are none",
    )
    solve.add_argument(
        "--x",
        type=_bits,
        action="append",
        required=True,
        help="input bits, e.g. 0,0,1 or 001; repeat for several sequences",
    )
    solve.add_argument(
        "--y",
        type=_bits,
        action="append",
        required=True,
        help="wanted output bits, one --y per --x, as long as it",
    )
    solve.add_argument("--s0", type=integer(0, 1), default=0, help="initial state s(0)")
    run = command(sub, "run", step_rnn_run, help="outputs of the step RNN for given weights")
    run.add_argument(
        "--params", type=_weights, required=True, help="the weights w1,w2,b, e.g. 2,2,-1"
    )
    run.add_argument("--x", type=_bits, required=True, help="input bits, e.g. 0,0,1 or 001")
    run.add_argument("--s0", type=integer(0, 1), default=0, help="initial state s(0)")


def tour():
    import jax.numpy as jnp

    from jaxrnn import adder, step_rnn

    params = adder.hand_params()
    sums = adder.add(params, jnp.array([200, 255]), jnp.array([100, 255]), 8)
    yield f"hand-set 2-3-1 adder, bits LSB first: 200 + 100 = {sums[0]}, 255 + 255 = {sums[1]}"
    result, first, compiled = _verify_timed(params, 8)
    yield (
        f"exhaustive proof: {result.checked} pairs of 8-bit numbers, {result.failures} wrong, "
        f"one vectorised jit call ({compiled * 1e3:.0f} ms compiled, {first:.1f} s with "
        "compilation)"
    )
    broken = dict(params, W=params["W"].at[1, 1].set(0.0))
    a, b, got, want = adder.verify(broken, 8).counterexample
    yield (
        f"one wrong weight, W[1,1] = 0 (the carry unit forgets the carry): counterexample "
        f"{a} + {b} = {want}, the network says {got}"
    )
    answer = step_rnn.solve([0, 0, 0, 1, 0, 1, 0], [0, 0, 0, 1, 1, 1, 1])
    w1, w2, b = answer.exact_params
    yield (
        f"step RNN (a): x 0001010 -> y 0001111 with w1 = {w1}, w2 = {w2}, b = {b} "
        f"(exact, margin {answer.margin}; checked by running it)"
    )
    answer = step_rnn.solve([0, 0, 0, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0, 1, 1])
    lines = [line.strip() for line in answer.explanation.splitlines()]
    yield f"step RNN (b): x 00010010 -> y 11100011. {lines[0]}"
    for line in lines[1:]:
        yield f"  {line}"
    yield (
        f"a learned adder: `jaxrnn adder train --key {adder.DOCUMENTED_KEY}` (sigmoid surrogate "
        "with rising temperature, hardened and verified on all 65536 pairs)"
    )
