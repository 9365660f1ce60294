"""Profile a user's files and choose every setting of params.yaml for them, each with the reason in words.

Pure: frames in, a `Profile` out (the chosen sections as plain values + one note per choice). The command that
reads the files and writes params.yaml is `python -m flows.init`; rendering lives in `render_params`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from ml.config import SourceConfig, ValidationConfig
from ml.sources import calendar_columns, prepare_frame, synthesise_unit_id
from ml.validation import envelope_weeks, quantile_scale

PART_NAMES = {"year": ("year", "yyyy", "yr"), "month": ("month", "mnth", "mon", "mm"),
              "day": ("day", "dd", "dom", "mday"), "hour": ("hour", "hr", "hh"), "minute": ("minute", "min")}
PART_RANGES = {"year": (1900, 2100), "month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59)}
MAX_CATEGORIES = 100  # text columns with more distinct values are identifiers or free text, not categories
MAX_CLASSES = 20  # a numeric target with at most this many values is a class label
LEAK_CORRELATION = 0.95  # a feature this correlated with the target is taken as a leak of it
FALSE_ALARM_RATE = 0.01  # the learned rules together may reject at most this share of the history's weeks
MAX_QUANTILE_TOLERANCE = 5.0  # a quantile rule that would need a wider tolerance (in IQRs) is exempted instead
MAX_NULL_TOLERANCE = 0.25  # a null-share rule that would need more points than this is exempted instead
EXEMPT_KEY = {"nulls": "null_exempt", "quantiles": "quantile_exempt"}
STEP = {"rows": 0.05, "nulls": 0.01, "categories": 0.01, "quantiles": 0.1}  # widened tolerances round up to these
MIN_PRIOR_WEEKS = 2  # the gate learns rules once this many weeks precede a week (stages/ingest.py)
TRAIN_ROWS = 1000  # the training window should hold at least this many rows when the history allows
QUANTILE_TOLERANCE = 1.0  # validation.quantile_tolerance written for new data: seasonal weeks move by ~0.5 IQR
RANGE_MARGIN = 0.25  # ranges: the history's extremes (later the accepted weeks') +- this share of their spread
# validation.range_tolerance written for new data: 0, every row within its range. Letting 0.12-0.5 % of rows past
# took Beijing's out-of-sample quarantines from 14 to 11 of 156 weeks but caught 6-7 fewer feature x1.6 and 3 fewer
# target + 1 sd breaks (docs/contract-and-alarms.md)
RANGE_TOLERANCE = 0.0
TARGET_RANGE_MARGIN = 1.0  # the target's: its tails follow the news of the week (a record month of a growing
#                            feed); its location is held by the median rule, its range is there for garbage
LABEL = re.compile(r"^\s*(?P<column>.+?)\s*>\s*(?P<value>-?[0-9.]+(?:e-?[0-9]+)?)\s*$")


class ProfileError(ValueError):
    """The files cannot be profiled as asked; the message names the column or option."""


@dataclass
class Profile:
    """The chosen params sections and, for each choice, why."""

    source: dict
    window: dict
    evaluate: dict
    validation: dict
    policy: dict
    registry: dict
    notes: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def profile(files: dict[str, pd.DataFrame], *, path: str, target: str, task: str | None = None,
            time: str | None = None, timezone: str = "UTC", na_values: list[str] | None = None,
            unit_id: str | None = None, model_name: str | None = None, dataset: str = "data",
            drop: tuple[str, ...] = ()) -> Profile:
    """Choose source, window, validation, slices and names for `files` (name -> frame, read as delivered)."""
    notes: list[str] = []
    frames = list(files.values())
    first = frames[0]
    columns = [str(c) for c in first.columns]
    for name, df in files.items():
        if [str(c) for c in df.columns] != columns and set(map(str, df.columns)) != set(columns):
            raise ProfileError(f"{name}: its columns differ from the first file's ({', '.join(columns)})")
    data = pd.concat(frames, ignore_index=True)

    target_col, label, task = _target(data, target, task, notes)
    time_col, parts = _time(data, time, notes)
    cfg = SourceConfig(kind="files", path=path, time_column=time_col, target=target_col, task=task,
                       numeric_features=(), categorical_features=(), time_parts=parts, timezone=timezone,
                       na_values=tuple(na_values) if na_values is not None else None, label=label)
    # the source's own derivation (time, label), once per file: unit ids below are synthesised per file too
    per_file = {name: prepare_frame(df, cfg, name, strict=False) for name, df in files.items()}
    derived = pd.concat(per_file.values(), ignore_index=True)
    times = derived[time_col]
    uid, uid_from, uid_drop = _unit_id(files, derived, cfg, unit_id, notes)
    cfg_unit = SourceConfig(**{**cfg.__dict__, "unit_id": uid, "unit_id_from": tuple(uid_from)})
    if uid_from:
        derived[uid] = pd.concat([synthesise_unit_id(df, cfg_unit, name) for name, df in per_file.items()],
                                 ignore_index=True)
    # several readings a day (not one a day at a time of day that moves with the clocks, as in UTC offsets)
    steps = pd.Series(np.sort(times.unique())).diff().dropna()
    sub_daily = bool(len(steps)) and steps.median() < pd.Timedelta(hours=20)
    calendar = ["hour", "day_of_week", "month"] if sub_daily else ["day_of_week", "month"]
    for name, values in calendar_columns(times, tuple(calendar), timezone).items():
        derived[name] = values
    notes.append(f"calendar features {', '.join('cal_' + c for c in calendar)}: derived from '{time_col}' in "
                 f"{timezone} (source.calendar)")

    missing = [c for c in drop if c not in columns]
    if missing:
        raise ProfileError(f"--drop: no column(s) {', '.join(map(repr, missing))} in the files")
    skip = {time_col, target_col, *parts.values(), *([label.column] if label else []), *uid_drop,
            *([uid] if uid else []), *drop}
    numeric, categorical, dropped = _features(derived, [c for c in columns if c not in skip], target_col, task,
                                              notes)
    if drop:
        dropped = [*drop, *dropped]
        notes.append(f"dropped as asked (--drop): {', '.join(drop)}")
    clock = _clock_columns(derived, numeric, times, timezone, notes)
    numeric += [f"cal_{c}" for c in calendar]

    weeks = _weeks(times)
    window = _window(weeks, notes)
    window["as_of"] = first_as_of(times, window.pop("_as_of_week"))
    src = {"kind": "files", "path": path, "time_column": time_col, "time_parts": parts or None,
           "timezone": timezone, "na_values": na_values, "target": target_col, "label": (
               {"column": label.column, "above": label.above} if label else None), "task": task,
           "unit_id": uid, "unit_id_from": uid_from or None, "calendar": calendar, "numeric_features": numeric,
           "categorical_features": categorical, "drop": dropped}
    validation = _validation(derived, src, weeks, window["train_weeks"], notes, clock=clock)
    evaluate, policy = _slices(derived, times, numeric, categorical, notes)
    name = model_name or _slug(f"{dataset}-{target_col}")
    notes.append(f"model name '{name}' (registry.model_name), from the data folder and the target")
    summary = {"rows": len(data), "files": len(files), "first": times.min(), "last": times.max(),
               "weeks": int(weeks.nunique()), "weekly_rows": int(weeks.value_counts().median())}
    return Profile(source=src, window=window, evaluate=evaluate, validation=validation, policy=policy,
                   registry={"model_name": name}, notes=notes, summary=summary)


# ------------------------------------------------------------------------------------------------------- target

def _target(data: pd.DataFrame, target: str, task: str | None, notes: list[str]):
    """The target column (or a label derived as 'column>value'), and the task it implies."""
    m = LABEL.match(target) if target not in data.columns else None
    if m:
        column, value = m["column"], float(m["value"])
        if column not in data.columns:
            raise ProfileError(f"--target '{target}': no column '{column}' in the files")
        if not pd.api.types.is_numeric_dtype(data[column]):
            raise ProfileError(f"--target '{target}': column '{column}' is not numeric")
        if task not in (None, "classification"):
            raise ProfileError(f"--target '{target}' is a class label, so --task must be classification")
        name = _slug(f"{column} above {value:g}").replace("-", "_")
        y = data[column].dropna() > value
        notes.append(f"target '{name}' = 1 when '{column}' > {value:g} (source.label), else 0: binary "
                     f"classification, {y.mean():.1%} positive")
        from ml.config import LabelConfig

        return name, LabelConfig(column=column, above=value), "classification"
    if target not in data.columns:
        close = [c for c in data.columns if str(c).lower() == target.lower()]
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ProfileError(f"--target: no column '{target}' in the files{hint}; columns: "
                           f"{', '.join(map(str, data.columns))}")
    y = data[target].dropna()
    if y.empty:
        raise ProfileError(f"--target: column '{target}' has no values")
    n = int(y.nunique())
    inferred = "regression" if pd.api.types.is_numeric_dtype(y) and n > MAX_CLASSES else "classification"
    if task is None:
        task = inferred
        kind = ("regression" if task == "regression" else
                "binary classification" if n == 2 else f"multiclass classification ({n} classes)")
        notes.append(f"task {task}: '{target}' is {kind} ({n:,} distinct values; override with --task)")
    elif task == "regression" and not pd.api.types.is_numeric_dtype(y):
        raise ProfileError(f"--task regression: target '{target}' is not numeric")
    if task == "classification" and n < 2:
        raise ProfileError(f"--target '{target}' has a single value: nothing to classify")
    return target, None, task


# --------------------------------------------------------------------------------------------------------- time

def _time(data: pd.DataFrame, time: str | None, notes: list[str]) -> tuple[str, dict]:
    """The time column, or one composed from parts (date + hour, or year/month/day[/hour])."""
    if time:
        if time not in data.columns:
            raise ProfileError(f"--time: no column '{time}' in the files; columns: {', '.join(map(str, data.columns))}")
        return _maybe_hour(data, time, notes)
    found = [c for c in data.columns if _looks_like_time(data[c])]
    if found:
        best = max(found, key=lambda c: data[c].nunique())
        return _maybe_hour(data, best, notes)
    parts = _time_parts(data)
    if {"year", "month", "day"} <= set(parts):
        name = "time" if "time" not in data.columns else "event_time"
        notes.append(f"time '{name}': composed from {', '.join(f'{k}={v}' for k, v in parts.items())} "
                     f"(source.time_parts)")
        return name, parts
    raise ProfileError("no time column found: name it with --time (a column of dates or times), or give the files "
                       "columns for year, month and day")


def _looks_like_time(col: pd.Series) -> bool:
    """Dates or times as text (ISO, or month/day/year) or a datetime column; epoch numbers need --time."""
    if pd.api.types.is_datetime64_any_dtype(col):
        return True
    if pd.api.types.is_numeric_dtype(col) or col.dropna().empty:
        return False
    sample = col.dropna().astype(str).head(200)
    if not sample.str.contains(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4}", regex=True).all():
        return False
    return bool(_to_times(sample).notna().mean() > 0.99)


def _to_times(text: pd.Series) -> pd.Series:
    """Times from text; offsets that differ within the column (daylight saving time) are normalised to UTC."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pandas' note on mixed offsets: handled below
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    if not pd.api.types.is_datetime64_any_dtype(parsed):
        parsed = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
    return parsed


