"""Tour section: stacked bidirectional layers, the fast GRU, PyTorch's multi-layer modules."""

from __future__ import annotations

TITLE = "Layer stacks: many layers, both directions, dropout; a fast GRU; PyTorch modules as is"
ORDER = 45


def _relative(a, b) -> float:
    import jax
    import jax.numpy as jnp

    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(x))) for x, y in pairs)


def tour():
    import importlib.util

    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxrnn
    from jaxrnn import layers
    from jaxrnn.cells import gru

    n_steps, batch, in_dim, hidden = 12, 4, 3, 8
    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    xs = jax.random.normal(key_x, (n_steps, batch, in_dim), jnp.float32)
    lengths = jnp.array([12, 5, 9, 1])
    params = layers.init(key_p, gru, in_dim, hidden, 2, bidirectional=True)

    def loss(run):
        carry = gru.init_carry((batch,), hidden)
        return jax.jit(jax.grad(lambda p: jnp.sum(run(p, carry, xs, lengths=lengths)[1] ** 2)))

    plain = lambda p, c, x, **kw: jaxrnn.scan(gru.apply, p, c, x, **kw)  # noqa: E731
    grads = [loss(run)(params[0]["forward"]) for run in (plain, jaxrnn.gru_layer)]
    yield (
        f"jaxrnn.gru_layer over xs {tuple(xs.shape)} with lengths {lengths.tolist()}: "
        "gradients by its hand BPTT (SPEC §8) equal autodiff of the plain scan to "
        f"{_relative(*grads):.1e} (relative, float32; float64 tests: <= 1e-10)"
    )
    stack = jax.jit(lambda p, x, n: layers.apply(p, x, cell=gru, lengths=n)[1])
    ys = stack(params, xs, lengths)
    yield (
        f"2-layer bidirectional GRU stack: ys {tuple(ys.shape)}, zero past each length "
        f"(max |ys[5:, 1]| = {float(jnp.abs(ys[5:, 1]).max()):.0f}); the backward direction "
        "starts at each sequence's own last step"
    )
    if importlib.util.find_spec("torch") is None:
        yield "PyTorch is not installed: skipping the nn.GRU comparison"
        return
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    module = torch.nn.GRU(in_dim, hidden, num_layers=2, bidirectional=True)
    packed = pack_padded_sequence(
        torch.tensor(np.asarray(xs)), torch.tensor(np.asarray(lengths)), enforce_sorted=False
    )
    with torch.no_grad():
        ys_torch = pad_packed_sequence(module(packed)[0], total_length=n_steps)[0].numpy()
    ys = stack(jaxrnn.interop.from_torch_layers(module.state_dict(), gru), xs, lengths)
    yield (
        "PyTorch nn.GRU(num_layers=2, bidirectional=True) on packed sequences, its state dict "
        f"converted in one call: max |ys - ys_torch| = "
        f"{float(np.max(np.abs(np.asarray(ys) - ys_torch))):.1e}"
    )
