"""The notebooks run top to bottom (nbclient), and are stored without outputs."""

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _check_quickstart(text, out):
    assert "k-center accuracy" in text and "val accuracy" in text
    assert (out / "projection.png").stat().st_size > 10_000


def _check_multi_device(text, out):
    # 8 fake CPU devices (the notebook's first cell), rows split over them, and the sharded
    # k-center / farthest point / resumed / store-read runs equal the single-device indices.
    assert "8 devices" in text
    assert "shape (225, 112)" in text  # 1797 rows padded to 1800, 225 per device
    assert text.count("same indices: True") == 5 and "same indices: False" not in text


def _check_resumable(text, out):
    # Both jobs really died mid-way (SIGKILL), and the resumed results equal uninterrupted runs.
    assert text.count("killed with SIGKILL") == 2, text
    assert "bit-identical: True" in text and "resumed == uninterrupted: True" in text
    assert "complete: True" in text


def _check_life_cycle(text, out):
    # Three labelling rounds, the history reopened from its JSON, a drifted deployment batch.
    assert "life cycle checks: OK" in text and "reopened history equal: True" in text
    assert (out / "rounds.json").stat().st_size > 1000


CHECKS = {
    "01_quickstart.ipynb": _check_quickstart,
    "02_multi_device.ipynb": _check_multi_device,
    "03_resumable_large_run.ipynb": _check_resumable,
    "04_life_cycle.ipynb": _check_life_cycle,
}


def test_every_notebook_has_a_check():
    assert [p.name for p in NOTEBOOKS] == sorted(CHECKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stripped(path):
    """No outputs, execution counts or execution timings in git (run `nbstripout` or clear all
    outputs in Jupyter before committing)."""
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    for i, cell in enumerate(nb["cells"]):
        where = f"{path.name} cell {i}"
        assert "execution" not in cell.get("metadata", {}), where
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], where
            assert cell["execution_count"] is None, where
        else:
            assert "outputs" not in cell and "execution_count" not in cell, where
    assert "widgets" not in nb["metadata"], path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("GOLDENER_NB_OUT", str(tmp_path))
    # The notebooks choose their own devices (02 asks for 8 fake CPU devices before importing
    # JAX) and their CI sizes: nothing from this process's environment should change that.
    for name in ("XLA_FLAGS", "JAX_PLATFORMS", "GOLDENER_NB_N", "GOLDENER_NB_SLOW_S"):
        monkeypatch.delenv(name, raising=False)
    # The kernel must import the installed package, not the checkout's goldener_jax/ (without
    # kernels/ inside it): no empty / repository-root entry first on PYTHONPATH.
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if paths:
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    else:
        monkeypatch.delenv("PYTHONPATH", raising=False)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError (with the cell and traceback) on failure
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    CHECKS[path.name](text, tmp_path)
