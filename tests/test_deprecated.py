"""The old names of this release's renames still work for one release, each warning.

Every old module path whose name is now a function (``jaxrnn.scan``, ``jaxrnn.lstm_layer``,
``jaxrnn.bptt.check`` ...) imports as before with a DeprecationWarning, and importing it
does not turn the function back into a module.
"""

import importlib

import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import bptt, mdrnn, parallel
from jaxrnn.cells import lstm

OLD_MODULES = [
    ("jaxrnn.scan", "scan", jaxrnn.scan),
    ("jaxrnn.scan", "bidirectional", jaxrnn.bidirectional),
    ("jaxrnn.lstm_layer", "lstm_layer", jaxrnn.lstm_layer),
    ("jaxrnn.bptt.check", "check", bptt.check),
    ("jaxrnn.bptt.lstm", "lstm", bptt.lstm),
    ("jaxrnn.bptt.elman", "elman", bptt.elman),
    ("jaxrnn.bptt.lstm_scalar", "lstm_scalar", bptt.lstm_scalar),
    ("jaxrnn.mdrnn.raster", "raster_fast", mdrnn.raster_fast),
    ("jaxrnn.mdrnn.wavefront", "wavefront", mdrnn.wavefront),
    ("jaxrnn.parallel.deer", "deer", parallel.deer),
]


@pytest.mark.parametrize("path, name, function", OLD_MODULES)
def test_old_module_paths_import_with_a_warning_and_leave_the_functions(path, name, function):
    module = importlib.import_module(path)
    with pytest.warns(DeprecationWarning, match=rf"{path}\.{name} is deprecated.*use "):
        assert getattr(module, name) is function
    parent, _, attribute = path.rpartition(".")
    kept = getattr(importlib.import_module(parent), attribute)  # the function, not the module
    assert callable(kept) and not isinstance(kept, type(importlib))


def test_renamed_validators_warn_and_validate_as_before():
    params = lstm.init(np.uint32([0, 0]), 2, 3)
    carry = lstm.init_carry((4,), 3)
    with pytest.warns(DeprecationWarning, match="jaxrnn.cells.lstm.validate"):
        lstm.check(params, carry, jnp.zeros((4, 2)))
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="x: expected"):
        lstm.check(params, carry, jnp.zeros((4, 5)))
    grid = mdrnn.init(np.uint32([0, 0]), 2, 3)
    with pytest.warns(DeprecationWarning, match="jaxrnn.mdrnn.cell.validate_params"):
        assert mdrnn.cell.check(grid) == mdrnn.cell.validate_params(grid) == (2, 3)
    md = mdrnn.mdlstm.init(np.uint32([0, 0]), 2, 3)
    with pytest.warns(DeprecationWarning, match="jaxrnn.mdrnn.mdlstm.validate_params"):
        assert mdrnn.mdlstm.check(md) == (2, 3)
