"""Missing values: seconds per EM iteration with a share of entries missing against the same
data complete, full covariances, in one run.

For each ``--features`` value, draws ``--rows`` rows from a known mixture of
``--components`` full-covariance Gaussians, then runs ``--iterations`` EM iterations
(tol=0, started at the true parameters so no initialisation pass is timed) on

1. the complete data (``nonfinite='raise'``, today's kernels);
2. the same data with ``--missing`` of the entries set to NaN at random
   (``nonfinite='marginalize'``);

each pass on Dask's synchronous scheduler in this process (one core, one BLAS thread:
the per-row cost without scheduling noise). The two runs alternate ``--repeats`` times;
it prints the smallest seconds per iteration of each (the least disturbed by other work on
the machine, whose load average is printed too) and their ratio (target <= 2), and the
ratio of the smallest CPU seconds per iteration (this process's, less sensitive to the
other work on a loaded machine).
``--spread`` sets how far apart the true means lie: the statistics skip the (row,
component) pairs that provably cannot count (separated components), for the complete rows
of 'full' from 32 features on, for the rows with gaps at every size.

Before the timings it measures what a fresh process pays for the compiled kernels
(``--fresh-process``, on by default): a new Python process runs one small marginal E-step
for full and for tied covariances, first with an empty numba cache (compilation), then
again (loading the machine code from the cache), and with ``DGMM_COMPILED_KERNELS=0`` (the
NumPy kernels, no numba) for comparison.

Example::

    python benchmarks/bench_missing.py --features 16 64 --rows 100000
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import dask
import numpy as np
from idle import add_wait_idle_option, load_average, wait_for_idle

#: what a fresh process runs: import dgmm, then one small marginal E-step per compiled
#: covariance kind; prints the seconds of each part as JSON
FRESH_PROCESS = """
import json, time
start, cpu_start = time.perf_counter(), time.process_time()
import numpy as np
from dgmm.core import kernels
from dgmm.core.nonfinite import MARGINALIZE
from dgmm.core.params import GMMParams
imported, cpu_imported = time.perf_counter(), time.process_time()
rng = np.random.default_rng(0)
X = rng.normal(size=(500, 6))
X[rng.random(X.shape) < 0.2] = np.nan
for kind, cov in (("full", np.stack([np.eye(6)] * 3)), ("tied", np.eye(6))):
    params = GMMParams.from_covariances(np.full(3, 1 / 3), rng.normal(size=(3, 6)), cov, kind)
    kernels.chunk_stats(X, params, nonfinite=MARGINALIZE)
done, cpu_done = time.perf_counter(), time.process_time()
print(json.dumps({"import": imported - start, "first_e_steps": done - imported,
                  "import_cpu": cpu_imported - cpu_start,
                  "first_e_steps_cpu": cpu_done - cpu_imported}))
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk-rows", type=int, default=25_000)
    parser.add_argument("--missing", type=float, default=0.1, help="share of entries")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternating runs of each; the minima are compared")
    parser.add_argument("--spread", type=float, default=2.0,
                        help="scale of the true means (small: overlapping components)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--fresh-process", action=argparse.BooleanOptionalAction,
                        default=True, help="measure a fresh process's compile / load cost")
    add_wait_idle_option(parser)
    return parser.parse_args(argv)


