import json

import pytest

from goldener_jax import cli


def test_demo_prints_summary(capsys, tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--budget", "0.05", "--seeds", "1", "--out", str(out)]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "Smart sampling vs random" in text and "random (mean of 1)" in text
    assert "| 5%     | 51 " in text  # ceil(5% of the 1006-image pool)
    assert "Split 70/15/15" in text
    assert (out / "report.md").exists() and (out / "accuracy_vs_budget.png").exists()


def test_demo_rejects_bad_budget():
    with pytest.raises(ValueError, match="budget must be a fraction in \\(0, 1\\], got 1.5"):
        cli.main(["demo", "--budget", "1.5"])


def test_bench_kcenter_reports_ratios(capsys, tmp_path):
    out_json = tmp_path / "r.json"
    args = ["bench", "kcenter", "--n", "3000", "--d", "16", "--k", "12", "--repeats", "1"]
    assert cli.main([*args, "--numpy-steps", "12", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "effective bandwidth" in out and "NumPy reference" in out
    result = json.loads(out_json.read_text())
    # The NumPy reference runs the same algorithm: it must pick the same points.
    assert result["numpy_picks_agree"] is True
    assert result["deterministic"] is True
    assert result["effective_gb_s"] > 0 and result["read_bandwidth_gb_s"] > 0


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])
