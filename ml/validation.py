"""The data contract of a weekly batch: a suite built from params + the reference weeks, run by Great Expectations.

`build_suite` is pure pandas and returns plain `Expectation` records; `validate_batch` runs them with GX and turns
every failure into a sentence that names the column and the observed numbers, so a quarantined batch explains itself.
great_expectations is imported inside `validate_batch` only: the import alone costs ~4 s.
"""
from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ml.config import ConfigError, SourceConfig, ValidationConfig

WEEK = pd.Timedelta(days=7)
# Numeric dtypes GX accepts for a numeric column: numpy dtypes (aggregate check on the column dtype), pandas
# nullable dtypes, and Python int/float for object columns (GX then checks each value).
NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
                 "float64", "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype", "UInt8Dtype", "UInt16Dtype",
                 "UInt32Dtype", "UInt64Dtype", "Float32Dtype", "Float64Dtype", "int", "float"]
NUMERIC_CHECKS = ("ExpectColumnValuesToBeBetween", "ExpectColumnQuantileValuesToBeBetween")  # presuppose numbers
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}


@dataclass(frozen=True)
class Expectation:
    """One rule of the contract: a GX expectation class name, its kwargs, and the rule in words."""

    type: str  # GX class name, e.g. "ExpectColumnValuesToNotBeNull"
    kwargs: dict = field(hash=False)
    description: str
    # quantile rules: each quantile's linear trend over the reference weeks, projected to the week judged
    trend: tuple = field(default=(), hash=False, compare=False)
    # quantile rules: where the other columns put the column (ml.companion); a week they explain passes
    companion: dict | None = field(default=None, hash=False, compare=False)

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of one batch: pass/fail, the failures in words, and the JSON-serialisable GX result."""

    success: bool
    failures: list[str]
    n_expectations: int
    n_failed: int  # failed in GX + not run because their column is missing or duplicated
    result: dict
    excused: list[str] = field(default_factory=list)  # quantile rules failed by a column that moved with the others


# ---------------------------------------------------------------------------------------------------------- suite


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


FLOAT_MAX = float(np.finfo(np.float64).max)


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
                              f"'{column}' lies in {_interval(lo, hi)} in at least {_limit(mostly * 100)} of rows")]


def _between(column: str, lo, hi, mostly: float | None = None, description: str | None = None) -> Expectation:
    kwargs = {"column": column, **({"min_value": lo} if lo is not None else {}),
              **({"max_value": hi} if hi is not None else {}), **({"mostly": mostly} if mostly else {})}
    return Expectation("ExpectColumnValuesToBeBetween", kwargs,
                       description or f"'{column}' lies in {_interval(lo, hi)}")


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
        f"'{column}' takes one of the reference's {len(values)} categories in at least {_limit(mostly * 100)} of rows")


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
        if ref_share >= 1 or not bool(has_values.all()):
            return None
        return Expectation("ExpectColumnProportionOfNonNullValuesToBeBetween",
                           {"column": column, "min_value": 1e-12},
                           f"'{column}' has values (every reference week had some)")
    mostly = round(1 - allowed, 6)
    return Expectation(
        "ExpectColumnValuesToNotBeNull", {"column": column, "mostly": mostly},
        f"'{column}' is null in at most {_limit(allowed * 100)} of rows (reference {_pct(ref_share * 100)} "
        f"+ {tol * 100:g} points)")


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
    ranges = [[_num(lo - tol * iqr), _num(hi + tol * iqr)] for lo, hi in zip(lows, highs, strict=True)]
    names = "/".join(_quantile_name(q) for q in qs)
    what = "target " if target else ""
    companion = _fit_companion(column, qs, tol * iqr, full, **companion) if companion and iqr > 0 else None
    return Expectation(
        "ExpectColumnQuantileValuesToBeBetween",
        {"column": column, "quantile_ranges": {"quantiles": qs, "value_ranges": ranges}},
        f"{what}'{column}' {names} within the reference weeks' range ± {tol:g} IQR "
        f"({', '.join(_interval(lo, hi) for lo, hi in ranges)})", trend=_trend(full, per_week), companion=companion)


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
    return tuple(_num(np.polyval(np.polyfit(x, per_week[j].to_numpy(dtype=float), 1), 0.0))
                 for j in per_week.columns)


# ------------------------------------------------------------------------------------------------------- validate


def validate_batch(batch: pd.DataFrame, suite: list[Expectation]) -> ValidationReport:
    """Run `suite` on `batch` with GX; failures (including expectations that raised) come back as sentences.

    Checks on a column the batch lacks (or has twice) are not run but count as failed; the column is reported once.
    """
    unusable = _unusable_columns(batch, suite)
    runnable = [(i, e) for i, e in enumerate(suite) if e.type == "ExpectColumnToExist" or e.column not in unusable]
    gx_result = _run_gx(batch, runnable) if runnable else None
    outcomes = [(r.expectation_config.meta["index"], r) for r in (gx_result.results if gx_result else [])]
    failed = sorted(((i, r) for i, r in outcomes if not r.success), key=lambda x: x[0])  # suite order: schema first
    excused = _excused(batch, suite, failed)
    failed = [(i, r) for i, r in failed if i not in excused]
    ran = {i for i, _ in runnable}
    not_run = [e for i, e in enumerate(suite) if i not in ran]
    explained = _explain_all([(suite[i], r) for i, r in failed if suite[i].column not in unusable], len(batch))
    failures = list(dict.fromkeys([*unusable.values(), *explained]))
    result = _result_dict(gx_result, [(suite[i], r) for i, r in outcomes], not_run, unusable)
    if excused:
        for entry, (i, _) in zip(result["expectations"], outcomes, strict=True):
            if i in excused:
                entry["excused"] = excused[i]
        result["excused"] = list(excused.values())
        result["success"] = not failed and not not_run
    return ValidationReport(success=not failed and not not_run, failures=failures, n_expectations=len(suite),
                            n_failed=len(failed) + len(not_run), result=result, excused=list(excused.values()))


def _excused(batch: pd.DataFrame, suite: list[Expectation], failed: list) -> dict[int, str]:
    """The failed quantile rules whose column moved with the other columns (`ml.companion.excuse`), each with
    the sentence that says so."""
    from ml.companion import excuse

    out = {}
    for i, r in failed:
        exp = suite[i]
        if exp.companion and exp.type == "ExpectColumnQuantileValuesToBeBetween" and not _raised(r):
            if (got := excuse(batch, exp.companion)) is not None:
                shown = ", ".join(f"{_quantile_name(q)} {_fmt(o)} (predicted {_fmt(p)})"
                                  for q, o, p in zip(exp.companion["quantiles"], *got, strict=True))
                out[i] = (f"{explain(exp, r)}, but '{exp.column}' moved with the other columns: {shown}, each as "
                          f"far from the prediction as in the reference weeks")
    return out


def _unusable_columns(batch: pd.DataFrame, suite: list[Expectation]) -> dict[str, str]:
    """Checked columns the batch lacks or carries twice, each with its one sentence, in suite order.

    Their checks are not run: GX would raise a cryptic error for each of them instead.
    """
    checked = list(dict.fromkeys(e.column for e in suite if e.column is not None))
    counts = pd.Series(batch.columns).value_counts()
    out = {}
    for c in checked:
        if c not in counts:
            out[c] = _missing_sentence(c, batch, set(checked))
        elif counts[c] > 1:
            out[c] = f"column '{c}' appears {counts[c]} times in the batch"
    return out


def _missing_sentence(column: str, batch: pd.DataFrame, checked: set[str]) -> str:
    """'column X is missing', with the batch's likely replacement when one looks like a rename."""
    others = {str(c).lower(): str(c) for c in batch.columns if c not in checked}
    close = difflib.get_close_matches(column.lower(), list(others), n=1, cutoff=0.75)  # PM10 -> pm10 is a rename
    return f"column '{column}' is missing" + (f" (the batch has '{others[close[0]]}' instead?)" if close else "")


