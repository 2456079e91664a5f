"""Stored pipelines: spec validation, save / load, fresh-process runs, kill -9 and resume."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import _workflow_model as wm
import jax
import jax.numpy as jnp
import pytest

import goldener_jax as gj
from goldener_jax.workflow import Pipeline, SpecError, save_variables

TESTS = os.path.dirname(os.path.abspath(__file__))

SPEC = {
    "version": 1,
    "source": {"kind": "arrays", "path": "pool.npz", "data_key": "image", "label_key": "label"},
    "extractor": {
        "model": "_workflow_model:tiny_cnn",
        "model_args": {"width": 4},
        "variables": "variables",
        "layers": ["conv1", "conv2"],
        "fusion": "concat",
    },
    "store": "store",
    "steps": [
        {"action": "describe", "name": "describe", "args": {"batch_size": 50}},
        {"action": "select", "name": "round1", "args": {"size": 20, "method": "kcenter"}},
        {
            "action": "select",
            "name": "round2",
            "args": {"size": 20, "method": "kcenter", "seed": 1, "anchors": "round1"},
        },
        {"action": "split", "name": "split", "args": {"sets": {"train": 0.8, "val": 0.2}}},
        {"action": "curate", "name": "issues", "args": {"kind": "label_issues", "k": 5}},
        {
            "action": "describe",
            "name": "describe_new",
            "args": {
                "source": {"kind": "arrays", "path": "new.npz", "label_key": "label"},
                "store": "store_new",
                "batch_size": 50,
            },
        },
        {
            "action": "drift",
            "name": "drift",
            "args": {
                "new": "describe_new",
                "num_permutations": 50,
                "monitoring_size": 5,
                "labelled": "round1",
            },
        },
    ],
}
NAMES = [s["name"] for s in SPEC["steps"]]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder with the data, the model's Orbax variables and the saved spec."""
    root = tmp_path_factory.mktemp("project")
    wm.digits_npz(root / "pool.npz", 0, 200)
    wm.digits_npz(root / "new.npz", 1000, 1100)
    save_variables(
        root / "variables", wm.tiny_cnn(4).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    )
    Pipeline(SPEC).save(root / "spec.json")
    return root


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([TESTS, env.get("PYTHONPATH", "")])
    return env


def _cmd(spec, out):
    return [sys.executable, "-m", "goldener_jax.workflow", str(spec), "--out", str(out)]


def _outputs(out) -> dict:
    """Every step output file's bytes (summary.json and in-flight checkpoints aside) and the
    stores' vectors."""
    files = {}
    for name in NAMES:
        for dirpath, dirnames, filenames in os.walk(out / name):
            dirnames[:] = [d for d in dirnames if d != "checkpoint"]
            for f in filenames:
                p = os.path.join(dirpath, f)
                files[os.path.relpath(p, out)] = open(p, "rb").read()
    for store in ("store", "store_new"):
        x, idx = gj.FeatureStore.open(out / store).read_vectors()
        files[store] = (x.tobytes(), idx.tobytes())
    return files


