"""Stacks of layers: equal to PyTorch's multi-layer bidirectional nn.LSTM and nn.GRU on
packed variable-length sequences (float32 <= 1e-5), to an independent NumPy loop (any cell,
residuals), the fast layers to the plain scan (values and gradients, float64); dropout
between layers only; every bad input named."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_cells import np_elman

from jaxrnn import interop, layers
from jaxrnn.cells import elman, gru, lstm

T, B, D, H = 9, 4, 3, 5
LENGTHS = np.array([9, 4, 1, 6])  # unsorted, as a packed batch may come


def _inputs(seed, dtype=np.float32, batch=B):
    return np.random.default_rng(seed).normal(size=(T, batch, D)).astype(dtype)


# --- against PyTorch on packed sequences ----------------------------------------------------


def _torch_packed(module, xs, lengths, state):
    """PyTorch's outputs (T, B, dirs H), zero past each length, and final states."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    packed = pack_padded_sequence(
        torch.from_numpy(xs), torch.from_numpy(lengths), enforce_sorted=False
    )
    with torch.no_grad():
        out, final = module(packed, state)
    return pad_packed_sequence(out, total_length=xs.shape[0])[0].numpy(), final


@pytest.mark.parametrize(
    "module_name, cell, num_layers", [("LSTM", lstm, 3), ("GRU", gru, 2)], ids=["lstm", "gru"]
)
def test_equals_torch_bidirectional_stack_on_packed_sequences(module_name, cell, num_layers):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    torch.manual_seed(0)
    module = getattr(torch.nn, module_name)(D, H, num_layers=num_layers, bidirectional=True)
    xs = _inputs(1)
    h_0 = torch.randn(2 * num_layers, B, H)
    c_0 = torch.randn(2 * num_layers, B, H) if cell is lstm else None
    ys_torch, final = _torch_packed(module, xs, LENGTHS, h_0 if c_0 is None else (h_0, c_0))

    params = interop.from_torch_layers(
        module.state_dict(), cell, num_layers=num_layers, bidirectional=True
    )
    carries = interop.from_torch_carries(h_0, c_0, bidirectional=True)
    run = jax.jit(lambda p, c, x, n: layers.apply(p, x, cell=cell, lengths=n, carries=c))
    ends, ys = run(params, carries, xs, jnp.asarray(LENGTHS))
    assert ys.shape == (T, B, 2 * H) and ys.dtype == jnp.float32
    assert np.max(np.abs(np.asarray(ys) - ys_torch)) <= 1e-5
    assert not np.asarray(ys)[LENGTHS[1] :, 1].any()  # zero past the length, as torch pads
    h_n, c_n = (final, None) if cell is gru else final
    want = interop.from_torch_carries(h_n, c_n, bidirectional=True)
    for got_leaf, want_leaf in zip(jax.tree.leaves(ends), jax.tree.leaves(want), strict=True):
        assert float(jnp.max(jnp.abs(got_leaf - want_leaf))) <= 1e-5
    # and back: the stack's weights give torch's outputs in a fresh module
    fresh = getattr(torch.nn, module_name)(D, H, num_layers=num_layers, bidirectional=True)
    fresh.load_state_dict(interop.to_torch_layers(params, cell))  # strict: every entry
    again, _ = _torch_packed(fresh, xs, LENGTHS, h_0 if c_0 is None else (h_0, c_0))
    assert np.max(np.abs(again - ys_torch)) <= 1e-6  # the biases are summed: rounding only


# --- against an independent NumPy loop --------------------------------------------------------


