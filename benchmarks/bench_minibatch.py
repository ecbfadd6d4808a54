"""Mini-batch (stepwise) EM against batch EM: mean log-likelihood against passes and seconds.

Writes (or reuses) a Zarr store drawn from a full-covariance mixture (d=16, K=8 by
default), opens it without persisting (every pass reads the store), starts a LocalCluster,
draws one set of initial parameters (``random_from_data``) and fits from it

1. ``GaussianMixture`` (batch EM, default tol) until convergence;
2. ``MiniBatchGaussianMixture`` for ``--mb-passes`` passes (tol=0).

Per pass it prints the mean log-likelihood over all rows of the parameters after that
pass (batch EM reports it for free on its next pass; the mini-batch parameters are scored
after the fit, outside the timed region) and the seconds spent fitting up to then. Then it
prints the two targets:

- after one pass, mini-batch is at least as good as batch EM after ten;
- the time mini-batch takes to come within 0.01 of batch EM's converged mean
  log-likelihood is at most a third of batch EM's time to converge.

It also prints the seconds per pass of both and the step loop's cost per step over the
batch EM pass (seconds per mini-batch pass minus seconds per batch EM pass, divided by the
steps of a pass), and the machine's load average before and after.

Example::

    python benchmarks/bench_minibatch.py --rows 10000000 --path data/bench_minibatch.zarr
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
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--path", default="data/bench_minibatch.zarr")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--memory-limit", default="2GiB")
    parser.add_argument("--target-chunk-mib", type=float, default=16, help="MiB read per task")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--step-power", type=float, default=0.6)
    parser.add_argument("--mb-passes", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=300, help="batch EM iterations at most")
    parser.add_argument("--separation", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from distributed import Client, LocalCluster

    from dgmm import GaussianMixture, MiniBatchGaussianMixture
    from dgmm.data import readers as io
    from dgmm.data import synthetic as datasets
    from dgmm.engine import passes as engine

    load_before = os.getloadavg()
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                           memory_limit=args.memory_limit, processes=True,
                           dashboard_address=":0")
    client = Client(cluster)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.ERROR)
    figures: dict = {"settings": vars(args), "load_before": load_before}
    try:
        reuse = False
        if os.path.exists(args.path) and not args.regenerate:
            try:
                X, info = io.open_zarr(args.path)
                reuse = info.shape == (args.rows, args.features)
            except Exception:
                reuse = False
        if not reuse:
            datasets.make_gmm_data(args.path, args.rows, args.features, args.components,
                                   covariance_type="full", seed=args.seed,
                                   separation=args.separation, client=client,
                                   overwrite=True)
        X, info = io.open_zarr(args.path, target_chunk_bytes=int(args.target_chunk_mib * 2**20))
        print(f"data: {info.n_samples} rows x {info.n_features} features, {info.n_chunks} "
              f"tasks per pass, read from {args.path} every pass; cluster {args.workers} x "
              f"{args.threads_per_worker} thread(s); load average {load_before}")

        start = GaussianMixture(args.components, init_params="random_from_data", max_iter=0,
                                random_state=args.seed, client=client)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start.fit(X)
        init = dict(weights_init=start.weights_, means_init=start.means_,
                    precisions_init=start.precisions_)

        # batch EM
        batch_times, clock = [], [time.perf_counter()]

        def on_iteration(info_):
            if info_.phase == "iteration":
                batch_times.append(time.perf_counter() - clock[0])

        batch = GaussianMixture(args.components, max_iter=args.max_iter, client=client, **init)
        clock[0] = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch.fit(X, callback=on_iteration)
        # lower_bounds_[n] is the mean log-likelihood of the parameters after n passes
        batch_ll = batch.lower_bounds_
        converged_ll = batch.lower_bound_
        batch_total = batch_times[-1]

        # mini-batch
        mb_params, mb_times = [], []

        def on_pass(info_):
            if info_.phase == "pass":
                mb_times.append(time.perf_counter() - clock[0])
                mb_params.append(info_.state.params)

        mb = MiniBatchGaussianMixture(args.components, batch_size=args.batch_size,
                                      step_power=args.step_power, max_iter=args.mb_passes,
                                      tol=0.0, client=client, random_state=args.seed, **init)
        clock[0] = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mb.fit(X, callback=on_pass)
        data = engine.prepare(X)
        mb_ll = []
        for params in mb_params:
            stats = engine.estep_pass(data, params, client=client)
            mb_ll.append(stats.loglik / stats.n)

        print("\npasses  batch EM ll   seconds | mini-batch ll   seconds")
        for n in range(1, max(len(batch_ll) - 1, len(mb_ll)) + 1):
            left = (f"{batch_ll[n]:12.5f} {batch_times[n - 1]:9.1f}" if n < len(batch_ll)
                    else " " * 22)
            right = (f"{mb_ll[n - 1]:14.5f} {mb_times[n - 1]:9.1f}" if n <= len(mb_ll)
                     else "")
            print(f"{n:6d} {left} | {right}")
        print(f"batch EM converged: {batch.converged_} after {batch.n_iter_} passes, "
              f"mean log-likelihood {converged_ll:.5f}, {batch_total:.1f} s")

        batch_pass = statistics.median(
            b - a for a, b in zip([0.0] + batch_times[:-1], batch_times, strict=True))
        mb_pass = statistics.median(
            b - a for a, b in zip([0.0] + mb_times[:-1], mb_times, strict=True))
        steps_per_pass = mb.n_steps_ / mb.n_passes_
        per_step = (mb_pass - batch_pass) / steps_per_pass
        print(f"median seconds per pass: batch EM {batch_pass:.2f}, mini-batch {mb_pass:.2f} "
              f"({mb_pass / batch_pass:.2f}x) with {steps_per_pass:.0f} steps of "
              f"{args.batch_size} rows: {per_step * 1e3:.2f} ms per step over a batch EM pass")

        ten = batch_ll[10] if len(batch_ll) > 10 else batch_ll[-1]
        target1 = mb_ll[0] >= ten
        print(f"target 1: mini-batch after 1 pass {mb_ll[0]:.5f} vs batch EM after 10 "
              f"{ten:.5f}: {'met' if target1 else 'NOT met'}")
        within = [t for ll, t in zip(mb_ll, mb_times, strict=True) if ll >= converged_ll - 0.01]
        if within:
            ratio = within[0] / batch_total
            print(f"target 2: within 0.01 of the converged value after {within[0]:.1f} s vs "
                  f"batch EM's {batch_total:.1f} s to converge: ratio {ratio:.3f} "
                  f"({'met' if ratio <= 1 / 3 else 'NOT met'}, target <= 0.333)")
        else:
            ratio = None
            print(f"target 2: NOT met: mini-batch not within 0.01 in {len(mb_ll)} passes")
        load_after = os.getloadavg()
        print(f"load average before {load_before}, after {load_after}")
        figures.update(batch_ll=batch_ll, batch_times=batch_times, mb_ll=mb_ll,
                       mb_times=mb_times, converged_ll=converged_ll, ratio=ratio,
                       target1=target1, per_step_seconds=per_step,
                       batch_pass_seconds=batch_pass, mb_pass_seconds=mb_pass,
                       load_after=load_after)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(figures, handle, indent=2)
    finally:
        client.close()
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
