"""Shared test helpers: reference data, parameters and comparisons (no tests here)."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
from dask.callbacks import Callback
from fsspec.implementations.local import LocalFileSystem
from scipy.stats import wishart

from dgmm.core.families import SKLEARN_TYPES as COVARIANCE_TYPES
from dgmm.core.params import GMMParams
from dgmm.core.stats import SuffStats

__all__ = ["COVARIANCE_TYPES", "make_blobs", "random_covariances", "params_for",
           "assert_stats_close", "ComputeCounter", "RowCounter", "REPO", "MINIMAL_WORKFLOW",
           "write_file", "kill_when", "threads_running"]

#: the project root (shipped workflows/, configs/, docs/)
REPO = Path(__file__).resolve().parents[1]

#: the smallest valid workflow file: a zarr source and the fit step
MINIMAL_WORKFLOW = """\
data:
  source: zarr
  path: data/x.zarr
steps: [fit]
"""


def write_file(root: Path, text: str, name: str = "workflows/w.yaml") -> Path:
    """Write dedented ``text`` to ``root/name`` (parents created); returns the path."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def make_blobs(n_samples=600, n_features=3, n_components=3, seed=0, spread=4.0, offset=0.0):
    """Rows from a mixture of well separated anisotropic Gaussians, shape (n, d)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(n_components, n_features))
    labels = rng.integers(n_components, size=n_samples)
    mixing = rng.normal(size=(n_components, n_features, n_features)) * 0.4
    mixing += np.eye(n_features)
    noise = rng.normal(size=(n_samples, n_features))
    X = centers[labels] + np.einsum("nij,nj->ni", mixing[labels], noise)
    return X + offset


def random_covariances(covariance_type, k, d, seed=0):
    """Random covariances of a type: Wishart(d + 2, I) matrices, variances in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    if covariance_type == "full":
        return np.stack([wishart(d + 2, np.eye(d)).rvs(random_state=rng) for _ in range(k)])
    if covariance_type == "tied":
        return wishart(d + 2, np.eye(d)).rvs(random_state=rng)
    if covariance_type == "diag":
        return rng.uniform(0.5, 2.0, size=(k, d))
    return rng.uniform(0.5, 2.0, size=k)


def params_for(covariance_type, X, k=3, seed=1):
    """Parameters of a type with means at k rows of X and random covariances."""
    rng = np.random.default_rng(seed)
    means = X[rng.choice(X.shape[0], k, replace=False)]
    cov = random_covariances(covariance_type, k, X.shape[1], seed)
    return GMMParams.from_covariances(np.full(k, 1 / k), means, cov, covariance_type)


def assert_stats_close(a: SuffStats, b: SuffStats, rtol=1e-12):
    assert a.n == pytest.approx(b.n, rel=rtol)
    assert a.loglik == pytest.approx(b.loglik, rel=rtol)
    for name in ("nk", "s1", "s2"):
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.abs(y).max())
    assert a.n_rows == b.n_rows and a.n_nonfinite == b.n_nonfinite
    assert a.first_nonfinite == b.first_nonfinite


class ComputeCounter(Callback):
    """Counts the graphs computed on the local scheduler and their sizes."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def _start(self, dsk):
        self.sizes.append(len(dsk))


#: rows served per ``RowCounter`` name (module state: the graph may be pickled, the
#: module is not)
_ROWS_SERVED: dict[str, int] = {}


class RowCounter:
    """An array-like whose row reads are counted, as the getter of a Dask array serves
    them on the local scheduler: ``dask.array.from_array(RowCounter(X, name), ...)``."""

    def __init__(self, array: np.ndarray, name: str):
        self.array, self.name = array, name
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        _ROWS_SERVED[name] = 0

    def __getitem__(self, key):
        out = self.array[key]
        _ROWS_SERVED[self.name] += out.shape[0] if out.ndim else 1
        return out

    def reads(self) -> float:
        """Rows served so far, in reads of the whole array."""
        return _ROWS_SERVED[self.name] / self.shape[0]


# ----------------------------------------------------------------- S3-API test server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 30.0, process=None) -> None:
    """Return once ``url`` answers; AssertionError if ``process`` ends or time runs out."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError as exc:
            if process is not None and process.poll() is not None:
                raise AssertionError(
                    f"the server at {url} exited with {process.returncode}") from exc
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer from {url} within {timeout} s") from exc
            time.sleep(0.1)


