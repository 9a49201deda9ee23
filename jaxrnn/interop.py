"""Weight interop for the LSTM and the GRU: PyTorch state dicts and flax cell params.

jaxrnn's cells keep one weight per gate: the LSTM (:mod:`jaxrnn.cells.lstm`, SPEC §4) has
``W_g`` (H, D), ``U_g`` (H, H), ``b_g`` (H,) for g in i, f, o, c; the GRU
(:mod:`jaxrnn.cells.gru`, SPEC §8) the same for g in r, z, n plus ``b_hn`` (H,). The peers
store the same cells differently:

- PyTorch ``nn.LSTM`` / ``nn.GRU``: per layer k and direction, ``weight_ih_l{k}`` (G H, D)
  and ``weight_hh_l{k}`` (G H, H) with the gates stacked in the order **i, f, g, o** (g is
  our c; G = 4) or **r, z, n** (G = 3), and two biases ``bias_ih_l{k}``, ``bias_hh_l{k}``
  (G H,); the backward direction of a bidirectional module has the suffix ``_reverse``.
  The LSTM adds the two biases: b_g = bias_ih[g] + bias_hh[g]. So does the GRU for r and z,
  but its n gate keeps them apart: b_n = bias_ih[n] and b_hn = bias_hh[n], the bias inside
  the reset gate's product.
- flax ``linen.LSTMCell`` and ``OptimizedLSTMCell`` (same params): one ``Dense`` per gate
  and source, kernels stored transposed (in, out): ``ii``/``if``/``ig``/``io`` (input, no
  bias) and ``hi``/``hf``/``hg``/``ho`` (hidden, with the bias). flax ``linen.GRUCell``:
  ``ir``/``iz``/``in`` (input, with the biases b_r, b_z, b_n), ``hr``/``hz`` (no bias) and
  ``hn`` (with b_hn).

Whole modules (any ``num_layers``, ``bidirectional``) convert in one call to and from the
params of :mod:`jaxrnn.layers` (:func:`from_torch_layers`, :func:`to_torch_layers`).
Neither torch nor flax is imported here unless a function needs it (only the ``to_torch_*``
functions do, to return tensors).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_matrix, check_params, is_int
from jaxrnn.cells import gru, lstm

#: PyTorch's module name and our gate names in its block order, per cell.
_TORCH = {"lstm": ("nn.LSTM", ("i", "f", "c", "o")), "gru": ("nn.GRU", ("r", "z", "n"))}
_CELLS = {"lstm": lstm, "gru": gru}
_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_FLAX_LSTM_GATE = {"i": "i", "f": "f", "c": "g", "o": "o"}

#: Our parameter name -> (flax submodule, leaf); kernels are stored transposed.
_FLAX = {
    "lstm": {
        **{f"W_{g}": (f"i{letter}", "kernel") for g, letter in _FLAX_LSTM_GATE.items()},
        **{f"U_{g}": (f"h{letter}", "kernel") for g, letter in _FLAX_LSTM_GATE.items()},
        **{f"b_{g}": (f"h{letter}", "bias") for g, letter in _FLAX_LSTM_GATE.items()},
    },
    "gru": {
        **{f"W_{g}": (f"i{g}", "kernel") for g in "rzn"},
        **{f"b_{g}": (f"i{g}", "bias") for g in "rzn"},
        **{f"U_{g}": (f"h{g}", "kernel") for g in "rzn"},
        "b_hn": ("hn", "bias"),
    },
}
_FLAX_CELL = {"lstm": "LSTMCell", "gru": "GRUCell"}


def _to_numpy(value, *, name: str) -> np.ndarray:
    """A torch tensor, a jax or NumPy array -> a NumPy array (no torch import needed)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name}: expected a floating array, got dtype {array.dtype}")
    return array


def _torch_names(layer: int, reverse: bool) -> dict[str, str]:
    if not is_int(layer) or layer < 0:
        raise ValueError(f"layer: expected a non-negative integer, got {layer!r}")
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    return {kind: f"{kind}{suffix}" for kind in _KINDS}


def _check_cell_params(params, kind: str) -> None:
    hidden, in_dim = check_matrix(params, "W_i" if kind == "lstm" else "W_r")
    check_params(params, _CELLS[kind].param_shapes(in_dim, hidden))


def _refuse_projection(state_dict) -> None:
    if any(key.startswith("weight_hr_l") for key in state_dict):
        raise ValueError(
            "state_dict: an nn.LSTM with proj_size > 0 (weight_hr_l* entries) is not the "
            "cell of SPEC §4: its h_t is projected to a smaller size; use proj_size=0"
        )


