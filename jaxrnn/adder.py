"""Binary addition with a threshold RNN (SPEC §1): hand weights, exhaustive proof, learning.

    z(t) = U x(t) + W h(t-1) + b_h        h(t) = phi(z(t))
    r(t) = V h(t) + b_y                   y(t) = phi(r(t))
    phi(z) = 1 if z > 0 else 0            h(0) = 0

x(t) = (a_t, b_t) holds bit t of the two addends, least significant first; an n-bit sum
has n + 1 bits, so the network runs n + 1 steps, the last with x = (0, 0), and
``a + b = sum_t y(t) 2^t``. The weights are those of :mod:`jaxrnn.cells.threshold` with
two inputs and one output; any number H of hidden units is accepted.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn._checks import (
    check_key,
    check_last_dim,
    check_params,
    check_positive_int,
    dtype_of,
    is_concrete,
    is_number,
    shape_of,
)
from jaxrnn._scan import scan
from jaxrnn.bits import from_bits, to_bits
from jaxrnn.cells import threshold

MAX_ADD_BITS = 30  # n + 1 output bits must fit in int32
MAX_VERIFY_BITS = 12  # 4^12 = 16.8 million pairs
_PAIRS_PER_BATCH = 1 << 18  # memory bound of one vectorised batch in verify


def hand_params(dtype=jnp.float32) -> dict:
    """The hand-designed 2-3-1 adder of SPEC §1.

    With S(t) = a_t + b_t + h_2(t-1) (h_2 of the previous step is the carry), hidden unit
    k = 1, 2, 3 is on iff S(t) >= k, i.e. S(t) - k + 1/2 > 0; the sum bit is on iff S(t) is
    1 or 3, i.e. h_1 - h_2 + h_3 - 1/2 > 0::

        U = [[1, 1], [1, 1], [1, 1]]    W = [[0, 1, 0], [0, 1, 0], [0, 1, 0]]
        b_h = [-1/2, -3/2, -5/2]        V = [[1, -1, 1]]        b_y = [-1/2]

    Args:
      dtype: a floating dtype (the biases are halves).
    """
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype: expected a floating dtype, got {jnp.dtype(dtype).name}")
    return {
        "U": jnp.ones((3, 2), dtype),
        "W": jnp.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype),
        "b_h": jnp.array([-0.5, -1.5, -2.5], dtype),
        "V": jnp.array([[1, -1, 1]], dtype),
        "b_y": jnp.array([-0.5], dtype),
    }


def check_adder_params(params, *, name: str = "params") -> dict:
    """Validate adder weights (2 inputs, H hidden, 1 output) and return them as arrays.

    Integer or list entries are converted to float32 arrays; floating arrays keep their dtype.
    """
    if not isinstance(params, Mapping) or "U" not in params:
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(
            f"{name}: expected a dict with entries ['U', 'V', 'W', 'b_h', 'b_y'], got {got}"
        )
    arrays = {}
    for key, value in params.items():
        try:
            array = value if isinstance(value, jax.Array) else np.asarray(value)
        except (TypeError, ValueError):
            array = None
        if array is None or not (
            jnp.issubdtype(array.dtype, jnp.floating)
            or jnp.issubdtype(array.dtype, jnp.integer)
            or array.dtype == np.bool_
        ):
            got = f"dtype {array.dtype}" if array is not None else repr(value)
            raise ValueError(f"{name}[{key!r}]: expected an array of real numbers, got {got}")
        if not jnp.issubdtype(array.dtype, jnp.floating):
            array = array.astype(np.float32)
        arrays[key] = jnp.asarray(array)
    shape_u = arrays["U"].shape
    if len(shape_u) != 2 or shape_u[1] != 2 or shape_u[0] < 1:
        raise ValueError(f"{name}['U']: expected shape (H, 2) for two input bits, got {shape_u}")
    check_params(arrays, threshold.param_shapes(2, shape_u[0], 1), name=name)
    return arrays


def _input_bits(a, b, n_bits: int):
    """x(t) = (a_t, b_t) for t < n and (0, 0) at t = n: shape (n + 1, *batch, 2), float32."""
    pair = jnp.stack([to_bits(a, n_bits), to_bits(b, n_bits)], axis=-1)  # (*batch, n, 2)
    pair = jnp.moveaxis(pair, -2, 0)  # (n, *batch, 2)
    return jnp.concatenate([pair, jnp.zeros_like(pair[:1])], axis=0)


def output_bits(params: dict, xs, *, activation=threshold.step):
    """Run the network over input bits: one scan, ``h(0) = 0``.

    Reference loop::

        h = zeros(H)
        for t in range(T):
            h, ys[t] = threshold.apply(params, h, xs[t], activation=activation)

    Args:
      params: adder weights (U (H, 2), W (H, H), b_h (H,), V (1, H), b_y (1,)).
      xs: (T, *batch, 2) input bits.
      activation: phi, or a smooth surrogate of it.

    Returns:
      ``(ys, hs)``: output bits (T, *batch) and hidden units (T, *batch, H).
    """
    params = check_adder_params(params)
    shape = shape_of(xs)
    if len(shape) < 2:
        raise ValueError(f"xs: expected input bits of shape (T, *batch, 2), got {shape}")
    check_last_dim(xs, 2, name="xs")
    xs = jnp.asarray(xs)
    hidden = params["U"].shape[0]
    carry = threshold.init_carry(xs.shape[1:-1], hidden, params["U"].dtype)

    def cell(p, h, x):
        h, y = threshold.apply(p, h, x, activation=activation)
        return h, (y[..., 0], h)

    _, (ys, hs) = scan(cell, params, carry, xs.astype(params["U"].dtype))
    return ys, hs


def _check_n_bits(n_bits, *, limit: int, name: str = "n_bits"):
    check_positive_int(n_bits, name=name)
    if n_bits > limit:
        raise ValueError(f"{name}: expected at most {limit}, got {n_bits}")


def _check_addend(value, n_bits: int, *, name: str):
    if not jnp.issubdtype(dtype_of(value), jnp.integer):
        raise ValueError(f"{name}: expected integers, got dtype {dtype_of(value)}")
    if is_concrete(value):
        values = np.asarray(value)
        if values.size and (values.min() < 0 or values.max() >= 2**n_bits):
            raise ValueError(
                f"{name}: expected values in [0, 2^{n_bits}) = [0, {2**n_bits - 1}], got min "
                f"{values.min()} and max {values.max()}"
            )


@functools.partial(jax.jit, static_argnames="n_bits")
def _add(params, a, b, n_bits: int):
    ys, _ = output_bits(params, _input_bits(a, b, n_bits))
    return from_bits(jnp.moveaxis(ys, 0, -1), dtype=jnp.int32).astype(jnp.int32)


def add(params: dict, a, b, n_bits: int):
    """Add non-negative integers with the network: ``sum_t y(t) 2^t`` over n + 1 steps.

    Args:
      params: adder weights, e.g. :func:`hand_params`.
      a, b: integer arrays of broadcastable shapes with values in [0, 2^n_bits) (checked
        when concrete; under ``jit`` bits above n_bits are dropped).
      n_bits: bits per addend, 1 <= n_bits <= 30.

    Returns:
      int32 array of the broadcast shape: what the network computes (a + b if correct).
    """
    params = check_adder_params(params)
    _check_n_bits(n_bits, limit=MAX_ADD_BITS)
    _check_addend(a, n_bits, name="a")
    _check_addend(b, n_bits, name="b")
    try:
        np.broadcast_shapes(shape_of(a), shape_of(b))
    except ValueError:
        raise ValueError(
            f"a, b: expected shapes that broadcast together, got {shape_of(a)} and {shape_of(b)}"
        ) from None
    a, b = jnp.broadcast_arrays(jnp.asarray(a, jnp.int32), jnp.asarray(b, jnp.int32))
    return _add(params, a, b, n_bits)


def trace(params: dict, a: int, b: int, n_bits: int) -> dict:
    """Per-step view of one addition: input bits, hidden units and output bits.

    Returns:
      dict of NumPy arrays: ``x`` (n + 1, 2), ``h`` (n + 1, H), ``y`` (n + 1,), and the
      integer ``sum`` the network outputs.
    """
    params = check_adder_params(params)
    _check_n_bits(n_bits, limit=MAX_ADD_BITS)
    for name, value in (("a", a), ("b", b)):
        _check_addend(np.asarray(value), n_bits, name=name)
        if np.ndim(value) != 0:
            raise ValueError(f"{name}: expected one integer, got shape {shape_of(value)}")
    xs = _input_bits(jnp.int32(a), jnp.int32(b), n_bits)
    ys, hs = output_bits(params, xs)
    ys = np.asarray(ys).astype(int)
    return {
        "x": np.asarray(xs).astype(int),
        "h": np.asarray(hs).astype(int),
        "y": ys,
        "sum": int(sum(int(bit) << t for t, bit in enumerate(ys))),
    }


class Counterexample(NamedTuple):
    """A pair the network adds wrongly: it outputs ``got`` where ``want = a + b``."""

    a: int
    b: int
    got: int
    want: int


@dataclasses.dataclass(frozen=True)
class Verification:
    """Result of :func:`verify`: the exhaustive check over all pairs of n-bit numbers."""

    ok: bool
    checked: int
    failures: int
    counterexample: Counterexample | None
    n_bits: int

    def __str__(self) -> str:
        head = f"{self.n_bits}-bit adder: {self.checked} pairs checked, {self.failures} wrong"
        if self.counterexample is None:
            return head + " (correct on every pair)"
        a, b, got, want = self.counterexample
        return head + f"; e.g. {a} + {b} = {want}, the network says {got}"


@functools.partial(jax.jit, static_argnames="n_bits")
def _count_failures(params, n_bits: int):
    """For every a in [0, 2^n): failures over all b, and the smallest failing b and its sum."""
    size = 1 << n_bits
    every = jnp.arange(size, dtype=jnp.int32)

    def row(a):
        got = _add(params, jnp.full_like(every, a), every, n_bits)
        wrong = got != a + every
        first = jnp.argmax(wrong)
        return wrong.sum(dtype=jnp.int32), first, got[first]

    batch = min(size, max(1, _PAIRS_PER_BATCH // size))
    failures, first_b, first_got = jax.lax.map(row, every, batch_size=batch)
    first_a = jnp.argmax(failures > 0)
    return failures.sum(dtype=jnp.int32), first_a, first_b[first_a], first_got[first_a]


def verify(params: dict, n_bits: int = 8) -> Verification:
    """Check the network on *every* pair of n-bit numbers in one jit-compiled call.

    All 4^n pairs (a, b) are run through n + 1 steps, vectorised, and compared with a + b.

    Args:
      params: adder weights, hand-set or learned or proposed; wrong weights give a
        counterexample (the failing pair with the smallest a, then the smallest b).
      n_bits: bits per addend, 1 <= n_bits <= 12.

    Returns:
      :class:`Verification` with ``ok``, ``checked`` (4^n), ``failures`` and
      ``counterexample`` ((a, b, got, want) or None).
    """
    params = check_adder_params(params)
    if not all(is_concrete(value) for value in params.values()):
        raise ValueError(
            "params: verify returns Python numbers, so it needs concrete weights, got traced "
            "ones; call it outside jax.jit / jax.grad (or use add, which traces)"
        )
    _check_n_bits(n_bits, limit=MAX_VERIFY_BITS)
    failures, a, b, got = (int(v) for v in _count_failures(params, n_bits))
    counterexample = Counterexample(a, b, got, a + b) if failures else None
    return Verification(failures == 0, 4**n_bits, failures, counterexample, n_bits)


def surrogate(temperature):
    """The smooth stand-in for phi while learning: ``sigmoid(temperature * z)``.

    As the temperature rises it tends to phi(z) for every z != 0, and
    ``phi(temperature * z) = phi(z)``, so hardening changes no weight.
    """
    return lambda z: jax.nn.sigmoid(temperature * z)


def _surrogate_loss(params, a, b, temperature, n_bits: int):
    """Mean binary cross-entropy of the surrogate outputs against the bits of a + b."""
    ys, _ = output_bits(params, _input_bits(a, b, n_bits), activation=surrogate(temperature))
    target = jnp.moveaxis(to_bits(a + b, n_bits + 1, dtype=ys.dtype), -1, 0)
    ys = jnp.clip(ys, 1e-6, 1 - 1e-6)
    return -jnp.mean(target * jnp.log(ys) + (1 - target) * jnp.log1p(-ys))


@functools.partial(jax.jit, static_argnames=("n_bits", "hidden", "steps", "batch_size"))
def _fit(key, learning_rate, temperature, *, n_bits, hidden, steps, batch_size):
    init_key, data_key = jax.random.split(key)
    params = threshold.init(init_key, 2, hidden, out_dim=1, dtype=jnp.float32)
    optimizer = optax.adam(learning_rate)
    start, end = temperature[0], temperature[1]

    def update(carry, i):
        params, state = carry
        tau = (start * (end / start) ** (i / max(steps - 1, 1))).astype(jnp.float32)
        a, b = jax.random.randint(
            jax.random.fold_in(data_key, i), (2, batch_size), 0, 1 << n_bits, dtype=jnp.int32
        )
        loss, grads = jax.value_and_grad(_surrogate_loss)(params, a, b, tau, n_bits)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    (params, _), losses = jax.lax.scan(
        update, (params, optimizer.init(params)), jnp.arange(steps, dtype=jnp.int32)
    )
    return params, losses


@dataclasses.dataclass(frozen=True)
class Training:
    """Result of :func:`train`: hardened weights, the surrogate loss per step, the proof."""

    params: dict
    losses: np.ndarray
    verification: Verification

    @property
    def ok(self) -> bool:
        return self.verification.ok


def _check_positive_number(value, *, name: str):
    if not is_number(value) or value <= 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")


DOCUMENTED_KEY = 3  # train(jax.random.PRNGKey(3)) learns a correct 8-bit adder


def train(
    key,
    *,
    n_bits: int = 8,
    hidden: int = 3,
    steps: int = 2000,
    batch_size: int = 64,
    learning_rate: float = 0.03,
    temperature: tuple[float, float] = (1.0, 20.0),
    verify_bits: int = 8,
) -> Training:
    """Learn adder weights from random pairs, harden them to phi and verify exhaustively.

    Training replaces phi by ``sigmoid(tau z)`` (:func:`surrogate`), with the temperature
    rising geometrically over the optimisation steps k = 0 .. K-1::

        tau(k) = tau_0 (tau_1 / tau_0)^(k / (K - 1))

    and minimises with Adam the binary cross-entropy between the n + 1 surrogate outputs
    y(t) and the bits s_t of a + b, ``-mean_t [s_t log y(t) + (1 - s_t) log(1 - y(t))]``,
    on a fresh batch of random n-bit pairs each step. Hardening puts phi back: since
    ``phi(tau z) = phi(z)`` the weights are kept as they are. ``train(PRNGKey(3))``
    (:data:`DOCUMENTED_KEY`) reaches 100% on the exhaustive 8-bit check; not every key does.

    Args:
      key: a ``jax.random`` key (initial weights and data).
      n_bits: length of the training addends (the sequences have n + 1 steps).
      hidden: number of hidden units H (3 in SPEC §1; more make learning easier).
      steps, batch_size, learning_rate: optimisation budget.
      temperature: (start, end) of the surrogate's temperature, both positive.
      verify_bits: the hardened network is checked on every pair of this many bits.

    Returns:
      :class:`Training` with ``params``, ``losses`` (steps,) and ``verification``.
    """
    check_key(key)
    _check_n_bits(n_bits, limit=MAX_ADD_BITS)
    check_positive_int(hidden, name="hidden")
    check_positive_int(steps, name="steps")
    check_positive_int(batch_size, name="batch_size")
    _check_positive_number(learning_rate, name="learning_rate")
    if not (isinstance(temperature, (tuple, list)) and len(temperature) == 2):
        raise ValueError(f"temperature: expected a pair (start, end), got {temperature!r}")
    for value in temperature:
        _check_positive_number(value, name="temperature")
    _check_n_bits(verify_bits, limit=MAX_VERIFY_BITS, name="verify_bits")
    params, losses = _fit(
        key,
        jnp.float32(learning_rate),
        jnp.asarray(temperature, jnp.float32),
        n_bits=n_bits,
        hidden=hidden,
        steps=steps,
        batch_size=batch_size,
    )
    return Training(params, np.asarray(losses), verify(params, verify_bits))
