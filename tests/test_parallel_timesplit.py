"""Time split over 4 CPU devices (a child process: XLA_FLAGS must precede jax's import):
linear_recurrence, scan_associative and deer give the single-device results, gradients too,
and the traced program really scans T / 4 steps per device."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxrnn.parallel import linear_recurrence
from jaxrnn.parallel.timesplit import split_associative_scan

FOUR_DEVICES = textwrap.dedent(
    """
    import functools, json
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jaxrnn.cells import gru, lru
    from jaxrnn.parallel import deer, linear_recurrence, scan_associative
    from jaxrnn.sharding import data_mesh

    assert jax.device_count() == 4, jax.devices()
    mesh, out = data_mesh(), {}

    def diff(a, b):
        pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        return max(float(jnp.max(jnp.abs(x - y))) for x, y in pairs)

    def equations(jaxpr):
        for eqn in jaxpr.eqns:
            yield eqn
            for value in eqn.params.values():
                inner = getattr(value, "jaxpr", value)
                if hasattr(inner, "eqns"):
                    yield from equations(inner)

    rng = np.random.default_rng(0)
    T, B, H = 26, 3, 2  # 26 = 4 chunks of 7, the last one padded with 2 steps
    lengths, resets = np.array([26, 0, 11]), rng.random((T, B)) < 0.2
    segments = dict(lengths=lengths, resets=resets, reverse=True)

    # full matrices, packed sequences in reverse: values and gradients
    A, b, h0 = 0.8 * rng.normal(size=(T, B, H, H)), rng.normal(size=(T, B, H)), np.ones((B, H))
    def loss(A, b, h0, mesh):
        hs = linear_recurrence(A, b, h0, mesh=mesh, **segments)
        return jnp.sum(jnp.sin(hs)), hs
    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)
    out["linear"] = diff(grad(A, b, h0, None), grad(A, b, h0, mesh))

    # diagonals, vmapped over the batch under jit
    A = 0.8 * rng.normal(size=(T, B, H))
    split = jax.vmap(lambda A, b, h0: linear_recurrence(A, b, h0, mesh=mesh), (1, 1, 0), 1)
    out["vmapped"] = diff(jax.jit(split)(A, b, h0), linear_recurrence(A, b, h0))
    jaxpr = jax.make_jaxpr(lambda A, b, h0: linear_recurrence(A, b, h0, mesh=mesh))(A, b, h0)
    call = [e for e in equations(jaxpr.jaxpr) if e.primitive.name == "shard_map"][0]
    out["chunk_shapes"] = [list(v.aval.shape) for v in call.params["jaxpr"].invars]
    out["mesh_devices"] = call.params["mesh"].size
    hs = linear_recurrence(A[:24], b[:24], h0, mesh=mesh)
    out["hs_shards"] = sorted([list(s.data.shape), s.device.id] for s in hs.addressable_shards)

    # an LRU over packed sequences
    params = lru.init(jax.random.key(1), 3, 4, dtype=jnp.float64)
    carry, xs = lru.init_carry((B,), 4, jnp.float64), rng.normal(size=(T, B, 3))
    run = functools.partial(scan_associative, lru, params, carry, xs, **segments)
    out["lru"] = diff(run(), run(mesh=mesh))

    # quasi-ELK on a GRU, with lengths: values, Newton steps and implicit gradients
    params, carry = gru.init(jax.random.key(2), 3, 4, dtype=jnp.float64), 0.3 * jnp.ones((B, 4))
    def gru_loss(params, mesh):
        final, ys, info = deer(gru.apply, params, carry, xs, lengths=lengths, batch_ndim=1,
                               jacobian="diagonal", damping=1e-3, mesh=mesh)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final**2), (final, ys, info)
    grad = jax.jit(jax.grad(gru_loss, has_aux=True), static_argnums=1)
    (g1, (f1, y1, i1)), (g4, (f4, y4, i4)) = grad(params, None), grad(params, mesh)
    out["deer"] = diff((g1, f1, y1), (g4, f4, y4))
    out["deer_converged"] = bool(jnp.all(i4.converged))
    out["deer_iterations"] = [i1.iterations.tolist(), i4.iterations.tolist()]
    print(json.dumps(out))
    """
)


def test_four_devices_give_the_single_device_results():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env.pop("JAX_ENABLE_X64", None)
    done = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICES], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # float64: splitting reorders the products of the scans, nothing more
    assert out["linear"] <= 1e-11 and out["vmapped"] <= 1e-12 and out["lru"] <= 1e-12
    assert out["deer_converged"] and out["deer"] <= 1e-10
    assert out["deer_iterations"][0] == out["deer_iterations"][1]  # the same Newton steps
    # the traced program: one shard_map over the 4 devices, each scanning 28 / 4 = 7 steps
    assert out["mesh_devices"] == 4
    assert out["chunk_shapes"] == [[7, 3, 2], [7, 3, 2]]
    assert out["hs_shards"] == [[[6, 3, 2], d] for d in range(4)]


def test_split_scan_refuses_a_mesh_of_two_axes():
    devices = np.asarray(jax.devices()[:1], dtype=object).reshape(1, 1)
    mesh = Mesh(devices, ("time", "batch"))
    with pytest.raises(ValueError, match="^mesh: expected None or a 1-D jax.sharding.Mesh"):
        linear_recurrence(np.ones((4, 2)), np.ones((4, 2)), np.ones(2), mesh=mesh)
    with pytest.raises(ValueError, match="^mesh: expected None or a 1-D jax.sharding.Mesh"):
        split_associative_scan(lambda a, b: a + b, np.ones(4), mesh)


def test_one_device_mesh_equals_no_mesh():
    """The split path on this process's single device: one chunk, nothing to combine."""
    mesh = Mesh(np.asarray(jax.devices()[:1], dtype=object), ("time",))
    rng = np.random.default_rng(1)
    A, b, h0 = 0.9 * rng.normal(size=(9, 2, 2, 2)), rng.normal(size=(9, 2, 2)), np.ones((2, 2))
    np.testing.assert_allclose(
        linear_recurrence(A, b, h0, reverse=True, mesh=mesh),
        linear_recurrence(A, b, h0, reverse=True),
        rtol=1e-13,
    )
