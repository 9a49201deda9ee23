"""Tour section and ``jaxrnn train``: an LSTM learning the synthetic tasks with ``fit``."""

from __future__ import annotations

import sys

from jaxrnn.cli._options import SEED_MAX, OptionError, command, integer, number

TITLE = "Training: fit, checkpoints that resume bit-exactly, synthetic tasks"
ORDER = 50

TASKS = ("adding", "copy", "addition")


def _model(hidden: int, in_dim: int, out_dim: int, seed: int):
    """An LSTM with a linear readout: ``init`` params and ``outputs(params, xs) -> (T, B, O)``."""
    import jax
    import jax.numpy as jnp

    import jaxrnn
    from jaxrnn.cells import lstm

    k_cell, k_out = jax.random.split(jax.random.key(seed))
    params = {
        "cell": lstm.init(k_cell, in_dim, hidden, forget_bias=1.0),
        "V": jax.random.normal(k_out, (out_dim, hidden)) / jnp.sqrt(hidden),
        "c": jnp.zeros((out_dim,)),
    }

    def outputs(params, xs):
        carry = lstm.init_carry(xs.shape[1:2], hidden, xs.dtype)
        _, hs = jaxrnn.scan(lstm.apply, params["cell"], carry, xs)
        return hs @ params["V"].T + params["c"]

    return params, outputs


