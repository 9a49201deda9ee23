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

import jax.numpy as jnp

from jaxrnn import checkpointed_lstm
from jaxrnn._checks import check_last_dim, check_lengths, check_matrix, shape_of
from jaxrnn._fast_layer import (
    check_choices,
    check_layer_inputs,
    check_reverse,
    flatten,
    unflatten_outputs,
)
from jaxrnn._varying import vary_like
from jaxrnn.cells import lstm
from jaxrnn.lstm_fast.fused import fuse
from jaxrnn.lstm_fast.kernel import Choices, lstm_scan_split


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
    check_reverse(reverse)
    xs_shape = shape_of(xs)
    if len(xs_shape) < 2:
        raise ValueError(f"xs: expected shape (T, *batch, D), got {xs_shape}")
    check_last_dim(xs, check_matrix(params, "W_i")[1], name="xs")
    lstm.validate(params, carry, xs)
    dtype = check_layer_inputs(params, {"carry[0] (c)": carry[0], "carry[1] (h)": carry[1]}, xs)
    check_choices(choices, Choices, ("unroll", "backward_unroll", "batch_split", "block"))
    if checkpoints is not None:
        if lengths is not None:
            lengths = check_lengths(lengths, xs, xs_shape[0], checkify_values=checkify_lengths)
        return checkpointed_lstm.lstm_layer(
            params,
            carry,
            xs,
            lengths=lengths,
            reverse=reverse,
            dtype=dtype,
            checkpoints=checkpoints,
        )
    c0, h0 = (jnp.asarray(leaf, dtype) for leaf in carry)
    flat = flatten(xs, lengths, dtype, reverse=reverse, checkify_lengths=checkify_lengths)
    if xs_shape[0] == 0:
        return (c0, h0), jnp.zeros((0, *shape_of(h0)), dtype)
    hidden = shape_of(c0)[-1]
    # a carry made inside jax.shard_map varies over the axes of the inputs
    c0_flat, h0_flat = vary_like(
        (c0.reshape(-1, hidden), h0.reshape(-1, hidden)), params, flat.xs, flat.mask
    )
    W, U, b = fuse(params)
    c_last, hs = lstm_scan_split(choices, W, U, b, c0_flat, h0_flat, flat.xs, flat.mask)
    final = (c_last.reshape(shape_of(c0)), hs[-1].reshape(shape_of(h0)))
    return final, unflatten_outputs(hs, flat, reverse=reverse)
