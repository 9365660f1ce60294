"""Where the other columns put a column: the companion of a quantile rule.

A quantile rule sees one column. It cannot tell a week whose level moved with the rest of the data (a pollution
episode lifts PM10, PM2.5, CO and NO2 together; a warm spell lifts temperature and dew point) from a break of one
column (a unit change, a drifting sensor, a shifted target). Both put the column's quantiles outside the range
the reference weeks spanned; only the break leaves the other columns where they were.

The companion fits the column linearly on the other numeric columns and the local hour and weekday of the time
(`ml.joint.design`) on the reference, and holds the gap between each quantile of the column and the same quantile
of its prediction to the range the reference weeks' own gaps spanned, widened by the rule's tolerance (in the
rule's unit, the column's IQR). A week fails a quantile rule only when it also fails its companion: a week that
moved with the other columns passes, with a note; a column that moved alone fails as before. Columns the others
predict hardly better than their median (rain, a code) get no companion, nor does the target: the features put a
target shifted by a standard deviation near enough to its usual gap (Beijing's PM2.5: half the shifts let through),
and a shifted target is the costliest break to miss.

Pure: numpy/pandas.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ml.joint import MIN_SKILL, design

ROWS = 6000  # reference rows the fit reads (a fixed-seed sample); the gaps are measured on every row


def fit(reference: pd.DataFrame, column: str, inputs: list[str], time_column: str, timezone: str,
        weeks: np.ndarray, envelope: list, qs: list[float], width: float, x: pd.DataFrame) -> dict | None:
    """The companion of `column`'s quantile rule: the fit, and for each quantile in `qs` the range its gap to the
    prediction may take ([lowest, highest] over the reference weeks in `envelope` and the pooled reference,
    ± `width`: the rule's own, tolerance x the column's IQR). `weeks`: each reference row's week. None when the
    others do not predict the column. `x`: `reference_design(reference, inputs, ...)`, shared by the columns."""
    inputs = [c for c in inputs if c != column and c in reference.columns]
    y = pd.to_numeric(reference[column], errors="coerce").to_numpy(dtype=float)
    if not inputs:
        return None
    usable = [c for c in x.columns if c != column and x[c].notna().mean() > 0.5 and np.nanstd(x[c].to_numpy()) > 0]
    known = np.isfinite(y)
    if not usable or known.sum() < 50:
        return None
    center, scale = x[usable].median(), x[usable].std()
    z = np.c_[np.ones(len(x)), ((x[usable] - center) / scale).fillna(0.0).to_numpy()]
    rows = np.flatnonzero(known)
    rows = np.sort(np.random.default_rng(0).permutation(rows)[:ROWS])
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # a small solve: BLAS threads cost more than they save
        coef, *_ = np.linalg.lstsq(z[rows], y[rows], rcond=None)
        pred = z @ coef
    if not _skilled(y[known], pred[known]):
        return None  # the others barely predict it: nothing to excuse a move by
    lows, highs = _gap_envelope([(y[known], pred[known]), *((y[known & (weeks == w)], pred[known & (weeks == w)])
                                                           for w in envelope)], qs)
    lows, highs = lows - width, highs + width
    return {"column": column, "inputs": inputs, "time_column": time_column, "timezone": timezone,
            "design": usable, "center": center.round(9).tolist(), "scale": scale.round(9).tolist(),
            "coef": np.round(coef, 9).tolist(), "quantiles": list(qs),
            "gap_ranges": [[round(float(lo), 6), round(float(hi), 6)] for lo, hi in zip(lows, highs, strict=True)]}


def reference_design(reference: pd.DataFrame, inputs: list[str], time_column: str, timezone: str
                     ) -> pd.DataFrame | None:
    """`ml.joint.design` of the reference (the inputs and the hour and weekday of the time), once for all its
    columns' companions; None without a usable time column (not tz-aware times)."""
    try:
        return design(reference, [c for c in inputs if c in reference.columns], time_column, timezone)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _skilled(y: np.ndarray, pred: np.ndarray) -> bool:
    """Whether the prediction beats the median by MIN_SKILL (as the joint checks ask of a relation)."""
    return len(y) >= 50 and np.mean(np.abs(y - pred)) <= (1 - MIN_SKILL) * np.mean(np.abs(y - np.median(y)))


