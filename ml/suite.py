"""The rules of a weekly batch's data contract, built from params + the reference weeks (pure pandas): the schema,
the fixed rules a person wrote (never-null columns, ranges, the week's time span, unique ids, a row floor) and the
value rules learned from the reference weeks (row count, null and category shares, quantiles with their companions).
`build_suite` returns plain `ml.validation.Expectation` records; `ml.validation.validate_batch` runs them.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ml.config import ConfigError, SourceConfig, ValidationConfig
from ml.validation import FLOAT_MAX, Expectation
from ml.wording import interval, limit, num, pct, quantile_name

WEEK = pd.Timedelta(days=7)
# Numeric dtypes GX accepts for a numeric column: numpy dtypes (aggregate check on the column dtype), pandas
# nullable dtypes, and Python int/float for object columns (GX then checks each value).
NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
                 "float64", "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype", "UInt8Dtype", "UInt16Dtype",
                 "UInt32Dtype", "UInt64Dtype", "Float32Dtype", "Float64Dtype", "int", "float"]




def build_suite(cfg: SourceConfig, vcfg: ValidationConfig, reference: pd.DataFrame, week_start: pd.Timestamp,
                week_end: pd.Timestamp, reference_weeks: int) -> list[Expectation]:
    """The batch contract for the week [week_start, week_end): fixed rules from params + rules learned from
    `reference` (the rows of the `reference_weeks` weeks right before week_start)."""
    week_start, week_end = _utc(week_start), _utc(week_end)
    _check_reference(cfg, reference, reference_weeks)
    return [*_schema_rules(cfg, vcfg), *_fixed_rules(cfg, vcfg, week_start, week_end),
            *_learned_rules(cfg, vcfg, reference, week_start, reference_weeks)]


def _utc(t: pd.Timestamp) -> pd.Timestamp:
    """A UTC timestamp; naive times are taken as UTC, like the sources do."""
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def _check_reference(cfg: SourceConfig, reference: pd.DataFrame, reference_weeks: int) -> None:
    """Learned rules need a non-empty reference with the configured columns; say which is missing."""
    if reference_weeks < 1:
        raise ValueError(f"reference_weeks must be at least 1, got {reference_weeks}")
    if reference.empty:
        raise ValueError("the reference window is empty: nothing to learn the batch contract from")
    missing = [c for c in cfg.columns if c not in reference.columns]
    if missing:
        raise ValueError(f"the reference window lacks column(s) {', '.join(map(repr, missing))}")


def _schema_rules(cfg: SourceConfig, vcfg: ValidationConfig) -> list[Expectation]:
    """Every column the contract mentions exists; numeric columns have a numeric dtype."""
    mentioned = dict.fromkeys([*cfg.columns, *vcfg.required, *vcfg.ranges])
    rules = [Expectation("ExpectColumnToExist", {"column": c}, f"column '{c}' exists") for c in mentioned]
    numeric = [*cfg.numeric_features, *([cfg.target] if cfg.task == "regression" else [])]
    rules += [Expectation("ExpectColumnValuesToBeInTypeList", {"column": c, "type_list": NUMERIC_TYPES},
                          f"'{c}' is numeric") for c in dict.fromkeys(numeric)]
    return rules


def numeric_columns(cfg: SourceConfig) -> list[str]:
    """Numeric features, plus the target of a regression."""
    return list(dict.fromkeys([*cfg.numeric_features, *([cfg.target] if cfg.task == "regression" else [])]))


def never_null_columns(cfg: SourceConfig, vcfg: ValidationConfig) -> list[str]:
    """Columns that must never be null: `validation.required` plus time column and unit id. The target is
    required only when listed: unlabelled rows are dropped before training, so its null share is learned."""
    return list(dict.fromkeys([*vcfg.required, cfg.time_column, *([cfg.unit_id] if cfg.unit_id else [])]))


def _fixed_rules(cfg: SourceConfig, vcfg: ValidationConfig, week_start: pd.Timestamp,
                 week_end: pd.Timestamp) -> list[Expectation]:
    """Rules straight from params: never-null columns, value ranges, the week's time span, unique ids, row floor."""
    rules = [Expectation("ExpectColumnValuesToNotBeNull", {"column": c}, f"'{c}' is never null")
             for c in never_null_columns(cfg, vcfg)]
    rules += [r for c, bounds in vcfg.ranges.items() if any(b is not None for b in bounds)
              for r in _range_rules(c, bounds, vcfg.range_tolerance)]
    ranged = {c for c, b in vcfg.ranges.items() if isinstance(b, (list, tuple)) and len(b) == 2 and None not in b
              and not vcfg.range_tolerance}  # a tolerant range lets a few rows past: +-inf among them
    # +-inf passes every null and quantile check and poisons training: every numeric column must be finite
    rules += [Expectation("ExpectColumnValuesToBeBetween", {"column": c, "min_value": -FLOAT_MAX,
                                                            "max_value": FLOAT_MAX}, f"'{c}' is finite (no ±inf)")
              for c in numeric_columns(cfg) if c not in ranged]
    # ISO strings keep the suite JSON-friendly; GX parses them to tz-aware datetimes and compares them with a
    # datetime64[ns, UTC] column vectorised (a naive column makes the check raise, which is reported).
    span = f"[{week_start:%Y-%m-%d %H:%M} .. {week_end:%Y-%m-%d %H:%M}) UTC"
    rules.append(Expectation(
        "ExpectColumnValuesToBeBetween",
        {"column": cfg.time_column, "min_value": week_start.isoformat(), "max_value": week_end.isoformat(),
         "strict_max": True},
        f"'{cfg.time_column}' lies in the week {span}"))
    if cfg.unit_id:
        rules.append(Expectation("ExpectColumnValuesToBeUnique", {"column": cfg.unit_id},
                                 f"'{cfg.unit_id}' is unique (no duplicated rows)"))
    rules.append(Expectation("ExpectTableRowCountToBeBetween", {"min_value": vcfg.min_rows},
                             f"at least {vcfg.min_rows:,} rows (validation.min_rows)"))
    return rules