def _from_torch(state_dict, kind: str, layer: int, reverse: bool, dtype) -> dict:
    """One layer and direction of an ``nn.LSTM`` (kind "lstm") or ``nn.GRU`` state dict."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict: expected a mapping, got {type(state_dict).__name__}")
    module, order = _TORCH[kind]
    names = _torch_names(layer, reverse)
    missing = [names[k] for k in ("weight_ih", "weight_hh") if names[k] not in state_dict]
    if missing:
        raise ValueError(f"state_dict: missing {missing}; has {sorted(state_dict)}")
    _refuse_projection(state_dict)
    w_ih = _to_numpy(state_dict[names["weight_ih"]], name=names["weight_ih"])
    w_hh = _to_numpy(state_dict[names["weight_hh"]], name=names["weight_hh"])
    n_gates = len(order)
    if w_hh.ndim != 2 or w_hh.shape[0] != n_gates * w_hh.shape[1]:
        rows_per_h = w_hh.shape[0] / w_hh.shape[1] if w_hh.ndim == 2 and w_hh.shape[1] else None
        other = [m for m, o in _TORCH.values() if m != module and len(o) == rows_per_h]
        hint = f": the shape of an {other[0]}'s, not an {module}'s" if other else ""
        raise ValueError(
            f"{names['weight_hh']}: expected shape ({n_gates}H, H) for an {module}, got "
            f"{w_hh.shape}{hint}"
        )
    hidden = w_hh.shape[1]
    if w_ih.ndim != 2 or w_ih.shape[0] != n_gates * hidden:
        raise ValueError(
            f"{names['weight_ih']}: expected shape ({n_gates}H, D) = ({n_gates * hidden}, D), "
            f"got {w_ih.shape}"
        )
    bias = {}
    for kind_ in ("bias_ih", "bias_hh"):
        bias[kind_] = np.zeros(n_gates * hidden, w_hh.dtype)
        if names[kind_] in state_dict:
            part = _to_numpy(state_dict[names[kind_]], name=names[kind_])
            if part.shape != (n_gates * hidden,):
                raise ValueError(
                    f"{names[kind_]}: expected shape ({n_gates * hidden},), got {part.shape}"
                )
            bias[kind_] = part
    dtype = w_hh.dtype if dtype is None else dtype
    params = {}
    for block, gate in enumerate(order):
        rows = slice(block * hidden, (block + 1) * hidden)
        params[f"W_{gate}"] = jnp.asarray(w_ih[rows], dtype)
        params[f"U_{gate}"] = jnp.asarray(w_hh[rows], dtype)
        if gate == "n":  # the GRU's candidate: bias_hh stays inside the reset gate's product
            params["b_n"] = jnp.asarray(bias["bias_ih"][rows], dtype)
            params["b_hn"] = jnp.asarray(bias["bias_hh"][rows], dtype)
        else:
            params[f"b_{gate}"] = jnp.asarray(bias["bias_ih"][rows] + bias["bias_hh"][rows], dtype)
    return params


def _to_torch(params: dict, kind: str, layer: int, reverse: bool) -> dict:
    """One layer and direction as PyTorch tensors (the inverse of :func:`_from_torch`)."""
    import torch

    _check_cell_params(params, kind)
    names = _torch_names(layer, reverse)
    order = _TORCH[kind][1]
    zeros = np.zeros_like(np.asarray(params[f"b_{order[0]}"]))
    bias_hh = [np.asarray(params["b_hn"]) if g == "n" else zeros for g in order]
    stacked = {
        "weight_ih": np.concatenate([np.asarray(params[f"W_{g}"]) for g in order]),
        "weight_hh": np.concatenate([np.asarray(params[f"U_{g}"]) for g in order]),
        "bias_ih": np.concatenate([np.asarray(params[f"b_{g}"]) for g in order]),
        "bias_hh": np.concatenate(bias_hh),
    }
    return {names[kind_]: torch.from_numpy(np.ascontiguousarray(v)) for kind_, v in stacked.items()}


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
      (H,). A module built with ``bias=False`` gives zero biases. An ``nn.LSTM`` with
      ``proj_size > 0`` is refused: it is another cell.
    """
    return _from_torch(state_dict, "lstm", layer, reverse, dtype)


