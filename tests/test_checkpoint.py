"""Checkpoints: bit-exact round trips, atomic writes under SIGKILL, checksums, pruning, lock."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest

from dgmm.errors import CheckpointError, LockError
from dgmm.workflow import lock
from dgmm.workflow.checkpoint import LOCK_NAME, METRICS_NAME, CheckpointStore

LOGGER = "dgmm.workflow.checkpoint"
LOCK_LOGGER = "dgmm.workflow.lock"


@pytest.fixture(params=["local", "file", "memory"])
def store_dir(request, tmp_path):
    """A checkpoint directory as a local path, a file:// URL and a memory:// URL."""
    if request.param == "local":
        return str(tmp_path / "ck")
    if request.param == "file":
        return (tmp_path / "ck").as_uri()
    return f"memory://dgmm-tests/{uuid.uuid4().hex}/ck"


def tricky_arrays(seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    special = np.array([-0.0, 0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324,
                        np.finfo(np.float64).tiny / 3, np.finfo(np.float64).max,
                        1.0 + 2**-52])  # fmt: skip
    payload_nan = np.array([0x7FF8_0000_DEAD_BEEF], dtype=np.uint64).view(np.float64)
    return {
        "means": rng.standard_normal((4, 3)),
        "special": special,
        "nan_payload": payload_nan,
        "subnormals": rng.uniform(0, 1, 50) * np.finfo(np.float64).smallest_subnormal * 2**40,
        "float32": rng.standard_normal(7).astype(np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((3, 5))),
        "strided": rng.standard_normal((6, 6))[::2, 1::2],
        "ints": rng.integers(-(2**62), 2**62, size=5),
        "flags": np.array([True, False, True]),
        "scalar": np.float64(-0.0),
        "empty": np.empty((0, 3)),
        "rng_key": np.array([2**64 - 1, 0, 12345], dtype=np.uint64),
    }


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def corrupt(store: CheckpointStore, step: int, how: str) -> None:
    path = store._path(f"ckpt-{step:08d}.npz")
    data = store.fs.cat_file(path)
    if how == "truncate":
        store.fs.pipe_file(path, data[: len(data) // 2])
    elif how == "flip":
        middle = len(data) // 2
        store.fs.pipe_file(path, data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :])
    elif how == "no-checksum":
        store.fs.rm_file(store._path(f"ckpt-{step:08d}.sha256"))
    elif how == "garbage":
        store.fs.pipe_file(path, b"not a zip file at all")
        digest = hashlib.sha256(b"not a zip file at all").hexdigest()
        store.fs.pipe_file(store._path(f"ckpt-{step:08d}.sha256"), f"{digest}  x\n".encode())


# ------------------------------------------------------------------------ round trips


def test_arrays_round_trip_bit_for_bit(store_dir):
    store = CheckpointStore(store_dir)
    arrays = tricky_arrays()
    path = store.save(12, arrays, {"iteration": 12})
    assert path.endswith("ckpt-00000012.npz")
    loaded, meta = store.load_latest()
    assert meta == {"iteration": 12}
    assert set(loaded) == set(arrays)
    for name, array in arrays.items():
        assert same_bits(loaded[name], array), name
    assert np.signbit(loaded["special"][0]) and np.signbit(loaded["scalar"])


def test_meta_round_trips_exactly():
    store = CheckpointStore(f"memory://dgmm-tests/{uuid.uuid4().hex}")
    rng_state = np.random.default_rng(3).bit_generator.state  # 128-bit integers
    history = [float(x) for x in np.random.default_rng(1).standard_normal(20)]
    meta = {
        "settings_hash": "ab" * 32,
        "history": history + [float("inf"), -float("inf")],
        "rng": rng_state,
        "nested": {"a": [1, 2, {"b": None}], "ok": True},
        "numpy_scalar": np.float64(0.1),
        "numpy_int": np.int64(7),
        "numpy_array": np.arange(3),
    }
    store.save(0, {}, meta)
    _, loaded = store.load_latest()
    assert loaded["history"] == meta["history"]
    assert loaded["rng"] == rng_state
    restored = np.random.default_rng()
    restored.bit_generator.state = loaded["rng"]
    assert restored.random() == np.random.default_rng(3).random()
    assert loaded["numpy_scalar"] == 0.1 and loaded["numpy_int"] == 7
    assert loaded["numpy_array"] == [0, 1, 2]
    assert loaded["nested"] == meta["nested"]


def test_a_checkpoint_is_an_npz_with_a_sha256sum_sidecar(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(3, {"w": np.ones(2)}, {"k": 1})
    data = (tmp_path / "ckpt-00000003.npz").read_bytes()
    sidecar = (tmp_path / "ckpt-00000003.sha256").read_text()
    assert sidecar == f"{hashlib.sha256(data).hexdigest()}  ckpt-00000003.npz\n"
    check = subprocess.run(["sha256sum", "-c", "ckpt-00000003.sha256"], cwd=tmp_path,
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0 and "OK" in check.stdout
    with np.load(tmp_path / "ckpt-00000003.npz", allow_pickle=False) as archive:
        document = json.loads(archive["__meta__"].tobytes())
    assert document["step"] == 3 and document["meta"] == {"k": 1} and document["format"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000003.npz",
                                                          "ckpt-00000003.sha256"]


def test_saving_a_step_again_replaces_it(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(1, {"x": np.zeros(1)}, {"v": "old"})
    store.save(1, {"x": np.ones(1)}, {"v": "new"})
    arrays, meta = store.load_latest()
    assert meta == {"v": "new"} and arrays["x"][0] == 1.0
    assert [info.step for info in store.list()] == [1]


# --------------------------------------------------------------------------- pruning


def test_only_the_newest_keep_remain(store_dir):
    store = CheckpointStore(store_dir, keep=3)
    for step in range(7):
        store.save(step, {"step": np.array([step])}, {"step": step})
    assert [info.step for info in store.list()] == [4, 5, 6]
    names = sorted(n for n in store._names())
    assert names == [f"ckpt-{s:08d}.{ext}" for s in (4, 5, 6) for ext in ("npz", "sha256")]
    arrays, meta = store.load_latest()
    assert meta["step"] == 6 and arrays["step"][0] == 6


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(CheckpointError, match=r"keep must be an integer >= 1 .*got 0; set "
                       r"checkpoint\.keep"):
        CheckpointStore(tmp_path, keep=0)


def test_empty_or_missing_directory_has_no_checkpoint(tmp_path):
    assert CheckpointStore(tmp_path / "never-created").load_latest() is None
    assert CheckpointStore(tmp_path / "never-created").list() == []
    assert not (tmp_path / "never-created").exists()  # reading creates nothing


# ------------------------------------------------------------------ corrupt checkpoints


@pytest.mark.parametrize("how", ["truncate", "flip", "no-checksum", "garbage"])
def test_a_corrupt_newest_checkpoint_is_skipped_with_a_warning(store_dir, how, caplog):
    store = CheckpointStore(store_dir, keep=3)
    for step in (1, 2, 3):
        store.save(step, {"x": np.full(100, float(step))}, {"step": step})
    corrupt(store, 3, how)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        arrays, meta = store.load_latest()
    assert meta == {"step": 2} and arrays["x"][0] == 2.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("skipping checkpoint" in w and "ckpt-00000003.npz" in w for w in warnings)
    assert any("resuming from the older checkpoint" in w and "ckpt-00000002.npz" in w
               for w in warnings)
    with pytest.raises(CheckpointError, match=r"Checkpoint .*ckpt-00000003\.npz is unusable: .*"
                       r"start over with --restart"):
        store.load(3)


def test_the_reason_is_given_for_each_kind_of_damage(tmp_path, caplog):
    store = CheckpointStore(tmp_path, keep=5)
    for step in range(5):
        store.save(step, {"x": np.arange(50.0)}, {})
    corrupt(store, 4, "truncate")
    corrupt(store, 3, "no-checksum")
    corrupt(store, 2, "garbage")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.load_latest() is not None
    text = caplog.text
    assert "checksum mismatch" in text and "truncated or corrupt" in text
    assert "its checksum file ckpt-00000003.sha256 is missing" in text
    assert "it cannot be read" in text


def test_all_corrupt_names_every_file(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    store.save(1, {"x": np.ones(10)}, {})
    store.save(2, {"x": np.ones(10)}, {})
    corrupt(store, 1, "flip")
    corrupt(store, 2, "truncate")
    with pytest.raises(CheckpointError, match=r"Every checkpoint .* is unusable: .*"
                       r"ckpt-00000002\.npz \(checksum mismatch.*ckpt-00000001\.npz \(checksum"):
        store.load_latest()


def test_leftover_temporary_files_are_ignored_and_cleaned_under_the_lock(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(1, {"x": np.ones(1)}, {"ok": True})
    (tmp_path / ".ckpt-00000002.npz.tmp-999-abcd").write_bytes(b"partial")
    assert store.load_latest()[1] == {"ok": True}
    with store.lock():
        assert not (tmp_path / ".ckpt-00000002.npz.tmp-999-abcd").exists()


# -------------------------------------------------------------------- expected settings


def test_expected_meta_matches(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(5, {"x": np.ones(1)}, {"settings_hash": "a" * 64, "data_fingerprint": "f1"})
    arrays, meta = store.load_latest(expect={"settings_hash": "a" * 64, "data_fingerprint": "f1"})
    assert meta["data_fingerprint"] == "f1"


def test_other_settings_or_data_are_refused_naming_the_keys(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(5, {"x": np.ones(1)}, {"settings_hash": "a" * 64, "data_fingerprint": "f1"})
    with pytest.raises(CheckpointError, match=r"ckpt-00000005\.npz .*settings_hash \(checkpoint "
                       r"a{16}\.\.\., now b{16}\.\.\.\) differ.*--restart"):
        store.load_latest(expect={"settings_hash": "b" * 64, "data_fingerprint": "f1"})
    with pytest.raises(CheckpointError, match=r"settings_hash .*, data_fingerprint \(checkpoint "
                       r"f1, now f2\) differ.*or restore the settings and data"):
        store.load_latest(expect={"settings_hash": "c" * 64, "data_fingerprint": "f2"})
    with pytest.raises(CheckpointError, match=r"seed \(checkpoint None, now 3\) differ"):
        store.load_latest(expect={"seed": 3})


# ------------------------------------------------------------------ metrics and clear


def test_metrics_are_appended_one_json_line_each(store_dir):
    store = CheckpointStore(store_dir)
    store.append_metrics({"iteration": 1, "loglik": np.float64(-1.5), "seconds": 0.25})
    store.append_metrics({"iteration": 2, "loglik": -1.25, "converged": np.bool_(True)})
    text = store.fs.cat_file(store._path(METRICS_NAME)).decode()
    lines = text.splitlines()
    assert len(lines) == 2 and text.endswith("\n")
    assert json.loads(lines[0]) == {"iteration": 1, "loglik": -1.5, "seconds": 0.25}
    assert store.read_metrics()[1] == {"iteration": 2, "loglik": -1.25, "converged": True}


def test_a_torn_metrics_line_is_skipped_with_a_warning(tmp_path, caplog):
    store = CheckpointStore(tmp_path)
    store.append_metrics({"iteration": 1})
    with open(tmp_path / METRICS_NAME, "a") as stream:
        stream.write('{"iteration": 2, "logl')  # a crash mid-write
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.read_metrics() == [{"iteration": 1}]
    assert "skipping unreadable line 2 of" in caplog.text


def test_meta_must_be_json(tmp_path):
    store = CheckpointStore(tmp_path)
    with pytest.raises(TypeError, match=r"checkpoint meta and metrics must be JSON .*found a set"):
        store.save(1, {}, {"bad": {1, 2}})
    with pytest.raises(TypeError, match=r"found a object"):
        store.append_metrics({"bad": object()})


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"__meta__": np.ones(1)}, r"array names must be non-empty strings without '/', other than "
         r"'__meta__'"),
        ({"a/b": np.ones(1)}, r"got 'a/b'"),
        ({"objects": np.array([{}, None], dtype=object)}, r"'objects' has dtype object"),
    ],
)
def test_invalid_arrays(tmp_path, arrays, message):
    with pytest.raises(ValueError, match=message):
        CheckpointStore(tmp_path).save(1, arrays, {})


@pytest.mark.parametrize("step", [-1, 1.5, True, "3"])
def test_invalid_step(tmp_path, step):
    with pytest.raises(ValueError, match=r"step must be an integer >= 0"):
        CheckpointStore(tmp_path).save(step, {}, {})


def test_clear_removes_checkpoints_and_metrics(store_dir):
    store = CheckpointStore(store_dir)
    with store.lock():
        store.save(1, {"x": np.ones(1)}, {})
        store.save(2, {"x": np.ones(1)}, {})
        store.append_metrics({"i": 1})
        removed = store.clear()
        assert removed == ["ckpt-00000001.npz", "ckpt-00000001.sha256", "ckpt-00000002.npz",
                           "ckpt-00000002.sha256", METRICS_NAME]  # fmt: skip
        assert store.load_latest() is None and store.read_metrics() == []
        assert store._names() == [LOCK_NAME]  # the lock stays while held
    store.append_metrics({"i": 1})
    store.clear(metrics=False)
    assert store.read_metrics() == [{"i": 1}]


def test_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match=r"Cannot create the checkpoint directory .*file/ck"):
        CheckpointStore(blocker / "ck").save(1, {}, {})


# ------------------------------------------------------------------------------ lock


def test_lock_file_names_the_holder_and_is_removed_on_exit(store_dir):
    store = CheckpointStore(store_dir)
    with store.lock():
        holder = json.loads(store.fs.cat_file(store._path(LOCK_NAME)))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        other = CheckpointStore(store_dir)
        with (
            pytest.raises(LockError, match=rf"in use by another dgmm run: pid {os.getpid()} on "
                          rf"host {socket.gethostname()} .*remove the lock file .*{LOCK_NAME}"),
            other.lock(),
        ):
            pass
    assert LOCK_NAME not in store._names()
    with CheckpointStore(store_dir).lock():  # free again
        pass


def test_the_same_store_cannot_lock_twice(tmp_path):
    store = CheckpointStore(tmp_path)
    with store.lock(), pytest.raises(LockError, match=r"is already held by this store"):
        store.acquire()


LOCK_HOLDER = textwrap.dedent("""
    import sys
    from dgmm.workflow.checkpoint import CheckpointStore
    with CheckpointStore(sys.argv[1]).lock():
        print("locked", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
""")


def test_a_lock_held_by_another_process_then_released(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockError, match=rf"pid {holder.pid} on host {socket.gethostname()}"):
            CheckpointStore(tmp_path).acquire()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
    finally:
        holder.wait(timeout=30)
    with CheckpointStore(tmp_path).lock():
        pass


def test_a_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (tmp_path / LOCK_NAME).exists()  # left behind
    with caplog.at_level(logging.WARNING, logger=LOCK_LOGGER), CheckpointStore(tmp_path).lock():
        mine = json.loads((tmp_path / LOCK_NAME).read_text())
        assert mine["pid"] == os.getpid()
    assert (f"took over the stale lock {tmp_path / LOCK_NAME} left by pid {holder.pid}"
            in caplog.text)


@pytest.mark.parametrize("failure", ["access_denied", "other_error"])
def test_a_holder_whose_liveness_cannot_be_determined_is_alive(tmp_path, monkeypatch, failure):
    """As on a node mounting /proc with hidepid=2: the holder's process cannot be examined
    (psutil AccessDenied, or any other failure). Its lock is not taken over."""
    import psutil

    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"

        class Unexaminable(psutil.Process):
            def status(self):
                if self.pid == holder.pid:
                    if failure == "access_denied":
                        raise psutil.AccessDenied(self.pid)
                    raise RuntimeError("cannot read /proc")
                return super().status()

        monkeypatch.setattr(psutil, "Process", Unexaminable)
        assert lock.pid_alive(holder.pid, None)
        with pytest.raises(LockError, match=rf"pid {holder.pid}"):
            CheckpointStore(tmp_path).acquire()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
    finally:
        holder.wait(timeout=30)
    assert not lock.pid_alive(holder.pid, None)  # a process that is gone is dead


def test_a_recycled_pid_does_not_keep_a_lock(tmp_path, caplog):
    """Our own pid, but a process start time that is not ours: a stale lock."""
    (tmp_path / LOCK_NAME).write_text(json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "started": 1.0, "process_start": 1.0}
    ))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger=LOCK_LOGGER), CheckpointStore(tmp_path).lock():
        pass
    assert "took over the stale lock" in caplog.text


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "node-17", "started": 1e9}))
    with pytest.raises(LockError, match=r"pid 1 on host node-17 \(since 2001-09-.*\)\. .*if it is "
                       r"gone, remove the lock file .*dgmm\.lock"):
        CheckpointStore(tmp_path).acquire()


