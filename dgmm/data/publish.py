"""Atomic publication of files and directories, on local disks and on object stores.

A reader never sees a half-written file or directory, and a writer killed at any moment
leaves the previous complete version readable. ``write_file``: temporary sibling,
``fsync``, rename (one request on an object store). ``publish_directory``: a temporary
sibling ``.<name>.tmp-<token>`` swapped in by two renames (a crash between them is
repaired by ``resolve``); on an object store a new prefix ``<name>/v-<time>-<token>/``
named by ``<name>/_dgmm_current.json``, written last, which ``resolve`` follows; older
prefixes are removed after publishing. See docs/storage.md, "Atomic writes without rename".
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid

from .files import is_url, url_to_fs

log = logging.getLogger(__name__)

__all__ = ["POINTER_NAME", "write_file", "write_bytes", "write_json", "read_bytes",
           "read_json", "publish_directory", "resolve", "renames_atomically", "join"]

#: the object naming the current version of a directory published on an object store
POINTER_NAME = "_dgmm_current.json"
POINTER_FORMAT = "dgmm-published"
TMP_MARK = ".tmp-"
_VERSION_RE = re.compile(r"^v-\d{20}-[0-9a-f]{12}$")


def renames_atomically(fs) -> bool:
    """Whether ``fs`` is a local disk (directly or below ``dir://``): atomic renames."""
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem

    while isinstance(fs, DirFileSystem):
        fs = fs.fs
    return isinstance(fs, LocalFileSystem)


def join(base: str, name: str) -> str:
    """``base/name`` for a local path or a URL."""
    return f"{os.fspath(base).rstrip('/')}/{name}"


def _local_path(fs, path: str) -> str:
    """The operating-system path of ``path`` on a local (or ``dir://`` local) ``fs``."""
    from fsspec.implementations.dirfs import DirFileSystem

    while isinstance(fs, DirFileSystem):
        path, fs = fs._join(path), fs.fs
    return fs._strip_protocol(path)


def fsync_dir(path: str) -> None:
    """Flush a local directory's entries (a rename into it) to disk, where possible."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ files


def write_file(fs, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` of the filesystem ``fs`` atomically (see module doc)."""
    if not renames_atomically(fs):
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            with contextlib.suppress(Exception):
                fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, data)
        return
    final = _local_path(fs, path)
    parent, name = os.path.split(final)
    os.makedirs(parent or ".", exist_ok=True)
    tmp = os.path.join(parent, f".{name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(parent or ".")


def write_bytes(path: str | os.PathLike, data: bytes, storage_options: dict | None = None) -> str:
    """Write ``data`` atomically to a local path or URL; returns ``path``."""
    path = os.fspath(path)
    fs, fs_path = url_to_fs(path, storage_options)
    write_file(fs, fs_path, data)
    return path


def write_json(path: str | os.PathLike, payload: dict, storage_options: dict | None = None) -> str:
    """Write ``payload`` as indented JSON atomically to a local path or URL."""
    return write_bytes(path, json.dumps(payload, indent=2, allow_nan=True).encode(),
                       storage_options)


def read_bytes(path: str | os.PathLike, storage_options: dict | None = None) -> bytes | None:
    """The bytes at a local path or URL, or None when there is no such file."""
    path = os.fspath(path)
    fs, fs_path = url_to_fs(path, storage_options)
    try:
        return fs.cat_file(fs_path)
    except (FileNotFoundError, IsADirectoryError):
        return None


def read_json(path: str | os.PathLike, storage_options: dict | None = None) -> dict | None:
    """The JSON object at a local path or URL, or None when missing or not JSON.

    Storage errors other than a missing file are raised (a store that is down is not an
    absent file)."""
    data = read_bytes(path, storage_options)
    if data is None:
        return None
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


# ------------------------------------------------------------------------ directories


def _restore_interrupted_swap(final: str) -> None:
    """Put back a directory moved aside by a local swap killed between its renames."""
    if os.path.exists(final):
        return
    parent, name = os.path.split(final)
    if not os.path.isdir(parent or "."):
        return
    for entry in sorted(os.listdir(parent or ".")):
        if entry.startswith(f".{name}{TMP_MARK}") and entry.endswith("-old"):
            os.replace(os.path.join(parent, entry), final)
            log.warning("restored %s, left aside by a replacement that was interrupted", final)
            return


def _fsync_tree(root: str) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(directory)


def _remove_tree_quietly(fs, path: str) -> None:
    """Delete a directory; a failure is logged, never raised (it would hide the error
    that made us clean up)."""
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except Exception as exc:  # noqa: BLE001 - storage clients raise many kinds
        log.warning("could not remove %s: %s", path, exc)


def resolve(path: str | os.PathLike, storage_options: dict | None = None) -> str:
    """Where the current version of a published directory ``path`` is to be read.

    Local disk: ``path`` itself (after putting back a directory left aside by an
    interrupted swap). Object store: ``path/<version>`` when ``path`` holds a
    ``_dgmm_current.json`` naming one, else ``path`` (data written by other tools).
    """
    path = os.fspath(path).rstrip("/")
    fs, fs_path = url_to_fs(path, storage_options)
    if renames_atomically(fs):
        _restore_interrupted_swap(_local_path(fs, fs_path))
        return path
    try:
        pointer = json.loads(fs.cat_file(f"{fs_path}/{POINTER_NAME}"))
    except FileNotFoundError:
        return path
    except ValueError:
        pointer = None
    version = pointer.get("version") if isinstance(pointer, dict) else None
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        from ..errors import DataError

        raise DataError(f"{join(path, POINTER_NAME)} does not name a version of {path}; "
                        "write the output again.")
    return join(path, version)


@contextlib.contextmanager
def publish_directory(path: str | os.PathLike, storage_options: dict | None = None):
    """Yield a local path or URL to write a directory into; once the block ends without
    an exception, publish it as the new content of ``path`` (see the module docstring).
    On an exception what was written is removed and ``path`` is left as it was.

    The yielded location is in the same form as ``path`` (a local path or a URL).
    """
    path = os.fspath(path).rstrip("/")
    fs, final = url_to_fs(path, storage_options)
    token = uuid.uuid4().hex[:12]
    if renames_atomically(fs):
        parent_fs, name = final.rsplit("/", 1) if "/" in final else ("", final)
        tmp_fs = (f"{parent_fs}/.{name}{TMP_MARK}{token}" if parent_fs
                  else f".{name}{TMP_MARK}{token}")
        final_local, tmp_local = _local_path(fs, final), _local_path(fs, tmp_fs)
        os.makedirs(os.path.dirname(final_local) or ".", exist_ok=True)
        try:
            yield fs.unstrip_protocol(tmp_fs) if is_url(path) else tmp_local
            os.makedirs(tmp_local, exist_ok=True)
            _fsync_tree(tmp_local)
            _swap_local(tmp_local, final_local)
        except BaseException:
            _remove_tree_quietly(fs, tmp_fs)
            raise
        log.info("wrote %s", path)
        return
    version = f"v-{time.time_ns():020d}-{token}"
    prefix = f"{final}/{version}"
    try:
        yield join(path, version)
        pointer = {"format": POINTER_FORMAT, "version": version,
                   "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        fs.pipe_file(f"{final}/{POINTER_NAME}", json.dumps(pointer).encode())
    except BaseException:
        _remove_tree_quietly(fs, prefix)
        raise
    _remove_superseded(fs, final, version)
    log.info("wrote %s (version %s)", path, version)


def _swap_local(tmp: str, final: str) -> None:
    _restore_interrupted_swap(final)
    parent = os.path.dirname(final) or "."
    if os.path.isdir(final):
        # two renames: a crash between them leaves the old version at ``old``, which the
        # next write or read puts back (``_restore_interrupted_swap``)
        old = f"{tmp}-old"
        os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(old, final)
            raise
        fsync_dir(parent)
        import shutil

        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
        fsync_dir(parent)


def _remove_superseded(fs, final: str, current: str) -> None:
    """Remove versions older than ``current`` (published before, or abandoned by killed
    writers); newer ones may belong to a writer still at work and are left alone."""
    try:
        entries = fs.ls(final, detail=False, refresh=True)
    except TypeError:  # filesystems without listing caches
        entries = fs.ls(final, detail=False)
    except FileNotFoundError:
        return
    for entry in entries:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if _VERSION_RE.match(name) and name < current:
            _remove_tree_quietly(fs, f"{final}/{name}")
