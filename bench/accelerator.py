"""Every parallel path against its sequential baseline on one accelerator, in one command.

    PYTHONPATH=. python bench/accelerator.py [--smoke] [--results PATH] [--budget SECONDS]
                                             [--only TABLE,...]

Tables, in the order they run, each printed row by row as it is measured (medians of
interleaved rounds after a compiling call; every contender of a row runs once per round):

- ``scan``: ``jaxrnn.scan`` with H = 1 at two lengths, per step, on the CPU and on the
  accelerator: a per-step time that grows with the length is the quadratic scan of
  jax-ml/jax#40101 (XLA:CPU, from jax 0.11.1).
- ``reversible``: a ``jaxrnn.reversible.forward`` step against an ``optax.sgd(momentum)``
  step with the same gradient.
- ``linear``: ``linear_recurrence`` (associative scan) against a ``lax.scan`` loop,
  diagonal and full transitions.
- ``deer``: DEER and quasi-DEER against ``jaxrnn.scan`` on a GRU, forward and gradient,
  with the Newton iterations and the error against the scan.
- ``mdrnn``: the wavefront (2G-1 steps) and the MD-LSTM wavefront against the *fastest* of
  the rasters of ``bench/_rasters.py`` (G² steps), forward and forward+backward, with the
  sequential steps measured from the traced programs (``mdrnn.sequential_steps``).
- ``lstm``: ``lstm_layer`` (hand BPTT) and ``jaxrnn.scan`` + autodiff against
  ``jax.experimental.rnn`` (cuDNN, GPU and float32 only), PyTorch ``nn.LSTM`` (cuDNN on a
  GPU) and flax, float32 and bfloat16.

The whole run keeps to ``--budget`` seconds (default 400: within 8 minutes with the
start-up). The tables share it by weight and pass on the time they do not use; a row or a
contender whose estimated cost (its compilation and three calls, scaled from the last
size) does not fit in what is left is printed as skipped with the reason, and so is a
raster much slower than the fastest at the last size; a size that fails (out of memory
included) is printed as failed and the run goes on. Writes the section "accelerator" of
bench/RESULTS.md when run on an accelerator, or of ``--results PATH``. ``--smoke`` runs
every table at tiny sizes on the CPU, without a time limit, and writes nothing unless
``--results`` is given. A rerun on the same machine can reuse the compilations:
``JAX_COMPILATION_CACHE_DIR=/tmp/jax-cache``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

# On a GPU, JAX takes memory as it needs it (up to its default share) and leaves the rest
# to PyTorch, instead of reserving its whole share at the start.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, str(Path(__file__).parent))

import _results  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _rasters import RASTERS  # noqa: E402
from _results import interleaved_times, machine_line, markdown_table, write_section  # noqa: E402

import jaxrnn  # noqa: E402
from jaxrnn import mdrnn  # noqa: E402
from jaxrnn.cells import elman, gru, lstm  # noqa: E402
from jaxrnn.parallel import deer, linear_recurrence  # noqa: E402


class Sizes(NamedTuple):
    grids: tuple  # G of the G x G grids
    grid_batches: tuple
    grid_widths: tuple  # D = H of the grid cells
    deer_lengths: tuple
    deer_hidden: tuple
    deer_batch: int
    linear_lengths: tuple
    linear_hidden: int
    lstm_shapes: tuple  # (T, B, H), D = H
    mlp: tuple  # layer sizes of the reversible benchmark's MLP
    mlp_batches: tuple
    scan_lengths: tuple  # two lengths, for jax-ml/jax#40101
    row_seconds: float  # aim of the timed rounds of one row
    max_rounds: int


FULL = Sizes(
    grids=(64, 128, 256, 512),
    grid_batches=(1, 16),
    grid_widths=(32, 128),
    deer_lengths=(10**3, 10**4, 10**5, 10**6),
    deer_hidden=(16, 64),
    deer_batch=16,
    linear_lengths=(10**3, 10**4, 10**5, 10**6),
    linear_hidden=16,
    lstm_shapes=((256, 32, 256), (2048, 32, 256), (256, 256, 256), (256, 32, 1024),
                 (2048, 256, 256), (2048, 32, 1024), (256, 256, 1024), (2048, 256, 1024)),
    mlp=(784, 1024, 256, 10),
    mlp_batches=(128, 1024),
    scan_lengths=(10**4, 10**5),
    row_seconds=2.0,
    max_rounds=15,
)  # fmt: skip
SMOKE = Sizes(
    grids=(8,),
    grid_batches=(2,),
    grid_widths=(4,),
    deer_lengths=(40,),
    deer_hidden=(4,),
    deer_batch=2,
    linear_lengths=(64,),
    linear_hidden=3,
    lstm_shapes=((6, 2, 4),),
    mlp=(6, 3),
    mlp_batches=(4,),
    scan_lengths=(10**3, 10**4),
    row_seconds=0.0,
    max_rounds=2,
)
# Shares of the time budget; the tables run in this order, the cheap ones first, and pass
# the time they do not use on to the later ones.
WEIGHTS = {"scan": 4, "reversible": 5, "linear": 10, "deer": 24, "mdrnn": 32, "lstm": 25}
GRU_IN_DIM = 16
REVERSIBLE_STEPS, LEARNING_RATE, MOMENTUM = 20, 0.01, 0.9
SLOW_RASTER = 1.5  # a raster this many times slower than the fastest is not timed again
MEMORY_SHARE = 0.9  # skip a size whose estimated bytes exceed this share of JAX's limit


# --- timing under a budget ------------------------------------------------------------------


class Clock:
    """The deadline of one table and how its rows are timed."""

    def __init__(self, seconds: float, sizes: Sizes):
        self.start = time.perf_counter()
        self.end = self.start + seconds
        self.sizes = sizes

    def left(self) -> float:
        return self.end - time.perf_counter()

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def rounds(self, seconds_per_round: float) -> int:
        """As many rounds as fit the row's aim and a third of the time left (at least 1)."""
        room = min(self.sizes.row_seconds, self.left() / 3)
        return int(np.clip(room / max(seconds_per_round, 1e-9), 1, self.sizes.max_rounds))


