"""Test configuration: float64 for formula-vs-autodiff comparisons, quick hypothesis runs.

x64 is enabled here, for the tests only; the library never flips it for its users. Tests
of float32 paths create float32 arrays explicitly and use float32 tolerances. Products ask
for full float32 precision: a CPU computes them so anyway, and on a GPU JAX's default
float32 product is TF32 (about three significant digits), which float32 tolerances against
a float64 reference do not admit.
"""

import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")

settings.register_profile(
    "jaxrnn",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("jaxrnn")
