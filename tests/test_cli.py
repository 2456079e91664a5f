import json

import numpy as np
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


def test_demo_rejects_bad_budget(capsys):
    assert cli.main(["demo", "--budget", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "budget must be a fraction in (0, 1], got 1.5" in err
    with pytest.raises(ValueError, match="budget must be a fraction in \\(0, 1\\], got 1.5"):
        cli.main(["demo", "--budget", "1.5", "--debug"])


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


def test_bench_kmeans_on_a_mesh_of_cpu_devices(capsys, tmp_path):
    # conftest gives the test process 8 CPU devices: a mesh of 3 runs the row-sharded Lloyd body
    out_json = tmp_path / "k.json"
    args = ["bench", "kmeans", "--n", "601", "--d", "8", "--k", "5", "--repeats", "1"]  # padded
    args += ["--seeding-seeds", "0", "--sklearn-threads", "1", "--sklearn-algorithms", "lloyd"]
    assert cli.main([*args, "--cpu-devices", "3", "--json", str(out_json)]) == 0
    assert "ours on a mesh of 3 CPU devices" in capsys.readouterr().out
    r = json.loads(out_json.read_text())
    assert r["ours_mesh_devices"] == 3 and isinstance(r["ours_mesh_per_iter_s"], float)
    assert r["ours_mesh_iterations"] == r["ours_iterations"]  # the same iteration counts timed
    # the same clustering up to the sums' order: the same inertia to float32 rounding
    assert r["ours_mesh_final_inertia"] == pytest.approx(r["ours_final_inertia"], rel=1e-4)
    assert all("ours_mesh_speedup" in p for p in r["peers"])
    with pytest.raises(SystemExit, match="--cpu-devices 64: JAX has 8 CPU devices"):
        # (conftest's 8 are kept: the bench never lowers a count the process asked for)
        cli.main([*args, "--cpu-devices", "64"])  # more than the process has


def test_bench_accel_runs_every_section_at_a_toy_size(capsys, tmp_path):
    """The GPU session's prepared benchmark (scripts/gpu_check.sh), on the CPU at a toy size: every
    section runs, the pruned picks equal the naive ones, the shares are real numbers."""
    out_json = tmp_path / "a.json"
    args = ["bench", "accel", "--n", "3001", "--d", "16", "--dtype", "f32", "--clusters", "12"]
    args += ["--kcenter-k", "80", "--block-rows", "32", "--knn-queries", "40", "--knn-block", "16"]
    args += ["--kmeans-k", "6", "--kmeans-iters", "4", "--json", str(out_json)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "k-center pruned k=80" in out and "kNN 40 queries" in out and "k-means k=6" in out
    r = json.loads(out_json.read_text())
    assert r["data_bytes"] == 3001 * 16 * 4 and r["read_bandwidth_gb_s"] > 0
    kc = r["kcenter"]
    assert kc["identical"] is True
    assert kc["naive"]["bytes_read_share"] == 1.0
    assert 0 < kc["pruned"]["bytes_read_share"] < 1.0  # 12 Gaussians, 80 centers: blocks skipped
    assert r["knn"]["passes_over_x"] == 3  # ceil(40 / 16)
    assert r["kmeans"]["iterations_timed"] >= 1 and r["kmeans"]["per_iter_s"] > 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # checked when the arguments are parsed
        cli.main([*args[:2], "--n", "100", "--kmeans-iters", "0"])
    assert info.value.code == 2
    assert "argument --kmeans-iters: expected an int >= 1, got '0'" in capsys.readouterr().err


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])


# ---------------------------------------------------------------- help, errors, outputs


def _commands(parser, prefix=()):
    """Every command path of the parser: (), ("select",), ("bench", "kcenter"), ..."""
    import argparse

    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))


