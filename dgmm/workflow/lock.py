"""The inter-process lock of a directory (local path or fsspec URL): one writer at a time.

The lock is a file (``dgmm.lock`` in a checkpoint directory) holding the holder's pid,
host, start time and a random token. It is created exclusively: locally written in full
under a candidate name and hard-linked into place (``link`` fails if the name exists, and
a process killed at any moment leaves no half-written lock); on an object store with an
exclusive create where the store has one. A lock left by a process that no longer runs on
this host is stale and taken over with a warning; a live holder, or one on another host,
raises ``LockError`` naming it. Rules: docs/design.md, "Checkpoint files".
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from contextlib import suppress

from ..data.publish import fsync_dir
from ..errors import LockError

log = logging.getLogger(__name__)

__all__ = ["DirectoryLock", "pid_alive"]

#: a would-be lock holder's candidate lock file (written, then linked into place): it
#: belongs to a process that does not hold the lock, so the holder's clean-up leaves it
#: alone unless it is older than ``CANDIDATE_GRACE_S`` (its writer was killed)
CANDIDATE_MARK = ".candidate-"
CANDIDATE_GRACE_S = 600.0
#: a lock file that is still empty after this many seconds was left by a crashed creator
EMPTY_LOCK_GRACE_S = 10.0
#: a takeover marker older than this was left by a crashed process
TAKEOVER_GRACE_S = 60.0


def _process_start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def pid_alive(pid: int, start_time: float | None) -> bool:
    """Whether ``pid`` on this host is still the process that wrote a lock.

    Only a definite answer makes a holder dead: no such process, a zombie, or a process
    started at another time (the pid was reused). When liveness cannot be determined (no
    permission, ``hidepid`` mounts, psutil missing or failing) the holder is alive.

    Parameters
    ----------
    pid : int
        The holder's process id, on this host.
    start_time : float or None
        The holder's process start time (seconds since the epoch) as recorded in the
        lock; None when it was not recorded.

    Returns
    -------
    bool
        False only when the holder is definitely gone.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # exists but owned by someone else, or unknown: keep asking
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return True
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if start_time is not None and abs(process.create_time() - start_time) > 1.0:
            return False  # the pid was reused by another process
    except psutil.ZombieProcess:
        return False
    except psutil.NoSuchProcess:
        return False
    except Exception:  # noqa: BLE001 - AccessDenied (hidepid=2) or anything else
        return True
    return True


class DirectoryLock:
    """The exclusive lock file ``name`` in the directory ``root`` of the filesystem ``fs``.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
        The directory's filesystem.
    root : str
        The directory inside ``fs`` (no trailing ``/``); it must exist before ``acquire``.
    name : str
        The lock file's name.
    display : callable
        Maps a file name in the directory to the path or URL shown in messages.
    is_local : bool
        Whether ``fs`` is the local disk (then the lock is created by a hard link).
    """

    def __init__(self, fs, root: str, name: str, display, *, is_local: bool):
        self.fs = fs
        self.root = root
        self.name = name
        self._display = display
        self.is_local = is_local
        self._content: bytes | None = None

    @property
    def path(self) -> str:
        """Path or URL of the lock file."""
        return self._display(self.name)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._content is not None

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root != "/" else f"/{name}"

    def _remove_quietly(self, name: str) -> None:
        with suppress(OSError, FileNotFoundError):
            self.fs.rm_file(self._path(name))

    def _try_create(self, name: str, content: bytes) -> bool:
        """Create ``name`` holding ``content`` if it does not exist; False if it does."""
        path = self._path(name)
        if self.is_local:
            # written in full under a temporary name, then hard-linked into place: link()
            # fails if the name exists, and a run killed at any moment never leaves an
            # empty or half-written lock file behind
            tmp = self._path(f".{name}{CANDIDATE_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
            with open(tmp, "wb") as stream:
                stream.write(content)
                stream.flush()
                os.fsync(stream.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            fsync_dir(self.root)
            return True
        try:
            with self.fs.open(path, "xb") as stream:
                stream.write(content)
            return True
        except FileExistsError:
            return False
        except (NotImplementedError, ValueError):  # no exclusive mode: best effort
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, content)
            return True

    def _read_optional(self, name: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._path(name))
        except FileNotFoundError:
            return None

    def age(self, name: str) -> float:
        """Seconds since the file ``name`` of the directory was modified (0 if unknown)."""
        try:
            modified = self.fs.modified(self._path(name))
            return time.time() - modified.timestamp()
        except Exception:
            return 0.0

    @staticmethod
    def _holder_text(holder: dict) -> str:
        started = holder.get("started")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
        return f"pid {holder.get('pid')} on host {holder.get('host')} (since {when})"

    def _stale(self, holder: dict | None, raw: bytes) -> bool:
        if holder is None:
            return not raw and self.age(self.name) > EMPTY_LOCK_GRACE_S
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        return isinstance(pid, int) and not pid_alive(pid, holder.get("process_start"))

    def _take_over(self, raw: bytes, content: bytes) -> bool:
        """Replace the stale lock holding ``raw`` by ours; False if it changed meanwhile."""
        marker = self.name + ".takeover"
        if not self._try_create(marker, content):
            if self.age(marker) > TAKEOVER_GRACE_S:
                self._remove_quietly(marker)
            return False
        try:
            if self._read_optional(self.name) != raw:
                return False
            self._remove_quietly(self.name)
            return self._try_create(self.name, content)
        finally:
            self._remove_quietly(marker)

    def acquire(self, owner: str) -> None:
        """Take the lock, or raise ``LockError`` naming its holder.

        Parameters
        ----------
        owner : str
            What the directory is, for messages (e.g. ``'The checkpoint directory /x'``).
        """
        if self._content is not None:
            raise LockError(f"{self.path} is already held by this store; release it first.")
        pid = os.getpid()
        content = json.dumps({
            "pid": pid,
            "host": socket.gethostname(),
            "started": time.time(),
            "process_start": _process_start_time(pid),
            "token": uuid.uuid4().hex,
        }).encode()  # fmt: skip
        for _ in range(5):
            if self._try_create(self.name, content):
                break
            raw = self._read_optional(self.name)
            if raw is None:
                time.sleep(0.05)
                continue  # released meanwhile: try again
            try:
                holder = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                holder = None
            if not self._stale(holder, raw):
                who = self._holder_text(holder) if holder else "a process that is starting"
                raise LockError(
                    f"{owner} is in use by another dgmm run: {who}. Wait for that run to "
                    f"finish, or, if it is gone, remove the lock file {self.path} and run "
                    "again."
                )
            what = self._holder_text(holder) if holder else "an empty lock file"
            if self._take_over(raw, content):
                log.warning(
                    "took over the stale lock %s left by %s, which is no longer running",
                    self.path, what,
                )  # fmt: skip
                break
            time.sleep(0.05)
        else:
            raise LockError(
                f"Could not take the lock {self.path}: other processes keep changing "
                "it. Make sure only one run uses this directory."
            )
        self._content = content

    def abandoned_candidate(self, name: str) -> bool:
        """Whether ``name`` is a candidate lock file whose writer was killed long ago
        (another process's candidate that is recent is its work in progress)."""
        return CANDIDATE_MARK in name and self.age(name) > CANDIDATE_GRACE_S

    def release(self) -> None:
        """Give the lock back (the file is removed only if it is still ours)."""
        content, self._content = self._content, None
        if content is None:
            return
        if self._read_optional(self.name) == content:
            self._remove_quietly(self.name)
        else:
            log.warning("the lock %s was changed by another process; left it alone", self.path)
