"""The figures of the scale model in ``docs/scaling.md``, measured on a LocalCluster.

In one run, on a ``LocalCluster`` of ``--workers`` processes x 1 thread:

1. scheduler overhead per task: the wall time of a pass whose chunk tasks do (almost) no
   work, against the number of chunks, fitted by least squares to ``a + o * tasks``:
   (i) a trivial graph (a no-op per chunk, merged by dgmm's fixed tree of fan-in 8);
   (ii) a real dgmm E-step pass (``dgmm.engine.passes.estep_pass``) over tiny persisted
   chunks of 16 rows (d = 16, K = 8, full), parameters broadcast once;
2. bytes of statistics per chunk: ``len(pickle.dumps(stats))`` of one chunk's
   ``SuffStats`` for each covariance type and a few (K, d), set against the formula
   8 (K + 2 K d + s2) bytes plus a constant (``shift`` and ``s1`` are K x d each, ``nk`` K,
   ``s2`` the family's packed second moments: full K d (d + 1) / 2, tied d (d + 1) / 2,
   diag and spherical K d);
3. tasks per pass: the keys of a dgmm pass graph over a Zarr store of C chunks, against
   the formula 2 C + M + 2 (a read and an E-step task per chunk, M = sum_l ceil(C / 8^l)
   tree merges, the parameters and the reader as one key each);
4. the E-step rate per worker: rows per second per worker of a pass over persisted data
   (N = ``--rows``, d = 16, K = 8, full and diag, chunks of ``--chunk-mib``);

and prints the projection for ``--project-tib`` TiB on ``--project-workers`` workers and
the task size that keeps the per-task overhead under 5% of a pass (see docs/scaling.md).

Usage::

    python benchmarks/bench_scaling.py              # the figures of docs/scaling.md
    python benchmarks/bench_scaling.py --quick      # small sizes, a smoke run
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import tempfile
import time
import warnings

import numpy as np

SPLIT_EVERY = 8
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def s2_doubles(covariance_type: str, k: int, d: int) -> int:
    return {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2,
            "diag": k * d, "spherical": k * d}[covariance_type]


def stats_bytes_formula(covariance_type: str, k: int, d: int) -> int:
    """Bytes of the arrays of one chunk's statistics: 8 (K + 2 K d + s2)."""
    return 8 * (k + 2 * k * d + s2_doubles(covariance_type, k, d))


def merge_tasks(n_chunks: int, split_every: int = SPLIT_EVERY) -> int:
    """Merge tasks of the fixed tree: sum over levels of ceil(n / split_every^level)."""
    total, n = 0, n_chunks
    while n > 1:
        n = math.ceil(n / split_every)
        total += n
    return total


def tasks_formula(n_chunks: int) -> int:
    return 2 * n_chunks + merge_tasks(n_chunks) + 2


def load_average() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def fit_line(xs, ys):
    """(intercept, slope) of the least-squares line through (xs, ys)."""
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(intercept), float(slope)


def _noop(*_):
    return 0


def _merge_noop(parts):
    return 0


def trivial_pass_seconds(client, n_chunks: int, repeats: int) -> float:
    """Median wall time of computing n_chunks no-op tasks merged by a tree of fan-in 8."""
    import dask

    times = []
    for repeat in range(repeats):
        started = time.perf_counter()
        token = f"{n_chunks}-{repeat}-{time.time_ns()}"
        parts = [dask.delayed(_noop, pure=True)(i, token) for i in range(n_chunks)]
        merge = dask.delayed(_merge_noop, pure=True)
        while len(parts) > 1:
            parts = [merge(parts[i : i + SPLIT_EVERY])
                     for i in range(0, len(parts), SPLIT_EVERY)]
        client.compute(parts[0], sync=True)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def dgmm_pass_seconds(client, n_chunks: int, repeats: int, rows_per_chunk: int = 16):
    """Median wall time of a dgmm E-step pass over n_chunks persisted chunks of a few rows
    (graph construction, submission, scheduling, the kernels, the merges, the result)."""
    import dask.array as da
    from distributed import wait

    from dgmm.data.synthetic import sample_chunk, true_params
    from dgmm.engine import passes

    params = true_params(16, 8, "full", seed=1)
    X = sample_chunk(n_chunks * rows_per_chunk, 0, 1, params)
    Xd = client.persist(da.from_array(X, chunks=(rows_per_chunk, 16)))
    wait(Xd)
    data = passes.prepare(Xd)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        passes.estep_pass(data, params, client=client)
        times.append(time.perf_counter() - started)
    client.cancel(Xd)
    return float(np.median(times[1:]))


