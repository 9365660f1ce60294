"""Calibrated drift alarms: a column drifted only when the new week moved further from its reference than past
weeks moved from theirs.

Evidently's default thresholds (a p-value of 0.05, a distance of 0.1) are fixed numbers: on real weekly data
they flag 4-5 of 11 flight features and 5 of 9 hourly-traffic features in ordinary weeks, since every week
differs from the last by more than sampling noise (weather, holidays, seasons). Here each column's statistic is
compared with its own week-to-week variation, learned from the landed history:

- statistic: Wasserstein distance normed by the reference's standard deviation (numeric), Jensen-Shannon distance
  between category shares (categorical) - Evidently's large-data statistics, meaningful at any size;
- test: the new week against its reference, the `window` weeks that end `gap` weeks before it (the training
  window: gap 0 in the weekly flow; the champion's window, older, in the drift monitor);
- null: the same statistic for each past week h of the history against the `window` weeks that end `gap` weeks
  before h (rolling, built exactly like the test: a column that trends - a month, a season, a temperature - trends
  in the null too); a past week counts when it has >= MIN_ROWS rows (half the median week of a thin feed,
  `usable_weeks`) and at least half of its window has data;
- threshold: the upper prediction bound for one more week from those K values on the Wilson-Hilferty scale
  x^(2/3) (normal fit, Student t with K - 1 degrees of freedom; see `bound`), at level 1 - alpha / m
  (Bonferroni over the m columns tested together: features, target, predictions, the model's errors), so an
  ordinary week raises an alarm on any column in about alpha of weeks; a column drifts when it moved beyond that
  bound and at least MIN_SHIFT (0.1), so an unusual but immaterial change raises none;
- the model's errors (a joint check: each shift a single column cannot see - a target moved within its weekly
  swings, an hour moved on hourly data, two categories of similar size swapped - changes how well the model
  predicts): residuals y - prediction (regression) or per-row log loss (classification) of the new week against
  those of the past weeks the model was not trained on (older than its window). Two statistics, both in units of
  the pooled mean absolute residual: the bias |median residual| and the size, mean |residual| (one-sided: a
  model predicts the week right after its window at least as well as weeks further away, so only larger
  errors count); null: each out-of-sample week against the pool of the others (leave one out); the same bound,
  two more columns of the family (see `ResidualNull`).

The alarm says the data moved in a way that reaches the model, or moved as no week has: the target, the model's
predictions or its errors moved beyond their week-to-week variation, or a feature went FAR times beyond its bound
or emptied. A feature that drifts less while all three stay put (a rainy or foggy week, a pollution episode in one
column, a station off line for a day) is reported by name and raises no alarm: on the closed loop's ordinary
weeks such drifts were all of Beijing's alarms and half of the flights' (`bench_loop.py`). Where no model is asked
(the drift monitor's summary has no predictions or errors), any drifted column is the alarm.

Pure: numpy/pandas here, scipy imported where used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MIN_NULL_WEEKS = 3  # fewer past weeks than this: no week-to-week variation to learn from (threshold None)
MIN_ROWS = 20  # a past week with fewer rows is too small to be part of the null ...
MIN_THIN_ROWS = 4  # ... unless the feed's weeks are small: then half its median week, and at least this


def usable_weeks(ids: np.ndarray, sizes: np.ndarray) -> list[int]:
    """The weeks (of `ids`, with `sizes` rows) large enough to be part of a null: MIN_ROWS rows, or for a thin
    feed (a row a day: 7 a week) half its median week. A week of a daily feed is as noisy as the new week it is
    the null for; with MIN_ROWS alone such a feed never had a null, so its columns never alarmed."""
    if not len(sizes):
        return []
    floor = min(MIN_ROWS, max(MIN_THIN_ROWS, math.ceil(float(np.median(sizes)) / 2)))
    return [int(h) for h, n in zip(ids, sizes, strict=True) if n >= floor]
# a column drifts only when it also moved this far (normed Wasserstein, Jensen-Shannon: Evidently's own distance
# threshold): beyond its week-to-week bound but by less is unusual yet immaterial (a weekday's share in a week
# with a gap, 0.04; a station's share, 0.04; flights' distance, 0.044 against a bound of 0.034)
MIN_SHIFT = 0.1
# a feature alone raises the alarm at this many times its bound: a unit change, a recoded category or an hour in
# another zone lands 11-12x beyond it on flights (distance x1.6, carrier, hour + 5), where the ordinary weeks of
# the loop reach 3.1x (flights' rain and fog), 2.3x (bike sharing's weekdays in a week with gaps, Beijing's station
# shares) and 1.0-1.5x otherwise; Beijing's RAIN, nearly always 0, goes 23-115x past it in a rainy week
FAR = 5.0
METHOD = ("rolling weekly null: each past week vs the window before it; normed Wasserstein (numeric) / "
          "Jensen-Shannon (categorical); prediction bound on the x^(2/3) scale, Bonferroni over the columns")
STATISTIC = {"numerical": "wasserstein_normed", "categorical": "jensenshannon",
             "residual_bias": "|median residual| / pooled out-of-sample mean |residual|",
             "residual_size": "mean |residual| / pooled out-of-sample mean |residual|"}
RESIDUAL = "residual"
RESIDUAL_STATS = ("bias", "size")


@dataclass(frozen=True)
class ColumnFlag:
    column: str
    kind: str  # numerical | categorical
    statistic: float  # the new week against its reference
    threshold: float | None  # None: fewer than MIN_NULL_WEEKS past weeks to calibrate on
    null: tuple[float, ...]  # each past week against its own reference
    drifted: bool

    def to_dict(self) -> dict:
        finite = math.isfinite(self.statistic)
        return {"kind": self.kind, "method": STATISTIC[self.kind],
                "statistic": self.statistic if finite else None, "threshold": self.threshold,
                "ratio": (self.statistic / self.threshold if finite else None) if self.threshold else None,
                "null_median": float(np.median(self.null)) if self.null else None,
                "null_max": float(max(self.null)) if self.null else None, "null_weeks": len(self.null),
                "drifted": self.drifted}


@dataclass(frozen=True)
class WeeklyNull:
    """What an ordinary week looks like, per column: learned once, then applied to the new week (or variants)."""

    kinds: dict[str, str]  # column -> numerical | categorical, in test order
    reference: pd.DataFrame = field(repr=False)  # rows of the test's reference window
    null: dict[str, tuple[float, ...]]
    null_weeks: tuple[int, ...]  # past weeks that formed the null (relative: -1 = the week before the new one)
    reference_weeks: tuple[int, ...]  # weeks of the test's reference window that had rows
    window: int
    gap: int
    alpha: float
    residual: ResidualNull | None = None  # the model's errors on out-of-sample weeks: one more column when set
    # columns that hold one value through most weeks (a season, a month, a year, a holiday flag): their change is a
    # step the calendar takes, not drift; `alarm_summary` reports a feature among them but never alarms on it
    steps: frozenset = frozenset()

    @property
    def columns_tested(self) -> int:
        return len(self.kinds) + (len(RESIDUAL_STATS) if self.residual is not None else 0)

    @property
    def level(self) -> float:
        """Per-column level: the family-wise alpha split over the columns tested together."""
        return self.alpha / max(self.columns_tested, 1)

    def thresholds(self) -> dict[str, float | None]:
        return {c: bound(v, self.level) if len(v) >= MIN_NULL_WEEKS else None for c, v in self.null.items()}

    def flags(self, current: pd.DataFrame) -> dict[str, ColumnFlag]:
        """Each column of the new week: statistic vs its reference, the calibrated threshold, the verdict.

        A column with no values on one side is maximal drift (infinite statistic), calibrated or not."""
        out = {}
        for c, threshold in self.thresholds().items():
            kind = self.kinds[c]
            stat = statistic(self.reference[c], current[c], kind)
            drifted = bool(stat > max(threshold, MIN_SHIFT)) if threshold is not None else bool(math.isinf(stat))
            out[c] = ColumnFlag(c, kind, stat, threshold, self.null[c], drifted)
        return out

    def residual_flags(self, residuals: np.ndarray) -> dict[str, ColumnFlag]:
        """The new week's errors against the out-of-sample weeks', bias and size (see ResidualNull). Without an
        out-of-sample week there is nothing to compare with (no flag); a week without residuals against some is
        maximal drift."""
        r = self.residual
        if r is None:
            raise ValueError("no residual null: learn_null was given no residuals")
        out = {}
        for name in RESIDUAL_STATS:
            null = r.null[name]
            stat = r.statistic(residuals)[name] if r.pooled.size else math.nan
            threshold = bound(null, self.level) if len(null) >= MIN_NULL_WEEKS else None
            drifted = bool(stat > threshold) if threshold is not None else bool(math.isinf(stat))
            out[name] = ColumnFlag(f"{RESIDUAL}_{name}", f"residual_{name}", stat, threshold, null, drifted)
        return out

    def describe(self) -> dict:
        return {"alpha": self.alpha, "level_per_column": self.level, "columns_tested": self.columns_tested,
                "method": METHOD, "window_weeks": self.window, "gap_weeks": self.gap,
                "reference_weeks": len(self.reference_weeks), "reference_rows": int(len(self.reference)),
                "null_weeks": len(self.null_weeks)}


@dataclass(frozen=True)
class ResidualNull:
    """How the model's errors vary from one week it was not trained on to the next.

    `pooled`: the residuals of the out-of-sample weeks together; `null`: per statistic (bias, size), each of
    those weeks against the pool of the others (leave one out), as the new week is against the whole pool."""

    pooled: np.ndarray = field(repr=False)
    null: dict[str, tuple[float, ...]]
    weeks: tuple[int, ...]  # the out-of-sample weeks (relative to the new week)

    def statistic(self, residuals: np.ndarray) -> dict[str, float]:
        r = np.asarray(residuals, dtype=np.float64)
        return _residual_stats(self.pooled, r[np.isfinite(r)])

    def describe(self, residuals: np.ndarray) -> dict:
        """Bias and size of the errors, new week vs the pool: median residual, mean absolute residual."""
        r = np.asarray(residuals, dtype=np.float64)
        r = r[np.isfinite(r)]

        def num(x: np.ndarray, f) -> float | None:
            return float(f(x)) if x.size else None

        return {"median": num(r, np.median), "mean_abs": num(r, lambda x: np.abs(x).mean()),
                "null_median_residual": num(self.pooled, np.median),
                "null_mean_abs": num(self.pooled, lambda x: np.abs(x).mean()), "rows": int(r.size),
                "null_rows": int(self.pooled.size)}


def learn_residual_null(residuals: np.ndarray, weeks: np.ndarray, *, before: int,
                        max_weeks: int | None = None) -> ResidualNull:
    """The residual null from the weeks < `before` (relative, see weeks_of) with enough finite residuals
    (`usable_weeks`): the weeks the model was not trained on (with `max_weeks`, only the latest that many)."""
    r, weeks = np.asarray(residuals, dtype=np.float64), np.asarray(weeks, dtype=np.int64)
    if len(r) != len(weeks):
        raise ValueError(f"{len(weeks)} week labels for {len(r)} residuals")
    ok = np.isfinite(r) & (weeks < before)
    ids, sizes = np.unique(weeks[ok], return_counts=True)
    use = usable_weeks(ids, sizes)
    if max_weeks is not None:
        use = use[-max_weeks:] if max_weeks > 0 else []
    keep = ok & np.isin(weeks, use)
    pooled, wk = r[keep], weeks[keep]
    stats = [_residual_stats(pooled[wk != h], pooled[wk == h]) for h in use] if len(use) > 1 else []
    null = {n: tuple(float(x[n]) for x in stats if math.isfinite(x[n])) for n in RESIDUAL_STATS}
    return ResidualNull(pooled, null, tuple(use))


def _residual_stats(pool: np.ndarray, week: np.ndarray) -> dict[str, float]:
    """Bias |median| and size mean |r| of a week's residuals, in units of the pool's mean |residual|."""
    if week.size == 0:
        return dict.fromkeys(RESIDUAL_STATS, math.inf)
    unit = max(float(np.abs(pool).mean()) if pool.size else 0.0, 1e-9)
    return {"bias": abs(float(np.median(week))) / unit, "size": float(np.abs(week).mean()) / unit}


def learn_null(history: pd.DataFrame, weeks: np.ndarray, kinds: dict[str, str], *, window: int, gap: int = 0,
               alpha: float = 0.05, max_weeks: int | None = None, residuals: np.ndarray | None = None,
               residual_before: int | None = None) -> WeeklyNull:
    """The null of every column from the landed history.

    `weeks` labels each history row with its week relative to the new week (-1 = the week before, see weeks_of);
    rows of week >= 0 are ignored. The test's reference is weeks -gap-window .. -gap-1; every earlier or equal
    past week h with its own reference (h-gap-window .. h-gap-1) at least half present forms the null; with
    `max_weeks`, only the latest that many of them (pass history back to -max_weeks-gap-window).

    `residuals` (one per history row, NaN where unknown): the model's errors; the weeks before `residual_before`
    (default: before the test's reference window, -gap-window) are taken as out of sample for the model and form
    its residual null (at most `max_weeks` of them), one more column of the family."""
    if window < 1 or gap < 0:
        raise ValueError(f"window must be >= 1 and gap >= 0 (got window={window}, gap={gap})")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    weeks = np.asarray(weeks, dtype=np.int64)
    if len(weeks) != len(history):
        raise ValueError(f"{len(weeks)} week labels for {len(history)} history rows")
    ids, sizes = np.unique(weeks[weeks < 0], return_counts=True)
    present = set(ids[sizes > 0].tolist())
    usable = usable_weeks(ids, sizes)

    def ref_weeks(h: int) -> list[int]:
        return [k for k in range(h - gap - window, h - gap) if k in present]

    need = math.ceil(window / 2)
    null_weeks = [h for h in usable if h < -gap and len(ref_weeks(h)) >= need]
    if max_weeks is not None:
        null_weeks = null_weeks[-max_weeks:] if max_weeks > 0 else []
    test_ref = ref_weeks(0)
    reference = history[np.isin(weeks, test_ref)].reset_index(drop=True)
    null = {c: _null(history[c], weeks, null_weeks, ref_weeks, kind) for c, kind in kinds.items()}
    steps = frozenset(c for c in kinds if _steps(history[c], weeks, null_weeks))
    residual = None
    if residuals is not None:
        residual = learn_residual_null(residuals, weeks, max_weeks=max_weeks,
                                       before=-gap - window if residual_before is None else residual_before)
    return WeeklyNull(dict(kinds), reference, null, tuple(null_weeks), tuple(test_ref), window, gap, alpha,
                      residual, steps)


STEP_SHARE = 2 / 3  # a step column holds one value through at least this share of the null weeks


def _steps(col: pd.Series, weeks: np.ndarray, null_weeks: list[int]) -> bool:
    """Whether the column steps rather than varies: at most two values within every null week and one value
    through most of them (STEP_SHARE). A season, a month or a holiday flag does (a week at a boundary holds two);
    a measured column, a weekday or an hour of day does not, nor anything in daily data that varies day to day.
    Its weekly distribution moves at each step by as much as the calendar says, which no week-to-week null of a
    few months can calibrate (bike sharing's `season` at each solstice: 3.7 times its bound)."""
    if len(null_weeks) < MIN_NULL_WEEKS:
        return False
    keep = np.isin(weeks, null_weeks) & col.notna().to_numpy()
    counts = pd.Series(col.to_numpy()[keep]).groupby(weeks[keep]).nunique()
    return bool(len(counts) and counts.max() <= 2 and (counts == 1).mean() >= STEP_SHARE)


def _null(col: pd.Series, weeks: np.ndarray, null_weeks: list[int], ref_weeks, kind: str) -> tuple[float, ...]:
    """The statistic of each null week against its own reference window (non-finite values dropped)."""
    if kind == "numerical":
        out = _numeric_null(_numeric(col), weeks, null_weeks, ref_weeks)
    else:
        codes, _ = pd.factorize(col.astype(str).where(col.notna()), use_na_sentinel=True)
        keep = codes >= 0
        table = pd.crosstab(weeks[keep], codes[keep])  # counts: week x category
        out = []
        for h in null_weeks:
            rows = [k for k in ref_weeks(h) if k in table.index]
            cur = table.loc[h].to_numpy(dtype=float) if h in table.index else np.zeros(table.shape[1])
            out.append(_js(table.loc[rows].to_numpy(dtype=float).sum(axis=0), cur))
    return tuple(float(x) for x in out if math.isfinite(x))


def _numeric_null(v: np.ndarray, weeks: np.ndarray, null_weeks: list[int], ref_weeks) -> list[float]:
    """Normed Wasserstein of each null week against its reference, from per-week counts of each distinct value.

    Equal to scipy's wasserstein_distance / std on the same rows (both CDFs are step functions on the distinct
    values), without sorting a window's rows once per week: counts of a window are sums of weekly counts."""
    ok = np.isfinite(v)
    v, weeks = v[ok], weeks[ok]
    if v.size == 0:
        return []
    values, code = np.unique(v, return_inverse=True)
    ids, row_week = np.unique(weeks, return_inverse=True)
    pos = {int(w): i for i, w in enumerate(ids)}
    counts = np.bincount(row_week * values.size + code, minlength=ids.size * values.size)
    counts = counts.reshape(ids.size, values.size).astype(np.float64)
    steps = np.diff(values)
    out = []
    for h in null_weeks:
        rows = [pos[k] for k in ref_weeks(h) if k in pos]
        ref = counts[rows].sum(axis=0)
        cur = counts[pos[h]] if h in pos else np.zeros(values.size)
        n_ref, n_cur = ref.sum(), cur.sum()
        if n_ref == 0 or n_cur == 0:
            out.append(math.inf)
            continue
        gap = np.abs(np.cumsum(ref)[:-1] / n_ref - np.cumsum(cur)[:-1] / n_cur)
        mean = float(ref @ values) / n_ref
        sd = math.sqrt(max(float(ref @ (values - mean) ** 2) / n_ref, 0.0))
        out.append(float(gap @ steps) / max(sd, 1e-3))
    return out


def statistic(reference: pd.Series, current: pd.Series, kind: str) -> float:
    """Wasserstein distance normed by the reference's standard deviation (numeric), or the Jensen-Shannon
    distance between category shares (categorical); NaN/inf ignored. A side without values is maximal drift."""
    if kind == "numerical":
        ref, cur = _numeric(reference), _numeric(current)
        return _wasserstein(ref[np.isfinite(ref)], cur[np.isfinite(cur)])
    ref, cur = reference.dropna().astype(str), current.dropna().astype(str)
    if ref.empty or cur.empty:
        return math.inf
    keys = sorted(set(ref.unique()) | set(cur.unique()))
    p = ref.value_counts().reindex(keys, fill_value=0).to_numpy(dtype=float)
    q = cur.value_counts().reindex(keys, fill_value=0).to_numpy(dtype=float)
    return _js(p, q)


def _numeric(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


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


def bound(null: tuple[float, ...], level: float) -> float:
    """Upper (1 - level) prediction bound for one more value from the K values of `null` (Student t, K - 1 df),
    fitted on the Wilson-Hilferty scale x^(2/3).

    Both statistics behave like the root of a chi-square: a normed Wasserstein distance is about |mean shift| +
    noise (a folded normal), a Jensen-Shannon distance is the root of a divergence that is about chi-square / 2n.
    The cube root of a chi-square, x^(2/3) here, is close to normal (Wilson-Hilferty 1931). On the log scale the
    weeks that barely moved stretch the fit: for a folded normal its bound at level 0.004 lies 4-5x above the
    true quantile, at this scale within 20 %."""
    from scipy.stats import t

    z = np.asarray(null, dtype=np.float64) ** (2 / 3)
    k = z.size
    sd = float(z.std(ddof=1)) if k > 1 else 0.0
    return float((z.mean() + t.ppf(1 - level, max(k - 1, 1)) * sd * math.sqrt(1 + 1 / k)) ** 1.5)


def weeks_of(times: pd.Series, week_start: pd.Timestamp) -> np.ndarray:
    """Week number of each row relative to the new week that starts at `week_start` (-1 = the week before)."""
    return np.floor((times - week_start) / pd.Timedelta(days=7)).astype(int).to_numpy()


def alarm_summary(null: WeeklyNull, current: pd.DataFrame, features: list[str], *, target: str | None = None,
                  prediction: str | None = None, evidently: dict | None = None,
                  residuals: np.ndarray | None = None) -> dict:
    """The drift summary the decision reads, calibrated: per feature, target and prediction the statistic, its
    week-to-week threshold and the verdict; `alarm` = any of them drifted (family-wise rate `alpha`).

    `residuals`: the model's errors on the new week's rows (required when the null has a residual null): under
    `residual` the same keys as the target's plus the errors' median and mean absolute size, new week vs pool.

    `evidently`: drift_summary() verdicts of the same columns (Evidently's fixed thresholds), kept per column as
    `evidently_drifted` / `evidently` and in total under `evidently`, for people."""
    flags = null.flags(current)
    ev_cols = (evidently or {}).get("columns", {})

    def entry(c: str) -> dict:
        out = flags[c].to_dict()
        if c in ev_cols:
            ev = ev_cols[c]
            out["evidently_drifted"] = bool(ev["drifted"])
            out["evidently"] = {k: ev.get(k) for k in ("method", "statistic", "p_value", "threshold")}
        return out

    columns = {c: entry(c) for c in features}
    for c in null.steps & set(features):  # a step of the calendar, reported, not alarmed on
        columns[c].update(drifted=False, steps=True)
    drifted = [c for c in features if columns[c]["drifted"]]
    summary = {"columns": columns, "n_columns": len(features), "n_drifted": len(drifted),
               "share_drifted": len(drifted) / len(features) if features else 0.0, "drifted": drifted}
    for role, c in (("target", target), ("prediction", prediction)):
        if c is not None:
            summary[role] = {"column": c, **entry(c)}
    if null.residual is not None:
        if residuals is None:
            raise ValueError("the null has a residual column: pass the new week's residuals")
        rflags = {k: f.to_dict() for k, f in null.residual_flags(residuals).items()}
        # the headline numbers: the statistic furthest beyond (or closest to) its bound
        head = max(rflags, key=lambda k: rflags[k]["ratio"] if rflags[k]["ratio"] is not None else -math.inf)
        summary[RESIDUAL] = {"column": RESIDUAL, "by": head, **rflags[head],
                             "drifted": any(f["drifted"] for f in rflags.values()), **rflags,
                             "out_of_sample_weeks": len(null.residual.weeks), **null.residual.describe(residuals)}
    # the alarm: the model is affected (target, predictions, errors) or a feature moved as no week has; any drifted
    # feature where no model is asked
    model_asked = prediction is not None or null.residual is not None
    reached = [r for r in ("target", "prediction", RESIDUAL) if summary.get(r, {}).get("drifted", False)]
    far = [c for c in drifted if columns[c]["ratio"] is None or columns[c]["ratio"] >= FAR]
    summary["alarmed"] = [*reached, *far] if model_asked else [*reached, *drifted]
    summary["alarm"] = bool(summary["alarmed"])
    summary["calibration"] = null.describe()
    summary["reference_rows"], summary["current_rows"] = int(len(null.reference)), int(len(current))
    if evidently is not None:
        ev_features = [c for c in features if c in ev_cols]
        n_ev = sum(ev_cols[c]["drifted"] for c in ev_features)
        summary["evidently"] = {"n_drifted": int(n_ev), "n_columns": len(ev_features),
                                "share_drifted": n_ev / len(ev_features) if ev_features else 0.0,
                                "dataset_drift": evidently.get("dataset_drift"),
                                "drift_share": evidently.get("drift_share"),
                                "drifted": [c for c in ev_features if ev_cols[c]["drifted"]]}
    return summary


def describe_alarm(summary: dict) -> str:
    """One line in words: which features drifted, whether the target and predictions shifted, with the numbers."""
    def shift(c: str, e: dict) -> str:
        if e.get("statistic") is None:
            return f"{c} (no values on one side)"
        if e.get("threshold") is None:
            return f"{c} {e['statistic']:.3g} (no week-to-week bound yet)"
        return f"{c} {e['statistic']:.3g} vs week-to-week bound {e['threshold']:.3g}"

    feats = [shift(c, summary["columns"][c]) for c in summary["drifted"]]
    parts = [f"{summary['n_drifted']} of {summary['n_columns']} features drifted"
             + (f" ({'; '.join(feats)})" if feats else "")]
    for role in ("target", "prediction"):
        e = summary.get(role)
        if e is not None:
            word = "target" if role == "target" else "predictions"
            parts.append(f"{word} shifted: {shift(e['column'], e)}" if e["drifted"] else f"{word} stable")
    e = summary.get(RESIDUAL)
    if e is not None:
        if e["drifted"]:
            sizes = (f"; median error {e['median']:.3g} vs {e['null_median_residual']:.3g}, mean absolute error "
                     f"{e['mean_abs']:.3g} vs {e['null_mean_abs']:.3g} on {e['out_of_sample_weeks']} weeks it was "
                     "not trained on" if e.get("median") is not None and e.get("null_mean_abs") is not None else "")
            why = [shift(f"{k} of the errors", e[k]) for k in RESIDUAL_STATS if e[k]["drifted"]]
            parts.append(f"the model's errors shifted: {'; '.join(why)}{sizes}")
        else:
            parts.append("the model's errors stable")
    cal = summary["calibration"]
    head = ("drift alarm" if summary["alarm"] else
            "no drift alarm (features drifted, the model did not)" if summary["drifted"] else "no drift alarm")
    return (f"{head}: {'; '.join(parts)} (calibrated on {cal['null_weeks']} past weeks, family-wise alpha "
            f"{cal['alpha']:g})")


def any_drift(summary: dict) -> bool:
    """Any column of an `alarm_summary` drifted, whether or not it raised the alarm: a feature, the target, the
    predictions or the model's errors (a reason to retrain)."""
    return bool(summary["alarm"] or summary["drifted"])


def retrain_rule(summary: dict, retrain_share: float | None) -> tuple[bool, str]:
    """The drift monitor's rule on an `alarm_summary`: retrain or not, and the rule in words. `retrain_share`
    (drift.retrain_share) None: on any calibrated alarm or drifted feature (drift is a reason to retrain); a share:
    when the target or at least that share of the features drifted."""
    if retrain_share is None:
        return any_drift(summary), "any calibrated drift"
    should = summary["target"]["drifted"] or summary["share_drifted"] >= retrain_share
    return bool(should), f"target drifted or >= {retrain_share:.0%} of features drifted (calibrated)"
