"""Progress of a fit as the runner reports it: lines to print, metrics records and
checkpoints, one adapter per kind of fit (batch EM, stepwise EM, a model selection).

Each adapter is the ``callback`` of the estimator's ``fit``; it saves a checkpoint (its
state's ``to_record()`` plus the run's stamp) every ``every`` iterations, chunk tasks or
passes, and at the points a resumed run must not repeat.
"""
from __future__ import annotations

import math
import time

from ..engine.em import EMState, IterationInfo
from ..engine.search import SearchEvent, sample_record
from .checkpoint import CheckpointStore

__all__ = ["EMProgress", "StepwiseProgress", "SelectionProgress"]


class EMProgress:
    """Turns iteration callbacks into progress lines, metrics and checkpoints."""

    def __init__(self, emit, store: CheckpointStore | None, every: int, stamp: dict,
                 max_iter: int, objective: str = "mean log-lik"):
        self.emit = emit
        self.objective = objective  # how the progress line names the lower bound
        self.store = store
        self.every = every
        self.max_iter = max_iter
        self.stamp = stamp
        self.started = time.perf_counter()

    def __call__(self, info: IterationInfo) -> None:
        st = info.state
        if info.phase == "init":
            self.emit(f"init {st.init_index + 1}: initial parameters ready "
                      f"({info.seconds:.2f} s)")
        else:
            change = f"{info.change: .3e}" if math.isfinite(info.change) else "     n/a  "
            self.emit(
                f"init {st.init_index + 1} iter {st.iteration:4d}  "
                f"{self.objective} {st.lower_bound: .8f}  change {change}  "
                f"{info.seconds:6.2f} s  {info.rows_per_second:,.0f} rows/s"
                + (f"  empty components {list(info.empty)}" if info.empty else "")
            )
        if self.store is None:
            return
        if info.phase == "iteration":
            self.store.append_metrics({
                "init": st.init_index, "iteration": st.iteration,
                "lower_bound": st.lower_bound,
                # strict JSON: the first iteration's change (from -inf) is null
                "change": info.change if math.isfinite(info.change) else None,
                "seconds": info.seconds,
                "rows_per_second": info.rows_per_second, "n_rows": st.n_rows,
                "converged": st.converged, "time": time.time(),
            })
        last = st.converged or info.phase == "init" or st.iteration >= self.max_iter
        if last or st.iteration % self.every == 0:
            arrays, meta = st.to_record()
            meta.update(self.stamp)
            self.store.save(self._step(st), arrays, meta)

    @staticmethod
    def _step(state: EMState) -> int:
        # restarts run in lockstep: the passes made so far increase across all of them
        return state.passes

    def search_event(self, event: SearchEvent) -> None:
        """The sample pass and the search: a progress line and a metrics record each; the
        sample is checkpointed (step 0, which the initialised restarts' checkpoint
        replaces), so a run killed during the search does not read the data again."""
        if event.phase == "sample":
            sample = event.sample
            self.emit(f"sample: {sample.rows.shape[0]:,} of {sample.n_rows:,} usable rows "
                      f"drawn in one pass ({event.seconds:.2f} s)")
            record = {"phase": "sample", "rows": int(sample.rows.shape[0]),
                      "n_rows": sample.n_rows, "n_nonfinite": sample.n_nonfinite}
        else:
            self.emit(f"search: {len(event.starts)} start(s) found on the sample, best mean "
                      f"log-lik {event.logliks[0]:.8f} ({event.seconds:.2f} s)")
            record = {"phase": "search", "starts": len(event.starts),
                      "sample_log_likelihoods": list(event.logliks)}
        if self.store is None:
            return
        if event.phase == "sample":
            arrays, meta = sample_record(event.sample)
            self.store.save(0, arrays, {**meta, "kind": "sample", **self.stamp})
        self.store.append_metrics({**record, "seconds": event.seconds, "time": time.time()})


