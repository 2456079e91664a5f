"""One writer per store and per checkpoint directory: OS file locks, refused second writers,
no stale lock after a kill -9."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from _describe_worker import BATCH_SIZE, build
from _lock_worker import loop_state, loop_step, select_data

from goldener_jax._locks import LOCK_NAME, DirectoryLock, LockedError
from goldener_jax.checkpoint import Checkpointer, resumable_loop
from goldener_jax.describe import describe
from goldener_jax.store import FeatureStore

TESTS = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(TESTS, "_lock_worker.py")
DESCRIBE_WORKER = os.path.join(TESTS, "_describe_worker.py")


def _env():
    python_path = [TESTS, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}


def _start(args, ready: str, timeout: float = 120.0):
    """Starts a worker and waits until it prints a line containing ``ready``."""
    proc = subprocess.Popen([sys.executable, *args], env=_env(), stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"worker exited ({proc.wait()}) before {ready!r}: {lines}")
        lines.append(line)
        if ready in line:
            return proc, lines
    proc.kill()
    raise AssertionError(f"worker never printed {ready!r}")


def _kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_second_lock_in_process_is_refused_and_names_the_holder(tmp_path):
    first = DirectoryLock(tmp_path / "d", "checkpoint directory").acquire()
    with pytest.raises(LockedError) as info:
        DirectoryLock(tmp_path / "d", "checkpoint directory").acquire()
    message = str(info.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()} since " in message
    assert "checkpoint directory" in message and "another run" in message
    first.release()
    with DirectoryLock(tmp_path / "d", "checkpoint directory") as again:  # released: free
        assert again.held
    assert (tmp_path / "d" / LOCK_NAME).exists()


@pytest.mark.parametrize("make_file", ["self", "parent"])
def test_directory_that_is_a_file_is_a_clear_error(tmp_path, make_file):
    (tmp_path / "f").write_text("x")
    path = tmp_path / "f" if make_file == "self" else tmp_path / "f" / "ckpt"
    with pytest.raises(ValueError, match="existing file"):
        Checkpointer(path, {"t": 1}, every_steps=1)


def test_killed_holder_never_blocks(tmp_path):
    proc, _ = _start([WORKER, "hold", str(tmp_path / "d")], "ready")
    try:
        with pytest.raises(LockedError, match=rf"pid {proc.pid} on host "):
            DirectoryLock(tmp_path / "d", "test directory").acquire()
    finally:
        _kill(proc)
    # The lock file is still there, with the dead holder's pid: it does not matter.
    assert str(proc.pid) in (tmp_path / "d" / LOCK_NAME).read_text()
    with DirectoryLock(tmp_path / "d", "test directory") as lock:
        assert lock.held


def _kill_if_alive(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_killed_holder_with_a_forked_worker_never_blocks(tmp_path):
    """A run that forked a worker (a prefetching data loader) is killed; the orphaned worker
    inherited the lock's descriptor but closed it at the fork: the rerun takes the lock."""
    proc, lines = _start([WORKER, "fork", str(tmp_path / "d")], "ready")
    child = int(lines[-1].split()[1])
    try:
        _kill(proc)
        os.kill(child, 0)  # the worker outlives its parent
        with DirectoryLock(tmp_path / "d", "test directory") as lock:
            assert lock.held
    finally:
        _kill_if_alive(proc.pid)
        _kill_if_alive(child)


