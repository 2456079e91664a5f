"""Rounds: the recorded labelling rounds of a pool (goldener_jax/rounds.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from goldener_jax.rounds import Rounds, RoundsConflictError, RoundsError
from goldener_jax.select import select

N, D = 120, 6


def _x(seed=0):
    return np.random.RandomState(seed).randn(N, D).astype(np.float32)


def _truth(n=N):
    return np.arange(n) % 3  # ground-truth labels "given by the annotator"


def _three_rounds(path, x):
    """Three rounds with labels, the way a user runs them."""
    r = Rounds.open(x, path=path)
    y = _truth()
    for i, size in enumerate((0.05, 4, 0.05)):
        sel = r.select(size, key=jax.random.key(i), progress=False)
        r.label(sel.indices, y[sel.indices])
    return r


def test_round_trip_records_what_select_did(tmp_path):
    x, y = _x(), _truth()
    path = tmp_path / "r.json"
    r = _three_rounds(path, x)
    # Reference: select called by hand with the labelled samples as anchors, no labels.
    anchors = np.zeros(0, np.int64)
    for i, (size, count) in enumerate(((0.05, 6), (4, 4), (0.05, 6))):
        ref = select(
            x,
            size,
            size_of="pool",  # a float is a share of the whole pool: ceil(0.05 x 120) = 6
            key=jax.random.key(i),
            anchors=anchors if anchors.size else None,
            labels=False,
            progress=False,
        )
        rnd = r.history[i]
        np.testing.assert_array_equal(rnd.indices, ref.indices)
        assert len(ref) == count
        assert rnd.round == i and rnd.count == count and rnd.anchors == anchors.size
        assert rnd.asked == {"size": size, "method": "auto", "method_options": None}
        assert rnd.method == ref.config["method"] and rnd.options == ref.config["options"]
        assert rnd.key == [0, i]
        assert rnd.config == json.loads(json.dumps(ref.config))
        anchors = np.concatenate([anchors, ref.indices])
    assert np.unique(anchors).size == anchors.size == 16
    np.testing.assert_array_equal(r.selected, anchors)
    np.testing.assert_array_equal(r.labelled.indices, anchors)
    np.testing.assert_array_equal(r.labelled.labels, y[anchors])
    assert r.pending.size == 0
    # Reopened: the same record, read from the JSON file.
    again = Rounds.open(x, path=path)
    assert again.history == r.history and again.history[1] != r.history[2]
    np.testing.assert_array_equal(again.labelled.indices, r.labelled.indices)
    np.testing.assert_array_equal(again.labelled.labels, r.labelled.labels)
    doc = json.loads(path.read_text())
    assert doc["revision"] == 5  # created by the first select, then 5 more saves
    assert [e["round"] for e in doc["labels"]] == [0] * 6 + [1] * 4 + [2] * 6
    assert not [p for p in os.listdir(tmp_path) if p != "r.json"]  # no temporary file left


def test_anchors_really_passed_kcenter_matches_numpy(tmp_path):
    """With method="kcenter", each pick is the sample farthest from the labelled and picked ones
    (a NumPy brute-force greedy k-center from those anchors): labelled samples steer the round
    and are never picked again."""
    x = _x(1)
    r = Rounds.open(x, path=tmp_path / "r.json")
    r.label([3, 50, 77], ["a", "b", "a"], allow_unselected=True)
    first = r.select(5, key=jax.random.key(0), method="kcenter", progress=False)
    r.label(first.indices[:2], ["c", "c"])  # the rest stays pending: still never picked again
    second = r.select(5, key=jax.random.key(1), method="kcenter", progress=False)

    def greedy(anchors, k):
        d = np.min(np.linalg.norm(x[:, None] - x[anchors][None], axis=-1), axis=1)
        out = []
        for _ in range(k):
            i = int(np.argmax(d))
            out.append(i)
            d = np.minimum(d, np.linalg.norm(x - x[i], axis=1))
        return out

    assert first.indices.tolist() == greedy([3, 50, 77], 5)
    assert second.indices.tolist() == greedy([3, 50, 77, *first.indices.tolist()], 5)
    assert not set(second.indices.tolist()) & {3, 50, 77, *first.indices.tolist()}
    assert r.history[1].anchors == 8
    np.testing.assert_array_equal(r.pending, np.r_[first.indices[2:], second.indices])


def test_resume_in_a_fresh_process(tmp_path):
    """A new process reads the JSON, sees the history and continues: its round equals the round
    this process gets from the same file."""
    x = _x(2)
    np.save(tmp_path / "x.npy", x)
    path = tmp_path / "r.json"
    _three_rounds(path, x)
    script = textwrap.dedent(
        f"""
        import json, jax, numpy as np
        from goldener_jax.rounds import Rounds
        r = Rounds.open(np.load({str(tmp_path / "x.npy")!r}), path={str(path)!r})
        print(json.dumps({{"n": len(r.history), "labelled": r.labelled.indices.tolist(),
                          "labels": r.labelled.labels.tolist()}}))
        sel = r.select(0.05, key=jax.random.key(7), method="kcenter", progress=False)
        print(json.dumps(sel.indices.tolist()))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    ).stdout.splitlines()
    seen, picked = json.loads(out[-2]), json.loads(out[-1])
    here = Rounds.open(x, path=path)
    assert seen["n"] == 3 and len(here.history) == 4  # the child read 3 rounds and saved one
    assert seen["labelled"] == here.labelled.indices.tolist()
    assert seen["labels"] == here.labelled.labels.tolist()
    assert here.history[3].indices.tolist() == picked and here.history[3].method == "kcenter"
    ref = select(
        x, 6, key=jax.random.key(7), method="kcenter", anchors=here.selected[:16], progress=False
    )
    assert picked == ref.indices.tolist()


