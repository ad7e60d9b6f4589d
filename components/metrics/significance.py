"""Paired comparisons of two recommenders with confidence intervals, and verdicts on published claims.

Plain numpy (the Student t distribution is computed here with ``math``; no scipy).

**Per-instance metrics.**  Every ranking metric of ``components.metrics.ranking`` is a function of one instance's
0-based pessimistic rank: ``hr@K = 1[rank < K]``, ``ndcg@K = 1[rank < K] / log2(rank + 2)``,
``mrr = 1 / (rank + 1)``, ``auc = 1 - rank / (n_candidates - 1)``.  ``instance_metric`` gives the value per
instance, so that the mean over instances is exactly the figure ``evaluate()`` reports.

**Paired comparison (one split).**  Method A and baseline B ranked the *same* instances (same users, targets and
sampled negatives), so their per-instance values are paired and the uncertainty of A - B is that of the mean of the
paired differences, usually far smaller than either method's own spread.  ``compare_paired`` reports

- the mean difference ``mean(A) - mean(B)`` and its paired bootstrap CI: resample instances with replacement (the
  same instances for A and B), ``n_resamples`` times (default 2,000) with a seeded ``numpy.random.Generator``, and
  take the percentile interval of the resampled differences;
- the relative difference ``mean(A) / mean(B) - 1`` (what papers report as "+5.75%") with its CI from the same
  resamples;
- a paired t-test p-value (two-sided, H0: the mean difference is 0; t = mean(d) / (sd(d) / sqrt(n)), n - 1 degrees
  of freedom).

**Several seeds (stratified).**  Each seed has its own split (the test targets, negatives and, on ML-1M, even the
simulated cold users change with it), so instances pair only within a seed.  ``compare_stratified`` treats seeds
as strata: the estimate is the average over seeds of the per-seed mean differences (every seed weighs the same,
whatever its number of instances); each bootstrap replicate resamples instances *within* every seed
independently and averages the per-seed resampled means the same way; the relative difference is
``avg_s mean(A_s) / avg_s mean(B_s) - 1`` (the ratio of the seed-averaged means, as the mean +- sd tables show
them).  The p-value is the stratified t-test: t = avg_s dbar_s / sqrt(sum_s var_s / (n_s S^2)) with
Welch-Satterthwaite degrees of freedom (it is the paired t-test for one seed).  The per-seed mean differences are
reported too (``per_seed_diff``).  What this interval covers: the sampling of test instances, given the trained
models.  The training randomness between seeds (initial weights, batch order) enters only through the average
over seeds, not as a variance component, so read the per-seed differences beside it: a CI that excludes 0 while
the per-seed differences change sign says "these S trained pairs differ", not "any retrained pair would".

**Verdicts.**  ``verdict(claim, ci_low, ci_high)`` judges a published *relative* improvement ``claim`` (e.g.
+0.0575 for +5.75%) against our CI of the relative difference (method over the baseline the paper compared with):

- ``reproduced``: the CI lies above 0 (an improvement) and does not rule out the claimed size (``ci_high >=
  claim``);
- ``not reproduced``: the CI's upper end lies below the claim (a gain as large as claimed is ruled out); the
  detail adds "(direction holds: smaller gain)" when the CI still lies above 0, and "(direction reversed: worse
  than the baseline)" when it lies below 0;
- ``inconclusive``: otherwise, i.e. the CI contains both 0 and the claimed size (too few instances or seeds to
  tell), or the CI is undefined (NaN).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Default number of bootstrap resamples and confidence level.
N_RESAMPLES = 2000
CONFIDENCE = 0.95

_METRIC = re.compile(r"^(hr|ndcg)_at_(\d+)$|^(mrr|auc)$")


# ---- per-instance metrics ----------------------------------------------------------------------------------------
def instance_metric(ranks: ArrayLike, metric: str, n_candidates: ArrayLike | int | None = None) -> NDArray[np.float64]:
    """Value of ``metric`` (``hr_at_K``, ``ndcg_at_K``, ``mrr`` or ``auc``) for every instance, float64 [n].

    ``ranks``: 0-based pessimistic ranks (the number of candidates placed ahead of the target).  ``n_candidates``:
    the size of each candidate list, target included (one int, or one per instance); needed for ``auc`` and, when
    given, used to check the ranks.  The mean of the result is what ``metrics_from_ranks`` reports.
    """
    r = np.asarray(ranks)
    if r.ndim != 1:
        raise ValueError(f"instance_metric: ranks must be 1-D, got shape {r.shape}")
    r = r.astype(np.float64)
    if np.any(~np.isfinite(r)) or np.any(r < 0):
        raise ValueError("instance_metric: ranks must be finite and >= 0")
    nc = None
    if n_candidates is not None:
        nc = np.broadcast_to(np.asarray(n_candidates, dtype=np.float64), r.shape)
        if np.any(nc < 1) or np.any(r > nc - 1):
            raise ValueError("instance_metric: ranks must lie in 0..n_candidates-1 and n_candidates >= 1")
    m = _METRIC.match(metric)
    if m is None:
        raise ValueError(f"instance_metric: unknown metric {metric!r}; use hr_at_K, ndcg_at_K, mrr or auc")
    kind, k, other = m.group(1), m.group(2), m.group(3)
    if kind is not None:
        k = int(k)
        if k < 1:
            raise ValueError(f"instance_metric: K must be >= 1, got {metric!r}")
        hit = r < k
        if kind == "hr":
            return hit.astype(np.float64)
        return np.where(hit, 1.0 / np.log2(r + 2.0), 0.0)
    if other == "mrr":
        return 1.0 / (r + 1.0)
    if nc is None:
        raise ValueError("instance_metric: auc needs n_candidates")
    # One candidate (no negatives): AUC undefined, counted as 1 like metrics_from_ranks does.
    return 1.0 - r / np.maximum(nc - 1.0, 1.0)


def metric_label(metric: str) -> str:
    """``hr_at_10`` -> ``HR@10``, ``ndcg_at_5`` -> ``NDCG@5``, ``mrr`` -> ``MRR``."""
    return metric.replace("_at_", "@").upper()


# ---- t distribution (no scipy) -------------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value P(|T| >= |t|) of Student's t with ``df`` degrees of freedom (df = inf: the normal)."""
    if math.isnan(t) or math.isnan(df) or df <= 0:
        return float("nan")
    if math.isinf(t):
        return 0.0
    if math.isinf(df) or df > 1e7:
        return math.erfc(abs(t) / math.sqrt(2.0))
    return min(1.0, max(0.0, _betainc(df / 2.0, 0.5, df / (df + t * t))))