def _numpy_stack(params, xs, lengths, residual):
    """SPEC §9 for the Elman cell with plain loops: per sequence, per layer, per direction."""
    ys = np.zeros(xs.shape[:2] + (2 * H,))
    for n, length in enumerate(lengths):
        inputs = xs[:length, n]
        for k, layer in enumerate(params):
            p = {d: {name: np.asarray(v) for name, v in layer[d].items()} for d in layer}
            _, fw = np_elman(p["forward"], inputs, np.zeros(H), np.tanh)
            _, bw = np_elman(p["backward"], inputs[::-1], np.zeros(H), np.tanh)
            out = np.concatenate([fw, bw[::-1]], axis=-1)
            inputs = out + inputs if residual and k > 0 else out
        ys[:length, n] = inputs
    return ys


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_any_cell_equals_a_numpy_loop_with_lengths_and_residuals(residual):
    params = layers.init(jax.random.PRNGKey(0), elman, D, H, 2, bidirectional=True)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) * 2, params)
    xs = _inputs(2, np.float64)
    run = jax.jit(lambda p, x: layers.apply(p, x, cell=elman, lengths=LENGTHS, residual=residual))
    _, ys = run(params, xs)
    np.testing.assert_allclose(ys, _numpy_stack(params, xs, LENGTHS, residual), rtol=1e-12)


def test_fast_layers_equal_the_plain_scan():
    # a GRU stack with dropout: the same key gives the same masks on both paths (the
    # gradients of the fast layers are tested against the plain scan in test_gru_layer.py)
    params = layers.init(jax.random.PRNGKey(1), gru, D, H, 2)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    xs, key = _inputs(3, np.float64), jax.random.PRNGKey(7)
    run = {
        fast: jax.jit(
            lambda p, x, fast=fast: layers.apply(
                p, x, cell=gru, lengths=LENGTHS, dropout=0.3, key=key, fast=fast
            )
        )
        for fast in (False, True)
    }
    want, got = run[False](params, xs), run[True](params, xs)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", [gru, elman], ids=["fast_gru", "scan_elman"])
