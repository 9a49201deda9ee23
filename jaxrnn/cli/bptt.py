"""Tour section and ``jaxrnn bptt check``: hand BPTT, the checker, and gradient flow."""

from __future__ import annotations

from jaxrnn.cli._options import SEED_MAX, OptionError, command, integer

TITLE = "Hand BPTT checked against autodiff; gradient flow through time"
ORDER = 20

DEFAULT_MISTAKE = "wrong-gate"

MISTAKES = {
    "index-shift": "f̄(t) = c̄(t) c(t+1), a t+1 written for t-1",
    "tanh-for-derivative": "c̄(t) uses tanh(c) where tanh'(c) = 1 - tanh²(c) belongs",
    "dropped-direct-term": "h̄(t) without its direct term dL/dh(t)",
    "wrong-gate": "c̄(t) carries c̄(t+1) i(t+1) where f(t+1) belongs",
}


def student_lstm_scalar(params, xs, dL_dh, mistake=None):
    """A user's BPTT of the univariate LSTM (SPEC §3) in plain Python, optionally wrong.

    Steps are 1-based; values at step 0 and step T+1 are 0. Returns h̄, c̄, ō, f̄, ī, ḡ.
    """
    import math

    w = {name: float(value) for name, value in params.items()}
    xs, dl, n = [float(v) for v in xs], [float(v) for v in dL_dh], len(xs)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    c, h = [0.0] * (n + 2), [0.0] * (n + 2)
    gate = {q: [0.0] * (n + 2) for q in "ifog"}
    for t in range(1, n + 1):
        z = {q: w[f"w_{q}x"] * xs[t - 1] + w[f"w_{q}h"] * h[t - 1] for q in "ifog"}
        for q in "ifo":
            gate[q][t] = sig(z[q])
        gate["g"][t] = math.tanh(z["g"])
        c[t] = gate["f"][t] * c[t - 1] + gate["i"][t] * gate["g"][t]
        h[t] = gate["o"][t] * math.tanh(c[t])
    i, f, o, g = (gate[q] for q in "ifog")
    slope = {
        "i": lambda t: i[t] * (1 - i[t]),
        "f": lambda t: f[t] * (1 - f[t]),
        "o": lambda t: o[t] * (1 - o[t]),
        "g": lambda t: 1 - g[t] ** 2,
    }
    bar = {q: [0.0] * (n + 2) for q in ("h", "c", "o", "f", "i", "g")}
    for t in range(n, 0, -1):
        direct = 0.0 if mistake == "dropped-direct-term" else dl[t - 1]
        bar["h"][t] = direct + sum(w[f"w_{q}h"] * bar[q][t + 1] * slope[q](t + 1) for q in "ifog")
        bar["o"][t] = bar["h"][t] * math.tanh(c[t])
        d_tanh = math.tanh(c[t]) if mistake == "tanh-for-derivative" else 1 - math.tanh(c[t]) ** 2
        carried = i[t + 1] if mistake == "wrong-gate" else f[t + 1]
        bar["c"][t] = bar["h"][t] * o[t] * d_tanh + bar["c"][t + 1] * carried
        bar["f"][t] = bar["c"][t] * (c[t + 1] if mistake == "index-shift" else c[t - 1])
        bar["i"][t], bar["g"][t] = bar["c"][t] * g[t], bar["c"][t] * i[t]
    return {q: bar[q][1 : n + 1] for q in bar}


def _scalar_problem(n_steps: int, loss_until: int, seed: int = 0):
    """Scalar LSTM weights, inputs, and dL/dh nonzero at steps 1..loss_until only."""
    import jax
    import jax.numpy as jnp

    from jaxrnn.cells import lstm_scalar

    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = lstm_scalar.init(k1, scale=1.5, dtype=jnp.float64)
    xs = jax.random.normal(k2, (n_steps,), jnp.float64)
    dL_dh = jax.random.normal(k3, (n_steps,), jnp.float64) * (jnp.arange(n_steps) < loss_until)
    return params, xs, dL_dh


def _vector_problem(model: str, n_steps: int, seed: int = 0):
    import jax
    import jax.numpy as jnp

    from jaxrnn.cells import elman, lstm

    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    cell = {"lstm": lstm, "elman": elman}[model]
    params = cell.init(k1, 3, 4, dtype=jnp.float64)
    xs = jax.random.normal(k2, (n_steps, 2, 3), jnp.float64)
    dL_dh = jax.random.normal(k3, (n_steps, 2, 4), jnp.float64)
    return params, xs, dL_dh


