"""Fuzzing the public API with hypothesis: a clear ValueError / TypeError, or a correct result.

Never a deep JAX traceback (any other exception type fails the test; a string is a store path,
so FileNotFoundError is the clear error there), never a silent wrong
answer: a call that returns is checked (size, uniqueness, range, sets that partition the data).
Shapes come from a small fixed set so that compiled programs are reused across examples.
"""

from __future__ import annotations

import math
import warnings

import jax
import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import goldener_jax as gj

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _matrix(kind: str, n: int) -> object:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    if kind == "nan" and n:
        x[n // 2, 1] = np.nan
    elif kind == "inf" and n:
        x[0, 0] = np.inf
    elif kind == "1d":
        return x[:, 0]
    elif kind == "int":
        return (x * 10).astype(np.int64)
    elif kind == "list":
        return x.tolist()
    elif kind == "str":
        return "not an array"
    return x


inputs = st.tuples(
    st.sampled_from(["ok"] * 6 + ["nan", "inf", "1d", "int", "list", "str"]),
    st.sampled_from([0, 1, 5, 24]),
)
sizes = st.one_of(
    st.integers(1, 5),
    st.integers(-3, 30),
    st.sampled_from([0.2, 0.5]),
    st.sampled_from([0.0, 0.1, 0.5, 1.0, 1.5, -0.2, math.nan, math.inf]),
    st.sampled_from(["5%", "abc", None, True]),
)
methods = st.sampled_from(
    ["kcenter", "random", "herding", "kmeans_medoids", "auto", "farthest", "kcentre", 3]
)
keys = st.sampled_from(["key", "key", "key", "prngkey", "prngkey", "int", "none", "float"])


def _key(kind):
    return {
        "key": jax.random.key(0),
        "prngkey": jax.random.PRNGKey(0),
        "int": 0,
        "none": None,
        "float": np.zeros(2, np.float32),
    }[kind]


def _expected_count(size, n):
    if isinstance(size, bool) or size is None or isinstance(size, str):
        return None
    if isinstance(size, int):
        return size if 1 <= size <= n else None
    if 0 < size <= 1:
        return math.ceil(size * n)
    return None


@SETTINGS
@given(inputs, sizes, methods, keys)
def test_select_fuzz(inp, size, method, key_kind):
    kind, n = inp
    x = _matrix(kind, n)
    try:
        sel = gj.select(x, size, method=method, key=_key(key_kind), progress=False)
    except (ValueError, TypeError, FileNotFoundError) as e:  # a path that holds no store
        assert str(e), "an error must say what is wrong"
        event(f"refused: {type(e).__name__}: {str(e)[:50]}")
        return
    event("returned")
    # It returned: the input must have been valid, and the answer right.
    assert kind in ("ok", "int", "list") and n > 0, (kind, n)
    want = _expected_count(size, n)
    assert want is not None, (size, n)
    idx = np.asarray(sel.indices)
    assert idx.shape == (want,)
    assert len(np.unique(idx)) == want and idx.min() >= 0 and idx.max() < n


set_specs = st.sampled_from(
    [
        {"a": 0.5, "b": 0.5},
        {"a": 0.7, "b": 0.2, "c": 0.1},
        {"a": 0.6, "b": 0.6},
        {"a": 1.0},
        {"a": 10, "b": 14},
        {"a": 10, "b": 10},
        {"a": -0.5, "b": 1.5},
        {"": 0.5, "b": 0.5},
        ["a", "b"],
        {"a": "x", "b": 0.5},
    ]
)
label_specs = st.sampled_from(["none", "ok", "short", "nan"])
group_specs = st.sampled_from(["none", "pairs", "nan", "short"])


@SETTINGS
@given(set_specs, label_specs, group_specs, st.sampled_from(["random", "kcenter", "auto"]))
def test_split_fuzz(sets, labels_kind, groups_kind, method):
    n = 24
    x = _matrix("ok", n)
    labels = {
        "none": None,
        "ok": np.arange(n) % 3,
        "short": np.arange(n - 1) % 3,
        "nan": np.where(np.arange(n) == 3, np.nan, np.arange(n) % 3),
    }[labels_kind]
    groups = {
        "none": None,
        "pairs": np.arange(n) // 2,
        "nan": np.where(np.arange(n) == 5, np.nan, np.arange(n) // 2),
        "short": np.arange(n - 2) // 2,
    }[groups_kind]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # nearest group counts: reported
            out = gj.split(
                x,
                sets,
                key=jax.random.key(1),
                method=method,
                labels=labels,
                groups=groups,
                manifest_path=False,
                progress=False,
            )
    except (ValueError, TypeError, FileNotFoundError) as e:  # a path that holds no store
        assert str(e)
        return
    assert labels_kind in ("none", "ok") and groups_kind in ("none", "pairs"), (
        labels_kind,
        groups_kind,
    )
    parts = [np.asarray(v) for v in out.values()]
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(n)), "sets must partition the samples"
    if groups is not None:
        where = {}
        for s, part in enumerate(parts):
            for i in part:
                assert where.setdefault(int(groups[i]), s) == s, "a group was cut"


@SETTINGS
@given(inputs, st.sampled_from(["ok", "short", "negative", "float", "none"]), st.integers(-1, 6))
def test_label_issues_fuzz(inp, labels_kind, k):
    kind, n = inp
    x = _matrix(kind, n)
    m = n
    labels = {
        "ok": np.arange(m) % 2,
        "short": np.arange(max(m - 1, 0)) % 2,
        "negative": -np.ones(m, np.int64),
        "float": np.arange(m) * 0.5,
        "none": None,
    }[labels_kind]
    try:
        issues = gj.label_issues(x, labels, k=k, progress=False)
    except (ValueError, TypeError, FileNotFoundError) as e:  # a path that holds no store
        assert str(e)
        return
    assert kind in ("ok", "int", "list") and labels_kind == "ok" and n > 1, (kind, labels_kind)
    scores = np.asarray(issues.scores)
    assert scores.shape == (n,)
    assert np.all((scores >= 0) & (scores <= 1))