def _range_rules(column: str, bounds: Any, tolerance: float = 0.0) -> list[Expectation]:
    """`validation.ranges` entry [min, max] (either may be null) as between-rules: one strict rule, or with a
    `tolerance` (validation.range_tolerance) a strict rule for a bound at 0 (a sign) and one that lets that share of
    rows past the other bounds."""
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
        raise ConfigError(f"params: 'validation.ranges.{column}' must be [min, max], got {bounds!r}")
    lo, hi = bounds
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"params: 'validation.ranges.{column}' has min {lo} > max {hi}")
    if not tolerance:
        return [_between(column, lo, hi)]
    strict = [_between(column, 0, None)] if lo == 0 else []
    lo = None if lo == 0 else lo
    if lo is None and hi is None:
        return strict
    mostly = round(1 - tolerance, 6)
    return [*strict, _between(column, lo, hi, mostly,
                              f"'{column}' lies in {interval(lo, hi)} in at least {limit(mostly * 100)} of rows")]


def _between(column: str, lo, hi, mostly: float | None = None, description: str | None = None) -> Expectation:
    kwargs = {"column": column, **({"min_value": lo} if lo is not None else {}),
              **({"max_value": hi} if hi is not None else {}), **({"mostly": mostly} if mostly else {})}
    return Expectation("ExpectColumnValuesToBeBetween", kwargs,
                       description or f"'{column}' lies in {interval(lo, hi)}")


def _learned_rules(cfg: SourceConfig, vcfg: ValidationConfig, reference: pd.DataFrame, week_start: pd.Timestamp,
                   reference_weeks: int) -> list[Expectation]:
    """Rules learned from the reference: weekly row count, category sets, null shares, quantiles."""
    rules = [_row_count_rule(cfg, vcfg, reference, week_start, reference_weeks)]
    classes = [cfg.target] if cfg.task == "classification" else []
    rules += [_category_rule(c, reference[c], vcfg) for c in (*cfg.categorical_features, *classes)]
    never_null = set(never_null_columns(cfg, vcfg))
    weeks = week_offsets(reference[cfg.time_column], week_start)
    rules += [r for c in (*cfg.features, cfg.target) if c not in never_null
              if (r := _null_share_rule(c, reference[c], vcfg, weeks, exempt=c in vcfg.null_exempt))]
    calendar = {f"cal_{c}" for c in cfg.calendar}  # computed from the time: they move with it, by design
    companion = _companion_args(cfg, vcfg, reference, weeks)
    rules += [r for c in numeric_columns(cfg) if c not in vcfg.quantile_exempt and c not in calendar
              if (r := _quantile_rule(c, reference[c], vcfg, weeks, target=c == cfg.target,
                                      companion=None if c == cfg.target else companion))]
    return rules