def _edit(doc, where, value):
    *head, last = where
    d = doc
    for k in head:
        d = d[k]
    if value is _DROP:
        del d[last]
    else:
        d[last] = value


_DROP = object()
BAD = [
    (("version",), 2, "version: this goldener-jax reads version 1, got 2"),
    (("format",), "x", "format: expected 'goldener-jax rounds'"),
    (("pool", "num_samples"), "120", "pool.num_samples: expected an int"),
    (("pool", "kind"), "list", "pool.kind: expected 'store' or 'array'"),
    (
        ("rounds", 1, "indices", 2),
        N + 5,
        "rounds[1].indices[2]: expected a sample index in [0, 120)",
    ),
    (("rounds", 1, "indices", 2), True, "rounds[1].indices[2]: expected a sample index"),
    (("rounds", 0, "count"), 99, "rounds[0].indices: expected 99 indices (count), got 6"),
    (("rounds", 2, "round"), 5, "rounds[2].round: expected 2"),
    (("rounds", 0, "time"), "yesterday", "rounds[0].time: expected an ISO 8601 time"),
    (("rounds", 0, "key"), [0, "a"], "rounds[0].key[1]: expected an int"),
    (("rounds", 0, "method"), _DROP, "rounds[0]: missing field(s) ['method']"),
    (("rounds", 0, "surprise"), 1, "rounds[0]: unknown field(s) ['surprise']"),
    (("rounds", 1, "asked", "size"), "big", "rounds[1].asked.size: expected a number"),
    (("labels", 0, "label"), 1.5, "labels[0].label: expected an int or a string, got 1.5"),
    (("labels", 1, "index"), -1, "labels[1].index: expected a sample index in [0, 120)"),
    (("labels", 0, "round"), 7, "labels[0].round: expected null or a round in [0, 3)"),
    (("labels", 0, "round"), 1, "is not a pick of round 1"),
    (("revision",), None, "revision: expected an int"),
]


