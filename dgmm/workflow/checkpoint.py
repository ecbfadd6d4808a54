"""Checkpoints of a fit: atomic, checksummed, pruned, locked; local paths or fsspec URLs.

A directory holds ``ckpt-NNNNNNNN.npz`` (arrays plus ``'__meta__'`` JSON),
``ckpt-NNNNNNNN.sha256`` (``sha256sum -c`` format, written before its ``.npz``),
``metrics.jsonl`` and the lock ``dgmm.lock``. Every file is written atomically
(:func:`dgmm.data.publish.write_file`); a newest checkpoint whose bytes do not match is
skipped with a warning; only the newest ``keep`` remain. Arrays round-trip bit for bit;
``meta`` must be JSON (floats exact). Writers hold :meth:`CheckpointStore.lock`.
Rules: docs/design.md, "Checkpoint files"; layout: docs/workflows.md.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from ..data.publish import fsync_dir, write_file
from ..data.redact import redact
from ..errors import CheckpointError, DataError, LockError

log = logging.getLogger(__name__)

__all__ = ["CheckpointStore", "CheckpointInfo", "LOCK_NAME", "METRICS_NAME"]

FORMAT_VERSION = 1
LOCK_NAME = "dgmm.lock"
METRICS_NAME = "metrics.jsonl"
META_KEY = "__meta__"
_CKPT_RE = re.compile(r"^ckpt-(\d{8,})\.npz$")
_SUM_RE = re.compile(r"^ckpt-(\d{8,})\.sha256$")
_TMP_MARK = ".tmp-"
#: a would-be lock holder's candidate lock file (written, then linked into place): it
#: belongs to a process that does not hold the lock, so the holder's clean-up leaves it
#: alone unless it is older than ``_CANDIDATE_GRACE_S`` (its writer was killed)
_CANDIDATE_MARK = ".candidate-"
_CANDIDATE_GRACE_S = 600.0
#: a lock file that is still empty after this many seconds was left by a crashed creator
_EMPTY_LOCK_GRACE_S = 10.0
#: a takeover marker older than this was left by a crashed process
_TAKEOVER_GRACE_S = 60.0


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint in a directory: its step (iteration) and its path or URL."""

    step: int
    path: str


def _json_default(value):
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(
        f"checkpoint meta and metrics must be JSON (numbers, strings, lists, dicts); found "
        f"a {type(value).__name__}. Put arrays in `arrays` and convert other objects."
    )


def _dumps(value) -> str:
    return json.dumps(value, default=_json_default, allow_nan=True)


def _name(step: int) -> str:
    return f"ckpt-{step:08d}.npz"


