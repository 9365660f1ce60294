"""The decision policy: promote, A/B test, hold or reject a candidate, with the reasons written in words.

What counts is the loss of the predictions served over the coming weeks. In a world that drifts, a model trained
on newer data is usually better out of time than the one it would replace, so the policy asks one of two questions:

- **the champion's own recipe, one more week of data** (the usual week): "serve the refit, or keep the champion?"
  The default is to serve it, as a weekly cron job would; what stops it is an objection with evidence: the data
  gate (before any of this), the absolute thresholds (when the champion meets them on the same week: a week too
  hard for both does not keep the staler one), the slice guardrails, or the refit credibly worse — the
  lower end of the interval of its expected change above zero, from the track record of what a week of newer data
  has done to this recipe (every week the candidate is compared out of time with the version trained a week
  earlier) and, when the champion is older than last week's refit, the candidate's comparison with it. A drift
  alarm is a reason to retrain, never by itself a reason to keep the older model;
- **a new recipe** (a changed params section, another family): "is serving it expected to lower the loss, with a
  bounded chance of making things worse by more than `policy.max_harm`?" — the expected relative change = the
  candidate's paired change against the champion on the newest week (block bootstrap) + the gain of one more week
  of data when it is refit (`policy.refit`, the track record); promote when that is negative and the chance of a
  change worse than `max_harm` is at most `harm_risk`. A candidate trained on no newer data than the champion
  only counts with a conclusive win (the CI's bound clears `min_improvement`). A calibrated drift alarm (a target
  shift, a prediction shift, or drift in more than `ab_if_drift_share_above` of the features) turns a would-be
  promotion into an online A/B test when one can finish within `ab.max_duration_days`, and otherwise into a
  promotion only on a conclusive offline win;
- one experiment per model at a time: while one runs, a would-be promotion is held (registered, not served) and
  the experiment decides; `policy.always_ab` sends every would-be promotion through one.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ml.config import PolicyConfig
from ml.stats import Comparison
from ml.wording import better_or_worse, metric_text

PROMOTE, AB_TEST, HOLD, REJECT = "promote", "ab_test", "hold", "reject"


@dataclass(frozen=True)
class Decision:
    action: str  # promote | ab_test | hold | reject
    summary: str  # one line with the evidence, for logs, tags and the UI
    reasons: list[str] = field(default_factory=list)  # every check, in words
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrackRecord:
    """What one more week of training data has bought this model out of time: the relative change in loss of a
    model trained one week later vs one week earlier (< 0: fresher is better), over the last weeks."""

    gain: float  # mean relative change in loss per week of newer data
    se: float  # standard error of that mean
    spread: float  # standard deviation of one week's change: how much a single promotion can differ from the mean
    weeks: int

    def to_dict(self) -> dict:
        return asdict(self)


def track_record(values: list[tuple[float, float]]) -> TrackRecord | None:
    """Pool weekly (gain, standard error) measurements: their mean and its standard error, and the spread of a
    single week (one week: that week's own standard error for both). None without any measurement."""
    vals = [(g, s) for g, s in values if math.isfinite(g) and math.isfinite(s)]
    if not vals:
        return None
    gains = [g for g, _ in vals]
    mean = sum(gains) / len(gains)
    if len(vals) == 1:
        se = spread = vals[0][1]
    else:
        var = sum((g - mean) ** 2 for g in gains) / (len(gains) - 1)
        spread = max(math.sqrt(var), max(s for _, s in vals))
        se = max(math.sqrt(var / len(gains)), math.sqrt(sum(s * s for _, s in vals)) / len(vals))
    return TrackRecord(gain=mean, se=se, spread=spread, weeks=len(vals))


@dataclass(frozen=True)
class ABPlan:
    """Can an online experiment finish in time? Units needed vs units with outcomes the traffic brings."""

    units: int  # planned units with outcomes (both variants)
    per_day: float  # units with outcomes per day, observed on the newest week
    max_days: int  # ab.max_duration_days

    @property
    def days_needed(self) -> float:
        return self.units / self.per_day if self.per_day > 0 else math.inf

    @property
    def reachable(self) -> bool:
        return self.days_needed <= self.max_days

    def to_dict(self) -> dict:
        return {**asdict(self), "days_needed": self.days_needed, "reachable": self.reachable}


def pct(x: float, digits: int = 1) -> str:
    return f"{x * 100:+.{digits}f}%".replace("-", "−")


def ci_sd(c: Comparison) -> float:
    """Standard deviation implied by the comparison's two-sided interval (normal approximation)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + c.confidence / 2)
    return max((c.ci_high - c.ci_low) / (2 * z), 1e-9)


def decide(policy: PolicyConfig, metric: str, candidate: dict, baseline: dict, comparison: Comparison | None,
           slices: list[dict], drift: dict | None, *, champion: dict | None = None, fresher_weeks: int = 1,
           record: TrackRecord | None = None, refit: bool | None = None, running: dict | None = None,
           plan: ABPlan | None = None, same_recipe: bool = False) -> Decision:
    """Apply the policy to the evidence.

    `candidate` / `baseline` / `champion` are holdout metrics (`champion` only reported); `comparison` is the
    paired change of the candidate against the champion on the holdout week (None before the first champion);
    `fresher_weeks` how many weeks newer the data of the model that would be served is than the champion's;
    `record` the freshness track record; `refit` whether the served model is the candidate refit on the window
    including the holdout week (default: `policy.refit`); `running` the running experiment, if any; `plan` the
    A/B plan an experiment would need; `same_recipe` whether the candidate is the champion's own recipe (the
    question is then "serve the refit on one more week?", not "is it better?"). Classification lines also carry
    accuracy and ROC AUC; log loss decides."""
    refit = policy.refit if refit is None else refit
    name = metric.upper() if metric == "mae" else metric
    absolute_ok, reasons = _absolute_thresholds(policy, name, candidate[metric], baseline[metric])
    scores = _scores(candidate, champion if comparison else None)
    if scores:
        reasons.insert(1, scores)
    shift, drift_note = drift_facts(policy, drift)
    if drift_note:
        reasons.append(drift_note)
    evidence: dict = {"metric": metric, "candidate": candidate, "baseline": baseline,
                      "comparison": comparison.to_dict() if comparison else None, "slices": slices, "drift": drift,
                      "shift": shift, "refit": refit, "fresher_weeks": fresher_weeks,
                      "track_record": record.to_dict() if record else None,
                      "plan": plan.to_dict() if plan else None, "running": running}
    if champion:
        evidence["champion"] = champion
    first = "; ".join(x for x in (reasons[0], scores) if x)
    served = "the candidate refit on the window including the newest week" if refit else "the candidate"
    settled = _absolute_gate(policy, name, absolute_ok, comparison, baseline[metric], first, served, reasons, evidence)
    if settled is not None:
        return settled

    c = comparison
    evidence["empty_comparison"] = c.empty
    ci = _comparison_line(name, c)
    worst, guard = _slice_guardrail(policy, slices)
    reasons += [x for x in (ci, guard) if x]
    if worst:
        return Decision(REJECT, f"reject: {'; '.join(x for x in (ci, scores, guard, drift_note) if x)}", reasons,
                        evidence)
    evidence["conclusive"] = c.has_interval and c.ci_high <= -policy.min_improvement
    line = "; ".join(x for x in (ci, scores, guard, drift_note) if x)
    if same_recipe and refit and fresher_weeks > 0:
        return _refit_question(policy, name, c, record, shift, line, reasons, evidence, running=running, plan=plan)
    return _new_recipe_question(policy, name, c, fresher_weeks, record if refit else None, refit, served, shift,
                                line, reasons, evidence, running=running, plan=plan)


def _absolute_gate(policy: PolicyConfig, name: str, ok: bool, comparison: Comparison | None, base: float,
                   first: str, served: str, reasons: list[str], evidence: dict) -> Decision | None:
    """Reject a candidate that fails the absolute thresholds (unless the champion fails them too: a hard week), or
    promote the first champion; None when the comparison with the champion decides."""
    if not ok and comparison is not None and not _meets(policy, comparison.champion, base):
        # the champion misses them too on the same week: the week is hard for any model (a pollution episode, a
        # storm), the thresholds do not tell the two apart, and keeping the champion would only keep it staler
        reasons.append(f"the champion misses the absolute thresholds too on the newest week ({name} "
                       f"{metric_text(comparison.champion)}): a hard week for any model, so the comparison decides")
        evidence["hard_week"] = True
        if min(comparison.candidate, comparison.champion) > base:
            # worse than predicting the training median or the class prior: a week the recipe cannot predict, or
            # a target that means something else now (labels renamed upstream: every model trained before is
            # confidently wrong while the refit learns the new meaning)
            both = f"{metric_text(comparison.candidate)} and {metric_text(comparison.champion)}"
            reasons.append(f"both are worse than the naive baseline itself ({name} {both} vs {metric_text(base)}): "
                           f"if this lasts, look at the target's recent values, it may be defined differently upstream")
            evidence["worse_than_baseline"] = True
        ok = True
    if not ok:
        return Decision(REJECT, f"reject: fails the absolute thresholds — {first}", reasons, evidence)
    if comparison is None:
        reasons.append(f"no champion yet: the candidate passes the absolute thresholds; {served} becomes the "
                       "first champion")
        return Decision(PROMOTE, f"promote (first champion): {first}", reasons, evidence)
    return None


def _new_recipe_question(policy: PolicyConfig, name: str, c: Comparison, fresher_weeks: int,
                         fresh: TrackRecord | None, refit: bool, served: str, shift, line: str, reasons: list[str],
                         evidence: dict, *, running: dict | None, plan: ABPlan | None) -> Decision:
    """A new recipe (or the candidate itself served): is it better? Promote, test it, or keep the champion.
    `fresh`: the track record, counted only when the refit is served."""
    evidence["question"] = "new recipe"
    would = _new_recipe_outlook(policy, name, c, fresher_weeks, fresh, refit, reasons, evidence)
    if not would:
        why = _keep_reason(c, fresher_weeks, evidence.get("expected_change", 0.0), fresh)
        reasons.append(f"keep the champion: {why}")
        return Decision(REJECT, f"reject ({why}): {line}", reasons, evidence)
    waiting = _wait_or_experiment(policy, c, [*shift], line, reasons, evidence, running=running, plan=plan)
    if waiting:
        return waiting
    reasons.append(f"promote {served}")
    short = (f"; expected change in served {name} {pct(evidence['expected_change'])}, chance of > "
             f"{policy.max_harm:.0%} worse {evidence['harm_risk']:.0%}" if "expected_change" in evidence else "")
    return Decision(PROMOTE, f"promote: {line}{short}", reasons, evidence)


def _absolute_thresholds(policy: PolicyConfig, name: str, cand: float, base: float) -> tuple[bool, list[str]]:
    """Gate 1: the candidate beats the naive baseline by `min_gain_vs_baseline` (and meets `max_metric`)."""
    gain = 1 - cand / base if base else 0.0
    ok = gain >= policy.min_gain_vs_baseline
    key = "" if ok else ", policy.min_gain_vs_baseline"  # a rejection names the key a person would change
    reasons = [f"{name} {metric_text(cand)} vs naive baseline {metric_text(base)} ({better_or_worse(gain)}; "
               f"need ≥ {policy.min_gain_vs_baseline:.0%}{key})"]
    if policy.max_metric is not None:
        capped = cand <= policy.max_metric
        ok &= capped
        reasons.append(f"{name} {metric_text(cand)} {'≤' if capped else '>'} cap {policy.max_metric:g}"
                       f"{'' if capped else ' (policy.max_metric)'}")
    return ok, reasons


def _comparison_line(name: str, c: Comparison) -> str:
    """The paired comparison with the champion in words; an empty one (same predictions) says so."""
    if c.empty:
        return (f"{name} {metric_text(c.candidate)} on the newest week, as the champion's (its recipe on its data: "
                "nothing to compare)")
    if not c.has_interval:
        return (f"{name} {metric_text(c.candidate)} vs champion {metric_text(c.champion)} ({pct(c.rel_change)} on "
                f"{c.clusters} cluster: too few to resample, no interval)")
    return (f"{name} {metric_text(c.candidate)} vs champion {metric_text(c.champion)} ({pct(c.rel_change)}, "
            f"{c.confidence:.0%} CI {pct(c.ci_low)}…{pct(c.ci_high)}; {c.clusters:,} resampled clusters)")


def _slice_guardrail(policy: PolicyConfig, slices: list[dict]) -> tuple[list[dict], str]:
    """Gate 2: no enforced slice worse than the champion by more than `max_slice_regression`."""
    worst = [s for s in slices if s["enforced"] and s["rel_change"] > policy.max_slice_regression]
    if worst:
        w = max(worst, key=lambda s: s["rel_change"])
        return worst, (f"guardrail: {len(worst)} slice(s) worse than the champion by more than "
                       f"{policy.max_slice_regression:.0%}, worst {w['column']}={w['slice']} {pct(w['rel_change'])} "
                       f"on {w['rows']:,} rows")
    enforced = [s for s in slices if s["enforced"]]
    if not enforced:  # no evidence to print as evidence: say what was not checked
        return worst, (f"no slice checked ({len(slices)} below policy.min_slice_rows {policy.min_slice_rows:,} "
                       "rows)" if slices else "")
    top = max(s["rel_change"] for s in enforced)
    return worst, (f"no slice worse than {policy.max_slice_regression:.0%} ({len(enforced)} slices checked, "
                   f"worst {pct(top)})")


def _new_recipe_outlook(policy: PolicyConfig, name: str, c: Comparison, fresher_weeks: int,
                        record: TrackRecord | None, refit: bool, reasons: list[str], evidence: dict) -> bool:
    """Gate 3 for a new recipe, "is it better?": with no newer data than the champion only a conclusive win
    counts; otherwise the expected change of the served model (the comparison + the track record of a week of
    fresher data) must be negative and the chance of `max_harm` worse at most `harm_risk`."""
    if fresher_weeks <= 0:
        conclusive = evidence["conclusive"]
        reasons.append(f"no newer data than the champion: only a conclusive win counts (CI bound {pct(c.ci_high)}): "
                       f"{'it clears' if conclusive else 'it does not clear'} {pct(-policy.min_improvement)}")
        return conclusive
    fresh = record.gain if record else 0.0
    fresh_sd = math.hypot(record.se, record.spread) if record else 0.0  # this one week's change
    expected = c.rel_change + fresh
    sd = math.hypot(ci_sd(c), fresh_sd)
    risk = _tail(expected, sd, policy.max_harm)
    evidence.update(expected_change=expected, expected_sd=sd, harm_risk=risk)
    if record:
        basis = (f"{pct(c.rel_change)} on the newest week {pct(fresh)} for one more week of data (track record: "
                 f"{record.weeks} week{'s' if record.weeks != 1 else ''})")
    elif refit:
        basis = f"{pct(c.rel_change)} on the newest week (no track record of fresher data yet)"
    else:
        basis = f"{pct(c.rel_change)} on the newest week"
    reasons.append(f"expected change in served {name} {pct(expected)} ({basis}); chance of being worse than the "
                   f"champion by more than {policy.max_harm:.0%}: {risk:.0%} (bound {policy.harm_risk:.0%})")
    return expected < 0 and risk <= policy.harm_risk


def _meets(policy: PolicyConfig, loss: float, base: float) -> bool:
    """Whether a mean loss meets the absolute thresholds (the gain over the naive baseline, the cap)."""
    gain = 1 - loss / base if base else 0.0
    return gain >= policy.min_gain_vs_baseline and (policy.max_metric is None or loss <= policy.max_metric)


def _refit_question(policy: PolicyConfig, name: str, c: Comparison, record: TrackRecord | None, shift: list[str],
                    line: str, reasons: list[str], evidence: dict, *, running: dict | None,
                    plan: ABPlan | None) -> Decision:
    """Same recipe, one more week of data: serve the refit (what a weekly cron job would do) unless an objection
    with evidence stands: the refit credibly worse, by the track record of what a week of newer data has done to
    this recipe and, when the champion is older than last week's refit, by the candidate's comparison with it
    (the lower end of the interval of the expected change above zero). A drift alarm is a reason to retrain, never
    by itself a reason to keep the older model."""
    from statistics import NormalDist

    measured = not c.empty
    expected = (c.rel_change if measured else 0.0) + (record.gain if record else 0.0)
    sd = math.hypot(ci_sd(c) if measured else 0.0, record.se if record else 0.0)
    low = expected - NormalDist().inv_cdf(0.5 + policy.confidence / 2) * sd
    parts = ([f"{pct(c.rel_change)} vs the champion on the newest week"] if measured else []) + [
        f"track record {pct(record.gain)} ± {pct(record.se)[1:]} over {record.weeks} week"
        f"{'s' if record.weeks != 1 else ''}" if record else "no track record yet"]
    question = "same recipe, one more week of data: " + ", ".join(parts)
    objections = ([f"the refit is expected to be worse: {pct(expected)} (lower bound {pct(low)} at "
                   f"{policy.confidence:.0%})"] if low > 0 else [])
    evidence.update(question="refit", expected_change=expected, expected_sd=sd, expected_low=low,
                    harm_risk=_tail(expected, max(sd, 1e-9), policy.max_harm), objections=objections)
    reasons.append(f"{question}; " + ("; ".join(objections) if objections else "no objection"))
    if objections:
        reasons.append(f"keep the champion: {objections[0]}")
        return Decision(REJECT, f"reject (held: {objections[0]}): {line}", reasons, evidence)
    if shift:
        reasons.append(f"{'; '.join(shift)}: a reason to retrain, not to keep the older model")
    waiting = _wait_or_experiment(policy, c, [], line, reasons, evidence, running=running, plan=plan)
    if waiting:
        return waiting
    reasons.append("promote the candidate refit on the window including the newest week")
    return Decision(PROMOTE, f"promote ({question}; no objection): {line}", reasons, evidence)


def _wait_or_experiment(policy: PolicyConfig, c: Comparison, careful: list[str], line: str, reasons: list[str],
                        evidence: dict, *, running: dict | None, plan: ABPlan | None) -> Decision | None:
    """A would-be promotion: held while an experiment runs; sent online when a shift (or `always_ab`) makes the
    offline evidence weaker and an experiment can finish, else decided offline on a conclusive win. None: promote."""
    if running:
        reasons.append(f"experiment {running['id']} is running (v{running['challenger_version']} vs "
                       f"v{running['champion_version']}, planned end {str(running['planned_end'])[:10]}): one "
                       "experiment at a time, so this candidate is held and the experiment decides")
        return Decision(HOLD, f"hold (experiment {running['id']} running): {line}", reasons, evidence)
    careful = careful + (["policy: every promotion through an A/B test"] if policy.always_ab else [])
    if not careful:
        return None
    why = "; ".join(careful)
    if plan is not None and plan.reachable:
        reasons.append(f"{why}: the offline evidence is weaker, so an online A/B test decides "
                       f"({plan.units:,} units planned, {plan.per_day:,.0f} a day: {plan.days_needed:.1f} of "
                       f"{plan.max_days} days)")
        return Decision(AB_TEST, f"ab_test ({why}): {line}", reasons, evidence)
    cannot = (f"an A/B test cannot finish: {plan.units:,} units needed at {plan.per_day:,.0f} a day = "
              f"{plan.days_needed:.0f} days > ab.max_duration_days {plan.max_days}" if plan else "no A/B plan")
    if evidence["conclusive"]:
        reasons.append(f"{why}; {cannot}, so it is decided offline: a conclusive win promotes")
        return Decision(PROMOTE, f"promote ({why}; conclusive offline win): {line}", reasons, evidence)
    reasons.append(f"{why}; {cannot}, so it is decided offline, where only a conclusive win promotes "
                   f"(CI bound {pct(c.ci_high)} vs {pct(-policy.min_improvement)})")
    return Decision(REJECT, f"reject ({why}; not a conclusive win): {line}", reasons, evidence)


def _keep_reason(c: Comparison, fresher_weeks: int, expected: float, record: TrackRecord | None) -> str:
    """Why the champion stays, in the words of the evidence the decision rested on."""
    if fresher_weeks <= 0:
        return "not conclusively better, and no newer data"
    if expected < 0:
        return "the chance of a worse model is above the bound"
    if not c.empty:
        return "serving it is not expected to lower the loss"
    return "no evidence for the refit: " + (
        f"one more week of data has changed the loss by {pct(record.gain)} a week over {record.weeks} week(s)"
        if record else "no track record of fresher data yet")


def _tail(mean: float, sd: float, at: float) -> float:
    """P(X > at) for X ~ Normal(mean, sd)."""
    return 0.5 * math.erfc((at - mean) / (sd * math.sqrt(2)))


def drift_facts(policy: PolicyConfig, drift: dict | None) -> tuple[list[str], str]:
    """The calibrated drift alarms that make offline evidence weaker, in words, and the drift line for the reasons.
    Reads the summary of tasks/drift.py: `n_drifted`, `n_columns`, `share_drifted`, `target` and `prediction`
    (each with `drifted`, `statistic`, `threshold`)."""
    if not drift:
        return [], ""
    facts = []
    for key, label in (("target", "the target shifted"), ("prediction", "the predictions shifted")):
        col = drift.get(key) or {}
        if col.get("drifted"):
            stat, thr = col.get("statistic"), col.get("threshold")
            facts.append(label + (f" (statistic {stat:.3g} vs week-to-week bound {thr:.3g})"
                                  if isinstance(stat, (int, float)) and isinstance(thr, (int, float)) else ""))
    n, k, share = drift.get("n_drifted", 0), drift.get("n_columns", 0), drift.get("share_drifted", 0.0)
    heavy = policy.ab_if_drift_share_above is not None and k and share > policy.ab_if_drift_share_above
    if heavy:
        facts.append(f"heavy drift: {n} of {k} features ({share:.0%})")
    named = [c for c, v in (drift.get("columns") or {}).items() if v.get("drifted")]
    note = (f"{n} of {k} feature columns drifted beyond their week-to-week variation ({share:.0%}"
            f"{': ' + ', '.join(named[:6]) if named else ''})")
    if facts and not heavy:
        note += "; " + "; ".join(facts)
    elif heavy and len(facts) > 1:
        note += "; " + "; ".join(facts[:-1])
    return facts, note


def _scores(candidate: dict, champion: dict | None) -> str:
    """Classification: accuracy and ROC AUC (binary) of the candidate, and of the champion when known."""
    parts = []
    for key, label in (("accuracy", "accuracy"), ("roc_auc", "ROC AUC")):
        if candidate.get(key) is None:
            continue
        vs = f" vs champion {champion[key]:.3f}" if champion and champion.get(key) is not None else ""
        parts.append(f"{label} {candidate[key]:.3f}{vs}")
    return ", ".join(parts)
