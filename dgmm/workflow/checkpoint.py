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
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from ..data.publish import TMP_MARK, write_file
from ..data.redact import redact
from ..errors import CheckpointError, DataError
from .lock import DirectoryLock

log = logging.getLogger(__name__)

__all__ = ["CheckpointStore", "CheckpointInfo", "LOCK_NAME", "METRICS_NAME"]

FORMAT_VERSION = 1
LOCK_NAME = "dgmm.lock"
METRICS_NAME = "metrics.jsonl"
META_KEY = "__meta__"
_CKPT_RE = re.compile(r"^ckpt-(\d{8,})\.npz$")
_SUM_RE = re.compile(r"^ckpt-(\d{8,})\.sha256$")


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
        self._lock = DirectoryLock(self.fs, self.root, LOCK_NAME, self._display,
                                   is_local=self.is_local)

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
                or TMP_MARK in name
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
        return self._lock.path

    def acquire(self) -> None:
        """Take the directory's lock (:class:`dgmm.workflow.lock.DirectoryLock`), or raise
        ``LockError`` naming its holder; then remove what killed writers left behind."""
        self._ensure_dir()
        self._lock.acquire(f"The checkpoint directory {self.dir}")
        self._clean_temporaries()

    def release(self) -> None:
        """Give the lock back (the file is removed only if it is still ours)."""
        self._lock.release()

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
            if TMP_MARK in name or self._lock.abandoned_candidate(name):
                self._remove_quietly(self._path(name))
