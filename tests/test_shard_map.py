"""Every runner inside ``jax.shard_map``, its carry made inside the mapped function.

Runs in a child process with four CPU devices (the device count is fixed when JAX starts),
on meshes of two and of four of them. Each runner's outputs and gradients under
``shard_map`` (the batch split over the devices) must equal the unsharded ones, and so
must :func:`jaxrnn.sharding.batch_parallel`'s.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    jax.config.update("jax_num_cpu_devices", 4)
    jax.config.update("jax_enable_x64", True)
    import jaxrnn
    from jaxrnn import mdrnn, parallel, sharding
    from jaxrnn.cells import elman, lstm

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(0)
    B, T, D, H = 4, 6, 3, 4
    f64 = lambda tree: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)
    xs = jnp.asarray(rng.normal(size=(T, B, D)))
    lengths = jnp.asarray([6, 3, 0, 5])
    grid = jnp.asarray(rng.normal(size=(B, 5, 4, D)))
    lstm_p = f64(lstm.init(jax.random.key(0), D, H))
    elman_p = f64(elman.init(jax.random.key(1), D, H))
    grid_p = f64(mdrnn.init(jax.random.key(2), D, H))
    mdlstm_p = f64(mdrnn.mdlstm.init(jax.random.key(3), D, H))
    decay = jnp.asarray(rng.uniform(0.1, 0.9, size=(D,)))  # A_t = diag(decay), shared

    def lstm_carry(x):  # made inside the mapped function: varies over no mesh axis
        return lstm.init_carry(x.shape[1:2], H, x.dtype)

    # name: (f(params, x, lengths) -> outputs, params, x, batch axis of x and outputs)
    CASES = {
        "scan": (lambda p, x, L: jaxrnn.scan(lstm.apply, p, lstm_carry(x), x, lengths=L)[1],
                 lstm_p, xs, 1),
        "bidirectional": (lambda p, x, L: jaxrnn.bidirectional(
            lstm.apply, (p, p), (lstm_carry(x), lstm_carry(x)), x, lengths=L)[1],
            lstm_p, xs, 1),
        "lstm_layer": (lambda p, x, L: jaxrnn.lstm_layer(p, lstm_carry(x), x, lengths=L)[1],
                       lstm_p, xs, 1),
        "lstm_layer reverse": (lambda p, x, L: jaxrnn.lstm_layer(
            p, lstm_carry(x), x, lengths=L, reverse=True)[1], lstm_p, xs, 1),
        "mdrnn.wavefront": (lambda p, x, L: mdrnn.wavefront(p, x), grid_p, grid, 0),
        "mdrnn.mdlstm.wavefront": (lambda p, x, L: mdrnn.mdlstm.wavefront(p, x),
                                   mdlstm_p, grid, 0),
        "parallel.deer": (lambda p, x, L: parallel.deer(
            elman.apply, p, elman.init_carry(x.shape[1:2], H, x.dtype), x, lengths=L)[1],
            elman_p, xs, 1),
        "parallel.linear_recurrence": (lambda p, x, L: parallel.linear_recurrence(
            jnp.broadcast_to(p, x.shape), x, jnp.zeros(x.shape[1:], x.dtype)), decay, xs, 1),
    }

    def outputs_and_grads(f):
        loss = lambda p, x, L: (lambda y: (jnp.sum(y ** 2), y))(f(p, x, L))
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))

    def max_diff(a, b):
        pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
        return max(float(jnp.max(jnp.abs(u - v))) for u, v in pairs)

    # the unsharded outputs and gradients, once for both meshes
    wanted = {name: outputs_and_grads(f)(params, x, lengths)
              for name, (f, params, x, axis) in CASES.items()}
    report = {}
    for n_devices in (2, 4):
        mesh = Mesh(np.asarray(jax.devices()[:n_devices]), ("batch",))
        for name, (f, params, x, axis) in CASES.items():
            spec = P(*([None] * axis), "batch")
            mapped = jax.shard_map(f, mesh=mesh, in_specs=(P(), spec, P("batch")),
                                   out_specs=spec)
            put = lambda a, s: jax.device_put(a, NamedSharding(mesh, s))
            (_, want), want_grads = wanted[name]
            (_, got), got_grads = outputs_and_grads(mapped)(
                put(params, P()), put(x, spec), put(lengths, P("batch")))
            report[f"{name} on {n_devices}"] = {
                "outputs": max_diff(got, want), "grads": max_diff(got_grads, want_grads),
                "scale": float(jnp.max(jnp.abs(want))), "shards": len(got.addressable_shards),
            }
        run = lambda p, x: jaxrnn.lstm_layer(p, lstm_carry(x), x)
        split = sharding.batch_parallel(run, in_axes=(None, 1), out_axes=((0, 0), 1),
                                        mesh=mesh)
        grad = lambda f: jax.grad(lambda p, x: jnp.sum(f(p, x)[1] ** 2), argnums=(0, 1))
        report[f"batch_parallel on {n_devices}"] = {
            "outputs": max_diff(split(lstm_p, xs), run(lstm_p, xs)),
            "grads": max_diff(grad(split)(lstm_p, xs), grad(run)(lstm_p, xs)),
            "scale": 1.0, "shards": len(split(lstm_p, xs)[1].addressable_shards),
        }
    try:
        sharding.batch_parallel(run, in_axes=(None, 1), out_axes=1)(lstm_p, xs[:, :3])
        report["uneven"] = "no error"
    except ValueError as error:
        report["uneven"] = str(error)
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def report():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


RUNNERS = [
    "scan",
    "bidirectional",
    "lstm_layer",
    "lstm_layer reverse",
    "mdrnn.wavefront",
    "mdrnn.mdlstm.wavefront",
    "parallel.deer",
    "parallel.linear_recurrence",
    "batch_parallel",
]


@pytest.mark.parametrize("n_devices", [2, 4])
@pytest.mark.parametrize("runner", RUNNERS)
def test_runner_inside_shard_map_equals_the_unsharded_run(report, runner, n_devices):
    row = report[f"{runner} on {n_devices}"]
    assert row["shards"] == n_devices  # the outputs really live on every device of the mesh
    assert row["scale"] > 0.1  # a real signal, not zeros
    assert row["outputs"] <= 1e-12 * max(1.0, row["scale"])
    assert row["grads"] <= 1e-11  # float64; the batch sums run in another order


def test_batch_parallel_names_a_batch_that_does_not_split(report):
    assert "args[1]" in report["uneven"]
    assert "does not split evenly over 4 devices" in report["uneven"]
