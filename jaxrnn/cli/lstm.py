"""Tour section and ``jaxrnn lstm``: the fast LSTM layer and weight interop."""

from __future__ import annotations

from jaxrnn.cli._options import command, integer

TITLE = "A fast LSTM layer: hand BPTT as custom_vjp; weights to and from PyTorch and flax"
ORDER = 40


def _problem(n_steps, batch, in_dim, hidden, dtype="float32"):
    import jax

    import jaxrnn
    from jaxrnn.cells import lstm

    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    params = lstm.init(key_p, in_dim, hidden, dtype=dtype)
    xs = jax.random.normal(key_x, (n_steps, batch, in_dim), dtype)
    carry = lstm.init_carry((batch,), hidden, dtype)

    def fast(p, x):
        return jaxrnn.lstm_layer(p, carry, x)[1].sum()

    def autodiff(p, x):
        return jaxrnn.scan(lstm.apply, p, carry, x)[1].sum()

    grads = {
        name: jax.jit(jax.grad(fn, argnums=(0, 1)))
        for name, fn in (("fast", fast), ("autodiff", autodiff))
    }
    return params, xs, grads


def _interleaved_median_ms(fns: dict, repeats: int) -> dict:
    """Median wall time in ms of each function, the functions timed in turn each round."""
    import statistics
    import time

    import jax

    times = {name: [] for name in fns}
    for fn in fns.values():
        jax.block_until_ready(fn())
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _compare(n_steps, batch, in_dim, hidden, repeats):
    """Max relative gradient difference and median fwd+bwd times (ms) of both paths."""
    import jax
    import jax.numpy as jnp

    params, xs, grads = _problem(n_steps, batch, in_dim, hidden)
    got = {name: g(params, xs) for name, g in grads.items()}
    diffs = jax.tree_util.tree_map(
        lambda a, b: float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a))),
        got["autodiff"],
        got["fast"],
    )
    times = _interleaved_median_ms(
        {name: (lambda g=g: g(params, xs)) for name, g in grads.items()}, repeats
    )
    return max(jax.tree_util.tree_leaves(diffs)), times


def tour():
    import importlib.util

    import jax.numpy as jnp
    import numpy as np

    import jaxrnn

    size = (64, 16, 16, 64)
    diff, times = _compare(*size, repeats=15)
    yield (
        f"T, B, D, H = {size}, float32: gradients of the hand-BPTT custom_vjp equal jax.grad "
        f"of the plain scan to {diff:.1e} (relative; float64 tests: <= 1e-10)"
    )
    yield (
        f"forward+backward: fast path {times['fast']:.1f} ms, autodiff "
        f"{times['autodiff']:.1f} ms ({times['autodiff'] / times['fast']:.2f}x faster); "
        "full benchmark against PyTorch, flax and equinox: python bench/lstm.py"
    )
    if importlib.util.find_spec("torch") is None:
        yield "PyTorch is not installed: skipping the nn.LSTM interop demonstration"
        return
    import torch

    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4)
    xs = np.random.default_rng(0).normal(size=(10, 2, 3)).astype(np.float32)
    with torch.no_grad():
        ys_torch = module(torch.from_numpy(xs))[0].numpy()
    params = jaxrnn.interop.from_torch_lstm(module.state_dict())
    zero = jaxrnn.cells.lstm.init_carry((2,), 4)
    _, ys = jaxrnn.lstm_layer(params, (zero[0], zero[1]), jnp.asarray(xs))
    flax_back = jaxrnn.interop.from_flax_lstm_cell(jaxrnn.interop.to_flax_lstm_cell(params))
    same = all(bool(jnp.all(flax_back[k] == params[k])) for k in params)
    yield (
        f"a PyTorch nn.LSTM's state dict (gates i, f, g, o; two biases) loaded into jaxrnn: "
        f"max |ys - ys_torch| = {float(np.max(np.abs(np.asarray(ys) - ys_torch))):.1e}; "
        f"through flax LSTMCell params and back: {'identical' if same else 'DIFFERENT'}"
    )


def compare_command(args) -> int:
    diff, times = _compare(args.steps, args.batch, args.in_dim, args.hidden, args.repeats)
    print(f"T = {args.steps}, B = {args.batch}, D = {args.in_dim}, H = {args.hidden}, float32")
    print(f"  max relative gradient difference fast vs autodiff: {diff:.1e}")
    for name, ms in times.items():
        print(f"  {name:9s} forward+backward median {ms:8.1f} ms")
    print(f"  autodiff / fast: {times['autodiff'] / times['fast']:.2f}x")
    return 0


def add_commands(subparsers) -> None:
    parser = command(
        subparsers,
        "lstm",
        compare_command,
        help="time the fast LSTM layer against autodiff of the plain scan",
    )
    parser.add_argument("--steps", type=integer(1), default=256, help="sequence length T")
    parser.add_argument("--batch", type=integer(1), default=32, help="batch size B")
    parser.add_argument("--in-dim", type=integer(1), default=64, help="input size D")
    parser.add_argument("--hidden", type=integer(1), default=256, help="hidden size H")
    parser.add_argument(
        "--repeats", type=integer(1), default=7, help="timed runs of each path, median shown"
    )