class Budget:
    """The run's seconds, shared between the tables by weight; unused time passes on."""

    def __init__(self, seconds: float, weights: dict):
        self.end = time.perf_counter() + seconds
        self.weights = dict(weights)

    def clock(self, table: str, sizes: Sizes) -> Clock:
        weight = self.weights.pop(table)
        share = weight / (weight + sum(self.weights.values()))
        return Clock(share * (self.end - time.perf_counter()), sizes)


class Outcome(NamedTuple):
    """Median seconds per call, or why there is none; ``value``: what the first call gave;
    ``compile_seconds``: the first call's time beyond a timed call's (compilation)."""

    seconds: float | None
    note: str = ""
    value: Any = None
    compile_seconds: float = 0.0


class Estimate(NamedTuple):
    """What one contender of a row is expected to cost: seconds per call and to compile."""

    call: float
    compile: float

    def cost(self) -> float:
        """Compiling call, sizing call and one round at least."""
        return self.compile + 3 * self.call


def failure_note(error: Exception) -> str:
    text = str(error)
    if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
        return "out of memory"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"failed: {type(error).__name__}: {first[:80]}"


def measure(calls: dict, clock: Clock, estimates: dict | None = None) -> dict[str, Outcome]:
    """Time blocking zero-argument ``calls`` in interleaved rounds, within ``clock``.

    Each call runs once to compile (its result is kept in the outcome) and once more to
    size the rounds. Skipped: every call, when the estimated costs of the row
    (``estimates[name]``, an :class:`Estimate`) exceed the time left; a call whose own cost
    does; every call once the time is spent. A call that raises is recorded as failed.
    """
    estimates = estimates or {}
    needed = sum(estimates[name].cost() for name in calls if name in estimates)
    if clock.left() <= 0:
        return {name: Outcome(None, "skipped: table's time spent") for name in calls}
    if needed > clock.left():
        note = f"skipped: ~{needed:.0f} s needed, {clock.left():.0f} s left"
        return {name: Outcome(None, note) for name in calls}
    outcomes, ready, first_times = {}, {}, {}
    for name, call in calls.items():
        estimate = estimates.get(name)
        if clock.left() <= 0:
            outcomes[name] = Outcome(None, "skipped: table's time spent")
            continue
        if estimate is not None and estimate.cost() > clock.left():
            outcomes[name] = Outcome(None, f"skipped: ~{estimate.cost():.0f} s needed")
            continue
        try:
            start = time.perf_counter()
            value = call()
            compiling = time.perf_counter() - start
            start = time.perf_counter()
            call()
            first_times[name] = time.perf_counter() - start
            ready[name] = call
            outcomes[name] = Outcome(None, "", value, max(compiling - first_times[name], 0.0))
        except Exception as error:  # one size failing must not end the run
            outcomes[name] = Outcome(None, failure_note(error))
            print(f"  {name}: {outcomes[name].note}", file=sys.stderr, flush=True)
    if ready:
        rounds = clock.rounds(sum(first_times.values()))
        try:
            times = interleaved_times(ready, rounds=rounds, warmup=0)
        except Exception as error:
            note = failure_note(error)
            return {
                n: outcomes[n]._replace(note=note) if n in ready else outcomes[n] for n in calls
            }
        for name, seconds in times.items():
            outcomes[name] = outcomes[name]._replace(seconds=statistics.median(seconds))
    return outcomes


class Guesses:
    """Estimates from the last measured size: time per call scaled linearly in size, the
    compilation time as it was."""

    def __init__(self):
        self.last = {}

    def record(self, key, size: float, outcomes: dict[str, Outcome]):
        for name, outcome in outcomes.items():
            if outcome.seconds is not None:
                self.last[key, name] = (size, outcome)

    def guess(self, key, size: float, names) -> dict[str, Estimate]:
        known = {name: self.last[key, name] for name in names if (key, name) in self.last}
        return {
            name: Estimate(outcome.seconds * size / last, outcome.compile_seconds)
            for name, (last, outcome) in known.items()
        }


