"""The URL rule, atomic publication on disks and stores without rename, redaction."""
from __future__ import annotations

import json
import os
import uuid

import fsspec
import pytest

from dgmm.data import publish
from dgmm.data.files import is_url
from dgmm.data.redact import redact, register


@pytest.mark.parametrize("path, expected", [
    ("s3://bucket/x.zarr", True), ("gs://b/k", True), ("az://c/k", True),
    ("file:///tmp/x", True), ("memory://x", True), ("simplecache::s3://b/k", True),
    ("dir://x", True), ("data/x.zarr", False), ("/abs/x.parquet", False),
    ("C:\\data\\x.zarr", False), ("x:y", False), ("3s://b", False),
])
def test_one_url_rule(path, expected):
    assert is_url(path) is expected


def test_a_local_directory_is_swapped_in_and_an_interrupted_swap_repaired(tmp_path):
    target = tmp_path / "out"
    for version in ("one", "two"):
        with publish.publish_directory(target) as tmp:
            assert os.path.basename(tmp).startswith(".out.tmp-")
            publish.write_bytes(publish.join(tmp, "v.txt"), version.encode())
        assert (target / "v.txt").read_text() == version
    assert sorted(os.listdir(tmp_path)) == ["out"]
    # a writer killed between its two renames leaves the old version aside
    os.replace(target, tmp_path / ".out.tmp-0123456789ab-old")
    assert publish.resolve(target) == str(target)  # reading puts it back
    assert (target / "v.txt").read_text() == "two"
    with pytest.raises(RuntimeError), publish.publish_directory(target) as tmp:
        publish.write_bytes(publish.join(tmp, "v.txt"), b"three")
        raise RuntimeError("writer failed")
    assert (target / "v.txt").read_text() == "two"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_store_without_rename_publishes_versions_named_by_a_pointer():
    url = f"memory://dgmm-{uuid.uuid4().hex}/out"
    fs = fsspec.filesystem("memory")
    assert publish.resolve(url) == url  # nothing published: the path itself
    with publish.publish_directory(url) as first:
        publish.write_bytes(publish.join(first, "v.txt"), b"one")
        assert publish.resolve(url) == url  # not yet visible
    assert publish.resolve(url) == first
    with pytest.raises(RuntimeError), publish.publish_directory(url) as failed:
        publish.write_bytes(publish.join(failed, "v.txt"), b"half")
        raise RuntimeError("writer failed")
    assert publish.resolve(url) == first and not fs.exists(failed)
    with publish.publish_directory(url) as second:
        publish.write_bytes(publish.join(second, "v.txt"), b"two")
    assert publish.read_bytes(publish.join(publish.resolve(url), "v.txt")) == b"two"
    assert not fs.exists(first)  # superseded: removed
    pointer = json.loads(publish.read_bytes(publish.join(url, publish.POINTER_NAME)))
    assert pointer["version"] == second.rsplit("/", 1)[1]


def test_secrets_and_url_passwords_are_redacted(monkeypatch):
    register({"key": "AKIA-dgmm-public", "client_kwargs": {"aws_session_token": "tok-123456"},
              "endpoint_url": "http://127.0.0.1:9000"})
    monkeypatch.setenv("AZURE_STORAGE_KEY", "azure-secret-999")
    text = ("AKIA-dgmm-public tok-123456 azure-secret-999 s3://user:pa55word@host/b "
            "http://127.0.0.1:9000")
    assert redact(text) == "*** *** *** s3://***@host/b http://127.0.0.1:9000"
