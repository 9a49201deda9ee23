"""Stacks of recurrent layers: many layers, both directions, dropout, residuals (SPEC §9).

L layers of one cell, y^(0) = xs; layer l reads y^(l-1) and, when bidirectional, runs a
second cell with its own weights backward within each sequence's length::

    y^(l)_t = [h→^(l)_t, h←^(l)_t]   (+ y^(l-1)_t with residual connections, l >= 2)
    y^(l) <- y^(l) * m / (1 - p),  m ~ Bernoulli(1 - p)   between layers, when training

The cell is a module with ``init``, ``init_carry`` and ``apply`` (any of
:mod:`jaxrnn.cells`, or yours). For the LSTM and the GRU the layers run the fast hand-BPTT
kernels (:func:`jaxrnn.lstm_layer`, :func:`jaxrnn.gru_layer`); any other cell runs as
:func:`jaxrnn.scan`. With converted weights (:func:`jaxrnn.interop.from_torch_layers`) a
stack computes what PyTorch's ``nn.LSTM`` / ``nn.GRU(num_layers, bidirectional)`` computes
on packed sequences.

Params are a list with one dict per layer, ``{"forward": cell_params}`` or
``{"forward": cell_params, "backward": cell_params}``: plain arrays, so they go through
``jit``, ``grad``, optax and checkpoints unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_key, check_positive_int, describe, dtype_of, is_number, shape_of
from jaxrnn._gru_layer import gru_layer
from jaxrnn._lstm_layer import lstm_layer
from jaxrnn._scan import scan
from jaxrnn.cells import gru, lstm

#: The cells that have a fast layer, and that layer.
FAST_LAYERS = {lstm: lstm_layer, gru: gru_layer}

_DIRECTIONS = {False: ("forward",), True: ("forward", "backward")}


def _check_cell(cell) -> str:
    """A cell module: ``init``, ``init_carry`` and ``apply`` callables. Returns its name."""
    missing = [f for f in ("init", "init_carry", "apply") if not callable(getattr(cell, f, None))]
    if missing:
        raise ValueError(
            "cell: expected a cell module with init, init_carry and apply (e.g. "
            f"jaxrnn.cells.lstm), got {getattr(cell, '__name__', describe(cell))} without "
            f"{', '.join(missing)}"
        )
    return getattr(cell, "__name__", type(cell).__name__).rsplit(".", 1)[-1]


def init(
    key,
    cell,
    in_dim: int,
    hidden: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    dtype=jnp.float32,
    **options,
) -> list:
    """Parameters of a stack of ``num_layers`` layers of ``cell``, each of width ``hidden``.

    Layer 0 reads ``in_dim`` inputs, every later layer the ``hidden`` (or 2 ``hidden`` when
    bidirectional) outputs of the one before. Each direction of each layer is
    ``cell.init(key, in_dim_l, hidden, dtype=dtype, **options)`` with its own key.

    Args:
      key: a ``jax.random`` key.
      cell: a cell module (``jaxrnn.cells.lstm``, ``gru``, ``elman``, or one of yours).
      in_dim: D, the size of one input step.
      hidden: H, the state size of every layer.
      num_layers: L >= 1.
      bidirectional: give every layer a backward direction too.
      dtype: the parameters' dtype.
      options: passed to ``cell.init`` (e.g. ``forget_bias=1.0`` for the LSTM).

    Returns:
      A list of L dicts ``{"forward": params}`` or ``{"forward": params, "backward": params}``.
    """
    _check_cell(cell)
    check_key(key)
    check_positive_int(in_dim, name="in_dim")
    check_positive_int(hidden, name="hidden")
    check_positive_int(num_layers, name="num_layers")
    if not isinstance(bidirectional, bool):
        raise ValueError(f"bidirectional: expected True or False, got {bidirectional!r}")
    directions = _DIRECTIONS[bidirectional]
    keys = iter(jax.random.split(key, num_layers * len(directions)))
    params = []
    for layer in range(num_layers):
        width = in_dim if layer == 0 else hidden * len(directions)
        params.append(
            {d: cell.init(next(keys), width, hidden, dtype=dtype, **options) for d in directions}
        )
    return params


def init_carries(
    cell, batch_shape, hidden: int, num_layers: int = 1, *, bidirectional=False, dtype=jnp.float32
) -> list:
    """Zero initial carries for every layer: ``cell.init_carry(batch_shape, hidden, dtype)``.

    Returns:
      A list of ``num_layers`` carries, each a pair ``(forward, backward)`` when
      ``bidirectional``: the structure :func:`apply` takes as ``carries`` and returns.
    """
    _check_cell(cell)
    check_positive_int(num_layers, name="num_layers")
    directions = _DIRECTIONS[bool(bidirectional)]
    carry = lambda: cell.init_carry(batch_shape, hidden, dtype)  # noqa: E731
    return [
        tuple(carry() for _ in directions) if bidirectional else carry() for _ in range(num_layers)
    ]


def _check_params(params) -> tuple[str, ...]:
    """A non-empty list of layer dicts, all with the same directions; returns them."""
    if not isinstance(params, (list, tuple)) or not params:
        raise ValueError(
            "params: expected a non-empty list of layers as made by jaxrnn.layers.init, got "
            f"{describe(params) if not isinstance(params, (list, tuple)) else 'no layers'}"
        )
    for layer, entry in enumerate(params):
        names = set(entry) if isinstance(entry, Mapping) else None
        if names not in ({"forward"}, {"forward", "backward"}):
            got = sorted(names) if names is not None else describe(entry)
            raise ValueError(
                f"params[{layer}]: expected a dict with 'forward' (and 'backward'), got {got}"
            )
    directions = _DIRECTIONS["backward" in params[0]]
    for layer, entry in enumerate(params):
        if set(entry) != set(directions):
            raise ValueError(
                f"params[{layer}]: expected the directions of layer 0, {list(directions)}, "
                f"got {sorted(entry)}"
            )
    return directions


def _hidden_size(cell, cell_name, layer_params, in_dim: int, where: str, reads: str) -> int:
    """The H for which ``cell.init(key, in_dim, H)`` has the shapes of ``layer_params``.

    Raises a ``ValueError`` naming ``where`` when there is none: parameters of another
    cell, or of a layer with another input size (another architecture).
    """
    leaves, structure = jax.tree_util.tree_flatten(layer_params)
    shapes = [tuple(shape_of(leaf)) for leaf in leaves]
    key = jax.random.PRNGKey(0)
    for hidden in sorted({1} | {n for shape in shapes for n in shape}):
        try:
            made = jax.eval_shape(lambda h=hidden: cell.init(key, in_dim, h))
        except (ValueError, TypeError):
            continue
        made_leaves, made_structure = jax.tree_util.tree_flatten(made)
        if made_structure == structure and [tuple(a.shape) for a in made_leaves] == shapes:
            return hidden
    got = (
        {name: tuple(shape_of(value)) for name, value in layer_params.items()}
        if isinstance(layer_params, Mapping)
        else describe(layer_params)
    )
    raise ValueError(
        f"{where}: expected the parameters of a {cell_name} layer that reads {in_dim} "
        f"inputs ({reads}), got entries of shapes {got}"
    )


def _check_dropout(dropout, key) -> None:
    if not is_number(dropout) or not (0.0 <= dropout < 1.0):
        raise ValueError(f"dropout: expected a number in [0, 1), got {dropout!r}")
    if dropout > 0 and key is None:
        raise ValueError(
            f"key: dropout={dropout} needs a jax.random key for its masks (evaluate with "
            "dropout=0.0, the default), got None"
        )
    if key is not None:
        check_key(key)


def _layer_carries(carry, layer: int, directions) -> list:
    """A layer's given carry as one carry per direction."""
    if len(directions) == 1:
        return [carry]
    if not (isinstance(carry, (list, tuple)) and len(carry) == 2):
        raise ValueError(
            f"carries[{layer}]: expected a pair (forward, backward) of carries, got "
            f"{describe(carry)}"
        )
    return list(carry)


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


