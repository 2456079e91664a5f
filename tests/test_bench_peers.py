"""``goldener-jax bench peers`` at a tiny scale: every contest runs, a missing peer is reported
as such, and where a peer is installed its results agree with ours (the check the table prints)."""

import argparse

import pytest

from goldener_jax.benchmarks import peers


def _args(tasks: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    peers.add_arguments(parser)
    return parser.parse_args(["--tasks", tasks, "--scale", "0.02", "--repeats", "1"])


def test_kcenter_agrees_with_the_numpy_loop():
    rows = peers.run(_args("kcenter"))["rows"]
    numpy_row = next(r for r in rows if r["peer"] == "numpy loop")
    assert numpy_row["agree"] == "identical"
    fps = next(r for r in rows if r["peer"] == "fpsample")
    assert fps["agree"] in ("identical", "not installed")


@pytest.mark.parametrize("task", ["pairs", "knn", "kmeans"])
def test_exact_tasks_agree_with_installed_peers(task):
    rows = peers.run(_args(task))["rows"]
    assert rows and all(r["task"] == task for r in rows)
    for r in rows:
        if r["agree"] == "not installed":
            assert r["peer_s"] is None and r["ratio"] is None
            continue
        assert r["peer_s"] > 0 and r["ratio"] == pytest.approx(r["peer_s"] / r["ours_s"])
        if task == "pairs":
            assert r["agree"].startswith("identical"), r
        elif task == "knn":  # float ties can swap the last neighbour of a few rows
            assert float(r["agree"].split(" %")[0]) > 99.0, r
        else:
            ratio = float(r["agree"].rsplit(" ", 1)[1])
            assert ratio == pytest.approx(1.0, abs=1e-3), r


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown"):
        peers.run(_args("kcenter,nope"))
