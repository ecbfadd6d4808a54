"""Seconds per EM iteration and peak memory: dgmm against Spark MLlib on the same Parquet data.

Both fit a full-covariance mixture to the same Parquet files (written by
``dgmm.data.make_gmm_data``, one part file per 16 MiB or so, a multiple of the worker count),
from the same initial parameters, for the same number of iterations with tol=0:

- the start is Spark's own random start (``pyspark.ml.clustering.GaussianMixture`` with
  ``maxIter=0`` and a fixed seed returns it: equal weights, each mean the average of a few
  rows drawn from the data, diagonal covariances); dgmm gets it as ``weights_init``,
  ``means_init`` and ``precisions_init`` (a random_from_data-like start shared by both);
- Spark: ``local[W]`` (W = ``--workers`` task threads in one JVM), the DataFrame API
  (``VectorAssembler`` + ``GaussianMixture``). Its fit reads the files, caches the rows and
  draws its start before iterating, so the time per iteration is
  (T(n iterations) - T(1)) / (n - 1): the fixed cost cancels. Peak memory: the largest RSS
  of the JVM's process tree, sampled every 50 ms while Spark runs;
- dgmm: a ``LocalCluster`` of W worker processes x 1 thread, the data read with
  ``dgmm.data.open_parquet`` (one part file per task) and persisted on the workers before
  the fit; the time per iteration is the mean interval between successive iteration
  callbacks, iterations 2..n (the first includes sending the code and the first graph).
  ``reg_covar`` 1e-6 (dgmm's default; Spark adds none). Peak memory: the largest sum of
  the RSS of this process (driver, scheduler, nannies) and its children (the workers),
  sampled every 50 ms from the cluster's start to its shutdown. The chunks are held on
  the workers in turn (chunk i on worker i mod W).

The two never run at the same time: Spark's JVM is shut down before the cluster starts. The
mean log-likelihoods are printed side by side (after the first iteration: that of the
shared start, a check that both start from the same parameters; after the last: that of
the same iterate).

Cases: ``full16`` (N = 1e6, d = 16, K = 8) and ``full64`` (N = 2e5, d = 64, K = 16). Spark
computes each row's likelihood as sum_k (EPSILON + w_k pdf_k(x)) in linear space: at d = 64
the densities of the generated data (unit-scale variances) are far below EPSILON = 2.2e-16,
so every responsibility would be uniform and Spark's fit meaningless. For full64 the data
are therefore multiplied by ``--scale64`` (default 0.3) for both, at read time (Spark: a
column expression before assembling; dgmm: the Dask array before persisting); the
log-likelihoods printed are those of the scaled data.

Requires pyspark (``pip install 'dgmm[bench]'``) and a Java runtime (17 or later) on PATH
or in JAVA_HOME; without them the script prints what is missing and exits with code 2.

Usage::

    python benchmarks/bench_vs_spark.py                          # full16 and full64, 20 iterations
    python benchmarks/bench_vs_spark.py --cases full16 --iterations 10
    python benchmarks/bench_vs_spark.py --rows-scale 0.02 --iterations 4   # a smoke run
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np
from idle import add_wait_idle_option, load_average, wait_for_idle


@dataclass(frozen=True)
class Case:
    name: str
    n_samples: int
    n_features: int
    n_components: int
    scale: float = 1.0


CASES = {
    "full16": Case("full16", 1_000_000, 16, 8),
    "full64": Case("full64", 200_000, 64, 16),
}


def missing_requirements() -> str | None:
    """One line naming what this benchmark lacks (pyspark, Java), or None."""
    missing = []
    try:
        import pyspark  # noqa: F401
    except ImportError:
        missing.append("pyspark (pip install 'dgmm[bench]')")
    java_home = os.environ.get("JAVA_HOME")
    java = (os.path.join(java_home, "bin", "java") if java_home else None) or shutil.which("java")
    if not java or not os.path.exists(java):
        missing.append("a Java runtime 17+ (java on PATH or JAVA_HOME)")
    if missing:
        return "bench_vs_spark: missing " + " and ".join(missing) + "; cannot run Spark MLlib."
    return None


class PeakRSS:
    """Largest summed resident memory of a set of processes, sampled in a thread.

    ``processes()`` returns the psutil processes to sum at each sample (it is called at
    every sample, so processes that start later are counted)."""

    def __init__(self, processes, interval: float = 0.05):
        self._processes = processes
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self.peak_count = 0

    def sample(self) -> None:
        import psutil

        total, count = 0, 0
        for proc in self._processes():
            try:
                total += proc.memory_info().rss
                count += 1
            except psutil.Error:
                pass
        if total > self.peak:
            self.peak, self.peak_count = total, count

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
        return False




def parts_for(case: Case, n_workers: int, part_mib: float) -> int:
    """Rows per Parquet part file: about ``part_mib`` MiB, the part count a multiple of
    the worker count so that each worker gets the same share."""
    total = case.n_samples * case.n_features * 8
    per_worker = max(1, math.ceil(total / (n_workers * part_mib * 2**20)))
    return math.ceil(case.n_samples / (per_worker * n_workers))


def write_data(case: Case, path: str, n_workers: int, part_mib: float, seed: int):
    """Write the case's Parquet files with dgmm's synthetic writer on a short-lived cluster."""
    from distributed import Client, LocalCluster

    import dgmm

    chunk_rows = parts_for(case, n_workers, part_mib)
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        info, _ = dgmm.make_gmm_data(
            path, case.n_samples, case.n_features, case.n_components,
            covariance_type="full", chunk_rows=chunk_rows, seed=seed, fmt="parquet",
            client=client, overwrite=True,
        )
    return info, chunk_rows


# ------------------------------------------------------------------------------ Spark


def start_spark(n_workers: int, memory: str):
    """A local SparkSession (``local[n_workers]``) and the psutil process of its JVM."""
    import psutil
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # a native BLAS (if one is installed) on one thread per task, as Spark advises
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    spark = (
        SparkSession.builder.master(f"local[{n_workers}]")
        .appName("dgmm-bench")
        .config("spark.driver.memory", memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(n_workers))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    jvm = psutil.Process(SparkContext._gateway.proc.pid)
    return spark, jvm


def stop_spark(spark) -> None:
    """Stop the session and end the JVM that pyspark started (it outlives ``stop``)."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    spark.stop()
    if gateway is not None:
        gateway.shutdown()
        proc = getattr(gateway, "proc", None)
        if proc is not None:
            proc.stdin.close() if proc.stdin else None
            try:
                proc.wait(timeout=30)
            except Exception:
                proc.terminate()
                proc.wait(timeout=30)
    SparkContext._gateway = None
    SparkContext._jvm = None