def to_torch_lstm(params: dict, *, layer: int = 0, reverse: bool = False) -> dict:
    """A PyTorch ``nn.LSTM`` state dict (torch tensors) for one layer and direction.

    The inverse of :func:`from_torch_lstm`: gates stacked i, f, g, o; the whole bias goes
    to ``bias_ih`` and ``bias_hh`` is zero. Load it with
    ``module.load_state_dict(sd, strict=False)`` (or use :func:`to_torch_layers`).

    Args:
      params: a dict as made by :func:`jaxrnn.cells.lstm.init`.
      layer, reverse: which ``*_l{k}[_reverse]`` names to write.

    Returns:
      ``{"weight_ih_l{k}": (4H, D), "weight_hh_l{k}": (4H, H), "bias_ih_l{k}": (4H,),
      "bias_hh_l{k}": (4H,)}`` as CPU torch tensors of the params' dtype.
    """
    return _to_torch(params, "lstm", layer, reverse)


def from_torch_gru(state_dict, *, layer: int = 0, reverse: bool = False, dtype=None) -> dict:
    """jaxrnn GRU params from a PyTorch ``nn.GRU`` state dict (one layer, one direction).

        W_g = weight_ih[block(g)],  U_g = weight_hh[block(g)],   blocks r, z, n
        b_r = bias_ih[r] + bias_hh[r],  b_z = bias_ih[z] + bias_hh[z],
        b_n = bias_ih[n],  b_hn = bias_hh[n]

    Args:
      state_dict: ``module.state_dict()`` of an ``nn.GRU`` (tensors or arrays).
      layer, reverse: which ``*_l{k}[_reverse]`` entries to read.
      dtype: dtype of the result; default the dtype of the weights.

    Returns:
      a dict as made by :func:`jaxrnn.cells.gru.init`.
    """
    return _from_torch(state_dict, "gru", layer, reverse, dtype)


def to_torch_gru(params: dict, *, layer: int = 0, reverse: bool = False) -> dict:
    """A PyTorch ``nn.GRU`` state dict (torch tensors) for one layer and direction.

    The inverse of :func:`from_torch_gru`: gates stacked r, z, n; ``bias_ih`` =
    [b_r, b_z, b_n] and ``bias_hh`` = [0, 0, b_hn].
    """
    return _to_torch(params, "gru", layer, reverse)


def _kind_of(cell) -> str:
    for kind, module in _CELLS.items():
        if cell is module:
            return kind
    raise ValueError(
        "cell: PyTorch's nn.LSTM and nn.GRU are the cells jaxrnn.cells.lstm and "
        f"jaxrnn.cells.gru; expected one of them, got {getattr(cell, '__name__', cell)!r}"
    )


_TORCH_ENTRY = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?")