def _time_parts(data: pd.DataFrame) -> dict:
    """Columns that hold the parts of a time, recognised by name and checked by their values."""
    out = {}
    lower = {str(c).lower(): c for c in data.columns}
    for part, names in PART_NAMES.items():
        lo, hi = PART_RANGES[part]
        for n in names:
            c = lower.get(n)
            if c is None or not pd.api.types.is_numeric_dtype(data[c]):
                continue
            v = data[c].dropna()
            if len(v) and (v == v.round()).all() and v.min() >= lo and v.max() <= hi:
                out[part] = str(c)
                break
    return out


def _maybe_hour(data: pd.DataFrame, time: str, notes: list[str]) -> tuple[str, dict]:
    """A date-only time column plus an hour column (0..23) make an hourly time."""
    t = _to_times(data[time].dropna().astype(str).head(5000))
    parts = _time_parts(data)
    if (t.dt.normalize() == t).all() and "hour" in parts:
        name = "time" if "time" not in data.columns else "event_time"
        notes.append(f"time '{name}': the dates in '{time}' plus the hour in '{parts['hour']}' "
                     f"(source.time_parts); '{time}' alone is only a day")
        return name, {"date": time, "hour": parts["hour"]}
    notes.append(f"time column '{time}' ({'given' if time else 'the column of dates'}; naive times taken in the "
                 f"time zone below)")
    return time, {}


