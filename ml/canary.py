"""Canary rollout of a new champion: its share of units ramps in steps (e.g. 5 % -> 25 % -> 50 % -> 100 %); each
step is held for a time and a number of outcomes and checked against guardrails; a failed guardrail rolls back.

Guardrails, checked at every look (each is safe to look at repeatedly):
- errors: the new model's failures (requests the old champion answered instead). Rolled back when a one-sided
  binomial test says the failure rate is above `max_error_rate`; a step is passed only when the observed rate is
  at or under it (in between, the step waits for more requests).
- latency: the new model's 95th-percentile time per row during the step, against the old one's in the same
  period: at most `max_latency_ratio` x old + `latency_slack_ms`.
- live loss: per-unit loss of the units with outcomes, new vs old, all steps pooled (the first variant each unit
  met), with the always-valid (mSPRT) interval of ml/ab.py: rolled back when the interval's lower end is above
  `max_loss_increase` (the new model is credibly worse by more than that).
- split: the step's newly seen units against the step's share (sample-ratio mismatch = broken routing or
  logging: rolled back, nothing can be trusted).
A step with too little data to evaluate a guardrail is held, never passed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC

import numpy as np

from ml.ab import sequential_lift, srm_check, unit_losses
from ml.names import CHALLENGER, CHAMPION

ADVANCE, HOLD, ROLLBACK, COMPLETE = "advance", "hold", "rollback", "complete"


@dataclass(frozen=True)
class Guardrail:
    name: str
    ok: bool | None  # None: not enough data to say
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StepDecision:
    action: str  # advance | hold | rollback | complete
    summary: str
    step: int  # the step looked at (0-based)
    share: float  # its share of units
    next_share: float | None  # advance / complete: the share from now on
    guardrails: list[Guardrail] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def check_steps(steps: tuple[float, ...] | list[float], key: str = "canary.steps") -> None:
    """Steps are shares in (0, 1], strictly increasing, ending at 1 (the new model serves everyone)."""
    if not steps:
        raise ValueError(f"'{key}' must list at least one share, ending with 1.0")
    for i, s in enumerate(steps):
        if not 0 < s <= 1:
            raise ValueError(f"'{key}[{i}]' must be a share in (0, 1], got {s}")
        if i and s <= steps[i - 1]:
            raise ValueError(f"'{key}' must increase step by step; {key}[{i}] = {s} follows {steps[i - 1]}")
    if steps[-1] != 1:
        raise ValueError(f"'{key}' must end with 1.0 (the whole traffic), got {steps[-1]}")


def error_guardrail(requests: int, failures: int, max_error_rate: float, alpha: float) -> Guardrail:
    from scipy.stats import binom

    if requests == 0:
        return Guardrail("errors", None, "no request reached the new model yet")
    rate = failures / requests
    p = float(binom.sf(failures - 1, requests, max_error_rate)) if failures else 1.0
    detail = (f"{failures:,} of {requests:,} requests failed ({rate:.2%}; limit {max_error_rate:.2%}, "
              f"one-sided p = {p:.3g})")
    if p < alpha:
        return Guardrail("errors", False, detail + ": credibly above the limit")
    if rate > max_error_rate:  # above the limit, not credibly yet: the step waits for more requests
        return Guardrail("errors", None, detail + ": above the limit, not credibly yet")
    return Guardrail("errors", True, detail)


def latency_guardrail(old_ms: np.ndarray, new_ms: np.ndarray, max_ratio: float, slack_ms: float,
                      min_samples: int) -> Guardrail:
    old_ms, new_ms = np.asarray(old_ms, dtype=float), np.asarray(new_ms, dtype=float)
    old_ms, new_ms = old_ms[np.isfinite(old_ms)], new_ms[np.isfinite(new_ms)]
    if min(old_ms.size, new_ms.size) < min_samples:
        return Guardrail("latency", None, f"{new_ms.size:,} new / {old_ms.size:,} old timed rows in this step "
                                          f"(need {min_samples} each)")
    old_p, new_p = float(np.percentile(old_ms, 95)), float(np.percentile(new_ms, 95))
    limit = max_ratio * old_p + slack_ms
    detail = (f"p95 {new_p:.2f} ms per row (new) vs {old_p:.2f} ms (old); limit {max_ratio:g} x old + "
              f"{slack_ms:g} ms = {limit:.2f} ms")
    return Guardrail("latency", new_p <= limit, detail)


def loss_guardrail(old_loss: np.ndarray, new_loss: np.ndarray, *, max_increase: float, alpha: float, mde: float,
                   metric: str) -> tuple[Guardrail, dict | None]:
    a, b = np.asarray(old_loss, dtype=float), np.asarray(new_loss, dtype=float)
    if min(a.size, b.size) < 2 or min(a.mean() if a.size else 0, b.mean() if b.size else 0) <= 0:
        return Guardrail("live loss", None, f"{b.size:,} new / {a.size:,} old units with outcomes: too few to "
                                            "compare"), None
    lift = sequential_lift(a, b, alpha=alpha, mde=mde)
    detail = (f"{metric} {lift.challenger_mean:.4g} (new) vs {lift.champion_mean:.4g} (old) on {b.size:,} / "
              f"{a.size:,} units: {lift.lift:+.1%}, always-valid {1 - alpha:.0%} CI "
              f"[{lift.ci_low:+.1%}, {lift.ci_high:+.1%}]; roll back above {max_increase:+.1%}")
    return Guardrail("live loss", not lift.ci_low > max_increase, detail), lift.to_dict()


def split_guardrail(old_units: int, new_units: int, share: float, alpha: float) -> Guardrail:
    if old_units + new_units == 0:
        return Guardrail("split", None, "no unit seen in this step yet")
    if share >= 1:
        return Guardrail("split", True, f"{new_units:,} units, all on the new model")
    srm = srm_check(old_units, new_units, share, alpha)
    detail = (f"{new_units:,} new / {old_units:,} old units first seen in this step ({srm.observed_share:.1%} "
              f"new, configured {share:.0%}); chi-square p = {srm.p_value:.3g}")
    return Guardrail("split", not srm.mismatch, detail + (": routing or logging is broken" if srm.mismatch else ""))


def decide_step(*, steps: list[float], step: int, held_hours: float, hold_hours: float, max_step_hours: float,
                step_outcomes: int, min_outcomes: int, guardrails: list[Guardrail],
                evidence: dict | None = None) -> StepDecision:
    """What to do at a look at step `step`, given its guardrails and how long / how much it has been held."""
    share = steps[step]
    nxt = steps[step + 1] if step + 1 < len(steps) else 1.0  # the last step is the whole traffic
    lines = [f"{g.name}: {'ok' if g.ok else 'FAILED' if g.ok is False else 'not enough data'}: {g.detail}"
             for g in guardrails]
    where = f"step {step + 1} of {len(steps)} ({share:.0%} of units)"
    failed = [g for g in guardrails if g.ok is False]
    ev = dict(evidence or {}, held_hours=held_hours, step_outcomes=step_outcomes)
    if failed:
        return StepDecision(ROLLBACK, f"rollback at {where}: {'; '.join(f'{g.name} {g.detail}' for g in failed)}",
                            step, share, None, guardrails, lines, ev)
    waiting = []
    if held_hours < hold_hours:
        waiting.append(f"held {held_hours:.1f} of {hold_hours:g} h")
    if step_outcomes < min_outcomes:
        waiting.append(f"{step_outcomes:,} of {min_outcomes:,} outcomes on the new model")
    unknown = [g.name for g in guardrails if g.ok is None]
    if unknown:
        waiting.append(f"not enough data for {', '.join(unknown)}")
    if waiting:
        if held_hours >= max_step_hours:
            return StepDecision(ROLLBACK, f"rollback at {where}: still {'; '.join(waiting)} after {held_hours:.1f} h "
                                f"(canary.max_step_hours {max_step_hours:g}); the old champion stays", step, share,
                                None, guardrails, lines, ev)
        return StepDecision(HOLD, f"hold {where}: {'; '.join(waiting)}", step, share, share, guardrails, lines, ev)
    if nxt >= 1:
        return StepDecision(COMPLETE, f"complete: {where} passed every guardrail; the new model serves all units",
                            step, share, 1.0, guardrails, lines, ev)
    return StepDecision(ADVANCE, f"advance: {where} passed every guardrail; next {nxt:.0%} of units", step, share,
                        nxt, guardrails, lines, ev)


def summarise(traffic, task_kind: str, experiment: dict) -> dict:
    """The figures the guardrails need: per-unit losses of all steps, and the current step's units and latencies."""
    losses = unit_losses(traffic, task_kind)
    since = experiment["step_started_at"].astimezone(UTC).replace(tzinfo=None)
    first = traffic.drop_duplicates("unit_id", keep="first")
    step_first = first[first["created_at"] >= since]
    new_units = step_first["variant"] == CHALLENGER
    in_step = traffic[traffic["created_at"] >= since]
    timed = in_step[in_step["latency_ms"].notna() & ~in_step["fallback"].astype(bool)]
    challenger = traffic[traffic["variant"] == CHALLENGER]
    return {CHAMPION: losses[CHAMPION], CHALLENGER: losses[CHALLENGER],
            "step_units": (int((~new_units).sum()), int(new_units.sum())),
            "step_outcomes": int((new_units & step_first["outcome"].notna()).sum()),
            "latency": {CHAMPION: timed.loc[timed["variant"] == CHAMPION, "latency_ms"].to_numpy(float),
                        CHALLENGER: timed.loc[timed["variant"] == CHALLENGER, "latency_ms"].to_numpy(float)},
            "requests": int(len(challenger)), "fallbacks": int(challenger["fallback"].astype(bool).sum())}
