"""Names of :mod:`jaxrnn.reversible` kept for one release, each warning what replaces it."""

from __future__ import annotations

import functools
import warnings

from jaxrnn.reversible.state import raise_if_failed


def alias(new, old_name: str):
    """``new`` under its old name: the same call, with a DeprecationWarning naming both."""

    @functools.wraps(new)
    def call(*args, **kwargs):
        warnings.warn(
            f"{old_name} is deprecated and will be removed in the next release; use "
            f"jaxrnn.reversible.{new.__name__}",
            DeprecationWarning,
            stacklevel=2,
        )
        return new(*args, **kwargs)

    return call


check = alias(raise_if_failed, "jaxrnn.reversible.check")
check_optimizer = alias(raise_if_failed, "jaxrnn.reversible.check_optimizer")
