"""LSTM layer on CPU: jaxrnn's fast path against PyTorch, autodiff, flax and equinox.

    python bench/lstm.py [--runs 3] [--rounds N] [--no-write]

T = 256, B = 32, D = 64, H = 256, float32. For each contender: the forward time, the
forward+backward time (gradients of sum(ys) with respect to the weights and the inputs)
and the peak memory, the contenders interleaved round by round (medians over rounds,
after a warm-up). Each run is a fresh process configured as the README tells a user to
(``jax.config.update("jax_num_cpu_devices", os.cpu_count())``: one CPU device per core),
so the JAX contenders run on one device and, with ``jaxrnn.sharding.batch_parallel``, with
the batch split over all of them; PyTorch runs with its default threads and with as many
threads as there are cores. The acceptance divides the fastest jaxrnn configuration by
the fastest PyTorch one, per run; the figure is the median and the range over the runs.
Then the kernel choices of the fast path and the floors: a bare ``lax.scan`` of T steps
doing only the recurrent matmul of a step (forward h U, backward zbar U^T), on one device
and per device with the batch split. Writes the section "lstm" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _results import (  # noqa: E402
    interleaved_times,
    machine_line,
    markdown_table,
    median_and_range,
    separate_runs,
    write_section,
)

import jaxrnn  # noqa: E402
from jaxrnn import sharding  # noqa: E402
from jaxrnn.cells import lstm  # noqa: E402
from jaxrnn.lstm_fast import Choices  # noqa: E402

T, B, D, H = 256, 32, 64, 256
THREADS = os.cpu_count()
MB = 2**20


def _torch_default_threads() -> int:
    try:
        import torch
    except ImportError:
        return THREADS
    return torch.get_num_threads()


DEFAULT_TORCH_THREADS = _torch_default_threads()


# --- contenders: each gives (forward(), forward_backward(), peak_forward, peak_fb) ---------


def _jax_contender(loss_and_outputs, args):
    """Jitted forward and grad of a JAX function ``f(*args) -> ys``; memory from XLA."""
    forward = jax.jit(loss_and_outputs)
    grad = jax.jit(jax.grad(lambda *a: loss_and_outputs(*a).sum(), argnums=(0, 1)))

    def peak(fn):
        stats = fn.lower(*args).compile().memory_analysis()
        return (stats.temp_size_in_bytes + stats.output_size_in_bytes) / MB

    return (
        lambda: forward(*args).block_until_ready(),
        lambda: jax.block_until_ready(grad(*args)),
        peak(forward),
        peak(grad),
    )


def _over_batch(run, split: bool):
    """``run(params, xs) -> ys`` as is, or with the batch split over every device."""
    if not split:
        return run
    return sharding.batch_parallel(run, in_axes=(None, 1), out_axes=1)


def jaxrnn_fast(params, xs, choices=None, split=False):
    def run(p, x):
        carry = lstm.init_carry(x.shape[1:2], H, x.dtype)
        return jaxrnn.lstm_layer(p, carry, x, choices=choices)[1]

    return _jax_contender(_over_batch(run, split), (params, xs))


def jaxrnn_autodiff(params, xs, split=False):
    def run(p, x):
        return jaxrnn.scan(lstm.apply, p, lstm.init_carry(x.shape[1:2], H, x.dtype), x)[1]

    return _jax_contender(_over_batch(run, split), (params, xs))


def flax_rnn(params, xs):
    import flax.linen as nn

    rnn = nn.RNN(nn.LSTMCell(H), time_major=True)
    variables = {"params": {"cell": jaxrnn.interop.to_flax_lstm_cell(params)}}
    return _jax_contender(lambda v, x: rnn.apply(v, x), (variables, xs))


def equinox_scan(params, xs):
    import equinox as eqx

    cell = eqx.nn.LSTMCell(D, H, key=jax.random.PRNGKey(0))
    # equinox stacks the gates i, f, g, o in one (4H, D) matrix, like PyTorch
    order = ("i", "f", "c", "o")
    cell = eqx.tree_at(
        lambda m: (m.weight_ih, m.weight_hh, m.bias),
        cell,
        (
            jnp.concatenate([params[f"W_{g}"] for g in order]),
            jnp.concatenate([params[f"U_{g}"] for g in order]),
            jnp.concatenate([params[f"b_{g}"] for g in order]),
        ),
    )

    def run(model, x):  # one sequence, x (T, D)
        def step(carry, x_t):
            h, c = model(x_t, carry)
            return (h, c), h

        zero = jnp.zeros((H,), x.dtype)
        return jax.lax.scan(step, (zero, zero), x)[1]

    def batched(model, x):
        return jax.vmap(run, in_axes=(None, 1), out_axes=1)(model, x)

    return _jax_contender(batched, (cell, xs))


def _torch_calls(module, xs, threads: int):
    """A PyTorch RNN module's forward and forward+backward (gradients of sum(ys) with
    respect to the weights and the inputs) on ``xs``, with ``threads`` intra-op threads
    set before every call."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.array(xs)).requires_grad_(True)
    weights = list(module.parameters())

    def forward():
        torch.set_num_threads(threads)
        with torch.no_grad():
            return module(x)[0]

    def forward_backward():
        torch.set_num_threads(threads)
        return torch.autograd.grad(module(x)[0].sum(), weights + [x])

    return forward, forward_backward