class TTest(NamedTuple):
    t: float
    df: float
    p: float


def stratified_t_test(diffs: Sequence[ArrayLike]) -> TTest:
    """t-test of H0 "the seed-averaged mean difference is 0" from per-stratum paired differences.

    t = avg_s mean(d_s) / sqrt(sum_s var(d_s) / (n_s S^2)), var with ddof 1, Welch-Satterthwaite degrees of freedom;
    with one stratum it is the ordinary paired t-test (df = n - 1).  A zero variance gives t = 0, p = 1 when the mean
    difference is 0 too, else t = +-inf, p = 0.  A stratum with fewer than 2 instances gives NaN.
    """
    ds = [np.asarray(d, dtype=np.float64) for d in diffs]
    if not ds:
        raise ValueError("stratified_t_test: no strata")
    if any(d.size < 2 for d in ds):
        return TTest(float("nan"), float("nan"), float("nan"))
    s = len(ds)
    mean = float(np.mean([d.mean() for d in ds]))
    parts = [float(d.var(ddof=1)) / (d.size * s * s) for d in ds]
    var = sum(parts)
    if var <= 0.0 or not math.isfinite(var):
        if abs(mean) < 1e-15:
            return TTest(0.0, float("inf"), 1.0)
        return TTest(math.copysign(float("inf"), mean), float("inf"), 0.0)
    df_den = sum(p * p / (d.size - 1) for p, d in zip(parts, ds))
    df = var * var / df_den if df_den > 0 else float("inf")
    t = mean / math.sqrt(var)
    return TTest(t, df, t_two_sided_p(t, df))


