"""Weight interop: the same weights give the same outputs in jaxrnn, PyTorch and flax.

Tests that need torch or flax skip with the reason when the library is not installed; the
NumPy-input paths and the error paths run without them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import interop
from jaxrnn._lstm_layer import lstm_layer
from jaxrnn.cells import gru, lstm

T, B, D, H = 9, 3, 4, 5


def _random_params(seed, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    shapes = lstm.param_shapes(D, H)
    return {k: jnp.asarray(rng.normal(0, 0.5, s), dtype) for k, s in shapes.items()}


def _inputs(seed):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(T, B, D)).astype(np.float32)
    c0 = rng.normal(size=(B, H)).astype(np.float32)
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    return xs, c0, h0


def _numpy_state_dict(seed):
    """A torch-shaped state dict in NumPy, gate blocks i, f, g, o, with distinct biases."""
    rng = np.random.default_rng(seed)
    return {
        "weight_ih_l0": rng.normal(size=(4 * H, D)),
        "weight_hh_l0": rng.normal(size=(4 * H, H)),
        "bias_ih_l0": rng.normal(size=(4 * H,)),
        "bias_hh_l0": rng.normal(size=(4 * H,)),
    }


def test_from_torch_lstm_places_blocks_i_f_g_o_and_adds_the_biases():
    sd = _numpy_state_dict(0)
    params = interop.from_torch_lstm(sd)
    for gate, block in (("i", 0), ("f", 1), ("c", 2), ("o", 3)):
        rows = slice(block * H, (block + 1) * H)
        np.testing.assert_array_equal(params[f"W_{gate}"], sd["weight_ih_l0"][rows])
        np.testing.assert_array_equal(params[f"U_{gate}"], sd["weight_hh_l0"][rows])
        np.testing.assert_allclose(
            params[f"b_{gate}"], sd["bias_ih_l0"][rows] + sd["bias_hh_l0"][rows], rtol=1e-15
        )
    assert params["W_i"].dtype == jnp.float64


def test_from_torch_lstm_without_biases_gives_zero_biases():
    sd = {k: v for k, v in _numpy_state_dict(1).items() if k.startswith("weight")}
    params = interop.from_torch_lstm(sd, dtype=jnp.float32)
    assert all(float(jnp.abs(params[f"b_{g}"]).max()) == 0.0 for g in lstm.GATES)
    assert params["U_o"].dtype == jnp.float32


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda sd: sd.pop("weight_hh_l0"), "missing"),
        (lambda sd: sd.__setitem__("weight_hh_l0", np.zeros((4 * H, H + 1))), "weight_hh_l0"),
        (lambda sd: sd.__setitem__("weight_ih_l0", np.zeros((3 * H, D))), "weight_ih_l0"),
        (lambda sd: sd.__setitem__("bias_ih_l0", np.zeros(H)), "bias_ih_l0"),
        (lambda sd: sd.__setitem__("weight_hr_l0", np.zeros((2, H))), "proj_size"),
        (lambda sd: sd.__setitem__("weight_ih_l0", np.zeros((4 * H, D), int)), "floating"),
    ],
)
def test_from_torch_lstm_rejects_bad_state_dicts(mutate, message):
    sd = _numpy_state_dict(2)
    mutate(sd)
    with pytest.raises(ValueError, match=message):
        interop.from_torch_lstm(sd)


def test_from_torch_lstm_rejects_bad_arguments():
    with pytest.raises(ValueError, match="state_dict: expected a mapping"):
        interop.from_torch_lstm([1, 2])
    with pytest.raises(ValueError, match="layer"):
        interop.from_torch_lstm(_numpy_state_dict(0), layer=-1)
    with pytest.raises(ValueError, match="weight_ih_l1"):
        interop.from_torch_lstm(_numpy_state_dict(0), layer=1)
    with pytest.raises(ValueError, match="_reverse"):
        interop.from_torch_lstm(_numpy_state_dict(0), reverse=True)


def test_flax_round_trip_is_exact_and_transposes_kernels():
    params = _random_params(3)
    flax_params = interop.to_flax_lstm_cell(params)
    np.testing.assert_array_equal(flax_params["ig"]["kernel"], np.asarray(params["W_c"]).T)
    np.testing.assert_array_equal(flax_params["ho"]["bias"], params["b_o"])
    assert "bias" not in flax_params["ii"]
    back = interop.from_flax_lstm_cell({"params": flax_params})
    for key in params:
        np.testing.assert_array_equal(back[key], params[key])


def test_flax_converters_reject_bad_input():
    with pytest.raises(ValueError, match="LSTMCell entries"):
        interop.from_flax_lstm_cell({"ii": {}})
    bad = interop.to_flax_lstm_cell(_random_params(4))
    del bad["hf"]["bias"]
    with pytest.raises(ValueError, match="'bias'"):
        interop.from_flax_lstm_cell(bad)
    bad = interop.to_flax_lstm_cell(_random_params(4))
    bad["hi"]["kernel"] = jnp.zeros((H, H + 1))
    with pytest.raises(ValueError, match="shape"):
        interop.from_flax_lstm_cell(bad)
    with pytest.raises(ValueError, match="W_i"):
        interop.to_flax_lstm_cell({"W_x": jnp.zeros((H, D))})


# --- against the real PyTorch -------------------------------------------------------------


def _torch_run(module, xs, c0, h0):
    import torch

    with torch.no_grad():
        ys, (h_n, c_n) = module(
            torch.from_numpy(xs), (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None])
        )
    return ys.numpy(), c_n[0].numpy(), h_n[0].numpy()


def test_torch_weights_give_torch_outputs_in_jaxrnn():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    torch.manual_seed(0)
    module = torch.nn.LSTM(D, H)
    xs, c0, h0 = _inputs(5)
    ys_torch, c_torch, h_torch = _torch_run(module, xs, c0, h0)
    params = interop.from_torch_lstm(module.state_dict())
    assert params["W_i"].dtype == jnp.float32
    for run in (jaxrnn.scan, lambda *a: lstm_layer(*a[1:])):
        (c, h), ys = run(lstm.apply, params, (jnp.asarray(c0), jnp.asarray(h0)), xs)
        assert np.max(np.abs(np.asarray(ys) - ys_torch)) <= 1e-5
        assert np.max(np.abs(np.asarray(c) - c_torch)) <= 1e-5
        assert np.max(np.abs(np.asarray(h) - h_torch)) <= 1e-5


def test_jaxrnn_weights_give_the_same_outputs_in_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    params = _random_params(6)
    module = torch.nn.LSTM(D, H)
    module.load_state_dict(interop.to_torch_lstm(params))
    xs, c0, h0 = _inputs(7)
    ys_torch, c_torch, h_torch = _torch_run(module, xs, c0, h0)
    (c, h), ys = lstm_layer(params, (jnp.asarray(c0), jnp.asarray(h0)), xs)
    assert np.max(np.abs(np.asarray(ys) - ys_torch)) <= 1e-5
    assert np.max(np.abs(np.asarray(c) - c_torch)) <= 1e-5
    back = interop.from_torch_lstm(interop.to_torch_lstm(params))
    for key in params:
        np.testing.assert_array_equal(back[key], params[key])


def test_torch_two_layer_bidirectional_lstm_layer_by_layer():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    torch.manual_seed(1)
    module = torch.nn.LSTM(D, H, num_layers=2, bidirectional=True)
    xs, _, _ = _inputs(8)
    with torch.no_grad():
        ys_torch = module(torch.from_numpy(xs))[0].numpy()
    sd = module.state_dict()
    inputs = jnp.asarray(xs)
    for layer in range(2):
        params = [interop.from_torch_lstm(sd, layer=layer, reverse=r) for r in (False, True)]
        zero = lstm.init_carry((B,), H)
        _, inputs = jaxrnn.bidirectional(lstm.apply, params, (zero, zero), inputs)
    assert np.max(np.abs(np.asarray(inputs) - ys_torch)) <= 1e-5


def test_to_torch_lstm_names_layers_and_directions():
    pytest.importorskip("torch", reason="PyTorch is not installed")
    sd = interop.to_torch_lstm(_random_params(9), layer=2, reverse=True)
    assert sorted(sd) == sorted(
        f"{k}_l2_reverse" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )
    assert tuple(sd["weight_ih_l2_reverse"].shape) == (4 * H, D)
    assert float(sd["bias_hh_l2_reverse"].abs().max()) == 0.0


# --- against the real flax ----------------------------------------------------------------


def test_flax_weights_give_flax_outputs_in_jaxrnn():
    nn = pytest.importorskip("flax.linen", reason="flax is not installed")
    xs, c0, h0 = _inputs(10)
    rnn = nn.RNN(nn.LSTMCell(H), time_major=True, return_carry=True)
    variables = rnn.init(jax.random.PRNGKey(0), jnp.asarray(xs))
    variables = jax.tree_util.tree_map(lambda v: v + 0.1, variables)  # nonzero biases
    (c_flax, h_flax), ys_flax = rnn.apply(
        variables, jnp.asarray(xs), initial_carry=(jnp.asarray(c0), jnp.asarray(h0))
    )
    params = interop.from_flax_lstm_cell(variables["params"]["cell"])
    (c, h), ys = lstm_layer(params, (jnp.asarray(c0), jnp.asarray(h0)), xs)
    assert float(jnp.max(jnp.abs(ys - ys_flax))) <= 1e-5
    assert float(jnp.max(jnp.abs(c - c_flax))) <= 1e-5
    assert float(jnp.max(jnp.abs(h - h_flax))) <= 1e-5


def test_jaxrnn_weights_give_the_same_outputs_in_flax():
    nn = pytest.importorskip("flax.linen", reason="flax is not installed")
    params = _random_params(11)
    xs, c0, h0 = _inputs(12)
    cell = nn.LSTMCell(H)
    carry = (jnp.asarray(c0), jnp.asarray(h0))
    flax_params = {"params": interop.to_flax_lstm_cell(params)}
    ys_flax = []
    for t in range(T):
        carry, y = cell.apply(flax_params, carry, jnp.asarray(xs[t]))
        ys_flax.append(y)
    _, ys = lstm_layer(params, (jnp.asarray(c0), jnp.asarray(h0)), xs)
    assert float(jnp.max(jnp.abs(ys - jnp.stack(ys_flax)))) <= 1e-5


# --- the GRU, whole modules and PyTorch's states ---------------------------------------------


def _numpy_torch_module(seed, gates, num_layers=1, bidirectional=False):
    """A state dict shaped as a torch module's: G = 4 (nn.LSTM) or 3 (nn.GRU) gate blocks."""
    rng = np.random.default_rng(seed)
    sd = {}
    for k in range(num_layers):
        in_dim = D if k == 0 else H * (2 if bidirectional else 1)
        for suffix in ("", "_reverse") if bidirectional else ("",):
            sd[f"weight_ih_l{k}{suffix}"] = rng.normal(size=(gates * H, in_dim))
            sd[f"weight_hh_l{k}{suffix}"] = rng.normal(size=(gates * H, H))
            sd[f"bias_ih_l{k}{suffix}"] = rng.normal(size=(gates * H,))
            sd[f"bias_hh_l{k}{suffix}"] = rng.normal(size=(gates * H,))
    return sd


