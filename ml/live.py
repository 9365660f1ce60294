"""Live performance of the served champion against what its offline holdout promised (pure).

The live loss is the mean per-unit loss over predictions whose outcome has arrived; the promise is the holdout
loss recorded when the version was registered. "Degraded" means the live loss is credibly above the promise by
more than `tolerance` (an ordinary week is allowed to be that much worse than the holdout week): a one-sided
mixture SPRT on log(live / (promise x (1 + tolerance))), the same always-valid test the A/B analysis uses, so
checking every day does not inflate the false-alarm rate.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ml.ab import cs_halfwidth, mixture_tau


@dataclass(frozen=True)
class LiveCheck:
    outcomes: int  # predictions with an outcome, in the window
    live_loss: float
    promised_loss: float
    bound: float  # promised x (1 + tolerance)
    ratio: float  # live / promised
    ratio_low: float  # always-valid confidence sequence of live / promised
    ratio_high: float
    p_value: float  # always-valid, one-sided: live above the bound
    degraded: bool
    tolerance: float
    alpha: float

    def to_dict(self) -> dict:
        return asdict(self)


def live_check(loss: np.ndarray, promised: float, *, tolerance: float = 0.2, alpha: float = 0.05,
               min_outcomes: int = 100) -> LiveCheck | None:
    """The test on the per-unit losses seen so far; None with fewer than `min_outcomes` outcomes."""
    x = np.asarray(loss, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < max(min_outcomes, 2) or promised <= 0:
        return None
    m = float(x.mean())
    if m <= 0:
        return LiveCheck(int(x.size), m, promised, promised * (1 + tolerance), 0.0, 0.0, 0.0, 1.0, False,
                         tolerance, alpha)
    bound = promised * (1 + tolerance)
    est = math.log(m / bound)
    var = max(float(x.var(ddof=1)) / (x.size * m * m), 1e-18)  # delta method: variance of log(mean)
    tau = mixture_tau(max(tolerance, 0.05))
    log_lr = 0.5 * math.log(var / (var + tau ** 2)) + est ** 2 * tau ** 2 / (2 * var * (var + tau ** 2))
    p = float(min(1.0, math.exp(-log_lr))) if est > 0 else 1.0
    h = cs_halfwidth(var, tau, alpha)
    ratio = m / promised
    return LiveCheck(outcomes=int(x.size), live_loss=m, promised_loss=promised, bound=bound, ratio=ratio,
                     ratio_low=ratio * math.exp(-h), ratio_high=ratio * math.exp(h), p_value=p,
                     degraded=p <= alpha, tolerance=tolerance, alpha=alpha)


@dataclass(frozen=True)
class RollbackCheck:
    """Would @previous-champion have served the same recent units better than the champion did?"""

    units: int  # units with an outcome and logged features, scored by both
    champion_loss: float
    previous_loss: float
    change: float  # previous / champion - 1 (negative: the previous version's loss is lower)
    ci_low: float  # always-valid interval of `change`
    ci_high: float
    better: bool  # the whole interval below 0
    alpha: float

    def to_dict(self) -> dict:
        return asdict(self)


def previous_check(champion_loss: np.ndarray, previous_loss: np.ndarray, *, alpha: float = 0.05,
                   mde: float = 0.05, min_outcomes: int = 100) -> RollbackCheck | None:
    """The always-valid test of the A/B analysis on the two versions' per-unit losses over the same units (treated
    as independent samples: conservative for paired data); None with fewer than `min_outcomes` units."""
    from ml.ab import sequential_lift

    a, b = np.asarray(champion_loss, dtype=np.float64), np.asarray(previous_loss, dtype=np.float64)
    if a.size < max(min_outcomes, 2) or a.size != b.size or min(a.mean(), b.mean()) <= 0:
        return None
    lift = sequential_lift(a, b, alpha=alpha, mde=mde)
    return RollbackCheck(units=int(a.size), champion_loss=lift.champion_mean, previous_loss=lift.challenger_mean,
                         change=lift.lift, ci_low=lift.ci_low, ci_high=lift.ci_high, better=lift.ci_high < 0,
                         alpha=alpha)


def daily_losses(created_at, losses: np.ndarray) -> list[dict]:
    """Per day (UTC date of the prediction): how many outcomes and their mean loss. `created_at`: the prediction
    time of each scored unit, in the order of `losses`."""
    import pandas as pd

    if not len(losses):
        return []
    days = pd.DataFrame({"day": pd.to_datetime(pd.Series(created_at)).dt.date.astype(str).to_numpy(),
                         "loss": losses}).groupby("day")["loss"].agg(["count", "mean"]).reset_index()
    return [{"day": r.day, "outcomes": int(r["count"]), "loss": float(r["mean"])} for _, r in days.iterrows()]


def live_reason(check: LiveCheck, version: str, metric: str, missing: int, due: int, label_delay_hours: float) -> str:
    """The live monitor's verdict in one sentence, with its numbers."""
    verdict = "DEGRADED" if check.degraded else "within its promise"
    return (f"champion v{version}: live {metric} {check.live_loss:.3g} on {check.outcomes:,} outcomes vs "
            f"{check.promised_loss:.3g} promised by its holdout ({check.ratio:.2f}x, always-valid interval "
            f"{check.ratio_low:.2f}-{check.ratio_high:.2f}x; tolerance {check.tolerance:.0%}, p "
            f"{check.p_value:.3g}): {verdict}; {missing} of {due} predictions older than {label_delay_hours:g} h "
            f"still lack an outcome")


def model_losses(model, frame, outcome, task: str) -> np.ndarray:
    """Per-row loss of `model` on `frame` against the logged outcomes (regression: numbers; classification:
    labels compared as text, as the served probabilities are logged)."""
    from ml.metrics import row_loss

    if task == "regression":
        return row_loss(task, np.asarray(outcome, dtype="float64"), model.predict(frame))
    # row_loss needs the classes in sorted order (text order differs from numeric order: 10 sorts before 2)
    classes = np.asarray(model.classes_).astype(str)
    order = np.argsort(classes)
    return row_loss(task, np.asarray(outcome).astype(str), model.predict_proba(frame)[:, order], classes[order])
