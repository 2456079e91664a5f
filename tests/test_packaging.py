"""The wheel carries every package of the source tree, and no top-level `kernels`."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_package_is_listed_and_kernels_is_nested():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    dirs = config["package-dir"]
    assert dirs["goldener_jax.kernels"] == "kernels"
    assert "kernels" not in listed and all(p.startswith("goldener_jax") for p in listed)
    found = {"goldener_jax.kernels"} | {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "goldener_jax").rglob("__init__.py")
    }
    assert found == listed, f"pyproject packages {sorted(listed)} vs source tree {sorted(found)}"