def torch_lstm(params, xs, threads=None):
    """PyTorch's nn.LSTM with ``threads`` (None: its default) intra-op threads."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    module = torch.nn.LSTM(D, H)
    module.load_state_dict(jaxrnn.interop.to_torch_lstm(params))
    forward, forward_backward = _torch_calls(module, xs, threads or DEFAULT_TORCH_THREADS)

    def peak(fn):
        # torch has no peak counter on CPU: replay the profiler's allocation events in time
        # order and take the maximum of the live bytes allocated since the start.
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        live = top = 0
        for event in sorted(prof.events(), key=lambda e: e.time_range.start):
            live += event.self_cpu_memory_usage
            top = max(top, live)
        return top / MB

    return forward, forward_backward, peak(forward), peak(forward_backward)


# --- measurement ---------------------------------------------------------------------------


def interleaved_medians(contenders: dict, rounds: int, warmup: int = 2) -> dict:
    """Forward and forward+backward seconds of each contender, interleaved by round.

    Returns ``{name: (median_fwd, median_fwd_bwd, min_fwd, min_fwd_bwd)}``; the minimum is
    the run least disturbed by other jobs on a shared machine.
    """
    fns = {}
    for name, (forward, forward_backward, *_) in contenders.items():
        fns[name, "fwd"], fns[name, "fwd_bwd"] = forward, forward_backward
    times = interleaved_times(fns, rounds=rounds, warmup=warmup)
    pairs = {name: (times[name, "fwd"], times[name, "fwd_bwd"]) for name in contenders}
    return {
        name: (*(statistics.median(s) for s in pair), *(min(s) for s in pair))
        for name, pair in pairs.items()
    }


FAST = "jaxrnn lstm_layer"


def peer_contenders(params, xs) -> dict:
    n_devices = len(jax.devices())
    contenders = {FAST: jaxrnn_fast(params, xs)}
    if n_devices > 1:
        contenders[f"{FAST}, batch over {n_devices} devices"] = jaxrnn_fast(params, xs, split=True)
    contenders["jaxrnn scan + jax.grad"] = jaxrnn_autodiff(params, xs)
    if n_devices > 1:
        contenders[f"jaxrnn scan + jax.grad, batch over {n_devices} devices"] = jaxrnn_autodiff(
            params, xs, split=True
        )
    contenders[f"PyTorch nn.LSTM, default {DEFAULT_TORCH_THREADS} threads"] = torch_lstm(params, xs)
    if THREADS != DEFAULT_TORCH_THREADS:
        contenders[f"PyTorch nn.LSTM, {THREADS} threads"] = torch_lstm(params, xs, THREADS)
    contenders["flax.linen RNN(LSTMCell)"] = flax_rnn(params, xs)
    contenders["equinox LSTMCell + lax.scan"] = equinox_scan(params, xs)
    return contenders


CHOICES = {
    "default": Choices(),
    "per step (block 1)": Choices(block=1),
    "per step, unroll 1 (fwd and bwd)": Choices(block=1, unroll=1, backward_unroll=1),
    "per step, unroll 8": Choices(block=1, unroll=8, backward_unroll=8),
    "per step, input projection hoisted out of the scan": Choices(block=1, hoist_input=True),
    "per step, weight/input grads as matmuls after the reverse scan": Choices(
        block=1, grads_after_scan=True
    ),
    "per step, one matmul per step, [x_t, h] [W; U]": Choices(block=1, one_matmul=True),
    "per step, batch as 2 independent scans": Choices(block=1, batch_split=2),
    "blocks of 4 steps": Choices(block=4),
    "blocks of 16 steps": Choices(block=16),
    "sigmoid as jax.nn.sigmoid": Choices(sigmoid_via_tanh=False),
}


def choice_contenders(params, xs) -> dict:
    n_devices = len(jax.devices())
    contenders = {name: jaxrnn_fast(params, xs, choice) for name, choice in CHOICES.items()}
    if n_devices > 1:
        for name, choice in CHOICES.items():
            contenders[f"{name}, batch over {n_devices} devices"] = jaxrnn_fast(
                params, xs, choice, split=True
            )
    return contenders


def floors(rounds: int) -> dict:
    """Seconds per step of bare scans of T steps doing only a step's recurrent matmul."""
    n_devices = len(jax.devices())
    U = jnp.full((H, 4 * H), 0.01, jnp.float32)

    def forward(h):  # h (B, H): h_t = tanh(h_{t-1} U)[:, :H]
        step = lambda carry, _: (jnp.tanh(carry @ U)[:, :H], None)
        return jax.lax.scan(step, h, None, length=T)[0]

    def backward(dz):  # dz (B, 4H): dz_{t-1} = tile(dz_t U^T)
        step = lambda carry, _: (jnp.tile(jnp.tanh(carry @ U.T), 4), None)
        return jax.lax.scan(step, dz, None, length=T)[0]

    runs = {
        "forward h U, one device": (jax.jit(forward), jnp.ones((B, H))),
        "backward zbar U^T, one device": (jax.jit(backward), jnp.ones((B, 4 * H))),
    }
    if n_devices > 1:
        split = lambda f: sharding.batch_parallel(f, in_axes=0, out_axes=0)
        runs[f"forward h U, batch over {n_devices} devices"] = (
            split(forward),
            jnp.ones((B, H)),
        )
        runs[f"backward zbar U^T, batch over {n_devices} devices"] = (
            split(backward),
            jnp.ones((B, 4 * H)),
        )
    calls = {k: (lambda f=f, a=a: f(a).block_until_ready()) for k, (f, a) in runs.items()}
    times = interleaved_times(calls, rounds=rounds)
    return {k: statistics.median(v) / T for k, v in times.items()}