def test_from_torch_gru_places_blocks_r_z_n_and_keeps_the_n_biases_apart():
    sd = _numpy_torch_module(20, 3)
    params = interop.from_torch_gru(sd)
    block = lambda name, k: sd[name][k * H : (k + 1) * H]  # noqa: E731
    for k, gate in enumerate("rzn"):
        np.testing.assert_array_equal(params[f"W_{gate}"], block("weight_ih_l0", k))
        np.testing.assert_array_equal(params[f"U_{gate}"], block("weight_hh_l0", k))
    for k, gate in enumerate("rz"):
        want = block("bias_ih_l0", k) + block("bias_hh_l0", k)
        np.testing.assert_allclose(params[f"b_{gate}"], want, rtol=1e-15)
    np.testing.assert_array_equal(params["b_n"], block("bias_ih_l0", 2))
    np.testing.assert_array_equal(params["b_hn"], block("bias_hh_l0", 2))


def test_torch_gru_weights_give_torch_outputs_and_back():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    torch.manual_seed(2)
    module = torch.nn.GRU(D, H)
    xs, _, h0 = _inputs(21)
    with torch.no_grad():
        ys_torch, h_n = module(torch.from_numpy(xs), torch.from_numpy(h0)[None])
    params = interop.from_torch_gru(module.state_dict())
    h, ys = jaxrnn.gru_layer(params, jnp.asarray(h0), xs)
    assert np.max(np.abs(np.asarray(ys) - ys_torch.numpy())) <= 1e-5
    assert np.max(np.abs(np.asarray(h) - h_n[0].numpy())) <= 1e-5
    fresh = torch.nn.GRU(D, H)
    fresh.load_state_dict(interop.to_torch_gru(params))
    with torch.no_grad():
        again = fresh(torch.from_numpy(xs), torch.from_numpy(h0)[None])[0].numpy()
    assert np.max(np.abs(again - ys_torch.numpy())) <= 1e-6


