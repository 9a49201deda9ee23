"""Checkpointed and reversible scans inside ``jax.shard_map``, their carry made inside the
mapped function: outputs and gradients equal the unsharded run (a child process with two
CPU devices, as in tests/test_shard_map.py)."""

import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_enable_x64", True)
    import jaxrnn
    from jaxrnn.cells import gru, lstm, revgru

    rng = np.random.default_rng(0)
    B, T, D, H = 4, 7, 3, 4
    xs, lengths = jnp.asarray(rng.normal(size=(T, B, D))), jnp.asarray([7, 3, 0, 5])
    f64 = lambda tree: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)
    CASES = {  # name: (f(params, x, lengths) -> outputs, params); carries made inside
        "scan checkpoints=3": (lambda p, x, L: jaxrnn.scan(
            gru.apply, p, gru.init_carry(x.shape[1:2], H, x.dtype), x, lengths=L,
            checkpoints=3)[1], f64(gru.init(jax.random.key(0), D, H))),
        "lstm_layer checkpoints=2": (lambda p, x, L: jaxrnn.lstm_layer(
            p, lstm.init_carry(x.shape[1:2], H, x.dtype), x, lengths=L, reverse=True,
            checkpoints=2)[1], f64(lstm.init(jax.random.key(1), D, H))),
        "reversible_scan": (lambda p, x, L: jaxrnn.reversible_scan(
            revgru, p, revgru.init_carry(x.shape[1:2], H, x.dtype), x, lengths=L)[1],
            f64(revgru.init(jax.random.key(2), D, H))),
    }
    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    spec, put = P(None, "batch"), lambda a, s: jax.device_put(a, NamedSharding(mesh, s))
    loss = lambda f: jax.jit(jax.value_and_grad(
        lambda p, x, L: (lambda y: (jnp.sum(jnp.sin(y)), y))(f(p, x, L)),
        argnums=(0, 1), has_aux=True))
    diff = lambda a, b: max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(
        jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))
    report = {}
    for name, (f, params) in CASES.items():
        mapped = jax.shard_map(f, mesh=mesh, in_specs=(P(), spec, P("batch")), out_specs=spec)
        (_, want), want_grads = loss(f)(params, xs, lengths)
        (_, got), got_grads = loss(mapped)(
            put(params, P()), put(xs, spec), put(lengths, P("batch")))
        report[name] = [diff(got, want), diff(got_grads, want_grads),
                        len(got.addressable_shards), float(jnp.max(jnp.abs(want_grads[0][
                            sorted(want_grads[0])[0]])))]
    print(json.dumps(report))
    """
)


def test_inside_shard_map_equal_to_the_unsharded_run():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(report) == ["lstm_layer checkpoints=2", "reversible_scan", "scan checkpoints=3"]
    for name, (outputs, grads, shards, scale) in report.items():
        assert shards == 2, name  # the outputs live on both devices
        assert scale > 1e-3, name  # a real gradient, not zeros
        assert outputs <= 1e-12 and grads <= 1e-11, (name, outputs, grads)