def _summary(out) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_save_load_round_trip(project, tmp_path):
    p = Pipeline.load(project / "spec.json")
    assert p.spec == SPEC
    p.save(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == SPEC


@pytest.fixture(scope="module")
def uninterrupted(project, tmp_path_factory):
    """The spec run once, in this process, start to end."""
    out = tmp_path_factory.mktemp("uninterrupted")
    summary = Pipeline.load(project / "spec.json").run(out)
    return out, summary


def test_fresh_process_runs_match_and_rerun_reuses(project, uninterrupted, tmp_path):
    ref, in_process = uninterrupted
    assert in_process.ran == NAMES and in_process.reused == []
    # the spec loaded in a fresh process, run into another folder: the same outputs
    done = subprocess.run(
        _cmd(project / "spec.json", tmp_path / "b"),
        env=_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    assert _summary(tmp_path / "b")["ran"] == NAMES
    assert "ran 7, reused 0" in done.stdout
    first = _outputs(ref)
    assert _outputs(tmp_path / "b") == first
    # again on the same folder: everything reused, nothing rewritten
    again = Pipeline.load(project / "spec.json").run(tmp_path / "b")
    assert again.reused == NAMES and again.ran == []
    assert _summary(tmp_path / "b")["reused"] == NAMES
    assert _outputs(tmp_path / "b") == first
    # the outputs hold what the library computes directly
    store = gj.FeatureStore.open(ref / "store")
    sel = gj.select(store, 20, method="kcenter", key=jax.random.key(0))
    got = json.loads((ref / "round1" / "selection.json").read_text())
    assert got["indices"] == sel.indices.tolist()
    r2 = json.loads((ref / "round2" / "selection.json").read_text())["indices"]
    assert not set(r2) & set(got["indices"])  # round 2 picks around round 1's
    monitor = json.loads((ref / "drift" / "monitoring.json").read_text())
    assert len(set(monitor["indices"])) == 5


def test_kill_9_after_describe_then_resume(project, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(project / "spec.json", out),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = out / "describe" / "step.json"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists()
    finished = [n for n in NAMES if (out / n / "step.json").exists()]
    assert "drift" not in finished  # killed in the middle
    rerun = Pipeline.load(project / "spec.json").run(out)
    assert rerun.reused == finished and "describe" in rerun.reused
    assert rerun.ran == [n for n in NAMES if n not in finished]
    assert _outputs(out) == _outputs(uninterrupted[0])


def test_changed_step_reruns_it_and_what_depends_on_it(project, tmp_path):
    spec = copy.deepcopy(SPEC)
    spec["steps"] = [spec["steps"][i] for i in (0, 1, 2, 4)]  # describe, round1, round2, issues
    names = ["describe", "round1", "round2", "issues"]
    assert Pipeline(spec, base_dir=project).run(tmp_path / "o").ran == names
    spec["steps"][2]["args"]["size"] = 25  # round2: nothing reads it
    assert Pipeline(spec, base_dir=project).run(tmp_path / "o").ran == ["round2"]
    spec["steps"][1]["args"]["size"] = 15  # round1: round2 takes its picks as anchors
    changed = Pipeline(spec, base_dir=project).run(tmp_path / "o")
    assert changed.ran == ["round1", "round2"] and changed.reused == ["describe", "issues"]
    got = json.loads((tmp_path / "o" / "round1" / "selection.json").read_text())
    assert len(got["indices"]) == 15


def test_a_step_s_bad_argument_names_the_step(project, tmp_path):
    # Sets that do not sum to 1 fail only when the split runs (they need the data); the error
    # once said nothing of which step of the spec held them.
    spec = _spec_of(0, 3)  # describe, split
    spec["steps"][1]["args"]["sets"] = {"train": 0.7, "val": 0.2}
    with pytest.raises(ValueError, match=r"^steps\[1\] \('split', split\): set ratios must sum"):
        Pipeline(spec, base_dir=project).run(tmp_path / "o")


def _with(path, value):
    spec = copy.deepcopy(SPEC)
    *parents, last = path
    obj = spec
    for p in parents:
        obj = obj[p]
    if value is KeyError:
        del obj[last]
    else:
        obj[last] = value
    return spec


@pytest.mark.parametrize(
    "path, value, field",
    [
        (("colour",), "blue", "spec.colour"),
        (("version",), 2, "version"),
        (("version",), KeyError, "spec.version"),
        (("source", "kind"), "csv", "source.kind"),
        (("source", "pth"), "x.npz", "source.pth"),
        (("extractor", "fusoin"), "concat", "extractor.fusoin"),
        (("extractor", "model"), "no_such_module_h9:f", "extractor.model"),
        (("extractor", "model"), "_workflow_model:no_such_factory", "extractor.model"),
        (("extractor", "model"), "_workflow_model:not_a_factory", "extractor.model"),
        (("extractor", "model"), "_workflow_model", "extractor.model"),
        (("steps", 1, "action"), "train", "steps[1].action"),
        (("steps", 1, "name"), "describe", "steps[1].name"),
        (("steps", 1, "args", "sise"), 3, "steps[1].args.sise"),
        (("steps", 1, "args", "size"), KeyError, "steps[1].args.size"),
        (("steps", 2, "args", "anchors"), "split", "steps[2].args.anchors"),
        (("steps", 4, "args", "kind"), "spellcheck", "steps[4].args.kind"),
        (("steps", 6, "args", "new"), "round1", "steps[6].args.new"),
        (("steps", 6, "args", "length_scale"), float("nan"), "spec"),
        (("steps", 1, "args", "seed"), "zero", "steps[1].args.seed"),
        (("steps",), [{"action": "select", "name": "s", "args": {"size": 1}}], "steps[0].action"),
    ],
)
def test_bad_spec_is_refused_naming_the_field(path, value, field):
    with pytest.raises(SpecError) as err:
        Pipeline(_with(path, value))
    assert str(err.value).startswith(f"{field}:"), str(err.value)


def test_unknown_keys_and_version_from_a_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        Pipeline.load(tmp_path / "bad.json")
    (tmp_path / "v.json").write_text(json.dumps({**SPEC, "version": 0}))
    with pytest.raises(SpecError, match=r"^version: 0 is not supported"):
        Pipeline.load(tmp_path / "v.json")


def test_variables_not_matching_the_model(project, tmp_path):
    spec = _with(("extractor", "model_args"), {"width": 6})  # the saved variables have width 4
    with pytest.raises(
        SpecError,
        match=r"^extractor.variables: .params/conv1/bias. has shape \(4,\).*expects \(6,\)",
    ):
        Pipeline(spec, base_dir=project).run(tmp_path / "o")
    assert not (tmp_path / "o" / "describe" / "step.json").exists()
    spec = _with(("extractor", "variables"), "missing_dir")
    with pytest.raises(SpecError, match=r"^extractor.variables: no Orbax checkpoint"):
        Pipeline(spec, base_dir=project).run(tmp_path / "o")
    spec = _with(("source", "path"), "nowhere.npz")
    with pytest.raises(SpecError, match=r"^source.path: no such file"):
        Pipeline(spec, base_dir=project).run(tmp_path / "o")


def _spec_of(*steps):
    spec = copy.deepcopy(SPEC)
    spec["steps"] = [spec["steps"][i] for i in steps]
    return spec


def _flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(data)


def test_damaged_or_deleted_store_is_described_again_and_readers_reused(project, tmp_path):
    """describe/step.json is not taken at its word: a store deleted or missing a chunk is
    described again (the readers are reused: the same content), and a chunk failing its
    checksum, found by the step that reads it, is repaired by describe before that step reruns."""
    out = tmp_path / "o"
    pipeline = Pipeline(_spec_of(0, 1), base_dir=project)  # describe, round1
    assert pipeline.run(out).ran == ["describe", "round1"]
    vectors = gj.FeatureStore.open(out / "store").read_vectors()[0]
    picks = (out / "round1" / "selection.json").read_bytes()
    record = json.loads((out / "describe" / "step.json").read_text())

    def same_as_first():
        store = gj.FeatureStore.open(out / "store")
        assert store.verify().ok
        assert store.read_vectors()[0].tobytes() == vectors.tobytes()
        assert (out / "round1" / "selection.json").read_bytes() == picks
        assert json.loads((out / "describe" / "step.json").read_text()) == record

    # A flipped byte: the cheap check passes, round2 (new) reads the store and finds it; the
    # describe step runs again (it re-does the damaged batch) and round2 reruns on it.
    _flip_a_byte(out / "store" / "vectors" / "c" / "1" / "0")
    with pytest.warns(RuntimeWarning, match=r"step 'round2': store .* is damaged"):
        again = Pipeline(_spec_of(0, 1, 2), base_dir=project).run(out)
    assert again.ran == ["describe", "round2"] and again.reused == ["round1"]
    same_as_first()
    round2 = (out / "round2" / "selection.json").read_bytes()
    # A chunk deleted, then the whole store: described again, nothing else recomputed.
    for damage in ("chunk", "store"):
        if damage == "chunk":
            (out / "store" / "sample_idx" / "c" / "2").unlink()
        else:
            shutil.rmtree(out / "store")
        with pytest.warns(RuntimeWarning, match=r"describe step 'describe': .*describing again"):
            again = Pipeline(_spec_of(0, 1, 2), base_dir=project).run(out)
        assert again.ran == ["describe"] and again.reused == ["round1", "round2"]
        same_as_first()
        assert (out / "round2" / "selection.json").read_bytes() == round2


def test_store_that_describe_cannot_repair_names_the_path_to_delete(project, tmp_path, monkeypatch):
    out = tmp_path / "o"
    Pipeline(_spec_of(0), base_dir=project).run(out)
    calls = []

    def damaged(self, args, stores, *rest):
        calls.append(1)
        raise gj.StoreCorruptError(
            f"store {stores['describe']!r} is damaged: the 'vectors' chunk of batch 1 cannot be "
            "read (DATA_LOSS); run describe again: it re-does damaged batches",
            batches=[1],
        )

    monkeypatch.setattr(Pipeline, "_select", damaged)
    with pytest.warns(RuntimeWarning, match="running describe step"):
        with pytest.raises(gj.StoreCorruptError) as info:
            Pipeline(_spec_of(0, 1), base_dir=project).run(out)
    assert len(calls) == 2  # tried once more after describe ran again
    message = str(info.value)
    assert message.startswith("step 'round1': store ")
    assert f"could not repair it: delete {str(out / 'store')!r} and run the pipeline" in message
    assert "run describe again" not in message and info.value.batches == [1]


def test_changed_describe_step_replaces_its_own_store_not_another(project, tmp_path):
    out = tmp_path / "o"
    spec = _spec_of(0, 1)
    Pipeline(spec, base_dir=project).run(out)
    spec["steps"][0]["args"]["batch_size"] = 40  # a store of another layout
    assert Pipeline(spec, base_dir=project).run(out).ran == ["describe", "round1"]
    assert gj.FeatureStore.open(out / "store").batch_size == 40
    # A pipeline run into a new folder, naming that store (which it did not write) for a step
    # of another batch size: refused, the store left as it is.
    spec["steps"][0]["args"]["batch_size"] = 50
    spec["store"] = str(out / "store")
    with pytest.raises(gj.StoreMismatchError, match=r"the pipeline did not write .*name another"):
        Pipeline(spec, base_dir=project).run(tmp_path / "other")
    assert gj.FeatureStore.open(out / "store").batch_size == 40