def blocking(fn, *args):
    """``fn(*args)`` as a call that waits for its result; NumPy arguments are moved to the
    device once, here, so that no call times a transfer."""
    args = jax.tree.map(lambda a: jax.device_put(a) if isinstance(a, np.ndarray) else a, args)
    return lambda: jax.block_until_ready(fn(*args))


def sum_of(tree):
    return sum(jnp.sum(leaf, dtype=jnp.float32) for leaf in jax.tree.leaves(tree))


def gradient(fn, argnums=(0, 1)):
    """The jitted gradient of sum(fn(*args)) (a forward and a backward pass)."""
    return jax.jit(jax.grad(lambda *args: sum_of(fn(*args)), argnums=argnums))


def ms(outcome: Outcome) -> str:
    return outcome.note if outcome.seconds is None else f"{outcome.seconds * 1e3:.3g}"


def ratio(numerator: Outcome | None, denominator: Outcome | None) -> str:
    if numerator is None or denominator is None:
        return "–"
    if numerator.seconds is None or denominator.seconds is None:
        return "–"
    return f"{numerator.seconds / denominator.seconds:.3g}×"


def max_abs(a, b=None) -> float:
    """max |a - b| over the leaves of two pytrees (max |a| without b), in NumPy."""
    b = jax.tree.map(np.zeros_like, a) if b is None else b
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(np.max(np.abs(np.float32(x) - np.float32(y)))) for x, y in pairs)


# Inputs and weights of up to this many numbers are drawn by NumPy (no XLA compilation for
# each shape: the smoke run stays quick); larger ones on the device by jax.random.
NUMPY_SIZE = 10**6


def normal(seed: int, shape: tuple):
    """Standard normal float32 numbers of ``shape``."""
    if np.prod(shape) <= NUMPY_SIZE:
        return np.random.default_rng(seed).standard_normal(shape, np.float32)
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def array_module(a):
    """NumPy for a NumPy array, jax.numpy for a JAX array (see :func:`normal`)."""
    return np if isinstance(a, np.ndarray) else jnp


def uniform_params(seed: int, shapes: dict, fan: int) -> dict:
    """Weights from U(-1/sqrt(fan), 1/sqrt(fan)), as the library's inits draw them; the
    biases (names starting with ``b``) zero. Float32 NumPy arrays."""
    rng, bound = np.random.default_rng(seed), 1 / np.sqrt(fan)
    return {
        name: np.zeros(shape, np.float32)
        if name.startswith("b")
        else rng.uniform(-bound, bound, shape).astype(np.float32)
        for name, shape in shapes.items()
    }


def current_device():
    """The device computations go to (``jax.default_device`` if set, else the first)."""
    device = jax.config.jax_default_device
    return device if isinstance(device, jax.Device) else jax.devices()[0]


def fits_in_memory(n_bytes: float) -> bool:
    """False when ``n_bytes`` exceed a share of JAX's limit (unknown on a CPU: True)."""
    stats = current_device().memory_stats() or {}
    limit = stats.get("bytes_limit")
    return limit is None or n_bytes <= MEMORY_SHARE * limit


class Table:
    """A results table, printed row by row as it is measured."""

    def __init__(self, title: str, note: str, header: list[str]):
        self.title, self.note, self.header, self.rows = title, note, header, []
        print(f"\n### {title}\n\n{note}\n", flush=True)
        print(markdown_table(header, []), flush=True)

    def add(self, row: list):
        self.rows.append(row)
        print(markdown_table(self.header, [row]).splitlines()[-1], flush=True)

    def skip(self, head: list, reason: str = "skipped: table's time spent"):
        self.add(head + [reason] + [""] * (len(self.header) - len(head) - 1))

    def markdown(self) -> str:
        return f"### {self.title}\n\n{self.note}\n\n{markdown_table(self.header, self.rows)}"


# --- MDRNN: wavefront against the fastest raster ----------------------------------------------


