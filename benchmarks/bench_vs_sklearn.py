"""Seconds per EM iteration: dgmm on a distributed LocalCluster against scikit-learn.

Both fit the same in-memory data from the same initial parameters (weights_init,
means_init, precisions_init) for the same number of iterations (tol=0, max_iter=n), and
the table shows the wall time per EM iteration, initialisation excluded:

- dgmm: a ``LocalCluster`` of ``--workers`` worker processes x 1 thread; the data are
  placed on the workers first as a Dask array of row chunks (about ``--chunk-mib``
  each, a multiple of the worker count), so the transfer is not timed. One untimed warm-up
  iteration, then the time between the fit callback's successive iteration reports (the
  pass over the data plus the M-step on the driver).
- kernel: the seconds per pass that the busiest worker spent inside the chunk tasks
  (``kernels.chunk_stats``), from the cluster's task stream during the timed fit: the
  time of a pass if the Dask layer cost nothing (dgmm minus kernel is the Dask overhead
  plus the M-step on the driver).
- in-proc (``--in-process``): dgmm with no cluster, the default when no client is given:
  the same row chunks on Dask's threaded scheduler in this process, a thread per core.
- scikit-learn: ``sklearn.mixture.GaussianMixture`` in this process once the cluster is
  shut down (BLAS threads on every core), per iteration (E-step, M-step, lower bound) from
  timestamps taken after each M-step.

GFLOP/s are nominal: 4 N K d^2 per iteration for 'full' (2 N K d^2 for the Mahalanobis
products, 2 N K d^2 for the weighted scatter), 8 N K d for 'diag' (4 N K d for the E-step's
two (N x d) @ (d x K) products, 4 N K d for the first and second moments). They are set
against a float64 GEMM (a square ``--gemm-size`` matmul with NumPy on every core) measured
in the same run around every timed dgmm iteration: just before and just after it, by the
driver while the workers idle (the machine's speed drifts, by 10-20% from one iteration to
the next on a shared virtual machine; a rate from minutes earlier can be 30% off). The
case's reference is the mean of the per-iteration ones weighted by the iterations' times.

The kernels skip work that cannot change the result (see ``dgmm/kernels.py``): with
separated components, most (row, component) pairs of the full-covariance E-step and
scatter. Nominal flops do not shrink with that, so GFLOP/s then exceed what BLAS does;
``--no-skip`` makes the workers compute every pair, for the kernels' dense rate.

Targets: dgmm at most 0.5x scikit-learn's time per iteration in every case, and
at least half of the GEMM rate on the d=64 case.

Usage::

    python benchmarks/bench_vs_sklearn.py                 # the three cases, 5 iterations
    python benchmarks/bench_vs_sklearn.py --quick         # small sizes, a smoke run
    python benchmarks/bench_vs_sklearn.py --cases full64 --iters 8
    python benchmarks/bench_vs_sklearn.py --cases full64 --no-skip --no-sklearn
    python benchmarks/bench_vs_sklearn.py --in-process    # also dgmm with no cluster

On processors where OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set in the environment, they
slow a current NumPy: unset both for the benchmark command alone
(``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/...``); the script prints
which BLAS kernel the driver and the workers run.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
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
    covariance_type: str

    def nominal_flops(self) -> float:
        """Nominal flops of one EM iteration (see the module docstring)."""
        n, d, k = self.n_samples, self.n_features, self.n_components
        if self.covariance_type == "full":
            return 4.0 * n * k * d * d
        if self.covariance_type == "diag":
            return 8.0 * n * k * d
        raise ValueError(f"no flop count for covariance_type={self.covariance_type!r}")


CASES = {
    "full16": Case("full16", 1_000_000, 16, 8, "full"),
    "diag16": Case("diag16", 1_000_000, 16, 8, "diag"),
    "full64": Case("full64", 200_000, 64, 16, "full"),
}
QUICK_CASES = {
    "full16": Case("full16", 40_000, 16, 8, "full"),
    "diag16": Case("diag16", 40_000, 16, 8, "diag"),
    "full64": Case("full64", 8_000, 64, 16, "full"),
}


def make_data(case: Case, seed: int = 0) -> np.ndarray:
    """Rows from a mixture of K anisotropic Gaussians, shape (N, d), float64."""
    rng = np.random.default_rng(seed)
    n, d, k = case.n_samples, case.n_features, case.n_components
    centers = rng.normal(scale=4.0, size=(k, d))
    mixing = np.eye(d) + 0.3 * rng.normal(size=(k, d, d)) / math.sqrt(d)
    labels = rng.integers(k, size=n)
    X = rng.standard_normal(size=(n, d))
    for j in range(k):
        rows = labels == j
        X[rows] = X[rows] @ mixing[j].T + centers[j]
    return X


def initial_parameters(X: np.ndarray, case: Case, seed: int = 1) -> dict:
    """weights_init, means_init and precisions_init shared by both implementations.

    Means are K distinct rows of X; every component starts with the precision of the whole
    data set (full) or its per-feature inverse variances (diag); weights are equal.
    """
    rng = np.random.default_rng(seed)
    k = case.n_components
    sample = X[rng.choice(X.shape[0], size=min(X.shape[0], 20_000), replace=False)]
    means = X[rng.choice(X.shape[0], size=k, replace=False)]
    if case.covariance_type == "full":
        precision = np.linalg.inv(np.cov(sample, rowvar=False))
        precisions = np.repeat(precision[None], k, axis=0)
    else:
        precisions = np.repeat((1.0 / sample.var(axis=0))[None], k, axis=0)
    return {"weights_init": np.full(k, 1.0 / k), "means_init": means,
            "precisions_init": precisions}


class GemmProbe:
    """Float64 GEMM rate of NumPy on every core of this process, in GFLOP/s: a square
    ``size`` x ``size`` matmul on operands allocated once, best of ``repeats``."""

    def __init__(self, size: int):
        rng = np.random.default_rng(0)
        self.size = size
        self.a = rng.standard_normal((size, size))
        self.b = rng.standard_normal((size, size))
        self.out = np.empty((size, size))
        np.matmul(self.a, self.b, out=self.out)

    def __call__(self, repeats: int = 2) -> float:
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.matmul(self.a, self.b, out=self.out)
            best = min(best, time.perf_counter() - t0)
        return 2.0 * self.size**3 / best / 1e9


def compute_every_pair() -> None:
    """In this process, make dgmm's kernels compute every (row, component) pair: no
    pruned E-step and no gathered scatter (responsibilities under exp(-50) of the row's
    largest are still flushed to 0). Same results to rounding, dense cost."""
    from dgmm.core.kernels import moments, pruning

    pruning.PRUNE_MAX_SHARE = 0.0
    moments.GATHER_MAX_SHARE = 0.0


def blas_description() -> str:
    """The BLAS this process runs: library, kernel (architecture) and thread count."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return "unknown (threadpoolctl missing)"
    parts = [
        f"{i.get('internal_api')} {i.get('version')} kernel={i.get('architecture')} "
        f"threads={i.get('num_threads')}"
        for i in threadpool_info() if i.get("user_api") == "blas"
    ]
    return "; ".join(parts) or "none found"


