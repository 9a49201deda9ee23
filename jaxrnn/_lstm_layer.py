"""A fast LSTM layer: forward ``lax.scan``, backward the hand BPTT of SPEC §4 (``custom_vjp``).

Same parameters, carry and results as ``jaxrnn.scan(jaxrnn.cells.lstm.apply, ...)``, and
the same gradients (equal to ``jax.grad`` of that scan up to rounding); only faster:

    i_t = sigma(W_i x_t + U_i h_{t-1} + b_i)    f_t = sigma(W_f x_t + U_f h_{t-1} + b_f)
    o_t = sigma(W_o x_t + U_o h_{t-1} + b_o)    g_t = tanh(W_c x_t + U_c h_{t-1} + b_c)
    c_t = f_t * c_{t-1} + i_t * g_t             h_t = o_t * tanh(c_t),    y_t = h_t

The twelve weights are fused into three arrays once per call (:mod:`jaxrnn.lstm_fast.fused`);
the kernel and its backward recursions are in :mod:`jaxrnn.lstm_fast.kernel`. ``reverse=True``
runs the same forward kernel on each sequence reversed within its length (one gather in,
the same gather out).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from jaxrnn import checkpointed_lstm
from jaxrnn._checks import check_last_dim, check_lengths, check_matrix, dtype_of, shape_of
from jaxrnn._varying import vary_like
from jaxrnn.cells import lstm
from jaxrnn.lstm_fast.fused import fuse
from jaxrnn.lstm_fast.kernel import Choices, lstm_scan_split


def _check_inputs(params, carry, xs, choices):
    """Validate at trace time; return the common floating dtype of the parameters."""
    xs_shape = shape_of(xs)
    if len(xs_shape) < 2:
        raise ValueError(f"xs: expected shape (T, *batch, D), got {xs_shape}")
    check_last_dim(xs, check_matrix(params, "W_i")[1], name="xs")
    lstm.validate(params, carry, xs)
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
    for name in ("unroll", "backward_unroll", "batch_split", "block"):
        value = getattr(choices, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"choices.{name}: expected a positive integer, got {value!r}")
    return dtypes.pop()


def _reverse_within_lengths(a, lengths):
    """``a`` (T, B, ...) with each sequence's first ``lengths[n]`` steps in reverse order.

    ``out[t, n] = a[L_n - 1 - t, n]`` for ``t < L_n`` and ``a[t, n]`` (padding stays put)
    otherwise, ``L_n = lengths[n]`` (T for every n if ``lengths`` is None). The map is its
    own inverse, and a permutation: its gradient is the same reordering, exactly.
    """
    if lengths is None:
        return a[::-1]
    t = jnp.arange(a.shape[0])[:, None]
    source = jnp.where(t < lengths, lengths - 1 - t, t)
    return jnp.take_along_axis(a, source.reshape(source.shape + (1,) * (a.ndim - 2)), axis=0)


def lstm_layer(
    params: dict,
    carry,
    xs,
    *,
    lengths=None,
    reverse: bool = False,
    choices: Choices | None = None,
    checkify_lengths: bool = False,
    checkpoints: int | None = None,
):
    """Run the vector LSTM over ``xs``; the gradient is the hand BPTT, not autodiff.

    Equal to ``jaxrnn.scan(jaxrnn.cells.lstm.apply, params, carry, xs, lengths=lengths,
    reverse=reverse)``, including with ``lengths`` (sequence n runs its first ``lengths[n]``
    steps; its carry then stops and its outputs are zero) and ``reverse`` (those steps run
    from ``lengths[n] - 1`` down to 0, and ``ys[t]`` stays aligned with ``xs[t]``). The
    plain-Python meaning, per sequence n::

        c, h = carry
        ys = zeros((T, H))
        L = lengths[n] if lengths is not None else T
        for t in (reversed(range(L)) if reverse else range(L)):
            (c, h), ys[t] = jaxrnn.cells.lstm.apply(params, (c, h), xs[t])
        return (c, h), ys

    Inputs and carry are cast to the parameters' dtype.

    Args:
      params: the dict of :mod:`jaxrnn.cells.lstm`: ``W_g`` (H, D), ``U_g`` (H, H),
        ``b_g`` (H,) for g in i, f, o, c, all of one floating dtype.
      carry: ``(c_0, h_0)``, each (*batch, H).
      xs: (T, *batch, D).
      lengths: optional integer (*batch,) with values in [0, T].
      reverse: run each sequence from its last step (``lengths[n] - 1``, or T - 1) to 0.
      checkify_lengths: check traced ``lengths`` as a ``checkify.check`` (see
        :func:`jaxrnn.scan`); without it a traced value outside [0, T] acts as the bound.
      choices: how the kernel is computed (:class:`jaxrnn.lstm_fast.Choices`); the default
        is the fastest measured on CPU. Results do not depend on it beyond rounding.
      checkpoints: None, or k: keep at most k carries for the backward pass and recompute
        the others by binomial checkpointing (SPEC §10, :mod:`jaxrnn.checkpointed_lstm`);
        then ``choices`` is not used.

    Returns:
      ``((c_T, h_T), ys)``: the final carry, each (*batch, H), and ys (T, *batch, H).
    """
    choices = Choices() if choices is None else choices
    if not isinstance(reverse, (bool, np.bool_)):
        raise ValueError(f"reverse: expected True or False, got {reverse!r}")
    dtype = _check_inputs(params, carry, xs, choices)
    xs_shape = shape_of(xs)
    n_steps, batch, in_dim = xs_shape[0], xs_shape[1:-1], xs_shape[-1]
    if lengths is not None:
        lengths = check_lengths(lengths, xs, n_steps, checkify_values=checkify_lengths)
    if checkpoints is not None:
        return checkpointed_lstm.lstm_layer(
            params,
            carry,
            xs,
            lengths=lengths,
            reverse=reverse,
            dtype=dtype,
            checkpoints=checkpoints,
        )
    c0, h0 = vary_like(
        (jnp.asarray(carry[0], dtype), jnp.asarray(carry[1], dtype)), params, xs, lengths
    )  # a carry made inside jax.shard_map varies over the axes of the inputs
    if n_steps == 0:
        hidden = shape_of(c0)[-1]
        return (c0, h0), jnp.zeros((0, *batch, hidden), dtype)
    hidden = shape_of(c0)[-1]
    n_seq = math.prod(batch)
    xs_flat = jnp.asarray(xs, dtype).reshape(n_steps, n_seq, in_dim)
    mask = flat_lengths = None
    if lengths is not None:
        # clipped as under jit a value outside [0, T] cannot be rejected (it acts as the bound)
        # lengths may cover only the leading batch axes (as in scan): broadcast over the rest
        lengths = jnp.asarray(lengths)
        lengths = lengths.reshape(lengths.shape + (1,) * (len(batch) - lengths.ndim))
        flat_lengths = jnp.clip(jnp.broadcast_to(lengths, batch).reshape(n_seq), 0, n_steps)
        mask = (jnp.arange(n_steps)[:, None] < flat_lengths)[..., None]
        # padding steps see zeros (as in jaxrnn.scan): NaN padding cannot reach the gradients
        xs_flat = jnp.where(mask, xs_flat, 0)
    if reverse:
        # the reordering keeps steps t < L_n at t < L_n, so the mask needs no reordering
        xs_flat = _reverse_within_lengths(xs_flat, flat_lengths)
    W, U, b = fuse(params)
    c_last, hs = lstm_scan_split(
        choices, W, U, b, c0.reshape(n_seq, hidden), h0.reshape(n_seq, hidden), xs_flat, mask
    )
    h_last = hs[-1]
    ys = hs if mask is None else jnp.where(mask, hs, 0)
    if reverse:
        ys = _reverse_within_lengths(ys, flat_lengths)
    return (
        (c_last.reshape(*batch, hidden), h_last.reshape(*batch, hidden)),
        ys.reshape(n_steps, *batch, hidden),
    )
