"""Synthetic sequence tasks as data generators: binary addition, the adding problem, copying.

Every generator is a pure function of a PRNG key and a step index, ``task(key, step, ...)``:
the batch of step ``s`` is drawn with ``jax.random.fold_in(key, s)``, so the data of a run
is reproducible and a resumed run sees exactly the batches it would have seen (the data
position is just the step). Shapes are time-major: inputs (T, B, D).

Use with :func:`jaxrnn.train.fit` as ``data=lambda step: adding_problem(key, step, ...)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_key, check_positive_int, dtype_of, is_concrete, is_int, shape_of
from jaxrnn.bits import to_bits


def _batch_key(key, step):
    """``fold_in(key, step)``, after checking that ``key`` is one key and ``step`` an index."""
    check_key(key)
    integer = is_int(step) or (shape_of(step) == () and jnp.issubdtype(dtype_of(step), jnp.integer))
    if not integer or (is_concrete(step) and int(step) < 0):
        raise ValueError(f"step: expected a non-negative integer, got {step!r}")
    return jax.random.fold_in(key, step)


def _check_float_dtype(dtype):
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise ValueError(f"dtype: expected a floating dtype, got {dtype!r}")
    return jnp.dtype(dtype)


def adding_problem(key, step, *, batch: int, length: int, dtype=jnp.float32):
    """The adding problem (Hochreiter & Schmidhuber 1997): add the two marked numbers.

    Each sequence has T = ``length`` steps of two channels: ``x[t, n, 0] ~ U(0, 1)`` and a
    marker ``x[t, n, 1]`` that is 1 at exactly two steps, one in the first half
    (t < T // 2) and one in the second half (t >= T // 2), and 0 elsewhere. The target is

        y[n, 0] = sum_t x[t, n, 0] * x[t, n, 1]

    Predicting the constant 1 gives a mean squared error of 1/6; a model that solves the task
    goes well below.

    Args:
      key: a PRNG key; step: the step index (the batch is drawn from ``fold_in(key, step)``).
      batch: B, sequences per batch. length: T >= 2.
      dtype: the floating dtype of xs and ys (default float32).

    Returns:
      ``(xs, ys)``: xs of shape (T, B, 2), ys of shape (B, 1).
    """
    check_positive_int(batch, name="batch")
    check_positive_int(length, name="length")
    if length < 2:
        raise ValueError(f"length: expected at least 2 steps (two markers), got {length}")
    return _adding(_batch_key(key, step), batch, length, _check_float_dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _adding(key, batch, length, dtype):
    k_values, k_first, k_second = jax.random.split(key, 3)
    half = length // 2
    values = jax.random.uniform(k_values, (length, batch), dtype)
    first = jax.random.randint(k_first, (batch,), 0, half, dtype=jnp.int32)
    second = jax.random.randint(k_second, (batch,), half, length, dtype=jnp.int32)
    steps = jnp.arange(length)[:, None]
    markers = ((steps == first) | (steps == second)).astype(dtype)
    targets = jnp.sum(values * markers, axis=0)[:, None]
    return jnp.stack([values, markers], axis=-1), targets


def copy_task(key, step, *, batch: int, length: int, delay: int, n_symbols: int = 8):
    """The copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): recall a sequence.

    Classes: 0 = blank, 1..K = the symbols (K = ``n_symbols``), K + 1 = the delimiter. With
    L = ``length`` and the total length T = 2 L + ``delay``, each sequence shows L random
    symbols s_0..s_{L-1}, then blanks, with the delimiter at step L + delay - 1 (the cue to
    start), then L blanks; the target is blank for the first L + delay steps, then the
    symbols in order:

        inputs[t]  = s_t for t < L;  K + 1 for t = L + delay - 1;  0 otherwise
        targets[t] = 0 for t < L + delay;  s_{t - L - delay} for t >= L + delay

    A model that remembers nothing predicts blank, then a uniform guess: its cross-entropy
    per step is L log(K) / T.

    Args:
      key: a PRNG key; step: the step index.
      batch: B. length: L, symbols to copy. delay: >= 1 steps from the last symbol to the
        first output (the last of them shows the delimiter). n_symbols: K >= 1.

    Returns:
      ``(xs, targets)``: one-hot inputs xs of shape (T, B, K + 2) in float32 and integer
      targets of shape (T, B) with values in 0..K.
    """
    check_positive_int(batch, name="batch")
    check_positive_int(length, name="length")
    check_positive_int(delay, name="delay")
    check_positive_int(n_symbols, name="n_symbols")
    return _copy(_batch_key(key, step), batch, length, delay, n_symbols)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _copy(key, batch, length, delay, n_symbols):
    symbols = jax.random.randint(key, (length, batch), 1, n_symbols + 1, dtype=jnp.int32)
    blanks = jnp.zeros((delay - 1, batch), symbols.dtype)
    cue = jnp.full((1, batch), n_symbols + 1, symbols.dtype)
    tail = jnp.zeros((length, batch), symbols.dtype)
    inputs = jnp.concatenate([symbols, blanks, cue, tail])
    targets = jnp.concatenate([jnp.zeros((length + delay, batch), symbols.dtype), symbols])
    return jax.nn.one_hot(inputs, n_symbols + 2, dtype=jnp.float32), targets


def binary_addition(key, step, *, batch: int, n_bits: int, dtype=jnp.float32):
    """Binary addition bit by bit, least significant bit first (SPEC §1 as a learning task).

    Draw a, b uniformly from [0, 2^n); with T = n + 1 steps (one more for the final carry),

        xs[t, n] = (bit t of a, bit t of b)        ys[t, n, 0] = bit t of a + b

    Args:
      key: a PRNG key; step: the step index.
      batch: B. n_bits: n, bits per operand (1..30).
      dtype: the floating dtype of xs and ys (default float32).

    Returns:
      ``(xs, ys)``: xs of shape (n + 1, B, 2) and ys of shape (n + 1, B, 1), with 0/1 values.
    """
    check_positive_int(batch, name="batch")
    check_positive_int(n_bits, name="n_bits")
    if n_bits > 30:
        raise ValueError(f"n_bits: expected at most 30 (sums must fit in int32), got {n_bits}")
    return _addition(_batch_key(key, step), batch, n_bits, _check_float_dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _addition(key, batch, n_bits, dtype):
    operands = jax.random.randint(key, (2, batch), 0, 2**n_bits, dtype=jnp.int32)
    bits_in = to_bits(operands, n_bits + 1, dtype=dtype)  # (2, B, T)
    bits_sum = to_bits(operands[0] + operands[1], n_bits + 1, dtype=dtype)  # (B, T)
    xs = jnp.transpose(bits_in, (2, 1, 0))
    ys = jnp.transpose(bits_sum)[..., None]
    return xs, ys