def inverted_dropout(key, ys, rate: float):
    """``ys * m / (1 - rate)`` with m ~ Bernoulli(1 - rate) per entry: the mean is kept."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape_of(ys))
    return jnp.where(keep, ys / (1.0 - rate), jnp.zeros_like(ys))


def apply(
    params,
    xs,
    *,
    cell,
    lengths=None,
    carries=None,
    dropout: float = 0.0,
    key=None,
    residual: bool = False,
    fast: bool = True,
):
    """Run the stack over ``xs``: ``(final carries, outputs of the last layer)``.

    The plain-Python meaning (``run`` is :func:`jaxrnn.scan` with ``cell.apply``, or the
    cell's fast layer, which computes the same)::

        inputs = xs
        for l, layer in enumerate(params):
            outs = []
            for direction, carry in zip(layer, carries[l]):
                carries[l][direction], ys = run(layer[direction], carry, inputs,
                                                lengths=lengths, reverse=direction == "backward")
                outs.append(ys)
            ys = concatenate(outs, axis=-1)
            if residual and l > 0:
                ys = ys + inputs
            if dropout > 0 and l < L - 1:
                ys = ys * bernoulli(key_l, 1 - dropout, ys.shape) / (1 - dropout)
            inputs = ys
        return carries, inputs

    Inputs and carries are cast to the dtype of each layer's parameters (as the fast layers
    do), so float64 inputs run through float32 parameters in float32.

    Args:
      params: as made by :func:`init` (or :func:`jaxrnn.interop.from_torch_layers`).
      xs: (T, *batch, D), time-major.
      cell: the cell module the params belong to (``jaxrnn.cells.lstm``, ...).
      lengths: optional integer (*batch,) with values in [0, T]: sequence n has
        ``lengths[n]`` steps; its carries stop there, its outputs past it are zero, and a
        backward direction starts at its last step (``jaxrnn.scan``'s meaning).
      carries: optional initial carries, one per layer, each a pair ``(forward, backward)``
        when bidirectional (:func:`init_carries`); default zeros.
      dropout: the rate p in [0, 1) of inverted dropout between layers (not on the input,
        not on the last layer's outputs); needs ``key`` when p > 0. The mask after layer l
        is drawn with ``jax.random.split(key, L - 1)[l]``.
      key: a ``jax.random`` key for the dropout masks.
      residual: add each layer's input to its output, from the second layer on (their
        sizes must agree).
      fast: use the hand-BPTT layers for the LSTM and the GRU (same results and gradients
        up to rounding); ``False`` runs every cell as ``jaxrnn.scan``.

    Returns:
      ``(carries, ys)``: the final carries in the structure of ``carries``, and ys of shape
      (T, *batch, H) or (T, *batch, 2H) when bidirectional.

    Raises:
      ValueError: params that are not a stack of ``cell`` layers whose sizes chain (another
        architecture), a wrong number of carries, a dropout outside [0, 1), a missing key
        when dropout > 0, or a bad ``xs`` or ``lengths``.
    """
    cell_name = _check_cell(cell)
    directions = _check_params(params)
    num_layers = len(params)
    _check_dropout(dropout, key)
    xs_shape = shape_of(xs)
    if len(xs_shape) < 2:
        raise ValueError(f"xs: expected shape (T, *batch, D), got {xs_shape}")
    if carries is not None and not (
        isinstance(carries, (list, tuple)) and len(carries) == num_layers
    ):
        got = len(carries) if isinstance(carries, (list, tuple)) else describe(carries)
        raise ValueError(f"carries: expected one carry per layer, {num_layers} (a list), got {got}")
    for name, flag in (("residual", residual), ("fast", fast)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name}: expected True or False, got {flag!r}")
    fast_layer = FAST_LAYERS.get(cell) if fast else None
    if fast_layer is not None:
        run = fast_layer
    else:
        run = lambda p, c, x, **kw: scan(cell.apply, p, c, x, **kw)  # noqa: E731
    masks = None
    if dropout > 0 and num_layers > 1:
        masks = jax.random.split(key, num_layers - 1)
    inputs, finals = xs, []
    for layer, entry in enumerate(params):
        in_dim = shape_of(inputs)[-1]
        width = "2 x H" if len(directions) == 2 else "H"
        reads = "xs" if layer == 0 else f"the {width} outputs of layer {layer - 1}"
        sizes = {
            d: _hidden_size(cell, cell_name, entry[d], in_dim, f"params[{layer}][{d!r}]", reads)
            for d in directions
        }
        dtype = dtype_of(jax.tree_util.tree_leaves(entry["forward"])[0])
        if carries is None:
            start = [cell.init_carry(xs_shape[1:-1], sizes[d], dtype) for d in directions]
        else:
            start = _layer_carries(carries[layer], layer, directions)
        outs, ends = [], []
        for direction, carry in zip(directions, start, strict=True):
            end, ys = run(
                entry[direction],
                _cast(carry, dtype),
                _cast(inputs, dtype),
                lengths=lengths,
                reverse=direction == "backward",
            )
            outs.append(ys)
            ends.append(end)
        ys = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
        if residual and layer > 0:
            if shape_of(ys) != shape_of(inputs):
                raise ValueError(
                    f"residual: layer {layer}'s outputs {shape_of(ys)} cannot be added to its "
                    f"inputs {shape_of(inputs)}"
                )
            ys = ys + inputs
        if masks is not None and layer < num_layers - 1:
            ys = inverted_dropout(masks[layer], ys, dropout)
        finals.append(tuple(ends) if len(ends) == 2 else ends[0])
        inputs = ys
    return finals, inputs
