"""README's first code example runs as written and does what it says."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_kernel_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    chosen, more = np.asarray(namespace["chosen"]), np.asarray(namespace["more"])
    assert chosen.shape == (500,) and len(set(chosen.tolist())) == 500
    assert more.shape == (100,) and not set(more.tolist()) & set(chosen.tolist())
    assert np.asarray(namespace["dense_first"]).shape == (50,)


def test_readme_states_the_ci_commands():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert '.venv/bin/pip install ".[test]" && .venv/bin/pytest -n 2' in text
    assert '.venv/bin/pip install -q ".[test]"' in ci and ".venv/bin/pytest -n 2" in ci
    assert "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/goldener-jax demo" in text