def mdrnn_table(sizes: Sizes, clock: Clock) -> Table:
    table = Table(
        "MDRNN: wavefront (2G-1 steps) against the fastest raster (G² steps)",
        "G x G grids, tanh grid cell (SPEC §6), float32, D = H. Rasters: "
        + ", ".join(f"`{name}`" for name in RASTERS)
        + " (`bench/_rasters.py`), all timed, the fastest per row named; speed-up = fastest "
        "raster / wavefront. The MD-LSTM wavefront (`mdrnn.mdlstm`, 5 gates: about 5× the "
        "work of the tanh cell per step) against the same raster. Steps measured from the "
        "traced programs (`mdrnn.sequential_steps`); fwd+bwd = gradient of sum(h) with "
        "respect to the weights and the input. Times in ms.",
        ["G", "batch", "D = H", "pass", "raster steps", "wavefront steps", "MD-LSTM steps",
         "rasters ms (" + " / ".join(RASTERS) + ")", "fastest raster", "wavefront ms",
         "speed-up", "MD-LSTM ms", "raster / MD-LSTM"],
    )  # fmt: skip
    guesses = Guesses()
    for width in sizes.grid_widths:
        grid_params = uniform_params(0, mdrnn.param_shapes(width, width), 2 * width)
        lstm_params = uniform_params(1, mdrnn.mdlstm.param_shapes(width, width), 2 * width)
        runs = {name: (raster, grid_params) for name, raster in RASTERS.items()}
        runs["wavefront"] = (mdrnn.wavefront, grid_params)
        runs["MD-LSTM"] = (mdrnn.mdlstm.wavefront, lstm_params)
        for batch in sizes.grid_batches:
            for side in sizes.grids:
                head = [side, batch, width]
                if clock.left() <= 0:
                    table.skip(head + ["both"])
                    continue
                x = normal(2, (batch, side, side, width))
                steps = {
                    name: mdrnn.sequential_steps(lambda a, f=f, p=p: f(p, a), x)
                    for name, (f, p) in runs.items()
                }
                for label, wrap in (("fwd", jax.jit), ("fwd+bwd", gradient)):
                    # guessed as proportional to G² (the rasters' steps; the work of all)
                    estimates = guesses.guess((width, batch, label), side**2, runs)
                    slow = slow_rasters(estimates)
                    calls = {
                        name: blocking(wrap(f), p, x)
                        for name, (f, p) in runs.items()
                        if name not in slow
                    }
                    outcomes = measure(calls, clock, estimates) | slow
                    guesses.record((width, batch, label), side**2, outcomes)
                    table.add(head + [label] + mdrnn_cells(outcomes, steps))
    return table


def slow_rasters(estimates: dict[str, Estimate]) -> dict[str, Outcome]:
    """The rasters more than ``SLOW_RASTER`` times slower than the fastest at the last size,
    which are not timed again (to spend the time on larger sizes)."""
    known = {name: estimates[name].call for name in RASTERS if name in estimates}
    best = min(known.values(), default=None)
    return {
        name: Outcome(None, f"skipped: {seconds / best:.1f}× the fastest at the last G")
        for name, seconds in known.items()
        if seconds > SLOW_RASTER * best
    }


def mdrnn_cells(outcomes: dict[str, Outcome], steps: dict[str, int]) -> list:
    timed = {n: outcomes[n] for n in RASTERS if outcomes[n].seconds is not None}
    fastest = min(timed, key=lambda n: timed[n].seconds) if timed else None
    best = outcomes[fastest] if fastest else None
    return [
        steps[fastest or next(iter(RASTERS))],
        steps["wavefront"],
        steps["MD-LSTM"],
        " / ".join(ms(outcomes[n]) for n in RASTERS),
        fastest or "–",
        ms(outcomes["wavefront"]),
        f"**{ratio(best, outcomes['wavefront'])}**",
        ms(outcomes["MD-LSTM"]),
        ratio(best, outcomes["MD-LSTM"]),
    ]


# --- DEER and quasi-DEER against the scan, on a GRU -------------------------------------------


def deer_table(sizes: Sizes, clock: Clock) -> Table:
    batch = sizes.deer_batch
    table = Table(
        "DEER and quasi-DEER against `jaxrnn.scan`, GRU",
        f"GRU (`jaxrnn.cells.gru`, input {GRU_IN_DIM}), batch {batch} solved as {batch} "
        "Newton systems (`batch_ndim=1`), float32, default tol; iters = the most Newton "
        "iterations of the batch (* = not converged); error = max |DEER - scan| over the "
        "outputs (fwd) or max |gradient difference| / max |scan gradient| (grad). grad = "
        "gradient of sum(ys) with respect to the weights (implicit differentiation for "
        "DEER). Speed-up = scan / DEER. Times in ms.",
        ["T", "H", "pass", "scan ms", *(f"{name} {column}" for name in ("DEER", "quasi-DEER")
                                       for column in ("ms", "speed-up", "iters", "error"))],
    )  # fmt: skip
    guesses = Guesses()
    for n_steps in sizes.deer_lengths:
        for hidden in sizes.deer_hidden:
            head = [n_steps, hidden]
            if clock.left() <= 0:
                table.skip(head + ["both"])
                continue
            params = uniform_params(3, gru.param_shapes(GRU_IN_DIM, hidden), hidden)
            carry = np.zeros((batch, hidden), np.float32)
            xs = normal(4, (n_steps, batch, GRU_IN_DIM))
            # the Jacobians (T, B, H, H), float32, and the associative scan's partial products
            jacobian_bytes = 3 * n_steps * batch * hidden**2 * 4
            runs = {"scan": lambda p, c, x: jaxrnn.scan(gru.apply, p, c, x)[1]}
            if fits_in_memory(jacobian_bytes):
                runs |= {"DEER": deer_run("full"), "quasi-DEER": deer_run("diagonal")}
            passes = {"fwd": jax.jit, "grad": lambda run: gradient(lambda *a: ys_of(run(*a)), 0)}
            for label, wrap in passes.items():
                calls = {name: blocking(wrap(run), params, carry, xs) for name, run in runs.items()}
                outcomes = measure(calls, clock, guesses.guess((hidden, label), n_steps, runs))
                guesses.record((hidden, label), n_steps, outcomes)
                if len(runs) == 1:
                    note = f"skipped: ~{jacobian_bytes / 2**30:.0f} GiB of Jacobians"
                    outcomes |= {n: Outcome(None, note) for n in ("DEER", "quasi-DEER")}
                table.add(head + [label] + deer_cells(outcomes, label))
    return table


