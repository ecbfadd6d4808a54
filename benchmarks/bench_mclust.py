"""dgmm's fourteen mclust models against R's mclust, side by side in one run.

Part ``cells`` (mclust's example data sets, tests/fixtures/mclust/*.csv): for each set, R's
``mclustBIC(X, G = 1:9)`` (run by ``Rscript`` when R and mclust are installed, timed inside
R) and ``dgmm.GaussianMixtureSelection(range(1, 10), covariance_type="all")`` on the same
rows. Prints both times and their ratio (target: dgmm at most 3x mclust), the cells
(model, K) where dgmm's best BIC over its restarts is at least mclust's minus 0.5 (mclust's
sign, 2 log L - p log n; target: 95% of the cells), and both selected models. dgmm runs
with 3 restarts, tol 1e-5 and ``seed_from_other_types=3`` (each candidate also starts from
the three best other types' solutions at its K and from the best at K +- 1 merged or split,
as mclust starts every model of a K from one partition); the options change these. Without R it
says so and compares with the numbers stored in tests/fixtures/mclust/bic.json.

Part ``reads`` (synthetic, --rows x --features): the fourteen models at one K in one grid
against one full-covariance fit, both on the same chunked array: data passes (reads) and
wall time of each and their ratio (target: the fourteen cost at most 1.5x the reads of one
fit).

Examples::

    python benchmarks/bench_mclust.py --part cells
    python benchmarks/bench_mclust.py --part reads --rows 1000000 --features 16
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mclust"
DATA_SETS = ("faithful", "iris", "diabetes", "banknote")
MODELS = ("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE", "EVE", "VVE", "EEV", "VEV",
          "EVV", "VVV")
#: BIC (mclust's sign) by which a dgmm cell may fall short of mclust's and still count
SLACK = 0.5

R_SCRIPT = """
suppressMessages(library(mclust))
X <- read.csv(commandArgs(TRUE)[1])
invisible(mclustBIC(X[1:20, ], G = 1:2, verbose = FALSE))  # load and warm up
seconds <- system.time(b <- mclustBIC(X, G = 1:9, verbose = FALSE))[["elapsed"]]
models <- c("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE", "EVE", "VVE",
            "EEV", "VEV", "EVV", "VVV")