def run_check(args) -> int:
    import jax

    from jaxrnn import bptt

    if args.loss_until > args.steps:
        raise OptionError(
            "--loss-until", f"an integer from 1 to --steps ({args.steps})", args.loss_until
        )
    default = " (the default; choose another with --mistake)" * (args.mistake == DEFAULT_MISTAKE)
    with jax.enable_x64(True):  # float64 for the comparison, in this command only
        problem = _scalar_problem(args.steps, args.loss_until, args.seed)
        print(
            f"A hand BPTT of the univariate LSTM (SPEC §3) with the planted mistake "
            f"{args.mistake}{default}:\n  {MISTAKES[args.mistake]}.\n"
            f"Loss at steps 1..{args.loss_until} of {args.steps}.\n"
        )
        report = bptt.check(
            lambda p, x, d: student_lstm_scalar(p, x, d, mistake=args.mistake),
            "lstm_scalar",
            *problem,
        )
        print(report)
        print("\nThe same code without the mistake:")
        correct = bptt.check(student_lstm_scalar, "lstm_scalar", *problem)
        print(f"  ok = {correct.ok}, blame = {correct.blame}")
        print("\nThe library's own hand BPTT (jaxrnn.bptt) against autodiff:")
        mine = {"lstm_scalar": bptt.check(bptt.lstm_scalar, "lstm_scalar", *problem)}
        for model in ("lstm", "elman"):
            args_model = _vector_problem(model, args.steps, args.seed)
            mine[model] = bptt.check(getattr(bptt, model), model, *args_model)
        for model, rep in mine.items():
            worst = max(q.max_rel_error for q in rep.quantities.values())
            print(
                f"  {model:12s} ok = {rep.ok}: {len(rep.quantities)} quantities, "
                f"max rel error {worst:.1e}"
            )
    caught = not report.ok and all(r.ok for r in mine.values()) and correct.ok
    return 0 if caught else 1


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("bptt", help="hand BPTT and the checker of BPTT formulas")
    sub = parser.add_subparsers(dest="bptt_command", metavar="COMMAND", required=True)
    check = command(
        sub,
        "check",
        run_check,
        help="catch a planted mistake in a hand BPTT, and check the library's own formulas",
    )
    check.add_argument(
        "--mistake",
        choices=sorted(MISTAKES),
        default=DEFAULT_MISTAKE,
        metavar="NAME",
        help="the mistake planted in the hand BPTT, one of "
        + "; ".join(f"{name} ({text})" for name, text in MISTAKES.items()),
    )
    check.add_argument("--steps", type=integer(1), default=8, help="sequence length T")
    check.add_argument(
        "--loss-until",
        type=integer(1),
        default=5,
        help="the loss sees steps 1..this one (dL/dh = 0 after it); at most --steps",
    )
    check.add_argument(
        "--seed", type=integer(0, SEED_MAX), default=0, help="seed of weights and inputs"
    )


def tour():
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxrnn import bptt, dynamics
    from jaxrnn.cells import elman, lstm

    with jax.enable_x64(True):  # float64 for the checks, in this section only
        problem = _scalar_problem(8, 5)
        report = bptt.check(bptt.lstm_scalar, "lstm_scalar", *problem)
        worst = max(q.max_rel_error for q in report.quantities.values())
        yield (
            f"univariate LSTM: hand BPTT (h̄, c̄, ō, f̄, ī, ḡ and 8 weights) vs autodiff, "
            f"float64: max rel error {worst:.1e}, ok = {report.ok}"
        )
        for mistake in ("wrong-gate", "index-shift"):
            found = bptt.check(
                lambda p, x, d, m=mistake: student_lstm_scalar(p, x, d, mistake=m),
                "lstm_scalar",
                *problem,
            )
            yield f"planted mistake [{MISTAKES[mistake]}] -> blamed on {found.blame} (loss to 5)"
        params, xs, dL_dh = _vector_problem("elman", 8)
        start = time.perf_counter()
        out = bptt.elman(params, xs, dL_dh)
        auto = bptt.check(bptt.elman, "elman", params, xs, dL_dh)
        gap = float(jnp.max(jnp.abs(out["W"] - out["W_double_sum"])))
        yield (
            f"Elman dL/dW: O(T) recursion vs O(T^2) double sum differ by {gap:.1e}; "
            f"both vs autodiff ok = {auto.ok} ({time.perf_counter() - start:.1f} s)"
        )
        W = dynamics.spec_5c_matrix()
        power = dynamics.matrix_power_eig(W, 30)
        yield (
            f"SPEC 5(c): W = Q diag(0.4, 0.9) Q^-1, W^30 = Q Λ^30 Q^-1 has norm "
            f"{np.linalg.norm(power.power, 2):.4f} = 0.9^30 = {0.9**30:.4f} "
            f"(residual {power.residual:.0e})"
        )
        try:
            dynamics.matrix_power_eig(np.array([[0.9, 1.0], [0.0, 0.9]]), 30)
        except ValueError as error:
            yield f"Jordan block M = [[0.9, 1], [0, 0.9]] refused, not powered wrongly: {error}"
        for rho in (0.8, 1.2):
            q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
            sym = {
                "W": jnp.asarray(q @ np.diag(rho * np.array([1, -0.7, 0.5, 0.2])) @ q.T),
                "U": jnp.ones((4, 1)),
                "b": jnp.zeros(4),
            }
            norms = dynamics.gradient_norms(elman.apply, sym, jnp.zeros(4), jnp.zeros((30, 1)))
            yield (
                f"Elman at rest, rho = {rho}: ||dh_30/dh_0|| measured {float(norms[-1]):.3g}, "
                f"predicted rho^30 = {rho**30:.3g}"
            )
        key = jax.random.PRNGKey(0)
        params = lstm.init(key, 2, 3, dtype=jnp.float64)
        xs = jax.random.normal(key, (30, 2), jnp.float64)
        carry = lstm.init_carry((), 3, dtype=jnp.float64)
        exact = {**params, "b_f": jnp.full(3, 800.0), "b_i": jnp.full(3, -800.0)}
        (dc_dc, _), _ = dynamics.state_jacobian(lstm.apply, exact, carry, xs, 30, 0)
        yield (
            f"carousel, f = 1, i = 0: dc_30/dc_0 equals the identity exactly: "
            f"{bool(jnp.all(dc_dc == jnp.eye(3)))}"
        )
        near = {**params, "b_f": jnp.full(3, 10.0), "b_i": jnp.full(3, -10.0)}
        near["b_o"] = jnp.full(3, -10.0)
        (dc_dc, _), (_, dh_dh) = dynamics.state_jacobian(lstm.apply, near, carry, xs, 30, 0)
        yield (
            f"f ≈ 1, i ≈ o ≈ 0: c-path ||dc_30/dc_0|| = {float(jnp.linalg.norm(dc_dc, 2)):.4f}, "
            f"h-path ||dh_30/dh_0|| = {float(jnp.linalg.norm(dh_dh, 2)):.1e}"
        )