def stats_sizes(ks=(8, 16), ds=(16, 64)):
    """Rows (type, K, d, pickled bytes, formula bytes) for one chunk's statistics."""
    from dgmm.core import kernels
    from dgmm.data.synthetic import sample_chunk, true_params

    rows = []
    for covariance_type in COVARIANCE_TYPES:
        for k in ks:
            for d in ds:
                params = true_params(d, k, covariance_type, seed=2)
                stats = kernels.chunk_stats(sample_chunk(256, 0, 2, params), params)
                pickled = len(pickle.dumps(stats, protocol=pickle.HIGHEST_PROTOCOL))
                rows.append((covariance_type, k, d, pickled,
                             stats_bytes_formula(covariance_type, k, d)))
    return rows


def graph_tasks(path: str, chunk_counts) -> list[tuple[int, int, int]]:
    """(chunks, keys in a dgmm pass graph over a Zarr store, formula) per chunk count."""
    from dgmm.data import make_gmm_data, open_zarr
    from dgmm.data.synthetic import true_params
    from dgmm.engine import passes

    params = true_params(4, 2, "diag", seed=3)
    rows = []
    for n_chunks in chunk_counts:
        store = os.path.join(path, f"tasks-{n_chunks}.zarr")
        make_gmm_data(store, n_chunks * 8, 4, 2, covariance_type="diag", chunk_rows=8,
                      seed=3, overwrite=True)
        X, info = open_zarr(store, target_chunk_bytes=8 * 4 * 8)
        data = passes.prepare(X)
        graph = passes.pass_graph(data, passes.estep_chunk, params)
        rows.append((info.n_chunks, len(dict(graph.__dask_graph__())),
                     tasks_formula(info.n_chunks)))
    return rows


def estep_rate(client, covariance_type: str, n_rows: int, chunk_mib: float, n_workers: int,
               repeats: int) -> tuple[float, float]:
    """(rows per second per worker, seconds per pass) of a dgmm E-step pass over
    persisted data (d = 16, K = 8), chunks of about chunk_mib MiB, a multiple of the
    worker count."""
    import dask.array as da
    from distributed import wait

    from dgmm.data.synthetic import sample_chunk, true_params
    from dgmm.engine import passes

    params = true_params(16, 8, covariance_type, seed=4)
    X = sample_chunk(n_rows, 0, 4, params)
    per_worker = max(1, math.ceil(X.nbytes / (n_workers * chunk_mib * 2**20)))
    chunk_rows = math.ceil(n_rows / (per_worker * n_workers))
    Xd = client.persist(da.from_array(X, chunks=(chunk_rows, 16)))
    wait(Xd)
    del X
    data = passes.prepare(Xd)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        passes.estep_pass(data, params, client=client)
        times.append(time.perf_counter() - started)
    client.cancel(Xd)
    seconds = float(np.median(times[1:]))
    return n_rows / seconds / n_workers, seconds