class S3Server:
    """moto's standalone S3-API server on 127.0.0.1 (a real HTTP server, own process).

    ``storage_options`` and ``env`` hold dummy credentials and the endpoint, for fsspec
    (s3fs) and for subprocesses respectively.
    """

    ACCESS_KEY = "dgmm-test-access"
    SECRET_KEY = "dgmm-test-secret"

    def __init__(self):
        import subprocess
        import sys

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_http(f"{self.endpoint}/moto-api/", process=self.process)

    def storage_options(self, endpoint: str | None = None, **extra) -> dict:
        return {"key": self.ACCESS_KEY, "secret": self.SECRET_KEY,
                "endpoint_url": endpoint or self.endpoint, **extra}

    def env(self, endpoint: str | None = None) -> dict:
        """Environment for a subprocess that reaches the server without storage_options."""
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith(("DGMM_", "AWS_"))}
        env.update(AWS_ACCESS_KEY_ID=self.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=self.SECRET_KEY,
                   AWS_ENDPOINT_URL=endpoint or self.endpoint, AWS_DEFAULT_REGION="us-east-1")
        return env

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options(), skip_instance_cache=True)

    def create_bucket(self, name: str) -> str:
        """A new bucket (no location constraint, as moto's us-east-1 wants); its URL."""
        self.filesystem().call_s3("create_bucket", Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        import os
        import signal

        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except Exception:  # noqa: BLE001
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


class FlakyProxy:
    """An HTTP proxy on 127.0.0.1 in front of an S3 server that answers 503 instead of
    forwarding: every ``fail_every``-th request (by arrival count) up to ``max_failures``
    of them, and every request once ``down`` is set (the store stays down)."""

    def __init__(self, upstream_port: int, fail_every: int = 0, max_failures: int = 0):
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.fail_every, self.max_failures = fail_every, max_failures
        self.count = self.failures = 0
        self.down = False
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy._should_fail():
                    error = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>"
                             b"ServiceUnavailable</Code><Message>injected</Message></Error>")
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(error)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "transfer-encoding")}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() in ("connection", "transfer-encoding", "content-length",
                                       "server", "date"):
                        continue
                    self.send_header(key, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length",
                                     response.getheader("Content-Length") or "0")
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _should_fail(self) -> bool:
        with self._lock:
            self.count += 1
            if self.down:
                self.failures += 1
                return True
            if (self.fail_every and self.count % self.fail_every == 0
                    and self.failures < self.max_failures):
                self.failures += 1
                return True
            return False

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


# ----------------------------------------------------------- a disk that fails once


class FailOnceFileSystem(LocalFileSystem):
    """The local disk, except that the first attempt to write each file raises OSError
    (a transient storage error); markers of the failed attempts go to the directory in
    the storage option ``markers``. Protocol ``failonce://`` once registered."""

    protocol = ("failonce",)

    def __init__(self, markers: str = "", **kwargs):
        super().__init__(**kwargs)
        self.markers = markers

    def open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            import hashlib
            import os

            marker = os.path.join(self.markers, hashlib.sha1(
                self._strip_protocol(path).encode()).hexdigest())
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise OSError(f"transient failure writing {path}")
        return super().open(path, mode, **kwargs)


def kill_when(proc, ready, timeout=120):
    """SIGKILL the process ``proc`` as soon as ``ready()`` is true (polled every 5 ms);
    fails when the process ends first or ``timeout`` seconds pass."""
    start = time.time()
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before the kill: {proc.stdout.read()}")
        if time.time() - start > timeout:
            raise AssertionError("timed out waiting to kill")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def threads_running(*codes) -> list[str]:
    """The threads of this process (other than the caller's) whose stack is inside one of
    the functions ``codes`` (code objects) or a module file given as a ``str`` path."""
    me = __import__("threading").get_ident()
    busy = []
    for ident, frame in sys._current_frames().items():
        if ident == me:
            continue
        for inner, _ in traceback.walk_stack(frame):
            if inner.f_code in codes or inner.f_code.co_filename in codes:
                busy.append(f"thread {ident} in {inner.f_code.co_name}")
                break
    return busy


#: Debian's headless browser (.ci/run installs it), or None
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browser(*args, timeout=120):
    """Run headless Chromium with ``args`` (e.g. ``--dump-dom URL``)."""
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox",
                           "--no-first-run", "--disable-extensions", *args],
                          capture_output=True, text=True, timeout=timeout, check=True)


def rendered_text(page: Path) -> str:
    """The text Chromium shows of the HTML file ``page`` (its body, tags dropped)."""
    import re

    dom = browser("--dump-dom", page.as_uri()).stdout
    body = dom[dom.index("<body"):]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))
