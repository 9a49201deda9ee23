"""Linear recurrent unit, LRU (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks
for Long Sequences"): a complex diagonal linear recurrence (SPEC §12).

    lambda = exp(-exp(nu_log) + i exp(theta_log))      (exponential parametrisation, |lambda| < 1)
    gamma = exp(gamma_log)                             (normalisation, sqrt(1 - |lambda|^2) at init)
    h_t = lambda * h_{t-1} + gamma * (B x_t)           (h complex, B = B_re + i B_im)
    y_t = Re(C h_t) + D * x_t                          (C = C_re + i C_im, D a skip per input)

Every parameter is real; the state is complex. The paper's initialisation puts lambda
uniformly on the ring r_min <= |lambda| <= r_max with phase in [0, max_phase], and gamma
so that a white-noise input gives the state the input's variance. :func:`coefficients` is
the pair (lambda, gamma B x_t) for one step or a whole sequence, which
``jaxrnn.parallel.scan_associative`` solves by an associative scan; :func:`apply` is one
step, for ``jaxrnn.scan``.

Shapes: nu_log, theta_log, gamma_log (H,); B_re, B_im (H, D); C_re, C_im (D, H); D (D,);
x (*batch, D) real; carry h (*batch, H) complex; y (*batch, D) real.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._cell_pieces import check_sizes
from jaxrnn._checks import (
    batch_shape_tuple,
    check_batches_broadcast,
    check_key,
    check_last_dim,
    check_matrix,
    check_params,
    check_positive_int,
    dtype_of,
    shape_of,
)


def param_shapes(in_dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        "nu_log": (hidden,),
        "theta_log": (hidden,),
        "gamma_log": (hidden,),
        "B_re": (hidden, in_dim),
        "B_im": (hidden, in_dim),
        "C_re": (in_dim, hidden),
        "C_im": (in_dim, hidden),
        "D": (in_dim,),
    }


def _check_number(value, name: str):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name}: expected a real number, got {value!r}")
    return float(value)


def init(
    key,
    in_dim: int,
    hidden: int,
    *,
    r_min: float = 0.9,
    r_max: float = 0.999,
    max_phase: float = 2 * math.pi,
    dtype=jnp.float32,
) -> dict:
    """The paper's initialisation: lambda uniform on a ring, gamma normalising, Gaussian B, C, D.

    With u1, u2 ~ U(0, 1): |lambda| = sqrt(u1 (r_max^2 - r_min^2) + r_min^2) (uniform on the
    ring's area), nu_log = log(-log |lambda|), theta_log = log(max_phase u2),
    gamma_log = log sqrt(1 - |lambda|^2); B_re, B_im ~ N(0, 1 / (2 D)); C_re, C_im ~
    N(0, 1 / H); D ~ N(0, 1).

    Args:
      key: a PRNG key.
      in_dim: D, the input and output size. hidden: H, the complex state size.
      r_min, r_max: the ring, 0 <= r_min < r_max < 1 (r_max near 1: long memory).
      max_phase: the largest phase of lambda, in (0, 2 pi].
      dtype: the real dtype of the parameters.

    Returns:
      the dict of :func:`param_shapes`.
    """
    check_key(key)
    check_sizes(in_dim, hidden)
    r_min, r_max = _check_number(r_min, "r_min"), _check_number(r_max, "r_max")
    if not 0.0 <= r_min < r_max < 1.0:
        raise ValueError(f"r_min, r_max: expected 0 <= r_min < r_max < 1, got {r_min}, {r_max}")
    max_phase = _check_number(max_phase, "max_phase")
    if not 0.0 < max_phase <= 2 * math.pi:
        raise ValueError(f"max_phase: expected a value in (0, 2 pi], got {max_phase}")
    k_radius, k_phase, k_b_re, k_b_im, k_c_re, k_c_im, k_d = jax.random.split(key, 7)
    tiny = float(jnp.finfo(dtype).tiny)
    u1 = jax.random.uniform(k_radius, (hidden,), dtype)
    u2 = jax.random.uniform(k_phase, (hidden,), dtype, minval=tiny)
    radius_squared = u1 * (r_max**2 - r_min**2) + r_min**2
    nu_log = jnp.log(-0.5 * jnp.log(radius_squared))
    b_scale, c_scale = 1.0 / math.sqrt(2 * in_dim), 1.0 / math.sqrt(hidden)
    return {
        "nu_log": nu_log,
        "theta_log": jnp.log(max_phase * u2),
        "gamma_log": 0.5 * jnp.log1p(-radius_squared),
        "B_re": b_scale * jax.random.normal(k_b_re, (hidden, in_dim), dtype),
        "B_im": b_scale * jax.random.normal(k_b_im, (hidden, in_dim), dtype),
        "C_re": c_scale * jax.random.normal(k_c_re, (in_dim, hidden), dtype),
        "C_im": c_scale * jax.random.normal(k_c_im, (in_dim, hidden), dtype),
        "D": jax.random.normal(k_d, (in_dim,), dtype),
    }


def complex_dtype(dtype):
    """complex64 for float32 (and complex64), complex128 for float64 (and complex128)."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype: expected a floating or complex dtype, got {dtype}")
    return jnp.result_type(dtype, jnp.complex64)


