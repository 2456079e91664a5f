"""Choosing the ``method="auto"`` rule from the quality suite, validated leave-one-dataset-out.

Input: the JSON of ``goldener-jax bench quality --suite`` (per dataset, budget, method, probe and
seed: accuracy, and the mean accuracy of random subsets of the same size). A rule is label-free:
it sees only the number of vectors ``n`` and the number to pick ``count`` (the call signature of
``goldener_jax.pipeline.BudgetRule``), and names a measured method; its gain in a cell is that
method's gain (the same ``select`` call, the same key).

Candidates, simplest first: one method everywhere; a budget threshold (``small`` below
``threshold x n``, ``large`` from it); a count threshold (``small`` below ``count`` picks).
Choice: mean rank across the (dataset, budget) cells of the fitting datasets (rank 1 = the
largest gain, averaged over seeds and the two probes; ties share the mean rank); ties between
candidates go to the simpler one (a single method), then to the larger mean gain.
Validation: for each dataset, the rule is chosen on the others and scored on it.

``python -m goldener_jax.benchmarks.auto_rule RESULTS.json [--out LODO.json]`` prints the tables;
``--large LARGE.json`` (``bench quality --suite --large``: pools of 4,456 to 14,133 vectors, none
used to choose the rule) adds the held-out check (:func:`held_out_check`) of the rules that
differ there: the count switch, the budget-fraction switch and their two methods alone.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

__all__ = [
    "CountRule",
    "SingleMethod",
    "SuiteRule",
    "candidates",
    "choose",
    "held_out_check",
    "leave_one_dataset_out",
]


def _rows(n) -> int:
    """``n``, or the row count of the vectors when a rule is handed them (``select`` may pass
    ``(vectors, count)``)."""
    return int(n.shape[0]) if hasattr(n, "shape") else int(n)


@dataclasses.dataclass(frozen=True)
class SingleMethod:
    """One method whatever the budget."""

    method: str

    def __call__(self, n, count: int) -> str:
        return self.method

    @property
    def complexity(self) -> int:
        return 0


@dataclasses.dataclass(frozen=True)
class SuiteRule:
    """``small`` when ``count < threshold x n``, else ``large`` (``BudgetRule``'s form)."""

    threshold: float
    small: str
    large: str

    def __call__(self, n, count: int) -> str:
        return self.small if count < self.threshold * _rows(n) else self.large

    @property
    def complexity(self) -> int:
        return 1


@dataclasses.dataclass(frozen=True)
class CountRule:
    """``small`` when fewer than ``count_threshold`` picks are asked for, else ``large``."""

    count_threshold: int
    small: str
    large: str

    def __call__(self, n, count: int) -> str:
        return self.small if count < self.count_threshold else self.large

    @property
    def complexity(self) -> int:
        return 1


def _name(rule) -> str:
    if isinstance(rule, SingleMethod):
        return rule.method
    if isinstance(rule, SuiteRule):
        return f"{rule.small} <{rule.threshold:.1%}<= {rule.large}"
    if isinstance(rule, CountRule):
        return f"{rule.small} <{rule.count_threshold} picks<= {rule.large}"
    return repr(rule)


def candidates(methods, budgets) -> list:
    """Every single method, and every (small, large) pair switched at a budget threshold between
    two measured budgets (the geometric midpoint) or at a count threshold."""
    methods = [m for m in methods if m != "random"]
    bs = sorted(float(b) for b in budgets)
    mids = [math.sqrt(a * b) for a, b in zip(bs, bs[1:], strict=False)]
    rules = [SingleMethod(m) for m in methods]
    for small in methods:
        for large in methods:
            if small == large:
                continue
            rules += [SuiteRule(round(t, 4), small, large) for t in mids]
            rules += [CountRule(c, small, large) for c in (10, 20, 40, 80)]
    return rules


# --------------------------------------------------------------------------- scoring


def _gain(ds: dict, method: str, budget: str, probe: str) -> np.ndarray:
    cell = ds["budgets"][budget]
    return 100 * (
        np.asarray(cell["methods"][method][probe]) - np.asarray(cell["random"][probe]["mean"])
    )


def rule_method(rule, ds: dict, budget: str) -> str:
    return rule(ds["pool"], ds["budgets"][budget]["count"])


def cell_gain(rule, ds: dict, budget: str, probes) -> float:
    """The rule's gain in one (dataset, budget) cell: mean over seeds and probes."""
    m = rule_method(rule, ds, budget)
    return float(np.mean([_gain(ds, m, budget, p).mean() for p in probes]))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Rank 1 = largest; ties share their mean rank."""
    from scipy.stats import rankdata

    return rankdata(-values, method="average")


def score(rules, results: dict, names, probes) -> tuple[np.ndarray, np.ndarray]:
    """``(mean rank, mean gain)`` of every rule over the (dataset, budget) cells of ``names``."""
    ranks, gains = [], []
    for name in names:
        ds = results["datasets"][name]
        for b in results["budgets"]:
            g = np.asarray([cell_gain(r, ds, b, probes) for r in rules])
            ranks.append(_ranks(g))
            gains.append(g)
    return np.mean(ranks, axis=0), np.mean(gains, axis=0)


def choose(rules, results: dict, names, probes):
    """The rule of lowest mean rank over ``names`` (ties: simpler, then larger mean gain)."""
    rank, gain = score(rules, results, names, probes)
    order = sorted(
        range(len(rules)), key=lambda i: (round(rank[i], 9), rules[i].complexity, -gain[i])
    )
    return rules[order[0]], float(rank[order[0]]), float(gain[order[0]])


def _sign_test(wins: int, total: int) -> float:
    from scipy.stats import binomtest

    return float(binomtest(wins, total, 0.5).pvalue) if total else 1.0


def leave_one_dataset_out(results: dict, probes=("linear", "knn"), rules=None) -> dict:
    """For every dataset: the rule (and the best single method) chosen on the others, scored on
    it, per budget and probe: mean gain, seeds at or above random's mean, a two-sided sign test
    over the seeds that differ from it."""
    names = list(results["datasets"])
    if len(names) < 2:
        raise ValueError(f"leave-one-dataset-out needs at least 2 datasets, got {names}")
    rules = rules or candidates(results["methods"], results["budgets"])
    singles = [r for r in rules if isinstance(r, SingleMethod)]
    rows = []
    for held in names:
        fit = [n for n in names if n != held]
        rule, _, _ = choose(rules, results, fit, probes)
        single, _, _ = choose(singles, results, fit, probes)
        ds = results["datasets"][held]
        oracle = max(
            singles,
            key=lambda r: np.mean([cell_gain(r, ds, b, probes) for b in results["budgets"]]),
        )
        row = {
            "dataset": held,
            "rule": _name(rule),
            "best_single_on_others": single.method,
            "best_single_on_it": oracle.method,
            "cells": {},
        }
        for b in results["budgets"]:
            m = rule_method(rule, ds, b)
            cell = {"method": m}
            for p in probes:
                g = _gain(ds, m, b, p)
                acc = np.asarray(ds["budgets"][b]["methods"][m][p])
                rnd = np.asarray(ds["budgets"][b]["random"][p]["mean"])
                wins, losses = int(np.sum(acc > rnd)), int(np.sum(acc < rnd))
                cell[p] = {
                    "gain": float(g.mean()),
                    "seeds_above": wins,
                    "seeds_below": losses,
                    "sign_p": _sign_test(wins, wins + losses),
                }
            row["cells"][b] = cell
        for label, r in (("rule", rule), ("single_on_others", single), ("single_on_it", oracle)):
            row[f"mean_gain_{label}"] = float(
                np.mean([cell_gain(r, ds, b, probes) for b in results["budgets"]])
            )
        rows.append(row)
    full_rule, full_rank, full_gain = choose(rules, results, names, probes)
    full_single, _, single_gain = choose(singles, results, names, probes)
    return {
        "probes": list(probes),
        "rule_on_all": _name(full_rule),
        "rule_on_all_repr": repr(full_rule),
        "rule_on_all_mean_rank": full_rank,
        "rule_on_all_mean_gain": full_gain,
        "best_single_on_all": full_single.method,
        "best_single_on_all_mean_gain": single_gain,
        "candidates": len(rules),
        "lodo": rows,
    }


def table_rows(results: dict, probes=("linear", "knn"), rules=None) -> list[tuple]:
    """``(name, mean rank, mean gain, cells below random)`` of every rule over all datasets."""
    rules = rules or candidates(results["methods"], results["budgets"])
    rank, gain = score(rules, results, list(results["datasets"]), probes)
    below = []
    for r in rules:
        c = 0
        for ds in results["datasets"].values():
            for b in results["budgets"]:
                c += cell_gain(r, ds, b, probes) < 0
        below.append(c)
    return sorted(
        ((_name(r), float(rank[i]), float(gain[i]), below[i]) for i, r in enumerate(rules)),
        key=lambda t: t[1],
    )


TODAY = SuiteRule(0.15, "kmeans_medoids", "kcenter")  # BudgetRule(): "auto" before the suite

# Chosen by mean rank on the 10-dataset suite (docs/results/quality_suite.json) and by every
# leave-one-dataset-out fold (docs/results/quality_suite_lodo.json): typicality-weighted
# k-center for fewer than 40 picks, ProbCover from 40 picks on. Mean gain over random +6.38
# points (single best method, typical_kcenter: +6.28; today's BudgetRule: +5.66).
PROPOSED = CountRule(40, "typical_kcenter", "probcover")
# The best budget-fraction rule (chosen in every fold when count switches are left out, +6.27)
FRACTION = SuiteRule(0.071, "typical_kcenter", "probcover")


def held_out_check(large: dict, rules=None, probes=("linear", "knn")) -> dict:
    """Fixed rules on datasets none of them was chosen on (``bench quality --suite --large``).

    Per rule: the per-dataset and overall mean gain (over budgets, seeds and ``probes``) and the
    cells below random. Per (dataset, budget) cell where the first two rules name different
    methods: the difference of their gains (first minus second, mean of ``probes``) and the
    seeds where the first is above / below the second (mean of the probes per seed), with a
    two-sided sign test. Rules naming a method the run did not measure are left out."""
    rules = rules or [
        PROPOSED,
        FRACTION,
        SingleMethod(PROPOSED.small),
        SingleMethod(PROPOSED.large),
    ]
    rules = rules + [SingleMethod("random")] if "random" in large["methods"] else rules
    measured = set(large["methods"])
    names = list(large["datasets"])
    kept = [
        r
        for r in rules
        if all(
            rule_method(r, large["datasets"][n], b) in measured
            for n in names
            for b in large["budgets"]
        )
    ]
    out = {"probes": list(probes), "budgets": list(large["budgets"]), "rules": [], "disagree": []}
    for r in kept:
        per_ds = {
            n: {b: cell_gain(r, large["datasets"][n], b, probes) for b in large["budgets"]}
            for n in names
        }
        out["rules"].append(
            {
                "rule": _name(r),
                "per_dataset": per_ds,
                "dataset_means": {n: float(np.mean(list(v.values()))) for n, v in per_ds.items()},
                "mean_gain": float(np.mean([g for v in per_ds.values() for g in v.values()])),
                "cells_below_random": int(sum(g < 0 for v in per_ds.values() for g in v.values())),
            }
        )
    if len(kept) >= 2:
        first, second = kept[0], kept[1]
        for n in names:
            ds = large["datasets"][n]
            for b in large["budgets"]:
                m1, m2 = rule_method(first, ds, b), rule_method(second, ds, b)
                if m1 == m2:
                    continue
                d = np.mean([_gain(ds, m1, b, p) - _gain(ds, m2, b, p) for p in probes], axis=0)
                above, below = int(np.sum(d > 0)), int(np.sum(d < 0))
                out["disagree"].append(
                    {
                        "dataset": n,
                        "budget": b,
                        "count": ds["budgets"][b]["count"],
                        "methods": [m1, m2],
                        "difference": float(d.mean()),
                        "stderr": float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0,
                        "seeds_above": above,
                        "seeds_below": below,
                        "sign_p": _sign_test(above, above + below),
                    }
                )
    return out


def held_out_markdown(check: dict) -> str:
    """The held-out check as markdown: rules by dataset, then the cells where the first two
    rules disagree."""
    names = list(check["rules"][0]["dataset_means"]) if check["rules"] else []
    lines = [
        "| rule | " + " | ".join(names) + " | mean | cells below random |",
        "|" + "---|" * (len(names) + 3),
    ]
    for r in check["rules"]:
        cells = " | ".join(f"{r['dataset_means'][n]:+.2f}" for n in names)
        lines.append(
            f"| {r['rule']} | {cells} | {r['mean_gain']:+.2f} | {r['cells_below_random']} |"
        )
    if check["disagree"]:
        lines += [
            "",
            "| dataset | budget (picks) | first rule - second | seeds above / below | sign p |",
            "|---|---|---|---|---|",
        ]
        for c in check["disagree"]:
            lines.append(
                f"| {c['dataset']} | {float(c['budget']):.1%} ({c['count']}) | "
                f"{c['methods'][0]} - {c['methods'][1]}: "
                f"{c['difference']:+.2f} ± {c['stderr']:.2f} "
                f"| {c['seeds_above']} / {c['seeds_below']} | {c['sign_p']:.2f} |"
            )
    return "\n".join(lines)


def rule_summary(rule, results: dict, probes=("linear", "knn")) -> dict:
    """A fixed rule over every dataset: mean gain, per-budget mean gain, cells below random."""
    per_budget = {
        b: float(np.mean([cell_gain(rule, ds, b, probes) for ds in results["datasets"].values()]))
        for b in results["budgets"]
    }
    below = sum(
        cell_gain(rule, ds, b, probes) < 0
        for ds in results["datasets"].values()
        for b in results["budgets"]
    )
    return {
        "rule": _name(rule),
        "mean_gain": float(np.mean(list(per_budget.values()))),
        "per_budget": per_budget,
        "cells_below_random": int(below),
    }


def lodo_curves(results: dict, lodo: dict) -> dict:
    """``{probe: {budget: [held-out gain per dataset]}}`` of the rule chosen without each."""
    return {
        p: {
            b: [row["cells"][b][p]["gain"] for row in lodo["lodo"] if p in row["cells"][b]]
            for b in results["budgets"]
        }
        for p in lodo["probes"]
    }


def lodo_markdown(lodo: dict, budgets) -> str:
    probes = lodo["probes"]
    head = "| held out | rule chosen on the others | " + " | ".join(
        f"{100 * float(b):g}%" for b in budgets
    )
    head += " | rule mean | best single (others) | best single (itself) |"
    lines = [head, "|" + "---|" * (len(budgets) + 5)]
    for row in lodo["lodo"]:
        cells = []
        for b in budgets:
            c = row["cells"][b]
            parts = []
            for p in probes:
                s = c[p]
                flag = "" if s["sign_p"] >= 0.05 else ("*" if s["gain"] > 0 else "!")
                parts.append(f"{s['gain']:+.1f}{flag} ({s['seeds_above']}/{s['seeds_below']})")
            cells.append(f"{c['method']}: " + " / ".join(parts))
        lines.append(
            f"| {row['dataset']} | {row['rule']} | "
            + " | ".join(cells)
            + f" | {row['mean_gain_rule']:+.2f} | {row['best_single_on_others']} "
            f"{row['mean_gain_single_on_others']:+.2f} | {row['best_single_on_it']} "
            f"{row['mean_gain_single_on_it']:+.2f} |"
        )
    return "\n".join(lines)


def merge(paths) -> dict:
    """Suite JSONs of the same protocol (seeds, budgets, methods, probes) as one, by dataset."""
    out = None
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        if out is None:
            out = r
            continue
        for k in ("seeds", "budgets", "methods", "probes", "random_subsets", "max_rows"):
            if r[k] != out[k]:
                raise ValueError(f"{path}: {k} {r[k]!r} differs from {out[k]!r}")
        out["datasets"].update(r["datasets"])
        out["skipped"].update(r.get("skipped", {}))
        out["wall_seconds"] = out.get("wall_seconds", 0) + r.get("wall_seconds", 0)
    return out


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="suite JSONs; several are merged (by dataset)")
    p.add_argument("--out", default=None, help="LODO JSON")
    p.add_argument("--merged", default=None, help="write the merged suite JSON here")
    p.add_argument("--probes", default="linear,knn")
    p.add_argument("--plot", default=None, help="PNG: methods, the LODO rule and today's rule")
    p.add_argument("--large", nargs="*", default=None, help="held-out JSONs (--suite --large)")
    p.add_argument("--large-out", default=None, help="held-out check JSON")
    a = p.parse_args(argv)
    results = merge(a.results)
    if a.merged:
        with open(a.merged, "w") as f:
            json.dump(results, f, indent=1)
    probes = tuple(a.probes.split(","))
    lodo = leave_one_dataset_out(results, probes)
    top = table_rows(results, probes)
    print(
        f"rule on all datasets: {lodo['rule_on_all']} "
        f"(mean rank {lodo['rule_on_all_mean_rank']:.1f}"
        f" of {lodo['candidates']}, mean gain {lodo['rule_on_all_mean_gain']:+.2f})"
    )
    print("| rule | mean rank | mean gain | cells below random |\n|---|---|---|---|")
    for name, rank, gain, below in top[:15]:
        print(f"| {name} | {rank:.1f} | {gain:+.2f} | {below} |")
    fixed = [rule_summary(r, results, probes) for r in (PROPOSED, FRACTION, TODAY)]
    fixed += [rule_summary(SingleMethod(m), results, probes) for m in results["methods"]]
    head = " | ".join(f"{100 * float(b):g}%" for b in results["budgets"])
    print(f"\n| fixed rule | {head} | mean | cells below random |")
    print("|" + "---|" * (len(results["budgets"]) + 3))
    for f in fixed:
        cells = " | ".join(f"{v:+.2f}" for v in f["per_budget"].values())
        print(f"| {f['rule']} | {cells} | {f['mean_gain']:+.2f} | {f['cells_below_random']} |")
    print()
    print(lodo_markdown(lodo, results["budgets"]))
    check = None
    if a.large:
        large = merge(a.large)
        all_rules = candidates(results["methods"], results["budgets"])
        chosen, _, _ = choose(all_rules, results, list(results["datasets"]), probes)
        rules = [PROPOSED, FRACTION, SingleMethod(PROPOSED.small), SingleMethod(PROPOSED.large)]
        if chosen not in rules:
            rules.append(chosen)
        check = held_out_check(large, rules, probes)
        check["rule_on_all"] = lodo["rule_on_all"]
        print(
            f"\nheld out: {', '.join(large['datasets'])} (pools "
            f"{', '.join(str(d['pool']) for d in large['datasets'].values())})"
        )
        print(held_out_markdown(check))
        if a.large_out:
            with open(a.large_out, "w") as f:
                json.dump(check, f, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({**lodo, "ranking": top, "fixed_rules": fixed}, f, indent=1)
    if a.plot:
        from goldener_jax.benchmarks.quality_suite import plot

        today = {
            p: {
                b: [cell_gain(TODAY, ds, b, (p,)) for ds in results["datasets"].values()]
                for b in results["budgets"]
            }
            for p in probes
        }
        plot(
            {**results, "probes": list(probes)},
            a.plot,
            extra={"auto, held out (LODO)": lodo_curves(results, lodo), "BudgetRule()": today},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
