"""Data parallelism: the same fit on one device or four, batches really split, errors."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from jaxrnn import sharding, train

# The model both scripts below train: an LSTM on the adding problem, B = 8.
MODEL = textwrap.dedent(
    """
    import jax.numpy as jnp, optax
    import jaxrnn
    from jaxrnn import sharding, tasks, train
    from jaxrnn.cells import lstm

    HIDDEN, key = 4, jax.random.key(0)

    def lstm_loss(params, batch):
        xs, ys = batch
        carry = lstm.init_carry(xs.shape[1:2], HIDDEN)
        (_, h), _ = jaxrnn.scan(lstm.apply, params["cell"], carry, xs)
        return jnp.mean((h @ params["V"].T - ys) ** 2)

    params = {"cell": lstm.init(jax.random.key(1), 2, HIDDEN),
              "V": jnp.full((1, HIDDEN), 0.3, jnp.float32)}
    data = lambda step: tasks.adding_problem(key, step, batch=8, length=5)
    adam = optax.adam(0.05)
    """
)

# Runs in a fresh interpreter: XLA_FLAGS must be set before jax is imported.
FOUR_DEVICES = (
    "import jax, json\n"
    + MODEL
    + textwrap.dedent(
        """
    assert len(jax.devices()) == 4, jax.devices()
    seen = []

    def loss_fn(params, batch):
        jax.debug.inspect_array_sharding(batch[0], callback=lambda s: seen.append(s))
        return lstm_loss(params, batch)

    one = train.fit(loss_fn, params, adam, data, 6, progress=False)
    on_one = seen[-1]
    mesh = sharding.data_mesh()
    four = train.fit(loss_fn, params, adam, data, 6, mesh=mesh, batch_axis=(1, 0),
                     progress=False)
    on_four = seen[-1]
    xs, ys = sharding.shard_batch(data(0), mesh, batch_axis=(1, 0))
    try:
        sharding.shard_batch(tasks.adding_problem(key, 0, batch=6, length=5), mesh, (1, 0))
        uneven = "no error"
    except ValueError as error:
        uneven = str(error)
    print(json.dumps({
        "losses_one": one.history.losses.tolist(),
        "losses_four": four.history.losses.tolist(),
        "max_param_diff": max(float(jnp.max(jnp.abs(a - b))) for a, b in
                              zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params))),
        "devices_in_step_one": len(on_one.device_set),
        "devices_in_step_four": len(on_four.device_set),
        "spec_in_step_four": list(on_four.spec),
        "xs_shards": sorted([list(s.data.shape), s.device.id] for s in xs.addressable_shards),
        "ys_shards": sorted([list(s.data.shape), s.device.id] for s in ys.addressable_shards),
        "param_devices": len(four.params["V"].sharding.device_set),
        "param_replicated": four.params["V"].sharding.is_fully_replicated,
        "uneven": uneven,
    }))
    """
    )
)


def test_four_cpu_devices_give_the_single_device_losses_with_the_batch_split():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env.pop("JAX_ENABLE_X64", None)
    done = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICES],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # float32: the sums over the batch run in a different order on four devices
    np.testing.assert_allclose(out["losses_four"], out["losses_one"], rtol=1e-5, atol=1e-7)
    assert out["max_param_diff"] < 1e-5
    assert len(out["losses_one"]) == 6 and out["losses_one"][-1] < out["losses_one"][0]
    # inside the compiled step the batch lives on 4 devices, split along B
    assert out["devices_in_step_one"] == 1
    assert out["devices_in_step_four"] == 4
    assert out["spec_in_step_four"][:2] == [None, "batch"]  # (T, B, D) split along B
    assert out["xs_shards"] == [[[5, 2, 2], d] for d in range(4)]
    assert out["ys_shards"] == [[[2, 1], d] for d in range(4)]
    assert out["param_devices"] == 4 and out["param_replicated"]
    assert "does not split evenly over 4 devices" in out["uneven"]


# Two processes on this host, two CPU devices each, joined by jax.distributed: the way a
# multi-host run is launched (one process per host), here on localhost.
TWO_PROCESSES = (
    textwrap.dedent(
        """
    import json, sys
    import jax

    process_id, port, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # short timeouts: a peer that died must not keep this process waiting for minutes
    jax.distributed.initialize(
        f"localhost:{port}", num_processes=2, process_id=process_id,
        initialization_timeout=60, heartbeat_timeout_seconds=30, shutdown_timeout_seconds=30,
    )
    """
    )
    + MODEL
    + textwrap.dedent(
        """
    loss_fn = lstm_loss
    # every process computes the same global batch: data is a pure function of the step
    mesh = sharding.data_mesh()  # all 4 devices of both processes
    first = train.fit(loss_fn, params, adam, data, 3, mesh=mesh, batch_axis=(1, 0),
                      checkpoint=path, progress=False)
    resumed = train.fit(loss_fn, params, adam, data, 6, mesh=mesh, batch_axis=(1, 0),
                        checkpoint=path, progress=False)
    # or each process makes only its own half of the batch (rows 4p..4p+3 of B = 8)
    half = lambda step: jax.tree.map(
        lambda a, axis: jax.lax.slice_in_dim(a, 4 * process_id, 4 * process_id + 4, axis=axis),
        data(step), (1, 0))
    local = train.fit(loss_fn, params, adam, half, 6, mesh=mesh, batch_axis=(1, 0),
                      process_local_data=True, progress=False)
    report = {"devices": len(jax.devices()), "local": len(jax.local_devices()),
              "losses": resumed.history.losses.tolist(),
              "losses_local_data": local.history.losses.tolist()}
    if process_id == 0:  # a plain single-device run, for comparison (no collectives)
        report["single"] = train.fit(loss_fn, params, adam, data, 6,
                                     progress=False).history.losses.tolist()
    print(json.dumps(report))
    """
    )
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _run_two_workers(script, run_dir, env, timeout=240.0):
    """Run ``script RANK PORT CHECKPOINT`` as ranks 0 and 1; ``[(returncode, out, err)]``.

    Output goes to files (a full pipe would stall a worker). When one worker fails, the other
    is ended at once (it would wait for its peer until jax's timeouts); on ``timeout`` both
    are; either way both are reaped. If the coordinator could not bind the port (another
    process took it after the probe), the pair runs again on a new port.
    """
    for attempt in range(3):
        port, directory = str(_free_port()), run_dir / f"attempt{attempt}"
        directory.mkdir()
        logs = [(directory / f"out{rank}", directory / f"err{rank}") for rank in (0, 1)]
        workers = []
        try:
            for rank, (out, err) in enumerate(logs):
                with open(out, "w") as out_file, open(err, "w") as err_file:
                    command = [sys.executable, str(script), str(rank), port]
                    command.append(str(directory / "run.npz"))
                    workers.append(
                        subprocess.Popen(command, env=env, stdout=out_file, stderr=err_file)
                    )
            deadline = time.monotonic() + timeout
            while None in (codes := [worker.poll() for worker in workers]):
                if any(codes):  # one failed: stop the other
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"the two workers did not finish within {timeout} s")
                time.sleep(0.1)
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
            for worker in workers:
                worker.wait()
        results = [
            (worker.returncode, out.read_text(), err.read_text())
            for worker, (out, err) in zip(workers, logs, strict=True)
        ]
        if results[0][0] != 0 and "Failed to add port" in results[0][2]:
            continue  # the port was taken between the probe and the coordinator's bind
        return results, directory
    pytest.fail("no free port for the coordinator in 3 attempts")


def test_two_processes_joined_by_jax_distributed_train_like_one_device(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    env.pop("JAX_ENABLE_X64", None)
    script = tmp_path / "worker.py"
    script.write_text(TWO_PROCESSES)
    results, directory = _run_two_workers(script, tmp_path, env)
    for rank, (code, _, err) in enumerate(results):
        assert code == 0, f"worker {rank} exited with {code}:\n{err[-3000:]}"
    reports = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    assert [(r["devices"], r["local"]) for r in reports] == [(4, 2), (4, 2)]
    assert reports[0]["losses"] == reports[1]["losses"]  # one computation, seen by both
    assert reports[0]["losses_local_data"] == reports[0]["losses"]  # same global batches
    np.testing.assert_allclose(reports[0]["losses"], reports[0]["single"], rtol=1e-5, atol=1e-7)
    # one checkpoint, no temporary files left beside it
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(("out", "err"))) == [
        "run.npz"
    ]


def _loss(params, batch):
    xs, ys = batch
    return jnp.mean((jnp.einsum("tbd,d->b", xs, params["w"]) - ys[:, 0]) ** 2)


def _data(step):
    rng = np.random.default_rng(step)
    return rng.normal(size=(3, 4, 2)), rng.normal(size=(4, 1))


def test_a_one_device_mesh_runs_the_same_fit():
    params = {"w": jnp.array([0.5, -0.5])}
    plain = train.fit(_loss, params, optax.sgd(0.1), _data, 5, progress=False)
    meshed = train.fit(
        _loss,
        params,
        optax.sgd(0.1),
        _data,
        5,
        mesh=sharding.data_mesh(),
        batch_axis=(1, 0),
        progress=False,
    )
    # reference: the gradient of the mean squared error by hand, in NumPy
    w = np.array([0.5, -0.5])
    for step in range(5):
        xs, ys = _data(step)
        features = xs.sum(axis=0)  # (B, D): sum over t of x[t, b, :]
        w = w - 0.1 * 2 / 4 * features.T @ (features @ w - ys[:, 0])
    np.testing.assert_allclose(plain.params["w"], w, rtol=1e-12)
    np.testing.assert_allclose(meshed.params["w"], w, rtol=1e-12)
    np.testing.assert_allclose(meshed.history.losses, plain.history.losses, rtol=1e-12)


def test_helpers_place_arrays_on_the_mesh():
    mesh = sharding.data_mesh()
    assert mesh.axis_names == ("batch",) and mesh.devices.size == len(jax.devices())
    params = sharding.replicate({"w": jnp.ones(3)}, mesh)
    assert params["w"].sharding.is_fully_replicated
    batch = sharding.shard_batch(
        {"xs": jnp.ones((3, 4, 2)), "ys": jnp.ones((4,))}, mesh, batch_axis={"xs": 1, "ys": -1}
    )
    assert tuple(batch["xs"].sharding.spec) == (None, "batch", None)
    assert tuple(batch["ys"].sharding.spec) == ("batch",)
    # in one process, its local part is the whole batch
    xs = np.arange(24.0).reshape(3, 4, 2)
    local = sharding.shard_batch((xs,), mesh, batch_axis=1, process_local=True)[0]
    assert local.shape == (3, 4, 2) and np.array_equal(local, xs)
    assert tuple(local.sharding.spec) == (None, "batch", None)


def test_bad_arguments_raise():
    mesh = sharding.data_mesh()
    batch = (jnp.ones((3, 4, 2)), jnp.ones((4, 1)))
    with pytest.raises(ValueError, match="devices: expected at least one device"):
        sharding.data_mesh([])
    with pytest.raises(ValueError, match="devices: expected jax.Device objects, got 'cpu'"):
        sharding.data_mesh(["cpu"])
    with pytest.raises(ValueError, match="axis_name: expected a string"):
        sharding.data_mesh(axis_name=3)
    two_d = Mesh(np.asarray(jax.devices()).reshape(1, -1), ("a", "b"))
    with pytest.raises(ValueError, match="mesh: expected a 1-D jax.sharding.Mesh"):
        sharding.shard_batch(batch, two_d)
    with pytest.raises(ValueError, match="mesh: expected a 1-D jax.sharding.Mesh"):
        sharding.replicate(batch, "cpu")
    with pytest.raises(ValueError, match=r"batch_axis: axis 2 is out of range for batch\[1\]"):
        sharding.shard_batch(batch, mesh, batch_axis=2)
    with pytest.raises(ValueError, match=r"batch_axis: expected an integer axis for batch\[0\]"):
        sharding.shard_batch(batch, mesh, batch_axis=(1.0, 0))
    with pytest.raises(ValueError, match="batch_axis: expected an int or a pytree prefix"):
        sharding.shard_batch(batch, mesh, batch_axis=(1, 0, 0))
    with pytest.raises(ValueError, match="mesh: expected a 1-D"):
        train.fit(_loss, {"w": jnp.ones(2)}, optax.sgd(0.1), _data, 2, mesh=two_d, progress=False)


def test_the_readme_every_core_example_runs_and_equals_one_device():
    """README's "Every core of one CPU" code, run as written in a fresh process (the device
    count is fixed when JAX starts): one device per core, and the split run equals the
    plain one, gradients included."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Every core of one CPU", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    checks = textwrap.dedent(
        """
        import json
        want_ys = jax.jit(forward)(params, xs)
        want_grads = jax.grad(lambda p: forward(p, xs).sum())(params)
        grad_diff = max(
            float(jnp.max(jnp.abs(grads[k] - want_grads[k]) / (1 + jnp.abs(want_grads[k]))))
            for k in want_grads
        )
        print(json.dumps({"devices": jax.device_count(), "cores": os.cpu_count(),
                          "ys_diff": float(jnp.max(jnp.abs(ys - want_ys))),
                          "grad_diff": grad_diff, "ys_shape": list(ys.shape)}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    done = subprocess.run(
        [sys.executable, "-c", code + checks], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == out["cores"]
    assert out["ys_shape"] == [256, 8 * out["devices"], 256]
    assert out["ys_diff"] <= 1e-5 and out["grad_diff"] <= 1e-4  # float32, other sum order
