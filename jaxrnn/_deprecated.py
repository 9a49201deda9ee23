"""Old public names kept for one release, each warning what replaces it (see CHANGELOG.md)."""

from __future__ import annotations

import functools
import sys
import types
import warnings


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=3,
    )


def alias(function, old: str, new: str):
    """``function`` under its old name ``old``: the same call, warning to use ``new``."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        _warn(old, new)
        return function(*args, **kwargs)

    return call


def alias_module(old: str, module, new: str) -> None:
    """Keep ``import old`` / ``from old import name`` working, warning to use ``new``.

    The old module path (``jaxrnn.scan``, whose file is now ``jaxrnn/_scan.py``) is put in
    ``sys.modules`` only: the package attribute of that name stays what it is now (the
    function ``jaxrnn.scan``), so the function and the old module path no longer collide.
    """

    class DeprecatedModule(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):  # the import system's probes (__path__, ...)
                raise AttributeError(name)
            _warn(f"{old}.{name}", new)
            return getattr(module, name)

    sys.modules[old] = DeprecatedModule(old, f"Deprecated: use {new}.")
