"""Writers for the lock tests, run as subprocesses (then SIGKILLed).

Usage:
  python _lock_worker.py hold DIR                 take DIR's lock, print "ready", sleep
  python _lock_worker.py fork DIR                 take DIR's lock, fork a sleeping child (a
                                                  prefetch worker), print "ready CHILD_PID", sleep
  python _lock_worker.py handoff DIR              take DIR's lock, start `sleep` with the lock's
                                                  descriptor (a fork outside Python), print
                                                  "ready CHILD_PID", sleep
  python _lock_worker.py loop DIR STEPS SLEEP_S   resumable_loop saving every step, sleeping
  python _lock_worker.py select DIR OUT SLEEP_S   select(checkpoint_dir=DIR) with slow saves
"""

from __future__ import annotations

import sys
import time

import numpy as np


def loop_state():
    return {"x": np.zeros(3, np.float32), "count": np.zeros((), np.int32)}


def loop_step(state, step):
    return {"x": state["x"] * 0.5 + step, "count": state["count"] + 1}


def select_data():
    rng = np.random.RandomState(0)
    return rng.randn(300, 6).astype(np.float32)


def main(argv):
    mode, directory = argv[0], argv[1]
    if mode == "hold":
        from goldener_jax._locks import DirectoryLock

        lock = DirectoryLock(directory, "test directory").acquire()  # noqa: F841 - kept alive
        print("ready", flush=True)
        time.sleep(600)
    elif mode in ("fork", "handoff"):
        import multiprocessing
        import subprocess

        from goldener_jax._locks import DirectoryLock

        lock = DirectoryLock(directory, "test directory").acquire()
        if mode == "fork":  # what a data loader with fork workers does
            child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,))
            child.start()
        else:  # the descriptor handed on without Python's fork (as a native fork would keep it)
            child = subprocess.Popen(["sleep", "600"], pass_fds=(lock._fd,))
        print(f"ready {child.pid}", flush=True)
        time.sleep(600)
    elif mode == "loop":
        from goldener_jax.checkpoint import resumable_loop

        steps, sleep_s = int(argv[2]), float(argv[3])

        def step(state, i):
            time.sleep(sleep_s)
            print(f"step {i}", flush=True)
            return loop_step(state, i)

        resumable_loop(step, loop_state(), steps, directory, config={"t": 1}, every_steps=1)
    elif mode == "select":
        import jax

        import goldener_jax.checkpoint as ckpt
        from goldener_jax import select

        out, sleep_s = argv[2], float(argv[3])
        save = ckpt.Checkpointer.save

        def slow_save(self, step, state):  # a slow disk: the run stays in flight for a while
            save(self, step, state)
            print(f"saved {self.path} {step}", flush=True)
            time.sleep(sleep_s)

        ckpt.Checkpointer.save = slow_save
        sel = select(
            select_data(),
            40,
            method="kcenter",
            key=jax.random.key(0),
            checkpoint_dir=directory,
            checkpoint_every=5,
            chunk_size=100,
        )
        np.save(out, np.asarray(sel.indices))


if __name__ == "__main__":
    main(sys.argv[1:])