def _task(name: str, args):
    """``(params, data(step), loss_fn, metrics(params), baseline line, batch_axis)``."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxrnn import tasks

    key = jax.random.key(args.seed)
    held_out = jax.random.key(args.seed + 1_000_003)
    if name == "adding":
        data = lambda step: tasks.adding_problem(key, step, batch=args.batch, length=args.length)
        params, outputs = _model(args.hidden, 2, 1, args.seed)

        def loss_fn(params, batch):
            xs, ys = batch
            return jnp.mean((outputs(params, xs)[-1] - ys) ** 2)

        test = tasks.adding_problem(held_out, 0, batch=512, length=args.length)
        metrics = lambda params: {"test_mse": loss_fn(params, test)}
        baseline = "predicting 1 gives mse 1/6 = 0.167"
        return params, data, loss_fn, metrics, baseline, (1, 0)
    if name == "copy":
        k = args.symbols
        data = lambda step: tasks.copy_task(
            key, step, batch=args.batch, length=args.length, delay=args.delay, n_symbols=k
        )
        params, outputs = _model(args.hidden, k + 2, k + 1, args.seed)

        def loss_fn(params, batch):
            xs, targets = batch
            logits = outputs(params, xs)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        test = tasks.copy_task(
            held_out, 0, batch=512, length=args.length, delay=args.delay, n_symbols=k
        )

        def metrics(params):
            xs, targets = test
            guess = jnp.argmax(outputs(params, xs), axis=-1)[-args.length :]
            return {
                "test_loss": loss_fn(params, test),
                "copied": jnp.mean(guess == targets[-args.length :]),
            }

        memoryless = args.length * jnp.log(k) / (2 * args.length + args.delay)
        baseline = f"remembering nothing gives loss L log K / T = {float(memoryless):.3f}"
        return params, data, loss_fn, metrics, baseline, 1
    data = lambda step: tasks.binary_addition(key, step, batch=args.batch, n_bits=args.n_bits)
    params, outputs = _model(args.hidden, 2, 1, args.seed)

    def loss_fn(params, batch):
        xs, ys = batch
        return optax.sigmoid_binary_cross_entropy(outputs(params, xs), ys).mean()

    test = tasks.binary_addition(held_out, 0, batch=512, n_bits=args.n_bits)

    def metrics(params):
        xs, ys = test
        bits = outputs(params, xs) > 0
        return {
            "bits": jnp.mean(bits == (ys > 0.5)),
            "sums": jnp.mean(jnp.all(bits == (ys > 0.5), axis=(0, 2))),
        }

    return params, data, loss_fn, metrics, "guessing gives bits 0.5 and loss log 2 = 0.693", 1


def _devices(args):
    """The mesh of ``--all-devices`` (None without it), after checking --batch against it."""
    import jax

    from jaxrnn import sharding

    if not args.all_devices:
        return None
    devices = jax.devices()
    if len(devices) == 1:
        platform = devices[0].platform
        hint = f"--all-devices: only 1 device is visible ({platform}), so training runs on it"
        if platform == "cpu":
            hint += (
                "; to split the CPU into N devices, set "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts, e.g. "
                "XLA_FLAGS=--xla_force_host_platform_device_count=4 jaxrnn train ..."
            )
        print(hint)
    elif args.batch % len(devices):
        raise OptionError(
            "--batch", f"a multiple of the {len(devices)} devices of --all-devices", args.batch
        )
    return sharding.data_mesh(devices)


def _resumed_step(args) -> int:
    """The step of an existing --checkpoint (0 if there is none), checked against --steps."""
    import os

    from jaxrnn import checkpoint

    if args.checkpoint is None:
        if args.checkpoint_every is not None:
            raise OptionError("--checkpoint-every", "to come with --checkpoint PATH", "it alone")
        return 0
    if os.path.isdir(args.checkpoint):
        raise OptionError("--checkpoint", "a file path (not a directory)", args.checkpoint)
    if not os.path.exists(args.checkpoint):
        return 0
    step = checkpoint.read_manifest(args.checkpoint)["step"]
    if step > args.steps:
        raise OptionError(
            "--steps",
            f"at least {step}, the step of --checkpoint {args.checkpoint!r} (it resumes from it)",
            args.steps,
        )
    return step


def _fit(train, optax, args, params, data, loss_fn, metrics, mesh, batch_axis):
    return train.fit(
        loss_fn,
        params,
        optax.adam(args.lr),
        data,
        args.steps,
        eval_fn=metrics,
        eval_every=args.eval_every,
        checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        mesh=mesh,
        batch_axis=batch_axis,
        progress=not args.no_progress,
    )


def run_train(args) -> int:
    """``jaxrnn train TASK``: train, print the losses and the held-out metrics."""
    import time

    import optax

    from jaxrnn import train

    if args.task == "adding" and args.length < 2:
        raise OptionError("--length", "at least 2 for adding (two marked numbers)", args.length)
    params, data, loss_fn, metrics, baseline, batch_axis = _task(args.task, args)
    mesh = _devices(args)
    start_step = _resumed_step(args)
    if start_step:  # a checkpoint of another model is refused before anything is printed
        from jaxrnn import checkpoint

        train.check_param_shapes(args.checkpoint, checkpoint.read_manifest(args.checkpoint), params)
    if start_step == args.steps:
        print(
            f"{args.task}: resumed from step {start_step} of {args.checkpoint}: nothing left to "
            f"train (--steps {args.steps}); give a larger --steps to train on"
        )
    elif start_step:
        print(
            f"{args.task}: resumed from step {start_step} of {args.checkpoint}; training steps "
            f"{start_step + 1} to {args.steps}"
        )
    start = time.perf_counter()
    try:
        result = _fit(train, optax, args, params, data, loss_fn, metrics, mesh, batch_axis)
    except train.NonFiniteLossError as error:
        value = error.result.history.losses[-1]
        kept = f"; {args.checkpoint} keeps the last good step" if args.checkpoint else ""
        print(
            f"jaxrnn train: the loss of step {error.step + 1} is {value}, not finite: training "
            f"stopped{kept}; try a smaller --lr (now {args.lr:g})",
            file=sys.stderr,
        )
        return 1
    losses = result.history.losses
    seconds, devices = time.perf_counter() - start, mesh.size if mesh else 1
    if start_step == args.steps:
        done = "all from the checkpoint"
    elif start_step:
        done = (
            f"the last {args.steps - start_step} trained in {seconds:.1f} s on {devices} device(s)"
        )
    else:
        done = f"trained in {seconds:.1f} s on {devices} device(s)"
    print(f"{args.task}: {len(losses)} step{'s' * (len(losses) != 1)}, {done}; {baseline}")
    marks = sorted({0, len(losses) // 4, len(losses) // 2, 3 * len(losses) // 4, len(losses) - 1})
    print("loss: " + ", ".join(f"step {k + 1}: {losses[k]:.4f}" for k in marks))
    for step, value in zip(result.history.eval_steps, result.history.evals, strict=True):
        print(f"held-out at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in value.items()))
    return 0


def add_commands(subparsers) -> None:
    parser = command(
        subparsers,
        "train",
        run_train,
        help="train an LSTM on the adding problem, the copy task or binary addition",
    )
    parser.add_argument("task", choices=TASKS, help="the task to learn")
    parser.add_argument(
        "--steps", type=integer(1), default=1000, help="total training steps, resumed ones included"
    )
    parser.add_argument("--hidden", type=integer(1), default=32, help="LSTM hidden size H")
    parser.add_argument("--batch", type=integer(1), default=64, help="sequences per step")
    parser.add_argument(
        "--length",
        type=integer(1),
        default=30,
        help="adding: the sequence length T (at least 2); copy: how many symbols to copy "
        "(30 is hard, try 5); addition: not used",
    )
    parser.add_argument(
        "--delay",
        type=integer(1),
        default=10,
        help="copy: steps from the last symbol shown to the first recalled",
    )
    parser.add_argument("--symbols", type=integer(1), default=8, help="copy: alphabet size K")
    parser.add_argument(
        "--n-bits", type=integer(1, 30), default=8, help="addition: bits per operand"
    )
    parser.add_argument("--lr", type=number(0, open_low=True), default=1e-2, help="Adam step size")
    parser.add_argument(
        "--seed", type=integer(0, SEED_MAX), default=0, help="seed of the weights and the data"
    )
    parser.add_argument(
        "--eval-every",
        type=integer(1),
        default=None,
        metavar="N",
        help="evaluate on held-out data every N steps (default: once, at the end)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="checkpoint file, written at the end and resumed from if it exists (default: none)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=integer(1),
        default=None,
        metavar="N",
        help="also write the checkpoint every N steps (default: only at the end)",
    )
    parser.add_argument(
        "--all-devices",
        action="store_true",
        help="data-parallel over every visible device (a jax.sharding mesh; --batch must be a "
        "multiple of their number)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def tour():
    import argparse
    import os
    import tempfile
    import time

    import jax
    import numpy as np
    import optax

    from jaxrnn import checkpoint, train

    args = argparse.Namespace(seed=0, hidden=16, batch=32, length=20)
    params, data, loss_fn, _, baseline, _ = _task("adding", args)
    steps, adam = 300, optax.adam(1e-2)
    start = time.perf_counter()
    result = train.fit(loss_fn, params, adam, data, steps, progress=False)
    losses = result.history.losses
    yield (
        f"adding problem, T = {args.length}, LSTM H = {args.hidden}, {steps} adam steps "
        f"(compile included) in {time.perf_counter() - start:.1f} s: mse "
        f"{losses[:10].mean():.3f} (first 10 steps) -> {losses[-10:].mean():.3f} (last 10); "
        f"{baseline}"
    )
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "run.npz")
        train.fit(loss_fn, params, adam, data, steps // 2, checkpoint=path, progress=False)
        size = os.path.getsize(path)
        resumed = train.fit(loss_fn, params, adam, data, steps, checkpoint=path, progress=False)
        manifest = checkpoint.read_manifest(path)
    same = all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(resumed.params), jax.tree.leaves(result.params), strict=True
        )
    ) and np.array_equal(resumed.history.losses, losses)
    yield (
        f"{steps // 2} steps, checkpoint ({size / 1024:.0f} KiB: {len(manifest['leaves'])} "
        f"arrays + JSON manifest, sha256 {manifest['sha256'][:8]}...), resume, {steps // 2} "
        f"more: params and losses equal the uninterrupted run bit for bit: {same}"
    )
