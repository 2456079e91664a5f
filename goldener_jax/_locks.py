"""One writer per directory: an OS file lock (``fcntl.flock``) held for the whole run.

A store being described and a checkpoint directory being saved to each take a lock on the file
``.goldener-jax.lock`` inside their directory. A second writer is refused at once with
:class:`LockedError`, naming the holder (pid, host, since when) that the first one wrote into the
file. ``flock`` locks belong to the open file and the kernel drops them when the process dies, so a
lock left by a killed process (``kill -9``, OOM, power loss of a local disk) never blocks a
rerun: there is nothing to clean up by hand.

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

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, nothing is locked
    fcntl = None

LOCK_NAME = ".goldener-jax.lock"


class LockedError(RuntimeError):
    """Another process is writing to the same store or checkpoint directory."""


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
            raise LockedError(
                f"{self.what} {self.directory!r} is being written by another run "
                f"({self._holder()}); wait for it to finish or stop it, or use another "
                "directory (a killed run never blocks: its lock goes with its process)"
            ) from None
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
        return self

    def _holder(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as f:
                info = json.loads(f.read() or "{}")
            return f"pid {info['pid']} on host {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
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