def deer_run(jacobian: str):
    """``(params, carry, xs) -> (ys, info)`` of DEER on the GRU, one system per sequence."""

    def run(params, carry, xs):
        return deer(
            gru.apply, params, carry, xs, jacobian=jacobian, batch_ndim=1, on_failure="ignore"
        )[1:]

    return run


def ys_of(result):
    """ys of a scan, or of DEER's (ys, info)."""
    return result[0] if isinstance(result, tuple) else result


def deer_cells(outcomes: dict[str, Outcome], label: str) -> list:
    scan = outcomes["scan"]
    cells = [ms(scan)]
    for name in ("DEER", "quasi-DEER"):
        outcome = outcomes[name]
        iters = error = "–"
        if outcome.value is not None and scan.value is not None:
            if label == "fwd":
                ys, info = outcome.value
                converged = bool(np.all(info.converged))
                iters = f"{int(np.max(info.iterations))}{'' if converged else '*'}"
                error = f"{max_abs(ys, scan.value):.1e}"
            else:
                error = f"{max_abs(outcome.value, scan.value) / max_abs(scan.value):.1e}"
        cells += [ms(outcome), f"**{ratio(scan, outcome)}**", iters, error]
    return cells


# --- linear recurrences: associative scan against lax.scan ------------------------------------


def sequential_linear(A, b, h0):
    """h_t = A_t h_{t-1} + b_t by one ``lax.scan`` (A full (T, H, H) or diagonal (T, H))."""
    full = A.ndim == b.ndim + 1

    def step(h, inputs):
        a, b_t = inputs
        h = (a @ h if full else a * h) + b_t
        return h, h

    return jax.lax.scan(step, h0, (A, b))[1]


def linear_table(sizes: Sizes, clock: Clock) -> Table:
    hidden = sizes.linear_hidden
    table = Table(
        "Linear recurrence: `linear_recurrence` (associative scan) against `lax.scan`",
        f"h_t = A_t h_(t-1) + b_t, H = {hidden}, float32; diagonal A_t uniform in "
        "[0.5, 0.99], full A_t = 0.9 N / ||N||_F (N normal). Speed-up = lax.scan / "
        "associative; error = max |difference| / max |lax.scan|. Times in ms.",
        ["T", "A", "lax.scan ms", "associative ms", "speed-up", "lax.scan µs/step", "error"],
    )
    guesses = Guesses()
    runs = {"lax.scan": sequential_linear, "associative": linear_recurrence}
    for n_steps in sizes.linear_lengths:
        for kind in ("diagonal", "full"):
            if clock.left() <= 0:
                table.skip([n_steps, kind])
                continue
            if kind == "diagonal":
                N = normal(5, (n_steps, hidden))
                A = 0.745 + 0.245 * array_module(N).tanh(N)  # in (0.5, 0.99)
            else:
                N = normal(5, (n_steps, hidden, hidden))
                A = 0.9 * N / (N * N).sum(axis=(-2, -1), keepdims=True) ** 0.5
            b = normal(6, (n_steps, hidden))
            h0 = np.zeros(hidden, np.float32)
            calls = {name: blocking(jax.jit(run), A, b, h0) for name, run in runs.items()}
            outcomes = measure(calls, clock, guesses.guess(kind, n_steps, runs))
            guesses.record(kind, n_steps, outcomes)
            scan, assoc = outcomes["lax.scan"], outcomes["associative"]
            error, per_step = "–", "–"
            if scan.value is not None and assoc.value is not None:
                error = f"{max_abs(assoc.value, scan.value) / max_abs(scan.value):.1e}"
            if scan.seconds is not None:
                per_step = f"{scan.seconds / n_steps * 1e6:.2f}"
            table.add([n_steps, kind, ms(scan), ms(assoc), f"**{ratio(scan, assoc)}**",
                       per_step, error])  # fmt: skip
    return table


# --- LSTM layer against cuDNN, PyTorch and flax ------------------------------------------------


def on_gpu() -> bool:
    return current_device().platform == "gpu"


def jax_calls(run, *args):
    """Blocking forward and gradient (of sum(run(*args)) in all args) calls of a JAX run."""
    argnums = tuple(range(len(args)))
    return blocking(jax.jit(run), *args), blocking(gradient(run, argnums), *args)


def cudnn_lstm_calls(xs, dtype):
    """``jax.experimental.rnn.lstm`` (cuDNN) calls on ``xs`` (T, B, H), with weights of its
    own (random, of the same sizes), or why there are none (a string)."""
    if not on_gpu():
        return "n/a: needs a GPU"
    if dtype != jnp.float32:
        return "n/a: float32 only"
    try:
        from jax.experimental import rnn
    except ImportError as error:
        return f"n/a: {error}"
    n_steps, batch, hidden = xs.shape
    weights = rnn.init_lstm_weight(jax.random.key(7), hidden, hidden, 1, False)
    x = array_module(xs).swapaxes(xs, 0, 1)  # batch first
    zeros = np.zeros((1, batch, hidden), np.float32)
    lengths = np.full((batch,), n_steps, np.int32)

    def run(w, x):
        return rnn.lstm(x, zeros, zeros, w, lengths, hidden, hidden, 1, 0.0, False)[0]

    return jax_calls(run, weights, x)


