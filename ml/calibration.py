"""Calibrated drift flags: a column drifted only when the new week moved further from the reference than the
reference weeks move from each other.

Evidently's default thresholds (a p-value of 0.05, a distance of 0.1) are fixed numbers: on real weekly data
they flag 4-5 of 11 flight features and 5 of 9 hourly-traffic features in ordinary weeks, since every week
differs from the last by more than sampling noise (weather, holidays, seasons). Here each column's statistic is
compared with its own week-to-week variation, learned from the reference window itself:

- statistic: Wasserstein distance normed by the reference's standard deviation (numeric), Jensen-Shannon distance
  between category shares (categorical) - Evidently's large-data statistics, meaningful at any size;
- null: each reference week against the other reference weeks (leave one week out), K values per column;
- threshold: the upper prediction bound for one more week under a log-normal fit of those K values, at level
  1 - alpha / m (Bonferroni over the m columns tested together), so an ordinary week raises an alarm in about
  alpha of weeks, whatever the number of columns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

MIN_WEEKS = 3  # fewer reference weeks than this: no week-to-week variation to learn from
MIN_ROWS = 20  # a reference week with fewer rows is too small to be part of the null
FLOOR = 1e-4  # statistics are floored here before taking logs (a column constant across weeks)


@dataclass(frozen=True)
class ColumnFlag:
    column: str
    kind: str  # numerical | categorical
    statistic: float  # the new week against the whole reference
    threshold: float | None  # None: too few reference weeks to calibrate
    null: tuple[float, ...]  # each reference week against the others
    drifted: bool

    def to_dict(self) -> dict:
        return {"kind": self.kind, "statistic": self.statistic, "threshold": self.threshold,
                "null_median": float(np.median(self.null)) if self.null else None, "drifted": self.drifted,
                "ratio": self.statistic / self.threshold if self.threshold else None}


def statistic(reference: pd.Series, current: pd.Series, kind: str) -> float:
    """Wasserstein distance normed by the reference's standard deviation (numeric), or the Jensen-Shannon
    distance between category shares (categorical); NaN/inf ignored. A side without values is maximal drift."""
    if kind == "numerical":
        return _wasserstein(_finite(reference), _finite(current))
    ref, cur = reference.dropna().astype(str), current.dropna().astype(str)
    if ref.empty or cur.empty:
        return math.inf
    keys = sorted(set(ref.unique()) | set(cur.unique()))
    p = ref.value_counts().reindex(keys, fill_value=0).to_numpy(dtype=float)
    q = cur.value_counts().reindex(keys, fill_value=0).to_numpy(dtype=float)
    return _js(p, q)


def _wasserstein(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance

    if ref.size == 0 or cur.size == 0:
        return math.inf
    return float(wasserstein_distance(ref, cur) / max(float(np.std(ref)), 1e-3))


def _js(p: np.ndarray, q: np.ndarray) -> float:
    from scipy.spatial import distance

    if p.sum() == 0 or q.sum() == 0:
        return math.inf
    return float(distance.jensenshannon(p / p.sum(), q / q.sum()))


def _finite(s: pd.Series) -> np.ndarray:
    v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return v[np.isfinite(v)]


def calibrated_flags(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                     weeks: np.ndarray, *, alpha: float = 0.05, tested: int | None = None) -> dict[str, ColumnFlag]:
    """Per column: the new week's statistic, its calibrated threshold and the verdict.

    `weeks` labels each reference row with its week; `tested` is the number of columns tested together for the
    Bonferroni correction (default: these columns)."""
    columns = [*numeric, *categorical]
    m = tested or len(columns)
    weeks = np.asarray(weeks)
    ids, sizes = np.unique(weeks, return_counts=True)
    usable = ids[sizes >= MIN_ROWS]
    out = {}
    for c in columns:
        kind = "numerical" if c in numeric else "categorical"
        stat = statistic(reference[c], current[c], kind)
        null = _null(reference[c], weeks, usable, kind) if len(usable) >= MIN_WEEKS else ()
        threshold = bound(null, alpha / max(m, 1)) if len(null) >= MIN_WEEKS else None
        drifted = bool(stat > threshold) if threshold is not None else bool(math.isinf(stat))
        out[c] = ColumnFlag(c, kind, stat, threshold, null, drifted)
    return out


def _null(col: pd.Series, weeks: np.ndarray, usable: np.ndarray, kind: str) -> tuple[float, ...]:
    """The statistic of each usable reference week against the other reference weeks."""
    if kind == "numerical":
        v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(v)
        out = [_wasserstein(v[ok & (weeks != w)], v[ok & (weeks == w)]) for w in usable]
    else:
        codes, _ = pd.factorize(col.astype(str).where(col.notna()), use_na_sentinel=True)
        keep = codes >= 0
        table = pd.crosstab(weeks[keep], codes[keep]).reindex(usable, fill_value=0).to_numpy(dtype=float)
        total = table.sum(axis=0)
        out = [_js(total - row, row) for row in table]
    return tuple(x for x in out if math.isfinite(x))


def bound(null: tuple[float, ...], level: float) -> float:
    """Upper (1 - level) prediction bound for one more value, log-normal fit of `null` (Student t, K - 1 df)."""
    from scipy.stats import t

    logs = np.log(np.maximum(np.asarray(null, dtype=np.float64), FLOOR))
    k = logs.size
    sd = float(logs.std(ddof=1)) if k > 1 else 0.0
    return float(np.exp(logs.mean() + t.ppf(1 - level, k - 1) * sd * math.sqrt(1 + 1 / k)))


def weeks_of(times: pd.Series, week_start: pd.Timestamp) -> np.ndarray:
    """Week number of each reference row relative to the new week (-1 = the week before)."""
    return np.floor((times - week_start) / pd.Timedelta(days=7)).astype(int).to_numpy()
