"""No module of jaxrnn uses jax's private ``jax._src``, which changes without notice between
releases (the public names are ``jax``, ``jax.numpy``, ``jax.lax``, ``jax.extend``, ...).

The whole package is checked. The check reads each module's syntax tree:
imports (``import jax._src.x``, ``from jax._src import x``, ``from jax import _src``),
attribute chains (``jax._src.core``) and ``importlib.import_module("jax._src...")``, so that
a docstring or comment naming ``jax._src`` does not count.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxrnn"


def _dotted(node) -> str:
    """``jax._src.core`` for the attribute chain jax._src.core (else '')."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else ""


def _is_private(name: str) -> bool:
    return name == "jax._src" or name.startswith("jax._src.")


def private_jax_uses(source: str) -> list[int]:
    """Line numbers where ``source`` imports or reaches into ``jax._src``."""
    lines = set()
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute):
            names = [_dotted(node)]
        elif isinstance(node, ast.Call) and node.args:
            function, first = _dotted(node.func) or getattr(node.func, "id", ""), node.args[0]
            if function.endswith(("import_module", "__import__")) and isinstance(
                first, ast.Constant
            ):
                names = [str(first.value)]
        if any(_is_private(name) for name in names):
            lines.add(node.lineno)
    return sorted(lines)


PLANTED = '''"""Docstring naming jax._src, which is allowed."""
import jax
import jax.numpy as jnp
from jax.extend import core
import jax._src.core
from jax._src import xla_bridge
from jax import _src
import importlib

# a comment naming jax._src.core is allowed


def f(x):
    depth = jax._src.core.trace_state_clean()
    module = importlib.import_module("jax._src.lax")
    return jnp.sum(x), jax.lax.scan, core.Jaxpr, depth, module, "jax._src in a string"
'''


def test_planted_private_uses_are_found_and_public_ones_are_not():
    assert private_jax_uses(PLANTED) == [5, 6, 7, 14, 15]


def test_jaxrnn_uses_no_private_jax():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 20, f"expected the package's modules under {PACKAGE}"
    found = {}
    for path in modules:
        relative = path.relative_to(PACKAGE)
        lines = private_jax_uses(path.read_text())
        if lines:
            found[str(relative)] = lines
    assert found == {}, f"jax._src used (file: lines): {found}"
