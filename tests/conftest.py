"""Test configuration: float64 for formula-vs-autodiff comparisons, quick hypothesis runs.

x64 is enabled here, for the tests only; the library never flips it for its users. Tests
of float32 paths create float32 arrays explicitly and use float32 tolerances.
"""

import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "jaxrnn",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("jaxrnn")