s <- summary(b, X)
cat(jsonlite::toJSON(list(seconds = seconds, best_model = s$modelName, best_G = s$G,
    bic = lapply(models, function(m) as.numeric(unclass(b)[, m]))), digits = NA,
    auto_unbox = TRUE, na = "null"))
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["cells", "reads", "both"], default="cells")
    parser.add_argument("--sets", nargs="+", default=list(DATA_SETS))
    parser.add_argument("--n-init", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-5,
                        help="dgmm's tolerance on the mean log-likelihood per row (mclust's "
                             "default stops at a relative change of 1e-5 of the total)")
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--seed-from-other-types", type=int, default=3,
                        help="GaussianMixtureSelection's round from other types' solutions")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--k", type=int, default=4, help="components in part reads")
    parser.add_argument("--chunk-rows", type=int, default=62_500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args(argv)


def load_average() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def r_available() -> bool:
    if shutil.which("Rscript") is None:
        return False
    probe = subprocess.run(["Rscript", "-e", "library(mclust); library(jsonlite)"],
                           capture_output=True, text=True)
    return probe.returncode == 0


def run_mclust(path: Path) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as script:
        script.write(R_SCRIPT)
    try:
        out = subprocess.run(["Rscript", script.name, str(path)], capture_output=True,
                             text=True, check=True)
    finally:
        os.unlink(script.name)
    return json.loads(out.stdout)


def compare_cells(results, reference: dict, slack: float = SLACK):
    """(cells within ``slack``, cells mclust fitted, the cells short of it as
    (model, K, dgmm minus mclust)) from a ``GaussianMixtureSelection.results_`` table and
    mclust's BIC per model (lists over K = 1..9, None where mclust failed)."""
    ours = -results.groupby(["covariance_type", "n_components"])["bic"].min()
    good, total, short = 0, 0, []
    for model, column in zip(MODELS, reference["bic"], strict=True):
        for k, theirs in enumerate(column, start=1):
            if theirs is None:
                continue
            total += 1
            value = ours.get((model, k), -np.inf)
            if value >= theirs - slack:
                good += 1
            else:
                short.append((model, k, round(float(value - theirs), 2)))
    return good, total, short


def fit_grid(X, args):
    import dgmm

    selection = dgmm.GaussianMixtureSelection(
        range(1, 10), covariance_type="all", n_init=args.n_init, tol=args.tol,
        max_iter=args.max_iter, random_state=args.seed,
        seed_from_other_types=args.seed_from_other_types)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        selection.fit(X)
        seconds = time.perf_counter() - start
    return selection, seconds


def part_cells(args) -> dict:
    import pandas as pd

    have_r = r_available()
    if not have_r:
        print("R with mclust (and jsonlite) is not installed here: mclust's times are not "
              "measured; BIC is compared with tests/fixtures/mclust/bic.json (mclust 6.0).")
    stored = json.loads((FIXTURES / "bic.json").read_text())
    print(f"dgmm: n_init={args.n_init} tol={args.tol} max_iter={args.max_iter} "
          f"seed_from_other_types={args.seed_from_other_types}")
    figures, good_all, total_all = {}, 0, 0
    for name in args.sets:
        path = FIXTURES / f"{name}.csv"
        X = pd.read_csv(path).to_numpy(np.float64)
        reference = run_mclust(path) if have_r else stored[name]
        load_before = load_average()
        selection, seconds = fit_grid(X, args)
        good, total, short = compare_cells(selection.results_, reference)
        good_all, total_all = good_all + good, total_all + total
        best = selection.best_params_
        ours_best = -float(selection.results_.groupby(
            ["covariance_type", "n_components"])["bic"].min().min())
        theirs_best = max(v for column in reference["bic"] for v in column if v is not None)
        line = (f"{name:9s} dgmm {seconds:7.2f} s ({selection.n_passes_} passes)")
        if have_r:
            line += (f"  mclust {reference['seconds']:6.2f} s  ratio "
                     f"{seconds / max(reference['seconds'], 1e-9):5.1f}x")
        line += (f"  cells {good}/{total}  selected {best['covariance_type']},"
                 f"{best['n_components']} (BIC {ours_best:.2f}) vs mclust "
                 f"{reference['best_model']},{reference['best_G']} (BIC {theirs_best:.2f})"
                 f"  [{load_before}]")
        print(line, flush=True)
        if short:
            print("          short of mclust: " + ", ".join(f"{m},{k} ({d})"
                                                        for m, k, d in short))
        figures[name] = {"dgmm_seconds": seconds, "mclust_seconds": reference.get("seconds"),
                         "measured_mclust": have_r, "cells": good, "of": total,
                         "short": short, "selected": best,
                         "mclust_selected": [reference["best_model"], reference["best_G"]],
                         "best_bic": ours_best, "mclust_best_bic": theirs_best,
                         "load": load_before}
    print(f"all sets: {good_all}/{total_all} cells = {100 * good_all / total_all:.1f}% "
          f"within {SLACK} of mclust's BIC  [{load_average()}]")
    return figures


def part_reads(args) -> dict:
    import dask
    import dask.array as da

    import dgmm
    from dgmm.data.synthetic import sample_chunk, true_params

    params = true_params(args.features, args.k, "VEV", seed=args.seed)
    starts = range(0, args.rows, args.chunk_rows)
    X = da.concatenate([
        da.from_delayed(dask.delayed(sample_chunk)(min(args.chunk_rows, args.rows - s), i,
                                                   args.seed, params),
                        (min(args.chunk_rows, args.rows - s), args.features), np.float64)
        for i, s in enumerate(starts)]).persist()
    common = dict(n_init=1, tol=1e-3, max_iter=100, random_state=args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        one = dgmm.GaussianMixture(args.k, covariance_type="full", **common).fit(X)
        one_seconds = time.perf_counter() - start
        load_one = load_average()
        start = time.perf_counter()
        grid = dgmm.GaussianMixtureSelection([args.k], covariance_type="all", **common).fit(X)
        grid_seconds = time.perf_counter() - start
    one_passes = one.fit_state_.passes
    print(f"{args.rows} x {args.features}, K={args.k}: one full fit {one_passes} passes "
          f"{one_seconds:.1f} s [{load_one}]; the fourteen in one grid {grid.n_passes_} "
          f"passes {grid_seconds:.1f} s [{load_average()}]; reads ratio "
          f"{grid.n_passes_ / one_passes:.2f}x, time ratio {grid_seconds / one_seconds:.2f}x")
    return {"rows": args.rows, "features": args.features, "k": args.k,
            "one_fit_passes": one_passes, "one_fit_seconds": one_seconds,
            "grid_passes": grid.n_passes_, "grid_seconds": grid_seconds}


def main(argv=None) -> int:
    args = parse_args(argv)
    figures = {}
    if args.part in ("cells", "both"):
        figures["cells"] = part_cells(args)
    if args.part in ("reads", "both"):
        figures["reads"] = part_reads(args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
