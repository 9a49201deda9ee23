"""A training loop: one jit-compiled step, progress, evaluation, checkpoints, many devices.

One step of gradient-based training with an optax optimizer (loss L, parameters theta,
optimizer state s, batch b_k drawn for step k):

    l_k, g_k       = L(theta_k, b_k), dL/dtheta (theta_k, b_k)
    u_k, s_{k+1}   = optimizer.update(g_k, s_k, theta_k)
    theta_{k+1}    = theta_k + u_k

:func:`fit` runs this step, compiled once with ``jax.jit``, for ``steps`` steps. The plain
meaning (without progress bar, evaluation and checkpoints)::

    def fit(loss_fn, params, optimizer, data, steps):
        opt_state = optimizer.init(params)
        losses = []
        for k in range(steps):
            params, opt_state, loss = train_step(params, opt_state, data(k))
            losses.append(loss)
        return params, opt_state, losses

Because the batch of step k is ``data(k)`` (see :mod:`jaxrnn.tasks`), a run restored from a
checkpoint at step k continues with exactly the batches, parameters and optimizer state of
the uninterrupted run, and ends with the same bits.

A loss that is not finite stops the run (``on_nonfinite="stop"``): from that step on the
compiled step keeps params and optimizer state as they were before it, the host sees the
step within ``refresh_seconds`` (and before any evaluation or checkpoint), and
:class:`NonFiniteLossError` names it, carrying the last good state; no checkpoint is written
after it. ``on_nonfinite="warn"`` warns and trains on, writing no more checkpoints.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import checkpoint as ckpt
from jaxrnn._checks import check_positive_int, is_int, is_number


class History(NamedTuple):
    """What happened during :func:`fit`.

    Attributes:
      losses: (steps,) the training loss of every step, from step 0 (restored ones included).
      eval_steps: (E,) integer steps after which ``eval_fn`` ran.
      evals: E values of ``eval_fn`` (floats, or dicts of floats).
    """

    losses: np.ndarray
    eval_steps: np.ndarray
    evals: list


class FitResult(NamedTuple):
    """The return value of :func:`fit`: ``params, opt_state, history = fit(...)``."""

    params: Any
    opt_state: Any
    history: History


class NonFiniteLossError(FloatingPointError):
    """The loss of a step of :func:`fit` was NaN or infinite (with ``on_nonfinite="stop"``).

    Attributes:
      step: the first step whose loss was not finite.
      result: a :class:`FitResult` with the params and optimizer state from before that
        step and ``history.losses`` up to it (its last entry the non-finite loss).
    """

    def __init__(self, message: str, step: int, result: FitResult):
        super().__init__(message)
        self.step, self.result = step, result


ON_NONFINITE = ("stop", "warn")


def make_step(loss_fn, optimizer):
    """The training step ``(params, opt_state, batch) -> (params, opt_state, loss)``.

    Pure and not yet compiled: ``jax.jit(make_step(loss_fn, optimizer))`` is what
    :func:`fit` runs.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      optimizer: an ``optax.GradientTransformation``.

    Returns:
      ``train_step(params, opt_state, batch) -> (params, opt_state, loss)``: the updated
      params and optimizer state (same trees, shapes and dtypes as given) and the scalar loss
      of ``params`` on ``batch`` (before the update).
    """
    import optax

    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def _guarded_step(loss_fn, optimizer, freeze: bool):
    """``make_step``'s step, also tracking the first step with a non-finite loss.

    ``(params, opt_state, batch, step, first_bad) -> (params, opt_state, loss, first_bad)``;
    with ``freeze``, params and optimizer state stay as they were from that step on.
    """
    train_step = make_step(loss_fn, optimizer)

    def step_fn(params, opt_state, batch, step, first_bad):
        new_params, new_state, loss = train_step(params, opt_state, batch)
        first_bad = jnp.where((first_bad < 0) & ~jnp.isfinite(loss), step, first_bad)
        if freeze:
            keep = lambda new, old: jnp.where(first_bad >= 0, old, new)
            new_params = jax.tree_util.tree_map(keep, new_params, params)
            new_state = jax.tree_util.tree_map(keep, new_state, opt_state)
        return new_params, new_state, loss, first_bad

    return step_fn


def _jit_step(loss_fn, optimizer, mesh, freeze=True):
    step_fn = _guarded_step(loss_fn, optimizer, freeze)
    if mesh is None:
        return jax.jit(step_fn)
    from jaxrnn import sharding

    everywhere = sharding.replicated(mesh)
    return jax.jit(step_fn, out_shardings=(everywhere,) * 4)


_cached_jit_step = functools.lru_cache(maxsize=16)(_jit_step)


def _compiled_step(loss_fn, optimizer, mesh, freeze):
    """The jitted step, shared by calls of :func:`fit` with the same loss, optimizer and mesh.

    (So a resumed or repeated run in the same process does not compile again.)
    """
    try:
        return _cached_jit_step(loss_fn, optimizer, mesh, freeze)
    except TypeError:  # an unhashable optimizer: compile for this call only
        return _jit_step(loss_fn, optimizer, mesh, freeze)


def _check_optional_interval(value, *, name: str):
    if value is not None:
        check_positive_int(value, name=name)


def _check_arguments(loss_fn, params, optimizer, steps, eval_fn, eval_every, path, every):
    if not callable(loss_fn):
        raise ValueError(f"loss_fn: expected a callable loss_fn(params, batch), got {loss_fn!r}")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError(
            f"optimizer: expected an optax GradientTransformation (init, update), got "
            f"{type(optimizer).__name__}"
        )
    check_positive_int(steps, name="steps")
    _check_optional_interval(eval_every, name="eval_every")
    _check_optional_interval(every, name="checkpoint_every")
    if eval_fn is not None and not callable(eval_fn):
        raise ValueError(f"eval_fn: expected a callable eval_fn(params), got {eval_fn!r}")
    if eval_every is not None and eval_fn is None:
        raise ValueError("eval_every: given without an eval_fn to run")
    if every is not None and path is None:
        raise ValueError("checkpoint_every: given without a checkpoint path to save to")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"checkpoint: expected a file path, got {type(path).__name__}")
    if path is not None:  # fail now, not at the first save after hours of training
        directory = os.path.dirname(os.path.abspath(os.fspath(path)))
        if not os.path.isdir(directory):
            raise ValueError(
                f"checkpoint: expected a file path in an existing directory, but "
                f"{directory!r} does not exist"
            )
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves:
        raise ValueError("params: expected a pytree of floating arrays, got no arrays")
    for key_path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"params{jax.tree_util.keystr(key_path)}: expected a floating array, got "
                f"{type(leaf).__name__} of dtype {dtype}"
            )


def _check_loss(loss_fn, params, batch):
    """Trace ``loss_fn`` once: it must return a floating scalar."""
    out = jax.eval_shape(loss_fn, params, batch)
    if not (hasattr(out, "shape") and out.shape == () and jnp.issubdtype(out.dtype, jnp.floating)):
        got = (
            f"shape {out.shape} and dtype {out.dtype}"
            if hasattr(out, "shape")
            else type(out).__name__
        )
        raise ValueError(f"loss_fn: expected a floating scalar loss, got {got}")
    return out.dtype


def _check_eval(eval_fn, params):
    """Trace ``eval_fn`` once: it must return a scalar or a flat dict of scalars."""
    out = jax.eval_shape(eval_fn, params)
    values = out.values() if isinstance(out, dict) else [out]
    for value in values:
        if getattr(value, "shape", None) != ():
            got = getattr(value, "shape", type(value).__name__)
            got = f"shape {got}" if hasattr(value, "shape") else got
            raise ValueError(f"eval_fn: expected a scalar or a dict of scalars, got {got}")


def _eval_value(value):
    """An ``eval_fn`` result as a float or a dict of floats (JSON-ready)."""
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    return float(value)


def _short(value) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v:.4g}" for k, v in value.items())
    return f"{value:.4g}"


def _progress_bar(steps, start, enabled):
    """A tqdm bar (a widget in Jupyter when ipywidgets is there, text otherwise)."""
    import tqdm

    if not enabled:
        return tqdm.tqdm(total=steps, initial=start, disable=True)
    with warnings.catch_warnings():  # tqdm.auto warns when it falls back to text
        warnings.simplefilter("ignore", tqdm.TqdmWarning)
        from tqdm.auto import tqdm as auto_tqdm
    return auto_tqdm(total=steps, initial=start, unit="step", desc="fit")


def check_param_shapes(path, manifest, params):
    """A checkpoint of another model says so in terms of params, before any other leaf."""
    saved = {leaf["path"]: tuple(leaf["shape"]) for leaf in manifest["leaves"]}
    differ = [
        (leaf_path, saved[leaf_path], tuple(np.shape(leaf)))
        for leaf_path, leaf in ckpt.leaf_entries({"params": params})[0]
        if leaf_path in saved and saved[leaf_path] != tuple(np.shape(leaf))
    ]
    if differ:
        leaf_path, there, here = differ[0]
        raise ValueError(
            f"checkpoint {os.fspath(path)!r}: written for other parameter shapes "
            f"({len(differ)} params leaves differ, e.g. {leaf_path} is {there} there and {here} "
            "here); it belongs to another model or configuration: resume with the same "
            "settings or choose a new checkpoint path"
        )


def _restore(path, params, opt_state, steps):
    """``(params, opt_state, step, losses, eval_steps, evals)`` from the checkpoint."""
    manifest = ckpt.read_manifest(path)
    step = manifest["step"]
    if step > steps:
        raise ValueError(
            f"steps: the checkpoint {os.fspath(path)!r} is at step {step}, past steps={steps}"
        )
    check_param_shapes(path, manifest, params)
    saved = {leaf["path"]: leaf["dtype"] for leaf in manifest["leaves"]}
    dtype = saved.get("['losses']")
    dtype = dtype if dtype in ("bfloat16", "float16", "float32", "float64") else "float32"
    # abstract, so that a step claimed by the file allocates nothing before it is checked
    losses = jax.ShapeDtypeStruct((step,), jnp.dtype(dtype))
    # as jax arrays, the kind and dtypes the step saves (numpy float64 params are float32 then,
    # unless x64 is on)
    as_jax = lambda x: jnp.asarray(x) if isinstance(x, (np.ndarray, np.generic)) else x
    like = jax.tree_util.tree_map(as_jax, {"params": params, "opt_state": opt_state})
    like["losses"] = losses
    tree, step, meta = ckpt.restore(path, like)
    history = meta if isinstance(meta, dict) else {}
    eval_steps, evals = history.get("eval_steps", []), history.get("evals", [])
    if not (
        isinstance(eval_steps, list)
        and isinstance(evals, list)
        and len(eval_steps) == len(evals)
        and all(is_int(k) for k in eval_steps)
    ):
        raise ValueError(
            f"checkpoint {os.fspath(path)!r}: expected metadata with lists eval_steps "
            f"(integers) and evals of the same length, got {type(eval_steps).__name__} "
            f"and {type(evals).__name__}"
        )
    return (
        tree["params"],
        tree["opt_state"],
        step,
        list(np.asarray(tree["losses"])),
        list(eval_steps),
        list(evals),
    )


def _nonfinite_message(step: int, losses, on_nonfinite: str) -> str:
    value = float(jax.device_get(losses[step]))
    if on_nonfinite == "warn":
        return (
            f"fit: the loss of step {step} is {value}, not finite; training goes on "
            "(on_nonfinite='warn') and writes no more checkpoints"
        )
    return (
        f"fit: the loss of step {step} is {value}, not finite; training stopped there "
        f"(on_nonfinite='stop'): the error's result holds params and optimizer state from "
        f"before step {step}"
    )


def fit(
    loss_fn,
    params,
    optimizer,
    data,
    steps: int,
    *,
    opt_state=None,
    eval_fn=None,
    eval_every: int | None = None,
    checkpoint=None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    mesh=None,
    batch_axis=1,
    process_local_data: bool = False,
    progress: bool = True,
    refresh_seconds: float = 0.5,
    on_nonfinite: str = "stop",
) -> FitResult:
    """Train ``params`` with ``optimizer`` on ``loss_fn`` until step ``steps``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, traceable by JAX (e.g. the mean over the
        batch of a per-sequence loss).
      params: a pytree of floating arrays.
      optimizer: an ``optax.GradientTransformation``, e.g. ``optax.adam(1e-2)``.
      data: ``data(step) -> batch``, a pure function of the step index (so that a resumed
        run sees the same batches; see :mod:`jaxrnn.tasks`), or one fixed batch used at
        every step.
      steps: the total number of steps; a run resumed at step k does ``steps - k`` more.
      opt_state: the initial optimizer state (default ``optimizer.init(params)``).
      eval_fn: optional ``eval_fn(params) -> scalar or dict of scalars`` (jit-compiled),
        run every ``eval_every`` steps, or once at the end if ``eval_every`` is None.
      eval_every: interval of evaluation in steps.
      checkpoint: optional path of a checkpoint file (see :mod:`jaxrnn.checkpoint`). It is
        written every ``checkpoint_every`` steps and at the end, with params, optimizer
        state, step, losses and evals. If it exists and ``resume`` is true, training
        continues from it (its tree, shapes and dtypes must match ``params`` and
        ``opt_state``). Across hosts, process 0 writes it (on a file system all processes
        share), the others wait for it, and every process reads it to resume.
      checkpoint_every: interval of checkpoints in steps (default: only at the end).
      resume: continue from an existing ``checkpoint`` (default True); if False, it is
        overwritten.
      mesh: optional 1-D ``jax.sharding.Mesh`` (:func:`jaxrnn.sharding.data_mesh`): params
        and optimizer state are replicated on its devices and each batch is split along
        ``batch_axis``; the same step then runs data-parallel on N devices.
      batch_axis: the batch axis of the batch's leaves (an int, or a pytree prefix of the
        batch such as ``(1, 0)`` for ``(xs (T, B, D), ys (B, 1))``); used with ``mesh``.
      process_local_data: with ``mesh`` across several processes, ``data(step)`` returns
        only this process's rows of the batch (B / P of them, in process order) instead of
        the same global batch in every process (see :func:`jaxrnn.sharding.shard_batch`).
      progress: show a tqdm progress bar with the running loss.
      refresh_seconds: seconds between refreshes of the running loss on the bar and looks
        for a non-finite loss (each one waits for the device, so it is time-based: per-step
        waits would stall the pipeline).
      on_nonfinite: what a NaN or infinite loss does. ``"stop"`` (default): training stops
        at that step, as soon as the host sees it (within ``refresh_seconds``, and before
        any evaluation or checkpoint), and :class:`NonFiniteLossError` is raised naming
        the step; its ``result`` holds params and optimizer state from before the step
        (the step and any that ran after it leave them unchanged) and the losses up to it;
        ``checkpoint`` keeps the last one written before it. ``"warn"``: a warning names
        the step and training goes on, without writing checkpoints any more.

    Returns:
      ``FitResult(params, opt_state, history)`` with ``history.losses`` of shape (steps,).

    Raises:
      NonFiniteLossError: with ``on_nonfinite="stop"``, for a loss that is not finite.
    """
    from jaxrnn import sharding

    _check_arguments(
        loss_fn, params, optimizer, steps, eval_fn, eval_every, checkpoint, checkpoint_every
    )
    if not (is_number(refresh_seconds) and refresh_seconds > 0):
        raise ValueError(f"refresh_seconds: expected a positive number, got {refresh_seconds!r}")
    if process_local_data and mesh is None:
        raise ValueError("process_local_data: given without a mesh to assemble the batch on")
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite: expected one of {ON_NONFINITE}, got {on_nonfinite!r}")
    get_batch = data if callable(data) else (lambda step: data)
    if opt_state is None:
        opt_state = optimizer.init(params)
    start, losses, eval_steps, evals = 0, [], [], []
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        params, opt_state, start, losses, eval_steps, evals = _restore(
            checkpoint, params, opt_state, steps
        )
    loss_dtype = _check_loss(loss_fn, params, get_batch(start % steps))

    train_step = _compiled_step(loss_fn, optimizer, mesh, on_nonfinite == "stop")
    place_batch = lambda batch: batch
    if mesh is not None:
        params, opt_state = sharding.replicate((params, opt_state), mesh)
        place_batch = lambda batch: sharding.shard_batch(
            batch, mesh, batch_axis, process_local=process_local_data
        )
    evaluate = jax.jit(eval_fn) if eval_fn is not None else None
    if eval_fn is not None:
        _check_eval(eval_fn, params)

    def save(step):
        losses[:] = jax.device_get(losses)
        tree = jax.device_get({"params": params, "opt_state": opt_state})
        tree["losses"] = np.asarray(losses, loss_dtype)
        if jax.process_index() == 0:  # across hosts, one writer (the state is replicated)
            history = {"eval_steps": eval_steps, "evals": evals}
            ckpt.save(checkpoint, tree, step=step, metadata=history)
        if jax.process_count() > 1:  # and nobody reads it before it is written
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxrnn checkpoint at step {step}")

    shown = start  # losses[:shown] are in the running loss already on the bar
    last_refresh = last_look = time.monotonic()
    first_bad, seen_bad, saved = jnp.asarray(-1, jnp.int32), -1, start if start else None
    bar = _progress_bar(steps, start, progress)
    try:
        for step in range(start, steps):
            params, opt_state, loss, first_bad = train_step(
                params, opt_state, place_batch(get_batch(step)), np.int32(step), first_bad
            )
            losses.append(loss)
            done = step + 1
            bar.update(1)
            if progress and (done == steps or time.monotonic() - last_refresh > refresh_seconds):
                running = np.mean(jax.device_get(losses[shown:]))
                bar.set_postfix_str(f"loss={running:.4g}", refresh=False)
                shown, last_refresh = len(losses), time.monotonic()
            due_eval = evaluate is not None and (
                (eval_every is not None and done % eval_every == 0)
                or (eval_every is None and done == steps)
            )
            due_save = checkpoint is not None and (
                done == steps or (checkpoint_every is not None and done % checkpoint_every == 0)
            )
            if seen_bad < 0 and (
                due_eval or due_save or time.monotonic() - last_look > refresh_seconds
            ):
                seen_bad, last_look = int(first_bad), time.monotonic()  # waits for the device
                if seen_bad >= 0 and on_nonfinite == "stop":
                    break
                if seen_bad >= 0:
                    warnings.warn(_nonfinite_message(seen_bad, losses, on_nonfinite), stacklevel=2)
            if due_eval:
                eval_steps.append(done)
                evals.append(_eval_value(jax.device_get(evaluate(params))))
                if progress:
                    bar.write(f"step {done}: eval {_short(evals[-1])}")
            if due_save and seen_bad < 0:
                save(done)
                saved = done
    finally:
        bar.close()
    if seen_bad < 0:
        seen_bad = int(first_bad)  # the steps since the last look
        if seen_bad >= 0 and on_nonfinite == "warn":
            warnings.warn(_nonfinite_message(seen_bad, losses, on_nonfinite), stacklevel=2)
    if seen_bad >= 0 and on_nonfinite == "stop":
        del losses[seen_bad + 1 :]
        history = History(
            losses=np.asarray(jax.device_get(losses), dtype=loss_dtype),
            eval_steps=np.asarray(eval_steps, dtype=np.int64),
            evals=evals,
        )
        message = _nonfinite_message(seen_bad, losses, on_nonfinite)
        if checkpoint is not None:
            kept = f"keeps step {saved}" if saved is not None else "was not written by this run"
            message += f"; the checkpoint {os.fspath(checkpoint)!r} {kept}"
        raise NonFiniteLossError(message, seen_bad, FitResult(params, opt_state, history))
    history = History(
        losses=np.asarray(jax.device_get(losses), dtype=loss_dtype),
        eval_steps=np.asarray(eval_steps, dtype=np.int64),
        evals=evals,
    )
    return FitResult(params, opt_state, history)
