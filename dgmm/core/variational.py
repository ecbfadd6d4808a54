"""Variational Bayesian Gaussian mixtures: priors, the update, the E-step terms, the bound.

The model (Bishop 2006, section 10.2; Blei and Jordan 2006 for the Dirichlet process): the
weights have a Dirichlet(alpha_0) prior or a truncated stick-breaking Dirichlet process
prior (Beta(1, gamma_0) sticks), each component a Gaussian-Wishart(m_0, beta_0, W_0, nu_0)
prior. The variational posterior keeps the same forms; ``VariationalParams`` holds its
parameters with the Wishart scale stored as scikit-learn stores it, the normalised
covariance ``W_k^-1 / nu_k`` and its precision factor (so that the Gaussian term of the
E-step has precision ``nu_k W_k``, the expected precision).

Everything here is a pure function of EM's statistics (``SuffStats``: N_k, shifted sums,
scatter), so the E-step kernels, the pass and the tree serve variational inference as
they serve EM: the E-step's log-density of row i under component k is

    log rho_ik = E[log pi_k] + 1/2 E[log |Lambda_k|] - d/2 log(2 pi) - d / (2 beta_k)
                 - nu_k / 2 (x_i - m_k)^T W_k (x_i - m_k),

a Gaussian with precision factor ``precisions_cholesky`` plus a per-component constant
(``estep_log_constants``). The update (``variational_update``) and the lower bound
(``lower_bound``) follow scikit-learn's ``BayesianGaussianMixture`` term for term, so that
from the same responsibilities every number agrees with it; the entropy of the
responsibilities comes from the statistics (``responsibility_entropy``), not from a
statistic of its own. See docs/design.md, "Variational Bayesian mixtures".
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import betaln, digamma, gammaln

from ..errors import ConfigError
from .families import SKLEARN_TYPES, family
from .kernels import chunk_stats_from_resp, split_finite
from .mstep import MStepResult, mean_log_likelihood
from .params import GMMParams
from .stats import SuffStats
from .stepwise import as_average, moved_to, statistics_of
from .terms import GaussianTerms
from .types import WEIGHT_PRIOR_TYPES

_EPS = np.finfo(np.float64).eps


def _is_process(prior_type: str) -> bool:
    if prior_type not in WEIGHT_PRIOR_TYPES:
        raise ConfigError(f"weight_concentration_prior_type must be one of "
                          f"{', '.join(WEIGHT_PRIOR_TYPES)}, got {prior_type!r}.")
    return prior_type == WEIGHT_PRIOR_TYPES[0]


@dataclass(frozen=True, eq=False)
class VariationalPrior:
    """The prior of a variational Bayesian mixture, every value resolved.

    weight_concentration_prior_type: 'dirichlet_process' or 'dirichlet_distribution';
    weight_concentration: gamma_0 (the Beta(1, gamma_0) sticks) or alpha_0 (Dirichlet);
    mean_precision: beta_0; mean: m_0 (d,); degrees_of_freedom: nu_0 (> d - 1);
    covariance: W_0^-1 shaped as one component's covariance: (d, d) for full and tied,
    (d,) for diag, a scalar for spherical.
    """

    covariance_type: str
    weight_concentration_prior_type: str
    weight_concentration: float
    mean_precision: float
    mean: np.ndarray
    degrees_of_freedom: float
    covariance: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"prior.mean": np.asarray(self.mean), "prior.covariance":
                np.asarray(self.covariance)}

    def to_meta(self) -> dict:
        return {"weight_concentration_prior_type": self.weight_concentration_prior_type,
                "weight_concentration": self.weight_concentration,
                "mean_precision": self.mean_precision,
                "degrees_of_freedom": self.degrees_of_freedom}

    @classmethod
    def from_record(cls, covariance_type: str, arrays: dict, meta: dict) -> VariationalPrior:
        return cls(covariance_type, meta["weight_concentration_prior_type"],
                   float(meta["weight_concentration"]), float(meta["mean_precision"]),
                   np.asarray(arrays["prior.mean"], dtype=np.float64),
                   float(meta["degrees_of_freedom"]),
                   np.asarray(arrays["prior.covariance"], dtype=np.float64))


@dataclass(frozen=True, eq=False)
class DataMoments:
    """Total weight, mean and scatter about the mean of a set of rows (one component's
    second moments in the family's form), mergeable by Chan et al.'s pairwise rule: the
    data's moments that the prior's defaults come from, in one pass.

    n_rows, n_nonfinite, first_nonfinite: rows used, rows skipped for NaN or inf, and the
    global index of the first skipped row (-1 when none).
    """

    covariance_type: str
    n: float
    mean: np.ndarray
    scatter: np.ndarray
    n_rows: int = 0
    n_nonfinite: int = 0
    first_nonfinite: int = -1

    def merge(self, other: DataMoments) -> DataMoments:
        first = min((i for i in (self.first_nonfinite, other.first_nonfinite) if i >= 0),
                    default=-1)
        counts = dict(n_rows=self.n_rows + other.n_rows,
                      n_nonfinite=self.n_nonfinite + other.n_nonfinite,
                      first_nonfinite=first)
        if not other.n > 0 or not self.n > 0:
            kept = self if self.n > 0 else other
            return DataMoments(self.covariance_type, kept.n, kept.mean, kept.scatter, **counts)
        kind = family(self.covariance_type)
        n = self.n + other.n
        mean = self.mean + (other.n / n) * (other.mean - self.mean)
        zeros = np.zeros((1, mean.shape[0]))
        scatter = (kind.move_s2(self.scatter, np.array([self.n]), zeros,
                                (self.mean - mean)[None])
                   + kind.move_s2(other.scatter, np.array([other.n]), zeros,
                                  (other.mean - mean)[None]))
        return DataMoments(self.covariance_type, n, mean, scatter, **counts)

    def covariance(self) -> np.ndarray:
        """The covariance with ddof=1 (row weights count as frequencies), in one
        component's covariance shape ((d, d), (d,) or a scalar)."""
        kind = family(self.covariance_type)
        d = self.mean.shape[0]
        covariance = kind.estimate_covariances(np.array([self.n - 1.0]), np.zeros((1, d)),
                                               self.scatter, 0.0)
        return covariance[0] if kind.per_component else covariance


def data_moments_chunk(X: np.ndarray, sample_weight: np.ndarray | None, row_offset: int,
                       covariance_type: str) -> DataMoments:
    """``DataMoments`` of one chunk's finite rows (rows with NaN or inf are counted and
    skipped); the signature of a pass's chunk function."""
    X, sample_weight, n_bad, first_bad = split_finite(X, sample_weight, row_offset)
    kind = family(covariance_type)
    d = X.shape[1]
    n = float(X.shape[0]) if sample_weight is None else float(np.sum(sample_weight))
    counts = dict(n_rows=int(X.shape[0]), n_nonfinite=n_bad, first_nonfinite=first_bad)
    if not n > 0:
        return DataMoments(covariance_type, 0.0, np.zeros(d),
                           np.zeros(kind.s2_shape(1, d)), **counts)
    mean = np.average(np.asarray(X, dtype=np.float64), axis=0, weights=sample_weight)
    stats = chunk_stats_from_resp(X, np.ones((X.shape[0], 1)), mean[None], covariance_type,
                                  sample_weight)
    scatter = kind.move_s2(stats.s2, stats.nk, stats.s1, -stats.s1 / stats.nk[:, None])
    return DataMoments(covariance_type, n, mean, scatter, **counts)


def resolve_prior(covariance_type: str, n_components: int, data_mean: np.ndarray,
                  data_covariance, *, weight_concentration_prior_type="dirichlet_process",
                  weight_concentration_prior=None, mean_precision_prior=None,
                  mean_prior=None, degrees_of_freedom_prior=None,
                  covariance_prior=None) -> VariationalPrior:
    """The prior with scikit-learn's defaults: gamma_0 = 1 / K, beta_0 = 1, m_0 the data's
    mean, nu_0 = d, W_0^-1 the data's covariance (ddof=1) in the type's shape.

    ``ConfigError`` says which given value is unusable and why.
    """
    if covariance_type not in SKLEARN_TYPES:
        raise ConfigError(
            f"A variational Bayesian mixture takes covariance_type {', '.join(SKLEARN_TYPES)} "
            f"(a Gaussian-Wishart prior per component), got {covariance_type!r}.")
    kind = family(covariance_type)
    _is_process(weight_concentration_prior_type)
    data_mean = np.asarray(data_mean, dtype=np.float64)
    d = data_mean.shape[0]
    one_shape = kind.covariance_shape(1, d)[int(kind.per_component):]
    if mean_prior is None:
        mean = data_mean
    else:
        mean = np.asarray(mean_prior, dtype=np.float64)
        if mean.shape != (d,):
            raise ConfigError(f"mean_prior must have shape ({d},) (one value per feature), "
                              f"got shape {mean.shape}.")
    if degrees_of_freedom_prior is None:
        dof = float(d)
    elif degrees_of_freedom_prior > d - 1.0:
        dof = float(degrees_of_freedom_prior)
    else:
        raise ConfigError(f"degrees_of_freedom_prior must be greater than n_features - 1 = "
                          f"{d - 1}, got {degrees_of_freedom_prior}.")
    if covariance_prior is None:
        covariance = np.asarray(data_covariance, dtype=np.float64)
    else:
        covariance = np.asarray(covariance_prior, dtype=np.float64)
        if covariance.shape != one_shape:
            raise ConfigError(
                f"covariance_prior for covariance_type={covariance_type!r} must have shape "
                f"{one_shape}, got shape {covariance.shape}.")
        problem = kind.precisions_problem(
            np.broadcast_to(covariance, kind.covariance_shape(1, d)))
        if problem is not None:
            problem = problem.replace("precision", "covariance_prior")
            raise ConfigError(f"covariance_prior is unusable: {problem}.")
    return VariationalPrior(
        covariance_type, weight_concentration_prior_type,
        float(1.0 / n_components if weight_concentration_prior is None
              else weight_concentration_prior),
        float(1.0 if mean_precision_prior is None else mean_precision_prior),
        mean, dof, covariance)


@dataclass(frozen=True, eq=False)
class VariationalParams:
    """The variational posterior of a mixture (scikit-learn's fitted attributes).

    weight_concentration: (K,) Dirichlet parameters, or (2, K) the Beta parameters of the
    sticks of a Dirichlet process; mean_precision: beta_k (K,); means: m_k (K, d);
    degrees_of_freedom: nu_k (K,), or a scalar for tied; covariances: W_k^-1 / nu_k in the
    type's covariance shape; precisions_cholesky: their precision factors.
    """

    covariance_type: str
    weight_concentration_prior_type: str
    weight_concentration: np.ndarray
    mean_precision: np.ndarray
    means: np.ndarray
    degrees_of_freedom: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray

    ARRAYS = ("weight_concentration", "mean_precision", "means", "degrees_of_freedom",
              "covariances", "precisions_cholesky")

    def __post_init__(self):
        for name in self.ARRAYS:
            array = np.array(getattr(self, name), dtype=np.float64, copy=True)
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    @property
    def is_process(self) -> bool:
        return _is_process(self.weight_concentration_prior_type)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.ARRAYS}

    @classmethod
    def from_arrays(cls, covariance_type: str, arrays: dict) -> VariationalParams:
        """The posterior from its ``to_arrays()``: the weights' prior is the Dirichlet
        process when ``weight_concentration`` holds two rows (the sticks' Beta
        parameters)."""
        process = np.ndim(arrays["weight_concentration"]) == 2
        return cls(covariance_type, WEIGHT_PRIOR_TYPES[0 if process else 1],
                   *(arrays[name] for name in cls.ARRAYS))

    def gaussian_terms(self) -> GaussianTerms:
        """The E-step's terms: means m_k and precision factors of nu_k W_k, with every
        constant (``estep_log_constants``) in ``log_weights`` and log det U_k in
        ``log_det``, so that the kernels' log-density is log rho_ik. One object per
        parameter object (the kernels cache per terms)."""
        terms = self.__dict__.get("_terms")
        if terms is None:
            kind = family(self.covariance_type)
            terms = GaussianTerms(self.means, self.precisions_cholesky,
                                  estep_log_constants(self),
                                  kind.log_det_cholesky(self.precisions_cholesky,
                                                        self.n_features),
                                  self.covariance_type)
            object.__setattr__(self, "_terms", terms)
        return terms

    def __dask_tokenize__(self):
        digest = hashlib.sha256(
            f"{self.covariance_type}/{self.weight_concentration_prior_type}".encode())
        for array in self.to_arrays().values():
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return (type(self).__name__, digest.hexdigest())


