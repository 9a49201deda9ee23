"""Exact reversal of momentum SGD: bit-exactness, the stored-bits bound, guards, x64 scope."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import reversible
from jaxrnn.exact import fixed_point as fp

KEY = jax.random.PRNGKey(0)
A = jax.random.normal(KEY, (4, 4), jnp.float32)
A = A @ A.T / 4 + jnp.eye(4, dtype=jnp.float32)
PARAMS = {"w": jnp.array([1.0, -0.5, 0.25, 2.0], jnp.float32), "b": jnp.array(0.5, jnp.float32)}
D = 5


def grad_fn(p, k):
    """A noisy quadratic; the noise of step k is derived from k."""
    noise = 0.1 * jax.random.normal(jax.random.fold_in(KEY, k), (4,), jnp.float32)
    return {"w": A @ p["w"] + noise + p["b"], "b": 0.1 * jnp.sum(p["w"]) + p["b"]}


def same_words(s, t):
    pairs = zip(s.theta + s.velocity, t.theta + t.velocity, strict=True)
    same = all(bool(jnp.all(a.hi == b.hi) & jnp.all(a.lo == b.lo)) for a, b in pairs)
    return same and all(bool(jnp.all(a == b)) for a, b in zip(s.word, t.word, strict=True))


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.999])
def test_forward_then_reverse_is_bit_exact_over_ten_thousand_steps(beta):
    n_steps = 10_000
    alphas, betas = jnp.full((n_steps,), 0.05, jnp.float32), np.full(n_steps, beta)
    start = reversible.init(PARAMS)
    end = reversible.forward(start, grad_fn, alphas, betas)
    assert end.step == n_steps
    moved = jnp.abs(reversible.params(end)["w"] - PARAMS["w"])
    assert float(moved.min()) > 1e-3  # training really moved the parameters
    back = reversible.reverse(end, grad_fn, alphas, betas)
    assert same_words(back, start)
    assert reversible.buffer_is_empty(back) and back.step == 0
    for leaf, original in zip(
        jax.tree.leaves(reversible.params(back)), jax.tree.leaves(PARAMS), strict=True
    ):
        assert np.array_equal(np.asarray(leaf), np.asarray(original))
        assert leaf.dtype == jnp.float32
    assert all(bool(jnp.all(v == 0)) for v in jax.tree.leaves(reversible.velocity(back)))
    # The buffer holds at least what the steps destroyed, and not much more.
    bound = D * n_steps * np.log2(2**16 / round(beta * 2**16))
    assert bound <= reversible.stored_bits(end) <= 1.1 * bound + 96 * D
    assert reversible.information_bound(betas, D) == pytest.approx(bound)


def test_stored_bits_at_beta_0_9_are_within_the_acceptance_bound():
    n_steps, beta = 10_000, 0.9
    end = reversible.forward(
        reversible.init(PARAMS), grad_fn, np.full(n_steps, 0.01), np.full(n_steps, beta)
    )
    bound = D * n_steps * np.log2(1 / beta)  # with the nominal beta, not n / 2^16
    stored = reversible.stored_bits(end)
    assert stored <= 1.1 * bound + 96 * D
    slots = sum(s.shape[0] * int(np.prod(s.shape[1:])) for s in end.slots)
    assert stored == 32 * D + 8 * slots


def to_float32(x, frac_bits):
    """Word -> float32 as the documented rounding: magnitude halves, then the sign."""
    m = abs(x)
    value = np.float32(m >> 32) * np.float32(2.0**32) + np.float32(m & 0xFFFFFFFF)
    value = np.float32(value * np.float32(2.0**-frac_bits))
    return -value if x < 0 else value


def test_forward_matches_a_python_integer_reference_with_spills():
    """Python integers, the buffer's push/pop and its spills, for 300 steps of beta = 0.5."""
    c = np.array([0.9, 0.3, 1.7], np.float32)
    frac_bits, n_steps, beta, alpha = 40, 300, 0.5, np.float32(0.125)
    params0 = jnp.array([0.3, -1.2, 2.5], jnp.float32)
    end = reversible.forward(
        reversible.init(params0, frac_bits=frac_bits),
        lambda p, k: p * jnp.asarray(c),
        jnp.full((n_steps,), alpha),
        np.full(n_steps, beta),
    )
    n, d = 2**15, 2**16
    theta = [round(float(x) * 2**frac_bits) for x in np.asarray(params0)]
    vel, word, slots, worst = [0, 0, 0], [0, 0, 0], [[], [], []], 0
    for _ in range(n_steps):
        spill = (worst // n) * d + d - 1 >= 2**32
        if spill:
            worst = min(worst, 2**24 - 1)
        worst = (worst // n) * d + d - 1
        for i in range(3):
            if spill:
                slots[i].append(word[i] >> 24)
                word[i] &= 2**24 - 1
            g = np.float32(to_float32(theta[i], frac_bits) * c[i])
            step = round(float(np.float32(alpha * g)) * 2**frac_bits)
            word[i], r2 = divmod(word[i], n)  # pop r2
            q, r1 = divmod(vel[i], d)
            word[i] = word[i] * d + r1  # push r1
            vel[i] = q * n + r2 - step
            theta[i] += vel[i]
    assert list(fp.to_int(end.theta[0])) == theta
    assert list(fp.to_int(end.velocity[0])) == vel
    assert np.asarray(end.word[0]).tolist() == word
    assert np.asarray(end.slots[0]).T.tolist() == slots and len(slots[0]) >= 6


def test_forward_approximates_float64_momentum_sgd():
    n_steps, alpha, beta = 200, 0.05, 0.875
    end = reversible.forward(
        reversible.init(PARAMS), grad_fn, np.full(n_steps, alpha), np.full(n_steps, beta)
    )
    p = {k: np.asarray(v, np.float64) for k, v in PARAMS.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    a64 = np.asarray(A, np.float64)
    for k in range(n_steps):
        noise = np.asarray(0.1 * jax.random.normal(jax.random.fold_in(KEY, k), (4,), jnp.float32))
        g = {"w": a64 @ p["w"] + noise + p["b"], "b": 0.1 * p["w"].sum() + p["b"]}
        v = {key: beta * v[key] - alpha * g[key] for key in p}
        p = {key: p[key] + v[key] for key in p}
    got = reversible.params(end)
    for key in p:
        np.testing.assert_allclose(np.asarray(got[key]), p[key], atol=1e-5)


def test_per_leaf_schedules_and_two_forward_calls_reverse_exactly():
    start = reversible.init(PARAMS)
    alphas = {"w": np.full(300, 0.05), "b": np.full(300, 0.01)}
    betas = {"w": np.full(300, 0.6), "b": np.linspace(0.5, 0.99, 300)}
    mid = reversible.forward(start, grad_fn, alphas, betas)
    end = reversible.forward(mid, grad_fn, np.full(100, 0.02), np.full(100, 0.7))
    assert end.step == 400 and [s.shape[0] for s in end.slots] != [s.shape[0] for s in mid.slots]
    back_mid = reversible.reverse(end, grad_fn, np.full(100, 0.02), np.full(100, 0.7))
    assert same_words(back_mid, mid)
    assert [s.shape for s in back_mid.slots] == [s.shape for s in mid.slots]
    assert same_words(reversible.reverse(back_mid, grad_fn, alphas, betas), start)


def test_forward_and_reverse_run_inside_jit_and_report_through_check():
    alphas, betas = np.full(50, 0.05), np.full(50, 0.9)
    run = jax.jit(lambda s: reversible.forward(s, grad_fn, alphas, betas))
    start = reversible.init(PARAMS)
    end = reversible.raise_if_failed(run(start))
    back = reversible.reverse(end, grad_fn, alphas, betas)
    assert same_words(back, start)


# ----------------------------------------------------------------------------- guards


@pytest.mark.parametrize("beta", [0.0, 1.0, 1.2, -0.1, float("nan"), 1e-9, 0.0038, 1 - 1e-9])
def test_beta_outside_the_supported_open_interval_is_rejected(beta):
    betas = np.full(5, 0.9)
    betas[3] = beta
    with pytest.raises(ValueError, match=r"betas: .*step 3"):
        reversible.forward(reversible.init(PARAMS), grad_fn, np.full(5, 0.1), betas)


def test_the_largest_supported_beta_is_65535_over_2_16():
    alphas = np.full(50, 0.05)
    start = reversible.init(PARAMS)
    end = reversible.forward(start, grad_fn, alphas, np.full(50, 65535 / 2**16))
    assert same_words(reversible.reverse(end, grad_fn, alphas, np.full(50, 65535 / 2**16)), start)
    # 1 - 2^-17 lies half way between 65535 and 65536 (/ 2^16) and rounds to even: 65536.
    with pytest.raises(ValueError, match=r"betas: .*keep beta in \[2\^-8, 65535 / 2\^16\]"):
        reversible.forward(start, grad_fn, alphas, np.full(50, 1 - 2**-17))
    with pytest.raises(ValueError, match="beta: expected a momentum"):
        reversible.information_bound([0.9, 1 - 2**-17], 3)
    assert reversible.information_bound([0.5, 2**-8], 3) == 3 * (1 + 8)


def test_the_smallest_supported_beta_spills_every_step_and_reverses_exactly():
    n_steps, beta = 200, 2.0**-8  # 8 bits destroyed per step: one byte spilled per step
    alphas, betas = np.full(n_steps, 0.05), np.full(n_steps, beta)
    start = reversible.init(PARAMS)
    end = reversible.forward(start, grad_fn, alphas, betas)
    assert all(s.shape[0] >= n_steps - 5 for s in end.slots)
    bound = reversible.information_bound(betas, D)
    assert bound == D * n_steps * 8
    assert bound <= reversible.stored_bits(end) <= 1.1 * bound + 96 * D
    back = reversible.reverse(end, grad_fn, alphas, betas)
    assert same_words(back, start) and reversible.buffer_is_empty(back)


@pytest.mark.parametrize("alpha", [0.0, -0.1, float("inf")])
def test_non_positive_step_sizes_are_rejected(alpha):
    alphas = np.full(5, 0.1)
    alphas[2] = alpha
    with pytest.raises(ValueError, match=r"alphas: expected step sizes > 0, got .* at step 2"):
        reversible.forward(reversible.init(PARAMS), grad_fn, alphas, np.full(5, 0.9))


def test_schedules_of_wrong_length_or_shape_are_rejected():
    state = reversible.init(PARAMS)
    with pytest.raises(ValueError, match=r"one length T, got lengths \[4, 5\]"):
        reversible.forward(state, grad_fn, np.full(5, 0.1), np.full(4, 0.9))
    with pytest.raises(ValueError, match=r"alphas: expected a schedule of shape \(T,\)"):
        reversible.forward(state, grad_fn, np.full((5, 2), 0.1), np.full(5, 0.9))
    with pytest.raises(ValueError, match=r"one length T"):
        reversible.forward(
            state, grad_fn, {"w": np.full(5, 0.1), "b": np.full(6, 0.1)}, np.full(5, 0.9)
        )


def test_traced_betas_and_bad_arguments_are_rejected():
    state = reversible.init(PARAMS)
    with pytest.raises(ValueError, match="betas: expected a concrete schedule"):
        jax.jit(lambda b: reversible.forward(state, grad_fn, np.full(3, 0.1), b).theta)(
            jnp.full(3, 0.9)
        )
    with pytest.raises(ValueError, match="frac_bits: expected an integer in"):
        reversible.init(PARAMS, frac_bits=63)
    with pytest.raises(ValueError, match="params leaf 0: expected a float array"):
        reversible.init(jnp.arange(3))
    with pytest.raises(ValueError, match="grad_fn: expected a gradient with the structure"):
        reversible.forward(state, lambda p, k: p["w"], np.full(3, 0.1), np.full(3, 0.9))
    with pytest.raises(ValueError, match=r"grad_fn: leaf 1: expected shape \(4,\)"):
        bad = lambda p, k: {"b": p["b"], "w": p["w"][:2]}
        reversible.forward(state, bad, np.full(3, 0.1), np.full(3, 0.9))
    with pytest.raises(ValueError, match="no step to reverse"):
        reversible.reverse(state, grad_fn, np.full(3, 0.1), np.full(3, 0.9))
    end = reversible.forward(state, grad_fn, np.full(3, 0.1), np.full(3, 0.9))
    with pytest.raises(ValueError, match="ran 3 steps.* with different betas"):
        reversible.reverse(end, grad_fn, np.full(3, 0.1), np.full(3, 0.8))
    with pytest.raises(ValueError, match="ran 3 steps.*got 4 steps"):
        reversible.reverse(end, grad_fn, np.full(4, 0.1), np.full(4, 0.9))


def test_initial_params_outside_the_range_are_rejected():
    with pytest.raises(reversible.FixedPointOverflowError, match="params leaf 0"):
        reversible.init(jnp.array([1e6], jnp.float32))  # beyond ±2^19 at 44 fraction bits
    assert reversible.init(jnp.array([1e6], jnp.float32), frac_bits=32).step == 0


def exploding(at):
    def grads(p, k):
        scale = jnp.where(k == at, 1e7, 1.0).astype(jnp.float32)
        return jax.tree.map(lambda x: scale * x, grad_fn(p, k))

    return grads


def test_fixed_point_overflow_is_reported_with_its_step():
    state = reversible.init(PARAMS)
    with pytest.raises(reversible.FixedPointOverflowError, match="at step 7;"):
        reversible.forward(state, exploding(7), np.full(20, 0.1), np.full(20, 0.9))
    nan_at_3 = lambda p, k: jax.tree.map(lambda x: jnp.where(k == 3, jnp.nan, x), grad_fn(p, k))
    with pytest.raises(reversible.FixedPointOverflowError, match="at step 3;"):
        reversible.forward(state, nan_at_3, np.full(20, 0.1), np.full(20, 0.9))
    nan_last = lambda p, k: jax.tree.map(lambda x: jnp.where(k == 19, jnp.inf, x), grad_fn(p, k))
    with pytest.raises(reversible.FixedPointOverflowError, match="at step 19;"):
        reversible.forward(state, nan_last, np.full(20, 0.1), np.full(20, 0.9))
    # Inside jit the step travels in the state and check() raises on the host.
    run = jax.jit(
        lambda s: reversible.forward(s, exploding(12), np.full(20, 0.1), np.full(20, 0.9))
    )
    end = run(state)
    assert int(end.bad_step) == 12
    with pytest.raises(reversible.FixedPointOverflowError, match="at step 12;"):
        reversible.raise_if_failed(end)
    # A momentum slowly pushing theta out of range is caught where it leaves, too.
    # theta must stay within ±2^(62-F), v within ±2^(61-F): find by hand the step that
    # first leaves (the largest parameter starts at 2.0), with float64 momentum.
    drift = lambda p, k: jax.tree.map(lambda x: jnp.full_like(x, -1.0), p)
    theta, v, beta = 2.0, 0.0, round(0.99 * 2**16) / 2**16
    expected = None
    for step in range(20):
        v = beta * v + 5000.0
        theta += v
        if expected is None and (theta >= 2.0 ** (62 - 44) or v >= 2.0 ** (61 - 44)):
            expected = step
    with pytest.raises(reversible.FixedPointOverflowError, match=f"at step {expected};"):
        reversible.forward(state, drift, np.full(20, 5000.0), np.full(20, 0.99))


def test_a_gradient_that_recomputes_differently_is_detected():
    alphas, betas = np.full(400, 0.05), np.full(400, 0.9)
    start = reversible.init(PARAMS)
    end = reversible.forward(start, grad_fn, alphas, betas)

    with pytest.raises(reversible.TrajectoryMismatchError, match="differs from the forward"):
        reversible.reverse(end, off_by_one_ulp_at(250), alphas, betas)
    with pytest.raises(reversible.TrajectoryMismatchError):
        reversible.reverse(end, off_by_one_ulp_at(2), alphas, betas)  # only the checksum sees it


def test_a_tiny_difference_at_the_first_step_of_a_call_is_detected():
    # A step word that differs by fewer than n units leaves v(k) of the inverse step alone
    # and changes only the buffer word it restores; at a call's first step no later v shows
    # it, so the checksum includes the call's starting words.
    table = 0.01 * jax.random.normal(KEY, (40, 4), jnp.float32)
    nudged = table.at[0].set(jnp.nextafter(table[0], jnp.inf))
    nudged = nudged.at[20].set(jnp.nextafter(table[20], jnp.inf))
    grads = lambda t: lambda p, k: {"w": t[k] + 0 * p["w"], "b": 0 * p["b"]}
    alphas, betas = np.full(20, 0.1), np.full(20, 0.9)
    start = reversible.init(PARAMS)
    first = reversible.forward(start, grads(table), alphas, betas)  # steps 0..19
    second = reversible.forward(first, grads(table), alphas, betas)  # steps 20..39
    for end in (first, second):
        with pytest.raises(reversible.TrajectoryMismatchError):
            reversible.reverse(end, grads(nudged), alphas, betas)
    back = reversible.reverse(reversible.reverse(second, grads(table), alphas, betas),
                              grads(table), alphas, betas)  # fmt: skip
    assert same_words(back, start)


def off_by_one_ulp_at(step):
    """grad_fn, except that w's gradient at ``step`` is one float32 ulp larger."""

    def grads(p, k):
        g = grad_fn(p, k)
        w = jnp.where(k == step, jnp.nextafter(g["w"], jnp.float32(jnp.inf)), g["w"])
        return {"w": w, "b": g["b"]}

    return grads


@pytest.mark.parametrize("step", [0, 1, 2, 7, 19])
def test_a_one_ulp_different_gradient_at_any_step_of_a_short_call_is_detected(step):
    alphas, betas = np.full(20, 0.05), np.full(20, 0.9)
    end = reversible.forward(reversible.init(PARAMS), grad_fn, alphas, betas)
    with pytest.raises(reversible.TrajectoryMismatchError):
        reversible.reverse(end, off_by_one_ulp_at(step), alphas, betas)


def test_reverse_and_forward_run_inside_a_users_jit_on_a_closed_over_state():
    alphas, betas = np.full(30, 0.05), np.full(30, 0.9)
    start = reversible.init(PARAMS)
    end = reversible.forward(start, grad_fn, alphas, betas)
    back = jax.jit(lambda: reversible.params(reversible.reverse(end, grad_fn, alphas, betas)))()
    for leaf, original in zip(jax.tree.leaves(back), jax.tree.leaves(PARAMS), strict=True):
        np.testing.assert_array_equal(leaf, original)
    shapes = jax.eval_shape(
        lambda: reversible.params(reversible.reverse(end, grad_fn, alphas, betas))
    )
    assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(jnp.shape, PARAMS)
    ahead = jax.jit(lambda: reversible.params(reversible.forward(start, grad_fn, alphas, betas)))()
    for got, want in zip(
        jax.tree.leaves(ahead), jax.tree.leaves(reversible.params(end)), strict=True
    ):
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- x64 scope


def test_the_x64_switch_is_unchanged_by_the_calls():
    before = jax.config.jax_enable_x64
    end = reversible.forward(reversible.init(PARAMS), grad_fn, np.full(50, 0.05), np.full(50, 0.9))
    reversible.reverse(end, grad_fn, np.full(50, 0.05), np.full(50, 0.9))
    assert jax.config.jax_enable_x64 == before
    assert end.theta[0].hi.dtype == jnp.uint32


def test_importing_the_library_starts_no_jax_backend():
    # jax.distributed.initialize must run before any backend starts; the library's import
    # must leave that possible (no arrays built at import time).
    code = textwrap.dedent(
        """
        import importlib, pkgutil
        import jax
        import jaxrnn
        for module in pkgutil.walk_packages(jaxrnn.__path__, "jaxrnn."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
        # A started backend keeps its platform; an unknown platform cannot start one.
        jax.config.update("jax_platforms", "no_such_platform")
        try:
            jax.devices()
        except RuntimeError:
            print(False)
        else:
            print(True)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_without_x64_the_words_are_uint32_and_reversal_is_exact():
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from jaxrnn import reversible
        p0 = {"a": jnp.linspace(-1, 1, 6, dtype=jnp.float32)}
        g = lambda p, k: {"a": jnp.sin(p["a"] * (k % 5 + 1))}
        s = reversible.init(p0)
        e = reversible.forward(s, g, np.full(2000, 0.1), np.full(2000, 0.5))
        b = reversible.reverse(e, g, np.full(2000, 0.1), np.full(2000, 0.5))
        assert not jax.config.jax_enable_x64
        assert e.theta[0].hi.dtype == jnp.uint32 and e.slots[0].shape[0] > 20
        assert np.array_equal(np.asarray(reversible.params(b)["a"]), np.asarray(p0["a"]))
        assert reversible.buffer_is_empty(b)
        print("exact")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "exact"
