"""The demo end to end on a reduced setting: report, plots, manifests, a rerun that reuses, and a
run killed partway then resumed."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

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
    for kind in ("smart", "random"):
        mmd = summary["split"][kind][0]["mmd"]
        assert set(mmd) == {"train", "val", "test"} and all(0 <= v < 0.1 for v in mmd.values())
    assert "MMD² to all (t/v/t)" in text
    # Every Markdown table renders: each row has as many cells as its separator row (a raw "|"
    # in the split table's header once made it two cells longer, and renderers dropped it).
    tables, fenced, current = [], False, []
    for line in text.splitlines() + [""]:
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("|"):
            current.append(len(re.split(r"(?<!\\)\|", line)))
        elif current:
            tables.append(current)
            current = []
    assert len(tables) >= 4 and all(len(set(t)) == 1 for t in tables), tables


def test_demo_label_issue_ranking_finds_planted_flips(demo_out):
    out, summary = demo_out
    cu = summary["curation"]
    assert cu["flipped"] == round(0.05 * 1006) and cu["k"] == 10
    # far above what a random ranking gets (the flip rate)
    assert cu["precision_at_flips"] > 10 * cu["flip_rate"]
    rec = json.load(open(os.path.join(out, "curation", "label_issues.json")))
    flipped = set(rec["planted_flips"])
    assert len(flipped) == cu["flipped"]
    top = [r["index"] for r in rec["ranking"][: cu["flipped"]]]
    assert sum(i in flipped for i in top) / len(top) == cu["precision_at_flips"]
    text = open(os.path.join(out, "report.md")).read()
    assert "## Curation (planted label flips)" in text
    assert f"precision {cu['precision_at_flips']:.2f} vs 0.05 for a random ranking" in text


def test_demo_plots_are_not_blank(demo_out):
    import matplotlib.image

    out, summary = demo_out
    assert summary["plots"] == [
        "accuracy_vs_budget.png",
        "projection.png",
        "class_balance.png",
        "label_issues.png",
    ]
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
    # 2 budgets x (zcore, auto, random) x 2 seeds + kcenter once per budget, 2 smart + 2 random
    assert again["reused_selections_and_splits"] == 2 * (3 * 2 + 1) + 4
    assert again["accuracy"] == first["accuracy"]
    assert again["split"] == first["split"]


def test_demo_rejects_bad_budget(tmp_path):
    with pytest.raises(ValueError, match=r"budget must be a fraction in \(0, 1\], got 1.5"):
        demo.main(budgets=[1.5], out=str(tmp_path))


def _saved_arrays(out: str) -> dict:
    paths = glob.glob(os.path.join(out, "selections", "*.npy"))
    paths += glob.glob(os.path.join(out, "splits", "*.npy"))
    return {os.path.relpath(p, out): np.load(p) for p in paths if ".tmp" not in p}


def test_demo_killed_during_selection_resumes_to_the_same_result(demo_out, tmp_path):
    """SIGKILL a quick demo once the store is written and selections are being cached; the rerun
    completes, reuses what the killed run finished, and ends with the uninterrupted selections.

    One budget and one seed keep it short: each cached selection depends only on its method,
    budget and seed, so its file must equal the same-named file of the (uninterrupted) fixture."""
    ref_out, ref = demo_out
    out = str(tmp_path / "killed")
    # no empty / repository-root entry first on sys.path: -P, and PYTHONPATH without empties
    python_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    args = ["demo", "--quick", "--budget", "0.05", "--seeds", "1", "--out", out]
    cmd = [sys.executable, "-P", "-m", "goldener_jax.cli", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while not _saved_arrays(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the demo ended before it could be killed"
    done_at_kill = set(_saved_arrays(out))
    assert done_at_kill, "killed before any selection was cached"
    assert not os.path.exists(os.path.join(out, "summary.json"))  # it was mid-run

    again = demo.main(quick=True, budgets=[0.05], seeds=1, out=out, progress=False, verbose=False)
    assert again["cnn"]["reused"]
    assert again["describe"]["batches_reused"] == again["describe"]["batches"]
    cached_selections = sum(name.startswith("selections") for name in done_at_kill)
    cached_splits = sum(
        all(f"{stem}_{n}.npy" in done_at_kill for n in ("train", "val", "test"))
        for stem in {name.rsplit("_", 1)[0] for name in done_at_kill if name.startswith("splits")}
    )
    assert again["reused_selections_and_splits"] == cached_selections + cached_splits
    got = _saved_arrays(out)
    # kcenter, zcore, auto, random at 5%, seed 0; the smart split and one random split
    assert len(got) == 4 + 2 * 3 and done_at_kill < set(got)
    expected = _saved_arrays(ref_out)
    for name, idx in got.items():
        np.testing.assert_array_equal(idx, expected[name], err_msg=name)
    for m in ("kcenter", "zcore", "auto", "random"):
        assert again["accuracy"][f"{m}@0.05"] == ref["accuracy"][f"{m}@0.05"][:1]
    assert again["split"]["smart"] == ref["split"]["smart"][:1]
    assert again["split"]["random"] == ref["split"]["random"][:1]
    assert again["curation"] == ref["curation"]


def test_cached_results_of_another_library_version_are_dropped(tmp_path, monkeypatch):
    """A rerun reuses selections and splits only if this same library wrote them."""
    sel, spl = tmp_path / "selections", tmp_path / "splits"
    for d in (sel, spl):
        d.mkdir()
        (d / "auto_0.05_seed0.npy").write_bytes(b"cached")
    (tmp_path / "library_digest.txt").write_text("written-by-an-older-library\n")
    demo._drop_stale_results(str(tmp_path), (str(sel), str(spl)))
    assert not any(sel.iterdir()) and not any(spl.iterdir())
    (sel / "auto_0.05_seed0.npy").write_bytes(b"fresh")
    demo._drop_stale_results(str(tmp_path), (str(sel), str(spl)))  # same library: kept
    assert (sel / "auto_0.05_seed0.npy").read_bytes() == b"fresh"
    monkeypatch.setattr(demo, "_library_digest", lambda: "a-newer-library")
    demo._drop_stale_results(str(tmp_path), (str(sel), str(spl)))
    assert not any(sel.iterdir())
