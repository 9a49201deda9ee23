"""The tour section of the layer stacks prints measured numbers that hold."""

import re

import pytest

from jaxrnn.cli import layers as layers_section
from jaxrnn.cli import main


def test_tour_section_measures_gradients_lengths_and_torch():
    lines = list(layers_section.tour())
    text = "\n".join(lines)
    gradient = float(re.search(r"plain scan to ([0-9.e+-]+) \(relative", text).group(1))
    assert gradient < 1e-5
    assert "ys (12, 4, 16), zero past each length (max |ys[5:, 1]| = 0)" in text
    if "PyTorch is not installed" in text:
        pytest.skip("PyTorch is not installed")
    torch_diff = float(re.search(r"max \|ys - ys_torch\| = ([0-9.e+-]+)", text).group(1))
    assert torch_diff < 1e-5 and len(lines) == 3


def test_the_section_is_in_the_tour_list():
    assert layers_section.ORDER > 40  # after the fast LSTM layer it builds on
    assert main(["tour", "--only", "nonexistent-section"]) == 2
    names = [m.__name__ for m in __import__("jaxrnn.cli", fromlist=["x"]).capabilities()]
    assert "jaxrnn.cli.layers" in names
