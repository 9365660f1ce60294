"""Online A/B tests of a challenger against the champion: routing, sample-ratio checks, an always-valid test of
the lift in per-unit loss, the planned sample size, and the decision (promote, roll back, continue, invalid).

The test is a mixture sequential probability ratio test (mSPRT; Johari, Pekelis & Walsh, "Always valid
inference", 2017) on the log ratio of the two variants' mean losses, with a plug-in (delta-method) variance. Its
p-value and confidence interval stay valid however often, and whenever, the experiment is looked at, so an
analysis before the planned end is safe. The normal mixture is centred on effects the size of the minimum
detectable effect.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ml.metrics import row_loss
from ml.names import CHALLENGER, CHAMPION

PROMOTE, ROLLBACK, CONTINUE, INVALID = "promote", "rollback", "continue", "invalid"


def bucket(unit_id: str, salt: str) -> float:
    """A stable number in [0, 1) for a unit: the same id and salt give the same number in every process."""
    digest = hashlib.blake2b(f"{salt}\x00{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def assign(unit_id: str, salt: str, share: float) -> str:
    """The variant of a unit: `challenger` for a `share` of units, chosen by a stable hash salted per experiment
    (so a unit does not land on the same side of every experiment)."""
    return CHALLENGER if bucket(unit_id, salt) < share else CHAMPION


@dataclass(frozen=True)
class SRM:
    """Sample-ratio mismatch: do the observed counts fit the configured split?"""

    champion: int
    challenger: int
    expected_share: float
    observed_share: float
    p_value: float
    alpha: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < self.alpha


def srm_check(champion: int, challenger: int, share: float, alpha: float = 0.001) -> SRM:
    """Chi-square goodness-of-fit of the two counts against the expected split (1 degree of freedom)."""
    from scipy.stats import chi2

    n = champion + challenger
    if n == 0:
        return SRM(0, 0, share, float("nan"), 1.0, alpha)
    expected = np.array([n * (1 - share), n * share])
    stat = float((((np.array([champion, challenger]) - expected) ** 2) / expected).sum())
    return SRM(int(champion), int(challenger), share, challenger / n, float(chi2.sf(stat, 1)), alpha)


@dataclass(frozen=True)
class Lift:
    """Challenger vs champion on per-unit loss. lift < 0 means the challenger's loss is lower (better)."""

    champion_mean: float
    challenger_mean: float
    champion_units: int
    challenger_units: int
    lift: float  # challenger_mean / champion_mean - 1
    ci_low: float  # always-valid interval of the lift at level 1 - alpha
    ci_high: float
    p_value: float  # always-valid p-value of "no difference"
    alpha: float
    fixed_ci_low: float  # the single-look (fixed-horizon) interval, for reference only: not valid when peeking
    fixed_ci_high: float

    def to_dict(self) -> dict:
        return asdict(self)