class StepwiseProgress:
    """Turns stepwise callbacks into progress lines (pass and step), metrics and
    checkpoints: after the wave that completes each ``every`` chunk tasks of a pass (a
    wave completes ``wave_width`` of them at once), at the end of every pass, after
    initialisation and after every ``every`` polish iterations."""

    def __init__(self, emit, store: CheckpointStore | None, every: int, stamp: dict,
                 n_chunks: int):
        self.emit = emit
        self.store = store
        self.every = every
        self.stamp = stamp
        self.n_chunks = n_chunks
        self.pass_seconds = 0.0
        self.position = 0  # chunks of the current pass done at the last callback

    @staticmethod
    def key(state) -> int:
        """One increasing number across restarts: (steps, polish iteration)."""
        polish = 0 if state.polish is None else state.polish.iteration + 1
        return state.n_steps * 1_000_000 + polish

    def __call__(self, info) -> None:
        st, phase = info.state, info.phase
        if phase == "init":
            self.emit("init: initial parameters ready")
            save = True
        elif phase == "chunk":
            self.pass_seconds += info.seconds
            self.emit(f"pass {st.n_passes + 1} chunk {st.position}/{self.n_chunks} "
                      f"step {st.n_steps}  {info.seconds:6.2f} s")
            save = st.position // self.every > self.position // self.every
            self.position = st.position
        elif phase == "pass":
            seconds, self.pass_seconds = self.pass_seconds + info.seconds, 0.0
            self.position = 0
            self.emit(f"pass {st.n_passes} done  step {st.n_steps}  "
                      f"mean log-lik {st.lower_bound: .8f}  {seconds:6.2f} s")
            save = True
            self._metrics({"pass": st.n_passes, "n_steps": st.n_steps,
                           "lower_bound": st.lower_bound, "n_rows": st.n_rows,
                           "converged": st.converged, "seconds": seconds}, st)
        elif st.polish.iteration == 0:  # the polish starts from the stepwise result
            self.emit(f"polish: batch EM from step {st.n_steps}")
            save = False
        else:
            polish = st.polish
            self.emit(f"polish iter {polish.iteration:4d}  step {st.n_steps}  "
                      f"mean log-lik {polish.lower_bound: .8f}  {info.seconds:6.2f} s")
            save = polish.converged or polish.iteration % self.every == 0
            self._metrics({"polish_iteration": polish.iteration, "n_steps": st.n_steps,
                           "lower_bound": polish.lower_bound,
                           "converged": polish.converged, "seconds": info.seconds}, st)
        if self.store is not None and save:
            arrays, meta = st.to_record()
            meta.update(self.stamp)
            self.store.save(self.key(st), arrays, meta)

    def _metrics(self, record: dict, state) -> None:
        if self.store is not None:
            bound = record["lower_bound"]
            record["lower_bound"] = bound if math.isfinite(bound) else None
            self.store.append_metrics({**record, "key": self.key(state), "time": time.time()})


class SelectionProgress:
    """Turns the rounds of a grid fit into progress lines, metrics and checkpoints."""

    def __init__(self, emit, store: CheckpointStore | None, every: int, stamp: dict,
                 n_candidates: int):
        self.emit = emit
        self.store = store
        self.every = every
        self.stamp = stamp
        self.n_candidates = n_candidates
        self.saved_passes = -1
        self.last_passes = None
        self.started = time.perf_counter()
        self._done: set = set()  # candidates already reported done

    def resume_from(self, state) -> None:
        """Continue after the ``SelectionState`` a run resumes from: its finished
        candidates are not reported again, and its pass was saved."""
        self._done = {kc for kc, live in zip(state.candidates, state.live, strict=True)
                      if not live}
        self.saved_passes = self.last_passes = state.passes

    def __call__(self, progress) -> None:
        finished = []
        for (k, c), info in progress.events:
            st = info.state
            if info.phase == "iteration" and self.store is not None:
                self.store.append_metrics({
                    "n_components": k, "covariance_type": c, "init": st.init_index,
                    "iteration": st.iteration, "lower_bound": st.lower_bound,
                    "change": info.change if math.isfinite(info.change) else None,
                    "seconds": info.seconds, "converged": st.converged,
                    "time": time.time(),
                })
        for (k, c), state, live in zip(progress.candidates, progress.states, progress.live,
                                       strict=True):
            if not live and state is not None and (k, c) not in self._done:
                self._done.add((k, c))
                best = state.best
                finished.append(
                    f"candidate K={k} {c}: done, {best.n_iter} iterations, converged="
                    f"{best.converged}, mean log-lik {best.lower_bound:.6f}"
                    if best is not None else f"candidate K={k} {c}: done")
        moved = progress.passes != self.last_passes
        if moved:
            self.last_passes = progress.passes
            self.emit(f"pass {progress.passes:4d}  candidates live {progress.n_live}/"
                      f"{self.n_candidates}  {time.perf_counter() - self.started:7.1f} s")
        for line in finished:
            self.emit(line)
        if self.store is None or not moved:
            return
        if finished or progress.n_live == 0 or progress.passes - self.saved_passes >= self.every:
            arrays, meta = progress.to_record()
            meta.update(self.stamp)
            self.store.save(progress.passes, arrays, meta)
            self.saved_passes = progress.passes