def _run_gx(batch: pd.DataFrame, runnable: list[tuple[int, Expectation]]):
    """Validate with a fresh ephemeral GX context (~20 ms to build, so one per call and no global state)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm "Calculating Metrics" on stderr
    # meta["index"] maps results back to the suite: GX does not return results in suite order.
    expectations = [getattr(gxe, e.type)(**e.kwargs, meta={"index": i}, description=e.description)
                    for i, e in runnable]
    gx_suite = gx.ExpectationSuite(name="batch_contract", expectations=expectations)
    gx_batch = (ctx.data_sources.add_pandas("batch").add_dataframe_asset("batch")
                .add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": batch}))
    # Batch.validate, not ValidationDefinition.run: the latter stores the result and its serialiser crashes on
    # the numpy bool that ExpectColumnQuantileValuesToBeBetween returns ("Object of type bool is not JSON
    # serializable"), i.e. one quantile check would crash the whole validation.
    return gx_batch.validate(gx_suite, result_format=RESULT_FORMAT)


def _result_dict(gx_result, outcomes: list, not_run: list[Expectation], unusable: dict[str, str]) -> dict:
    """GX's describe_dict with each rule's description, plus the rules not run; guaranteed JSON-serialisable."""
    if gx_result is None:
        out: dict = {"success": True, "statistics": {}, "expectations": []}
    else:
        out = gx_result.describe_dict()
        for entry, (exp, _) in zip(out["expectations"], outcomes, strict=True):
            entry["description"] = exp.description
    out["not_run"] = [{"expectation_type": e.type, "kwargs": e.kwargs, "description": e.description,
                       "reason": unusable[e.column]} for e in not_run]
    if not_run:
        out["success"] = False
    return json.loads(json.dumps(out, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(value).isoformat()
    return str(value)


# -------------------------------------------------------------------------------------------------------- explain


def _explain_all(failed: list, n_rows: int) -> list[str]:
    """One sentence per failed expectation, minus failures that merely follow from one already reported:
    numeric checks on a column of the wrong type, and undefined quantiles of an all-null column or empty batch."""
    mistyped = {e.column for e, r in failed if e.type == "ExpectColumnValuesToBeInTypeList" and not _raised(r)}
    all_null = {e.column for e, r in failed if e.type == "ExpectColumnValuesToNotBeNull" and not _raised(r)
                and (r.result or {}).get("unexpected_count") == n_rows}
    all_null |= {e.column for e, r in failed if e.type == "ExpectColumnProportionOfNonNullValuesToBeBetween"}
    return [explain(e, r) for e, r in failed
            if not (e.column in mistyped and (_raised(r) or e.type in NUMERIC_CHECKS))
            and not ((n_rows == 0 or e.column in all_null) and _no_quantiles(e, r))]


def _no_quantiles(exp: Expectation, r) -> bool:
    """A quantile check that failed only because the column had no values at all."""
    values = ((r.result or {}).get("observed_value") or {}).get("values") if not _raised(r) else None
    return exp.type == "ExpectColumnQuantileValuesToBeBetween" and bool(values) and all(_undefined(v) for v in values)


def _undefined(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _raised(r) -> bool:
    return bool(_exception_message(r))


def _exception_message(r) -> str | None:
    """The error an expectation raised, if any; GX keys exception_info by metric id when a metric failed."""
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return info.get("exception_message") or "unknown error"
    for sub in info.values():
        if isinstance(sub, dict) and sub.get("raised_exception"):
            return sub.get("exception_message") or "unknown error"
    return None


def explain(exp: Expectation, r) -> str:
    """A failed expectation in words, naming the column and the observed numbers."""
    error = _exception_message(r)
    if error:
        return f"could not check that {exp.description}: {error.splitlines()[0]}"
    res = r.result or {}
    try:
        return EXPLAIN.get(exp.type, _explain_generic)(exp, res)
    except (KeyError, TypeError, ValueError, IndexError):  # an unexpected result shape must not hide the failure
        return _explain_generic(exp, res)


def _explain_generic(exp: Expectation, res: dict) -> str:
    observed = res.get("observed_value", res.get("unexpected_percent"))
    return f"failed: {exp.description}" + (f" (observed {observed})" if observed is not None else "")


def _explain_exists(exp: Expectation, res: dict) -> str:
    return f"column '{exp.column}' is missing"


def _explain_type(exp: Expectation, res: dict) -> str:
    if "observed_value" in res:  # numpy/extension dtype: GX checks the column dtype
        return f"'{exp.column}' has dtype {res['observed_value']}, expected a numeric dtype"
    return (f"'{exp.column}' is not numeric: {_pct(res['unexpected_percent'])} of values are not numbers "
            f"(e.g. {_examples(res)})")


def _explain_not_null(exp: Expectation, res: dict) -> str:
    share = _pct(res["unexpected_percent"])
    mostly = exp.kwargs.get("mostly")
    if mostly is None or mostly >= 1:
        return f"'{exp.column}' is null in {res['unexpected_count']:,} rows ({share}); it must never be null"
    allowed = _limit((1 - mostly) * 100)
    if res["unexpected_percent"] >= 100:  # a feed empty for the week, whatever share the reference allows
        return f"'{exp.column}' is null in every row of the batch (allowed {allowed}): a broken feed?"
    return f"'{exp.column}' is null in {share} of rows (allowed {allowed})"


def _explain_between(exp: Expectation, res: dict) -> str:
    k = exp.kwargs
    if isinstance(k.get("min_value"), str) or isinstance(k.get("max_value"), str):  # the week's time span
        where = exp.description.split(" lies in ", 1)[-1]
    elif k.get("max_value") == FLOAT_MAX:
        return (f"'{exp.column}': {res['unexpected_count']:,} rows ({_pct(res['unexpected_percent'])}) are ±inf, "
                f"not numbers (e.g. {_examples(res)})")
    else:
        where = _interval(k.get("min_value"), k.get("max_value"))
    allowed = f" (allowed {_limit((1 - k['mostly']) * 100)})" if k.get("mostly") else ""
    return (f"'{exp.column}': {res['unexpected_count']:,} rows ({_pct(res['unexpected_percent'])}) outside "
            f"{where}{allowed} (e.g. {_examples(res)})")


def _explain_unique(exp: Expectation, res: dict) -> str:
    return (f"'{exp.column}' is duplicated: {res['unexpected_count']:,} rows ({_pct(res['unexpected_percent'])}) "
            f"share their value with another row (e.g. {_examples(res)})")


def _explain_row_count(exp: Expectation, res: dict) -> str:
    n, lo, hi = res["observed_value"], exp.kwargs.get("min_value"), exp.kwargs.get("max_value")
    if hi is None:
        return f"row count {n:,} is below the minimum of {lo:,} (validation.min_rows)"
    return f"row count {n:,} is outside [{lo:,} .. {hi:,}] learned from the reference weeks"


def _explain_in_set(exp: Expectation, res: dict) -> str:
    allowed = _limit((1 - exp.kwargs.get("mostly", 1)) * 100)
    return (f"'{exp.column}': {_pct(res['unexpected_percent'])} of rows outside the reference categories "
            f"(e.g. {_examples(res)}; allowed {allowed})")


def _explain_quantiles(exp: Expectation, res: dict) -> str:
    spec, observed = exp.kwargs["quantile_ranges"], res["observed_value"]["values"]
    parts = []
    for q, (lo, hi), value in zip(spec["quantiles"], spec["value_ranges"], observed, strict=True):
        if _undefined(value):
            parts.append(f"{_quantile_name(q)} undefined (no non-null values)")
        elif not lo <= value <= hi:
            parts.append(f"{_quantile_name(q)} {_fmt(value)} outside {_interval(lo, hi)}")
    what = "target " if exp.description.startswith("target ") else ""
    trend = _continues_trend(exp, spec, observed)
    shift = " (a shift of the target well beyond its week-to-week variation)" if what and parts and not trend else ""
    return f"{what}'{exp.column}' " + "; ".join(parts or ["quantiles outside the reference's range"]) + shift + trend


def _continues_trend(exp: Expectation, spec: dict, observed: list) -> str:
    """A note when every quantile outside its range lies where the reference weeks' own trend leads: the data
    moving on rather than a break (a person can then pin a wider tolerance)."""
    if not exp.trend:
        return ""
    out = [(q, v, p) for q, (lo, hi), v, p in zip(spec["quantiles"], spec["value_ranges"], observed, exp.trend,
                                                   strict=True) if not _undefined(v) and not lo <= v <= hi]
    follows = [(v > hi and p > hi or v < lo and p < lo) and abs(v - p) <= (hi - lo) / 2
               for (q, v, p), (lo, hi) in zip(out, [r for r, v in zip(spec["value_ranges"], observed, strict=True)
                                                    if not _undefined(v) and not r[0] <= v <= r[1]], strict=True)]
    if not out or not all(follows):
        return ""
    q, _, p = out[0]
    return (f"; it continues the trend of the reference weeks (their {_quantile_name(q)} leads to {_fmt(p)} this "
            f"week): if the data is moving on, not broken, pin a wider tolerance in "
            f"validation.pinned.{exp.column}.quantiles")


def _explain_has_values(exp: Expectation, res: dict) -> str:
    return f"'{exp.column}' is null in every row of the batch (every reference week had values): a broken feed?"


EXPLAIN: dict[str, Callable[[Expectation, dict], str]] = {
    "ExpectColumnToExist": _explain_exists,
    "ExpectColumnValuesToBeInTypeList": _explain_type,
    "ExpectColumnValuesToNotBeNull": _explain_not_null,
    "ExpectColumnValuesToBeBetween": _explain_between,
    "ExpectColumnValuesToBeUnique": _explain_unique,
    "ExpectTableRowCountToBeBetween": _explain_row_count,
    "ExpectColumnValuesToBeInSet": _explain_in_set,
    "ExpectColumnQuantileValuesToBeBetween": _explain_quantiles,
    "ExpectColumnProportionOfNonNullValuesToBeBetween": _explain_has_values,
}


# --------------------------------------------------------------------------------------------------------- format


def _fmt(x: Any) -> str:
    """Numbers for people: thousands separators, at most 4 significant digits below 1,000."""
    if isinstance(x, (pd.Timestamp, np.datetime64)):
        return f"{pd.Timestamp(x):%Y-%m-%d %H:%M %Z}".strip()
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.number)):
        return repr(x)
    if isinstance(x, (int, np.integer)) or abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def _num(x: float) -> float | int:
    """A plain Python number, integral values as int (JSON- and display-friendly)."""
    x = float(x)
    return int(x) if x.is_integer() else round(x, 6)


def _pct(p: float) -> str:
    """An observed share of rows: one decimal, two significant digits when tiny (never a misleading 0.0%)."""
    return f"{p:.2g}%" if 0 < p < 0.1 else f"{p:.1f}%"


def _limit(p: float) -> str:
    """A configured or allowed share: as short as possible ('2%', '5.3%')."""
    return f"{round(p, 1):g}%"


def _interval(lo: Any, hi: Any) -> str:
    return f"[{'-inf' if lo is None else _fmt(lo)} .. {'inf' if hi is None else _fmt(hi)}]"


def _quantile_name(q: float) -> str:
    return "median" if q == 0.5 else f"p{q * 100:g}"


def _examples(res: dict, n: int = 3) -> str:
    values = list(dict.fromkeys(_fmt(v) for v in res.get("partial_unexpected_list") or []))[:n]
    return ", ".join(values) if values else "no examples"