def measure(rounds: int) -> dict:
    """One run: every table's timings, JSON-able."""
    jax.config.update("jax_num_cpu_devices", THREADS)
    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    params = lstm.init(key_p, D, H)
    xs = jax.random.normal(key_x, (T, B, D), jnp.float32)
    peers = peer_contenders(params, xs)
    memory = {name: (c[2], c[3]) for name, c in peers.items()}
    peer_times = interleaved_medians(peers, rounds)
    choices = choice_contenders(params, xs)
    choices["PyTorch (fastest of the peers table)"] = peers[_fastest_torch(peer_times)]
    choice_times = interleaved_medians(choices, rounds)
    return {
        "devices": len(jax.devices()),
        "peers": peer_times,
        "memory": memory,
        "choices": choice_times,
        "floors": floors(rounds),
        "load": os.getloadavg()[0],
    }


def _fastest_torch(times: dict) -> str:
    torch_names = [name for name in times if name.startswith("PyTorch")]
    return min(torch_names, key=lambda name: times[name][1])


# --- report ---------------------------------------------------------------------------------


def _ms(seconds):
    return f"{seconds * 1e3:.1f}"


def _median_over_runs(results, table, name, index):
    return statistics.median(r[table][name][index] for r in results)


def acceptance(results) -> tuple[list, dict]:
    """Per run: the fastest lstm_layer configuration over the fastest PyTorch one."""
    ratios = {"fwd": [], "fwd+bwd": []}
    for run in results:
        times = run["peers"]
        ours = [name for name in times if name.startswith(FAST)]
        torch_names = [name for name in times if name.startswith("PyTorch")]
        for index, label in ((0, "fwd"), (1, "fwd+bwd")):
            best_ours = min(times[name][index] for name in ours)
            best_torch = min(times[name][index] for name in torch_names)
            ratios[label].append(best_ours / best_torch)
    lines = []
    for label, values in ratios.items():
        verdict = "met" if statistics.median(values) <= 1.0 else "NOT met"
        lines.append(
            f"- lstm_layer {label} <= 1.0x PyTorch's time: **{verdict}**, "
            f"{median_and_range(values)}x (median and range over {len(values)} runs)"
        )
    return lines, ratios


