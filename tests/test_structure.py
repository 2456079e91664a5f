"""The shape of the code, checked: what a maintainer relies on when changing one kernel.

* ``kernels/`` has no import circle, and no module imports another module's private name;
* the library, its benchmarks and the demo reach other modules through public names only;
* the sharded and single-device paths are one body: ``kernels/sharding.py`` is plumbing only and
  imports no algorithm module;
* files stay small enough to read: every ``kernels/`` module under 600 lines, the public
  ``select.py`` and ``split.py`` together under 700.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"
PACKAGE = ROOT / "goldener_jax"


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _kernel_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported kernels module, names) for every relative import inside ``kernels/``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:  # from . import x
                for alias in node.names:
                    out.append((alias.name, []))
            else:
                out.append((node.module.split(".")[0], [a.name for a in node.names]))
    return out


def test_kernels_have_no_import_circle():
    graph = {
        p.stem: {m for m, _ in _kernel_imports(p) if (KERNELS / f"{m}.py").exists()}
        for p in _modules(KERNELS)
    }
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError("import circle in kernels/: " + " -> ".join(cycle))
            if state.get(nxt) is None:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if state.get(node) is None:
            visit(node, [node])


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _package_dir(path: Path, node: ast.ImportFrom) -> Path | None:
    """The folder of the package ``node`` imports from (``from . import x`` -> this folder)."""
    if node.level > 0:
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
        return base / (node.module or "").replace(".", "/") if node.module else base
    parts = (node.module or "").split(".")
    if parts[:2] == ["goldener_jax", "kernels"]:
        return KERNELS.joinpath(*parts[2:])
    return ROOT.joinpath(*parts)


def _imported_private_names(path: Path) -> list[str]:
    bad = []
    tree = ast.parse(path.read_text())
    module_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            ours = node.level > 0 or mod.startswith("goldener_jax")
            if not ours:
                continue
            package = _package_dir(path, node)
            for alias in node.names:
                is_module = package is not None and any(package.glob(f"{alias.name}.*"))
                if _private(alias.name) and not is_module:  # a private module of ours is fine
                    bad.append(f"from {'.' * node.level}{mod} import {alias.name}")
                elif alias.name[0].islower():
                    module_aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("goldener_jax"):
                    module_aliases.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
        ):
            bad.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
    return bad


@pytest.mark.parametrize(
    "path",
    _modules(KERNELS) + _modules(PACKAGE),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_module_uses_another_modules_private_names(path):
    assert _imported_private_names(path) == []


def test_sharding_is_plumbing_only():
    imported = {m for m, _ in _kernel_imports(KERNELS / "sharding.py")}
    algorithms = {"kcenter", "greedy", "herding", "kmeans", "knn", "zcore", "probcover"}
    assert not imported & algorithms, imported & algorithms
    assert imported <= {"collective", "distance", "_checks"}, imported


@pytest.mark.parametrize("path", _modules(KERNELS), ids=lambda p: p.name)
def test_kernel_modules_stay_under_600_lines(path):
    assert len(path.read_text().splitlines()) <= 600


def test_select_and_split_are_thin():
    lines = sum(len((PACKAGE / f).read_text().splitlines()) for f in ("select.py", "split.py"))
    assert lines < 700, lines
