"""The documentation site's configuration (mkdocs.yml) covers every page and every public name.

These checks read the files only; the site itself is built by `.ci/run` (`mkdocs build --strict`).
"""

import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import yaml

import goldener_jax
from goldener_jax import kernels

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DIRECTIVE = re.compile(r"^::: *(\S+)[ \t]*\n((?:[ \t]+\S.*\n|[ \t]*\n)*)", re.MULTILINE)


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    raise AssertionError(f"unexpected nav entry {node!r}")


def _config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def _directives() -> list[tuple[str, str, dict]]:
    """``(page, identifier, options)`` of every mkdocstrings ``::: identifier`` block."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for ident, block in DIRECTIVE.findall(page.read_text()):
            options = (yaml.safe_load(block) or {}).get("options", {}) if block.strip() else {}
            found.append((str(page.relative_to(DOCS)), ident, options))
    return found


def _python_path(ident: str) -> str:
    """mkdocstrings loads the kernels as the package ``kernels`` (see mkdocs.yml)."""
    return "goldener_jax." + ident if ident.split(".")[0] == "kernels" else ident


def _is_module(path: str) -> bool:
    try:
        return importlib.util.find_spec(path) is not None
    except ModuleNotFoundError:  # a parent is a module, not a package
        return False


def _resolve(path: str):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if _is_module(name):
            obj = importlib.import_module(name)
            for attr in parts[i:]:
                obj = getattr(obj, attr)
            return obj
    raise ImportError(path)


def test_nav_lists_every_page_once_and_only_existing_pages():
    config = _config()
    assert config["docs_dir"] == "docs" and config.get("strict") is True
    nav = _nav_pages(config["nav"])
    assert len(nav) == len(set(nav)), sorted(p for p in nav if nav.count(p) > 1)
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert not set(nav) - pages, f"in the nav but missing from docs/: {sorted(set(nav) - pages)}"
    assert not pages - set(nav), f"pages missing from mkdocs.yml's nav: {sorted(pages - set(nav))}"


def test_the_build_refuses_pages_left_out_and_broken_links():
    validation = _config()["validation"]
    for check in ("omitted_files", "unrecognized_links", "anchors", "absolute_links"):
        assert validation[check] == "warn", check  # warnings are errors under strict


def test_every_api_directive_names_an_existing_object():
    directives = _directives()
    assert {page for page, _, _ in directives} >= {"api/index.md", "api/kernels.md"}
    for _, ident, _ in directives:
        _resolve(_python_path(ident))  # raises, naming the identifier, if it does not exist


def _covered(module_name: str, name: str, directives) -> bool:
    """Is ``module_name.name`` rendered by one of the directives?

    A module directive renders the module's public names, unless ``members`` narrows it, and
    except names that are also a submodule of it (griffe documents the module under that name).
    """
    full = f"{module_name}.{name}"
    for _, ident, options in directives:
        path = _python_path(ident)
        if path == full:
            return True
        if path == module_name and options.get("members", True) is not False:
            members = options.get("members")
            if (members is None or name in members) and not _is_module(full):
                return True
    return False


def test_every_public_name_has_an_api_entry():
    """Each name of ``goldener_jax.__all__`` on the page of the module that defines it, and each
    of ``goldener_jax.kernels.__all__`` on the kernels page (constants without docstrings
    aside)."""
    directives = _directives()
    missing = []
    for name in goldener_jax.__all__:
        obj = getattr(goldener_jax, name)
        if name in ("kernels", "__version__") or not (inspect.isclass(obj) or callable(obj)):
            continue
        if not _covered(obj.__module__, name, directives):
            missing.append(f"goldener_jax.{name} (defined in {obj.__module__})")
    for name in kernels.__all__:
        obj = getattr(kernels, name)
        if not (inspect.isclass(obj) or callable(obj)):
            continue
        if not (
            _covered("goldener_jax.kernels", name, directives)
            or _covered(obj.__module__, name, directives)
        ):
            missing.append(f"goldener_jax.kernels.{name}")
    assert not missing, f"public names missing from docs/api/*.md: {missing}"