def _sum_name(step: int) -> str:
    return f"ckpt-{step:08d}.sha256"


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _process_start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def _pid_alive(pid: int, start_time: float | None) -> bool:
    """Whether ``pid`` on this host is still the process that wrote a lock.

    Only a definite answer makes a holder dead: no such process, a zombie, or a process
    started at another time (the pid was reused). When liveness cannot be determined (no
    permission, ``hidepid`` mounts, psutil missing or failing) the holder is alive.
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


class CheckpointStore:
    """Checkpoints, metrics and a lock in one directory (local path or fsspec URL).

    Parameters
    ----------
    dir : local directory or URL (``file://``, ``s3://``, ``memory://`` ...); created on
        the first write.
    keep : number of newest checkpoints kept after each save (>= 1).
    storage_options : fsspec options for URLs (credentials, endpoint ...).
    """

    def __init__(self, dir: str | os.PathLike, *, keep: int = 3, storage_options=None):
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise CheckpointError(
                f"keep must be an integer >= 1 (checkpoints kept), got {keep!r}; set "
                "checkpoint.keep in the workflow."
            )
        self.dir = os.fspath(dir)
        self.keep = keep
        self.fs, self.root = fsspec.core.url_to_fs(self.dir, **(storage_options or {}))
        self.root = self.root.rstrip("/") or "/"
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self._lock_content: bytes | None = None

    def __repr__(self) -> str:
        return f"CheckpointStore({self.dir!r}, keep={self.keep})"

    # ------------------------------------------------------------------ paths, listing
    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root != "/" else f"/{name}"

    def _display(self, name: str) -> str:
        path = self._path(name)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def _names(self) -> list[str]:
        try:
            entries = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries]

    def list(self) -> list[CheckpointInfo]:
        """The checkpoints present (valid or not), oldest first."""
        found = []
        for name in self._names():
            match = _CKPT_RE.match(name)
            if match:
                found.append(CheckpointInfo(int(match.group(1)), self._display(name)))
        return sorted(found, key=lambda info: info.step)

    # --------------------------------------------------------------------- writing
    def _ensure_dir(self) -> None:
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                f"Cannot create the checkpoint directory {self.dir}: {exc}. Check the "
                "path and its permissions, or set checkpoint.dir elsewhere."
            ) from None

    def _atomic_write(self, name: str, data: bytes) -> None:
        try:
            write_file(self.fs, self._path(name), data)
        except OSError as exc:
            error = CheckpointError if self.is_local else DataError  # remote: store failed
            raise error(redact(
                f"Cannot write {self._display(name)}: {exc}. Check free space and "
                "permissions of the checkpoint directory, or that its store is reachable."
            )) from None

    def _remove_quietly(self, path: str) -> None:
        with suppress(OSError, FileNotFoundError):
            self.fs.rm_file(path)

    @staticmethod
    def _serialize(step: int, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> bytes:
        payload: dict[str, np.ndarray] = {}
        for key, value in arrays.items():
            if not isinstance(key, str) or not key or key == META_KEY or "/" in key:
                raise ValueError(
                    f"checkpoint array names must be non-empty strings without '/', other "
                    f"than {META_KEY!r}; got {key!r}"
                )
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise ValueError(
                    f"checkpoint array {key!r} has dtype object, which cannot be stored "
                    "without pickling; convert it to a numeric array"
                )
            payload[key] = array
        document = {
            "format": FORMAT_VERSION,
            "step": step,
            "saved_at": time.time(),
            "meta": dict(meta),
        }
        payload[META_KEY] = np.frombuffer(_dumps(document).encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **payload)
        return buffer.getvalue()

    def save(self, step: int, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
        """Write checkpoint ``step`` atomically, then keep only the newest ``keep``.

        Parameters
        ----------
        step : iteration number (int >= 0); a checkpoint of the same step is replaced.
        arrays : name -> array; stored bit for bit (no object dtypes).
        meta : JSON-serialisable mapping (settings hash, data fingerprint, history ...).

        Returns
        -------
        str
            The path (or URL) of the written ``.npz``.
        """
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        step = int(step)
        data = self._serialize(step, arrays, meta)
        self._ensure_dir()
        name = _name(step)
        self._atomic_write(_sum_name(step), f"{_sha256(data)}  {name}\n".encode())
        self._atomic_write(name, data)
        self._prune()
        log.debug("saved checkpoint %s (%d bytes)", self._display(name), len(data))
        return self._display(name)

    def _prune(self) -> None:
        names = self._names()
        steps = sorted(int(m.group(1)) for m in map(_CKPT_RE.match, names) if m)
        keep = set(steps[-self.keep :])
        for name in names:
            match = _CKPT_RE.match(name) or _SUM_RE.match(name)
            if match and int(match.group(1)) not in keep:
                self._remove_quietly(self._path(name))

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one JSON line to ``metrics.jsonl`` (flushed and fsync-ed)."""
        line = (_dumps(dict(record)) + "\n").encode("utf-8")
        self._ensure_dir()
        path = self._path(METRICS_NAME)
        try:
            if self.is_local:
                with open(path, "ab") as stream:
                    stream.write(line)
                    stream.flush()
                    os.fsync(stream.fileno())
                return
            try:
                with self.fs.open(path, "ab") as stream:
                    stream.write(line)
            except (NotImplementedError, ValueError):  # stores without append
                old = self.fs.cat_file(path) if self.fs.exists(path) else b""
                self.fs.pipe_file(path, old + line)
        except OSError as exc:
            error = CheckpointError if self.is_local else DataError  # remote: store failed
            raise error(redact(f"Cannot append to {self._display(METRICS_NAME)}: {exc}. Check "
                               "that the checkpoint directory's store is reachable.")) from None

    def truncate_metrics(self, keep) -> int:
        """Keep only the ``metrics.jsonl`` records for which ``keep(record)`` is true
        (rewritten atomically); returns how many were dropped. Used on resume, so that
        iterations computed again are not listed twice."""
        records = self.read_metrics()
        kept = [r for r in records if keep(r)]
        if len(kept) != len(records):
            self._atomic_write(METRICS_NAME, "".join(_dumps(r) + "\n" for r in kept).encode())
        return len(records) - len(kept)

    def read_metrics(self) -> list[dict]:
        """The records of ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
        try:
            text = self.fs.cat_file(self._path(METRICS_NAME)).decode("utf-8")
        except FileNotFoundError:
            return []
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("skipping unreadable line %d of %s", number,
                            self._display(METRICS_NAME))
        return records

    def clear(self, *, metrics: bool = True) -> list[str]:
        """Remove every checkpoint (and ``metrics.jsonl`` unless ``metrics=False``).

        Used by ``--restart``. The lock file is left alone. Returns the removed names.
        """
        removed = []
        for name in self._names():
            if (
                _CKPT_RE.match(name)
                or _SUM_RE.match(name)
                or _TMP_MARK in name
                or (metrics and name == METRICS_NAME)
            ):
                self._remove_quietly(self._path(name))
                removed.append(name)
        return sorted(removed)

    # --------------------------------------------------------------------- reading
    def _read(self, step: int) -> tuple[dict[str, np.ndarray], dict]:
        """Verified contents of one checkpoint; ``ValueError`` says why it is unusable."""
        name = _name(step)
        try:
            data = self.fs.cat_file(self._path(name))
        except FileNotFoundError:
            raise ValueError("the file does not exist") from None
        try:
            recorded = self.fs.cat_file(self._path(_sum_name(step))).decode().split()[0]
        except (FileNotFoundError, IndexError, UnicodeDecodeError):
            raise ValueError(f"its checksum file {_sum_name(step)} is missing or empty") from None
        actual = _sha256(data)
        if actual != recorded:
            raise ValueError(
                f"checksum mismatch (sha256 {actual[:12]}... of {len(data)} bytes, "
                f"expected {recorded[:12]}...): the file is truncated or corrupt"
            )
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
            document = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
            meta = document["meta"]
        except Exception as exc:
            raise ValueError(f"it cannot be read ({type(exc).__name__}: {exc})") from None
        return arrays, meta

    def load(self, step: int) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays and meta of checkpoint ``step``; ``CheckpointError`` if missing or corrupt."""
        try:
            return self._read(step)
        except ValueError as exc:
            raise CheckpointError(
                f"Checkpoint {self._display(_name(step))} is unusable: {exc}. Use another "
                "checkpoint, or start over with --restart."
            ) from None

    def load_latest(
        self, expect: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict] | None:
        """The newest valid checkpoint as ``(arrays, meta)``, or None when there is none.

        A newest checkpoint that is truncated, corrupt or unreadable is skipped with a
        warning naming it, and the one before it is used.

        Parameters
        ----------
        expect : values the checkpoint's meta must hold, e.g.
            ``{'settings_hash': ..., 'data_fingerprint': ...}``.

        Raises
        ------
        CheckpointError
            The newest valid checkpoint's meta differs from ``expect`` (the message names
            the keys), or every checkpoint present is unusable (the message names them).
        """
        checkpoints = self.list()
        bad = []
        for info in reversed(checkpoints):
            try:
                arrays, meta = self._read(info.step)
            except ValueError as exc:
                log.warning("skipping checkpoint %s: %s", info.path, exc)
                bad.append(f"{info.path} ({exc})")
                continue
            if bad:
                log.warning("resuming from the older checkpoint %s", info.path)
            if expect:
                self._check_expected(info, meta, expect)
            return arrays, meta
        if bad:
            raise CheckpointError(
                f"Every checkpoint in {self.dir} is unusable: {'; '.join(bad)}. Start over "
                "with --restart (removes them), or restore the files from a backup."
            )
        return None

    def _check_expected(self, info: CheckpointInfo, meta: Mapping, expect: Mapping) -> None:
        differing = [key for key, value in expect.items() if meta.get(key) != value]
        if not differing:
            return

        def show(value):
            text = str(value)
            return text[:16] + "..." if len(text) > 19 else text

        details = ", ".join(
            f"{key} (checkpoint {show(meta.get(key))}, now {show(expect[key])})"
            for key in differing
        )
        raise CheckpointError(
            f"The checkpoint {info.path} was written with other settings or data: "
            f"{details} differ. Use --restart to start over (this removes the checkpoints "
            f"in {self.dir}), or restore the settings and data it was made with to resume."
        )

    # ------------------------------------------------------------------------ lock
    @property
    def lock_path(self) -> str:
        """Path or URL of the lock file."""
        return self._display(LOCK_NAME)

    def _try_create(self, name: str, content: bytes) -> bool:
        """Create ``name`` holding ``content`` if it does not exist; False if it does."""
        path = self._path(name)
        if self.is_local:
            # written in full under a temporary name, then hard-linked into place: link()
            # fails if the name exists, and a run killed at any moment never leaves an
            # empty or half-written lock file behind
            tmp = self._path(f".{name}{_CANDIDATE_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
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

    def _age(self, name: str) -> float:
        try:
            modified = self.fs.modified(self._path(name))
            return time.time() - modified.timestamp()
        except Exception:
            return 0.0

    def _holder_text(self, holder: dict) -> str:
        started = holder.get("started")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
        return f"pid {holder.get('pid')} on host {holder.get('host')} (since {when})"

    def _stale(self, holder: dict | None, raw: bytes) -> bool:
        if holder is None:
            return not raw and self._age(LOCK_NAME) > _EMPTY_LOCK_GRACE_S
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        return isinstance(pid, int) and not _pid_alive(pid, holder.get("process_start"))

    def _take_over(self, raw: bytes, content: bytes) -> bool:
        """Replace the stale lock holding ``raw`` by ours; False if it changed meanwhile."""
        marker = LOCK_NAME + ".takeover"
        if not self._try_create(marker, content):
            if self._age(marker) > _TAKEOVER_GRACE_S:
                self._remove_quietly(self._path(marker))
            return False
        try:
            if self._read_optional(LOCK_NAME) != raw:
                return False
            self._remove_quietly(self._path(LOCK_NAME))
            return self._try_create(LOCK_NAME, content)
        finally:
            self._remove_quietly(self._path(marker))

    def acquire(self) -> None:
        """Take the directory's lock, or raise ``LockError`` naming its holder."""
        if self._lock_content is not None:
            raise LockError(f"{self.lock_path} is already held by this store; release it first.")
        self._ensure_dir()
        pid = os.getpid()
        content = json.dumps({
            "pid": pid,
            "host": socket.gethostname(),
            "started": time.time(),
            "process_start": _process_start_time(pid),
            "token": uuid.uuid4().hex,
        }).encode()  # fmt: skip
        for _ in range(5):
            if self._try_create(LOCK_NAME, content):
                break
            raw = self._read_optional(LOCK_NAME)
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
                    f"The checkpoint directory {self.dir} is in use by another dgmm run: "
                    f"{who}. Wait for that run to finish, or, if it is gone, remove the "
                    f"lock file {self.lock_path} and run again."
                )
            what = self._holder_text(holder) if holder else "an empty lock file"
            if self._take_over(raw, content):
                log.warning(
                    "took over the stale lock %s left by %s, which is no longer running",
                    self.lock_path, what,
                )  # fmt: skip
                break
            time.sleep(0.05)
        else:
            raise LockError(
                f"Could not take the lock {self.lock_path}: other processes keep changing "
                "it. Make sure only one run uses this checkpoint directory."
            )
        self._lock_content = content
        self._clean_temporaries()

    def release(self) -> None:
        """Give the lock back (the file is removed only if it is still ours)."""
        content, self._lock_content = self._lock_content, None
        if content is None:
            return
        if self._read_optional(LOCK_NAME) == content:
            self._remove_quietly(self._path(LOCK_NAME))
        else:
            log.warning("the lock %s was changed by another process; left it alone", self.lock_path)

    @contextmanager
    def lock(self) -> Iterator[CheckpointStore]:
        """Hold the directory's exclusive lock for the duration of the ``with`` block.

        A lock left by a process that no longer runs on this host is stale and taken over
        with a warning; a live holder (or one on another host) raises ``LockError`` naming
        its pid and host and the lock file to remove if that run is gone.
        """
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    def _clean_temporaries(self) -> None:
        """Remove temporary files left by killed writers (we hold the lock). Candidate
        lock files are other processes' work in progress, unless long abandoned."""
        for name in self._names():
            if (_TMP_MARK in name
                    or _CANDIDATE_MARK in name and self._age(name) > _CANDIDATE_GRACE_S):
                self._remove_quietly(self._path(name))