@pytest.mark.parametrize(
    "make, cell, options, message",
    [
        (lambda: _numpy_torch_module(22, 3), lstm, {}, "the shape of an nn.GRU's, not an nn.LSTM"),
        (lambda: _numpy_torch_module(22, 4), gru, {}, "the shape of an nn.LSTM's, not an nn.GRU"),
        (
            lambda: _numpy_torch_module(22, 4, 2),
            lstm,
            {"num_layers": 3},
            r"num_layers: expected 3 layers, the state dict has 2 \(weight_ih_l0 .. weight_ih_l1\)",
        ),
        (
            lambda: _numpy_torch_module(22, 4, 2),
            lstm,
            {"bidirectional": True},
            "bidirectional: expected True, the state dict has no backward",
        ),
        (
            lambda: {"rnn." + k: v for k, v in _numpy_torch_module(22, 4).items()},
            lstm,
            {},
            r"expected only the entries of an nn.LSTM .* whole model",
        ),
        (
            lambda: {**_numpy_torch_module(22, 4), "weight_hr_l0": np.zeros((2, H))},
            lstm,
            {},
            "proj_size",
        ),
        (
            lambda: {
                k: v
                for k, v in _numpy_torch_module(22, 3, 2, True).items()
                if not k.endswith("l1_reverse")
            },
            gru,
            {},
            r"only layers \[0\] of \[0, 1\] have a backward",
        ),
        (
            lambda: {
                k: (v[:, :7] if k == "weight_ih_l1" else v)
                for k, v in _numpy_torch_module(22, 3, 2, True).items()
            },
            gru,
            {},
            r"weight_ih_l1: expected 10 columns \(the outputs of layer 0\), got 7",
        ),
        (lambda: _numpy_torch_module(22, 4), jaxrnn.cells.elman, {}, "cell: PyTorch's nn.LSTM"),
        (lambda: {}, lstm, {}, "expected the entries of an nn.LSTM, got none"),
    ],
    ids=[
        "gru_as_lstm",
        "lstm_as_gru",
        "num_layers",
        "bidirectional",
        "whole_model",
        "proj_size",
        "missing_direction",
        "chain",
        "other_cell",
        "empty",
    ],
)
def test_from_torch_layers_refuses_other_architectures(make, cell, options, message):
    with pytest.raises(ValueError, match=message):
        interop.from_torch_layers(make(), cell, **options)


