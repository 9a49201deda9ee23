"""Exactly reversible GRU (RevGRU, MacKay et al. 2018), in fixed point (SPEC §11).

The hidden state h = [h1, h2] has two halves of H/2 units; each step updates one half
from the other, as a GRU would, then the other from the new first (n is the candidate)::

    z1 = zeta(W_z1 x_t + U_z1 h2 + b_z1)           r1 = sigma(W_r1 x_t + U_r1 h2 + b_r1)
    n1 = tanh(W_n1 x_t + b_n1 + r1 * (U_n1 h2 + b_hn1))
    h1 <- z1 * h1 + (1 - z1) * n1
    z2, r2, n2 likewise from the new h1;           h2 <- z2 * h2 + (1 - z2) * n2
    y_t = h_t = [h1, h2]

The update gate is a forget factor z = zeta(a) = 2^-m + (1 - 2^-m) sigma(a), rounded to
n / 2^16 (2^(16 - m) <= n <= 2^16): at most m = ``max_forget_bits`` bits per unit and step
are forgotten. The state lives on the grid 2^-F (F = ``frac_bits``), which the float dtype
holds exactly, and the update is computed exactly there::

    H' = floor(H n / 2^16) + round((1 - n / 2^16) n1 · 2^F)      (H = h · 2^F, integers)

with the digit that the floor destroys pushed onto a per-unit buffer word
(:mod:`jaxrnn.cells._forget`), so that :func:`inverse` recovers h_{t-1} and the buffer from
h_t, x_t and the buffer bit for bit: it recomputes z2, r2, n2 from h1 and x_t and undoes
the second half, then the first. Each step destroys sum_units log2(1 / z) bits (the
Jacobian's determinant is the product of the z), which the buffer keeps.

Gradients are those of the real-number update z h + (1 - z) n at the fixed-point values
(rounding passes gradients through unchanged), the same in ``jax.grad`` of
:func:`jaxrnn.scan` and in :func:`jaxrnn.reversible_scan`. Shapes: W_* (H/2, D), U_*
(H/2, H/2), b_* (H/2,); carry h and word (*batch, H).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxrnn._cell_pieces import check_sizes, gate_shapes, uniform_weights
from jaxrnn._checks import (
    batch_shape_tuple,
    check_batches_broadcast,
    check_last_dim,
    check_matrix,
    check_params,
    check_positive_int,
    describe,
    dtype_of,
    is_concrete,
    is_int,
    shape_of,
)
from jaxrnn.cells import _forget
from jaxrnn.exact import fixed_point as fp

GATES = ("z1", "r1", "n1", "z2", "r2", "n2")
DEFAULT_MAX_FORGET_BITS = 2  # 2 bits per unit and step: the byte spills fill exactly
MAX_FORGET_BITS_RANGE = (1, 8)  # z >= 2^-8: a kept buffer word (24 bits) takes any push


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Carry:
    """The state of a reversible cell: h on the grid 2^-F and its information buffer.

    Leaves: ``h`` (*batch, H) float, with h · 2^F an integer; ``word`` (*batch, H)
    ``uint32``, the digits forgotten so far. Static (in the tree structure): ``frac_bits``
    F and ``max_forget_bits`` m.
    """

    h: Any
    word: Any
    frac_bits: int = 22
    max_forget_bits: int = DEFAULT_MAX_FORGET_BITS

    def tree_flatten(self):
        return (self.h, self.word), (self.frac_bits, self.max_forget_bits)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)


def mantissa_bits(dtype) -> int:
    """The bits of the significand of a float dtype, the implicit one included (24, 53)."""
    return int(jnp.finfo(dtype).nmant) + 1


def default_frac_bits(dtype) -> int:
    """F = mantissa - 2: the grid 2^-F holds every |h| < 4 exactly (22 in float32)."""
    return mantissa_bits(dtype) - 2


def _check_options(dtype, frac_bits, max_forget_bits):
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype: expected a floating dtype, got {dtype}")
    low, high = MAX_FORGET_BITS_RANGE
    if not is_int(max_forget_bits):
        raise ValueError(
            f"max_forget_bits: expected an integer in [{low}, {high}], got {max_forget_bits!r}"
        )
    if not low <= max_forget_bits <= high:
        raise ValueError(
            f"max_forget_bits: expected an integer in [{low}, {high}] (forget factors "
            f"z >= 2^-m; a larger m would let z round to 0, which no buffer can undo), "
            f"got {max_forget_bits}"
        )
    limit = mantissa_bits(dtype) - 1
    if not is_int(frac_bits):
        raise ValueError(f"frac_bits: expected an integer in [16, {limit}], got {frac_bits!r}")
    if not 16 <= frac_bits <= limit:
        raise ValueError(
            f"frac_bits: expected an integer in [16, {limit}] for {jnp.dtype(dtype)} (a finer "
            f"grid is not held exactly by {mantissa_bits(dtype)}-bit significands, so the step "
            f"would not be invertible), got {frac_bits}"
        )


def param_shapes(in_dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    half = hidden // 2
    return {**gate_shapes(GATES, in_dim, half), "b_hn1": (half,), "b_hn2": (half,)}


def _check_hidden(hidden):
    check_positive_int(hidden, name="hidden")
    if hidden % 2:
        raise ValueError(f"hidden: expected an even size (two halves of H/2 units), got {hidden}")


def init(key, in_dim: int, hidden: int, *, dtype=jnp.float32) -> dict:
    """Weights from U(-1/sqrt(H/2), 1/sqrt(H/2)), biases zero; H even.

    Returns a dict with ``W_g`` (H/2, D), ``U_g`` (H/2, H/2), ``b_g`` (H/2,) for g in z1,
    r1, n1, z2, r2, n2, and ``b_hn1``, ``b_hn2`` (H/2,).
    """
    check_sizes(in_dim, hidden)
    _check_hidden(hidden)
    shapes = param_shapes(in_dim, hidden)
    weights = {k: s for k, s in shapes.items() if not k.startswith("b_")}
    params = uniform_weights(key, weights, hidden // 2, dtype)
    params.update({k: jnp.zeros(s, dtype) for k, s in shapes.items() if k.startswith("b_")})
    return params


def init_carry(
    batch_shape,
    hidden: int,
    dtype=jnp.float32,
    *,
    frac_bits: int | None = None,
    max_forget_bits: int = DEFAULT_MAX_FORGET_BITS,
) -> Carry:
    """The zero state with an empty buffer, shape (*batch_shape, H).

    Args:
      batch_shape: an int or a tuple; hidden: H, even; dtype: float32 or float64.
      frac_bits: F, the grid 2^-F of h (default :func:`default_frac_bits`); at most the
        significand's bits minus 1, so that h is held exactly.
      max_forget_bits: m in [1, 8]: forget factors z >= 2^-m, so each step destroys at most
        m bits per unit. :func:`jaxrnn.reversible_scan` allocates a byte of buffer per unit
        every floor(8 / m) steps: m bits per step for m = 1, 2, 4, 4 bits for m = 3, 8 for m >= 5.
    """
    _check_hidden(hidden)
    dtype = jnp.dtype(dtype)
    frac_bits = default_frac_bits(dtype) if frac_bits is None else frac_bits
    _check_options(dtype, frac_bits, max_forget_bits)
    shape = batch_shape_tuple(batch_shape) + (hidden,)
    return Carry(
        jnp.zeros(shape, dtype), jnp.zeros(shape, jnp.uint32), int(frac_bits), max_forget_bits
    )


def to_carry(h, *, frac_bits: int | None = None, max_forget_bits=DEFAULT_MAX_FORGET_BITS):
    """A carry with state ``h`` (*batch, H) rounded onto the grid 2^-F and an empty buffer.

    Raises ``ValueError`` naming ``h`` when a value is outside the range the grid holds
    exactly (|h| < 2^(mantissa - 1 - F)) or not finite (checked when h is concrete).
    """
    h = jnp.asarray(h)
    dtype = jnp.dtype(dtype_of(h))
    frac_bits = default_frac_bits(dtype) if frac_bits is None else frac_bits
    _check_options(dtype, frac_bits, max_forget_bits)
    _check_hidden(shape_of(h)[-1] if shape_of(h) else 1)
    word, overflow = fp.from_float(h, frac_bits, limit_bits=mantissa_bits(dtype) - 1)
    if is_concrete(overflow) and bool(jnp.any(overflow)):
        raise ValueError(
            f"h: expected finite values with |h| < 2^{mantissa_bits(dtype) - 1 - frac_bits} "
            f"(the range of the grid 2^-{frac_bits} in {dtype}), got {describe(h)} outside it"
        )
    grid = fp.to_float(word, frac_bits, dtype)
    return Carry(grid, jnp.zeros(grid.shape, jnp.uint32), int(frac_bits), max_forget_bits)


def validate(params: dict, carry, x) -> tuple[int, int]:
    """Validate params, carry and input; returns (D, H)."""
    half, in_dim = check_matrix(params, "W_z1")
    check_params(params, param_shapes(in_dim, 2 * half))
    if not isinstance(carry, Carry):
        raise ValueError(
            f"carry: expected a revgru.Carry (from revgru.init_carry or to_carry), got "
            f"{describe(carry)}"
        )
    hidden = 2 * half
    check_last_dim(carry.h, hidden, name="carry.h")
    if shape_of(carry.word) != shape_of(carry.h) or jnp.dtype(dtype_of(carry.word)) != jnp.uint32:
        raise ValueError(
            f"carry.word: expected uint32 of the shape of carry.h {shape_of(carry.h)}, got "
            f"{describe(carry.word)}"
        )
    _check_options(jnp.dtype(dtype_of(carry.h)), carry.frac_bits, carry.max_forget_bits)
    check_last_dim(x, in_dim, name="x")
    check_batches_broadcast({"carry.h": carry.h, "x": x})
    return in_dim, hidden


def _gates(params: dict, half: str, other, x, max_forget_bits: int):
    """(z, n, candidate) of one half from the other half: z in [2^-m, 1), n its numerator."""
    p = {k[:-1]: v for k, v in params.items() if k.endswith(half)}

    def pre(gate):
        return x @ p[f"W_{gate}"].T + other @ p[f"U_{gate}"].T + p[f"b_{gate}"]

    floor = 2.0**-max_forget_bits
    z = floor + (1 - floor) * jax.nn.sigmoid(pre("z"))
    r = jax.nn.sigmoid(pre("r"))
    candidate = jnp.tanh(x @ p["W_n"].T + p["b_n"] + r * (other @ p["U_n"].T + p["b_hn"]))
    return z, _forget.numerators(jax.lax.stop_gradient(z), max_forget_bits), candidate


def _represented(z, n):
    """n / 2^16 in value, with the derivative of z (rounding passes gradients through)."""
    zq = n.astype(z.dtype) * jnp.asarray(2.0**-16, z.dtype)
    return z + jax.lax.stop_gradient(zq - z)


def _written(zq, candidate, frac_bits):
    """round((1 - z) n1 · 2^F) as a word, and where it is not finite."""
    return fp.from_float(jax.lax.stop_gradient((1 - zq) * candidate), frac_bits)


def _half_step(params, half, h, word, other, x, frac_bits, max_forget_bits):
    """One half of the update: (h', word', flags) with flags True where h' left the grid."""
    z, n, candidate = _gates(params, half, other, x, max_forget_bits)
    zq = _represented(z, n)
    state, _ = fp.from_float(jax.lax.stop_gradient(h), frac_bits)
    kept, word, full = _forget.forget(state, word, n)
    added, bad = _written(zq, candidate, frac_bits)
    exact = fp.to_float(fp.add(kept, added), frac_bits, h.dtype)
    limit = 2.0 ** (mantissa_bits(h.dtype) - 1 - frac_bits)
    bad = bad | ~(jnp.abs(exact) < limit) | ~jnp.isfinite(h)
    exact = jnp.where(bad, jnp.nan, exact)  # never a silent wrap: NaN from the bad step on
    real = zq * h + (1 - zq) * candidate  # the derivative's formula
    h_new = jax.lax.stop_gradient(exact) + (real - jax.lax.stop_gradient(real))
    return h_new, word, full


