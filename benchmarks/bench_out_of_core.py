"""Out-of-core throughput: EM iterations against the raw read rate of the same Zarr store.

Generates (or reuses) a Zarr array from a known diagonal mixture with
``dgmm.data.make_gmm_data``, starts a LocalCluster of ``--workers`` processes with
``--memory-limit`` each, then in the same run measures

1. the raw read throughput: ``X.sum()`` over the whole array (``--reads`` times);
2. the fit: ``GaussianMixture(covariance_type='diag')`` for ``--iterations`` EM
   iterations (tol=0, started near the true parameters so that no initialisation pass
   is spent), rows per second of each iteration's pass;
3. the in-memory pass: the same fit on the first chunks of the array persisted on the
   workers (as many as fit in ``--in-memory-fraction`` of the workers' memory limits, the
   whole array if it fits), seconds per iteration scaled to the whole array by rows;

and prints the ratio of the median fit rate to the median raw read rate (target >= 0.8 for
d=16, K=8), and the pipeline efficiency

    (raw read time + in-memory iteration time) / out-of-core iteration time

(medians, whole array): 1 when reading and computing one after the other cost exactly
what the out-of-core pass costs, above 1 when the pass overlaps them (target >= 0.9).
Default size: 170M rows x 16 features x float64 = 20.3 GiB.

Example (about 20 GiB; the data stay in ``--path`` for the next run)::

    python benchmarks/bench_out_of_core.py --rows 170000000 --path data/bench.zarr

Small check::

    python benchmarks/bench_out_of_core.py --rows 8000000 --path /tmp/bench.zarr
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
import warnings

import numpy as np

log = logging.getLogger("bench_out_of_core")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=170_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--path", default="data/bench_out_of_core.zarr")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--memory-limit", default="2GiB")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--reads", type=int, default=2, help="raw read passes (median)")
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="rows per stored chunk (default: 16 MiB chunks)")
    parser.add_argument("--target-chunk-mib", type=float, default=64,
                        help="MiB read per task")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--regenerate", action="store_true",
                        help="write the data even if a matching store exists")
    parser.add_argument("--in-memory-fraction", type=float, default=0.4,
                        help="share of the workers' summed memory limits that the "
                        "persisted rows of the in-memory pass may take")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


def _matching_store(args):
    """(DataInfo, true params) of an existing store written with these settings, or None."""
    from dgmm.data import readers as io
    from dgmm.data import synthetic as datasets
    from dgmm.errors import DgmmError

    if args.regenerate or not os.path.exists(args.path):
        return None
    try:
        _, info = io.open_zarr(args.path, dtype=args.dtype)
        params = datasets.load_true_params(args.path)
    except DgmmError:
        return None
    same = (
        info.shape == (args.rows, args.features)
        and params.n_components == args.components
        and params.covariance_type == "diag"
    )
    return (info, params) if same else None


def _compute(client, obj):
    return client.compute(obj, sync=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    def quiet_distributed():
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("distributed"):
                logging.getLogger(name).setLevel(logging.WARNING)

    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster, wait

    from dgmm import GaussianMixture
    from dgmm.data import readers as io
    from dgmm.data import synthetic as datasets

    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=args.threads_per_worker,
        memory_limit=args.memory_limit, processes=True, dashboard_address=":0",
    )
    client = Client(cluster)
    quiet_distributed()
    figures: dict = {"settings": vars(args)}
    try:
        existing = _matching_store(args)
        if existing is None:
            started = time.perf_counter()
            info, truth = datasets.make_gmm_data(
                args.path, args.rows, args.features, args.components,
                covariance_type="diag", chunk_rows=args.chunk_rows, seed=args.seed,
                dtype=args.dtype, client=client, overwrite=True,
            )
            seconds = time.perf_counter() - started
            figures["generate_seconds"] = seconds
            print(f"generated {info.nbytes / 2**30:.2f} GiB in {seconds:.1f} s "
                  f"({info.nbytes / 2**30 / seconds:.2f} GiB/s)")
        else:
            info, truth = existing
            print(f"reusing {args.path}")
        X, info = io.open_zarr(
            args.path, dtype=args.dtype, target_chunk_bytes=int(args.target_chunk_mib * 2**20)
        )
        gib = info.nbytes / 2**30
        print("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        print(f"data: {info.n_samples} rows x {info.n_features} features {info.dtype} = "
              f"{gib:.2f} GiB in {info.n_chunks} tasks; cluster: {args.workers} workers x "
              f"{args.threads_per_worker} thread(s) x {args.memory_limit}")

        read_rates = []
        for _ in range(args.reads):
            started = time.perf_counter()
            _compute(client, X.sum())
            seconds = time.perf_counter() - started
            read_rates.append(info.n_samples / seconds)
            print(f"raw read  (X.sum()): {seconds:7.2f} s  {info.n_samples / seconds:12,.0f} "
                  f"rows/s  {gib / seconds:.2f} GiB/s")

        sd = np.sqrt(truth.covariances)

        def timed_fit(data, label):
            """Seconds of each EM iteration of a diag fit on ``data`` (from the fit
            callback: the pass plus the M-step), and the fitted model."""
            model = GaussianMixture(
                args.components, covariance_type="diag", tol=0.0, max_iter=args.iterations,
                weights_init=truth.weights, means_init=truth.means + 0.25 * sd,
                precisions_init=1.0 / (1.2 * truth.covariances), client=client,
            )
            walls: list[float] = []
            last = [time.perf_counter()]
            n_rows = data.shape[0]

            def on_iteration(step):
                now = time.perf_counter()
                if step.phase == "iteration":
                    wall = now - last[0]
                    walls.append(wall)
                    print(f"{label} iteration {step.state.iteration:2d}: {wall:7.2f} s  "
                          f"{n_rows / wall:12,.0f} rows/s  "
                          f"(pass alone: {step.rows_per_second:,.0f} rows/s)")
                last[0] = time.perf_counter()

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tol=0 never converges, by design
                model.fit(data, callback=on_iteration)
            return walls, model

        fit_walls, model = timed_fit(X, "out-of-core EM")
        fit_rates = [info.n_samples / wall for wall in fit_walls]

        # the in-memory pass: the first chunks that fit, persisted on the workers
        budget = args.in_memory_fraction * args.workers * parse_bytes(args.memory_limit)
        row_bytes = info.n_features * np.dtype(info.dtype).itemsize
        kept_rows = 0
        for rows in X.chunks[0]:
            if (kept_rows + rows) * row_bytes > budget and kept_rows:
                break
            kept_rows += rows
        resident = client.persist(X[:kept_rows])
        wait(resident)
        memory_walls, _ = timed_fit(resident, "in-memory EM  ")
        client.cancel(resident)
        del resident
        memory_seconds = statistics.median(memory_walls) * info.n_samples / kept_rows
        print(f"in-memory pass on {kept_rows:,} of {info.n_samples:,} rows "
              f"({kept_rows / info.n_samples:.1%}); scaled to all rows: "
              f"{memory_seconds:.2f} s per iteration")

        read = statistics.median(read_rates)
        fit = statistics.median(fit_rates)
        ratio = fit / read
        read_seconds = info.n_samples / read
        out_of_core_seconds = statistics.median(fit_walls)
        efficiency = (read_seconds + memory_seconds) / out_of_core_seconds
        figures.update(
            rows=info.n_samples, gib=gib, read_rows_per_second=read_rates,
            fit_rows_per_second=fit_rates, ratio=ratio,
            in_memory_rows=kept_rows, in_memory_seconds=memory_seconds,
            read_seconds=read_seconds, out_of_core_seconds=out_of_core_seconds,
            pipeline_efficiency=efficiency, load_average=os.getloadavg(),
            max_abs_mean_error=float(np.abs(model.means_ - truth.means).max()),
        )
        print(f"median raw read {read:,.0f} rows/s; median EM iteration {fit:,.0f} rows/s; "
              f"ratio {ratio:.2f} (target >= 0.80)")
        print(f"pipeline efficiency (read {read_seconds:.2f} s + in-memory "
              f"{memory_seconds:.2f} s) / out-of-core {out_of_core_seconds:.2f} s = "
              f"{efficiency:.2f} (target >= 0.90); "
              "load average %.2f %.2f %.2f" % os.getloadavg())
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(figures, handle, indent=2)
    finally:
        client.shutdown()
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
