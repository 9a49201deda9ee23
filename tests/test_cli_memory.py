"""The tour section of backprop in bounded memory prints measured numbers."""

import re
from math import comb

from jaxrnn.cli import memory as memory_section


def test_tour_prints_the_optimal_schedule_exact_reversal_and_memory():
    lines = list(memory_section.tour())
    assert len(lines) == 3
    n = 10**6
    for k, shown in re.findall(r"k = (\d+): ([0-9.]+)", lines[0]):
        k = int(k)
        r = next(r for r in range(n) if comb(k + r, k) >= n)
        assert float(shown) == round((r * n - comb(k + r, k + 1) + 1) / n, 2)
    assert "bit for bit: True" in lines[1]
    bits = float(re.search(r"buffer ([0-9.]+) bits per unit", lines[1]).group(1))
    assert 2 <= bits < 2.1  # m = 2 bits per step, the 32-bit word spread over 2000 steps
    autodiff, reversible = map(float, re.findall(r"([0-9.]+) KiB", lines[2]))
    assert autodiff > 50 * reversible