def _undo_half(params, half, h, word, other, x, frac_bits, max_forget_bits):
    z, n, candidate = _gates(params, half, other, x, max_forget_bits)
    added, _ = _written(_represented(z, n), candidate, frac_bits)
    state, _ = fp.from_float(h, frac_bits)
    state, word = _forget.unforget(fp.sub(state, added), word, n)
    return fp.to_float(state, frac_bits, h.dtype), word


def _halves(a):
    half = a.shape[-1] // 2
    return a[..., :half], a[..., half:]


def apply(params: dict, carry: Carry, x):
    """One step: ``(h_{t-1}, B) , x_t -> (h_t, B'), h_t``, exact on the grid 2^-F.

    Args:
      params: as made by :func:`init`.
      carry: a :class:`Carry` with h (*batch, H) on the grid and the buffer word.
      x: x_t, shape (*batch, D).

    Returns:
      ``(carry_t, h_t)``; h_t (*batch, H). A value that leaves the grid's range or is not
      finite makes h_t NaN (the scans report the step). The buffer word takes the digits
      of about 32 / m steps; :func:`jaxrnn.reversible_scan` moves its high bytes to memory
      in time (under :func:`jaxrnn.scan` it wraps after that, leaving h unchanged).
    """
    validate(params, carry, x)
    x = jnp.asarray(x).astype(carry.h.dtype)
    F, m = carry.frac_bits, carry.max_forget_bits
    shape = jnp.broadcast_shapes(carry.h.shape[:-1], x.shape[:-1]) + carry.h.shape[-1:]
    h1, h2 = _halves(jnp.broadcast_to(carry.h, shape))
    w1, w2 = _halves(jnp.broadcast_to(carry.word, shape))
    h1, w1, _ = _half_step(params, "1", h1, w1, h2, x, F, m)
    h2, w2, _ = _half_step(params, "2", h2, w2, h1, x, F, m)
    h = jnp.concatenate([h1, h2], axis=-1)
    return Carry(h, jnp.concatenate([w1, w2], axis=-1), F, m), h