def fresh_process_seconds() -> dict:
    """Seconds a new process spends importing dgmm and on its first marginal E-steps: with
    an empty numba cache, with the cache filled, and with the NumPy kernels only."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="dgmm-numba-cache-") as cache:
        runs = (("compile", {"NUMBA_CACHE_DIR": cache}),
                ("load from cache", {"NUMBA_CACHE_DIR": cache}),
                ("numpy kernels", {"DGMM_COMPILED_KERNELS": "0"}))
        for name, extra in runs:
            env = dict(os.environ, **extra)
            done = subprocess.run([sys.executable, "-c", FRESH_PROCESS], env=env, check=True,
                                  capture_output=True, text=True)
            out[name] = json.loads(done.stdout)
    return out


def true_params(d, k, rng, spread=2.0):
    from dgmm.core.params import GMMParams

    means = rng.normal(scale=spread, size=(k, d))
    covariances = []
    for _ in range(k):
        a = rng.normal(size=(d, d)) / np.sqrt(d)
        covariances.append(a @ a.T + 0.5 * np.eye(d))
    return GMMParams.from_covariances(np.full(k, 1.0 / k), means, np.array(covariances), "full")


def seconds_per_iteration(X, params, nonfinite, args):
    from dgmm.engine import em
    from dgmm.engine import passes as engine

    data = engine.prepare(X, chunk_rows=args.chunk_rows)
    settings = em.EMSettings(params.n_components, "full", tol=0.0,
                             max_iter=args.iterations, nonfinite=nonfinite)
    seconds, cpu = [], []
    last_cpu = [time.process_time()]

    def record(info):
        now = time.process_time()
        if info.phase == "iteration":
            seconds.append(info.seconds)
            cpu.append(now - last_cpu[0])
        last_cpu[0] = now

    with dask.config.set(scheduler="synchronous"):
        em.fit_em(data, settings, seed=0, fixed_init=lambda data, i: params, callback=record)
    return seconds, cpu


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    results = []
    if args.fresh_process:
        wait_for_idle(args.wait_idle)
        fresh = fresh_process_seconds()
        for name, part in fresh.items():
            print(f"fresh process, {name}: import dgmm {part['import']:.3f} s "
                  f"({part['import_cpu']:.3f} s CPU), first marginal E-steps (full, tied) "
                  f"{part['first_e_steps']:.3f} s ({part['first_e_steps_cpu']:.3f} s CPU); "
                  f"{load_average()}", flush=True)
        cached, numpy_only = fresh["load from cache"], fresh["numpy kernels"]
        print(f"  a fresh process pays "
              f"{cached['first_e_steps'] - numpy_only['first_e_steps']:.3f} s "
              f"({cached['first_e_steps_cpu'] - numpy_only['first_e_steps_cpu']:.3f} s of CPU "
              "time, what it takes on an idle core) for the compiled kernels loaded from the "
              "cache, over the NumPy kernels' first E-steps", flush=True)
        results.append({"fresh_process": fresh, "load_average": os.getloadavg()})
    for d in args.features:
        params = true_params(d, args.components, rng, args.spread)
        labels = rng.multinomial(args.rows, params.weights)
        X = params.family.sample(rng, params.means, params.covariances, labels)
        X = X[rng.permutation(X.shape[0])]
        gaps = X.copy()
        gaps[rng.random(X.shape) < args.missing] = np.nan
        complete_all, missing_all = [], []
        wait_for_idle(args.wait_idle)
        complete_cpu, missing_cpu = [], []
        for _ in range(args.repeats):
            wall, cpu = seconds_per_iteration(X, params, "raise", args)
            complete_all += wall
            complete_cpu += cpu
            wall, cpu = seconds_per_iteration(gaps, params, "marginalize", args)
            missing_all += wall
            missing_cpu += cpu
        complete, missing = min(complete_all), min(missing_all)
        row = {
            "features": d, "components": args.components, "rows": args.rows,
            "spread": args.spread,
            "missing_share": args.missing,
            "rows_with_gaps": int(np.isnan(gaps).any(axis=1).sum()),
            "complete_s_per_iter": complete, "missing_s_per_iter": missing,
            "ratio": missing / complete,
            "median_ratio": statistics.median(missing_all) / statistics.median(complete_all),
            "cpu_ratio": min(missing_cpu) / min(complete_cpu),
            "load_average": os.getloadavg(),
            "complete_all": complete_all, "missing_all": missing_all,
        }
        results.append(row)
        print(f"d={d:3d} K={args.components} spread={args.spread:g} rows={args.rows:,} "
              f"({row['rows_with_gaps']:,} with gaps): complete {complete:.3f} s/iter, "
              f"{args.missing:.0%} missing {missing:.3f} s/iter, ratio {row['ratio']:.2f} "
              f"(of the medians {row['median_ratio']:.2f}; of the CPU seconds per "
              f"iteration {row['cpu_ratio']:.2f}; load average "
              f"{row['load_average'][0]:.1f})",
              flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
