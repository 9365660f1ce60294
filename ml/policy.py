"""The decision policy: promote, A/B test or reject a candidate, with the reasons written in words."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ml.config import PolicyConfig
from ml.stats import Comparison

PROMOTE, AB_TEST, REJECT = "promote", "ab_test", "reject"


@dataclass(frozen=True)
class Decision:
    action: str  # promote | ab_test | reject
    summary: str  # one line with the evidence, for logs, tags and the UI
    reasons: list[str] = field(default_factory=list)  # every check, in words
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def pct(x: float, digits: int = 1) -> str:
    return f"{x * 100:+.{digits}f}%".replace("-", "−")


def decide(policy: PolicyConfig, metric: str, candidate: dict, baseline: dict, comparison: Comparison | None,
           slices: list[dict], drift: dict | None, prior_wins: int = 0, champion: dict | None = None) -> Decision:
    """Apply the policy to the evidence. `candidate` / `baseline` / `champion` are holdout metrics (`champion`
    only reported); `comparison` is None when there is no champion yet (then the absolute thresholds alone
    decide). `prior_wins` counts the weeks right before this one whose candidates won conclusively against the
    same champion. Classification lines also carry accuracy and ROC AUC; log loss decides.

    One week's win does not promote by itself: a week where the champion did unusually badly makes any
    candidate look better, and that does not last (benchmarks/bench_decisions.py measures it)."""
    name = metric.upper() if metric == "mae" else metric
    reasons: list[str] = []
    cand, base = candidate[metric], baseline[metric]
    gain = 1 - cand / base if base else 0.0
    absolute_ok = gain >= policy.min_gain_vs_baseline
    reasons.append(f"{name} {cand:.2f} vs naive baseline {base:.2f} ({gain:.1%} better; "
                   f"need ≥ {policy.min_gain_vs_baseline:.0%})")
    scores = _scores(candidate, champion if comparison else None)
    if scores:
        reasons.append(scores)
    if policy.max_metric is not None:
        capped = cand <= policy.max_metric
        absolute_ok &= capped
        reasons.append(f"{name} {cand:.2f} {'≤' if capped else '>'} cap {policy.max_metric:g}")

    drift_note, heavy_drift = _drift_note(policy, drift)
    if drift_note:
        reasons.append(drift_note)
    evidence = {"metric": metric, "candidate": candidate, "baseline": baseline,
                "comparison": comparison.to_dict() if comparison else None, "slices": slices, "drift": drift}
    if champion:
        evidence["champion"] = champion
    first = "; ".join(x for x in (reasons[0], scores) if x)

    if not absolute_ok:
        return Decision(REJECT, f"reject: fails the absolute thresholds — {first}", reasons, evidence)
    if comparison is None:
        reasons.append("no champion yet: the candidate passes the absolute thresholds and becomes the first champion")
        return Decision(PROMOTE, f"promote (first champion): {first}", reasons, evidence)

    c = comparison
    ci = (f"{name} {c.candidate:.2f} vs champion {c.champion:.2f} ({pct(c.rel_change)}, "
          f"{c.confidence:.0%} CI {pct(c.ci_low)}…{pct(c.ci_high)}; {c.clusters:,} resampled clusters)")
    reasons.append(ci)
    worst = [s for s in slices if s["enforced"] and s["rel_change"] > policy.max_slice_regression]
    enforced = [s for s in slices if s["enforced"]]
    if worst:
        w = max(worst, key=lambda s: s["rel_change"])
        guard = (f"guardrail: {len(worst)} slice(s) worse than the champion by more than "
                 f"{policy.max_slice_regression:.0%}, worst {w['column']}={w['slice']} {pct(w['rel_change'])} "
                 f"on {w['rows']:,} rows")
    else:
        top = max((s["rel_change"] for s in enforced), default=0.0)
        guard = (f"no slice worse than {policy.max_slice_regression:.0%} ({len(enforced)} slices checked, "
                 f"worst {pct(top)})")
    reasons.append(guard)
    line = "; ".join(x for x in (ci, scores, guard, drift_note) if x)

    if worst:
        return Decision(REJECT, f"reject: {line}", reasons, evidence)
    conclusive = c.ci_high <= -policy.min_improvement
    evidence["conclusive"] = conclusive
    if conclusive:
        wins = prior_wins + 1
        reasons.append(f"the CI's conservative bound {pct(c.ci_high)} clears the minimum improvement "
                       f"{pct(-policy.min_improvement)}: win {wins} of {policy.confirm_weeks} needed in a row")
        if wins < policy.confirm_weeks:
            reasons.append("not yet confirmed on another week, so it goes to an A/B test; it is promoted if the next "
                           "week's candidate wins again")
            return Decision(AB_TEST, f"ab_test (win {wins} of {policy.confirm_weeks}): {line}", reasons, evidence)
        if policy.always_ab:
            reasons.append("policy says every promotion goes through an A/B test first")
            return Decision(AB_TEST, f"ab_test (policy: always A/B first): {line}", reasons, evidence)
        if heavy_drift:
            reasons.append("heavy drift: offline evidence on this week is weaker, so it goes to an A/B test")
            return Decision(AB_TEST, f"ab_test (heavy drift): {line}", reasons, evidence)
        return Decision(PROMOTE, f"promote: {line}", reasons, evidence)
    if c.rel_change < 0 and policy.ab_when_inconclusive:
        reasons.append(f"looks better but not conclusively: the CI's conservative bound {pct(c.ci_high)} does not "
                       f"clear {pct(-policy.min_improvement)}")
        return Decision(AB_TEST, f"ab_test (inconclusive): {line}", reasons, evidence)
    reasons.append("not better than the champion" if c.rel_change >= 0 else
                   "better by too little to act on, and A/B tests of inconclusive candidates are off")
    return Decision(REJECT, f"reject: {line}", reasons, evidence)


def _scores(candidate: dict, champion: dict | None) -> str:
    """Classification: accuracy and ROC AUC (binary) of the candidate, and of the champion when known."""
    parts = []
    for key, label in (("accuracy", "accuracy"), ("roc_auc", "ROC AUC")):
        if candidate.get(key) is None:
            continue
        vs = f" vs champion {champion[key]:.3f}" if champion and champion.get(key) is not None else ""
        parts.append(f"{label} {candidate[key]:.3f}{vs}")
    return ", ".join(parts)


def _drift_note(policy: PolicyConfig, drift: dict | None) -> tuple[str, bool]:
    if not drift:
        return "", False
    n, k, share = drift["n_drifted"], drift["n_columns"], drift["share_drifted"]
    heavy = policy.ab_if_drift_share_above is not None and share > policy.ab_if_drift_share_above
    return f"{n} of {k} feature columns drifted ({share:.0%})", heavy