@pytest.mark.parametrize("where,value,message", BAD, ids=[m.split(":")[0] for *_, m in BAD])
def test_bad_field_is_named(tmp_path, where, value, message):
    x = _x()
    path = tmp_path / "r.json"
    _three_rounds(path, x)
    doc = json.loads(path.read_text())
    _edit(doc, list(where), value)
    path.write_text(json.dumps(doc))
    with pytest.raises(RoundsError) as e:
        Rounds.open(x, path=path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_duplicate_pick_and_label_and_bad_json(tmp_path):
    x = _x()
    path = tmp_path / "r.json"
    _three_rounds(path, x)
    good = json.loads(path.read_text())
    doc = json.loads(json.dumps(good))
    doc["rounds"][1]["indices"][0] = doc["rounds"][0]["indices"][0]
    path.write_text(json.dumps(doc))
    with pytest.raises(RoundsError, match=r"rounds\[1\]\.indices\[0\]: sample \d+ was already"):
        Rounds.open(x, path=path)
    doc = json.loads(json.dumps(good))
    doc["labels"].append(dict(doc["labels"][0]))
    path.write_text(json.dumps(doc))
    with pytest.raises(RoundsError, match=r"labels\[16\]\.index: sample \d+ is listed twice"):
        Rounds.open(x, path=path)
    path.write_text(json.dumps(good)[:-20])
    with pytest.raises(RoundsError, match="is not valid JSON"):
        Rounds.open(x, path=path)


def test_other_pool_is_refused(tmp_path):
    path = tmp_path / "r.json"
    _three_rounds(path, _x())
    with pytest.raises(RoundsError, match=r"pool\.num_samples: .*120.*100"):
        Rounds.open(_x()[:100], path=path)
    with pytest.raises(RoundsError, match=r"pool\.dim: .*6.*4"):
        Rounds.open(_x()[:, :4], path=path)
    # Same shape, other vectors: caught by the data fingerprint, the round is not recorded.
    r = Rounds.open(_x(9), path=path)
    with pytest.raises(RoundsError, match="vectors changed since round 2"):
        r.select(3, key=jax.random.key(0), progress=False)
    assert len(Rounds.open(_x(), path=path).history) == 3


LABEL_ERRORS = [
    (lambda r, s: r.label([int(np.setdiff1d(np.arange(N), s)[0])], [0]), ValueError, "not picked"),
    (lambda r, s: r.label(s[:2], [1]), ValueError, "one label per index"),
    (lambda r, s: r.label([s[0], s[0]], [1, 1]), ValueError, "distinct"),
    (lambda r, s: r.label([N], [1]), ValueError, r"sample indices in \[0, 120\)"),
    (lambda r, s: r.label(s[:1], [True]), TypeError, "ints or strings, got the bool"),
    (lambda r, s: r.label(s[:1], [0.5]), TypeError, r"labels\[0\]: labels must be ints or str"),
    (lambda r, s: r.label([0.5], [1]), TypeError, "1-D array of sample indices"),
    (lambda r, s: r.label(s[:1], [2]), ValueError, "already labelled 0, got 2; pass relabel"),
    (lambda r, s: r.select(3, key=jax.random.key(0), anchors=[1]), TypeError, "anchors"),
    (lambda r, s: r.select(3, key=jax.random.key(0), labels=_truth()), TypeError, "labels"),
    (lambda r, s: r.select(0.0, key=jax.random.key(0)), ValueError, "size must be"),
    (lambda r, s: r.select(3, key=jax.random.key(0), size_of="total"), TypeError, "size_of"),
    (lambda r, s: r.select("3", key=jax.random.key(0)), TypeError, "size must be"),
    (lambda r, s: r.select(True, key=jax.random.key(0)), TypeError, "size must be"),
]


@pytest.mark.parametrize("call,error,message", LABEL_ERRORS, ids=[m for *_, m in LABEL_ERRORS])
def test_bad_calls_raise_and_change_nothing(tmp_path, call, error, message):
    x = _x()
    path = tmp_path / "r.json"
    r = Rounds.open(x, path=path)
    sel = r.select(4, key=jax.random.key(0), progress=False)
    r.label(sel.indices[:1], [0])
    before = path.read_text()
    with pytest.raises(error, match=message):
        call(r, sel.indices)
    assert path.read_text() == before


def test_label_rules(tmp_path):
    r = Rounds.open(_x(), path=tmp_path / "r.json")
    sel = r.select(4, key=jax.random.key(0), progress=False)
    i = sel.indices
    r.label(i[:2], np.array([5, 6]))
    r.label(i[:2], [5, 6])  # the same labels again: nothing changes
    assert json.loads((tmp_path / "r.json").read_text())["revision"] == 1
    r.label(i[:1], [7], relabel=True)
    r.label([100], ["x"], allow_unselected=True)
    lab = Rounds.open(_x(), path=tmp_path / "r.json").labelled
    assert lab.indices.tolist() == [int(i[0]), int(i[1]), 100]
    assert lab.labels.tolist() == [7, 6, "x"]  # each as recorded (not all made strings)
    assert lab.labels.dtype == object
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [(e["label"], e["round"]) for e in doc["labels"]] == [(7, 0), (6, 0), ("x", None)]


def test_float_size_is_a_share_of_the_whole_pool(tmp_path):
    r = Rounds.open(_x(), path=tmp_path / "r.json")
    for k in range(3):
        sel = r.select(0.1, key=jax.random.key(k), progress=False)
        assert len(sel) == 12  # ceil(0.1 x 120) every round, not 10% of what is left
    assert r.selected.size == 36 and np.unique(r.selected).size == 36


def test_numpy_float_size_is_the_decimal_it_prints(tmp_path):
    # np.float32(0.1) widened to 0.10000000149... once picked ceil(12.0000002) = 13 of 120.
    r = Rounds.open(_x(), path=tmp_path / "r.json")
    assert len(r.select(np.float32(0.1), key=jax.random.key(0), progress=False)) == 12
    assert r.history[0].asked["size"] == 0.1


def test_concurrent_writer_is_detected(tmp_path):
    path = tmp_path / "r.json"
    a = Rounds.open(_x(), path=path)
    a.select(3, key=jax.random.key(0), progress=False)
    b = Rounds.open(_x(), path=path)
    a.select(3, key=jax.random.key(1), progress=False)
    with pytest.raises(RoundsConflictError, match="changed by someone else"):
        b.select(3, key=jax.random.key(2), progress=False)
    assert len(b.history) == 1  # b's failed round was not kept in memory either
    assert len(Rounds.open(_x(), path=path).history) == 2


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    r = Rounds.open(_x(), path=path)
    r.select(3, key=jax.random.key(0), progress=False)
    before = path.read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        r.select(3, key=jax.random.key(1), progress=False)
    monkeypatch.undo()
    assert path.read_text() == before and os.listdir(tmp_path) == ["r.json"]
    assert len(r.history) == 1
    r.select(3, key=jax.random.key(1), progress=False)  # and the object still works
    assert len(Rounds.open(_x(), path=path).history) == 2


def test_store_pool_default_path_and_labels_unseen(tmp_path):
    """On a store the file sits next to it, and the store's labels never reach the selection."""
    import _stores

    store = _stores.make(str(tmp_path / "store"), groups=np.arange(_stores.NUM_SAMPLES))
    r = Rounds.open(store)
    assert r.path == str(tmp_path / "store") + ".rounds.json"
    sel = r.select(4, key=jax.random.key(3), progress=False)
    assert sel.label_counts is None  # a store with labels, not used
    ref = select(store, 4, key=jax.random.key(3), labels=False, progress=False)
    np.testing.assert_array_equal(sel.indices, ref.indices)
    again = Rounds.open(str(tmp_path / "store"))  # by path
    assert again.history[0].indices.tolist() == sel.indices.tolist()
    assert json.loads(open(r.path).read())["pool"]["kind"] == "store"
    with pytest.raises(ValueError, match="path is required for an array"):
        Rounds.open(_x())
