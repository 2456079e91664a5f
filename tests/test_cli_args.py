"""The command line's argument checks: one line on stderr naming the option, exit status 2,
before any computation; outputs only under --out; a closed stdout; the run command's imports."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from goldener_jax import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Vectors [60, 4] with 3 labels, a pickle in a .npy, a .npz, a text file, a store."""
    from goldener_jax.describe import describe

    root = tmp_path_factory.mktemp("cli_args")
    rng = np.random.RandomState(0)
    labels = np.repeat(np.arange(3), 20)
    x = (rng.randn(60, 4) + labels[:, None] * 3).astype(np.float32)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", labels)
    np.save(root / "new.npy", x[:30] + 2)
    np.save(root / "all.npy", np.arange(60))
    np.save(root / "sel.npy", np.arange(0, 60, 6))
    np.save(root / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(root / "x.npz", x=x)
    (root / "text.npy").write_text("hello")
    (root / "afile").write_text("not a directory")
    (root / "adir").mkdir()

    class OneRow:
        fingerprint = "one-row"

        def __call__(self, batch, *, mask=None, key=None):
            return batch[:, None, :], batch[:, :1] > -1e9

    describe(x, OneRow(), root / "store", labels=labels, batch_size=16, progress=False)
    return root


def _status(argv) -> int:
    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse's usage errors exit from parse_args
        return e.code


def _one_line_error(capsys, argv, *needles, absent=()) -> str:
    status = _status(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert status == 2, (argv, status, err)
    assert err.count("\n") == 1, err  # one line
    assert "Traceback" not in err and "Traceback" not in captured.out
    for needle in needles:
        assert needle in err, (needle, err)
    for needle in absent:
        assert needle not in err, (needle, err)
    return err


def _forbid_work(monkeypatch):
    """Every library computation the commands call raises: an error must come before them."""
    import importlib

    def computed(*args, **kwargs):
        raise AssertionError("computed before the argument check")

    for module, names in [
        ("goldener_jax.select", ("select",)),
        ("goldener_jax.split", ("split",)),
        ("goldener_jax.curate", ("label_issues", "near_duplicates")),
        ("goldener_jax.drift", ("drift", "monitoring_selection")),
        ("goldener_jax.evaluate", ("compare_to_random",)),
        ("goldener_jax.refine", ("cluster", "outliers")),
    ]:
        importlib.import_module(module)
        for name in names:  # sys.modules: the package's `select` is the function, not the module
            monkeypatch.setattr(sys.modules[module], name, computed)


# ------------------------------------------------------------ one-line errors, before the work

# (argv, substrings of the one stderr line); {r}: the fixture's folder
ERRORS = [
    # 2. a set name is a plain file name (the file is <--out>/<name>.npy)
    (["split", "{r}/x.npy", "--set", "../escaped=0.8", "--set", "b=0.2", "--out", "{o}"],
     ["--set '../escaped=0.8'", "plain file name"]),
    (["split", "{r}/x.npy", "--set", "{r}/abs=0.8", "--set", "b=0.2", "--out", "{o}"],
     ["plain file name"]),
    (["split", "{r}/x.npy", "--set", "tr/ain=0.8", "--set", "b=0.2", "--out", "{o}"],
     ["--set 'tr/ain=0.8'", "plain file name"]),
    (["split", "{r}/x.npy", "--set", "a\\b=0.8", "--set", "b=0.2", "--out", "{o}"],
     ["plain file name"]),
    (["split", "{r}/x.npy", "--set", "..=0.8", "--set", "b=0.2", "--out", "{o}"],
     ["plain file name"]),
    (["split", "{r}/x.npy", "--set", ".=0.8", "--set", "b=0.2", "--out", "{o}"],
     ["plain file name"]),
    # 5. nothing left to test on
    (["evaluate", "{r}/x.npy", "--labels", "{r}/y.npy", "--selection", "{r}/all.npy"],
     ["--selection covers 60 of the pool's 60 samples", "nothing is left to test on",
      "--test-vectors"]),
    # 6. output locations checked first
    (["select", "{r}/x.npy", "--size", "5", "--out", "{r}/afile"], ["--out", "afile", "is a file"]),
    (["split", "{r}/x.npy", "--set", "a=0.5", "--set", "b=0.5", "--out", "{r}/afile"],
     ["--out", "is a file"]),
    (["curate", "{r}/x.npy", "--labels", "{r}/y.npy", "--out", "{r}/afile"],
     ["--out", "is a file"]),
    (["cluster", "{r}/x.npy", "--clusters", "3", "--out", "{r}/afile"], ["--out", "is a file"]),
    (["outliers", "{r}/x.npy", "--out", "{r}/afile"], ["--out", "is a file"]),
    (["drift", "{r}/x.npy", "{r}/new.npy", "--out", "{r}/afile"], ["--out", "is a file"]),
    (["evaluate", "{r}/x.npy", "--labels", "{r}/y.npy", "--selection", "{r}/sel.npy",
      "--out", "{r}/afile"], ["--out", "is a file"]),
    (["evaluate", "{r}/x.npy", "--labels", "{r}/y.npy", "--selection", "{r}/sel.npy",
      "--json", "{r}/nowhere/r.json"], ["--json", "no such directory"]),
    (["evaluate", "{r}/x.npy", "--labels", "{r}/y.npy", "--selection", "{r}/sel.npy",
      "--json", "{r}/adir"], ["--json", "is a directory"]),
    (["run", "{r}/spec.json", "--out", "{o}"], ["pipeline: no such file"]),
    (["verify", "{r}/store", "--json", "{r}/nowhere/r.json"], ["--json", "no such directory"]),
    (["bench", "kcenter", "--json", "{r}/nowhere/r.json"], ["bench kcenter", "--json"]),
    # 7. drift: --monitor and --clusters checked first, named
    (["drift", "{r}/x.npy", "{r}/new.npy", "--monitor", "-3", "--out", "{o}"],
     ["--monitor", "expected an int >= 1, got '-3'"]),
    (["drift", "{r}/x.npy", "{r}/new.npy", "--monitor", "0", "--out", "{o}"],
     ["--monitor", "expected an int >= 1, got '0'"]),
    (["drift", "{r}/x.npy", "{r}/new.npy", "--monitor", "31", "--out", "{o}"],
     ["--monitor 31: at most 30 (the new samples)"]),
    (["drift", "{r}/x.npy", "{r}/new.npy", "--clusters", "1000", "--out", "{o}"],
     ["--clusters 1000: at most 60"]),
    (["drift", "{r}/x.npy", "{r}/new.npy", "--permutations", "0", "--out", "{o}"],
     ["--permutations", "expected an int >= 1"]),
    # 9. every input through one loader, named
    (["select", "{r}/objects.npy", "--size", "5", "--out", "{o}"],
     ["source:", "Python objects", "not numbers"]),
    (["select", "{r}/x.npz", "--size", "5", "--out", "{o}"],
     ["source:", ".npz archive", "feature store directory"]),
    (["select", "{r}/text.npy", "--size", "5", "--out", "{o}"], ["source:", "not a .npy file"]),
    (["select", "{r}/no_store", "--size", "5", "--out", "{o}"],
     ["source: no such file or directory"]),
    (["select", "{r}/x.npy", "--size", "5", "--labels", "{r}/adir", "--out", "{o}"],
     ["--labels:", "is a directory"]),
    (["select", "{r}/x.npy", "--size", "5", "--anchors", "{r}/objects.npy", "--out", "{o}"],
     ["--anchors:", "Python objects"]),
    (["curate", "{r}/x.npz", "--out", "{o}"], ["source:", ".npz archive"]),
    (["drift", "{r}/x.npy", "{r}/missing.npy", "--out", "{o}"], ["new: no such file"]),
    (["drift", "{r}/x.npz", "{r}/new.npy", "--out", "{o}"], ["reference:", ".npz archive"]),
    (["cluster", "{r}/x.npy", "--clusters", "3", "--per-label", "--labels", "{r}/missing.npy",
      "--out", "{o}"], ["--labels: no such file"]),
    (["outliers", "{r}/objects.npy", "--out", "{o}"], ["source:", "Python objects"]),
    (["evaluate", "{r}/x.npy", "--labels", "{r}/y.npy", "--selection", "{r}/x.npz"],
     ["--selection:", ".npz archive"]),
    # 10. negative --top
    (["outliers", "{r}/x.npy", "--top", "-1", "--out", "{o}"],
     ["goldener-jax outliers: error: argument --top: expected an int >= 0, got '-1'"]),
    (["curate", "{r}/x.npy", "--labels", "{r}/y.npy", "--top", "-1", "--out", "{o}"],
     ["argument --top: expected an int >= 0"]),
    # 11. bench sizes and repeats
    (["bench", "kcenter", "--n", "-5"], ["bench kcenter", "--n", "expected an int >= 1"]),
    (["bench", "kcenter", "--repeats", "0"], ["--repeats", "expected an int >= 1"]),
    (["bench", "kcenter", "--k", "0"], ["--k", "expected an int >= 1"]),
    (["bench", "kmeans", "--n", "50", "--d", "2", "--k", "2", "--iters-short", "4",
      "--iters-long", "4"], ["bench kmeans", "--iters-long (4) must be greater"]),
    (["bench", "probcover", "--fraction", "2"], ["--fraction", "a fraction in (0, 1]"]),
    # 12. an unknown option names its subcommand; combinations that would be ignored
    (["select", "{r}/x.npy", "--size", "5", "--bogus", "--out", "{o}"],
     ["goldener-jax select: error: unrecognized arguments: --bogus"]),
    (["bench", "kcenter", "--bogus"], ["goldener-jax bench kcenter: error: unrecognized"]),
    (["split", "{r}/x.npy", "--set", "a=0.5", "--set", "b=0.5", "--strict-sizes", "--out", "{o}"],
     ["--strict-sizes only applies with --groups"]),
    (["cluster", "{r}/x.npy", "--clusters", "3", "--batch-size", "64", "--out", "{o}"],
     ["--batch-size only applies with --fit minibatch"]),
    (["cluster", "{r}/x.npy", "--clusters", "3", "--labels", "{r}/y.npy", "--out", "{o}"],
     ["--labels only applies with --per-label"]),
    (["cluster", "{r}/x.npy", "--clusters", "3", "--overwrite", "--out", "{o}"],
     ["--overwrite only applies with --checkpoint-dir"]),
    (["cluster", "{r}/x.npy", "--clusters", "3", "--checkpoint-dir", "{r}/afile", "--out", "{o}"],
     ["--checkpoint-dir", "afile", "is a file"]),
    (["evaluate", "{r}/x.npy", "--labels", "{r}/y.npy", "--selection", "{r}/sel.npy",
      "--test-vectors", "{r}/x.npy", "--test-labels", "{r}/y.npy", "--test-fraction", "0.2"],
     ["--test-fraction only applies without --test-vectors"]),
    (["split", "{r}/x.npy", "--set", "a=0.5", "--set", "b=0.5", "--leakage-threshold", "-1",
      "--out", "{o}"], ["--leakage-threshold", "expected a number > 0"]),
    # 13. a float count is refused, with the form to use
    (["select", "{r}/x.npy", "--size", "10.0", "--out", "{o}"],
     ["--size", "'10.0' is not a ratio in (0, 1]", "whole count"]),
    (["split", "{r}/x.npy", "--set", "a=40.0", "--set", "b=20", "--out", "{o}"],
     ["--set 'a=40.0'", "not a ratio in (0, 1]"]),
]  # fmt: skip


@pytest.mark.parametrize("argv, needles", ERRORS, ids=lambda v: " ".join(v)[:70])
def test_user_errors_are_one_line_before_any_work(
    files, tmp_path, capsys, monkeypatch, argv, needles
):
    _forbid_work(monkeypatch)
    argv = [a.replace("{r}", str(files)).replace("{o}", str(tmp_path / "out")) for a in argv]
    _one_line_error(capsys, argv, *needles)
    # nothing written: not --out, not next to it, not in the fixture's folder
    assert sorted(os.listdir(tmp_path)) in ([], ["out"])
    if (tmp_path / "out").exists():
        assert os.listdir(tmp_path / "out") == []


def test_set_names_never_write_outside_out(files, tmp_path, capsys):
    out = tmp_path / "a" / "b"
    argv = ["split", str(files / "x.npy"), "--set", "../escaped=0.8", "--method", "random"]
    argv += ["--set", f"{tmp_path}/abs=0.2", "--out", str(out), "--quiet"]
    assert _status(argv) == 2
    assert list(tmp_path.rglob("*.npy")) == []


def test_out_is_created_before_the_computation(files, tmp_path, capsys, monkeypatch):
    """A --out that cannot be created fails in the check, not after the selection."""
    _forbid_work(monkeypatch)
    argv = ["select", str(files / "x.npy"), "--size", "5"]
    _one_line_error(capsys, [*argv, "--out", str(files / "afile" / "sub")], "--out", "afile")


# ------------------------------------------------------------ 1. run imports like python -m

# The model file the pipeline tests import from tests/ (_workflow_model.py), written under another
# module name beside each spec: found only if run looks where python -m would.
MODEL = (Path(__file__).parent / "_workflow_model.py").read_text()


def _project(folder, module: str):
    """A spec naming ``<module>:tiny_cnn``, its variables and data, ``<module>.py`` beside."""
    import jax
    import jax.numpy as jnp

    from goldener_jax.workflow import save_variables

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(MODEL)
    rng = np.random.default_rng(0)
    np.savez(folder / "pool.npz", image=rng.random((24, 8, 8, 1), np.float32))
    exec(MODEL, namespace := {})  # the same model, without importing the module here
    variables = namespace["tiny_cnn"](4).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    save_variables(folder / "variables", variables)
    spec = {
        "version": 1,
        "source": {"kind": "arrays", "path": "pool.npz", "data_key": "image"},
        "extractor": {
            "model": f"{module}:tiny_cnn",
            "model_args": {"width": 4},
            "variables": "variables",
            "layers": ["conv1", "conv2"],
            "fusion": "concat",
        },
        "store": "store",
        "steps": [{"action": "describe", "name": "describe", "args": {"batch_size": 12}}],
    }
    # (written as JSON: Pipeline(spec) would import the module, not on the path here)
    (folder / "pipeline.json").write_text(json.dumps(spec, indent=1))
    return folder / "pipeline.json"


@pytest.mark.parametrize("where", ["cwd", "spec_folder"])
def test_run_imports_the_model_module_like_python_m(tmp_path, capsys, monkeypatch, where):
    """docs/guides/life_cycle.md: `goldener-jax run pipeline.json --out out` from the folder that
    holds my_models.py (or with the module beside the spec) finds the module."""
    module = f"cli_run_model_{where}_{os.getpid()}"
    spec = _project(tmp_path / "project", module)
    monkeypatch.chdir(tmp_path / "project" if where == "cwd" else tmp_path)
    path_before = list(sys.path)
    assert str(tmp_path / "project") not in sys.path
    status = cli.main(["run", str(spec.name if where == "cwd" else spec), "--out", "out", "-q"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "describe" in captured.out and "ran 1" in captured.out
    assert sys.path == path_before  # the folders are on the path for the run only
    sys.modules.pop(module, None)


# ------------------------------------------------------------ 3. a closed stdout


class _ClosedPipe:
    """stdout whose reader went away after the first line (`| head -1`)."""

    def __init__(self):
        self.lines = 0

    def write(self, text):
        if self.lines >= 1:
            raise BrokenPipeError(32, "Broken pipe")
        self.lines += text.count("\n")
        return len(text)

    def flush(self):
        if self.lines >= 1:
            raise BrokenPipeError(32, "Broken pipe")


def test_closed_stdout_stops_printing_not_the_command(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    out = tmp_path / "out"
    argv = ["curate", str(files / "x.npy"), "--labels", str(files / "y.npy"), "--top", "59"]
    status = cli.main([*argv, "--duplicate-threshold", "0.01", "--out", str(out), "-q"])
    assert status == 0
    assert capsys.readouterr().err == ""
    assert sorted(os.listdir(out)) == [
        "label_issues.json",
        "label_issues.npy",
        "near_duplicates.json",  # written after the printing stopped
    ]


def test_closed_stdout_pipe_in_a_real_process(tmp_path):
    """The console script behind `| head -1`: status 0, nothing on stderr, every file written.
    The table (--top 2000, ~80 KB) overfills the pipe, so the reader is gone while it prints."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(2000, 4)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 3, 2000))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "goldener_jax.cli", "-q", "curate", str(tmp_path / "x.npy")]
    cmd += ["--labels", str(tmp_path / "y.npy"), "--top", "2000", "--duplicate-threshold", "0.01"]
    proc = subprocess.Popen(  # (cwd: the package on the path, as for the console script)
        [*cmd, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Broken pipe" not in err and "Exception ignored" not in err, err
    assert (out / "near_duplicates.json").exists() and (out / "label_issues.npy").exists()


# ------------------------------------------------------------ 4. demo -q


def test_quiet_demo_draws_no_progress_bars(monkeypatch, tmp_path):
    from goldener_jax import demo

    seen = {}
    monkeypatch.setattr(demo, "main", lambda **kw: seen.update(kw) or {})
    assert cli.main(["-q", "demo", "--quick", "--out", str(tmp_path / "d")]) == 0
    assert seen["progress"] is False
    assert cli.main(["demo", "--quick", "--out", str(tmp_path / "d")]) == 0
    assert seen["progress"] is True


# ------------------------------------------------------------ 7. drift records what it used


def test_drift_monitor_and_clusters_as_given(files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["drift", str(files / "x.npy"), str(files / "new.npy"), "--permutations", "10"]
    assert cli.main([*argv, "--clusters", "5", "--monitor", "4", "--out", str(out), "-q"]) == 0
    assert json.loads((out / "drift.json").read_text())["config"]["n_clusters"] == 5
    assert len(np.load(out / "monitoring.npy")) == 4
    assert "monitoring: 4 new samples" in capsys.readouterr().out


# ------------------------------------------------------------ 8. advice in command-line words


def test_library_advice_names_the_flags(files, tmp_path, capsys):
    ck, out = str(tmp_path / "ck"), str(tmp_path / "out")
    argv = ["cluster", str(files / "x.npy"), "--checkpoint-dir", ck, "--out", out, "-q"]
    assert cli.main([*argv, "--clusters", "3"]) == 0
    capsys.readouterr()
    _one_line_error(capsys, [*argv, "--clusters", "4"], "pass --overwrite", absent=["=True"])
    assert cli.main([*argv, "--clusters", "4", "--overwrite"]) == 0
    capsys.readouterr()
    err = _one_line_error(
        capsys,
        ["cluster", str(files / "x.npy"), "--clusters", "3", "--per-label", "--out", out],
        "--per-label needs --labels",
        absent=["per_label", "labels="],
    )
    assert "goldener-jax cluster: error:" in err
    _one_line_error(
        capsys,
        ["cluster", str(files / "x.npy"), "--clusters", "100", "--out", out],
        "--clusters must be in [1, 60]",
        absent=["n_clusters"],
    )


@pytest.mark.parametrize(
    "flags, text, expected",
    [
        ({"--overwrite"}, "config differs; pass overwrite=True to start afresh",
         "config differs; pass --overwrite to start afresh"),
        ({"--checkpoint-dir"}, "another config; use another directory or pass overwrite=True",
         "another config; use another directory or empty the --checkpoint-dir"),
        ({"--per-label", "--labels"},
         "per_label=True needs labels: the store has none, pass labels=",
         "--per-label needs labels: the store has none, pass --labels"),
        ({"--permutations"}, "num_permutations must be >= 1, got 0",
         "--permutations must be >= 1, got 0"),
        ({"--chunk-size"}, "no such file '/data/my_chunk_size/x.npy'",
         "no such file '/data/my_chunk_size/x.npy'"),
        ({"--checkpoint-dir"}, "store 'x' is corrupt; pass overwrite=True to start the store over",
         "store 'x' is corrupt; describe the data again with describe(..., overwrite=True) to "
         "start the store over"),
        (set(), "pass overwrite=True", "pass overwrite=True"),  # no such flag: unchanged
        ({"--overwrite"}, "would overwrite the file", "would overwrite the file"),  # the word
    ],
)  # fmt: skip
def test_library_names_translated_only_where_the_command_has_the_flag(flags, text, expected):
    assert cli._in_cli_words(text, flags) == expected


# ------------------------------------------------------------ 11, 12. parsers


def _bench_parsers():
    parser = cli._build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bench = sub.choices["bench"]
    bench_sub = next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction))
    return bench_sub, bench_sub.choices


def test_every_bench_count_is_checked_at_parse_time(capsys):
    """No bench option takes a bare int but its seeds: sizes, counts, repeats have a floor."""
    _, parsers = _bench_parsers()
    checked = 0
    for name, p in parsers.items():
        for action in p._actions:
            if action.type is int:
                assert "seed" in action.dest, f"bench {name} {action.option_strings}: bare int"
            low = getattr(action.type, "__name__", "")
            if low.startswith("int >= "):
                floor = int(low.split()[-1])
                argv = ["bench", name, action.option_strings[0], str(floor - 1)]
                _one_line_error(capsys, argv, f"goldener-jax bench {name}: error: argument")
                checked += 1
    assert checked > 60


def test_bench_help_is_whole_sentences_and_seed_has_help(capsys):
    bench_sub, parsers = _bench_parsers()
    for choice in bench_sub._choices_actions:
        assert choice.help.endswith((".", "?")), (choice.dest, choice.help)
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    out = capsys.readouterr().out
    assert "NumPy ratio, peak memory; streaming" in " ".join(out.split())
    for name, p in parsers.items():
        for action in p._actions:
            if action.dest == "seed":
                assert action.help, name


@pytest.mark.parametrize(
    "command, options",
    [
        ("select", ["--exclude-label", "--metric"]),
        ("split", ["--exclude-label", "--metric", "--leakage-threshold"]),
        ("curate", ["--metric", "--weighting"]),
        ("outliers", ["--metric"]),
        ("drift", ["--metric"]),
    ],
)
def test_options_have_help(command, options):
    parser = cli._build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {o: a.help for a in sub.choices[command]._actions for o in a.option_strings}
    for option in options:
        assert helps[option], (command, option)


# ------------------------------------------------------------ 13. stale sets, e-notation sizes


def test_split_again_with_other_sets_removes_the_old_ones(files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["split", str(files / "x.npy"), "--method", "random", "--out", str(out), "-q"]
    assert cli.main([*argv, "--set", "train=0.8", "--set", "val=0.2"]) == 0
    (out / "mine.npy").write_bytes(b"")  # not a set of the previous split: kept
    assert cli.main([*argv, "--set", "fit=0.5", "--set", "holdout=0.5"]) == 0
    assert sorted(os.listdir(out)) == ["fit.npy", "holdout.npy", "mine.npy", "split.json"]
    assert list(json.loads((out / "split.json").read_text())["sets"]) == ["fit", "holdout"]
    assert "removed the previous split's train.npy, val.npy" in capsys.readouterr().out


def test_e_notation_whole_numbers_are_counts(files, tmp_path):
    assert cli._parse_size("1e1") == 10 and isinstance(cli._parse_size("1e1"), int)
    assert cli._parse_size("2.5e1") == 25 and cli._parse_size("1e-1") == 0.1
    assert cli._parse_size("1e0") == 1.0 and isinstance(cli._parse_size("1e0"), float)
    assert isinstance(cli._parse_size("1e400"), float)  # inf: refused, never int(inf)
    assert cli._parse_size("10.0") == 10.0 and cli._size_error("10.0", 10.0)
    out = tmp_path / "out"
    argv = ["select", str(files / "x.npy"), "--size", "1e1", "--method", "random"]
    assert cli.main([*argv, "--out", str(out), "-q"]) == 0
    assert len(np.load(out / "selection.npy")) == 10