def peers_table(results) -> str:
    names = list(results[0]["peers"])
    best_torch = {
        index: statistics.median(
            min(t[index] for n, t in r["peers"].items() if n.startswith("PyTorch")) for r in results
        )
        for index in (0, 1)
    }
    rows = []
    for name in names:
        f = _median_over_runs(results, "peers", name, 0)
        fb = _median_over_runs(results, "peers", name, 1)
        fb_min = min(r["peers"][name][3] for r in results)
        mem_f, mem_fb = results[0]["memory"][name]
        rows.append([
            name, _ms(f), _ms(fb), _ms(fb_min), f"{f / best_torch[0]:.2f}x",
            f"{fb / best_torch[1]:.2f}x", f"{mem_f:.1f}", f"{mem_fb:.1f}",
        ])  # fmt: skip
    header = [
        "contender", "forward ms", "fwd+bwd ms", "fwd+bwd min ms", "fwd / fastest PyTorch",
        "fwd+bwd / fastest PyTorch", "peak MB fwd", "peak MB fwd+bwd",
    ]  # fmt: skip
    return markdown_table(header, rows)


def choices_table(results) -> str:
    names = list(results[0]["choices"])
    torch_name = "PyTorch (fastest of the peers table)"
    torch_fb = _median_over_runs(results, "choices", torch_name, 1)
    default = {i: _median_over_runs(results, "choices", "default", i) for i in (0, 1)}
    rows = []
    for name in names:
        f = _median_over_runs(results, "choices", name, 0)
        fb = _median_over_runs(results, "choices", name, 1)
        label = f"{name}: {CHOICES[name]}" if name == "default" else name
        relative = name != torch_name
        rows.append([
            label, _ms(f), _ms(fb), f"{f / default[0]:.2f}x" if relative else "",
            f"{fb / default[1]:.2f}x" if relative else "", f"{fb / torch_fb:.2f}x",
        ])  # fmt: skip
    header = [
        "choice (from the default, blocks of 8)", "forward ms", "fwd+bwd ms", "fwd vs default",
        "fwd+bwd vs default", "fwd+bwd / PyTorch",
    ]  # fmt: skip
    return markdown_table(header, rows)


