"""Parallel-in-time recurrences: linear ones by associative scan, nonlinear ones by Newton.

- :func:`linear_recurrence`: h_t = A_t h_{t-1} + b_t in about 2 log2 T levels.
- :func:`deer`: any cell's trajectory as the fixed point of Newton iterations whose
  linear solves are :func:`linear_recurrence` (DEER; quasi-DEER with diagonal Jacobians).
- :func:`scan_associative`: a linear cell (minGRU, minLSTM, LRU) over a sequence by one
  associative scan, equal to ``jaxrnn.scan``; :func:`scan_with_resets`: ``jaxrnn.scan``
  over packed sequences, for any cell.
- :func:`measure_depths`: their parallel depth against the scan's, read from the traced
  programs (``jaxrnn parallel depth`` prints the table).
"""

from jaxrnn._deprecated import alias_module
from jaxrnn.parallel import _deer
from jaxrnn.parallel._deer import DeerInfo, DeerNotConverged, DeerNotConvergedWarning, deer
from jaxrnn.parallel.associative import scan_associative
from jaxrnn.parallel.depth import DepthRow, measure_depths
from jaxrnn.parallel.linear import final_state, linear_recurrence
from jaxrnn.parallel.segments import scan_with_resets

# ``jaxrnn.parallel.deer`` is the function; the old module path still imports, with a
# warning (CHANGELOG.md).
alias_module("jaxrnn.parallel.deer", _deer, "jaxrnn.parallel.deer (the function)")

__all__ = [
    "DeerInfo",
    "DeerNotConverged",
    "DeerNotConvergedWarning",
    "DepthRow",
    "deer",
    "final_state",
    "linear_recurrence",
    "measure_depths",
    "scan_associative",
    "scan_with_resets",
]
