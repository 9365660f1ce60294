"""Joint checks: shifts in how the columns relate, which no per-column marginal sees.

- relations: each numeric feature predicted from the other numeric features, a numeric target and the local hour
  of day and day of week of the time column, by a linear fit on the reference (the weeks before); per feature the
  statistic is how much worse the new week is predicted than held-out reference rows (log ratio of mean absolute
  errors). A time feature moved by hours no longer matches the time column; a feature in other units, or a
  redefined target, no longer matches the others. Ordinary weeks predict a little worse than their reference too,
  so each feature's threshold comes from the same statistic on past weeks, each against its own reference (a
  Student-t prediction bound, Bonferroni over the checks, as for the per-column alarms), and at least a doubling
  of the error (MATERIAL). Two designs were tried first on real weeks and dropped: a classifier telling the week
  from its reference separates every ordinary flights week (2·AUC−1 0.6-0.9: weather and calendar differ week to
  week); regression trees cannot extrapolate, so a season moving out of the reference's range (bike sharing's
  temperatures) looked like a broken relation in a quarter of ordinary weeks;
- the target: the same statistic for a numeric target predicted from the features (a redefinition from a date
  on: other units, another way of counting), with a lower floor than a feature's; it warns (someone should ask
  upstream) and never holds the week;
- duplicates: the share of the week's rows repeated exactly (a frozen feed, a delivery sent twice), against the
  same share on past weeks.

Pure: numpy/pandas (scipy for the bound).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from ml.calibration import bound

ROWS = 3000  # rows sampled from the week (and 1.5x from its reference): each fit well under a second
MIN_NULL_WEEKS = 6  # past weeks a joint check needs before it judges (the statistics are noisier than a marginal's)
# a relation is broken only when a feature is predicted at least 2.5 times as badly as before: on real weeks a
# time shift of 5 hours shows as x4.9 or more (flights), a unit change as x580 or more (bike sharing's scaled
# temperatures), x0.9-4 (flights' departure delays) and x1.5-800 (Beijing's PM10), while ordinary weeks reach
# x2.3 (flights' hour), x2.7 (bike sharing) and x2-3 in 2-5 % of Beijing's weeks (pollution episodes: the errors
# grow with the level). A doubling held 6 % of Beijing's ordinary weeks, a tripling let 95 % of flights' unit
# changes train (held 4 %, 33 %); 2.5 holds 4 % of Beijing's ordinary weeks and 1/3 of flights' unit changes
MATERIAL = math.log(2.5)
# ... and the target's when it is predicted 25 % worse: the features predict it far less exactly than an hour
# follows from the time, so a redefinition (x1.5) shows as x1.2-1.9 (ordinary weeks: x0.9-1.2 on flights, up to
# x1.5 on bike sharing and x3.5 on Beijing). The target check warns and never holds: a redefinition that lasts is
# the new truth, which the refit learns soonest, and a hold would keep the model of the old definition serving
TARGET_MATERIAL = math.log(1.25)
MIN_VALUES = 10  # distinct values a numeric feature needs in the reference to be predicted
MIN_SKILL = 0.2  # a relation is checked where the others predict the feature at least 20 % better than its median
SCALE = 0.25  # errors are compared beyond this share of the feature's standard deviation


def design(frame: pd.DataFrame, columns: list[str], time_column: str, timezone: str = "UTC") -> pd.DataFrame:
    """Numbers for the relation models: the numeric `columns` as floats, and the hour of day and day of week of the
    time column in the source's `timezone` (a local hour feature follows it across a DST change), one-hot."""
    out = {c: pd.to_numeric(frame[c], errors="coerce").astype(float).to_numpy() for c in columns}
    t = frame[time_column].dt.tz_convert(timezone)
    hour, day = t.dt.hour.to_numpy(), t.dt.dayofweek.to_numpy()
    # one column per hour and per weekday: an hour feature in another zone than the time's maps hour to hour
    # (a linear fit on the hour as a number would break at midnight)
    out.update({f"_hour_{h}": (hour == h).astype(float) for h in range(24)})
    out.update({f"_weekday_{d}": (day == d).astype(float) for d in range(7)})
    return pd.DataFrame(out)


