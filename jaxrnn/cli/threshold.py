"""Tour section and ``jaxrnn adder`` / ``jaxrnn step-rnn``: threshold networks (SPEC §1, §2)."""

from __future__ import annotations

import argparse
import re
import time

TITLE = "Threshold networks: a binary adder proved and learned; an exact step-RNN designer"
ORDER = 10

_ENTRY = re.compile(r"^\s*(\w+)\s*\[\s*(\d+)\s*(?:,\s*(\d+)\s*)?\]\s*=\s*(.+)$")


def _bits(text: str) -> list[int]:
    """``"0,0,1"`` or ``"001"`` -> [0, 0, 1] (the solver itself checks that they are 0/1)."""
    parts = text.split(",") if "," in text else list(text.strip())
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected bits such as 0,0,1 or 001, got {text!r}"
        ) from None


def _numbers(text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers such as 2,2,-1, got {text!r}") from None


def _set_entries(params: dict, assignments: list[str]) -> dict:
    """Apply ``NAME[i,j]=VALUE`` (or ``NAME[i]=VALUE``) edits to adder weights."""
    params = dict(params)
    for text in assignments:
        match = _ENTRY.match(text)
        if not match:
            raise ValueError(f"--set: expected NAME[i,j]=VALUE such as W[1,1]=0, got {text!r}")
        name, i, j, value = match.groups()
        if name not in params:
            raise ValueError(f"--set: no weight {name!r}; the weights are {sorted(params)}")
        index = (int(i),) if j is None else (int(i), int(j))
        shape = params[name].shape
        if len(index) != len(shape) or any(k >= n for k, n in zip(index, shape, strict=True)):
            raise ValueError(f"--set: {name} has shape {shape}, got index {list(index)}")
        params[name] = params[name].at[index].set(float(value))
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


def _reporting_errors(command: str, body):
    """Run ``body(args)``; a ValueError (bad input) exits with its message, no traceback."""

    def run(args) -> int:
        try:
            return body(args)
        except ValueError as error:
            raise SystemExit(f"{command}: {error}") from None

    return run


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
        raise ValueError(f"give as many --y as --x, got {len(args.x)} and {len(args.y)}")
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
    adder = subparsers.add_parser("adder", help="the threshold-RNN binary adder (SPEC §1)")
    sub = adder.add_subparsers(dest="adder_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="check the adder on every pair of n-bit numbers")
    verify.add_argument("--bits", type=int, default=8)
    verify.add_argument(
        "--set",
        action="append",
        metavar="NAME[i,j]=VALUE",
        help="change one weight of the hand-set adder, e.g. W[1,1]=0 (repeatable)",
    )
    verify.set_defaults(func=_reporting_errors("adder verify", adder_verify))
    add = sub.add_parser("add", help="add two numbers, showing the hidden units per step")
    add.add_argument("a", type=int)
    add.add_argument("b", type=int)
    add.add_argument("--bits", type=int, default=8)
    add.set_defaults(func=_reporting_errors("adder add", adder_add))
    train = sub.add_parser("train", help="learn an adder, harden it and verify it")
    train.add_argument("--key", type=int, default=3)
    train.add_argument("--bits", type=int, default=8, help="bits of the training addends")
    train.add_argument("--hidden", type=int, default=3)
    train.add_argument("--steps", type=int, default=2000)
    train.add_argument("--learning-rate", type=float, default=0.03)
    train.add_argument("--verify-bits", type=int, default=8)
    train.set_defaults(func=_reporting_errors("adder train", adder_train))

    step = subparsers.add_parser("step-rnn", help="the scalar step RNN (SPEC §2)")
    sub = step.add_subparsers(dest="step_rnn_command", metavar="ACTION", required=True)
    solve = sub.add_parser("solve", help="find (w1, w2, b) mapping x to y, or prove there are none")
    solve.add_argument("--x", type=_bits, action="append", required=True, help="e.g. 0,0,1")
    solve.add_argument("--y", type=_bits, action="append", required=True, help="e.g. 0,0,1")
    solve.add_argument("--s0", type=int, default=0)
    solve.set_defaults(func=_reporting_errors("step-rnn solve", step_rnn_solve))
    run = sub.add_parser("run", help="outputs of the step RNN for given weights")
    run.add_argument("--params", type=_numbers, required=True, help="w1,w2,b e.g. 2,2,-1")
    run.add_argument("--x", type=_bits, required=True)
    run.add_argument("--s0", type=int, default=0)
    run.set_defaults(func=_reporting_errors("step-rnn run", step_rnn_run))


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