def _log_ratio(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """log(mean b / mean a) and its delta-method variance."""
    ma, mb = a.mean(), b.mean()
    var = b.var(ddof=1) / (b.size * mb ** 2) + a.var(ddof=1) / (a.size * ma ** 2)
    return float(math.log(mb / ma)), float(var)


def mixture_tau(mde: float) -> float:
    """Standard deviation of the mSPRT's normal mixture on the log-ratio scale: effects of about the MDE."""
    return abs(math.log1p(-mde))


def cs_halfwidth(var: float, tau: float, alpha: float) -> float:
    """Half-width of the mSPRT confidence sequence for a normal estimate with variance `var`."""
    return math.sqrt(var * (var + tau ** 2) / tau ** 2 * (2 * math.log(1 / alpha) + math.log((var + tau ** 2) / var)))


def sequential_lift(champion_loss: np.ndarray, challenger_loss: np.ndarray, *, alpha: float = 0.05,
                    mde: float = 0.05) -> Lift:
    """Always-valid test and interval of the relative change in mean loss (needs >= 2 units per variant)."""
    from scipy.stats import norm

    a = np.asarray(champion_loss, dtype=np.float64)
    b = np.asarray(challenger_loss, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"need at least 2 units per variant, got {a.size} (champion) and {b.size} (challenger)")
    if a.mean() <= 0 or b.mean() <= 0:
        raise ValueError("mean loss must be positive in both variants")
    est, var = _log_ratio(a, b)
    var = max(var, 1e-18)
    tau = mixture_tau(mde)
    log_lr = 0.5 * math.log(var / (var + tau ** 2)) + est ** 2 * tau ** 2 / (2 * var * (var + tau ** 2))
    p = float(min(1.0, math.exp(-log_lr)))
    h = cs_halfwidth(var, tau, alpha)
    z = float(norm.ppf(1 - alpha / 2)) * math.sqrt(var)
    return Lift(champion_mean=float(a.mean()), challenger_mean=float(b.mean()), champion_units=int(a.size),
                challenger_units=int(b.size), lift=math.expm1(est), ci_low=math.expm1(est - h),
                ci_high=math.expm1(est + h), p_value=p, alpha=alpha, fixed_ci_low=math.expm1(est - z),
                fixed_ci_high=math.expm1(est + z))


@dataclass(frozen=True)
class Plan:
    """Units (with outcomes, both variants together) needed to detect the MDE with the given power."""

    units: int  # for this sequential test
    fixed_horizon_units: int  # for a single look at the end (what a t-test would need)
    cv: float  # coefficient of variation of the per-unit loss the plan assumes
    mde: float
    power: float
    alpha: float
    share: float

    def to_dict(self) -> dict:
        return asdict(self)


def plan_units(cv: float | None, *, share: float, mde: float, power: float = 0.8, alpha: float = 0.05) -> Plan:
    """Smallest number of units at which the always-valid test reaches `power` against a change of `mde` in mean
    loss (counting only a rejection at that final look, so the figure is conservative). `cv` None (`loss_cv`
    could not tell): 1, a loss as variable as its mean."""
    from scipy.stats import norm

    cv = 1.0 if cv is None else cv
    if not 0 < share < 1:
        raise ValueError(f"share must be between 0 and 1, got {share}")
    delta, tau = abs(math.log1p(-mde)), mixture_tau(mde)

    def var(n: float) -> float:  # variance of the log ratio with n units split by `share`, equal CVs
        return cv ** 2 / (n * share * (1 - share))

    def power_at(n: float) -> float:
        v = var(n)
        h = cs_halfwidth(v, tau, alpha)
        return float(norm.cdf((delta - h) / math.sqrt(v)) + norm.cdf((-delta - h) / math.sqrt(v)))

    hi = 16
    while power_at(hi) < power:
        hi *= 2
        if hi > 1e12:
            raise ValueError("the planned sample size does not converge; check ab.min_detectable_effect")
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if power_at(mid) < power else (lo, mid)
    fixed = (norm.ppf(1 - alpha / 2) + norm.ppf(power)) ** 2 * cv ** 2 / (delta ** 2 * share * (1 - share))
    return Plan(units=int(hi), fixed_horizon_units=int(math.ceil(fixed)), cv=float(cv), mde=mde, power=power,
                alpha=alpha, share=share)


def loss_cv(loss: np.ndarray) -> float | None:
    """Coefficient of variation of per-unit loss (what the sample size depends on); None when the losses cannot
    tell (fewer than two, or a mean of 0: a week of one row, a perfect champion)."""
    x = np.asarray(loss, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2 or not x.mean() > 0:
        return None
    return float(x.std(ddof=1) / x.mean())


@dataclass(frozen=True)
class ABDecision:
    action: str  # promote | rollback | continue | invalid
    summary: str
    reasons: list[str] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%".replace("-", "−")


def decide_ab(champion_loss: np.ndarray, challenger_loss: np.ndarray, *, assigned: tuple[int, int], share: float,
              alpha: float, srm_alpha: float, mde: float, power: float, min_units: int, planned_units: int,
              now: datetime, planned_end: datetime, max_end: datetime, fallbacks: int = 0,
              challenger_requests: int = 0, max_error_rate: float = 0.01, metric: str = "loss") -> ABDecision:
    """The analysis of one look at an experiment.

    Args:
        champion_loss, challenger_loss: per-unit loss of the units with an observed outcome, by assigned variant.
        assigned: units routed to (champion, challenger), with or without outcome: the split SRM is checked on.
        planned_units: units with outcomes (both variants) the experiment was planned to need.
        fallbacks / challenger_requests: challenger requests answered by the champion because the challenger failed.
    """
    reasons: list[str] = []
    n_a, n_b = len(champion_loss), len(challenger_loss)
    ev: dict = {"metric": metric, "assigned": {CHAMPION: assigned[0], CHALLENGER: assigned[1]},
                "with_outcome": {CHAMPION: n_a, CHALLENGER: n_b}, "planned_units": planned_units,
                "fallbacks": fallbacks, "challenger_requests": challenger_requests}
    stop = (_split_gate(assigned, (n_a, n_b), share, srm_alpha, reasons, ev)
            or _error_gate(fallbacks, challenger_requests, max_error_rate, reasons, ev))
    if stop:
        return stop
    progress = f"{n_a + n_b:,} of {planned_units:,} planned units with outcomes"
    wait = _too_early(champion_loss, challenger_loss, min_units, metric)
    if wait:
        reasons.append(wait[1])
        if now >= max_end:
            return ABDecision(ROLLBACK, f"rollback: out of time ({max_end:%Y-%m-%d}) with {wait[0]} "
                              f"({progress}); the champion stays", reasons, ev)
        return ABDecision(CONTINUE, f"continue: {wait[0]} yet ({progress})", reasons, ev)
    lift = sequential_lift(champion_loss, challenger_loss, alpha=alpha, mde=mde)
    ev["lift"] = lift.to_dict()
    line = (f"{metric} {lift.challenger_mean:.3g} (challenger) vs {lift.champion_mean:.3g} (champion): "
            f"{_pct(lift.lift)}, always-valid {1 - alpha:.0%} CI {_pct(lift.ci_low)}…{_pct(lift.ci_high)}, "
            f"p = {lift.p_value:.3g}")
    reasons += [line, f"sample size: {progress} (MDE {mde:.0%} at {power:.0%} power)"]
    action, why, head = _verdict(lift, n_a + n_b >= planned_units, now, planned_end, max_end, mde, progress)
    if why:
        reasons.append(why)
    return ABDecision(action, f"{head}: {line}", reasons, ev)


def _split_gate(assigned: tuple[int, int], with_outcome: tuple[int, int], share: float, srm_alpha: float,
                reasons: list[str], ev: dict) -> ABDecision | None:
    """Gate 1: the split matches the plan (SRM), both as routed and among the units with outcomes."""
    srm_assigned = srm_check(*assigned, share, srm_alpha)
    srm_outcome = srm_check(*with_outcome, share, srm_alpha)
    ev["srm"] = {"assigned_p": srm_assigned.p_value, "outcome_p": srm_outcome.p_value, "alpha": srm_alpha,
                 "observed_share": srm_assigned.observed_share, "expected_share": share}
    reasons.append(f"split: {assigned[0]:,} champion / {assigned[1]:,} challenger units "
                   f"({srm_assigned.observed_share:.1%} challenger, planned {share:.0%}); SRM chi-square "
                   f"p = {srm_assigned.p_value:.3g} (units with outcomes: p = {srm_outcome.p_value:.3g}; "
                   f"alpha {srm_alpha:g})")
    if not (srm_assigned.mismatch or srm_outcome.mismatch):
        return None
    which = "routing" if srm_assigned.mismatch else "outcomes (feedback missing more on one side)"
    reasons.append(f"sample-ratio mismatch in the {which}: the split is broken, so no comparison can be trusted; "
                   "aliases stay as they are until the cause is fixed")
    return ABDecision(INVALID, "invalid: sample-ratio mismatch "
                      f"(p = {min(srm_assigned.p_value, srm_outcome.p_value):.2g} < {srm_alpha:g}); "
                      "refusing to decide", reasons, ev)


def _error_gate(fallbacks: int, requests: int, max_error_rate: float, reasons: list[str],
                ev: dict) -> ABDecision | None:
    """Gate 2: the challenger answers; past `max_error_rate` of its requests failed, it is rolled back."""
    error_rate = fallbacks / requests if requests else 0.0
    ev["challenger_error_rate"] = error_rate
    if error_rate <= max_error_rate:
        return None
    reasons.append(f"the challenger failed on {fallbacks:,} of {requests:,} requests "
                   f"({error_rate:.1%} > {max_error_rate:.1%}); the champion answered those")
    return ABDecision(ROLLBACK, f"rollback: challenger error rate {error_rate:.1%} > {max_error_rate:.1%}",
                      reasons, ev)


def _too_early(champion_loss: np.ndarray, challenger_loss: np.ndarray, min_units: int,
               metric: str) -> tuple[str, str] | None:
    """Gate 3: enough outcomes on each side, and a loss to compare; (short, long) reason when not yet."""
    n_a, n_b = len(champion_loss), len(challenger_loss)
    need = max(min_units, 2)  # the test needs a spread of loss on each side
    if min(n_a, n_b) < need:
        return ("too few outcomes", f"too few outcomes to test: {n_a:,} champion / {n_b:,} challenger "
                f"(need {need:,} each)")
    if min(np.mean(champion_loss), np.mean(challenger_loss)) <= 0:
        return ("no loss to compare", f"nothing to compare yet: a variant's mean {metric} is 0 (every outcome "
                "was predicted exactly), so the ratio of the two is undefined")
    return None


def _verdict(lift, planned_reached: bool, now: datetime, planned_end: datetime, max_end: datetime, mde: float,
             progress: str) -> tuple[str, str, str]:
    """Gate 4, the always-valid interval of the lift: (action, reason, head of the summary line)."""
    if lift.ci_high < 0:
        return PROMOTE, "the whole interval is below zero: the challenger's loss is lower", "promote"
    if lift.ci_low > 0:
        return ROLLBACK, "the whole interval is above zero: the challenger's loss is higher", "rollback"
    if planned_reached:
        return (ROLLBACK, f"the planned sample is reached and no change of {mde:.0%} or more is detected: the "
                "champion stays", "rollback (no detectable gain at the planned size)")
    if now >= max_end:
        return (ROLLBACK, f"the experiment ran out of time ({max_end:%Y-%m-%d}) before the planned sample: the "
                "champion stays", f"rollback (out of time, {progress})")
    if now >= planned_end:
        return (CONTINUE, f"planned end passed with too few units: extended, at the latest until {max_end:%Y-%m-%d}",
                f"continue ({progress})")
    return CONTINUE, "", f"continue ({progress})"


def unit_losses(traffic, task: str) -> dict[str, Any]:
    """Per-unit loss by assigned variant: the first prediction each unit was served, against its outcome."""
    first = traffic.drop_duplicates("unit_id", keep="first")
    assigned = first["variant"].value_counts()
    done = first[first["outcome"].notna()]
    outcome = done["outcome"].map(json.loads)
    if done.empty:  # no outcome yet: nothing to score (the analysis continues)
        loss = np.empty(0)
    elif task == "regression":  # the same per-row loss the offline comparison uses
        loss = row_loss(task, outcome.to_numpy(dtype="float64"), done["prediction"].to_numpy(dtype="float64"))
    else:  # log loss of the observed class under the probabilities served
        probs = [json.loads(o) for o in done["output"]]
        classes = np.array(sorted({c for p in probs for c in p}))
        proba = np.array([[p.get(c, 0.0) for c in classes] for p in probs])
        loss = row_loss(task, outcome.astype(str).to_numpy(), proba, classes)
    variant = done["variant"].to_numpy()
    return {CHAMPION: loss[variant == CHAMPION], CHALLENGER: loss[variant == CHALLENGER],
            "assigned": (int(assigned.get(CHAMPION, 0)), int(assigned.get(CHALLENGER, 0))),
            "units": int(len(first)), "with_outcome": int(len(done))}