def _torch_architecture(state_dict, module: str) -> tuple[int, bool]:
    """(num_layers, bidirectional) of a whole ``nn.LSTM``/``nn.GRU`` state dict, checked."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict: expected a mapping, got {type(state_dict).__name__}")
    _refuse_projection(state_dict)
    entries = {key: _TORCH_ENTRY.fullmatch(key) for key in state_dict}
    strangers = sorted(key for key, match in entries.items() if match is None)
    if strangers:
        raise ValueError(
            f"state_dict: expected only the entries of an {module} (weight_ih_l0, ...), got "
            f"{strangers[:4]}: is it the state dict of a whole model? pass the recurrent "
            "module's own state_dict()"
        )
    layers = sorted({int(m.group(2)) for m in entries.values()})
    if not layers:
        raise ValueError(f"state_dict: expected the entries of an {module}, got none")
    reverse = {int(m.group(2)) for m in entries.values() if m.group(3)}
    if layers != list(range(len(layers))):
        raise ValueError(f"state_dict: expected layers 0..{layers[-1]}, found layers {layers}")
    if reverse and reverse != set(layers):
        raise ValueError(
            f"state_dict: only layers {sorted(reverse)} of {layers} have a backward "
            "(_reverse) direction"
        )
    return len(layers), bool(reverse)


def from_torch_layers(
    state_dict, cell, *, num_layers: int | None = None, bidirectional=None, dtype=None
) -> list:
    """The params of :mod:`jaxrnn.layers` from a whole ``nn.LSTM`` or ``nn.GRU`` state dict.

    Any ``num_layers`` and ``bidirectional``: layer k's direction ``"forward"`` is read
    from the ``*_l{k}`` entries (:func:`from_torch_lstm` / :func:`from_torch_gru`), its
    ``"backward"`` from ``*_l{k}_reverse``. ``jaxrnn.layers.apply(result, xs, cell=cell)``
    then computes what the module computes (on packed sequences: with ``lengths``).

    Args:
      state_dict: ``module.state_dict()`` of the ``nn.LSTM`` / ``nn.GRU`` itself.
      cell: ``jaxrnn.cells.lstm`` for an ``nn.LSTM``, ``jaxrnn.cells.gru`` for an ``nn.GRU``.
      num_layers, bidirectional: if given, the architecture the state dict must have.
      dtype: dtype of the result; default the dtype of the weights.

    Returns:
      A list of ``num_layers`` dicts ``{"forward": params}`` or ``{"forward": params,
      "backward": params}``.

    Raises:
      ValueError: entries of another module (a GRU's for an LSTM, a whole model's, a
        projection's), missing layers or directions, an architecture other than the one
        asked for, or a layer whose input size is not the previous layer's output size.
    """
    kind = _kind_of(cell)
    module = _TORCH[kind][0]
    found_layers, found_bidirectional = _torch_architecture(state_dict, module)
    if num_layers is not None and num_layers != found_layers:
        raise ValueError(
            f"num_layers: expected {num_layers} layers, the state dict has {found_layers} "
            f"(weight_ih_l0 .. weight_ih_l{found_layers - 1})"
        )
    if bidirectional is not None and bool(bidirectional) != found_bidirectional:
        have = "has" if found_bidirectional else "has no"
        raise ValueError(
            f"bidirectional: expected {bool(bidirectional)}, the state dict {have} "
            "backward (_reverse) entries"
        )
    directions = ("forward", "backward") if found_bidirectional else ("forward",)
    layers = []
    for k in range(found_layers):
        layer = {d: _from_torch(state_dict, kind, k, d == "backward", dtype) for d in directions}
        if k > 0:
            first_gate = _TORCH[kind][1][0]
            in_dim = check_matrix(layer["forward"], f"W_{first_gate}")[1]
            wanted = len(directions) * check_matrix(layers[-1]["forward"], f"U_{first_gate}")[0]
            if in_dim != wanted:
                raise ValueError(
                    f"weight_ih_l{k}: expected {wanted} columns (the outputs of layer {k - 1}), "
                    f"got {in_dim}"
                )
        layers.append(layer)
    return layers


def to_torch_layers(params, cell) -> dict:
    """A whole ``nn.LSTM`` / ``nn.GRU`` state dict from the params of :mod:`jaxrnn.layers`.

    The inverse of :func:`from_torch_layers`; the result loads with
    ``module.load_state_dict(sd)`` (strict) into the module of the same size:
    ``nn.LSTM(D, H, num_layers=len(params), bidirectional="backward" in params[0])``.

    Args:
      params: a list of ``{"forward": p}`` or ``{"forward": p, "backward": p}`` dicts.
      cell: ``jaxrnn.cells.lstm`` or ``jaxrnn.cells.gru``.

    Returns:
      ``{"weight_ih_l0": ..., ..., "bias_hh_l{L-1}_reverse": ...}`` as CPU torch tensors.
    """
    kind = _kind_of(cell)
    if not isinstance(params, (list, tuple)) or not params:
        raise ValueError(
            f"params: expected a non-empty list of layers, got {type(params).__name__}"
        )
    state_dict = {}
    for k, layer in enumerate(params):
        if not isinstance(layer, Mapping) or set(layer) not in (
            {"forward"},
            {"forward", "backward"},
        ):
            got = sorted(layer) if isinstance(layer, Mapping) else type(layer).__name__
            raise ValueError(
                f"params[{k}]: expected a dict with 'forward' (and 'backward'), got {got}"
            )
        for direction, layer_params in layer.items():
            state_dict.update(_to_torch(layer_params, kind, k, direction == "backward"))
    return state_dict


def from_torch_carries(h_0, c_0=None, *, bidirectional: bool = False) -> list:
    """Per-layer carries for :func:`jaxrnn.layers.apply` from PyTorch's ``h_0`` (and ``c_0``).

    PyTorch stacks the states of layer k's directions at index ``2k`` (forward) and
    ``2k + 1`` (backward), or ``k`` without a backward direction.

    Args:
      h_0: (num_layers * directions, *batch, H), a tensor or an array.
      c_0: the LSTM's cell states, the same shape; None for a GRU.
      bidirectional: whether the module has a backward direction.

    Returns:
      A list with one carry per layer: ``h`` (GRU) or ``(c, h)`` (LSTM), or a pair
      ``(forward, backward)`` of these when bidirectional.
    """
    h_0 = jnp.asarray(_to_numpy(h_0, name="h_0"))
    if c_0 is not None:
        c_0 = jnp.asarray(_to_numpy(c_0, name="c_0"))
        if c_0.shape != h_0.shape:
            raise ValueError(f"c_0: expected the shape of h_0, {h_0.shape}, got {c_0.shape}")
    directions = 2 if bidirectional else 1
    if h_0.ndim < 2 or h_0.shape[0] % directions:
        raise ValueError(
            f"h_0: expected shape (num_layers * {directions}, *batch, H), got {h_0.shape}"
        )
    carry = (lambda k: h_0[k]) if c_0 is None else (lambda k: (c_0[k], h_0[k]))
    if bidirectional:
        return [(carry(2 * k), carry(2 * k + 1)) for k in range(h_0.shape[0] // 2)]
    return [carry(k) for k in range(h_0.shape[0])]


def _from_flax(flax_params, kind: str, dtype) -> dict:
    if isinstance(flax_params, Mapping) and set(flax_params) == {"params"}:
        flax_params = flax_params["params"]
    table = _FLAX[kind]
    expected = sorted({module for module, _ in table.values()})
    if not isinstance(flax_params, Mapping) or any(k not in flax_params for k in expected):
        got = sorted(flax_params) if isinstance(flax_params, Mapping) else type(flax_params)
        raise ValueError(
            f"flax_params: expected the {_FLAX_CELL[kind]} entries {expected}, got {got}"
        )
    params = {}
    for name, (module, leaf) in table.items():
        entry = flax_params[module]
        if not isinstance(entry, Mapping) or leaf not in entry:
            raise ValueError(f"flax_params[{module!r}]: expected a {leaf!r} entry, got {entry!r}")
        value = _to_numpy(entry[leaf], name=f"flax_params[{module!r}][{leaf!r}]")
        params[name] = value.T if leaf == "kernel" else value
    dtype = params["U_" + _TORCH[kind][1][0]].dtype if dtype is None else dtype
    params = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    _check_cell_params(params, kind)
    return params


def _to_flax(params: dict, kind: str) -> dict:
    _check_cell_params(params, kind)
    result = {}
    for name, (module, leaf) in _FLAX[kind].items():
        value = jnp.asarray(params[name])
        result.setdefault(module, {})[leaf] = value.T if leaf == "kernel" else value
    return result


def from_flax_lstm_cell(flax_params, *, dtype=None) -> dict:
    """jaxrnn LSTM params from the params of a flax ``linen.LSTMCell`` or ``OptimizedLSTMCell``.

        W_g = ii/if/ig/io ``kernel``^T,  U_g = hi/hf/hg/ho ``kernel``^T,  b_g = h* ``bias``

    Args:
      flax_params: the cell's params, ``{"ii": {"kernel": (D, H)}, "hi": {"kernel": (H, H),
        "bias": (H,)}, ...}``, or that dict under a ``"params"`` key (as ``cell.init``
        returns). For ``linen.RNN(LSTMCell(...))`` pass ``variables["params"]["cell"]``.
      dtype: dtype of the result; default the dtype of the kernels.
    """
    return _from_flax(flax_params, "lstm", dtype)


def to_flax_lstm_cell(params: dict) -> dict:
    """The params of a flax ``linen.LSTMCell`` / ``OptimizedLSTMCell`` (the inverse of
    :func:`from_flax_lstm_cell`).

    Returns:
      ``{"ii": {"kernel": W_i^T}, ..., "hi": {"kernel": U_i^T, "bias": b_i}, ...}``; apply it
      with ``cell.apply({"params": result}, carry, x)``.
    """
    return _to_flax(params, "lstm")


def from_flax_gru_cell(flax_params, *, dtype=None) -> dict:
    """jaxrnn GRU params from the params of a flax ``linen.GRUCell``.

        W_g = i{g} ``kernel``^T,  b_g = i{g} ``bias``,  U_g = h{g} ``kernel``^T  (g = r, z, n),
        b_hn = hn ``bias``

    Args:
      flax_params: ``{"ir": {"kernel": (D, H), "bias": (H,)}, "hr": {"kernel": (H, H)},
        ..., "hn": {"kernel", "bias"}}``, or that dict under a ``"params"`` key.
      dtype: dtype of the result; default the dtype of the kernels.
    """
    return _from_flax(flax_params, "gru", dtype)


def to_flax_gru_cell(params: dict) -> dict:
    """The params of a flax ``linen.GRUCell`` (the inverse of :func:`from_flax_gru_cell`)."""
    return _to_flax(params, "gru")