def relations(reference: pd.DataFrame, batch: pd.DataFrame, predicted: list[str], inputs: list[str],
              time_column: str, *, timezone: str = "UTC", rows: int = ROWS, seed: int = 0) -> dict[str, float]:
    """How well each of the `predicted` numeric features (those with at least MIN_VALUES distinct values in the
    reference) is still predicted from the other numeric `inputs` and the local hour and weekday of the time: a
    least-squares fit per feature on two thirds of the reference (missing inputs at the reference median), scored
    on the last third and on the new week. Features the others predict hardly better than their median (errors
    above 1 - MIN_SKILL of the median's: rain, visibility) have no relation to check and are left out. Linear, so
    a relation that holds (an hour feature and the time, a temperature and its felt temperature, two delays)
    extrapolates to a week outside the reference's range, as a season moves on, instead of failing there. Per
    feature: log of the new week's mean absolute error over the held-out reference's, each plus SCALE standard
    deviations of the feature (0: the relation holds as before)."""
    rng = np.random.default_rng(seed)
    ref = reference.iloc[rng.permutation(len(reference))[: rows * 3 // 2]]
    cur = batch.iloc[rng.permutation(len(batch))[:rows]]
    xr, xc = design(ref, inputs, time_column, timezone), design(cur, inputs, time_column, timezone)
    usable = [c for c in xr.columns if xr[c].notna().mean() > 0.5 and np.nanstd(xr[c]) > 0]
    med, sd = xr[usable].median(), xr[usable].std()
    zr, zc = (((x[usable] - med) / sd).fillna(0.0) for x in (xr, xc))
    cut = len(zr) * 2 // 3
    out = {}
    from threadpoolctl import threadpool_limits

    # small solves: BLAS threads cost up to 10x more than they save beside another busy process (2 cores)
    with threadpool_limits(limits=1, user_api="blas"):
        for c in [c for c in predicted if c in usable and xr[c].nunique() >= MIN_VALUES]:
            v = _relation(c, usable, xr, xc, zr, zc, sd, cut)
            if v is not None:
                out[c] = v
    return out


def _relation(c: str, usable: list[str], xr: pd.DataFrame, xc: pd.DataFrame, zr: pd.DataFrame, zc: pd.DataFrame,
              sd: pd.Series, cut: int) -> float | None:
    """`relations` for one feature `c`: the log error ratio, or None when it cannot be judged or has no relation."""
    others = [k for k in usable if k != c]
    fit, held, new = (xr[c].iloc[:cut].notna(), xr[c].iloc[cut:].notna(), xc[c].notna())
    if fit.sum() < 50 or held.sum() < 20 or new.sum() < 20:
        return None
    a = np.c_[np.ones(int(fit.sum())), zr[others].iloc[:cut][fit.to_numpy()].to_numpy()]
    coef, *_ = np.linalg.lstsq(a, xr[c].iloc[:cut][fit.to_numpy()].to_numpy(), rcond=None)

    y_held = xr[c].iloc[cut:][held.to_numpy()]
    base = _abs_error(zr.iloc[cut:][held.to_numpy()][others], y_held, coef)
    if base > (1 - MIN_SKILL) * float(np.mean(np.abs(y_held - xr[c].iloc[:cut].median()))):
        return None  # the others barely predict it (rain, visibility): no relation to break
    err = _abs_error(zc[new.to_numpy()][others], xc[c][new.to_numpy()], coef)
    # the error is compared beyond a quarter of the feature's spread: a relation that holds exactly (an hour
    # from the time) is no 0 / 0, and a one-hour move of a local hour against UTC time (a daylight-saving
    # change of a source whose timezone is left at UTC) is not a doubling, where a shift of several hours is
    scale = SCALE * float(sd[c])
    return math.log((err + scale) / (base + scale))


def _abs_error(z: pd.DataFrame, y: pd.Series, coef: np.ndarray) -> float:
    return float(np.mean(np.abs(np.c_[np.ones(len(z)), z.to_numpy()] @ coef - y.to_numpy())))


def duplicate_share(batch: pd.DataFrame, columns: list[str]) -> float:
    """The share of rows that repeat another row of the week on every column given."""
    return float(batch[columns].duplicated(keep=False).mean()) if len(batch) else float("nan")


def week_statistics(reference: pd.DataFrame, batch: pd.DataFrame, source, *, seed: int = 0) -> dict[str, float]:
    """Every joint statistic of one week against its reference (`source`: the params' SourceConfig):
    `relation:<feature>` for each numeric feature (calendar columns derived from the time are inputs only),
    `target:<target>` for a numeric target (the same statistic: a target redefined upstream, as in other units or
    counted another way, no longer follows from the features), and `duplicates` (when the feed delivers a feature;
    a feed of the time and the target alone has none)."""
    s = source
    predicted = [c for c in s.numeric_features if not c.startswith("cal_")]
    numeric_target = (s.target,) if s.task == "regression" else ()
    inputs = [*s.numeric_features, *numeric_target]
    rel = relations(reference, batch, [*predicted, *numeric_target], inputs, s.time_column, timezone=s.timezone,
                    seed=seed)
    out = {f"{'target' if c in numeric_target else 'relation'}:{c}": v for c, v in rel.items()}
    delivered = [*predicted, *s.categorical_features]  # as delivered: no cal_
    if delivered:  # a feed of the time and the target alone has no row to repeat but its target
        out["duplicates"] = duplicate_share(batch, delivered)
    return out


@dataclass(frozen=True)
class JointFlag:
    check: str  # relation:<feature> | target:<target> | duplicates
    statistic: float
    threshold: float | None  # None: fewer than MIN_NULL_WEEKS past weeks to calibrate on
    null: tuple[float, ...]
    flagged: bool

    @property
    def holds(self) -> bool:
        """Flagged on a check that holds the week (a feature's relation, duplicates); the target's only warns."""
        return self.flagged and not self.check.startswith("target:")

    def to_dict(self) -> dict:
        return {**asdict(self), "holds": self.holds}


def judge(week: dict[str, float], past: list[dict[str, float]], alpha: float,
          material: float = MATERIAL, *, rows: int | None = None) -> list[JointFlag]:
    """Each of the week's statistics against the prediction bound of the same statistic on past weeks (each
    against its own reference), at level alpha / the number of checks (Bonferroni: an ordinary week is flagged by
    any of them in about alpha of weeks); a feature relation's log error ratio must also exceed `material`.
    `rows`: the week's row count, for the duplicates check of a small week (`_past_duplicates`)."""
    level = alpha / max(len(week), 1)
    flags = []
    for key, value in week.items():
        null = tuple(float(p[key]) for p in past if key in p and math.isfinite(p[key]))
        if len(null) < MIN_NULL_WEEKS or not math.isfinite(value):
            flags.append(JointFlag(key, value, None, null, False))
            continue
        # duplicates: a share, bounded as the per-column distances are, and at least twice the usual share, half
        # of the usually unique rows repeated (a feed with few distinct values repeats 17 % of its rows in an
        # ordinary bike sharing week, 40 % in its worst) and one row in a hundred (a null of weeks without a
        # repeated row is all zeros); a frozen feed or a delivery sent twice repeats every row. A relation: a log
        # ratio, about normal, of either sign
        usual = float(np.median(null))
        thr = (max(bound(null, level), 2 * usual, usual + (1 - usual) / 2, 0.01) if key == "duplicates"
               else max(_t_bound(null, level), TARGET_MATERIAL if key.startswith("target:") else material))
        flagged = _past_duplicates(value, thr, rows) if key == "duplicates" else value > thr
        flags.append(JointFlag(key, value, thr, null, flagged))
    return flags


def _past_duplicates(share: float, threshold: float, rows: int | None) -> bool:
    """A week's repeated-row share past its bound. In a week of few rows the share moves in steps of 2/rows (one
    more repeated pair): five trading days of split-adjusted prices that repeat from day to day cross a bound of 78 %
    with one more repeated pair (80 %), an ordinary week. So a small week must pass its bound by a whole pair more,
    or repeat every row (a frozen feed, a delivery sent twice); in an hourly week the step is under 1.2 points."""
    slack = 2 / rows if rows and share < 1 else 0.0
    return share > threshold + slack


def at_bounds(week: dict[str, float], flags: list[JointFlag]) -> dict[str, float]:
    """A held week's statistics as they calibrate later weeks: each flagged one at the bound it crossed (an unusual
    week still tells the calibration that weeks reach the bound, and a unit change of x800 does not widen it for
    months), the unjudged ones left out. Leaving held weeks out instead cuts the null's tail, which holds more
    ordinary weeks, which cuts it further: 18 % of Beijing's ordinary weeks held, against 6 % this way."""
    judged = {f.check: f for f in flags}
    out = {}
    for k, v in week.items():
        f = judged.get(k)
        if f is None or f.threshold is None:
            continue
        out[k] = min(v, f.threshold) if f.flagged else v
    return out


def _t_bound(null: tuple[float, ...], level: float) -> float:
    """Upper (1 - level) prediction bound for one more value from the K values of `null` (Student t, K - 1 df)."""
    from scipy.stats import t

    z = np.asarray(null, dtype=np.float64)
    k = z.size
    return float(z.mean() + t.ppf(1 - level, k - 1) * float(z.std(ddof=1)) * math.sqrt(1 + 1 / k))


def describe(flags: list[JointFlag]) -> str:
    """The flagged joint checks in words (empty when none is)."""
    out = []
    for f in flags:
        if not f.flagged:
            continue
        if f.check == "duplicates":
            out.append(f"{f.statistic:.0%} of the rows are repeated (week-to-week bound {f.threshold:.0%})")
        elif f.check.startswith("target:"):
            c = f.check.split(":", 1)[1]
            out.append(f"the target '{c}' no longer follows from the features as it did (error "
                       f"x{math.exp(f.statistic):.1f}, week-to-week bound x{math.exp(f.threshold):.1f}; redefined "
                       "upstream?)")
        else:
            c = f.check.split(":", 1)[1]
            out.append(f"'{c}' no longer follows from the other columns and the time as it did (error "
                       f"x{math.exp(f.statistic):.1f}, week-to-week bound x{math.exp(f.threshold):.1f})")
    return "; ".join(out)


NULL_WEEKS = 12  # past weeks whose own statistics calibrate a week's joint checks


def broken_features(flags) -> tuple[str, ...]:
    """The features whose relation to the others broke, when only such checks hold the week (not duplicated rows,
    which spoil the whole week): a held week can train later without them."""
    holding = [f.check for f in flags if f.holds]
    if not holding or not all(c.startswith("relation:") for c in holding):
        return ()
    return tuple(c.split(":", 1)[1] for c in holding)


def held_streak(as_of, held, has_rows) -> tuple:
    """The weeks held in a row right before `as_of` (weeks without rows skipped), oldest first."""
    out = []
    for w in sorted((x for x in has_rows if x < as_of), reverse=True):
        if w not in held:
            break
        out.append(w)
    return tuple(reversed(out))


@dataclass(frozen=True)
class JointVerdict:
    flags: tuple[JointFlag, ...]
    null_weeks: int  # past weeks the bounds were calibrated on
    reference_weeks: int  # weeks of the reference the new week was compared with
    # flagged right after these held weeks, as many as drift.joint_hold_weeks allows: the change has lasted, and
    # the week is taken as the new normal instead of held (a week is never held without end)
    lasting_since: tuple = ()

    @property
    def judged(self) -> bool:
        return any(f.threshold is not None for f in self.flags)

    @property
    def flagged(self) -> bool:
        """A check that holds the week is flagged (held, or taken as the new normal after a lasting change)."""
        return any(f.holds for f in self.flags)

    @property
    def warned(self) -> bool:
        """A check that only warns is flagged (the target no longer follows from the features)."""
        return any(f.flagged and not f.holds for f in self.flags)

    @property
    def held(self) -> bool:
        return self.flagged and not self.lasting_since

    @property
    def broken_features(self) -> tuple[str, ...]:
        return broken_features(self.flags)

    def summary(self) -> str:
        """One line: what was checked against what, and what (if anything) stands out."""
        if self.held:
            return describe(list(self.flags))
        if self.flagged:
            since = ", ".join(str(w) for w in self.lasting_since)
            return (f"flagged after {len(self.lasting_since)} held week(s) in a row ({since}): the change has lasted "
                    f"and is taken as the new normal, so this week trains (the held weeks stay held): "
                    f"{describe(list(self.flags))}")
        if self.warned:
            return f"trains, with a warning: {describe(list(self.flags))}"
        if not self.judged:
            if not self.flags:
                return "nothing to check (no numeric feature with enough values)"
            measured = max(len(f.null) for f in self.flags)  # past weeks with a value of some statistic
            small = (f" ({self.null_weeks - measured} of the {self.null_weeks} past weeks too small to measure)"
                     if measured < self.null_weeks else "")
            return f"not judged yet: {measured} past week(s) measured, {MIN_NULL_WEEKS} needed{small}"
        return (f"{len(self.flags)} check(s) against {self.reference_weeks} reference week(s), calibrated on "
                f"{self.null_weeks} past week(s): the columns relate as before")


def check_week(history: pd.DataFrame, batch: pd.DataFrame, as_of, source, train_weeks: int, alpha: float, *,
               null_weeks: int = NULL_WEEKS, not_null=frozenset(), has_rows=None, hold_weeks: int = 1) -> JointVerdict:
    """The joint checks of the week ending at `as_of` (its rows: `batch`), as bench_loop replays them: its statistics
    against its reference (the `train_weeks` newest weeks of `history` before it that have rows), judged against the
    same statistics of the up to `null_weeks` latest past weeks, each against its own reference. `history`: the accepted
    rows before the week (held weeks included: a lasting change is learned after one window); `not_null`: as_of keys of
    past weeks that were held, which calibrate at the bounds they crossed (`at_bounds`); `has_rows`: the weeks the
    source has rows for (default: those of `history`), so a window shrinks at a rejected week as training's does. Seeds
    follow the week, so a rerun of a week reaches the same verdict. A week flagged right after `hold_weeks` held weeks
    in a row is not held (`lasting_since`): the change has lasted."""
    from ml.split import week_bounds, window_weeks

    tcol = source.time_column
    start = week_bounds(as_of)[0]
    offsets = np.floor((history[tcol] - start) / pd.Timedelta(days=7)).astype(int).to_numpy()
    by_week = {as_of + timedelta(days=7 * int(k)): g for k, g in history.groupby(offsets, sort=True) if len(g)}
    has_rows = set(by_week) if has_rows is None else set(has_rows)

    def reference(w) -> list[pd.DataFrame]:
        return [by_week[x] for x in window_weeks(w, train_weeks, has_rows) if x in by_week]

    def seed(w) -> int:
        return w.toordinal() % 2**31

    past: list[dict[str, float]] = []
    for w in sorted(by_week)[-null_weeks:]:
        if ref := reference(w):
            st = week_statistics(pd.concat(ref, ignore_index=True), by_week[w], source, seed=seed(w))
            past.append(at_bounds(st, judge(st, past, alpha, rows=len(by_week[w]))) if w in not_null else st)
    ref = reference(as_of)
    if not ref or batch.empty:
        return JointVerdict((), len(past), 0)
    week = week_statistics(pd.concat(ref, ignore_index=True), batch, source, seed=seed(as_of))
    flags = tuple(judge(week, past, alpha, rows=len(batch)))
    streak = held_streak(as_of, not_null, has_rows | set(not_null))
    lasting = streak if any(f.holds for f in flags) and len(streak) >= hold_weeks else ()
    return JointVerdict(flags, len(past), len(ref), lasting)
