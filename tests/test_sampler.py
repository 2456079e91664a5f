"""Cluster-balanced batch sampler against a separate plain-loop reference of the same rules."""

import jax
import numpy as np
import pytest

from goldener_jax.refine import ClusterBatchSampler, SamplerState

# Uneven clusters with non-contiguous ids and two rows that are never drawn (-1).
SIZES = {5: 1, 2: 3, 9: 5, 40: 2, 7: 7, 11: 4}


def _assignment(seed=0):
    a = np.concatenate([np.full(s, c) for c, s in SIZES.items()] + [np.array([-1, -1])])
    return np.random.default_rng(seed).permutation(a)


def _words(key):
    return [int(w) for w in np.asarray(jax.random.key_data(key)).ravel()]


def reference(assignment, words, batch_size, on_end, drop_last):
    """The rules of the module doc, written as plain loops over Python lists."""

    def rng(*tag):
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([*words, *tag])))

    ids = sorted({int(a) for a in assignment if a >= 0})
    members = [[i for i, a in enumerate(assignment) if a == cid] for cid in ids]
    n_c = len(ids)
    pos, passes = [0] * n_c, [0] * n_c
    active, used = [True] * n_c, [False] * n_c
    cycle, drawn, out = 0, set(), []
    while True:
        alive = sum(active)
        want = batch_size if alive >= batch_size else (0 if drop_last else alive)
        if want == 0:
            break
        batch = []
        while len(batch) < want:
            for c in rng(0, cycle).permutation(n_c).tolist():
                if len(batch) < want and active[c] and c not in drawn and c not in batch:
                    batch.append(c)
                    drawn.add(c)
            if len(batch) < want:
                cycle, drawn = cycle + 1, set()
        rows, stop = [], False
        for c in batch:
            queue = [members[c][j] for j in rng(1, c, passes[c]).permutation(len(members[c]))]
            rows.append(queue[pos[c]])
            pos[c] += 1
            if pos[c] == len(members[c]):
                used[c] = True
                if on_end == "stop":
                    stop = True
                elif on_end == "restart":
                    passes[c], pos[c] = passes[c] + 1, 0
                else:
                    active[c] = False
        out.append(rows)
        if stop or (on_end == "restart" and all(used)) or (on_end == "exclude" and not any(active)):
            break
    return out


CASES = [
    (on_end, b, drop_last)
    for on_end in ("restart", "stop", "exclude")
    for b in (1, 2, 4, 6)
    for drop_last in (True, False)
    if on_end == "exclude" or drop_last
]


@pytest.mark.parametrize("on_end,batch_size,drop_last", CASES)
def test_matches_reference_and_distinct_clusters(on_end, batch_size, drop_last):
    a = _assignment()
    key = jax.random.key(3)
    s = ClusterBatchSampler(a, key, batch_size=batch_size, on_end=on_end, drop_last=drop_last)
    got = [b.tolist() for b in s]
    want = reference(a, _words(key), batch_size, on_end, drop_last)
    assert got == want
    assert s.num_batches() == len(got)
    for b in got:
        clusters = a[b]
        assert len(set(clusters.tolist())) == len(b), "a cluster twice in one batch"
        assert (clusters >= 0).all()
        if drop_last or on_end != "exclude":
            assert len(b) == batch_size
    flat = np.concatenate(got)
    drawable = np.flatnonzero(a >= 0)
    if on_end == "stop":
        assert len(np.unique(flat)) == len(flat), "stop must never repeat a row"
        # It stops right after the batch in which the first cluster ran out.
        drawn = np.bincount(a[flat], minlength=max(SIZES) + 1)
        before = np.bincount(a[flat[: -len(got[-1])]], minlength=max(SIZES) + 1)
        assert any(drawn[c] == size for c, size in SIZES.items())
        assert all(before[c] < size for c, size in SIZES.items())
    elif on_end == "exclude":
        assert len(np.unique(flat)) == len(flat)
        if not drop_last:
            assert sorted(flat.tolist()) == drawable.tolist(), "every row exactly once"
    else:
        assert set(flat.tolist()) == set(drawable.tolist()), "restart uses every cluster up"


