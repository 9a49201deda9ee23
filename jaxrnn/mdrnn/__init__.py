"""Multidimensional RNN (SPEC §6): a grid cell, a raster reference and the wavefront.

    h(i,j) = phi( W_in^T x(i,j) + W_W^T h(i-1,j) + W_N^T h(i,j-1) ),   h outside the grid = 0

``raster`` computes the grid in H·W sequential steps, ``wavefront`` in H+W-1 (one per
anti-diagonal); ``sequential_steps`` measures these numbers from the traced programs.
Beyond the textbook: ``mdlstm`` (the MD-LSTM cell on the same wavefront),
``four_directions`` (all four scan directions in the same H+W-1 steps), batches of grids of
different sizes (``sizes=``) and ``grid3d`` (n1+n2+n3-2 steps on a 3-D grid).
"""

from jaxrnn._deprecated import alias_module
from jaxrnn.mdrnn import _raster, _wavefront, directions, grid3d, mdlstm
from jaxrnn.mdrnn._raster import raster, raster_fast
from jaxrnn.mdrnn._wavefront import plan, wavefront
from jaxrnn.mdrnn.cell import apply, init, n_flops, n_multiply_adds, n_weights, param_shapes
from jaxrnn.mdrnn.directions import DIRECTIONS, four_directions, init_four
from jaxrnn.steps import sequential_steps

# The implementation modules are private: ``jaxrnn.mdrnn.raster`` and ``.wavefront`` are the
# functions; the old module paths still import, with a warning (CHANGELOG.md).
alias_module("jaxrnn.mdrnn.raster", _raster, "jaxrnn.mdrnn.raster (the function)")
alias_module("jaxrnn.mdrnn.wavefront", _wavefront, "jaxrnn.mdrnn.wavefront (the function)")

__all__ = [
    "DIRECTIONS",
    "apply",
    "directions",
    "four_directions",
    "grid3d",
    "init",
    "init_four",
    "mdlstm",
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
