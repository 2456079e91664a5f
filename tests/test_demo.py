"""The demo end to end on a reduced setting: report, plots, manifests, and a rerun that reuses."""

import json
import os

import numpy as np
import pytest

from goldener_jax import demo


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo"))
    first = demo.main(quick=True, out=out, progress=False, verbose=False)
    return out, first


def test_demo_writes_report_and_manifests(demo_out):
    out, summary = demo_out
    assert summary["budgets"] == [0.05, 0.1] and summary["seeds"] == 2
    assert summary["counts"] == {"0.05": 51, "0.1": 101}  # ceil(b x 1006-image pool)
    for m in ("kcenter", "zcore", "auto", "random"):
        accs = summary["accuracy"][f"{m}@0.05"]
        assert len(accs) == 2 and all(0.1 < a <= 1 for a in accs)
    sizes = summary["split"]["smart"][0]["sizes"]
    assert sizes == {"train": 1006, "val": 216, "test": 216}
    assert summary["split"]["random"][0]["sizes"] == sizes
    text = open(os.path.join(out, "report.md")).read()
    assert "## Smart sampling vs random" in text and "## Split 70/15/15" in text
    assert "| 5%" in text and "random (mean of 2)" in text and "|val - test|" in text
    for p in summary["plots"]:
        assert f"({p})" in text
    sel = json.load(open(os.path.join(out, "selections", "kcenter_0.05_seed0.json")))
    assert len(sel["indices"]) == 51 == len(set(sel["digits_indices"]))
    assert os.path.exists(os.path.join(out, "splits", "smart_seed0.json"))
    assert json.load(open(os.path.join(out, "summary.json")))["describe"]["dim"] == 112


def test_demo_plots_are_not_blank(demo_out):
    import matplotlib.image

    out, summary = demo_out
    assert summary["plots"] == ["accuracy_vs_budget.png", "projection.png", "class_balance.png"]
    for name in summary["plots"]:
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 10_000, name
        img = np.asarray(matplotlib.image.imread(path))[..., :3]
        assert img.shape[0] > 300 and img.shape[1] > 500, (name, img.shape)
        assert img.std() > 0.05, name  # not a blank canvas
        assert (img.std(axis=-1) > 0.05).mean() > 0.001, name  # some coloured pixels


def test_demo_rerun_reuses_store_and_selections(demo_out):
    out, first = demo_out
    assert first["describe"]["batches_reused"] == 0 and not first["cnn"]["reused"]
    again = demo.main(quick=True, out=out, progress=False, verbose=False)
    assert again["cnn"]["reused"]
    assert again["describe"]["batches_reused"] == again["describe"]["batches"] == 6
    # 2 budgets x (zcore, auto, random) x 2 seeds + kcenter once per budget, 1 + 2 splits
    assert again["reused_selections_and_splits"] == 2 * (3 * 2 + 1) + 3
    assert again["accuracy"] == first["accuracy"]
    assert again["split"] == first["split"]


def test_demo_rejects_bad_budget(tmp_path):
    with pytest.raises(ValueError, match=r"budget must be a fraction in \(0, 1\], got 1.5"):
        demo.main(budgets=[1.5], out=str(tmp_path))