def torch_lstm_calls(params: dict, xs, dtype):
    """PyTorch ``nn.LSTM`` calls (cuDNN on a GPU), synchronised, or why there are none."""
    try:
        import torch
    except ImportError:
        return "n/a: torch not installed"
    device = "cuda" if on_gpu() and torch.cuda.is_available() else "cpu"
    torch_dtype = {jnp.float32: torch.float32, jnp.bfloat16: torch.bfloat16}[dtype]
    hidden = xs.shape[-1]
    module = torch.nn.LSTM(hidden, hidden)
    module.load_state_dict(jaxrnn.interop.to_torch_lstm(params))
    module = module.to(device=device, dtype=torch_dtype)
    x = torch.from_numpy(np.array(xs, np.float32)).to(device=device, dtype=torch_dtype)
    x.requires_grad_(True)
    weights = list(module.parameters())

    def synchronised(result):
        if device == "cuda":
            torch.cuda.synchronize()
        return result

    def forward():
        with torch.no_grad():
            return synchronised(module(x)[0])

    def forward_backward():
        return synchronised(torch.autograd.grad(module(x)[0].float().sum(), weights + [x]))

    return forward, forward_backward


def flax_lstm_calls(params: dict, xs, dtype):
    """flax ``RNN(LSTMCell)`` calls with the same weights, or why there are none."""
    try:
        import flax.linen as nn
    except ImportError:
        return "n/a: flax not installed"
    cell = nn.LSTMCell(xs.shape[-1], dtype=dtype, param_dtype=dtype)
    variables = {"params": {"cell": jaxrnn.interop.to_flax_lstm_cell(params)}}
    return jax_calls(nn.RNN(cell, time_major=True).apply, variables, xs)


def release_torch_memory():
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


CUDNN = "cuDNN (jax.experimental.rnn)"
LSTM_CONTENDERS = ("lstm_layer", "scan + autodiff", CUDNN, "PyTorch nn.LSTM", "flax RNN(LSTMCell)")


def lstm_contenders(params: dict, xs, dtype) -> dict:
    """Name -> (forward call, forward+backward call), or a string saying why not."""
    batch, hidden = xs.shape[1:]
    low = {k: v.astype(dtype) for k, v in params.items()}
    xs_low = xs.astype(dtype)
    carry = (np.zeros((batch, hidden), dtype),) * 2
    makers = {
        "lstm_layer": lambda: jax_calls(
            lambda p, x: jaxrnn.lstm_layer(p, carry, x)[1], low, xs_low
        ),
        "scan + autodiff": lambda: jax_calls(
            lambda p, x: jaxrnn.scan(lstm.apply, p, carry, x)[1], low, xs_low
        ),
        CUDNN: lambda: cudnn_lstm_calls(xs, dtype),
        "PyTorch nn.LSTM": lambda: torch_lstm_calls(params, xs, dtype),
        "flax RNN(LSTMCell)": lambda: flax_lstm_calls(low, xs_low, dtype),
    }
    contenders = {}
    for name, make in makers.items():
        try:
            contenders[name] = make()
        except Exception as error:  # e.g. a peer that refuses this dtype
            contenders[name] = failure_note(error)
    return contenders


def lstm_table(sizes: Sizes, clock: Clock) -> Table:
    table = Table(
        "LSTM layer: `lstm_layer` and `jaxrnn.scan` + autodiff against cuDNN, PyTorch, flax",
        "D = H, zero initial state; fwd+bwd = gradient of sum(ys) with respect to the "
        "weights and the inputs. cuDNN through `jax.experimental.rnn.lstm` (float32 only); "
        "PyTorch `nn.LSTM` on the same device (cuDNN on a GPU), synchronised after each call; "
        "default matmul precisions everywhere (TF32 allowed by cuDNN and XLA on a GPU). "
        "Times in ms; the last columns: lstm_layer / cuDNN and lstm_layer / the fastest other "
        "contender.",
        ["T", "B", "H", "dtype", "pass", *LSTM_CONTENDERS, "lstm_layer / cuDNN",
         "lstm_layer / fastest other"],
    )  # fmt: skip
    guesses = Guesses()
    for dtype in (jnp.float32, jnp.bfloat16):  # float32 first: cuDNN's only dtype
        for n_steps, batch, hidden in sizes.lstm_shapes:
            work = n_steps * batch * hidden * hidden
            head = [n_steps, batch, hidden, jnp.dtype(dtype).name]
            if clock.left() <= 0:
                table.skip(head + ["both"])
                continue
            release_torch_memory()  # what PyTorch cached for the last row, for JAX's next
            params = uniform_params(9, lstm.param_shapes(hidden, hidden), hidden)
            xs = normal(10, (n_steps, batch, hidden))
            contenders = lstm_contenders(params, xs, dtype)
            absent = {n: Outcome(None, c) for n, c in contenders.items() if isinstance(c, str)}
            for index, label in enumerate(("fwd", "fwd+bwd")):
                calls = {n: c[index] for n, c in contenders.items() if n not in absent}
                key = (jnp.dtype(dtype).name, label)
                outcomes = measure(calls, clock, guesses.guess(key, work, calls)) | absent
                guesses.record(key, work, outcomes)
                mine = outcomes["lstm_layer"]
                others = [o for n, o in outcomes.items() if n != "lstm_layer" and o.seconds]
                fastest = min(others, key=lambda o: o.seconds) if others else None
                times = [ms(outcomes[n]) for n in LSTM_CONTENDERS]
                versus = [f"**{ratio(mine, outcomes[CUDNN])}**", ratio(mine, fastest)]
                table.add(head + [label] + times + versus)
    return table