def paired_t_test(a: ArrayLike, b: ArrayLike) -> TTest:
    """Paired two-sided t-test of mean(a - b) = 0 (a and b: per-instance values of the same instances)."""
    a, b = _pair(a, b)
    return stratified_t_test([a - b])


# ---- paired bootstrap --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedComparison:
    """Method A against baseline B on paired instances (one or several seeds); see the module docstring."""

    mean_a: float  # seed-averaged mean of A
    mean_b: float
    diff: float  # mean_a - mean_b
    diff_low: float  # bootstrap percentile CI of diff
    diff_high: float
    rel: float  # mean_a / mean_b - 1 (NaN if mean_b == 0)
    rel_low: float
    rel_high: float
    t: float
    df: float
    p: float  # two-sided (stratified) paired t-test
    n: int  # instances, all seeds together
    per_seed_n: tuple[int, ...]
    per_seed_a: tuple[float, ...]  # mean of A in each seed
    per_seed_b: tuple[float, ...]
    per_seed_diff: tuple[float, ...]  # mean(A_s) - mean(B_s)
    confidence: float = CONFIDENCE
    n_resamples: int = N_RESAMPLES
    seed: int = 0

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired values must be two 1-D arrays of the same length; got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired values: no instances")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("paired values must be finite")
    return a, b


def _ratio(num: NDArray[np.float64] | float, den: NDArray[np.float64] | float):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(den) != 0, np.asarray(num) / np.where(np.asarray(den) != 0, den, 1.0) - 1.0,
                        np.nan)


