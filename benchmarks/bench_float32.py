"""Seconds per EM pass of the chunk kernels on float32 data against float64, in one run.

Each pass is ``dgmm.core.kernels.chunk_stats`` over every chunk of the data in this process
on one BLAS thread (the work of one worker's chunk tasks, no scheduler), merged with
``merge_all``. The parameters are those after a few float64 EM iterations from the
benchmark's shared start (as in ``bench_vs_sklearn.py``), so the responsibilities look like
a fit's. float64 and float32 passes alternate, repeated; the minimum of each is reported,
with a single-thread float64 GEMM rate measured between them and the load average.

    python benchmarks/bench_float32.py                     # full16, full64, diag16
    python benchmarks/bench_float32.py --cases full16 --repeats 5 --no-skip

``--no-skip`` computes every (row, component) pair (no pruned E-step, no gathered scatter).
vs GEMM = nominal GFLOP/s (full 4NKd^2, diag 8NKd per pass) / single-thread GEMM GFLOP/s.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vs_sklearn import CASES, QUICK_CASES, compute_every_pair, initial_parameters, make_data  # noqa: E402
from idle import add_wait_idle_option, wait_for_idle  # noqa: E402

from dgmm.core import kernels  # noqa: E402
from dgmm.core.mstep import m_step  # noqa: E402
from dgmm.core.params import GMMParams  # noqa: E402
from dgmm.core.stats import merge_all  # noqa: E402
from dgmm.core.threads import single_blas_thread  # noqa: E402


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def gemm_rate(size: int = 1024, repeats: int = 3) -> float:
    """float64 GEMM GFLOP/s on one thread (call inside ``single_blas_thread``)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    out = np.empty((size, size))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def one_pass(X, params, chunk_rows):
    return merge_all([kernels.chunk_stats(X[s : s + chunk_rows], params)
                      for s in range(0, X.shape[0], chunk_rows)])


def start_parameters(X, case, warm_iterations):
    init = initial_parameters(X, case)
    prec = init["precisions_init"]
    cov = np.linalg.inv(prec) if case.covariance_type == "full" else 1.0 / prec
    params = GMMParams.from_covariances(init["weights_init"], init["means_init"], cov,
                                        case.covariance_type)
    for _ in range(warm_iterations):
        params = m_step(one_pass(X, params, 65536), 1e-6).params
    return params


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES),
                        default=["full16", "full64", "diag16"])
    parser.add_argument("--repeats", type=int, default=5, help="passes per dtype")
    parser.add_argument("--warm", type=int, default=3,
                        help="float64 EM iterations before the timed passes")
    parser.add_argument("--chunk-mib", type=float, default=16.0,
                        help="target MiB per float64 chunk")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--no-skip", action="store_true",
                        help="compute every (row, component) pair")
    add_wait_idle_option(parser)
    args = parser.parse_args(argv)
    if args.no_skip:
        compute_every_pair()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, cores {os.cpu_count()}, "
          f"one BLAS thread; skipping: {'off' if args.no_skip else 'on'}")
    rows = []
    with single_blas_thread():
        for name in args.cases:
            case = (QUICK_CASES if args.quick else CASES)[name]
            X64 = make_data(case)
            X32 = X64.astype(np.float32)
            params = start_parameters(X64, case, args.warm)
            chunk_rows = max(1, int(args.chunk_mib * 2**20 // (8 * case.n_features)))
            wait_for_idle(args.wait_idle)
            times = {"float64": [], "float32": []}
            gemm = []
            loglik = {}
            for _ in range(args.repeats):
                for dtype, X in (("float64", X64), ("float32", X32)):
                    start = time.perf_counter()
                    stats = one_pass(X, params, chunk_rows)
                    times[dtype].append(time.perf_counter() - start)
                    loglik[dtype] = stats.loglik / stats.n
                gemm.append(gemm_rate())
            t64, t32 = min(times["float64"]), min(times["float32"])
            flops = case.nominal_flops()
            rate = max(gemm)
            print(f"{name}: float64 s/pass {np.round(times['float64'], 3).tolist()}, float32 "
                  f"{np.round(times['float32'], 3).tolist()}, GEMM GFLOP/s "
                  f"{np.round(gemm, 1).tolist()}; load average {load_average()}", flush=True)
            rows.append((case, t64, t32, flops / t64 / 1e9 / rate, flops / t32 / 1e9 / rate,
                         abs(loglik["float32"] - loglik["float64"]) / abs(loglik["float64"])))
    print()
    header = (f"{'case':8} {'N':>9} {'d':>3} {'K':>3} | {'f64 s':>7} {'f32 s':>7} "
              f"{'f64/f32':>7} | {'f64 vs GEMM':>11} {'f32 vs GEMM':>11} | {'loglik rel':>10}")
    print(header)
    print("-" * len(header))
    for case, t64, t32, g64, g32, diff in rows:
        print(f"{case.name:8} {case.n_samples:9d} {case.n_features:3d} {case.n_components:3d} | "
              f"{t64:7.3f} {t32:7.3f} {t64 / t32:7.2f} | {g64:11.2f} {g32:11.2f} | "
              f"{diff:10.1e}")
    print(f"\nf64/f32 = float64 / float32 seconds per pass (minima; target >= 1.6 on full16 "
          f"and full64); load average at the end {load_average()} on {os.cpu_count()} cores "
          "(figures are comparable only within one run).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
