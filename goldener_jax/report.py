"""The demo's summary table, ``report.md`` and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import os

import numpy as np


def _ms(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def _table(header, rows) -> list[str]:
    """A Markdown table, padded so that it also reads well in a terminal. A ``|`` inside a cell
    is escaped (``|val - test|`` once split its header into two more cells than the separator
    row, and Markdown renderers dropped the table)."""
    cells = [[str(c).replace("|", "\\|") for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return [
        fmt(cells[0]),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        *map(fmt, cells[1:]),
    ]


def sampling_rows(summary) -> tuple[list, list, list]:
    """(header, rows, verdicts) of the accuracy-vs-budget table."""
    methods = [*summary["methods"], "random"]
    seeds = summary["seeds"]
    header = ["budget", "samples", *[f"{m} acc" for m in methods[:-1]], f"random (mean of {seeds})"]
    rows, verdicts = [], []
    for b in summary["budgets"]:
        key = f"{b:g}"
        accs = {m: summary["accuracy"][f"{m}@{key}"] for m in methods}
        rows.append([f"{b:.0%}", summary["counts"][key], *[_ms(accs[m]) for m in methods]])
        rand = float(np.mean(accs["random"]))
        for m in methods[:-1]:
            d = float(np.mean(accs[m])) - rand
            verdicts.append((b, m, d))
    return header, rows, verdicts


def split_rows(summary) -> tuple[list, list]:
    header = ["split", "sizes", "coverage radius (train/val/test)", "energy dist. to all (t/v/t)",
              "MMD² to all (t/v/t)", "val acc", "test acc", "|val - test|"]  # fmt: skip
    rows = []
    for kind, runs in summary["split"].items():
        sizes = "/".join(str(v) for v in runs[0]["sizes"].values())
        rad = "/".join(f"{np.mean([r['radius'][n] for r in runs]):.2f}" for n in runs[0]["radius"])
        en = "/".join(f"{np.mean([r['energy'][n] for r in runs]):.3f}" for n in runs[0]["energy"])
        mm = "/".join(f"{np.mean([r['mmd'][n] for r in runs]):.4f}" for n in runs[0]["mmd"])
        rows.append(
            [
                f"{kind} (mean of {len(runs)})",
                sizes,
                rad,
                en,
                mm,
                _ms([r["val_acc"] for r in runs]),
                _ms([r["test_acc"] for r in runs]),
                _ms([r["gap"] for r in runs]),
            ]
        )
    return header, rows


def _load(summary) -> str:
    m = summary.get("machine")
    if not m:
        return ""
    return f" (on {m['cpus']} CPUs, load average {m['load_average_1min']:.1f} at the end)"


def curation_lines(summary) -> list[str]:
    cu = summary.get("curation")
    if not cu:
        return []
    found = round(cu["precision_at_flips"] * cu["flipped"])
    lines = [
        f"Label issues: {cu['flip_rate']:.0%} of the pool's labels flipped ({cu['flipped']} "
        f"samples); gj.label_issues (k={cu['k']} neighbours) puts {found} of them among its top "
        f"{cu['flipped']} suspects: precision {cu['precision_at_flips']:.2f} vs "
        f"{cu['flip_rate']:.2f} for a random ranking; {cu['recall_at_2x_flips']:.0%} of the flips "
        f"within the top {2 * cu['flipped']}; the suggested label is the true one for "
        f"{cu['suggested_is_true_label']:.0%} of the flips found.",
    ]
    if "duplicate_groups" in cu:
        lines.append(
            f"Identical embeddings among the described images: {cu['duplicate_groups']} groups "
            f"({cu['duplicate_rows']} images)."
        )
    return lines


def summary_text(summary) -> str:
    d, c, ds = summary["data"], summary["cnn"], summary["describe"]
    lines = [
        "goldener-jax demo: scikit-learn digits (8x8), nothing downloaded.",
        f"CNN trained on {d['pretrain']} images ({c['steps']} Adam steps"
        + (", reused from a previous run" if c["reused"] else f", {c['seconds']:.1f} s")
        + f"); described {ds['samples']} other images with layers Conv_0+Conv_1+Dense_0 -> "
        f"{ds['dim']}-d vectors ({ds['batches_reused']}/{ds['batches']} store batches reused).",
        f"Pool of {d['pool']} to select from (no labels used), held-out test set of {d['test']}; "
        f"logistic regression on the embeddings of the selected samples "
        f"(whole pool: {summary['full_pool_accuracy']:.3f}).",
        "",
        "Smart sampling vs random, test accuracy (mean ± std over seeds):",
    ]
    header, rows, verdicts = sampling_rows(summary)
    lines += _table(header, rows)
    wins = [f"{m} at {b:.0%} ({d * 100:+.1f} pts)" for b, m, d in verdicts if d >= 0]
    losses = [f"{m} at {b:.0%} ({d * 100:+.1f} pts)" for b, m, d in verdicts if d < 0]
    lines += ["", "At or above random's mean: " + (", ".join(wins) or "none") + "."]
    lines += ["Below random's mean: " + (", ".join(losses) or "none") + "."]
    if summary.get("auto_resolved"):
        chosen = ", ".join(f"{float(b):.0%} -> {m}" for b, m in summary["auto_resolved"].items())
        lines += [f'method="auto" chose: {chosen}.']
    lines += ["", "Split 70/15/15, stratified by label: smart (gj.split, method='auto') vs random:"]
    header, rows = split_rows(summary)
    lines += _table(header, rows)
    sm, rn = summary["split"]["smart"], summary["split"]["random"]
    mean = lambda runs, f: float(np.mean([f(r) for r in runs]))  # noqa: E731
    gap_s, gap_r = mean(sm, lambda r: r["gap"]), mean(rn, lambda r: r["gap"])
    rad_s = mean(sm, lambda r: r["radius"]["train"])
    rad_r = mean(rn, lambda r: r["radius"]["train"])
    lines += [
        f"The smart split's train set covers the data {'more' if rad_s < rad_r else 'less'} "
        f"tightly (radius {rad_s:.2f} vs {rad_r:.2f});"
        f" validation predicts test {'better' if gap_s < gap_r else 'no better'} than with random "
        f"splits here (|val - test| {gap_s:.3f} vs {gap_r:.3f}).",
    ]
    if "mmd" in sm[0]:
        held = lambda r: (r["mmd"]["val"] + r["mmd"]["test"]) / 2  # noqa: E731
        mmd_s, mmd_r = mean(sm, held), mean(rn, held)
        lines += [
            f"Its validation and test sets are {'closer to' if mmd_s < mmd_r else 'farther from'} "
            f"the distribution of all samples than random ones (mean MMD² {mmd_s:.4f} vs "
            f"{mmd_r:.4f}; RBF kernel, median-distance bandwidth; 0 = same distribution).",
        ]
    acc_s = mean(sm, lambda r: r["test_acc"])
    acc_r = mean(rn, lambda r: r["test_acc"])
    lines += [
        f"Test accuracy of a model trained on the train set: {acc_s:.3f} (smart) vs "
        f"{acc_r:.3f} (random), mean over {len(sm)} and {len(rn)} splits.",
    ]
    lines += ["", *curation_lines(summary)]
    t = summary.get("timings_s", {})
    lines += [
        "",
        "Times: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()) + _load(summary),
        f"Reused from a previous run: {summary['reused_selections_and_splits']} selections/splits."
        f" Report, plots and manifests in {summary['out']}/",
    ]
    return "\n".join(lines)


def write_report(out: str, summary, text: str) -> str:
    path = os.path.join(out, "report.md")
    lines = ["# goldener-jax demo report", "", "```text", text, "```", ""]
    header, rows, _ = sampling_rows(summary)
    lines += ["## Smart sampling vs random (test accuracy)", "", *_table(header, rows), ""]
    lines += ["Coverage radius of each selection (mean over seeds; smaller covers better):", ""]
    methods = [*summary["methods"], "random"]
    rrows = [
        [f"{b:.0%}", *[f"{np.mean(summary['radius'][f'{m}@{b:g}']):.2f}" for m in methods]]
        for b in summary["budgets"]
    ]
    lines += [*_table(["budget", *methods], rrows), ""]
    header, rows = split_rows(summary)
    lines += ["## Split 70/15/15 (stratified)", "", *_table(header, rows), ""]
    lines += ["Class counts per set (first seed):", ""]
    crow = []
    for kind, runs in summary["split"].items():
        for n, counts in runs[0]["class_counts"].items():
            crow.append([kind, n, *counts])
    lines += [*_table(["split", "set", *map(str, range(10))], crow), ""]
    if summary.get("curation"):
        lines += ["## Curation (planted label flips)", "", *curation_lines(summary), ""]
        lines += ["Ranking and planted flips: `curation/label_issues.json`.", ""]
    lines += ["## Plots", ""]
    lines += [f"![{os.path.splitext(p)[0]}]({p})" for p in summary.get("plots", [])]
    lines += ["", "Manifests: `selections/*.json|npy`, `splits/*.json|npy`, `curation/*.json`, "
              "`summary.json`.", ""]  # fmt: skip
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def write_plots(
    out,
    summary,
    *,
    feats,
    pool,
    pool_y,
    picks,
    split_examples,
    labels,
    issue_ranking=None,
    flipped=None,
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    methods = [*summary["methods"], "random"]
    budgets = summary["budgets"]

    # accuracy vs budget, error bars = std over seeds
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    markers = "osD^v<>"
    for i, m in enumerate(methods):
        acc = [summary["accuracy"][f"{m}@{b:g}"] for b in budgets]
        shift = 1 + 0.025 * (i - (len(methods) - 1) / 2)  # methods that agree stay visible
        ax.errorbar(
            [b * 100 * shift for b in budgets],
            [np.mean(a) for a in acc],
            yerr=[np.std(a) for a in acc],
            marker=markers[i % len(markers)],
            capsize=3,
            label=m,
            linestyle="--" if m == "random" else "-",
        )
    ax.axhline(summary["full_pool_accuracy"], color="gray", lw=0.8, label="whole pool")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks([b * 100 for b in budgets], [f"{b:.0%}" for b in budgets])
    ax.set_xlabel("budget (fraction of the pool labelled)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Logistic regression trained on the selection")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    names.append("accuracy_vs_budget.png")
    fig.savefig(os.path.join(out, names[-1]))
    plt.close(fig)

    # 2-D PCA of the pool with the selected points (a middle budget, seed 0)
    from sklearn.decomposition import PCA

    b = budgets[min(1, len(budgets) - 1)]
    xy = PCA(2, random_state=0).fit_transform(feats[pool])
    shown = [m for m in ("kcenter", "auto", "random") if (b, m, 0) in picks] or [methods[0]]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4), dpi=100, squeeze=False)
    for ax, m in zip(axes[0], shown, strict=True):
        idx = picks[(b, m, 0)]
        ax.scatter(xy[:, 0], xy[:, 1], c=pool_y, cmap="tab10", s=6, alpha=0.35)
        ax.scatter(xy[idx, 0], xy[idx, 1], c=pool_y[idx], cmap="tab10", vmin=0, vmax=9, s=60,
                   edgecolors="black", linewidths=1.0, marker="*")  # fmt: skip
        ax.set_title(f"{m}: {len(idx)} selected ({b:.0%})")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Pool, 2-D PCA of the embeddings (colour = class); stars = selected")
    fig.tight_layout()
    names.append("projection.png")
    fig.savefig(os.path.join(out, names[-1]))
    plt.close(fig)

    # class balance per split (first seed of each kind)
    kinds = list(split_examples)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 3.8), dpi=100, squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        sets = split_examples[kind]
        width = 0.8 / len(sets)
        for j, (n, v) in enumerate(sets.items()):
            frac = np.bincount(labels[np.asarray(v)], minlength=10) / max(len(v), 1)
            ax.bar(np.arange(10) + (j - 1) * width, frac, width, label=f"{n} ({len(v)})")
        ax.set_xticks(range(10))
        ax.set_xlabel("class")
        ax.set_ylabel("fraction of the set")
        ax.set_title(f"{kind} split")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
        ax.legend(fontsize=8, ncol=3, loc="upper center")
    fig.tight_layout()
    names.append("class_balance.png")
    fig.savefig(os.path.join(out, names[-1]))
    plt.close(fig)

    # label issues: planted flips found vs samples inspected in ranking order
    if issue_ranking is not None and flipped is not None and len(flipped):
        hits = np.cumsum(np.isin(issue_ranking, flipped)) / len(flipped)
        inspected = np.arange(1, len(issue_ranking) + 1)
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
        ax.plot(inspected, hits, label="gj.label_issues ranking")
        ax.plot(inspected, inspected / len(issue_ranking), "--", label="random order")
        ax.axvline(len(flipped), color="gray", lw=0.8, label=f"#flips = {len(flipped)}")
        ax.set_xlim(0, min(len(issue_ranking), 6 * len(flipped)))
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("samples inspected, most suspicious first")
        ax.set_ylabel("share of the planted flips found")
        ax.set_title(f"Label issues: {len(flipped)} flips planted in {len(issue_ranking)} labels")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        names.append("label_issues.png")
        fig.savefig(os.path.join(out, names[-1]))
        plt.close(fig)
    return names