def test_lock_kept_by_a_process_outside_python_fork_names_it(tmp_path):
    """A descriptor inherited without Python's fork keeps the lock after its run is killed: the
    rerun is told that the recorded holder is dead and how to find the process holding it."""
    proc, lines = _start([WORKER, "handoff", str(tmp_path / "d")], "ready")
    child = int(lines[-1].split()[1])
    try:
        _kill(proc)
        with pytest.raises(LockedError) as info:
            DirectoryLock(tmp_path / "d", "test directory").acquire()
        message = str(info.value)
        assert f"pid {proc.pid} on host {socket.gethostname()}" in message
        assert "is no longer running" in message and "another run" not in message
        assert f"fuser -v {tmp_path / 'd' / LOCK_NAME}" in message
    finally:
        _kill_if_alive(child)
    deadline = time.monotonic() + 10  # the holder gone, the lock is free
    while True:
        try:
            with DirectoryLock(tmp_path / "d", "test directory") as lock:
                assert lock.held
            break
        except LockedError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_two_resumable_loops_one_runs_other_refused_then_resume_after_kill(tmp_path):
    path = str(tmp_path / "ck")
    steps = 12
    reference = resumable_loop(
        loop_step, loop_state(), steps, tmp_path / "ref", config={"t": 1}, every_steps=1
    )
    proc, _ = _start([WORKER, "loop", path, str(steps), "0.5"], "step 2")
    try:
        with pytest.raises(LockedError, match=rf"checkpoint directory .*\(pid {proc.pid} on host"):
            resumable_loop(loop_step, loop_state(), steps, path, config={"t": 1}, every_steps=1)
    finally:
        _kill(proc)
    with Checkpointer(path, {"t": 1}, every_steps=1) as ckpt:
        done = ckpt.latest_step
    assert done is not None and 1 <= done < steps
    calls = []

    def counting(state, i):
        calls.append(i)
        return loop_step(state, i)

    final = resumable_loop(counting, loop_state(), steps, path, config={"t": 1}, every_steps=1)
    assert calls == list(range(done, steps))  # resumed from the killed run's last checkpoint
    np.testing.assert_array_equal(final["x"], reference["x"])
    assert int(final["count"]) == steps


def test_two_selects_on_one_checkpoint_dir(tmp_path):
    """A select in flight holds its checkpoint directory: a second one is refused; after the
    first is killed, a rerun resumes and equals an uninterrupted selection."""
    import jax

    from goldener_jax import select

    x = select_data()
    kw = dict(method="kcenter", key=jax.random.key(0), checkpoint_every=5, chunk_size=100)
    reference = np.asarray(select(x, 40, **kw).indices)
    ckpt = str(tmp_path / "ck")
    proc, lines = _start([WORKER, "select", ckpt, str(tmp_path / "w.npy"), "1.0"], "saved")
    try:
        with pytest.raises(LockedError, match=rf"pid {proc.pid} on host"):
            select(x, 40, checkpoint_dir=ckpt, **kw)
    finally:
        _kill(proc)
    assert not (tmp_path / "w.npy").exists()  # killed in flight
    assert re.search(r"saved \S+ \d+", "".join(lines))
    again = select(x, 40, checkpoint_dir=ckpt, **kw)
    np.testing.assert_array_equal(np.asarray(again.indices), reference)


def test_two_describes_on_one_store(tmp_path):
    store_path = str(tmp_path / "s")
    counter = tmp_path / "count"
    proc = subprocess.Popen(
        [sys.executable, DESCRIBE_WORKER, store_path, str(counter), "0.3"], env=_env()
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            counter.exists() and len(counter.read_text().split()) >= 3
        ):
            assert proc.poll() is None, "worker ended early"
            time.sleep(0.02)
        x, labels, extractor = build()
        with pytest.raises(LockedError, match=rf"feature store .*\(pid {proc.pid} on host"):
            describe(x, extractor, store_path, labels=labels, batch_size=BATCH_SIZE)
    finally:
        _kill(proc)
    done_before = int(FeatureStore.open(store_path).done_batches().sum())
    for path in (store_path, str(tmp_path / "ref")):  # resume; an uninterrupted reference
        subprocess.run([sys.executable, DESCRIBE_WORKER, path, ""], env=_env(), check=True)
    store, ref = FeatureStore.open(store_path), FeatureStore.open(tmp_path / "ref")
    assert 0 < done_before < store.num_batches and store.is_complete()
    np.testing.assert_array_equal(store.read_vectors()[0], ref.read_vectors()[0])
