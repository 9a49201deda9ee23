"""One exact step and its inverse over pytrees, the one-pass loop, the large-word scans."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import reversible
from jaxrnn.exact import fixed_point as fp
from jaxrnn.reversible import optax_transform, schedules, sgd, xla_cpu
from jaxrnn.reversible import step as exact_step


def test_one_pass_returns_every_output_bit_for_bit():
    x = jnp.array([0.0, -0.0, 1.5, -jnp.inf, jnp.inf, jnp.nan, -3e-45, 2.0**-149], jnp.float32)
    u = jnp.array([0, 1, 2**31, 2**32 - 1, 7, 8, 9, 10], jnp.uint32)
    kernel = lambda x, u: [-x, u ^ jnp.uint32(0xFFFFFFFF), x * 2, (u >> 3).astype(jnp.int32)]
    got = jax.jit(lambda x, u: xla_cpu.one_pass(kernel, x, u))(x, u)
    want = kernel(x, u)
    bits = lambda a: np.asarray(a).view(np.uint8)  # NaNs and signed zeros compared as bits
    assert [g.dtype for g in got] == [w.dtype for w in want]
    assert all(np.array_equal(bits(g), bits(w)) for g, w in zip(got, want, strict=True))
    assert np.signbit(np.asarray(got[0])[0]) and not np.signbit(np.asarray(got[0])[1])


def test_whole_array_reductions_equal_numpy_at_any_size():
    rng = np.random.default_rng(0)
    for size in (1, 31, 32, 33, 1000, 4099):  # around and between rows of FUSED_ROW
        u = rng.integers(0, 2**32, size, dtype=np.uint32).reshape(size, 1)
        i = rng.integers(-(2**31), 2**31, size, dtype=np.int32)
        total = jax.jit(lambda u: xla_cpu.sum_all(u * jnp.uint32(3)))(u)
        assert total.dtype == jnp.uint32 and total.shape == ()
        assert int(total) == int((u.astype(np.uint64) * 3).sum() % 2**32)  # wraps like uint32
        assert int(jax.jit(lambda i: xla_cpu.min_all(i ^ 5))(i)) == int((i ^ 5).min())
    with pytest.raises(ValueError, match=r"x: expected an integer array, got dtype float32"):
        xla_cpu.min_all(jnp.ones(3, jnp.float32))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 2, 5])
def test_scan_steps_equals_lax_scan_for_large_words(reverse, length):
    # Large words: on CPU the first step runs outside a loop of two steps per iteration.
    shapes = [(1 << 16,)]
    body = lambda c, x: (c * 3 + x, (c, x * 2))
    xs = jnp.arange(1, length + 1, dtype=jnp.int32)
    run = lambda f: jax.jit(lambda c, xs: f(body, c, xs))(jnp.int32(7), xs)
    got = run(lambda *a: xla_cpu.scan_steps(*a, shapes, reverse=reverse))
    want = run(lambda *a: jax.lax.scan(*a, reverse=reverse))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and np.array_equal(np.asarray(g), np.asarray(w))
    # A plain reference loop, too.
    c, ys = 7, {}
    for k in reversed(range(length)) if reverse else range(length):
        ys[k], c = (c, 2 * (k + 1)), 3 * c + k + 1
    assert int(got[0]) == c
    assert np.asarray(got[1][0]).tolist() == [ys[k][0] for k in range(length)]


def test_the_step_maps_over_any_pytree_with_named_results():
    # A tuple inside a dict, float64 and float32 leaves: forward one step, then back.
    params = {"a": (jnp.linspace(-1, 1, 6).reshape(2, 3), jnp.float32(0.5))}
    words = exact_step.words_of(params, 40)
    words = words._replace(slots=jax.tree.map(lambda w: jnp.zeros((0, *w.shape)), words.word))
    grads = jax.tree.map(lambda p: 0.25 * p + 1.0, params)
    dtypes = jax.tree.map(lambda p: p.dtype, params)
    per_leaf = lambda value: jax.tree.map(lambda _: value, params)
    inputs = schedules.StepInputs(jnp.int32(3), *map(per_leaf, (0.1, 40000, False, 0)))
    forward = jax.jit(lambda w, g, x: exact_step.forward_step(w, g, x, 40, dtypes))
    taken = forward(words, grads, inputs)
    assert jax.tree.structure(taken.floats) == jax.tree.structure(params)
    # From v(0) = 0 and an empty buffer: v(1) = -q(alpha g), theta(1) = theta(0) + v(1).
    leaves = zip(*map(jax.tree.leaves, (params, grads)), strict=True)
    for i, (p, g) in enumerate(leaves):
        dt = np.asarray(p).dtype
        step = np.rint((np.asarray(0.1, dt) * np.asarray(g, dt)).astype(np.float64) * 2.0**40)
        theta0 = np.rint(np.asarray(p, np.float64) * 2.0**40)
        theta = jax.tree.leaves(taken.words.theta, is_leaf=lambda x: isinstance(x, fp.Word))[i]
        velocity = jax.tree.leaves(taken.words.velocity, is_leaf=lambda x: isinstance(x, fp.Word))
        assert np.array_equal(fp.to_int(theta).astype(float), theta0 - step)
        assert np.array_equal(fp.to_int(velocity[i]).astype(float), -step)
        floats = jax.tree.leaves(taken.floats)[i]
        assert floats.dtype == dt
        assert np.array_equal(np.asarray(floats), np.asarray(fp.to_float(theta, 40, dt)))
    inverse = jax.jit(lambda w, x: exact_step.inverse_step(w, lambda p: grads, x, 40, dtypes))
    back = inverse(taken.words, inputs)
    for got, want in zip(jax.tree.leaves(back.words), jax.tree.leaves(words), strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(want))
    assert jax.tree.leaves(back.params)[0].shape == (2, 3) and back.aux is None


def test_large_words_take_two_steps_per_iteration_and_match_single_steps():
    # 2^16 parameters: the scans unroll by two on CPU; an odd T leaves a remainder step.
    params = {"w": jnp.linspace(-1, 1, 1 << 16, dtype=jnp.float32).reshape(256, 256)}
    grad_fn = lambda p, k: {"w": jnp.sin(p["w"] + k.astype(jnp.float32))}
    assert xla_cpu.scan_unroll([(256, 256)]) == (2 if jax.default_backend() == "cpu" else 1)
    alphas, betas = np.full(5, 0.1, np.float32), np.full(5, 2.0**-8)  # spills from step 2
    start = reversible.init(params)
    end = reversible.forward(start, grad_fn, alphas, betas)
    # The same steps one at a time, each its own jitted call, outside any scan.
    schedule = schedules.validate_schedules(start.treedef, alphas, betas)
    inputs, new_slots, _ = schedules.plan_call(0, schedule, start.bounds)
    fresh = [jnp.zeros((n, 256, 256), jnp.uint8) for n in new_slots]
    words = exact_step.Words(start.theta, start.velocity, start.word, fresh)

    @jax.jit
    def one_step(words, x):
        floats = exact_step.floats_of(words.theta, 44, [jnp.float32])
        grads = [grad_fn({"w": floats[0]}, x.k)["w"]]
        return exact_step.forward_step(words, grads, x, 44, [jnp.float32]).words

    for k in range(5):
        words = one_step(words, jax.tree.map(lambda a, k=k: a[k], inputs))
    assert new_slots[0] >= 2  # the call spills
    assert np.array_equal(np.asarray(end.slot_blocks[-1][0]), np.asarray(words.slots[0]))
    for got, want in zip(end.theta + end.velocity, words.theta + words.velocity, strict=True):
        assert np.array_equal(np.asarray(got.hi), np.asarray(want.hi))
        assert np.array_equal(np.asarray(got.lo), np.asarray(want.lo))
    back = reversible.reverse(end, grad_fn, alphas, betas)
    assert np.array_equal(np.asarray(reversible.params(back)["w"]), np.asarray(params["w"]))
    assert reversible.buffer_is_empty(back)


def test_a_failed_entry_keeps_the_first_step_it_failed_at():
    theta = fp.Word(jnp.array([0, 5, 0], jnp.uint32), jnp.array([1, 2, 3], jnp.uint32))
    assert int(exact_step.failed_step([theta])) == -1
    marked = exact_step._mark(theta, theta, jnp.array([False, True, True]), 7)
    later = exact_step._mark(marked, theta, jnp.array([True, True, False]), 9)
    assert np.asarray(later.hi).tolist() == [2**31, 2**31, 2**31]
    assert np.asarray(later.lo).tolist() == [9, 7, 7]  # marked entries keep their step
    assert int(exact_step.failed_step([theta, later])) == 7


def test_the_old_names_that_raised_on_flags_warn_and_still_raise():
    state = reversible.init({"w": jnp.ones(3, jnp.float32)})
    failed = jax.jit(
        lambda s: reversible.forward(s, lambda p, k: p, np.full(3, 1e30), np.full(3, 0.5))
    )
    failed = failed(state)
    for old in (reversible.check, sgd.check):
        with pytest.warns(DeprecationWarning, match="use jaxrnn.reversible.raise_if_failed"):
            with pytest.raises(reversible.FixedPointOverflowError, match="at step 0;"):
                old(failed)
    opt = reversible.reversible_momentum(0.1, 0.9, max_steps=2)
    undone = reversible.undo(opt, opt.init({"w": jnp.ones(3)}), lambda p: p)  # nothing to undo
    for old in (reversible.check_optimizer, optax_transform.check):
        with pytest.warns(DeprecationWarning, match="check_optimizer|check is deprecated"):
            with pytest.raises(reversible.TrajectoryMismatchError, match="at step 0"):
                old(undone)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name does not warn
        assert reversible.raise_if_failed(state) is state


def test_forward_and_reverse_run_inside_shard_map_on_a_state_made_there():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",))
    alphas, betas = np.full(40, 0.1, np.float32), np.full(40, 0.5)  # the call spills
    grad_fn = lambda p, k: {"w": jnp.sin(p["w"] + k.astype(jnp.float32))}

    def there_and_back(x):
        end = reversible.forward(reversible.init({"w": x}), grad_fn, alphas, betas)
        back = reversible.reverse(end, grad_fn, alphas, betas)
        return reversible.params(end)["w"], reversible.params(back)["w"]

    spec = jax.sharding.PartitionSpec("d")
    run = jax.jit(jax.shard_map(there_and_back, mesh=mesh, in_specs=spec, out_specs=spec))
    x = jnp.linspace(-1, 1, 8, dtype=jnp.float32)
    moved, back = run(x)
    outside = reversible.forward(reversible.init({"w": x}), grad_fn, alphas, betas)
    assert np.array_equal(np.asarray(moved), np.asarray(reversible.params(outside)["w"]))
    assert np.array_equal(np.asarray(back), np.asarray(x))