def test_cycles_prefer_undrawn_clusters():
    """With batch_size dividing C, each run of C / b batches covers every cluster once."""
    a = np.repeat(np.arange(6), 10)
    s = ClusterBatchSampler(a, jax.random.key(0), batch_size=3)
    batches = list(s)
    for i in range(0, len(batches) - 1, 2):
        assert sorted(a[np.concatenate(batches[i : i + 2])].tolist()) == list(range(6))


@pytest.mark.parametrize("on_end", ["restart", "stop", "exclude"])
def test_resume_from_step_and_state(on_end):
    a = _assignment(1)
    key = jax.random.key(7)
    full = [b.tolist() for b in ClusterBatchSampler(a, key, batch_size=2, on_end=on_end)]
    assert len(full) >= 3
    for step in (0, 1, len(full) // 2, len(full) - 1, len(full), len(full) + 5):
        resumed = ClusterBatchSampler(a, key, batch_size=2, on_end=on_end, start_step=step)
        assert [b.tolist() for b in resumed] == full[step:]
    # A state saved as JSON mid-run continues exactly.
    sampler = ClusterBatchSampler(a, key, batch_size=2, on_end=on_end)
    it = sampler.iter_with_state()
    for _ in range(2):
        _, state = next(it)
    saved = SamplerState.from_json(state.to_json())
    again = ClusterBatchSampler(a, key, batch_size=2, on_end=on_end, start_state=saved)
    assert [b.tolist() for b in again] == full[2:]


def test_deterministic_for_a_key():
    a = _assignment()
    one = [b.tolist() for b in ClusterBatchSampler(a, jax.random.key(1), batch_size=3)]
    two = [b.tolist() for b in ClusterBatchSampler(a, jax.random.key(1), batch_size=3)]
    other = [b.tolist() for b in ClusterBatchSampler(a, jax.random.key(2), batch_size=3)]
    assert one == two and one != other


@pytest.mark.parametrize("count", [2, 3, 6])
def test_hosts_get_disjoint_slices_of_the_global_batches(count):
    a = _assignment()
    key = jax.random.key(5)
    single = [b.tolist() for b in ClusterBatchSampler(a, key, batch_size=6)]
    hosts = [
        [
            b.tolist()
            for b in ClusterBatchSampler(a, key, batch_size=6, process_index=p, process_count=count)
        ]
        for p in range(count)
    ]
    assert all(len(h) == len(single) for h in hosts)
    for step, batch in enumerate(single):
        parts = [h[step] for h in hosts]
        assert all(len(p) == 6 // count for p in parts)
        assert sum(parts, []) == batch  # disjoint and their union is the batch


def test_sample_ids_and_clusters_object():
    a = _assignment()
    ids = np.arange(len(a)) * 10 + 3

    class Clusters:
        assignment = a
        sample_ids = ids

    rows = [b.tolist() for b in ClusterBatchSampler(a, jax.random.key(0), batch_size=2)]
    got = [b.tolist() for b in ClusterBatchSampler(Clusters(), jax.random.key(0), batch_size=2)]
    assert got == [[int(ids[r]) for r in b] for b in rows]


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"batch_size": 7}, ValueError, "batch_size must be in \\[1, 6\\]"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"on_end": "again"}, ValueError, "on_end must be one of"),
        ({"batch_size": 4, "process_count": 3}, ValueError, "multiple of process_count"),
        ({"process_index": 2, "process_count": 2}, ValueError, "process_index"),
        ({"start_step": -1}, ValueError, "start_step"),
        ({"key": 0}, TypeError, "key must be a jax.random.key"),
        ({"assignment": np.zeros(4)}, TypeError, "integer cluster ids"),
        ({"assignment": -np.ones(4, int)}, ValueError, "nothing to draw"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = {"assignment": _assignment(), "key": jax.random.key(0), **kwargs}
    with pytest.raises(error, match=match):
        ClusterBatchSampler(args.pop("assignment"), args.pop("key"), **args)