def _weeks(times: pd.Series) -> pd.Series:
    """Week number of each row, weeks running Monday 00:00 .. Sunday (UTC), counted from the first."""
    anchor = _monday_on_or_before(times.min())
    return np.floor((times - anchor) / pd.Timedelta(days=7)).astype(int)


def _monday_on_or_before(t: pd.Timestamp) -> pd.Timestamp:
    day = t.tz_convert("UTC").normalize()
    return day - pd.Timedelta(days=day.dayofweek)


def _window(weeks: pd.Series, notes: list[str]) -> dict:
    """Training weeks that fit the history, and the first week with a full window before it."""
    counts = weeks.value_counts().sort_index()
    full = counts[counts >= 0.5 * counts.median()]
    n = int(full.index.max() - full.index.min() + 1) if len(full) else 0
    if n < 3:
        raise ProfileError(f"the files span {n} full week(s): a weekly pipeline needs at least 3 (training weeks + "
                           f"the newest week)")
    weekly = float(full.median())
    # 8 weeks keep a model fresh; a thin feed (a row a day) needs more weeks for TRAIN_ROWS rows, up to a third
    # of the history so that most weeks remain to run on
    wanted = max(8, math.ceil(TRAIN_ROWS / weekly))
    train_weeks = min(wanted, max(2, n // 3))
    first_full = int(full.index.min())
    as_of_week = first_full + train_weeks  # the newest week's number; its as_of is the Monday after it
    why = (f"{weekly:,.0f} rows a week, so {train_weeks} weeks make ~{train_weeks * weekly:,.0f} training rows"
           if wanted > 8 else f"{n} weeks of history")
    notes.append(f"window: {train_weeks} training weeks + the newest week ({why}); {n - train_weeks - 1} weekly "
                 f"runs can follow the first")
    return {"train_weeks": train_weeks, "_as_of_week": as_of_week}


def first_as_of(times: pd.Series, as_of_week: int) -> date:
    """window.as_of (the Monday after the newest week) for week number `as_of_week` of `_weeks`."""
    start = _monday_on_or_before(times.min())
    return (start + pd.Timedelta(days=7 * (as_of_week + 1))).date()


# ------------------------------------------------------------------------------------------------------ unit id

def _unit_id(files: dict[str, pd.DataFrame], derived: pd.DataFrame, cfg: SourceConfig, given: str | None,
             notes: list[str]) -> tuple[str | None, list[str], list[str]]:
    """(unit id column, columns it is synthesised from, row counters to drop)."""
    counters = [c for c in derived.columns if c not in cfg.derived and _is_row_counter(files, c)]
    if given:
        if given not in derived.columns:
            raise ProfileError(f"--unit-id: no column '{given}' in the files")
        if derived[given].isna().any() or derived[given].duplicated().any():
            raise ProfileError(f"--unit-id: column '{given}' is not a unique, never-null id of a row")
        notes.append(f"unit id '{given}' (given)")
        return given, [], counters
    for c in derived.columns:
        col = derived[c]
        if c in (cfg.time_column, cfg.target) or c in cfg.time_parts.values() or pd.api.types.is_float_dtype(col):
            continue
        if col.notna().all() and not col.duplicated().any() and not pd.api.types.is_datetime64_any_dtype(col):
            notes.append(f"unit id '{c}': unique and never null in all {len(col):,} rows")
            return str(c), [], [x for x in counters if x != c]
    name = "unit_id" if "unit_id" not in derived.columns else "row_key"
    small = [c for c in derived.columns if derived[c].dtype == object and 1 < derived[c].nunique() <= MAX_CATEGORIES
             and c not in (cfg.target,)]
    for combo in ([cfg.time_column], *([cfg.time_column, c] for c in small)):
        if not derived[combo].isna().any(axis=None) and not derived.duplicated(subset=combo).any():
            notes.append(f"unit id '{name}': no column identifies a row, so it is synthesised from "
                         f"{' + '.join(combo)} (unique in every row; source.unit_id_from)")
            return name, list(combo), counters
    notes.append(f"unit id '{name}': no column or combination identifies a row, so it is the file name + row "
                 f"number (stable as long as the files are not rewritten)")
    return name, ["_file", "_row"], counters


def _is_row_counter(files: dict[str, pd.DataFrame], column: str) -> bool:
    """An integer column that numbers the rows of every file (1, 2, 3 ..., with gaps where rows were left out):
    it carries no information but the row's place, a proxy of time."""
    for df in files.values():
        if column not in df.columns or not pd.api.types.is_integer_dtype(df[column]):
            return False
        v = df[column].to_numpy()
        if len(v) < 2 or not (np.diff(v) >= 1).all() or v[0] < 0 or v[-1] - v[0] > 2 * len(v):
            return False
    return True


# ----------------------------------------------------------------------------------------------------- features

def _features(data: pd.DataFrame, candidates: list[str], target: str, task: str,
              notes: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Numeric and categorical features, and the columns dropped (identifiers, constants, leaks of the target)."""
    numeric, categorical, dropped, why = [], [], [], []
    y = pd.to_numeric(data[target], errors="coerce") if target in data.columns else None
    for c in candidates:
        col = data[c]
        n = col.nunique(dropna=True)
        if n <= 1:
            dropped.append(c)
            why.append(f"'{c}' (constant)")
        elif pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            numeric.append(c)
        elif n <= MAX_CATEGORIES:
            categorical.append(c)
        else:
            dropped.append(c)
            why.append(f"'{c}' (text with {n:,} distinct values: an identifier, not a category)")
    if y is not None and task == "regression":
        leaks = _leaks(data, numeric, y)
        for c, reason in leaks.items():
            numeric.remove(c)
            dropped.append(c)
            why.append(f"'{c}' ({reason})")
    notes.append(f"features: {len(numeric)} numeric ({', '.join(numeric) or 'none'}), {len(categorical)} "
                 f"categorical ({', '.join(categorical) or 'none'})")
    if why:
        notes.append("dropped (source.drop): " + ", ".join(why))
    if not numeric and not categorical:
        raise ProfileError("no usable feature columns are left")
    return numeric, categorical, dropped


def _clock_columns(data: pd.DataFrame, numeric: list[str], times: pd.Series, timezone: str,
                   notes: list[str]) -> list[str]:
    """Numeric features that are a function of the local month, weekday or hour of the time (a month number, a
    weekday code): like the cal_ features they move with the clock by design, and December's quantiles say
    nothing of January's, so they get no learned quantile rule (their ranges, nulls and types still hold)."""
    local = times.dt.tz_convert(timezone)
    parts = {"month": local.dt.month, "weekday": local.dt.dayofweek, "hour": local.dt.hour}
    out = []
    for c in numeric:
        col = pd.to_numeric(data[c], errors="coerce")
        if col.nunique() < 3:
            continue
        for name, part in parts.items():
            if part.nunique() >= 3 and col.groupby(part.to_numpy()).nunique().max() == 1:
                out.append(c)
                notes.append(f"'{c}' is a function of the {name} of the time: no learned quantile rule "
                             f"(validation.quantile_exempt; it moves with the clock, as the cal_ features do)")
                break
    return out


def _leaks(data: pd.DataFrame, numeric: list[str], y: pd.Series) -> dict[str, str]:
    """Columns that give the target away: nearly equal to it up to scale, or two that sum to it."""
    sample = data[numeric].apply(pd.to_numeric, errors="coerce")
    keep = y.notna()
    if len(sample) > 50_000:
        keep &= pd.Series(np.random.default_rng(0).random(len(sample)) < 50_000 / len(sample), index=sample.index)
    xs, ys = sample[keep], y[keep]
    out = {}
    for c in numeric:
        corr = xs[c].corr(ys)
        if corr is not None and not math.isnan(corr) and abs(corr) >= LEAK_CORRELATION:
            out[c] = f"correlation {corr:.2f} with the target: a leak"
    for i, a in enumerate(numeric):
        for b in numeric[i + 1:]:
            both = xs[a] + xs[b]
            if both.notna().mean() > 0.5 and (np.isclose(both, ys) | both.isna()).mean() > 0.99:
                for c in (a, b):
                    out[c] = f"'{a}' + '{b}' equals the target: a leak"
    for a in numeric:  # a recorded outcome minus its plan (e.g. actual - scheduled time) gives the target away
        for b in numeric:
            if a == b or a in out:
                continue
            diff = xs[a] - xs[b]
            known = diff.notna()
            if known.mean() > 0.5 and ys[known].abs().gt(0).mean() > 0.5 and \
                    (np.isclose(diff[known], ys[known]) & ys[known].ne(0)).mean() > 0.3:
                out[a] = f"'{a}' - '{b}' equals the target in most rows: a leak"
    return out


# --------------------------------------------------------------------------------------------------- validation

def _validation(data: pd.DataFrame, src: dict, weeks: pd.Series, train_weeks: int, notes: list[str],
                clock: list[str] = ()) -> dict:
    """The data contract learned from the history, calibrated so that its learned rules together would have
    rejected at most FALSE_ALARM_RATE of the history's ordinary weeks."""
    defaults = ValidationConfig(quantile_tolerance=QUANTILE_TOLERANCE)
    counts = weeks.value_counts()
    median_rows = float(counts.median())
    min_rows = max(1, int(0.25 * median_rows))
    short = int((counts < min_rows).sum())
    notes.append(f"validation.min_rows {min_rows:,}: a quarter of the median week ({median_rows:,.0f} rows); "
                 f"{short} short week(s) of the history fall below it and are left out when landed")
    features = [*src["numeric_features"], *src["categorical_features"]]
    target = src["target"]
    # never null, fixed: the target and the columns that name a row (unit id parts, categories) when the history
    # never lacked them. A numeric measurement the model imputes gets the learned null-share rule instead: a
    # sensor never out in the history goes out one day (Beijing's RAIN, a year on), and a week with a few gaps is
    # an ordinary week; a column empty all week is still rejected
    keys = [*(src.get("unit_id_from") or ()), *src["categorical_features"]]
    required = [c for c in dict.fromkeys([target, *keys]) if c in data.columns and c != src["time_column"]
                and data[c].notna().all()]
    notes.append(f"validation.required: {', '.join(required) or 'none'} (never null in {len(data):,} rows; numeric "
                 f"features get a learned null-share rule)")
    numeric = [c for c in src["numeric_features"] if not c.startswith("cal_")]
    if src["task"] == "regression":
        numeric.append(target)
    ranges = {c: _range(data[c], target) for c in numeric if pd.to_numeric(data[c], errors="coerce").notna().any()}
    ranges = {c: r for c, r in ranges.items() if r is not None}
    full = counts.index[counts >= min_rows]
    mask = weeks.isin(full)
    rules = {"nulls": [c for c in [*features, target] if c not in required and not c.startswith("cal_")],
             "categories": [*src["categorical_features"], *([target] if src["task"] == "classification" else [])],
             "quantiles": [c for c in numeric if c not in clock]}
    need = replay_contract(data[mask], weeks[mask], rules, train_weeks, defaults, target=target)
    cal = calibrate(need, defaults, protect=(("quantiles", target),))
    notes.extend(cal.notes)
    quantile_exempt = sorted({*cal.quantile_exempt, *clock})
    checked = [c for c in numeric if c not in quantile_exempt]
    notes.append(f"validation: ranges for {len(ranges)} numeric column(s) from the history's robust spread (each "
                 f"week they widen with the accepted weeks, validation.learn_ranges); learned quantile checks on "
                 f"{len(checked)} ({', '.join(checked) or 'none'})")
    return {"min_rows": min_rows, "required": required, "null_exempt": cal.null_exempt, "ranges": ranges,
            "quantile_exempt": quantile_exempt, "row_count_tolerance": cal.row_count_tolerance,
            "column_tolerances": cal.column_tolerances, "_replay": need, "_calibration": cal}


def _range(col: pd.Series, target: str) -> list | None:
    """[min, max] a value may take: the history's extremes widened by `range_room`; never below 0 for a column
    that never was (a sign flip is a broken feed)."""
    v = pd.to_numeric(col, errors="coerce")
    v = v[np.isfinite(v)]
    if v.empty:
        return None
    room = range_room(v.to_numpy(dtype=float), str(col.name), target)
    lo, hi = float(v.min()) - room, float(v.max()) + room
    if v.min() >= 0:
        lo = max(lo, 0.0)
    integral = bool((v == v.round()).all())
    return [round_bound(lo, math.floor, integral), round_bound(hi, math.ceil, integral)]


def range_room(values: np.ndarray, column: str, target: str | None) -> float:
    """How far a column's range reaches beyond its extremes: RANGE_MARGIN (the target: TARGET_RANGE_MARGIN) of
    its robust (1%..99%) spread. At onboarding (the history) and each week (the accepted weeks, ml/contract.py)."""
    q01, q99 = np.quantile(values, [0.01, 0.99])
    spread = max(float(q99 - q01), float(values.max() - values.min()) * 0.01, 1e-9)
    return (TARGET_RANGE_MARGIN if column == target else RANGE_MARGIN) * spread


def round_bound(x: float, how, integral: bool = False) -> float | int:
    """A range bound to 4 significant digits, rounded away from the data (`how`: math.floor for a low bound,
    math.ceil for a high one), an integer where the column or the result is one."""
    if integral:
        return int(how(x))
    if x == 0 or not math.isfinite(x):
        return 0 if x == 0 else x
    scale = 10 ** max(0, 3 - int(math.floor(math.log10(abs(x)))))
    y = how(x * scale) / scale
    return int(y) if float(y).is_integer() else y


# ------------------------------------------------------------------------------------- replay and calibration
#
# The gate judges each week by rules learned from the weeks before it; each learned rule has a tolerance, and a
# week fails the rule exactly when the tolerance it would need exceeds the one configured. `replay_contract`
# computes that needed tolerance for every rule and every week of the history, so the false alarms of any choice
# of tolerances are known without running the gate again; `calibrate` chooses them for the whole contract.

ROW_RULE = ("rows", "")  # the one row-count rule of the contract


def replay_contract(data: pd.DataFrame, weeks: pd.Series, rules: dict[str, list[str]], train_weeks: int,
                    cfg: ValidationConfig, target: str | None = None) -> pd.DataFrame:
    """The tolerance each learned rule would need for each week of the history to pass it.

    `rules` lists the columns of each family ("nulls", "categories", "quantiles"); the row-count rule is always
    replayed. Each week is judged as the gate judges it: against the (up to) `train_weeks` calendar weeks before
    it, once MIN_PRIOR_WEEKS of them have rows. Rows: judged weeks; columns: (family, column); a week fails a
    rule when its entry exceeds the rule's tolerance. NaN: the rule does not exist that week (e.g. no quantile
    rule for a column constant in its reference); inf: no tolerance lets the week pass (a column empty all week
    whose every reference week had values, a quantile of a week without values). The target's quantile rule is
    its median only, as in `ml.validation`.
    """
    w = weeks.to_numpy()
    ids = np.unique(w)
    sizes = pd.Series(w).value_counts().reindex(ids).to_numpy()
    pos = {k: i for i, k in enumerate(ids)}
    judged = [(k, [pos[r] for r in ids[(ids >= k - train_weeks) & (ids < k)]]) for k in ids]
    judged = [(k, refs) for k, refs in judged if len(refs) >= MIN_PRIOR_WEEKS]
    out: dict[tuple[str, str], list[float]] = {}
    out[ROW_RULE] = [_row_need(sizes[pos[k]], sizes[refs]) for k, refs in judged]
    for c in rules.get("nulls", []):
        nulls = pd.Series(data[c].isna().to_numpy()).groupby(w).sum().reindex(ids).to_numpy()
        out[("nulls", c)] = [_null_need(nulls[pos[k]], sizes[pos[k]], nulls[refs], sizes[refs]) for k, refs in judged]
    for c in rules.get("categories", []):
        codes, _ = pd.factorize(data[c])  # -1: null
        table = np.zeros((len(ids), codes.max() + 2))
        np.add.at(table, (np.searchsorted(ids, w), codes + 1), 1)
        table = table[:, 1:]  # non-null rows per week and category
        out[("categories", c)] = [_category_need(table[pos[k]], table[refs].sum(axis=0)) for k, refs in judged]
    for c in rules.get("quantiles", []):
        qs = [0.5] if c == target else list(cfg.quantiles)
        out[("quantiles", c)] = _quantile_needs(pd.to_numeric(data[c], errors="coerce").to_numpy(), w, ids,
                                               judged, qs) if qs else [np.nan] * len(judged)
    frame = pd.DataFrame(out, index=pd.Index([k for k, _ in judged], name="week"), dtype=float)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["family", "column"])
    return frame


def _row_need(n: int, ref: np.ndarray) -> float:
    """Rows must lie in [min x (1 - tol), max x (1 + tol)] of the reference weeks' row counts."""
    lo, hi = float(ref.min()), float(ref.max())
    return max((lo - n) / lo, (n - hi) / hi)


def _null_need(nulls: int, size: int, ref_nulls: np.ndarray, ref_sizes: np.ndarray) -> float:
    """Null share <= reference share + tol; a week with no values fails whatever the tolerance when every
    reference week had values (`ml.validation._null_share_rule`)."""
    ref_share = ref_nulls.sum() / ref_sizes.sum()
    if ref_share >= 1:
        return np.nan
    if nulls == size and bool((ref_nulls < ref_sizes).all()):
        return np.inf
    return nulls / size - ref_share


def _category_need(week: np.ndarray, ref: np.ndarray) -> float:
    """Share of the week's (non-null) values outside the reference's categories <= tol."""
    total = week.sum()
    return float(week[ref == 0].sum() / total) if total else np.nan


def _quantile_needs(v: np.ndarray, w: np.ndarray, ids: np.ndarray, judged: list, qs: list[float]) -> list[float]:
    """Each quantile within the reference weeks' envelope (`ml.validation._quantile_rule`) +- tol x IQR: the
    tol a week needs is its quantiles' largest distance outside the envelope, in reference IQRs."""
    keep = np.isfinite(v)
    v, w = v[keep], w[keep]
    order = np.argsort(w, kind="stable")
    v, w = v[order], w[order]
    starts = np.searchsorted(w, ids)
    ends = np.searchsorted(w, ids, side="right")
    counts = ends - starts
    # GX's pandas quantile uses "nearest" for the check, linear for the IQR, as ml.validation learns them
    per_week = [np.quantile(v[s:e], qs, method="nearest") if e > s else None for s, e in zip(starts, ends, strict=True)]
    needs = []
    for k, refs in judged:
        i = int(np.searchsorted(ids, k))
        ref_parts = [v[starts[r]:ends[r]] for r in refs]
        ref = np.concatenate(ref_parts)
        if ref.size == 0:
            needs.append(np.nan)
            continue
        iqr = quantile_scale(ref)
        sizes = pd.Series(counts[refs], index=refs)
        env = [per_week[r] for r in envelope_weeks(sizes[sizes > 0])]
        weekly = np.array([*env, np.quantile(ref, qs, method="nearest")])
        lows, highs = weekly.min(axis=0), weekly.max(axis=0)
        if iqr == 0 and np.array_equal(lows, highs):
            needs.append(np.nan)  # constant throughout the reference: the gate has no quantile rule
            continue
        obs = per_week[i]
        if obs is None:
            needs.append(np.inf)
            continue
        dev = float(np.max(np.maximum(lows - obs, obs - highs)))
        needs.append(dev / iqr if iqr > 0 else (np.inf if dev > 0 else 0.0))
    return needs


@dataclass
class Calibration:
    """Tolerances of the learned rules chosen by `calibrate`, and what the replay says of them."""

    row_count_tolerance: float
    column_tolerances: dict  # {column: {family: tolerance}} where wider than the default
    null_exempt: list[str]
    quantile_exempt: list[str]
    alarms: pd.Series  # judged week -> whether the calibrated contract still rejects it
    default_alarms: pd.Series  # the same with every rule at its default tolerance
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return float(self.alarms.mean()) if len(self.alarms) else 0.0

    @property
    def default_rate(self) -> float:
        return float(self.default_alarms.mean()) if len(self.default_alarms) else 0.0


def defaults_of(cfg: ValidationConfig) -> dict[str, float]:
    return {"rows": cfg.row_count_tolerance, "nulls": cfg.null_tolerance, "categories": cfg.category_tolerance,
            "quantiles": cfg.quantile_tolerance}


def alarms(need: pd.DataFrame, tolerances: dict[tuple[str, str], float]) -> pd.DataFrame:
    """Which rule rejects which week when each rule has the given tolerance (absent rules never reject; a week
    exactly on a bound passes, as in the gate, whose bounds are rounded to 6 decimals)."""
    return pd.DataFrame({r: need[r].to_numpy() > tolerances[r] + 1e-6 for r in need.columns}, index=need.index)


def calibrate(need: pd.DataFrame, cfg: ValidationConfig, budget: float = FALSE_ALARM_RATE,
              protect: tuple[tuple[str, str], ...] = ()) -> Calibration:
    """Tolerances for the learned rules such that, together, they reject at most `budget` of the replayed weeks.

    The budget is family-wise: a week counts once however many rules reject it. While the contract rejects more
    weeks than the budget allows, the week that is cheapest to let through (the smallest widening, relative to
    each rule's default tolerance, of the rules that reject it) is let through by widening exactly those rules
    to what that week needs (rounded up). Each rule thus ends at the envelope of its own week-to-week
    variation over the history, and the weeks still rejected are the history's most extreme. A quantile rule
    that would need more than MAX_QUANTILE_TOLERANCE IQRs, or a null-share rule more than MAX_NULL_TOLERANCE,
    is exempted instead: its column drifts rather than keeps a contract (a column exempt from its null share
    still must have values, and rows of a week without any still fail). Rules in `protect` (the target's
    median: a shifted target is the costliest break to miss) are widened last: the weeks they reject are the
    ones the budget keeps rejected, unless the budget cannot hold them.
    """
    base = defaults_of(cfg)
    tol = {r: base[r[0]] for r in need.columns}
    default_alarms = alarms(need, tol).any(axis=1)
    allowed = math.floor(budget * len(need) + 1e-9)
    cost = need / pd.Series([base[r[0]] for r in need.columns], index=need.columns)
    # a quantile rule no width can satisfy (a step in a column of few values, IQR 0) is cleared by exempting it:
    # as costly as the widest tolerance allowed, so it comes after every cheaper widening
    quantile = [r for r in need.columns if r[0] == "quantiles"]
    cost[quantile] = cost[quantile].replace(np.inf, 2 * MAX_QUANTILE_TOLERANCE / base["quantiles"])
    kept = [r for r in protect if r in cost.columns]
    cost[kept] = cost[kept] + 1e6  # after any other widening (still finite: widened if nothing else can)
    while True:
        fires = alarms(need, tol)
        rejected = fires.any(axis=1)
        if rejected.sum() <= allowed:
            break
        week_cost = cost.where(fires).max(axis=1)[rejected]
        week_cost = week_cost[np.isfinite(week_cost)]
        if week_cost.empty:
            break  # only weeks no tolerance lets through are left
        k = week_cost.idxmin()
        for r in fires.columns[fires.loc[k].to_numpy()]:
            x = float(need.at[k, r])
            tol[r] = _round_up(x, STEP[r[0]]) if np.isfinite(x) else np.inf
    caps = {"quantiles": MAX_QUANTILE_TOLERANCE, "nulls": MAX_NULL_TOLERANCE}
    exempt = {r for r, t in tol.items() if r[0] in caps and t > caps[r[0]]}
    # exempt from its null share, a column must still have values (tolerance 1: only a week without any fails)
    final = {r: ((1.0 if r[0] == "nulls" else np.inf) if r in exempt else t) for r, t in tol.items()}
    widened: dict[str, dict[str, float]] = {}
    notes = []
    for (family, column), t in sorted(tol.items()):
        if (family, column) in exempt or t <= base[family] or family == "rows":
            continue
        widened.setdefault(column, {})[family] = t
        notes.append(f"validation.column_tolerances '{column}' {family} {t:g} (default {base[family]:g}): "
                     f"{_fails(need, (family, column), base[family])} of the history's weeks would fail the default")
    for family, column in sorted(exempt):
        cap = f"{MAX_QUANTILE_TOLERANCE:g} IQR" if family == "quantiles" else f"{MAX_NULL_TOLERANCE:.0%} points"
        notes.append(f"validation.{EXEMPT_KEY[family]} '{column}': no tolerance up to {cap} lets its ordinary weeks "
                     f"through (the default fails {_fails(need, (family, column), base[family])} of the history's "
                     f"weeks): drift, not a broken contract")
    rows = tol.get(ROW_RULE, base["rows"])
    if rows > base["rows"]:
        notes.append(f"validation.row_count_tolerance {rows:g} (default {base['rows']:g}): "
                     f"{_fails(need, ROW_RULE, base['rows'])} of the history's weeks would fail the default")
    after = alarms(need, final).any(axis=1)
    notes.append(f"validation: the learned rules together reject {after.sum()} of {len(need)} replayed weeks "
                 f"({after.mean() if len(need) else 0:.1%}; at the default tolerances {default_alarms.sum()}, "
                 f"{default_alarms.mean() if len(need) else 0:.1%}; budget {budget:.0%})")
    return Calibration(row_count_tolerance=rows, column_tolerances=widened,
                       null_exempt=sorted(c for f, c in exempt if f == "nulls"),
                       quantile_exempt=sorted(c for f, c in exempt if f == "quantiles"),
                       alarms=after, default_alarms=default_alarms, notes=notes)


def _fails(need: pd.DataFrame, rule: tuple[str, str], tolerance: float) -> str:
    n = int((need[rule].to_numpy() > tolerance).sum())
    return f"{n} ({n / len(need):.1%})" if len(need) else "0"


def _round_up(x: float, step: float) -> float:
    """x rounded up to a multiple of `step` strictly above it (a week exactly at the bound passes anyway)."""
    return round(math.floor(round(x / step, 9) + 1) * step, 6)


# ------------------------------------------------------------------------------------------------------- slices

def _slices(data: pd.DataFrame, times: pd.Series, numeric: list[str], categorical: list[str],
            notes: list[str]) -> tuple[dict, dict]:
    """Slice columns for the guardrails and the error plot; the bootstrap's resampling unit."""
    weeks = _weeks(times).to_numpy()

    def balanced(c: str) -> float:
        """Entropy of the column's values within a typical week (a column constant within a week, such as the
        month, cannot tell a candidate's slices apart on one holdout week)."""
        if not 2 <= data[c].nunique() <= 30:
            return -1.0
        shares = data[c].astype(str).groupby(weeks).value_counts(normalize=True)
        return float((-(shares * np.log(shares))).groupby(level=0).sum().median())

    pool = [c for c in categorical if balanced(c) > 0.3]
    pool += [c for c in numeric if not c.startswith("cal_") and 2 <= data[c].nunique() <= 12 and balanced(c) > 0.3]
    slices = sorted(pool, key=balanced, reverse=True)[:2]
    if slices:
        notes.append(f"slices: {', '.join(slices)} (policy.slice_columns; evaluate.slice_column {slices[0]}): the "
                     f"most balanced columns with 2-30 values")
    else:
        notes.append("slices: none (no column with 2-30 values)")
    per_time = data.groupby(times.to_numpy()).size().median()
    if per_time >= 20:
        cluster = times.name
        notes.append(f"policy.cluster_column '{cluster}': {per_time:.0f} rows share each time, so the bootstrap "
                     f"resamples whole time stamps")
    else:
        cluster = None
        notes.append(f"policy.cluster_column none: {per_time:.0f} row(s) per time stamp, so the bootstrap resamples "
                     f"contiguous day-long blocks of an autocorrelated series (policy.block_hours)")
    return {"slice_column": slices[0] if slices else None}, {"cluster_column": cluster, "slice_columns": slices}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


def week_span(as_of: date) -> str:
    return f"{as_of - timedelta(days=7)}..{as_of - timedelta(days=1)}"


# ------------------------------------------------------------------------------------------------------- render

def _y(value) -> str:
    """A value in YAML flow style on one line."""
    import yaml

    if isinstance(value, date):
        return f'"{value.isoformat()}"'
    return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip().removesuffix("\n...")


def render_params(p: Profile, template: str) -> str:
    """params.yaml for the profile: the chosen sections, each key commented, and the other sections (train,
    drift, ab) as in `template` (the project's own params.yaml), so every step keeps its documented defaults."""
    s, w, v, pol = p.source, p.window, p.validation, p.policy
    m = p.summary
    where = "relative to this file" if not str(s["path"]).startswith("/") else "absolute path"
    sections = {
        "source": ("where weekly batches come from (read by land and prepare)", [
            ("kind", "files", "a folder or glob of CSV/Parquet files"),
            ("path", s["path"], where),
            ("time_column", s["time_column"], "composed from time_parts" if s["time_parts"] else "UTC weeks"),
            ("time_parts", s["time_parts"], "columns holding the parts of the time (null: time_column is one)"),
            ("timezone", s["timezone"], "zone of naive times in the files; batches are UTC weeks"),
            ("na_values", s["na_values"], "CSV text read as missing (null: pandas' defaults)"),
            ("target", s["target"], "what the model predicts"),
            ("label", s["label"], "{column, above}: target = 1 where column > above (null: a column)"),
            ("task", s["task"], "regression | classification"),
            ("unit_id", s["unit_id"], "identifies one row (duplicate check, A/B routing)"),
            ("unit_id_from", s["unit_id_from"], "unit_id joined from these columns (null: unit_id is a column)"),
            ("calendar", s["calendar"], "derived numeric features cal_<name> from the time, in `timezone`"),
            ("numeric_features", s["numeric_features"], None),
            ("categorical_features", s["categorical_features"], None),
            ("drop", s["drop"], "never features (identifiers, constants, leaks of the target)")]),
        "window": ("read by land and prepare", [
            ("as_of", w["as_of"], "newest week = the 7 days before this date; the weekly flow moves it on"),
            ("train_weeks", w["train_weeks"], "training window = the weeks before the newest one")]),
        "evaluate": ("read by evaluate", [
            ("slice_column", p.evaluate["slice_column"], "error-by-slice plot"),
            ("plot_rows", 2000, None)]),
        "validation": ("the data contract of a new batch (Great Expectations), learned from the history", [
            ("min_rows", v["min_rows"], "floor of rows in a week (shorter weeks are left out of training)"),
            ("row_count_tolerance", v["row_count_tolerance"], "learned: rows within the reference weeks' "
             f"[min x {1 - v['row_count_tolerance']:g}, max x {1 + v['row_count_tolerance']:g}]"),
            ("required", v["required"], "never null (time and unit id always)"),
            ("null_tolerance", 0.05, "learned: other columns' null share <= reference share + 5 points"),
            ("null_exempt", v["null_exempt"], "null share too variable week to week for that check"),
            ("ranges", v["ranges"], "[min, max] from the history's robust spread; widened each week to the "
             "accepted weeks' own (learn_ranges), never narrowed; >= 0 stays >= 0"),
            ("range_tolerance", RANGE_TOLERANCE, "share of rows that may pass a range's bound other than 0 (a "
             "reading past the record; a bound at 0 stays strict)"),
            ("category_tolerance", 0.02, "learned: <= 2% of rows outside the reference's categories"),
            ("quantiles", [0.25, 0.5, 0.75], None),
            ("quantile_tolerance", QUANTILE_TOLERANCE, "learned: within the reference weeks' range +- this x IQR"),
            ("quantile_exempt", v["quantile_exempt"], "no learned quantile rule: too variable "
             "week to week (drift), or moving with the clock"),
            ("column_tolerances", v["column_tolerances"], "wider per column, to the history's own week-to-week "
             f"variation: the learned rules together reject <= {FALSE_ALARM_RATE:.0%} of its weeks"),
            ("pinned", {}, "tolerances a person fixed, used exactly: {column: {quantiles: 2.0}}"),
            ("learn_weeks", 52, "value rules (ranges, tolerances) follow the accepted weeks of the last year"),
            ("false_alarm_rate", FALSE_ALARM_RATE, "... calibrated to reject at most this share of them"),
            ("learn_ranges", True, "ranges widen to the accepted weeks' extremes +- 1/4 of their spread")]),
    }
    m = p.summary
    head = (f"# Written by `python -m flows.init` from {s['path']}\n# ({m['rows']:,} rows in {m['files']} file(s), "
            f"{m['first']:%Y-%m-%d} .. {m['last']:%Y-%m-%d}, {m['weeks']} weeks of ~{m['weekly_rows']:,} rows).\n"
            "# One section per pipeline step. `dvc repro` reruns exactly the stages whose keys changed. "
            "Edit freely.\n\n")
    for name, (comment, keys) in sections.items():
        head += f"{name + ':':<28} # {comment}\n"
        for key, value, note in keys:
            line = f"  {key}: {_y(value)}"
            if note and len(line) > 40:  # a long value: its comment goes on the line above
                head += f"  # {note}\n{line}\n"
            else:
                head += (f"{line:<28} # {note}" if note else line).rstrip() + "\n"  # a space before '#' always
        head += "\n"
    tail = _template_sections(template, ("train", "search", "drift"))
    policy = _template_sections(template, ("policy",))
    policy = _set_line(policy, "cluster_column", _y(pol["cluster_column"]),
                       "resampling unit of the bootstrap (null: day-long time blocks, block_hours)")
    policy = _set_line(policy, "slice_columns", _y(pol["slice_columns"]), "guardrails: no slice much worse")
    registry = f"""registry:
  model_name: {_y(p.registry['model_name'])}
  experiment: weekly-retrain

"""
    ab = _template_sections(template, ("ab",))
    return head + tail + policy + registry + ab


def _template_sections(template: str, names: tuple[str, ...]) -> str:
    """The text of top-level sections `names` of a params.yaml, comments included."""
    out, keep = [], False
    for line in template.splitlines(keepends=True):
        if line and not line[0].isspace() and not line.startswith("#"):
            keep = line.split(":", 1)[0] in names
        if keep:
            out.append(line)
    text = "".join(out)
    return text if text.endswith("\n\n") else text.rstrip("\n") + "\n\n"


def _set_line(section: str, key: str, value: str, comment: str) -> str:
    lines = section.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip().startswith(f"{key}:"):
            indent = line[:len(line) - len(line.lstrip())]
            lines[i] = f"{indent}{key}: {value}   # {comment}\n"
            break
    return "".join(lines)
