"""Model selection in lockstep against the same fits run one by one, on a Zarr store read
out of core (nothing persisted: every pass reads the store).

In one run, on one LocalCluster:

1. ``GaussianMixtureSelection(n_components=--ks, covariance_type=--types, n_init=--n-init)``:
   every candidate and restart in the same passes;
2. the same fits one by one: for each candidate and restart, its initialisation and EM
   iterations alone (``dgmm.engine.init.initial_params``, then one pass and M-step per
   iteration), the way restarts ran before they shared passes.

Prints passes and wall time of both and their ratios (targets: at most 1/8 of the passes
and half the wall time), and checks that every restart ends with the same lower bound.

Example (a few minutes; the store is written on the first run and reused)::

    python benchmarks/bench_selection.py --rows 100000 --chunk-rows 12500 \
        --target-chunk-mib 0.6 --path /tmp/bench_selection.zarr
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import warnings


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=6)
    parser.add_argument("--true-components", type=int, default=6)
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--types", nargs="+", default=["full", "diag"])
    parser.add_argument("--n-init", type=int, default=2)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--path", default="data/bench_selection.zarr")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="2GiB")
    parser.add_argument("--chunk-rows", type=int, default=25_000, help="rows per stored chunk")
    parser.add_argument("--target-chunk-mib", type=float, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


class PassCounter:
    """Counts the passes (``passes.map_reduce`` calls) made while it is active."""

    def __init__(self):
        from dgmm.engine import passes

        self.passes_module = passes
        self.original = passes.map_reduce
        self.count = 0

    def __enter__(self):
        def counted(*args, **kwargs):
            self.count += 1
            return self.original(*args, **kwargs)

        self.passes_module.map_reduce = counted
        return self

    def __exit__(self, *exc):
        self.passes_module.map_reduce = self.original


def sequential_restart(data, settings, seed, index, client):
    """One restart alone: its initialisation, then one pass and M-step per iteration."""
    from dgmm.core.mstep import m_step
    from dgmm.engine import em
    from dgmm.engine import passes as engine
    from dgmm.engine.init import initial_params

    params = initial_params(data, settings.n_components, settings.covariance_type,
                            settings.init_params, settings.reg_covar,
                            em.restart_seed(seed, index), client=client).params
    lower_bound, iterations, converged = -math.inf, 0, False
    while iterations < settings.max_iter and not converged:
        stats = engine.estep_pass(data, params, client=client)
        step = m_step(stats, settings.reg_covar, previous=params)
        converged = abs(step.mean_loglik - lower_bound) < settings.tol
        params, lower_bound = step.params, step.mean_loglik
        iterations += 1
    return lower_bound, iterations


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from distributed import Client, LocalCluster

    import dgmm
    from dgmm.data import readers as io
    from dgmm.data import synthetic
    from dgmm.engine import passes as engine

    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1,
                           memory_limit=args.memory_limit, processes=True,
                           dashboard_address=":0")
    client = Client(cluster)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.ERROR)
    figures: dict = {"settings": vars(args)}
    try:
        if not os.path.exists(args.path):
            synthetic.make_gmm_data(args.path, args.rows, args.features, args.true_components,
                                    covariance_type="full", chunk_rows=args.chunk_rows,
                                    seed=args.seed, client=client)
        X, info = io.open_zarr(args.path, target_chunk_bytes=int(args.target_chunk_mib * 2**20))
        print(f"data: {info.n_samples:,} rows x {info.n_features} features in {info.n_chunks} "
              f"tasks, read from {args.path} on every pass; cluster: {args.workers} workers x "
              "1 thread")
        common = dict(n_init=args.n_init, max_iter=args.max_iter, tol=args.tol,
                      random_state=args.seed, client=client)

        with warnings.catch_warnings(), PassCounter() as grid_passes:
            warnings.simplefilter("ignore")
            started = time.perf_counter()
            selection = dgmm.GaussianMixtureSelection(
                args.ks, covariance_type=args.types, memory_budget="8GiB", **common).fit(X)
            grid_seconds = time.perf_counter() - started
        assert grid_passes.count == selection.n_passes_
        print(f"grid in lockstep: {selection.n_passes_} passes, {grid_seconds:.1f} s; best "
              f"{selection.best_params_}")

        data = engine.prepare(X)
        sequential_seconds, sequential_passes, mismatches = 0.0, 0, 0
        table = selection.results_
        for c in args.types:
            for k in args.ks:
                settings = dgmm.GaussianMixture(k, covariance_type=c, **common)._settings()
                for index in range(args.n_init):
                    with PassCounter() as counter:
                        started = time.perf_counter()
                        lower_bound, iterations = sequential_restart(
                            data, settings, selection.random_seed_, index, client)
                        seconds = time.perf_counter() - started
                    row = table[(table.n_components == k) & (table.covariance_type == c)
                                & (table.restart == index)].iloc[0]
                    mismatches += int(row.lower_bound != lower_bound or row.n_iter != iterations)
                    sequential_seconds += seconds
                    sequential_passes += counter.count
                    print(f"  alone K={k:2d} {c:9s} restart {index}: {counter.count:3d} passes, "
                          f"{iterations:3d} iterations, {seconds:6.1f} s")
        print(f"fits one by one: {sequential_passes} passes, {sequential_seconds:.1f} s")
        pass_ratio = selection.n_passes_ / sequential_passes
        time_ratio = grid_seconds / sequential_seconds
        print(f"ratio passes {pass_ratio:.3f} (target <= 0.125), wall time {time_ratio:.3f} "
              f"(target <= 0.5); restarts differing from their fit alone: {mismatches}")
        figures.update(grid_passes=selection.n_passes_, grid_seconds=grid_seconds,
                       sequential_passes=sequential_passes,
                       sequential_seconds=sequential_seconds, pass_ratio=pass_ratio,
                       time_ratio=time_ratio, mismatches=mismatches)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(figures, handle, indent=2)
    finally:
        client.close()
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