def _gap_envelope(pairs, qs: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest gap of each quantile over (column, prediction) pairs: the pooled reference and its
    weeks."""
    gaps = np.array([g for y, pred in pairs if (g := _gaps(y, pred, qs)) is not None])
    return gaps.min(axis=0), gaps.max(axis=0)


def _gaps(y: np.ndarray, pred: np.ndarray, qs: list[float]) -> np.ndarray | None:
    """Each quantile of the column minus the same quantile of its prediction ("nearest", as GX's check)."""
    if y.size == 0:
        return None
    return np.quantile(y, qs, method="nearest") - np.quantile(pred, qs, method="nearest")


def predicted_quantiles(batch: pd.DataFrame, companion: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The batch's quantiles of the column and of its prediction from the other columns; None when they cannot be
    computed (a missing or unparseable column: the rule's failure stands)."""
    c = companion
    try:
        y = pd.to_numeric(batch[c["column"]], errors="coerce").to_numpy(dtype=float)
        x = design(batch, c["inputs"], c["time_column"], c["timezone"])
        z = ((x[c["design"]] - np.asarray(c["center"])) / np.asarray(c["scale"])).fillna(0.0).to_numpy()
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    pred = np.c_[np.ones(len(z)), z] @ np.asarray(c["coef"])
    known = np.isfinite(y) & np.isfinite(pred)
    if not known.any():
        return None
    qs = c["quantiles"]
    return np.quantile(y[known], qs, method="nearest"), np.quantile(pred[known], qs, method="nearest")


def excuse(batch: pd.DataFrame, companion: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The batch's quantiles of the column and of its prediction when every quantile is where the other columns
    put it (as far from their prediction as in the reference weeks): the failed rule is let through. None: the
    column moved on its own."""
    got = predicted_quantiles(batch, companion)
    if got is None:
        return None
    observed, predicted = got
    inside = all(lo <= g <= hi for g, (lo, hi) in zip(observed - predicted, companion["gap_ranges"], strict=True))
    return got if inside else None


# --------------------------------------------------------------------------------------------------------- replay


def history_design(data: pd.DataFrame, inputs: list[str], time_column: str, timezone: str) -> tuple | None:
    """The relation inputs of a whole history for the contract's replay (`ml.budget`): the design matrix (an
    intercept, then each usable input centred on the history's median and scaled by its standard deviation, a
    missing value at 0) and the names of its columns after the intercept. None without a usable time column."""
    x = reference_design(data, inputs, time_column, timezone)
    if x is None:
        return None
    usable = [c for c in x.columns if x[c].notna().mean() > 0.5 and np.nanstd(x[c].to_numpy()) > 0]
    z = ((x[usable] - x[usable].median()) / x[usable].std()).fillna(0.0).to_numpy()
    return np.c_[np.ones(len(z)), z], usable


class ReplayFit:
    """A column's companion in the replay: each week's normal equations summed once, so the fit of any judged
    week on its reference weeks is one small solve. As `fit` on the gate's reference, except that every row is
    read and the inputs are scaled once on the whole history."""

    def __init__(self, y: np.ndarray, x: np.ndarray, starts: np.ndarray, ends: np.ndarray):
        self.y, self.x, self.starts, self.ends = y, x, starts, ends
        self.gram = np.stack([x[s:e].T @ x[s:e] for s, e in zip(starts, ends, strict=True)])
        self.moment = np.stack([x[s:e].T @ y[s:e] for s, e in zip(starts, ends, strict=True)])

    def need(self, week: int, refs: list[int], envelope: list[int], qs: list[float], iqr: float) -> float:
        """The tolerance (in the column's IQRs, the quantile rule's unit) `week` needs to pass the companion of
        its reference weeks `refs`; inf when the others do not predict the column there."""
        coef = np.linalg.lstsq(self.gram[refs].sum(axis=0), self.moment[refs].sum(axis=0), rcond=None)[0]
        rows = np.concatenate([np.arange(self.starts[r], self.ends[r]) for r in refs])
        y, pred = self.y[rows], self.x[rows] @ coef
        s, e = self.starts[week], self.ends[week]
        if e <= s or not _skilled(y, pred):
            return np.inf
        lows, highs = _gap_envelope([(y, pred), *((self.y[self.starts[r]:self.ends[r]],
                                                   self.x[self.starts[r]:self.ends[r]] @ coef) for r in envelope)], qs)
        gap = _gaps(self.y[s:e], self.x[s:e] @ coef, qs)
        return float(np.max(np.maximum(lows - gap, gap - highs))) / iqr  # the caller has iqr > 0
