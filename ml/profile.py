"""Profile a user's files and choose every setting of params.yaml for them, each with the reason in words.

Pure: frames in, a `Profile` out (the chosen sections as plain values + one note per choice). The command that
reads the files and writes params.yaml is `python -m cli.init`; rendering lives in `ml.render`, the
false-alarm budget of the contract in `ml.budget`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from ml.budget import calibrate, replay_contract
from ml.config import SourceConfig, ValidationConfig
from ml.sources import calendar_columns, prepare_frame, synthesise_unit_id

PART_NAMES = {"year": ("year", "yyyy", "yr"), "month": ("month", "mnth", "mon", "mm"),
              "day": ("day", "dd", "dom", "mday"), "hour": ("hour", "hr", "hh"), "minute": ("minute", "min")}
PART_RANGES = {"year": (1900, 2100), "month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59)}
MAX_CATEGORIES = 100  # text columns with more distinct values are identifiers or free text, not categories
MAX_CLASSES = 20  # a numeric target with at most this many values is a class label
LEAK_CORRELATION = 0.95  # a feature this correlated with the target is taken as a leak of it
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
    relations = {"inputs": numeric, "time_column": src["time_column"], "timezone": src.get("timezone", "UTC")}
    need = replay_contract(data[mask], weeks[mask], rules, train_weeks, defaults, target=target, companion=relations)
    cal = calibrate(need, defaults, protect=(("quantiles", target),))
    notes.extend(cal.notes)
    quantile_exempt = sorted({*cal.quantile_exempt, *clock})
    checked = [c for c in numeric if c not in quantile_exempt]
    notes.append(f"validation: ranges for {len(ranges)} numeric column(s) from the history's robust spread (each "
                 f"week they widen with the accepted weeks, validation.learn_ranges); learned quantile checks on "
                 f"{len(checked)} ({', '.join(checked) or 'none'})")
    return {"min_rows": min_rows, "required": required, "null_exempt": cal.null_exempt, "ranges": ranges,
            "quantile_exempt": quantile_exempt, "row_count_tolerance": cal.row_count_tolerance,
            "null_tolerance": cal.null_tolerance, "column_tolerances": cal.column_tolerances, "_replay": need,
            "_calibration": cal}


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