def init_carry(batch_shape, hidden: int, dtype=jnp.float32):
    """The zero state h_0, complex, shape (*batch_shape, H); ``dtype`` is the params' real
    dtype (or the complex dtype itself)."""
    check_positive_int(hidden, name="hidden")
    return jnp.zeros(batch_shape_tuple(batch_shape) + (hidden,), complex_dtype(dtype))


def validate(params, x, *, carry=None):
    """Check the names and shapes of ``params``, the real ``x`` (*, D) and the complex
    ``carry`` (*, H)."""
    hidden, in_dim = check_matrix(params, "B_re")
    check_params(params, param_shapes(in_dim, hidden))
    check_last_dim(x, in_dim, name="x")
    if carry is not None:
        shape = shape_of(carry)
        if len(shape) < 1 or shape[-1] != hidden:
            raise ValueError(f"carry: expected shape (*batch, {hidden}), got {shape}")
        if not jnp.issubdtype(dtype_of(carry), jnp.complexfloating):
            raise ValueError(
                f"carry: expected a complex state (lru.init_carry makes one), got dtype "
                f"{dtype_of(carry)}"
            )
        check_batches_broadcast({"carry": carry, "x": x})


def eigenvalues(params: dict):
    """lambda = exp(-exp(nu_log) + i exp(theta_log)), shape (H,): |lambda| < 1 always."""
    return jnp.exp(-jnp.exp(params["nu_log"]) + 1j * jnp.exp(params["theta_log"]))


def coefficients(params: dict, x):
    """``(a, b)`` of h_t = a_t * h_{t-1} + b_t: a_t = lambda and b_t = gamma * (B x_t), each
    complex (*lead, H) for x (*lead, D): one step, or every step of a sequence."""
    validate(params, x)
    x = jnp.asarray(x)
    weights = params["B_re"] + 1j * params["B_im"]
    b = jnp.exp(params["gamma_log"]) * (x @ weights.T)
    return jnp.broadcast_to(eigenvalues(params), b.shape), b


def readout(params: dict, hs, x):
    """y_t = Re(C h_t) + D * x_t, shape (*lead, D)."""
    weights = params["C_re"] + 1j * params["C_im"]
    return jnp.real(hs @ weights.T) + params["D"] * jnp.asarray(x)


def apply(params: dict, carry, x):
    """One step: ``(h_{t-1}, x_t) -> (h_t, y_t)`` with h_t = lambda * h_{t-1} + gamma B x_t.

    Args:
      params: as made by :func:`init`.
      carry: h_{t-1}, complex, shape (*batch, H).
      x: x_t, real, shape (*batch, D).

    Returns:
      ``(h_t, y_t)``: complex (*batch, H) and real (*batch, D).
    """
    validate(params, x, carry=carry)
    a, b = coefficients(params, x)
    h = a * jnp.asarray(carry) + b
    return h, readout(params, h, x)