# --- reversible momentum SGD against optax ----------------------------------------------------


def mlp_problem(sizes: tuple, batch: int):
    """Parameters of an MLP and ``loss(params, k)`` on the k-th of 8 fixed batches."""
    params = {}
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        params[f"w{i}"] = normal(11 + i, (m, n)) / np.float32(np.sqrt(m))
        params[f"b{i}"] = np.zeros((n,), np.float32)
    x = jnp.asarray(normal(20, (8, batch, sizes[0])))
    y = jnp.asarray(np.random.default_rng(21).integers(0, sizes[-1], (8, batch)), jnp.int32)

    def loss(p, k):
        h = x[k % 8]
        for i in range(len(sizes) - 1):
            h = h @ p[f"w{i}"] + p[f"b{i}"]
            h = jax.nn.relu(h) if i < len(sizes) - 2 else h
        return optax.softmax_cross_entropy_with_integer_labels(h, y[k % 8]).mean()

    return params, loss


def reversible_table(sizes: Sizes, clock: Clock) -> Table:
    from jaxrnn import reversible

    table = Table(
        "Reversible momentum SGD: a `reversible.forward` step against `optax.sgd(momentum)`",
        f"MLP {'-'.join(map(str, sizes.mlp))}, float32, learning rate {LEARNING_RATE}, "
        f"momentum {MOMENTUM}; {REVERSIBLE_STEPS} steps per call, each contender one jitted "
        "`lax.scan` over the steps with the same gradient (optax through "
        "`jaxrnn.train.make_step`; host-side work of "
        "`reversible.forward` included). Times per step in ms.",
        ["batch", "optax.sgd(momentum)", "reversible.forward", "reversible / optax"],
    )
    optimizer = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
    alphas = np.full(REVERSIBLE_STEPS, LEARNING_RATE, np.float32)
    betas = np.full(REVERSIBLE_STEPS, MOMENTUM)
    for batch in sizes.mlp_batches:
        if clock.left() <= 0:
            table.skip([batch])
            continue
        params, loss = mlp_problem(sizes.mlp, batch)
        grad_fn = jax.grad(loss)
        optax_step = jaxrnn.train.make_step(loss, optimizer)  # the library's training step

        @jax.jit
        def optax_steps(params, state, optax_step=optax_step):
            steps = jnp.arange(REVERSIBLE_STEPS)
            return jax.lax.scan(lambda c, k: (optax_step(*c, k)[:2], None), (params, state), steps)[
                0
            ]

        params = jax.device_put(params)
        start = reversible.init(params)
        calls = {
            "optax": blocking(optax_steps, params, optimizer.init(params)),
            # the schedules stay NumPy arrays: the library reads them at trace time
            "reversible": lambda: jax.block_until_ready(
                reversible.forward(start, grad_fn, alphas, betas)  # noqa: B023
            ),
        }
        outcomes = measure(calls, clock)
        per_step = {
            n: o._replace(seconds=o.seconds / REVERSIBLE_STEPS) if o.seconds else o
            for n, o in outcomes.items()
        }
        table.add([batch, ms(per_step["optax"]), ms(per_step["reversible"]),
                   f"**{ratio(outcomes['reversible'], outcomes['optax'])}**"])  # fmt: skip
    return table


# --- jaxrnn.scan per step at two lengths (jax-ml/jax#40101) -----------------------------------


