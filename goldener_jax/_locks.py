"""One writer per directory: an OS file lock (``fcntl.flock``) held for the whole run.

A store being described and a checkpoint directory being saved to each take a lock on the file
``.goldener-jax.lock`` inside their directory. A second writer is refused at once with
:class:`LockedError`, naming the holder (pid, host, since when) that the first one wrote into the
file. ``flock`` locks belong to the open file and the kernel drops them when the last descriptor
of it closes, so a lock left by a killed process (``kill -9``, OOM, power loss of a local disk)
never blocks a rerun: there is nothing to clean up by hand.

A process forked while a lock is held (a data loader's prefetch workers, ``multiprocessing`` with
the ``fork`` start method) inherits the descriptor, and with it the lock: after the run is killed
its orphaned worker would keep the directory locked. So a forked child closes its copies at once
(``os.register_at_fork``): the lock stays the parent's alone and dies with it. The descriptor is
not inherited through ``exec`` either (Python opens it close-on-exec). Only a fork that bypasses
Python (a C library calling ``fork()``) keeps a copy; a rerun blocked by one is told that the
recorded holder is dead and how to find the process that still holds the lock (``fuser``).

Only local directories are locked (``flock`` has no meaning on ``gs://`` / ``s3://`` /
``memory://``); on network file systems it is as reliable as their ``flock`` support (NFSv4 and
Lustre honour it; some FUSE mounts do not).
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import weakref

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, nothing is locked
    fcntl = None

LOCK_NAME = ".goldener-jax.lock"


class LockedError(RuntimeError):
    """Another process is writing to the same store or checkpoint directory."""


# The locks this process holds, by descriptor (weak: a forgotten lock is still released by its
# ``__del__``). A plain dict: the fork handler below must take no lock of its own.
_HELD: dict[int, weakref.ref] = {}


def _close_in_child() -> None:
    """Runs in a child right after ``os.fork``: closes its copies of the parent's lock
    descriptors. ``flock`` locks belong to the open file description, which a fork shares; a
    worker that kept the copy would hold the lock after the parent is killed. Closing a copy does
    not release the parent's lock (the parent's descriptor still refers to the description)."""
    for fd, ref in list(_HELD.items()):
        lock = ref()
        if lock is not None and lock._fd == fd:
            lock._fd = None  # the child holds nothing: release() must not close a reused fd
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if fcntl is not None and hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def local_dir(path) -> str | None:
    """The local directory of ``path`` (plain path or ``file://`` URL), None for other URLs."""
    path = os.fspath(path)
    if path.startswith("file://"):
        return path[len("file://") :]
    return None if "://" in path else path


class DirectoryLock:
    """An exclusive, non-blocking ``flock`` on ``<directory>/.goldener-jax.lock``.

    Args:
        directory: Local directory (created if missing).
        what: What is locked, for the error message (``"feature store"``, ``"checkpoint
            directory"``).
    """

    def __init__(self, directory, what: str):
        self.directory = os.path.abspath(os.fspath(directory))
        self.what = what
        self.path = os.path.join(self.directory, LOCK_NAME)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        if self._fd is not None or fcntl is None:
            return self
        try:
            os.makedirs(self.directory, exist_ok=True)
        except (NotADirectoryError, FileExistsError) as e:
            raise ValueError(
                f"{self.what} {self.directory!r} cannot be a directory: it or a folder above it "
                "is an existing file; give a directory path"
            ) from e
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise LockedError(self._locked_message()) from None
        # Who holds it, for the message the next writer gets. Written after taking the lock, so
        # a reader may see an empty file for an instant: the message then says "unknown".
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:  # a full disk must not stop the run: the lock itself is held
            pass
        self._fd = fd
        _HELD[fd] = weakref.ref(self)
        return self

    def _holder_info(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                info = json.loads(f.read() or "{}")
            return {"pid": int(info["pid"]), "host": str(info["host"]), "since": info["since"]}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _holder(self) -> str:
        info = self._holder_info()
        if info is None:
            return "holder unknown"
        return f"pid {info['pid']} on host {info['host']} since {info['since']}"

    def _locked_message(self) -> str:
        info = self._holder_info()
        if (
            info is not None
            and info["host"] == socket.gethostname()
            and not _pid_alive(info["pid"])
        ):
            # The recorded holder is gone, yet the lock is held: a process that inherited its
            # descriptor without going through Python's fork (which closes it) still runs.
            return (
                f"{self.what} {self.directory!r} is still locked, but the run that took the lock "
                f"({self._holder()}) is no longer running: a process it started still holds the "
                f"lock (one forked outside Python, e.g. by a native data loader); find it with "
                f"`fuser -v {self.path}` (or `lsof {self.path}`), stop it, and run again"
            )
        return (
            f"{self.what} {self.directory!r} is being written by another run "
            f"({self._holder()}); wait for it to finish or stop it, or use another "
            "directory (a killed run never blocks: its lock goes with its process)"
        )

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            _HELD.pop(fd, None)
            # The file stays: deleting it would race with a writer that has just opened it.
            os.close(fd)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # a forgotten close must not keep the directory locked forever
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def lock_directory(path, what: str) -> DirectoryLock | None:
    """Takes the lock of a local directory (None, and nothing locked, for remote URLs)."""
    local = local_dir(path)
    if local is None:
        return None
    return DirectoryLock(local, what).acquire()