def min_task_bytes(overhead: float, rate_bytes: float, n_workers: int,
                   max_share: float = 0.05) -> float:
    """Smallest task (bytes) for which tasks-per-pass x overhead <= max_share x pass time.

    Pass time = nbytes / (rate_bytes x W); tasks = (2 + 1/7) nbytes / task_bytes (a read
    and an E-step task per chunk, 1/7 merge per chunk): the data size cancels.
    """
    return (2 + 1 / 7) * overhead * rate_bytes * n_workers / max_share


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-counts", type=int, nargs="+", default=[64, 256, 1024],
                        help="chunks per pass for the overhead fits")
    parser.add_argument("--repeats", type=int, default=5, help="passes per point (median)")
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="rows of the E-step rate measurement")
    parser.add_argument("--chunk-mib", type=float, default=16.0)
    parser.add_argument("--project-tib", type=float, default=1.0)
    parser.add_argument("--project-workers", type=int, default=100)
    parser.add_argument("--project-task-mib", type=float, default=64.0,
                        help="task size of the projection (dgmm's default 64 MiB)")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.chunk_counts, args.repeats, args.rows = [16, 64], 2, 40_000
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import logging

    import psutil
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    figures: dict = {"settings": vars(args)}
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB;"
          f" {load_average()}")

    print("\nbytes of one chunk's statistics (pickled, protocol 5) against 8 (K + 2Kd + s2):")
    print(f"  {'type':9} {'K':>3} {'d':>3} {'pickled':>9} {'formula':>9} {'extra':>6}")
    sizes = stats_sizes()
    for covariance_type, k, d, pickled, formula in sizes:
        print(f"  {covariance_type:9} {k:3d} {d:3d} {pickled:9,d} {formula:9,d} "
              f"{pickled - formula:6d}")
    figures["stats_bytes"] = sizes

    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        counts = graph_tasks(tmp, [1, 8, 9, 64, 100])
    print("\ntasks per pass (keys of the pass graph over a Zarr store) against "
          "2C + M + 2:")
    for n_chunks, keys, formula in counts:
        print(f"  C = {n_chunks:4d}: {keys:5d} keys, formula {formula:5d} "
              f"(M = {merge_tasks(n_chunks)} merges)")
    figures["tasks_per_pass"] = counts

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        print(f"\nLocalCluster {args.workers} workers x 1 thread; {load_average()}")
        trivial_pass_seconds(client, 16, 1)  # warm-up
        trivial, real = [], []
        for n_chunks in args.chunk_counts:
            t_trivial = trivial_pass_seconds(client, n_chunks, args.repeats)
            t_real = dgmm_pass_seconds(client, n_chunks, args.repeats)
            n_tasks = n_chunks + merge_tasks(n_chunks)
            trivial.append((n_chunks, n_tasks, t_trivial))
            real.append((n_chunks, n_tasks, t_real))
            print(f"  C = {n_chunks:5d} ({n_tasks:5d} tasks): trivial pass {t_trivial:7.3f} s,"
                  f" dgmm pass over {n_chunks} chunks of 16 rows {t_real:7.3f} s")
        a_trivial, o_trivial = fit_line([t[1] for t in trivial], [t[2] for t in trivial])
        a_real, o_real = fit_line([t[1] for t in real], [t[2] for t in real])
        print(f"  fit: trivial graph {o_trivial * 1e3:.2f} ms per task + "
              f"{a_trivial * 1e3:.1f} ms per pass; dgmm pass {o_real * 1e3:.2f} ms per "
              f"task + {a_real * 1e3:.1f} ms per pass ({load_average()})")
        figures.update(trivial=trivial, real=real, overhead_trivial=o_trivial,
                       overhead_real=o_real, fixed_trivial=a_trivial, fixed_real=a_real)

        rates = {}
        for covariance_type in ("full", "diag"):
            rate, seconds = estep_rate(client, covariance_type, args.rows, args.chunk_mib,
                                       args.workers, args.repeats)
            rates[covariance_type] = rate
            print(f"  E-step rate, d=16 K=8 {covariance_type:4}: {rate:12,.0f} rows/s per "
                  f"worker ({rate * 128 / 2**20:6.1f} MiB/s; pass of {args.rows:,} rows "
                  f"{seconds:.3f} s) ({load_average()})")
        figures["estep_rows_per_second_per_worker"] = rates

    # the projection
    overhead = max(o_trivial, o_real)
    nbytes = args.project_tib * 2**40
    workers = args.project_workers
    task_bytes = args.project_task_mib * 2**20
    n_chunks = math.ceil(nbytes / task_bytes)
    n_merges = merge_tasks(n_chunks)
    n_tasks = 2 * n_chunks + n_merges + 2
    row_bytes = 16 * 8
    print(f"\nprojection: {args.project_tib:g} TiB of float64 rows, d=16, K=8, on {workers} "
          f"workers, tasks of {args.project_task_mib:g} MiB, overhead {overhead * 1e3:.2f} "
          "ms per task (the larger fit):")
    print(f"  chunks {n_chunks:,}; tasks per pass {n_tasks:,} "
          f"({n_chunks:,} reads + {n_chunks:,} E-steps + {n_merges:,} merges + 2)")
    projection = {"chunks": n_chunks, "tasks": n_tasks, "merges": n_merges}
    for covariance_type, rate in rates.items():
        merged = (n_chunks + n_merges) * stats_bytes_formula(covariance_type, 8, 16)
        pass_seconds = nbytes / row_bytes / (rate * workers)
        share = n_tasks * overhead / pass_seconds
        smallest = min_task_bytes(overhead, rate * row_bytes, workers)
        print(f"  {covariance_type:4}: statistics moved per pass {merged / 2**20:.1f} MiB; "
              f"pass {pass_seconds:.0f} s of E-step; overhead {n_tasks * overhead:.1f} s = "
              f"{share:.1%} of it; tasks of at least {smallest / 2**20:.0f} MiB keep it "
              f"under 5%")
        projection[covariance_type] = {
            "merged_bytes": merged, "pass_seconds": pass_seconds, "overhead_share": share,
            "min_task_bytes": smallest}
    figures["projection"] = projection
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