def scan_table(sizes: Sizes, clock: Clock) -> Table:
    short, long = sizes.scan_lengths
    runs = {
        "stacked": lambda p, c, x: jaxrnn.scan(elman.apply, p, c, x)[1],
        "final carry": lambda p, c, x: jaxrnn.scan(elman.apply, p, c, x)[0],
    }
    table = Table(
        "`jaxrnn.scan` per step at two lengths (jax-ml/jax#40101)",
        f"Elman cell, H = D = 1, no batch, float32, T = {short} and {long}: the stacked "
        "per-step outputs ys (T, 1) against the final carry only (XLA drops the stacking). "
        "Growth = µs/step at the longer T / µs/step at the shorter; a linear-time scan "
        "gives about 1, the quadratic scan of jax-ml/jax#40101 (XLA:CPU from jax 0.11.1) "
        f"about {long // short}.",
        [
            "device",
            *(f"{name} {column}" for name in runs for column in ("µs/step", "growth")),
            "verdict",
        ],  # fmt: skip
    )
    params = uniform_params(22, elman.param_shapes(1, 1), 1)
    carry = np.zeros(1, np.float32)
    platforms = ["cpu"] + ([jax.default_backend()] if jax.default_backend() != "cpu" else [])
    for platform in platforms:
        device = jax.devices(platform)[0]
        per_step = {name: [] for name in runs}
        for n_steps in (short, long):
            xs = normal(23, (n_steps, 1))
            args = jax.device_put((params, carry, xs), device)
            calls = {name: blocking(jax.jit(run), *args) for name, run in runs.items()}
            outcomes = measure(calls, clock)
            for name, outcome in outcomes.items():
                per_step[name].append(outcome._replace(seconds=outcome.seconds / n_steps)
                                      if outcome.seconds else outcome)  # fmt: skip
        cells = [f"{device.platform} ({device.device_kind})"]
        for name in runs:
            first, second = per_step[name]
            cells += [" → ".join(f"{o.seconds * 1e6:.3g}" if o.seconds else o.note
                                 for o in (first, second)), ratio(second, first)]  # fmt: skip
        table.add(cells + [scan_verdict(per_step["stacked"])])
    return table


def scan_verdict(per_step: list[Outcome]) -> str:
    first, second = per_step
    if first.seconds is None or second.seconds is None:
        return "–"
    growth = second.seconds / first.seconds
    if growth < 2:
        return "linear in T"
    if growth > 4:
        return "grows with T: jax-ml/jax#40101"
    return "unclear (noise?)"


# --- the run ----------------------------------------------------------------------------------

TABLES = {
    "scan": scan_table,
    "reversible": reversible_table,
    "linear": linear_table,
    "deer": deer_table,
    "mdrnn": mdrnn_table,
    "lstm": lstm_table,
}


def device_line() -> str:
    devices = jax.devices()
    device = devices[0]
    line = f"{len(devices)} × {device.device_kind} ({device.platform})"
    limit = (device.memory_stats() or {}).get("bytes_limit")
    if limit:
        line += f", {limit / 2**30:.0f} GiB for JAX"
    try:
        import torch

        if torch.cuda.is_available():
            line += f"; torch CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    except ImportError:
        pass
    return line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, seconds")
    parser.add_argument("--results", type=Path, help="write the section into this file")
    parser.add_argument(
        "--budget", type=float, help="seconds for all tables (default 400; no limit with --smoke)"
    )
    parser.add_argument("--only", default=",".join(TABLES), help="comma-separated tables")
    args = parser.parse_args(argv)
    names = [name for name in args.only.split(",") if name]
    unknown = sorted(set(names) - set(TABLES))
    if unknown:
        parser.error(f"--only: unknown tables {unknown}; expected some of {list(TABLES)}")
    sizes = SMOKE if args.smoke else FULL
    seconds = args.budget or (float("inf") if args.smoke else 400.0)
    started = time.perf_counter()
    with jax.default_device(jax.devices("cpu")[0] if args.smoke else jax.devices()[0]):
        device = device_line() if not args.smoke else "cpu (smoke run)"
        print(f"{machine_line()}\ndevice: {device}", flush=True)
        budget = Budget(seconds, {name: WEIGHTS[name] for name in names if name in WEIGHTS})
        parts = []
        for name in names:
            clock = budget.clock(name, sizes)
            try:
                table = TABLES[name](sizes, clock)
                print(f"({name}: {clock.spent():.0f} s)", flush=True)
                parts.append(table.markdown())
            except Exception as error:  # a table that breaks leaves the others standing
                note = failure_note(error)
                print(f"\n### {name}: {note}", flush=True)
                parts.append(f"### {name}\n\n{note}")
    elapsed = time.perf_counter() - started
    print(f"\nall tables: {elapsed:.0f} s", flush=True)
    body = "\n\n".join(
        [
            "## Accelerator suite (`PYTHONPATH=. python bench/accelerator.py`)",
            f"{machine_line()}\n\ndevice: {device}; {datetime.date.today().isoformat()}; "
            f"tables took {elapsed:.0f} s"
            + (" (smoke sizes: not a measurement)" if args.smoke else ""),
            "Medians of interleaved rounds after a compiling call; ratios within one run.",
            *parts,
        ]
    )
    if args.results is not None:
        write_results(body, args.results)
    elif args.smoke:
        pass
    elif jax.default_backend() == "cpu":
        print("no accelerator: bench/RESULTS.md left as it is (give --results to write)")
    else:
        write_results(body, _results.RESULTS)
    return 0


def write_results(body: str, path: Path) -> None:
    """The section "accelerator" of ``path`` (``write_section`` writes ``_results.RESULTS``)."""
    default = _results.RESULTS
    _results.RESULTS = Path(path)
    try:
        write_section("accelerator", body)
    finally:
        _results.RESULTS = default
    print(f"wrote the section 'accelerator' of {path}")


if __name__ == "__main__":
    sys.exit(main())
