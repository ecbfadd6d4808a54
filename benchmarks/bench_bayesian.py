"""Variational Bayesian mixtures: dgmm against scikit-learn per iteration, and online
(stochastic variational inference, one pass) against batch variational inference.

Both fit the same in-memory rows, drawn from the mini-batch benchmark's kind of mixture
(``dgmm.data.synthetic.true_params``: full covariances, d=16, K=8 by default), from the
same initial responsibilities (one-hot labels of a k-means on a sample):

1. per iteration (tol=0, ``--iters`` iterations): ``sklearn.mixture.BayesianGaussianMixture``
   started from those responsibilities, and ``dgmm``'s variational inference on row chunks
   (Dask's threaded scheduler, or ``--workers`` processes of a LocalCluster); dgmm's time
   per iteration is taken between the fit callback's iteration reports, scikit-learn's is
   its fit time over the iterations;
2. batch variational inference from the same start until convergence (``--tol`` per row),
   then one pass of stochastic variational inference (``--batch-size`` rows per step,
   step size (t + 2)^-0.6) from the same start; its lower bound is computed by one batch
   iteration from the result. Target: within 0.5% (per row) of the converged bound;
3. ``MiniBatchBayesianGaussianMixture(max_iter=1)`` with its own start (batch inference on
   a sample drawn in its first pass), scored the same way against the same batch bound.

Every figure is printed with the load average (``--wait-idle`` waits for a quiet machine).

Usage::

    python benchmarks/bench_bayesian.py                    # 200k rows, d=16, K=8
    python benchmarks/bench_bayesian.py --rows 20000 --iters 3 --wait-idle 0   # smoke run
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idle import add_wait_idle_option, load_average, wait_for_idle  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--covariance-type", default="full")
    parser.add_argument("--chunk-rows", type=int, default=25_000)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--tol", type=float, default=1e-6,
                        help="batch convergence: change of the bound per row")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=0,
                        help="LocalCluster worker processes (0: the threaded scheduler)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", nargs="+", choices=("iteration", "online", "default"),
                        default=["iteration", "online", "default"],
                        help="iteration: per iteration against scikit-learn; online: one "
                             "pass against batch from the same start; default: "
                             "MiniBatchBayesianGaussianMixture(max_iter=1) as it starts "
                             "by itself, against batch")
    add_wait_idle_option(parser)
    return parser.parse_args(argv)


def initial_responsibilities(X, k, seed):
    """One-hot labels of a k-means fitted on a sample of X."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    sample = X[rng.choice(X.shape[0], min(X.shape[0], 20_000), replace=False)]
    labels = KMeans(k, n_init=1, random_state=seed).fit(sample).predict(X)
    resp = np.zeros((X.shape[0], k))
    resp[np.arange(X.shape[0]), labels] = 1.0
    return resp


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.simplefilter("ignore")
    import dask.array as da
    from sklearn.mixture import BayesianGaussianMixture as SkBayesian

    import dgmm
    from dgmm.core import kernels
    from dgmm.core.mstep import m_step
    from dgmm.data import synthetic
    from dgmm.engine import em, minibatch
    from dgmm.engine import passes as engine

    truth = synthetic.true_params(args.features, args.components, args.covariance_type,
                                  seed=args.seed)
    X = synthetic.sample_chunk(args.rows, 0, args.seed, truth)
    k, n = args.components, args.rows
    resp = initial_responsibilities(X, k, args.seed)
    stats = kernels.chunk_stats_from_resp(X, resp, np.zeros((k, X.shape[1])),
                                          args.covariance_type)
    start = m_step(stats, 1e-6).params
    client = None
    if args.workers:
        from distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                     processes=True, dashboard_address=":0"))
    data = engine.prepare(da.from_array(X, chunks=(args.chunk_rows, -1)).persist())
    model = dgmm.BayesianGaussianMixture(n_components=k, covariance_type=args.covariance_type,
                                         tol=0.0, max_iter=args.iters, client=client)
    model.n_features_in_ = X.shape[1]
    kind = model.model_kind(data)

    def fit_from_start(settings, **kwargs):
        return em.fit_em(data, settings, seed=0, kind=kind, client=client,
                         fixed_init=lambda data_, index: start, **kwargs)

    where = f"a LocalCluster of {args.workers} workers" if args.workers else "threads"
    print(f"{n} rows, d={X.shape[1]}, K={k}, {args.covariance_type}; dgmm on {where}")
    # 1. per iteration against scikit-learn
    if "iteration" in args.parts:
        wait_for_idle(args.wait_idle)
        stamps = []
        fit_from_start(model._settings(),
                       callback=lambda info: stamps.append(time.perf_counter()))
        ours = float(np.mean(np.diff(stamps[1:]))) if len(stamps) > 2 else math.nan

        class FromResponsibilities(SkBayesian):
            def _initialize_parameters(self, X_, random_state, xp=None):
                self._initialize(X_, resp)

        wait_for_idle(args.wait_idle)
        t0 = time.perf_counter()
        FromResponsibilities(n_components=k, covariance_type=args.covariance_type, tol=0.0,
                             max_iter=args.iters).fit(X)
        theirs = (time.perf_counter() - t0) / args.iters
        print(f"seconds per iteration: dgmm {ours:.3f}, scikit-learn {theirs:.3f} "
              f"(ratio {ours / theirs:.2f}); {load_average()}")
    # 2. online against batch
    if "online" in args.parts:
        wait_for_idle(args.wait_idle)
        batch_settings = em.EMSettings(k, covariance_type=args.covariance_type,
                                       tol=args.tol * n, max_iter=1000)
        t0 = time.perf_counter()
        batch = fit_from_start(batch_settings)
        batch_seconds = time.perf_counter() - t0
        settings = minibatch.StepwiseSettings(k, covariance_type=args.covariance_type,
                                              batch_size=args.batch_size, max_iter=1, tol=0.0,
                                              kind=kind)
        wait_for_idle(args.wait_idle)
        t0 = time.perf_counter()
        state = minibatch.fit_stepwise(data, settings,
                                       minibatch.StepwiseState.initial(0, start, 1e-6, kind),
                                       client=client)
        online_seconds = time.perf_counter() - t0
        scored = em.fit_em(data, em.EMSettings(k, covariance_type=args.covariance_type,
                                               max_iter=1, tol=0.0),
                           seed=0, kind=kind, warm_start=(state.params, -math.inf), client=client)
        gap = (batch.lower_bound - scored.lower_bound) / abs(batch.lower_bound)
        print(f"batch VI: {batch.n_iter} iterations, {batch_seconds:.1f} s, bound per row "
              f"{batch.lower_bound / n:.6f}; online (one pass, {state.n_steps} steps): "
              f"{online_seconds:.1f} s, bound per row {scored.lower_bound / n:.6f}, "
              f"{100 * gap:.4f}% below batch (target <= 0.5%); {load_average()}")
    # 3. the online estimator as it starts by itself (a sample in its first pass)
    if "default" in args.parts:
        if "online" not in args.parts:
            batch = fit_from_start(em.EMSettings(k, covariance_type=args.covariance_type,
                                                 tol=args.tol * n, max_iter=1000))
        wait_for_idle(args.wait_idle)
        t0 = time.perf_counter()
        online = dgmm.MiniBatchBayesianGaussianMixture(
            n_components=k, covariance_type=args.covariance_type, max_iter=1,
            batch_size=args.batch_size, random_state=args.seed, client=client)
        online.fit(data.array)
        online_seconds = time.perf_counter() - t0
        scored = em.fit_em(data, em.EMSettings(k, covariance_type=args.covariance_type,
                                               max_iter=1, tol=0.0),
                           seed=0, kind=kind, warm_start=(online.posterior_, -math.inf),
                           client=client)
        gap = (batch.lower_bound - scored.lower_bound) / abs(batch.lower_bound)
        print(f"MiniBatchBayesianGaussianMixture(max_iter=1) from its own start: "
              f"{online_seconds:.1f} s (2 reads), bound per row "
              f"{scored.lower_bound / n:.6f}, {100 * gap:.4f}% below batch from k-means "
              f"labels; {load_average()}")
    if client is not None:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