class OtherLoad:
    """Share of the machine's CPU time that other processes used during a ``with`` block.

    Busy time of all CPUs minus the CPU time of this process and its children (the
    cluster's workers), over wall time x cores. Benchmarks are only meaningful near 0.
    """

    def __init__(self):
        import psutil

        self._psutil = psutil
        self.share = math.nan

    def _ours(self) -> float:
        me = self._psutil.Process()
        total = 0.0
        for proc in [me, *me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except self._psutil.Error:
                pass
        return total

    def _busy(self) -> float:
        t = self._psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def __enter__(self):
        self._t0, self._busy0, self._ours0 = time.perf_counter(), self._busy(), self._ours()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self._t0
        others = (self._busy() - self._busy0) - (self._ours() - self._ours0)
        self.share = max(0.0, others) / (wall * (os.cpu_count() or 1))
        return False


def chunk_rows_for(case: Case, n_workers: int, chunk_mib: float) -> int:
    """Rows per chunk: about ``chunk_mib`` MiB, with a chunk count that is a multiple of
    the worker count so that every worker gets the same share."""
    row_bytes = case.n_features * 8
    total = case.n_samples * row_bytes
    per_worker = math.ceil(total / (n_workers * chunk_mib * 2**20))
    n_chunks = max(1, per_worker) * n_workers
    return math.ceil(case.n_samples / n_chunks)


def place_chunks(client, X: np.ndarray, chunk_rows: int):
    """A Dask array of X's row chunks held by the workers, dealt round-robin so that each
    holds the same number (the scheduler's own placement can leave 3 and 5).

    Returns the array, the chunks' futures and {worker: chunks held}.
    """
    import dask.array as da
    from dask.tokenize import tokenize

    workers = sorted(client.scheduler_info()["workers"])
    starts = range(0, X.shape[0], chunk_rows)
    name = "bench-data-" + tokenize(X.shape, chunk_rows, time.time())
    futures = []
    for i, start in enumerate(starts):
        # the chunk is stored under the array's own key: no alias task that the scheduler
        # could run (and copy the chunk to) on another worker during the passes
        key = (name, i, 0)
        scattered = client.scatter({key: X[start : start + chunk_rows]},
                                   workers=[workers[i % len(workers)]])
        futures.append(scattered[key])
    graph = {future.key: future for future in futures}
    sizes = tuple(min(chunk_rows, X.shape[0] - start) for start in starts)
    Xd = da.Array(graph, name, chunks=(sizes, (X.shape[1],)), dtype=X.dtype)
    held = {w: sum(1 for i in range(len(futures)) if i % len(workers) == j)
            for j, w in enumerate(workers)}
    return Xd, futures, held


def time_dgmm(client, X, case: Case, init: dict, n_iter: int, chunk_rows: int,
              gemm: GemmProbe) -> dict:
    """dgmm on the cluster: seconds per iteration and per pass, the GEMM rate around each
    iteration, kernel-only seconds per pass on the workers, the fitted model and the
    chunks each worker holds.

    After initialisation and after every iteration, the fit callback measures ``gemm``
    on the driver while the workers idle (the next pass starts when the callback
    returns); an iteration's time runs from the end of one callback to the start of the
    next, so the probes are not timed, and its GEMM reference is the mean of the probes
    just before and just after it.
    """
    from distributed import get_task_stream

    import dgmm

    Xd, chunks, held = place_chunks(client, X, chunk_rows)

    def fit(max_iter, probe):
        begins, ends, passes, rates = [], [], [], []

        def callback(info):
            begins.append(time.perf_counter())
            if info.phase == "iteration":
                passes.append(info.seconds)
            if probe:
                rates.append(gemm())
            ends.append(time.perf_counter())

        model = dgmm.GaussianMixture(
            case.n_components, covariance_type=case.covariance_type, tol=0.0,
            max_iter=max_iter, client=client, **init,
        )
        model.fit(Xd, callback=callback)
        per_iter = np.array(begins[1:]) - np.array(ends[:-1])
        rates = np.array(rates)
        gemm_per_iter = 0.5 * (rates[1:] + rates[:-1]) if probe else None
        return per_iter, np.array(passes), gemm_per_iter, model

    fit(1, probe=False)  # warm-up: imports and code on the workers, first graph
    with OtherLoad() as load, get_task_stream(client) as stream:
        per_iter, passes, gemm_per_iter, model = fit(n_iter, probe=True)
    client.cancel(chunks)
    return {"per_iter": per_iter, "passes": passes, "gemm": gemm_per_iter, "model": model,
            "held": held, "kernel": chunk_task_seconds(stream.data, n_iter),
            "load": load.share, "shares": chunk_task_seconds_per_worker(stream.data, n_iter)}


def time_dgmm_in_process(X, case: Case, init: dict, n_iter: int, chunk_rows: int):
    """(seconds per iteration, other processes' CPU share) of dgmm with no cluster: the
    NumPy array in row chunks of ``chunk_rows`` on Dask's threaded scheduler in this
    process (a thread per core), after one untimed warm-up iteration."""
    import dask.array as da

    import dgmm

    Xd = da.from_array(X, chunks=(chunk_rows, X.shape[1]))

    def fit(max_iter):
        stamps = []
        model = dgmm.GaussianMixture(
            case.n_components, covariance_type=case.covariance_type, tol=0.0,
            max_iter=max_iter, **init,
        )
        model.fit(Xd, callback=lambda info: stamps.append(time.perf_counter()))
        return np.diff(stamps)

    fit(1)
    with OtherLoad() as load:
        per_iter = fit(n_iter)
    return per_iter, load.share


def chunk_task_seconds(task_stream: list, n_passes: int) -> float:
    """Seconds per pass the slowest worker spent computing chunk tasks (the E-step
    kernel), from a ``distributed.get_task_stream`` record; nan when none is found."""
    per_worker = chunk_task_seconds_per_worker(task_stream, n_passes)[0]
    return max(per_worker.values()) if per_worker else math.nan


def chunk_task_seconds_per_worker(task_stream: list, n_passes: int) -> dict:
    """({worker: seconds per pass in chunk tasks}, {worker: chunk tasks per pass}), from a
    ``distributed.get_task_stream`` record: shows how evenly the passes are shared."""
    per_worker: dict[str, float] = {}
    tasks: dict[str, int] = {}
    for record in task_stream:
        key = record["key"]
        name = key[0] if isinstance(key, tuple) else key
        if "estep" not in str(name):
            continue
        busy = sum(s["stop"] - s["start"] for s in record["startstops"]
                   if s["action"] == "compute")
        per_worker[record["worker"]] = per_worker.get(record["worker"], 0.0) + busy
        tasks[record["worker"]] = tasks.get(record["worker"], 0) + 1
    return {w: busy / n_passes for w, busy in per_worker.items()}, {
        w: n / n_passes for w, n in tasks.items()}


def time_sklearn(X, case: Case, init: dict, n_iter: int):
    """(seconds per iteration, fitted model, other processes' CPU share) of scikit-learn
    in this process."""
    from sklearn.mixture import GaussianMixture

    class StampedGaussianMixture(GaussianMixture):
        """scikit-learn's estimator with a timestamp after init and after each M-step."""

        def _initialize_parameters(self, *args, **kwargs):
            super()._initialize_parameters(*args, **kwargs)
            self.stamps_ = [time.perf_counter()]

        def _m_step(self, *args, **kwargs):
            super()._m_step(*args, **kwargs)
            self.stamps_.append(time.perf_counter())

    model = StampedGaussianMixture(
        case.n_components, covariance_type=case.covariance_type, tol=0.0, max_iter=n_iter,
        init_params="random_from_data", random_state=0, **init,
    )
    with OtherLoad() as load:
        t0 = time.perf_counter()
        model.fit(X)
        total = time.perf_counter() - t0
    stamps = getattr(model, "stamps_", [])
    if len(stamps) != n_iter + 1:  # private hooks changed: fall back to the whole fit
        return np.full(n_iter, total / n_iter), model, load.share
    return np.diff(stamps), model, load.share


def max_rel_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES),
                        help="cases to run (default: all three)")
    parser.add_argument("--iters", type=int, default=5, help="EM iterations per fit")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1 thread)")
    parser.add_argument("--chunk-mib", type=float, default=16.0, help="target MiB per chunk")
    parser.add_argument("--gemm-size", type=int, default=None,
                        help="side of the square GEMM (default 4096, 1024 with --quick)")
    parser.add_argument("--no-sklearn", action="store_true", help="time dgmm only")
    parser.add_argument("--in-process", action="store_true",
                        help="also time dgmm with no cluster (Dask's threaded scheduler in "
                        "this process, the default when no client is given)")
    parser.add_argument("--stealing", action=argparse.BooleanOptionalAction, default=True,
                        help="the scheduler's work stealing (default on)")
    parser.add_argument("--no-skip", action="store_true",
                        help="make the workers compute every (row, component) pair: no "
                        "pruned E-step, no gathered scatter (the kernels' dense rate)")
    add_wait_idle_option(parser)
    args = parser.parse_args(argv)
    if args.iters < 2:
        parser.error("--iters must be at least 2")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from distributed import Client, LocalCluster
    from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning

    from dgmm.estimators.gaussian_mixture import ConvergenceWarning

    warnings.simplefilter("ignore", SkConvergenceWarning)
    warnings.simplefilter("ignore", ConvergenceWarning)

    def settle():
        wait_for_idle(args.wait_idle)

    cases = [(QUICK_CASES if args.quick else CASES)[name] for name in args.cases]
    gemm_size = args.gemm_size or (1024 if args.quick else 4096)

    openblas_env = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, cores {os.cpu_count()}")
    print(f"driver BLAS: {blas_description()}")
    if {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"} & openblas_env.keys():
        print(f"WARNING: {openblas_env} is set and slows OpenBLAS; rerun with "
              "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE")
    settle()
    gemm = GemmProbe(gemm_size)
    with OtherLoad() as load:
        rate = gemm(3)
    print(f"float64 GEMM {gemm_size}x{gemm_size}, all cores: {rate:.1f} GFLOP/s "
          f"(other load {load.share:.0%})")

    data = {}
    for case in cases:
        X = make_data(case)
        data[case.name] = (X, initial_parameters(X, case))

    rows = {}
    import dask

    with dask.config.set({"distributed.scheduler.work-stealing": args.stealing}):
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    client = Client(cluster)
    try:
        if args.no_skip:
            client.run(compute_every_pair)
        worker_blas = client.run(blas_description)
        print(f"worker BLAS: {sorted(set(worker_blas.values()))}; skipping of "
              f"negligible pairs: {'off (--no-skip)' if args.no_skip else 'on'}")
        for case in cases:
            X, init = data[case.name]
            chunk_rows = chunk_rows_for(case, args.workers, args.chunk_mib)
            settle()
            r = time_dgmm(client, X, case, init, args.iters, chunk_rows, gemm)
            print(f"{case.name}: {math.ceil(case.n_samples / chunk_rows)} chunks of "
                  f"{chunk_rows} rows, chunks per worker {sorted(r['held'].values())}; "
                  f"{load_average()}; dgmm "
                  f"s/iter {np.round(r['per_iter'], 3).tolist()}, pass only "
                  f"{np.round(r['passes'], 3).tolist()}, chunk tasks {r['kernel']:.3f} s/pass")
            flops = case.nominal_flops()
            print(f"  GEMM GFLOP/s around each iteration {np.round(r['gemm'], 1).tolist()}; "
                  "dgmm GFLOP/s / GEMM per iteration "
                  f"{np.round(flops / r['per_iter'] / 1e9 / r['gemm'], 2).tolist()}")
            seconds, tasks = r["shares"]
            print("  chunk tasks per worker and pass: " + ", ".join(
                f"{seconds[w]:.3f} s in {tasks[w]:.1f} tasks" for w in sorted(seconds)))
            rows[case.name] = {"dgmm": float(r["per_iter"].mean()), "model": r["model"],
                               "kernel": r["kernel"], "load": r["load"],
                               # the reference rate over the fit, time-weighted
                               "gemm": float(np.average(r["gemm"], weights=r["per_iter"]))}
    finally:
        client.close()
        cluster.close()

    if args.in_process and args.no_skip:
        compute_every_pair()  # here too, for the in-process fits (scikit-learn unaffected)
    for case in cases:
        X, init = data[case.name]
        if args.in_process:
            settle()
            chunk_rows = chunk_rows_for(case, args.workers, args.chunk_mib)
            per_iter, load = time_dgmm_in_process(X, case, init, args.iters, chunk_rows)
            print(f"{case.name}: dgmm in process (no cluster) s/iter "
                  f"{np.round(per_iter, 3).tolist()}")
            rows[case.name]["in_process"] = float(per_iter.mean())
            rows[case.name]["load"] = max(rows[case.name]["load"], load)
        if not args.no_sklearn:
            settle()
            per_iter, sk, load = time_sklearn(X, case, init, args.iters)
            print(f"{case.name}: scikit-learn s/iter {np.round(per_iter, 3).tolist()}; "
                  f"{load_average()}")
            rows[case.name]["sklearn"] = float(per_iter.mean())
            rows[case.name]["load"] = max(rows[case.name]["load"], load)
            ours = rows[case.name]["model"]
            rows[case.name]["diff"] = max(
                max_rel_diff(ours.means_, sk.means_),
                max_rel_diff(ours.covariances_, sk.covariances_),
                abs(ours.lower_bound_ - sk.lower_bound_) / abs(sk.lower_bound_),
            )

    print()
    in_process = (f" | {'in-proc':>7} {'ratio':>6}" if args.in_process else "")
    header = (f"{'case':8} {'N':>9} {'d':>3} {'K':>3} {'type':5} | {'dgmm s/it':>9} "
              f"{'kernel':>7} {'sklearn':>8} {'ratio':>6} | {'dgmm GF/s':>9} {'sk GF/s':>8} "
              f"{'GEMM':>6} {'vs GEMM':>7} | {'max rel diff':>12} {'other load':>10}"
              + in_process)
    print(header)
    print("-" * len(header))
    for case in cases:
        r = rows[case.name]
        flops = case.nominal_flops()
        sk = r.get("sklearn", math.nan)
        print(f"{case.name:8} {case.n_samples:9d} {case.n_features:3d} {case.n_components:3d} "
              f"{case.covariance_type:5} | {r['dgmm']:9.3f} {r['kernel']:7.3f} {sk:8.3f} "
              f"{r['dgmm'] / sk:6.2f} | {flops / r['dgmm'] / 1e9:9.1f} {flops / sk / 1e9:8.1f} "
              f"{r['gemm']:6.1f} {flops / r['dgmm'] / 1e9 / r['gemm']:7.2f} | "
              f"{r.get('diff', math.nan):12.1e} "
              f"{r['load']:10.0%}"
              + (f" | {r['in_process']:7.3f} {r['in_process'] / sk:6.2f}" if args.in_process
                 else ""))
    print(f"\nratio = dgmm / sklearn seconds per iteration (target <= 0.5); GEMM = float64 "
          f"GEMM GFLOP/s on {os.cpu_count()} cores, measured around each dgmm iteration, "
          "mean weighted by the iterations' times; vs GEMM = dgmm GFLOP/s / GEMM (target >= 0.5 on "
          "full64); kernel = seconds per pass the busiest worker spent "
          "in chunk tasks; flops: full 4NKd^2, diag 8NKd per iteration; max rel diff = "
          "dgmm vs scikit-learn (means, covariances, lower bound); other load = CPU share "
          "used by other processes while timing (figures are valid only near 0%)"
          + ("; in-proc = dgmm s/iter with no cluster (Dask's threaded scheduler in this "
             "process), ratio = in-proc / sklearn" if args.in_process else "") + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
