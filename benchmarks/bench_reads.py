"""Reads of the data per fit, and the quality reached, for the ways dgmm starts a fit.

Every fit reads a Zarr store through a getter that counts the rows it serves, in any
process (one line per read appended to a file), so "reads" is rows served / rows of the
data, initialisation included, exactly as a user on object storage pays for them. Side by
side in one run on the same LocalCluster, per data set:

- ``before``: ``GaussianMixture(K, init_size=0)``, the initialisation on all rows
  (k-means||, Lloyd passes, the labels pass), then EM;
- ``default``: ``GaussianMixture(K)``: the sample pass, the in-memory search, EM on all
  rows from the best start (``dgmm.engine.search``);
- ``sample 200k``: the same with ``init_size=200000`` (a sample smaller than the rule's);
- ``mini-batch``: ``MiniBatchGaussianMixture(K, max_iter=1)`` as it is on this branch;
- the references: batch EM on all rows from ``kmeans``, ``k-means++`` and
  ``random_from_data`` (``init_size=0``) run to ``--ref-tol``; "gap" is the mean
  log-likelihood per row of a fit minus the best of the three (positive: better).

The selection case fits ``GaussianMixtureSelection`` on a grid K = 1..16 x four types x
``n_init=2`` and reports reads and the choice; on data sets up to ``--reference-rows`` also
the choice of the same grid with ``init_size=0`` and ``--selection-restarts`` restarts
(the synthetic one's generating mixture is K=5 full).

    python benchmarks/bench_reads.py --rows 1000000 --seeds 1 2 --workers 2

Prints the load average with every figure; see benchmarks/README.md, "Reads per fit".
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

import numpy as np


class CountedArray:
    """A Zarr array whose reads are counted in a file (works in any worker process)."""

    def __init__(self, zarr_path: str, log_path: str):
        import zarr

        self.zarr_path, self.log_path = zarr_path, log_path
        self._array = zarr.open_array(zarr_path, mode="r")
        self.shape, self.dtype, self.ndim = self._array.shape, self._array.dtype, 2

    def __getstate__(self):
        return {"zarr_path": self.zarr_path, "log_path": self.log_path}

    def __setstate__(self, state):
        self.__init__(state["zarr_path"], state["log_path"])

    def __getitem__(self, key):
        out = self._array[key]
        if out.ndim == 2 and out.shape[0]:
            with open(self.log_path, "a") as log:
                log.write(f"{out.shape[0]}\n")
        return out


def rows_served(log_path: str) -> int:
    if not os.path.exists(log_path):
        return 0
    with open(log_path) as log:
        return sum(int(line) for line in log if line.strip())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--separation", type=float, default=2.5,
                        help="closest means apart, in largest standard deviations")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=125_000)
    parser.add_argument("--ref-tol", type=float, default=1e-5)
    parser.add_argument("--ref-max-iter", type=int, default=500)
    parser.add_argument("--path", default=os.path.join(tempfile.gettempdir(), "bench_reads"))
    parser.add_argument("--skip", nargs="*", default=[],
                        help="parts to leave out: mixtures, real, selection, minibatch")
    parser.add_argument("--selection-rows", type=int, default=200_000)
    parser.add_argument("--selection-restarts", type=int, default=10)
    parser.add_argument("--reference-rows", type=int, default=10_000,
                        help="largest selection data set also fitted with init_size=0 and "
                             "--selection-restarts restarts (the reference grid)")
    parser.add_argument("--json", default=None, help="write the figures here")
    return parser.parse_args(argv)


class Bench:
    def __init__(self, client, path):
        self.client, self.path, self.count = client, path, 0

    def array(self, zarr_path, chunk_rows):
        import dask.array as da

        self.count += 1
        log = os.path.join(self.path, f"reads-{os.getpid()}-{self.count}.log")
        counted = CountedArray(zarr_path, log)
        return da.from_array(counted, chunks=(chunk_rows, counted.shape[1]),
                             name=f"counted-{self.count}"), log

    def fit(self, estimator, zarr_path, chunk_rows, n_rows):
        """(estimator fitted, reads, seconds, mean log-likelihood over all rows)."""
        X, log = self.array(zarr_path, chunk_rows)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(X)
        seconds = time.perf_counter() - t0
        reads = rows_served(log) / n_rows
        score_X, _ = self.array(zarr_path, chunk_rows)
        model = getattr(estimator, "best_estimator_", estimator)
        return estimator, reads, seconds, model.score(score_X)


def _write(path, X, chunk_rows):
    import zarr

    z = zarr.open_array(path, mode="w", shape=X.shape, chunks=(chunk_rows, X.shape[1]),
                        dtype="float64")
    z[:] = X
    return path


def real_data_sets(root, chunk_rows):
    """Data sets that ship with scikit-learn (standardised), and Old Faithful."""
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    out = []
    digits = datasets.load_digits().data
    out.append(("digits (1797 x 64), K=10 diag", _write(os.path.join(root, "digits.zarr"),
               digits, chunk_rows), 10, "diag", digits.shape[0]))
    cancer = StandardScaler().fit_transform(datasets.load_breast_cancer().data)
    out.append(("breast cancer (569 x 30), K=4 full", _write(
        os.path.join(root, "cancer.zarr"), cancer, chunk_rows), 4, "full", cancer.shape[0]))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    from distributed import Client, LocalCluster

    import dgmm
    from dgmm.data import synthetic

    os.makedirs(args.path, exist_ok=True)
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", memory_limit="4GiB")
    client = Client(cluster)
    bench = Bench(client, args.path)
    figures = {"settings": vars(args), "cases": []}
    K = args.components

    def load():
        return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())

    def compare(name, zarr_path, k, cov, n_rows, chunk_rows):
        print(f"\n== {name}: {n_rows} rows, K={k} {cov}, {load()}", flush=True)
        common = dict(covariance_type=cov, client=client, random_state=0)
        refs = {}
        for method in ("kmeans", "k-means++", "random_from_data"):
            ref = dgmm.GaussianMixture(k, init_params=method, init_size=0, tol=args.ref_tol,
                                       max_iter=args.ref_max_iter, **common)
            _, reads, seconds, score = bench.fit(ref, zarr_path, chunk_rows, n_rows)
            refs[method] = score
            print(f"  reference {method:17s} ll {score:.5f}  reads {reads:6.1f}  "
                  f"{seconds:7.1f} s  ({load()})", flush=True)
        best = max(refs.values())
        rows = {}
        fits = {
            "before (init_size=0)": dgmm.GaussianMixture(k, init_size=0, **common),
            "default": dgmm.GaussianMixture(k, **common),
        }
        if n_rows > 200_000:
            fits["default, init_size=200000"] = dgmm.GaussianMixture(k, init_size=200_000,
                                                                     **common)
        if "minibatch" not in args.skip:
            fits["mini-batch, max_iter=1"] = dgmm.MiniBatchGaussianMixture(
                k, max_iter=1, **common)
        for label, estimator in fits.items():
            _, reads, seconds, score = bench.fit(estimator, zarr_path, chunk_rows, n_rows)
            rows[label] = {"reads": reads, "seconds": seconds, "ll": score,
                           "gap": score - best, "load": os.getloadavg()[0]}
            print(f"  {label:28s} reads {reads:5.1f}  ll {score:.5f}  gap {score - best:+.5f}"
                  f"  {seconds:7.1f} s  ({load()})", flush=True)
        figures["cases"].append({"name": name, "references": refs, "fits": rows})

    if "mixtures" not in args.skip:
        for seed in args.seeds:
            zarr_path = os.path.join(args.path, f"mixture-{seed}.zarr")
            if not os.path.exists(zarr_path):
                synthetic.make_gmm_data(zarr_path, args.rows, args.features, K, seed=seed,
                                        separation=args.separation, client=client,
                                        overwrite=True, chunk_rows=args.chunk_rows)
            compare(f"mixture seed {seed} (separation {args.separation})",
                    os.path.join(zarr_path), K, "full", args.rows, args.chunk_rows)
    if "real" not in args.skip:
        for name, zarr_path, k, cov, n_rows in real_data_sets(args.path, 500):
            compare(name, zarr_path, k, cov, n_rows, 500)
    if "selection" not in args.skip:
        grid = dict(n_components=range(1, 17),
                    covariance_type=["full", "tied", "diag", "spherical"])
        zarr_path = os.path.join(args.path, "selection.zarr")
        if not os.path.exists(zarr_path):
            synthetic.make_gmm_data(zarr_path, args.selection_rows, 4, 5, seed=7,
                                    separation=3.0, client=client, overwrite=True,
                                    chunk_rows=25_000)
        faithful = np.loadtxt(os.path.join(os.path.dirname(__file__), os.pardir, "tests",
                                           "fixtures", "mclust", "faithful.csv"),
                              delimiter=",", skiprows=1)
        faithful_path = _write(os.path.join(args.path, "faithful.zarr"), faithful, 100)
        for name, path, n_rows, chunk_rows in (
                (f"selection quickstart-like ({args.selection_rows} x 4)", zarr_path,
                 args.selection_rows, 25_000),
                ("Old Faithful (272 x 2)", faithful_path, 272, 100)):
            print(f"\n== {name}: grid K=1..16 x 4 types, {load()}", flush=True)
            entry = {"name": name}
            runs = [("default, n_init=2", dict(n_init=2))]
            if n_rows <= args.reference_rows:
                runs.append((f"init_size=0, n_init={args.selection_restarts}",
                             dict(n_init=args.selection_restarts, init_size=0)))
            for label, extra in runs:
                selection = dgmm.GaussianMixtureSelection(**grid, **extra, client=client,
                                                          random_state=0)
                _, reads, seconds, score = bench.fit(selection, path, chunk_rows, n_rows)
                best = selection.best_params_
                bic = float(selection.results_.bic.min())
                entry[label] = {"reads": reads, "seconds": seconds, "best": best, "bic": bic}
                print(f"  {label:28s} reads {reads:5.1f}  picks K={best['n_components']} "
                      f"{best['covariance_type']}  BIC {bic:.2f}  {seconds:7.1f} s  ({load()})",
                      flush=True)
            figures["cases"].append(entry)
    client.close()
    cluster.close()
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