COMMANDS = sorted(_commands(cli._build_parser()))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_works_at_every_level(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: goldener-jax") and "--help" in out


def test_help_lists_every_command_including_verify(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in ("demo", "select", "split", "curate", "evaluate", "verify", "bench"):
        assert name in out
    assert "95% CI" in out  # the % that used to crash argparse


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Vectors [60, 4] with 3 labels (.npy), a one-vector-per-sample store of the same data."""
    from goldener_jax.describe import describe

    root = tmp_path_factory.mktemp("cli")
    rng = np.random.RandomState(0)
    labels = np.repeat(np.arange(3), 20)
    x = (rng.randn(60, 4) + labels[:, None] * 3).astype(np.float32)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", labels)
    np.save(root / "neg.npy", np.array([0, -1, 5]))
    np.save(root / "sel.npy", np.arange(0, 60, 6))
    np.save(root / "bad.npy", np.array([[1.5]]))

    class OneRow:
        fingerprint = "one-row"

        def __call__(self, batch, *, mask=None, key=None):
            return batch[:, None, :], batch[:, :1] > -1e9

    describe(x, OneRow(), root / "data" / "store", labels=labels, batch_size=16, progress=False)
    return root


def _one_line_error(capsys, argv, *needles):
    try:
        status = cli.main(argv)
    except SystemExit as e:  # argparse's own usage errors exit from parse_args
        status = e.code
    assert status == 2, argv
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1, err  # one line
    assert "Traceback" not in err and "Traceback" not in captured.out
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["select", "{r}/nope.npy", "--size", "5"], ["no such file", "nope.npy"]),
        (["select", "{r}/x.npy", "--size", "abc"], ["--size", "expected a ratio", "10%"]),
        (["select", "{r}/x.npy", "--size", "5%%"], ["--size", "'5%%'"]),
        (["select", "{r}/x.npy", "--size", "3", "--reduce", "pca:abc"], ["--reduce", "pca:C"]),
        (["select", "{r}/x.npy", "--size", "3", "--labels", "{r}/missing.npy"], ["--labels"]),
        (["select", "{r}/x.npy", "--size", "3", "--option", "oops"], ["--option", "NAME=VALUE"]),
        (["split", "{r}/x.npy", "--set", "a=abc"], ["--set 'a=abc'", "SIZE must be"]),
        (["split", "{r}/x.npy", "--set", "a=0.5", "--set", "a=0.5"], ["unique"]),
        (["split", "{r}/x.npy", "--set", "=0.5"], ["--set expects NAME=SIZE"]),
        (["evaluate", "{r}/x.npy", "--labels", "{r}/y.npy", "--selection", "{r}/neg.npy"],
         ["--selection indices must be in [0, 60)", "got -1", "negative"]),
        (["evaluate", "{r}/x.npy", "--labels", "{r}/y.npy", "--selection", "{r}/bad.npy"],
         ["--selection must be a 1-D array of int"]),
        (["evaluate", "{r}/x.npy", "--selection", "{r}/sel.npy"], ["give --labels"]),
        (["verify", "{r}/nowhere"], ["no feature store"]),
        (["frobnicate"], ["invalid choice", "frobnicate"]),
    ],
)  # fmt: skip
def test_user_errors_are_one_line_with_status_2(files, capsys, tmp_path, argv, needles):
    argv = [a.replace("{r}", str(files)) for a in argv]
    if argv[0] in ("select", "split"):
        argv += ["--out", str(tmp_path / "out")]
    _one_line_error(capsys, argv, *needles)


def test_debug_shows_the_traceback(files, tmp_path):
    argv = ["select", str(files / "nope.npy"), "--size", "5", "--out", str(tmp_path / "o")]
    with pytest.raises(FileNotFoundError, match="no such file"):
        cli.main(["--debug", *argv])


def test_size_accepts_percent(files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["select", str(files / "x.npy"), "--size", "5%", "--method", "random", "--out"]
    assert cli.main([*argv, str(out)]) == 0
    assert np.load(out / "selection.npy").size == 3  # 5 % of 60
    assert cli._parse_size("12.5%") == 0.125 and cli._parse_size("100") == 100


def test_split_writes_everything_under_out(files, tmp_path):
    import shutil

    store = shutil.copytree(files / "data", tmp_path / "data") / "store"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = tmp_path / "out"
    argv = ["split", str(store), "--set", "a=50%", "--set", "b=50%", "--method", "random"]
    assert cli.main([*argv, "--out", str(out), "--quiet"]) == 0
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    new = [p for p in after if p not in before]
    assert new and all(p.parts[0] == "out" for p in new), new
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "b.npy", "split.json"]
    assert len(np.load(out / "a.npy")) == 30 and len(np.load(out / "b.npy")) == 30


def test_split_with_groups_nearest_sizes_or_strict_error(files, tmp_path, capsys):
    """60 samples in groups of 4 at 50/50: 30 is not reachable, the nearest (28/32 or 32/28) is
    used and recorded; --strict-sizes turns that into a one-line error."""
    np.save(tmp_path / "g.npy", np.arange(60) // 4)
    argv = ["split", str(files / "x.npy"), "--set", "a=50%", "--set", "b=50%",
            "--method", "random", "--groups", str(tmp_path / "g.npy")]  # fmt: skip
    with pytest.warns(UserWarning, match="nearest"):
        assert cli.main([*argv, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    a, b = np.load(tmp_path / "o" / "a.npy"), np.load(tmp_path / "o" / "b.npy")
    assert sorted([len(a), len(b)]) == [28, 32] and len(np.union1d(a, b)) == 60
    assert set(np.unique(np.arange(60)[a] // 4)).isdisjoint(np.arange(60)[b] // 4)
    manifest = json.loads((tmp_path / "o" / "split.json").read_text())
    assert manifest["group_counts"]["exact"] is False
    _one_line_error(
        capsys, [*argv, "--strict-sizes", "--out", str(tmp_path / "s")], "cannot satisfy"
    )


def test_evaluate_takes_a_store_like_its_vectors(files, tmp_path, capsys):
    common = ["--selection", str(files / "sel.npy"), "--seeds", "2", "--no-measures"]
    assert cli.main(["evaluate", str(files / "x.npy"), "--labels", str(files / "y.npy"),
                     *common, "--out", str(tmp_path / "a")]) == 0  # fmt: skip
    assert cli.main(["evaluate", str(files / "data" / "store"), *common,
                     "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    a = json.loads((tmp_path / "a" / "evaluate.json").read_text())
    b = json.loads((tmp_path / "b" / "evaluate.json").read_text())
    assert a == b


def test_verify_exit_status_and_summary(files, tmp_path, capsys):
    import shutil

    from goldener_jax.store import FeatureStore

    store = shutil.copytree(files / "data" / "store", tmp_path / "s")
    assert cli.main(["verify", str(store)]) == 0
    assert "ok: 4 done batches" in capsys.readouterr().out
    # A batch not done yet: intact but incomplete (once "ok" and 0, though select refuses it).
    undone = shutil.copytree(store, tmp_path / "u")
    (undone / "done" / "c" / "3").unlink()
    assert cli.main(["verify", str(undone)]) == 3
    assert "incomplete: 3 done batches" in capsys.readouterr().out
    chunk = store / FeatureStore.open(store).batch_chunk_keys(2)["vectors"]
    raw = bytearray(chunk.read_bytes())
    raw[10] ^= 1
    chunk.write_bytes(bytes(raw))
    assert cli.main(["verify", str(store), "--json", str(tmp_path / "r.json")]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert "damaged: 1 of 4 done batches (2;" in first and "run describe again" in first
    assert list(json.loads((tmp_path / "r.json").read_text())["damaged"]) == ["2"]
    # The damage also stops a select on the store, in one line.
    _one_line_error(
        capsys,
        ["select", str(store), "--size", "3", "--out", str(tmp_path / "o")],
        "damaged",
        "batch 2",
    )


def test_quiet_turns_progress_off(files, tmp_path, capsys, monkeypatch):
    """--quiet passes progress=False to the library call and silences every tqdm bar."""
    import sys

    select_module = sys.modules["goldener_jax.select"]  # the package's `select` is the function

    seen, real_select = {}, select_module.select

    def fake_select(source, size, *, key, anchors=None, progress=True, **kw):
        from tqdm.auto import tqdm

        seen["progress"] = progress
        for _ in tqdm(range(3), desc="fake-bar"):
            pass
        return real_select(source, size, key=key, anchors=anchors, **kw)

    monkeypatch.setattr(select_module, "select", fake_select)
    argv = ["select", str(files / "x.npy"), "--size", "3", "--method", "random"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert seen["progress"] is True and "fake-bar" in capsys.readouterr().err
    assert cli.main([*argv, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert seen["progress"] is False and "fake-bar" not in capsys.readouterr().err
    assert cli.main([*argv, "--out", str(tmp_path / "c")]) == 0  # restored after --quiet
    assert "fake-bar" in capsys.readouterr().err


# ---------------------------------------------------------------- fuzz


def test_fuzzed_command_line_values_never_give_a_traceback(files, tmp_path_factory):
    """Random --size / --set / --reduce / --option values: a result (status 0) or a one-line
    error (status 2), never a traceback or an internal error."""
    import contextlib
    import io

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    numbers = st.one_of(
        st.integers(-5, 200).map(str),
        st.floats(-2, 3).map(lambda v: f"{v:g}"),
        st.floats(-50, 150).map(lambda v: f"{v:g}%"),
        st.sampled_from(["", "%", "1e400", "nan", "inf", "0x10", " 7", "5 %", "1/2"]),
        st.text(max_size=6),
    )
    out = tmp_path_factory.mktemp("fuzz")

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        kind=st.sampled_from(["size", "set", "reduce", "option"]),
        value=numbers,
        name=st.sampled_from(["train", "a=b", "", "x y"]),
    )
    def run(kind, value, name):
        x = str(files / "x.npy")
        if kind == "size":
            argv = ["select", x, "--size", value, "--method", "random"]
        elif kind == "set":
            argv = ["split", x, "--set", f"{name}={value}", "--method", "random"]
        elif kind == "reduce":
            argv = ["select", x, "--size", "3", "--method", "random", "--reduce", f"pca:{value}"]
        else:
            argv = ["select", x, "--size", "3", "--method", "random", "--option", f"{name}={value}"]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = cli.main([*argv, "--out", str(out), "--quiet"])
            except SystemExit as e:
                status = e.code
        text = err.getvalue()
        assert status in (0, 2), (argv, status, text)
        assert "Traceback" not in text and "internal error" not in text, (argv, text)
        if status == 2:
            assert text.count("\n") == 1, (argv, text)

    run()