def compare_stratified(strata: Sequence[tuple[ArrayLike, ArrayLike]], *, n_resamples: int = N_RESAMPLES,
                       confidence: float = CONFIDENCE, seed: int = 0) -> PairedComparison:
    """A against B over several strata (seeds), each a pair ``(a_s, b_s)`` of per-instance values of the same
    instances; a stratified paired bootstrap (see the module docstring).  Deterministic given ``seed``."""
    if not strata:
        raise ValueError("compare_stratified: no strata")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"compare_stratified: confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"compare_stratified: n_resamples must be >= 1, got {n_resamples}")
    pairs = [_pair(a, b) for a, b in strata]
    s = len(pairs)
    rng = np.random.default_rng(seed)
    boot_a = np.zeros(n_resamples)
    boot_b = np.zeros(n_resamples)
    for a, b in pairs:
        n = a.size
        chunk = max(1, min(n_resamples, 1_000_000 // n))  # bounded memory: chunk x n indices at a time
        for lo in range(0, n_resamples, chunk):
            idx = rng.integers(0, n, size=(min(chunk, n_resamples - lo), n))
            boot_a[lo:lo + idx.shape[0]] += a[idx].mean(axis=1) / s
            boot_b[lo:lo + idx.shape[0]] += b[idx].mean(axis=1) / s
    alpha = 1.0 - confidence
    qs = [alpha / 2.0, 1.0 - alpha / 2.0]
    diff_low, diff_high = (float(x) for x in np.quantile(boot_a - boot_b, qs))
    rel_boot = _ratio(boot_a, boot_b)
    if np.any(np.isnan(rel_boot)):
        rel_low = rel_high = float("nan")
    else:
        rel_low, rel_high = (float(x) for x in np.quantile(rel_boot, qs))
    per_a = tuple(float(a.mean()) for a, _ in pairs)
    per_b = tuple(float(b.mean()) for _, b in pairs)
    mean_a, mean_b = float(np.mean(per_a)), float(np.mean(per_b))
    test = stratified_t_test([a - b for a, b in pairs])
    return PairedComparison(
        mean_a=mean_a, mean_b=mean_b, diff=mean_a - mean_b, diff_low=diff_low, diff_high=diff_high,
        rel=float(_ratio(mean_a, mean_b)), rel_low=rel_low, rel_high=rel_high, t=test.t, df=test.df, p=test.p,
        n=sum(a.size for a, _ in pairs), per_seed_n=tuple(a.size for a, _ in pairs), per_seed_a=per_a,
        per_seed_b=per_b, per_seed_diff=tuple(x - y for x, y in zip(per_a, per_b)), confidence=confidence,
        n_resamples=n_resamples, seed=seed)


def compare_paired(a: ArrayLike, b: ArrayLike, *, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                   seed: int = 0) -> PairedComparison:
    """A against B on one set of paired instances: paired bootstrap CI, relative difference, paired t-test."""
    return compare_stratified([(a, b)], n_resamples=n_resamples, confidence=confidence, seed=seed)


def align_by_index(index_a: ArrayLike, values_a: ArrayLike, index_b: ArrayLike,
                   values_b: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
    """The instances both runs evaluated (by target-set row ``index``), in index order: ``(index, a, b)``."""
    ia, ib = np.asarray(index_a), np.asarray(index_b)
    va, vb = np.asarray(values_a), np.asarray(values_b)
    common, pa, pb = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
    return common, va[pa], vb[pb]


# ---- verdicts ----------------------------------------------------------------------------------------------------
class Verdict(NamedTuple):
    label: str  # "reproduced" | "not reproduced" | "inconclusive"
    detail: str

    def __str__(self) -> str:
        return f"{self.label} {self.detail}".strip()


def verdict(claim: float, ci_low: float, ci_high: float) -> Verdict:
    """Judge a claimed relative gain ``claim`` (+0.0575 = +5.75%) against our CI [ci_low, ci_high] of the relative
    difference: reproduced if the CI lies above 0 and ``ci_high >= claim``; not reproduced if ``ci_high < claim``
    (with "(direction holds: smaller gain)" in the detail when ci_low > 0); inconclusive otherwise."""
    if any(math.isnan(float(x)) for x in (claim, ci_low, ci_high)):
        return Verdict("inconclusive", "(no confidence interval: undefined relative difference)")
    if ci_low > ci_high:
        raise ValueError(f"verdict: ci_low {ci_low} > ci_high {ci_high}")
    ci = f"CI [{ci_low:+.2%}, {ci_high:+.2%}]"
    if ci_high < claim:
        detail = f"(claimed {claim:+.2%} ruled out: {ci})"
        if ci_low > 0:
            detail += " (direction holds: smaller gain)"
        elif ci_high < 0:
            detail += " (direction reversed: worse than the baseline)"
        return Verdict("not reproduced", detail)
    if ci_low > 0:
        return Verdict("reproduced", f"(gain > 0 and the claimed {claim:+.2%} inside or below {ci})")
    return Verdict("inconclusive", f"({ci} contains 0 and the claimed {claim:+.2%})")


# ---- claims and tables -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """A paper's claimed relative gain of a method over a baseline, on one metric, and where it applies: the
    protocol (a prefix: ``sampled`` matches ``sampled99``; empty = every protocol) and the user group / target set
    (empty = every group) the paper measured it in.  A claim is judged only on the rows it applies to."""

    value: float  # relative, +0.0575 = +5.75%
    source: str = ""  # where it is from, for the table's footnote
    protocol: str = ""
    group: str = ""

    def applies(self, protocol: str, group: str = "") -> bool:
        return protocol.startswith(self.protocol) and (not self.group or self.group == group)


def load_claims(spec: str | None, default: Mapping[str, Mapping[str, Claim]]) -> dict[str, dict[str, Claim]]:
    """Claims table method -> metric -> Claim: ``default`` updated by ``spec``, a JSON object (inline or a file
    path) ``{"method": {"hr_at_10": 0.0575, ...}}`` (a number: every protocol and group; or ``{"value": ...,
    "source": ..., "protocol": ..., "group": ...}``); ``"none"`` drops the defaults."""
    out = {m: dict(v) for m, v in default.items()}
    if not spec:
        return out
    if spec.strip().lower() == "none":
        return {}
    text = Path(spec).read_text() if not spec.lstrip().startswith("{") else spec
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("claims: expected a JSON object {method: {metric: value}}")
    for method, metrics in raw.items():
        if not isinstance(metrics, dict):
            raise ValueError(f"claims: {method!r} must map metrics to values")
        for metric, v in metrics.items():
            if _METRIC.match(metric) is None:
                raise ValueError(f"claims: unknown metric {metric!r} for {method!r}")
            c = Claim(float(v)) if isinstance(v, (int, float)) else Claim(**v)
            out.setdefault(method, {})[metric] = c
    return out


def mean_sd(values: Sequence[float]) -> str:
    """``0.1234 ± 0.0056`` over seeds (sd with ddof 1; one value: the value alone)."""
    vals = list(values)
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.4f}"
    return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"


def format_p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


@dataclass
class ComparisonRow:
    """One line of the comparison table: ``method`` against ``baseline`` on ``metric`` under ``protocol``."""

    method: str
    baseline: str
    metric: str
    protocol: str
    comparison: PairedComparison
    claim: Claim | None = None
    group: str = ""  # target set / user group, when a table mixes several
    extra: dict = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict | None:
        if self.claim is None:
            return None
        return verdict(self.claim.value, self.comparison.rel_low, self.comparison.rel_high)

    def to_dict(self) -> dict:
        v = self.verdict
        return {"method": self.method, "baseline": self.baseline, "metric": self.metric, "protocol": self.protocol,
                "group": self.group, **self.comparison.to_dict(),
                "claim": None if self.claim is None else asdict(self.claim),
                "verdict": None if v is None else v.label, "verdict_detail": None if v is None else v.detail,
                **self.extra}


def markdown_table(rows: Sequence[ComparisonRow], *, with_group: bool = False) -> str:
    """The comparison table: method, baseline, metric, protocol, ours and the baseline as mean ± sd over seeds,
    diff [95% CI], rel diff [95% CI], p, per-seed differences, the claim and the verdict."""
    conf = f"{round(100 * rows[0].comparison.confidence)}%" if rows else "95%"
    head = (["group"] if with_group else []) + [
        "method", "baseline", "metric", "protocol", "ours mean±sd", "baseline mean±sd", f"diff [{conf} CI]",
        f"rel diff [{conf} CI]", "p", "per-seed diff", "claim", "verdict"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * (len(head) - 8) + "---:|" * 7 + "---|"]
    for r in rows:
        c = r.comparison
        v = r.verdict
        if math.isnan(c.rel):
            rel = "-"  # the baseline's mean is 0
        elif math.isnan(c.rel_low):
            rel = f"{c.rel:+.2%} [n/a: baseline mean 0 in a resample]"
        else:
            rel = f"{c.rel:+.2%} [{c.rel_low:+.2%}, {c.rel_high:+.2%}]"
        cells = ([r.group] if with_group else []) + [
            r.method, r.baseline, metric_label(r.metric), r.protocol, mean_sd(c.per_seed_a), mean_sd(c.per_seed_b),
            f"{c.diff:+.4f} [{c.diff_low:+.4f}, {c.diff_high:+.4f}]", rel, format_p(c.p),
            " ".join(f"{d:+.3f}" for d in c.per_seed_diff), "-" if r.claim is None else f"{r.claim.value:+.2%}",
            "-" if v is None else f"**{v.label}** {v.detail}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
