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
from jaxrnn.cells import lstm
from jaxrnn.lstm_layer import lstm_layer

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
