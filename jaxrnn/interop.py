"""Weight interop for the vector LSTM: PyTorch ``nn.LSTM`` state dicts and flax ``LSTMCell``.

jaxrnn's LSTM (:mod:`jaxrnn.cells.lstm`, SPEC §4) has per-gate ``W_g`` (H, D), ``U_g`` (H, H)
and ``b_g`` (H,) for g in i, f, o, c. The peers store the same cell differently:

- PyTorch ``nn.LSTM``: ``weight_ih_l{k}`` (4H, D) and ``weight_hh_l{k}`` (4H, H) with the
  gates stacked in the order **i, f, g, o** (g is our c), and two biases ``bias_ih_l{k}``
  and ``bias_hh_l{k}`` (4H,) that are simply added: ``b_g = bias_ih[g] + bias_hh[g]``.
- flax ``linen.LSTMCell``: one ``Dense`` per gate and source, kernels stored transposed
  (in, out): ``ii``/``if``/``ig``/``io`` (input, no bias) and ``hi``/``hf``/``hg``/``ho``
  (hidden, with the bias).

Neither torch nor flax is imported here unless a function needs it (only
:func:`to_torch_lstm` does, to return tensors).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_matrix, check_params
from jaxrnn.cells import lstm

# Our gate name -> its block index in PyTorch's (i, f, g, o) stacking.
_TORCH_BLOCK = {"i": 0, "f": 1, "c": 2, "o": 3}
# Our gate name -> flax's gate letter.
_FLAX_GATE = {"i": "i", "f": "f", "c": "g", "o": "o"}


def _to_numpy(value, *, name: str) -> np.ndarray:
    """A torch tensor, a jax or NumPy array -> a NumPy array (no torch import needed)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name}: expected a floating array, got dtype {array.dtype}")
    return array