def companion_inputs(cfg: SourceConfig) -> list[str]:
    """The numeric columns that predict one another in the companions (no cal_ column: the hour and weekday of
    the time are inputs already)."""
    return [c for c in numeric_columns(cfg) if not c.startswith("cal_")]


def _companion_args(cfg: SourceConfig, vcfg: ValidationConfig, reference: pd.DataFrame, weeks: pd.Series) -> dict:
    """What `ml.companion.fit` needs besides the column: the reference, the numeric columns that predict it (no
    cal_ column: the hour and weekday of the time are inputs already) and the time. Features only: the target's
    median rule has none (the features put a shifted target near enough to its usual gap to let most through: a
    shifted target is the costliest break to miss)."""
    from ml.companion import reference_design

    if not vcfg.companions:
        return {}
    inputs = [c for c in companion_inputs(cfg) if c in reference.columns]
    x = reference_design(reference, inputs, cfg.time_column, cfg.timezone)
    if x is None:
        return {}
    return {"reference": reference, "inputs": inputs, "time_column": cfg.time_column, "timezone": cfg.timezone,
            "weeks": weeks.to_numpy(), "x": x}


def week_offsets(times: pd.Series, week_start: pd.Timestamp) -> pd.Series:
    """Which week each reference row falls in, counted from the batch's week (-1 = the week right before)."""
    return np.floor((times - week_start) / WEEK).astype(int)


def weekly_counts(times: pd.Series, week_start: pd.Timestamp, reference_weeks: int) -> pd.Series:
    """Rows per reference week (any week within `reference_weeks` of the batch's, other than its own); weeks
    without rows are left out, since an absent week means missing reference data, not a legitimately empty week."""
    offset = week_offsets(times, week_start)
    offset = offset[(offset != 0) & (offset.abs() <= reference_weeks)]
    return offset.value_counts().sort_index()


def _row_count_rule(cfg: SourceConfig, vcfg: ValidationConfig, reference: pd.DataFrame, week_start: pd.Timestamp,
                    reference_weeks: int) -> Expectation:
    counts = weekly_counts(reference[cfg.time_column], week_start, reference_weeks)
    if counts.empty:
        raise ValueError(f"the reference has no rows in the {reference_weeks} week(s) before {week_start:%Y-%m-%d}")
    tol = vcfg.row_count_tolerance
    lo, hi = math.floor(counts.min() * (1 - tol)), math.ceil(counts.max() * (1 + tol))
    return Expectation(
        "ExpectTableRowCountToBeBetween", {"min_value": max(lo, 0), "max_value": hi},
        f"row count within [{lo:,} .. {hi:,}] (reference weeks had {counts.min():,}..{counts.max():,} rows, "
        f"±{tol:.0%})")


def tolerance(vcfg: ValidationConfig, family: str, column: str) -> float:
    """The tolerance of a learned rule ("nulls", "categories" or "quantiles") on `column`: its entry in
    `validation.column_tolerances` (cli.init widens a rule to its own week-to-week variation), else the default."""
    default = {"nulls": vcfg.null_tolerance, "categories": vcfg.category_tolerance,
               "quantiles": vcfg.quantile_tolerance}[family]
    return float(vcfg.column_tolerances.get(column, {}).get(family, default))


def _category_rule(column: str, ref: pd.Series, vcfg: ValidationConfig) -> Expectation:
    """The reference's values and the known ones (`validation.categories`: a person's and the accepted weeks')."""
    values = sorted({*ref.dropna().unique().tolist(), *vcfg.categories.get(column, ())}, key=str)
    mostly = round(1 - tolerance(vcfg, "categories", column), 6)
    return Expectation(
        "ExpectColumnValuesToBeInSet", {"column": column, "value_set": values, "mostly": mostly},
        f"'{column}' takes one of the reference's {len(values)} categories in at least {limit(mostly * 100)} of rows")


def _null_share_rule(column: str, ref: pd.Series, vcfg: ValidationConfig, weeks: pd.Series,
                     exempt: bool = False) -> Expectation | None:
    """Null share <= reference share + tolerance. When that allows every row to be null (or the column is exempt
    from the share check), the batch must still carry some values, unless a reference week had none either:
    a column empty for a whole week is a broken feed, not a share."""
    ref_share = float(ref.isna().mean())
    tol = tolerance(vcfg, "nulls", column)
    allowed = ref_share + tol
    if exempt or allowed >= 1:
        has_values = ref.notna().groupby(weeks.to_numpy()).any()
        if ref_share >= 1 or not bool(has_values.all()) or thin_weeks(weeks.value_counts().to_numpy()):
            return None
        return Expectation("ExpectColumnProportionOfNonNullValuesToBeBetween",
                           {"column": column, "min_value": 1e-12},
                           f"'{column}' has values (every reference week had some)")
    mostly = round(1 - allowed, 6)
    return Expectation(
        "ExpectColumnValuesToNotBeNull", {"column": column, "mostly": mostly},
        f"'{column}' is null in at most {limit(allowed * 100)} of rows (reference {pct(ref_share * 100)} "
        f"+ {tol * 100:g} points)")


