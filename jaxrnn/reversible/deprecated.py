"""Names of :mod:`jaxrnn.reversible` kept for one release, each warning what replaces it."""

from __future__ import annotations

from jaxrnn._deprecated import alias
from jaxrnn.reversible.state import raise_if_failed

check = alias(raise_if_failed, "jaxrnn.reversible.check", "jaxrnn.reversible.raise_if_failed")
check_optimizer = alias(
    raise_if_failed, "jaxrnn.reversible.check_optimizer", "jaxrnn.reversible.raise_if_failed"
)