def _torch_names(layer: int, reverse: bool) -> dict[str, str]:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
        raise ValueError(f"layer: expected a non-negative integer, got {layer!r}")
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    return {kind: f"{kind}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def from_torch_lstm(state_dict, *, layer: int = 0, reverse: bool = False, dtype=None) -> dict:
    """jaxrnn LSTM params from a PyTorch ``nn.LSTM`` state dict (one layer, one direction).

        W_g = weight_ih[block(g)],  U_g = weight_hh[block(g)],
        b_g = bias_ih[block(g)] + bias_hh[block(g)],   blocks in PyTorch's order i, f, g, o

    Args:
      state_dict: ``module.state_dict()`` of an ``nn.LSTM`` (tensors or arrays).
      layer: which layer ``k`` to read (``*_l{k}`` entries).
      reverse: read the backward direction of a bidirectional LSTM (``*_l{k}_reverse``).
      dtype: dtype of the result; default the dtype of the weights.

    Returns:
      a dict as made by :func:`jaxrnn.cells.lstm.init`: ``W_g`` (H, D), ``U_g`` (H, H), ``b_g``
      (H,). A module built with ``bias=False`` gives zero biases.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict: expected a mapping, got {type(state_dict).__name__}")
    names = _torch_names(layer, reverse)
    missing = [names[k] for k in ("weight_ih", "weight_hh") if names[k] not in state_dict]
    if missing:
        raise ValueError(f"state_dict: missing {missing}; has {sorted(state_dict)}")
    if f"weight_hr_l{layer}" in state_dict:
        raise ValueError("state_dict: nn.LSTM with proj_size > 0 is not the cell of SPEC §4")
    w_ih = _to_numpy(state_dict[names["weight_ih"]], name=names["weight_ih"])
    w_hh = _to_numpy(state_dict[names["weight_hh"]], name=names["weight_hh"])
    if w_hh.ndim != 2 or w_hh.shape[0] != 4 * w_hh.shape[1]:
        raise ValueError(f"{names['weight_hh']}: expected shape (4H, H), got {w_hh.shape}")
    hidden = w_hh.shape[1]
    if w_ih.ndim != 2 or w_ih.shape[0] != 4 * hidden:
        raise ValueError(
            f"{names['weight_ih']}: expected shape (4H, D) = ({4 * hidden}, D), got {w_ih.shape}"
        )
    bias = np.zeros(4 * hidden, w_hh.dtype)
    for kind in ("bias_ih", "bias_hh"):
        if names[kind] in state_dict:
            part = _to_numpy(state_dict[names[kind]], name=names[kind])
            if part.shape != (4 * hidden,):
                raise ValueError(f"{names[kind]}: expected shape ({4 * hidden},), got {part.shape}")
            bias = bias + part
    dtype = w_hh.dtype if dtype is None else dtype
    params = {}
    for gate, block in _TORCH_BLOCK.items():
        rows = slice(block * hidden, (block + 1) * hidden)
        params[f"W_{gate}"] = jnp.asarray(w_ih[rows], dtype)
        params[f"U_{gate}"] = jnp.asarray(w_hh[rows], dtype)
        params[f"b_{gate}"] = jnp.asarray(bias[rows], dtype)
    return params


def _check_lstm_params(params) -> None:
    hidden, in_dim = check_matrix(params, "W_i")
    check_params(params, lstm.param_shapes(in_dim, hidden))


def to_torch_lstm(params: dict, *, layer: int = 0, reverse: bool = False) -> dict:
    """A PyTorch ``nn.LSTM`` state dict (torch tensors) for one layer and direction.

    The inverse of :func:`from_torch_lstm`: gates stacked i, f, g, o; the whole bias goes
    to ``bias_ih`` and ``bias_hh`` is zero. Load it with
    ``module.load_state_dict(sd, strict=False)`` (or merge several layers first).

    Args:
      params: a dict as made by :func:`jaxrnn.cells.lstm.init`.
      layer, reverse: which ``*_l{k}[_reverse]`` names to write.

    Returns:
      ``{"weight_ih_l{k}": (4H, D), "weight_hh_l{k}": (4H, H), "bias_ih_l{k}": (4H,),
      "bias_hh_l{k}": (4H,)}`` as CPU torch tensors of the params' dtype.
    """
    import torch

    _check_lstm_params(params)
    names = _torch_names(layer, reverse)
    order = sorted(_TORCH_BLOCK, key=_TORCH_BLOCK.get)
    stacked = {
        "weight_ih": np.concatenate([np.asarray(params[f"W_{g}"]) for g in order]),
        "weight_hh": np.concatenate([np.asarray(params[f"U_{g}"]) for g in order]),
        "bias_ih": np.concatenate([np.asarray(params[f"b_{g}"]) for g in order]),
    }
    stacked["bias_hh"] = np.zeros_like(stacked["bias_ih"])
    return {names[kind]: torch.from_numpy(np.ascontiguousarray(v)) for kind, v in stacked.items()}


def from_flax_lstm_cell(flax_params, *, dtype=None) -> dict:
    """jaxrnn LSTM params from the params of a flax ``linen.LSTMCell``.

        W_g = ii/if/ig/io ``kernel``^T,  U_g = hi/hf/hg/ho ``kernel``^T,  b_g = h* ``bias``

    Args:
      flax_params: the cell's params, ``{"ii": {"kernel": (D, H)}, "hi": {"kernel": (H, H),
        "bias": (H,)}, ...}``, or that dict under a ``"params"`` key (as ``cell.init``
        returns). For ``linen.RNN(LSTMCell(...))`` pass ``variables["params"]["cell"]``.
      dtype: dtype of the result; default the dtype of the kernels.
    """
    if isinstance(flax_params, Mapping) and set(flax_params) == {"params"}:
        flax_params = flax_params["params"]
    expected = [f"{src}{_FLAX_GATE[g]}" for src in "ih" for g in lstm.GATES]
    if not isinstance(flax_params, Mapping) or any(k not in flax_params for k in expected):
        got = sorted(flax_params) if isinstance(flax_params, Mapping) else type(flax_params)
        raise ValueError(
            f"flax_params: expected the LSTMCell entries {sorted(expected)}, got {got}"
        )

    def read(module: str, leaf: str):
        entry = flax_params[module]
        if not isinstance(entry, Mapping) or leaf not in entry:
            raise ValueError(f"flax_params[{module!r}]: expected a {leaf!r} entry, got {entry!r}")
        return _to_numpy(entry[leaf], name=f"flax_params[{module!r}][{leaf!r}]")

    params = {}
    for gate in lstm.GATES:
        letter = _FLAX_GATE[gate]
        params[f"W_{gate}"] = read(f"i{letter}", "kernel").T
        params[f"U_{gate}"] = read(f"h{letter}", "kernel").T
        params[f"b_{gate}"] = read(f"h{letter}", "bias")
    dtype = params["U_i"].dtype if dtype is None else dtype
    params = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    _check_lstm_params(params)
    return params


def to_flax_lstm_cell(params: dict) -> dict:
    """The params of a flax ``linen.LSTMCell`` (the inverse of :func:`from_flax_lstm_cell`).

    Returns:
      ``{"ii": {"kernel": W_i^T}, ..., "hi": {"kernel": U_i^T, "bias": b_i}, ...}``; apply it
      with ``cell.apply({"params": result}, carry, x)``.
    """
    _check_lstm_params(params)
    result = {}
    for gate in lstm.GATES:
        letter = _FLAX_GATE[gate]
        result[f"i{letter}"] = {"kernel": jnp.asarray(params[f"W_{gate}"]).T}
        result[f"h{letter}"] = {
            "kernel": jnp.asarray(params[f"U_{gate}"]).T,
            "bias": jnp.asarray(params[f"b_{gate}"]),
        }
    return result