THIN_WEEK_ROWS = 4  # a feed of fewer rows a week (a weekly series): a week without a column's value is one reading


def thin_weeks(sizes: np.ndarray) -> bool:
    """Whether the reference weeks (their row counts) are too small for a column empty all week to be a broken
    feed: in a weekly series of one row a week, it is one missing reading (statsmodels' CO2 series: 59 of 2,284)."""
    return bool(len(sizes)) and float(np.median(sizes)) < THIN_WEEK_ROWS


def envelope_weeks(sizes: pd.Series) -> pd.Index:
    """The reference weeks whose quantiles span the learned range: not stubs (a quarter of the largest week,
    and at least 5 values), whose quantiles are noise rather than week-to-week variation."""
    return sizes.index[sizes >= max(5, 0.25 * sizes.max())]


DISCRETE_VALUES = 12  # a column with at most this many distinct reference values is read as codes or counts


def quantile_scale(values: np.ndarray) -> float:
    """The unit of a quantile rule's tolerance: the reference's IQR, and for a column of few distinct values (a
    code such as a season or a weather class) at least the step between them. Its IQR is often 0 within a season,
    and a rule of width 0 rejects the first week that moves by one level."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    q25, q75 = np.quantile(v, [0.25, 0.75])
    iqr = float(q75 - q25)
    distinct = np.unique(v)
    if 2 <= distinct.size <= DISCRETE_VALUES:
        return max(iqr, float(np.diff(distinct).min()))
    return iqr


def _quantile_rule(column: str, ref: pd.Series, vcfg: ValidationConfig, weeks: pd.Series,
                   target: bool = False, companion: dict | None = None) -> Expectation | None:
    """Each quantile within the range the reference weeks' own quantiles spanned, widened by ± tol × reference
    IQR (`quantile_scale`); None when the reference has no numeric values. With `companion` (`_companion_args`),
    the rule carries its companion (`ml.companion`): where the other columns put each quantile.

    Learning the range from week to week (not from the pooled reference alone) keeps ordinary weekly swings
    inside it while a unit change or a shifted target still falls far outside."""
    values = pd.to_numeric(ref, errors="coerce")
    keep = values.notna().to_numpy()
    values, weeks = values[keep], weeks.to_numpy()[keep]
    if values.empty or not vcfg.quantiles:
        return None
    # the target's tails follow the news of the week (a storm, a holiday): its check is on location, the median
    qs = [0.5] if target else list(vcfg.quantiles)
    iqr = quantile_scale(values.to_numpy())
    # GX's pandas quantile uses interpolation="nearest"; learn with the same method so equal data passes.
    pooled = values.quantile(qs, interpolation="nearest").to_numpy()
    full = envelope_weeks(pd.Series(weeks).value_counts())
    # week by week with Series.quantile: groupby's "nearest" rounds ties differently from GX's
    full = sorted(full)
    per_week = pd.DataFrame([values[weeks == w].quantile(qs, interpolation="nearest").to_numpy() for w in full])
    lows = np.minimum(pooled, per_week.min().to_numpy()) if len(per_week) else pooled
    highs = np.maximum(pooled, per_week.max().to_numpy()) if len(per_week) else pooled
    if iqr == 0 and np.array_equal(lows, highs):
        return None  # constant throughout the reference: no variation learned, so no range to hold a week to
    tol = tolerance(vcfg, "quantiles", column)
    ranges = [[num(lo - tol * iqr), num(hi + tol * iqr)] for lo, hi in zip(lows, highs, strict=True)]
    names = "/".join(quantile_name(q) for q in qs)
    what = "target " if target else ""
    companion = _fit_companion(column, qs, tol * iqr, full, **companion) if companion and iqr > 0 else None
    return Expectation(
        "ExpectColumnQuantileValuesToBeBetween",
        {"column": column, "quantile_ranges": {"quantiles": qs, "value_ranges": ranges}},
        f"{what}'{column}' {names} within the reference weeks' range ± {tol:g} IQR "
        f"({', '.join(interval(lo, hi) for lo, hi in ranges)})", trend=_trend(full, per_week), companion=companion)


def _fit_companion(column: str, qs: list[float], width: float, envelope: list, *, reference: pd.DataFrame,
                   inputs: list[str], time_column: str, timezone: str, weeks: np.ndarray,
                   x: pd.DataFrame) -> dict | None:
    from ml.companion import fit

    return fit(reference, column, inputs, time_column, timezone, weeks, envelope, qs, width, x=x)


def _trend(weeks: list, per_week: pd.DataFrame) -> tuple:
    """Each quantile's least-squares line over the reference weeks (week offsets -n..-1), projected to week 0;
    () with fewer than 4 weeks to fit."""
    if len(weeks) < 4:
        return ()
    x = np.asarray(weeks, dtype=float)
    return tuple(num(np.polyval(np.polyfit(x, per_week[j].to_numpy(dtype=float), 1), 0.0))
                 for j in per_week.columns)




# ---------------------------------------------------------------------------------------- what a failure spoils


def is_value_rule(e: Expectation) -> bool:
    """A rule on the values a column takes this week, which the contract learns and a person may overrule: a
    quantile, a null or category share, a tolerant range (`validation.range_tolerance`), the weekly row count.
    Not one: the schema, a never-null column, finite numbers, a strict bound (a sign, a person's physical bound),
    the week's time span, unique ids, the row floor - fixed rules a batch that breaks them cannot be accepted over."""
    if e.type in ("ExpectColumnQuantileValuesToBeBetween", "ExpectColumnProportionOfNonNullValuesToBeBetween",
                  "ExpectColumnValuesToBeInSet"):
        return True
    if e.type in ("ExpectColumnValuesToNotBeNull", "ExpectColumnValuesToBeBetween"):
        return "mostly" in e.kwargs  # a learned null share / a tolerant range
    return e.type == "ExpectTableRowCountToBeBetween" and "max_value" in e.kwargs  # learned from the reference


def value_rules_only(report) -> bool:
    """The batch failed value rules alone (`is_value_rule`): an ordinary week after all is a person's call."""
    return not report.success and not report.unjudged and all(is_value_rule(e) for e in report.failed_rules)


COLUMN_VALUE_RULES = ("ExpectColumnQuantileValuesToBeBetween", "ExpectColumnProportionOfNonNullValuesToBeBetween",
                      "ExpectColumnValuesToBeInSet", "ExpectColumnValuesToNotBeNull", "ExpectColumnValuesToBeBetween")


def failed_features(cfg: SourceConfig, report, batch: pd.DataFrame | None = None) -> tuple[str, ...]:
    """The features a rejected week can train without, from the next run on: every failed rule is on the values of
    a feature (one sensor's feed broke or went empty, a feature arrived in other units or with a sign flipped, a
    new category) and at most half the features failed, so the broken values never train but the week's target
    and its sound features do. () when anything else failed - the target, the schema, the week's time span, the
    row count, unique ids, a required column's nulls (the columns a row is known by) - or too much did, or (given
    the `batch`) half its rows repeat another row's features (a frozen feed: its other columns are frozen too,
    whether or not their rules saw it): the whole week stays out of training."""
    if report.success or report.unjudged:
        return ()
    features = set(cfg.features) - {cfg.target}
    columns = list(dict.fromkeys(e.column for e in report.failed_rules))
    if not columns or not all(e.type in COLUMN_VALUE_RULES and e.column in features and not _never_null(e)
                              for e in report.failed_rules):
        return ()
    if batch is not None and repeated_share(cfg, batch) >= REPEATED:
        return ()
    return tuple(columns) if 2 * len(columns) <= len(features) else ()


REPEATED = 0.5  # a week with this share of its rows repeating another row is frozen (or delivered twice)


def repeated_share(cfg: SourceConfig, batch: pd.DataFrame) -> float:
    """The share of the week's rows that repeat another row on every delivered feature (not the calendar columns
    derived from the time; not the target, which a feed frozen upstream of it may still carry)."""
    derived = {f"cal_{c}" for c in cfg.calendar}
    columns = [c for c in cfg.features if c in batch.columns and c not in derived]
    return float(batch[columns].duplicated(keep=False).mean()) if len(batch) and columns else 0.0


def _never_null(e: Expectation) -> bool:
    return e.type == "ExpectColumnValuesToNotBeNull" and "mostly" not in e.kwargs  # validation.required
