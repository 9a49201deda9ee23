"""A fast LSTM layer: forward ``lax.scan``, backward the hand BPTT of SPEC §4 (``custom_vjp``).

Same parameters, carry and results as ``jaxrnn.scan(jaxrnn.cells.lstm.apply, ...)``, and
the same gradients (equal to ``jax.grad`` of that scan up to rounding); only faster:

    i_t = sigma(W_i x_t + U_i h_{t-1} + b_i)    f_t = sigma(W_f x_t + U_f h_{t-1} + b_f)
    o_t = sigma(W_o x_t + U_o h_{t-1} + b_o)    g_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
    c_t = f_t * c_{t-1} + i_t * g_t             h_t = o_t * tanh(c_t),    y_t = h_t

The twelve weights are fused into three arrays once per call (:mod:`jaxrnn.lstm_fast.fused`);
the kernel and its backward recursions are in :mod:`jaxrnn.lstm_fast.kernel`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxrnn._checks import check_last_dim, check_lengths, check_matrix, dtype_of, shape_of
from jaxrnn.cells import lstm
from jaxrnn.lstm_fast.fused import fuse
from jaxrnn.lstm_fast.kernel import Choices, lstm_scan_split


def _check_inputs(params, carry, xs, choices):
    """Validate at trace time; return the common floating dtype of the parameters."""
    xs_shape = shape_of(xs)
    if len(xs_shape) < 2:
        raise ValueError(f"xs: expected shape (T, *batch, D), got {xs_shape}")
    check_last_dim(xs, check_matrix(params, "W_i")[1], name="xs")
    lstm.check(params, carry, xs)
    dtypes = {jnp.dtype(dtype_of(v)) for v in params.values()}
    if len(dtypes) != 1:
        raise ValueError(f"params: expected one floating dtype for all entries, got {dtypes}")
    batch = xs_shape[1:-1]
    for name, leaf in (("carry[0] (c)", carry[0]), ("carry[1] (h)", carry[1])):
        if shape_of(leaf)[:-1] != batch:
            raise ValueError(
                f"{name}: expected shape {batch + shape_of(leaf)[-1:]} (the batch shape of xs "
                f"{xs_shape}), got {shape_of(leaf)}"
            )
    if not isinstance(choices, Choices):
        raise ValueError(f"choices: expected a jaxrnn.lstm_fast.Choices, got {choices!r}")
    for name in ("unroll", "backward_unroll", "batch_split"):
        value = getattr(choices, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"choices.{name}: expected a positive integer, got {value!r}")
    return dtypes.pop()


def lstm_layer(params: dict, carry, xs, *, lengths=None, choices: Choices | None = None):
    """Run the vector LSTM over ``xs``; the gradient is the hand BPTT, not autodiff.

    Equal to ``jaxrnn.scan(jaxrnn.cells.lstm.apply, params, carry, xs, lengths=lengths)``,
    including with ``lengths`` (sequence n runs its first ``lengths[n]`` steps; its carry
    then stops and its outputs are zero). The plain-Python meaning, per sequence n::

        c, h = carry
        ys = zeros((T, H))
        for t in range(lengths[n] if lengths is not None else T):
            (c, h), ys[t] = jaxrnn.cells.lstm.apply(params, (c, h), xs[t])
        return (c, h), ys

    Inputs and carry are cast to the parameters' dtype.

    Args:
      params: the dict of :mod:`jaxrnn.cells.lstm`: ``W_g`` (H, D), ``U_g`` (H, H),
        ``b_g`` (H,) for g in i, f, o, c, all of one floating dtype.
      carry: ``(c_0, h_0)``, each (*batch, H).
      xs: (T, *batch, D).
      lengths: optional integer (*batch,) with values in [0, T].
      choices: how the kernel is computed (:class:`jaxrnn.lstm_fast.Choices`); the default
        is the fastest measured on CPU. Results do not depend on it beyond rounding.

    Returns:
      ``((c_T, h_T), ys)``: the final carry, each (*batch, H), and ys (T, *batch, H).
    """
    choices = Choices() if choices is None else choices
    dtype = _check_inputs(params, carry, xs, choices)
    xs_shape = shape_of(xs)
    n_steps, batch, in_dim = xs_shape[0], xs_shape[1:-1], xs_shape[-1]
    if lengths is not None:
        check_lengths(lengths, xs, n_steps)
    c0 = jnp.asarray(carry[0], dtype)
    h0 = jnp.asarray(carry[1], dtype)
    if n_steps == 0:
        hidden = shape_of(c0)[-1]
        return (c0, h0), jnp.zeros((0, *batch, hidden), dtype)
    hidden = shape_of(c0)[-1]
    n_seq = math.prod(batch)
    xs_flat = jnp.asarray(xs, dtype).reshape(n_steps, n_seq, in_dim)
    mask = None
    if lengths is not None:
        active = jnp.arange(n_steps)[:, None] < jnp.asarray(lengths).reshape(1, n_seq)
        mask = active[..., None]
    W, U, b = fuse(params)
    c_last, hs = lstm_scan_split(
        choices, W, U, b, c0.reshape(n_seq, hidden), h0.reshape(n_seq, hidden), xs_flat, mask
    )
    h_last = hs[-1]
    ys = hs if mask is None else jnp.where(mask, hs, 0)
    return (
        (c_last.reshape(*batch, hidden), h_last.reshape(*batch, hidden)),
        ys.reshape(n_steps, *batch, hidden),
    )