def expected_log_weights(vp: VariationalParams) -> np.ndarray:
    """E[log pi_k] (K,): digamma terms of the Dirichlet, or of the sticks
    E[log v_k] + sum_{j<k} E[log (1 - v_j)] of the Dirichlet process."""
    if vp.is_process:
        a, b = vp.weight_concentration
        digamma_sum = digamma(a + b)
        tail = np.cumsum(digamma(b) - digamma_sum)[:-1]
        return digamma(a) - digamma_sum + np.concatenate(([0.0], tail))
    alpha = vp.weight_concentration
    return digamma(alpha) - digamma(alpha.sum())


def expected_weights(vp: VariationalParams) -> np.ndarray:
    """The mixing weights of the posterior mean (scikit-learn's ``weights_``), summing to 1."""
    if vp.is_process:
        a, b = vp.weight_concentration
        total = a + b
        weights = a / total * np.concatenate(([1.0], np.cumprod(b[:-1] / total[:-1])))
        return weights / weights.sum()
    return vp.weight_concentration / vp.weight_concentration.sum()


def _log_lambda(degrees_of_freedom, n_features: int) -> np.ndarray:
    """d log 2 + sum_{i<d} digamma((nu - i) / 2): E[log |Lambda|] minus log |W|."""
    i = np.arange(n_features)[:, None]
    return n_features * math.log(2.0) + digamma(0.5 * (np.atleast_1d(degrees_of_freedom) - i)
                                                ).sum(axis=0)