def run_spark(case: Case, path: str, n_iter: int, n_workers: int, memory: str, seed: int):
    """Spark's start, seconds per iteration, mean log-likelihoods and JVM peak RSS."""
    from pyspark.ml.clustering import GaussianMixture
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    spark, jvm = start_spark(n_workers, memory)
    tree = lambda: [jvm, *jvm.children(recursive=True)]  # noqa: E731
    try:
        with PeakRSS(tree) as peak:
            columns = [f"x{j}" for j in range(case.n_features)]
            frame = spark.read.parquet(path)
            if case.scale != 1.0:
                frame = frame.select([(F.col(c) * case.scale).alias(c) for c in columns])
            frame = VectorAssembler(inputCols=columns, outputCol="features").transform(
                frame).select("features")
            n_partitions = frame.rdd.getNumPartitions()

            def fit(max_iter):
                estimator = GaussianMixture(k=case.n_components, maxIter=max_iter, tol=0.0,
                                            seed=seed, featuresCol="features")
                started = time.perf_counter()
                model = estimator.fit(frame)
                return model, time.perf_counter() - started

            start, _ = fit(0)
            weights = np.asarray(start.weights, dtype=float)
            means = np.stack([g.mean.toArray() for g in start.gaussians])
            covariances = np.stack([g.cov.toArray() for g in start.gaussians])
            model_1, seconds_1 = fit(1)
            loglik_1 = model_1.summary.logLikelihood / case.n_samples
            model_n, seconds_n = fit(n_iter)
            loglik_n = model_n.summary.logLikelihood / case.n_samples
            n_done = model_n.summary.numIter
    finally:
        stop_spark(spark)
    return {
        "start": (weights, means, covariances),
        "seconds_1": seconds_1,
        "seconds_n": seconds_n,
        "per_iter": (seconds_n - seconds_1) / (n_iter - 1),
        "loglik_1": loglik_1,
        "loglik_n": loglik_n,
        "n_iter": n_done,
        "peak": peak.peak,
        "partitions": n_partitions,
    }


# ------------------------------------------------------------------------------- dgmm


