"""Multidimensional RNN (SPEC §6): a grid cell, a raster reference and the wavefront."""

from jaxrnn.mdrnn.cell import apply, init, n_flops, n_multiply_adds, n_weights, param_shapes
from jaxrnn.mdrnn.raster import raster, raster_fast
from jaxrnn.mdrnn.wavefront import plan, wavefront
from jaxrnn.steps import sequential_steps

__all__ = [
    "apply",
    "init",
    "n_flops",
    "n_multiply_adds",
    "n_weights",
    "param_shapes",
    "plan",
    "raster",
    "raster_fast",
    "sequential_steps",
    "wavefront",
]