def test_from_torch_layers_reads_every_layer_and_direction():
    sd = _numpy_torch_module(23, 3, num_layers=2, bidirectional=True)
    params = interop.from_torch_layers(sd, gru, num_layers=2, bidirectional=True)
    assert len(params) == 2 and all(set(p) == {"forward", "backward"} for p in params)
    want = interop.from_torch_gru(sd, layer=1, reverse=True)
    for key in want:
        np.testing.assert_array_equal(params[1]["backward"][key], want[key])
    assert params[1]["forward"]["W_r"].shape == (H, 2 * H)


def test_to_torch_layers_and_states_reject_bad_input():
    with pytest.raises(ValueError, match="params: expected a non-empty list"):
        interop.to_torch_layers([], lstm)
    with pytest.raises(ValueError, match=r"params\[0\]: expected a dict with 'forward'"):
        interop.to_torch_layers([{"fw": {}}], lstm)
    with pytest.raises(ValueError, match="c_0: expected the shape of h_0"):
        interop.from_torch_carries(np.zeros((2, B, H)), np.zeros((2, B, H + 1)))
    with pytest.raises(ValueError, match=r"h_0: expected shape \(num_layers \* 2"):
        interop.from_torch_carries(np.zeros((3, B, H)), bidirectional=True)


def test_from_torch_carries_orders_layers_and_directions_as_torch():
    h = np.arange(4 * B * H, dtype=np.float32).reshape(4, B, H)
    carries = interop.from_torch_carries(h, h + 100, bidirectional=True)
    assert len(carries) == 2
    (c_fw, h_fw), (c_bw, h_bw) = carries[1]  # layer 1: torch indices 2 (fw) and 3 (bw)
    np.testing.assert_array_equal(h_fw, h[2])
    np.testing.assert_array_equal(c_bw, h[3] + 100)
    assert [c.shape for c in interop.from_torch_carries(h)] == [(B, H)] * 4


