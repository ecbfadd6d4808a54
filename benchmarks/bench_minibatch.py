"""Mini-batch (stepwise) EM against batch EM: quality after one pass, and the cost of a pass.

Writes (or reuses) one Zarr store per data seed, drawn from a full-covariance mixture
(d=16, K=8 by default), opened without persisting (every pass reads the store).

Quality (computed in this process with Dask's threaded scheduler, in the chunking of a
cluster run: the numbers do not depend on where the tasks run). Two starts per data set:

- ``sample``: the start a sample search gives (EM restarts on a uniform sample of
  ``--sample-rows`` rows in memory, the best kept; one read of the data);
- ``random_from_data``: a poor start, as scikit-learn draws it;
- ``default``: no start given: ``MiniBatchGaussianMixture(K, max_iter=1)`` with every
  default, its own initialisation included (scored after its pass and with
  ``polish_iter=1``).

From each start, ``MiniBatchGaussianMixture(max_iter=1)`` for every ``--wave-widths``
value, scored (mean log-likelihood per row over all rows) after its pass and after one
batch EM polish pass, against batch EM after one and two passes from the same start, and
(``--references``) against the best of batch EM run to convergence from kmeans,
k-means++ and random_from_data on all rows (or ``--reference`` values given per data
seed, e.g. those of an earlier run).

Cost: on a LocalCluster of each ``--workers`` size (one thread each), the median seconds
per pass of batch EM and of mini-batch EM (``--wave-width``, ``--batch-size``) from the
same start, side by side, and their ratio (target at most 1.25).

The load average is printed before and after each part: the machine is shared.

Example::

    python benchmarks/bench_minibatch.py --rows 1000000 --data-seeds 0 1 2 3 \\
        --workers 2 4 --references --path /tmp/mb/bench_{seed}.zarr
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--path", default="data/bench_minibatch_{seed}.zarr",
                        help="Zarr store per data seed ({seed} is replaced)")
    parser.add_argument("--data-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--memory-limit", default="2GiB")
    parser.add_argument("--target-chunk-mib", type=float, default=16, help="MiB read per task")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows per step (default: the estimator's)")
    parser.add_argument("--step-power", type=float, default=None)
    parser.add_argument("--wave-width", type=int, default=None,
                        help="wave width of the cost runs (default: the estimator's)")
    parser.add_argument("--wave-widths", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="wave widths of the quality runs")
    parser.add_argument("--starts", nargs="+", default=["sample", "random_from_data"])
    parser.add_argument("--sample-rows", type=int, default=50_000)
    parser.add_argument("--sample-restarts", type=int, default=8)
    parser.add_argument("--references", action="store_true",
                        help="batch EM to convergence from the three inits on all rows")
    parser.add_argument("--reference-tol", type=float, default=1e-5)
    parser.add_argument("--reference", type=float, nargs="+", default=None,
                        help="the best reference per data seed, instead of computing it")
    parser.add_argument("--cost-passes", type=int, default=3)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--separation", type=float, default=4.0)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


def _quiet():
    warnings.simplefilter("ignore")
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _cluster(n_workers, memory_limit):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           memory_limit=memory_limit, dashboard_address=":0")
    client = Client(cluster)
    _quiet()
    return cluster, client


def _open(args, seed, client):
    from dgmm.data import readers as io
    from dgmm.data import synthetic as datasets

    path = args.path.format(seed=seed)
    chunk_rows = max(1, int(args.target_chunk_mib * 2**20) // (8 * args.features))
    reuse = False
    if os.path.exists(path) and not args.regenerate:
        try:
            X, info = io.open_zarr(path)
            reuse = info.shape == (args.rows, args.features) and X.chunks[0][0] <= chunk_rows
        except Exception:
            reuse = False
    if not reuse:
        datasets.make_gmm_data(path, args.rows, args.features, args.components,
                               covariance_type="full", seed=seed, chunk_rows=chunk_rows,
                               separation=args.separation, client=client, overwrite=True)
    return io.open_zarr(path, target_chunk_bytes=int(args.target_chunk_mib * 2**20))


def _score(X, params, client):
    from dgmm.engine import passes as engine

    stats = engine.estep_pass(engine.prepare(X), params, client=client)
    return stats.loglik / stats.n


def _init_kwargs(params):
    return dict(weights_init=params.weights, means_init=params.means,
                precisions_init=params.precisions)


def _sample_start(X, args, seed):
    """EM restarts on a uniform sample in memory (scikit-learn), the best kept."""
    import numpy as np
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from dgmm.core.params import GMMParams

    rng = np.random.default_rng([seed, 7])
    n = min(args.sample_rows, X.shape[0])
    rows = np.sort(rng.choice(X.shape[0], n, replace=False))
    sample = np.asarray(X[rows].compute(), dtype=np.float64)
    sk = SkGaussianMixture(args.components, n_init=args.sample_restarts,
                           random_state=seed).fit(sample)
    return GMMParams.from_covariances(sk.weights_, sk.means_, sk.covariances_, "full")


def _poor_start(X, args, seed, client):
    from dgmm import GaussianMixture

    start = GaussianMixture(args.components, init_params="random_from_data", max_iter=0,
                            random_state=seed, client=client).fit(X)
    return start.params_


def _mb_kwargs(args):
    kwargs = {}
    if args.batch_size is not None:
        kwargs["batch_size"] = args.batch_size
    if args.step_power is not None:
        kwargs["step_power"] = args.step_power
    return kwargs


def quality(args, X, seed, client) -> dict:
    from dgmm import GaussianMixture, MiniBatchGaussianMixture

    out: dict = {"load_before": os.getloadavg()}
    if args.reference is not None:
        out["best_reference"] = args.reference[args.data_seeds.index(seed)]
    elif args.references:
        refs = {}
        for init in ("kmeans", "k-means++", "random_from_data"):
            fit = GaussianMixture(args.components, init_params=init, tol=args.reference_tol,
                                  max_iter=500, random_state=seed, client=client).fit(X)
            refs[init] = fit.score(X)
            print(f"  reference {init:16s} {refs[init]:.5f} after {fit.n_iter_} passes")
        out["references"] = refs
        out["best_reference"] = max(refs.values())
    for start_name in args.starts:
        if start_name == "default":
            row = {}
            for polish in (0, 1):
                t0 = time.perf_counter()
                model = MiniBatchGaussianMixture(args.components, max_iter=1,
                                                 polish_iter=polish, random_state=seed,
                                                 client=client).fit(X)
                row[f"polish{polish}"] = _score(X, model.params_, client)
                row[f"polish{polish}_seconds"] = time.perf_counter() - t0
            out["default"] = row
            best = out.get("best_reference")
            print(f"  default MiniBatchGaussianMixture(max_iter=1): {row['polish0']:.5f}, "
                  f"with polish_iter=1 {row['polish1']:.5f}" + (
                      "" if best is None else f"; below the best reference "
                      f"{best - row['polish0']:+.4f} / {best - row['polish1']:+.4f}"))
            continue
        t0 = time.perf_counter()
        start = (_sample_start(X, args, seed) if start_name == "sample"
                 else _poor_start(X, args, seed, client))
        row = {"start": _score(X, start, client), "start_seconds": time.perf_counter() - t0}
        batch = GaussianMixture(args.components, max_iter=2, tol=0.0, client=client,
                                **_init_kwargs(start)).fit(X)
        row["batch_em_1"] = batch.lower_bounds_[-1]  # the parameters after 1 pass
        row["batch_em_2"] = batch.score(X)
        for width in args.wave_widths:
            seen = []

            def keep(info, seen=seen):
                if info.phase == "pass" or (info.phase == "polish"
                                            and info.state.polish.iteration > 0):
                    seen.append(info.state.params if info.phase == "pass"
                                else info.state.polish.params)

            MiniBatchGaussianMixture(args.components, max_iter=1, polish_iter=1, tol=0.0,
                                     wave_width=width, random_state=seed, client=client,
                                     **_mb_kwargs(args), **_init_kwargs(start)).fit(
                X, callback=keep)
            row[f"W{width}_pass"] = _score(X, seen[0], client)
            row[f"W{width}_polish"] = _score(X, seen[1], client)
        out[start_name] = row
        best = out.get("best_reference")
        line = "  ".join(f"{k} {v:.5f}" for k, v in row.items() if k != "start_seconds")
        print(f"  start {start_name}: {line}")
        if best is not None:
            gaps = "  ".join(f"{k} {best - v:+.4f}" for k, v in row.items()
                             if k not in ("start_seconds",))
            print(f"    below the best reference: {gaps}")
    out["load_after"] = os.getloadavg()
    return out


def cost(args, X, client, n_workers) -> dict:
    from dgmm import GaussianMixture, MiniBatchGaussianMixture

    start = _poor_start(X, args, 0, client)
    load_before = os.getloadavg()
    times: dict = {"batch": [], "minibatch": []}
    clock = [0.0]

    def on_batch(info):
        if info.phase == "iteration":
            now = time.perf_counter()
            times["batch"].append(now - clock[0])
            clock[0] = now

    def on_mb(info):
        if info.phase == "pass":
            now = time.perf_counter()
            times["minibatch"].append(now - clock[0])
            clock[0] = now

    rounds = []
    for _ in range(2):  # interleaved: both see the same load
        clock[0] = time.perf_counter()
        GaussianMixture(args.components, max_iter=args.cost_passes, tol=0.0, client=client,
                        **_init_kwargs(start)).fit(X, callback=on_batch)
        mb_kwargs = _mb_kwargs(args)
        if args.wave_width is not None:
            mb_kwargs["wave_width"] = args.wave_width
        clock[0] = time.perf_counter()
        model = MiniBatchGaussianMixture(args.components, max_iter=args.cost_passes, tol=0.0,
                                         client=client, **mb_kwargs, **_init_kwargs(start))
        model.fit(X, callback=on_mb)
        rounds.append(model.n_steps_ / model.n_passes_)
    batch_pass = statistics.median(times["batch"])
    mb_pass = statistics.median(times["minibatch"])
    out = {"workers": n_workers, "batch_pass_seconds": batch_pass,
           "minibatch_pass_seconds": mb_pass, "ratio": mb_pass / batch_pass,
           "steps_per_pass": rounds[0], "wave_width": model.wave_width,
           "batch_size": model.batch_size, "load_before": load_before,
           "load_after": os.getloadavg()}
    print(f"  {n_workers} workers: seconds per pass batch EM {batch_pass:.2f}, mini-batch "
          f"{mb_pass:.2f} (wave_width {model.wave_width}, batch_size {model.batch_size}, "
          f"{rounds[0]:.0f} steps a pass): ratio {mb_pass / batch_pass:.2f} (target <= 1.25)"
          f"; load {load_before} -> {out['load_after']}")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    _quiet()
    figures: dict = {"settings": vars(args), "quality": {}, "cost": {}}
    for seed in args.data_seeds:
        X, info = _open(args, seed, None)
        print(f"data seed {seed}: {info.n_samples} rows x {info.n_features} features, "
              f"{info.n_chunks} tasks per pass, read every pass; load {os.getloadavg()}")
        if not args.skip_quality:
            figures["quality"][seed] = quality(args, X, seed, None)
    if not args.skip_cost:
        X, _ = _open(args, args.data_seeds[0], None)
        for n_workers in args.workers:
            cluster, client = _cluster(n_workers, args.memory_limit)
            try:
                figures["cost"][n_workers] = cost(args, X, client, n_workers)
            finally:
                client.close()
                cluster.close()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