def floors_table(results) -> str:
    per_step = lambda table, name, i: 1e6 * _median_over_runs(results, table, name, i) / T
    n = results[0]["devices"]
    floor = {
        k: 1e6 * statistics.median(r["floors"][k] for r in results) for k in results[0]["floors"]
    }
    rows = []
    configs = [("one device", FAST, "one device")]
    if n > 1:
        configs.append(
            (
                f"batch over {n} devices",
                f"{FAST}, batch over {n} devices",
                f"batch over {n} devices",
            )
        )
    for label, name, suffix in configs:
        fwd_floor = floor[f"forward h U, {suffix}"]
        bwd_floor = floor[f"backward zbar U^T, {suffix}"]
        rows.append([
            label, f"{per_step('peers', name, 0):.0f}", f"{fwd_floor:.0f}",
            f"{per_step('peers', name, 1):.0f}", f"{fwd_floor + bwd_floor:.0f}",
        ])  # fmt: skip
    header = [
        "lstm_layer", "forward µs/step", "floor: h U per step", "fwd+bwd µs/step",
        "floor: h U + zbar U^T per step",
    ]  # fmt: skip
    return markdown_table(header, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="separate runs (processes)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    results = separate_runs(__file__, args.runs, ("--rounds", str(args.rounds)))
    verdicts, _ = acceptance(results)
    loads = ", ".join(f"{r['load']:.1f}" for r in results)
    body = f"""## LSTM layer, CPU (`python bench/lstm.py`)

{machine_line()}

T = {T}, B = {B}, D = {D}, H = {H}, float32; loss sum(ys), gradients with respect to all
weights and the inputs. {args.runs} separate runs (fresh processes, {results[0]["devices"]} CPU
devices: one per core, as the README configures), each the median of {args.rounds}
interleaved rounds after 2 warm-up calls; tables give the median over the runs. PyTorch
runs with its default {DEFAULT_TORCH_THREADS} intra-op threads (and with {THREADS}, one per
core, where that differs). Peak memory: for JAX, XLA's `compile().memory_analysis()`
(temporaries + outputs); for PyTorch, the profiler's allocation events replayed in time
order. 1-minute load average at the end of each run: {loads}.

Acceptance: the fastest lstm_layer configuration over the fastest PyTorch one, per run.

{chr(10).join(verdicts)}

{peers_table(results)}

### Kernel choices of the fast path (default: blocks of 8 steps; "per step": block 1)

{choices_table(results)}

### Floors

A bare `lax.scan` of T = {T} steps doing only a step's recurrent matmul and a tanh
(forward: ({B}, {H}) @ ({H}, {4 * H}); backward: ({B}, {4 * H}) @ ({4 * H}, {H})), per step,
against the fast path's time per step, in µs (medians over runs):

{floors_table(results)}
"""
    if not args.no_write:
        write_section("lstm", body)
    print(body)
    return 0


# === GRU: jaxrnn.gru_layer against autodiff, PyTorch nn.GRU and flax GRUCell ===============
# python bench/lstm.py gru [--rounds N] [--no-write]: same sizes and method as the LSTM
# table above; writes the section "gru" of bench/RESULTS.md.


def _gru_contender(outputs, args):
    """:func:`_jax_contender` and the seconds XLA takes to compile its forward+backward."""
    import time

    grad = jax.jit(jax.grad(lambda *a: outputs(*a).sum(), argnums=(0, 1)))
    start = time.perf_counter()
    grad.lower(*args).compile()
    return (*_jax_contender(outputs, args), time.perf_counter() - start)


def gru_fast(params, xs, choices=None):
    from jaxrnn.cells import gru

    carry = gru.init_carry((B,), H)
    return _gru_contender(
        lambda p, x: jaxrnn.gru_layer(p, carry, x, choices=choices)[1], (params, xs)
    )


def gru_autodiff(params, xs):
    from jaxrnn.cells import gru

    carry = gru.init_carry((B,), H)
    return _gru_contender(lambda p, x: jaxrnn.scan(gru.apply, p, carry, x)[1], (params, xs))


def flax_gru(params, xs):
    import flax.linen as nn

    rnn = nn.RNN(nn.GRUCell(H), time_major=True)
    variables = {"params": {"cell": jaxrnn.interop.to_flax_gru_cell(params)}}
    return _gru_contender(lambda v, x: rnn.apply(v, x), (variables, xs))


def torch_gru(params, xs, threads):
    """PyTorch's nn.GRU with ``threads`` OpenMP threads (set before every call)."""
    import torch

    module = torch.nn.GRU(D, H)
    module.load_state_dict(jaxrnn.interop.to_torch_gru(params))
    return *_torch_calls(module, xs, threads), None, None, None


def gru_tables(params, xs, rounds):
    """The peers table and the table of kernel choices, from one interleaved run."""
    from jaxrnn.gru_fast import Choices as GruChoices

    choices = {
        "unroll 2 (fwd and bwd)": GruChoices(unroll=2, backward_unroll=2),
        "unroll 4": GruChoices(unroll=4, backward_unroll=4),
        "sigmoid as jax.nn.sigmoid": GruChoices(sigmoid_via_tanh=False),
        "input projection hoisted out of the scan": GruChoices(hoist_input=True),
        "weight/input grads as matmuls after the reverse scan": GruChoices(grads_after_scan=True),
    }
    fast = "jaxrnn gru_layer (hand BPTT)"
    contenders = {
        fast: gru_fast(params, xs),
        "jaxrnn scan + jax.grad": gru_autodiff(params, xs),
        f"PyTorch nn.GRU, {THREADS} threads": torch_gru(params, xs, THREADS),
        "PyTorch nn.GRU, 1 thread": torch_gru(params, xs, 1),
        "flax.linen RNN(GRUCell)": flax_gru(params, xs),
        **{f"choice: {name}": gru_fast(params, xs, c) for name, c in choices.items()},
    }
    medians = interleaved_medians(contenders, rounds)
    fast_f, fast_fb, _, fast_fb_min = medians[fast]
    rows = []
    for name, (f, fb, _, fb_min) in medians.items():
        _, _, mem_f, mem_fb, compile_s = contenders[name]
        rows.append(
            [
                f"{name}: {GruChoices()}" if name == fast else name,
                _ms(f),
                _ms(fb),
                _ms(fb_min),
                f"{fast_f / f:.2f}x",
                f"{fast_fb / fb:.2f}x",
                f"{fast_fb_min / fb_min:.2f}x",
                "—" if mem_f is None else f"{mem_f:.1f}",
                "—" if mem_fb is None else f"{mem_fb:.1f}",
                "—" if compile_s is None else f"{compile_s:.1f}",
            ]
        )
    header = [
        "contender",
        "forward ms",
        "fwd+bwd ms",
        "fwd+bwd min ms",
        "fast / this (fwd)",
        "fast / this (fwd+bwd)",
        "same, of minima",
        "peak MB fwd",
        "peak MB fwd+bwd",
        "compile s fwd+bwd",
    ]
    return markdown_table(header, rows), medians


def gru_main(argv=None) -> int:
    from jaxrnn.cells import gru

    parser = argparse.ArgumentParser(description="GRU layer on CPU: " + __doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    params = gru.init(key_p, D, H)
    xs = jax.random.normal(key_x, (T, B, D), jnp.float32)
    table, medians = gru_tables(params, xs, args.rounds)
    print(table, flush=True)
    _, fast_fb, _, fast_fb_min = medians["jaxrnn gru_layer (hand BPTT)"]
    torch_rows = [m for name, m in medians.items() if name.startswith("PyTorch")]
    baselines = {
        "PyTorch `nn.GRU` (the faster of its two rows)": (
            min(m[1] for m in torch_rows),
            min(m[3] for m in torch_rows),
        ),
        "autodiff of the plain scan": medians["jaxrnn scan + jax.grad"][1::2],
        "flax `RNN(GRUCell)`": medians["flax.linen RNN(GRUCell)"][1::2],
    }
    summary = "\n".join(
        f"- {name}: {fb / fast_fb:.2f}x its time ({fb_min / fast_fb_min:.2f}x of minima)"
        for name, (fb, fb_min) in baselines.items()
    )
    load = os.getloadavg()[0]
    load_note = (
        "The machine was shared (load above 1.5 x its cores): PyTorch's OpenMP threads, which\n"
        "wait for each other at every op, suffer far more from that than XLA, so its all-threads\n"
        "row flatters JAX; the 1-thread row is the steadier PyTorch baseline then."
        if load > 1.5 * THREADS
        else "The machine was lightly loaded, so these ratios are representative."
    )
    body = f"""## GRU layer, CPU (`python bench/lstm.py gru`)

{machine_line()}

T = {T}, B = {B}, D = {D}, H = {H}, float32; loss sum(ys), gradients with respect to all
weights and the inputs. Medians of {args.rounds} interleaved rounds after 2 warm-up calls, all
rows of the table in the same rounds. PyTorch runs with `torch.set_num_threads({THREADS})`, the
cores XLA:CPU uses, and with one thread.
Peak memory for JAX as in the LSTM section (XLA's `memory_analysis()`); not measured for
PyTorch here. Compile: seconds to lower and compile the jitted forward+backward once.
1-minute load average at the end of the run: {load:.1f} on {THREADS} cores.

{load_note}

Forward+backward of `jaxrnn.gru_layer` against the strongest baseline of each kind, same run
(ratios of medians, and of minima: the rounds least disturbed by other jobs; above 1: the
fast layer is faster):

{summary}

The rows "choice: ..." change one kernel choice of `jaxrnn.gru_fast.Choices` from the
default; the default unrolls one step, which compiles fastest at about the same speed.

{table}
"""
    if not args.no_write:
        write_section("gru", body)
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1])
        print(json.dumps(measure(rounds)))
    elif sys.argv[1:2] == ["gru"]:
        sys.exit(gru_main(sys.argv[2:]))
    else:
        sys.exit(main())