def test_an_empty_lock_file(tmp_path, caplog):
    lock = tmp_path / LOCK_NAME
    lock.write_bytes(b"")
    with pytest.raises(LockError, match=r"in use by another dgmm run: a process that is starting"):
        CheckpointStore(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(lock, (old, old))  # its creator died before writing it
    with caplog.at_level(logging.WARNING, logger=LOCK_LOGGER), CheckpointStore(tmp_path).lock():
        pass
    assert "took over the stale lock" in caplog.text and "an empty lock file" in caplog.text


def test_the_holder_leaves_other_processes_candidate_lock_files_alone(tmp_path):
    """The holder's clean-up must not remove the candidate lock file another process is
    about to link into place (that process then crashed instead of reporting the lock
    as taken: the multi-process race below); abandoned ones (over ten minutes old) go."""
    fresh = tmp_path / ".dgmm.lock.candidate-999-abcd"
    old = tmp_path / ".dgmm.lock.candidate-998-abcd"
    fresh.write_bytes(b"{}")
    old.write_bytes(b"{}")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    with CheckpointStore(str(tmp_path)).lock():
        assert fresh.exists()
        assert not old.exists()


def test_a_holders_clean_up_between_candidate_and_link_still_gives_a_lock_error(
    tmp_path, monkeypatch
):
    """The interleaving of the multi-process race below, made certain: the holder cleans
    up right between another process writing its candidate lock file and linking it."""
    holder = CheckpointStore(tmp_path)
    holder.acquire()
    try:
        real_link = os.link

        def link_after_the_holders_clean_up(src, dst, *args, **kwargs):
            holder._clean_temporaries()
            return real_link(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "link", link_after_the_holders_clean_up)
        with pytest.raises(LockError, match="is in use by another dgmm run"):
            CheckpointStore(tmp_path).acquire()
    finally:
        monkeypatch.undo()
        holder.release()


def test_only_one_of_many_processes_gets_the_lock(tmp_path):
    code = textwrap.dedent("""
        import sys, time
        from dgmm.workflow.checkpoint import CheckpointStore
        from dgmm.errors import LockError
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together
        try:
            with CheckpointStore(sys.argv[1]).lock():
                print("won", flush=True)
                sys.stdin.readline()  # hold the lock until every process has answered
        except LockError:
            print("lost", flush=True)
    """)
    start = time.time() + 1.0
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(start)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]  # fmt: skip
    try:
        results = sorted(p.stdout.readline().strip() for p in procs)
    finally:
        for p in procs:
            p.communicate("\n", timeout=60)
    assert results == ["lost", "lost", "lost", "won"]


# ------------------------------------------------------------------ killed while saving


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from dgmm.workflow.checkpoint import CheckpointStore
    store = CheckpointStore(sys.argv[1], keep=2)
    with store.lock():
        latest = store.load_latest()
        step = 0 if latest is None else latest[1]["step"] + 1
        for saved in range(10**9):
            rng = np.random.default_rng(step)
            store.save(step, {"x": rng.standard_normal(20000)}, {"step": step})
            store.append_metrics({"step": step})
            step += 1
            if saved == 2:
                print("running", step, flush=True)
""")


def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    last_step = -1
    for attempt in range(5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        word, step = writer.stdout.readline().split()
        assert word == "running" and int(step) >= last_step + 3  # resumed, did not restart
        time.sleep(rng.uniform(0.0, 0.3))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        store = CheckpointStore(tmp_path, keep=2)
        arrays, meta = store.load_latest()
        expected = np.random.default_rng(meta["step"]).standard_normal(20000)
        assert same_bits(arrays["x"], expected), attempt
        assert meta["step"] >= int(step) - 1
        last_step = meta["step"]
        assert store.read_metrics()[-1]["step"] >= meta["step"] - 1
        with store.lock():  # the dead writer's lock is stale; its temporaries go
            assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