def estep_log_constants(vp: VariationalParams) -> np.ndarray:
    """Per component (K,): what the E-step adds to log N(x; m_k, (nu_k W_k)^-1) to get
    log rho_ik: E[log pi_k] + 1/2 (E[log |Lambda_k|] - log |nu_k W_k|) - d / (2 beta_k)."""
    k, d = vp.means.shape
    nu = np.broadcast_to(vp.degrees_of_freedom, (k,))
    log_lambda = np.broadcast_to(_log_lambda(vp.degrees_of_freedom, d), (k,))
    return (expected_log_weights(vp) - 0.5 * d * np.log(nu)
            + 0.5 * (log_lambda - d / vp.mean_precision))


def update_from_moments(nk: np.ndarray, means: np.ndarray, covariances: np.ndarray,
                        prior: VariationalPrior) -> VariationalParams:
    """The variational posterior from responsibilities' moments (Bishop 10.58-10.63).

    nk: (K,) total responsibilities (with scikit-learn's 10 eps); means: (K, d) their
    weighted means; covariances: their weighted covariances plus reg_covar, in the type's
    shape (the maximum-likelihood M-step's). As scikit-learn's ``_estimate_weights``,
    ``_estimate_means`` and ``_estimate_precisions``::

        beta_k = beta_0 + N_k,  m_k = (beta_0 m_0 + N_k xbar_k) / beta_k,  nu_k = nu_0 + N_k
        W_k^-1 = W_0^-1 + N_k S_k + beta_0 N_k / beta_k (xbar_k - m_0)(xbar_k - m_0)^T

    (tied: nu = nu_0 + sum N / K and the mean of the K scale matrices), stored as
    W_k^-1 / nu_k.
    """
    kind = family(prior.covariance_type)
    k, d = means.shape
    if _is_process(prior.weight_concentration_prior_type):
        tail = np.concatenate((np.cumsum(nk[::-1])[-2::-1], [0.0]))
        concentration = np.stack([1.0 + nk, prior.weight_concentration + tail])
    else:
        concentration = prior.weight_concentration + nk
    mean_precision = prior.mean_precision + nk
    new_means = (prior.mean_precision * prior.mean + nk[:, None] * means) / mean_precision[:, None]
    nu = prior.degrees_of_freedom + nk
    # the scale matrices as second moments in the statistics' form, so that one family
    # call turns their sum into covariances for every type (tied: summed over k, divided
    # by sum_k nu_k = K nu)
    prior_scale = np.broadcast_to(prior.covariance, kind.covariance_shape(k, d))
    scale = (kind.moments_of(nk, covariances, 0.0, d)
             + kind.moments_of(np.ones(k), prior_scale, 0.0, d)
             + kind.move_s2(np.zeros(kind.s2_shape(k, d)), prior.mean_precision * nk
                            / mean_precision, np.zeros((k, d)), means - prior.mean))
    new_covariances = kind.estimate_covariances(nu, np.zeros((k, d)), scale, 0.0)
    dof = nu if kind.per_component else prior.degrees_of_freedom + nk.sum() / k
    return VariationalParams(
        prior.covariance_type, prior.weight_concentration_prior_type, concentration,
        mean_precision, new_means, dof, new_covariances,
        kind.precision_cholesky(new_covariances))