def test_inside_shard_map_the_carries_made_inside_vary_with_the_batch(cell):
    # a one-device mesh has the same rules: xs varies over the mesh axis, zero carries made
    # inside do not until the stack makes them; gradients equal those outside the map
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
    spec = jax.sharding.PartitionSpec
    params = layers.init(jax.random.PRNGKey(8), cell, D, H, 1, bidirectional=True)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    xs = _inputs(9, np.float64)

    def inside(p, x, n):
        return layers.apply(p, x, cell=cell, lengths=n)[1]

    mapped = jax.shard_map(
        inside,
        mesh=mesh,
        in_specs=(spec(), spec(None, "batch"), spec("batch")),
        out_specs=spec(None, "batch"),
    )
    grads = [
        jax.jit(jax.grad(lambda p, run=run: jnp.sum(run(p, xs, LENGTHS) ** 2)))(params)
        for run in (inside, mapped)
    ]
    for got, want in zip(jax.tree.leaves(grads[1]), jax.tree.leaves(grads[0]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


# --- dropout, carries, sizes ----------------------------------------------------------------


def test_dropout_acts_between_layers_only_with_the_documented_keys():
    params = layers.init(jax.random.PRNGKey(2), elman, D, H, 2)
    xs, key, rate = jnp.asarray(_inputs(5)), jax.random.PRNGKey(3), 0.4
    _, dropped = layers.apply(params, xs, cell=elman, dropout=rate, key=key)
    # by hand: layer 0, then its outputs masked with jax.random.split(key, L - 1)[0]
    _, first = layers.apply(params[:1], xs, cell=elman)
    keep = jax.random.bernoulli(jax.random.split(key, 1)[0], 1 - rate, first.shape)
    _, by_hand = layers.apply(params[1:], jnp.where(keep, first / (1 - rate), 0), cell=elman)
    np.testing.assert_allclose(dropped, by_hand, rtol=1e-6, atol=1e-7)
    assert 0.3 < 1 - float(keep.mean()) < 0.5  # about the rate is dropped
    _, plain = layers.apply(params, xs, cell=elman)
    assert float(jnp.max(jnp.abs(dropped - plain))) > 1e-2
    # one layer: nothing lies between layers, so nothing is dropped
    _, single = layers.apply(params[:1], xs, cell=elman, dropout=rate, key=key)
    np.testing.assert_array_equal(single, first)


def test_inverted_dropout_keeps_the_mean_and_scales_what_it_keeps():
    ys = jnp.full((200, 50), 3.0)
    out = layers.inverted_dropout(jax.random.PRNGKey(0), ys, 0.25)
    kept = np.asarray(out) != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(np.asarray(out)[kept], 3.0 / 0.75, rtol=1e-6)
    assert abs(float(out.mean()) - 3.0) < 0.1


def test_layers_of_different_widths_and_the_carries_structure():
    k1, k2 = jax.random.split(jax.random.PRNGKey(4))
    params = layers.init(k1, elman, D, 4, 1) + layers.init(k2, elman, 4, 6, 1)
    carries = layers.init_carries(elman, (B,), 4, 1) + layers.init_carries(elman, (B,), 6, 1)
    carries = [c + 0.5 for c in carries]
    xs = jnp.asarray(_inputs(6))
    ends, ys = layers.apply(params, xs, cell=elman, carries=carries)
    assert ys.shape == (T, B, 6) and [e.shape for e in ends] == [(B, 4), (B, 6)]
    _, zero_start = layers.apply(params, xs, cell=elman)
    assert float(jnp.max(jnp.abs(ys - zero_start))) > 1e-3  # the carries are used
    with pytest.raises(ValueError, match=r"residual: layer 1's outputs \(9, 4, 6\)"):
        layers.apply(params, xs, cell=elman, residual=True)
    pairs = layers.init_carries(lstm, (2, 3), H, 2, bidirectional=True)
    assert len(pairs) == 2 and all(len(pair) == 2 for pair in pairs)
    assert pairs[1][1][0].shape == (2, 3, H)  # layer 1, backward, c


# --- errors -----------------------------------------------------------------------------------


def test_bad_arguments_are_named():
    key = jax.random.PRNGKey(5)
    params = layers.init(key, lstm, D, H, 2, bidirectional=True)
    xs = jnp.asarray(_inputs(7))
    cases = [
        (lambda: layers.init(key, lstm, D, H, 0), "num_layers: expected a positive integer"),
        (lambda: layers.init(key, "lstm", D, H, 1), "cell: expected a cell module"),
        (lambda: layers.apply(params, xs, cell=lstm, dropout=1.0, key=key), r"dropout: .*\[0, 1\)"),
        (lambda: layers.apply(params, xs, cell=lstm, dropout=-0.1, key=key), "dropout"),
        (lambda: layers.apply(params, xs, cell=lstm, dropout=0.2), "key: dropout=0.2 needs"),
        (lambda: layers.apply(params, xs, cell=lstm, dropout=0.2, key=3), "key: expected one"),
        (
            lambda: layers.apply(params, xs, cell=lstm, carries=[None] * 3),
            "carries: expected one carry per layer, 2",
        ),
        (
            lambda: layers.apply(params, xs, cell=lstm, carries=[None, None]),
            r"carries\[0\]: expected a pair \(forward, backward\)",
        ),
        (lambda: layers.apply(params, xs, cell=gru), r"params\[0\]\['forward'\]: .* gru layer"),
        (
            lambda: layers.apply(params[:1] + layers.init(key, lstm, D, H, 1), xs, cell=lstm),
            r"params\[1\]: expected the directions of layer 0",
        ),
        (
            lambda: layers.apply(
                params[:1] + layers.init(key, lstm, H, H, 1, bidirectional=True), xs, cell=lstm
            ),
            r"params\[1\]\['forward'\]: .* reads 10 inputs \(the 2 x H outputs of layer 0\)",
        ),
        (lambda: layers.apply([], xs, cell=lstm), "params: expected a non-empty list"),
        (lambda: layers.apply(params, xs[0, 0], cell=lstm), r"xs: expected shape \(T, \*batch"),
        (lambda: layers.apply(params, xs, cell=lstm, lengths=jnp.arange(3)), "lengths"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


# --- the README's example ---------------------------------------------------------------------


def test_the_readme_example_trains_as_written(capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Stacked and bidirectional layers", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["result"].history.losses.shape == (300,)
    accuracy = np.mean(np.asarray(namespace["predicted"]) == np.asarray(namespace["labels"]))
    assert accuracy > 0.9  # README: about 97%
    printed = capsys.readouterr().out
    assert float(printed.split("held-out accuracy ")[1]) == pytest.approx(accuracy, abs=1e-3)
