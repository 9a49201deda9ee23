"""A fast GRU layer: forward ``lax.scan``, backward the hand BPTT of SPEC §8 (``custom_vjp``).

Same parameters, carry and results as ``jaxrnn.scan(jaxrnn.cells.gru.apply, ...)``, and the
same gradients (equal to ``jax.grad`` of that scan up to rounding); only faster:

    r_t = sigma(W_r x_t + U_r h_{t-1} + b_r)      z_t = sigma(W_z x_t + U_z h_{t-1} + b_z)
    n_t = tanh(W_n x_t + b_n + r_t * (U_n h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1},     y_t = h_t

The ten weights are fused into four arrays once per call (:mod:`jaxrnn.gru_fast.fused`);
the kernel and its backward recursion are in :mod:`jaxrnn.gru_fast.kernel`. ``reverse=True``
runs the same forward kernel on each sequence reversed within its length.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxrnn._checks import check_last_dim, check_matrix, check_params, shape_of
from jaxrnn._fast_layer import (
    check_choices,
    check_layer_inputs,
    check_reverse,
    flatten,
    unflatten_outputs,
)
from jaxrnn._varying import vary_like
from jaxrnn.cells import gru
from jaxrnn.gru_fast.fused import fuse
from jaxrnn.gru_fast.kernel import Choices, gru_scan


def gru_layer(
    params: dict,
    carry,
    xs,
    *,
    lengths=None,
    reverse: bool = False,
    choices=None,
    checkify_lengths: bool = False,
):
    """Run the GRU over ``xs``; the gradient is the hand BPTT, not autodiff.

    Equal to ``jaxrnn.scan(jaxrnn.cells.gru.apply, params, carry, xs, lengths=lengths,
    reverse=reverse)``, including with ``lengths`` (sequence n runs its first ``lengths[n]``
    steps; its carry then stops and its outputs are zero) and ``reverse`` (those steps run
    from ``lengths[n] - 1`` down to 0, and ``ys[t]`` stays aligned with ``xs[t]``). The
    plain-Python meaning, per sequence n::

        h = carry
        ys = zeros((T, H))
        L = lengths[n] if lengths is not None else T
        for t in (reversed(range(L)) if reverse else range(L)):
            h, ys[t] = jaxrnn.cells.gru.apply(params, h, xs[t])
        return h, ys

    Inputs and carry are cast to the parameters' dtype.

    Args:
      params: the dict of :mod:`jaxrnn.cells.gru`: ``W_g`` (H, D), ``U_g`` (H, H), ``b_g``
        (H,) for g in r, z, n, and ``b_hn`` (H,), all of one floating dtype.
      carry: h_0, shape (*batch, H).
      xs: (T, *batch, D).
      lengths: optional integer (*batch,) with values in [0, T].
      reverse: run each sequence from its last step (``lengths[n] - 1``, or T - 1) to 0.
      checkify_lengths: check traced ``lengths`` as a ``checkify.check`` (see
        :func:`jaxrnn.scan`); without it a traced value outside [0, T] acts as the bound.
      choices: how the kernel is computed (:class:`jaxrnn.gru_fast.Choices`); the default
        is as fast as any measured on CPU and compiles fastest. Results do not depend on it
        beyond rounding.

    Returns:
      ``(h_T, ys)``: the final carry (*batch, H) and ys (T, *batch, H).
    """
    choices = Choices() if choices is None else choices
    check_reverse(reverse)
    hidden, in_dim = check_matrix(params, "W_r")
    check_params(params, gru.param_shapes(in_dim, hidden))
    check_last_dim(carry, hidden, name="carry")
    check_last_dim(xs, in_dim, name="xs")
    dtype = check_layer_inputs(params, {"carry": carry}, xs)
    check_choices(choices, Choices, ("unroll", "backward_unroll"))
    h0 = jnp.asarray(carry, dtype)
    flat = flatten(xs, lengths, dtype, reverse=reverse, checkify_lengths=checkify_lengths)
    if shape_of(xs)[0] == 0:
        return h0, jnp.zeros((0, *shape_of(h0)), dtype)
    W, U, b, b_hn = fuse(params)
    # a carry made inside jax.shard_map varies over the axes of the inputs
    h0_flat = vary_like(h0.reshape(-1, hidden), params, flat.xs, flat.mask)
    hs = gru_scan(choices, W, U, b, b_hn, h0_flat, flat.xs, flat.mask)
    return hs[-1].reshape(shape_of(h0)), unflatten_outputs(hs, flat, reverse=reverse)
