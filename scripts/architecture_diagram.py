"""Draws docs/images/architecture.png: the layers of goldener-jax and which way imports go.

Run from the repository root: ``python scripts/architecture_diagram.py``. The picture is
committed; rerun this when a layer changes (docs/architecture.md shows it).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

# (label, detail, x, y, width, colour): one box per layer, top to bottom.
LAYERS = [
    (
        "public API",
        "select.py  split.py  extend.py  rounds.py  curate.py  drift.py  workflow.py  cli.py",
        0.5,
        9.0,
        10.1,
        "#dbe9f6",
    ),
    (
        "pipeline core  goldener_jax/pipeline/",
        "data (load store / arrays, labels, groups, reduce)   "
        "engine (tasks, progress, checkpoints)   methods (registry, typed options, auto rule)",
        0.5,
        7.5,
        10.1,
        "#e3f1dd",
    ),
    (
        "describe + store",
        "features.py  vectorize.py  sources.py  describe.py  store.py  checkpoint.py",
        0.5,
        6.0,
        10.1,
        "#fdf0d5",
    ),
    (
        "selectors  kernels/selectors.py",
        "one factory per method: init / step / run / picks / "
        "finished over a NamedTuple state (what Orbax saves)",
        0.5,
        4.5,
        10.1,
        "#f3e1f2",
    ),
    (
        "algorithm bodies  kernels/*.py",
        "kcenter(_pruned)  greedy  typical_kcenter  probcover  herding  kmeans  minibatch_kmeans  "
        "typiclust  knn  zcore  pairs  reduce\neach written once, with axis: str | None",
        0.5,
        3.0,
        10.1,
        "#fbe3e1",
    ),
    (
        "collective.py   |   sharding.py   |   distance.py",
        "psum / first_argmax / fetch_row / "
        "fold_all_rows vanish on one device   |   "
        "on_mesh, shard_rows, make_mesh   |   blocked distances",
        0.5,
        1.5,
        10.1,
        "#eeeeee",
    ),
]


def main() -> None:
    fig, ax = plt.subplots(figsize=(11.5, 8.2))
    ax.set_xlim(0, 11.2)
    ax.set_ylim(0.8, 10.2)
    ax.axis("off")
    for label, detail, x, y, w, colour in LAYERS:
        ax.add_patch(
            FancyBboxPatch((x, y), w, 1.0, boxstyle="round,pad=0.05", fc=colour, ec="#555")
        )
        ax.text(x + 0.2, y + 0.68, label, fontsize=11, weight="bold", va="center")
        ax.text(x + 0.2, y + 0.3, detail, fontsize=7.6, va="center", wrap=True)
    for (_, _, _, y_top, _, _), (_, _, _, y_low, _, _) in zip(LAYERS, LAYERS[1:], strict=False):
        ax.annotate(
            "",
            xy=(9.2, y_low + 1.05),
            xytext=(9.2, y_top - 0.05),
            arrowprops={"arrowstyle": "->", "color": "#333"},
        )
    ax.text(10.9, 5.5, "imports go down only", rotation=90, va="center", fontsize=8)
    ax.set_title("goldener-jax: layers (a layer imports only the layers below it)", fontsize=12)
    out = Path("docs/images/architecture.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(out)


if __name__ == "__main__":
    main()