def test_flax_gru_cell_both_ways():
    nn = pytest.importorskip("flax.linen", reason="flax is not installed")
    xs, _, h0 = _inputs(24)
    rnn = nn.RNN(nn.GRUCell(H), time_major=True, return_carry=True)
    variables = rnn.init(jax.random.PRNGKey(1), jnp.asarray(xs))
    variables = jax.tree_util.tree_map(lambda v: v + 0.1, variables)  # nonzero biases
    h_flax, ys_flax = rnn.apply(variables, jnp.asarray(xs), initial_carry=jnp.asarray(h0))
    params = interop.from_flax_gru_cell(variables["params"]["cell"])
    h, ys = jaxrnn.gru_layer(params, jnp.asarray(h0), xs)
    assert float(jnp.max(jnp.abs(ys - ys_flax))) <= 1e-5
    assert float(jnp.max(jnp.abs(h - h_flax))) <= 1e-5
    back = interop.to_flax_gru_cell(params)
    assert jax.tree.structure(back) == jax.tree.structure(dict(variables["params"]["cell"]))
    for got, want in zip(
        jax.tree.leaves(back), jax.tree.leaves(dict(variables["params"]["cell"])), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="GRUCell entries"):
        interop.from_flax_gru_cell({"ir": {}})


def test_flax_optimized_lstm_cell_weights_give_its_outputs():
    nn = pytest.importorskip("flax.linen", reason="flax is not installed")
    xs, c0, h0 = _inputs(25)
    rnn = nn.RNN(nn.OptimizedLSTMCell(H), time_major=True)
    variables = rnn.init(jax.random.PRNGKey(2), jnp.asarray(xs))
    variables = jax.tree_util.tree_map(lambda v: v + 0.1, variables)
    carry = (jnp.asarray(c0), jnp.asarray(h0))
    ys_flax = rnn.apply(variables, jnp.asarray(xs), initial_carry=carry)
    params = interop.from_flax_lstm_cell(variables["params"]["cell"])
    _, ys = lstm_layer(params, carry, xs)
    assert float(jnp.max(jnp.abs(ys - ys_flax))) <= 1e-5