def persist_round_robin(client, X):
    """X's row chunks computed and held on the workers in turn (chunk i on worker
    i mod W), under the array's own keys: the scheduler's own placement of a persist can
    leave 7 chunks on one worker and 1 on the other. Returns (array, futures)."""
    import dask.array as da
    from distributed import wait

    workers = sorted(client.scheduler_info()["workers"])
    blocks = X.to_delayed(optimize_graph=True).ravel()
    futures = [client.compute(block, workers=[workers[i % len(workers)]])
               for i, block in enumerate(blocks)]
    wait(futures)
    graph = {future.key: future for future in futures}
    return da.Array(graph, X.name, chunks=X.chunks, dtype=X.dtype), futures


def run_dgmm(case: Case, path: str, start, n_iter: int, n_workers: int, part_bytes: int):
    """dgmm's seconds per iteration, mean log-likelihoods and summed peak RSS."""
    import psutil
    from distributed import Client, LocalCluster

    import dgmm
    from dgmm.data import open_parquet

    me = psutil.Process()
    with (
        PeakRSS(lambda: [me, *me.children(recursive=True)]) as peak,
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                     dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        X, info = open_parquet(path, target_chunk_bytes=part_bytes)
        if case.scale != 1.0:
            X = X * case.scale
        X, futures = persist_round_robin(client, X)
        held = {}
        for workers in client.who_has().values():
            for worker in workers:
                held[worker] = held.get(worker, 0) + 1
        weights, means, covariances = start
        stamps, iterates = [], []

        def on_step(step):
            stamps.append(time.perf_counter())
            iterates.append(step.state.params)

        model = dgmm.GaussianMixture(
            case.n_components, covariance_type="full", tol=0.0,
            max_iter=n_iter, weights_init=weights, means_init=means,
            precisions_init=np.linalg.inv(covariances), client=client,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tol=0 never converges, by design
            model.fit(X, callback=on_step)
        # stamps: after init, then after each iteration; skip the first iteration
        per_iter = np.diff(stamps)[1:]
        n_processes = len(me.children(recursive=True)) + 1
    return {
        "per_iter": float(per_iter.mean()) if per_iter.size else math.nan,
        "per_iter_all": per_iter,
        "loglik_1": model.lower_bounds_[0],
        "loglik_n": model.lower_bounds_[-1],
        "peak": peak.peak,
        # the parameters whose log-likelihood the last pass measured (theta_{n-1})
        "last_measured": iterates[-2],
        "processes": n_processes,
        "chunks": info.n_chunks,
        "held": sorted(held.values()),
    }


def spark_style_loglik(X: np.ndarray, weights, means, covariances, rows: int = 65536):
    """Mean over rows of log sum_k (EPSILON + w_k N(x | mu_k, Sigma_k)): the quantity
    Spark reports (its EPSILON floor included), evaluated here in NumPy."""
    from scipy.stats import multivariate_normal

    eps = np.finfo(np.float64).eps
    total = 0.0
    for start in range(0, X.shape[0], rows):
        block = X[start : start + rows]
        density = np.zeros(block.shape[0])
        for w, mu, cov in zip(weights, means, covariances, strict=True):
            density += eps + w * np.exp(multivariate_normal.logpdf(block, mu, cov))
        total += np.log(density).sum()
    return total / X.shape[0]


# -------------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--iterations", type=int, default=20,
                        help="EM iterations of each fit (at least 2; default 20)")
    parser.add_argument("--rows-scale", type=float, default=1.0,
                        help="multiply each case's N by this (e.g. 0.02 for a smoke run)")
    parser.add_argument("--path", default=None,
                        help="directory for the cases' Parquet data (kept; a case's data "
                        "are written to PATH/CASE unless present); default: a temporary "
                        "directory, removed at the end")
    parser.add_argument("--workers", type=int, default=2,
                        help="dgmm worker processes (1 thread each) = Spark local[W] threads")
    parser.add_argument("--spark-memory", default="4g", help="spark.driver.memory")
    parser.add_argument("--part-mib", type=float, default=16.0,
                        help="about this many MiB per Parquet part file (= one dgmm task)")
    parser.add_argument("--scale64", type=float, default=0.3,
                        help="factor applied to the full64 data for both (see above)")
    parser.add_argument("--seed", type=int, default=0, help="data seed; Spark's start seed")
    add_wait_idle_option(parser)
    args = parser.parse_args(argv)
    if args.iterations < 2:
        parser.error("--iterations must be at least 2")
    if args.rows_scale <= 0:
        parser.error("--rows-scale must be positive")
    return args


def scaled_case(case: Case, args) -> Case:
    n = max(10 * case.n_components, int(round(case.n_samples * args.rows_scale)))
    scale = args.scale64 if case.name == "full64" else 1.0
    return Case(case.name, n, case.n_features, case.n_components, scale)


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = missing_requirements()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    import logging

    import psutil

    logging.getLogger("distributed").setLevel(logging.ERROR)
    memory = psutil.virtual_memory().total
    print(f"machine: {os.cpu_count()} cores, {memory / 2**30:.1f} GiB; {load_average()}")
    print(f"dgmm: LocalCluster {args.workers} workers x 1 thread, data persisted; "
          f"Spark: local[{args.workers}], driver memory {args.spark_memory}; "
          f"{args.iterations} iterations, tol 0, the same start")
    root = args.path or tempfile.mkdtemp(prefix="bench-vs-spark-")
    rows = []
    try:
        for name in args.cases:
            case = scaled_case(CASES[name], args)
            path = os.path.join(root, f"{case.name}-n{case.n_samples}.parquet")
            if os.path.exists(path):
                from dgmm.data import open_parquet

                info = open_parquet(path, target_chunk_bytes=1)[1]  # a task per part
                part_rows = info.row_chunks[0]
                print(f"\n{case.name}: reusing {path}")
            else:
                info, part_rows = write_data(case, path, args.workers, args.part_mib, args.seed)
                print(f"\n{case.name}: wrote {path}")
            part_bytes = part_rows * case.n_features * 8
            note = (f"; data x {case.scale} for both (Spark's linear-space densities)"
                    if case.scale != 1.0 else "")
            print(f"{case.name}: N={case.n_samples:,} d={case.n_features} "
                  f"K={case.n_components} full, {info.nbytes / 2**20:.0f} MiB in "
                  f"{-(-case.n_samples // part_rows)} part files{note}")

            wait_for_idle(args.wait_idle)
            print(f"  Spark ... ({load_average()})")
            spark = run_spark(case, path, args.iterations, args.workers, args.spark_memory,
                              args.seed)
            print(f"  Spark: T(1) {spark['seconds_1']:.1f} s, T({args.iterations}) "
                  f"{spark['seconds_n']:.1f} s, {spark['per_iter']:.3f} s/iteration, "
                  f"peak RSS {spark['peak'] / 2**30:.2f} GiB (JVM), "
                  f"{spark['partitions']} partitions; {load_average()}")
            wait_for_idle(args.wait_idle)
            print(f"  dgmm  ... ({load_average()})")
            ours = run_dgmm(case, path, spark["start"], args.iterations, args.workers,
                            part_bytes)
            print(f"  dgmm:  {ours['per_iter']:.3f} s/iteration (min "
                  f"{ours['per_iter_all'].min():.3f}, max {ours['per_iter_all'].max():.3f}), "
                  f"peak RSS {ours['peak'] / 2**30:.2f} GiB ({ours['processes']} processes), "
                  f"{ours['chunks']} tasks per pass, chunks held per worker {ours['held']}; "
                  f"{load_average()}")
            from dgmm.data import open_parquet

            X = open_parquet(path)[0].compute(scheduler="threads") * case.scale
            last = ours["last_measured"]
            spark_formula = (
                spark_style_loglik(X, *spark["start"]),
                spark_style_loglik(X, last.weights, last.means, last.covariances),
            )
            del X
            print("  mean log-likelihood reported / Spark's formula (EPSILON floor) "
                  "evaluated in NumPy on dgmm's parameters:")
            print(f"    the start (pass 1):  Spark {spark['loglik_1']:.6f}  dgmm "
                  f"{ours['loglik_1']:.6f} / {spark_formula[0]:.6f}")
            print(f"    pass {args.iterations}:{'':12}Spark {spark['loglik_n']:.6f}  dgmm "
                  f"{ours['loglik_n']:.6f} / {spark_formula[1]:.6f}  (Spark - dgmm in "
                  f"Spark's formula {spark['loglik_n'] - spark_formula[1]:+.2e})")
            rows.append((case, spark, ours))
    finally:
        if args.path is None:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\n{'case':8} {'Spark s/it':>11} {'dgmm s/it':>10} {'speed-up':>9} "
          f"{'Spark GiB':>10} {'dgmm GiB':>9} {'memory':>7}")
    for case, spark, ours in rows:
        print(f"{case.name:8} {spark['per_iter']:11.3f} {ours['per_iter']:10.3f} "
              f"{spark['per_iter'] / ours['per_iter']:8.2f}x {spark['peak'] / 2**30:10.2f} "
              f"{ours['peak'] / 2**30:9.2f} {ours['peak'] / spark['peak']:7.2f}")
    print("speed-up = Spark / dgmm seconds per iteration; memory = dgmm / Spark peak RSS "
          "(targets: >= 5x, <= 0.33)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