def variational_update(stats: SuffStats, prior: VariationalPrior,
                       reg_covar: float) -> VariationalParams:
    """The variational posterior from one pass's merged statistics (any shift)."""
    kind = family(stats.covariance_type)
    nk = stats.nk + 10 * _EPS
    delta = stats.s1 / nk[:, None]
    covariances = kind.estimate_covariances(nk, delta, stats.s2, reg_covar)
    return update_from_moments(nk, stats.shift + delta, covariances, prior)


def responsibility_entropy(stats: SuffStats, previous: VariationalParams) -> float:
    """-sum_i w_i sum_k r_ik log r_ik of the pass that gave ``stats`` under ``previous``.

    With log r_ik = log rho_ik - log p_i and log rho_ik = c_k - 1/2 q_ik (c_k the
    component's constant, q_ik the quadratic form in nu_k W_k): sum_i w_i r_ik q_ik =
    tr(nu_k W_k S2_k) with S2 about m_k (the pass's shift), so the entropy is
    loglik - sum_k N_k c_k + 1/2 sum_k tr(nu_k W_k S2_k). With missing entries S2 carries
    the conditional covariances and this is the entropy of q(z, x_missing).
    """
    if not np.array_equal(stats.shift, previous.means):
        raise ValueError("the statistics must be about the means of the parameters behind "
                         "them")
    kind = family(stats.covariance_type)
    k, d = previous.means.shape
    terms = previous.gaussian_terms()
    const = (terms.log_weights - 0.5 * d * math.log(2.0 * math.pi)
             + np.broadcast_to(terms.log_det, (k,)))
    share = np.ones(k) if kind.per_component else np.full(k, 1.0 / k)
    precisions = kind.unpack_s2(
        kind.moments_of(share, kind.precisions(previous.precisions_cholesky), 0.0, d), d)
    quadratic = float(np.sum(precisions * stats.s2_unpacked()))
    counted = stats.nk > 0
    return float(stats.loglik - np.dot(stats.nk[counted], const[counted]) + 0.5 * quadratic)


