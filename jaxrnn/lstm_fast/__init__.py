"""The pieces of the fast LSTM layer (:func:`jaxrnn.lstm_layer`): fused weights and the kernel."""

from jaxrnn.lstm_fast.fused import fuse, unfuse
from jaxrnn.lstm_fast.kernel import Choices, lstm_scan

__all__ = ["Choices", "fuse", "lstm_scan", "unfuse"]