def inverse(params: dict, carry: Carry, x) -> Carry:
    """The exact inverse of :func:`apply`: carry_{t-1} from carry_t and x_t, bit for bit.

    Undoes the second half (its gates recomputed from h1_t), then the first (from the
    recovered h2_{t-1}), popping their digits from the buffer word.
    """
    validate(params, carry, x)
    x = jnp.asarray(x).astype(carry.h.dtype)
    F, m = carry.frac_bits, carry.max_forget_bits
    h1, h2 = _halves(carry.h)
    w1, w2 = _halves(carry.word)
    h2, w2 = _undo_half(params, "2", h2, w2, h1, x, F, m)
    h1, w1 = _undo_half(params, "1", h1, w1, h2, x, F, m)
    return Carry(jnp.concatenate([h1, h2], axis=-1), jnp.concatenate([w1, w2], axis=-1), F, m)


def destroyed_bits(params: dict, carry: Carry, x):
    """Bits one step destroys: sum over units of log2(2^16 / n), shape (*batch,).

    This is -log2 |det ∂h_t / ∂h_{t-1}| of the fixed-point step (its Jacobian is block
    triangular with diagonal blocks diag(z1), diag(z2)), the least a buffer must keep.
    """
    validate(params, carry, x)
    x = jnp.asarray(x).astype(carry.h.dtype)
    m = carry.max_forget_bits
    h1, h2 = _halves(carry.h)
    _, n1, _ = _gates(params, "1", h2, x, m)
    h1_new = apply(params, carry, x)[0].h[..., : h1.shape[-1]]
    _, n2, _ = _gates(params, "2", h1_new, x, m)
    bits = [_forget.information_bits(n, carry.h.dtype) for n in (n1, n2)]
    bits = jnp.concatenate(bits, axis=-1)
    return jnp.sum(bits, axis=-1)
