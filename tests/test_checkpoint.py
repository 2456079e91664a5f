"""Checkpointer / resumable_loop on Orbax: cadence, retention, resume == uninterrupted, refusal."""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goldener_jax.checkpoint import Checkpointer, CheckpointMismatchError, resumable_loop


class State(NamedTuple):
    x: jax.Array
    key: jax.Array  # raw key data
    count: jax.Array


def _init() -> State:
    return State(
        x=jnp.zeros((5,), jnp.float32),
        key=jax.random.key_data(jax.random.key(0)),
        count=jnp.zeros((), jnp.int32),
    )


@jax.jit
def _step(state: State, step) -> State:
    key = jax.random.wrap_key_data(state.key)
    key, sub = jax.random.split(jax.random.fold_in(key, step))
    x = state.x * 0.9 + jax.random.normal(sub, state.x.shape)
    return State(x, jax.random.key_data(key), state.count + 1)


CONFIG = {"kernel": "toy", "k": 5, "metric": "euclidean"}


class Interrupt(Exception):
    pass


def _bits(state: State) -> list[bytes]:
    return [np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(state)]


def test_resume_equals_uninterrupted(tmp_path):
    reference = resumable_loop(_step, _init(), 20, tmp_path / "ref", config=CONFIG, every_steps=3)

    calls = []

    def crashing(state, step):
        if step == 11:
            raise Interrupt
        calls.append(step)
        return _step(state, step)

    with pytest.raises(Interrupt):
        resumable_loop(crashing, _init(), 20, tmp_path / "run", config=CONFIG, every_steps=3)
    with Checkpointer(tmp_path / "run", CONFIG, every_steps=3) as ckpt:
        assert ckpt.latest_step == 9
    calls.clear()
    resumed = resumable_loop(
        _counting(calls), _init(), 20, tmp_path / "run", config=CONFIG, every_steps=3
    )
    assert calls[0] == 9 and len(calls) == 11  # steps 9..19 only: work since the last save
    assert _bits(resumed) == _bits(reference)
    assert isinstance(resumed, State) and isinstance(resumed.x, jax.Array)


def _counting(calls):
    def fn(state, step):
        calls.append(step)
        return _step(state, step)

    return fn


def test_keeps_last_few_and_restores_latest(tmp_path):
    with Checkpointer(tmp_path, CONFIG, every_steps=2, keep=2, async_save=False) as ckpt:
        state, start = ckpt.restore(_init())
        assert start == 0
        for step in range(start, 9):
            state = _step(state, step)
            ckpt.maybe_save(step + 1, state)
        assert ckpt.all_steps() == [6, 8]
        state = _step(state, 9)  # not saved
    with Checkpointer(tmp_path, CONFIG, every_steps=2) as ckpt:
        restored, step = ckpt.restore(_init())
        assert step == 8
        assert _bits(restored) == _bits(_step_to(8))
        assert _bits(restored) != _bits(state)


def _step_to(n: int) -> State:
    state = _init()
    for step in range(n):
        state = _step(state, step)
    return state


def test_every_seconds_with_a_fake_clock(tmp_path):
    now = [0.0]
    with Checkpointer(tmp_path, CONFIG, every_seconds=10, clock=lambda: now[0]) as ckpt:
        state = _init()
        saved = []
        for step in range(6):
            now[0] += 4.0
            state = _step(state, step)
            if ckpt.maybe_save(step + 1, state):
                saved.append(step + 1)
        assert saved == [3, 6]  # 12 s and 24 s after the start


def test_refuses_other_config(tmp_path):
    resumable_loop(_step, _init(), 4, tmp_path, config=CONFIG, every_steps=2)
    other = {**CONFIG, "k": 6}
    with pytest.raises(CheckpointMismatchError, match=r"k: 5 in the checkpoint, 6 requested") as e:
        Checkpointer(tmp_path, other, every_steps=2)
    # Checkpointer and resumable_loop take overwrite: the advice names it.
    assert str(e.value).endswith("use another directory or pass overwrite=True")
    assert e.value.differences == ["k: 5 in the checkpoint, 6 requested"]
    with Checkpointer(tmp_path, other, every_steps=2, overwrite=True) as ckpt:
        assert ckpt.latest_step is None
        assert ckpt.restore(_init())[1] == 0


@pytest.mark.parametrize("call", ["select", "split"])
def test_select_and_split_refusal_names_their_checkpoint_dir_not_overwrite(tmp_path, call):
    """select / split take no overwrite and keep their checkpoints in sub-directories: the
    refusal of another request names the user's checkpoint_dir and what to do with it."""
    import goldener_jax as gj

    x = np.random.RandomState(0).rand(60, 4).astype(np.float32)
    ckpt = tmp_path / "ck"

    def run(seed):
        kw = dict(key=jax.random.key(seed), checkpoint_dir=ckpt, progress=False)
        if call == "select":
            return gj.select(x, 5, method="kcenter", **kw)
        return gj.split(x, {"a": 0.5, "b": 0.5}, method="kcenter", manifest_path=False, **kw)

    run(0)
    with pytest.raises(CheckpointMismatchError) as e:
        run(1)
    message = str(e.value)
    assert message.startswith(f"checkpoint_dir {str(ckpt)!r} holds the progress of another ")
    if call == "select":
        assert "(key: [0, 0] in the checkpoint, [0, 1] requested)" in message
    else:  # each set draws with a key derived from the split's
        assert re.search(r"\(key: \[\d+, \d+\] in the checkpoint, \[\d+, \d+\] requested", message)
    assert message.endswith(f"use another checkpoint_dir or delete {str(ckpt)!r}")
    assert "overwrite" not in message and "progress'" not in message and "in store" not in message
    assert e.value.path == str(ckpt)


def test_bad_arguments(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is an existing file"):
        Checkpointer(f, CONFIG, every_steps=1)
    with pytest.raises(ValueError, match="every_steps and/or every_seconds"):
        Checkpointer(tmp_path / "a", CONFIG)
    with pytest.raises(ValueError, match="every_steps"):
        Checkpointer(tmp_path / "a", CONFIG, every_steps=0)
    with pytest.raises(TypeError, match="JSON-able"):
        Checkpointer(tmp_path / "a", {"f": object()}, every_steps=1)
    with pytest.raises(ValueError, match="keep"):
        Checkpointer(tmp_path / "a", CONFIG, every_steps=1, keep=0)


def test_a_step_left_half_deleted_by_a_kill_is_dropped_not_fatal(tmp_path):
    """SIGKILL while Orbax removes a step past `keep` leaves a directory with only some items;
    reopening must fall back to the complete checkpoints (seen in the select crash test)."""
    import shutil

    path = str(tmp_path / "ck")
    state = {"a": np.arange(4, dtype=np.int32)}
    with Checkpointer(path, config={"k": 1}, every_steps=1, keep=3) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, {"a": state["a"] + step})
    step_dir = tmp_path / "ck" / "1"
    shutil.rmtree(step_dir / "config")
    (step_dir / "_CHECKPOINT_METADATA").unlink(missing_ok=True)
    (step_dir / "commit_success.txt").unlink(missing_ok=True)
    with pytest.warns(RuntimeWarning, match="checkpoint 1 .* is incomplete"):
        ckpt = Checkpointer(path, config={"k": 1}, every_steps=1, keep=3)
    with ckpt:
        restored, step = ckpt.restore(state)
        assert step == 3 and ckpt.all_steps() == [2, 3]
        np.testing.assert_array_equal(restored["a"], state["a"] + 3)