def _log_wishart_norm(degrees_of_freedom, log_det_precisions_chol, n_features: int):
    """log B(W, nu) of each component's Wishart without the log pi term (scikit-learn's)."""
    i = np.arange(n_features)[:, None]
    return -(degrees_of_freedom * log_det_precisions_chol
             + degrees_of_freedom * n_features * 0.5 * math.log(2.0)
             + gammaln(0.5 * (np.atleast_1d(degrees_of_freedom) - i)).sum(axis=0))


def lower_bound(vp: VariationalParams, entropy: float) -> float:
    """The evidence lower bound, up to a constant, as scikit-learn computes it: the entropy
    of the responsibilities (``responsibility_entropy``, from the pass that gave ``vp``)
    minus the log-normalisers of the posterior's Wishart, weight and mean factors."""
    k, d = vp.means.shape
    kind = family(vp.covariance_type)
    log_det = (kind.log_det_cholesky(vp.precisions_cholesky, d)
               - 0.5 * d * np.log(vp.degrees_of_freedom))
    log_wishart = np.broadcast_to(_log_wishart_norm(vp.degrees_of_freedom, log_det, d),
                                  (k,)).sum()
    if vp.is_process:
        log_norm_weight = -np.sum(betaln(*vp.weight_concentration))
    else:
        alpha = vp.weight_concentration
        log_norm_weight = gammaln(alpha.sum()) - gammaln(alpha).sum()
    return float(entropy - log_wishart - log_norm_weight
                 - 0.5 * d * np.sum(np.log(vp.mean_precision)))


