"""The pieces of the fast GRU layer (:func:`jaxrnn.gru_layer`): fused weights and the kernel."""

from jaxrnn.gru_fast.fused import fuse, unfuse
from jaxrnn.gru_fast.kernel import Choices, gru_scan

__all__ = ["Choices", "fuse", "gru_scan", "unfuse"]
