"""fit: the step against a NumPy loop, bit-exact resume, evaluation, progress, errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn
from jaxrnn import checkpoint, tasks, train
from jaxrnn.cells import lstm

HIDDEN, LENGTH, BATCH = 4, 6, 8
KEY = jax.random.key(0)


def _lstm_params():
    k_cell, k_out = jax.random.split(jax.random.key(1))
    return {
        "cell": lstm.init(k_cell, 2, HIDDEN),
        "V": jax.random.normal(k_out, (1, HIDDEN), jnp.float32) * 0.5,
        "c": jnp.zeros((1,), jnp.float32),
    }


def _lstm_loss(params, batch):
    xs, ys = batch
    carry = lstm.init_carry(xs.shape[1:2], HIDDEN, jnp.float32)
    (_, h), _ = jaxrnn.scan(lstm.apply, params["cell"], carry, xs)
    return jnp.mean((h @ params["V"].T + params["c"] - ys) ** 2)


def _adding(step):
    return tasks.adding_problem(KEY, step, batch=BATCH, length=LENGTH)


def _assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


# Linear least squares, for which one SGD step has a closed form in NumPy:
#   L(w) = mean_n (x_n . w - y_n)^2,  dL/dw = 2/B X^T (X w - y),  w <- w - lr dL/dw.
def _regression_batch(step):
    rng = np.random.default_rng(step)
    xs = rng.normal(size=(16, 3))
    return xs, xs @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=16)


def _regression_loss(params, batch):
    xs, ys = batch
    return jnp.mean((xs @ params["w"] - ys) ** 2)


def _numpy_sgd(w, steps, lr):
    losses, trajectory = [], []
    for step in range(steps):
        xs, ys = _regression_batch(step)
        residual = xs @ w - ys
        losses.append(np.mean(residual**2))
        w = w - lr * 2 / len(ys) * xs.T @ residual
        trajectory.append(w)
    return w, np.array(losses), trajectory


def test_fit_matches_a_numpy_sgd_loop():
    w0 = np.array([0.3, 0.2, -0.1])
    result = train.fit(
        _regression_loss,
        {"w": jnp.asarray(w0)},
        optax.sgd(0.05),
        _regression_batch,
        12,
        progress=False,
    )
    w, losses, _ = _numpy_sgd(w0, 12, 0.05)
    np.testing.assert_allclose(result.params["w"], w, rtol=1e-12)
    np.testing.assert_allclose(result.history.losses, losses, rtol=1e-12)
    assert result.history.losses.dtype == np.float64


def test_evaluation_runs_at_the_interval_on_the_current_params():
    w0 = np.zeros(3)
    _, _, trajectory = _numpy_sgd(w0, 9, 0.05)
    held_out = _regression_batch(1000)

    def evaluate(params):
        return {"mse": _regression_loss(params, held_out), "norm": jnp.sum(params["w"] ** 2)}

    result = train.fit(
        _regression_loss,
        {"w": jnp.asarray(w0)},
        optax.sgd(0.05),
        _regression_batch,
        9,
        eval_fn=evaluate,
        eval_every=4,
        progress=False,
    )
    assert result.history.eval_steps.tolist() == [4, 8]
    for step, value in zip(result.history.eval_steps, result.history.evals, strict=True):
        w = trajectory[step - 1]
        expected = np.mean((held_out[0] @ w - held_out[1]) ** 2)
        assert value["mse"] == pytest.approx(expected, rel=1e-12)
        assert value["norm"] == pytest.approx(np.sum(w**2), rel=1e-12)
    at_end = train.fit(
        _regression_loss,
        {"w": jnp.asarray(w0)},
        optax.sgd(0.05),
        _regression_batch,
        3,
        eval_fn=lambda p: _regression_loss(p, held_out),
        progress=False,
    )
    assert at_end.history.eval_steps.tolist() == [3] and isinstance(at_end.history.evals[0], float)


def test_a_fixed_batch_is_used_at_every_step():
    batch = _regression_batch(0)
    result = train.fit(
        _regression_loss, {"w": jnp.zeros(3)}, optax.sgd(0.05), batch, 5, progress=False
    )
    w = np.zeros(3)
    for _ in range(5):
        w = w - 0.05 * 2 / 16 * batch[0].T @ (batch[0] @ w - batch[1])
    np.testing.assert_allclose(result.params["w"], w, rtol=1e-12)


def test_train_2n_equals_train_n_save_restore_train_n_bit_exactly(tmp_path):
    n = 4
    optimizer = optax.adam(3e-2)
    straight = train.fit(_lstm_loss, _lstm_params(), optimizer, _adding, 2 * n, progress=False)
    path = tmp_path / "run.npz"
    first = train.fit(
        _lstm_loss, _lstm_params(), optimizer, _adding, n, checkpoint=path, progress=False
    )
    assert checkpoint.read_manifest(path)["step"] == n
    assert len(first.history.losses) == n
    # as a fresh process would: fresh params (fit restores the saved state over them) and a
    # fresh compilation of the step
    train._cached_jit_step.cache_clear()
    resumed = train.fit(
        _lstm_loss, _lstm_params(), optimizer, _adding, 2 * n, checkpoint=path, progress=False
    )
    _assert_trees_equal(resumed.params, straight.params)
    _assert_trees_equal(resumed.opt_state, straight.opt_state)
    assert resumed.history.losses.dtype == np.float32
    assert np.array_equal(resumed.history.losses, straight.history.losses)
    assert checkpoint.read_manifest(path)["step"] == 2 * n
    # losses went down: the model learns (a sanity check, not the point of this test)
    assert not np.array_equal(straight.params["V"], _lstm_params()["V"])


def test_a_crashed_run_resumes_from_its_last_periodic_checkpoint(tmp_path):
    optimizer = optax.adam(3e-2)
    straight = train.fit(_lstm_loss, _lstm_params(), optimizer, _adding, 8, progress=False)

    def crashing_data(step):
        if step == 7:
            raise RuntimeError("killed (simulated)")
        return _adding(step)

    path = tmp_path / "run.npz"
    with pytest.raises(RuntimeError, match="simulated"):
        train.fit(
            _lstm_loss,
            _lstm_params(),
            optimizer,
            crashing_data,
            8,
            checkpoint=path,
            checkpoint_every=3,
            progress=False,
        )
    assert checkpoint.read_manifest(path)["step"] == 6
    resumed = train.fit(
        _lstm_loss, _lstm_params(), optimizer, _adding, 8, checkpoint=path, progress=False
    )
    _assert_trees_equal(resumed.params, straight.params)
    _assert_trees_equal(resumed.opt_state, straight.opt_state)
    assert np.array_equal(resumed.history.losses, straight.history.losses)


def test_resume_false_starts_over_and_resume_at_the_end_does_nothing(tmp_path):
    path = tmp_path / "run.npz"
    params = {"w": jnp.zeros(3)}
    args = (_regression_loss, params, optax.sgd(0.05), _regression_batch)
    done = train.fit(*args, 4, checkpoint=path, progress=False)
    again = train.fit(*args, 4, checkpoint=path, progress=False)
    _assert_trees_equal(again.params, done.params)
    assert np.array_equal(again.history.losses, done.history.losses)
    fresh = train.fit(*args, 2, checkpoint=path, resume=False, progress=False)
    assert checkpoint.read_manifest(path)["step"] == 2
    assert np.array_equal(fresh.history.losses, done.history.losses[:2])
    foreign = tmp_path / "foreign.npz"
    checkpoint.save(foreign, {"params": params, "opt_state": optax.sgd(0.05).init(params)}, step=3)
    with pytest.raises(ValueError, match=r"does not match the template.*missing.*\['losses'\]"):
        train.fit(*args, 4, checkpoint=foreign, progress=False)
    with pytest.raises(ValueError, match="at step 2, past steps=1"):
        train.fit(*args, 1, checkpoint=path, progress=False)
    with pytest.raises(
        ValueError,
        match=r"other parameter shapes \(1 params leaves differ, e.g. \['params'\]\['w'\] is "
        r"\(3,\) there and \(4,\) here\).*another model",
    ):
        train.fit(
            _regression_loss,
            {"w": jnp.zeros(4)},
            optax.sgd(0.05),
            _regression_batch,
            4,
            checkpoint=path,
            progress=False,
        )


def test_progress_bar_shows_the_running_loss(capsys):
    params = {"w": jnp.zeros(3)}
    train.fit(_regression_loss, params, optax.sgd(0.05), _regression_batch, 6, refresh_seconds=1e-9)
    shown = capsys.readouterr().err
    assert "6/6" in shown and "loss=" in shown
    # refreshed only at the end: the running loss is then the mean over all six steps
    result = train.fit(
        _regression_loss, params, optax.sgd(0.05), _regression_batch, 6, refresh_seconds=1e9
    )
    _, losses, _ = _numpy_sgd(np.zeros(3), 6, 0.05)
    np.testing.assert_allclose(result.history.losses, losses, rtol=1e-12)
    assert f"loss={np.mean(losses):.4g}" in capsys.readouterr().err
    train.fit(_regression_loss, params, optax.sgd(0.05), _regression_batch, 6, progress=False)
    assert capsys.readouterr().err == ""


def test_bad_arguments_raise(tmp_path):
    params, sgd, data = {"w": jnp.zeros(3)}, optax.sgd(0.1), _regression_batch
    loss = _regression_loss
    cases = [
        (dict(loss_fn=3), "loss_fn: expected a callable"),
        (dict(optimizer=object()), "optimizer: expected an optax"),
        (dict(steps=0), "steps: expected a positive integer"),
        (dict(params={"w": jnp.zeros(3, jnp.int32)}), r"params\['w'\]: expected a floating"),
        (dict(params={}), "params: expected a pytree of floating arrays"),
        (dict(eval_every=2), "eval_every: given without an eval_fn"),
        (dict(eval_fn=lambda p: 0.0, eval_every=0), "eval_every: expected a positive integer"),
        (dict(eval_fn=5), "eval_fn: expected a callable"),
        (dict(checkpoint_every=2), "checkpoint_every: given without a checkpoint"),
        (dict(refresh_seconds=0), "refresh_seconds: expected a positive number"),
        (dict(process_local_data=True), "process_local_data: given without a mesh"),
        (dict(checkpoint=tmp_path / "no" / "run.npz"), "checkpoint: expected a file path in"),
        (dict(checkpoint=3), "checkpoint: expected a file path, got int"),
        (dict(loss_fn=lambda p, b: (b[0] @ p["w"]) ** 2), r"scalar loss, got shape \(16,\)"),
        (dict(loss_fn=lambda p, b: (p, b)), "expected a floating scalar loss, got tuple"),
        (dict(eval_fn=lambda p: p["w"]), r"eval_fn: expected a scalar .* shape \(3,\)"),
        (dict(on_nonfinite="ignore"), r"on_nonfinite: expected one of \('stop', 'warn'\)"),
    ]
    defaults = dict(loss_fn=loss, params=params, optimizer=sgd, data=data, steps=2)
    for change, message in cases:
        kwargs = {**defaults, **change, "progress": False}
        with pytest.raises(ValueError, match=message):
            train.fit(**kwargs)


def test_tour_section_shows_the_loss_dropping_and_a_bit_exact_resume(capsys):
    import re

    from jaxrnn.cli import main

    assert main(["tour", "--only", "train"]) == 0
    out = capsys.readouterr().out
    first, last = map(
        float, re.search(r"mse ([0-9.]+) \(first 10 steps\) -> ([0-9.]+)", out).groups()
    )
    assert last < first and last < (1 / 6) / 2  # well below the constant-guess baseline
    assert "equal the uninterrupted run bit for bit: True" in out


def test_train_command_trains_evaluates_and_resumes(tmp_path, capsys):
    from jaxrnn.cli import main

    path = str(tmp_path / "run.npz")
    common = [
        "train",
        "addition",
        "--n-bits",
        "3",
        "--hidden",
        "4",
        "--batch",
        "4",
        "--no-progress",
        "--eval-every",
        "2",
        "--checkpoint",
        path,
    ]
    assert main([*common, "--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "addition: 4 steps" in out and "held-out at step 2: bits" in out
    assert "held-out at step 4" in out
    assert checkpoint.read_manifest(path)["step"] == 4
    assert main([*common, "--steps", "6"]) == 0
    out = capsys.readouterr().out
    assert "addition: 6 steps" in out and "held-out at step 6" in out
    assert checkpoint.read_manifest(path)["step"] == 6


def test_train_command_runs_the_copy_task(capsys):
    from jaxrnn.cli import main

    args = [
        "train",
        "copy",
        "--length",
        "2",
        "--delay",
        "1",
        "--symbols",
        "3",
        "--hidden",
        "4",
        "--batch",
        "4",
        "--steps",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "copy: 2 steps" in out and "L log K / T = 0.439" in out  # 2 log 3 / (2*2 + 1)


def _edit_manifest(path, change):
    import json
    import zipfile

    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members["manifest.json"])
    change(manifest)
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_a_checkpoint_claiming_a_huge_history_is_refused_without_allocating(tmp_path):
    path = tmp_path / "run.npz"
    args = (_regression_loss, {"w": jnp.zeros(3)}, optax.sgd(0.05), _regression_batch)
    train.fit(*args, 2, checkpoint=path, progress=False)

    def huge(manifest):
        manifest["step"] = 2**40  # and a history of 2**40 losses: 4 TiB if it were allocated
        for leaf in manifest["leaves"]:
            if leaf["path"] == "['losses']":
                leaf["shape"] = leaf["stored_shape"] = [2**40]

    _edit_manifest(path, huge)
    with pytest.raises(ValueError, match=r"\['losses'\] is unreadable.*stored as"):
        train.fit(*args, 2**41, checkpoint=path, progress=False)


def test_a_checkpoint_with_a_malformed_history_raises(tmp_path):
    path = tmp_path / "run.npz"
    args = (_regression_loss, {"w": jnp.zeros(3)}, optax.sgd(0.05), _regression_batch)
    train.fit(*args, 2, checkpoint=path, progress=False)

    def malformed(manifest):
        manifest["metadata"]["eval_steps"] = "12"

    _edit_manifest(path, malformed)
    with pytest.raises(ValueError, match="expected metadata with lists eval_steps.*got str"):
        train.fit(*args, 4, checkpoint=path, progress=False)


def test_numpy_float64_params_resume_without_x64(tmp_path):
    # without x64 the step turns numpy float64 params into float32 arrays, which is what the
    # checkpoint holds: resuming from the same numpy params must accept them
    def loss(params, batch):
        xs, ys = batch
        return jnp.mean((xs @ params["w"] - ys) ** 2)

    def data(step):
        xs, ys = _regression_batch(step)
        return xs.astype(np.float32), ys.astype(np.float32)

    params, path = {"w": np.zeros(3)}, tmp_path / "run.npz"
    with jax.enable_x64(False):
        straight = train.fit(loss, params, optax.adam(0.1), data, 6, progress=False)
        train.fit(loss, params, optax.adam(0.1), data, 3, checkpoint=path, progress=False)
        resumed = train.fit(loss, params, optax.adam(0.1), data, 6, checkpoint=path, progress=False)
    assert resumed.params["w"].dtype == np.float32
    _assert_trees_equal(resumed.params, straight.params)
    assert np.array_equal(resumed.history.losses, straight.history.losses)


def _poisoned(step, bad=5, value=np.nan):
    """The regression batches, with a non-finite target at step ``bad``."""
    xs, ys = _regression_batch(step)
    return xs, np.where(np.arange(len(ys)) == 0, value, ys) if step == bad else ys


def test_a_nan_loss_stops_fit_with_the_last_good_state_and_checkpoint(tmp_path):
    params, sgd, path = {"w": jnp.zeros(3)}, optax.sgd(0.05), tmp_path / "run.npz"
    before = train.fit(_regression_loss, params, sgd, _regression_batch, 5, progress=False)
    w5, losses, trajectory = _numpy_sgd(np.zeros(3), 5, 0.05)
    with pytest.raises(train.NonFiniteLossError, match=r"loss of step 5 is nan.*keeps step 4"):
        train.fit(_regression_loss, params, sgd, _poisoned, 9, checkpoint=path,
                  checkpoint_every=2, progress=False)  # fmt: skip
    # Seen only at the end of the run: the steps after the bad one changed nothing.
    with pytest.raises(train.NonFiniteLossError) as stopped:
        train.fit(_regression_loss, params, sgd, _poisoned, 9, refresh_seconds=1e9, progress=False)
    assert stopped.value.step == 5
    result = stopped.value.result
    _assert_trees_equal(result.params, before.params)  # the params from before step 5
    np.testing.assert_allclose(result.params["w"], w5, rtol=1e-12)
    _assert_trees_equal(result.opt_state, before.opt_state)
    assert len(result.history.losses) == 6 and np.isnan(result.history.losses[-1])
    np.testing.assert_allclose(result.history.losses[:5], losses, rtol=1e-12)
    # The checkpoint is the last one written before the bad step, never a NaN one.
    manifest = checkpoint.read_manifest(path)
    assert manifest["step"] == 4
    tree, _, _ = checkpoint.restore(
        path, {"params": params, "opt_state": sgd.init(params), "losses": np.zeros(4)}
    )
    np.testing.assert_allclose(tree["params"]["w"], trajectory[3], rtol=1e-12)


def test_an_infinite_loss_warns_with_on_nonfinite_warn_and_stops_checkpoints(tmp_path):
    params, sgd, path = {"w": jnp.zeros(3)}, optax.sgd(0.05), tmp_path / "run.npz"
    poisoned = lambda step: _poisoned(step, bad=3, value=np.inf)
    with pytest.warns(UserWarning, match=r"loss of step 3 is inf, not finite; training goes on"):
        result = train.fit(_regression_loss, params, sgd, poisoned, 6, checkpoint=path,
                           checkpoint_every=2, on_nonfinite="warn", progress=False)  # fmt: skip
    assert len(result.history.losses) == 6 and np.isinf(result.history.losses[3])
    assert not np.isfinite(result.params["w"]).all()  # trained on, as asked
    assert checkpoint.read_manifest(path)["step"] == 2


def test_train_command_reports_a_diverging_loss_and_keeps_the_good_checkpoint(tmp_path, capsys):
    from jaxrnn.cli import main

    path = str(tmp_path / "run.npz")
    args = ["train", "adding", "--length", "3", "--hidden", "4", "--batch", "4", "--steps",
            "5", "--lr", "1e30", "--no-progress", "--checkpoint", path, "--checkpoint-every",
            "1"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    # Adam's first step moves every weight by 1e30: a later loss is no longer finite
    found = re.search(r"jaxrnn train: the loss of step (\d) is (nan|-?inf), not finite", err)
    assert found and int(found.group(1)) >= 2, err
    assert f"{path} keeps the last good step" in err and "smaller --lr (now 1e+30)" in err
    # checkpointed after every step up to the last good one, and never after it
    assert checkpoint.read_manifest(path)["step"] == int(found.group(1)) - 1