@dataclass(frozen=True)
class VariationalBayes:
    """The model kind of a variational Bayesian mixture (``dgmm.core.model_kinds``).

    prior: the resolved prior; reg_covar: added to the responsibilities' covariances
    before the update, as scikit-learn does; n: the data's total weight; point_start:
    theta_0 is K rows with covariance reg_covar I (k-means++, random_from_data), which
    scikit-learn starts from as responsibilities of one row each (N_k = 1) instead of
    N_k = n pi_k. The objective is ``lower_bound`` (summed over the rows).
    """

    prior: VariationalPrior
    reg_covar: float
    n: float
    point_start: bool = False
    name: str = "variational_bayes"

    @property
    def covariance_type(self) -> str:
        return self.prior.covariance_type

    def estep_terms(self, params: VariationalParams) -> GaussianTerms:
        return params.gaussian_terms()

    def m_step(self, stats: SuffStats, previous: VariationalParams | None) -> MStepResult:
        return MStepResult(variational_update(stats, self.prior, self.reg_covar),
                           mean_log_likelihood(stats), ())

    def objective(self, stats: SuffStats, previous: VariationalParams,
                  params: VariationalParams) -> float:
        return lower_bound(params, responsibility_entropy(stats, previous))

    def initial_params(self, start: GMMParams) -> VariationalParams:
        k = start.n_components
        nk = np.ones(k) if self.point_start else start.weights * self.n
        return update_from_moments(nk + 10 * _EPS if self.point_start else nk, start.means,
                                   start.covariances, self.prior)

    def params_from_arrays(self, arrays: dict[str, np.ndarray]) -> VariationalParams:
        return VariationalParams.from_arrays(self.covariance_type, arrays)

    def m_step_from_averages(self, running: SuffStats,
                             previous: VariationalParams | None) -> MStepResult:
        """The update from running statistics (averages per row, ``running.n == 1``):
        stochastic variational inference (Hoffman et al. 2013) takes the natural
        parameters prior + n * running, i.e. the update of the averages scaled to the
        data's total weight ``n``."""
        return self.m_step(scaled(running, self.n), previous)

    def initial_running(self, start: GMMParams) -> SuffStats:
        """Running statistics (averages per row) whose update is ``initial_params(start)``,
        about that posterior's means: what stochastic variational inference starts
        from."""
        nk = np.ones(start.n_components) / self.n if self.point_start else start.weights
        running = replace(statistics_of(start, self.reg_covar), nk=np.asarray(nk, float),
                          s2=family(self.covariance_type).moments_of(
                              nk, start.covariances, self.reg_covar, start.n_features))
        # about the posterior's means, the shift of the first batch's statistics
        return moved_to(running, self.initial_params(start).means)


def scaled(stats: SuffStats, factor: float) -> SuffStats:
    """Statistics times ``factor`` (weights, sums, scatter and log-likelihood)."""
    return replace(stats, n=stats.n * factor, loglik=stats.loglik * factor,
                   nk=stats.nk * factor, s1=stats.s1 * factor, s2=stats.s2 * factor)


@dataclass(frozen=True)
class RecordedPosteriors:
    """Rebuilds posteriors from a checkpoint's arrays (the ``kind`` that
    ``dgmm.engine.em.EMState.from_record`` asks), before the prior is known again."""

    covariance_type: str

    def params_from_arrays(self, arrays: dict[str, np.ndarray]) -> VariationalParams:
        return VariationalParams.from_arrays(self.covariance_type, arrays)

    @classmethod
    def of_record(cls, arrays: dict, meta: dict) -> RecordedPosteriors | None:
        """The kind that rebuilds a checkpoint's parameters: posteriors when it holds
        their weight concentrations (``params.weight_concentration``), else None (a
        maximum-likelihood mixture)."""
        if "params.weight_concentration" in arrays:
            return cls(meta["covariance_type"])
        return None


def online_start(kind: VariationalBayes, stats: SuffStats,
                 previous: VariationalParams) -> tuple[VariationalParams, SuffStats]:
    """The state of stochastic variational inference at the data's scale from a sample:
    ``stats`` are the sample's E-step statistics under ``previous`` (the posterior fitted
    on the sample). Returns the posterior of those statistics' averages scaled to
    ``kind.n`` and the running averages about its means, as after a step of size 1 on the
    sample."""
    running = as_average(stats)
    posterior = kind.m_step_from_averages(running, previous).params
    return posterior, moved_to(running, posterior.means)
